use std::rc::Rc;

use flext::ports::{Command, Context};
use flext::{Error, command_handler};

#[derive(Clone)]
struct Open;
impl Command for Open {
    type Output = ();
    const NAME: &'static str = "open";
}

async fn later() {}

#[command_handler]
async fn open(_command: Open, _ctx: &Context) -> Result<(), Error> {
    let held = Rc::new(1);
    later().await;
    drop(held);
    Ok(())
}

fn main() {}

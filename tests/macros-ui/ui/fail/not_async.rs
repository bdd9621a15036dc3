use flext::ports::{Command, Context};
use flext::{Error, command_handler};

#[derive(Clone)]
struct Open;
impl Command for Open {
    type Output = ();
    const NAME: &'static str = "open";
}

#[command_handler]
fn open(_command: Open, _ctx: &Context) -> Result<(), Error> {
    Ok(())
}

fn main() {}

use flext::ports::{Command, Context};
use flext::{Error, command_handler};

#[derive(Clone)]
struct Open;
impl Command for Open {
    type Output = String;
    const NAME: &'static str = "open";
}

#[command_handler]
async fn open(_command: Open, _ctx: &Context) -> Result<u32, Error> {
    Ok(1)
}

fn main() {}

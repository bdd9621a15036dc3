use flext::ports::Command;
use flext::{Error, command_handler};

#[derive(Clone)]
struct Open;
impl Command for Open {
    type Output = ();
    const NAME: &'static str = "open";
}

#[command_handler]
async fn open(_command: Open) -> Result<(), Error> {
    Ok(())
}

fn main() {}

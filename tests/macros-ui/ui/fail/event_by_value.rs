use flext::ports::Context;
use flext::{Error, event_handler};

struct Opened;

#[event_handler]
async fn on_opened(_event: Opened, _ctx: &Context) -> Result<(), Error> {
    Ok(())
}

fn main() {}

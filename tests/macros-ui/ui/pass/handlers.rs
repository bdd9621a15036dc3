use flext::application::Dep;
use flext::ports::{Command, Context, Query};
use flext::{DomainEvent, Error, command_handler, event_handler, query_handler};

#[derive(Clone)]
struct Open;
impl Command for Open {
    type Output = u64;
    const NAME: &'static str = "open";
}

#[derive(Clone)]
struct Count;
impl Query for Count {
    type Output = usize;
    const NAME: &'static str = "count";
}

struct Opened;
struct Config;

#[command_handler]
async fn open(_command: Open, _ctx: &Context, _config: Dep<Config>) -> Result<u64, Error> {
    Ok(1)
}

#[query_handler]
async fn count(_query: Count, _ctx: &Context) -> Result<usize, Error> {
    Ok(0)
}

#[event_handler]
async fn on_opened(_event: &Opened, _ctx: &Context) -> Result<(), Error> {
    Ok(())
}

#[derive(DomainEvent)]
enum Event {
    #[event(name = "a", version = 2)]
    A { _x: u8 },
    #[event(name = "b")]
    B(u8),
}

fn main() {}

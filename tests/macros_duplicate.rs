//! Two `#[command_handler]`s for one command: building the bus names both sites.
#![cfg(feature = "macros")]

use flext::application::{Pipeline, Registry, Services};
use flext::ports::{Command, Context};
use flext::{Error, command_handler};

#[derive(Clone)]
struct Ping;
impl Command for Ping {
    type Output = ();
    const NAME: &'static str = "ping";
}

const FIRST: u32 = line!() + 2;
#[command_handler]
async fn first(_: Ping, _: &Context) -> Result<(), Error> {
    Ok(())
}

const SECOND: u32 = line!() + 2;
#[command_handler]
async fn second(_: Ping, _: &Context) -> Result<(), Error> {
    Ok(())
}

#[test]
fn a_duplicate_names_both_registration_sites() {
    let err = Registry::new()
        .with_registered(&Services::default())
        .command_bus(Pipeline::new())
        .unwrap_err();
    assert_eq!(err.reason(), "DUPLICATE_HANDLER");
    for line in [FIRST, SECOND] {
        assert!(
            err.message()
                .contains(&format!("macros_duplicate.rs:{line}")),
            "{err}"
        );
    }
}

//! Start-up validation: building the buses checks every macro-registered handler's
//! dependencies and lists everything missing at once, before any command runs.
#![cfg(feature = "macros")]

use flext::application::{Dep, Pipeline, Registry, Services};
use flext::ports::{Command, Context, Query};
use flext::{Error, ErrorCode, command_handler, query_handler};

#[derive(Debug)]
struct Ledger;
struct Mailer;
struct Clock;

#[derive(Clone)]
struct Open;
impl Command for Open {
    type Output = ();
    const NAME: &'static str = "test.open";
}

#[derive(Clone)]
struct Notify;
impl Command for Notify {
    type Output = ();
    const NAME: &'static str = "test.notify";
}

#[derive(Clone)]
struct Balance;
impl Query for Balance {
    type Output = i64;
    const NAME: &'static str = "test.balance";
}

#[command_handler]
async fn open(_: Open, _: &Context, _ledger: Dep<Ledger>) -> Result<(), Error> {
    Ok(())
}

#[command_handler]
async fn notify(
    _: Notify,
    _: &Context,
    _mailer: Dep<Mailer>,
    _clock: Dep<Clock>,
) -> Result<(), Error> {
    Ok(())
}

#[query_handler]
async fn balance(
    _: Balance,
    _: &Context,
    _ledger: Dep<Ledger>,
    _clock: Dep<Clock>,
) -> Result<i64, Error> {
    Ok(7)
}

#[test]
fn every_missing_dependency_is_reported_before_the_first_dispatch() {
    let services = Services::builder().singleton(Ledger).build();
    let registry = Registry::new().with_registered(&services);
    let e = registry.command_bus(Pipeline::new()).expect_err("refused");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert_eq!(e.reason(), "MISSING_SERVICES");
    let mut listed: Vec<(String, String)> = e
        .field_violations()
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();
    listed.sort();
    let named = |(handler, what): &(String, String)| {
        (
            handler.clone(),
            what.split(" (handler at")
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    assert_eq!(
        listed.iter().map(named).collect::<Vec<_>>(),
        [
            (
                "balance".to_owned(),
                "no service of type startup_validation::Clock is registered".to_owned()
            ),
            (
                "notify".to_owned(),
                "no service of type startup_validation::Clock is registered".to_owned()
            ),
            (
                "notify".to_owned(),
                "no service of type startup_validation::Mailer is registered".to_owned()
            ),
        ],
        "{e}"
    );
    assert!(e.message().starts_with("3 service(s)"), "{e}");
    assert!(e.message().contains("tests/startup_validation.rs"), "{e}");
    // The query bus refuses alike; `validate` says the same on its own.
    assert_eq!(
        registry
            .query_bus(Pipeline::new())
            .err()
            .map(|e| e.reason().to_owned()),
        Some("MISSING_SERVICES".to_owned())
    );
    assert!(registry.validate().is_err());

    // With everything registered, both buses build.
    let services = Services::builder()
        .singleton(Ledger)
        .singleton(Mailer)
        .singleton(Clock)
        .build();
    let registry = Registry::new().with_registered(&services);
    registry.validate().expect("complete");
    registry.command_bus(Pipeline::new()).expect("command bus");
    registry.query_bus(Pipeline::new()).expect("query bus");
}

#[test]
fn a_missing_service_message_has_no_double_space() {
    let e = Services::builder()
        .build()
        .scope()
        .get::<Ledger>()
        .expect_err("missing");
    assert!(!e.message().contains("  "), "{e}");
}

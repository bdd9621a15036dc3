//! The attribute macros at run time: handlers registered with `#[command_handler]`,
//! `#[query_handler]` and `#[event_handler]` take their dependencies from the services,
//! and `#[derive(DomainEvent)]` names events and versions.
#![cfg(feature = "macros")]

use std::sync::atomic::{AtomicU32, Ordering};

use flext::application::{Dep, Pipeline, Registry, Services};
use flext::ports::{Command, Context, Query};
use flext::{DomainEvent, Error, command_handler, event_handler, query_handler};

#[derive(Clone)]
struct Greet {
    name: String,
}
impl Command for Greet {
    type Output = String;
    const NAME: &'static str = "greet";
}

#[derive(Clone)]
struct Greeted;
impl Query for Greeted {
    type Output = u32;
    const NAME: &'static str = "greeted";
}

struct Greeting(&'static str);

#[derive(Default)]
struct Seen(AtomicU32);

struct Said(String);

#[command_handler]
async fn greet(
    command: Greet,
    _ctx: &Context,
    greeting: Dep<Greeting>,
    seen: Dep<Seen>,
) -> Result<String, Error> {
    seen.0.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{}, {}", greeting.0, command.name))
}

#[query_handler]
async fn greeted(_query: Greeted, _ctx: &Context, seen: Dep<Seen>) -> Result<u32, Error> {
    Ok(seen.0.load(Ordering::SeqCst))
}

#[event_handler]
async fn on_said(event: &Said, _ctx: &Context, seen: Dep<Seen>) -> Result<(), Error> {
    if event.0.is_empty() {
        return Err(Error::invalid_argument("EMPTY", "nothing said"));
    }
    seen.0.fetch_add(10, Ordering::SeqCst);
    Ok(())
}

#[derive(Debug, DomainEvent)]
#[allow(dead_code)] // the fields are there to show every variant shape
enum AccountEvent {
    #[event(name = "account.opened")]
    Opened { owner: String },
    #[event(name = "account.deposited", version = 3)]
    Deposited(i64),
    #[event(name = "account.closed")]
    Closed,
}

#[derive(DomainEvent)]
#[event(name = "limit.changed", version = 2)]
struct LimitChanged {
    _limit: u64,
}

#[tokio::test]
async fn macro_registered_handlers_dispatch_with_their_dependencies() {
    let services = Services::builder()
        .singleton(Greeting("hello"))
        .singleton(Seen::default())
        .scoped(|_| Ok(UnitOfWork(0)))
        .build();
    let registry = Registry::new().with_registered(&services);
    let commands = registry.command_bus(Pipeline::new()).unwrap();
    let queries = registry.query_bus(Pipeline::new()).unwrap();
    let events = registry.event_bus();
    let ctx = Context::new();
    assert_eq!(
        commands
            .dispatch(Greet { name: "Ada".into() }, &ctx)
            .await
            .unwrap(),
        "hello, Ada"
    );
    let outcomes = events.publish(&Said("hi".into()), &ctx).await;
    assert!(outcomes[0].result.is_ok());
    assert!(
        outcomes[0].site.file.ends_with("macros.rs"),
        "{}",
        outcomes[0].site
    );
    assert_eq!(queries.ask(Greeted, &ctx).await.unwrap(), 11);
    let failed = events.publish(&Said(String::new()), &ctx).await;
    assert_eq!(failed[0].result.as_ref().unwrap_err().reason(), "EMPTY");
}

/// A missing dependency is found when the bus is built, before any command ran, with
/// every missing service and the handler that needs it.
#[tokio::test]
async fn a_missing_dependency_is_refused_when_the_bus_is_built() {
    let services = Services::builder().singleton(Seen::default()).build();
    let err = Registry::new()
        .with_registered(&services)
        .command_bus(Pipeline::new())
        .unwrap_err();
    assert_eq!(err.reason(), "MISSING_SERVICES");
    assert!(err.message().contains("Greeting"), "{err}");
    assert!(err.message().contains("UnitOfWork"), "{err}");
    assert!(err.message().contains("macros.rs:"), "{err}");
}

#[test]
fn derived_events_name_themselves_and_their_versions() {
    let opened = AccountEvent::Opened {
        owner: "Ada".into(),
    };
    assert_eq!(
        (opened.event_type(), opened.schema_version()),
        ("account.opened", 1)
    );
    let deposited = AccountEvent::Deposited(5);
    assert_eq!(
        (deposited.event_type(), deposited.schema_version()),
        ("account.deposited", 3)
    );
    assert_eq!(AccountEvent::Closed.event_type(), "account.closed");
    assert_eq!(
        AccountEvent::current_schema_version("account.deposited"),
        Some(3)
    );
    assert_eq!(
        AccountEvent::current_schema_version("account.renamed"),
        None
    );
    let changed = LimitChanged { _limit: 1 };
    assert_eq!(
        (changed.event_type(), changed.schema_version()),
        ("limit.changed", 2)
    );
}

/// A value made once per dispatch.
struct UnitOfWork(u32);

#[derive(Clone)]
struct Twice;
impl Command for Twice {
    type Output = (u32, u32);
    const NAME: &'static str = "twice";
}

#[command_handler]
async fn twice(
    _: Twice,
    _: &Context,
    a: Dep<UnitOfWork>,
    b: Dep<UnitOfWork>,
) -> Result<(u32, u32), Error> {
    Ok((a.0, b.0))
}

#[tokio::test]
async fn scoped_services_are_made_once_per_dispatch() {
    static MADE: AtomicU32 = AtomicU32::new(0);
    let services = Services::builder()
        .singleton(Greeting("hi"))
        .singleton(Seen::default())
        .scoped(|_| Ok(UnitOfWork(MADE.fetch_add(1, Ordering::SeqCst))))
        .build();
    let bus = Registry::new()
        .with_registered(&services)
        .command_bus(Pipeline::new())
        .unwrap();
    assert_eq!(
        bus.dispatch(Twice, &Context::new()).await.unwrap(),
        (0, 0),
        "shared within a dispatch"
    );
    assert_eq!(
        bus.dispatch(Twice, &Context::new()).await.unwrap(),
        (1, 1),
        "new for the next dispatch"
    );
}

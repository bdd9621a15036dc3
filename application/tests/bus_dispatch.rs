//! The buses: dispatch, missing and duplicate handlers, panics, event fan-out, pipeline
//! order, correlation across a command, its events and a follow-up command, and which
//! types are `Send + Sync`.

use std::sync::{Arc, Mutex};

use flext_application::{
    Behavior, BoxFuture, CommandBus, EventBus, Message, Next, Pipeline, QueryBus, Registry, Reply,
    Repository,
};
use flext_domain::{
    Aggregate, DomainEvent, Error, ErrorCode, Id, StreamId, StreamVersion, Validation,
};
use flext_memory::InMemoryEventStore;
use flext_ports::{
    Command, CommandHandler, Context, EventHandler, EventStore, Query, QueryHandler, ReadDirection,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
struct Deposit {
    amount: i64,
}

impl Command for Deposit {
    type Output = i64;
    const NAME: &'static str = "account.deposit";
    fn validate(&self, v: &mut Validation) {
        v.ensure(self.amount > 0, "amount", "NOT_POSITIVE", "must be > 0");
    }
}

struct Doubler;
impl CommandHandler<Deposit> for Doubler {
    async fn handle(&self, command: Deposit, _ctx: &Context) -> Result<i64, Error> {
        if command.amount == 13 {
            panic!("unlucky amount");
        }
        Ok(command.amount * 2)
    }
}

#[derive(Debug, Clone)]
struct Balance;
impl Query for Balance {
    type Output = &'static str;
    const NAME: &'static str = "account.balance";
}
struct Teller;
impl QueryHandler<Balance> for Teller {
    async fn handle(&self, _: Balance, _: &Context) -> Result<&'static str, Error> {
        Ok("42")
    }
}

#[derive(Debug, Clone)]
struct Unregistered;
impl Command for Unregistered {
    type Output = ();
    const NAME: &'static str = "nobody.handles";
}

#[tokio::test]
async fn dispatch_reaches_the_one_handler_and_queries_their_own() {
    let registry = Registry::new()
        .command::<Deposit, _>(Doubler)
        .query::<Balance, _>(Teller);
    let commands = registry.command_bus(Pipeline::new()).unwrap();
    let queries = registry.query_bus(Pipeline::new()).unwrap();
    assert_eq!(
        commands
            .dispatch(Deposit { amount: 21 }, &Context::new())
            .await
            .unwrap(),
        42
    );
    assert_eq!(queries.ask(Balance, &Context::new()).await.unwrap(), "42");
}

#[tokio::test]
async fn a_type_without_handler_is_a_typed_error_naming_it() {
    let bus = Registry::new()
        .command::<Deposit, _>(Doubler)
        .command_bus(Pipeline::new())
        .unwrap();
    let err = bus
        .dispatch(Unregistered, &Context::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(err.reason(), "NO_HANDLER");
    assert!(err.message().contains("nobody.handles"), "{err}");
}

#[test]
fn two_handlers_for_one_command_name_both_sites() {
    let first_line = line!() + 2;
    let registry = Registry::new()
        .command::<Deposit, _>(Doubler)
        .command::<Deposit, _>(Doubler);
    let err = registry.command_bus(Pipeline::new()).unwrap_err();
    assert_eq!(err.reason(), "DUPLICATE_HANDLER");
    let file = file!();
    assert!(
        err.message().contains(&format!("{file}:{first_line}")),
        "{err}"
    );
    assert!(
        err.message()
            .contains(&format!("{file}:{}", first_line + 1)),
        "{err}"
    );
    // Queries are their own namespace: the same registry still builds a query bus.
    assert!(registry.query_bus(Pipeline::new()).is_ok());
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_and_the_bus_keeps_serving() {
    for pipeline in [
        Pipeline::new(),
        Pipeline::new().layer(flext_application::ValidationBehavior),
    ] {
        let bus = Registry::new()
            .command::<Deposit, _>(Doubler)
            .command_bus(pipeline)
            .unwrap();
        let err = bus
            .dispatch(Deposit { amount: 13 }, &Context::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal);
        assert_eq!(err.reason(), "HANDLER_PANICKED");
        // The panic's text goes to the log, never to the caller (errors reach clients).
        assert!(!err.to_string().contains("unlucky amount"), "{err}");
        assert!(err.message().contains("panicked"), "{err}");
        assert_eq!(
            bus.dispatch(Deposit { amount: 1 }, &Context::new())
                .await
                .unwrap(),
            2
        );
    }
}

#[derive(Debug)]
struct Opened;
struct Counter(Arc<Mutex<Vec<&'static str>>>);
impl EventHandler<Opened> for Counter {
    async fn handle(&self, _: &Opened, _: &Context) -> Result<(), Error> {
        self.0.lock().expect("lock").push("counter");
        Ok(())
    }
}
struct Failing;
impl EventHandler<Opened> for Failing {
    async fn handle(&self, _: &Opened, _: &Context) -> Result<(), Error> {
        Err(Error::unavailable("MAIL_DOWN", "mail server down"))
    }
}
struct Panicking;
impl EventHandler<Opened> for Panicking {
    async fn handle(&self, _: &Opened, _: &Context) -> Result<(), Error> {
        panic!("boom")
    }
}

#[tokio::test]
async fn publishing_returns_every_outcome_in_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = Registry::new()
        .event::<Opened, _>(Failing)
        .event::<Opened, _>(Panicking)
        .event::<Opened, _>(Counter(seen.clone()))
        .event_bus();
    let outcomes = bus.publish(&Opened, &Context::new()).await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(
        outcomes[0].result.as_ref().unwrap_err().reason(),
        "MAIL_DOWN"
    );
    assert_eq!(
        outcomes[1].result.as_ref().unwrap_err().reason(),
        "HANDLER_PANICKED"
    );
    assert!(outcomes[2].result.is_ok());
    assert_eq!(*seen.lock().expect("lock"), ["counter"]);
    assert!(
        bus.publish(&"no handlers", &Context::new())
            .await
            .is_empty()
    );
}

/// Records when it is entered and left.
struct Recorder(&'static str, Arc<Mutex<Vec<String>>>);
impl Behavior for Recorder {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        _: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        Box::pin(async move {
            self.1
                .lock()
                .expect("lock")
                .push(format!("{} before {}", self.0, message.name()));
            let result = next.run().await;
            self.1
                .lock()
                .expect("lock")
                .push(format!("{} after", self.0));
            result
        })
    }
}

#[tokio::test]
async fn behaviors_run_in_the_order_they_were_layered() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let pipeline = Pipeline::new()
        .layer(Recorder("outer", log.clone()))
        .layer(Recorder("middle", log.clone()))
        .layer(Recorder("inner", log.clone()));
    let bus = Registry::new()
        .command::<Deposit, _>(Doubler)
        .command_bus(pipeline)
        .unwrap();
    assert_eq!(
        bus.dispatch(Deposit { amount: 2 }, &Context::new())
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        *log.lock().expect("lock"),
        [
            "outer before account.deposit",
            "middle before account.deposit",
            "inner before account.deposit",
            "inner after",
            "middle after",
            "outer after",
        ]
    );
}

// ---- Correlation: command -> events -> event handler -> follow-up command ----

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Credited { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        "account.credited"
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Event = AccountEvent;
    fn apply(&mut self, AccountEvent::Credited { amount }: &AccountEvent) {
        self.balance += amount;
    }
}

#[derive(Debug, Clone)]
struct Credit {
    account: Id<Account>,
    amount: i64,
}

impl Command for Credit {
    type Output = ();
    const NAME: &'static str = "account.credit";
}

struct CreditHandler(Arc<Repository<Account, InMemoryEventStore>>);

impl CommandHandler<Credit> for CreditHandler {
    async fn handle(&self, c: Credit, ctx: &Context) -> Result<(), Error> {
        self.0
            .execute(c.account, ctx, |_| {
                Ok(vec![AccountEvent::Credited { amount: c.amount }])
            })
            .await
            .map(|_| ())
    }
}

#[tokio::test]
async fn correlation_flows_from_command_to_events_to_follow_up_commands() {
    let store = InMemoryEventStore::new();
    let repo = Arc::new(Repository::<Account, _>::new(store.clone()));
    let bus = Registry::new()
        .command::<Credit, _>(CreditHandler(repo))
        .command_bus(Pipeline::new())
        .unwrap();
    let (a, b) = (Id::new(), Id::new());
    let command_ctx = Context::new();
    bus.dispatch(
        Credit {
            account: a,
            amount: 5,
        },
        &command_ctx,
    )
    .await
    .unwrap();

    let stream_a = StreamId::for_aggregate(a);
    let recorded = store
        .read_stream(&stream_a, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .unwrap();
    let first = &recorded[0];
    assert_eq!(
        first.metadata.correlation_id,
        Some(command_ctx.correlation_id())
    );
    assert_eq!(
        first.metadata.causation_id.map(|c| c.as_uuid()),
        Some(command_ctx.message_id())
    );

    // An event handler dispatching a follow-up command continues the action.
    let follow_up = Context::for_event(first).child();
    bus.dispatch(
        Credit {
            account: b,
            amount: 5,
        },
        &follow_up,
    )
    .await
    .unwrap();
    let stream_b = StreamId::for_aggregate(b);
    let second = &store
        .read_stream(&stream_b, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .unwrap()[0];
    assert_eq!(
        second.metadata.correlation_id,
        Some(command_ctx.correlation_id())
    );
    assert_eq!(
        follow_up.causation_id().map(|c| c.as_uuid()),
        Some(first.event_id.as_uuid())
    );
    assert_eq!(
        second.metadata.causation_id.map(|c| c.as_uuid()),
        Some(follow_up.message_id())
    );
}

#[test]
fn buses_registry_pipeline_context_and_dispatch_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<CommandBus>();
    send_sync::<QueryBus>();
    send_sync::<EventBus>();
    send_sync::<Registry>();
    send_sync::<Pipeline>();
    send_sync::<Context>();
    let registry = Registry::new()
        .command::<Deposit, _>(Doubler)
        .query::<Balance, _>(Teller);
    let commands = registry.command_bus(Pipeline::new()).unwrap();
    let queries = registry.query_bus(Pipeline::new()).unwrap();
    let events = registry.event_bus();
    let ctx = Context::new();
    send(&commands.dispatch(Deposit { amount: 1 }, &ctx));
    send(&queries.ask(Balance, &ctx));
    send(&events.publish(&Opened, &ctx));
    send(&Doubler.handle(Deposit { amount: 1 }, &ctx));
}

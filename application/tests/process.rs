//! Process managers on memory, SQLite and PostgreSQL: a step's state, commands and
//! deadlines commit with the checkpoint; commands are delivered once under ids derived
//! from the event; a cancelled deadline never fires; a deadline fires once across a
//! restart; an instance's state counts each event exactly once though the runner is
//! aborted again and again in the middle of its batches. And the given/when/then fixture.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use flext_application::{
    App, Deliveries, Effect, Effects, OwnershipOptions, ProcessFixture, ProcessManager,
    ProjectionOptions, Step,
};
use flext_domain::{DomainEvent, Error, ErrorCode, ExpectedVersion, Position, StreamId};
use flext_ports::{
    AppendEvents, Command, CommandHandler, Context, Decoded, EventStore, FixedClock, Instance,
    ProcessStore, WatchAppends,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flext::DomainEvent)]
enum OrderEvent {
    #[event(name = "order.placed")]
    Placed { order: String },
    #[event(name = "order.paid")]
    Paid { order: String },
    #[event(name = "order.cancelled")]
    Cancelled { order: String },
}

impl OrderEvent {
    fn order(&self) -> &str {
        match self {
            OrderEvent::Placed { order }
            | OrderEvent::Paid { order }
            | OrderEvent::Cancelled { order } => order,
        }
    }
}

macro_rules! order_command {
    ($t:ident, $name:literal) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        struct $t {
            order: String,
        }
        impl Command for $t {
            type Output = ();
            const NAME: &'static str = $name;
        }
    };
}

order_command!(Reserve, "order.reserve");
order_command!(Ship, "order.ship");
order_command!(CancelOrder, "order.cancel");
order_command!(Refund, "order.refund");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Awaiting {
    order: String,
}

/// Places reserve stock and wait for payment; unpaid after `unpaid_after`, the order is
/// cancelled; paid, it ships (and its deadline is cancelled).
struct Payment {
    unpaid_after: Duration,
}

impl ProcessManager for Payment {
    type Event = OrderEvent;
    type State = Awaiting;
    const NAME: &'static str = "payment";

    fn associate(&self, event: &Decoded<'_, OrderEvent>) -> Option<String> {
        Some(event.event.order().to_owned())
    }

    fn handle(
        &self,
        state: Option<Awaiting>,
        event: Decoded<'_, OrderEvent>,
        effects: &mut Effects,
    ) -> Result<Step<Awaiting>, Error> {
        Ok(match (state, event.event) {
            (None, OrderEvent::Placed { order }) => {
                effects.send(
                    "reserve",
                    &Reserve {
                        order: order.clone(),
                    },
                )?;
                effects.deadline_after(
                    "unpaid",
                    self.unpaid_after,
                    &CancelOrder {
                        order: order.clone(),
                    },
                )?;
                Step::Continue(Awaiting { order })
            }
            (Some(_), OrderEvent::Paid { order }) => {
                effects.cancel_deadline("unpaid");
                effects.send("ship", &Ship { order })?;
                Step::End
            }
            (Some(_), OrderEvent::Cancelled { .. }) => Step::End,
            _ => Step::Ignore,
        })
    }

    fn commands(&self, deliveries: Deliveries) -> Deliveries {
        deliveries
            .command::<Reserve>()
            .command::<Ship>()
            .command::<CancelOrder>()
    }
}

/// What the command handlers saw: (command name, order, message id, causation id).
type Seen = Arc<Mutex<Vec<(&'static str, String, Uuid, Option<Uuid>)>>>;

struct Record<S> {
    seen: Seen,
    store: S,
}

fn note<C: Command>(seen: &Seen, order: &str, ctx: &Context) {
    seen.lock().expect("seen").push((
        C::NAME,
        order.to_owned(),
        ctx.message_id(),
        ctx.causation_id().map(|c| c.as_uuid()),
    ));
}

impl<S: EventStore + Send + Sync + 'static> CommandHandler<Reserve> for Record<S> {
    async fn handle(&self, c: Reserve, ctx: &Context) -> Result<(), Error> {
        note::<Reserve>(&self.seen, &c.order, ctx);
        Ok(())
    }
}

impl<S: EventStore + Send + Sync + 'static> CommandHandler<Ship> for Record<S> {
    async fn handle(&self, c: Ship, ctx: &Context) -> Result<(), Error> {
        note::<Ship>(&self.seen, &c.order, ctx);
        Ok(())
    }
}

impl<S: EventStore + Send + Sync + 'static> CommandHandler<CancelOrder> for Record<S> {
    async fn handle(&self, c: CancelOrder, ctx: &Context) -> Result<(), Error> {
        note::<CancelOrder>(&self.seen, &c.order, ctx);
        self.store
            .append_events(
                &order_stream(&c.order),
                ExpectedVersion::Any,
                &[OrderEvent::Cancelled { order: c.order }],
                &ctx.event_metadata(),
            )
            .await
            .map(drop)
    }
}

fn order_stream(order: &str) -> StreamId {
    StreamId::new(format!("order-{order}")).expect("stream id")
}

fn ownership() -> OwnershipOptions {
    OwnershipOptions {
        lease_ttl: Duration::from_secs(30),
        renew_every: Duration::from_secs(1),
        ..OwnershipOptions::default()
    }
}

fn app<S>(store: &S, seen: &Seen, unpaid_after: Duration, clock: Option<FixedClock>) -> App<S>
where
    S: ProcessStore + EventStore + WatchAppends + Clone + Sync + 'static,
{
    let record = || Record {
        seen: seen.clone(),
        store: store.clone(),
    };
    let (a, b, c) = (record(), record(), record());
    App::builder(store.clone())
        .runner(|r| r.with_ownership_options(ownership()))
        .process_manager(Payment { unpaid_after })
        .registry(move |r| {
            r.command::<Reserve, _>(a)
                .command::<Ship, _>(b)
                .command::<CancelOrder, _>(c)
        })
        .scheduler(move |b| {
            let b = b
                .poll(Duration::from_millis(10))
                .ownership_options(ownership());
            match clock {
                Some(clock) => b.clock(Arc::new(clock)),
                None => b,
            }
        })
        .start()
        .expect("app")
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count(seen: &Seen, name: &str, order: &str) -> usize {
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|(n, o, _, _)| *n == name && o == order)
        .count()
}

async fn place<S: EventStore>(store: &S, order: &str) -> Position {
    store
        .append_events(
            &order_stream(order),
            ExpectedVersion::Any,
            &[OrderEvent::Placed {
                order: order.to_owned(),
            }],
            &Context::new().event_metadata(),
        )
        .await
        .expect("place")
        .positions[0]
}

async fn pay<S: EventStore>(store: &S, order: &str) {
    store
        .append_events(
            &order_stream(order),
            ExpectedVersion::Any,
            &[OrderEvent::Paid {
                order: order.to_owned(),
            }],
            &Context::new().event_metadata(),
        )
        .await
        .expect("pay");
}

/// Twenty orders, ten paid: every order reserved once, the paid ones shipped once and
/// never cancelled (their deadline was cancelled with the step that saw the payment), the
/// unpaid ones cancelled once by their deadline; every instance ends, nothing stays
/// scheduled; the commands carry ids derived from their event and the event as causation.
async fn steps_commit_once_and_cancelled_deadlines_never_fire<S>(store: S)
where
    S: ProcessStore + EventStore + WatchAppends + Clone + Sync + 'static,
{
    let seen: Seen = Arc::default();
    // Paid orders are paid before the PM runs, so their deadline is cancelled in the
    // same batch or soon after; the unpaid ones fall due 300 ms after they were placed.
    let orders: Vec<String> = (0..20).map(|i| format!("{i}-{}", Uuid::now_v7())).collect();
    for (i, order) in orders.iter().enumerate() {
        place(&store, order).await;
        if i % 2 == 0 {
            pay(&store, order).await;
        }
    }
    let app = app(&store, &seen, Duration::from_millis(300), None);
    eventually("every order settled", async || {
        orders.iter().all(|o| {
            count(&seen, Ship::NAME, o) + count(&seen, CancelOrder::NAME, o) >= 1
                && count(&seen, Reserve::NAME, o) >= 1
        })
    })
    .await;
    // A schedule row is removed only once its command returned, so with nothing left
    // scheduled every `Cancelled` the deadlines caused is stored: the head read after
    // this point covers the events that end the unpaid instances.
    eventually("nothing left scheduled", async || {
        store.next_due().await.expect("next").is_none()
    })
    .await;
    let head = store.read_all(Position::START, 10_000).await.expect("read");
    let head = head.last().expect("events").position;
    app.projections
        .wait_for("payment", head, Duration::from_secs(30))
        .await
        .expect("caught up");
    assert!(
        store.processes("payment").await.expect("list").is_empty(),
        "every instance ended"
    );
    for (i, order) in orders.iter().enumerate() {
        assert_eq!(
            count(&seen, Reserve::NAME, order),
            1,
            "{order} reserved once"
        );
        if i % 2 == 0 {
            assert_eq!(count(&seen, Ship::NAME, order), 1, "{order} shipped once");
            assert_eq!(count(&seen, CancelOrder::NAME, order), 0, "{order} paid");
        } else {
            assert_eq!(count(&seen, Ship::NAME, order), 0, "{order} unpaid");
            assert_eq!(
                count(&seen, CancelOrder::NAME, order),
                1,
                "{order} cancelled"
            );
        }
    }
    // The reserve command of the first order: its id is the placing event's child
    // "reserve", its causation the event.
    let events = store.read_all(Position::START, 10_000).await.expect("read");
    let placed = events
        .iter()
        .find(|e| e.stream_id == order_stream(&orders[0]) && e.event_type == "order.placed")
        .expect("placed");
    let expected = Context::for_event(placed).child_for("reserve").message_id();
    let (_, _, id, causation) = seen
        .lock()
        .expect("seen")
        .iter()
        .find(|(n, o, _, _)| *n == Reserve::NAME && *o == orders[0])
        .cloned()
        .expect("reserved");
    assert_eq!(id, expected);
    assert_eq!(causation, Some(placed.event_id.as_uuid()));
    app.shutdown().await;
}

/// A deadline an hour away: the first App stops before it is due (its scheduler's clock
/// says now); the second App's scheduler reads a clock two hours on and delivers it,
/// once; nothing is left to deliver again.
async fn a_deadline_fires_once_across_a_restart<S>(store: S)
where
    S: ProcessStore + EventStore + WatchAppends + Clone + Sync + 'static,
{
    let seen: Seen = Arc::default();
    let order = format!("late-{}", Uuid::now_v7());
    let at = place(&store, &order).await;
    let first = app(&store, &seen, Duration::from_secs(3600), None);
    first
        .projections
        .wait_for("payment", at, Duration::from_secs(30))
        .await
        .expect("handled");
    eventually("reserved", async || {
        count(&seen, Reserve::NAME, &order) == 1
    })
    .await;
    first.shutdown().await;
    let due = store
        .next_due()
        .await
        .expect("next")
        .expect("the deadline is pending");
    assert!(due > Utc::now() + chrono::Duration::minutes(30), "{due}");
    assert_eq!(count(&seen, CancelOrder::NAME, &order), 0, "not yet due");

    let later = FixedClock(Utc::now() + chrono::Duration::hours(2));
    let second = app(&store, &seen, Duration::from_secs(3600), Some(later));
    eventually("cancelled by the deadline", async || {
        count(&seen, CancelOrder::NAME, &order) == 1
    })
    .await;
    eventually("the instance ended", async || {
        store.processes("payment").await.expect("list").is_empty()
    })
    .await;
    second.shutdown().await;
    assert_eq!(
        store.next_due().await.expect("next"),
        None,
        "delivered: removed"
    );
    assert_eq!(count(&seen, CancelOrder::NAME, &order), 1, "once");
    assert_eq!(count(&seen, Reserve::NAME, &order), 1, "once");
}

/// A tally: one instance counts every event it is handed.
struct Tally;

#[derive(Debug, Clone, Serialize, Deserialize, flext::DomainEvent)]
enum Tick {
    #[event(name = "tick")]
    Tick { n: u64 },
}

impl ProcessManager for Tally {
    type Event = Tick;
    type State = Vec<u64>;
    const NAME: &'static str = "tally";

    fn associate(&self, _: &Decoded<'_, Tick>) -> Option<String> {
        Some("all".to_owned())
    }

    fn handle(
        &self,
        state: Option<Vec<u64>>,
        event: Decoded<'_, Tick>,
        _: &mut Effects,
    ) -> Result<Step<Vec<u64>>, Error> {
        let Tick::Tick { n } = event.event;
        let mut seen = state.unwrap_or_default();
        seen.push(n);
        Ok(Step::Continue(seen))
    }

    fn commands(&self, deliveries: Deliveries) -> Deliveries {
        deliveries
    }
}

/// 400 events appended while the runner is aborted (dropped mid-batch, uncommitted
/// transactions and all) and started again, 10 times: the instance's state holds every
/// event exactly once, in order, and its version is the number of events.
async fn process_state_counts_each_event_once_across_aborts<S>(store: S)
where
    S: ProcessStore + EventStore + WatchAppends + Clone + Sync + 'static,
{
    const EVENTS: u64 = 400;
    let stream = StreamId::new(format!("ticks-{}", Uuid::now_v7())).expect("stream");
    let writer = {
        let store = store.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            for n in 1..=EVENTS {
                store
                    .append_events(
                        &stream,
                        ExpectedVersion::Any,
                        &[Tick::Tick { n }],
                        &Context::new().event_metadata(),
                    )
                    .await
                    .expect("append");
                if n % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let options = ProjectionOptions {
        batch_size: 7,
        ..ProjectionOptions::default()
    };
    for round in 0..10 {
        let running = support::runner(store.clone())
            .with_instance(Instance::named(format!("round-{round}")))
            .process_manager_with(Tally, options)
            .expect("runner")
            .start();
        tokio::time::sleep(Duration::from_millis(3 + round * 2)).await;
        running.abort();
    }
    writer.await.expect("writer");
    let running = support::runner(store.clone())
        .process_manager_with(Tally, options)
        .expect("runner")
        .start();
    let head = store
        .read_all(Position::START, 100_000)
        .await
        .expect("read");
    let head = head.last().expect("events").position;
    running
        .wait_for("tally", head, Duration::from_secs(60))
        .await
        .expect("caught up");
    running.shutdown().await;
    let processes = store.processes("tally").await.expect("list");
    assert_eq!(processes.len(), 1);
    let (association, stored) = &processes[0];
    assert_eq!(association, "all");
    let seen: Vec<u64> = serde_json::from_slice(&stored.state).expect("state");
    assert_eq!(
        seen,
        (1..=EVENTS).collect::<Vec<_>>(),
        "each event once, in order"
    );
    assert_eq!(stored.version, EVENTS);
}

macro_rules! on_stores {
    ($($case:ident),*) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(flext_memory::InMemoryEventStore::new()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::postgres().await).await;
                }
            )*
        }
    };
}

on_stores!(
    steps_commit_once_and_cancelled_deadlines_never_fire,
    a_deadline_fires_once_across_a_restart,
    process_state_counts_each_event_once_across_aborts
);

// The fixture: the same decisions without a store.

fn placed(order: &str) -> OrderEvent {
    OrderEvent::Placed {
        order: order.to_owned(),
    }
}

#[test]
fn the_fixture_shows_commands_deadlines_and_state() {
    let mut f = ProcessFixture::new(Payment {
        unpaid_after: Duration::from_secs(60),
    });
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    f.at(at);
    let then = f.when("order-1", placed("1")).expect("placed");
    assert_eq!(then.association(), Some("1"));
    assert_eq!(
        then.sent::<Reserve>().expect("decode"),
        [Reserve {
            order: "1".to_owned()
        }]
    );
    assert_eq!(
        then.deadlines(),
        [(
            "unpaid",
            at + chrono::Duration::seconds(60),
            CancelOrder::NAME
        )]
    );
    assert_eq!(
        then.deadline::<CancelOrder>("unpaid").expect("decode"),
        Some(CancelOrder {
            order: "1".to_owned()
        })
    );
    assert_eq!(
        then.state(),
        Some(&Awaiting {
            order: "1".to_owned()
        })
    );
    assert!(!then.ended());

    let then = f
        .when(
            "order-1",
            OrderEvent::Paid {
                order: "1".to_owned(),
            },
        )
        .expect("paid");
    assert!(then.ended());
    assert_eq!(then.cancelled(), ["unpaid"]);
    assert_eq!(then.sent::<Ship>().expect("decode").len(), 1);
    assert!(then.sent::<Reserve>().expect("decode").is_empty());
    assert_eq!(then.state(), None);
    assert_eq!(f.state("1").expect("state"), None);

    // Paid again after the end: no instance, nothing done.
    let then = f
        .when(
            "order-1",
            OrderEvent::Paid {
                order: "1".to_owned(),
            },
        )
        .expect("paid");
    assert!(then.effects().is_empty());
    assert!(!then.ended());
}

#[test]
fn given_events_build_the_state_the_when_step_sees() {
    let mut f = ProcessFixture::new(Payment {
        unpaid_after: Duration::from_secs(60),
    });
    f.given("order-2", [placed("2")]).expect("given");
    f.given("order-3", [placed("3")]).expect("given");
    assert!(f.state("2").expect("state").is_some());
    let then = f
        .when(
            "order-3",
            OrderEvent::Cancelled {
                order: "3".to_owned(),
            },
        )
        .expect("cancelled");
    assert!(then.ended());
    assert!(f.state("2").expect("state").is_some(), "another instance");
    assert_eq!(f.state("3").expect("state"), None);
}

/// A manager that sends a command it does not list: the step is refused, by the fixture
/// as by the runner.
struct Forgetful;

impl ProcessManager for Forgetful {
    type Event = OrderEvent;
    type State = ();
    const NAME: &'static str = "forgetful";

    fn handle(
        &self,
        _: Option<()>,
        event: Decoded<'_, OrderEvent>,
        effects: &mut Effects,
    ) -> Result<Step<()>, Error> {
        effects.send(
            "refund",
            &Refund {
                order: event.event.order().to_owned(),
            },
        )?;
        Ok(Step::Continue(()))
    }

    fn commands(&self, deliveries: Deliveries) -> Deliveries {
        deliveries.command::<Reserve>()
    }
}

#[test]
fn an_unlisted_command_is_refused_by_name() {
    let mut f = ProcessFixture::new(Forgetful);
    let e = f.when("order-4", placed("4")).expect_err("refused");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert_eq!(e.reason(), "UNDELIVERABLE_COMMAND");
    assert!(e.message().contains("order.refund"), "{e}");
    assert_eq!(f.state("4").expect("state"), None, "nothing kept");
}

#[test]
fn effects_name_their_keys_and_ids_after_the_event() {
    let mut f = ProcessFixture::new(Payment {
        unpaid_after: Duration::from_secs(1),
    });
    let then = f.when("order-5", placed("5")).expect("placed");
    let keys: Vec<&str> = then
        .effects()
        .iter()
        .map(|e| match e {
            Effect::Send(m) | Effect::Deadline { message: m, .. } => m.key.as_str(),
            Effect::Cancel { key, .. } => key.as_str(),
        })
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].starts_with("process/payment/5/send/"), "{keys:?}");
    assert_eq!(
        keys[1],
        flext_application::deadline_key("payment", "5", "unpaid")
    );
    assert_eq!(OrderEvent::event_types().len(), 3);
}

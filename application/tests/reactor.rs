//! Reactors on memory, SQLite and PostgreSQL: per-key order while keys run concurrently
//! (up to the bound), only the event types asked for, follow-up commands dispatched from
//! inside a reaction (outside the store's transaction, so SQLite's writer is free) with
//! causation and correlation kept, and failures handled like a projection's: transient
//! errors retried, a poison event parked after `max_attempts` and redriven, the events
//! before a failure never handed over twice.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_application::{
    CommandBus, Pipeline, PoisonPolicy, ProjectionOptions, Reactor, ReactorOptions, Registry,
};
use flext_domain::{
    CorrelationId, Error, EventId, EventMetadata, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StreamId,
};
use flext_ports::{
    Command, CommandHandler, Context, EventStore, ProjectionStore, ReadDirection, WatchAppends,
};

const WAIT: Duration = Duration::from_secs(30);

async fn append<S: EventStore>(store: &S, stream: &str, kind: &str, n: u64) -> Position {
    store
        .append(
            &StreamId::new(stream).expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), kind, n.to_string())],
        )
        .await
        .expect("append")
        .last_position()
        .expect("position")
}

/// Records what it is handed; sleeps a little so keys overlap.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, u64)>>,
    in_flight: AtomicUsize,
    most_at_once: AtomicUsize,
}

struct Ordered(Arc<Recorder>);

impl Reactor for Ordered {
    fn name(&self) -> &str {
        "ordered"
    }
    fn event_types(&self) -> Option<&[&str]> {
        Some(&["sent"])
    }
    async fn react(&self, event: &RecordedEvent, _ctx: &Context) -> Result<(), Error> {
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0
            .seen
            .lock()
            .expect("seen")
            .push((event.stream_id.as_str().to_owned(), event.stream_version.0));
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// 8 streams of 20 events each, interleaved, with other types between: each stream's
/// events are handled once each and in version order, several streams at once but never
/// more than the bound of 4, and the events of other types never.
async fn keys_keep_their_order_and_run_concurrently<S>(store: S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    let mut head = Position::START;
    for round in 0..20 {
        for k in 0..8 {
            append(&store, &format!("acc-{k}"), "sent", round).await;
            head = append(&store, &format!("acc-{k}"), "noise", round).await;
        }
    }
    let recorder = Arc::new(Recorder::default());
    let runner = support::runner(store.clone())
        .reactor_with(
            Ordered(recorder.clone()),
            ProjectionOptions {
                batch_size: 64,
                ..ProjectionOptions::default()
            },
            ReactorOptions { concurrency: 4 },
        )
        .expect("reactor")
        .start();
    runner
        .wait_for("ordered", head, WAIT)
        .await
        .expect("caught up");
    let seen = recorder.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 160, "each 'sent' event once, no 'noise'");
    let mut per_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (stream, version) in seen {
        per_stream.entry(stream).or_default().push(version);
    }
    for (stream, versions) in &per_stream {
        // 'sent' events are the odd versions (a 'noise' follows each).
        let expected: Vec<u64> = (0..20).map(|i| i * 2 + 1).collect();
        assert_eq!(versions, &expected, "{stream} in order, once each");
    }
    let most = recorder.most_at_once.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "{most} keys at once (bound 4)");
    let status = runner.status("ordered").await.expect("status");
    assert_eq!((status.position, status.dead_letters), (head, 0));
    // Health and status as for a projection.
    let health = runner.health_check("ordered", 1_000).expect("check");
    assert_eq!(
        flext_ports::HealthCheck::check(&health).await.status,
        flext_ports::HealthStatus::Up
    );
    runner.shutdown().await;
}

/// The follow-up command: appends one event, with the dispatch's metadata, to a stream
/// named after the command.
#[derive(Debug, Clone)]
struct Acknowledge {
    of: EventId,
}

impl Command for Acknowledge {
    type Output = ();
    const NAME: &'static str = "test.acknowledge";
}

struct AcknowledgeHandler<S>(S);

impl<S: EventStore + Send + Sync + 'static> CommandHandler<Acknowledge> for AcknowledgeHandler<S> {
    async fn handle(&self, command: Acknowledge, ctx: &Context) -> Result<(), Error> {
        // The payload: what caused the command (the reacted event, it should be).
        let cause = ctx
            .causation_id()
            .map(|c| c.as_uuid().to_string())
            .unwrap_or_default();
        let event = NewEvent::new(
            EventId::from_uuid(ctx.message_id()),
            "acknowledged",
            serde_json::to_vec(&cause).expect("json"),
        )
        .with_metadata(ctx.event_metadata());
        self.0
            .append(
                &StreamId::new(format!("ack-{}", command.of)).expect("stream"),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .map(drop)
    }
}

struct Acknowledger(CommandBus);

impl Reactor for Acknowledger {
    fn name(&self) -> &str {
        "acknowledger"
    }
    fn event_types(&self) -> Option<&[&str]> {
        Some(&["sent"])
    }
    async fn react(&self, event: &RecordedEvent, ctx: &Context) -> Result<(), Error> {
        self.0
            .dispatch(
                Acknowledge { of: event.event_id },
                &ctx.child_for("acknowledge"),
            )
            .await
    }
}

/// The one "sent" event in the store and the acknowledgements of it.
async fn acknowledgements<S: EventStore>(store: &S) -> (RecordedEvent, Vec<RecordedEvent>) {
    let reacted = store
        .read_all(Position::START, 10)
        .await
        .expect("read")
        .into_iter()
        .find(|e| e.event_type == "sent")
        .expect("sent");
    let acks = store
        .read_stream(
            &StreamId::new(format!("ack-{}", reacted.event_id)).expect("stream"),
            flext_domain::StreamVersion(1),
            10,
            ReadDirection::Forward,
        )
        .await
        .expect("read");
    (reacted, acks)
}

/// A reaction dispatches a command that appends to the same store (on SQLite that needs
/// the writer, which a reaction inside the batch's transaction would hold): the follow-up
/// event is caused by the reacted event, in its business action, under a message id
/// derived from it.
async fn follow_up_commands_append_with_causation<S>(store: S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone + Send + Sync + 'static,
{
    let correlation = CorrelationId::new();
    let sent = store
        .append(
            &StreamId::new("acc-1").expect("stream"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new(EventId::new(), "sent", "5")
                    .with_metadata(EventMetadata::new().with_correlation(correlation)),
            ],
        )
        .await
        .expect("append");
    let commands = Registry::new()
        .command::<Acknowledge, _>(AcknowledgeHandler(store.clone()))
        .command_bus(Pipeline::new())
        .expect("bus");
    let runner = support::runner(store.clone())
        .reactor(Acknowledger(commands))
        .expect("reactor")
        .start();
    runner
        .wait_for("acknowledger", sent.positions[0], WAIT)
        .await
        .expect("reacted");
    let (reacted, mut acks) = acknowledgements(&store).await;
    let ack = acks.pop().expect("the follow-up event");
    let command_id = Context::for_event(&reacted)
        .child_for("acknowledge")
        .message_id();
    let cause: String = serde_json::from_slice(&ack.payload).expect("json");
    assert_eq!(
        cause,
        reacted.event_id.as_uuid().to_string(),
        "the command was caused by the reacted event"
    );
    assert_eq!(
        ack.metadata.causation_id.map(|c| c.as_uuid()),
        Some(command_id),
        "the follow-up event by the command, whose id derives from the reacted event \
         (a re-delivery repeats it)"
    );
    assert_eq!(ack.metadata.correlation_id, Some(correlation));
    runner.shutdown().await;
}

/// Fails events of type "poison" while poisoned, "flaky" ones transiently a number of
/// times; counts every attempt per event.
#[derive(Default)]
struct Faults {
    poisoned: AtomicBool,
    unavailable_left: AtomicU64,
    attempts: Mutex<BTreeMap<u64, u64>>,
}

struct Faulty(Arc<Faults>);

impl Reactor for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }
    async fn react(&self, event: &RecordedEvent, _ctx: &Context) -> Result<(), Error> {
        let n: u64 = std::str::from_utf8(&event.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a number");
        *self
            .0
            .attempts
            .lock()
            .expect("attempts")
            .entry(n)
            .or_default() += 1;
        if event.event_type == "flaky"
            && self
                .0
                .unavailable_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(Error::unavailable("DOWNSTREAM_DOWN", "try again"));
        }
        if event.event_type == "poison" && self.0.poisoned.load(Ordering::SeqCst) {
            return Err(Error::failed_precondition("POISON", "cannot react"));
        }
        Ok(())
    }
}

/// In one batch: 1 and 2 react, 3 is poison, 4 reacts, 5 fails transiently 8 times (more
/// than `max_attempts`). 1 and 2 are handed over once only (the checkpoint was committed
/// before the failure), 3 is tried `max_attempts` times and parked, 5 is retried until it
/// passes and never parked; the redrive of 3, once cured, reacts and empties the dead
/// letters.
async fn failures_are_retried_parked_and_redriven<S>(store: S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    append(&store, "k1", "ok", 1).await;
    append(&store, "k2", "ok", 2).await;
    append(&store, "k3", "poison", 3).await;
    append(&store, "k4", "ok", 4).await;
    let head = append(&store, "k5", "flaky", 5).await;
    let faults = Arc::new(Faults::default());
    faults.poisoned.store(true, Ordering::SeqCst);
    faults.unavailable_left.store(8, Ordering::SeqCst);
    let runner = support::runner(store.clone())
        .reactor_with(
            Faulty(faults.clone()),
            ProjectionOptions {
                batch_size: 10,
                max_attempts: 3,
                backoff: Duration::from_millis(2),
                max_backoff: Duration::from_millis(10),
                on_poison: PoisonPolicy::Park,
                ..ProjectionOptions::default()
            },
            ReactorOptions::default(),
        )
        .expect("reactor")
        .start();
    runner
        .wait_for("faulty", head, WAIT)
        .await
        .expect_err("3 is parked");
    let letters = runner.dead_letters("faulty").await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        runner.status("faulty").await.expect("status").dead_letters,
        1,
        "the status counts it"
    );
    assert_eq!(letters[0].error.reason(), "POISON");
    let attempts = faults.attempts.lock().expect("attempts").clone();
    assert_eq!(attempts.get(&1), Some(&1), "{attempts:?}");
    assert_eq!(attempts.get(&2), Some(&1), "{attempts:?}");
    assert_eq!(attempts.get(&3), Some(&3), "{attempts:?}");
    assert!(attempts.get(&4).is_some_and(|n| *n >= 1), "{attempts:?}");
    assert_eq!(
        attempts.get(&5).copied(),
        Some(9),
        "8 transient failures, then once more"
    );
    assert_eq!(
        runner.status("faulty").await.expect("status").position,
        head
    );

    faults.poisoned.store(false, Ordering::SeqCst);
    let report = runner.redrive_all("faulty").await.expect("redrive");
    assert_eq!((report.redriven, report.still_failing.len()), (1, 0));
    assert!(
        runner
            .dead_letters("faulty")
            .await
            .expect("letters")
            .is_empty()
    );
    assert_eq!(faults.attempts.lock().expect("attempts").get(&3), Some(&4));
    runner
        .wait_for("faulty", head, WAIT)
        .await
        .expect("nothing parked now");
    runner.shutdown().await;
}

/// A transfer's first leg, as stored by an aggregate.
#[derive(serde::Serialize, serde::Deserialize)]
struct TransferSent {
    amount: i64,
}

impl flext_domain::DomainEvent for TransferSent {
    fn event_type(&self) -> &'static str {
        "transfer.sent"
    }
    fn event_types() -> &'static [&'static str] {
        &["transfer.sent"]
    }
}

/// Sums the amounts it is handed, decoded.
struct Settler(Arc<AtomicU64>);

impl flext_application::EventReactor for Settler {
    type Event = TransferSent;
    const NAME: &'static str = "settler";
    async fn react(
        &self,
        event: flext_ports::Decoded<'_, TransferSent>,
        _ctx: &Context,
    ) -> Result<(), Error> {
        self.0
            .fetch_add(event.event.amount as u64, Ordering::SeqCst);
        Ok(())
    }
}

/// An `EventReactor` is handed its own type's events decoded, and none of the others
/// (whose payloads it could not decode).
async fn typed_reactors_get_their_events_decoded<S>(store: S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    use flext_ports::AppendEvents as _;
    let none = EventMetadata::default();
    for amount in [5, 7, 30] {
        store
            .append_events(
                &StreamId::new("transfer-1").expect("stream"),
                ExpectedVersion::Any,
                &[TransferSent { amount }],
                &none,
            )
            .await
            .expect("append");
    }
    let head = append(&store, "other-1", "not.json", 1).await;
    let total = Arc::new(AtomicU64::new(0));
    let runner = support::runner(store.clone())
        .reactor(Settler(total.clone()))
        .expect("reactor")
        .start();
    runner
        .wait_for("settler", head, WAIT)
        .await
        .expect("caught up");
    assert_eq!(total.load(Ordering::SeqCst), 42);
    assert_eq!(
        runner.status("settler").await.expect("status").dead_letters,
        0
    );
    runner.shutdown().await;
}

/// A receipt per transfer: appended under a fresh event id, so a second run of the
/// command would show as a second receipt.
#[derive(Debug, Clone, serde::Serialize)]
struct Receipt;

impl Command for Receipt {
    type Output = ();
    const NAME: &'static str = "test.receipt";
}

struct ReceiptHandler<S>(S);

impl<S: EventStore + Send + Sync + 'static> CommandHandler<Receipt> for ReceiptHandler<S> {
    async fn handle(&self, _: Receipt, ctx: &Context) -> Result<(), Error> {
        self.0
            .append(
                &StreamId::new("receipts").expect("stream"),
                ExpectedVersion::Any,
                vec![
                    NewEvent::new(EventId::new(), "receipt", "0")
                        .with_metadata(ctx.event_metadata()),
                ],
            )
            .await
            .map(drop)
    }
}

struct Receipts(CommandBus, Arc<AtomicU64>);

impl Reactor for Receipts {
    fn name(&self) -> &str {
        "receipts"
    }
    fn event_types(&self) -> Option<&[&str]> {
        Some(&["sent"])
    }
    async fn react(&self, _event: &RecordedEvent, ctx: &Context) -> Result<(), Error> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.dispatch(Receipt, &ctx.child_for("receipt")).await
    }
}

/// At least once, effect exactly once: every event is handed over again (the checkpoint
/// taken back to the start, as after a crash between the effects and the checkpoint),
/// and the follow-up commands, dispatched with `child_for`, carry the same message ids,
/// so the idempotency behavior answers from the first run and no receipt is written
/// twice.
async fn a_redelivered_event_runs_its_command_once<S>(store: S)
where
    S: ProjectionStore
        + EventStore
        + WatchAppends
        + flext_ports::IdempotencyStore
        + Clone
        + Send
        + Sync
        + 'static,
{
    let mut head = Position::START;
    for n in 0..5 {
        head = append(&store, &format!("acc-{n}"), "sent", n).await;
    }
    let commands =
        Registry::new()
            .command::<Receipt, _>(ReceiptHandler(store.clone()))
            .command_bus(Pipeline::new().layer(
                flext_application::IdempotencyBehavior::new(store.clone()).command::<Receipt>(),
            ))
            .expect("bus");
    let handed = Arc::new(AtomicU64::new(0));
    let runner = support::runner(store.clone())
        .reactor(Receipts(commands, handed.clone()))
        .expect("reactor")
        .start();
    runner
        .wait_for("receipts", head, WAIT)
        .await
        .expect("first run");
    runner
        .rebuild("receipts", flext_application::RebuildFrom::Start)
        .await
        .expect("back to the start");
    let deadline = tokio::time::Instant::now() + WAIT;
    while handed.load(Ordering::SeqCst) < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not handed over again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runner
        .wait_for("receipts", head, WAIT)
        .await
        .expect("second run");
    let receipts = store
        .read_stream(
            &StreamId::new("receipts").expect("stream"),
            flext_domain::StreamVersion(1),
            100,
            ReadDirection::Forward,
        )
        .await
        .expect("read");
    assert_eq!(handed.load(Ordering::SeqCst), 10, "every event twice");
    assert_eq!(receipts.len(), 5, "each command's effect once");
    runner.shutdown().await;
}

/// In an `App`, a reactor is made from the app's command bus at start and runs beside
/// the projections: its follow-up command is handled by the app's handlers.
async fn an_app_makes_its_reactors_from_its_command_bus<S>(store: S)
where
    S: ProjectionStore + EventStore + WatchAppends + Clone + Send + Sync + 'static,
{
    let sent = append(&store, "acc-1", "sent", 5).await;
    let app = flext_application::App::builder(store.clone())
        .registry({
            let store = store.clone();
            move |r| r.command::<Acknowledge, _>(AcknowledgeHandler(store))
        })
        .reactor(|commands| Acknowledger(commands.clone()))
        .start()
        .expect("start");
    app.projections
        .wait_for("acknowledger", sent, WAIT)
        .await
        .expect("reacted");
    let (_, acks) = acknowledgements(&store).await;
    assert_eq!(acks.len(), 1, "the follow-up command ran once");
    app.shutdown().await;
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
    keys_keep_their_order_and_run_concurrently,
    follow_up_commands_append_with_causation,
    failures_are_retried_parked_and_redriven,
    typed_reactors_get_their_events_decoded,
    a_redelivered_event_runs_its_command_once,
    an_app_makes_its_reactors_from_its_command_bus
);

//! The repository on every store: load/save, retries on conflict, snapshots (including a
//! stale schema), upcasting, corrupted events, and one round trip per warm command.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flext_application::{Repository, RetryPolicy};
use flext_domain::{
    Aggregate, DomainEvent, Error, ErrorCode, EventId, EventMetadata, ExpectedVersion, Id,
    NewEvent, Position, RecordedEvent, StreamId, StreamVersion,
};
use flext_memory::InMemoryEventStore;
use flext_ports::{
    AppendOutcome, EventStore, JsonCodec, ReadDirection, STREAM_DELETED, STREAM_TRUNCATED,
    Snapshot, SnapshotStore, StreamLifecycle, Upcasters,
};
use flext_postgres::PgEventStore;
use flext_sqlite::SqliteEventStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    deposits: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { cents: i64 },
    Withdrawn { cents: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Deposited { .. } => "account.deposited",
            AccountEvent::Withdrawn { .. } => "account.withdrawn",
        }
    }
    fn schema_version(&self) -> u32 {
        match self {
            AccountEvent::Deposited { .. } => 2,
            AccountEvent::Withdrawn { .. } => 1,
        }
    }
    fn current_schema_version(event_type: &str) -> Option<u32> {
        match event_type {
            "account.deposited" => Some(2),
            "account.withdrawn" => Some(1),
            _ => None,
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Event = AccountEvent;
    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Deposited { cents } => {
                self.balance += cents;
                self.deposits += 1;
            }
            AccountEvent::Withdrawn { cents } => self.balance -= cents,
        }
    }
}

fn deposit(cents: i64) -> impl Fn(&Account) -> Result<Vec<AccountEvent>, Error> {
    move |_| Ok(vec![AccountEvent::Deposited { cents }])
}

fn withdraw(cents: i64) -> impl Fn(&Account) -> Result<Vec<AccountEvent>, Error> {
    move |a| {
        if a.balance < cents {
            return Err(Error::failed_precondition(
                "INSUFFICIENT_FUNDS",
                "balance too low",
            ));
        }
        Ok(vec![AccountEvent::Withdrawn { cents }])
    }
}

/// A store that counts the calls reaching the real store beneath it.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    reads: Arc<AtomicUsize>,
    appends: Arc<AtomicUsize>,
}

impl<S> Counting<S> {
    fn new(inner: S) -> Self {
        Counting {
            inner,
            reads: Arc::default(),
            appends: Arc::default(),
        }
    }
    fn take(&self) -> (usize, usize) {
        (
            self.reads.swap(0, Ordering::SeqCst),
            self.appends.swap(0, Ordering::SeqCst),
        )
    }
}

impl<S: EventStore> EventStore for Counting<S> {
    async fn append(
        &self,
        s: &StreamId,
        e: ExpectedVersion,
        ev: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(s, e, ev).await
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        f: StreamVersion,
        n: usize,
        d: ReadDirection,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(s, f, n, d).await
    }
    async fn read_all(&self, a: Position, n: usize) -> Result<Vec<RecordedEvent>, Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_all(a, n).await
    }
    async fn stream_version(&self, s: &StreamId) -> Result<StreamVersion, Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.stream_version(s).await
    }
}

impl<S: SnapshotStore> SnapshotStore for Counting<S> {
    async fn save_snapshot(&self, s: Snapshot) -> Result<(), Error> {
        self.inner.save_snapshot(s).await
    }
    async fn load_snapshot(&self, s: &StreamId) -> Result<Option<Snapshot>, Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_snapshot(s).await
    }
}

async fn load_save_and_business_errors<S: EventStore + SnapshotStore>(store: S) {
    let repo = Repository::<Account, _>::new(store);
    let id = Id::new();
    let meta = EventMetadata::default();
    repo.execute_with_metadata(id, &meta, deposit(500))
        .await
        .expect("deposit");
    let out = repo
        .execute_with_metadata(id, &meta, withdraw(200))
        .await
        .expect("withdraw");
    assert_eq!(out.stream_version, StreamVersion(2));
    assert_eq!(out.attempts, 1);
    let refused = repo
        .execute_with_metadata(id, &meta, withdraw(1_000))
        .await
        .expect_err("refused");
    assert_eq!(refused.reason(), "INSUFFICIENT_FUNDS");
    let root = repo.load(id).await.expect("load");
    assert_eq!(
        root.state(),
        &Account {
            balance: 300,
            deposits: 1
        }
    );
    assert_eq!(
        root.version(),
        StreamVersion(2),
        "the refused command wrote nothing"
    );
}

async fn conflict_is_retried_after_reload<S: EventStore + SnapshotStore + Clone>(store: S) {
    let counting = Counting::new(store);
    let repo = Repository::<Account, _>::new(counting.clone()).with_cache(16);
    let id = Id::new();
    let meta = EventMetadata::default();
    repo.execute_with_metadata(id, &meta, deposit(100))
        .await
        .expect("deposit");
    // Another writer moves the stream on behind the cached copy.
    let other = Repository::<Account, _>::new(counting.clone());
    other
        .execute_with_metadata(id, &meta, deposit(1))
        .await
        .expect("other writer");
    counting.take();
    let out = repo
        .execute_with_metadata(id, &meta, deposit(5))
        .await
        .expect("retried");
    assert_eq!(
        out.attempts, 2,
        "first attempt conflicts on the stale cache, second wins"
    );
    assert_eq!(out.stream_version, StreamVersion(3));
    let (_, appends) = counting.take();
    assert_eq!(appends, 2);
    assert_eq!(repo.load(id).await.expect("load").state().balance, 106);

    // A refusal on the stale cached state is decided again on the fresh one.
    other
        .execute_with_metadata(id, &meta, deposit(10))
        .await
        .expect("other writer");
    let out = repo
        .execute_with_metadata(id, &meta, withdraw(116))
        .await
        .expect("allowed on fresh state");
    assert_eq!(out.stream_version, StreamVersion(5));
    assert_eq!(repo.load(id).await.expect("load").state().balance, 0);

    let no_retry = Repository::<Account, _>::new(counting.clone())
        .with_cache(16)
        .with_retry(RetryPolicy::none());
    no_retry
        .execute_with_metadata(id, &meta, deposit(1))
        .await
        .expect("warm the cache");
    other
        .execute_with_metadata(id, &meta, deposit(1))
        .await
        .expect("other writer");
    let err = no_retry
        .execute_with_metadata(id, &meta, deposit(1))
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), ErrorCode::CONFLICT);
    assert_eq!(err.detail("attempts"), Some(&serde_json::json!(1)));
}

async fn warm_command_is_one_round_trip<S: EventStore + SnapshotStore + Clone>(store: S) {
    let counting = Counting::new(store);
    let repo = Repository::<Account, _>::new(counting.clone()).with_cache(16);
    let id = Id::new();
    let meta = EventMetadata::default();
    repo.execute_with_metadata(id, &meta, deposit(1))
        .await
        .expect("cold");
    counting.take();
    for _ in 0..10 {
        repo.execute_with_metadata(id, &meta, deposit(1))
            .await
            .expect("warm");
    }
    assert_eq!(
        counting.take(),
        (0, 10),
        "ten warm commands: no reads, ten appends"
    );
}

async fn snapshots_bound_the_replay_and_stale_ones_are_ignored<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let counting = Counting::new(store);
    let repo = Repository::<Account, _>::new(counting.clone()).with_snapshots(10, 1);
    let id = Id::new();
    let meta = EventMetadata::default();
    for _ in 0..25 {
        repo.execute_with_metadata(id, &meta, deposit(2))
            .await
            .expect("deposit");
    }
    let stream = StreamId::for_aggregate(id);
    let snap = counting
        .load_snapshot(&stream)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(snap.version, StreamVersion(20));
    counting.take();
    let root = repo.load(id).await.expect("load");
    assert_eq!(
        root.state(),
        &Account {
            balance: 50,
            deposits: 25
        }
    );
    assert_eq!(root.version(), StreamVersion(25));

    // A repository whose snapshot schema moved on ignores the stored one and replays.
    let newer = Repository::<Account, _>::new(counting.clone()).with_snapshots(10, 2);
    let replayed = newer.load(id).await.expect("load");
    assert_eq!(replayed.state(), root.state());
    // An undecodable snapshot is ignored too.
    counting
        .save_snapshot(Snapshot {
            stream_id: stream,
            version: StreamVersion(24),
            schema_version: 1,
            state: "{oops".into(),
        })
        .await
        .expect("save");
    assert_eq!(repo.load(id).await.expect("load").state(), root.state());
}

async fn old_events_are_upcast_and_corrupt_ones_named<S: EventStore + SnapshotStore + Clone>(
    store: S,
) {
    let id: Id<Account> = Id::new();
    let stream = StreamId::for_aggregate(id);
    // Version 1 of `account.deposited` stored whole units as `amount`.
    let v1 = NewEvent::new(
        EventId::new(),
        "account.deposited",
        &br#"{"Deposited":{"amount":3}}"#[..],
    );
    store
        .append(&stream, ExpectedVersion::NoStream, vec![v1])
        .await
        .expect("append v1");
    let plain = Repository::<Account, _>::new(store.clone());
    let missing = plain.load(id).await.expect_err("no upcaster");
    assert_eq!(missing.reason(), "MISSING_UPCASTER", "{missing}");

    let upcasters = Upcasters::new()
        .with("account.deposited", 1, |mut v| {
            let units = v["Deposited"]["amount"].as_i64().unwrap_or(0);
            v["Deposited"] = serde_json::json!({ "cents": units * 100 });
            Ok(v)
        })
        .expect("one step");
    let repo = Repository::<Account, _, _>::with_codec(
        store.clone(),
        JsonCodec::with_upcasters(upcasters),
    );
    repo.execute_with_metadata(id, &EventMetadata::default(), deposit(5))
        .await
        .expect("deposit");
    let root = repo.load(id).await.expect("load");
    assert_eq!(root.state().balance, 305);
    let stored = store
        .read_stream(&stream, StreamVersion(1), 1, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(stored[0].schema_version, 1, "storage is never rewritten");

    let junk =
        NewEvent::new(EventId::new(), "account.deposited", &b"\x00junk"[..]).with_schema_version(2);
    store
        .append(
            &stream,
            ExpectedVersion::Exact(StreamVersion(2)),
            vec![junk],
        )
        .await
        .expect("append junk");
    let err = repo.load(id).await.expect_err("corrupt");
    assert_eq!(err.code(), ErrorCode::DataLoss);
    assert_eq!(err.detail("version"), Some(&serde_json::json!(3)));
}

async fn concurrent_commands_on_one_aggregate_all_land<
    S: EventStore + SnapshotStore + Clone + 'static,
>(
    store: S,
) {
    let repo = Arc::new(
        Repository::<Account, _>::new(store)
            .with_cache(64)
            .with_retry(RetryPolicy {
                attempts: 100,
                ..RetryPolicy::default()
            }),
    );
    let id = Id::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                repo.execute_with_metadata(id, &EventMetadata::default(), deposit(1))
                    .await
                    .expect("deposit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let root = repo.load(id).await.expect("load");
    assert_eq!(
        root.state(),
        &Account {
            balance: 80,
            deposits: 80
        }
    );
    assert_eq!(root.version(), StreamVersion(80));
}

/// An aggregate whose streams are named its own way.
#[derive(Debug, Default)]
struct Ledger(i64);

impl Aggregate for Ledger {
    const TYPE: &'static str = "ledger";
    type Event = AccountEvent;
    fn apply(&mut self, e: &AccountEvent) {
        if let AccountEvent::Deposited { cents } = e {
            self.0 += cents;
        }
    }
    fn stream_id(id: Id<Self>) -> StreamId {
        StreamId::new(format!("acme/ledgers/{id}")).expect("a valid stream id")
    }
}

/// Custom stream names are where the repository loads and appends; the context's ids and
/// headers reach the events; the cache forgets on request and reloads.
async fn custom_streams_context_metadata_and_cache_control<
    S: EventStore + SnapshotStore + Clone,
>(
    store: S,
) {
    let repo = Repository::<Ledger, _>::new(store.clone()).with_cache(10);
    let id = Id::new();
    let ctx = flext_ports::Context::new()
        .with_tenant(flext_domain::TenantId::new("acme").expect("a tenant"));
    let done = repo
        .execute(id, &ctx, |_| Ok(vec![AccountEvent::Deposited { cents: 5 }]))
        .await
        .expect("execute");
    assert_eq!(Position::from(done.clone()), done.positions[0]);
    let stream = StreamId::new(format!("acme/ledgers/{id}")).expect("id");
    let stored = store
        .read_stream(&stream, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(
        stored.len(),
        1,
        "appended to the aggregate's own stream name"
    );
    let meta = &stored[0].metadata;
    assert_eq!(meta.correlation_id, Some(ctx.correlation_id()));
    assert_eq!(
        meta.causation_id.map(|c| c.as_uuid()),
        Some(ctx.message_id())
    );
    assert_eq!(meta.headers.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(repo.cached(), 1);

    // An append around the repository: the cached copy is stale until invalidated.
    let outside = EventMetadata::new()
        .with_correlation(flext_domain::CorrelationId::new())
        .with_causation(flext_domain::CausationId::new());
    store
        .append(
            &stream,
            ExpectedVersion::Exact(StreamVersion(1)),
            vec![
                NewEvent::new(
                    EventId::new(),
                    "account.deposited",
                    r#"{"Deposited":{"cents":10}}"#,
                )
                .with_schema_version(2)
                .with_metadata(outside.clone()),
            ],
        )
        .await
        .expect("raw append");
    repo.invalidate(id);
    assert_eq!(repo.cached(), 0);
    let seen = std::sync::Mutex::new(0);
    repo.execute(id, &ctx, |l| {
        *seen.lock().expect("lock") = l.0;
        Ok(Vec::new())
    })
    .await
    .expect("decide on a fresh load");
    assert_eq!(*seen.lock().expect("lock"), 15);
    repo.clear_cache();
    assert_eq!(repo.cached(), 0);
    let read = store
        .read_stream(&stream, StreamVersion(2), 1, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(read[0].metadata, outside);
}

/// Lifecycle through the repository: an aggregate truncated below its snapshot loads
/// as before; one truncated with no snapshot to cover the gap is refused by name (never
/// rebuilt from part of its history); a deleted one is refused, its snapshot gone.
async fn truncated_and_deleted_aggregates<S>(store: S)
where
    S: EventStore + SnapshotStore + StreamLifecycle + Clone,
{
    let repo = Repository::<Account, _>::new(store.clone()).with_snapshots(4, 1);
    let meta = EventMetadata::default();
    let (snapped, bare) = (Id::new(), Id::new());
    for _ in 0..10 {
        repo.execute_with_metadata(snapped, &meta, deposit(10))
            .await
            .expect("deposit");
    }
    let before = repo.load(snapped).await.expect("load");
    let snapshot = store
        .load_snapshot(&Account::stream_id(snapped))
        .await
        .expect("snapshot")
        .expect("a snapshot every 4 events");
    store
        .truncate_stream(&Account::stream_id(snapped), snapshot.version.advanced(1))
        .await
        .expect("truncate");
    let fresh = Repository::<Account, _>::new(store.clone()).with_snapshots(4, 1);
    let after = fresh.load(snapped).await.expect("load from the snapshot");
    assert_eq!(after.state(), before.state());
    assert_eq!(after.version(), before.version());
    fresh
        .execute_with_metadata(snapped, &meta, deposit(1))
        .await
        .expect("commands go on");

    let plain = Repository::<Account, _>::new(store.clone());
    for _ in 0..3 {
        plain
            .execute_with_metadata(bare, &meta, deposit(10))
            .await
            .expect("deposit");
    }
    store
        .truncate_stream(&Account::stream_id(bare), StreamVersion(2))
        .await
        .expect("truncate");
    let e = plain.load(bare).await.expect_err("half a history");
    assert_eq!(e.reason(), STREAM_TRUNCATED, "{e}");

    store
        .delete_stream(&Account::stream_id(snapped), ExpectedVersion::Any)
        .await
        .expect("delete");
    let e = fresh.load(snapped).await.expect_err("deleted");
    assert_eq!(e.reason(), STREAM_DELETED, "{e}");
    let e = fresh
        .execute_with_metadata(snapped, &meta, deposit(1))
        .await
        .expect_err("a command on a deleted aggregate");
    assert_eq!(e.reason(), STREAM_DELETED, "{e}");
}

async fn sqlite() -> SqliteEventStore {
    let path =
        std::env::temp_dir().join(format!("flext-repo-{}.db", uuid::Uuid::now_v7().simple()));
    SqliteEventStore::open(path).await.expect("sqlite store")
}

async fn postgres() -> PgEventStore {
    flext_testkit::harness::fresh_pg_store("repo").await
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { super::$case(super::InMemoryEventStore::new()).await } )*
        }
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { super::$case(super::sqlite().await).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { super::$case(super::postgres().await).await } )*
        }
    };
}

on_every_store!(
    truncated_and_deleted_aggregates,
    load_save_and_business_errors,
    conflict_is_retried_after_reload,
    warm_command_is_one_round_trip,
    snapshots_bound_the_replay_and_stale_ones_are_ignored,
    old_events_are_upcast_and_corrupt_ones_named,
    concurrent_commands_on_one_aggregate_all_land,
    custom_streams_context_metadata_and_cache_control,
);

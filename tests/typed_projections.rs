//! Typed projections: an `EventProjection` is handed only its event type's events,
//! decoded and upcast; the store's other events (another aggregate's) are skipped without
//! a dead letter, and its checkpoint still moves past them. On memory, SQLite and
//! PostgreSQL.
#![cfg(all(
    feature = "macros",
    feature = "memory",
    feature = "sqlite",
    feature = "postgres"
))]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext::application::{ProjectionRunner, Projections};
use flext::memory::InMemoryEventStore;
use flext::ports::{
    AppendEvents, Decoded, EventCodec, EventProjection, EventStore, JsonCodec, ProjectionStore,
    Upcasters,
};
use flext::sqlite::SqliteEventStore;
use flext::{
    DomainEvent, Error, ErrorCode, EventId, EventMetadata, ExpectedVersion, NewEvent, StreamId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "account.opened")]
    Opened { owner: String },
    /// Version 1 stored `units`; version 2 stores `amount`.
    #[event(name = "account.deposited", version = 2)]
    Deposited { amount: i64 },
    #[event(name = "account.withdrawn")]
    Withdrawn { amount: i64 },
}

/// Another aggregate's events, in the same store.
#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
enum TodoEvent {
    #[event(name = "todo.added")]
    Added { title: String },
}

/// Balances by account, and every event type it was handed.
#[derive(Clone)]
struct Balances {
    codec: Arc<JsonCodec>,
    balances: Arc<Mutex<BTreeMap<String, i64>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Balances {
    fn new() -> Self {
        let upcasters = Upcasters::new()
            .with("account.deposited", 1, |mut v| {
                let d = &mut v["Deposited"];
                d["amount"] = d["units"].take();
                Ok(v)
            })
            .expect("upcaster");
        Balances {
            codec: Arc::new(JsonCodec::with_upcasters(upcasters)),
            balances: Arc::default(),
            seen: Arc::default(),
        }
    }
}

impl<T: Send> EventProjection<T> for Balances {
    type Event = AccountEvent;

    const NAME: &'static str = "balances";

    async fn apply(&self, _tx: &mut T, e: Decoded<'_, AccountEvent>) -> Result<(), Error> {
        self.seen
            .lock()
            .expect("seen")
            .push(e.record.event_type.clone());
        let change = match e.event {
            AccountEvent::Opened { .. } => 0,
            AccountEvent::Deposited { amount } => amount,
            AccountEvent::Withdrawn { amount } => -amount,
        };
        *self
            .balances
            .lock()
            .expect("balances")
            .entry(e.stream_key().to_owned())
            .or_default() += change;
        Ok(())
    }

    fn codec(&self) -> &dyn EventCodec<AccountEvent> {
        &*self.codec
    }
}

/// Events the store handed out, by read operation (`flext.store.events`).
#[derive(Default)]
struct ReadCounts(Mutex<BTreeMap<String, f64>>);

impl flext::ports::Metrics for ReadCounts {
    fn observe(&self, name: &'static str, value: f64, labels: flext::ports::Labels<'_>) {
        if name != "flext.store.events" {
            return;
        }
        if let Some((_, op)) = labels.iter().find(|(k, _)| *k == "operation") {
            *self
                .0
                .lock()
                .expect("counts")
                .entry((*op).to_owned())
                .or_default() += value;
        }
    }
}

async fn run<S>(store: S)
where
    S: EventStore + ProjectionStore + flext::ports::WatchAppends + Clone,
{
    let none = EventMetadata::default();
    let alice = StreamId::new("account-alice").expect("id");
    let todo = StreamId::new("todo-1").expect("id");
    store
        .append_events(
            &alice,
            ExpectedVersion::NoStream,
            &[AccountEvent::Opened {
                owner: "alice".into(),
            }],
            &none,
        )
        .await
        .expect("open");
    // A deposit stored at schema version 1, before the field was renamed.
    store
        .append(
            &alice,
            ExpectedVersion::Exact(flext::StreamVersion(1)),
            vec![
                NewEvent::new(
                    EventId::new(),
                    "account.deposited",
                    r#"{"Deposited":{"units":70}}"#,
                )
                .with_schema_version(1),
            ],
        )
        .await
        .expect("old deposit");
    store
        .append_events(
            &todo,
            ExpectedVersion::Any,
            &[
                TodoEvent::Added { title: "a".into() },
                TodoEvent::Added { title: "b".into() },
            ],
            &none,
        )
        .await
        .expect("todos");
    let head = store
        .append_events(
            &alice,
            ExpectedVersion::Any,
            &[
                AccountEvent::Deposited { amount: 50 },
                AccountEvent::Withdrawn { amount: 30 },
            ],
            &none,
        )
        .await
        .expect("deposit")
        .last_position()
        .expect("position");
    let tail = store
        .append_events(
            &todo,
            ExpectedVersion::Any,
            &[TodoEvent::Added { title: "c".into() }],
            &none,
        )
        .await
        .expect("todo")
        .last_position()
        .expect("position");
    assert!(tail > head);

    let model = Balances::new();
    let projections: Projections<S> = ProjectionRunner::new(store.clone())
        .register(model.clone())
        .expect("register")
        .start();
    projections
        .wait_for("balances", tail, Duration::from_secs(30))
        .await
        .expect("caught up past the foreign events");
    assert_eq!(
        *model.balances.lock().expect("balances"),
        BTreeMap::from([("alice".to_owned(), 90)]),
        "70 upcast from version 1, +50, -30"
    );
    assert_eq!(
        *model.seen.lock().expect("seen"),
        [
            "account.opened",
            "account.deposited",
            "account.deposited",
            "account.withdrawn"
        ],
        "only its own type's events, in order"
    );
    let status = projections.status("balances").await.expect("status");
    assert_eq!(status.position, tail, "the checkpoint moved past the todos");
    assert_eq!(status.dead_letters, 0);
    assert!(
        projections
            .dead_letters("balances")
            .await
            .expect("letters")
            .is_empty()
    );
    projections.shutdown().await;
}

#[tokio::test]
async fn typed_projection_skips_foreign_events_in_memory() {
    run(InMemoryEventStore::new()).await;
}

#[tokio::test]
async fn typed_projection_skips_foreign_events_on_sqlite() {
    let path = std::env::temp_dir().join(format!("flext-typed-{}.db", EventId::new()));
    run(SqliteEventStore::open(&path).await.expect("open")).await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn typed_projection_skips_foreign_events_on_postgres() {
    run(flext_testkit::harness::fresh_pg_store("typed").await).await;
}

/// The SQL stores filter by type in their query: the foreign events never leave the
/// database. The projection's reads hand out exactly its 4 events (the other aggregate's
/// 3 are not read at all; the runner's whole-order reads are its lag probes, of at most
/// one event each).
#[tokio::test]
async fn the_sql_stores_filter_by_type_in_their_query() {
    let counts = Arc::new(ReadCounts::default());
    let path = std::env::temp_dir().join(format!("flext-typed-{}.db", EventId::new()));
    let sqlite = SqliteEventStore::open(&path)
        .await
        .expect("open")
        .with_metrics(counts.clone());
    run(sqlite).await;
    let _ = std::fs::remove_file(&path);
    let sqlite_counts = std::mem::take(&mut *counts.0.lock().expect("counts"));
    let pg = flext_testkit::harness::fresh_pg_store("typed_filter")
        .await
        .with_metrics(counts.clone());
    run(pg).await;
    let pg_counts = std::mem::take(&mut *counts.0.lock().expect("counts"));
    for (store, counts) in [("sqlite", sqlite_counts), ("postgresql", pg_counts)] {
        assert_eq!(
            counts.get("read_all_of_types").copied(),
            Some(4.0),
            "{store}: {counts:?}"
        );
        assert!(
            counts.get("read_all").copied().unwrap_or(0.0) < 7.0,
            "{store}: the whole order was read: {counts:?}"
        );
    }
}

/// An event type that lists no names would select nothing: refused when registered.
#[tokio::test]
async fn a_typed_projection_whose_event_lists_no_types_is_refused() {
    #[derive(Serialize, Deserialize)]
    struct Unlisted;
    impl DomainEvent for Unlisted {
        fn event_type(&self) -> &'static str {
            "unlisted"
        }
    }
    struct Blind;
    impl<T: Send> EventProjection<T> for Blind {
        type Event = Unlisted;
        const NAME: &'static str = "blind";
        async fn apply(&self, _: &mut T, _: Decoded<'_, Unlisted>) -> Result<(), Error> {
            Ok(())
        }
    }
    let e = ProjectionRunner::new(InMemoryEventStore::new())
        .register(Blind)
        .err()
        .expect("refused");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert_eq!(e.reason(), "NO_EVENT_TYPES");
    assert!(e.message().contains("blind"), "{e}");
}

/// A read model with SQL migrations on a store that keeps no read model: the projection
/// fails with a typed error in its status instead of running without its tables.
#[tokio::test]
async fn migrations_on_the_memory_store_fail_the_projection_with_a_reason() {
    struct Tables;
    impl<T: Send> EventProjection<T> for Tables {
        type Event = TodoEvent;
        const NAME: &'static str = "tables";
        const MIGRATIONS: &'static [&'static str] = &["CREATE TABLE t (id TEXT)"];
        async fn apply(&self, _: &mut T, _: Decoded<'_, TodoEvent>) -> Result<(), Error> {
            Ok(())
        }
    }
    let projections = ProjectionRunner::new(InMemoryEventStore::new())
        .register(Tables)
        .expect("register")
        .start();
    let mut status = projections.status("tables").await.expect("status");
    for _ in 0..500 {
        if status.state == flext::application::ProjectionState::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = projections.status("tables").await.expect("status");
    }
    assert_eq!(status.state, flext::application::ProjectionState::Failed);
    let e = status.last_error.expect("the reason");
    assert_eq!(
        (e.code(), e.reason()),
        (ErrorCode::Unimplemented, "MIGRATIONS_UNSUPPORTED"),
        "{e}"
    );
    projections.shutdown().await;
}

//! `#[projection]`: projections registered by the macro join the runners whose store has
//! their transaction type, and only those.
#![cfg(all(feature = "macros", feature = "memory", feature = "sqlite"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flext::application::ProjectionRunner;
use flext::memory::{InMemoryEventStore, MemoryTransaction};
use flext::ports::{Decoded, EventProjection, EventStore, Projection};
use flext::sqlite::SqliteWriteTransaction;
use flext::{Error, EventId, ExpectedVersion, NewEvent, RecordedEvent, StreamId, projection};

static COUNTED: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct CountEvents;

#[projection]
impl Projection<MemoryTransaction> for CountEvents {
    fn name(&self) -> &str {
        "count-events"
    }
    async fn handle(&self, _: &mut MemoryTransaction, _: &RecordedEvent) -> Result<(), Error> {
        COUNTED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A typed projection, registered the same way.
static TYPED: AtomicU64 = AtomicU64::new(0);

#[derive(serde::Serialize, serde::Deserialize, flext::DomainEvent)]
enum Lettered {
    #[event(name = "a")]
    A,
}

#[derive(Default)]
struct CountA;

#[projection]
impl EventProjection<MemoryTransaction> for CountA {
    type Event = Lettered;
    const NAME: &'static str = "count-a";
    async fn apply(
        &self,
        _: &mut MemoryTransaction,
        _: Decoded<'_, Lettered>,
    ) -> Result<(), Error> {
        TYPED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// For another store: a memory runner must not pick it up.
#[derive(Default)]
struct SqliteOnly;

#[projection]
impl Projection<SqliteWriteTransaction> for SqliteOnly {
    fn name(&self) -> &str {
        "sqlite-only"
    }
    async fn handle(&self, _: &mut SqliteWriteTransaction, _: &RecordedEvent) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn registered_projections_run_on_stores_of_their_transaction_type() {
    let store = InMemoryEventStore::new();
    let projections = ProjectionRunner::new(store.clone())
        .with_registered()
        .expect("registered")
        .start();
    let mut names: Vec<&str> = projections.names().collect();
    names.sort_unstable();
    assert_eq!(names, ["count-a", "count-events"]);
    let out = store
        .append(
            &StreamId::new("s").expect("id"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new(EventId::new(), "a", "\"A\""),
                NewEvent::new(EventId::new(), "b", "2"),
            ],
        )
        .await
        .expect("append");
    projections
        .wait_for("count-events", out.positions[1], Duration::from_secs(10))
        .await
        .expect("projected");
    assert_eq!(COUNTED.load(Ordering::SeqCst), 2);
    projections
        .wait_for("count-a", out.positions[1], Duration::from_secs(10))
        .await
        .expect("projected");
    assert_eq!(
        TYPED.load(Ordering::SeqCst),
        1,
        "only the event of type \"a\""
    );
    projections.shutdown().await;
}

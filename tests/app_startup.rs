//! `App::start` checks what it can before anything runs: a query that reads a projection
//! nobody registered is refused with every such pair named, and `ask_after` waits for the
//! projections a query reads.
#![cfg(all(feature = "application", feature = "memory"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use flext::application::App;
use flext::memory::{InMemoryEventStore, MemoryTransaction};
use flext::ports::{
    AppendEvents, Context, Decoded, EventProjection, Query, QueryHandler, messages,
};
use flext::{DomainEvent, Error, ErrorCode, EventMetadata, ExpectedVersion, StreamId};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, DomainEvent)]
enum Tick {
    #[event(name = "tick")]
    Tick,
}

#[derive(Clone, Default)]
struct Ticks(Arc<AtomicI64>);

impl EventProjection<MemoryTransaction> for Ticks {
    type Event = Tick;
    const NAME: &'static str = "ticks";
    async fn apply(&self, _: &mut MemoryTransaction, _: Decoded<'_, Tick>) -> Result<(), Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Clone)]
struct Count;
impl Query for Count {
    type Output = i64;
    const NAME: &'static str = "ticks.count";
    const READS: &'static [&'static str] = &["ticks"];
}

messages! {
    query Misread() -> i64 = "misread";
}

#[derive(Clone)]
struct Misspelt;
impl Query for Misspelt {
    type Output = i64;
    const NAME: &'static str = "ticks.misspelt";
    const READS: &'static [&'static str] = &["tiks", "ticks", "tocks"];
}

struct Read(Arc<AtomicI64>);
impl<Q: Query<Output = i64>> QueryHandler<Q> for Read {
    async fn handle(&self, _: Q, _: &Context) -> Result<i64, Error> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn a_query_reading_an_unregistered_projection_stops_the_start() {
    let ticks = Ticks::default();
    let e = App::builder(InMemoryEventStore::new())
        .projection(ticks.clone())
        .registry(|r| {
            r.query::<Count, _>(Read(ticks.0.clone()))
                .query::<Misspelt, _>(Read(ticks.0.clone()))
                .query::<Misread, _>(Read(ticks.0.clone()))
        })
        .start()
        .expect_err("refused");
    assert_eq!(
        (e.code(), e.reason()),
        (ErrorCode::FailedPrecondition, "UNKNOWN_PROJECTIONS")
    );
    let listed: Vec<(String, String)> = e
        .field_violations()
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            (
                "ticks.misspelt".to_owned(),
                "reads projection \"tiks\", which is not registered".to_owned()
            ),
            (
                "ticks.misspelt".to_owned(),
                "reads projection \"tocks\", which is not registered".to_owned()
            ),
        ],
        "{e}"
    );
}

#[tokio::test]
async fn ask_after_waits_for_what_the_query_reads() {
    let store = InMemoryEventStore::new();
    let ticks = Ticks::default();
    let app = App::builder(store.clone())
        .projection(ticks.clone())
        .registry(|r| r.query::<Count, _>(Read(ticks.0.clone())))
        .start()
        .expect("start");
    let written = store
        .append_events(
            &StreamId::new("clock-1").expect("id"),
            ExpectedVersion::Any,
            &[Tick::Tick, Tick::Tick, Tick::Tick],
            &EventMetadata::new(),
        )
        .await
        .expect("append")
        .last_position()
        .expect("position");
    assert_eq!(app.ask_after(Count, written).await.expect("ask"), 3);
    app.shutdown().await;
}

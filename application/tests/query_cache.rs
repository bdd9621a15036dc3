//! The query cache through the query bus: hits by value, TTL, bound, invalidation by
//! named event types, and other query types passing through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flext_application::{Pipeline, QueryCache, Registry};
use flext_domain::{
    Error, EventId, EventMetadata, Position, RecordedEvent, StreamId, StreamVersion,
};
use flext_ports::{Context, Query, QueryHandler};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Balance {
    account: u32,
}
impl Query for Balance {
    type Output = u32;
    const NAME: &'static str = "account.balance";
}

#[derive(Debug, Clone)]
struct Uncached;
impl Query for Uncached {
    type Output = u32;
    const NAME: &'static str = "uncached";
}

struct Counting(Arc<AtomicU32>);
impl QueryHandler<Balance> for Counting {
    async fn handle(&self, q: Balance, _: &Context) -> Result<u32, Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(q.account * 10)
    }
}
impl QueryHandler<Uncached> for Counting {
    async fn handle(&self, _: Uncached, _: &Context) -> Result<u32, Error> {
        Ok(self.0.fetch_add(1, Ordering::SeqCst))
    }
}

fn recorded(event_type: &str) -> RecordedEvent {
    RecordedEvent {
        event_id: EventId::new(),
        stream_id: StreamId::new("account-1").expect("valid"),
        stream_version: StreamVersion(1),
        position: Position(1),
        recorded_at: chrono::DateTime::UNIX_EPOCH,
        event_type: event_type.into(),
        schema_version: 1,
        payload: Default::default(),
        metadata: EventMetadata::default(),
        tags: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn answers_are_cached_by_value_until_ttl_bound_or_named_event() {
    let calls = Arc::new(AtomicU32::new(0));
    let cache = QueryCache::<Balance>::new(2, Duration::from_secs(60))
        .invalidated_by(["account.deposited"]);
    let registry = Registry::new()
        .query::<Balance, _>(Counting(calls.clone()))
        .query::<Uncached, _>(Counting(calls.clone()))
        .event::<RecordedEvent, _>(cache.invalidator());
    let bus = registry
        .query_bus(Pipeline::new().layer(cache.layer()))
        .expect("bus");
    let events = registry.event_bus();
    let ctx = Context::new();
    let ask = |account| bus.ask(Balance { account }, &ctx);

    assert_eq!(ask(1).await.unwrap(), 10);
    assert_eq!(ask(1).await.unwrap(), 10);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "second ask is a hit");
    assert_eq!(ask(2).await.unwrap(), 20);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "another value is another key"
    );

    // Bounded: a third key evicts the least recently used (1 was used before 2).
    ask(3).await.unwrap();
    assert_eq!(cache.len(), 2);
    ask(1).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "1 was evicted and asked again"
    );

    // TTL.
    tokio::time::advance(Duration::from_secs(61)).await;
    ask(1).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5, "expired");

    // Invalidation by a named event type only.
    events.publish(&recorded("account.renamed"), &ctx).await;
    ask(1).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "an unnamed event type keeps the cache"
    );
    let outcomes = events.publish(&recorded("account.deposited"), &ctx).await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()));
    assert!(cache.is_empty());
    ask(1).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        6,
        "a named event type empties the cache"
    );

    // Other query types pass through the layer untouched.
    let a = bus.ask(Uncached, &ctx).await.unwrap();
    let b = bus.ask(Uncached, &ctx).await.unwrap();
    assert_ne!(a, b);
}

/// Answers the first query only when let through: it reads "old data" before an
/// invalidation and returns after it.
struct Gated(
    Arc<AtomicU32>,
    Arc<tokio::sync::Notify>,
    Arc<tokio::sync::Notify>,
);
impl QueryHandler<Balance> for Gated {
    async fn handle(&self, q: Balance, _: &Context) -> Result<u32, Error> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            self.1.notify_one(); // read the old state
            self.2.notified().await; // meanwhile the state changes and the cache is cleared
        }
        Ok(q.account * 10 + n)
    }
}

#[tokio::test]
async fn an_answer_computed_before_an_invalidation_is_not_stored_after_it() {
    let calls = Arc::new(AtomicU32::new(0));
    let (read, go) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let cache = QueryCache::<Balance>::new(16, Duration::from_secs(60));
    let bus = Registry::new()
        .query::<Balance, _>(Gated(calls.clone(), read.clone(), go.clone()))
        .query_bus(Pipeline::new().layer(cache.layer()))
        .expect("bus");
    let ctx = Context::new();
    let (stale, ()) = tokio::join!(bus.ask(Balance { account: 1 }, &ctx), async {
        read.notified().await;
        cache.clear(); // an event changed the balance
        go.notify_one();
    });
    assert_eq!(
        stale.expect("answer"),
        10,
        "the in-flight query answers as it read"
    );
    let fresh = bus.ask(Balance { account: 1 }, &ctx).await.expect("answer");
    assert_eq!(
        fresh, 11,
        "the stale answer was not cached: the query ran again"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn answers_do_not_cross_tenants() {
    let calls = Arc::new(AtomicU32::new(0));
    let cache = QueryCache::<Balance>::new(16, Duration::from_secs(60));
    let bus = Registry::new()
        .query::<Balance, _>(Counting(calls.clone()))
        .query_bus(Pipeline::new().layer(cache.layer()))
        .expect("bus");
    let acme = Context::new().with_tenant(flext_domain::TenantId::new("acme").expect("a tenant"));
    let globex =
        Context::new().with_tenant(flext_domain::TenantId::new("globex").expect("a tenant"));
    bus.ask(Balance { account: 1 }, &acme).await.expect("acme");
    bus.ask(Balance { account: 1 }, &acme)
        .await
        .expect("acme again");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a hit within one tenant");
    bus.ask(Balance { account: 1 }, &globex)
        .await
        .expect("globex");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "another tenant runs its own query"
    );
}

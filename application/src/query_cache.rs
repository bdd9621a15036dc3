//! Query caching: answers of one query type kept by the query's value, bounded, with a
//! time to live, and dropped when events of the types you name happen.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flext_domain::{Error, RecordedEvent};
use flext_ports::{Context, EventHandler, Query};
use lru::LruCache;
use tokio::time::Instant;

use crate::pipeline::{Behavior, BoxFuture, Message, Next, Reply};

struct State<Q: Query> {
    entries: LruCache<Q, (Instant, Q::Output)>,
}

/// A bounded, expiring cache of the answers to query type `Q`, keyed by the query's value.
/// Put [`QueryCache::layer`] in the query pipeline and feed [`QueryCache::invalidator`]
/// the recorded events (register it on the event bus for `RecordedEvent`, or call it from
/// a projection): an event of one of the named types empties the cache.
///
/// ```
/// use std::time::Duration;
/// use flext_application::{Pipeline, QueryCache};
/// use flext_ports::Query;
///
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// struct Balance { account: u64 }
/// impl Query for Balance {
///     type Output = i64;
///     const NAME: &'static str = "account.balance";
/// }
///
/// let cache = QueryCache::<Balance>::new(10_000, Duration::from_secs(30))
///     .invalidated_by(["account.deposited", "account.withdrawn"]);
/// let pipeline = Pipeline::new().layer(cache.layer());
/// # let _ = pipeline;
/// ```
pub struct QueryCache<Q: Query> {
    state: Arc<Mutex<State<Q>>>,
    ttl: Duration,
    event_types: Arc<[String]>,
}

impl<Q: Query> Clone for QueryCache<Q> {
    fn clone(&self) -> Self {
        QueryCache {
            state: self.state.clone(),
            ttl: self.ttl,
            event_types: self.event_types.clone(),
        }
    }
}

impl<Q> QueryCache<Q>
where
    Q: Query + Hash + Eq,
    Q::Output: Clone + Sync,
{
    /// Keeps at most `capacity` answers (at least 1), each for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        QueryCache {
            state: Arc::new(Mutex::new(State {
                entries: LruCache::new(capacity),
            })),
            ttl,
            event_types: Arc::from(Vec::new()),
        }
    }

    /// Empties the cache when an event of one of `event_types` is recorded.
    pub fn invalidated_by<I, S>(mut self, event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = event_types.into_iter().map(Into::into).collect();
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<Q>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The behavior to put in the query pipeline; other query types pass through it.
    pub fn layer(&self) -> QueryCacheLayer<Q> {
        QueryCacheLayer {
            cache: self.clone(),
        }
    }

    /// The event handler that empties the cache on the named event types.
    pub fn invalidator(&self) -> QueryCacheInvalidator<Q> {
        QueryCacheInvalidator {
            cache: self.clone(),
        }
    }

    /// Drops every cached answer.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// How many answers are cached (expired ones included until they are next asked).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, query: &Q) -> Option<Q::Output> {
        let mut state = self.lock();
        match state.entries.get(query) {
            Some((stored, answer)) if stored.elapsed() < self.ttl => Some(answer.clone()),
            Some(_) => {
                state.entries.pop(query);
                None
            }
            None => None,
        }
    }

    fn store(&self, query: Q, answer: Q::Output) {
        self.lock().entries.put(query, (Instant::now(), answer));
    }
}

/// The pipeline behavior of a [`QueryCache`].
pub struct QueryCacheLayer<Q: Query> {
    cache: QueryCache<Q>,
}

impl<Q> Behavior for QueryCacheLayer<Q>
where
    Q: Query + Hash + Eq,
    Q::Output: Clone + Sync,
{
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        _ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        let Some(query) = message.downcast_ref::<Q>() else {
            return next.run();
        };
        if let Some(answer) = self.cache.lookup(query) {
            return Box::pin(async move { Ok(Reply::new(answer)) });
        }
        Box::pin(async move {
            let reply = next.run().await?;
            if let Some(answer) = reply.downcast_ref::<Q::Output>() {
                self.cache.store(query.clone(), answer.clone());
            }
            Ok(reply)
        })
    }
}

/// The event handler of a [`QueryCache`]: empties it on the named event types.
pub struct QueryCacheInvalidator<Q: Query> {
    cache: QueryCache<Q>,
}

impl<Q> QueryCacheInvalidator<Q>
where
    Q: Query + Hash + Eq,
    Q::Output: Clone + Sync,
{
    /// Empties the cache if `event_type` is one of the named ones.
    pub fn on_event_type(&self, event_type: &str) {
        if self.cache.event_types.iter().any(|t| t == event_type) {
            self.cache.clear();
        }
    }
}

impl<Q> EventHandler<RecordedEvent> for QueryCacheInvalidator<Q>
where
    Q: Query + Hash + Eq,
    Q::Output: Clone + Sync,
{
    async fn handle(&self, event: &RecordedEvent, _ctx: &Context) -> Result<(), Error> {
        self.on_event_type(&event.event_type);
        Ok(())
    }
}

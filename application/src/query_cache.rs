//! Query caching: answers of one query type kept by the query's value, bounded, with a
//! time to live, and dropped when events of the types you name happen.

use std::hash::{BuildHasher, Hash};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flext_domain::{Error, RecordedEvent};
use flext_ports::{Context, EventHandler, Query};
use lru::LruCache;
use tokio::time::Instant;

use crate::pipeline::{Behavior, BoxFuture, Message, Next, Reply};

/// A cache key: the tenant of the asking context (answers never cross tenants) and the
/// query's value.
type Key<Q> = (Option<Box<str>>, Q);

/// One shard: its own lock, so readers of different keys do not queue on one mutex.
struct State<Q: Query> {
    entries: LruCache<Key<Q>, (Instant, Q::Output)>,
}

/// Shards of the cache (each bounded by its share of the capacity).
const SHARDS: usize = 16;

struct Shared<Q: Query> {
    shards: Vec<Mutex<State<Q>>>,
    /// Bumped by every `clear`: an answer computed before it is not stored after it.
    generation: AtomicU64,
    hasher: std::hash::RandomState,
}

/// A bounded, expiring cache of the answers to query type `Q`, keyed by the query's value.
/// Put [`QueryCache::layer`] in the query pipeline and feed [`QueryCache::invalidator`]
/// the recorded events (register it on the event bus for `RecordedEvent`, or call it from
/// a projection): an event of one of the named types empties the cache.
///
/// ```
/// use std::time::Duration;
/// use flext::application::{Pipeline, QueryCache};
/// use flext::ports::Query;
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
    shared: Arc<Shared<Q>>,
    ttl: Duration,
    event_types: Arc<[String]>,
}

impl<Q: Query> Clone for QueryCache<Q> {
    fn clone(&self) -> Self {
        QueryCache {
            shared: self.shared.clone(),
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
        // Small caches keep one shard, so the bound stays exact.
        let shards = if capacity >= SHARDS * 64 { SHARDS } else { 1 };
        let each = NonZeroUsize::new(capacity.div_ceil(shards)).unwrap_or(NonZeroUsize::MIN);
        QueryCache {
            shared: Arc::new(Shared {
                shards: (0..shards)
                    .map(|_| {
                        Mutex::new(State {
                            entries: LruCache::new(each),
                        })
                    })
                    .collect(),
                generation: AtomicU64::new(0),
                hasher: std::hash::RandomState::new(),
            }),
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

    fn shard(&self, key: &Key<Q>) -> MutexGuard<'_, State<Q>> {
        let shards = &self.shared.shards;
        let i = (self.shared.hasher.hash_one(key) as usize) % shards.len();
        shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The behavior to put in the query pipeline; other query types pass through it.
    pub fn layer(&self) -> QueryCacheBehavior<Q> {
        QueryCacheBehavior {
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
        // First the generation: an answer computed before this call is not stored after.
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        for shard in &self.shared.shards {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entries
                .clear();
        }
    }

    /// How many answers are cached (expired ones included until they are next asked).
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
            .sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached answer, else the generation to store a fresh one under.
    fn lookup(&self, key: &Key<Q>) -> Result<Q::Output, u64> {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let mut state = self.shard(key);
        match state.entries.get(key) {
            Some((stored, answer)) if stored.elapsed() < self.ttl => Ok(answer.clone()),
            Some(_) => {
                state.entries.pop(key);
                Err(generation)
            }
            None => Err(generation),
        }
    }

    /// Stores `answer` unless the cache was cleared since `generation` was read.
    fn store(&self, key: Key<Q>, answer: Q::Output, generation: u64) {
        let mut state = self.shard(&key);
        if self.shared.generation.load(Ordering::SeqCst) == generation {
            state.entries.put(key, (Instant::now(), answer));
        }
    }
}

/// The pipeline behavior of a [`QueryCache`]: answers are keyed by the context's tenant
/// and the query's value.
pub struct QueryCacheBehavior<Q: Query> {
    cache: QueryCache<Q>,
}

impl<Q> Behavior for QueryCacheBehavior<Q>
where
    Q: Query + Hash + Eq,
    Q::Output: Clone + Sync,
{
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        let Some(query) = message.downcast_ref::<Q>() else {
            return next.run();
        };
        let key: Key<Q> = (ctx.tenant().map(Box::from), query.clone());
        let generation = match self.cache.lookup(&key) {
            Ok(answer) => return Box::pin(async move { Ok(Reply::new(answer)) }),
            Err(generation) => generation,
        };
        Box::pin(async move {
            let reply = next.run().await?;
            if let Some(answer) = reply.downcast_ref::<Q::Output>() {
                self.cache.store(key, answer.clone(), generation);
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

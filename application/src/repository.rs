//! The aggregate repository: load, save, execute with retries, snapshots and a cache.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flext_domain::{
    Aggregate, AggregateRoot, DomainEvent, Error, EventMetadata, Id, NewEvent, Position, StreamId,
    StreamVersion, WRONG_EXPECTED_VERSION,
};
use flext_ports::{
    AppendOutcome, Context, EventCodec, EventStore, IdGenerator, JsonCodec, Snapshot,
    SnapshotStore, UuidV7Ids,
};
use lru::LruCache;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Events read per round trip while loading.
const LOAD_PAGE: usize = 4_096;

/// How [`Repository::execute`] retries a command that lost a race for the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The delay before the first retry; it doubles with each further retry.
    pub base_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 2 ms doubling up to 100 ms, each delay with full jitter.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// No retries: a conflict is returned at once.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The delay before retry `n` (1-based): a random duration up to the capped
    /// exponential bound ("full jitter"), so racing writers spread out.
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let bound = exp.min(self.max_delay);
        bound.mul_f64(fastrand::f64())
    }
}

/// What [`Repository::execute`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The stream's version after the command.
    pub stream_version: StreamVersion,
    /// The positions of the events the command wrote (empty if it decided nothing).
    pub positions: Vec<Position>,
    /// How many attempts it took (1 unless it lost a race).
    pub attempts: u32,
}

impl Executed {
    /// The position of the last event written: what read-your-writes waits for.
    pub fn last_position(&self) -> Option<Position> {
        self.positions.last().copied()
    }
}

/// The position of the last event written, or [`Position::START`] when the command
/// decided nothing (so read-your-writes waits for nothing).
impl From<Executed> for Position {
    fn from(done: Executed) -> Position {
        done.last_position().unwrap_or(Position::START)
    }
}

type Encode<A> = fn(&A) -> Result<Vec<u8>, serde_json::Error>;
type Decode<A> = fn(&[u8]) -> Result<A, serde_json::Error>;

struct SnapshotPolicy<A> {
    every: u64,
    schema_version: u32,
    encode: Encode<A>,
    decode: Decode<A>,
}

/// Loads and saves aggregates of type `A` in an event store `S`, encoding events with `C`.
///
/// - [`load`](Repository::load): the latest snapshot (if snapshots are on and it matches
///   the configured schema version), then every event after it, upcast and applied in
///   version order. An event that cannot be decoded is an error naming its stream and
///   version; nothing is skipped.
/// - [`save`](Repository::save): appends the root's uncommitted events expecting the
///   version it was loaded at.
/// - [`execute`](Repository::execute): load (or take from the cache), decide, save;
///   retried on a version conflict with backoff and jitter, up to the [`RetryPolicy`].
///   With the cache warm, a command costs one round trip: the append with its
///   expectation. On a conflict the entry is dropped and the aggregate reloaded.
pub struct Repository<A: Aggregate, S, C = JsonCodec> {
    store: S,
    codec: C,
    ids: Arc<dyn IdGenerator>,
    retry: RetryPolicy,
    snapshots: Option<SnapshotPolicy<A>>,
    cache: Option<Mutex<LruCache<Id<A>, AggregateRoot<A>>>>,
}

impl<A: Aggregate, S> Repository<A, S, JsonCodec> {
    /// A repository on `store` with the JSON codec, no snapshots, no cache and the default
    /// retry policy.
    pub fn new(store: S) -> Self {
        Repository::with_codec(store, JsonCodec::new())
    }
}

impl<A: Aggregate, S, C> Repository<A, S, C> {
    /// A repository on `store` with `codec` (for example a [`JsonCodec`] with upcasters).
    pub fn with_codec(store: S, codec: C) -> Self {
        Repository {
            store,
            codec,
            ids: Arc::new(UuidV7Ids),
            retry: RetryPolicy::default(),
            snapshots: None,
            cache: None,
        }
    }

    /// Uses `ids` for the ids of new events.
    pub fn with_id_generator(mut self, ids: impl IdGenerator + 'static) -> Self {
        self.ids = Arc::new(ids);
        self
    }

    /// Sets how conflicts are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            attempts: retry.attempts.max(1),
            ..retry
        };
        self
    }

    /// Keeps up to `capacity` aggregates in memory between commands (least recently used
    /// go first). Safe with other writers: a stale entry meets a conflict, is dropped and
    /// reloaded.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c)));
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Forgets the cached copy of aggregate `id`, if any: the next command loads it from
    /// the store (after a change made around the repository, e.g. a raw append).
    pub fn invalidate(&self, id: Id<A>) {
        drop(self.cache_take(id));
    }

    /// Forgets every cached aggregate.
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.cache {
            cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// How many aggregates the cache holds.
    pub fn cached(&self) -> usize {
        self.cache
            .as_ref()
            .map_or(0, |c| c.lock().unwrap_or_else(|p| p.into_inner()).len())
    }

    fn cache_take(&self, id: Id<A>) -> Option<AggregateRoot<A>> {
        let cache = self.cache.as_ref()?;
        cache.lock().unwrap_or_else(|p| p.into_inner()).pop(&id)
    }

    fn cache_put(&self, root: AggregateRoot<A>) {
        if let Some(cache) = &self.cache {
            cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(root.id(), root);
        }
    }
}

impl<A, S, C> Repository<A, S, C>
where
    A: Aggregate + Serialize + DeserializeOwned,
{
    /// Saves a snapshot of the state every `every` events, encoded as JSON under
    /// `schema_version`. A stored snapshot of another schema version, or one that does
    /// not decode, is ignored and the aggregate replayed; it is never an error.
    pub fn with_snapshots(mut self, every: u64, schema_version: u32) -> Self {
        self.snapshots = Some(SnapshotPolicy {
            every: every.max(1),
            schema_version,
            encode: |a| serde_json::to_vec(a),
            decode: |b| serde_json::from_slice(b),
        });
        self
    }
}

impl<A, S, C> Repository<A, S, C>
where
    A: Aggregate + Send + Sync,
    A::Event: DomainEvent + Send + Sync,
    S: EventStore + SnapshotStore,
    C: EventCodec<A::Event>,
{
    /// The aggregate as stored: latest usable snapshot, then the events after it.
    pub async fn load(&self, id: Id<A>) -> Result<AggregateRoot<A>, Error> {
        let stream = A::stream_id(id);
        let mut root = match self.load_snapshot(&stream).await? {
            Some((state, version)) => AggregateRoot::from_snapshot(id, state, version),
            None => AggregateRoot::new(id),
        };
        loop {
            let from = root.version().advanced(1);
            let codec = &self.codec;
            let fed = self
                .store
                .replay_stream(&stream, from, LOAD_PAGE, |stored| {
                    let event = codec.decode(stored)?;
                    root.apply_at(stored.stream_version, &event)
                })
                .await?;
            if fed < LOAD_PAGE {
                return Ok(root);
            }
        }
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<(A, StreamVersion)>, Error> {
        let Some(policy) = &self.snapshots else {
            return Ok(None);
        };
        let Some(snapshot) = self.store.load_snapshot(stream).await? else {
            return Ok(None);
        };
        if snapshot.schema_version != policy.schema_version {
            return Ok(None);
        }
        Ok((policy.decode)(&snapshot.state)
            .ok()
            .map(|state| (state, snapshot.version)))
    }

    fn encode(
        &self,
        events: &[A::Event],
        metadata: &EventMetadata,
    ) -> Result<Vec<NewEvent>, Error> {
        events
            .iter()
            .map(|e| {
                Ok(NewEvent {
                    event_id: self.ids.next_id(),
                    event_type: e.event_type().to_owned(),
                    schema_version: e.schema_version(),
                    payload: self.codec.encode(e)?,
                    metadata: metadata.clone(),
                    tags: e.tags(),
                })
            })
            .collect()
    }

    /// Appends the root's uncommitted events, expecting the version it was loaded at, and
    /// takes a snapshot if one is due. On error, drop the root and load it again.
    pub async fn save(
        &self,
        root: &mut AggregateRoot<A>,
        metadata: &EventMetadata,
    ) -> Result<AppendOutcome, Error> {
        let expected = root.expected_version();
        let before = root.committed_version();
        if root.uncommitted().is_empty() {
            return Ok(AppendOutcome {
                stream_version: before,
                positions: Vec::new(),
            });
        }
        let events = self.encode(root.uncommitted(), metadata)?;
        let outcome = self
            .store
            .append(&root.stream_id(), expected, events)
            .await?;
        root.take_uncommitted();
        self.maybe_snapshot(root, before).await;
        Ok(outcome)
    }

    /// Saves a snapshot of `root`'s state now (at its current version). Without
    /// [`with_snapshots`](Repository::with_snapshots) this is a `FailedPrecondition` error.
    pub async fn snapshot(&self, root: &AggregateRoot<A>) -> Result<(), Error> {
        let Some(policy) = &self.snapshots else {
            return Err(Error::failed_precondition(
                "SNAPSHOTS_OFF",
                "this repository was built without with_snapshots",
            ));
        };
        let state = (policy.encode)(root.state()).map_err(|e| {
            Error::invalid_argument(
                "UNENCODABLE_STATE",
                format!("the state does not encode: {e}"),
            )
        })?;
        self.store
            .save_snapshot(Snapshot {
                stream_id: root.stream_id(),
                version: root.committed_version(),
                schema_version: policy.schema_version,
                state: Bytes::from(state),
            })
            .await
    }

    async fn maybe_snapshot(&self, root: &AggregateRoot<A>, before: StreamVersion) {
        let Some(policy) = &self.snapshots else {
            return;
        };
        let after = root.version();
        if before.0 / policy.every == after.0 / policy.every {
            return;
        }
        let Ok(state) = (policy.encode)(root.state()) else {
            return;
        };
        // A snapshot is a cache: failing to save one costs a longer load later, nothing
        // else, so it does not fail the command that already committed.
        let _ = self
            .store
            .save_snapshot(Snapshot {
                stream_id: root.stream_id(),
                version: after,
                schema_version: policy.schema_version,
                state: Bytes::from(state),
            })
            .await;
    }

    /// Loads the aggregate and runs `decide` on it; a refusal goes back to the cache with
    /// the unchanged aggregate and is returned.
    async fn decided_on_fresh<F>(&self, id: Id<A>, decide: &F) -> Result<AggregateRoot<A>, Error>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, Error>,
    {
        let mut root = self.load(id).await?;
        match root.execute(decide) {
            Ok(_) => Ok(root),
            Err(e) => {
                self.cache_put(root);
                Err(e)
            }
        }
    }

    /// Runs one command for the dispatch `ctx`: takes the aggregate from the cache or
    /// loads it, runs `decide` against its state, and appends what it decided with the
    /// expectation of the version it decided on, the events carrying the context's
    /// correlation id, the command as their causation, its tenant and its trace
    /// ([`Context::event_metadata`]). A version conflict drops the cached copy, reloads
    /// and decides again, up to the retry policy. A decision's own error is returned as
    /// is, with nothing written, but only once the decision refused on a freshly loaded
    /// state: a refusal on a cached copy (which may be stale) reloads and decides once
    /// more.
    ///
    /// The [`Executed`] it returns converts into the [`Position`] of its last event, what
    /// a command handler returns for read-your-writes.
    pub async fn execute<F>(&self, id: Id<A>, ctx: &Context, decide: F) -> Result<Executed, Error>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, Error>,
    {
        self.execute_with_metadata(id, &ctx.event_metadata(), decide)
            .await
    }

    /// [`Repository::execute`] with metadata of your own instead of a dispatch's (imports,
    /// tools, tests).
    pub async fn execute_with_metadata<F>(
        &self,
        id: Id<A>,
        metadata: &EventMetadata,
        decide: F,
    ) -> Result<Executed, Error>
    where
        F: Fn(&A) -> Result<Vec<A::Event>, Error>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut root = match self.cache_take(id) {
                Some(mut cached) => match cached.execute(&decide) {
                    Ok(_) => cached,
                    // A refusal on a cached state may come from that state being stale:
                    // only a fresh state may refuse.
                    Err(_) => self.decided_on_fresh(id, &decide).await?,
                },
                None => self.decided_on_fresh(id, &decide).await?,
            };
            match self.save(&mut root, metadata).await {
                Ok(outcome) => {
                    self.cache_put(root);
                    return Ok(Executed {
                        stream_version: outcome.stream_version,
                        positions: outcome.positions,
                        attempts: attempt,
                    });
                }
                Err(e) if e.reason() == WRONG_EXPECTED_VERSION && attempt < self.retry.attempts => {
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                }
                Err(e) => return Err(e.with_detail("attempts", attempt)),
            }
        }
    }
}

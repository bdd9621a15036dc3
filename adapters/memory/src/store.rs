//! The in-memory store: one global log of slots behind a mutex.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flext_domain::{
    Error, EventId, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId, StreamVersion,
};
use flext_ports::adapter::{
    StoredEvent, condition_failed, resolve_rejected_append_in_life, validate_append,
};
use flext_ports::lifecycle::append_to_tombstoned;
use flext_ports::{
    AppendCondition, AppendOutcome, AppendSignal, AppendWatcher, CheckpointStore, Claim, Clock,
    DcbStore, DeadLetter, EventQuery, EventStore, FilteredPage, Health, HealthCheck, HealthFuture,
    IdempotencyRecord, IdempotencyStore, Lease, Metrics, ProjectionStore, ReadDirection, Snapshot,
    SnapshotStore, StoreTelemetry, SystemClock, WatchAppends,
};

/// One position of the global log.
pub(crate) enum Slot {
    /// Appended and visible.
    Committed(RecordedEvent),
    /// Appended by a [`PendingAppend`] that has not committed: invisible, and read-all
    /// stops here until it commits or is dropped.
    Pending(RecordedEvent),
    /// A dropped pending append: a hole in the positions.
    Aborted,
    /// An event removed by a truncation, a tombstone or archiving: a hole in the
    /// positions that keeps its stream version taken.
    Removed,
}

#[derive(Default)]
pub(crate) struct State {
    /// Index `i` holds position `i + 1`.
    pub(crate) log: Vec<Slot>,
    /// Per stream, the log indexes of its events in version order (pending ones included).
    pub(crate) streams: HashMap<StreamId, Vec<usize>>,
    /// Every event id, with its log index.
    pub(crate) ids: HashMap<EventId, usize>,
    pub(crate) snapshots: HashMap<StreamId, Snapshot>,
    /// Checkpoints and leases by consumer name.
    pub(crate) consumers: HashMap<String, crate::ownership::Consumer>,
    /// Announced instances by id.
    pub(crate) members: HashMap<uuid::Uuid, flext_ports::Member>,
    /// Command outcomes by command id: claimed at (pending) or done.
    /// (claimed at, the outcome once done).
    idempotency: HashMap<uuid::Uuid, (std::time::Instant, Option<IdempotencyRecord>)>,
    /// Dead letters by projection, then event id.
    pub(crate) dead_letters: HashMap<String, HashMap<EventId, DeadLetter>>,
    /// Scheduled messages by key.
    pub(crate) schedule: std::collections::BTreeMap<String, flext_ports::Scheduled>,
    /// Background jobs by id, with their lock expiry and unique key.
    pub(crate) jobs: std::collections::BTreeMap<uuid::Uuid, crate::job::Stored>,
    /// Process managers' instances by (manager, association).
    pub(crate) processes: std::collections::BTreeMap<(String, String), flext_ports::StoredProcess>,
    /// Inbox records: (consumer, message id) -> when received.
    pub(crate) inbox: HashMap<(String, String), chrono::DateTime<chrono::Utc>>,
    /// Outbox messages by position (from 1, in commit order).
    pub(crate) outbox: std::collections::BTreeMap<u64, flext_ports::OutboundMessage>,
    /// The last outbox position taken.
    pub(crate) outbox_last: u64,
    /// Messages inboxes gave up on, by (consumer, message id).
    pub(crate) inbox_dead:
        std::collections::BTreeMap<(String, String), flext_ports::InboxDeadLetter>,
    /// Control requests in the order they came.
    pub(crate) controls: Vec<flext_ports::ControlRequest>,
    /// Paused consumers.
    pub(crate) paused: std::collections::BTreeSet<String>,
    /// Fixed payloads of dead letters (the newest), by (consumer, event).
    pub(crate) dead_letter_edits: HashMap<(String, EventId), flext_ports::DeadLetterEdit>,
    /// Streams whose life changed (deleted, tombstoned, truncated, archived) or that have
    /// a retention policy.
    pub(crate) lives: HashMap<StreamId, crate::lifecycle::Life>,
    /// Wrapped data keys by name.
    pub(crate) data_keys: HashMap<String, Vec<u8>>,
    /// (subject, dependent key) links.
    pub(crate) key_links: std::collections::BTreeSet<(String, String)>,
    /// Personal fields as (event type, field).
    pub(crate) personal: std::collections::BTreeSet<(String, String)>,
}

impl State {
    fn event(&self, index: usize) -> Option<&RecordedEvent> {
        match self.log.get(index) {
            Some(Slot::Committed(e) | Slot::Pending(e)) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn version(&self, stream: &StreamId) -> StreamVersion {
        StreamVersion(self.streams.get(stream).map_or(0, |v| v.len() as u64))
    }

    /// Reserves positions and versions for `events` as pending slots, or says why not.
    fn reserve(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Reserved, Error> {
        validate_append(&events)?;
        let actual = self.version(stream);
        let life = self.lives.get(stream);
        if life.is_some_and(|l| l.state == crate::lifecycle::TOMBSTONED) {
            return Err(append_to_tombstoned(stream, actual));
        }
        let deleted = life.is_some_and(|l| l.state == crate::lifecycle::DELETED);
        let life_start = StreamVersion(if deleted {
            actual.0 + 1
        } else {
            life.map_or(1, |l| l.life_start)
        });
        let checked = if deleted {
            StreamVersion::INITIAL
        } else {
            actual
        };
        let reused = events.iter().any(|e| self.ids.contains_key(&e.event_id));
        if reused || !expected.accepts(checked) {
            let existing: Vec<StoredEvent> = events
                .iter()
                .filter_map(|e| self.ids.get(&e.event_id))
                .filter_map(|&i| self.event(i))
                .map(|r| StoredEvent {
                    event_id: r.event_id,
                    stream_id: r.stream_id.clone(),
                    stream_version: r.stream_version,
                    position: r.position,
                    event_type: r.event_type.clone(),
                    schema_version: r.schema_version,
                    payload: r.payload.clone(),
                })
                .collect();
            return resolve_rejected_append_in_life(
                stream, expected, checked, life_start, &events, &existing,
            )
            .map(Reserved::Replayed);
        }
        if deleted && let Some(life) = self.lives.get_mut(stream) {
            life.state = crate::lifecycle::LIVE;
        }
        let first_index = self.log.len();
        let mut positions = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let index = first_index + i;
            let position = Position(index as u64 + 1);
            positions.push(position);
            self.ids.insert(e.event_id, index);
            self.streams.entry(stream.clone()).or_default().push(index);
            self.log.push(Slot::Pending(RecordedEvent {
                event_id: e.event_id,
                stream_id: stream.clone(),
                stream_version: actual.advanced(i as u64 + 1),
                position,
                recorded_at: now,
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
                metadata: e.metadata,
                tags: e.tags,
            }));
        }
        Ok(Reserved::New(AppendOutcome {
            stream_version: actual.advanced(positions.len() as u64),
            positions,
        }))
    }

    fn commit(&mut self, outcome: &AppendOutcome) {
        for p in &outcome.positions {
            let slot = &mut self.log[p.0 as usize - 1];
            if let Slot::Pending(e) = std::mem::replace(slot, Slot::Aborted) {
                *slot = Slot::Committed(e);
            }
        }
    }

    fn abort(&mut self, stream: &StreamId, outcome: &AppendOutcome) {
        for p in &outcome.positions {
            let index = p.0 as usize - 1;
            if let Slot::Pending(e) = std::mem::replace(&mut self.log[index], Slot::Aborted) {
                self.ids.remove(&e.event_id);
            }
        }
        if let Some(indexes) = self.streams.get_mut(stream) {
            indexes.retain(|i| !matches!(self.log[*i], Slot::Aborted));
            if indexes.is_empty() {
                self.streams.remove(stream);
            }
        }
    }
}

enum Reserved {
    New(AppendOutcome),
    Replayed(AppendOutcome),
}

/// An event and snapshot store in memory. Clones share the same data.
///
/// Appends take one mutex for the time it takes to copy the events in; positions are dense
/// (1, 2, 3, ...) except where a [`PendingAppend`] was dropped.
#[derive(Clone)]
pub struct InMemoryEventStore {
    state: Arc<Mutex<State>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) appended: AppendSignal,
    /// Pulsed when a consumer's checkpoint or lease changed.
    pub(crate) consumers_changed: AppendSignal,
    pub(crate) telemetry: StoreTelemetry,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        InMemoryEventStore::new()
    }
}

impl std::fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryEventStore").finish_non_exhaustive()
    }
}

impl InMemoryEventStore {
    /// An empty store recording times from the system clock.
    pub fn new() -> Self {
        InMemoryEventStore::with_clock(SystemClock)
    }

    /// An empty store recording times from `clock`.
    pub fn with_clock(clock: impl Clock + 'static) -> Self {
        InMemoryEventStore {
            state: Arc::new(Mutex::new(State::default())),
            clock: Arc::new(clock),
            appended: AppendSignal::new(),
            consumers_changed: AppendSignal::new(),
            telemetry: StoreTelemetry::new("memory", "events"),
        }
    }

    /// Records append and read durations and sizes (`flext.store.duration`,
    /// `flext.store.events`) on `metrics`. Spans are opened either way.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.telemetry = self.telemetry.with_metrics(metrics);
        self
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written (every
        // mutation is completed before anything that could panic), so a poisoned lock
        // is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves positions and versions for an append that becomes visible only when
    /// [`PendingAppend::commit`] is called, and disappears if the handle is dropped: the
    /// in-memory twin of an open database transaction. While it is pending, `read_all`
    /// returns nothing past its first position. The conformance suite uses it to prove
    /// gap safety.
    pub fn begin_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<PendingAppend, Error> {
        let now = self.clock.now();
        let reserved = self.lock().reserve(stream, expected, events, now)?;
        Ok(match reserved {
            Reserved::New(outcome) => PendingAppend {
                store: Some(self.clone()),
                stream: stream.clone(),
                outcome,
            },
            Reserved::Replayed(outcome) => PendingAppend {
                store: None,
                stream: stream.clone(),
                outcome,
            },
        })
    }

    /// Replaces the stored payload of one event, behind the store's back (for tests of
    /// corrupted data). Returns whether the event exists.
    pub fn overwrite_payload(
        &self,
        stream: &StreamId,
        version: StreamVersion,
        payload: bytes::Bytes,
    ) -> bool {
        let mut state = self.lock();
        let index = state
            .streams
            .get(stream)
            .and_then(|v| v.get((version.0 as usize).wrapping_sub(1)))
            .copied();
        match index.map(|i| &mut state.log[i]) {
            Some(Slot::Committed(e) | Slot::Pending(e)) => {
                e.payload = payload;
                true
            }
            _ => false,
        }
    }
}

/// An append whose events are reserved but not yet visible; see
/// [`InMemoryEventStore::begin_append`]. Dropping it without committing aborts it.
pub struct PendingAppend {
    store: Option<InMemoryEventStore>,
    stream: StreamId,
    outcome: AppendOutcome,
}

impl PendingAppend {
    /// The versions and positions the events will have.
    pub fn outcome(&self) -> &AppendOutcome {
        &self.outcome
    }

    /// Makes the events visible.
    pub fn commit(mut self) -> AppendOutcome {
        if let Some(store) = self.store.take() {
            store.lock().commit(&self.outcome);
            store.appended.pulse();
        }
        self.outcome.clone()
    }
}

impl Drop for PendingAppend {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            store.lock().abort(&self.stream, &self.outcome);
            // Events behind the hole become readable.
            store.appended.pulse();
        }
    }
}

impl InMemoryEventStore {
    async fn append_untraced(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        let now = self.clock.now();
        let mut state = self.lock();
        match state.reserve(stream, expected, events, now)? {
            Reserved::New(outcome) => {
                state.commit(&outcome);
                drop(state);
                self.appended.pulse();
                Ok(outcome)
            }
            Reserved::Replayed(outcome) => Ok(outcome),
        }
    }

    async fn read_stream_untraced(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        direction: ReadDirection,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.lock().read_stream(stream, from, max_count, direction)
    }

    async fn read_all_untraced(
        &self,
        after: Position,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let state = self.lock();
        let start = after.0.min(state.log.len() as u64) as usize;
        let mut out = Vec::with_capacity(max_count.min(state.log.len() - start));
        for slot in &state.log[start..] {
            if out.len() == max_count {
                break;
            }
            match slot {
                Slot::Committed(e) => out.push(e.clone()),
                Slot::Pending(_) => break,
                Slot::Aborted | Slot::Removed => {}
            }
        }
        Ok(out)
    }
}

/// Conditions are checked under the store's mutex, with the append: race-free. A pending
/// append ([`InMemoryEventStore::begin_append`]) that matches counts as appended (the
/// in-memory twin of waiting for its transaction).
impl DcbStore for InMemoryEventStore {
    async fn read_matching(
        &self,
        query: &EventQuery,
        after: Position,
        max_count: usize,
    ) -> Result<FilteredPage, Error> {
        query.validate()?;
        let read = async {
            let state = self.lock();
            let start = after.0.min(state.log.len() as u64) as usize;
            let mut events = Vec::new();
            let mut through = after;
            for (i, slot) in state.log[start..].iter().enumerate() {
                if events.len() == max_count {
                    break;
                }
                match slot {
                    Slot::Committed(e) if query.matches_event(e) => events.push(e.clone()),
                    Slot::Pending(_) => break,
                    _ => {}
                }
                through = Position((start + i) as u64 + 1);
            }
            Ok(FilteredPage { events, through })
        };
        self.telemetry
            .read("read_matching", None)
            .read_page(read)
            .await
    }

    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> Result<AppendOutcome, Error> {
        validate_append(&events)?;
        condition.fail_if_events_match.validate()?;
        let op = self.telemetry.append(stream, &events);
        op.append(async move {
            let now = self.clock.now();
            let mut state = self.lock();
            let retried = events.iter().any(|e| state.ids.contains_key(&e.event_id));
            if !retried {
                let start = condition.after.0.min(state.log.len() as u64) as usize;
                let matched = state.log[start..].iter().find_map(|slot| match slot {
                    Slot::Committed(e) | Slot::Pending(e)
                        if condition.fail_if_events_match.matches_event(e) =>
                    {
                        Some(e)
                    }
                    _ => None,
                });
                if let Some(e) = matched {
                    return Err(condition_failed(
                        stream,
                        condition,
                        e.position,
                        e.stream_id.as_str(),
                        &e.event_type,
                    ));
                }
            }
            match state.reserve(stream, expected, events, now)? {
                Reserved::New(outcome) => {
                    state.commit(&outcome);
                    drop(state);
                    self.appended.pulse();
                    Ok(outcome)
                }
                Reserved::Replayed(outcome) => Ok(outcome),
            }
        })
        .await
    }
}

impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        self.telemetry
            .append(stream, &events)
            .append(self.append_untraced(stream, expected, events))
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        direction: ReadDirection,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.telemetry
            .read("read_stream", Some(stream))
            .read(self.read_stream_untraced(stream, from, max_count, direction))
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.telemetry
            .read("read_all", None)
            .read(self.read_all_untraced(after, max_count))
            .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, Error> {
        let state = self.lock();
        state.readable(stream)?;
        let indexes = state.streams.get(stream);
        let committed = indexes.map_or(0, |v| {
            v.iter()
                .filter(|i| matches!(state.log[**i], Slot::Committed(_) | Slot::Removed))
                .count()
        });
        Ok(StreamVersion(committed as u64))
    }

    async fn replay_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        mut apply: F,
    ) -> Result<usize, Error>
    where
        F: FnMut(flext_domain::EventRef<'_>) -> Result<(), Error> + Send,
    {
        let events = {
            let state = self.lock();
            let start = state.replay_start(stream, from)?;
            state.read_stream(stream, start, max_count, ReadDirection::Forward)?
        };
        for e in &events {
            apply(e.as_event_ref())?;
        }
        Ok(events.len())
    }
}

impl SnapshotStore for InMemoryEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        let mut state = self.lock();
        let newer = state
            .snapshots
            .get(&snapshot.stream_id)
            .is_none_or(|s| s.version <= snapshot.version);
        if newer {
            state.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        Ok(self.lock().snapshots.get(stream).cloned())
    }
}

impl IdempotencyStore for InMemoryEventStore {
    async fn claim(
        &self,
        id: uuid::Uuid,
        message_type: &str,
        stale_after: std::time::Duration,
    ) -> Result<Claim, Error> {
        let mut state = self.lock();
        let now = std::time::Instant::now();
        match state.idempotency.get(&id) {
            Some((_, Some(record))) => Ok(Claim::Done(IdempotencyRecord {
                message_type: record.message_type.clone(),
                outcome: record.outcome.clone(),
            })),
            Some((claimed_at, None)) if now.duration_since(*claimed_at) < stale_after => {
                Ok(Claim::InProgress)
            }
            _ => {
                let _ = message_type;
                state.idempotency.insert(id, (now, None));
                Ok(Claim::Claimed)
            }
        }
    }

    async fn complete(&self, id: uuid::Uuid, record: IdempotencyRecord) -> Result<(), Error> {
        let mut state = self.lock();
        let claimed_at = state
            .idempotency
            .get(&id)
            .map_or_else(std::time::Instant::now, |(at, _)| *at);
        state.idempotency.insert(id, (claimed_at, Some(record)));
        Ok(())
    }

    async fn release(&self, id: uuid::Uuid) -> Result<(), Error> {
        let mut state = self.lock();
        if matches!(state.idempotency.get(&id), Some((_, None))) {
            state.idempotency.remove(&id);
        }
        Ok(())
    }

    async fn purge(&self, older_than: std::time::Duration) -> Result<u64, Error> {
        let now = std::time::Instant::now();
        let mut state = self.lock();
        let before = state.idempotency.len();
        state
            .idempotency
            .retain(|_, (at, _)| now.duration_since(*at) <= older_than);
        Ok((before - state.idempotency.len()) as u64)
    }
}

impl CheckpointStore for InMemoryEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, Error> {
        Ok(self.lock().consumers.get(name).map(|c| c.position))
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), Error> {
        let now = self.clock.now();
        {
            let mut state = self.lock();
            let consumer = state.consumers.entry(name.to_owned()).or_default();
            // Never over a consumer an instance owns: its checkpoint is written under its lease.
            if consumer.held(now) {
                return Err(flext_ports::adapter::checkpoint_owned(name));
            }
            consumer.position = position;
        }
        self.consumers_changed.pulse();
        Ok(())
    }
}

impl WatchAppends for InMemoryEventStore {
    fn watch_appends(&self) -> AppendWatcher {
        self.appended.watcher()
    }
}

/// A transaction of the in-memory store: the checkpoint and the dead-letter changes it
/// collects apply together on commit, or not at all.
#[derive(Debug, Default)]
pub struct MemoryTransaction {
    /// Fenced checkpoint writes: the lease, the position, whether it may move back.
    checkpoints: Vec<(Lease, Position, bool)>,
    parked: Vec<DeadLetter>,
    unparked: Vec<(String, EventId)>,
    /// Process states written (`None`: ended), in order.
    pub(crate) processes: Vec<(String, String, Option<flext_ports::StoredProcess>)>,
    /// Scheduled messages written (`Ok`) and keys cancelled (`Err`), in order.
    pub(crate) scheduled: Vec<Result<flext_ports::Scheduled, String>>,
    /// Jobs enqueued.
    pub(crate) jobs: Vec<flext_ports::NewJob>,
    /// Inbox records written: (consumer, message id).
    pub(crate) inbox: Vec<(String, String)>,
    /// Inbox dead letters parked.
    pub(crate) inbox_dead: Vec<flext_ports::InboxDeadLetter>,
    /// Outbox messages written.
    pub(crate) outbox: Vec<flext_ports::OutboxMessage>,
    /// Outbox messages removed through this position.
    pub(crate) outbox_sent: Option<u64>,
}

impl ProjectionStore for InMemoryEventStore {
    type Transaction = MemoryTransaction;

    fn exactly_once(&self) -> bool {
        false
    }

    async fn begin(&self) -> Result<MemoryTransaction, Error> {
        Ok(MemoryTransaction::default())
    }

    async fn set_checkpoint(
        &self,
        tx: &mut MemoryTransaction,
        lease: &Lease,
        position: Position,
    ) -> Result<(), Error> {
        tx.checkpoints.push((lease.clone(), position, false));
        Ok(())
    }

    async fn rewind_checkpoint(
        &self,
        tx: &mut MemoryTransaction,
        lease: &Lease,
        position: Position,
    ) -> Result<(), Error> {
        tx.checkpoints.push((lease.clone(), position, true));
        Ok(())
    }

    /// Applies the transaction's changes, all or none: every fenced checkpoint write is
    /// checked against the current lease first.
    async fn commit(&self, tx: MemoryTransaction) -> Result<(), Error> {
        let now = self.clock.now();
        let mut state = self.lock();
        for (lease, position, rewind) in &tx.checkpoints {
            crate::ownership::check_fence(&state, lease, *position, *rewind, now)?;
        }
        // A message recorded by a transaction that committed since this one recorded it:
        // this one is the redelivery and must not land.
        if let Some((consumer, id)) = tx.inbox.iter().find(|k| state.inbox.contains_key(k)) {
            return Err(Error::conflict(
                "INBOX_DUPLICATE",
                format!("inbox {consumer:?} recorded message {id:?} in another transaction"),
            ));
        }
        for key in tx.inbox {
            state.inbox.insert(key, now);
        }
        if let Some(through) = tx.outbox_sent {
            state.outbox.retain(|p, _| *p > through);
        }
        for m in tx.outbox {
            state.outbox_last += 1;
            let order = state.outbox_last;
            state.outbox.insert(
                order,
                flext_ports::OutboundMessage {
                    subject: m.subject,
                    id: m.id,
                    headers: m.headers,
                    payload: m.payload,
                    order,
                },
            );
        }
        for letter in tx.inbox_dead {
            state
                .inbox_dead
                .insert((letter.consumer.clone(), letter.message_id.clone()), letter);
        }
        for (projection, id) in tx.unparked {
            if let Some(letters) = state.dead_letters.get_mut(&projection) {
                letters.remove(&id);
            }
        }
        for letter in tx.parked {
            state
                .dead_letters
                .entry(letter.projection.clone())
                .or_default()
                .insert(letter.event_id, letter);
        }
        for (manager, association, process) in tx.processes {
            match process {
                Some(p) => {
                    state.processes.insert((manager, association), p);
                }
                None => {
                    state.processes.remove(&(manager, association));
                }
            }
        }
        for job in tx.jobs {
            crate::job::insert(&mut state, &job);
        }
        for change in tx.scheduled {
            match change {
                Ok(message) => {
                    state.schedule.insert(message.key.clone(), message);
                }
                Err(key) => {
                    state.schedule.remove(&key);
                }
            }
        }
        let moved = !tx.checkpoints.is_empty();
        for (lease, position, _) in tx.checkpoints {
            state.consumers.entry(lease.consumer).or_default().position = position;
        }
        drop(state);
        if moved {
            self.consumers_changed.pulse();
        }
        Ok(())
    }

    async fn park(&self, tx: &mut MemoryTransaction, letter: &DeadLetter) -> Result<(), Error> {
        tx.parked.push(letter.clone());
        Ok(())
    }

    async fn unpark(
        &self,
        tx: &mut MemoryTransaction,
        projection: &str,
        event_id: EventId,
    ) -> Result<bool, Error> {
        let parked_here = tx
            .parked
            .iter()
            .any(|l| l.projection == projection && l.event_id == event_id);
        tx.parked
            .retain(|l| !(l.projection == projection && l.event_id == event_id));
        let stored = self
            .lock()
            .dead_letters
            .get(projection)
            .is_some_and(|m| m.contains_key(&event_id));
        tx.unparked.push((projection.to_owned(), event_id));
        Ok(parked_here || stored)
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, Error> {
        let mut letters: Vec<DeadLetter> = self
            .lock()
            .dead_letters
            .get(projection)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        letters.sort_by_key(|l| l.position);
        Ok(letters)
    }
}

impl HealthCheck for InMemoryEventStore {
    fn name(&self) -> &str {
        "memory-event-store"
    }

    /// Always up (details: `events`, the number of stored events).
    fn check(&self) -> HealthFuture<'_> {
        let events = self
            .lock()
            .log
            .iter()
            .filter(|s| matches!(s, Slot::Committed(_)))
            .count();
        Box::pin(async move { Health::up().with_detail("events", events) })
    }
}

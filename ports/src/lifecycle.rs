//! Stream lifecycle: soft and hard deletion, truncation, archiving, and retention
//! policies (ADR 0007).
//!
//! What each operation leaves behind:
//!
//! | operation | stream reads and loads | appends | `read_all`, subscriptions, projections |
//! |---|---|---|---|
//! | [`delete_stream`](StreamLifecycle::delete_stream) (soft) | `NOT_FOUND`/[`STREAM_DELETED`] | the stream counts as absent; numbering continues and the append revives it, its earlier events hidden | still returned (history already seen; a rebuild agrees) |
//! | [`tombstone_stream`](StreamLifecycle::tombstone_stream) (hard) | `NOT_FOUND`/[`STREAM_DELETED`] | refused forever, `FAILED_PRECONDITION`/[`STREAM_DELETED`] | removed: no longer returned |
//! | [`truncate_stream`](StreamLifecycle::truncate_stream) before `t` | reads start at `t`; a replay from below `t` is `FAILED_PRECONDITION`/[`STREAM_TRUNCATED`] (load from a snapshot instead) | numbering continues | removed |
//! | [`archive_stream`](StreamLifecycle::archive_stream) before `t` | unchanged: read through from the archive | unchanged | removed from the hot log (a projection rebuilt afterwards does not see them) |
//!
//! No operation appends an event: a consumer that must react to a deletion is told by an
//! event the application appends first (`account.closed`, say). Retention policies
//! ([`RetentionPolicy`]: a maximum count, a maximum age) are applied by
//! [`StreamLifecycle::apply_retention`], which the application's retention task runs
//! periodically; it truncates (or archives) and is idempotent, so several instances may
//! run it at once.
//!
//! ```
//! use flext::ports::{EventStore, ReadDirection, StreamLifecycle, StreamStatus};
//! use flext::{EventId, ExpectedVersion, NewEvent, StreamId, StreamVersion};
//! use flext::memory::InMemoryEventStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flext::Error> {
//! let store = InMemoryEventStore::new();
//! let stream = StreamId::new("cart-1")?;
//! let added = || NewEvent::new(EventId::new(), "cart.item_added", b"{}".to_vec());
//! store.append(&stream, ExpectedVersion::NoStream, vec![added(), added()]).await?;
//! store.delete_stream(&stream, ExpectedVersion::Exact(StreamVersion(2))).await?;
//! let err = store.stream_version(&stream).await.unwrap_err();
//! assert_eq!(err.reason(), "STREAM_DELETED");
//! // Appending again revives it: numbering continues, the old events stay hidden.
//! let out = store.append(&stream, ExpectedVersion::NoStream, vec![added()]).await?;
//! assert_eq!(out.stream_version, StreamVersion(3));
//! let events = store.read_stream(&stream, StreamVersion(1), 10, ReadDirection::Forward).await?;
//! assert_eq!(events.len(), 1);
//! assert_eq!(store.stream_info(&stream).await?.status, StreamStatus::Live);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{Error, ExpectedVersion, StreamId, StreamVersion};

use crate::event_store::{EventStore, ReadDirection};

/// The reason of the error reading a deleted stream, or appending to a tombstoned one.
pub const STREAM_DELETED: &str = "STREAM_DELETED";

/// The reason of the error of a lifecycle operation on a stream never appended to.
pub const STREAM_NOT_FOUND: &str = "STREAM_NOT_FOUND";

/// The reason of the error replaying a stream from below where it was truncated.
pub const STREAM_TRUNCATED: &str = "STREAM_TRUNCATED";

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// Never appended to.
    Absent,
    /// Readable and writable.
    Live,
    /// Soft-deleted: reads refuse, an append revives it.
    Deleted,
    /// Hard-deleted: its events are gone and appends are refused forever.
    Tombstoned,
}

/// What the store knows of a stream's life ([`StreamLifecycle::stream_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its status.
    pub status: StreamStatus,
    /// The last version it was given (kept through deletion and truncation).
    pub version: StreamVersion,
    /// The first version a read returns: later than 1 after a revival (the versions
    /// before it belong to the deleted life) or a truncation.
    pub first_readable: StreamVersion,
    /// Versions below this one, from `first_readable` on, are read from the archive
    /// (1 when nothing is archived).
    pub archived_below: StreamVersion,
    /// Its retention policy, if one was set.
    pub retention: Option<RetentionPolicy>,
}

impl StreamInfo {
    /// A stream never appended to.
    pub const ABSENT: StreamInfo = StreamInfo {
        status: StreamStatus::Absent,
        version: StreamVersion(0),
        first_readable: StreamVersion(1),
        archived_below: StreamVersion(1),
        retention: None,
    };
}

/// How long a stream keeps its events; applied by [`StreamLifecycle::apply_retention`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many of the newest events.
    pub max_count: Option<u64>,
    /// Keep events recorded at most this long ago.
    pub max_age: Option<Duration>,
    /// Move expired events to the archive instead of removing them.
    pub archive: bool,
}

impl RetentionPolicy {
    /// Keep the newest `n` events.
    pub fn max_count(n: u64) -> RetentionPolicy {
        RetentionPolicy {
            max_count: Some(n),
            ..RetentionPolicy::default()
        }
    }

    /// Keep events younger than `age`.
    pub fn max_age(age: Duration) -> RetentionPolicy {
        RetentionPolicy {
            max_age: Some(age),
            ..RetentionPolicy::default()
        }
    }

    /// Archives expired events instead of removing them.
    pub fn archiving(mut self) -> RetentionPolicy {
        self.archive = true;
        self
    }

    /// A policy from the columns SQL stores keep it in (`None` when neither bound is
    /// set). For store adapters.
    pub fn from_stored(
        max_count: Option<i64>,
        max_age_ms: Option<i64>,
        archive: bool,
    ) -> Option<RetentionPolicy> {
        (max_count.is_some() || max_age_ms.is_some()).then(|| RetentionPolicy {
            max_count: max_count.map(|n| n.max(0).unsigned_abs()),
            max_age: max_age_ms.map(|ms| Duration::from_millis(ms.max(0).unsigned_abs())),
            archive,
        })
    }

    /// A policy the stores can keep: a count of at least 1 and an age of at least a
    /// millisecond, each within `i64`.
    pub fn validate(&self) -> Result<(), Error> {
        if self
            .max_count
            .is_some_and(|n| n == 0 || n > i64::MAX as u64)
        {
            return Err(Error::invalid_argument(
                "INVALID_RETENTION",
                "max_count must be between 1 and 2^63 - 1",
            )
            .with_detail("field", "max_count"));
        }
        if self
            .max_age
            .is_some_and(|a| a.as_millis() == 0 || a.as_millis() > i64::MAX as u128)
        {
            return Err(Error::invalid_argument(
                "INVALID_RETENTION",
                "max_age must be at least a millisecond and at most 2^63 - 1 ms",
            )
            .with_detail("field", "max_age"));
        }
        Ok(())
    }
}

/// What one [`StreamLifecycle::apply_retention`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Streams with a policy that were looked at.
    pub streams: u64,
    /// Events removed.
    pub removed: u64,
    /// Events moved to the archive.
    pub archived: u64,
}

/// Deleting, truncating and archiving streams; see the [module docs](self) for what each
/// leaves visible. On PostgreSQL an operation briefly holds appends to the event table
/// back (it takes a table lock that waits for appends in flight, so none slips past its
/// check); on SQLite and in memory it runs under the store's one writer.
pub trait StreamLifecycle: EventStore {
    /// The stream's status, versions and policy.
    fn stream_info(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<StreamInfo, Error>> + Send;

    /// Soft-deletes the stream if `expected` holds against its version, and returns that
    /// version. Deleting a deleted stream again succeeds with `Any`; a tombstoned one is
    /// `STREAM_DELETED`; an absent one `NOT_FOUND`/`STREAM_NOT_FOUND`.
    fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> impl Future<Output = Result<StreamVersion, Error>> + Send;

    /// Hard-deletes the stream if `expected` holds (a soft-deleted stream may be
    /// tombstoned with `Any`): removes its events, archived ones included, and refuses
    /// every later append. Returns its last version. Tombstoning twice succeeds.
    fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> impl Future<Output = Result<StreamVersion, Error>> + Send;

    /// Removes the stream's events below version `before` (from the archive too) and
    /// returns how many it removed. `before` beyond the last version removes them all; the
    /// numbering is kept.
    fn truncate_stream(
        &self,
        stream: &StreamId,
        before: StreamVersion,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Moves the stream's events below version `before` to the archive and returns how
    /// many it moved. Stream reads and loads read through; `read_all` no longer returns
    /// them.
    fn archive_stream(
        &self,
        stream: &StreamId,
        before: StreamVersion,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Sets (or with `None` clears) the stream's retention policy. The stream need not
    /// exist yet.
    fn set_retention(
        &self,
        stream: &StreamId,
        policy: Option<RetentionPolicy>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Up to `max_count` live streams with a policy whose id sorts after `after`, in id
    /// order.
    fn retained_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<(StreamId, RetentionPolicy)>, Error>> + Send;

    /// Applies every stream's policy as of `now`: removes (or archives) what is beyond
    /// its count or older than its age. Idempotent.
    fn apply_retention(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RetentionReport, Error>> + Send
    where
        Self: Sized,
    {
        async move {
            let mut report = RetentionReport::default();
            let mut after: Option<StreamId> = None;
            loop {
                let page = self.retained_streams(after.as_ref(), 100).await?;
                let Some((last, _)) = page.last() else {
                    return Ok(report);
                };
                after = Some(last.clone());
                for (stream, policy) in &page {
                    report.streams += 1;
                    let applied = async {
                        let before = expired_before(self, stream, policy, now).await?;
                        if policy.archive {
                            self.archive_stream(stream, before).await.map(|n| (0, n))
                        } else {
                            self.truncate_stream(stream, before).await.map(|n| (n, 0))
                        }
                    };
                    match applied.await {
                        Ok((removed, archived)) => {
                            report.removed += removed;
                            report.archived += archived;
                        }
                        // Not appended to yet, or deleted since it was listed.
                        Err(e)
                            if e.reason() == STREAM_DELETED || e.reason() == STREAM_NOT_FOUND => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// Forwards every method.
impl<S: StreamLifecycle> StreamLifecycle for std::sync::Arc<S> {
    fn stream_info(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<StreamInfo, Error>> + Send {
        (**self).stream_info(stream)
    }
    fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> impl Future<Output = Result<StreamVersion, Error>> + Send {
        (**self).delete_stream(stream, expected)
    }
    fn tombstone_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> impl Future<Output = Result<StreamVersion, Error>> + Send {
        (**self).tombstone_stream(stream, expected)
    }
    fn truncate_stream(
        &self,
        stream: &StreamId,
        before: StreamVersion,
    ) -> impl Future<Output = Result<u64, Error>> + Send {
        (**self).truncate_stream(stream, before)
    }
    fn archive_stream(
        &self,
        stream: &StreamId,
        before: StreamVersion,
    ) -> impl Future<Output = Result<u64, Error>> + Send {
        (**self).archive_stream(stream, before)
    }
    fn set_retention(
        &self,
        stream: &StreamId,
        policy: Option<RetentionPolicy>,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).set_retention(stream, policy)
    }
    fn retained_streams(
        &self,
        after: Option<&StreamId>,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<(StreamId, RetentionPolicy)>, Error>> + Send {
        (**self).retained_streams(after, max_count)
    }
}

/// The version below which `policy` expires the stream's events as of `now`.
async fn expired_before<S: StreamLifecycle>(
    store: &S,
    stream: &StreamId,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<StreamVersion, Error> {
    let info = store.stream_info(stream).await?;
    match info.status {
        StreamStatus::Live => {}
        StreamStatus::Absent => return Err(stream_not_found(stream)),
        _ => return Err(stream_deleted(stream, &info)),
    }
    let mut before = info.first_readable;
    if let Some(n) = policy.max_count {
        before = before.max(StreamVersion((info.version.0 + 1).saturating_sub(n)));
    }
    if let Some(age) = policy.max_age {
        let cutoff = chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age));
        if let Some(cutoff) = cutoff {
            // The first event recorded at or after the cutoff; everything before it goes.
            let mut from = before;
            loop {
                let page = store
                    .read_stream(stream, from, 500, ReadDirection::Forward)
                    .await?;
                let Some(last) = page.last() else {
                    before = StreamVersion(info.version.0 + 1);
                    break;
                };
                if let Some(young) = page.iter().find(|e| e.recorded_at >= cutoff) {
                    before = before.max(young.stream_version);
                    break;
                }
                from = last.stream_version.advanced(1);
            }
        }
    }
    Ok(before)
}

/// The error of reading a deleted or tombstoned stream.
pub fn stream_deleted(stream: &StreamId, info: &StreamInfo) -> Error {
    let hard = info.status == StreamStatus::Tombstoned;
    Error::not_found(
        STREAM_DELETED,
        format!(
            "stream {:?} was {} at version {}",
            stream.as_str(),
            if hard { "tombstoned" } else { "deleted" },
            info.version.0
        ),
    )
    .with_detail("stream", stream.as_str())
    .with_detail("version", info.version.0)
    .with_detail("hard", hard)
}

/// The error of appending to a tombstoned stream.
pub fn append_to_tombstoned(stream: &StreamId, version: StreamVersion) -> Error {
    Error::failed_precondition(
        STREAM_DELETED,
        format!(
            "stream {:?} was tombstoned at version {}: it takes no more events",
            stream.as_str(),
            version.0
        ),
    )
    .with_detail("stream", stream.as_str())
    .with_detail("version", version.0)
}

/// The error of replaying a stream from below where it was truncated.
pub fn stream_truncated(stream: &StreamId, from: StreamVersion, first: StreamVersion) -> Error {
    Error::failed_precondition(
        STREAM_TRUNCATED,
        format!(
            "stream {:?} keeps its events from version {} on; a replay from version {} \
             needs a snapshot at or after version {}",
            stream.as_str(),
            first.0,
            from.0,
            first.0.saturating_sub(1)
        ),
    )
    .with_detail("stream", stream.as_str())
    .with_detail("from", from.0)
    .with_detail("first_version", first.0)
}

/// The error of a lifecycle operation on a stream never appended to.
pub fn stream_not_found(stream: &StreamId) -> Error {
    Error::not_found(
        STREAM_NOT_FOUND,
        format!("stream {:?} does not exist", stream.as_str()),
    )
    .with_detail("stream", stream.as_str())
}

/// What a delete or tombstone decides from the stream's `info`: `Ok(None)` when there is
/// nothing to do (already so), `Ok(Some(version))` to go ahead, or the error. For store
/// adapters.
pub fn check_delete(
    stream: &StreamId,
    info: &StreamInfo,
    expected: ExpectedVersion,
    hard: bool,
) -> Result<Option<StreamVersion>, Error> {
    match info.status {
        StreamStatus::Absent => Err(stream_not_found(stream)),
        StreamStatus::Tombstoned if hard => Ok(None),
        StreamStatus::Tombstoned => Err(stream_deleted(stream, info)),
        StreamStatus::Deleted => match expected {
            ExpectedVersion::Any => Ok((hard).then_some(info.version)),
            _ => Err(stream_deleted(stream, info)),
        },
        StreamStatus::Live => {
            expected.check(stream, info.version)?;
            Ok(Some(info.version))
        }
    }
}

/// Where a replay from `from` starts, or the error when events it needs were truncated.
/// For store adapters: `life_start` is the first version of the stream's current life,
/// `truncated_before` the first version truncation kept.
pub fn replay_start(
    stream: &StreamId,
    from: StreamVersion,
    life_start: StreamVersion,
    truncated_before: StreamVersion,
) -> Result<StreamVersion, Error> {
    let start = from.max(life_start).max(StreamVersion(1));
    if start < truncated_before {
        return Err(stream_truncated(stream, from, truncated_before));
    }
    Ok(start)
}

/// A stream's lifecycle as SQL stores keep it (one row of `flext_streams`, defaults when
/// it has none, and the highest version stored), and the rules derived from it. For
/// store adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLife {
    /// The highest version among the stream's stored (and archived) events.
    pub stored_version: i64,
    /// 0 live, 1 deleted ([`StoredLife::DELETED`]), 2 tombstoned
    /// ([`StoredLife::TOMBSTONED`]).
    pub state: i64,
    /// The version when its life last changed: the floor once its events are gone.
    pub version: i64,
    /// The first version of its current life.
    pub life_start: i64,
    /// The first version truncation kept.
    pub truncated_before: i64,
    /// Versions below this one are archived.
    pub archived_below: i64,
    /// Its policy's count.
    pub max_count: Option<i64>,
    /// Its policy's age in milliseconds.
    pub max_age_ms: Option<i64>,
    /// Whether its policy archives.
    pub archive_expired: bool,
}

fn stored_version(v: i64) -> StreamVersion {
    StreamVersion(v.max(0).unsigned_abs())
}

impl StoredLife {
    /// The state of a soft-deleted stream.
    pub const DELETED: i64 = 1;
    /// The state of a tombstoned stream.
    pub const TOMBSTONED: i64 = 2;

    /// What it says of the stream.
    pub fn info(&self) -> StreamInfo {
        let v = self.stored_version.max(self.version);
        StreamInfo {
            status: match self.state {
                StoredLife::DELETED => StreamStatus::Deleted,
                StoredLife::TOMBSTONED => StreamStatus::Tombstoned,
                _ if v == 0 => StreamStatus::Absent,
                _ => StreamStatus::Live,
            },
            version: stored_version(v),
            first_readable: stored_version(self.life_start.max(self.truncated_before)),
            archived_below: stored_version(self.archived_below),
            retention: self.retention(),
        }
    }

    /// Its retention policy, if any.
    pub fn retention(&self) -> Option<RetentionPolicy> {
        RetentionPolicy::from_stored(self.max_count, self.max_age_ms, self.archive_expired)
    }

    /// Sets its retention columns from `policy`.
    pub fn set_retention(&mut self, policy: Option<RetentionPolicy>) {
        self.max_count = policy
            .and_then(|p| p.max_count)
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.max_age_ms = policy
            .and_then(|p| p.max_age)
            .map(|a| i64::try_from(a.as_millis()).unwrap_or(i64::MAX));
        self.archive_expired = policy.is_some_and(|p| p.archive);
    }

    /// `STREAM_DELETED` unless the stream is live (or absent).
    pub fn readable(&self, stream: &StreamId) -> Result<(), Error> {
        match self.state {
            StoredLife::DELETED | StoredLife::TOMBSTONED => {
                Err(stream_deleted(stream, &self.info()))
            }
            _ => Ok(()),
        }
    }

    /// Where a replay from `from` starts, or why it cannot.
    pub fn replay_start(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<StreamVersion, Error> {
        self.readable(stream)?;
        replay_start(
            stream,
            from,
            stored_version(self.life_start),
            stored_version(self.truncated_before),
        )
    }

    /// The live stream's info, or why a truncation or archiving cannot touch it.
    pub fn target(&self, stream: &StreamId) -> Result<StreamInfo, Error> {
        let info = self.info();
        match info.status {
            StreamStatus::Absent => Err(stream_not_found(stream)),
            StreamStatus::Deleted | StreamStatus::Tombstoned => Err(stream_deleted(stream, &info)),
            StreamStatus::Live => Ok(info),
        }
    }
}

/// For an append to a stream at `actual` in lifecycle `state` whose current life starts
/// at `life_start`: the version its expectation is checked against (a deleted stream
/// counts as absent) and the first version of the life it appends to;
/// `FAILED_PRECONDITION`/`STREAM_DELETED` for a tombstoned stream. For store adapters.
pub fn append_expectation(
    stream: &StreamId,
    state: i64,
    life_start: i64,
    actual: StreamVersion,
) -> Result<(StreamVersion, StreamVersion), Error> {
    match state {
        StoredLife::TOMBSTONED => Err(append_to_tombstoned(stream, actual)),
        StoredLife::DELETED => Ok((StreamVersion::INITIAL, actual.advanced(1))),
        _ => Ok((actual, stored_version(life_start))),
    }
}

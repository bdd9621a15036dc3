//! The event-store port: append with an expected version, read a stream, read all in order.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use flext_domain::{
    CorrelationId, Error, ErrorCode, EventId, EventRef, ExpectedVersion, FieldViolation, NewEvent,
    Position, RecordedEvent, StreamId, StreamVersion, wrong_expected_version,
};

/// The most events one append may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

/// The longest event type name, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 255;

/// The largest schema version a store keeps (PostgreSQL's `INTEGER`): every store refuses
/// a larger one with the same typed error rather than storing something else.
pub const MAX_SCHEMA_VERSION: u32 = i32::MAX as u32;

/// Which way [`EventStore::read_stream`] walks a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadDirection {
    /// From `from` up: versions `from, from + 1, ...`.
    Forward,
    /// From `from` down: versions `from, from - 1, ...`; start at
    /// [`StreamVersion::LATEST`] for the newest events.
    Backward,
}

/// What a successful append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version after the append: the version of its last event.
    pub stream_version: StreamVersion,
    /// The global position of each appended event, in order.
    pub positions: Vec<Position>,
}

impl AppendOutcome {
    /// The position of the last appended event (what read-your-writes waits for).
    pub fn last_position(&self) -> Option<Position> {
        self.positions.last().copied()
    }
}

/// A page of the global order read through a filter by event type
/// ([`EventStore::read_all_of_types`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FilteredPage {
    /// The events that matched, in position order.
    pub events: Vec<RecordedEvent>,
    /// How far the read looked: every event after the position asked for, up to and
    /// including this one, was considered, and those not in `events` did not match. At
    /// least the last matching event's position; the position asked for when there was
    /// nothing after it yet. A reader checkpoints this, not the last event's position, so
    /// it does not read what it skipped again.
    pub through: Position,
}

/// Stores events in streams and in one global order.
///
/// Every adapter passes the conformance suite in `flext-testkit`, so they are
/// interchangeable. The rules all of them keep:
///
/// - `append` is atomic: all events or none. It honours the [`ExpectedVersion`]; a violated
///   expectation is an `Aborted` error with reason `WRONG_EXPECTED_VERSION` and details
///   `stream`, `expected`, `actual` (see [`flext_domain::wrong_expected_version`]).
/// - Idempotence: appending events whose ids are already in the stream at the versions this
///   append would give them, with the same type and payload, returns the original outcome
///   and writes nothing; this holds for every expectation but `Any`. Event ids are unique in
///   the whole store: an id reused in any other way is an `AlreadyExists` error with reason
///   `EVENT_ID_REUSED` naming the id and where it is stored.
/// - `read_all` is gap-safe: it returns events in increasing position order, and an event
///   that is not returned by a call (because it was not yet committed) gets a position
///   greater than every position that call returned. A reader that checkpoints the last
///   position it saw never misses an event.
/// - A stored row that cannot be read back is a `DataLoss` error with reason
///   `CORRUPTED_EVENT` naming its stream and version; the other events stay readable.
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` if `expected` holds, assigning versions and positions.
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendOutcome, Error>> + Send;

    /// Up to `max_count` events of `stream` starting at version `from` (inclusive), in
    /// `direction`. A stream that does not exist reads as empty.
    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        direction: ReadDirection,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send;

    /// Up to `max_count` events with a position greater than `after`, in position order.
    fn read_all(
        &self,
        after: Position,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send;

    /// The stream's current version; 0 if it does not exist.
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<StreamVersion, Error>> + Send;

    /// Feeds up to `max_count` events of `stream` from version `from`, in version order,
    /// to `apply` as borrowed views, and returns how many it fed. This is what rebuilding
    /// an aggregate needs: SQL adapters read only the columns a decode uses and lend the
    /// payload straight from the row, without building [`RecordedEvent`]s. An error from
    /// `apply` stops the replay and is returned.
    ///
    /// The default reads with [`EventStore::read_stream`].
    fn replay_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        mut apply: F,
    ) -> impl Future<Output = Result<usize, Error>> + Send
    where
        F: FnMut(EventRef<'_>) -> Result<(), Error> + Send,
        Self: Sized,
    {
        async move {
            let events = self
                .read_stream(stream, from, max_count, ReadDirection::Forward)
                .await?;
            for e in &events {
                apply(e.as_event_ref())?;
            }
            Ok(events.len())
        }
    }

    /// Whether committed events with a position greater than `after` exist that
    /// [`EventStore::read_all`] holds back for gap safety (on PostgreSQL: until older
    /// transactions of the cluster end, which may not append and so may not notify). A
    /// reader that caught up polls again soon while this is true. The default: never.
    fn read_all_withheld(
        &self,
        after: Position,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        let _ = after;
        async { Ok(false) }
    }

    /// Up to `max_count` events after `after` whose event type is one of `types`, in
    /// position order, and how far the read looked ([`FilteredPage::through`]): what a
    /// consumer of a few event types reads instead of the whole order. Gap-safe like
    /// `read_all`: no event at or before `through` commits later. The default reads a page
    /// of `read_all` and keeps the matches (so it may return fewer than `max_count` while
    /// more match further on); the SQL stores filter in their query.
    fn read_all_of_types(
        &self,
        after: Position,
        max_count: usize,
        types: &[&str],
    ) -> impl Future<Output = Result<FilteredPage, Error>> + Send
    where
        Self: Sized,
    {
        async move {
            let page = self.read_all(after, max_count).await?;
            let through = page.last().map_or(after, |e| e.position);
            let events = page
                .into_iter()
                .filter(|e| types.contains(&e.event_type.as_str()))
                .collect();
            Ok(FilteredPage { events, through })
        }
    }

    /// Up to `max_count` events recorded with `correlation` as their correlation id, in
    /// position order: every event of one business action. The default scans the global
    /// order; the SQL stores use their index on the correlation id.
    fn read_correlated(
        &self,
        correlation: CorrelationId,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send
    where
        Self: Sized,
    {
        async move {
            let mut from = Position::START;
            let mut out = Vec::new();
            while out.len() < max_count {
                let page = self.read_all(from, 1_000).await?;
                let Some(last) = page.last() else { break };
                from = last.position;
                out.extend(
                    page.into_iter()
                        .filter(|e| e.metadata.correlation_id == Some(correlation)),
                );
            }
            out.truncate(max_count);
            Ok(out)
        }
    }

    /// How many events have a position greater than `after` (a reader's lag in events;
    /// positions need not be dense). The default counts through [`EventStore::read_all`].
    fn count_after(&self, after: Position) -> impl Future<Output = Result<u64, Error>> + Send
    where
        Self: Sized,
    {
        async move {
            let mut from = after;
            let mut n = 0u64;
            loop {
                let page = self.read_all(from, 1_000).await?;
                let Some(last) = page.last() else {
                    return Ok(n);
                };
                from = last.position;
                n += page.len() as u64;
            }
        }
    }
}

/// Forwards every method, the fast [`EventStore::replay_stream`] of the store included.
impl<S: EventStore> EventStore for Arc<S> {
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendOutcome, Error>> + Send {
        (**self).append(stream, expected, events)
    }
    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        direction: ReadDirection,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send {
        (**self).read_stream(stream, from, max_count, direction)
    }
    fn read_all(
        &self,
        after: Position,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send {
        (**self).read_all(after, max_count)
    }
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<StreamVersion, Error>> + Send {
        (**self).stream_version(stream)
    }
    fn replay_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        apply: F,
    ) -> impl Future<Output = Result<usize, Error>> + Send
    where
        F: FnMut(EventRef<'_>) -> Result<(), Error> + Send,
    {
        (**self).replay_stream(stream, from, max_count, apply)
    }
    fn read_all_withheld(
        &self,
        after: Position,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        (**self).read_all_withheld(after)
    }
    fn count_after(&self, after: Position) -> impl Future<Output = Result<u64, Error>> + Send {
        (**self).count_after(after)
    }
    fn read_all_of_types(
        &self,
        after: Position,
        max_count: usize,
        types: &[&str],
    ) -> impl Future<Output = Result<FilteredPage, Error>> + Send {
        (**self).read_all_of_types(after, max_count, types)
    }
    fn read_correlated(
        &self,
        correlation: CorrelationId,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, Error>> + Send {
        (**self).read_correlated(correlation, max_count)
    }
}

/// Checks an append's input before any adapter touches storage: at least one and at most
/// [`MAX_EVENTS_PER_APPEND`] events, non-empty event types of at most
/// [`MAX_EVENT_TYPE_LEN`] bytes without control characters, and no event id twice. Every
/// problem is an `InvalidArgument` error with field violations naming the event index.
pub fn validate_append(events: &[NewEvent]) -> Result<(), Error> {
    if events.is_empty() {
        return Err(Error::invalid_argument(
            "NO_EVENTS",
            "an append needs at least one event",
        ));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(Error::invalid_argument(
            "TOO_MANY_EVENTS",
            format!(
                "an append carries at most {MAX_EVENTS_PER_APPEND} events, this one has {}",
                events.len()
            ),
        ));
    }
    let mut violations = Vec::new();
    let mut seen = HashSet::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let t = &e.event_type;
        let problem = if t.is_empty() {
            Some("must not be empty".to_owned())
        } else if t.len() > MAX_EVENT_TYPE_LEN {
            Some(format!("is longer than {MAX_EVENT_TYPE_LEN} bytes"))
        } else if t.chars().any(char::is_control) {
            Some("contains a control character".to_owned())
        } else {
            None
        };
        if let Some(p) = problem {
            violations.push(FieldViolation::new(
                format!("events[{i}].event_type"),
                ErrorCode::InvalidArgument,
                "INVALID_EVENT_TYPE",
                p,
            ));
        }
        if e.schema_version > MAX_SCHEMA_VERSION {
            violations.push(FieldViolation::new(
                format!("events[{i}].schema_version"),
                ErrorCode::InvalidArgument,
                "SCHEMA_VERSION_OUT_OF_RANGE",
                format!(
                    "{} is larger than the largest schema version a store keeps ({MAX_SCHEMA_VERSION})",
                    e.schema_version
                ),
            ));
        }
        tag_violations(&e.tags, &format!("events[{i}].tags"), &mut violations);
        if !seen.insert(e.event_id) {
            violations.push(FieldViolation::new(
                format!("events[{i}].event_id"),
                ErrorCode::InvalidArgument,
                "DUPLICATE_EVENT_ID",
                format!("{} appears twice in this append", e.event_id),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(
            Error::invalid_argument("INVALID_APPEND", "the append is invalid")
                .with_field_violations(violations),
        )
    }
}

/// Checks a list of tags (an event's, or a query item's): at most
/// [`MAX_TAGS_PER_EVENT`](flext_domain::MAX_TAGS_PER_EVENT), each 1 to
/// [`MAX_TAG_LEN`](flext_domain::MAX_TAG_LEN) bytes without control characters, none
/// twice; each problem a field violation under `field[i]`.
pub fn tag_violations(tags: &[String], field: &str, violations: &mut Vec<FieldViolation>) {
    use flext_domain::{MAX_TAG_LEN, MAX_TAGS_PER_EVENT};
    if tags.len() > MAX_TAGS_PER_EVENT {
        violations.push(FieldViolation::new(
            field,
            ErrorCode::InvalidArgument,
            "TOO_MANY_TAGS",
            format!("at most {MAX_TAGS_PER_EVENT} tags, not {}", tags.len()),
        ));
    }
    for (j, tag) in tags.iter().enumerate() {
        let problem = if tag.is_empty() {
            Some("must not be empty".to_owned())
        } else if tag.len() > MAX_TAG_LEN {
            Some(format!("is longer than {MAX_TAG_LEN} bytes"))
        } else if tag.chars().any(char::is_control) {
            Some("contains a control character".to_owned())
        } else if tags[..j].contains(tag) {
            Some(format!("{tag:?} appears twice"))
        } else {
            None
        };
        if let Some(p) = problem {
            violations.push(FieldViolation::new(
                format!("{field}[{j}]"),
                ErrorCode::InvalidArgument,
                "INVALID_TAG",
                p,
            ));
        }
    }
}

/// What an adapter found already stored under the ids of an append that could not be
/// written as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The stored event's id.
    pub event_id: EventId,
    /// Where it is stored.
    pub stream_id: StreamId,
    /// Its version there.
    pub stream_version: StreamVersion,
    /// Its position.
    pub position: Position,
    /// Its type.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: u32,
    /// Its payload.
    pub payload: bytes::Bytes,
}

/// Decides the outcome of an append that could not be written as asked (its expectation
/// failed, or an id or version was taken), from the stream's `actual` version and the
/// events already stored under the append's ids (`existing`, in any order).
///
/// - No id stored: the expectation was violated, a `WRONG_EXPECTED_VERSION` conflict.
/// - Every id stored in `stream`, in order, at the versions the append would have given
///   them, with the same type, schema version and payload, and `expected` is not `Any`:
///   the original outcome (an idempotent retry).
/// - Anything else: `EVENT_ID_REUSED`, naming the first id and where it is stored.
pub fn resolve_rejected_append(
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: StreamVersion,
    events: &[NewEvent],
    existing: &[StoredEvent],
) -> Result<AppendOutcome, Error> {
    resolve_rejected_append_in_life(stream, expected, actual, StreamVersion(1), events, existing)
}

/// [`resolve_rejected_append`] for a stream whose current life begins at `life_start`
/// (after a soft delete and a revival: the deleted version + 1), where a `NoStream`
/// append put its first event.
pub fn resolve_rejected_append_in_life(
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: StreamVersion,
    life_start: StreamVersion,
    events: &[NewEvent],
    existing: &[StoredEvent],
) -> Result<AppendOutcome, Error> {
    let (Some(first_event), Some(first_existing)) = (events.first(), existing.first()) else {
        if events.is_empty() {
            return Err(Error::invalid_argument(
                "NO_EVENTS",
                "an append needs at least one event",
            ));
        }
        return Err(wrong_expected_version(stream, expected, actual));
    };
    let find = |id: EventId| existing.iter().find(|s| s.event_id == id);
    let first_version = match expected {
        ExpectedVersion::Exact(v) => Some(v.advanced(1)),
        ExpectedVersion::NoStream => Some(life_start.max(StreamVersion(1))),
        ExpectedVersion::StreamExists => find(first_event.event_id)
            .filter(|s| &s.stream_id == stream)
            .map(|s| s.stream_version),
        ExpectedVersion::Any => None,
    };
    let replay = first_version.and_then(|first| {
        let mut positions = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let s = find(e.event_id)?;
            let same = &s.stream_id == stream
                && s.stream_version == first.advanced(i as u64)
                && s.event_type == e.event_type
                && s.schema_version == e.schema_version
                && s.payload == e.payload;
            if !same {
                return None;
            }
            positions.push(s.position);
        }
        Some(AppendOutcome {
            stream_version: first.advanced(events.len() as u64 - 1),
            positions,
        })
    });
    if let Some(outcome) = replay {
        return Ok(outcome);
    }
    let (event, stored) = events
        .iter()
        .find_map(|e| find(e.event_id).map(|s| (e, s)))
        .unwrap_or((first_event, first_existing));
    Err(Error::already_exists(
        "EVENT_ID_REUSED",
        format!(
            "event id {} is already stored as version {} of stream {:?}; an id may only be \
             appended again as an exact retry of the same append",
            event.event_id,
            stored.stream_version,
            stored.stream_id.as_str()
        ),
    )
    .with_detail("event_id", stored.event_id.to_string())
    .with_detail("stream", stored.stream_id.as_str())
    .with_detail("version", stored.stream_version.0))
}

/// The columns of one stored event as an adapter decoded them, before the checks and
/// conversions every adapter shares ([`assemble_recorded`]).
#[derive(Debug)]
pub struct StoredRow {
    /// Global position.
    pub position: i64,
    /// Event id.
    pub event_id: uuid::Uuid,
    /// Stream id as stored.
    pub stream: String,
    /// Stream version.
    pub version: i64,
    /// Event type.
    pub event_type: String,
    /// Schema version as stored.
    pub schema_version: i64,
    /// Payload.
    pub payload: Vec<u8>,
    /// Correlation id.
    pub correlation_id: Option<uuid::Uuid>,
    /// Causation id.
    pub causation_id: Option<uuid::Uuid>,
    /// Headers as a JSON object, if any.
    pub headers: Option<String>,
    /// When it was recorded.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// Turns decoded columns into a [`RecordedEvent`]: parses the headers, checks the stream
/// id and the schema version, and reuses `last_stream` (the previous row's stream id, one
/// shared string) while consecutive rows belong to the same stream. A value that fails is
/// `DataLoss`/`CORRUPTED_EVENT` naming stream and version.
pub fn assemble_recorded(
    row: StoredRow,
    last_stream: &mut Option<StreamId>,
) -> Result<RecordedEvent, Error> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        corrupted_event(&row.stream, row.version, format_args!("{what}: {e}"))
    };
    let headers = match &row.headers {
        None => Default::default(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| bad("headers are not a JSON object of strings", &e))?,
    };
    let stream_id = match last_stream {
        Some(last) if last.as_str() == row.stream => last.clone(),
        _ => {
            let id = StreamId::new(&row.stream).map_err(|e| bad("invalid stream id", &e))?;
            *last_stream = Some(id.clone());
            id
        }
    };
    let schema_version =
        u32::try_from(row.schema_version).map_err(|e| bad("invalid schema version", &e))?;
    let version = u64::try_from(row.version).map_err(|e| bad("negative version", &e))?;
    let position = u64::try_from(row.position).map_err(|e| bad("negative position", &e))?;
    Ok(RecordedEvent {
        event_id: EventId::from_uuid(row.event_id),
        stream_id,
        stream_version: StreamVersion(version),
        position: Position(position),
        recorded_at: row.recorded_at,
        event_type: row.event_type,
        schema_version,
        payload: bytes::Bytes::from(row.payload),
        metadata: flext_domain::EventMetadata {
            correlation_id: row
                .correlation_id
                .map(flext_domain::CorrelationId::from_uuid),
            causation_id: row.causation_id.map(flext_domain::CausationId::from_uuid),
            headers,
        },
        tags: row.tags,
    })
}

/// A version or position a SQL store read back (signed in SQL) as the `u64` flext uses:
/// a negative one, which flext never writes, is `DataLoss`/`CORRUPTED_EVENT` naming the
/// stream and what was read.
pub fn stored_number(stream: &str, what: &str, value: i64) -> Result<u64, Error> {
    u64::try_from(value)
        .map_err(|_| corrupted_event(stream, value, format_args!("negative {what} {value}")))
}

/// The `DataLoss` error for a stored event that cannot be read back.
pub fn corrupted_event(stream: &str, version: i64, what: impl std::fmt::Display) -> Error {
    Error::data_loss(
        "CORRUPTED_EVENT",
        format!("event {version} of stream {stream:?} cannot be read: {what}"),
    )
    .with_detail("stream", stream)
    .with_detail("version", version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u128, payload: &'static [u8]) -> NewEvent {
        NewEvent::new(EventId::from_uuid(uuid::Uuid::from_u128(n)), "t", payload)
    }

    fn stored(e: &NewEvent, stream: &StreamId, version: u64) -> StoredEvent {
        StoredEvent {
            event_id: e.event_id,
            stream_id: stream.clone(),
            stream_version: StreamVersion(version),
            position: Position(version * 10),
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            payload: e.payload.clone(),
        }
    }

    #[test]
    fn validation_names_each_bad_event() {
        let mut bad = ev(1, b"x");
        bad.event_type = String::new();
        let err = validate_append(&[bad, ev(2, b"y"), ev(2, b"z")]).expect_err("invalid");
        let fields: Vec<_> = err
            .field_violations()
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["events[0].event_type", "events[2].event_id"]);
        assert_eq!(
            validate_append(&[]).expect_err("empty").reason(),
            "NO_EVENTS"
        );
    }

    #[test]
    fn exact_retry_is_idempotent_and_changed_payload_is_reuse() {
        let s = StreamId::new("s").expect("valid");
        let events = [ev(1, b"a"), ev(2, b"b")];
        let existing = [stored(&events[0], &s, 4), stored(&events[1], &s, 5)];
        let expected = ExpectedVersion::Exact(StreamVersion(3));
        let ok = resolve_rejected_append(&s, expected, StreamVersion(5), &events, &existing)
            .expect("idempotent");
        assert_eq!(ok.stream_version, StreamVersion(5));
        assert_eq!(ok.positions, [Position(40), Position(50)]);

        let changed = [ev(1, b"a"), ev(2, b"B")];
        let err = resolve_rejected_append(&s, expected, StreamVersion(5), &changed, &existing)
            .expect_err("reuse");
        assert_eq!(err.reason(), "EVENT_ID_REUSED");

        let any = resolve_rejected_append(
            &s,
            ExpectedVersion::Any,
            StreamVersion(5),
            &events,
            &existing,
        )
        .expect_err("any is not idempotent");
        assert_eq!(any.code(), ErrorCode::AlreadyExists);

        let conflict = resolve_rejected_append(&s, expected, StreamVersion(7), &[ev(9, b"z")], &[])
            .expect_err("conflict");
        assert_eq!(conflict.reason(), flext_domain::WRONG_EXPECTED_VERSION);
    }

    #[test]
    fn hostile_input_to_the_shared_rules_is_a_typed_error_not_a_panic() {
        let s = StreamId::new("s").expect("stream");
        let e = resolve_rejected_append(
            &s,
            ExpectedVersion::StreamExists,
            StreamVersion(3),
            &[],
            &[],
        )
        .expect_err("no events");
        assert_eq!(e.reason(), "NO_EVENTS");
        let row = |version: i64, position: i64| StoredRow {
            position,
            event_id: uuid::Uuid::nil(),
            stream: "s".into(),
            version,
            event_type: "t".into(),
            schema_version: 1,
            payload: Vec::new(),
            correlation_id: None,
            causation_id: None,
            headers: None,
            recorded_at: chrono::DateTime::default(),
            tags: Vec::new(),
        };
        for (v, p) in [(-1, 5), (5, -1), (i64::MIN, i64::MIN)] {
            let e = assemble_recorded(row(v, p), &mut None).expect_err("negative");
            assert_eq!(e.code(), flext_domain::ErrorCode::DataLoss, "{e}");
            assert_eq!(e.reason(), "CORRUPTED_EVENT");
        }
        assert_eq!(stored_number("s", "version", 7).expect("fine"), 7);
        assert!(stored_number("s", "position", -7).is_err());
    }

    #[test]
    fn a_schema_version_beyond_what_stores_keep_is_refused_by_name() {
        let ok = ev(1, b"{}").with_schema_version(MAX_SCHEMA_VERSION);
        assert!(validate_append(&[ok]).is_ok());
        let big = ev(2, b"{}").with_schema_version(MAX_SCHEMA_VERSION + 1);
        let e = validate_append(&[ev(3, b"{}"), big]).expect_err("too big");
        assert_eq!(e.field_violations()[0].field, "events[1].schema_version");
        assert_eq!(
            e.field_violations()[0].reason,
            "SCHEMA_VERSION_OUT_OF_RANGE"
        );
    }
}

//! Dynamic consistency boundaries: reads by event type and tag across streams, and
//! appends that hold only while nothing matching a query was appended since a position.
//!
//! A decision that spans streams ("at most 30 students in a course", "a username is taken
//! once in the whole system") reads the events that matter to it with
//! [`DcbStore::read_matching`], decides, and appends with an [`AppendCondition`] built from
//! the same query and the position the read looked through: the append fails with
//! `ABORTED`/[`APPEND_CONDITION_FAILED`] when any matching event was appended since, and
//! the caller reads and decides again. No stream has to hold the whole rule.
//!
//! ```
//! use flext::ports::{AppendCondition, DcbStore, EventQuery, QueryItem};
//! use flext::{EventId, ExpectedVersion, NewEvent, Position, StreamId};
//! use flext::memory::InMemoryEventStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flext::Error> {
//! let store = InMemoryEventStore::new();
//! let taken = EventQuery::of(QueryItem::types(["user.registered"]).and_tags(["username:ada"]));
//! let page = store.read_matching(&taken, Position::START, 10).await?;
//! assert!(page.events.is_empty());
//! let register = |user: &str| {
//!     NewEvent::new(EventId::new(), "user.registered", b"{}".to_vec())
//!         .with_tag("username:ada")
//!         .with_tag(format!("user:{user}"))
//! };
//! let condition = AppendCondition::new(taken.clone(), page.through);
//! let first = StreamId::new("user-1")?;
//! store.append_if(&first, ExpectedVersion::NoStream, vec![register("1")], &condition).await?;
//! // A second registration decided on the same read fails: the name was taken since.
//! let second = StreamId::new("user-2")?;
//! let err = store
//!     .append_if(&second, ExpectedVersion::NoStream, vec![register("2")], &condition)
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.reason(), "APPEND_CONDITION_FAILED");
//! # Ok(())
//! # }
//! ```

use std::future::Future;

use flext_domain::{
    Error, ErrorCode, ExpectedVersion, FieldViolation, NewEvent, Position, RecordedEvent, StreamId,
};

use crate::AppendOutcome;
use crate::event_store::{EventStore, FilteredPage, MAX_EVENT_TYPE_LEN, tag_violations};

/// The reason of the error an [`AppendCondition`] that no longer holds gives.
pub const APPEND_CONDITION_FAILED: &str = "APPEND_CONDITION_FAILED";

/// The most items one [`EventQuery`] may have.
pub const MAX_QUERY_ITEMS: usize = 64;

/// The most event types one [`QueryItem`] may name.
pub const MAX_QUERY_TYPES: usize = 64;

/// One alternative of an [`EventQuery`]: an event matches when its type is one of
/// `types` (or `types` is empty) and it carries every tag of `tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct QueryItem {
    /// Event types, any of which matches; empty: every type.
    pub types: Vec<String>,
    /// Tags, all of which an event must carry; empty: no tag required.
    pub tags: Vec<String>,
}

impl QueryItem {
    /// Events of any of `types`.
    pub fn types<T: Into<String>>(types: impl IntoIterator<Item = T>) -> QueryItem {
        QueryItem {
            types: types.into_iter().map(Into::into).collect(),
            tags: Vec::new(),
        }
    }

    /// Events carrying every one of `tags`, of any type.
    pub fn tags<T: Into<String>>(tags: impl IntoIterator<Item = T>) -> QueryItem {
        QueryItem {
            types: Vec::new(),
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }

    /// Requires `tags` as well.
    #[must_use]
    pub fn and_tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> QueryItem {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Whether an event of `event_type` carrying `tags` matches this item.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|t| tags.contains(t))
    }

    /// Whether this item matches every event.
    pub fn is_all(&self) -> bool {
        self.types.is_empty() && self.tags.is_empty()
    }
}

/// Which events a read or an append condition is about: those matching any of its items.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventQuery {
    /// The alternatives; at least one.
    pub items: Vec<QueryItem>,
}

impl EventQuery {
    /// A query of one item.
    pub fn of(item: QueryItem) -> EventQuery {
        EventQuery { items: vec![item] }
    }

    /// Every event.
    pub fn all() -> EventQuery {
        EventQuery::of(QueryItem::default())
    }

    /// Matches what `item` matches as well.
    #[must_use]
    pub fn or(mut self, item: QueryItem) -> EventQuery {
        self.items.push(item);
        self
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.items.iter().any(|i| i.matches(event_type, tags))
    }

    /// Whether `event` matches.
    pub fn matches_event(&self, event: &RecordedEvent) -> bool {
        self.matches(&event.event_type, &event.tags)
    }

    /// Whether this query matches every event (one of its items does).
    pub fn is_all(&self) -> bool {
        self.items.iter().any(QueryItem::is_all)
    }

    /// Checks the query: 1 to [`MAX_QUERY_ITEMS`] items, each naming at most
    /// [`MAX_QUERY_TYPES`] valid event types and valid tags; `INVALID_ARGUMENT` with a
    /// field violation per problem otherwise.
    pub fn validate(&self) -> Result<(), Error> {
        let mut violations = Vec::new();
        if self.items.is_empty() || self.items.len() > MAX_QUERY_ITEMS {
            violations.push(FieldViolation::new(
                "items",
                ErrorCode::InvalidArgument,
                "INVALID_QUERY",
                format!(
                    "a query has 1 to {MAX_QUERY_ITEMS} items, not {}",
                    self.items.len()
                ),
            ));
        }
        for (i, item) in self.items.iter().enumerate() {
            if item.types.len() > MAX_QUERY_TYPES {
                violations.push(FieldViolation::new(
                    format!("items[{i}].types"),
                    ErrorCode::InvalidArgument,
                    "INVALID_QUERY",
                    format!("at most {MAX_QUERY_TYPES} types, not {}", item.types.len()),
                ));
            }
            for (j, t) in item.types.iter().enumerate() {
                if t.is_empty() || t.len() > MAX_EVENT_TYPE_LEN || t.chars().any(char::is_control) {
                    violations.push(FieldViolation::new(
                        format!("items[{i}].types[{j}]"),
                        ErrorCode::InvalidArgument,
                        "INVALID_EVENT_TYPE",
                        format!(
                            "an event type is 1 to {MAX_EVENT_TYPE_LEN} bytes without \
                             control characters"
                        ),
                    ));
                }
            }
            tag_violations(&item.tags, &format!("items[{i}].tags"), &mut violations);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(
                Error::invalid_argument("INVALID_QUERY", "the event query is invalid")
                    .with_field_violations(violations),
            )
        }
    }
}

/// "Fail if any event matching `fail_if_events_match` was appended after `after`": what
/// [`DcbStore::append_if`] checks atomically with its append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCondition {
    /// The events that would invalidate the decision.
    pub fail_if_events_match: EventQuery,
    /// The position the decision's read looked through ([`FilteredPage::through`]);
    /// [`Position::START`] for "none at all".
    pub after: Position,
}

impl AppendCondition {
    /// The condition that no event matching `query` came after `after`.
    pub fn new(query: EventQuery, after: Position) -> AppendCondition {
        AppendCondition {
            fail_if_events_match: query,
            after,
        }
    }
}

/// An event store with dynamic consistency boundaries: tagged reads across streams and
/// conditional appends. Memory, SQLite and PostgreSQL implement it, race-free: of any
/// number of concurrent appends whose conditions each match the others' events, at most
/// one succeeds.
pub trait DcbStore: EventStore {
    /// Up to `max_count` events after `after` that match `query`, in position order, and
    /// how far the read looked (gap-safe like `read_all`: no event at or before
    /// [`FilteredPage::through`] commits later). Decide on these, then append with
    /// `AppendCondition::new(query, page.through)` (or the position of the last event the
    /// decision used, when it read several pages).
    fn read_matching(
        &self,
        query: &EventQuery,
        after: Position,
        max_count: usize,
    ) -> impl Future<Output = Result<FilteredPage, Error>> + Send;

    /// Appends like [`EventStore::append`] if `condition` holds: no event matching its
    /// query has a position after its `after`. Otherwise nothing is written and the error
    /// is `ABORTED`/[`APPEND_CONDITION_FAILED`] with details `position`, `stream` and
    /// `event_type` of the first matching event: read again and decide again. An exact
    /// retry of an append that succeeded (same ids, stream, versions and payloads) returns
    /// the original outcome, like a plain append's retry, though its own events now match.
    fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> impl Future<Output = Result<AppendOutcome, Error>> + Send;
}

impl<S: DcbStore> DcbStore for std::sync::Arc<S> {
    fn read_matching(
        &self,
        query: &EventQuery,
        after: Position,
        max_count: usize,
    ) -> impl Future<Output = Result<FilteredPage, Error>> + Send {
        (**self).read_matching(query, after, max_count)
    }

    fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> impl Future<Output = Result<AppendOutcome, Error>> + Send {
        (**self).append_if(stream, expected, events, condition)
    }
}

/// The error of an append whose condition no longer holds, naming the first event that
/// matched it.
pub fn condition_failed(
    stream: &StreamId,
    condition: &AppendCondition,
    matched_position: Position,
    matched_stream: &str,
    matched_type: &str,
) -> Error {
    Error::conflict(
        APPEND_CONDITION_FAILED,
        format!(
            "the append to stream {:?} was decided on events up to position {}, and a \
             matching {matched_type:?} event was appended since (position {}, stream \
             {matched_stream:?}): read again and decide again",
            stream.as_str(),
            condition.after.0,
            matched_position.0
        ),
    )
    .with_detail("position", matched_position.0)
    .with_detail("stream", matched_stream)
    .with_detail("event_type", matched_type)
    .with_detail("after", condition.after.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_needs_one_of_its_types_and_all_of_its_tags() {
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let item = QueryItem::types(["a", "b"]).and_tags(["x", "y"]);
        assert!(item.matches("a", &tags(&["y", "x", "z"])));
        assert!(!item.matches("a", &tags(&["x"])));
        assert!(!item.matches("c", &tags(&["x", "y"])));
        assert!(QueryItem::tags(["x"]).matches("anything", &tags(&["x"])));
        assert!(EventQuery::all().matches("t", &[]));
        let q = EventQuery::of(QueryItem::types(["a"])).or(QueryItem::tags(["x"]));
        assert!(q.matches("b", &tags(&["x"])) && q.matches("a", &[]) && !q.matches("b", &[]));
    }

    #[test]
    fn a_bad_query_names_each_problem() {
        let q = EventQuery::of(QueryItem::types([""]).and_tags(["ok", "", "ok"]));
        let e = q.validate().expect_err("invalid");
        let fields: Vec<_> = e
            .field_violations()
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(
            fields,
            ["items[0].types[0]", "items[0].tags[1]", "items[0].tags[2]"]
        );
        assert!(EventQuery { items: vec![] }.validate().is_err());
        assert!(EventQuery::all().validate().is_ok());
    }
}

//! What operators read of a store beyond the event-store contract: the streams, one event
//! by id, counts and sizes, the schema's migrations. Implemented by the SQLite and
//! PostgreSQL stores for the `flext` command line and the admin console.

use std::future::Future;

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventId, Position, RecordedEvent};
use serde::{Deserialize, Serialize};

/// Which streams [`StoreInspect::list_streams`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// Only streams whose id starts with this.
    pub prefix: Option<String>,
    /// Only streams of this category: the part of the id before its first `-`
    /// (`account` for `account-0193...`).
    pub category: Option<String>,
    /// The page after this stream id (ids are listed in byte order).
    pub after: Option<String>,
    /// The most streams on the page (at least 1, at most 1,000).
    pub limit: usize,
}

impl StreamQuery {
    /// The page size kept within 1..=1,000.
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, 1_000)
    }

    /// The prefix every listed stream id has: the category's `category-` or the prefix,
    /// the longer when both are set (a store filters by it, then by [`Self::matches`]).
    pub fn effective_prefix(&self) -> Option<String> {
        let category = self.category.as_ref().map(|c| format!("{c}-"));
        match (category, self.prefix.clone()) {
            (Some(c), Some(p)) => Some(if p.len() > c.len() { p } else { c }),
            (c, p) => c.or(p),
        }
    }

    /// Whether `stream` is one the query lists (both prefix and category, when set).
    pub fn matches(&self, stream: &str) -> bool {
        self.prefix
            .as_ref()
            .is_none_or(|p| stream.starts_with(p.as_str()))
            && self
                .category
                .as_ref()
                .is_none_or(|c| stream.split_once('-').is_some_and(|(head, _)| head == c))
            && self.after.as_ref().is_none_or(|a| stream > a.as_str())
    }
}

/// One stream, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// The stream's id.
    pub stream_id: String,
    /// Its last version (its number of events).
    pub version: u64,
    /// The global position of its last event.
    pub last_position: Position,
    /// When its first event was recorded.
    pub first_recorded_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub last_recorded_at: DateTime<Utc>,
}

/// How many events of one type are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCount {
    /// The event type.
    pub event_type: String,
    /// How many are stored.
    pub events: u64,
}

/// Counts and sizes of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Events stored.
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// The position of the newest event (0 when empty).
    pub head: Position,
    /// When the newest event was recorded.
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Events per type, most first.
    pub by_type: Vec<TypeCount>,
    /// The bytes the store's tables take on disk (PostgreSQL: the `flext_` tables with
    /// their indexes; SQLite: the database file and its write-ahead log).
    pub storage_bytes: u64,
}

/// One migration of the store's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationInfo {
    /// Its number.
    pub version: i64,
    /// What it does (from its file name).
    pub description: String,
    /// Whether it has been applied to this database.
    pub applied: bool,
    /// When it was applied.
    pub applied_at: Option<DateTime<Utc>>,
}

/// What [`StoreInspect::appended_since`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Appended {
    /// How many events have a position after the one asked about.
    pub events: u64,
    /// The newest one's position (`None`: nothing after it).
    pub head: Option<Position>,
    /// When the newest one was recorded.
    pub last_recorded_at: Option<DateTime<Utc>>,
}

/// A consumer's name and when its checkpoint last moved (`None`: not since recorded).
pub type CheckpointMove = (String, Option<DateTime<Utc>>);

/// Reading a store as an operator does; implemented by the SQLite and PostgreSQL stores.
pub trait StoreInspect: Send + Sync {
    /// A page of streams in id order.
    fn list_streams(
        &self,
        query: &StreamQuery,
    ) -> impl Future<Output = Result<Vec<StreamSummary>, Error>> + Send;

    /// The event with id `id`, if stored.
    fn event_by_id(
        &self,
        id: EventId,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, Error>> + Send;

    /// Counts and sizes.
    fn stats(&self) -> impl Future<Output = Result<StoreStats, Error>> + Send;

    /// When each consumer's checkpoint last moved forward or back (`None`: not since the
    /// store recorded it), by consumer name; for stall alerts.
    fn checkpoint_moves(&self) -> impl Future<Output = Result<Vec<CheckpointMove>, Error>> + Send;

    /// The events stored after position `after`, counted with the newest one's position
    /// and time in one snapshot: what a live view polls to keep a tally, reading the
    /// position index past `after` only, where [`StoreInspect::stats`] scans the whole
    /// log.
    fn appended_since(
        &self,
        after: Position,
    ) -> impl Future<Output = Result<Appended, Error>> + Send;

    /// The store's schema migrations, applied or not, in order (a store opened without
    /// migrating shows what an upgrade would apply).
    fn migrations(&self) -> impl Future<Output = Result<Vec<MigrationInfo>, Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_category_is_the_part_before_the_first_dash() {
        let q = StreamQuery {
            category: Some("account".into()),
            ..StreamQuery::default()
        };
        assert_eq!(q.effective_prefix().as_deref(), Some("account-"));
        assert!(q.matches("account-1"));
        assert!(!q.matches("accounts-1"));
        assert!(!q.matches("account"));
        assert_eq!(StreamQuery::default().page_size(), 1);
    }
}

//! Dynamic consistency boundaries on PostgreSQL (ADR 0008).
//!
//! Race-freedom rests on transaction-scoped advisory locks, keyed by a 64-bit hash of an
//! event type or a tag:
//!
//! - every append of tagged events takes a shared lock per tag, in its append statement,
//!   before its transaction id (and so its positions) is taken;
//! - a conditional append takes, in sorted order, an exclusive lock on one tag of each
//!   condition item that requires tags, and shared locks on its own events' tags; when an
//!   item requires no tag (types only, or every event) it also locks the event table in
//!   `SHARE ROW EXCLUSIVE` mode, which waits for every transaction that appended and
//!   holds back every append until it ends. Only then does it check the condition, in a
//!   fresh snapshot, and append: every matching event that can take a position below its
//!   own is committed and seen, or waits for it.
//! - A transaction that wrote before it appends took its id, and so its positions, before
//!   those locks. After appending it looks in `flext_dcb_conditions` for a conditional
//!   append on one of its keys that committed with a later position, and if there is one
//!   refuses with the retryable `ABORTED`/`CONDITION_ORDER` (its events would sort before
//!   an event whose condition never saw them).

use flext_domain::{Error, ExpectedVersion, NewEvent, Position, StreamId};
use flext_ports::adapter::{condition_failed, stored_number, validate_append};
use flext_ports::{AppendCondition, AppendOutcome, DcbStore, EventQuery, FilteredPage};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::PgArguments;
use sqlx::{Arguments, AssertSqlSafe, PgConnection, Row};

use crate::store::{Attempt, PgEventStore, PgWriteTransaction, db_error, filtered_page, to_i64};

/// The key of a condition on every event.
const ALL_KEY: i64 = 0;

/// FNV-1a over a namespace and a name: stable across processes, versions and machines
/// (the keys meet in the database), never [`ALL_KEY`].
fn key(namespace: &[u8], name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.iter().chain([0u8].iter()).chain(name.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    match h as i64 {
        ALL_KEY => 1,
        k => k,
    }
}

fn tag_key(tag: &str) -> i64 {
    key(b"tag", tag)
}

fn type_key(event_type: &str) -> i64 {
    key(b"type", event_type)
}

/// The shared lock keys of an append: one per distinct tag of its events, sorted.
pub(crate) fn tag_keys(events: &[NewEvent]) -> Vec<i64> {
    let mut keys: Vec<i64> = events
        .iter()
        .flat_map(|e| e.tags.iter().map(|t| tag_key(t)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The keys under which a conditional append may have recorded itself that concern an
/// append of `events`: their types, their tags, and every event's.
pub(crate) fn guard_keys(events: &[NewEvent]) -> Vec<i64> {
    let mut keys = tag_keys(events);
    keys.extend(events.iter().map(|e| type_key(&e.event_type)));
    keys.push(ALL_KEY);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What a conditional append locks: exclusive keys (one per item that requires tags),
/// whether the whole table must be locked (an item without tags), and the keys it records
/// in `flext_dcb_conditions`.
struct ConditionLocks {
    exclusive: Vec<i64>,
    table: bool,
    recorded: Vec<i64>,
}

fn condition_locks(query: &EventQuery) -> ConditionLocks {
    let mut locks = ConditionLocks {
        exclusive: Vec::new(),
        table: false,
        recorded: Vec::new(),
    };
    for item in &query.items {
        if let Some(first) = item.tags.iter().min() {
            // An event matching the item carries all its tags, so it holds (shared) the
            // lock of any one of them; the smallest, so equal items pick the same key.
            let k = tag_key(first);
            locks.exclusive.push(k);
            locks.recorded.push(k);
        } else if item.types.is_empty() {
            locks.table = true;
            locks.recorded.push(ALL_KEY);
        } else {
            locks.table = true;
            locks
                .recorded
                .extend(item.types.iter().map(|t| type_key(t)));
        }
    }
    for v in [&mut locks.exclusive, &mut locks.recorded] {
        v.sort_unstable();
        v.dedup();
    }
    locks
}

/// The positions after `$after` of events matching `query`, as a WHERE clause over
/// `flext_events`, its arguments appended to `args` (after those already there).
fn matching(query: &EventQuery, args: &mut PgArguments) -> Result<String, Error> {
    let enc = |e: sqlx::error::BoxDynError| {
        Error::internal("ENCODING_FAILED", format!("a query argument: {e}"))
    };
    let mut parts = Vec::with_capacity(query.items.len());
    for item in &query.items {
        let mut conds = Vec::with_capacity(2);
        if !item.types.is_empty() {
            args.add(&item.types).map_err(enc)?;
            conds.push(format!("event_type = ANY(${})", args.len()));
        }
        if !item.tags.is_empty() {
            args.add(&item.tags).map_err(enc)?;
            conds.push(format!("tags @> ${}::text[]", args.len()));
        }
        if conds.is_empty() {
            return Ok(String::from("TRUE"));
        }
        parts.push(format!("({})", conds.join(" AND ")));
    }
    Ok(parts.join(" OR "))
}

const EVENT_COLUMNS: &str = "position, event_id, stream_id, version, event_type, \
                             schema_version, payload, correlation_id, causation_id, headers, \
                             recorded_at, tags";

/// Takes the advisory locks `exclusive` and `shared` (sorted together, exclusive where a
/// key is in both), then the table lock if asked.
async fn lock(
    conn: &mut PgConnection,
    exclusive: &[i64],
    shared: &[i64],
    table: bool,
) -> Result<(), Error> {
    let mut keys: Vec<(i64, bool)> = exclusive
        .iter()
        .map(|k| (*k, true))
        .chain(
            shared
                .iter()
                .filter(|k| !exclusive.contains(k))
                .map(|k| (*k, false)),
        )
        .collect();
    keys.sort_unstable();
    let (ks, xs): (Vec<i64>, Vec<bool>) = keys.into_iter().unzip();
    // Volatile output expressions are computed after the sort: the locks are taken in
    // key order, so two conditional appends cannot deadlock on them.
    sqlx::query(
        "SELECT CASE WHEN x THEN pg_advisory_xact_lock(k)::text \
                ELSE pg_advisory_xact_lock_shared(k)::text END \
         FROM unnest($1::bigint[], $2::bool[]) AS u(k, x) ORDER BY k",
    )
    .bind(&ks)
    .bind(&xs)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error("taking an append condition's locks", e))?;
    if table {
        sqlx::query("LOCK TABLE flext_events IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("locking the events for an append condition", e))?;
    }
    Ok(())
}

/// The first committed event after the condition's position that matches it.
async fn first_match(
    conn: &mut PgConnection,
    condition: &AppendCondition,
) -> Result<Option<(i64, String, String)>, Error> {
    let mut args = PgArguments::default();
    args.add(to_i64(condition.after.0))
        .map_err(|e| Error::internal("ENCODING_FAILED", format!("a position: {e}")))?;
    let filter = matching(&condition.fail_if_events_match, &mut args)?;
    let sql = format!(
        "SELECT position, stream_id, event_type FROM flext_events \
         WHERE position > $1 AND ({filter}) ORDER BY position LIMIT 1"
    );
    let row = sqlx::query_with(AssertSqlSafe(sql), args)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_error("checking an append condition", e))?;
    row.map(|r| {
        Ok((
            r.try_get::<i64, _>(0)?,
            r.try_get::<String, _>(1)?,
            r.try_get::<String, _>(2)?,
        ))
    })
    .transpose()
    .map_err(|e: sqlx::Error| db_error("checking an append condition", e))
}

/// After an append in a transaction that may have taken its id before the append's
/// locks: the retryable refusal when a conditional append on one of `keys` committed with
/// a position after `first` (see the module docs).
pub(crate) async fn order_guard(
    conn: &mut PgConnection,
    stream: &StreamId,
    keys: &[i64],
    first: Position,
) -> Result<(), Error> {
    let later: Option<i64> = sqlx::query_scalar(
        "SELECT max(position) FROM flext_dcb_conditions WHERE key = ANY($1) AND position > $2",
    )
    .bind(keys)
    .bind(to_i64(first.0))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("checking the order of conditional appends", e))?;
    match later {
        None => Ok(()),
        Some(p) => Err(Error::conflict(
            "CONDITION_ORDER",
            format!(
                "this transaction took its place in the global order before a conditional \
                 append (position {p}) that concerns the same event types or tags committed; \
                 appending to stream {:?} now would put events that append's condition never \
                 saw before it: roll the transaction back and retry it",
                stream.as_str()
            ),
        )
        .with_detail("stream", stream.as_str())
        .with_detail("position", p)),
    }
}

impl PgWriteTransaction {
    /// Appends within this transaction if `condition` holds, with the rules of
    /// [`DcbStore::append_if`]. Takes the condition's locks first (held until this
    /// transaction ends): commit soon. A failed condition leaves the transaction usable.
    pub async fn append_if(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> Result<AppendOutcome, Error> {
        validate_append(&events)?;
        let query = &condition.fail_if_events_match;
        query.validate()?;
        let locks = condition_locks(query);
        lock(
            self.connection(),
            &locks.exclusive,
            &tag_keys(&events),
            locks.table,
        )
        .await?;
        if let Some((position, matched_stream, event_type)) =
            first_match(self.connection(), condition).await?
        {
            // An exact retry of an append that succeeded matches its own condition: with
            // its ids stored the plain append recognises it (and refuses anything else)
            // without writing.
            if !self.ids_stored(&events).await? {
                return Err(condition_failed(
                    stream,
                    condition,
                    Position(stored_number(&matched_stream, "position", position)?),
                    &matched_stream,
                    &event_type,
                ));
            }
            return self.append(stream, expected, events).await;
        }
        let out = self.append(stream, expected, events).await?;
        record(self.connection(), &locks.recorded, &out).await?;
        Ok(out)
    }

    async fn ids_stored(&mut self, events: &[NewEvent]) -> Result<bool, Error> {
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id.as_uuid()).collect();
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM flext_events WHERE event_id = ANY($1))")
            .bind(&ids)
            .fetch_one(self.connection())
            .await
            .map_err(|e| db_error("looking up event ids", e))
    }
}

impl DcbStore for PgEventStore {
    /// Two statements, like `read_all_of_types`: the gap-safe horizon with the last event
    /// under it, then the matches under that horizon.
    async fn read_matching(
        &self,
        query: &EventQuery,
        after: Position,
        max_count: usize,
    ) -> Result<FilteredPage, Error> {
        query.validate()?;
        let read = async move {
            let (horizon, below): (i64, Option<i64>) = sqlx::query_as(
                "SELECT s.h, (SELECT max(position) FROM flext_events \
                 WHERE position > $1 AND position < s.h) \
                 FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 AS h) s",
            )
            .bind(to_i64(after.0))
            .fetch_one(self.pool())
            .await
            .map_err(|e| db_error("reading the gap-safe horizon", e))?;
            let enc = |e: sqlx::error::BoxDynError| {
                Error::internal("ENCODING_FAILED", format!("a query argument: {e}"))
            };
            let mut args = PgArguments::default();
            args.add(to_i64(after.0)).map_err(enc)?;
            args.add(horizon).map_err(enc)?;
            args.add(i64::try_from(max_count).unwrap_or(i64::MAX))
                .map_err(enc)?;
            let filter = matching(query, &mut args)?;
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM flext_events \
                 WHERE position > $1 AND position < $2 AND ({filter}) \
                 ORDER BY position LIMIT $3"
            );
            let rows = sqlx::query_with(AssertSqlSafe(sql), args)
                .fetch_all(self.pool())
                .await
                .map_err(|e| db_error("reading events by tag", e))?;
            filtered_page(&rows, max_count, after, below)
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
        let query = &condition.fail_if_events_match;
        query.validate()?;
        let op = self.telemetry.append(stream, &events);
        op.append(async move {
            // The transaction's id is taken by the append, after the locks: no order
            // guard and no savepoint needed (a refusal rolls the whole transaction back).
            let locks = condition_locks(query);
            let mut tx = self.transaction().await?;
            lock(
                tx.connection(),
                &locks.exclusive,
                &tag_keys(&events),
                locks.table,
            )
            .await?;
            if let Some(matched) = first_match(tx.connection(), condition).await? {
                tx.rollback().await?;
                return self
                    .refused_condition(stream, expected, events, condition, matched)
                    .await;
            }
            let attempt = self
                .try_append(&mut tx.conn, stream, expected, events, 0, false)
                .await;
            match attempt {
                Ok(Attempt::Done(out)) => {
                    tx.appended += out.positions.len();
                    record(tx.connection(), &locks.recorded, &out).await?;
                    tx.commit().await?;
                    if RECORDED.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
                        // Housekeeping only: a failure leaves rows for the next round.
                        let _ = self.purge_dcb_conditions().await;
                    }
                    Ok(out)
                }
                Ok(Attempt::Refused(events)) => {
                    tx.rollback().await?;
                    self.resolve(stream, expected, &events).await
                }
                Err(e) => Err(e),
            }
        })
        .await
    }
}

/// Conditional appends recorded by this process, to purge every [`PURGE_EVERY`].
static RECORDED: AtomicU64 = AtomicU64::new(0);

/// How many conditional appends pass between purges of `flext_dcb_conditions`.
const PURGE_EVERY: u64 = 1_024;

impl PgEventStore {
    /// Removes the records of conditional appends that no transaction can still need: those
    /// below the gap-safe horizon (every running transaction's positions lie above them,
    /// so the order guard cannot fire on them). Runs on its own after every 1,024
    /// conditional appends of a process; returns how many were removed.
    pub async fn purge_dcb_conditions(&self) -> Result<u64, Error> {
        sqlx::query(
            "DELETE FROM flext_dcb_conditions \
             WHERE position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)",
        )
        .execute(self.pool())
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| db_error("purging conditional append records", e))
    }

    /// A failed condition: the original outcome when this is an exact retry of an append
    /// that succeeded (its ids are stored), the condition's error otherwise.
    async fn refused_condition(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
        (position, matched_stream, event_type): (i64, String, String),
    ) -> Result<AppendOutcome, Error> {
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id.as_uuid()).collect();
        let stored: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM flext_events WHERE event_id = ANY($1))",
        )
        .bind(&ids)
        .fetch_one(self.pool())
        .await
        .map_err(|e| db_error("looking up event ids", e))?;
        if stored {
            return self.resolve(stream, expected, &events).await;
        }
        Err(condition_failed(
            stream,
            condition,
            Position(stored_number(&matched_stream, "position", position)?),
            &matched_stream,
            &event_type,
        ))
    }
}

/// Records a committed conditional append under its keys, for the order guard.
async fn record(conn: &mut PgConnection, keys: &[i64], out: &AppendOutcome) -> Result<(), Error> {
    let first = out.positions.first().map_or(0, |p| to_i64(p.0));
    sqlx::query(
        "INSERT INTO flext_dcb_conditions (key, position) SELECT k, $2 FROM unnest($1::bigint[]) k \
         ON CONFLICT ON CONSTRAINT flext_dcb_conditions_pkey DO UPDATE SET position = greatest(flext_dcb_conditions.position, \
         excluded.position)",
    )
    .bind(keys)
    .bind(first)
    .execute(conn)
    .await
    .map(|_| ())
    .map_err(|e| db_error("recording a conditional append", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_never_the_all_key() {
        // Fixed values: processes of different builds must meet on the same keys.
        assert_eq!(tag_key("course:1"), tag_key("course:1"));
        assert_ne!(tag_key("course:1"), type_key("course:1"));
        assert_eq!(key(b"tag", "a"), 6_630_926_107_540_143_896);
        let e = NewEvent::new(flext_domain::EventId::new(), "t", Vec::new()).with_tags(["b", "a"]);
        let keys = guard_keys(&[e]);
        assert!(keys.windows(2).all(|w| w[0] < w[1]) && keys.contains(&ALL_KEY));
    }
}

//! Dynamic consistency boundaries on SQLite: tagged reads through `flext_event_tags`, and
//! conditions checked in the writer's transaction, where nothing else can append.

use flext_domain::{Error, ExpectedVersion, NewEvent, Position, StreamId};
use flext_ports::adapter::{condition_failed, stored_number, validate_append};
use flext_ports::{AppendCondition, AppendOutcome, DcbStore, EventQuery, FilteredPage};
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Row, SqliteConnection};

use crate::store::{
    SqliteEventStore, SqliteWriteTransaction, db_error, filtered_page, stored_with_ids, to_i64,
};

/// The positions in `(after, head]` of events matching `query`, as a subquery, with its
/// arguments appended to `args`. An item with tags starts from the tag index (one
/// `INTERSECT` per further tag) and filters by type through the primary key; an item
/// of types only scans the range.
fn matching_positions(
    query: &EventQuery,
    after: i64,
    head: i64,
    args: &mut SqliteArguments,
) -> Result<String, Error> {
    let enc = |e: sqlx::error::BoxDynError| {
        Error::internal("ENCODING_FAILED", format!("a query argument: {e}"))
    };
    let mut parts = Vec::with_capacity(query.items.len());
    for item in &query.items {
        let mut sql = if item.tags.is_empty() {
            args.add(after).map_err(enc)?;
            args.add(head).map_err(enc)?;
            String::from("SELECT position FROM flext_events WHERE position > ? AND position <= ?")
        } else {
            for tag in &item.tags {
                args.add(tag.clone()).map_err(enc)?;
                args.add(after).map_err(enc)?;
                args.add(head).map_err(enc)?;
            }
            let tagged = vec![
                "SELECT position FROM flext_event_tags WHERE tag = ? AND position > ? \
                 AND position <= ?";
                item.tags.len()
            ]
            .join(" INTERSECT ");
            if item.types.is_empty() {
                format!("SELECT position FROM ({tagged})")
            } else {
                format!("SELECT position FROM flext_events WHERE position IN ({tagged})")
            }
        };
        if !item.types.is_empty() {
            let json = serde_json::to_string(&item.types)
                .map_err(|e| Error::internal("ENCODING_FAILED", format!("event types: {e}")))?;
            args.add(json).map_err(enc)?;
            sql.push_str(" AND event_type IN (SELECT value FROM json_each(?))");
        }
        parts.push(sql);
    }
    Ok(parts.join(" UNION "))
}

const EVENT_COLUMNS: &str = "position, event_id, stream_id, version, event_type, \
                             schema_version, payload, correlation_id, causation_id, headers, \
                             recorded_at, tags";

/// The first committed event after the condition's position that matches it, on `conn`
/// (the writer's transaction, so nothing can append between this and the append).
async fn first_match(
    conn: &mut SqliteConnection,
    condition: &AppendCondition,
) -> Result<Option<(i64, String, String)>, Error> {
    let mut args = SqliteArguments::default();
    let positions = matching_positions(
        &condition.fail_if_events_match,
        to_i64(condition.after.0),
        i64::MAX,
        &mut args,
    )?;
    let sql = format!(
        "SELECT position, stream_id, event_type FROM flext_events \
         WHERE position IN ({positions}) ORDER BY position LIMIT 1"
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

impl SqliteWriteTransaction {
    /// Appends within this transaction if `condition` holds, with the rules of
    /// [`DcbStore::append_if`]: the check and the append run under the file's write lock,
    /// so nothing can append between them.
    pub async fn append_if(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        condition: &AppendCondition,
    ) -> Result<AppendOutcome, Error> {
        validate_append(&events)?;
        condition.fail_if_events_match.validate()?;
        if let Some((position, matched_stream, event_type)) =
            first_match(self.connection(), condition).await?
        {
            // An exact retry of an append that succeeded matches its own condition: with
            // its ids stored the plain append recognises it (and refuses anything else)
            // without writing.
            if stored_with_ids(self.connection(), &events)
                .await?
                .is_empty()
            {
                return Err(condition_failed(
                    stream,
                    condition,
                    Position(stored_number(&matched_stream, "position", position)?),
                    &matched_stream,
                    &event_type,
                ));
            }
        }
        self.append(stream, expected, events).await
    }
}

impl DcbStore for SqliteEventStore {
    /// The head first, then the matches up to it (positions are given in commit order,
    /// so every event at or before a head once read is committed).
    async fn read_matching(
        &self,
        query: &EventQuery,
        after: Position,
        max_count: usize,
    ) -> Result<FilteredPage, Error> {
        query.validate()?;
        let read = async move {
            let head: i64 =
                sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM flext_events")
                    .fetch_one(self.reader_pool())
                    .await
                    .map_err(|e| db_error("reading the head", e))?;
            let mut args = SqliteArguments::default();
            let positions = matching_positions(query, to_i64(after.0), head, &mut args)?;
            args.add(i64::try_from(max_count).unwrap_or(i64::MAX))
                .map_err(|e| Error::internal("ENCODING_FAILED", format!("a limit: {e}")))?;
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM flext_events WHERE position IN ({positions}) \
                 ORDER BY position LIMIT ?"
            );
            let rows = sqlx::query_with(AssertSqlSafe(sql), args)
                .fetch_all(self.reader_pool())
                .await
                .map_err(|e| db_error("reading events by tag", e))?;
            filtered_page(&rows, max_count, after, head)
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
        let op = self.telemetry.append(stream, &events);
        op.append(async move {
            let mut tx = self.transaction().await?;
            let out = tx.append_if(stream, expected, events, condition).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }
}

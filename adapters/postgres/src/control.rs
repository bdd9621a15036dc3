//! Control requests, pauses and what operators read of a PostgreSQL store.
//!
//! A request or outcome is announced on the consumers' notification channel, so the owner
//! (and an operator waiting for the outcome) hears of it at once in any process.

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventId, Position, RecordedEvent};
use flext_ports::adapter::{assemble_control, stored_outcome, unknown_dead_letter};
use flext_ports::{
    Appended, ControlAction, ControlRequest, ControlStore, DeadLetterEdit, MigrationInfo,
    StoreInspect, StoreStats, StreamQuery, StreamSummary, TypeCount,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::store::{PgEventStore, db_error, decode_row, migrator, to_i64};

const CONTROL_COLUMNS: &str = "id, consumer, action, requested_by, requested_at, state, \
                               taken_by, finished_at, result, error";

fn decode_control(row: &PgRow) -> Result<ControlRequest, Error> {
    let bad = |e: sqlx::Error| {
        Error::data_loss(
            "CORRUPTED_CONTROL_REQUEST",
            format!("a stored control request cannot be read: {e}"),
        )
    };
    let action: String = row.try_get(2).map_err(bad)?;
    let state: String = row.try_get(5).map_err(bad)?;
    let result: Option<String> = row.try_get(8).map_err(bad)?;
    let error: Option<String> = row.try_get(9).map_err(bad)?;
    assemble_control(
        row.try_get(0).map_err(bad)?,
        row.try_get(1).map_err(bad)?,
        &action,
        row.try_get(3).map_err(bad)?,
        row.try_get(4).map_err(bad)?,
        &state,
        row.try_get(6).map_err(bad)?,
        row.try_get(7).map_err(bad)?,
        result.as_deref(),
        error.as_deref(),
    )
}

impl ControlStore for PgEventStore {
    async fn request_control(
        &self,
        consumer: &str,
        action: &ControlAction,
        requested_by: &str,
    ) -> Result<ControlRequest, Error> {
        let action_json = serde_json::to_string(action).map_err(|e| {
            Error::internal(
                "CONTROL_UNSERIALIZABLE",
                "a control action did not serialize",
            )
            .with_source(e)
        })?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO flext_control (id, consumer, action, requested_by, requested_at, state) \
             VALUES ($1, $2, $3, $4, clock_timestamp(), 'pending') RETURNING {CONTROL_COLUMNS}"
        )))
        .bind(Uuid::now_v7())
        .bind(consumer)
        .bind(action_json)
        .bind(requested_by)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_error("storing a control request", e))?;
        self.notifications.consumers_changed();
        decode_control(&row)
    }

    async fn pending_controls(&self) -> Result<Vec<ControlRequest>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONTROL_COLUMNS} FROM flext_control WHERE state = 'pending' \
             ORDER BY requested_at, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing control requests", e))?;
        rows.iter().map(decode_control).collect()
    }

    async fn take_control(&self, id: Uuid, taken_by: &str) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE flext_control SET state = 'running', taken_by = $2 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(taken_by)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("taking a control request", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_controls(&self, consumer: &str, owner: &str) -> Result<u64, Error> {
        let done = sqlx::query(
            "UPDATE flext_control SET state = 'pending', taken_by = NULL \
             WHERE consumer = $1 AND state = 'running' AND taken_by IS DISTINCT FROM $2",
        )
        .bind(consumer)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("requeueing control requests", e))?;
        Ok(done.rows_affected())
    }

    async fn finish_control(
        &self,
        id: Uuid,
        outcome: Result<serde_json::Value, Error>,
    ) -> Result<(), Error> {
        let (state, result, error) = stored_outcome(&outcome);
        sqlx::query(
            "UPDATE flext_control SET state = $2, result = $3, error = $4, \
             finished_at = clock_timestamp() WHERE id = $1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(result)
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("finishing a control request", e))?;
        self.notifications.consumers_changed();
        Ok(())
    }

    async fn control_request(&self, id: Uuid) -> Result<Option<ControlRequest>, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONTROL_COLUMNS} FROM flext_control WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("reading a control request", e))?;
        row.as_ref().map(decode_control).transpose()
    }

    async fn set_paused(&self, consumer: &str, paused: bool, by: &str) -> Result<(), Error> {
        let q = if paused {
            sqlx::query(
                "INSERT INTO flext_consumer_pauses (consumer, paused_by, paused_at) \
                 VALUES ($1, $2, clock_timestamp()) ON CONFLICT ON CONSTRAINT flext_consumer_pauses_pkey DO NOTHING",
            )
            .bind(consumer)
            .bind(by)
        } else {
            sqlx::query("DELETE FROM flext_consumer_pauses WHERE consumer = $1").bind(consumer)
        };
        q.execute(&self.pool)
            .await
            .map_err(|e| db_error("pausing a consumer", e))?;
        self.notifications.consumers_changed();
        Ok(())
    }

    async fn paused_consumers(&self) -> Result<Vec<String>, Error> {
        sqlx::query_scalar("SELECT consumer FROM flext_consumer_pauses ORDER BY consumer")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("listing paused consumers", e))
    }

    async fn discard_dead_letter(&self, consumer: &str, event_id: EventId) -> Result<bool, Error> {
        let done =
            sqlx::query("DELETE FROM flext_dead_letters WHERE projection = $1 AND event_id = $2")
                .bind(consumer)
                .bind(event_id.as_uuid())
                .execute(&self.pool)
                .await
                .map_err(|e| db_error("discarding a dead letter", e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn edit_dead_letter(
        &self,
        consumer: &str,
        event_id: EventId,
        payload: &[u8],
        by: &str,
    ) -> Result<(), Error> {
        let done = sqlx::query(
            "INSERT INTO flext_dead_letter_edits (projection, event_id, payload, edited_by, edited_at) \
             SELECT $1, $2, $3, $4, clock_timestamp() WHERE EXISTS (SELECT 1 FROM flext_dead_letters \
             WHERE projection = $1 AND event_id = $2)",
        )
        .bind(consumer)
        .bind(event_id.as_uuid())
        .bind(payload)
        .bind(by)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("fixing a dead letter's payload", e))?;
        if done.rows_affected() == 0 {
            return Err(unknown_dead_letter(consumer, event_id));
        }
        Ok(())
    }

    async fn dead_letter_edit(
        &self,
        consumer: &str,
        event_id: EventId,
    ) -> Result<Option<DeadLetterEdit>, Error> {
        let row: Option<(Vec<u8>, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT payload, edited_by, edited_at FROM flext_dead_letter_edits \
             WHERE projection = $1 AND event_id = $2 ORDER BY edited_at DESC LIMIT 1",
        )
        .bind(consumer)
        .bind(event_id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("reading a dead letter's fixed payload", e))?;
        Ok(row.map(|(payload, edited_by, edited_at)| DeadLetterEdit {
            payload,
            edited_by,
            edited_at,
        }))
    }

    async fn mark_personal(&self, event_type: &str, fields: &[&str]) -> Result<(), Error> {
        let fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        sqlx::query(
            "INSERT INTO flext_personal_fields (event_type, field) \
             SELECT $1, f FROM unnest($2::text[]) AS f ON CONFLICT DO NOTHING",
        )
        .bind(event_type)
        .bind(fields)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("marking personal fields", e))?;
        Ok(())
    }

    async fn personal_fields(&self) -> Result<Vec<(String, String)>, Error> {
        sqlx::query_as("SELECT event_type, field FROM flext_personal_fields ORDER BY 1, 2")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("listing personal fields", e))
    }
}

impl StoreInspect for PgEventStore {
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, Error> {
        let prefix = query.effective_prefix();
        let lower = match (&query.after, &prefix) {
            (Some(a), Some(p)) => Some(a.clone().max(p.clone())),
            (a, p) => a.clone().or_else(|| p.clone()),
        };
        // Byte order (COLLATE "C"), as SQLite and the cursor compare; starts_with is exact.
        let rows = sqlx::query(
            "SELECT stream_id, max(version), max(position), min(recorded_at), max(recorded_at) \
             FROM flext_events \
             WHERE ($1::text IS NULL OR stream_id COLLATE \"C\" >= $1) \
               AND ($2::text IS NULL OR stream_id COLLATE \"C\" > $2) \
               AND ($3::text IS NULL OR starts_with(stream_id, $3)) \
             GROUP BY stream_id ORDER BY stream_id COLLATE \"C\" LIMIT $4",
        )
        .bind(lower)
        .bind(query.after.as_deref())
        .bind(prefix.as_deref())
        .bind(to_i64(query.page_size() as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing streams", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let bad = |e: sqlx::Error| {
                Error::data_loss(
                    "CORRUPTED_EVENT",
                    format!("a stream's summary cannot be read: {e}"),
                )
            };
            let stream_id: String = r.try_get(0).map_err(bad)?;
            if !query.matches(&stream_id) {
                continue;
            }
            out.push(StreamSummary {
                stream_id,
                version: r.try_get::<i64, _>(1).map_err(bad)?.max(0) as u64,
                last_position: Position(r.try_get::<i64, _>(2).map_err(bad)?.max(0) as u64),
                first_recorded_at: r.try_get(3).map_err(bad)?,
                last_recorded_at: r.try_get(4).map_err(bad)?,
            });
        }
        Ok(out)
    }

    async fn event_by_id(&self, id: EventId) -> Result<Option<RecordedEvent>, Error> {
        let row = sqlx::query(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
             correlation_id, causation_id, headers, recorded_at, tags FROM flext_events \
             WHERE event_id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("reading an event", e))?;
        row.as_ref().map(|r| decode_row(r, &mut None)).transpose()
    }

    async fn stats(&self) -> Result<StoreStats, Error> {
        let (events, streams, head, last): (i64, i64, Option<i64>, Option<DateTime<Utc>>) =
            sqlx::query_as(
                "SELECT count(*), count(DISTINCT stream_id), max(position), max(recorded_at) \
                 FROM flext_events",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("counting events", e))?;
        let types: Vec<(String, i64)> = sqlx::query_as(
            "SELECT event_type, count(*) AS n FROM flext_events GROUP BY event_type \
             ORDER BY n DESC, event_type",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("counting events by type", e))?;
        let bytes: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND c.relname LIKE 'flext\\_%' \
               AND n.nspname = current_schema()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_error("measuring the tables", e))?;
        Ok(StoreStats {
            events: events.max(0) as u64,
            streams: streams.max(0) as u64,
            head: Position(head.unwrap_or(0).max(0) as u64),
            last_recorded_at: last,
            by_type: types
                .into_iter()
                .map(|(event_type, n)| TypeCount {
                    event_type,
                    events: n.max(0) as u64,
                })
                .collect(),
            storage_bytes: bytes.max(0) as u64,
        })
    }

    async fn appended_since(&self, after: Position) -> Result<Appended, Error> {
        // One statement: the count and the newest event come from one snapshot.
        let (events, head, last): (i64, Option<i64>, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), max(position), max(recorded_at) FROM flext_events \
             WHERE position > $1",
        )
        .bind(i64::try_from(after.get()).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_error("counting the newest events", e))?;
        Ok(Appended {
            events: events.max(0) as u64,
            head: head.map(|p| Position(p.max(0) as u64)),
            last_recorded_at: last,
        })
    }

    async fn checkpoint_moves(&self) -> Result<Vec<flext_ports::CheckpointMove>, Error> {
        sqlx::query_as("SELECT name, moved_at FROM flext_checkpoints ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("reading checkpoints", e))
    }

    async fn migrations(&self) -> Result<Vec<MigrationInfo>, Error> {
        let applied = self.applied_versions().await?;
        Ok(migrator()
            .iter()
            .map(|m| {
                let at = applied
                    .iter()
                    .find(|(v, _)| *v == m.version)
                    .map(|(_, t)| *t);
                MigrationInfo {
                    version: m.version,
                    description: m.description.to_string(),
                    applied: at.is_some(),
                    applied_at: at,
                }
            })
            .collect())
    }
}

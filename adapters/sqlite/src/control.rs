//! Control requests, pauses and what operators read of a SQLite store.
//!
//! SQLite cannot tell another process of a write: owners poll for pending requests
//! (the projection runner does every `control_poll`), and this process's own watchers
//! are pulsed on the consumers' signal.

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventId, Position, RecordedEvent};
use flext_ports::adapter::{assemble_control, stored_outcome, unknown_dead_letter};
use flext_ports::{
    Appended, ControlAction, ControlRequest, ControlState, ControlStore, DeadLetterEdit,
    MigrationInfo, StoreInspect, StoreStats, StreamQuery, StreamSummary, TypeCount,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::store::{SqliteEventStore, db_error, decode_row, migrator, to_i64};

const CONTROL_COLUMNS: &str = "id, consumer, action, requested_by, requested_at, state, \
                               taken_by, finished_at, result, error";

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn decode_control(row: &SqliteRow) -> Result<ControlRequest, Error> {
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
        time(row.try_get(4).map_err(bad)?),
        &state,
        row.try_get(6).map_err(bad)?,
        row.try_get::<Option<i64>, _>(7).map_err(bad)?.map(time),
        result.as_deref(),
        error.as_deref(),
    )
}

impl ControlStore for SqliteEventStore {
    async fn request_control(
        &self,
        consumer: &str,
        action: &ControlAction,
        requested_by: &str,
    ) -> Result<ControlRequest, Error> {
        let request = ControlRequest {
            id: Uuid::now_v7(),
            consumer: consumer.to_owned(),
            action: action.clone(),
            requested_by: requested_by.to_owned(),
            requested_at: self.clock.now(),
            state: ControlState::Pending,
            taken_by: None,
            finished_at: None,
            result: None,
            error: None,
        };
        let action_json = serde_json::to_string(action).map_err(|e| {
            Error::internal(
                "CONTROL_UNSERIALIZABLE",
                "a control action did not serialize",
            )
            .with_source(e)
        })?;
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query(
            "INSERT INTO flext_control (id, consumer, action, requested_by, requested_at, state) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
        )
        .bind(request.id)
        .bind(consumer)
        .bind(action_json)
        .bind(requested_by)
        .bind(request.requested_at.timestamp_micros())
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("storing a control request", e))?;
        drop(writer);
        self.consumers_changed.pulse();
        Ok(request)
    }

    async fn pending_controls(&self) -> Result<Vec<ControlRequest>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONTROL_COLUMNS} FROM flext_control WHERE state = 'pending' \
             ORDER BY requested_at, id"
        )))
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("listing control requests", e))?;
        rows.iter().map(decode_control).collect()
    }

    async fn take_control(&self, id: Uuid, taken_by: &str) -> Result<bool, Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let done = sqlx::query(
            "UPDATE flext_control SET state = 'running', taken_by = ?2 \
             WHERE id = ?1 AND state = 'pending'",
        )
        .bind(id)
        .bind(taken_by)
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("taking a control request", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_controls(&self, consumer: &str, owner: &str) -> Result<u64, Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let done = sqlx::query(
            "UPDATE flext_control SET state = 'pending', taken_by = NULL \
             WHERE consumer = ?1 AND state = 'running' AND taken_by IS NOT ?2",
        )
        .bind(consumer)
        .bind(owner)
        .execute(&mut writer.conn)
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
        let now = self.clock.now().timestamp_micros();
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query(
            "UPDATE flext_control SET state = ?2, result = ?3, error = ?4, finished_at = ?5 \
             WHERE id = ?1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(result)
        .bind(error)
        .bind(now)
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("finishing a control request", e))?;
        drop(writer);
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn control_request(&self, id: Uuid) -> Result<Option<ControlRequest>, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONTROL_COLUMNS} FROM flext_control WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| db_error("reading a control request", e))?;
        row.as_ref().map(decode_control).transpose()
    }

    async fn set_paused(&self, consumer: &str, paused: bool, by: &str) -> Result<(), Error> {
        let now = self.clock.now().timestamp_micros();
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let q = if paused {
            sqlx::query(
                "INSERT INTO flext_consumer_pauses (consumer, paused_by, paused_at) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (consumer) DO NOTHING",
            )
            .bind(consumer)
            .bind(by)
            .bind(now)
        } else {
            sqlx::query("DELETE FROM flext_consumer_pauses WHERE consumer = ?").bind(consumer)
        };
        q.execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("pausing a consumer", e))?;
        drop(writer);
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn paused_consumers(&self) -> Result<Vec<String>, Error> {
        sqlx::query_scalar("SELECT consumer FROM flext_consumer_pauses ORDER BY consumer")
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error("listing paused consumers", e))
    }

    async fn discard_dead_letter(&self, consumer: &str, event_id: EventId) -> Result<bool, Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let done =
            sqlx::query("DELETE FROM flext_dead_letters WHERE projection = ?1 AND event_id = ?2")
                .bind(consumer)
                .bind(event_id.as_uuid())
                .execute(&mut writer.conn)
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
        let now = self.clock.now().timestamp_micros();
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let done = sqlx::query(
            "INSERT INTO flext_dead_letter_edits (projection, event_id, payload, edited_by, edited_at) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM flext_dead_letters \
             WHERE projection = ?1 AND event_id = ?2)",
        )
        .bind(consumer)
        .bind(event_id.as_uuid())
        .bind(payload)
        .bind(by)
        .bind(now)
        .execute(&mut writer.conn)
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
        let row: Option<(Vec<u8>, String, i64)> = sqlx::query_as(
            "SELECT payload, edited_by, edited_at FROM flext_dead_letter_edits \
             WHERE projection = ?1 AND event_id = ?2 ORDER BY edited_at DESC LIMIT 1",
        )
        .bind(consumer)
        .bind(event_id.as_uuid())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| db_error("reading a dead letter's fixed payload", e))?;
        Ok(row.map(|(payload, edited_by, at)| DeadLetterEdit {
            payload,
            edited_by,
            edited_at: time(at),
        }))
    }

    async fn mark_personal(&self, event_type: &str, fields: &[&str]) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        for field in fields {
            sqlx::query(
                "INSERT INTO flext_personal_fields (event_type, field) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(event_type)
            .bind(*field)
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("marking personal fields", e))?;
        }
        Ok(())
    }

    async fn personal_fields(&self) -> Result<Vec<(String, String)>, Error> {
        sqlx::query_as("SELECT event_type, field FROM flext_personal_fields ORDER BY 1, 2")
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error("listing personal fields", e))
    }
}

impl StoreInspect for SqliteEventStore {
    async fn list_streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, Error> {
        let prefix = query.effective_prefix();
        // The lower bound: past the cursor and at or after the prefix (both use the
        // (stream_id, version) key); the prefix itself is checked exactly, not by LIKE
        // (which SQLite compares without case).
        let lower = match (&query.after, &prefix) {
            (Some(a), Some(p)) => Some(a.clone().max(p.clone())),
            (a, p) => a.clone().or_else(|| p.clone()),
        };
        let rows = sqlx::query(
            "SELECT stream_id, max(version), max(position), min(recorded_at), max(recorded_at) \
             FROM flext_events \
             WHERE (?1 IS NULL OR stream_id >= ?1) AND (?2 IS NULL OR stream_id > ?2) \
               AND (?3 IS NULL OR substr(stream_id, 1, length(?3)) = ?3) \
             GROUP BY stream_id ORDER BY stream_id LIMIT ?4",
        )
        .bind(lower)
        .bind(query.after.as_deref())
        .bind(prefix.as_deref())
        .bind(to_i64(query.page_size() as u64))
        .fetch_all(&self.readers)
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
                first_recorded_at: time(r.try_get(3).map_err(bad)?),
                last_recorded_at: time(r.try_get(4).map_err(bad)?),
            });
        }
        Ok(out)
    }

    async fn event_by_id(&self, id: EventId) -> Result<Option<RecordedEvent>, Error> {
        let row = sqlx::query(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
             correlation_id, causation_id, headers, recorded_at, tags FROM flext_events \
             WHERE event_id = ?",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| db_error("reading an event", e))?;
        row.as_ref().map(|r| decode_row(r, &mut None)).transpose()
    }

    async fn stats(&self) -> Result<StoreStats, Error> {
        let (events, streams, head, last): (i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT stream_id), max(position), max(recorded_at) \
             FROM flext_events",
        )
        .fetch_one(&self.readers)
        .await
        .map_err(|e| db_error("counting events", e))?;
        let types: Vec<(String, i64)> = sqlx::query_as(
            "SELECT event_type, count(*) AS n FROM flext_events GROUP BY event_type \
             ORDER BY n DESC, event_type",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("counting events by type", e))?;
        let (pages, page_size): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT page_count FROM pragma_page_count()), \
                    (SELECT page_size FROM pragma_page_size())",
        )
        .fetch_one(&self.readers)
        .await
        .map_err(|e| db_error("measuring the file", e))?;
        Ok(StoreStats {
            events: events.max(0) as u64,
            streams: streams.max(0) as u64,
            head: Position(head.unwrap_or(0).max(0) as u64),
            last_recorded_at: last.map(time),
            by_type: types
                .into_iter()
                .map(|(event_type, n)| TypeCount {
                    event_type,
                    events: n.max(0) as u64,
                })
                .collect(),
            storage_bytes: (pages.max(0) as u64).saturating_mul(page_size.max(0) as u64),
        })
    }

    async fn appended_since(&self, after: Position) -> Result<Appended, Error> {
        // One statement: the count and the newest event come from one snapshot.
        let (events, head, last): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT count(*), max(position), max(recorded_at) FROM flext_events \
             WHERE position > ?1",
        )
        .bind(i64::try_from(after.get()).unwrap_or(i64::MAX))
        .fetch_one(&self.readers)
        .await
        .map_err(|e| db_error("counting the newest events", e))?;
        Ok(Appended {
            events: events.max(0) as u64,
            head: head.map(|p| Position(p.max(0) as u64)),
            last_recorded_at: last.map(time),
        })
    }

    async fn checkpoint_moves(&self) -> Result<Vec<flext_ports::CheckpointMove>, Error> {
        let rows: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT name, moved_at FROM flext_checkpoints ORDER BY name")
                .fetch_all(&self.readers)
                .await
                .map_err(|e| db_error("reading checkpoints", e))?;
        Ok(rows.into_iter().map(|(n, t)| (n, t.map(time))).collect())
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

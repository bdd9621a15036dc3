//! Scheduled messages in the `flext_schedule` table, written through the store's writer.

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventMetadata};
use flext_ports::adapter::{due_from_micros, due_micros};
use flext_ports::{ScheduleStore, Scheduled};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::store::{SqliteEventStore, db_error};

fn scheduled(row: &SqliteRow) -> Result<Scheduled, Error> {
    let key: String = row
        .try_get("key")
        .map_err(|e| db_error("reading the schedule", e))?;
    let corrupt = |what: &str| {
        Error::data_loss(
            "CORRUPTED_SCHEDULE",
            format!("the message scheduled under {key:?} has an unreadable {what}"),
        )
    };
    let id: String = row
        .try_get("id")
        .map_err(|e| db_error("reading the schedule", e))?;
    let due: i64 = row
        .try_get("due_us")
        .map_err(|e| db_error("reading the schedule", e))?;
    let message: String = row
        .try_get("message")
        .map_err(|e| db_error("reading the schedule", e))?;
    let payload: String = row
        .try_get("payload")
        .map_err(|e| db_error("reading the schedule", e))?;
    let metadata: String = row
        .try_get("metadata")
        .map_err(|e| db_error("reading the schedule", e))?;
    Ok(Scheduled {
        id: id.parse().map_err(|_| corrupt("id"))?,
        due_at: due_from_micros(&key, due)?,
        message,
        payload: payload.into_bytes(),
        metadata: serde_json::from_str::<EventMetadata>(&metadata)
            .map_err(|_| corrupt("metadata"))?,
        key,
    })
}

fn text(what: &str, bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Error::invalid_argument(
            "INVALID_PAYLOAD",
            format!("the scheduled {what} is not UTF-8 JSON"),
        )
    })
}

impl ScheduleStore for SqliteEventStore {
    async fn schedule(&self, message: &Scheduled) -> Result<(), Error> {
        let payload = text("message", &message.payload)?;
        let metadata = serde_json::to_string(&message.metadata)?;
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query(
            "INSERT INTO flext_schedule (key, id, due_us, message, payload, metadata) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET id = excluded.id, \
             due_us = excluded.due_us, message = excluded.message, \
             payload = excluded.payload, metadata = excluded.metadata",
        )
        .bind(&message.key)
        .bind(message.id.to_string())
        .bind(due_micros(message.due_at))
        .bind(&message.message)
        .bind(payload)
        .bind(metadata)
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("scheduling a message", e))?;
        Ok(())
    }

    async fn cancel(&self, key: &str) -> Result<bool, Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let done = sqlx::query("DELETE FROM flext_schedule WHERE key = ?")
            .bind(key)
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("cancelling a scheduled message", e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn due(&self, now: DateTime<Utc>, max: usize) -> Result<Vec<Scheduled>, Error> {
        let rows = sqlx::query(
            "SELECT key, id, due_us, message, payload, metadata FROM flext_schedule \
             WHERE due_us <= ? ORDER BY due_us LIMIT ?",
        )
        .bind(due_micros(now))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("reading due messages", e))?;
        rows.iter().map(scheduled).collect()
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, Error> {
        let next: Option<i64> = sqlx::query_scalar("SELECT min(due_us) FROM flext_schedule")
            .fetch_one(&self.readers)
            .await
            .map_err(|e| db_error("reading the next due time", e))?;
        next.map(|us| due_from_micros("(earliest)", us)).transpose()
    }

    async fn delivered(&self, message: &Scheduled) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query("DELETE FROM flext_schedule WHERE key = ? AND id = ?")
            .bind(&message.key)
            .bind(message.id.to_string())
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("removing a delivered message", e))?;
        Ok(())
    }
}

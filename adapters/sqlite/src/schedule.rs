//! Scheduled messages in the `flext_schedule` table, written through the store's writer.

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::adapter::{
    StoredSchedule, assemble_scheduled, due_from_micros, due_micros, stored_schedule,
};
use flext_ports::{ScheduleStore, Scheduled};

use crate::store::{SqliteEventStore, db_error};

impl ScheduleStore for SqliteEventStore {
    async fn schedule(&self, message: &Scheduled) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        put(&mut writer.conn, message).await
    }

    async fn cancel(&self, key: &str) -> Result<bool, Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        remove(&mut writer.conn, key).await
    }

    async fn due(&self, now: DateTime<Utc>, max: usize) -> Result<Vec<Scheduled>, Error> {
        let rows: Vec<StoredSchedule> = sqlx::query_as(
            "SELECT key, id, due_us, message, payload, metadata FROM flext_schedule \
             WHERE due_us <= ? ORDER BY due_us LIMIT ?",
        )
        .bind(due_micros(now))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("reading due messages", e))?;
        rows.into_iter().map(assemble_scheduled).collect()
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

/// Stores `message` through `ex` (the pool, or a transaction's connection), replacing what
/// was pending under its key.
pub(crate) async fn put<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    message: &Scheduled,
) -> Result<(), Error> {
    let (key, id, due_us, name, payload, metadata) = stored_schedule(message)?;
    sqlx::query(
        "INSERT INTO flext_schedule (key, id, due_us, message, payload, metadata) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET id = excluded.id, \
         due_us = excluded.due_us, message = excluded.message, \
         payload = excluded.payload, metadata = excluded.metadata",
    )
    .bind(key)
    .bind(id)
    .bind(due_us)
    .bind(name)
    .bind(payload)
    .bind(metadata)
    .execute(ex)
    .await
    .map_err(|e| db_error("scheduling a message", e))?;
    Ok(())
}

/// Removes what is pending under `key` through `ex`; whether there was something.
pub(crate) async fn remove<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    key: &str,
) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM flext_schedule WHERE key = ?")
        .bind(key)
        .execute(ex)
        .await
        .map_err(|e| db_error("cancelling a scheduled message", e))?;
    Ok(done.rows_affected() > 0)
}

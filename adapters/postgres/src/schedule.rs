//! Scheduled messages in the `flext_schedule` table, written on the pool.

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::adapter::{
    StoredSchedule, assemble_scheduled, due_from_micros, due_micros, stored_schedule,
};
use flext_ports::{ScheduleStore, Scheduled};

use crate::store::{PgEventStore, db_error};

impl ScheduleStore for PgEventStore {
    async fn schedule(&self, message: &Scheduled) -> Result<(), Error> {
        put(&self.pool, message).await
    }

    async fn cancel(&self, key: &str) -> Result<bool, Error> {
        remove(&self.pool, key).await
    }

    async fn due(&self, now: DateTime<Utc>, max: usize) -> Result<Vec<Scheduled>, Error> {
        let rows: Vec<StoredSchedule> = sqlx::query_as(
            "SELECT key, id, due_us, message, payload, metadata FROM flext_schedule \
             WHERE due_us <= $1 ORDER BY due_us LIMIT $2",
        )
        .bind(due_micros(now))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("reading due messages", e))?;
        rows.into_iter().map(assemble_scheduled).collect()
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, Error> {
        let next: Option<i64> = sqlx::query_scalar("SELECT min(due_us) FROM flext_schedule")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("reading the next due time", e))?;
        next.map(|us| due_from_micros("(earliest)", us)).transpose()
    }

    async fn delivered(&self, message: &Scheduled) -> Result<(), Error> {
        sqlx::query("DELETE FROM flext_schedule WHERE key = $1 AND id = $2")
            .bind(&message.key)
            .bind(message.id.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("removing a delivered message", e))?;
        Ok(())
    }
}

/// Stores `message` through `ex` (the pool, or a transaction's connection), replacing what
/// was pending under its key.
pub(crate) async fn put<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    message: &Scheduled,
) -> Result<(), Error> {
    let (key, id, due_us, name, payload, metadata) = stored_schedule(message)?;
    sqlx::query(
        "INSERT INTO flext_schedule (key, id, due_us, message, payload, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT ON CONSTRAINT flext_schedule_pkey DO UPDATE SET id = excluded.id, \
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
pub(crate) async fn remove<'e>(ex: impl sqlx::PgExecutor<'e>, key: &str) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM flext_schedule WHERE key = $1")
        .bind(key)
        .execute(ex)
        .await
        .map_err(|e| db_error("cancelling a scheduled message", e))?;
    Ok(done.rows_affected() > 0)
}

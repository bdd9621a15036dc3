//! The outbox table `flext_outbox`: messages written in a transaction, read in position
//! (commit) order by the outbox relay, removed with its checkpoint.

use flext_domain::Error;
use flext_ports::{OutboundMessage, OutboxMessage, OutboxStore};

use crate::store::{SqliteEventStore, SqliteWriteTransaction, db_error};

impl OutboxStore for SqliteEventStore {
    async fn send_in(
        &self,
        tx: &mut SqliteWriteTransaction,
        message: &OutboxMessage,
    ) -> Result<(), Error> {
        let headers = serde_json::to_string(&message.headers)?;
        sqlx::query(
            "INSERT INTO flext_outbox (message_id, subject, headers, payload, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&message.id)
        .bind(&message.subject)
        .bind(headers)
        .bind(message.payload.as_ref())
        .bind(self.clock.now().timestamp_micros())
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("writing an outbox message", e))?;
        Ok(())
    }

    async fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboundMessage>, Error> {
        // One writer: a committed position is never followed by a smaller one.
        let rows: Vec<(i64, String, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT position, message_id, subject, headers, payload FROM flext_outbox \
             WHERE position > ? ORDER BY position LIMIT ?",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("reading the outbox", e))?;
        rows.into_iter()
            .map(|(position, id, subject, headers, payload)| {
                flext_ports::adapter::outbound_row(position, id, subject, &headers, payload)
            })
            .collect()
    }

    async fn outbox_sent(
        &self,
        tx: &mut SqliteWriteTransaction,
        through: u64,
    ) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM flext_outbox WHERE position <= ?")
            .bind(i64::try_from(through).unwrap_or(i64::MAX))
            .execute(tx.connection())
            .await
            .map_err(|e| db_error("removing published outbox messages", e))?;
        Ok(done.rows_affected())
    }
}

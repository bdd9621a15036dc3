//! The outbox table `flext_outbox`: messages written in a transaction, read gap-safe in
//! position order by the outbox relay, removed with its checkpoint.

use flext_domain::Error;
use flext_ports::{OutboundMessage, OutboxMessage, OutboxStore};

use crate::store::{PgEventStore, PgWriteTransaction, db_error};

/// At most this many outbox messages per transaction (the count within a transaction
/// has 20 bits, as an event's).
const MAX_PER_TRANSACTION: u32 = (1 << 20) - 1;

impl OutboxStore for PgEventStore {
    async fn send_in(
        &self,
        tx: &mut PgWriteTransaction,
        message: &OutboxMessage,
    ) -> Result<(), Error> {
        if tx.outboxed >= MAX_PER_TRANSACTION {
            return Err(Error::resource_exhausted(
                "TOO_MANY_OUTBOX_MESSAGES",
                format!("one transaction may write at most {MAX_PER_TRANSACTION} outbox messages"),
            ));
        }
        tx.outboxed += 1;
        let headers = serde_json::to_string(&message.headers)?;
        sqlx::query(
            "INSERT INTO flext_outbox (position, message_id, subject, headers, payload, created_at) \
             VALUES ((pg_current_xact_id()::text::bigint << 20) + $1, $2, $3, $4, $5, $6)",
        )
        .bind(i64::from(tx.outboxed))
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
        let rows: Vec<(i64, String, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT position, message_id, subject, headers, payload FROM flext_outbox \
             WHERE position > $1 \
               AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) \
             ORDER BY position LIMIT $2",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("reading the outbox", e))?;
        rows.into_iter()
            .map(|(position, id, subject, headers, payload)| {
                flext_ports::adapter::outbound_row(position, id, subject, &headers, payload)
            })
            .collect()
    }

    async fn outbox_sent(&self, tx: &mut PgWriteTransaction, through: u64) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM flext_outbox WHERE position <= $1")
            .bind(i64::try_from(through).unwrap_or(i64::MAX))
            .execute(tx.connection())
            .await
            .map_err(|e| db_error("removing published outbox messages", e))?;
        Ok(done.rows_affected())
    }
}

//! Inbox records in `flext_inbox` (written in the handler's transaction) and the messages
//! an inbox gave up on in `flext_inbox_dead_letters`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::adapter::{assemble_inbox_dead_letter, encode_error};
use flext_ports::{InboxDeadLetter, InboxStore};

use crate::store::{PgEventStore, PgWriteTransaction, db_error};

type DeadRow = (
    String,
    String,
    String,
    String,
    Vec<u8>,
    String,
    i32,
    DateTime<Utc>,
);

impl InboxStore for PgEventStore {
    async fn receive(
        &self,
        tx: &mut PgWriteTransaction,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, Error> {
        // A concurrent transaction recording the same id makes this one wait for it: if
        // it commits, nothing is inserted here.
        let done = sqlx::query(
            "INSERT INTO flext_inbox (consumer, message_id, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT ON CONSTRAINT flext_inbox_pkey DO NOTHING",
        )
        .bind(consumer)
        .bind(message_id)
        .bind(self.clock.now().timestamp_micros())
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("recording an inbox message", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn park_message(
        &self,
        tx: &mut PgWriteTransaction,
        letter: &InboxDeadLetter,
    ) -> Result<(), Error> {
        let headers = serde_json::to_string(&letter.headers)?;
        sqlx::query(
            "INSERT INTO flext_inbox_dead_letters (consumer, message_id, subject, headers, \
             payload, error, deliveries, parked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT ON CONSTRAINT flext_inbox_dead_letters_pkey DO UPDATE SET error = excluded.error, \
             deliveries = excluded.deliveries, parked_at = excluded.parked_at",
        )
        .bind(&letter.consumer)
        .bind(&letter.message_id)
        .bind(&letter.subject)
        .bind(headers)
        .bind(&letter.payload)
        .bind(encode_error(&letter.error))
        .bind(i32::try_from(letter.deliveries).unwrap_or(i32::MAX))
        .bind(letter.parked_at)
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("parking an inbox message", e))?;
        Ok(())
    }

    async fn inbox_dead_letters(&self, consumer: &str) -> Result<Vec<InboxDeadLetter>, Error> {
        let rows: Vec<DeadRow> = sqlx::query_as(
            "SELECT consumer, message_id, subject, headers, payload, error, deliveries, parked_at \
             FROM flext_inbox_dead_letters WHERE consumer = $1 ORDER BY parked_at, message_id",
        )
        .bind(consumer)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing an inbox's dead letters", e))?;
        rows.into_iter()
            .map(|(c, id, subject, headers, payload, error, n, at)| {
                assemble_inbox_dead_letter(c, id, subject, &headers, payload, &error, n.into(), at)
            })
            .collect()
    }

    async fn purge_inbox(&self, consumer: &str, older_than: Duration) -> Result<u64, Error> {
        let micros = i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX);
        let before = self.clock.now().timestamp_micros().saturating_sub(micros);
        let done = sqlx::query("DELETE FROM flext_inbox WHERE consumer = $1 AND received_at < $2")
            .bind(consumer)
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("purging an inbox", e))?;
        Ok(done.rows_affected())
    }
}

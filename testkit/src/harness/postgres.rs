//! The harness for `flext-postgres`: a fresh schema per test in the database at
//! `DATABASE_URL` (the test command sets it, starting a server when none answers).

use flext_domain::{Error, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use flext_ports::AppendOutcome;
use flext_postgres::{PgEventStore, PgWriteTransaction};

use crate::{Harness, Held};

/// The database URL the PostgreSQL tests use; panics with the way to get one when unset.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the PostgreSQL tests need a server. Run ./scripts/test, \
             which finds or starts one, or set DATABASE_URL"
        )
    })
}

/// Runs the suite on [`PgEventStore`], each test in its own schema, dropped afterwards.
pub struct PgHarness {
    store: PgEventStore,
    schema: String,
}

/// A held PostgreSQL transaction.
pub struct PgHeld {
    tx: PgWriteTransaction,
    outcome: AppendOutcome,
}

impl Held for PgHeld {
    async fn commit(self) -> Result<AppendOutcome, Error> {
        self.tx.commit().await?;
        Ok(self.outcome)
    }
}

impl PgHarness {
    async fn execute(&self, sql: &'static str, stream: &StreamId, version: StreamVersion) {
        let done = sqlx::query(sql)
            .bind(stream.as_str())
            .bind(version.0 as i64)
            .execute(self.store.pool())
            .await
            .expect("corrupting statement");
        assert_eq!(done.rows_affected(), 1, "no event {version} in {stream}");
    }
}

impl Harness for PgHarness {
    type Store = PgEventStore;
    type Held = PgHeld;
    const SERIALIZED_WRITERS: bool = false;

    async fn fresh() -> Self {
        let schema = format!("flext_test_{}", uuid::Uuid::now_v7().simple());
        let store = PgEventStore::builder(database_url())
            .schema(schema.clone())
            .max_connections(12)
            .connect()
            .await
            .expect("connect to PostgreSQL at DATABASE_URL");
        PgHarness { store, schema }
    }

    fn store(&self) -> PgEventStore {
        self.store.clone()
    }

    async fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<PgHeld, Error> {
        let mut tx = self.store.transaction().await?;
        let outcome = tx.append(stream, expected, events).await?;
        Ok(PgHeld { tx, outcome })
    }

    async fn corrupt_payload(&self, stream: &StreamId, version: StreamVersion) {
        self.execute(
            "UPDATE flext_events SET payload = '\\x00676172626167657b'::bytea WHERE stream_id = $1 AND version = $2",
            stream,
            version,
        )
        .await;
    }

    async fn corrupt_metadata(&self, stream: &StreamId, version: StreamVersion) -> bool {
        self.execute(
            "UPDATE flext_events SET headers = '{not json' WHERE stream_id = $1 AND version = $2",
            stream,
            version,
        )
        .await;
        true
    }

    async fn cleanup(self) {
        let drop_schema = format!("DROP SCHEMA \"{}\" CASCADE", self.schema);
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop_schema))
            .execute(self.store.pool())
            .await;
        self.store.pool().close().await;
    }
}

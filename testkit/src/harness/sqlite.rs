//! The harness for `flext-sqlite`: a fresh database file per test.

use std::path::PathBuf;

use flext_domain::{Error, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use flext_ports::AppendOutcome;
use flext_sqlite::{SqliteEventStore, SqliteWriteTransaction};

use crate::{Harness, Held};

/// Runs the suite on [`SqliteEventStore`], each test on its own file in the temp dir.
pub struct SqliteHarness {
    store: SqliteEventStore,
    path: PathBuf,
    tenants: flext_sqlite::SqliteTenantStores,
    tenant_dir: PathBuf,
}

/// A held SQLite write transaction.
pub struct SqliteHeld {
    tx: SqliteWriteTransaction,
    outcome: AppendOutcome,
}

impl Held for SqliteHeld {
    async fn commit(self) -> Result<AppendOutcome, Error> {
        self.tx.commit().await?;
        Ok(self.outcome)
    }
}

impl SqliteHarness {
    async fn execute(&self, sql: &'static str, stream: &StreamId, version: StreamVersion) {
        let done = sqlx::query(sql)
            .bind(stream.as_str())
            .bind(version.0 as i64)
            .execute(self.store.reader_pool())
            .await
            .expect("corrupting statement");
        assert_eq!(done.rows_affected(), 1, "no event {version} in {stream}");
    }
}

impl Harness for SqliteHarness {
    type Store = SqliteEventStore;
    type Held = SqliteHeld;
    type Tenants = flext_sqlite::SqliteTenantStores;
    const SERIALIZED_WRITERS: bool = true;

    async fn fresh() -> Self {
        let path = std::env::temp_dir().join(format!(
            "flext-conformance-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let store = SqliteEventStore::open(&path)
            .await
            .expect("open a fresh SQLite store");
        let tenant_dir = path.with_extension("tenants");
        let tenants = flext_sqlite::SqliteTenantStores::new(&tenant_dir);
        SqliteHarness {
            store,
            path,
            tenants,
            tenant_dir,
        }
    }

    fn store(&self) -> SqliteEventStore {
        self.store.clone()
    }

    fn tenants(&self) -> flext_sqlite::SqliteTenantStores {
        self.tenants.clone()
    }

    async fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<SqliteHeld, Error> {
        let mut tx = self.store.transaction().await?;
        let outcome = tx.append(stream, expected, events).await?;
        Ok(SqliteHeld { tx, outcome })
    }

    crate::harness::transaction_hooks!();

    async fn corrupt_payload(&self, stream: &StreamId, version: StreamVersion) {
        self.execute(
            "UPDATE flext_events SET payload = x'00676172626167657b' WHERE stream_id = ?1 AND version = ?2",
            stream,
            version,
        )
        .await;
    }

    async fn corrupt_metadata(&self, stream: &StreamId, version: StreamVersion) -> bool {
        self.execute(
            "UPDATE flext_events SET headers = '{not json' WHERE stream_id = ?1 AND version = ?2",
            stream,
            version,
        )
        .await;
        true
    }

    async fn cleanup(self) {
        let _ = self.tenants.close().await;
        let _ = std::fs::remove_dir_all(&self.tenant_dir);
        drop(self.store);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

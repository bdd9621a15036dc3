//! Process managers' state in the `flext_processes` table, written in the projection
//! transaction that moves the manager's checkpoint.

use flext_domain::Error;
use flext_ports::adapter::{process_row, stored_process};
use flext_ports::{ProcessStore, Scheduled, StoredProcess};

use crate::store::{PgEventStore, PgWriteTransaction, db_error};

impl ProcessStore for PgEventStore {
    async fn load_process(
        &self,
        tx: &mut PgWriteTransaction,
        manager: &str,
        association: &str,
    ) -> Result<Option<StoredProcess>, Error> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT state, version FROM flext_processes WHERE manager = $1 AND association = $2",
        )
        .bind(manager)
        .bind(association)
        .fetch_optional(tx.connection())
        .await
        .map_err(|e| db_error("reading a process's state", e))?;
        row.map(|(state, version)| stored_process(manager, association, state, version))
            .transpose()
    }

    async fn save_process(
        &self,
        tx: &mut PgWriteTransaction,
        manager: &str,
        association: &str,
        process: &StoredProcess,
    ) -> Result<(), Error> {
        let (state, version) = process_row(manager, association, process)?;
        sqlx::query(
            "INSERT INTO flext_processes (manager, association, state, version) \
             VALUES ($1, $2, $3, $4) ON CONFLICT ON CONSTRAINT flext_processes_pkey DO UPDATE SET state = excluded.state, version = excluded.version",
        )
        .bind(manager)
        .bind(association)
        .bind(state)
        .bind(version)
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("storing a process's state", e))?;
        Ok(())
    }

    async fn end_process(
        &self,
        tx: &mut PgWriteTransaction,
        manager: &str,
        association: &str,
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM flext_processes WHERE manager = $1 AND association = $2")
            .bind(manager)
            .bind(association)
            .execute(tx.connection())
            .await
            .map_err(|e| db_error("ending a process", e))?;
        Ok(())
    }

    async fn schedule_in(
        &self,
        tx: &mut PgWriteTransaction,
        message: &Scheduled,
    ) -> Result<(), Error> {
        crate::schedule::put(tx.connection(), message).await
    }

    async fn cancel_in(&self, tx: &mut PgWriteTransaction, key: &str) -> Result<bool, Error> {
        crate::schedule::remove(tx.connection(), key).await
    }

    async fn processes(&self, manager: &str) -> Result<Vec<(String, StoredProcess)>, Error> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT association, state, version FROM flext_processes WHERE manager = $1 \
             ORDER BY association",
        )
        .bind(manager)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("reading processes", e))?;
        rows.into_iter()
            .map(|(a, state, version)| {
                let p = stored_process(manager, &a, state, version)?;
                Ok((a, p))
            })
            .collect()
    }
}

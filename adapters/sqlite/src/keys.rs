//! Data keys on SQLite, written through the one writer.

use flext_domain::Error;
use flext_ports::KeyStore;
use flext_ports::adapter::check_key_name;

use crate::store::{SqliteEventStore, db_error};

impl KeyStore for SqliteEventStore {
    async fn data_key(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        check_key_name(name)?;
        sqlx::query_scalar("SELECT wrapped FROM flext_data_keys WHERE name = ?1")
            .bind(name)
            .fetch_optional(self.reader_pool())
            .await
            .map_err(|e| db_error("reading a data key", e))
    }

    async fn create_data_key(&self, name: &str, wrapped: Vec<u8>) -> Result<Vec<u8>, Error> {
        check_key_name(name)?;
        let mut tx = self.transaction().await?;
        let now = chrono::Utc::now().timestamp_micros();
        sqlx::query(
            "INSERT INTO flext_data_keys (name, wrapped, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&wrapped)
        .bind(now)
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("creating a data key", e))?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT wrapped FROM flext_data_keys WHERE name = ?1")
                .bind(name)
                .fetch_one(tx.connection())
                .await
                .map_err(|e| db_error("reading a data key", e))?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn link_data_key(&self, subject: &str, dependent: &str) -> Result<(), Error> {
        check_key_name(subject)?;
        check_key_name(dependent)?;
        let mut tx = self.transaction().await?;
        sqlx::query(
            "INSERT INTO flext_data_key_links (subject, dependent) VALUES (?1, ?2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(subject)
        .bind(dependent)
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("linking a data key", e))?;
        tx.commit().await
    }

    async fn forget_data_key(&self, subject: &str) -> Result<u64, Error> {
        check_key_name(subject)?;
        let mut tx = self.transaction().await?;
        let done = sqlx::query(
            "DELETE FROM flext_data_keys WHERE name = ?1 OR name IN \
             (SELECT dependent FROM flext_data_key_links WHERE subject = ?1)",
        )
        .bind(subject)
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("forgetting a data key", e))?;
        sqlx::query("DELETE FROM flext_data_key_links WHERE subject = ?1")
            .bind(subject)
            .execute(tx.connection())
            .await
            .map_err(|e| db_error("forgetting a data key", e))?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

//! Data keys on PostgreSQL.

use flext_domain::Error;
use flext_ports::KeyStore;
use flext_ports::adapter::check_key_name;

use crate::store::{PgEventStore, db_error};

impl KeyStore for PgEventStore {
    async fn data_key(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        check_key_name(name)?;
        sqlx::query_scalar("SELECT wrapped FROM flext_data_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| db_error("reading a data key", e))
    }

    /// One statement: the insert, or the row a racing creator committed first.
    async fn create_data_key(&self, name: &str, wrapped: Vec<u8>) -> Result<Vec<u8>, Error> {
        check_key_name(name)?;
        for _ in 0..3 {
            let stored: Option<Vec<u8>> = sqlx::query_scalar(
                "WITH ins AS (INSERT INTO flext_data_keys (name, wrapped) VALUES ($1, $2) \
                              ON CONFLICT ON CONSTRAINT flext_data_keys_pkey DO NOTHING RETURNING wrapped) \
                 SELECT wrapped FROM ins \
                 UNION ALL SELECT wrapped FROM flext_data_keys WHERE name = $1 \
                 LIMIT 1",
            )
            .bind(name)
            .bind(&wrapped)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| db_error("creating a data key", e))?;
            if let Some(stored) = stored {
                return Ok(stored);
            }
            // Forgotten between the conflict and the read: try again.
        }
        Err(Error::unavailable(
            "KEY_CONTENTION",
            format!("the data key {name:?} kept being created and forgotten"),
        ))
    }

    async fn link_data_key(&self, subject: &str, dependent: &str) -> Result<(), Error> {
        check_key_name(subject)?;
        check_key_name(dependent)?;
        sqlx::query(
            "INSERT INTO flext_data_key_links (subject, dependent) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(subject)
        .bind(dependent)
        .execute(self.pool())
        .await
        .map_err(|e| db_error("linking a data key", e))?;
        Ok(())
    }

    async fn forget_data_key(&self, subject: &str) -> Result<u64, Error> {
        check_key_name(subject)?;
        let n: i64 = sqlx::query_scalar(
            "WITH links AS (DELETE FROM flext_data_key_links WHERE subject = $1 \
                            RETURNING dependent), \
                  keys AS (DELETE FROM flext_data_keys \
                           WHERE name = $1 OR name IN (SELECT dependent FROM links) \
                           RETURNING 1) \
             SELECT count(*) FROM keys",
        )
        .bind(subject)
        .fetch_one(self.pool())
        .await
        .map_err(|e| db_error("forgetting a data key", e))?;
        Ok(n.max(0).unsigned_abs())
    }
}

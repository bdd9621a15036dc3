//! Shadow read models on PostgreSQL: a schema of its own in the same database, compared
//! with the live schema table by table.

use flext_domain::Error;
use flext_ports::TableDiff;
use sqlx::postgres::PgPoolOptions;

use crate::store::{PgEventStore, db_error};

/// The most differing rows reported per table and side.
const MAX_ROWS: i64 = 100;

/// A name as a quoted PostgreSQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PgEventStore {
    pub(crate) async fn open_shadow(&self, _name: &str) -> Result<PgEventStore, Error> {
        let schema = format!("flext_shadow_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("creating a shadow schema", e))?;
        let options = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|e| db_error("connecting to the shadow schema", e))?;
        PgEventStore::open_pool(pool, false, true).await
    }

    pub(crate) async fn diff_shadow(&self, shadow: &PgEventStore) -> Result<Vec<TableDiff>, Error> {
        let live = quoted(&self.notifications.schema);
        let shadow_schema = shadow.notifications.schema.to_string();
        let other = quoted(&shadow_schema);
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' \
             AND table_name NOT LIKE 'flext\\_%' AND table_name NOT LIKE '\\_%' \
             ORDER BY table_name",
        )
        .bind(&shadow_schema)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing the shadow's tables", e))?;
        let mut out = Vec::new();
        for table in tables {
            let t = quoted(&table);
            let side = |a: &str, b: &str| {
                format!(
                    "(SELECT to_jsonb(r)::text FROM {a}.{t} r EXCEPT \
                     SELECT to_jsonb(r)::text FROM {b}.{t} r) LIMIT {MAX_ROWS}"
                )
            };
            let mut rows = Vec::new();
            for sql in [side(&live, &other), side(&other, &live)] {
                let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| db_error("comparing a table with its shadow", e))?;
                rows.push(
                    texts
                        .iter()
                        .filter_map(|t| serde_json::from_str(t).ok())
                        .collect::<Vec<serde_json::Value>>(),
                );
            }
            let rebuilt_only = rows.pop().unwrap_or_default();
            let live_only = rows.pop().unwrap_or_default();
            if !live_only.is_empty() || !rebuilt_only.is_empty() {
                out.push(TableDiff {
                    table,
                    live_only,
                    rebuilt_only,
                });
            }
        }
        Ok(out)
    }

    pub(crate) async fn remove_shadow(&self, shadow: PgEventStore) -> Result<(), Error> {
        let schema = shadow.notifications.schema.to_string();
        shadow.close().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            quoted(&schema)
        )))
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("dropping a shadow schema", e))?;
        Ok(())
    }
}

//! Shadow read models on SQLite: a fresh database file beside the live one, compared with
//! it table by table through `ATTACH`.

use std::path::PathBuf;

use flext_domain::Error;
use flext_ports::TableDiff;
use sqlx::{Connection, SqliteConnection};

use crate::store::{SqliteEventStore, db_error};

/// The most differing rows reported per table and side.
const MAX_ROWS: i64 = 100;

/// A name as a quoted SQLite identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl SqliteEventStore {
    pub(crate) async fn open_shadow(&self, name: &str) -> Result<SqliteEventStore, Error> {
        let tag: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let file = format!("shadow-{tag}-{}.db", uuid::Uuid::now_v7().simple());
        let path: PathBuf = match self.path.parent().filter(|_| self.path.is_file()) {
            Some(dir) => {
                let stem = self
                    .path
                    .file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                dir.join(format!("{stem}.{file}"))
            }
            None => std::env::temp_dir().join(file),
        };
        SqliteEventStore::builder(&path).readers(2).open().await
    }

    pub(crate) async fn diff_shadow(
        &self,
        shadow: &SqliteEventStore,
    ) -> Result<Vec<TableDiff>, Error> {
        let mut conn = SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&*self.path)
                .read_only(true),
        )
        .await
        .map_err(|e| db_error("opening the live database to compare", e))?;
        sqlx::query("ATTACH DATABASE ? AS shadow")
            .bind(shadow.path.display().to_string())
            .execute(&mut conn)
            .await
            .map_err(|e| db_error("attaching the shadow database", e))?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM shadow.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'flext\\_%' ESCAPE '\\' AND name NOT LIKE '\\_%' ESCAPE '\\' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| db_error("listing the shadow's tables", e))?;
        let mut out = Vec::new();
        for table in tables {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info(?1, 'shadow') ORDER BY cid")
                    .bind(&table)
                    .fetch_all(&mut conn)
                    .await
                    .map_err(|e| db_error("reading a table's columns", e))?;
            // Each row as a JSON object (a BLOB as hex: JSON cannot hold one).
            let object = format!(
                "json_object({})",
                columns
                    .iter()
                    .map(|c| {
                        let q = quoted(c);
                        format!(
                            "'{}', CASE WHEN typeof({q}) = 'blob' THEN hex({q}) ELSE {q} END",
                            c.replace('\'', "''")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let t = quoted(&table);
            let side = |a: &str, b: &str| {
                format!(
                    "SELECT {object} FROM {a}.{t} EXCEPT SELECT {object} FROM {b}.{t} LIMIT {MAX_ROWS}"
                )
            };
            let mut sides = Vec::with_capacity(2);
            for sql in [side("main", "shadow"), side("shadow", "main")] {
                let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut conn)
                    .await
                    .map_err(|e| db_error("comparing a table with its shadow", e))?;
                sides.push(
                    texts
                        .iter()
                        .filter_map(|t| serde_json::from_str(t).ok())
                        .collect::<Vec<serde_json::Value>>(),
                );
            }
            let rebuilt_only = sides.pop().unwrap_or_default();
            let live_only = sides.pop().unwrap_or_default();
            if !live_only.is_empty() || !rebuilt_only.is_empty() {
                out.push(TableDiff {
                    table,
                    live_only,
                    rebuilt_only,
                });
            }
        }
        let _ = conn.close().await;
        Ok(out)
    }

    pub(crate) async fn remove_shadow(&self, shadow: SqliteEventStore) -> Result<(), Error> {
        shadow.close().await?;
        let path = shadow.path.as_ref().clone();
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

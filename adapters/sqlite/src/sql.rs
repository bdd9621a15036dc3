//! [`Sql`] on SQLite: a projection's [`SqliteWriteTransaction`] and the store's read pool.

use std::sync::Arc;

use flext_domain::Error;
use flext_ports::sql::{ReadPool, Sql, SqlFuture, SqlRow, SqlValue, statement_head};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Column, Row, SqliteConnection, SqlitePool, TypeInfo, ValueRef};

use crate::store::{SqliteWriteTransaction, db_error};

fn query(sql: &str, args: Vec<SqlValue>) -> sqlx::query::Query<'_, sqlx::Sqlite, SqliteArguments> {
    // The caller's own SQL text, with its arguments bound, never spliced.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args {
        q = match a {
            SqlValue::Null => q.bind(None::<i64>),
            SqlValue::Bool(b) => q.bind(b),
            SqlValue::Int(i) => q.bind(i),
            SqlValue::Float(f) => q.bind(f),
            SqlValue::Text(s) => q.bind(s),
            SqlValue::Bytes(b) => q.bind(b),
        };
    }
    q
}

/// A sqlx error of a read-model statement: constraints and bad SQL told apart by SQLite's
/// result code; the rest as the store's errors.
fn sql_error(sql: &str, e: sqlx::Error) -> Error {
    let what = format!("running {:?}", statement_head(sql));
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        let said = db.message().to_owned();
        match (code, code & 0xff) {
            (1555 | 2067, _) => {
                return Error::already_exists("UNIQUE_VIOLATION", format!("{what}: {said}"));
            }
            (_, 19) => {
                return Error::failed_precondition(
                    "CONSTRAINT_VIOLATION",
                    format!("{what}: {said}"),
                );
            }
            (_, 1) => return Error::invalid_argument("BAD_SQL", format!("{what}: {said}")),
            _ => {}
        }
    }
    db_error(&what, e)
}

fn rows(found: Vec<SqliteRow>) -> Result<Vec<SqlRow>, Error> {
    let Some(first) = found.first() else {
        return Ok(Vec::new());
    };
    let columns: Arc<[String]> = first
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    found
        .iter()
        .map(|row| {
            let values = (0..columns.len())
                .map(|i| value(row, i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SqlRow::new(columns.clone(), values))
        })
        .collect()
}

/// A column's value by its storage class (SQLite types values, not columns).
fn value(row: &SqliteRow, i: usize) -> Result<SqlValue, Error> {
    let bad = |e: sqlx::Error| {
        Error::invalid_argument(
            "COLUMN_UNREADABLE",
            format!("column {i} of a read-model row cannot be read: {e}"),
        )
    };
    let raw = row.try_get_raw(i).map_err(bad)?;
    if raw.is_null() {
        return Ok(SqlValue::Null);
    }
    let class = raw.type_info().name().to_ascii_uppercase();
    Ok(match class.as_str() {
        "INTEGER" | "BOOLEAN" => SqlValue::Int(row.try_get::<i64, _>(i).map_err(bad)?),
        "REAL" => SqlValue::Float(row.try_get::<f64, _>(i).map_err(bad)?),
        "BLOB" => SqlValue::Bytes(row.try_get::<Vec<u8>, _>(i).map_err(bad)?),
        _ => SqlValue::Text(row.try_get::<String, _>(i).map_err(bad)?),
    })
}

async fn execute_on(
    conn: &mut SqliteConnection,
    sql: &str,
    args: Vec<SqlValue>,
) -> Result<u64, Error> {
    let done = query(sql, args)
        .execute(conn)
        .await
        .map_err(|e| sql_error(sql, e))?;
    Ok(done.rows_affected())
}

async fn fetch_on(
    conn: &mut SqliteConnection,
    sql: &str,
    args: Vec<SqlValue>,
) -> Result<Vec<SqlRow>, Error> {
    let found = query(sql, args)
        .fetch_all(conn)
        .await
        .map_err(|e| sql_error(sql, e))?;
    rows(found)
}

/// Statements in the projection's transaction: they commit with its checkpoint.
impl Sql for SqliteWriteTransaction {
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, u64> {
        Box::pin(execute_on(self.connection(), sql, args))
    }
    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<SqlValue>,
    ) -> SqlFuture<'a, Vec<SqlRow>> {
        Box::pin(fetch_on(self.connection(), sql, args))
    }
}

/// The store's read pool, behind [`flext_ports::sql::ReadModels`].
pub(crate) struct SqliteReadPool(pub(crate) SqlitePool);

impl ReadPool for SqliteReadPool {
    fn system(&self) -> &'static str {
        "sqlite"
    }
    fn execute<'a>(&'a self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, u64> {
        Box::pin(async move {
            let mut conn = self.0.acquire().await.map_err(|e| sql_error(sql, e))?;
            execute_on(&mut conn, sql, args).await
        })
    }
    fn fetch_all<'a>(&'a self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, Vec<SqlRow>> {
        Box::pin(async move {
            let mut conn = self.0.acquire().await.map_err(|e| sql_error(sql, e))?;
            fetch_on(&mut conn, sql, args).await
        })
    }
}

impl flext_ports::sql::SqlStore for crate::SqliteEventStore {
    fn read_models(&self) -> flext_ports::sql::ReadModels {
        crate::SqliteEventStore::read_models(self)
    }
}

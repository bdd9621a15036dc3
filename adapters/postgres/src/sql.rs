//! [`Sql`] on PostgreSQL: a projection's [`PgWriteTransaction`] and the store's pool.

use std::sync::Arc;

use flext_domain::Error;
use flext_ports::sql::{ReadPool, Sql, SqlFuture, SqlRow, SqlValue, statement_head};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Column, PgConnection, PgPool, Row, TypeInfo, ValueRef};

use crate::store::{PgWriteTransaction, db_error};

fn query(sql: &str, args: Vec<SqlValue>) -> sqlx::query::Query<'_, sqlx::Postgres, PgArguments> {
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

/// A sqlx error of a read-model statement: constraints and bad SQL told apart by SQLSTATE;
/// the rest as the store's errors.
fn sql_error(sql: &str, e: sqlx::Error) -> Error {
    let what = format!("running {:?}", statement_head(sql));
    if let sqlx::Error::Database(db) = &e {
        let state = db.code().unwrap_or_default().into_owned();
        let said = db.message().to_owned();
        if state == "23505" {
            return Error::already_exists("UNIQUE_VIOLATION", format!("{what}: {said}"));
        }
        if state.starts_with("23") {
            return Error::failed_precondition("CONSTRAINT_VIOLATION", format!("{what}: {said}"));
        }
        if (state.starts_with("42") && state != "42501") || state.starts_with("22") {
            return Error::invalid_argument("BAD_SQL", format!("{what}: {said}"));
        }
    }
    db_error(&what, e)
}

fn rows(found: Vec<PgRow>) -> Result<Vec<SqlRow>, Error> {
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
                .map(|i| value(row, i, &columns[i]))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SqlRow::new(columns.clone(), values))
        })
        .collect()
}

/// A column's value by its type; types with no [`SqlValue`] of their own (`NUMERIC`, ...)
/// are refused with the cast to write.
fn value(row: &PgRow, i: usize, name: &str) -> Result<SqlValue, Error> {
    let bad = |e: sqlx::Error| {
        Error::invalid_argument(
            "COLUMN_UNREADABLE",
            format!("column {name:?} of a read-model row cannot be read: {e}"),
        )
    };
    let raw = row.try_get_raw(i).map_err(bad)?;
    if raw.is_null() {
        return Ok(SqlValue::Null);
    }
    let ty = raw.type_info().name().to_owned();
    Ok(match ty.as_str() {
        "INT8" => SqlValue::Int(row.try_get::<i64, _>(i).map_err(bad)?),
        "INT4" => SqlValue::Int(i64::from(row.try_get::<i32, _>(i).map_err(bad)?)),
        "INT2" => SqlValue::Int(i64::from(row.try_get::<i16, _>(i).map_err(bad)?)),
        "FLOAT8" => SqlValue::Float(row.try_get::<f64, _>(i).map_err(bad)?),
        "FLOAT4" => SqlValue::Float(f64::from(row.try_get::<f32, _>(i).map_err(bad)?)),
        "BOOL" => SqlValue::Bool(row.try_get::<bool, _>(i).map_err(bad)?),
        "BYTEA" => SqlValue::Bytes(row.try_get::<Vec<u8>, _>(i).map_err(bad)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
            SqlValue::Text(row.try_get::<String, _>(i).map_err(bad)?)
        }
        "UUID" => SqlValue::Text(row.try_get::<uuid::Uuid, _>(i).map_err(bad)?.to_string()),
        "TIMESTAMPTZ" => SqlValue::Text(
            row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)
                .map_err(bad)?
                .to_rfc3339(),
        ),
        other => {
            return Err(Error::invalid_argument(
                "UNSUPPORTED_COLUMN_TYPE",
                format!(
                    "column {name:?} is of type {other}, which read models do not read: \
                     cast it in the query (e.g. CAST(x AS BIGINT), CAST(x AS TEXT))"
                ),
            ));
        }
    })
}

async fn execute_on(conn: &mut PgConnection, sql: &str, args: Vec<SqlValue>) -> Result<u64, Error> {
    let done = query(sql, args)
        .execute(conn)
        .await
        .map_err(|e| sql_error(sql, e))?;
    Ok(done.rows_affected())
}

async fn fetch_on(
    conn: &mut PgConnection,
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
impl Sql for PgWriteTransaction {
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

/// The store's pool, behind [`flext_ports::sql::ReadModels`].
pub(crate) struct PgReadPool(pub(crate) PgPool);

impl ReadPool for PgReadPool {
    fn system(&self) -> &'static str {
        "postgresql"
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

impl flext_ports::sql::SqlStore for crate::PgEventStore {
    fn read_models(&self) -> flext_ports::sql::ReadModels {
        crate::PgEventStore::read_models(self)
    }
}

//! Read models written once for SQLite and PostgreSQL: [`Sql`] runs one SQL text (with
//! `$1, $2, ...` placeholders, which both databases read) on a projection's transaction or
//! on a store's read pool, with arguments as [`SqlValue`]s and rows as [`SqlRow`]s; errors
//! are flext [`Error`]s, so `?` works. [`migrate`] keeps a read model's tables at the
//! version its projection expects.
//!
//! ```
//! use flext::Error;
//! use flext::ports::sql::{Sql, SqlExt, migrate};
//! use flext::ports::sql_args;
//!
//! /// Works on `SqliteWriteTransaction`, `PgWriteTransaction` and both stores' `read_models()`.
//! async fn add(sql: &mut impl Sql, id: &str, amount: i64) -> Result<i64, Error> {
//!     migrate(sql, "balances", &["CREATE TABLE balances (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)"]).await?;
//!     sql.execute(
//!         "INSERT INTO balances (id, balance) VALUES ($1, $2) \
//!          ON CONFLICT (id) DO UPDATE SET balance = balances.balance + excluded.balance",
//!         sql_args![id, amount],
//!     ).await?;
//!     let (balance,): (i64,) = sql.fetch_one("SELECT balance FROM balances WHERE id = $1", sql_args![id]).await?;
//!     Ok(balance)
//! }
//! ```
//!
//! Portable SQL is the caller's part: `$n` placeholders, `ON CONFLICT ... DO UPDATE`,
//! `BIGINT`/`TEXT`/`DOUBLE PRECISION`/`BOOLEAN` columns (ids as `TEXT`), aggregates cast to a
//! column type (`CAST(SUM(x) AS BIGINT)`: PostgreSQL sums into `NUMERIC`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flext_domain::Error;
use serde::de::DeserializeOwned;

/// The future of a statement run through [`Sql`].
pub type SqlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL `NULL` (bound as a `BIGINT` null: PostgreSQL assigns it to integer and text
    /// columns alike).
    Null,
    /// A boolean (`BOOLEAN` on PostgreSQL, 0 or 1 on SQLite).
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// Text (on PostgreSQL also what `UUID`, `JSON`/`JSONB` and timestamp columns read as).
    Text(String),
    /// Bytes (`BYTEA`, `BLOB`).
    Bytes(Vec<u8>),
}

impl SqlValue {
    fn kind(&self) -> &'static str {
        match self {
            SqlValue::Null => "NULL",
            SqlValue::Bool(_) => "a boolean",
            SqlValue::Int(_) => "an integer",
            SqlValue::Float(_) => "a float",
            SqlValue::Text(_) => "text",
            SqlValue::Bytes(_) => "bytes",
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident($conv:expr)),* $(,)?) => {$(
        impl From<$t> for SqlValue {
            fn from(x: $t) -> Self {
                SqlValue::$v($conv(x))
            }
        }
    )*};
}

value_from! {
    bool => Bool(|x| x),
    i64 => Int(|x| x),
    i32 => Int(i64::from),
    u32 => Int(i64::from),
    i16 => Int(i64::from),
    u16 => Int(i64::from),
    f64 => Float(|x| x),
    f32 => Float(f64::from),
    String => Text(|x| x),
    &str => Text(str::to_owned),
    &String => Text(String::clone),
    Vec<u8> => Bytes(|x| x),
    &[u8] => Bytes(<[u8]>::to_vec),
    uuid::Uuid => Text(|x: uuid::Uuid| x.to_string()),
    chrono::DateTime<chrono::Utc> => Text(|x: chrono::DateTime<chrono::Utc>| x.to_rfc3339()),
}

impl<T: ?Sized> From<&flext_domain::Id<T>> for SqlValue {
    fn from(id: &flext_domain::Id<T>) -> Self {
        SqlValue::Text(id.to_string())
    }
}

impl<T: ?Sized> From<flext_domain::Id<T>> for SqlValue {
    fn from(id: flext_domain::Id<T>) -> Self {
        SqlValue::Text(id.to_string())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(x: Option<T>) -> Self {
        x.map_or(SqlValue::Null, Into::into)
    }
}

/// The arguments of a statement: `sql_args![a, b, c]` is a `Vec<SqlValue>` of them, each
/// converted with `SqlValue::from`.
#[macro_export]
macro_rules! sql_args {
    ($($arg:expr),* $(,)?) => {
        ::std::vec![$($crate::sql::SqlValue::from($arg)),*]
    };
}

/// One row read back: its columns' names and values.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRow {
    columns: Arc<[String]>,
    values: Vec<SqlValue>,
}

impl SqlRow {
    /// A row of `values` under `columns` (adapters build rows; the two have one length).
    pub fn new(columns: Arc<[String]>, values: Vec<SqlValue>) -> SqlRow {
        SqlRow { columns, values }
    }

    /// The columns' names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The values, in column order.
    pub fn values(&self) -> &[SqlValue] {
        &self.values
    }

    /// The value of column `name` as a `T`: `NOT_FOUND`/`NO_SUCH_COLUMN` when the row has
    /// no such column, `INVALID_ARGUMENT`/`COLUMN_TYPE_MISMATCH` when it does not convert.
    pub fn get<T: FromSql>(&self, name: &str) -> Result<T, Error> {
        let Some(i) = self.columns.iter().position(|c| c == name) else {
            return Err(Error::not_found(
                "NO_SUCH_COLUMN",
                format!("the row has no column {name:?} (it has {:?})", self.columns),
            ));
        };
        self.at(i)
    }

    /// The value of the `i`th column (from 0) as a `T`.
    pub fn at<T: FromSql>(&self, i: usize) -> Result<T, Error> {
        let Some(v) = self.values.get(i) else {
            return Err(Error::not_found(
                "NO_SUCH_COLUMN",
                format!("the row has {} columns, not {}", self.values.len(), i + 1),
            ));
        };
        T::from_sql(v).map_err(|expected| {
            let name = self.columns.get(i).map_or("?", String::as_str);
            Error::invalid_argument(
                "COLUMN_TYPE_MISMATCH",
                format!(
                    "column {name:?} holds {}, which does not read as {expected}",
                    v.kind()
                ),
            )
        })
    }

    /// The row as a `T` through serde, by column name (a struct with a field per column).
    /// A `BOOLEAN` read from SQLite is an integer: read such a field as `i64`, or as a
    /// `bool` with `#[serde(deserialize_with = ...)]`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .columns
            .iter()
            .zip(&self.values)
            .map(|(c, v)| (c.clone(), json_of(v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
            Error::invalid_argument(
                "ROW_MISMATCH",
                format!(
                    "the row does not read as {}: {e}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }
}

fn json_of(v: &SqlValue) -> serde_json::Value {
    match v {
        SqlValue::Null => serde_json::Value::Null,
        SqlValue::Bool(b) => (*b).into(),
        SqlValue::Int(i) => (*i).into(),
        SqlValue::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        SqlValue::Text(s) => s.clone().into(),
        SqlValue::Bytes(b) => b.clone().into(),
    }
}

/// A type a column's value reads as; the error is what it expected.
pub trait FromSql: Sized {
    /// `value` as `Self`, or a description of what was expected.
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str>;
}

impl FromSql for SqlValue {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        Ok(value.clone())
    }
}

impl FromSql for i64 {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        match value {
            SqlValue::Int(i) => Ok(*i),
            SqlValue::Bool(b) => Ok(i64::from(*b)),
            _ => Err("an integer"),
        }
    }
}

impl FromSql for i32 {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        i64::from_sql(value)
            .ok()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or("a 32-bit integer")
    }
}

impl FromSql for u64 {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        i64::from_sql(value)
            .ok()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or("a non-negative integer")
    }
}

impl FromSql for bool {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        match value {
            SqlValue::Bool(b) => Ok(*b),
            SqlValue::Int(0) => Ok(false),
            SqlValue::Int(1) => Ok(true),
            _ => Err("a boolean (or 0 or 1)"),
        }
    }
}

impl FromSql for f64 {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        match value {
            SqlValue::Float(f) => Ok(*f),
            SqlValue::Int(i) => Ok(*i as f64),
            _ => Err("a number"),
        }
    }
}

impl FromSql for String {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        match value {
            SqlValue::Text(s) => Ok(s.clone()),
            _ => Err("text"),
        }
    }
}

impl FromSql for Vec<u8> {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        match value {
            SqlValue::Bytes(b) => Ok(b.clone()),
            _ => Err("bytes"),
        }
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(value: &SqlValue) -> Result<Self, &'static str> {
        match value {
            SqlValue::Null => Ok(None),
            v => T::from_sql(v).map(Some),
        }
    }
}

/// A type a whole row reads as: a tuple (by position) or a [`SqlRow`].
pub trait FromSqlRow: Sized {
    /// `row` as `Self`.
    fn from_row(row: &SqlRow) -> Result<Self, Error>;
}

impl FromSqlRow for SqlRow {
    fn from_row(row: &SqlRow) -> Result<Self, Error> {
        Ok(row.clone())
    }
}

macro_rules! tuple_from_row {
    ($($n:literal $t:ident),+) => {
        impl<$($t: FromSql),+> FromSqlRow for ($($t,)+) {
            fn from_row(row: &SqlRow) -> Result<Self, Error> {
                Ok(($(row.at::<$t>($n)?,)+))
            }
        }
    };
}

tuple_from_row!(0 A);
tuple_from_row!(0 A, 1 B);
tuple_from_row!(0 A, 1 B, 2 C);
tuple_from_row!(0 A, 1 B, 2 C, 3 D);
tuple_from_row!(0 A, 1 B, 2 C, 3 D, 4 E);
tuple_from_row!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F);
tuple_from_row!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G);
tuple_from_row!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H);

/// Runs SQL on a projection's transaction (`SqliteWriteTransaction`,
/// `PgWriteTransaction`) or on a store's read pool ([`ReadModels`]); implemented by the SQL
/// adapters. Errors name the statement's first words and tell the cause as the stores do
/// (a lost connection is `UNAVAILABLE`, a constraint `ALREADY_EXISTS`/`FAILED_PRECONDITION`,
/// bad SQL `INVALID_ARGUMENT`).
pub trait Sql: Send {
    /// Runs a statement; how many rows it changed.
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, u64>;

    /// Runs a query; every row.
    fn fetch_all<'a>(&'a mut self, sql: &'a str, args: Vec<SqlValue>)
    -> SqlFuture<'a, Vec<SqlRow>>;
}

/// Typed reads over [`Sql`]: rows as tuples, a [`SqlRow`] or (with
/// [`SqlRow::deserialize`]) structs.
pub trait SqlExt: Sql {
    /// Every row as a `T`.
    fn fetch<'a, T: FromSqlRow + Send + 'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<SqlValue>,
    ) -> impl Future<Output = Result<Vec<T>, Error>> + Send + 'a {
        let rows = self.fetch_all(sql, args);
        async move { rows.await?.iter().map(T::from_row).collect() }
    }

    /// The first row as a `T`, if there is one.
    fn fetch_optional<'a, T: FromSqlRow + Send + 'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<SqlValue>,
    ) -> impl Future<Output = Result<Option<T>, Error>> + Send + 'a {
        let rows = self.fetch_all(sql, args);
        async move { rows.await?.first().map(T::from_row).transpose() }
    }

    /// The first row as a `T`; `NOT_FOUND`/`NO_ROW` when there is none.
    fn fetch_one<'a, T: FromSqlRow + Send + 'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<SqlValue>,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'a {
        let rows = self.fetch_all(sql, args);
        async move {
            let rows = rows.await?;
            let Some(row) = rows.first() else {
                return Err(Error::not_found(
                    "NO_ROW",
                    format!("no row for: {}", statement_head(sql)),
                ));
            };
            T::from_row(row)
        }
    }
}

impl<S: Sql + ?Sized> SqlExt for S {}

impl<S: Sql + ?Sized> Sql for &mut S {
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, u64> {
        (**self).execute(sql, args)
    }
    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<SqlValue>,
    ) -> SqlFuture<'a, Vec<SqlRow>> {
        (**self).fetch_all(sql, args)
    }
}

/// The first words of a statement (up to 60 characters), for error messages.
pub fn statement_head(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
    }
}

/// A store's read pool as [`Sql`], for queries over read models: one type for every store
/// (`SqliteEventStore::read_models`, `PgEventStore::read_models`), so a query handler that
/// takes a `ReadModels` runs on either. Cheap to clone.
#[derive(Clone)]
pub struct ReadModels(Arc<dyn ReadPool>);

impl fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReadModels").field(&self.0.system()).finish()
    }
}

/// A store that keeps read models in its own database (the SQL stores): what generic code
/// over either asks of it.
pub trait SqlStore {
    /// The store's read pool as [`ReadModels`].
    fn read_models(&self) -> ReadModels;
}

/// What [`ReadModels`] runs statements on; implemented by the SQL adapters.
pub trait ReadPool: Send + Sync + 'static {
    /// `"sqlite"` or `"postgresql"`.
    fn system(&self) -> &'static str;
    /// As [`Sql::execute`], on a pooled connection.
    fn execute<'a>(&'a self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, u64>;
    /// As [`Sql::fetch_all`], on a pooled connection.
    fn fetch_all<'a>(&'a self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, Vec<SqlRow>>;
}

impl ReadModels {
    /// Read models on `pool`.
    pub fn new(pool: impl ReadPool) -> ReadModels {
        ReadModels(Arc::new(pool))
    }

    /// The database system: `"sqlite"` or `"postgresql"`.
    pub fn system(&self) -> &'static str {
        self.0.system()
    }

    /// [`Sql::execute`] on a pooled connection, from a shared handle.
    pub async fn execute(&self, sql: &str, args: Vec<SqlValue>) -> Result<u64, Error> {
        self.0.execute(sql, args).await
    }

    /// [`SqlExt::fetch`] on a pooled connection, from a shared handle.
    pub async fn fetch<T: FromSqlRow>(
        &self,
        sql: &str,
        args: Vec<SqlValue>,
    ) -> Result<Vec<T>, Error> {
        self.0
            .fetch_all(sql, args)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }

    /// [`SqlExt::fetch_optional`] on a pooled connection, from a shared handle.
    pub async fn fetch_optional<T: FromSqlRow>(
        &self,
        sql: &str,
        args: Vec<SqlValue>,
    ) -> Result<Option<T>, Error> {
        self.0
            .fetch_all(sql, args)
            .await?
            .first()
            .map(T::from_row)
            .transpose()
    }

    /// [`SqlExt::fetch_one`] on a pooled connection, from a shared handle.
    pub async fn fetch_one<T: FromSqlRow>(
        &self,
        sql: &str,
        args: Vec<SqlValue>,
    ) -> Result<T, Error> {
        self.fetch_optional(sql, args).await?.ok_or_else(|| {
            Error::not_found("NO_ROW", format!("no row for: {}", statement_head(sql)))
        })
    }
}

impl Sql for ReadModels {
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<SqlValue>) -> SqlFuture<'a, u64> {
        self.0.execute(sql, args)
    }
    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<SqlValue>,
    ) -> SqlFuture<'a, Vec<SqlRow>> {
        self.0.fetch_all(sql, args)
    }
}

/// Brings the read model `name` to the last of `steps`: each step (one or more statements
/// separated by `;`, none inside a string literal) runs once, in order, and is recorded in `flext_read_model_migrations`
/// (name, version from 1, the step's text); a step already recorded is skipped, one whose
/// text changed since is refused (`FAILED_PRECONDITION`/`MIGRATION_CHANGED`: add a step,
/// never edit one). Run it from a projection's `setup`, in its transaction, so the tables
/// exist before the first event and a rebuild finds them.
pub async fn migrate(
    sql: &mut (impl Sql + ?Sized),
    name: &str,
    steps: &[&str],
) -> Result<(), Error> {
    sql.execute(
        "CREATE TABLE IF NOT EXISTS flext_read_model_migrations (\
         name TEXT NOT NULL, version BIGINT NOT NULL, script TEXT NOT NULL, \
         PRIMARY KEY (name, version))",
        Vec::new(),
    )
    .await?;
    let done: Vec<(i64, String)> = sql
        .fetch(
            "SELECT version, script FROM flext_read_model_migrations WHERE name = $1 ORDER BY version",
            vec![SqlValue::from(name)],
        )
        .await?;
    for (i, step) in steps.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if let Some((_, script)) = done.iter().find(|(v, _)| *v == version) {
            if script != step {
                return Err(Error::failed_precondition(
                    "MIGRATION_CHANGED",
                    format!(
                        "step {version} of read model {name:?} was changed after it ran: add a step instead"
                    ),
                )
                .with_detail("read_model", name)
                .with_detail("version", version));
            }
            continue;
        }
        for statement in step.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sql.execute(statement, Vec::new()).await?;
        }
        sql.execute(
            "INSERT INTO flext_read_model_migrations (name, version, script) VALUES ($1, $2, $3)",
            vec![
                SqlValue::from(name),
                SqlValue::Int(version),
                SqlValue::from(*step),
            ],
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> SqlRow {
        let columns: Arc<[String]> = ["id", "n", "ratio", "flag", "blob", "gone"]
            .into_iter()
            .map(String::from)
            .collect();
        SqlRow::new(
            columns,
            vec![
                SqlValue::from("a"),
                SqlValue::Int(7),
                SqlValue::Float(0.5),
                SqlValue::Int(1),
                SqlValue::Bytes(vec![1, 2]),
                SqlValue::Null,
            ],
        )
    }

    #[test]
    fn a_row_reads_by_name_and_position_with_typed_errors() {
        let r = row();
        assert_eq!(r.columns()[1], "n");
        assert_eq!(r.values()[1], SqlValue::Int(7));
        assert_eq!(r.get::<String>("id").expect("id"), "a");
        assert_eq!(r.get::<i64>("n").expect("n"), 7);
        assert_eq!(r.get::<i32>("n").expect("n"), 7);
        assert_eq!(r.get::<u64>("n").expect("n"), 7);
        assert_eq!(r.get::<f64>("n").expect("n as float"), 7.0);
        assert_eq!(r.get::<f64>("ratio").expect("ratio"), 0.5);
        assert!(r.get::<bool>("flag").expect("1 is true"));
        assert_eq!(r.get::<Vec<u8>>("blob").expect("blob"), [1, 2]);
        assert_eq!(r.get::<Option<i64>>("gone").expect("null"), None);
        assert_eq!(r.get::<Option<i64>>("n").expect("some"), Some(7));
        assert_eq!(
            r.get::<SqlValue>("ratio").expect("raw"),
            SqlValue::Float(0.5)
        );
        let e = r.get::<i64>("nope").expect_err("no such column");
        assert_eq!(e.reason(), "NO_SUCH_COLUMN");
        assert!(e.message().contains("nope"), "{e}");
        assert_eq!(
            r.at::<i64>(9).expect_err("past the end").reason(),
            "NO_SUCH_COLUMN"
        );
        let e = r.get::<i64>("id").expect_err("text is not an integer");
        assert_eq!(e.reason(), "COLUMN_TYPE_MISMATCH");
        assert!(
            e.message().contains("\"id\"")
                && e.message().contains("holds text")
                && e.message().contains("an integer"),
            "{e}"
        );
        assert!(r.get::<i64>("n").is_ok() && r.get::<String>("n").is_err());
    }

    #[test]
    fn every_reader_refuses_what_it_does_not_read() {
        let text = SqlValue::from("x");
        assert!(i64::from_sql(&text).is_err());
        assert_eq!(i64::from_sql(&SqlValue::Bool(true)), Ok(1));
        assert!(i32::from_sql(&SqlValue::Int(i64::MAX)).is_err());
        assert!(u64::from_sql(&SqlValue::Int(-1)).is_err());
        assert!(bool::from_sql(&SqlValue::Int(2)).is_err());
        assert_eq!(bool::from_sql(&SqlValue::Int(0)), Ok(false));
        assert_eq!(bool::from_sql(&SqlValue::Bool(true)), Ok(true));
        assert!(bool::from_sql(&text).is_err());
        assert!(f64::from_sql(&text).is_err());
        assert!(String::from_sql(&SqlValue::Int(1)).is_err());
        assert!(Vec::<u8>::from_sql(&text).is_err());
        assert!(Option::<i64>::from_sql(&text).is_err());
        for (v, kind) in [
            (SqlValue::Null, "NULL"),
            (SqlValue::Bool(true), "a boolean"),
            (SqlValue::Int(1), "an integer"),
            (SqlValue::Float(1.0), "a float"),
            (text.clone(), "text"),
            (SqlValue::Bytes(Vec::new()), "bytes"),
        ] {
            assert_eq!(v.kind(), kind);
        }
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Item {
        id: String,
        n: i64,
        ratio: f64,
        flag: i64,
        blob: Vec<u8>,
        gone: Option<String>,
    }

    #[test]
    fn a_row_reads_as_a_struct_by_column_name() {
        assert_eq!(
            row().deserialize::<Item>().expect("struct"),
            Item {
                id: "a".into(),
                n: 7,
                ratio: 0.5,
                flag: 1,
                blob: vec![1, 2],
                gone: None
            }
        );
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Wrong {
            id: i64,
        }
        let e = row().deserialize::<Wrong>().expect_err("id is text");
        assert_eq!(e.reason(), "ROW_MISMATCH");
        let t: (String, i64, f64) = FromSqlRow::from_row(&row()).expect("tuple");
        assert_eq!(t, ("a".to_owned(), 7, 0.5));
        let bools = SqlRow::new(
            ["b".to_owned()].into_iter().collect(),
            vec![SqlValue::Bool(true)],
        );
        assert_eq!(json_of(&SqlValue::Bool(true)), serde_json::json!(true));
        assert_eq!(
            bools.deserialize::<serde_json::Value>().expect("map")["b"],
            true
        );
    }

    #[test]
    fn arguments_convert_from_the_usual_types() {
        assert_eq!(
            crate::sql_args![
                1i64,
                2i32,
                3u32,
                true,
                0.5f64,
                "s",
                String::from("t"),
                None::<i64>,
                Some(4i64),
                vec![9u8]
            ],
            vec![
                SqlValue::Int(1),
                SqlValue::Int(2),
                SqlValue::Int(3),
                SqlValue::Bool(true),
                SqlValue::Float(0.5),
                SqlValue::Text("s".into()),
                SqlValue::Text("t".into()),
                SqlValue::Null,
                SqlValue::Int(4),
                SqlValue::Bytes(vec![9]),
            ]
        );
        let id = flext_domain::Id::<String>::new();
        assert_eq!(SqlValue::from(&id), SqlValue::Text(id.to_string()));
    }

    #[test]
    fn a_statement_is_named_by_its_first_words() {
        assert_eq!(statement_head("SELECT  1\n FROM   t"), "SELECT 1 FROM t");
        let long = format!("SELECT {}", "x, ".repeat(40));
        let head = statement_head(&long);
        assert!(
            head.ends_with("...") && head.chars().count() == 63,
            "{head}"
        );
    }
}

//! The store the command line works on: SQLite or PostgreSQL, chosen by the URL.

use std::path::Path;
use std::time::Duration;

use flext_domain::{Error, TenantId};
use flext_postgres::PgEventStore;
use flext_sqlite::SqliteEventStore;

/// The store the command line opened (from `--database`): SQLite or PostgreSQL, without
/// migrating (`flext migrate apply` does).
#[derive(Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(SqliteEventStore),
    /// A PostgreSQL database (and schema).
    Pg(PgEventStore),
}

/// Runs `$body` with `$s` bound to the store, whichever kind it is.
macro_rules! on_store {
    ($db:expr, $s:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($s) => $body,
            $crate::store::Db::Pg($s) => $body,
        }
    };
}
pub(crate) use on_store;

impl Db {
    /// Opens the store at `url`: `postgres://...` (with `schema`, and `tenant` in a
    /// schema of shared tables), `sqlite:...`, or the path of an existing SQLite file.
    /// Nothing is created or migrated.
    pub async fn open(
        url: &str,
        schema: Option<&str>,
        tenant: Option<TenantId>,
    ) -> Result<Db, Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut builder = PgEventStore::builder(url)
                .migrate(false)
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10));
            if let Some(schema) = schema {
                builder = builder.schema(schema);
            }
            if let Some(tenant) = tenant {
                builder = builder.tenant(tenant);
            }
            return Ok(Db::Pg(builder.connect().await?));
        }
        if tenant.is_some() {
            return Err(Error::invalid_argument(
                "TENANT_NOT_SUPPORTED",
                "--tenant applies to PostgreSQL's shared tables only; a SQLite tenant is a \
                 file of its own: give its path",
            ));
        }
        if schema.is_some() {
            return Err(Error::invalid_argument(
                "SCHEMA_NOT_SUPPORTED",
                "--schema applies to PostgreSQL only; a SQLite store is one file",
            ));
        }
        let builder = if url.starts_with("sqlite:") {
            SqliteEventStore::builder_url(url)?
        } else {
            let path = Path::new(url);
            if !path.is_file() {
                return Err(Error::not_found(
                    "DATABASE_NOT_FOUND",
                    format!(
                        "no SQLite database at {url:?} (give a file that exists, a sqlite: URL \
                         or a postgres:// URL)"
                    ),
                )
                .with_detail("path", url));
            }
            SqliteEventStore::builder(path)
        };
        Ok(Db::Sqlite(builder.migrate(false).readers(2).open().await?))
    }

    /// `sqlite` or `postgresql`.
    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Pg(_) => "postgresql",
        }
    }
}

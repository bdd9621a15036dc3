//! flext's PostgreSQL event and snapshot store (sqlx), with the same contract as every
//! other flext store.
//!
//! An append is one statement (one round trip in autocommit): it checks the expected
//! version, numbers the events and inserts them all. Writers to different streams share
//! no lock. Read-all is gap-safe without a global lock or a timeout: positions are derived
//! from the writing transaction's id, and a reader only returns rows of transactions older
//! than every transaction still running.
//!
//! ```no_run
//! use flext::{EventId, ExpectedVersion, NewEvent, StreamId};
//! use flext::ports::EventStore;
//! use flext::postgres::PgEventStore;
//!
//! # async fn run() -> Result<(), flext::Error> {
//! let store = PgEventStore::connect("postgres://localhost/app").await?;
//! let stream = StreamId::new("account-1")?;
//! let event = NewEvent::new(EventId::new(), "account.opened", &b"{}"[..]);
//! store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//! # Ok(()) }
//! ```

mod control;
mod dcb;
mod inbox;
mod job;
mod keys;
mod lifecycle;
mod notify;
mod outbox;
mod ownership;
mod process;
mod schedule;
mod shadow;
pub mod shared;
mod sql;
mod store;
mod tenancy;

pub use shared::{PgSharedTenantStores, TENANT_SETTING};
pub use store::{MIGRATIONS_TABLE, PgEventStore, PgStoreBuilder, PgWriteTransaction, migrator};
pub use tenancy::PgTenantStores;

/// The `sqlx` this store is built on (its version and features), for SQL of your own in the
/// same database without a second dependency to keep in step.
pub use sqlx;

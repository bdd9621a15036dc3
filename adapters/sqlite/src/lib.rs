//! flext's SQLite event and snapshot store (sqlx): the embedded default, with the same
//! contract as every other flext store.
//!
//! One connection writes, behind an in-process queue (a fair async mutex), so concurrent
//! appends never fight over SQLite's file lock; a pool of connections reads in WAL mode.
//! Positions are rowids assigned by that one writer inside its transaction, so commit
//! order is position order and read-all never skips an event.
//!
//! ```no_run
//! use flext::{EventId, ExpectedVersion, NewEvent, StreamId};
//! use flext::ports::EventStore;
//! use flext::sqlite::SqliteEventStore;
//!
//! # async fn run() -> Result<(), flext::Error> {
//! let store = SqliteEventStore::open("events.db").await?;
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
mod outbox;
mod ownership;
mod process;
mod schedule;
mod shadow;
mod sql;
mod store;
mod tenancy;

pub use store::{
    MIGRATIONS_TABLE, SqliteEventStore, SqliteStoreBuilder, SqliteWriteTransaction, Synchronous,
    migrator,
};
pub use tenancy::SqliteTenantStores;

/// The `sqlx` this store is built on (its version and features), for SQL of your own in the
/// same database without a second dependency to keep in step.
pub use sqlx;

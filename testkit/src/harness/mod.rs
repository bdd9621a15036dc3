//! Harnesses for the adapters of this workspace, one per feature.

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "memory")]
pub use memory::MemoryHarness;
#[cfg(feature = "postgres")]
pub use postgres::{PgHarness, database_url, fresh_pg_store};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteHarness;

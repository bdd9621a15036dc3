//! Harnesses for the adapters of this workspace, one per feature.

/// The [`crate::Harness`] hooks that run in a transaction of the store's own
/// (`self.store.transaction()`): written once for the SQL stores, whose transaction types
/// differ but offer the same `append`, `commit` and `rollback`.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! transaction_hooks {
    () => {
        async fn append_after_a_write(
            &self,
            a: &StreamId,
            first: Vec<NewEvent>,
            b: &StreamId,
            second: Vec<NewEvent>,
            pause: std::time::Duration,
        ) -> Result<(), Error> {
            let mut tx = self.store.transaction().await?;
            tx.append(a, ExpectedVersion::Any, first).await?;
            tokio::time::sleep(pause).await;
            tx.append(b, ExpectedVersion::Any, second).await?;
            tx.commit().await
        }

        async fn refused_in_a_transaction(&self, stream: &StreamId) -> (Error, Result<(), Error>) {
            let one = || vec![NewEvent::new(flext_domain::EventId::new(), "t", &b"{}"[..])];
            let mut tx = self.store.transaction().await.expect("begin");
            tx.append(stream, ExpectedVersion::NoStream, one())
                .await
                .expect("the first append");
            let refused = tx
                .append(stream, ExpectedVersion::NoStream, one())
                .await
                .expect_err("the second is refused");
            let rest = async {
                tx.append(stream, ExpectedVersion::Exact(StreamVersion(1)), one())
                    .await?;
                tx.commit().await
            }
            .await;
            (refused, rest)
        }

        async fn append_in_transaction(
            &self,
            stream: &StreamId,
            events: Vec<NewEvent>,
        ) -> Result<AppendOutcome, Error> {
            let mut tx = self.store.transaction().await?;
            let out = tx.append(stream, ExpectedVersion::Any, events).await?;
            tx.commit().await?;
            Ok(out)
        }
    };
}
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use transaction_hooks;

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "memory")]
pub use memory::MemoryHarness;
#[cfg(feature = "postgres")]
pub use postgres::{
    PgHarness, PgSharedHarness, TENANT_TEST_ROLE, database_url, fresh_pg_store,
    fresh_shared_schema, url_as,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteHarness;

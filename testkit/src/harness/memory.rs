//! The harness for `flext-memory`.

use bytes::Bytes;
use flext_domain::{Error, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use flext_memory::{InMemoryEventStore, PendingAppend};
use flext_ports::{AppendOutcome, EventStore};

use crate::{Harness, Held};

/// Runs the suite on [`InMemoryEventStore`].
pub struct MemoryHarness {
    store: InMemoryEventStore,
    tenants: flext_memory::InMemoryTenantStores,
}

/// A pending in-memory append.
pub struct MemoryHeld(PendingAppend);

impl Held for MemoryHeld {
    async fn commit(self) -> Result<AppendOutcome, Error> {
        Ok(self.0.commit())
    }
}

impl Harness for MemoryHarness {
    type Store = InMemoryEventStore;
    type Held = MemoryHeld;
    type Tenants = flext_memory::InMemoryTenantStores;
    const SERIALIZED_WRITERS: bool = false;

    async fn fresh() -> Self {
        MemoryHarness {
            store: InMemoryEventStore::new(),
            tenants: flext_memory::InMemoryTenantStores::new(),
        }
    }

    fn store(&self) -> InMemoryEventStore {
        self.store.clone()
    }

    fn tenants(&self) -> flext_memory::InMemoryTenantStores {
        self.tenants.clone()
    }

    async fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<MemoryHeld, Error> {
        self.store
            .begin_append(stream, expected, events)
            .map(MemoryHeld)
    }

    async fn append_after_a_write(
        &self,
        a: &StreamId,
        first: Vec<NewEvent>,
        b: &StreamId,
        second: Vec<NewEvent>,
        pause: std::time::Duration,
    ) -> Result<(), Error> {
        self.store.append(a, ExpectedVersion::Any, first).await?;
        tokio::time::sleep(pause).await;
        self.store.append(b, ExpectedVersion::Any, second).await?;
        Ok(())
    }

    async fn refused_in_a_transaction(&self, stream: &StreamId) -> (Error, Result<(), Error>) {
        let one = || vec![NewEvent::new(flext_domain::EventId::new(), "t", &b"{}"[..])];
        self.store
            .append(stream, ExpectedVersion::NoStream, one())
            .await
            .expect("the first append");
        let refused = self
            .store
            .append(stream, ExpectedVersion::NoStream, one())
            .await
            .expect_err("the second is refused");
        let rest = self
            .store
            .append(stream, ExpectedVersion::Exact(StreamVersion(1)), one())
            .await
            .map(|_| ());
        (refused, rest)
    }

    async fn append_in_transaction(
        &self,
        stream: &StreamId,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        self.store
            .append(stream, ExpectedVersion::Any, events)
            .await
    }

    async fn corrupt_payload(&self, stream: &StreamId, version: StreamVersion) {
        let found =
            self.store
                .overwrite_payload(stream, version, Bytes::from_static(b"\x00garbage{"));
        assert!(found, "no event {version} in {stream}");
    }

    async fn corrupt_metadata(&self, _stream: &StreamId, _version: StreamVersion) -> bool {
        false
    }

    async fn cleanup(self) {}
}

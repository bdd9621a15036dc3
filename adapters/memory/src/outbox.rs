//! The outbox in memory: messages take their positions when their transaction commits.

use flext_domain::Error;
use flext_ports::{OutboundMessage, OutboxMessage, OutboxStore};

use crate::store::{InMemoryEventStore, MemoryTransaction};

impl OutboxStore for InMemoryEventStore {
    async fn send_in(
        &self,
        tx: &mut MemoryTransaction,
        message: &OutboxMessage,
    ) -> Result<(), Error> {
        tx.outbox.push(message.clone());
        Ok(())
    }

    async fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboundMessage>, Error> {
        Ok(self
            .lock()
            .outbox
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn outbox_sent(&self, tx: &mut MemoryTransaction, through: u64) -> Result<u64, Error> {
        tx.outbox_sent = Some(tx.outbox_sent.map_or(through, |t| t.max(through)));
        Ok(self.lock().outbox.range(..=through).count() as u64)
    }
}

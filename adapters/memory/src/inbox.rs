//! Inbox records in memory, written when the handler's transaction commits.

use std::time::Duration;

use flext_domain::Error;
use flext_ports::{Clock, InboxDeadLetter, InboxStore};

use crate::store::{InMemoryEventStore, MemoryTransaction};

impl InboxStore for InMemoryEventStore {
    async fn receive(
        &self,
        tx: &mut MemoryTransaction,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, Error> {
        let key = (consumer.to_owned(), message_id.to_owned());
        if tx.inbox.contains(&key) || self.lock().inbox.contains_key(&key) {
            return Ok(false);
        }
        tx.inbox.push(key);
        Ok(true)
    }

    async fn park_message(
        &self,
        tx: &mut MemoryTransaction,
        letter: &InboxDeadLetter,
    ) -> Result<(), Error> {
        tx.inbox_dead.push(letter.clone());
        Ok(())
    }

    async fn inbox_dead_letters(&self, consumer: &str) -> Result<Vec<InboxDeadLetter>, Error> {
        let mut letters: Vec<InboxDeadLetter> = self
            .lock()
            .inbox_dead
            .values()
            .filter(|l| l.consumer == consumer)
            .cloned()
            .collect();
        letters.sort_by(|a, b| (a.parked_at, &a.message_id).cmp(&(b.parked_at, &b.message_id)));
        Ok(letters)
    }

    async fn purge_inbox(&self, consumer: &str, older_than: Duration) -> Result<u64, Error> {
        // Older than the clock can go back: nothing is that old.
        let Some(cutoff) = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|d| self.clock.now().checked_sub_signed(d))
        else {
            return Ok(0);
        };
        let mut state = self.lock();
        let before = state.inbox.len();
        state
            .inbox
            .retain(|(c, _), at| c != consumer || *at >= cutoff);
        Ok((before - state.inbox.len()) as u64)
    }
}

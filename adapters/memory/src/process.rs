//! Process managers' state in memory: written through the transaction, applied with its
//! checkpoint on commit.

use flext_domain::Error;
use flext_ports::{ProcessStore, Scheduled, StoredProcess};

use crate::{InMemoryEventStore, MemoryTransaction};

impl ProcessStore for InMemoryEventStore {
    async fn load_process(
        &self,
        tx: &mut MemoryTransaction,
        manager: &str,
        association: &str,
    ) -> Result<Option<StoredProcess>, Error> {
        // What this transaction wrote last, else what is committed.
        if let Some((_, _, written)) = tx
            .processes
            .iter()
            .rev()
            .find(|(m, a, _)| m == manager && a == association)
        {
            return Ok(written.clone());
        }
        Ok(self
            .lock()
            .processes
            .get(&(manager.to_owned(), association.to_owned()))
            .cloned())
    }

    async fn save_process(
        &self,
        tx: &mut MemoryTransaction,
        manager: &str,
        association: &str,
        process: &StoredProcess,
    ) -> Result<(), Error> {
        tx.processes.push((
            manager.to_owned(),
            association.to_owned(),
            Some(process.clone()),
        ));
        Ok(())
    }

    async fn end_process(
        &self,
        tx: &mut MemoryTransaction,
        manager: &str,
        association: &str,
    ) -> Result<(), Error> {
        tx.processes
            .push((manager.to_owned(), association.to_owned(), None));
        Ok(())
    }

    async fn schedule_in(
        &self,
        tx: &mut MemoryTransaction,
        message: &Scheduled,
    ) -> Result<(), Error> {
        tx.scheduled.push(Ok(crate::schedule::kept(message)));
        Ok(())
    }

    async fn cancel_in(&self, tx: &mut MemoryTransaction, key: &str) -> Result<bool, Error> {
        let written = tx.scheduled.iter().rev().find_map(|c| match c {
            Ok(m) if m.key == key => Some(true),
            Err(k) if k == key => Some(false),
            _ => None,
        });
        let pending = match written {
            Some(p) => p,
            None => self.lock().schedule.contains_key(key),
        };
        tx.scheduled.push(Err(key.to_owned()));
        Ok(pending)
    }

    async fn processes(&self, manager: &str) -> Result<Vec<(String, StoredProcess)>, Error> {
        Ok(self
            .lock()
            .processes
            .iter()
            .filter(|((m, _), _)| m == manager)
            .map(|((_, a), p)| (a.clone(), p.clone()))
            .collect())
    }
}

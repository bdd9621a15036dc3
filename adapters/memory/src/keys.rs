//! Data keys in memory.

use flext_domain::Error;
use flext_ports::KeyStore;
use flext_ports::adapter::check_key_name;

use crate::InMemoryEventStore;

impl KeyStore for InMemoryEventStore {
    async fn data_key(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        check_key_name(name)?;
        Ok(self.lock().data_keys.get(name).cloned())
    }

    async fn create_data_key(&self, name: &str, wrapped: Vec<u8>) -> Result<Vec<u8>, Error> {
        check_key_name(name)?;
        Ok(self
            .lock()
            .data_keys
            .entry(name.to_owned())
            .or_insert(wrapped)
            .clone())
    }

    async fn link_data_key(&self, subject: &str, dependent: &str) -> Result<(), Error> {
        check_key_name(subject)?;
        check_key_name(dependent)?;
        self.lock()
            .key_links
            .insert((subject.to_owned(), dependent.to_owned()));
        Ok(())
    }

    async fn forget_data_key(&self, subject: &str) -> Result<u64, Error> {
        check_key_name(subject)?;
        let mut state = self.lock();
        let dependents: Vec<String> = state
            .key_links
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, d)| d.clone())
            .collect();
        state.key_links.retain(|(s, _)| s != subject);
        let mut n = u64::from(state.data_keys.remove(subject).is_some());
        for d in dependents {
            n += u64::from(state.data_keys.remove(&d).is_some());
        }
        Ok(n)
    }
}

//! Scheduled messages in memory: a map by key, under the store's lock.

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::{ScheduleStore, Scheduled};

use crate::InMemoryEventStore;

impl ScheduleStore for InMemoryEventStore {
    async fn schedule(&self, message: &Scheduled) -> Result<(), Error> {
        self.lock()
            .schedule
            .insert(message.key.clone(), kept(message));
        Ok(())
    }

    async fn cancel(&self, key: &str) -> Result<bool, Error> {
        Ok(self.lock().schedule.remove(key).is_some())
    }

    async fn due(&self, now: DateTime<Utc>, max: usize) -> Result<Vec<Scheduled>, Error> {
        let state = self.lock();
        let mut due: Vec<Scheduled> = state
            .schedule
            .values()
            .filter(|m| m.due_at <= now)
            .cloned()
            .collect();
        due.sort_by_key(|m| m.due_at);
        due.truncate(max);
        Ok(due)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, Error> {
        Ok(self.lock().schedule.values().map(|m| m.due_at).min())
    }

    async fn delivered(&self, message: &Scheduled) -> Result<(), Error> {
        let mut state = self.lock();
        if state
            .schedule
            .get(&message.key)
            .is_some_and(|m| m.id == message.id)
        {
            state.schedule.remove(&message.key);
        }
        Ok(())
    }
}

/// `message` as the store keeps it: its due time to the microsecond, as the SQL stores
/// keep it.
pub(crate) fn kept(message: &Scheduled) -> Scheduled {
    let mut kept = message.clone();
    kept.due_at = DateTime::from_timestamp_micros(message.due_at.timestamp_micros())
        .unwrap_or(message.due_at);
    kept
}

//! Control requests and pauses in memory, for the runners of one process.

use flext_domain::{Error, EventId};
use flext_ports::adapter::unknown_dead_letter;
use flext_ports::{ControlAction, ControlRequest, ControlState, ControlStore, DeadLetterEdit};
use uuid::Uuid;

use crate::store::InMemoryEventStore;

impl ControlStore for InMemoryEventStore {
    async fn request_control(
        &self,
        consumer: &str,
        action: &ControlAction,
        requested_by: &str,
    ) -> Result<ControlRequest, Error> {
        let request = ControlRequest {
            id: Uuid::now_v7(),
            consumer: consumer.to_owned(),
            action: action.clone(),
            requested_by: requested_by.to_owned(),
            requested_at: self.clock.now(),
            state: ControlState::Pending,
            taken_by: None,
            finished_at: None,
            result: None,
            error: None,
        };
        self.lock().controls.push(request.clone());
        self.consumers_changed.pulse();
        Ok(request)
    }

    async fn pending_controls(&self) -> Result<Vec<ControlRequest>, Error> {
        Ok(self
            .lock()
            .controls
            .iter()
            .filter(|c| c.state == ControlState::Pending)
            .cloned()
            .collect())
    }

    async fn take_control(&self, id: Uuid, taken_by: &str) -> Result<bool, Error> {
        let mut state = self.lock();
        let Some(c) = state
            .controls
            .iter_mut()
            .find(|c| c.id == id && c.state == ControlState::Pending)
        else {
            return Ok(false);
        };
        c.state = ControlState::Running;
        c.taken_by = Some(taken_by.to_owned());
        Ok(true)
    }

    async fn requeue_controls(&self, consumer: &str, owner: &str) -> Result<u64, Error> {
        let mut state = self.lock();
        let mut n = 0;
        for c in state.controls.iter_mut().filter(|c| {
            c.consumer == consumer
                && c.state == ControlState::Running
                && c.taken_by.as_deref() != Some(owner)
        }) {
            c.state = ControlState::Pending;
            c.taken_by = None;
            n += 1;
        }
        Ok(n)
    }

    async fn finish_control(
        &self,
        id: Uuid,
        outcome: Result<serde_json::Value, Error>,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        if let Some(c) = self.lock().controls.iter_mut().find(|c| c.id == id) {
            c.finished_at = Some(now);
            match outcome {
                Ok(v) => {
                    c.state = ControlState::Done;
                    c.result = Some(v);
                }
                Err(e) => {
                    c.state = ControlState::Failed;
                    c.error = Some(e);
                }
            }
        }
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn control_request(&self, id: Uuid) -> Result<Option<ControlRequest>, Error> {
        Ok(self.lock().controls.iter().find(|c| c.id == id).cloned())
    }

    async fn set_paused(&self, consumer: &str, paused: bool, _by: &str) -> Result<(), Error> {
        {
            let mut state = self.lock();
            if paused {
                state.paused.insert(consumer.to_owned());
            } else {
                state.paused.remove(consumer);
            }
        }
        self.consumers_changed.pulse();
        Ok(())
    }

    async fn paused_consumers(&self) -> Result<Vec<String>, Error> {
        Ok(self.lock().paused.iter().cloned().collect())
    }

    async fn discard_dead_letter(&self, consumer: &str, event_id: EventId) -> Result<bool, Error> {
        Ok(self
            .lock()
            .dead_letters
            .get_mut(consumer)
            .and_then(|l| l.remove(&event_id))
            .is_some())
    }

    async fn edit_dead_letter(
        &self,
        consumer: &str,
        event_id: EventId,
        payload: &[u8],
        by: &str,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let mut state = self.lock();
        let parked = state
            .dead_letters
            .get(consumer)
            .is_some_and(|l| l.contains_key(&event_id));
        if !parked {
            return Err(unknown_dead_letter(consumer, event_id));
        }
        state.dead_letter_edits.insert(
            (consumer.to_owned(), event_id),
            DeadLetterEdit {
                payload: payload.to_vec(),
                edited_by: by.to_owned(),
                edited_at: now,
            },
        );
        Ok(())
    }

    async fn dead_letter_edit(
        &self,
        consumer: &str,
        event_id: EventId,
    ) -> Result<Option<DeadLetterEdit>, Error> {
        Ok(self
            .lock()
            .dead_letter_edits
            .get(&(consumer.to_owned(), event_id))
            .cloned())
    }

    async fn mark_personal(&self, event_type: &str, fields: &[&str]) -> Result<(), Error> {
        let mut state = self.lock();
        for f in fields {
            state
                .personal
                .insert((event_type.to_owned(), (*f).to_owned()));
        }
        Ok(())
    }

    async fn personal_fields(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(self.lock().personal.iter().cloned().collect())
    }
}

//! Control of consumers from outside the process that runs them: requests stored in the
//! store's database, carried out by the consumer's owner, answered with an outcome.
//!
//! An operator (the `flext` command line, the admin console) stores a [`ControlRequest`];
//! the store announces it (PostgreSQL: on the consumers' notification channel; SQLite:
//! owners poll); the instance that owns the consumer takes it
//! ([`ControlStore::take_control`], once), carries it out between two batches and
//! stores the outcome ([`ControlStore::finish_control`]), which the operator reads back.
//! A pause is also a flag of its own ([`ControlStore::paused_consumers`]), so a paused
//! consumer stays paused when another instance takes it over or the service restarts.

use std::future::Future;

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventId, Position};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a rebuild starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildFrom {
    /// From the first event: the projection's `reset` empties the read model first, in the
    /// transaction that moves the checkpoint back.
    Start,
    /// From the event after this position (the read model is not emptied: the projection
    /// must overwrite what those events produce).
    Position(Position),
    /// From the first event recorded at or after this time (as with `Position`).
    Time(DateTime<Utc>),
}

/// What an operator asks of a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// Stop handling events after the batch in hand, until resumed (also across
    /// restarts and takeovers).
    Pause,
    /// Handle events again after a pause, or restart a consumer that failed on an event.
    Resume,
    /// Move the checkpoint back and catch up again.
    Rebuild {
        /// Where the rebuild starts.
        from: RebuildFrom,
    },
    /// Rebuild the projection into a shadow (a schema or file of its own) from the first
    /// event up to its checkpoint and compare it with the live read model, row by row;
    /// the live projection waits meanwhile, so both stand at the same checkpoint.
    Verify,
    /// Hand parked events to the consumer again: one (`event_id`) or all.
    Redrive {
        /// The parked event to redrive; `None`: every one, in position order.
        event_id: Option<EventId>,
    },
}

impl ControlAction {
    /// The action's name: `pause`, `resume`, `rebuild`, `verify` or `redrive`.
    pub fn name(&self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Rebuild { .. } => "rebuild",
            ControlAction::Verify => "verify",
            ControlAction::Redrive { .. } => "redrive",
        }
    }
}

/// Where a control request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlState {
    /// Stored; no owner has taken it yet.
    Pending,
    /// An owner took it and is carrying it out.
    Running,
    /// Carried out; the outcome is in [`ControlRequest::result`].
    Done,
    /// Refused or failed; the error is in [`ControlRequest::error`].
    Failed,
}

impl ControlState {
    /// The state's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlState::Pending => "pending",
            ControlState::Running => "running",
            ControlState::Done => "done",
            ControlState::Failed => "failed",
        }
    }

    /// The state of a stored name.
    pub fn parse(s: &str) -> Option<ControlState> {
        Some(match s {
            "pending" => ControlState::Pending,
            "running" => ControlState::Running,
            "done" => ControlState::Done,
            "failed" => ControlState::Failed,
            _ => return None,
        })
    }
}

/// A stored control request and, once carried out, its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The request's id.
    pub id: Uuid,
    /// The consumer it is for.
    pub consumer: String,
    /// What is asked.
    pub action: ControlAction,
    /// Who asked (an operator's name, `user@host` for the command line).
    pub requested_by: String,
    /// When it was stored (store clock).
    pub requested_at: DateTime<Utc>,
    /// Where it is.
    pub state: ControlState,
    /// The instance that took it (`name@host:pid`).
    pub taken_by: Option<String>,
    /// When it was carried out or refused.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it did (for a rebuild `{"restart_after": position}`; for a verify
    /// `{"checkpoint", "events", "differences", "tables": [TableDiff]}`; for a redrive
    /// `{"redriven": n, "still_failing": [event ids]}`).
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<Error>,
}

/// Control requests and pauses, kept in the store's database; implemented by the memory,
/// SQLite and PostgreSQL stores. The projection runner reads them; operators write them.
pub trait ControlStore: Send + Sync {
    /// Stores a pending request for `consumer` and announces it to the instances.
    fn request_control(
        &self,
        consumer: &str,
        action: &ControlAction,
        requested_by: &str,
    ) -> impl Future<Output = Result<ControlRequest, Error>> + Send;

    /// The requests no instance has taken yet, oldest first.
    fn pending_controls(&self) -> impl Future<Output = Result<Vec<ControlRequest>, Error>> + Send;

    /// Takes pending request `id` for `taken_by`: true for the one caller that moved it
    /// to `running`, false when it was taken (or finished) already.
    fn take_control(
        &self,
        id: Uuid,
        taken_by: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Puts the requests for `consumer` that an instance other than `owner` took and never
    /// finished back to pending, and returns how many. The instance that has just
    /// acquired `consumer` calls it: a request taken by a previous owner that stopped or
    /// lost its lease mid-way would otherwise stay `running` for ever. Every action is
    /// safe to carry out again (pause and resume set a flag, rebuild and verify start
    /// over, redrive hands over what is still parked).
    fn requeue_controls(
        &self,
        consumer: &str,
        owner: &str,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Stores the outcome of request `id` (done with `result`, or failed with the error)
    /// and announces it.
    fn finish_control(
        &self,
        id: Uuid,
        outcome: Result<serde_json::Value, Error>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Request `id`, wherever it is.
    fn control_request(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<ControlRequest>, Error>> + Send;

    /// Marks `consumer` paused (`by` whom) or not; a paused consumer handles nothing until
    /// unpaused, whichever instance owns it.
    fn set_paused(
        &self,
        consumer: &str,
        paused: bool,
        by: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The paused consumers, by name.
    fn paused_consumers(&self) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Removes the dead letter of `consumer` for `event_id` without handling it again;
    /// whether there was one.
    fn discard_dead_letter(
        &self,
        consumer: &str,
        event_id: EventId,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Stores `payload` as the fixed payload of the dead letter of `consumer` for
    /// `event_id` (`by` whom): a redrive hands the consumer the event with the newest
    /// fixed payload; the stored event is never changed. `NOT_FOUND` without such a dead
    /// letter.
    fn edit_dead_letter(
        &self,
        consumer: &str,
        event_id: EventId,
        payload: &[u8],
        by: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The newest fixed payload of the dead letter of `consumer` for `event_id`.
    fn dead_letter_edit(
        &self,
        consumer: &str,
        event_id: EventId,
    ) -> impl Future<Output = Result<Option<DeadLetterEdit>, Error>> + Send;

    /// Marks `fields` of the payloads of `event_type` personal (adding to those marked):
    /// operators' views mask them unless asked to show them. A field is a top-level key or
    /// a dotted path (`address.street`).
    fn mark_personal(
        &self,
        event_type: &str,
        fields: &[&str],
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Every personal field, as (event type, field).
    fn personal_fields(&self) -> impl Future<Output = Result<Vec<(String, String)>, Error>> + Send;
}

/// A payload an operator fixed before redriving a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterEdit {
    /// The fixed payload.
    pub payload: Vec<u8>,
    /// Who fixed it.
    pub edited_by: String,
    /// When.
    pub edited_at: DateTime<Utc>,
}

/// The dead letter a fix was refused for: `NOT_FOUND`/`UNKNOWN_DEAD_LETTER`.
pub fn unknown_dead_letter(consumer: &str, event_id: EventId) -> Error {
    Error::not_found(
        "UNKNOWN_DEAD_LETTER",
        format!("{consumer:?} has no dead letter for event {event_id}"),
    )
    .with_detail("projection", consumer)
    .with_detail("event_id", event_id.to_string())
}

/// Replaces the value of every field of `fields` (top-level keys or dotted paths) found
/// in `payload` with `"[REDACTED]"` ([`flext_domain::REDACTED`]); how many it masked.
pub fn mask_fields<'a>(
    payload: &mut serde_json::Value,
    fields: impl IntoIterator<Item = &'a str>,
) -> usize {
    let mut masked = 0;
    for field in fields {
        let mut at = &mut *payload;
        let mut parts = field.split('.').peekable();
        while let Some(part) = parts.next() {
            let Some(next) = at.as_object_mut().and_then(|o| o.get_mut(part)) else {
                break;
            };
            if parts.peek().is_none() {
                *next = serde_json::Value::String(flext_domain::REDACTED.to_owned());
                masked += 1;
                break;
            }
            at = next;
        }
    }
    masked
}

/// The error of a stored control request that names an unknown state.
pub fn corrupted_control(id: Uuid, what: impl std::fmt::Display) -> Error {
    Error::data_loss(
        "CORRUPTED_CONTROL_REQUEST",
        format!("control request {id} cannot be read: {what}"),
    )
    .with_detail("id", id.to_string())
}

/// Builds a [`ControlRequest`] from stored columns (`action`, `result` and `error` as
/// JSON text); a column that does not convert is `DataLoss`/`CORRUPTED_CONTROL_REQUEST`.
#[allow(clippy::too_many_arguments)]
pub fn assemble_control(
    id: Uuid,
    consumer: String,
    action: &str,
    requested_by: String,
    requested_at: DateTime<Utc>,
    state: &str,
    taken_by: Option<String>,
    finished_at: Option<DateTime<Utc>>,
    result: Option<&str>,
    error: Option<&str>,
) -> Result<ControlRequest, Error> {
    let action = serde_json::from_str(action).map_err(|e| corrupted_control(id, e))?;
    let state = ControlState::parse(state)
        .ok_or_else(|| corrupted_control(id, format!("unknown state {state:?}")))?;
    let result = result
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| corrupted_control(id, e))?;
    let error = error
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| corrupted_control(id, e))?;
    Ok(ControlRequest {
        id,
        consumer,
        action,
        requested_by,
        requested_at,
        state,
        taken_by,
        finished_at,
        result,
        error,
    })
}

/// The stored form of an outcome: (state, result JSON, error JSON).
pub fn stored_outcome(
    outcome: &Result<serde_json::Value, Error>,
) -> (ControlState, Option<String>, Option<String>) {
    match outcome {
        Ok(v) => (ControlState::Done, Some(v.to_string()), None),
        Err(e) => (
            ControlState::Failed,
            None,
            Some(crate::idempotency::encode_error(e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_outcomes_survive_their_stored_form() {
        let id = Uuid::nil();
        for action in [
            ControlAction::Pause,
            ControlAction::Rebuild {
                from: RebuildFrom::Position(Position(7)),
            },
            ControlAction::Redrive { event_id: None },
        ] {
            let text = serde_json::to_string(&action).expect("serializes");
            let (state, result, error) =
                stored_outcome(&Err(Error::not_found("NOPE", "no such thing")));
            let back = assemble_control(
                id,
                "c".into(),
                &text,
                "me".into(),
                Utc::now(),
                state.as_str(),
                None,
                None,
                result.as_deref(),
                error.as_deref(),
            )
            .expect("assembles");
            assert_eq!(back.action, action);
            assert_eq!(back.state, ControlState::Failed);
            assert_eq!(back.error.expect("error kept").reason(), "NOPE");
        }
    }

    #[test]
    fn personal_fields_are_masked_at_any_depth_and_only_where_present() {
        let mut v = serde_json::json!({"owner": "ada", "address": {"street": "x", "n": 1}});
        let n = mask_fields(
            &mut v,
            ["owner", "address.street", "missing", "owner.deeper"],
        );
        assert_eq!(n, 2);
        assert_eq!(
            v,
            serde_json::json!({"owner": flext_domain::REDACTED, "address": {"street": flext_domain::REDACTED, "n": 1}})
        );
    }

    #[test]
    fn a_corrupted_row_is_a_typed_error() {
        let e = assemble_control(
            Uuid::nil(),
            "c".into(),
            "{\"action\":\"explode\"}",
            "me".into(),
            Utc::now(),
            "pending",
            None,
            None,
            None,
            None,
        )
        .expect_err("unknown action");
        assert_eq!(e.reason(), "CORRUPTED_CONTROL_REQUEST");
        let e = assemble_control(
            Uuid::nil(),
            "c".into(),
            "{\"action\":\"pause\"}",
            "me".into(),
            Utc::now(),
            "sideways",
            None,
            None,
            None,
            None,
        )
        .expect_err("unknown state");
        assert!(e.message().contains("sideways"));
    }
}

//! The schedule port: messages to deliver at a time (deadlines, scheduled commands),
//! stored in the store's database so they survive restarts, cancelled by key.

use std::future::Future;

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventMetadata};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The scheduler's consumer name: its lease decides the one instance that delivers. Its
/// checkpoint row holds no position of the global order (it reads `flext_schedule`).
pub const SCHEDULER_CONSUMER: &str = "flext.scheduler";

/// A message to deliver at `due_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    /// Its id: the message id the delivered command carries, so a delivery repeated after
    /// a crash is recognised by the idempotency behavior.
    pub id: Uuid,
    /// What it is scheduled and cancelled by: one pending message per key; scheduling a
    /// key again replaces what was pending under it.
    pub key: String,
    /// When it is due (kept to the microsecond).
    pub due_at: DateTime<Utc>,
    /// The message's name (`Command::NAME`), which picks how it is decoded and sent.
    pub message: String,
    /// The message, as JSON.
    pub payload: Vec<u8>,
    /// The business action it belongs to (correlation, causation, tenant, trace).
    pub metadata: EventMetadata,
}

/// Stores scheduled messages. Every adapter keeps the same rules (the conformance suite
/// checks them): `schedule` replaces a pending message with the same key; `due` returns
/// the messages due at `now`, earliest first; `delivered` removes a message only while it
/// is the one pending under its key (a key scheduled again meanwhile keeps its new
/// message); `cancel` removes whatever is pending under a key and says whether there was
/// something.
pub trait ScheduleStore: Send + Sync {
    /// Stores `message`, replacing what was pending under its key.
    fn schedule(&self, message: &Scheduled) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes what is pending under `key`; whether there was something.
    fn cancel(&self, key: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Up to `max` messages due at `now`, earliest first.
    fn due(
        &self,
        now: DateTime<Utc>,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Scheduled>, Error>> + Send;

    /// When the earliest pending message is due, if there is one.
    fn next_due(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>, Error>> + Send;

    /// Removes `message` once delivered, unless its key was scheduled again meanwhile.
    fn delivered(&self, message: &Scheduled) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A scheduled message as the SQL stores keep it: (key, id, due time in microseconds,
/// message name, payload JSON, metadata JSON), the row of `flext_schedule`.
pub type StoredSchedule = (String, String, i64, String, String, String);

/// `message` as a row of `flext_schedule`; a payload that is not UTF-8 JSON text is an
/// `InvalidArgument` error.
pub fn stored_schedule(message: &Scheduled) -> Result<StoredSchedule, Error> {
    let payload = String::from_utf8(message.payload.clone()).map_err(|_| {
        Error::invalid_argument(
            "INVALID_PAYLOAD",
            format!(
                "the message scheduled under {:?} is not UTF-8 JSON",
                message.key
            ),
        )
    })?;
    Ok((
        message.key.clone(),
        message.id.to_string(),
        due_micros(message.due_at),
        message.message.clone(),
        payload,
        serde_json::to_string(&message.metadata)?,
    ))
}

/// A row of `flext_schedule` read back; a column that does not read is a `DataLoss`
/// error naming the key.
pub fn assemble_scheduled(row: StoredSchedule) -> Result<Scheduled, Error> {
    let (key, id, due_us, message, payload, metadata) = row;
    let corrupt = |what: &str| {
        Error::data_loss(
            "CORRUPTED_SCHEDULE",
            format!("the message scheduled under {key:?} has an unreadable {what}"),
        )
    };
    Ok(Scheduled {
        id: id.parse().map_err(|_| corrupt("id"))?,
        due_at: due_from_micros(&key, due_us)?,
        message,
        payload: payload.into_bytes(),
        metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("metadata"))?,
        key,
    })
}

/// A stored due time: microseconds since the Unix epoch (what the SQL stores keep).
pub fn due_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A due time read back from storage: a value no date can have is a `DataLoss` error.
pub fn due_from_micros(key: &str, micros: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        Error::data_loss(
            "CORRUPTED_SCHEDULE",
            format!("the message scheduled under {key:?} has an impossible due time {micros}"),
        )
    })
}

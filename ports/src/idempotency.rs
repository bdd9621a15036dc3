//! The idempotency port: the first outcome of a command id, so a command sent again
//! returns it instead of running again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flext_domain::Error;
use uuid::Uuid;

/// The first outcome of a command: its encoded output, or the error it ended with.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// The command type's name, so an id reused for another command type is caught.
    pub message_type: String,
    /// The encoded output, or the (non-transient) error.
    pub outcome: Result<Bytes, Error>,
}

/// What [`IdempotencyStore::claim`] found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The id is new (or its earlier claim went stale): run the command, then
    /// [`complete`](IdempotencyStore::complete) or [`release`](IdempotencyStore::release).
    Claimed,
    /// The command ran before: this is its first outcome.
    Done(IdempotencyRecord),
    /// Another dispatch of the same id is running now.
    InProgress,
}

/// Remembers command outcomes by command id. Implemented by `flext-memory`,
/// `flext-sqlite` and `flext-postgres` (in the event store's database).
pub trait IdempotencyStore: Send + Sync {
    /// Claims `id` for `message_type`. A claim older than `stale_after` that was never
    /// completed (its process died) is taken over.
    fn claim(
        &self,
        id: Uuid,
        message_type: &str,
        stale_after: Duration,
    ) -> impl Future<Output = Result<Claim, Error>> + Send;

    /// Stores the first outcome of a claimed id.
    fn complete(
        &self,
        id: Uuid,
        record: IdempotencyRecord,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Gives a claim up without an outcome (a transient failure), so a retry runs again.
    fn release(&self, id: Uuid) -> impl Future<Output = Result<(), Error>> + Send;

    /// Forgets every record claimed more than `older_than` ago (completed ones, and
    /// claims never finished): the retention period, after which a retry of the same id
    /// runs again. Returns how many were removed.
    fn purge(&self, older_than: Duration) -> impl Future<Output = Result<u64, Error>> + Send;
}

impl<S: IdempotencyStore> IdempotencyStore for Arc<S> {
    fn claim(
        &self,
        id: Uuid,
        message_type: &str,
        stale_after: Duration,
    ) -> impl Future<Output = Result<Claim, Error>> + Send {
        (**self).claim(id, message_type, stale_after)
    }
    fn complete(
        &self,
        id: Uuid,
        record: IdempotencyRecord,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).complete(id, record)
    }
    fn release(&self, id: Uuid) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).release(id)
    }
    fn purge(&self, older_than: Duration) -> impl Future<Output = Result<u64, Error>> + Send {
        (**self).purge(older_than)
    }
}

/// Encodes a stored error outcome (the error's own JSON form).
pub fn encode_error(error: &Error) -> String {
    serde_json::to_string(error).unwrap_or_else(|_| {
        format!(
            r#"{{"code":"{}","reason":"UNENCODABLE_ERROR","message":"an error that could not be stored"}}"#,
            error.code().as_str()
        )
    })
}

/// Decodes a stored error outcome; an unreadable one is `DataLoss` naming the id.
pub fn decode_error(id: Uuid, text: &str) -> Error {
    serde_json::from_str(text).unwrap_or_else(|e| {
        Error::data_loss(
            "CORRUPTED_IDEMPOTENCY_RECORD",
            format!("the stored error of command {id} cannot be read: {e}"),
        )
    })
}

/// The claim of a stored idempotency row: in progress unless its state is `done`, then
/// its output or its stored error (an unreadable one is `DataLoss` naming the id).
pub fn stored_claim(
    id: Uuid,
    state: &str,
    message_type: String,
    output: Option<Vec<u8>>,
    error: Option<String>,
) -> Claim {
    if state != "done" {
        return Claim::InProgress;
    }
    let outcome = match (output, error) {
        (_, Some(text)) => Err(decode_error(id, &text)),
        (Some(bytes), None) => Ok(Bytes::from(bytes)),
        (None, None) => Ok(Bytes::new()),
    };
    Claim::Done(IdempotencyRecord {
        message_type,
        outcome,
    })
}

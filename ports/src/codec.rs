//! The codec port: how a typed event becomes a stored payload and back.

use bytes::Bytes;
use flext_domain::{Error, EventRef};

/// Encodes events of type `E` into payloads and decodes recorded events back, upcasting
/// older schema versions on the way. A payload that cannot be decoded is a `DataLoss`
/// error naming the event's stream and version.
pub trait EventCodec<E>: Send + Sync {
    /// The payload for `event`.
    fn encode(&self, event: &E) -> Result<Bytes, Error>;

    /// The typed event stored as `event` (use [`RecordedEvent::as_event_ref`] for a
    /// recorded event).
    ///
    /// [`RecordedEvent::as_event_ref`]: flext_domain::RecordedEvent::as_event_ref
    fn decode(&self, event: EventRef<'_>) -> Result<E, Error>;
}

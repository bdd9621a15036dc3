//! The codec port: how a typed event becomes a stored payload and back.

use bytes::Bytes;
use flext_domain::{Error, RecordedEvent};

/// Encodes events of type `E` into payloads and decodes recorded events back, upcasting
/// older schema versions on the way. A payload that cannot be decoded is a `DataLoss`
/// error naming the event's stream and version.
pub trait EventCodec<E>: Send + Sync {
    /// The payload for `event`.
    fn encode(&self, event: &E) -> Result<Bytes, Error>;

    /// The typed event recorded in `recorded`.
    fn decode(&self, recorded: &RecordedEvent) -> Result<E, Error>;
}

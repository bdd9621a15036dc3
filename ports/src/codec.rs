//! The codec port: how a typed event becomes a stored payload and back.

use std::future::Future;

use bytes::Bytes;
use flext_domain::{
    DomainEvent, Error, EventId, EventMetadata, EventRef, ExpectedVersion, NewEvent, StreamId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{AppendOutcome, EventStore, JsonCodec};

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

/// Typed events as [`NewEvent`]s to append: each gets a new [`EventId`] (UUID v7), its
/// type name and schema version from [`DomainEvent`], its payload from `codec`, and a copy
/// of `metadata`. What the repository does on save, for appends outside one (seeding,
/// imports, tests).
///
/// ```
/// use flext::{DomainEvent, EventMetadata};
/// use flext::ports::{JsonCodec, new_events};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Seeded { n: u32 }
/// impl DomainEvent for Seeded {
///     fn event_type(&self) -> &'static str { "seeded" }
/// }
///
/// let events = new_events(&JsonCodec::new(), &[Seeded { n: 1 }, Seeded { n: 2 }], &EventMetadata::default())?;
/// assert_eq!(events[1].event_type, "seeded");
/// assert_eq!(&events[1].payload[..], br#"{"n":2}"#);
/// # Ok::<(), flext::Error>(())
/// ```
pub fn new_events<E: DomainEvent>(
    codec: &(impl EventCodec<E> + ?Sized),
    events: &[E],
    metadata: &EventMetadata,
) -> Result<Vec<NewEvent>, Error> {
    events
        .iter()
        .map(|e| {
            Ok(NewEvent {
                event_id: EventId::new(),
                event_type: e.event_type().to_owned(),
                schema_version: e.schema_version(),
                payload: codec.encode(e)?,
                metadata: metadata.clone(),
                tags: e.tags(),
            })
        })
        .collect()
}

/// Typed appends on every [`EventStore`]: [`new_events`] with the JSON codec, then
/// [`EventStore::append`].
pub trait AppendEvents: EventStore {
    /// Appends `events` (encoded as JSON) to `stream` if `expected` holds.
    fn append_events<E>(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[E],
        metadata: &EventMetadata,
    ) -> impl Future<Output = Result<AppendOutcome, Error>> + Send
    where
        E: DomainEvent + Serialize + DeserializeOwned,
    {
        let encoded = new_events(&JsonCodec::new(), events, metadata);
        async move { self.append(stream, expected, encoded?).await }
    }
}

impl<S: EventStore + ?Sized> AppendEvents for S {}

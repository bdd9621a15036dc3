//! Domain events and the envelopes that carry them to and from an event store.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{CausationId, CorrelationId, EventId};
use crate::stream::{Position, StreamId, StreamVersion};

/// A fact that happened in the domain, named in the past tense.
///
/// The type name is what is stored next to the payload; it must stay stable when the Rust
/// type is renamed. The schema version is the version of this event type's payload shape,
/// raised whenever the shape changes (stored older versions are upcast when read).
///
/// ```
/// use flext::DomainEvent;
///
/// enum AccountEvent { Opened { owner: String }, Deposited { amount: i64 } }
///
/// impl DomainEvent for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             AccountEvent::Opened { .. } => "account.opened",
///             AccountEvent::Deposited { .. } => "account.deposited",
///         }
///     }
/// }
/// assert_eq!(AccountEvent::Deposited { amount: 5 }.schema_version(), 1);
/// ```
pub trait DomainEvent {
    /// The stable type name, e.g. `account.deposited`.
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event's type; 1 unless overridden.
    fn schema_version(&self) -> u32 {
        1
    }

    /// The tags this event is stored with ([`NewEvent::tags`]): what it concerns beyond
    /// its stream, for reads and append conditions across streams. None by default.
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }

    /// The current schema version of the event type named `event_type`, without an
    /// instance, if this type can tell (`None` by default). A codec uses it to tell a
    /// missing upcaster from a corrupted payload before decoding; implement it when a
    /// type's schema versions move past 1.
    fn current_schema_version(event_type: &str) -> Option<u32>
    where
        Self: Sized,
    {
        let _ = event_type;
        None
    }

    /// Every type name this type's values can have (each variant's, for an enum), so a
    /// reader can select the stored events of this type before decoding them. Empty by
    /// default, meaning the type does not say; `#[derive(DomainEvent)]` lists them.
    fn event_types() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }

    /// Where this type's events keep personal data, per event type (for
    /// crypto-shredding: the subject's field and the personal fields with their
    /// replacements). None by default; `#[derive(DomainEvent)]` lists what
    /// `#[personal(subject)]` and `#[personal]` fields declare.
    fn personal_data() -> &'static [crate::PersonalData]
    where
        Self: Sized,
    {
        &[]
    }
}

/// Metadata recorded with every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The business action this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    /// The command or event that caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<CausationId>,
    /// User headers (tenant, trace context, ...), sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl EventMetadata {
    /// Metadata with a correlation and a causation id.
    pub fn caused_by(correlation_id: CorrelationId, causation_id: CausationId) -> Self {
        EventMetadata {
            correlation_id: Some(correlation_id),
            causation_id: Some(causation_id),
            headers: BTreeMap::new(),
        }
    }

    /// Adds a user header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Empty metadata, to build on with the `with_*` methods.
    pub fn new() -> Self {
        EventMetadata::default()
    }

    /// Sets the business action the events belong to.
    #[must_use]
    pub fn with_correlation(mut self, correlation_id: CorrelationId) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// Sets what caused the events (a command's or an event's id).
    #[must_use]
    pub fn with_causation(mut self, causation_id: CausationId) -> Self {
        self.causation_id = Some(causation_id);
        self
    }
}

/// An event to append: the store assigns its stream version, global position and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique within the stream; appending the same id at the same version again is an
    /// idempotent no-op. Use a UUID v7 ([`EventId::new`](crate::Id::new)).
    pub event_id: EventId,
    /// The stable type name ([`DomainEvent::event_type`]).
    pub event_type: String,
    /// The payload's schema version ([`DomainEvent::schema_version`]).
    pub schema_version: u32,
    /// The encoded payload (its encoding is the codec's; JSON by default).
    pub payload: Bytes,
    /// Correlation, causation and user headers.
    pub metadata: EventMetadata,
    /// Tags naming what the event concerns beyond its stream (`course:42`,
    /// `student:7`): reads and append conditions by tag ("dynamic consistency
    /// boundaries") find events across streams by them. Empty by default; at most
    /// [`MAX_TAGS_PER_EVENT`], each 1 to [`MAX_TAG_LEN`] bytes without control characters,
    /// none twice (checked by every store's append).
    pub tags: Vec<String>,
}

/// The most tags one event may carry.
pub const MAX_TAGS_PER_EVENT: usize = 32;

/// The longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 128;

impl NewEvent {
    /// A new event of schema version 1 with empty metadata.
    pub fn new(
        event_id: EventId,
        event_type: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        NewEvent {
            event_id,
            event_type: event_type.into(),
            schema_version: 1,
            payload: payload.into(),
            metadata: EventMetadata::default(),
            tags: Vec::new(),
        }
    }

    /// Adds a tag (see [`NewEvent::tags`]).
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds tags (see [`NewEvent::tags`]).
    #[must_use]
    pub fn with_tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Sets the schema version.
    #[must_use]
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored: what was appended plus where and when the store put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The id it was appended with.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version in the stream (the first event is 1).
    pub stream_version: StreamVersion,
    /// Its position in the store's global order.
    pub position: Position,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The stable type name.
    pub event_type: String,
    /// The schema version the payload was written with (before any upcasting).
    pub schema_version: u32,
    /// The encoded payload as stored.
    pub payload: Bytes,
    /// Correlation, causation and user headers.
    pub metadata: EventMetadata,
    /// The tags it was appended with, in the order given.
    pub tags: Vec<String>,
}

/// A borrowed view of a stored event: what decoding needs, straight from where the store
/// holds it (a row buffer, a recorded event), without copying the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The stream the event belongs to.
    pub stream_id: &'a StreamId,
    /// Its version in the stream.
    pub stream_version: StreamVersion,
    /// Its stable type name.
    pub event_type: &'a str,
    /// The schema version its payload was written with.
    pub schema_version: u32,
    /// The encoded payload as stored.
    pub payload: &'a [u8],
}

impl RecordedEvent {
    /// The borrowed view of this event that codecs decode.
    pub fn as_event_ref(&self) -> EventRef<'_> {
        EventRef {
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: &self.payload,
        }
    }

    /// The event as it was appended (without the store's stream version, position, time).
    pub fn to_new_event(&self) -> NewEvent {
        NewEvent {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            tags: self.tags.clone(),
        }
    }
}

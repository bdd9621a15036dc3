//! Publishing to other services: a broker that acknowledges what it stored (NATS
//! JetStream in `flext-nats`; another broker behind the same port).

use std::future::Future;

use flext_domain::Error;
use serde::Serialize;

use crate::Context;

/// The header names of the messages flext publishes (relayed events, outbox messages),
/// besides the message id, which the inbox reads back.
pub mod message_headers {
    /// The event's type.
    pub const EVENT_TYPE: &str = "Flext-Event-Type";
    /// The payload's schema version.
    pub const SCHEMA_VERSION: &str = "Flext-Schema-Version";
    /// The event's stream.
    pub const STREAM_ID: &str = "Flext-Stream-Id";
    /// The event's version in its stream.
    pub const STREAM_VERSION: &str = "Flext-Stream-Version";
    /// The event's position in the store's global order.
    pub const POSITION: &str = "Flext-Position";
    /// When the event was recorded (RFC 3339).
    pub const RECORDED_AT: &str = "Flext-Recorded-At";
    /// The business action's correlation id.
    pub const CORRELATION_ID: &str = "Flext-Correlation-Id";
    /// What caused the event.
    pub const CAUSATION_ID: &str = "Flext-Causation-Id";
    /// The W3C trace context, when the event recorded one.
    pub const TRACEPARENT: &str = "traceparent";
}

/// A message for another service, as a broker carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Where it goes (a NATS subject, a topic).
    pub subject: String,
    /// Its id, by which the broker and the receiving inbox drop a second copy (for an
    /// event: the event id).
    pub id: String,
    /// Headers: correlation, causation, trace context, type, schema version.
    pub headers: Vec<(String, String)>,
    /// The body (shared with the stored event's, not copied).
    pub payload: bytes::Bytes,
    /// A number that grows with every message the publisher is handed, for good (an
    /// event's position): a publisher that is its destination's only writer skips what
    /// its destination already holds by it.
    pub order: u64,
}

/// A broker that stores messages and acknowledges them.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `messages` in order, many at once (up to the publisher's bound on
    /// acknowledgements in flight), and waits for their acknowledgements: `Ok` once every
    /// one is acknowledged, else the index of the first that was not, and why. Messages
    /// after that index may have been stored too: the broker's deduplication by
    /// [`OutboundMessage::id`] (and the inbox's) drops them when they are sent again.
    fn publish(
        &self,
        messages: &[OutboundMessage],
    ) -> impl Future<Output = Result<(), (usize, Error)>> + Send;
}

/// A message for another service that is not an event (a notification, a request to
/// another service), written in a store transaction ([`OutboxStore::send_in`]) and
/// published once that transaction committed, by an outbox relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Where it goes.
    pub subject: String,
    /// Its id, by which the broker and the receiving inbox drop a second copy.
    pub id: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub payload: bytes::Bytes,
}

/// A store with an outbox table: messages written in a transaction together with the
/// business data, kept in commit order, read by one relay and removed once published.
/// Every adapter keeps the same rules (the conformance suite checks them).
pub trait OutboxStore: crate::ProjectionStore + crate::CheckpointStore {
    /// Writes `message` to the outbox in `tx`: it exists once `tx` commits, and never if
    /// `tx` rolls back.
    fn send_in(
        &self,
        tx: &mut Self::Transaction,
        message: &OutboxMessage,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Up to `limit` committed outbox messages past position `after`, in position order,
    /// each with its position as [`OutboundMessage::order`]. Gap-safe: a message whose
    /// transaction is still open holds back every message past it, so a reader that moves
    /// past a position never sees a message appear before it later.
    fn outbox_after(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboundMessage>, Error>> + Send;

    /// Removes the outbox messages up to and including position `through` in `tx` (the
    /// relay's, together with its checkpoint); how many.
    fn outbox_sent(
        &self,
        tx: &mut Self::Transaction,
        through: u64,
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

/// Builds an outbox message read back from the columns a SQL adapter stored (`headers`
/// as JSON); a column that does not convert is `DataLoss`/`CORRUPTED_OUTBOX_MESSAGE`.
pub fn outbound_row(
    position: i64,
    id: String,
    subject: String,
    headers: &str,
    payload: Vec<u8>,
) -> Result<OutboundMessage, Error> {
    let bad = |what: String| {
        Error::data_loss(
            "CORRUPTED_OUTBOX_MESSAGE",
            format!("the outbox message at position {position} cannot be read: {what}"),
        )
        .with_detail("position", position)
    };
    let headers: Vec<(String, String)> =
        serde_json::from_str(headers).map_err(|e| bad(e.to_string()))?;
    Ok(OutboundMessage {
        subject,
        id,
        headers,
        payload: bytes::Bytes::from(payload),
        order: u64::try_from(position).map_err(|e| bad(e.to_string()))?,
    })
}

impl OutboxMessage {
    /// A message for `subject` with `value` as its JSON body, under a new id (UUID v7),
    /// carrying the business action of `ctx`: its correlation id, its message id as the
    /// causation, and its trace context.
    pub fn json<T: Serialize + ?Sized>(
        subject: impl Into<String>,
        value: &T,
        ctx: &Context,
    ) -> Result<OutboxMessage, Error> {
        let subject = subject.into();
        let payload = serde_json::to_vec(value).map_err(|e| {
            Error::invalid_argument(
                "UNENCODABLE_MESSAGE",
                format!("the message for {subject:?} cannot be encoded as JSON: {e}"),
            )
        })?;
        let metadata = ctx.event_metadata();
        let mut headers = vec![(
            message_headers::CORRELATION_ID.to_owned(),
            ctx.correlation_id().to_string(),
        )];
        if let Some(causation) = metadata.causation_id {
            headers.push((
                message_headers::CAUSATION_ID.to_owned(),
                causation.to_string(),
            ));
        }
        if let Some(tp) = metadata.headers.get(crate::TRACEPARENT_HEADER) {
            headers.push((message_headers::TRACEPARENT.to_owned(), tp.clone()));
        }
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        Ok(OutboxMessage {
            subject,
            id: uuid::Uuid::now_v7().to_string(),
            headers,
            payload: bytes::Bytes::from(payload),
        })
    }

    /// The same message under id `id` (a business key, so that writing it twice is
    /// dropped by the receiver).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> OutboxMessage {
        self.id = id.into();
        self
    }

    /// The same message with header `name` added.
    #[must_use]
    pub fn with_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> OutboxMessage {
        self.headers.push((name.into(), value.into()));
        self
    }
}

//! Publishing to other services: a broker that acknowledges what it stored (NATS
//! JetStream in `flext-nats`; another broker behind the same port).

use std::future::Future;

use flext_domain::Error;

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

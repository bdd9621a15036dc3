//! The relay: the store's global order as the outbox. It publishes the events it selects
//! to a broker ([`Publisher`]) from a checkpoint, as an owned, fenced consumer of the
//! [`ProjectionRunner`](crate::ProjectionRunner) like any projection or reactor.
//!
//! A batch's messages are published in position order, many at once (the publisher
//! bounds the acknowledgements in flight), and the checkpoint moves only past what the
//! broker acknowledged: when message `i` is not acknowledged, the checkpoint stops before
//! it and the runner retries from there (a transient error, such as a lost connection,
//! without limit). Messages after `i` that the broker had stored are sent again then, with
//! the same id: the broker's deduplication window (JetStream: `Nats-Msg-Id`, two minutes
//! by default) drops them, and past that window the receiving inbox's deduplication by
//! message id does. Order per stream holds because one stream's events are published in
//! position order on one connection and a failure stops the batch at its first gap.

use std::borrow::Cow;
use std::sync::Arc;

use flext_domain::{Error, RecordedEvent};
use flext_ports::{OutboundMessage, Publisher};

use crate::pipeline::BoxFuture;
use crate::projection::DynProjection;

/// Which events a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// Events of this type.
    Type(&'static str),
    /// Events of streams of this category (the part of the stream id before the first
    /// `-`).
    Category(String),
    /// Every event.
    All,
}

impl Select {
    fn takes(&self, event: &RecordedEvent) -> bool {
        match self {
            Select::Type(t) => event.event_type == *t,
            Select::Category(c) => event
                .stream_id
                .as_str()
                .split_once('-')
                .is_some_and(|(head, _)| head == c),
            Select::All => true,
        }
    }
}

/// The header names a relayed event carries besides the message id.
pub use flext_ports::message_headers as headers;

/// Publishes the store's events to a broker: each event a [`Select`] takes goes to the
/// subject its route names, as stored, with the event id as the message id.
///
/// A subject may hold `{type}` (the event type, its dots kept as subject tokens),
/// `{category}` and `{stream}` (the stream id as one token: dots, spaces, `*` and `>`
/// become `_`). The first route that takes an event decides; events no route takes are
/// passed over (the checkpoint moves past them).
///
/// ```
/// use flext::application::{ProjectionRunner, Relay, Select};
/// # fn wire<P: flext::ports::Publisher, S>(publisher: P, runner: ProjectionRunner<S>)
/// # -> Result<ProjectionRunner<S>, flext::Error>
/// # where S: flext::ports::ProjectionStore + flext::ports::EventStore
/// #     + flext::ports::WatchAppends + Clone {
/// let relay = Relay::new("bank.outbox", publisher)
///     .route(Select::Type("account.transfer_received"), "bank.transfers.completed")
///     .route(Select::Category("account".into()), "bank.{type}");
/// let runner = runner.relay(relay)?;
/// # Ok(runner)
/// # }
/// ```
pub struct Relay<P> {
    name: String,
    publisher: P,
    routes: Vec<(Select, String)>,
    /// The event types the store's query reads, when every route names one.
    types: Option<Vec<&'static str>>,
    /// What a message's body is made of; `None`: the payload as stored.
    payload: Option<PayloadFn>,
}

/// Makes a message's body from its event.
type PayloadFn = Arc<dyn Fn(&RecordedEvent) -> Result<Vec<u8>, Error> + Send + Sync>;

impl<P: Publisher> Relay<P> {
    /// A relay named `name` (its checkpoint, ownership and dead letters go by it) with no
    /// routes yet.
    pub fn new(name: impl Into<String>, publisher: P) -> Relay<P> {
        Relay {
            name: name.into(),
            publisher,
            routes: Vec::new(),
            types: Some(Vec::new()),
            payload: None,
        }
    }

    /// Publishes what `payload` makes of each event instead of its payload as stored: a
    /// bridge envelope for services in other languages
    /// (`flext::bridge::msgpack::encode_event`, `flext::bridge::protobuf::encode_event`:
    /// the stored payload with the event's metadata, which the Python, Go and TypeScript
    /// readers decode). An error stops the relay at that event (its checkpoint stays
    /// before it), as a publish the broker refused does.
    ///
    /// ```
    /// # use flext::application::{Relay, Select};
    /// # fn wire<P: flext::ports::Publisher>(publisher: P) -> Relay<P> {
    /// Relay::new("bank.outbox", publisher)
    ///     .route(Select::Category("account".into()), "bank.{type}")
    ///     .map_payload(flext::bridge::msgpack::encode_event)
    /// # }
    /// ```
    pub fn map_payload(
        mut self,
        payload: impl Fn(&RecordedEvent) -> Result<Vec<u8>, Error> + Send + Sync + 'static,
    ) -> Relay<P> {
        self.payload = Some(Arc::new(payload));
        self
    }

    /// Sends what `select` takes to `subject`.
    pub fn route(mut self, select: Select, subject: impl Into<String>) -> Relay<P> {
        self.types = match (&select, self.types.take()) {
            (Select::Type(t), Some(mut types)) => {
                types.push(t);
                Some(types)
            }
            _ => None,
        };
        self.routes.push((select, subject.into()));
        self
    }

    /// The message for `event`, or `None` when no route takes it; an error when
    /// [`Relay::map_payload`]'s function fails.
    pub fn message(&self, event: &RecordedEvent) -> Result<Option<OutboundMessage>, Error> {
        let Some((_, subject)) = self.routes.iter().find(|(s, _)| s.takes(event)) else {
            return Ok(None);
        };
        let m = &event.metadata;
        let mut headers = vec![
            (headers::EVENT_TYPE.to_owned(), event.event_type.clone()),
            (
                headers::SCHEMA_VERSION.to_owned(),
                event.schema_version.to_string(),
            ),
            (
                headers::STREAM_ID.to_owned(),
                event.stream_id.as_str().to_owned(),
            ),
            (
                headers::STREAM_VERSION.to_owned(),
                event.stream_version.0.to_string(),
            ),
            (
                headers::POSITION.to_owned(),
                event.position.get().to_string(),
            ),
            (
                headers::RECORDED_AT.to_owned(),
                event.recorded_at.to_rfc3339(),
            ),
        ];
        if let Some(c) = m.correlation_id {
            headers.push((headers::CORRELATION_ID.to_owned(), c.to_string()));
        }
        if let Some(c) = m.causation_id {
            headers.push((headers::CAUSATION_ID.to_owned(), c.to_string()));
        }
        if let Some(t) = m.headers.get(headers::TRACEPARENT) {
            headers.push((headers::TRACEPARENT.to_owned(), t.clone()));
        }
        let payload = match &self.payload {
            None => event.payload.clone(),
            Some(f) => bytes::Bytes::from(f(event)?),
        };
        Ok(Some(OutboundMessage {
            subject: subject_for(subject, event),
            id: event.event_id.to_string(),
            headers,
            payload,
            order: event.position.get(),
        }))
    }

    async fn batch(&self, events: &[RecordedEvent]) -> Result<(), (usize, Error)> {
        let mut at = Vec::with_capacity(events.len());
        let mut messages = Vec::with_capacity(events.len());
        // An event whose message cannot be made ends the batch before it.
        let mut unmade = None;
        for (i, event) in events.iter().enumerate() {
            match self.message(event) {
                Ok(Some(m)) => {
                    at.push(i);
                    messages.push(m);
                }
                Ok(None) => {}
                Err(e) => {
                    unmade = Some((i, e));
                    break;
                }
            }
        }
        if !messages.is_empty() {
            self.publisher
                .publish(&messages)
                .await
                .map_err(|(j, e)| (at.get(j).copied().unwrap_or(0), e))?;
        }
        unmade.map_or(Ok(()), Err)
    }

    async fn one(&self, event: &RecordedEvent) -> Result<(), Error> {
        match self.message(event)? {
            Some(m) => self
                .publisher
                .publish(std::slice::from_ref(&m))
                .await
                .map_err(|(_, e)| e),
            None => Ok(()),
        }
    }
}

/// `template` with its placeholders filled from `event`.
fn subject_for(template: &str, event: &RecordedEvent) -> String {
    if !template.contains('{') {
        return template.to_owned();
    }
    let stream = event.stream_id.as_str();
    let category = stream.split_once('-').map_or(stream, |(head, _)| head);
    template
        .replace("{type}", &token(&event.event_type, true))
        .replace("{category}", &token(category, false))
        .replace("{stream}", &token(stream, false))
}

/// `s` made safe as subject text: whitespace, `*` and `>` (and dots unless `dots`) become
/// `_`, and an empty value `_`.
fn token(s: &str, dots: bool) -> Cow<'_, str> {
    let bad = |c: char| c.is_whitespace() || c == '*' || c == '>' || (!dots && c == '.');
    if s.is_empty() {
        return Cow::Borrowed("_");
    }
    if s.chars().any(bad) {
        Cow::Owned(s.chars().map(|c| if bad(c) { '_' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

impl<T: Send, P: Publisher> DynProjection<T> for Relay<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn handle<'a>(
        &'a self,
        _tx: &'a mut T,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.one(event))
    }
    fn event_types(&self) -> Option<&[&str]> {
        self.types.as_deref()
    }
    fn react<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> Option<BoxFuture<'a, Result<(), (usize, Error)>>> {
        Some(Box::pin(self.batch(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_domain::{CorrelationId, EventId, EventMetadata, Position, StreamId, StreamVersion};

    fn event(stream: &str, kind: &str) -> RecordedEvent {
        RecordedEvent {
            position: Position(7),
            event_id: EventId::new(),
            stream_id: StreamId::new(stream).expect("id"),
            stream_version: StreamVersion(3),
            event_type: kind.to_owned(),
            schema_version: 2,
            payload: b"{}".to_vec().into(),
            metadata: EventMetadata::default()
                .with_correlation(CorrelationId::new())
                .with_header(headers::TRACEPARENT, "00-abc-def-01"),
            recorded_at: chrono::Utc::now(),
            tags: Vec::new(),
        }
    }

    struct Nowhere;
    impl Publisher for Nowhere {
        async fn publish(&self, _: &[OutboundMessage]) -> Result<(), (usize, Error)> {
            Ok(())
        }
    }

    #[test]
    fn routes_pick_subjects_and_headers_carry_the_event() {
        let relay = Relay::new("out", Nowhere)
            .route(Select::Type("account.closed"), "closed")
            .route(Select::Category("account".into()), "bank.{category}.{type}")
            .route(Select::All, "all.{stream}");
        let closed = relay
            .message(&event("account-1", "account.closed"))
            .expect("made")
            .expect("routed");
        assert_eq!(closed.subject, "closed");
        let opened = event("account-1", "account.opened");
        let m = relay.message(&opened).expect("made").expect("routed");
        assert_eq!(m.subject, "bank.account.account.opened");
        assert_eq!(m.id, opened.event_id.to_string());
        let header = |name: &str| {
            m.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(headers::EVENT_TYPE), Some("account.opened"));
        assert_eq!(header(headers::SCHEMA_VERSION), Some("2"));
        assert_eq!(header(headers::POSITION), Some("7"));
        assert_eq!(header(headers::TRACEPARENT), Some("00-abc-def-01"));
        assert!(header(headers::CORRELATION_ID).is_some());
        let odd = relay
            .message(&event("note 1.x*y", "n"))
            .expect("made")
            .expect("routed");
        assert_eq!(odd.subject, "all.note_1_x_y");
        assert_eq!(relay.types, None, "a category route reads every type");
        let typed = Relay::new("t", Nowhere).route(Select::Type("a"), "x");
        assert_eq!(typed.types.as_deref(), Some(&["a"][..]));
        assert!(typed.message(&event("s-1", "b")).expect("made").is_none());
    }
}

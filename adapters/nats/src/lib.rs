//! flext on NATS JetStream: [`JetStream`] (a connection); [`StreamPublisher`], the
//! [`Publisher`] a relay (`flext_application::Relay`, or `OutboxRelay` for the outbox
//! table) sends through into one JetStream stream, as that stream's only writer; and
//! [`PullSource`], the durable pull consumer an inbox (`flext_application::Inbox`) takes
//! messages from, each message's effects once (the inbox records the message id in the
//! transaction of its effects; see there).
//!
//! What guarantees what:
//! - **Nothing lost**: the relay's checkpoint moves only past acknowledged messages, and
//!   a lost connection, a timeout or a restarting server is `UNAVAILABLE`, retried without
//!   limit while the client reconnects by itself.
//! - **Nothing twice, nothing out of order, after an outage of any length**: every message
//!   carries `Nats-Expected-Last-Msg-Id` = the message before it, so JetStream stores a
//!   message only right after its predecessor; a message that went missing makes every
//!   later one of the pipeline be refused rather than stored ahead of it. After any
//!   failure the publisher reads the stream's last message and skips what the stream
//!   holds already (by [`OutboundMessage::order`], the event's position), so resending
//!   from an old checkpoint stores nothing twice whether or not JetStream's duplicate
//!   window (two minutes by default) still remembers the ids.
//! - **Within the window, also for other writers' retries**: `Nats-Msg-Id` = the message
//!   id (the event id); the receiving inbox deduplicates by the same id.
//!
//! Publishes are pipelined: up to [`JetStreamOptions::max_in_flight`] wait for their
//! acknowledgements at once, in order, and the first not acknowledged is reported with its
//! index, so the relay's checkpoint stops before it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flext::Error> {
//! use std::time::Duration;
//! use flext_nats::JetStream;
//!
//! let nats = JetStream::connect("nats://127.0.0.1:4222").await?;
//! nats.ensure_stream("BANK", &["bank.>"], Duration::from_secs(120)).await?;
//! let publisher = nats.publisher("BANK");
//! // ProjectionRunner::new(store).relay(Relay::new("bank.outbox", publisher).route(...))?
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use flext_domain::Error;
use flext_ports::{InboundMessage, MessageSource, Settle};
use flext_ports::{OutboundMessage, Publisher};
use futures_util::StreamExt;
use tokio::sync::Mutex;

/// How [`JetStream`] publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// Messages published and not yet acknowledged, at most (default 256).
    pub max_in_flight: usize,
    /// How long an acknowledgement may take before the message counts as not stored
    /// (default 5 s).
    pub ack_timeout: Duration,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            max_in_flight: 256,
            ack_timeout: Duration::from_secs(5),
        }
    }
}

/// How [`JetStream::consumer_with`] creates a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// How long a delivery may stay unsettled before JetStream delivers it again (a
    /// consumer that died holding it): default 30 s. Longer than a handler takes.
    pub ack_wait: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// A JetStream context that publishes [`OutboundMessage`]s.
#[derive(Clone)]
pub struct JetStream {
    context: Context,
    options: JetStreamOptions,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// `UNAVAILABLE` naming what failed: the relay retries it without limit.
fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable("NATS_UNAVAILABLE", format!("{what}: {e}"))
}

impl JetStream {
    /// Connects to the NATS server at `url` (retrying the first connection in the
    /// background, and reconnecting after a loss without limit), default options.
    pub async fn connect(url: &str) -> Result<JetStream, Error> {
        JetStream::connect_with(url, JetStreamOptions::default()).await
    }

    /// [`JetStream::connect`] with `options`.
    pub async fn connect_with(url: &str, options: JetStreamOptions) -> Result<JetStream, Error> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| unavailable(&format!("connecting to NATS at {url}"), e))?;
        Ok(JetStream::with_client(client, options))
    }

    /// A publisher on a client the service already has.
    pub fn with_client(client: async_nats::Client, options: JetStreamOptions) -> JetStream {
        let options = JetStreamOptions {
            max_in_flight: options.max_in_flight.max(1),
            ..options
        };
        let context = jetstream::ContextBuilder::new()
            .timeout(options.ack_timeout)
            .max_ack_inflight(options.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client);
        JetStream { context, options }
    }

    /// The JetStream context, for what this crate does not wrap.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Makes sure stream `name` exists and takes `subjects`, with `duplicate_window` (the
    /// time within which a message id sent again is dropped); an existing stream is
    /// left as it is.
    pub async fn ensure_stream(
        &self,
        name: &str,
        subjects: &[&str],
        duplicate_window: Duration,
    ) -> Result<(), Error> {
        self.context
            .get_or_create_stream(jetstream::stream::Config {
                name: name.to_owned(),
                subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
                duplicate_window,
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|e| unavailable(&format!("creating the JetStream stream {name:?}"), e))
    }

    /// A durable pull consumer `durable` on stream `stream` taking `subjects` (all of the
    /// stream's when empty), created when missing, as the [`MessageSource`] of an inbox
    /// (`flext_application::Inbox`). Acknowledgements are explicit, a delivery not
    /// settled within 30 s is delivered again, and the inbox decides when a message has
    /// had enough deliveries (the consumer itself delivers without limit).
    pub async fn consumer(
        &self,
        stream: &str,
        durable: &str,
        subjects: &[&str],
    ) -> Result<PullSource, Error> {
        self.consumer_with(stream, durable, subjects, ConsumerOptions::default())
            .await
    }

    /// [`JetStream::consumer`] with `options` (used when the consumer is created; an
    /// existing consumer keeps its configuration).
    pub async fn consumer_with(
        &self,
        stream: &str,
        durable: &str,
        subjects: &[&str],
        options: ConsumerOptions,
    ) -> Result<PullSource, Error> {
        let what = || format!("creating the JetStream consumer {durable:?} on {stream:?}");
        let consumer = self
            .context
            .get_stream(stream)
            .await
            .map_err(|e| unavailable(&what(), e))?
            .get_or_create_consumer::<pull::Config>(
                durable,
                pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| unavailable(&what(), e))?;
        Ok(PullSource {
            nats: self.clone(),
            consumer,
            messages: Arc::new(Mutex::new(None)),
            dead_letters: None,
            wait: Duration::from_secs(1),
        })
    }

    /// A publisher into stream `name`, which it must be the only writer of (a relay's
    /// destination): see the crate's documentation for what that guarantees.
    pub fn publisher(&self, name: &str) -> StreamPublisher {
        StreamPublisher {
            nats: self.clone(),
            stream: name.to_owned(),
            last: Arc::new(Mutex::new(None)),
        }
    }

    async fn send(
        &self,
        m: &OutboundMessage,
        after: Option<&str>,
    ) -> Result<PublishAckFuture, Error> {
        let mut publish = PublishMessage::build()
            .payload(m.payload.clone())
            .message_id(&m.id)
            .header(ORDER_HEADER, m.order.to_string().as_str());
        if let Some(previous) = after {
            publish = publish.expected_last_message_id(previous);
        }
        for (k, v) in &m.headers {
            publish = publish.header(k.as_str(), v.as_str());
        }
        self.context
            .send_publish(m.subject.clone(), publish)
            .await
            .map_err(|e| publish_error(&m.subject, e.kind(), e))
    }
}

/// A publish that failed, as flext's error: what the server refused for good is
/// `FAILED_PRECONDITION` or `INVALID_ARGUMENT`; everything else (no answer, a lost
/// connection, no stream yet) is `UNAVAILABLE`, retried.
fn publish_error(subject: &str, kind: PublishErrorKind, e: impl std::fmt::Display) -> Error {
    match kind {
        PublishErrorKind::MaxPayloadExceeded => Error::invalid_argument(
            "NATS_MESSAGE_TOO_LARGE",
            format!("the message for {subject:?} is larger than the server takes: {e}"),
        ),
        // A message before it went missing: the publisher reads the stream again and
        // sends from there.
        PublishErrorKind::WrongLastMessageId => Error::unavailable(
            "NATS_CHAIN_BROKEN",
            format!("JetStream did not store the message before the one for {subject:?}: {e}"),
        ),
        PublishErrorKind::WrongLastSequence => Error::failed_precondition(
            "NATS_PUBLISH_REFUSED",
            format!("JetStream refused the message for {subject:?}: {e}"),
        ),
        PublishErrorKind::StreamNotFound => Error::unavailable(
            "NATS_NO_STREAM",
            format!("no JetStream stream takes subject {subject:?} (yet): {e}"),
        ),
        _ => unavailable(&format!("publishing to {subject:?}"), e),
    }
}

/// The last message a stream holds, as its only writer knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Last {
    id: String,
    order: u64,
}

/// The header a relayed message's order is read back from.
const ORDER_HEADER: &str = "Flext-Order";

/// The [`Publisher`] into one JetStream stream, as its only writer: messages chained by
/// `Nats-Expected-Last-Msg-Id`, what the stream holds already skipped.
#[derive(Debug, Clone)]
pub struct StreamPublisher {
    nats: JetStream,
    stream: String,
    /// The stream's last message; `None` after a failure (read again before the next
    /// publish).
    last: Arc<Mutex<Option<Option<Last>>>>,
}

impl StreamPublisher {
    /// The stream it publishes into.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The stream's last message, read from the server.
    async fn read_last(&self) -> Result<Option<Last>, Error> {
        let what = || {
            format!(
                "reading the last message of JetStream stream {:?}",
                self.stream
            )
        };
        let stream = self
            .nats
            .context
            .get_stream(&self.stream)
            .await
            .map_err(|e| unavailable(&what(), e))?;
        let seq = stream
            .get_info()
            .await
            .map_err(|e| unavailable(&what(), e))?
            .state
            .last_sequence;
        if seq == 0 {
            return Ok(None);
        }
        let m = stream
            .get_raw_message(seq)
            .await
            .map_err(|e| unavailable(&what(), e))?;
        let header = |k: &str| m.headers.get(k).map(|v| v.as_str().to_owned());
        match (
            header("Nats-Msg-Id"),
            header(ORDER_HEADER).and_then(|o| o.parse().ok()),
        ) {
            (Some(id), Some(order)) => Ok(Some(Last { id, order })),
            _ => Err(Error::failed_precondition(
                "NATS_FOREIGN_MESSAGE",
                format!(
                    "the last message of JetStream stream {:?} (sequence {seq}) has no \
                     Nats-Msg-Id or {ORDER_HEADER}: another writer publishes into it, and a \
                     relay must be its stream's only writer",
                    self.stream
                ),
            )),
        }
    }
}

impl Publisher for StreamPublisher {
    async fn publish(&self, messages: &[OutboundMessage]) -> Result<(), (usize, Error)> {
        // One batch at a time: the chain is one line.
        let mut known = self.last.lock().await;
        let last = match known.take() {
            Some(last) => last,
            None => self.read_last().await.map_err(|e| (0, e))?,
        };
        // What the stream holds already (sent before a failure, or before a restart from
        // an older checkpoint) is skipped.
        let skip = messages
            .iter()
            .take_while(|m| last.as_ref().is_some_and(|l| m.order <= l.order))
            .count();
        let mut previous = last.as_ref().map(|l| l.id.clone());
        let mut pending: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
        let outcome: Result<(), (usize, Error)> = async {
            for (i, m) in messages.iter().enumerate().skip(skip) {
                while pending.len() >= self.nats.options.max_in_flight {
                    if let Some((j, ack)) = pending.pop_front() {
                        acked(&messages[j], ack).await.map_err(|e| (j, e))?;
                    }
                }
                match self.nats.send(m, previous.as_deref()).await {
                    Ok(ack) => pending.push_back((i, ack)),
                    Err(e) => {
                        while let Some((j, ack)) = pending.pop_front() {
                            acked(&messages[j], ack).await.map_err(|e| (j, e))?;
                        }
                        return Err((i, e));
                    }
                }
                previous = Some(m.id.clone());
            }
            while let Some((j, ack)) = pending.pop_front() {
                acked(&messages[j], ack).await.map_err(|e| (j, e))?;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                *known = Some(match messages.last() {
                    Some(m) if messages.len() > skip => Some(Last {
                        id: m.id.clone(),
                        order: m.order,
                    }),
                    _ => last,
                });
                Ok(())
            }
            // Unknown what the stream holds now: read it again before the next publish.
            Err(e) => Err(e),
        }
    }
}

/// Waits for `m`'s acknowledgement (a duplicate the stream dropped counts as stored).
async fn acked(m: &OutboundMessage, ack: PublishAckFuture) -> Result<(), Error> {
    ack.await
        .map(drop)
        .map_err(|e| publish_error(&m.subject, e.kind(), e))
}

/// A durable JetStream pull consumer as an inbox's [`MessageSource`]
/// ([`JetStream::consumer`]). A message's id is its `Nats-Msg-Id` (a relayed event's id),
/// else `<stream>:<sequence>`.
#[derive(Clone)]
pub struct PullSource {
    nats: JetStream,
    consumer: PullConsumer,
    /// The open pull subscription; `None` until the first fetch and after a failure.
    messages: Arc<Mutex<Option<pull::Stream>>>,
    dead_letters: Option<String>,
    wait: Duration,
}

impl std::fmt::Debug for PullSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSource")
            .field("dead_letters", &self.dead_letters)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// The header naming why a dead-lettered message was given up.
pub const DEAD_LETTER_ERROR_HEADER: &str = "Flext-Dead-Letter-Error";
/// The header naming the subject a dead-lettered message came on.
pub const DEAD_LETTER_SUBJECT_HEADER: &str = "Flext-Dead-Letter-Subject";

impl PullSource {
    /// Publishes the messages the inbox gives up on to `subject` (a JetStream stream must
    /// take it), with their headers, their id and headers
    /// [`DEAD_LETTER_ERROR_HEADER`] and [`DEAD_LETTER_SUBJECT_HEADER`]. Without one, the
    /// store's dead-letter record is all.
    #[must_use]
    pub fn dead_letters_to(mut self, subject: impl Into<String>) -> PullSource {
        self.dead_letters = Some(subject.into());
        self
    }

    /// How long a fetch waits for a first message before it returns none (default 1 s).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> PullSource {
        self.wait = wait;
        self
    }
}

fn inbound(m: &jetstream::Message) -> Result<InboundMessage, Error> {
    let info = m
        .info()
        .map_err(|e| unavailable("reading a JetStream delivery's metadata", e))?;
    let mut headers = Vec::new();
    let mut id = None;
    if let Some(h) = &m.headers {
        for (name, values) in h.iter() {
            for v in values {
                if AsRef::<str>::as_ref(name) == "Nats-Msg-Id" {
                    id = Some(v.as_str().to_owned());
                }
                headers.push((name.to_string(), v.as_str().to_owned()));
            }
        }
    }
    Ok(InboundMessage {
        subject: m.subject.to_string(),
        id: id.unwrap_or_else(|| format!("{}:{}", info.stream, info.stream_sequence)),
        headers,
        payload: m.payload.clone(),
        deliveries: u32::try_from(info.delivered).unwrap_or(u32::MAX),
    })
}

impl MessageSource for PullSource {
    type Receipt = jetstream::Message;

    async fn fetch(&self, max: usize) -> Result<Vec<(InboundMessage, jetstream::Message)>, Error> {
        let mut open = self.messages.lock().await;
        if open.is_none() {
            let stream = self
                .consumer
                .stream()
                .max_messages_per_batch(max.max(1))
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| unavailable("pulling from a JetStream consumer", e))?;
            *open = Some(stream);
        }
        let Some(stream) = open.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut wait = self.wait;
        while out.len() < max {
            // The first waits; the ones after only if they are there already.
            match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => break,
                Ok(Some(Ok(m))) => match inbound(&m) {
                    Ok(message) => out.push((message, m)),
                    // Not a JetStream delivery: nothing to settle it with; skipped.
                    Err(e) => return Err(e),
                },
                Ok(Some(Err(e))) => {
                    if out.is_empty() {
                        *open = None;
                        return Err(unavailable("pulling from a JetStream consumer", e));
                    }
                    break;
                }
                Ok(None) => {
                    *open = None;
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        Ok(out)
    }

    async fn settle(&self, receipt: jetstream::Message, how: Settle) -> Result<(), Error> {
        let kind = match how {
            Settle::Ack => AckKind::Ack,
            Settle::Nak(delay) => AckKind::Nak(Some(delay)),
            Settle::Term => AckKind::Term,
        };
        receipt
            .ack_with(kind)
            .await
            .map_err(|e| unavailable("settling a JetStream delivery", e))
    }

    async fn dead_letter(&self, message: &InboundMessage, error: &Error) -> Result<(), Error> {
        let Some(subject) = &self.dead_letters else {
            return Ok(());
        };
        let mut publish = PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(&message.id);
        for (k, v) in &message.headers {
            if k != "Nats-Msg-Id" && !k.starts_with("Nats-Expected") {
                publish = publish.header(k.as_str(), v.as_str());
            }
        }
        let reason = format!("{} ({}): {}", error.code(), error.reason(), error.message());
        publish = publish
            .header(DEAD_LETTER_ERROR_HEADER, reason.as_str())
            .header(DEAD_LETTER_SUBJECT_HEADER, message.subject.as_str());
        let ack = self
            .nats
            .context
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| publish_error(subject, e.kind(), e))?;
        ack.await
            .map(drop)
            .map_err(|e| publish_error(subject, e.kind(), e))
    }
}

//! flext on NATS JetStream: [`JetStream`], the [`Publisher`] a
//! [`Relay`](https://docs.rs/flext-application) sends the store's events through.
//!
//! Each message is published with `Nats-Msg-Id` set to its id (an event's id), so
//! JetStream stores one copy of a message sent again within the stream's duplicate
//! window (two minutes unless the stream says otherwise). Publishes are pipelined: up to
//! [`JetStreamOptions::max_in_flight`] wait for their acknowledgements at once, in order;
//! the first one not acknowledged is reported with its index, so the relay's checkpoint
//! stops before it. A lost connection is `UNAVAILABLE` (the relay retries without limit)
//! and the client reconnects by itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flext::Error> {
//! use std::time::Duration;
//! use flext_nats::JetStream;
//!
//! let nats = JetStream::connect("nats://127.0.0.1:4222").await?;
//! nats.ensure_stream("BANK", &["bank.>"], Duration::from_secs(120)).await?;
//! // ProjectionRunner::new(store).relay(Relay::new("bank.outbox", nats).route(...))?
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use flext_domain::Error;
use flext_ports::{OutboundMessage, Publisher};

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

    async fn send(&self, m: &OutboundMessage) -> Result<PublishAckFuture, Error> {
        let mut publish = PublishMessage::build()
            .payload(Bytes::from(m.payload.clone()))
            .message_id(&m.id);
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
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            Error::failed_precondition(
                "NATS_PUBLISH_REFUSED",
                format!("JetStream refused the message for {subject:?}: {e}"),
            )
        }
        PublishErrorKind::StreamNotFound => Error::unavailable(
            "NATS_NO_STREAM",
            format!("no JetStream stream takes subject {subject:?} (yet): {e}"),
        ),
        _ => unavailable(&format!("publishing to {subject:?}"), e),
    }
}

impl Publisher for JetStream {
    async fn publish(&self, messages: &[OutboundMessage]) -> Result<(), (usize, Error)> {
        let mut pending: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
        for (i, m) in messages.iter().enumerate() {
            while pending.len() >= self.options.max_in_flight {
                if let Some((j, ack)) = pending.pop_front() {
                    acked(&messages[j], ack).await.map_err(|e| (j, e))?;
                }
            }
            match self.send(m).await {
                Ok(ack) => pending.push_back((i, ack)),
                Err(e) => {
                    // The ones before it may still fail: the first failure is reported.
                    while let Some((j, ack)) = pending.pop_front() {
                        acked(&messages[j], ack).await.map_err(|e| (j, e))?;
                    }
                    return Err((i, e));
                }
            }
        }
        while let Some((j, ack)) = pending.pop_front() {
            acked(&messages[j], ack).await.map_err(|e| (j, e))?;
        }
        Ok(())
    }
}

/// Waits for `m`'s acknowledgement (a duplicate the stream dropped counts as stored).
async fn acked(m: &OutboundMessage, ack: PublishAckFuture) -> Result<(), Error> {
    ack.await
        .map(drop)
        .map_err(|e| publish_error(&m.subject, e.kind(), e))
}

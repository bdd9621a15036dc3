//! Taking messages in from other services: a broker's durable consumer
//! ([`MessageSource`]; NATS JetStream in `flext-nats`) and the store's inbox records
//! ([`InboxStore`]), written in the transaction of the handler's effects, so that a
//! message delivered twice has its effects once.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::Error;
use serde::{Deserialize, Serialize};

use crate::ProjectionStore;

/// A message another service sent, as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The subject (topic) it came on.
    pub subject: String,
    /// Its id (NATS: the `Nats-Msg-Id` header; for a relayed event, the event id), by
    /// which a second delivery is known. A message without one gets the broker's own
    /// sequence-based id from the source.
    pub id: String,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub payload: bytes::Bytes,
    /// How many times the broker has delivered it, this time included (1 the first time).
    pub deliveries: u32,
}

impl InboundMessage {
    /// The first value of header `name` (header names compare ignoring ASCII case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a consumer tells the broker about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Handled (or handled before): do not deliver it again.
    Ack,
    /// Not handled this time: deliver it again after the delay.
    Nak(Duration),
    /// Never to be handled (dead-lettered): do not deliver it again.
    Term,
}

/// A broker's durable consumer: hands out messages, each to be settled once.
pub trait MessageSource: Send + Sync + 'static {
    /// What settles one delivery (NATS: the received message, which acknowledges itself).
    type Receipt: Send + 'static;

    /// The next messages, up to `max`: waits for the first (up to the source's own wait,
    /// then returns none), and takes those already there with it. A lost connection is
    /// `UNAVAILABLE`; the source reconnects by itself.
    fn fetch(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<(InboundMessage, Self::Receipt)>, Error>> + Send;

    /// Settles a delivery.
    fn settle(
        &self,
        receipt: Self::Receipt,
        how: Settle,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sends `message` on to the source's dead-letter destination (a subject), with the
    /// error that stopped it; done before the message is settled with [`Settle::Term`].
    fn dead_letter(
        &self,
        message: &InboundMessage,
        error: &Error,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A message an inbox gave up on, kept with what stopped it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxDeadLetter {
    /// The inbox (consumer) that gave up.
    pub consumer: String,
    /// The message's id.
    pub message_id: String,
    /// Its subject.
    pub subject: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub payload: Vec<u8>,
    /// The last error.
    pub error: Error,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

/// A store that keeps an inbox's records: the ids of the messages each consumer has
/// handled, written in the transaction of the handler's effects, and the messages it gave
/// up on. Every adapter keeps the same rules (the conformance suite checks them).
pub trait InboxStore: ProjectionStore {
    /// Records in `tx` that `consumer` handles message `message_id`: `true` the first
    /// time, `false` when a committed transaction recorded it before (a redelivery; roll
    /// `tx` back and acknowledge). Two transactions recording the same id at once: one
    /// commits, the other gets `false` or fails to commit.
    fn receive(
        &self,
        tx: &mut Self::Transaction,
        consumer: &str,
        message_id: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Parks `letter` in `tx` (replacing one of the same consumer and message id).
    fn park_message(
        &self,
        tx: &mut Self::Transaction,
        letter: &InboxDeadLetter,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The messages `consumer` gave up on, oldest first.
    fn inbox_dead_letters(
        &self,
        consumer: &str,
    ) -> impl Future<Output = Result<Vec<InboxDeadLetter>, Error>> + Send;

    /// Forgets the records of `consumer` older than `older_than` (a message delivered
    /// again after that is handled again); how many were removed. Keep them longer than
    /// the broker redelivers (NATS: the duplicate window and the consumer's redelivery).
    fn purge_inbox(
        &self,
        consumer: &str,
        older_than: Duration,
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

/// Builds an [`InboxDeadLetter`] from the columns a SQL adapter stored (`headers` and
/// `error` as JSON); a column that does not convert is `DataLoss`/`CORRUPTED_DEAD_LETTER`.
#[allow(clippy::too_many_arguments)]
pub fn assemble_inbox_dead_letter(
    consumer: String,
    message_id: String,
    subject: String,
    headers: &str,
    payload: Vec<u8>,
    error: &str,
    deliveries: i64,
    parked_at: DateTime<Utc>,
) -> Result<InboxDeadLetter, Error> {
    let bad = |what: String| {
        Error::data_loss(
            "CORRUPTED_DEAD_LETTER",
            format!(
                "the dead letter of inbox {consumer:?} for message {message_id:?} cannot be read: {what}"
            ),
        )
    };
    let headers: Vec<(String, String)> =
        serde_json::from_str(headers).map_err(|e| bad(e.to_string()))?;
    let error = serde_json::from_str::<Error>(error).map_err(|e| bad(e.to_string()))?;
    Ok(InboxDeadLetter {
        deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
        consumer,
        message_id,
        subject,
        headers,
        payload,
        error,
        parked_at,
    })
}

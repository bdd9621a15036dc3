//! The inbox: messages from other services, taken from a broker's durable consumer
//! ([`MessageSource`]) and handed to a handler in a store transaction or to the command
//! or event bus, each message's effects once however often the broker delivers it.
//!
//! See [`Inbox`] for what it guarantees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flext_domain::Error;
use flext_domain::reexport::uuid::Uuid;
use flext_domain::{CausationId, CorrelationId, EventMetadata};
use flext_ports::{
    Command, Context, InboundMessage, InboxDeadLetter, InboxStore, MessageSource, Metrics, Settle,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::Instrument;

use crate::bus::{CommandBus, EventBus};
use crate::jobs::Backoff;
use crate::pipeline::BoxFuture;
use crate::relay::headers;

/// The namespace of message ids that are not UUIDs (UUID v5 of the id's text).
const MESSAGE_NAMESPACE: Uuid = Uuid::from_u128(0x8b3f_52c4_9d1e_4a07_b6e2_71f0_3c5d_9a28);

/// Handles the messages of a subject inside the inbox's transaction `T` (a
/// `SqliteWriteTransaction` or `PgWriteTransaction`, which run SQL through
/// [`flext_ports::sql::Sql`] and append events): what it writes commits together with the
/// record that the message was handled.
///
/// ```
/// use flext::application::InboxHandler;
/// use flext::ports::sql::{Sql, SqlExt};
/// use flext::ports::{Context, InboundMessage};
/// use flext::Error;
///
/// struct CountTransfers;
/// impl<T: Sql + Send> InboxHandler<T> for CountTransfers {
///     async fn handle(&self, tx: &mut T, _: &InboundMessage, _: &Context) -> Result<(), Error> {
///         tx.execute("UPDATE transfer_count SET n = n + 1", vec![]).await?;
///         Ok(())
///     }
/// }
/// ```
pub trait InboxHandler<T>: Send + Sync + 'static {
    /// Handles `message`, writing its effects in `tx`. An error rolls `tx` back: a
    /// transient one (`ErrorCode::is_transient`) has the message delivered again after a
    /// backoff, any other parks it as a dead letter.
    fn handle(
        &self,
        tx: &mut T,
        message: &InboundMessage,
        ctx: &Context,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// [`InboxHandler`] with its future boxed, so handlers of several types share a table.
trait DynHandler<T>: Send + Sync {
    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        message: &'a InboundMessage,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

impl<T: Send, H: InboxHandler<T>> DynHandler<T> for H {
    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        message: &'a InboundMessage,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(InboxHandler::handle(self, tx, message, ctx))
    }
}

/// Decodes a message's payload into a command or an event and hands it to its bus.
type Dispatch =
    Arc<dyn Fn(bytes::Bytes, Context) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

enum Route<T> {
    Handler(Arc<dyn DynHandler<T>>),
    Bus(Dispatch),
}

/// Whether NATS-style subject `pattern` (`*` one token, a last `>` one or more) takes
/// `subject`.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// The longest message id kept as it is in the inbox's records.
const MAX_RECORDED_ID: usize = 200;

/// The key a message's record is kept under: its id, or for an id longer than 200 bytes
/// (a key that long would not fit a database index) `v5:` and the UUID v5 of the id.
fn record_key(id: &str) -> std::borrow::Cow<'_, str> {
    if id.len() <= MAX_RECORDED_ID {
        std::borrow::Cow::Borrowed(id)
    } else {
        std::borrow::Cow::Owned(format!(
            "v5:{}",
            Uuid::new_v5(&MESSAGE_NAMESPACE, id.as_bytes())
        ))
    }
}

/// The context a message is handled in: a message id from the message's (a UUID as is,
/// any other id as a UUID v5 of its text), its correlation and causation headers, its
/// trace context and tenant.
pub fn inbound_context(message: &InboundMessage) -> Context {
    let id = Uuid::parse_str(&message.id)
        .unwrap_or_else(|_| Uuid::new_v5(&MESSAGE_NAMESPACE, message.id.as_bytes()));
    let uuid = |name: &str| message.header(name).and_then(|v| Uuid::parse_str(v).ok());
    let mut metadata = EventMetadata {
        correlation_id: uuid(headers::CORRELATION_ID).map(CorrelationId::from_uuid),
        causation_id: uuid(headers::CAUSATION_ID).map(CausationId::from_uuid),
        ..EventMetadata::default()
    };
    if let Some(tp) = message.header(headers::TRACEPARENT) {
        metadata = metadata.with_header(flext_ports::TRACEPARENT_HEADER, tp);
    }
    Context::from_metadata(id, &metadata)
}

/// Builds an [`Inbox`]: what it routes where, how often a message may be delivered.
pub struct InboxBuilder<S: InboxStore, M> {
    name: String,
    store: S,
    source: M,
    routes: Vec<(String, Route<S::Transaction>)>,
    max_deliveries: u32,
    backoff: Backoff,
    batch: usize,
    retention: Duration,
    metrics: Arc<dyn Metrics>,
}

/// A running inbox: messages from other services, taken from a broker's durable consumer
/// ([`MessageSource`]) and handed to a handler in a store transaction, or to the command
/// bus or the event bus. Stop it with [`Inbox::shutdown`]; dropped, it stops at once.
///
/// What guarantees what:
/// - **A handler's effects once**: an [`InboxHandler`] writes in the transaction in which
///   the inbox records the message id ([`InboxStore::receive`]); a message delivered
///   again (its acknowledgement lost, the consumer killed between commit and ack, another
///   instance taking it after the ack wait) finds its id and is acknowledged without
///   running the handler.
/// - **A command's effects once**: a routed command is dispatched with a message id
///   derived from the message's, then the inbox records the message. A redelivery after
///   the record is acknowledged at once; a redelivery between the command's commit and
///   the record dispatches the command again under the same id, which
///   [`IdempotencyBehavior`](crate::IdempotencyBehavior) answers from its first outcome:
///   make routed commands idempotent. An event routed to the event bus is handled the
///   same way: a redelivery after the record is acknowledged at once; one before it runs
///   the event's handlers again.
/// - **Batched**: the messages of one fetch that all go to handlers are handled in one
///   transaction, their records with them; when any handler fails, that transaction rolls
///   back and each message is handled alone, so one bad message costs only itself.
/// - **Acknowledged only after the effects committed**; a transient error (`UNAVAILABLE`,
///   a conflict, a deadline) is negatively acknowledged with a backoff, so the broker
///   delivers it again later; any other error, or the last allowed delivery failing, sends
///   the message to the source's dead-letter subject, parks it
///   ([`InboxStore::inbox_dead_letters`]) and tells the broker to stop delivering it.
/// - **Trace context continued**: handling runs in a span `inbox.receive` whose parent
///   is the message's `traceparent` header (as the relay sends it), and events recorded
///   while handling carry the message's correlation id.
///
/// ```no_run
/// # use flext::application::{Inbox, InboxHandler};
/// # use flext::ports::{InboxStore, MessageSource, Context, InboundMessage};
/// # struct Totals;
/// # impl<T: Send> InboxHandler<T> for Totals {
/// #     async fn handle(&self, _: &mut T, _: &InboundMessage, _: &Context) -> Result<(), flext::Error> { Ok(()) }
/// # }
/// # async fn demo<S: InboxStore + Clone, M: MessageSource>(store: S, source: M) -> Result<(), flext::Error> {
/// let inbox = Inbox::builder("notifier", store, source)
///     .handle("bank.transfers.>", Totals)
///     .max_deliveries(5)
///     .start()?;
/// // ...
/// inbox.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Inbox {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inbox {
    /// An inbox named `name` (its records and dead letters are kept under the name)
    /// taking messages from `source` into `store`.
    pub fn builder<S: InboxStore, M: MessageSource>(
        name: impl Into<String>,
        store: S,
        source: M,
    ) -> InboxBuilder<S, M> {
        InboxBuilder {
            name: name.into(),
            store,
            source,
            routes: Vec::new(),
            max_deliveries: 5,
            backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(60),
            },
            batch: 64,
            retention: Duration::from_secs(7 * 24 * 3600),
            metrics: Arc::new(()),
        }
    }

    /// Stops taking messages; the message in hand is finished and settled first.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send_replace(true);
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl<S, M> InboxBuilder<S, M>
where
    S: InboxStore + Clone,
    M: MessageSource,
{
    /// Hands the messages whose subject matches `subject` (NATS wildcards `*` and `>`)
    /// to `handler`, in the inbox's transaction. The first route that matches decides.
    #[must_use]
    pub fn handle(mut self, subject: &str, handler: impl InboxHandler<S::Transaction>) -> Self {
        self.routes
            .push((subject.to_owned(), Route::Handler(Arc::new(handler))));
        self
    }

    /// Decodes the messages whose subject matches `subject` as JSON commands `C` and
    /// dispatches them on `bus`, under a message id derived from the message's (make `C`
    /// idempotent: see [`Inbox`]). A payload that does not decode is parked as
    /// `INVALID_ARGUMENT`/`UNREADABLE_MESSAGE`.
    #[must_use]
    pub fn command<C: Command + DeserializeOwned>(
        mut self,
        subject: &str,
        bus: CommandBus,
    ) -> Self {
        let dispatch: Dispatch = Arc::new(move |payload: bytes::Bytes, ctx: Context| {
            let bus = bus.clone();
            Box::pin(async move {
                let command: C = serde_json::from_slice(&payload).map_err(|e| {
                    Error::invalid_argument(
                        "UNREADABLE_MESSAGE",
                        format!("the message does not decode as command {}: {e}", C::NAME),
                    )
                })?;
                bus.dispatch(command, &ctx).await.map(drop)
            })
        });
        self.routes.push((subject.to_owned(), Route::Bus(dispatch)));
        self
    }

    /// Decodes the messages whose subject matches `subject` as JSON events `E` and
    /// publishes them on `bus` to every handler of `E`, under the message's context. The
    /// first handler error is the message's (a transient one has the message delivered
    /// again, and every handler runs again: event handlers taken in this way see a message
    /// at least once, and should be idempotent by the context's message id). A payload
    /// that does not decode is parked as `INVALID_ARGUMENT`/`UNREADABLE_MESSAGE`.
    #[must_use]
    pub fn event<E>(mut self, subject: &str, bus: EventBus) -> Self
    where
        E: DeserializeOwned + Send + Sync + 'static,
    {
        let dispatch: Dispatch = Arc::new(move |payload: bytes::Bytes, ctx: Context| {
            let bus = bus.clone();
            Box::pin(async move {
                let event: E = serde_json::from_slice(&payload).map_err(|e| {
                    Error::invalid_argument(
                        "UNREADABLE_MESSAGE",
                        format!(
                            "the message does not decode as event {}: {e}",
                            std::any::type_name::<E>()
                        ),
                    )
                })?;
                let outcomes = bus.publish(&event, &ctx).await;
                match outcomes.into_iter().find_map(|o| o.result.err()) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            })
        });
        self.routes.push((subject.to_owned(), Route::Bus(dispatch)));
        self
    }

    /// How many deliveries a message gets before it is parked (at least 1; 5 by default).
    #[must_use]
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// The wait before a message that failed transiently is delivered again, by delivery
    /// (default 200 ms doubling up to 60 s, jittered).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many messages it takes from the source at once (at least 1; 64 by default).
    #[must_use]
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// How long the ids of handled messages are kept (default 7 days; purged hourly):
    /// keep it longer than the broker may deliver a message again.
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Records `flext.inbox.messages` (labels `inbox`, `outcome`: handled, duplicate,
    /// retried, dead) to `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Starts taking messages on the current Tokio runtime. An inbox without a route is
    /// `INVALID_ARGUMENT`/`INBOX_WITHOUT_ROUTES`.
    pub fn start(self) -> Result<Inbox, Error> {
        if self.routes.is_empty() {
            return Err(Error::invalid_argument(
                "INBOX_WITHOUT_ROUTES",
                format!(
                    "inbox {:?} routes no subject to a handler or command",
                    self.name
                ),
            ));
        }
        let (stop, stopped) = watch::channel(false);
        let worker = Worker {
            name: self.name,
            store: self.store,
            source: self.source,
            routes: self.routes,
            max_deliveries: self.max_deliveries,
            backoff: self.backoff,
            batch: self.batch,
            retention: self.retention,
            metrics: self.metrics,
        };
        let task = tokio::spawn(worker.run(stopped));
        Ok(Inbox { stop, task })
    }
}

struct Worker<S: InboxStore, M> {
    name: String,
    store: S,
    source: M,
    routes: Vec<(String, Route<S::Transaction>)>,
    max_deliveries: u32,
    backoff: Backoff,
    batch: usize,
    retention: Duration,
    metrics: Arc<dyn Metrics>,
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Handled,
    Duplicate,
    Retried,
    Dead,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::Retried => "retried",
            Outcome::Dead => "dead",
        }
    }
}

impl<S, M> Worker<S, M>
where
    S: InboxStore + Clone,
    M: MessageSource,
{
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        let mut purged = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let fetched = tokio::select! {
                _ = stop.changed() => return,
                fetched = self.source.fetch(self.batch) => fetched,
            };
            let messages = match fetched {
                Ok(messages) => {
                    failures = 0;
                    messages
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(inbox = %self.name, error = %e, "the inbox cannot fetch messages");
                    let wait = self.backoff.jittered(failures);
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            // Every message fetched is settled, stop or not: what is in hand is finished.
            // All in one transaction when every one goes to a handler and none fails;
            // else one by one.
            let refs: Vec<&InboundMessage> = messages.iter().map(|(m, _)| m).collect();
            let together = match self.take_together(&refs).await {
                Some(outcomes) => outcomes.into_iter().map(Some).collect(),
                None => vec![None; messages.len()],
            };
            for ((message, receipt), together) in messages.into_iter().zip(together) {
                let (outcome, settle) = match together {
                    Some(outcome) => (outcome, Settle::Ack),
                    None => self.take(&message).await,
                };
                self.metrics.count(
                    "flext.inbox.messages",
                    1,
                    &[("inbox", &self.name), ("outcome", outcome.label())],
                );
                if let Err(e) = self.source.settle(receipt, settle).await {
                    // The broker delivers it again; the record makes that a duplicate.
                    tracing::warn!(inbox = %self.name, message = %message.id, error = %e,
                        "a message could not be settled");
                }
            }
            if purged.elapsed() >= Duration::from_secs(3600) {
                purged = Instant::now();
                if let Err(e) = self.store.purge_inbox(&self.name, self.retention).await {
                    tracing::warn!(inbox = %self.name, error = %e, "the inbox's records could not be purged");
                }
            }
        }
    }

    /// Handles `messages` in one transaction: each outcome (handled or duplicate) when
    /// every one has a handler route and all committed, `None` when any has not or any
    /// handler failed (nothing committed: they are taken one by one).
    async fn take_together(&self, messages: &[&InboundMessage]) -> Option<Vec<Outcome>> {
        if messages.len() < 2 {
            return None;
        }
        let mut handlers = Vec::with_capacity(messages.len());
        for message in messages {
            match self.route(&message.subject) {
                Some(Route::Handler(h)) => handlers.push(h),
                _ => return None,
            }
        }
        let mut tx = self.store.begin().await.ok()?;
        let mut outcomes = Vec::with_capacity(messages.len());
        for (message, handler) in messages.iter().copied().zip(handlers) {
            let ctx = inbound_context(message);
            let span = self.span(message);
            let done = async {
                if !self
                    .store
                    .receive(&mut tx, &self.name, &record_key(&message.id))
                    .await?
                {
                    return Ok::<_, Error>(Outcome::Duplicate);
                }
                handler.handle(&mut tx, message, &ctx).await?;
                Ok(Outcome::Handled)
            }
            .instrument(span)
            .await;
            outcomes.push(done.ok()?);
        }
        self.store.commit(tx).await.ok()?;
        Some(outcomes)
    }

    /// The span a message is handled in, continuing its trace.
    fn span(&self, message: &InboundMessage) -> tracing::Span {
        let span = tracing::info_span!(
            "inbox.receive",
            otel.kind = "consumer",
            messaging.operation.type = "process",
            messaging.destination.name = %message.subject,
            messaging.message.id = %message.id,
            messaging.consumer.group.name = %self.name,
            flext.deliveries = message.deliveries,
        );
        if let Some(tp) = message.header(headers::TRACEPARENT)
            && flext_ports::is_valid_traceparent(tp)
        {
            flext_ports::trace::continue_trace(&span, tp, true);
        }
        span
    }

    /// Handles one message; how to settle it.
    async fn take(&self, message: &InboundMessage) -> (Outcome, Settle) {
        let ctx = inbound_context(message);
        let span = self.span(message);
        let result = self.run_route(message, &ctx).instrument(span).await;
        match result {
            Ok(true) => (Outcome::Handled, Settle::Ack),
            Ok(false) => (Outcome::Duplicate, Settle::Ack),
            Err(e) if e.is_transient() && message.deliveries < self.max_deliveries => {
                tracing::info!(inbox = %self.name, message = %message.id, error = %e,
                    deliveries = message.deliveries, "a message failed; it is delivered again later");
                (
                    Outcome::Retried,
                    Settle::Nak(self.backoff.jittered(message.deliveries)),
                )
            }
            Err(e) => match self.park(message, e).await {
                Ok(()) => (Outcome::Dead, Settle::Term),
                Err(e) => {
                    tracing::warn!(inbox = %self.name, message = %message.id, error = %e,
                        "a message could not be dead-lettered; it is delivered again later");
                    (
                        Outcome::Retried,
                        Settle::Nak(self.backoff.jittered(message.deliveries)),
                    )
                }
            },
        }
    }

    /// The first route that takes `subject`.
    fn route(&self, subject: &str) -> Option<&Route<S::Transaction>> {
        self.routes
            .iter()
            .find(|(pattern, _)| subject_matches(pattern, subject))
            .map(|(_, route)| route)
    }

    /// Runs the message's route: `Ok(false)` when it was handled before.
    async fn run_route(&self, message: &InboundMessage, ctx: &Context) -> Result<bool, Error> {
        let Some(route) = self.route(&message.subject) else {
            return Err(Error::not_found(
                "NO_INBOX_ROUTE",
                format!(
                    "inbox {:?} has no route for subject {:?}",
                    self.name, message.subject
                ),
            ));
        };
        match route {
            Route::Handler(handler) => {
                let mut tx = self.store.begin().await?;
                if !self
                    .store
                    .receive(&mut tx, &self.name, &record_key(&message.id))
                    .await?
                {
                    return Ok(false);
                }
                handler.handle(&mut tx, message, ctx).await?;
                self.store.commit(tx).await?;
                Ok(true)
            }
            Route::Bus(dispatch) => {
                // Looked up first (and rolled back), so a message recorded before is not
                // dispatched again; the dispatch runs outside the inbox's transaction (a
                // single-writer store would wait on itself).
                let mut tx = self.store.begin().await?;
                let fresh = self
                    .store
                    .receive(&mut tx, &self.name, &record_key(&message.id))
                    .await?;
                drop(tx);
                if !fresh {
                    return Ok(false);
                }
                dispatch(message.payload.clone(), ctx.clone()).await?;
                let mut tx = self.store.begin().await?;
                let fresh = self
                    .store
                    .receive(&mut tx, &self.name, &record_key(&message.id))
                    .await?;
                self.store.commit(tx).await?;
                Ok(fresh)
            }
        }
    }

    /// Sends `message` to the dead-letter subject and parks it, recorded as handled.
    async fn park(&self, message: &InboundMessage, error: Error) -> Result<(), Error> {
        tracing::warn!(inbox = %self.name, message = %message.id, subject = %message.subject,
            error = %error, deliveries = message.deliveries, "a message is dead-lettered");
        self.source.dead_letter(message, &error).await?;
        let letter = InboxDeadLetter {
            consumer: self.name.clone(),
            message_id: record_key(&message.id).into_owned(),
            subject: message.subject.clone(),
            headers: message.headers.clone(),
            payload: message.payload.to_vec(),
            error,
            deliveries: message.deliveries,
            parked_at: chrono::Utc::now(),
        };
        let mut tx = self.store.begin().await?;
        // Recorded, so a delivery after the park is a duplicate; parked again either way.
        self.store
            .receive(&mut tx, &self.name, &record_key(&message.id))
            .await?;
        self.store.park_message(&mut tx, &letter).await?;
        self.store.commit(tx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_message_ids_are_recorded_by_a_digest() {
        assert_eq!(record_key("m-1"), "m-1");
        let long = "x".repeat(10_000);
        let key = record_key(&long);
        assert!(key.starts_with("v5:") && key.len() == 39, "{key}");
        assert_eq!(key, record_key(&long), "the same id, the same key");
        assert_ne!(key, record_key(&"y".repeat(10_000)));
    }

    #[test]
    fn subjects_match_as_nats_matches_them() {
        assert!(subject_matches(
            "bank.transfers.completed",
            "bank.transfers.completed"
        ));
        assert!(subject_matches(
            "bank.*.completed",
            "bank.transfers.completed"
        ));
        assert!(subject_matches("bank.>", "bank.transfers.completed"));
        assert!(!subject_matches("bank.>", "bank"));
        assert!(!subject_matches("bank.*", "bank.transfers.completed"));
        assert!(!subject_matches(
            "bank.transfers",
            "bank.transfers.completed"
        ));
        assert!(!subject_matches(
            "bank.transfers.completed",
            "bank.transfers"
        ));
    }

    #[test]
    fn the_context_continues_the_message_ids_and_trace() {
        let correlation = Uuid::now_v7();
        let message = InboundMessage {
            subject: "a.b".into(),
            id: "not-a-uuid".into(),
            headers: vec![
                (headers::CORRELATION_ID.into(), correlation.to_string()),
                (
                    headers::TRACEPARENT.into(),
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                ),
            ],
            payload: bytes::Bytes::new(),
            deliveries: 1,
        };
        let ctx = inbound_context(&message);
        assert_eq!(
            ctx.message_id(),
            Uuid::new_v5(&MESSAGE_NAMESPACE, b"not-a-uuid")
        );
        assert_eq!(ctx.correlation_id().as_uuid(), correlation);
        assert_eq!(
            ctx.event_metadata()
                .headers
                .get("traceparent")
                .map(String::as_str),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let id = Uuid::now_v7();
        let message = InboundMessage {
            id: id.to_string(),
            headers: vec![],
            ..message
        };
        assert_eq!(inbound_context(&message).message_id(), id);
    }
}

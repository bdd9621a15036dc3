//! Reactors: event handlers run from the store's global order, from a checkpoint, with
//! effects outside the store's transaction (follow-up commands, calls to other systems).
//!
//! A reactor runs inside a [`ProjectionRunner`](crate::ProjectionRunner) like a
//! projection, so it has the same ownership (one fenced owner among all processes), the
//! same retries (transient errors without limit, others up to `max_attempts`, then the
//! poison policy), dead letters with redrive, status, health, metrics and spans. What
//! differs: its handler runs outside any transaction (a follow-up command commits on its
//! own), events with the same key (the stream, unless the reactor says otherwise) are
//! handled in order while different keys run concurrently up to a bound, and the
//! checkpoint moves once a batch's effects are done. Delivery is at least once: after a
//! crash, or when one event of a batch fails, an event whose effect was done may be handed
//! over again. Dispatch follow-up commands with [`Context::child_for`] so a re-delivery
//! carries the same message id and the idempotency behavior makes its effect exactly once.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use std::sync::LazyLock;

use flext_domain::{DomainEvent, Error, RecordedEvent};
use flext_ports::{Context, Decoded, EventCodec, JsonCodec};
use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::pipeline::BoxFuture;
use crate::projection::DynProjection;

/// Reacts to stored events: runs from a checkpoint in the store's global order, in one
/// process at a time among all that share the store.
///
/// ```
/// use flext::application::ProjectionRunner;
/// use flext::application::Reactor;
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::Context;
/// use flext::{Error, RecordedEvent};
///
/// struct Notify;
///
/// impl Reactor for Notify {
///     fn name(&self) -> &str {
///         "notify"
///     }
///     fn event_types(&self) -> Option<&[&str]> {
///         Some(&["account.opened"])
///     }
///     async fn react(&self, event: &RecordedEvent, ctx: &Context) -> Result<(), Error> {
///         // e.g. commands.dispatch(SendWelcome(..), &ctx.child_for("welcome")).await?;
///         let _ = (event, ctx);
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let runner = ProjectionRunner::new(InMemoryEventStore::new())
///     .reactor(Notify)?
///     .start();
/// runner.shutdown().await;
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
pub trait Reactor: Send + Sync + 'static {
    /// The consumer's name: its checkpoint, ownership, status and dead letters go by it.
    fn name(&self) -> &str;

    /// The event types it reacts to (the SQL stores filter in their query); `None`: all.
    fn event_types(&self) -> Option<&[&str]> {
        None
    }

    /// The key whose events are handled one at a time, in order: the stream by default.
    /// Events of different keys run concurrently (up to [`ReactorOptions::concurrency`]).
    fn key<'e>(&self, event: &'e RecordedEvent) -> Cow<'e, str> {
        Cow::Borrowed(event.stream_id.as_str())
    }

    /// Reacts to one event. `ctx` is [`Context::for_event`]: the event's id is its message
    /// id and becomes the causation of what the handler dispatches with
    /// [`Context::child_for`]; the correlation id, tenant and trace carry on.
    fn react(
        &self,
        event: &RecordedEvent,
        ctx: &Context,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A reactor of one event type, handed its events decoded and upcast (like an
/// [`EventProjection`](flext_ports::EventProjection)): the runner reads only its event
/// type's names, from the store's query.
pub trait EventReactor: Send + Sync + 'static {
    /// The event type it reacts to (an enum of an aggregate's events, usually).
    type Event: DomainEvent + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The consumer's name.
    const NAME: &'static str;

    /// The name, [`EventReactor::NAME`] by default.
    fn name(&self) -> &str {
        Self::NAME
    }

    /// The key whose events are handled in order: the stream by default.
    fn key<'e>(&self, event: &'e RecordedEvent) -> Cow<'e, str> {
        Cow::Borrowed(event.stream_id.as_str())
    }

    /// Reacts to one event, decoded; `ctx` as for [`Reactor::react`].
    fn react(
        &self,
        event: Decoded<'_, Self::Event>,
        ctx: &Context,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The codec that decodes and upcasts its events: JSON without upcasters by default.
    fn codec(&self) -> &dyn EventCodec<Self::Event> {
        static PLAIN: LazyLock<JsonCodec> = LazyLock::new(JsonCodec::new);
        &*PLAIN
    }
}

/// An [`EventReactor`] as a [`Reactor`]: `ProjectionRunner::reactor` wraps one by itself.
#[derive(Debug, Clone, Default)]
pub struct TypedReactor<R>(pub R);

impl<R: EventReactor> Reactor for TypedReactor<R> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn event_types(&self) -> Option<&[&str]> {
        Some(R::Event::event_types())
    }
    fn key<'e>(&self, event: &'e RecordedEvent) -> Cow<'e, str> {
        self.0.key(event)
    }
    async fn react(&self, event: &RecordedEvent, ctx: &Context) -> Result<(), Error> {
        let decoded = self.0.codec().decode(event.as_event_ref())?;
        self.0
            .react(
                Decoded {
                    event: decoded,
                    record: event,
                },
                ctx,
            )
            .await
    }
}

/// What `ProjectionRunner::reactor` accepts: a [`Reactor`] (marker
/// [`Untyped`](crate::Untyped)) or an [`EventReactor`] (marker
/// [`OfEvents`](crate::OfEvents)).
pub trait IntoReactor<M> {
    /// The reactor the runner runs.
    type Reactor: Reactor;
    /// `self` as that reactor.
    fn into_reactor(self) -> Self::Reactor;
}

impl<R: Reactor> IntoReactor<crate::Untyped> for R {
    type Reactor = R;
    fn into_reactor(self) -> R {
        self
    }
}

impl<R: EventReactor> IntoReactor<crate::OfEvents> for R {
    type Reactor = TypedReactor<R>;
    fn into_reactor(self) -> TypedReactor<R> {
        TypedReactor(self)
    }
}

/// How a reactor runs its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactorOptions {
    /// How many keys are handled at once within a batch (at least 1). Default 16.
    pub concurrency: usize,
}

impl Default for ReactorOptions {
    fn default() -> Self {
        ReactorOptions { concurrency: 16 }
    }
}

/// A reactor as the runner holds it.
pub(crate) struct Reacting<R> {
    reactor: R,
    concurrency: usize,
}

impl<R: Reactor> Reacting<R> {
    pub(crate) fn new(reactor: R, options: ReactorOptions) -> Self {
        Reacting {
            reactor,
            concurrency: options.concurrency.max(1),
        }
    }

    fn selects(&self, event: &RecordedEvent) -> bool {
        self.reactor
            .event_types()
            .is_none_or(|t| t.contains(&event.event_type.as_str()))
    }

    /// One event, a panic caught as a failure of that event.
    async fn one(&self, event: &RecordedEvent) -> Result<(), Error> {
        let ctx = Context::for_event(event);
        crate::catch::CatchPanic::named(
            self.reactor.react(event, &ctx),
            format!("reactor {:?}", self.reactor.name()),
            "REACTOR_PANICKED",
        )
        .await
    }

    /// The batch: its events grouped by key in position order, the groups run
    /// concurrently (each in order, stopping at its first failure). Every group runs to
    /// its end or its failure, so every event before the first failure (in position
    /// order) has been handled: that failure's index is returned.
    async fn batch(&self, events: &[RecordedEvent]) -> Result<(), (usize, Error)> {
        let mut keys: Vec<Cow<'_, str>> = Vec::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if !self.selects(event) {
                continue;
            }
            let key = self.reactor.key(event);
            match keys.iter().position(|k| *k == key) {
                Some(g) => groups[g].push(i),
                None => {
                    keys.push(key);
                    groups.push(vec![i]);
                }
            }
        }
        let permits = Semaphore::new(self.concurrency);
        let outcomes = join_all(groups.iter().map(|group| {
            let permits = &permits;
            async move {
                let _permit = permits.acquire().await.ok();
                for &i in group {
                    self.one(&events[i]).await.map_err(|e| (i, e))?;
                }
                Ok::<(), (usize, Error)>(())
            }
        }))
        .await;
        match outcomes
            .into_iter()
            .filter_map(Result::err)
            .min_by_key(|(i, _)| *i)
        {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }
}

impl<T: Send, R: Reactor> DynProjection<T> for Reacting<R> {
    fn name(&self) -> &str {
        self.reactor.name()
    }
    /// A single event, for a retry or a redrive (outside the transaction: the runner asks
    /// `react` first, and only a projection's `handle` is given one).
    fn handle<'a>(
        &'a self,
        _tx: &'a mut T,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.one(event))
    }
    fn event_types(&self) -> Option<&[&str]> {
        self.reactor.event_types()
    }
    fn react<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> Option<BoxFuture<'a, Result<(), (usize, Error)>>> {
        Some(Box::pin(self.batch(events)))
    }
}

/// Makes a reactor the runner's consumer.
pub(crate) fn erase<T: Send + 'static, R: Reactor>(
    reactor: R,
    options: ReactorOptions,
) -> Arc<dyn DynProjection<T>> {
    Arc::new(Reacting::new(reactor, options))
}

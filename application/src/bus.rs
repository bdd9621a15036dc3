//! The registry of handlers and the buses built from it, keyed by `TypeId`.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use flext_domain::Error;
use flext_ports::{Command, CommandHandler, Context, EventHandler, Query, QueryHandler};
use tracing::Instrument as _;

use crate::catch::CatchPanic;
use crate::pipeline::{Behavior, BoxFuture, Message, MessageKind, Next, Pipeline, Reply};
use crate::services::Services;
use crate::typemap::TypeMap;

/// Where a handler was registered: `file:line`, from `#[track_caller]` or from the
/// attribute macros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The source file.
    pub file: &'static str,
    /// The line.
    pub line: u32,
}

impl Site {
    /// The caller's site.
    #[track_caller]
    pub fn caller() -> Site {
        let l = Location::caller();
        Site {
            file: l.file(),
            line: l.line(),
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One handler of messages `M` answering `O`, behind a pointer the bus can store.
trait DynHandler<M, O>: Send + Sync {
    fn call<'a>(&'a self, message: M, ctx: &'a Context) -> BoxFuture<'a, Result<O, Error>>;

    /// The call as the end of a pipeline: panics caught and the output boxed as a
    /// [`Reply`], in one boxed future.
    fn call_reply<'a>(
        &'a self,
        message: M,
        ctx: &'a Context,
        name: &'static str,
    ) -> BoxFuture<'a, Result<Reply, Error>>;
}

struct CommandAdapter<H>(H);
struct QueryAdapter<H>(H);

impl<C: Command, H: CommandHandler<C>> DynHandler<C, C::Output> for CommandAdapter<H> {
    fn call<'a>(&'a self, message: C, ctx: &'a Context) -> BoxFuture<'a, Result<C::Output, Error>> {
        Box::pin(self.0.handle(message, ctx))
    }
    fn call_reply<'a>(
        &'a self,
        message: C,
        ctx: &'a Context,
        name: &'static str,
    ) -> BoxFuture<'a, Result<Reply, Error>> {
        Box::pin(async move {
            CatchPanic::new(self.0.handle(message, ctx), name)
                .await
                .map(|output| Reply(Box::new(output)))
        })
    }
}

impl<Q: Query, H: QueryHandler<Q>> DynHandler<Q, Q::Output> for QueryAdapter<H> {
    fn call<'a>(&'a self, message: Q, ctx: &'a Context) -> BoxFuture<'a, Result<Q::Output, Error>> {
        Box::pin(self.0.handle(message, ctx))
    }
    fn call_reply<'a>(
        &'a self,
        message: Q,
        ctx: &'a Context,
        name: &'static str,
    ) -> BoxFuture<'a, Result<Reply, Error>> {
        Box::pin(async move {
            CatchPanic::new(self.0.handle(message, ctx), name)
                .await
                .map(|output| Reply(Box::new(output)))
        })
    }
}

/// A registered command or query handler: an `Arc<dyn DynHandler<M, O>>` behind `Any`.
#[derive(Clone)]
struct Entry {
    message_type: TypeId,
    name: &'static str,
    handler: Arc<dyn Any + Send + Sync>,
    site: Site,
    /// The projections a query reads (`Query::READS`); none for a command.
    reads: &'static [&'static str],
}

trait DynEventHandler<E>: Send + Sync {
    fn call<'a>(&'a self, event: &'a E, ctx: &'a Context) -> BoxFuture<'a, Result<(), Error>>;
}

struct EventAdapter<H>(H);

impl<E: Send + Sync + 'static, H: EventHandler<E>> DynEventHandler<E> for EventAdapter<H> {
    fn call<'a>(&'a self, event: &'a E, ctx: &'a Context) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.0.handle(event, ctx))
    }
}

#[derive(Clone)]
struct EventEntry {
    handler_name: &'static str,
    handler: Arc<dyn Any + Send + Sync>,
    site: Site,
}

/// Where handlers are registered, by hand or by the attribute macros, before the buses are
/// built. Registration records the caller's `file:line`, so a duplicate names both sites.
///
/// ```
/// use flext::application::{Pipeline, Registry, ValidationBehavior};
/// use flext::Error;
/// use flext::ports::{Command, CommandHandler, Context};
///
/// #[derive(Clone)]
/// struct Ping;
/// impl Command for Ping {
///     type Output = &'static str;
///     const NAME: &'static str = "ping";
/// }
/// struct Pong;
/// impl CommandHandler<Ping> for Pong {
///     async fn handle(&self, _: Ping, _: &Context) -> Result<&'static str, Error> { Ok("pong") }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let bus = Registry::new()
///     .command::<Ping, _>(Pong)
///     .command_bus(Pipeline::new().layer(ValidationBehavior))?;
/// assert_eq!(bus.dispatch(Ping, &Context::new()).await?, "pong");
///
/// let twice = Registry::new().command::<Ping, _>(Pong).command::<Ping, _>(Pong).command_bus(Pipeline::new());
/// assert_eq!(twice.unwrap_err().reason(), "DUPLICATE_HANDLER");
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    commands: Vec<Entry>,
    queries: Vec<Entry>,
    events: HashMap<TypeId, Vec<EventEntry>>,
    unresolved: Vec<Unresolved>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field(
                "commands",
                &self.commands.iter().map(|e| e.name).collect::<Vec<_>>(),
            )
            .field(
                "queries",
                &self.queries.iter().map(|e| e.name).collect::<Vec<_>>(),
            )
            .field("event_types", &self.events.len())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `handler` as the one handler of command `C`.
    #[track_caller]
    pub fn command<C: Command, H: CommandHandler<C>>(self, handler: H) -> Self {
        self.command_at(handler, Site::caller())
    }

    /// [`Registry::command`] with an explicit registration site (what the macros use).
    pub fn command_at<C: Command, H: CommandHandler<C>>(mut self, handler: H, site: Site) -> Self {
        let dynamic: Arc<dyn DynHandler<C, C::Output>> = Arc::new(CommandAdapter(handler));
        self.commands.push(Entry {
            message_type: TypeId::of::<C>(),
            name: C::NAME,
            handler: Arc::new(dynamic),
            site,
            reads: &[],
        });
        self
    }

    /// Registers `handler` as the one handler of query `Q`.
    #[track_caller]
    pub fn query<Q: Query, H: QueryHandler<Q>>(self, handler: H) -> Self {
        self.query_at(handler, Site::caller())
    }

    /// [`Registry::query`] with an explicit registration site.
    pub fn query_at<Q: Query, H: QueryHandler<Q>>(mut self, handler: H, site: Site) -> Self {
        let dynamic: Arc<dyn DynHandler<Q, Q::Output>> = Arc::new(QueryAdapter(handler));
        self.queries.push(Entry {
            message_type: TypeId::of::<Q>(),
            name: Q::NAME,
            handler: Arc::new(dynamic),
            site,
            reads: Q::READS,
        });
        self
    }

    /// Adds `handler` to the handlers of event type `E` (any number per type; they run in
    /// registration order).
    #[track_caller]
    pub fn event<E: Send + Sync + 'static, H: EventHandler<E>>(self, handler: H) -> Self {
        self.event_at(handler, Site::caller())
    }

    /// [`Registry::event`] with an explicit registration site.
    pub fn event_at<E: Send + Sync + 'static, H: EventHandler<E>>(
        mut self,
        handler: H,
        site: Site,
    ) -> Self {
        let dynamic: Arc<dyn DynEventHandler<E>> = Arc::new(EventAdapter(handler));
        self.events
            .entry(TypeId::of::<E>())
            .or_default()
            .push(EventEntry {
                handler_name: type_name::<H>(),
                handler: Arc::new(dynamic),
                site,
            });
        self
    }

    /// Adds every handler registered with the attribute macros (`#[command_handler]`,
    /// `#[query_handler]`, `#[event_handler]`), their dependencies resolved from
    /// `services` at dispatch. Macro-registered event handlers of one type run in an
    /// unspecified order; register by hand where order matters.
    ///
    /// Each handler's dependencies are checked against `services` here: the buses then
    /// refuse to build while any is missing ([`Registry::validate`]).
    pub fn with_registered(self, services: &Services) -> Self {
        inventory::iter::<Registration>
            .into_iter()
            .fold(self, |registry, registration| {
                let mut registry = (registration.register)(registry, services);
                let missing = (registration.missing)(services);
                if !missing.is_empty() {
                    registry.unresolved.push(Unresolved {
                        handler: registration.handler,
                        site: registration.site,
                        missing,
                    });
                }
                registry
            })
    }

    /// Each registered query's name with a projection it reads (`Query::READS`).
    pub fn query_reads(&self) -> Vec<(&'static str, &'static str)> {
        self.queries
            .iter()
            .flat_map(|e| e.reads.iter().map(move |p| (e.name, *p)))
            .collect()
    }

    /// `Ok` when every macro-registered handler can resolve its dependencies; otherwise
    /// one `FailedPrecondition`/`MISSING_SERVICES` error listing every handler and every
    /// service type it lacks (a field violation each, the field being the handler), so
    /// a service that could not run one of its handlers does not start.
    /// [`Registry::command_bus`] and [`Registry::query_bus`] call it.
    pub fn validate(&self) -> Result<(), Error> {
        if self.unresolved.is_empty() {
            return Ok(());
        }
        let mut unresolved = self.unresolved.clone();
        unresolved.sort_by_key(|u| (u.site.file, u.site.line));
        let count: usize = unresolved.iter().map(|u| u.missing.len()).sum();
        let listed: Vec<String> = unresolved
            .iter()
            .map(|u| format!("{} ({}) needs {}", u.handler, u.site, u.missing.join(", ")))
            .collect();
        let violations = unresolved.iter().flat_map(|u| {
            u.missing.iter().map(move |m| {
                flext_domain::FieldViolation::new(
                    u.handler,
                    flext_domain::ErrorCode::FailedPrecondition,
                    "MISSING_SERVICE",
                    format!(
                        "no service of type {m} is registered (handler at {})",
                        u.site
                    ),
                )
            })
        });
        Err(Error::failed_precondition(
            "MISSING_SERVICES",
            format!(
                "{count} service(s) that handlers need are not registered: {}",
                listed.join("; ")
            ),
        )
        .with_field_violations(violations))
    }

    /// The command bus with `pipeline` around every handler. Two handlers for one command
    /// type are an `AlreadyExists`/`DUPLICATE_HANDLER` error naming both sites.
    pub fn command_bus(&self, pipeline: Pipeline) -> Result<CommandBus, Error> {
        self.validate()?;
        Dispatcher::build(MessageKind::Command, &self.commands, pipeline)
            .map(|inner| CommandBus { inner })
    }

    /// The query bus with `pipeline` around every handler; duplicates as for commands.
    pub fn query_bus(&self, pipeline: Pipeline) -> Result<QueryBus, Error> {
        self.validate()?;
        Dispatcher::build(MessageKind::Query, &self.queries, pipeline)
            .map(|inner| QueryBus { inner })
    }

    /// The event bus.
    pub fn event_bus(&self) -> EventBus {
        EventBus {
            handlers: Arc::new(self.events.clone()),
        }
    }
}

/// What command and query buses share: a map from message type to handler, and the
/// behaviors.
#[derive(Clone)]
struct Dispatcher {
    kind: MessageKind,
    handlers: Arc<TypeMap<Entry>>,
    behaviors: Arc<[Arc<dyn Behavior>]>,
}

impl Dispatcher {
    fn build(
        kind: MessageKind,
        entries: &[Entry],
        pipeline: Pipeline,
    ) -> Result<Dispatcher, Error> {
        let mut handlers: TypeMap<Entry> = TypeMap::default();
        for entry in entries {
            if let Some(first) = handlers.get(&entry.message_type) {
                return Err(Error::already_exists(
                    "DUPLICATE_HANDLER",
                    format!(
                        "{} {} has two handlers, registered at {} and at {}",
                        kind.as_str(),
                        entry.name,
                        first.site,
                        entry.site
                    ),
                )
                .with_detail("message_type", entry.name)
                .with_detail("first_site", first.site.to_string())
                .with_detail("second_site", entry.site.to_string()));
            }
            handlers.insert(entry.message_type, entry.clone());
        }
        Ok(Dispatcher {
            kind,
            handlers: Arc::new(handlers),
            behaviors: pipeline.behaviors(),
        })
    }

    /// Finds the handler now and returns the dispatch as a small future: without
    /// behaviors it is the handler's own boxed future (one allocation); with behaviors
    /// the pipeline runs in a second boxed future.
    fn dispatch<'a, M, O>(
        &'a self,
        name: &'static str,
        view: fn(&M) -> Message<'_>,
        message: M,
        ctx: &'a Context,
    ) -> Dispatch<'a, O>
    where
        M: Clone + Send + Sync + 'static,
        O: Send + 'static,
    {
        let handler = self
            .handlers
            .get(&TypeId::of::<M>())
            .and_then(|entry| entry.handler.downcast_ref::<Arc<dyn DynHandler<M, O>>>());
        let Some(handler) = handler else {
            return Dispatch::Ready {
                error: Some(
                    Error::not_found(
                        "NO_HANDLER",
                        format!("no handler is registered for {} {name}", self.kind.as_str()),
                    )
                    .with_detail("message_type", name)
                    .with_detail("rust_type", type_name::<M>()),
                ),
            };
        };
        if self.behaviors.is_empty() {
            return Dispatch::Direct {
                future: CatchPanic::new(handler.call(message, ctx), name),
            };
        }
        let kind = self.kind;
        let behaviors = &self.behaviors;
        Dispatch::Piped {
            future: Box::pin(async move {
                let terminal = || handler.call_reply(message.clone(), ctx, name);
                let seen = view(&message);
                let reply = Next::new(behaviors, seen, ctx, &terminal).run().await?;
                reply.0.downcast::<O>().map(|output| *output).map_err(|_| {
                    Error::internal(
                        "REPLY_TYPE_MISMATCH",
                        format!(
                            "a behavior answered {} {name} with a value of another type",
                            kind.as_str()
                        ),
                    )
                })
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A dispatch in flight (see [`Dispatcher::dispatch`]).
    #[project = DispatchProjection]
    enum Dispatch<'a, O> {
        Ready { error: Option<Error> },
        Direct { #[pin] future: CatchPanic<BoxFuture<'a, Result<O, Error>>> },
        Piped { future: BoxFuture<'a, Result<O, Error>> },
    }
}

impl<O> std::future::Future for Dispatch<'_, O> {
    type Output = Result<O, Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            DispatchProjection::Ready { error } => {
                std::task::Poll::Ready(Err(error.take().unwrap_or_else(|| {
                    Error::internal(
                        "POLLED_AFTER_COMPLETION",
                        "a dispatch was polled after it completed",
                    )
                })))
            }
            DispatchProjection::Direct { future } => future.poll(cx),
            DispatchProjection::Piped { future } => future.as_mut().poll(cx),
        }
    }
}

/// A handler registration made by an attribute macro, collected with `inventory`.
#[derive(Debug)]
pub struct Registration {
    /// Adds the handler to a registry, given the services its dependencies come from.
    pub register: fn(Registry, &Services) -> Registry,
    /// The handler function's name.
    pub handler: &'static str,
    /// Where it was written.
    pub site: Site,
    /// The type names of the dependencies `services` lacks for it
    /// ([`FromServices::missing`](crate::FromServices::missing) of each argument).
    pub missing: fn(&Services) -> Vec<&'static str>,
}

/// A macro-registered handler whose dependencies are not all registered.
#[derive(Debug, Clone)]
struct Unresolved {
    handler: &'static str,
    site: Site,
    missing: Vec<&'static str>,
}

inventory::collect!(Registration);

/// Dispatches each command to its one handler through the pipeline. Cheap to clone;
/// `Send + Sync`, built once.
#[derive(Clone)]
pub struct CommandBus {
    inner: Dispatcher,
}

impl fmt::Debug for CommandBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandBus")
            .field("handlers", &self.inner.handlers.len())
            .field("behaviors", &self.inner.behaviors.len())
            .finish()
    }
}

impl CommandBus {
    /// Runs `command` through the pipeline and its handler. No handler is a
    /// `NotFound`/`NO_HANDLER` error naming the command; a handler that panics yields
    /// `Internal`/`HANDLER_PANICKED` and the bus goes on serving.
    pub fn dispatch<'a, C: Command>(
        &'a self,
        command: C,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<C::Output, Error>> + Send + 'a {
        self.inner
            .dispatch(C::NAME, |c| Message::of_command::<C>(c), command, ctx)
    }
}

/// Dispatches each query to its one handler through the pipeline.
#[derive(Clone)]
pub struct QueryBus {
    inner: Dispatcher,
}

impl fmt::Debug for QueryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryBus")
            .field("handlers", &self.inner.handlers.len())
            .field("behaviors", &self.inner.behaviors.len())
            .finish()
    }
}

impl QueryBus {
    /// Answers `query`; errors as for [`CommandBus::dispatch`].
    pub fn ask<'a, Q: Query>(
        &'a self,
        query: Q,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Q::Output, Error>> + Send + 'a {
        self.inner
            .dispatch(Q::NAME, |q| Message::of_query::<Q>(q), query, ctx)
    }
}

/// What one event handler did with a published event.
#[derive(Debug)]
pub struct HandlerOutcome {
    /// The handler's Rust type name (for logs; not a stable contract).
    pub handler: &'static str,
    /// Where it was registered.
    pub site: Site,
    /// Its result; a panic is `Internal`/`HANDLER_PANICKED`.
    pub result: Result<(), Error>,
}

/// Delivers each event to every handler of its type.
#[derive(Clone)]
pub struct EventBus {
    handlers: Arc<HashMap<TypeId, Vec<EventEntry>>>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("event_types", &self.handlers.len())
            .finish()
    }
}

impl EventBus {
    /// Runs every handler of `E` on `event`, in registration order, and returns every
    /// outcome: a failing or panicking handler neither stops the others nor is swallowed.
    pub async fn publish<E: Send + Sync + 'static>(
        &self,
        event: &E,
        ctx: &Context,
    ) -> Vec<HandlerOutcome> {
        let Some(entries) = self.handlers.get(&TypeId::of::<E>()) else {
            return Vec::new();
        };
        let span = event_span::<E>(ctx);
        self.run_handlers(entries, event, ctx)
            .instrument(span)
            .await
    }

    async fn run_handlers<E: Send + Sync + 'static>(
        &self,
        entries: &[EventEntry],
        event: &E,
        ctx: &Context,
    ) -> Vec<HandlerOutcome> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            let result = match entry.handler.downcast_ref::<Arc<dyn DynEventHandler<E>>>() {
                Some(handler) => {
                    CatchPanic::new(handler.call(event, ctx), entry.handler_name).await
                }
                None => Err(Error::internal(
                    "HANDLER_TYPE_MISMATCH",
                    "an event handler of another type",
                )),
            };
            outcomes.push(HandlerOutcome {
                handler: entry.handler_name,
                site: entry.site,
                result,
            });
        }
        outcomes
    }
}

/// The span of one event's delivery: `flext.dispatch` with `otel.name` `"event {type}"`,
/// kind consumer, the messaging attributes of [`TracingBehavior`](crate::TracingBehavior), and
/// the trace context stored with the event as its parent when no span is current, else
/// as a link.
fn event_span<E>(ctx: &Context) -> tracing::Span {
    let full = std::any::type_name::<E>();
    let name = full.rsplit("::").next().unwrap_or(full);
    let span = tracing::info_span!(
        "flext.dispatch",
        otel.name = tracing::field::Empty,
        otel.kind = "consumer",
        messaging.system = "flext",
        messaging.operation.type = "process",
        messaging.operation.name = "event",
        messaging.destination.name = name,
        messaging.message.id = %ctx.message_id(),
        messaging.message.conversation_id = %ctx.correlation_id(),
    );
    if !span.is_disabled() {
        span.record(
            "otel.name",
            tracing::field::display(format_args!("event {name}")),
        );
        if let Some(tp) = ctx.traceparent() {
            flext_ports::trace::continue_trace(&span, tp, true);
        }
    }
    span
}

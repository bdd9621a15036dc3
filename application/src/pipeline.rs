//! Pipeline behaviors: layers that wrap the rest of a dispatch, composed in code.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flext_domain::{Error, Validation};
use flext_ports::Context;

/// A boxed, sendable future, as behaviors return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether a dispatch carries a command or a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A command.
    Command,
    /// A query.
    Query,
}

impl MessageKind {
    /// `"command"` or `"query"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Command => "command",
            MessageKind::Query => "query",
        }
    }
}

/// The message a behavior sees: its kind, name, a check of its own fields, and the
/// message itself behind `Any` for behaviors that know its type.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    kind: MessageKind,
    name: &'static str,
    body: &'a (dyn Any + Send + Sync),
    validate: fn(&(dyn Any + Send + Sync), &mut Validation),
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<'a> Message<'a> {
    pub(crate) fn new(
        kind: MessageKind,
        name: &'static str,
        body: &'a (dyn Any + Send + Sync),
        validate: fn(&(dyn Any + Send + Sync), &mut Validation),
    ) -> Self {
        Message {
            kind,
            name,
            body,
            validate,
        }
    }

    /// The view of a command, as the command bus hands it to behaviors (to test a
    /// behavior on its own).
    pub fn of_command<C: flext_ports::Command>(command: &'a C) -> Self {
        Message::new(MessageKind::Command, C::NAME, command, |body, v| {
            if let Some(c) = body.downcast_ref::<C>() {
                c.validate(v);
            }
        })
    }

    /// The view of a query, as the query bus hands it to behaviors.
    pub fn of_query<Q: flext_ports::Query>(query: &'a Q) -> Self {
        Message::new(MessageKind::Query, Q::NAME, query, |body, v| {
            if let Some(q) = body.downcast_ref::<Q>() {
                q.validate(v);
            }
        })
    }

    /// The message's Rust type, for behaviors that keep something per type.
    pub fn type_id(&self) -> std::any::TypeId {
        Any::type_id(self.body)
    }

    /// Command or query.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The message type's stable name (`Command::NAME`, `Query::NAME`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the message's own checks, returning every violation at once.
    pub fn validate(&self) -> Result<(), Error> {
        let mut v = Validation::new();
        (self.validate)(self.body, &mut v);
        v.finish()
    }

    /// The message as `T`, if that is its type.
    pub fn downcast_ref<T: Any>(&self) -> Option<&'a T> {
        self.body.downcast_ref()
    }
}

/// The handler's output, type-erased while it travels back through the behaviors.
pub struct Reply(pub(crate) Box<dyn Any + Send>);

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply(..)")
    }
}

impl Reply {
    /// Wraps an output (for behaviors that answer without calling `next`).
    pub fn new<T: Any + Send>(output: T) -> Self {
        Reply(Box::new(output))
    }

    /// The output as `T`, if that is its type.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

pub(crate) type Terminal<'a> = dyn Fn() -> BoxFuture<'a, Result<Reply, Error>> + Send + Sync + 'a;

/// The rest of the pipeline after a behavior: the next behaviors, then the handler.
/// `run` may be called more than once (a retry runs the handler again).
#[derive(Clone, Copy)]
pub struct Next<'a> {
    rest: &'a [Arc<dyn Behavior>],
    message: Message<'a>,
    ctx: &'a Context,
    terminal: &'a Terminal<'a>,
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("behaviors_left", &self.rest.len())
            .field("message", &self.message)
            .finish()
    }
}

impl<'a> Next<'a> {
    pub(crate) fn new(
        rest: &'a [Arc<dyn Behavior>],
        message: Message<'a>,
        ctx: &'a Context,
        terminal: &'a Terminal<'a>,
    ) -> Self {
        Next {
            rest,
            message,
            ctx,
            terminal,
        }
    }

    /// A `Next` that calls `handler` directly: a stub of the rest of the pipeline, to test
    /// a behavior on its own.
    pub fn handler(
        message: Message<'a>,
        ctx: &'a Context,
        handler: &'a (dyn Fn() -> BoxFuture<'a, Result<Reply, Error>> + Send + Sync + 'a),
    ) -> Self {
        Next::new(&[], message, ctx, handler)
    }

    /// Runs the rest of the pipeline.
    pub fn run(self) -> BoxFuture<'a, Result<Reply, Error>> {
        match self.rest.split_first() {
            Some((behavior, rest)) => {
                behavior.handle(self.message, self.ctx, Next { rest, ..self })
            }
            None => (self.terminal)(),
        }
    }
}

/// A pipeline behavior: it wraps the rest of a dispatch, like a tower layer or an axum
/// `middleware::from_fn`, and may act before and after it, answer without it, or run it
/// again.
///
/// ```
/// use flext::application::{Behavior, BoxFuture, Message, Next, Reply};
/// use flext::Error;
/// use flext::ports::Context;
///
/// /// Refuses every message while maintenance is on.
/// struct Maintenance(bool);
///
/// impl Behavior for Maintenance {
///     fn handle<'s, 'a: 's>(&'s self, message: Message<'a>, _ctx: &'a Context, next: Next<'a>)
///         -> BoxFuture<'s, Result<Reply, Error>>
///     {
///         Box::pin(async move {
///             if self.0 {
///                 return Err(Error::unavailable("MAINTENANCE", format!("{} refused", message.name())));
///             }
///             next.run().await
///         })
///     }
/// }
/// ```
///
/// The borrow of the behavior (`'s`) may be shorter than the message's (`'a`), so a
/// behavior can hand the call to another one it holds only for the call (as
/// [`HotSwap::behavior`](crate::HotSwap::behavior) does with the current plugin instance).
pub trait Behavior: Send + Sync + 'static {
    /// Handles `message`; call `next.run()` to go on.
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>>;
}

/// An ordered list of behaviors, outermost first, built in code so the order is read where
/// it is built.
///
/// ```
/// use flext::application::{Pipeline, RetryBehavior, TimeoutBehavior, ValidationBehavior};
///
/// let pipeline = Pipeline::new()
///     .layer(TimeoutBehavior::default())    // outermost: bounds everything below
///     .layer(RetryBehavior::default())      // retries what is below on conflicts
///     .layer(ValidationBehavior);           // innermost: checks before the handler
/// assert_eq!(pipeline.len(), 3);
/// ```
#[derive(Clone, Default)]
pub struct Pipeline {
    behaviors: Vec<Arc<dyn Behavior>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("behaviors", &self.behaviors.len())
            .finish()
    }
}

impl Pipeline {
    /// No behaviors: dispatch calls the handler directly.
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Adds `behavior` inside the ones added before it.
    pub fn layer(mut self, behavior: impl Behavior) -> Self {
        self.behaviors.push(Arc::new(behavior));
        self
    }

    /// Adds a shared behavior (one a plugin contributed) inside the ones added before it.
    pub fn layer_shared(mut self, behavior: Arc<dyn Behavior>) -> Self {
        self.behaviors.push(behavior);
        self
    }

    /// How many behaviors there are.
    pub fn len(&self) -> usize {
        self.behaviors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.behaviors.is_empty()
    }

    pub(crate) fn behaviors(&self) -> Arc<[Arc<dyn Behavior>]> {
        self.behaviors.clone().into()
    }
}

//! Messages and their handlers: commands (one handler, an output), queries (one handler, an
//! output), events (any number of handlers), and the `Context` every call carries.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flext_domain::{
    CausationId, CorrelationId, Error, EventMetadata, RecordedEvent, TenantId, Validation,
};
use uuid::Uuid;

/// A request to change the system, handled by exactly one [`CommandHandler`].
///
/// `Clone` because behaviors may run the handler again (retry on conflict). `validate`
/// checks the command's own fields and records every violation; the validation behavior
/// calls it before the handler. (It is a method rather than a separate `Validate` trait:
/// behaviors are shared by every command of a bus, so a separate trait would have to be
/// implemented by all of them.)
pub trait Command: Clone + Send + Sync + 'static {
    /// What a successful handling returns.
    type Output: Send + 'static;

    /// A stable name for errors, traces and metrics (e.g. `account.open`).
    const NAME: &'static str;

    /// Records every violation of the command's own fields; none by default.
    fn validate(&self, violations: &mut Validation) {
        let _ = violations;
    }
}

/// A request for information, handled by exactly one [`QueryHandler`]; it changes nothing.
pub trait Query: Clone + Send + Sync + 'static {
    /// The answer.
    type Output: Send + 'static;

    /// A stable name for errors, traces and metrics (e.g. `account.balance`).
    const NAME: &'static str;

    /// The projections whose read models this query reads (none said by default): an
    /// application refuses to start when one of them is not registered
    /// (`flext_application::App::start`), and read-your-writes waits for them.
    const READS: &'static [&'static str] = &[];

    /// Records every violation of the query's own fields; none by default.
    fn validate(&self, violations: &mut Validation) {
        let _ = violations;
    }
}

/// Handles one command type.
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// Handles `command` in `ctx`.
    fn handle(
        &self,
        command: C,
        ctx: &Context,
    ) -> impl Future<Output = Result<C::Output, Error>> + Send;
}

/// Handles one query type.
pub trait QueryHandler<Q: Query>: Send + Sync + 'static {
    /// Answers `query` in `ctx`.
    fn handle(
        &self,
        query: Q,
        ctx: &Context,
    ) -> impl Future<Output = Result<Q::Output, Error>> + Send;
}

/// Reacts to one event type; an event may have any number of handlers.
pub trait EventHandler<E: Send + Sync + 'static>: Send + Sync + 'static {
    /// Handles `event`; `ctx` carries the event's correlation id and has the event's id as
    /// causation, so commands dispatched from here continue the same business action.
    fn handle(&self, event: &E, ctx: &Context) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Values of any type, one per type, shared cheaply between clones of a [`Context`].
#[derive(Clone, Default)]
struct Values(Option<Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>);

/// What travels with every command, query and event through the buses: the ids that tie
/// one business action together, who and for whom, until when, and user values.
///
/// Cloning is cheap (shared pointers). A fresh context starts a business action: its
/// correlation id is its own message id. [`Context::child`] continues one (a command
/// dispatched while handling another); [`Context::for_event`] continues one from a recorded
/// event.
#[derive(Clone)]
pub struct Context {
    message_id: Uuid,
    correlation_id: CorrelationId,
    causation_id: Option<CausationId>,
    tenant: Option<TenantId>,
    traceparent: Option<Arc<str>>,
    principal: Option<Arc<dyn Any + Send + Sync>>,
    deadline: Option<Instant>,
    values: Values,
}

/// The event header that carries the W3C trace context of the message that recorded the
/// event, so whoever handles the event later (another process, after a restart) can link
/// its work to the original trace.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The event header that names what caused the command that recorded the event (the
/// command's own causation: the event a follow-up command reacts to), so a business
/// action reads back as a causation tree, event -> command -> events, although commands
/// are not stored.
pub const COMMAND_CAUSATION_HEADER: &str = "command-causation";

/// Whether `value` is a W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>`, ids not all zero).
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("message_id", &self.message_id)
            .field("correlation_id", &self.correlation_id)
            .field("causation_id", &self.causation_id)
            .field("tenant", &self.tenant)
            .field("principal", &self.principal.as_ref().map(|_| "..."))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl Context {
    /// A context that starts a business action, with a fresh UUID v7 message id.
    pub fn new() -> Self {
        Context::with_message_id(Uuid::now_v7())
    }

    /// A context that starts a business action for the message with `id` (a command id
    /// the caller chose, for idempotency).
    pub fn with_message_id(id: Uuid) -> Self {
        Context {
            message_id: id,
            correlation_id: CorrelationId::from_uuid(id),
            causation_id: None,
            tenant: None,
            traceparent: None,
            principal: None,
            deadline: None,
            values: Values::default(),
        }
    }

    /// The context of a message caused by this one: a new message id, the same
    /// correlation id, tenant, principal, deadline and values, and this message's id as
    /// the causation id.
    pub fn child(&self) -> Self {
        Context {
            message_id: Uuid::now_v7(),
            causation_id: Some(CausationId::from_uuid(self.message_id)),
            ..self.clone()
        }
    }

    /// [`Context::child`] with a message id derived from this message's id and `step`
    /// (a UUID v5), not a random one: handling the same message again dispatches the same
    /// follow-up under the same id, so the idempotency behavior runs it once. Name each
    /// follow-up of one message by its own `step` (`"deposit"`, `"refund"`).
    ///
    /// ```
    /// use flext::ports::Context;
    /// let ctx = Context::new();
    /// assert_eq!(ctx.child_for("refund").message_id(), ctx.child_for("refund").message_id());
    /// assert_ne!(ctx.child_for("refund").message_id(), ctx.child_for("deposit").message_id());
    /// assert_eq!(ctx.child_for("refund").correlation_id(), ctx.correlation_id());
    /// ```
    pub fn child_for(&self, step: &str) -> Self {
        Context {
            message_id: Uuid::new_v5(&self.message_id, step.as_bytes()),
            causation_id: Some(CausationId::from_uuid(self.message_id)),
            ..self.clone()
        }
    }

    /// The context for handling a recorded event: the event's id as message id and as the
    /// causation of whatever the handler dispatches, and the event's correlation id (or
    /// its own id if it has none).
    pub fn for_event(event: &RecordedEvent) -> Self {
        Context::from_metadata(event.event_id.as_uuid(), &event.metadata)
    }

    /// The context of a stored message with id `id` and `metadata` (a recorded event, a
    /// scheduled command): its correlation id (or `id` if it has none), causation,
    /// tenant and trace context.
    pub fn from_metadata(id: Uuid, metadata: &EventMetadata) -> Self {
        Context {
            message_id: id,
            correlation_id: metadata
                .correlation_id
                .unwrap_or(CorrelationId::from_uuid(id)),
            causation_id: metadata.causation_id,
            // A stored tenant that is not a valid id (written by hand) is no tenant.
            tenant: metadata
                .headers
                .get("tenant")
                .and_then(|t| TenantId::new(t).ok()),
            traceparent: metadata
                .headers
                .get(TRACEPARENT_HEADER)
                .filter(|t| is_valid_traceparent(t))
                .map(|t| Arc::from(t.as_str())),
            principal: None,
            deadline: None,
            values: Values::default(),
        }
    }

    /// The metadata for events recorded while handling this message: its correlation id,
    /// its message id as their causation, what caused it (header
    /// [`COMMAND_CAUSATION_HEADER`]), its tenant, and the W3C trace context: the
    /// current span's when a [`Propagator`](crate::Propagator) is installed and a span is
    /// current (the dispatch span, say), else the one this context was given.
    pub fn event_metadata(&self) -> EventMetadata {
        let mut metadata =
            EventMetadata::caused_by(self.correlation_id, CausationId::from_uuid(self.message_id));
        // What caused the command (an event for a follow-up command), so a business action
        // reads back as a tree: event -> command -> events.
        if let Some(cause) = self.causation_id {
            metadata = metadata.with_header(COMMAND_CAUSATION_HEADER, cause.to_string());
        }
        if let Some(tenant) = &self.tenant {
            metadata = metadata.with_header("tenant", tenant.as_ref());
        }
        let traceparent = crate::trace::current_traceparent()
            .or_else(|| self.traceparent.as_deref().map(str::to_owned));
        if let Some(tp) = traceparent {
            metadata = metadata.with_header(TRACEPARENT_HEADER, tp);
        }
        metadata
    }

    /// Sets the tenant (a checked [`TenantId`]: take it from a request with
    /// `TenantId::new(..)?`, which refuses what is not one).
    #[must_use]
    pub fn with_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Sets the principal (who acts), opaque to flext.
    #[must_use]
    pub fn with_principal<P: Any + Send + Sync>(mut self, principal: P) -> Self {
        self.principal = Some(Arc::new(principal));
        self
    }

    /// Sets the deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the deadline to `timeout` from now; a timeout too long to represent as an
    /// instant (`Duration::MAX`) sets none.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.with_deadline(deadline),
            None => self,
        }
    }

    /// Adds a user value, one per type (a second value of a type replaces the first).
    #[must_use]
    pub fn with_value<T: Any + Send + Sync>(mut self, value: T) -> Self {
        let mut map = self.values.0.as_deref().cloned().unwrap_or_default();
        map.insert(TypeId::of::<T>(), Arc::new(value));
        self.values = Values(Some(Arc::new(map)));
        self
    }

    /// The id of the message this context belongs to.
    pub fn message_id(&self) -> Uuid {
        self.message_id
    }

    /// The business action's correlation id.
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }

    /// The id of the message that caused this one, if any.
    pub fn causation_id(&self) -> Option<CausationId> {
        self.causation_id
    }

    /// The tenant, if set.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_ref().map(TenantId::as_str)
    }

    /// The tenant as its checked id, if set.
    pub fn tenant_id(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// Sets the W3C trace context (a tracing layer sets the current span's); it goes into
    /// the metadata of the events recorded while handling this message (header
    /// [`TRACEPARENT_HEADER`]) and is read back by [`Context::for_event`]. A value that is
    /// not a valid `traceparent` is ignored.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl AsRef<str>) -> Self {
        let tp = traceparent.as_ref();
        if is_valid_traceparent(tp) {
            self.traceparent = Some(Arc::from(tp));
        }
        self
    }

    /// The W3C trace context, if set.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The principal, if it was set with type `P`.
    pub fn principal<P: Any>(&self) -> Option<&P> {
        self.principal.as_deref().and_then(|p| p.downcast_ref())
    }

    /// The deadline, if set.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The user value of type `T`, if set.
    pub fn value<T: Any>(&self) -> Option<&T> {
        self.values
            .0
            .as_ref()?
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
    }
}

/// Declares commands and queries: a struct each (tuple or named fields, `Debug` and
/// `Clone`, fields public), with its [`Command`] or [`Query`] impl. `= "name"` sets the
/// stable name (the type's name by default); attributes and doc comments go before each.
///
/// ```
/// use flext::ports::{Command, Query};
///
/// flext::ports::messages! {
///     /// Opens an account.
///     pub command OpenAccount { pub owner: String, pub overdraft: i64 } -> u64 = "bank.open";
///     command Deposit(u64, i64) -> u64;
///     query Balance(u64) -> Option<i64>;
/// }
///
/// assert_eq!(<OpenAccount as Command>::NAME, "bank.open");
/// assert_eq!(<Deposit as Command>::NAME, "Deposit");
/// assert_eq!(Balance(7).0, 7);
/// let _: <Balance as Query>::Output = Some(1);
/// ```
#[macro_export]
macro_rules! messages {
    (@one $trait:ident [$($m:tt)*] $vis:vis $name:ident ( $($ty:ty),* $(,)? ) -> $out:ty $(= $wire:literal)? ; $($rest:tt)*) => {
        $($m)*
        #[derive(Debug, Clone)]
        $vis struct $name($(pub $ty),*);
        $crate::messages!(@impl $trait $name $out $(, $wire)?);
        $crate::messages!($($rest)*);
    };
    (@one $trait:ident [$($m:tt)*] $vis:vis $name:ident { $($fvis:vis $field:ident : $fty:ty),* $(,)? } -> $out:ty $(= $wire:literal)? ; $($rest:tt)*) => {
        $($m)*
        #[derive(Debug, Clone)]
        $vis struct $name { $($fvis $field: $fty),* }
        $crate::messages!(@impl $trait $name $out $(, $wire)?);
        $crate::messages!($($rest)*);
    };
    (@impl $trait:ident $name:ident $out:ty) => {
        impl $crate::$trait for $name {
            type Output = $out;
            const NAME: &'static str = ::core::stringify!($name);
        }
    };
    (@impl $trait:ident $name:ident $out:ty, $wire:literal) => {
        impl $crate::$trait for $name {
            type Output = $out;
            const NAME: &'static str = $wire;
        }
    };
    () => {};
    ($(#[$m:meta])* $vis:vis command $name:ident $($rest:tt)*) => {
        $crate::messages!(@one Command [$(#[$m])*] $vis $name $($rest)*);
    };
    ($(#[$m:meta])* $vis:vis query $name:ident $($rest:tt)*) => {
        $crate::messages!(@one Query [$(#[$m])*] $vis $name $($rest)*);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_domain::{EventId, Position, StreamId, StreamVersion};

    #[test]
    fn a_timeout_too_long_for_an_instant_sets_no_deadline() {
        assert!(
            Context::new()
                .with_timeout(Duration::MAX)
                .deadline()
                .is_none()
        );
        assert!(
            Context::new()
                .with_timeout(Duration::from_secs(1))
                .deadline()
                .is_some()
        );
    }

    #[test]
    fn a_stored_tenant_is_taken_only_when_it_is_a_valid_tenant_id() {
        let id = Uuid::now_v7();
        let stored = |t: &str| EventMetadata::default().with_header("tenant", t);
        let ctx = Context::from_metadata(id, &stored("acme"));
        assert_eq!(ctx.tenant(), Some("acme"));
        assert_eq!(ctx.tenant_id().map(TenantId::as_str), Some("acme"));
        for hostile in ["Acme", "acme; drop", "", "../etc"] {
            assert_eq!(
                Context::from_metadata(id, &stored(hostile)).tenant(),
                None,
                "{hostile:?}"
            );
        }
    }

    #[test]
    fn child_contexts_continue_the_business_action() {
        let root = Context::new()
            .with_tenant(TenantId::new("acme").expect("a tenant"))
            .with_value(42u32);
        let child = root.child();
        assert_eq!(child.correlation_id(), root.correlation_id());
        assert_eq!(
            child.causation_id().map(|c| c.as_uuid()),
            Some(root.message_id())
        );
        assert_ne!(child.message_id(), root.message_id());
        assert_eq!(child.tenant(), Some("acme"));
        assert_eq!(child.value::<u32>(), Some(&42));
        let meta = child.event_metadata();
        assert_eq!(meta.correlation_id, Some(root.correlation_id()));
        assert_eq!(
            meta.causation_id.map(|c| c.as_uuid()),
            Some(child.message_id())
        );
        assert_eq!(meta.headers.get("tenant").map(String::as_str), Some("acme"));
    }

    #[test]
    fn the_traceparent_travels_through_event_metadata_and_back() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let command = Context::new().with_traceparent(tp);
        let meta = command.event_metadata();
        assert_eq!(
            meta.headers.get(TRACEPARENT_HEADER).map(String::as_str),
            Some(tp)
        );
        assert_eq!(command.child().traceparent(), Some(tp));
        let event = RecordedEvent {
            event_id: EventId::new(),
            stream_id: StreamId::new("s").expect("valid"),
            stream_version: StreamVersion(1),
            position: Position(1),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            event_type: "t".into(),
            schema_version: 1,
            payload: Default::default(),
            metadata: meta,
            tags: Vec::new(),
        };
        assert_eq!(Context::for_event(&event).traceparent(), Some(tp));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "'; DROP TABLE",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
            assert_eq!(Context::new().with_traceparent(bad).traceparent(), None);
        }
    }

    #[test]
    fn an_event_context_takes_the_event_correlation_and_id() {
        let command = Context::new();
        let event = RecordedEvent {
            event_id: EventId::new(),
            stream_id: StreamId::new("s").expect("valid"),
            stream_version: StreamVersion(1),
            position: Position(1),
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            event_type: "t".into(),
            schema_version: 1,
            payload: bytes::Bytes::new(),
            metadata: command.event_metadata(),
            tags: Vec::new(),
        };
        let ctx = Context::for_event(&event);
        assert_eq!(ctx.correlation_id(), command.correlation_id());
        let follow_up = ctx.child();
        assert_eq!(follow_up.correlation_id(), command.correlation_id());
        assert_eq!(
            follow_up.causation_id().map(|c| c.as_uuid()),
            Some(event.event_id.as_uuid())
        );
    }

    #[test]
    fn principal_and_values_are_typed() {
        #[derive(Debug, PartialEq)]
        struct User(&'static str);
        let ctx = Context::new()
            .with_principal(User("ada"))
            .with_value("x")
            .with_value("y");
        assert_eq!(ctx.principal::<User>(), Some(&User("ada")));
        assert_eq!(ctx.principal::<String>(), None);
        assert_eq!(ctx.value::<&str>(), Some(&"y"));
    }
}

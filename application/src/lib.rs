//! flext's application layer: the aggregate [`Repository`], which loads aggregates
//! (snapshot, then the events after it, upcast), saves what their decisions record with
//! the right expectation, and runs whole commands with retries and an optional cache; and
//! the [`Registry`] of handlers from which the [`CommandBus`], [`QueryBus`] and
//! [`EventBus`] are built, with a [`Pipeline`] of behaviors around every dispatch.
//!
//! ```
//! use flext::application::Repository;
//! use flext::{Aggregate, DomainEvent, Error, Id};
//! use flext::memory::InMemoryEventStore;
//! use flext::ports::Context;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default)]
//! struct Counter { value: u32 }
//! #[derive(Serialize, Deserialize)]
//! struct Incremented;
//! impl DomainEvent for Incremented {
//!     fn event_type(&self) -> &'static str { "counter.incremented" }
//! }
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "counter";
//!     type Event = Incremented;
//!     fn apply(&mut self, _: &Incremented) { self.value += 1; }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let repo = Repository::<Counter, _>::new(InMemoryEventStore::new()).with_cache(1_000);
//! let id = Id::new();
//! for _ in 0..3 {
//!     repo.execute(id, &Context::new(), |_| Ok(vec![Incremented])).await?;
//! }
//! assert_eq!(repo.load(id).await?.state().value, 3);
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

mod app;
mod behavior;
mod bridge_metrics;
mod bus;
mod catch;
mod health;
mod hot_swap;
mod idempotency;
mod inbox;
mod jobs;
mod outbox;
mod ownership;
mod personal;
mod pipeline;
mod plugin;
mod process;
mod projection;
mod query_cache;
mod reactor;
mod relay;
mod repository;
mod retention;
mod scheduler;
mod services;
mod subscription;
mod typemap;

pub use app::{App, AppBuilder};
pub use behavior::{
    MetricsBehavior, RetryBehavior, TimeoutBehavior, TracingBehavior, ValidationBehavior,
};
pub use bridge_metrics::BridgeMetrics;
pub use bus::{CommandBus, EventBus, HandlerOutcome, QueryBus, Registration, Registry, Site};
/// Where a rebuild starts (the port's type, here for the runner's callers).
pub use flext_ports::RebuildFrom;
pub use health::{HealthChecks, HealthReport};
pub use hot_swap::{HotSwap, Routed};
pub use idempotency::IdempotencyBehavior;
pub use inbox::{Inbox, InboxBuilder, InboxHandler, inbound_context};
pub use jobs::{
    Backoff, Job, JobContext, JobHandler, JobWorkers, JobWorkersBuilder, enqueue, new_job,
};
pub use outbox::{OutboxRelay, OutboxRelayBuilder};
pub use ownership::{ConsumerSlot, Distribution, Grant, Ownership, OwnershipOptions};
pub use personal::{
    DataProtection, FORGOTTEN_HEADER, MasterKey, Protected, Revealing, SEALED_DATA_UNREADABLE,
};
pub use pipeline::{Behavior, BoxFuture, Message, MessageKind, Next, Pipeline, Reply};
pub use plugin::{Manifest, PluginRegistration, PluginRegistry, RegistryHealth};
pub use process::{
    Effect, Effects, ErasedProcessManager, ProcessFixture, ProcessManager,
    ProcessManagerRegistration, Step, Then, deadline_key, erase_process_manager,
};
pub use projection::{
    IntoProjection, OfEvents, PoisonPolicy, ProjectionHealth, ProjectionOptions,
    ProjectionRegistration, ProjectionRunner, ProjectionState, ProjectionStatus, Projections,
    ReadYourWrites, ReadYourWritesBehavior, RedriveReport, Untyped, erase_projection,
};
pub use query_cache::{QueryCache, QueryCacheBehavior, QueryCacheInvalidator};
pub use reactor::{EventReactor, IntoReactor, Reactor, ReactorOptions, TypedReactor};
pub use relay::{Relay, Select, headers as relay_headers};
pub use repository::{Executed, Repository, RetryPolicy};
pub use retention::{RetentionTask, RetentionTaskBuilder};
pub use scheduler::{Deliveries, SCHEDULER, Scheduler, SchedulerBuilder, schedule};
pub use services::{Dep, FromServices, Scope, Services, ServicesBuilder};
pub use subscription::{Subscription, SubscriptionOptions};

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

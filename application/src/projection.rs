//! The projection runner: read models kept up to date from the global order, each with
//! its own checkpoint, in batches, with retries, dead letters, rebuilds and status.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventId, Position, RecordedEvent, StreamVersion};
use flext_ports::{
    Clock, ConsumerRecord, ControlAction, DeadLetter, EventProjection, EventStore, FilteredPage,
    Instance, Lease, Metrics, Projection, ProjectionStore, ReadDirection, RebuildFrom, SystemClock,
    Typed, WatchAppends,
};
use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use tracing::Instrument as _;

use crate::bus::Site;
use crate::ownership::{ConsumerSlot, Grant, Ownership, OwnershipOptions};
use crate::pipeline::BoxFuture;
use crate::subscription::{Subscription, SubscriptionOptions};

/// What a projection does with an event it still fails on after its last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum PoisonPolicy {
    /// Park it in the dead letters (with the error) and go on (the default).
    #[default]
    Park,
    /// Stop the projection in the `Failed` state; a rebuild or a resume restarts it.
    Stop,
}

/// How one projection runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectionOptions {
    /// The most events in one transaction (default 500).
    pub batch_size: usize,
    /// Attempts at an event that fails with an error that is not transient, the first
    /// included (default 5); then the poison policy applies. Transient errors
    /// ([`flext_domain::ErrorCode::is_transient`]) are retried without limit and do not
    /// count.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles up to `max_backoff`
    /// (default 50 ms).
    pub backoff: Duration,
    /// The longest wait between attempts (default 5 s).
    pub max_backoff: Duration,
    /// What to do with an event that fails every attempt.
    pub on_poison: PoisonPolicy,
    /// How the projection waits for new events.
    pub subscription: SubscriptionOptions,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        ProjectionOptions {
            batch_size: 500,
            max_attempts: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            on_poison: PoisonPolicy::Park,
            subscription: SubscriptionOptions::default(),
        }
    }
}

impl ProjectionOptions {
    fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Where a projection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    /// Reading stored events in full batches.
    CatchingUp,
    /// Caught up, following live appends.
    Running,
    /// Retrying an event that failed with a transient error (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `ABORTED`, `RESOURCE_EXHAUSTED`): tried again with capped
    /// backoff, without limit, never parked; the error is in the status.
    Retrying,
    /// Shut down.
    Stopped,
    /// Stopped on an event it could not handle (policy [`PoisonPolicy::Stop`]);
    /// [`Projections::resume`] or a rebuild restarts it.
    Failed,
    /// Not run here: another instance owns it, or this one waits for its share.
    Standby,
    /// Paused by an operator ([`Projections::pause`], `flext projections pause`): owned,
    /// handling nothing until resumed, also after a restart or a takeover.
    Paused,
}

/// A projection's status; see [`Projections::status`].
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Where it is.
    pub state: ProjectionState,
    /// Its checkpoint: the last position it has fully processed.
    pub position: Position,
    /// How many stored events it has not processed yet.
    pub lag_events: u64,
    /// How long the oldest event it has not processed has been stored (zero when none).
    pub lag: Duration,
    /// The last error it met (also a transient one it recovered from).
    pub last_error: Option<Error>,
    /// How many events it parked.
    pub dead_letters: usize,
    /// Whether its checkpoint commits with the read model it writes through the store's
    /// transaction (exactly once); otherwise it is at least once.
    pub exactly_once: bool,
    /// Whether this instance runs it now.
    pub owned_here: bool,
    /// Its record in the store: owner (instance name, host, pid), epoch, since when,
    /// until when (`None` before any instance has claimed it).
    pub ownership: Option<ConsumerRecord>,
    /// How long nobody has owned it (zero while owned; `None` if never owned).
    pub unowned_for: Option<Duration>,
}

/// What a redrive did.
#[derive(Debug, Clone)]
pub struct RedriveReport {
    /// Events handled successfully and removed from the dead letters.
    pub redriven: usize,
    /// Dead letters that failed again (kept, with the new error and attempt count).
    pub still_failing: Vec<DeadLetter>,
}

/// A projection with its future boxed, so the runner can hold different types (a
/// reactor is one too: `crate::reactor`).
pub(crate) trait DynProjection<T>: Send + Sync {
    fn name(&self) -> &str;
    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// Empties the read model for a rebuild from the start; nothing by default (a
    /// reactor or relay keeps no read model).
    fn reset<'a>(&'a self, tx: &'a mut T) -> BoxFuture<'a, Result<(), Error>> {
        let _ = tx;
        Box::pin(async { Ok(()) })
    }
    /// Prepares the read model once; nothing by default.
    fn setup<'a>(&'a self, tx: &'a mut T) -> BoxFuture<'a, Result<(), Error>> {
        let _ = tx;
        Box::pin(async { Ok(()) })
    }
    fn event_types(&self) -> Option<&[&str]>;
    /// The read model's tables (for a shadow rebuild); none by default.
    fn migrations(&self) -> &[&str] {
        &[]
    }
    /// A reactor handles a batch outside any transaction (its effects commit on their
    /// own) and reports the first event that failed, every event before it handled; a
    /// projection returns `None` and is handed its events inside the batch's transaction.
    fn react<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> Option<BoxFuture<'a, Result<(), (usize, Error)>>> {
        let _ = events;
        None
    }
}

/// A projection as the runner holds it (a type of its own, so a reactor can be held too).
pub(crate) struct AsDyn<P>(pub(crate) P);

impl<T: Send, P: Projection<T>> DynProjection<T> for AsDyn<P> {
    fn name(&self) -> &str {
        Projection::name(&self.0)
    }
    fn handle<'a>(
        &'a self,
        tx: &'a mut T,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), Error>> {
        // A panic is a failure of this event, under the poison policy.
        Box::pin(crate::catch::CatchPanic::named(
            Projection::handle(&self.0, tx, event),
            format!("projection {:?}", Projection::name(&self.0)),
            "PROJECTION_PANICKED",
        ))
    }
    fn reset<'a>(&'a self, tx: &'a mut T) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(Projection::reset(&self.0, tx))
    }
    fn setup<'a>(&'a self, tx: &'a mut T) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(crate::catch::CatchPanic::named(
            Projection::setup(&self.0, tx),
            format!("the setup of projection {:?}", Projection::name(&self.0)),
            "PROJECTION_PANICKED",
        ))
    }
    fn event_types(&self) -> Option<&[&str]> {
        <P as Projection<T>>::event_types(&self.0)
    }
    fn migrations(&self) -> &[&str] {
        <P as Projection<T>>::migrations(&self.0)
    }
}

/// Whether a projection that handles `types` (`None`: all) is handed `event`.
fn selects(types: Option<&[&str]>, event: &RecordedEvent) -> bool {
    types.is_none_or(|t| t.contains(&event.event_type.as_str()))
}

/// A projection registered by `#[projection]`, which `ProjectionRunner::with_registered`
/// adds when its transaction type is the runner store's.
pub struct ProjectionRegistration {
    /// The transaction type the projection is written for.
    pub transaction: fn() -> TypeId,
    /// Makes the projection (boxed for [`ProjectionRunner::with_registered`]).
    pub make: fn() -> Box<dyn Any + Send>,
    /// The projection's type, for messages.
    pub type_name: &'static str,
    /// Where `#[projection]` was written.
    pub site: Site,
}

inventory::collect!(ProjectionRegistration);

/// Makes a `P` (by `Default`) boxed for a [`ProjectionRegistration`]; what `#[projection]`
/// generates calls it.
pub fn erase_projection<T: Send + 'static, M, P: IntoProjection<T, M> + Default>()
-> Box<dyn Any + Send> {
    let p: Arc<dyn DynProjection<T>> = Arc::new(AsDyn(P::default().into_projection()));
    Box::new(p)
}

/// What [`ProjectionRunner::register`] takes: a [`Projection<T>`] as it is, an
/// [`EventProjection<T>`] wrapped in [`Typed`]. `M` tells the two apart ([`Untyped`] or
/// [`OfEvents`]) and is inferred; a type implements one of the two traits, not both.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a projection for the transaction `{T}`",
    label = "not a projection here",
    note = "implement `Projection<{T}>` (every stored event) or `EventProjection<{T}>` (the events of one type, decoded)"
)]
pub trait IntoProjection<T, M> {
    /// The projection the runner runs.
    type Projection: Projection<T>;
    /// `self` as that projection.
    fn into_projection(self) -> Self::Projection;
}

/// The [`IntoProjection`] marker of a [`Projection`].
#[derive(Debug)]
pub enum Untyped {}

/// The [`IntoProjection`] marker of an [`EventProjection`].
#[derive(Debug)]
pub enum OfEvents {}

impl<T, P: Projection<T>> IntoProjection<T, Untyped> for P {
    type Projection = P;
    fn into_projection(self) -> P {
        self
    }
}

impl<T: Send, P: EventProjection<T>> IntoProjection<T, OfEvents> for P {
    type Projection = Typed<P>;
    fn into_projection(self) -> Typed<P> {
        Typed(self)
    }
}

type Entry<T> = (Arc<dyn DynProjection<T>>, ProjectionOptions);

/// Collects projections and starts them; see [`Projections`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use flext::application::ProjectionRunner;
/// use flext::{Error, EventId, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
/// use flext::memory::{InMemoryEventStore, MemoryTransaction};
/// use flext::ports::{EventStore, Projection};
///
/// #[derive(Default)]
/// struct Count(Arc<AtomicU64>);
/// impl Projection<MemoryTransaction> for Count {
///     fn name(&self) -> &str { "count" }
///     async fn handle(&self, _: &mut MemoryTransaction, _: &RecordedEvent) -> Result<(), Error> {
///         self.0.fetch_add(1, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// let store = InMemoryEventStore::new();
/// let seen = Arc::new(AtomicU64::new(0));
/// let projections = ProjectionRunner::new(store.clone())
///     .register(Count(seen.clone()))?
///     .start();
/// let out = store
///     .append(&StreamId::new("s")?, ExpectedVersion::Any, vec![NewEvent::new(EventId::new(), "e", "{}")])
///     .await?;
/// // Read-your-writes: wait until the projection has handled the append.
/// projections.wait_for("count", out.positions[0], Duration::from_secs(5)).await?;
/// assert_eq!(seen.load(Ordering::SeqCst), 1);
/// projections.shutdown().await;
/// # Ok::<(), Error>(()) }).unwrap();
/// ```
pub struct ProjectionRunner<S: ProjectionStore> {
    store: S,
    entries: Vec<Entry<S::Transaction>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    ownership: Option<Ownership<S>>,
    instance: Option<Instance>,
    ownership_options: OwnershipOptions,
    deliveries: crate::Deliveries,
}

impl<S> ProjectionRunner<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    /// A runner reading from and checkpointing in `store`.
    pub fn new(store: S) -> Self {
        ProjectionRunner {
            store,
            entries: Vec::new(),
            clock: Arc::new(SystemClock),
            metrics: Arc::new(()),
            ownership: None,
            instance: None,
            ownership_options: OwnershipOptions::default(),
            deliveries: crate::Deliveries::default(),
        }
    }

    /// Runs the projections under `ownership`, shared with other consumers of this
    /// process (they share one instance and its fair share). Without it the runner starts
    /// a coordinator of its own, stopped by [`Projections::shutdown`].
    pub fn with_ownership(mut self, ownership: Ownership<S>) -> Self {
        self.ownership = Some(ownership);
        self
    }

    /// Names this process in the runner's own coordinator (default: `host-pid`).
    pub fn with_instance(mut self, instance: Instance) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Lease length, renewal, distribution for the runner's own coordinator.
    pub fn with_ownership_options(mut self, options: OwnershipOptions) -> Self {
        self.ownership_options = options;
        self
    }

    /// Reports to `metrics`, labelled `projection`: `flext.projection.events` (count of
    /// events applied), `flext.projection.batch.size` (observation per committed batch),
    /// `flext.projection.position` (gauge, the checkpoint), `flext.projection.dead_letters`
    /// (count of parked events), and the gauges `flext.projection.lag.events` and
    /// `flext.projection.lag.seconds` (0 when it catches up; measured by every `status`).
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Measures lag against `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The names of the projections added so far.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(p, _)| p.name())
    }

    /// Adds a [`Reactor`](crate::Reactor) or an [`EventReactor`](crate::EventReactor)
    /// with the default options: it runs beside the
    /// projections, owned, checkpointed and retried like them, with its effects outside
    /// the store's transaction.
    pub fn reactor<M, R: crate::IntoReactor<M>>(self, reactor: R) -> Result<Self, Error> {
        self.reactor_with(
            reactor,
            ProjectionOptions::default(),
            crate::ReactorOptions::default(),
        )
    }

    /// Adds a [`Reactor`](crate::Reactor) with `options` (batches, retries, poison
    /// policy) and `reactor_options` (how many keys at once); a name already taken by a
    /// projection or reactor is an `AlreadyExists` error.
    pub fn reactor_with<M, R: crate::IntoReactor<M>>(
        self,
        reactor: R,
        options: ProjectionOptions,
        reactor_options: crate::ReactorOptions,
    ) -> Result<Self, Error> {
        self.add_dyn(
            crate::reactor::erase(reactor.into_reactor(), reactor_options),
            options,
        )
    }

    /// Adds a [`Relay`](crate::Relay): it publishes the events it selects from its
    /// checkpoint, owned and fenced like a projection; a name already taken is an
    /// `AlreadyExists` error. Its options are the default ones except the poison policy,
    /// [`PoisonPolicy::Stop`]: an event the broker keeps refusing stops the relay rather
    /// than being parked, since the events after it in its stream would otherwise go out
    /// ahead of it.
    pub fn relay<P: flext_ports::Publisher>(self, relay: crate::Relay<P>) -> Result<Self, Error> {
        self.relay_with(
            relay,
            ProjectionOptions {
                on_poison: PoisonPolicy::Stop,
                ..ProjectionOptions::default()
            },
        )
    }

    /// [`ProjectionRunner::relay`] with `options` (batches, retries, poison policy).
    pub fn relay_with<P: flext_ports::Publisher>(
        self,
        relay: crate::Relay<P>,
        options: ProjectionOptions,
    ) -> Result<Self, Error> {
        self.add_dyn(std::sync::Arc::new(relay), options)
    }

    /// Adds a [`ProcessManager`](crate::ProcessManager) with the default options: it runs
    /// beside the projections, owned, checkpointed and retried like them; each event's
    /// change of an instance's state, and the commands and deadlines it emits, commit with
    /// the checkpoint. A [`Scheduler`](crate::Scheduler) delivers the commands: give it
    /// [`ProjectionRunner::deliveries`].
    pub fn process_manager<P: crate::ProcessManager>(self, manager: P) -> Result<Self, Error>
    where
        S: flext_ports::ProcessStore,
    {
        self.process_manager_with(manager, ProjectionOptions::default())
    }

    /// [`ProjectionRunner::process_manager`] with `options` (batches, retries, poison
    /// policy); a name already taken is an `AlreadyExists` error.
    pub fn process_manager_with<P: crate::ProcessManager>(
        self,
        manager: P,
        options: ProjectionOptions,
    ) -> Result<Self, Error>
    where
        S: flext_ports::ProcessStore,
    {
        let managed = crate::process::Managed::new(manager, self.store.clone());
        self.add_managed(managed, options)
    }

    fn add_managed(
        self,
        managed: crate::process::Managed<S>,
        options: ProjectionOptions,
    ) -> Result<Self, Error>
    where
        S: flext_ports::ProcessStore,
    {
        let deliveries = self.deliveries.clone().merge(managed.deliveries());
        let mut runner = self.add_dyn(Arc::new(AsDyn(managed)), options)?;
        runner.deliveries = deliveries;
        Ok(runner)
    }

    /// Adds every process manager registered with `#[process_manager]`, with the default
    /// options.
    pub fn with_registered_process_managers(self) -> Result<Self, Error>
    where
        S: flext_ports::ProcessStore,
    {
        let mut runner = self;
        for reg in inventory::iter::<crate::ProcessManagerRegistration> {
            let managed = crate::process::Managed::erased((reg.make)(), runner.store.clone());
            runner = runner.add_managed(managed, ProjectionOptions::default())?;
        }
        Ok(runner)
    }

    /// The commands the process managers added so far send or schedule: what the
    /// [`Scheduler`](crate::Scheduler) that serves them must deliver.
    pub fn deliveries(&self) -> &crate::Deliveries {
        &self.deliveries
    }

    /// Adds a projection (a [`Projection`] or an [`EventProjection`]) with the default
    /// options.
    pub fn register<M, P: IntoProjection<S::Transaction, M>>(
        self,
        projection: P,
    ) -> Result<Self, Error> {
        self.register_with(projection, ProjectionOptions::default())
    }

    /// Adds a projection (a [`Projection`] or an [`EventProjection`]); a second projection
    /// with the same name is an `AlreadyExists` error, an [`EventProjection`] whose event
    /// type lists no type names an `InvalidArgument` error (`NO_EVENT_TYPES`).
    pub fn register_with<M, P: IntoProjection<S::Transaction, M>>(
        self,
        projection: P,
        options: ProjectionOptions,
    ) -> Result<Self, Error> {
        self.add_dyn(Arc::new(AsDyn(projection.into_projection())), options)
    }

    fn add_dyn(
        mut self,
        projection: Arc<dyn DynProjection<S::Transaction>>,
        options: ProjectionOptions,
    ) -> Result<Self, Error> {
        let name = projection.name();
        if name.is_empty() {
            return Err(Error::invalid_argument(
                "INVALID_PROJECTION_NAME",
                "a projection's name must not be empty",
            ));
        }
        if projection.event_types().is_some_and(<[&str]>::is_empty) {
            return Err(Error::invalid_argument(
                "NO_EVENT_TYPES",
                format!(
                    "projection {name:?} selects no event type, so it would never see an event: \
                     its event type lists none (derive DomainEvent, or implement \
                     DomainEvent::event_types)"
                ),
            )
            .with_detail("projection", name));
        }
        if self.entries.iter().any(|(p, _)| p.name() == name) {
            return Err(Error::already_exists(
                "DUPLICATE_PROJECTION",
                format!("a projection named {name:?} is already added"),
            )
            .with_detail("projection", name));
        }
        self.entries.push((projection, options));
        Ok(self)
    }

    /// Adds every projection registered with `#[projection]` for this store's
    /// transaction type, with the default options.
    pub fn with_registered(mut self) -> Result<Self, Error> {
        let wanted = TypeId::of::<S::Transaction>();
        for reg in inventory::iter::<ProjectionRegistration> {
            if (reg.transaction)() != wanted {
                continue;
            }
            let made = (reg.make)();
            let Ok(projection) = made.downcast::<Arc<dyn DynProjection<S::Transaction>>>() else {
                return Err(Error::internal(
                    "REGISTRATION_MISMATCH",
                    format!(
                        "the projection {} registered at {} has another transaction type",
                        reg.type_name, reg.site
                    ),
                ));
            };
            self = self.add_dyn(*projection, ProjectionOptions::default())?;
        }
        Ok(self)
    }

    /// Starts one task per projection (inside a Tokio runtime) and returns the handle
    /// that watches and controls them.
    pub fn start(self) -> Projections<S> {
        let own_coordinator = self.ownership.is_none();
        let ownership = self.ownership.unwrap_or_else(|| {
            Ownership::start_with_metrics(
                self.store.clone(),
                self.instance.unwrap_or_else(Instance::current),
                self.ownership_options,
                Arc::clone(&self.metrics),
            )
        });
        let (shutdown, _) = watch::channel(false);
        let mut workers = BTreeMap::new();
        let mut tasks = Vec::new();
        for (projection, options) in self.entries {
            let name = projection.name().to_owned();
            let (progress, _) = watch::channel(Progress {
                position: Position::START,
                state: ProjectionState::Standby,
                last_error: None,
                owned: false,
            });
            let shared = Arc::new(Shared {
                name: name.clone(),
                options,
                progress,
                controls: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
            });
            let slot = match ownership.claim(&name) {
                Ok(slot) => slot,
                Err(e) => {
                    // Another consumer of this process has the name: report it, run nothing.
                    shared.set(|p| {
                        p.state = ProjectionState::Failed;
                        p.last_error = Some(e);
                    });
                    workers.insert(name, shared);
                    continue;
                }
            };
            let worker = Worker {
                store: self.store.clone(),
                projection,
                slot,
                lease: None,
                shared: Arc::clone(&shared),
                shutdown: shutdown.subscribe(),
                clock: Arc::clone(&self.clock),
                metrics: Arc::clone(&self.metrics),
                prepared: false,
                paused: false,
            };
            // A worker that ends other than by shutdown (a panic outside the handler) is
            // `Failed` with the reason, never a status stuck at its last state.
            let supervised = Arc::clone(&shared);
            let run = crate::catch::CatchPanic::named(
                async move {
                    worker.run().await;
                    Ok::<(), Error>(())
                },
                format!("projection {name:?}"),
                "PROJECTION_WORKER_PANICKED",
            );
            tasks.push(tokio::spawn(async move {
                if let Err(e) = run.await {
                    supervised.set(|p| {
                        p.state = ProjectionState::Failed;
                        p.owned = false;
                        p.last_error = Some(e);
                    });
                }
            }));
            workers.insert(name, shared);
        }
        // Operators' requests (the `flext` command line, the admin console) for the
        // projections this instance owns.
        tasks.push(tokio::spawn(serve_controls(
            self.store.clone(),
            workers.clone(),
            ownership.instance().label(),
            shutdown.subscribe(),
        )));
        Projections {
            inner: Arc::new(Inner {
                store: self.store,
                workers,
                shutdown,
                tasks: Mutex::new(tasks),
                clock: self.clock,
                metrics: self.metrics,
                ownership,
                own_coordinator,
            }),
        }
    }
}

/// How often the runner looks for operators' control requests besides the store's
/// announcements (which SQLite cannot make across processes).
const CONTROL_POLL: Duration = Duration::from_millis(250);

/// Takes the pending control requests for the projections this instance owns, carries
/// each out through the projection's task (between two batches, as an in-process call
/// would) and stores the outcome, until shutdown.
async fn serve_controls<S>(
    store: S,
    workers: BTreeMap<String, Arc<Shared>>,
    by: String,
    mut shutdown: watch::Receiver<bool>,
) where
    S: ProjectionStore,
{
    let mut changed = store.watch_consumers();
    // The consumers this instance owned at the last look: one newly owned gets back the
    // requests a previous owner took and never finished.
    let mut owned: BTreeSet<String> = BTreeSet::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        for (name, shared) in &workers {
            if !shared.progress.borrow().owned {
                owned.remove(name);
            } else if !owned.contains(name) {
                match store.requeue_controls(name, &by).await {
                    Ok(n) => {
                        owned.insert(name.clone());
                        if n > 0 {
                            tracing::info!(
                                projection = %name,
                                requests = n,
                                "control requests a previous owner left unfinished are queued again"
                            );
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "control requests could not be requeued"),
                }
            }
        }
        match store.pending_controls().await {
            Ok(pending) => {
                for request in pending {
                    let Some(shared) = workers.get(&request.consumer) else {
                        continue;
                    };
                    if !shared.progress.borrow().owned {
                        continue;
                    }
                    match store.take_control(request.id, &by).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "a control request could not be taken");
                            continue;
                        }
                    }
                    let outcome = carry_out(shared, request.action).await;
                    if let Err(e) = store.finish_control(request.id, outcome).await {
                        tracing::warn!(
                            projection = %request.consumer,
                            request = %request.id,
                            error = %e,
                            "the outcome of a control request could not be stored"
                        );
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "control requests could not be listed"),
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(CONTROL_POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Hands `action` to the projection's task and waits for what it did, as JSON.
async fn carry_out(shared: &Shared, action: ControlAction) -> Result<serde_json::Value, Error> {
    fn send<T>(
        shared: &Shared,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        shared
            .controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(make(tx));
        shared.wake.notify_one();
        rx
    }
    let gone = || stopped(&shared.name);
    match action {
        ControlAction::Pause => {
            send(shared, Control::Pause).await.map_err(|_| gone())??;
            Ok(serde_json::json!({}))
        }
        ControlAction::Resume => {
            send(shared, Control::Resume).await.map_err(|_| gone())??;
            Ok(serde_json::json!({}))
        }
        ControlAction::Rebuild { from } => {
            let at = send(shared, |tx| Control::Rebuild(from, tx))
                .await
                .map_err(|_| gone())??;
            Ok(serde_json::json!({ "restart_after": at.get() }))
        }
        ControlAction::Verify => send(shared, Control::Verify).await.map_err(|_| gone())?,
        ControlAction::Redrive { event_id } => {
            let report = send(shared, |tx| Control::Redrive(event_id, tx))
                .await
                .map_err(|_| gone())??;
            let failing: Vec<String> = report
                .still_failing
                .iter()
                .map(|l| l.event_id.to_string())
                .collect();
            Ok(serde_json::json!({ "redriven": report.redriven, "still_failing": failing }))
        }
    }
}

#[derive(Debug, Clone)]
struct Progress {
    position: Position,
    state: ProjectionState,
    last_error: Option<Error>,
    /// Whether this instance holds the projection's lease.
    owned: bool,
}

enum Control {
    Rebuild(RebuildFrom, oneshot::Sender<Result<Position, Error>>),
    Redrive(
        Option<EventId>,
        oneshot::Sender<Result<RedriveReport, Error>>,
    ),
    Resume(oneshot::Sender<Result<(), Error>>),
    Pause(oneshot::Sender<Result<(), Error>>),
    Verify(oneshot::Sender<Result<serde_json::Value, Error>>),
}

struct Shared {
    name: String,
    options: ProjectionOptions,
    progress: watch::Sender<Progress>,
    controls: Mutex<VecDeque<Control>>,
    wake: Notify,
}

impl Shared {
    fn set(&self, f: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(f);
    }

    fn pop_control(&self) -> Option<Control> {
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

struct Inner<S> {
    store: S,
    workers: BTreeMap<String, Arc<Shared>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    ownership: Ownership<S>,
    /// Whether the runner started the coordinator (and so stops it).
    own_coordinator: bool,
}

impl<S> Drop for Inner<S> {
    /// The last handle gone without a shutdown: stop the tasks as a crash would (a batch
    /// in hand rolls back; leases lapse).
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// The running projections: status, read-your-writes waits, rebuilds, dead letters,
/// shutdown. Clones share them.
pub struct Projections<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Projections<S> {
    fn clone(&self) -> Self {
        Projections {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> std::fmt::Debug for Projections<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field("names", &self.inner.workers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn unknown(name: &str) -> Error {
    Error::not_found(
        "UNKNOWN_PROJECTION",
        format!("no projection named {name:?} is running"),
    )
    .with_detail("projection", name)
}

fn stopped(name: &str) -> Error {
    Error::unavailable(
        "PROJECTION_STOPPED",
        format!("projection {name:?} has shut down"),
    )
    .with_detail("projection", name)
}

impl<S> Projections<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    fn worker(&self, name: &str) -> Result<&Arc<Shared>, Error> {
        self.inner.workers.get(name).ok_or_else(|| unknown(name))
    }

    /// The projections' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.workers.keys().map(String::as_str)
    }

    /// The checkpoint `name` has reached (without asking the store).
    pub fn position(&self, name: &str) -> Result<Position, Error> {
        Ok(self.worker(name)?.progress.borrow().position)
    }

    /// Waits until projection `name` has processed every event up to `position` (a
    /// command's `Executed::last_position`): read-your-writes. Returns as soon as its
    /// checkpoint reaches it, wherever it runs: in this process it watches the runner's
    /// progress; when another instance owns it, the stored checkpoint, read again at each
    /// of the store's notifications of a moved checkpoint (and at least every 50 ms, for
    /// stores that cannot notify across processes). After `timeout` it is a
    /// `DeadlineExceeded` error with reason `PROJECTION_BEHIND` naming the projection,
    /// the position asked for and the one reached. A projection that failed here or shut
    /// down is `Unavailable` at once. Reached, but with events up to `position` parked in
    /// the dead letters, it is `FailedPrecondition`/`EVENTS_PARKED` naming them.
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<(), Error> {
        let shared = self.worker(name)?;
        let mut rx = shared.progress.subscribe();
        let mut stored = self.inner.store.watch_consumers();
        let mut reached = shared.progress.borrow().position;
        let wait = async {
            loop {
                let owned = {
                    let p = rx.borrow_and_update();
                    reached = reached.max(p.position);
                    if p.owned && p.position >= position {
                        return Ok(());
                    }
                    match p.state {
                        ProjectionState::Failed => {
                            let mut e = Error::unavailable(
                                "PROJECTION_FAILED",
                                format!("projection {name:?} has failed and does not advance"),
                            )
                            .with_detail("projection", name);
                            if let Some(cause) = &p.last_error {
                                e = e.with_detail("cause", cause.reason().to_owned());
                            }
                            return Err(e);
                        }
                        ProjectionState::Stopped => return Err(stopped(name)),
                        _ => {}
                    }
                    p.owned
                };
                if !owned {
                    // Another instance runs it (or nobody yet): its stored checkpoint.
                    if let Ok(Some(p)) = self.inner.store.load_checkpoint(name).await {
                        reached = reached.max(p);
                        if p >= position {
                            return Ok(());
                        }
                    }
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        return Err(stopped(name));
                    },
                    _ = tokio::time::timeout(REMOTE_RECHECK, stored.changed()), if !owned => {}
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => self.parked_up_to(name, position).await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::deadline_exceeded(
                "PROJECTION_BEHIND",
                format!(
                    "projection {name:?} did not reach position {position} within {timeout:?} (it is at {reached})"
                ),
            )
            .with_detail("projection", name)
            .with_detail("position", position.get())
            .with_detail("reached", reached.get())),
        }
    }

    /// Reaching `position` is not seeing every event up to it when some were parked: a
    /// typed error naming them (`FAILED_PRECONDITION`/`EVENTS_PARKED`), so a query does not
    /// silently read a model without them.
    async fn parked_up_to(&self, name: &str, position: Position) -> Result<(), Error> {
        let parked: Vec<DeadLetter> = self
            .inner
            .store
            .dead_letters(name)
            .await?
            .into_iter()
            .filter(|l| l.position <= position)
            .collect();
        let Some(first) = parked.first() else {
            return Ok(());
        };
        let listed: Vec<String> = parked
            .iter()
            .take(10)
            .map(|l| format!("{}@{}", l.event_id, l.position))
            .collect();
        Err(Error::failed_precondition(
            "EVENTS_PARKED",
            format!(
                "projection {name:?} reached position {position} but parked {} event(s) up to it \
                 (first: {} at {}, a {:?}: {}); redrive them to see their effect",
                parked.len(),
                first.event_id,
                first.position,
                first.event_type,
                first.error.reason()
            ),
        )
        .with_detail("projection", name)
        .with_detail("position", position.get())
        .with_detail("parked", parked.len())
        .with_detail("events", listed.join(", ")))
    }

    /// Every consumer the store knows (also those other processes run), with its owner,
    /// epoch, since when and its checkpoint.
    pub async fn consumers(&self) -> Result<Vec<ConsumerRecord>, Error> {
        self.inner.store.consumers().await
    }

    /// The ownership coordinator the projections run under.
    pub fn ownership(&self) -> &Ownership<S> {
        &self.inner.ownership
    }

    /// The status of projection `name`, with its lag measured now.
    pub async fn status(&self, name: &str) -> Result<ProjectionStatus, Error> {
        let shared = self.worker(name)?;
        let progress = shared.progress.borrow().clone();
        let store = &self.inner.store;
        let record = store
            .consumers()
            .await?
            .into_iter()
            .find(|r| r.consumer == name);
        let now = store.clock_now().await?;
        let unowned_for = record.as_ref().and_then(|r| r.unowned_for(now));
        // Run here: this process's progress; else what the owner stored.
        let position = match (&record, progress.owned) {
            (Some(r), false) => r.position,
            _ => progress.position,
        };
        let lag_events = store.count_after(position).await?;
        let lag = match store.read_all(position, 1).await?.first() {
            Some(oldest) => (self.inner.clock.now() - oldest.recorded_at)
                .to_std()
                .unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        };
        let dead_letters = store.dead_letters(name).await?.len();
        let labels = [("projection", name)];
        let metrics = &self.inner.metrics;
        metrics.gauge("flext.projection.lag.events", lag_events as f64, &labels);
        metrics.gauge("flext.projection.lag.seconds", lag.as_secs_f64(), &labels);
        metrics.gauge(
            "flext.consumer.unowned.seconds",
            unowned_for.map_or(0.0, |d| d.as_secs_f64()),
            &[("consumer", name)],
        );
        // A projection at the head, waiting for events, is running (its last batch may
        // have been a full one, read while catching up).
        let state = match progress.state {
            ProjectionState::CatchingUp if lag_events == 0 => ProjectionState::Running,
            other => other,
        };
        Ok(ProjectionStatus {
            name: name.to_owned(),
            state,
            position,
            lag_events,
            lag,
            last_error: progress.last_error,
            dead_letters,
            exactly_once: store.exactly_once(),
            owned_here: progress.owned,
            ownership: record,
            unowned_for,
        })
    }

    /// A health check of projection `name`: down when it failed or stopped, or when no
    /// instance has owned it for longer than `max_unowned` (5 s unless set with
    /// [`ProjectionHealth::with_max_unowned`]); degraded when more than `max_lag_events`
    /// events wait for it or while it has no owner; else up (also when another instance
    /// runs it). Details: state, position, lag in events and seconds, dead letters, last
    /// error's reason, owner (name, host, pid), epoch, whether it runs here.
    pub fn health_check(
        &self,
        name: &str,
        max_lag_events: u64,
    ) -> Result<ProjectionHealth<S>, Error> {
        self.worker(name)?;
        Ok(ProjectionHealth {
            projections: self.clone(),
            projection: name.to_owned(),
            check_name: format!("projection:{name}"),
            max_lag_events,
            max_unowned: Duration::from_secs(5),
        })
    }

    /// Every projection's status, by name.
    pub async fn statuses(&self) -> Result<Vec<ProjectionStatus>, Error> {
        let mut out = Vec::with_capacity(self.inner.workers.len());
        for name in self.inner.workers.keys() {
            out.push(self.status(name).await?);
        }
        Ok(out)
    }

    async fn control<T>(
        &self,
        name: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, Error> {
        let shared = self.worker(name)?;
        let (tx, rx) = oneshot::channel();
        shared
            .controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(make(tx));
        shared.wake.notify_one();
        rx.await.map_err(|_| stopped(name))
    }

    /// Rebuilds projection `name` from `from` while the others go on: its task finishes
    /// the batch in hand, moves its checkpoint back (after `reset` for
    /// [`RebuildFrom::Start`]) and catches up again. Returns the position it restarts
    /// after.
    pub async fn rebuild(&self, name: &str, from: RebuildFrom) -> Result<Position, Error> {
        self.control(name, |tx| Control::Rebuild(from, tx)).await?
    }

    /// The events projection `name` parked.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, Error> {
        self.worker(name)?;
        self.inner.store.dead_letters(name).await
    }

    /// Hands a parked event to projection `name` again (in its task, between batches);
    /// on success it leaves the dead letters.
    pub async fn redrive(&self, name: &str, event_id: EventId) -> Result<RedriveReport, Error> {
        self.control(name, |tx| Control::Redrive(Some(event_id), tx))
            .await?
    }

    /// Redrives every event projection `name` parked, in position order.
    pub async fn redrive_all(&self, name: &str) -> Result<RedriveReport, Error> {
        self.control(name, |tx| Control::Redrive(None, tx)).await?
    }

    /// Restarts a failed or paused projection from its checkpoint (a poison event is
    /// tried again) and clears its pause in the store.
    pub async fn resume(&self, name: &str) -> Result<(), Error> {
        self.control(name, Control::Resume).await?
    }

    /// Rebuilds projection `name` into a shadow store (a schema or file of its own) up to
    /// its checkpoint and compares it with the live read model row by row; the live
    /// projection waits meanwhile. Returns `{"checkpoint", "events", "differences",
    /// "tables": [TableDiff]}`; `UNIMPLEMENTED`/`SHADOW_UNSUPPORTED` on the memory store.
    pub async fn verify(&self, name: &str) -> Result<serde_json::Value, Error> {
        self.control(name, Control::Verify).await?
    }

    /// Pauses projection `name` after the batch in hand: it keeps its lease and handles
    /// nothing until [`Projections::resume`]. The pause is stored, so it holds across
    /// restarts and takeovers.
    pub async fn pause(&self, name: &str) -> Result<(), Error> {
        self.control(name, Control::Pause).await?
    }

    /// Stops every projection gracefully: each finishes the batch in hand, stores its
    /// checkpoint and releases its lease, so another instance takes over at once (and the
    /// runner's own coordinator withdraws the instance). Returns when all have stopped.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send_replace(true);
        let tasks: Vec<_> = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        if self.inner.own_coordinator {
            self.inner.ownership.shutdown().await;
        }
    }

    /// Stops every projection at once, wherever it is, as a crash would: a batch in hand
    /// rolls back and is processed again after a restart, leases lapse. For tests of
    /// recovery.
    pub fn abort(&self) {
        if self.inner.own_coordinator {
            self.inner.ownership.abort();
        }
        for shared in self.inner.workers.values() {
            shared.set(|p| {
                p.state = ProjectionState::Stopped;
                p.owned = false;
            });
        }
        for t in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Why processing stopped short.
enum Stop {
    /// The store failed (connection lost, commit unknown): reload the checkpoint, retry.
    Store(Error),
    /// The store refused the checkpoint: the lease is no longer current.
    Lost(Error),
    /// A poison event and policy `Stop`.
    Failed(Error),
    /// While retrying, the lease was lost or is to be handed over.
    NotOwned,
    /// Shutdown requested while waiting to retry.
    Shutdown,
}

impl Stop {
    /// A store error, or the loss of the lease when the store refused the checkpoint.
    fn store(e: Error) -> Stop {
        if e.reason() == "OWNERSHIP_LOST" {
            Stop::Lost(e)
        } else {
            Stop::Store(e)
        }
    }
}

enum BatchError {
    /// The event at this index failed; nothing of the batch was committed.
    Handler(usize, Error),
    /// A reactor's event at this index (not the first) failed, and the checkpoint was
    /// committed just before it: the effects of the events before it are done.
    Partial(usize, Error),
    Store(Error),
}

/// Why a worker stopped running its projection.
enum Owned {
    /// Shutdown requested: release the lease.
    Shutdown,
    /// The coordinator hands the projection to another instance: release the lease.
    HandOver,
    /// The lease was lost (expired, taken): nothing to release.
    Lost(Error),
}

struct Worker<S: ProjectionStore> {
    store: S,
    projection: Arc<dyn DynProjection<S::Transaction>>,
    slot: ConsumerSlot<S>,
    /// The lease the projection runs under while this instance owns it.
    lease: Option<Lease>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    /// Whether the projection's `setup` ran since this process came to own it (or since
    /// its last rebuild).
    prepared: bool,
    /// Whether an operator paused it (read from the store when it is acquired).
    paused: bool,
}

impl<S> Worker<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleeps `d`; false if shutdown was requested meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        let mut rx = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.shutting_down(),
            _ = rx.wait_for(|s| *s) => false,
        }
    }

    fn note_error(&self, e: &Error) {
        let e = e.clone();
        self.shared.set(|p| p.last_error = Some(e));
    }

    async fn load_checkpoint(&mut self) -> Option<Position> {
        let mut attempt = 0;
        loop {
            match self.store.load_checkpoint(&self.shared.name).await {
                Ok(p) => return Some(p.unwrap_or(Position::START)),
                Err(e) => {
                    self.note_error(&e);
                    attempt += 1;
                    let d = self.shared.options.backoff_after(attempt);
                    if !self.pause(d).await {
                        return None;
                    }
                }
            }
        }
    }

    fn lease(&self) -> Result<&Lease, Error> {
        self.lease.as_ref().ok_or_else(|| {
            Error::failed_precondition(
                "NOT_OWNER",
                format!(
                    "projection {:?} is not owned by this instance",
                    self.shared.name
                ),
            )
            .with_detail("projection", self.shared.name.as_str())
        })
    }

    /// Answers the controls that came while this instance does not run the projection.
    fn refuse_controls(&self) {
        while let Some(control) = self.shared.pop_control() {
            let refused = || {
                Error::failed_precondition(
                    "NOT_OWNER",
                    format!(
                        "projection {:?} runs in another instance (or none yet); ask its owner",
                        self.shared.name
                    ),
                )
                .with_detail("projection", self.shared.name.as_str())
            };
            match control {
                Control::Rebuild(_, reply) => {
                    let _ = reply.send(Err(refused()));
                }
                Control::Redrive(_, reply) => {
                    let _ = reply.send(Err(refused()));
                }
                Control::Resume(reply) | Control::Pause(reply) => {
                    let _ = reply.send(Err(refused()));
                }
                Control::Verify(reply) => {
                    let _ = reply.send(Err(refused()));
                }
            }
        }
    }

    /// Waits for this instance's turn, runs the projection while it holds the lease, and
    /// waits again when it loses or hands it over.
    async fn run(mut self) {
        let mut shutdown = self.shutdown.clone();
        'standby: loop {
            self.shared.set(|p| {
                p.state = ProjectionState::Standby;
                p.owned = false;
            });
            let lease = loop {
                let slot = &mut self.slot;
                tokio::select! {
                    l = slot.acquired() => match l {
                        Some(l) => break l,
                        None => break 'standby,
                    },
                    _ = shutdown.wait_for(|s| *s) => break 'standby,
                    _ = self.shared.wake.notified() => self.refuse_controls(),
                }
            };
            self.lease = Some(lease.clone());
            // Read after acquiring: the former owner's last commit is in.
            let Some(start) = self.load_checkpoint().await else {
                self.release().await;
                break;
            };
            self.shared.set(|p| {
                p.position = start;
                p.state = ProjectionState::CatchingUp;
                p.owned = true;
            });
            match self.run_owned(start).await {
                Owned::Shutdown => {
                    self.release().await;
                    break;
                }
                Owned::HandOver => self.release().await,
                Owned::Lost(e) => {
                    tracing::warn!(
                        projection = %self.shared.name,
                        epoch = lease.epoch,
                        error = %e,
                        "ownership lost: the projection stops here"
                    );
                    self.note_error(&e);
                    self.slot.lost(&lease);
                }
            }
            self.lease = None;
        }
        self.shared.set(|p| {
            p.state = ProjectionState::Stopped;
            p.owned = false;
        });
    }

    /// Gives the lease up (after the batch in hand committed).
    async fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.shared.set(|p| p.owned = false);
            if let Err(e) = self.slot.release(&lease).await {
                // It lapses at its expiry instead.
                self.note_error(&e);
            }
        }
    }

    /// Whether the lease it runs under is still this instance's to run with.
    fn still_owned(&self) -> Result<(), Owned> {
        let Some(lease) = &self.lease else {
            return Err(Owned::HandOver);
        };
        match self.slot.grant() {
            Grant::Held(l) if l.epoch == lease.epoch => Ok(()),
            Grant::Release(l) if l.epoch == lease.epoch => Err(Owned::HandOver),
            _ => Err(Owned::Lost(flext_ports::adapter::ownership_lost(
                lease,
                None,
                "the lease could not be renewed",
            ))),
        }
    }

    /// Migrates the read model, then runs the projection's `setup`, in `tx`.
    async fn prepare(&self, tx: &mut S::Transaction) -> Result<(), Error> {
        self.store
            .migrate(tx, &self.shared.name, self.projection.migrations())
            .await?;
        self.projection.setup(tx).await
    }

    /// Runs [`Worker::prepare`] in a transaction of its own.
    async fn setup(&self) -> Result<(), Error> {
        let mut tx = self.store.begin().await?;
        self.prepare(&mut tx).await?;
        self.store.commit(tx).await
    }

    async fn run_owned(&mut self, start: Position) -> Owned {
        self.prepared = false;
        let options = self.shared.options;
        let mut sub = Subscription::with_options(self.store.clone(), start, options.subscription);
        let mut failed = false;
        let mut shutdown = self.shutdown.clone();
        // A pause stored by an operator holds whichever instance owns the projection.
        match self.store.paused_consumers().await {
            Ok(paused) => self.paused = paused.iter().any(|c| *c == self.shared.name),
            Err(e) => self.note_error(&e),
        }
        // A typed projection reads only its event types (filtered by the store's query
        // where it can); the others are skipped by the page's `through`.
        let owned_types: Option<Vec<String>> = self
            .projection
            .event_types()
            .map(|t| t.iter().map(|s| (*s).to_owned()).collect());
        let types: Option<Vec<&str>> = owned_types
            .as_ref()
            .map(|t| t.iter().map(String::as_str).collect());
        let types = types.as_deref();
        // While catching up, the next batch is read while the current one commits.
        let mut prefetched: Option<Option<FilteredPage>> = None;
        loop {
            while let Some(control) = self.shared.pop_control() {
                if prefetched.take().is_some() {
                    sub.seek(self.shared.progress.borrow().position);
                }
                self.control(control, &mut sub, &mut failed).await;
            }
            if self.shutting_down() {
                return Owned::Shutdown;
            }
            if let Err(why) = self.still_owned() {
                return why;
            }
            if failed || self.paused {
                if !failed {
                    self.shared.set(|p| p.state = ProjectionState::Paused);
                }
                let slot = &mut self.slot;
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                    _ = slot.changed() => {}
                }
                continue;
            }
            if !self.prepared {
                match self.setup().await {
                    Ok(()) => self.prepared = true,
                    Err(e) if e.is_transient() => {
                        self.note_error(&e);
                        self.shared.set(|p| p.state = ProjectionState::Retrying);
                        self.pause(options.max_backoff.min(options.backoff.saturating_mul(8)))
                            .await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(projection = %self.shared.name, error = %e, "the projection's setup failed: it stops until resumed");
                        self.note_error(&e);
                        self.shared.set(|p| p.state = ProjectionState::Failed);
                        failed = true;
                        continue;
                    }
                }
            }
            let polled = match prefetched.take() {
                Some(page) => Ok(page),
                None => sub.poll_page(options.batch_size, types).await,
            };
            let batch = match polled {
                Ok(Some(page)) => Ok(page),
                Ok(None) => {
                    self.shared.set(|p| p.state = ProjectionState::Running);
                    let labels = [("projection", self.shared.name.as_str())];
                    self.metrics
                        .gauge("flext.projection.lag.events", 0.0, &labels);
                    self.metrics
                        .gauge("flext.projection.lag.seconds", 0.0, &labels);
                    let slot = &mut self.slot;
                    tokio::select! {
                        b = sub.next_page(options.batch_size, types) => b,
                        _ = self.shared.wake.notified() => continue,
                        _ = shutdown.wait_for(|s| *s) => continue,
                        _ = slot.changed() => continue,
                    }
                }
                Err(e) => Err(e),
            };
            let page = match batch {
                Ok(page) => page,
                Err(e) => {
                    self.note_error(&e);
                    if !self.pause(options.backoff).await {
                        return Owned::Shutdown;
                    }
                    continue;
                }
            };
            let full = page.events.len() >= options.batch_size;
            let outcome = if full {
                let (outcome, next) = tokio::join!(
                    self.process(&page),
                    sub.poll_page(options.batch_size, types)
                );
                // A failed read moved nothing; after a failed batch the arms below seek
                // back to the checkpoint.
                if let (Ok(()), Ok(next)) = (&outcome, next) {
                    prefetched = Some(next);
                }
                outcome
            } else {
                self.process(&page).await
            };
            match outcome {
                Ok(()) => self.shared.set(|p| {
                    p.state = if full {
                        ProjectionState::CatchingUp
                    } else {
                        ProjectionState::Running
                    };
                }),
                Err(Stop::Lost(e)) => return Owned::Lost(e),
                Err(Stop::NotOwned) => {
                    if let Err(why) = self.still_owned() {
                        return why;
                    }
                    let at = self.shared.progress.borrow().position;
                    sub.seek(at);
                }
                Err(Stop::Store(e)) => {
                    self.note_error(&e);
                    if !self.pause(options.backoff).await {
                        return Owned::Shutdown;
                    }
                    // The commit may or may not have happened: ask the store.
                    let Some(p) = self.load_checkpoint().await else {
                        return Owned::Shutdown;
                    };
                    self.shared.set(|s| s.position = p);
                    sub.seek(p);
                }
                Err(Stop::Failed(e)) => {
                    failed = true;
                    let at = self.shared.progress.borrow().position;
                    sub.seek(at);
                    self.shared.set(|p| {
                        p.state = ProjectionState::Failed;
                        p.last_error = Some(e);
                    });
                }
                Err(Stop::Shutdown) => return Owned::Shutdown,
            }
        }
    }

    /// One transaction: every event of `events`, then the checkpoint at `to` (the last
    /// event's position, or further when the read skipped events of other types), in the
    /// batch's span.
    async fn apply(&self, events: &[RecordedEvent], to: Position) -> Result<(), BatchError> {
        let span = batch_span(&self.shared.name, events);
        let result = self
            .apply_untraced(events, to)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            let e = match e {
                BatchError::Store(e) | BatchError::Handler(_, e) | BatchError::Partial(_, e) => e,
            };
            span.record("otel.status_code", "ERROR");
            span.record("error.type", e.reason());
        }
        result
    }

    async fn apply_untraced(
        &self,
        events: &[RecordedEvent],
        to: Position,
    ) -> Result<(), BatchError> {
        if let Some(reacting) = self.projection.react(events) {
            // A reactor: the effects first, outside any transaction (a follow-up command
            // needs the store's writer), then the checkpoint.
            return match reacting.await {
                Ok(()) => self.checkpoint(to).await,
                Err((0, e)) => Err(BatchError::Handler(0, e)),
                Err((i, e)) => {
                    self.checkpoint(events[i - 1].position).await?;
                    Err(BatchError::Partial(i, e))
                }
            };
        }
        let mut tx = self.store.begin().await.map_err(BatchError::Store)?;
        let types = self.projection.event_types();
        for (i, e) in events.iter().enumerate() {
            if !selects(types, e) {
                continue;
            }
            if let Err(err) = self.projection.handle(&mut tx, e).await {
                return Err(BatchError::Handler(i, err));
            }
        }
        let lease = self.lease().map_err(BatchError::Store)?;
        self.store
            .set_checkpoint(&mut tx, lease, to)
            .await
            .map_err(BatchError::Store)?;
        self.store.commit(tx).await.map_err(BatchError::Store)
    }

    /// Moves the checkpoint alone, in a transaction of its own.
    async fn checkpoint(&self, to: Position) -> Result<(), BatchError> {
        let mut tx = self.store.begin().await.map_err(BatchError::Store)?;
        let lease = self.lease().map_err(BatchError::Store)?;
        self.store
            .set_checkpoint(&mut tx, lease, to)
            .await
            .map_err(BatchError::Store)?;
        self.store.commit(tx).await.map_err(BatchError::Store)
    }

    fn advanced(&self, position: Position) {
        self.shared.set(|p| p.position = position);
        let labels = [("projection", self.shared.name.as_str())];
        self.metrics
            .gauge("flext.projection.position", position.get() as f64, &labels);
    }

    fn committed(&self, events: usize) {
        let labels = [("projection", self.shared.name.as_str())];
        self.metrics
            .count("flext.projection.events", events as u64, &labels);
        self.metrics
            .observe("flext.projection.batch.size", events as f64, &labels);
    }

    async fn process(&mut self, page: &FilteredPage) -> Result<(), Stop> {
        let events = page.events.as_slice();
        let (mut start, mut end) = (0, events.len());
        while start < events.len() {
            // The page's last batch carries the checkpoint past what the read skipped.
            let to = if end == events.len() {
                page.through.max(events[end - 1].position)
            } else {
                events[end - 1].position
            };
            match self.apply(&events[start..end], to).await {
                Ok(()) => {
                    self.committed(end - start);
                    self.advanced(to);
                    start = end;
                    end = events.len();
                }
                Err(BatchError::Store(e)) => return Err(Stop::store(e)),
                // The first event fails: retry it alone, then park it or stop.
                Err(BatchError::Handler(0, e)) => {
                    self.poison(&events[start], e).await?;
                    self.committed(1);
                    self.advanced(events[start].position);
                    start += 1;
                    end = events.len();
                }
                // A later one fails: commit the events before it first.
                Err(BatchError::Handler(i, _)) => end = start + i,
                // A reactor's later event failed, those before it are committed: retry
                // it alone, then park it or stop.
                Err(BatchError::Partial(i, e)) => {
                    self.committed(i);
                    self.advanced(events[start + i - 1].position);
                    start += i;
                    self.poison(&events[start], e).await?;
                    self.committed(1);
                    self.advanced(events[start].position);
                    start += 1;
                    end = events.len();
                }
            }
        }
        // Only events of other types (or the last one parked): the checkpoint still moves
        // past them, so a restart does not read them again and `wait_for` sees the head.
        if self.shared.progress.borrow().position < page.through {
            match self.apply(&[], page.through).await {
                Ok(()) => self.advanced(page.through),
                Err(
                    BatchError::Store(e) | BatchError::Handler(_, e) | BatchError::Partial(_, e),
                ) => {
                    return Err(Stop::store(e));
                }
            }
        }
        Ok(())
    }

    /// Retries the one event that failed: a transient error without limit (state
    /// `Retrying`, backoff capped at `max_backoff`), any other up to `max_attempts` in all,
    /// then the poison policy.
    async fn poison(&mut self, event: &RecordedEvent, first: Error) -> Result<(), Stop> {
        let options = self.shared.options;
        let mut error = first;
        let mut attempts = 1;
        let mut transient_tries = 0u32;
        let before = self.shared.progress.borrow().state;
        loop {
            let wait = if error.is_transient() {
                transient_tries = transient_tries.saturating_add(1);
                self.shared.set(|p| p.state = ProjectionState::Retrying);
                options.backoff_after(transient_tries)
            } else if attempts < options.max_attempts {
                attempts += 1;
                options.backoff_after(attempts - 1)
            } else {
                break;
            };
            self.note_error(&error);
            if !self.pause(wait).await {
                return Err(Stop::Shutdown);
            }
            if self.still_owned().is_err() {
                return Err(Stop::NotOwned);
            }
            match self
                .apply(std::slice::from_ref(event), event.position)
                .await
            {
                Ok(()) => {
                    self.shared.set(|p| {
                        if p.state == ProjectionState::Retrying {
                            p.state = before;
                        }
                    });
                    return Ok(());
                }
                Err(BatchError::Handler(_, e) | BatchError::Partial(_, e)) => error = e,
                Err(BatchError::Store(e)) => return Err(Stop::store(e)),
            }
        }
        self.note_error(&error);
        match options.on_poison {
            PoisonPolicy::Stop => Err(Stop::Failed(error)),
            PoisonPolicy::Park => {
                let letter =
                    DeadLetter::of(&self.shared.name, event, error, attempts, self.clock.now());
                self.park(&letter, Some(event.position))
                    .await
                    .map_err(Stop::store)
            }
        }
    }

    /// Parks `letter`, moving the checkpoint to `checkpoint` in the same transaction
    /// (else fencing the transaction at the checkpoint it has).
    async fn park(&self, letter: &DeadLetter, checkpoint: Option<Position>) -> Result<(), Error> {
        let mut tx = self.store.begin().await?;
        self.store.park(&mut tx, letter).await?;
        let at = checkpoint.unwrap_or_else(|| self.shared.progress.borrow().position);
        self.store
            .set_checkpoint(&mut tx, self.lease()?, at)
            .await?;
        self.store.commit(tx).await?;
        if checkpoint.is_some() {
            self.metrics.count(
                "flext.projection.dead_letters",
                1,
                &[("projection", self.shared.name.as_str())],
            );
        }
        Ok(())
    }

    async fn control(&mut self, control: Control, sub: &mut Subscription<S>, failed: &mut bool) {
        match control {
            Control::Rebuild(from, reply) => {
                let result = self.rebuild(from).await;
                if let Ok(p) = result {
                    sub.seek(p);
                    *failed = false;
                    self.shared.set(|s| {
                        s.position = p;
                        s.state = ProjectionState::CatchingUp;
                    });
                }
                let _ = reply.send(result);
            }
            Control::Redrive(which, reply) => {
                let _ = reply.send(self.redrive(which).await);
            }
            Control::Resume(reply) => {
                let by = self.operator();
                let result = self.store.set_paused(&self.shared.name, false, &by).await;
                if result.is_ok() {
                    *failed = false;
                    self.paused = false;
                    self.shared.set(|s| s.state = ProjectionState::CatchingUp);
                }
                let _ = reply.send(result);
            }
            Control::Verify(reply) => {
                let _ = reply.send(self.verify().await);
            }
            Control::Pause(reply) => {
                let by = self.operator();
                let result = self.store.set_paused(&self.shared.name, true, &by).await;
                if result.is_ok() {
                    self.paused = true;
                    self.shared.set(|s| s.state = ProjectionState::Paused);
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Rebuilds the projection into a shadow store up to its checkpoint and compares the
    /// shadow's tables with the live ones (the projection waits meanwhile).
    async fn verify(&self) -> Result<serde_json::Value, Error> {
        if self.projection.react(&[]).is_some() {
            return Err(Error::failed_precondition(
                "NOT_A_READ_MODEL",
                format!(
                    "{:?} is a reactor: it keeps no read model to verify",
                    self.shared.name
                ),
            ));
        }
        let checkpoint = self.shared.progress.borrow().position;
        let shadow = self.store.shadow(&self.shared.name).await?;
        let built = self.build_shadow(&shadow, checkpoint).await;
        let compared = match built {
            Ok(events) => self
                .store
                .compare_shadow(&shadow)
                .await
                .map(|diffs| (events, diffs)),
            Err(e) => Err(e),
        };
        let dropped = self.store.drop_shadow(shadow).await;
        let (events, tables) = compared?;
        dropped?;
        let differences: usize = tables
            .iter()
            .map(|t| t.live_only.len() + t.rebuilt_only.len())
            .sum();
        Ok(serde_json::json!({
            "checkpoint": checkpoint.get(),
            "events": events,
            "differences": differences,
            "tables": tables,
        }))
    }

    /// Hands the events up to `to` (those the live projection handled: not its parked
    /// ones) to the projection in `shadow`'s transactions; how many.
    async fn build_shadow(&self, shadow: &S, to: Position) -> Result<u64, Error> {
        let name = &self.shared.name;
        let mut tx = shadow.begin().await?;
        shadow
            .migrate(&mut tx, name, self.projection.migrations())
            .await?;
        self.projection.setup(&mut tx).await?;
        shadow.commit(tx).await?;
        let parked: std::collections::HashSet<EventId> = self
            .store
            .dead_letters(name)
            .await?
            .into_iter()
            .map(|l| l.event_id)
            .collect();
        let types = self.projection.event_types();
        let mut after = Position::START;
        let mut handled = 0u64;
        while after < to {
            let page = self
                .store
                .read_all(after, self.shared.options.batch_size)
                .await?;
            if page.is_empty() {
                break;
            }
            let mut tx = shadow.begin().await?;
            for event in &page {
                if event.position > to {
                    break;
                }
                after = event.position;
                if !selects(types, event) || parked.contains(&event.event_id) {
                    continue;
                }
                self.projection.handle(&mut tx, event).await.map_err(|e| {
                    Error::failed_precondition(
                        "VERIFY_HANDLER_FAILED",
                        format!(
                            "rebuilding {name:?} into a shadow failed at event {} (position {}): {}",
                            event.event_id,
                            event.position,
                            e.message()
                        ),
                    )
                    .with_source(e)
                })?;
                handled += 1;
            }
            shadow.commit(tx).await?;
            if page.last().is_some_and(|e| e.position > to) {
                break;
            }
        }
        Ok(handled)
    }

    /// Who a pause is recorded as made by: this instance.
    fn operator(&self) -> String {
        self.slot.instance().label()
    }

    async fn rebuild(&self, from: RebuildFrom) -> Result<Position, Error> {
        let target = match from {
            RebuildFrom::Start => Position::START,
            RebuildFrom::Position(p) => p,
            RebuildFrom::Time(t) => self.position_before(t).await?,
        };
        let mut tx = self.store.begin().await?;
        // The tables exist before `reset` empties them (a projection that failed its
        // setup is rebuilt from here).
        self.prepare(&mut tx).await?;
        if from == RebuildFrom::Start {
            self.projection.reset(&mut tx).await?;
        }
        self.store
            .rewind_checkpoint(&mut tx, self.lease()?, target)
            .await?;
        self.store.commit(tx).await?;
        Ok(target)
    }

    /// The position just before the first event recorded at or after `t` (a scan of the
    /// global order: rebuilds are rare and `recorded_at` is not indexed).
    async fn position_before(&self, t: DateTime<Utc>) -> Result<Position, Error> {
        let mut after = Position::START;
        loop {
            let page = self.store.read_all(after, 1_000).await?;
            let Some(last) = page.last() else {
                return Ok(after);
            };
            if let Some(first) = page.iter().find(|e| e.recorded_at >= t) {
                return Ok(Position(first.position.get().saturating_sub(1)));
            }
            after = last.position;
        }
    }

    async fn redrive(&self, which: Option<EventId>) -> Result<RedriveReport, Error> {
        let letters = self.store.dead_letters(&self.shared.name).await?;
        let mut report = RedriveReport {
            redriven: 0,
            still_failing: Vec::new(),
        };
        let chosen: Vec<DeadLetter> = match which {
            Some(id) => {
                let one: Vec<_> = letters.into_iter().filter(|l| l.event_id == id).collect();
                if one.is_empty() {
                    return Err(Error::not_found(
                        "UNKNOWN_DEAD_LETTER",
                        format!(
                            "projection {:?} has no dead letter for event {id}",
                            self.shared.name
                        ),
                    )
                    .with_detail("projection", self.shared.name.as_str())
                    .with_detail("event_id", id.to_string()));
                }
                one
            }
            None => letters,
        };
        for mut letter in chosen {
            let mut event = self.stored_event(&letter).await?;
            // An operator's fix of the payload (the stored event stays the original).
            if let Some(edit) = self
                .store
                .dead_letter_edit(&self.shared.name, letter.event_id)
                .await?
            {
                event.payload = edit.payload.into();
            }
            // A reactor's effect happens outside the transaction (it may need the
            // store's writer); a projection's inside it.
            let (mut tx, outcome) = match self.projection.react(std::slice::from_ref(&event)) {
                Some(reacting) => {
                    let outcome = reacting.await.map_err(|(_, e)| e);
                    (self.store.begin().await?, outcome)
                }
                None => {
                    let mut tx = self.store.begin().await?;
                    let outcome = self.projection.handle(&mut tx, &event).await;
                    (tx, outcome)
                }
            };
            match outcome {
                Ok(()) => {
                    self.store
                        .unpark(&mut tx, &self.shared.name, letter.event_id)
                        .await?;
                    let at = self.shared.progress.borrow().position;
                    self.store
                        .set_checkpoint(&mut tx, self.lease()?, at)
                        .await?;
                    self.store.commit(tx).await?;
                    report.redriven += 1;
                }
                Err(e) => {
                    drop(tx);
                    letter.error = e;
                    letter.attempts = letter.attempts.saturating_add(1);
                    letter.parked_at = self.clock.now();
                    self.park(&letter, None).await?;
                    report.still_failing.push(letter);
                }
            }
        }
        Ok(report)
    }

    async fn stored_event(&self, letter: &DeadLetter) -> Result<RecordedEvent, Error> {
        let found = self
            .store
            .read_stream(
                &letter.stream_id,
                StreamVersion(letter.stream_version.0),
                1,
                ReadDirection::Forward,
            )
            .await?;
        found
            .into_iter()
            .find(|e| e.event_id == letter.event_id)
            .ok_or_else(|| {
                Error::data_loss(
                    "DEAD_LETTER_EVENT_MISSING",
                    format!(
                        "the parked event {} is no longer version {} of stream {:?}",
                        letter.event_id,
                        letter.stream_version,
                        letter.stream_id.as_str()
                    ),
                )
                .with_detail("event_id", letter.event_id.to_string())
            })
    }
}

/// Asks a query to see its caller's writes: put it in the query's
/// [`flext_ports::Context`] (`Context::with_value`) and the [`ReadYourWritesBehavior`]
/// waits until the projection has reached the position before the handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadYourWrites {
    /// The projection the query reads.
    pub projection: String,
    /// The position it must have reached (a command's `Executed::last_position`).
    pub position: Position,
}

impl ReadYourWrites {
    /// Wait for `projection` to reach `position`.
    pub fn new(projection: impl Into<String>, position: Position) -> Self {
        ReadYourWrites {
            projection: projection.into(),
            position,
        }
    }
}

/// A pipeline behavior for the query bus: when a query's context carries
/// [`ReadYourWrites`], waits (up to the context's deadline, else the layer's timeout)
/// until that projection has reached the position, then runs the query. A projection
/// that does not get there in time fails the query with `PROJECTION_BEHIND`.
pub struct ReadYourWritesBehavior<S> {
    projections: Projections<S>,
    timeout: Duration,
}

impl<S> ReadYourWritesBehavior<S> {
    /// Waits on `projections`, at most `timeout` when the context has no deadline.
    pub fn new(projections: Projections<S>, timeout: Duration) -> Self {
        ReadYourWritesBehavior {
            projections,
            timeout,
        }
    }
}

impl<S> crate::pipeline::Behavior for ReadYourWritesBehavior<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    fn handle<'s, 'a: 's>(
        &'s self,
        _message: crate::pipeline::Message<'a>,
        ctx: &'a flext_ports::Context,
        next: crate::pipeline::Next<'a>,
    ) -> BoxFuture<'s, Result<crate::pipeline::Reply, Error>> {
        Box::pin(async move {
            if let Some(want) = ctx.value::<ReadYourWrites>() {
                let timeout = ctx
                    .deadline()
                    .map(|d| d.saturating_duration_since(std::time::Instant::now()))
                    .unwrap_or(self.timeout);
                self.projections
                    .wait_for(&want.projection, want.position, timeout)
                    .await?;
            }
            next.run().await
        })
    }
}

/// The health check of one projection; see [`Projections::health_check`].
pub struct ProjectionHealth<S> {
    projections: Projections<S>,
    projection: String,
    check_name: String,
    max_lag_events: u64,
    max_unowned: Duration,
}

impl<S> ProjectionHealth<S> {
    /// How long the projection may have no owner in any instance before it is down
    /// (default 5 s; shorter than that it is degraded).
    pub fn with_max_unowned(mut self, max_unowned: Duration) -> Self {
        self.max_unowned = max_unowned;
        self
    }
}

impl<S> flext_ports::HealthCheck for ProjectionHealth<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    fn name(&self) -> &str {
        &self.check_name
    }

    fn check(&self) -> flext_ports::HealthFuture<'_> {
        use flext_ports::Health;
        Box::pin(async move {
            let status = match self.projections.status(&self.projection).await {
                Ok(s) => s,
                Err(e) => return Health::down(format!("its status cannot be read: {e}")),
            };
            let owned_elsewhere = status.ownership.as_ref().is_some_and(|r| r.owned);
            let health = match status.state {
                ProjectionState::Failed => Health::down("the projection failed"),
                ProjectionState::Stopped => Health::down("the projection is stopped"),
                ProjectionState::Standby if !owned_elsewhere => match status.unowned_for {
                    Some(d) if d > self.max_unowned => Health::down(format!(
                        "no instance has owned it for {:.1} s",
                        d.as_secs_f64()
                    )),
                    Some(d) => Health::degraded(format!(
                        "no instance owns it (for {:.1} s)",
                        d.as_secs_f64()
                    )),
                    None => Health::degraded("no instance has owned it yet"),
                },
                ProjectionState::Paused => {
                    Health::degraded("paused by an operator: it handles nothing until resumed")
                }
                ProjectionState::Retrying => Health::degraded(format!(
                    "retrying a transient error: {}",
                    status.last_error.as_ref().map_or("", |e| e.reason())
                )),
                _ if status.lag_events > self.max_lag_events => Health::degraded(format!(
                    "{} events wait (more than {})",
                    status.lag_events, self.max_lag_events
                )),
                _ => Health::up(),
            };
            let state = serde_json::to_value(status.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut health = health
                .with_detail("state", state)
                .with_detail("position", status.position.get())
                .with_detail("lag_events", status.lag_events)
                .with_detail("lag_seconds", status.lag.as_secs_f64())
                .with_detail("dead_letters", status.dead_letters)
                .with_detail("owned_here", status.owned_here);
            if let Some(r) = &status.ownership {
                health = health.with_detail("epoch", r.epoch);
                if let Some(o) = &r.owner {
                    health = health
                        .with_detail("owner", o.name.as_str())
                        .with_detail("owner_host", o.host.as_str())
                        .with_detail("owner_pid", o.pid);
                }
            }
            if let Some(d) = status.unowned_for {
                health = health.with_detail("unowned_seconds", d.as_secs_f64());
            }
            if let Some(e) = &status.last_error {
                health = health.with_detail("last_error", e.reason());
            }
            health
        })
    }
}

/// How often a waiter for a projection another instance runs reads its checkpoint again
/// without a notification.
const REMOTE_RECHECK: Duration = Duration::from_millis(50);

/// The most links one batch span carries (one per distinct stored trace context).
const MAX_BATCH_LINKS: usize = 128;

/// The span of one projection batch: `flext.projection.batch`, `otel.name`
/// `"process {projection}"`, kind consumer, with the messaging batch attributes and a link
/// to the trace context stored with each of its events (distinct ones, at most
/// [`MAX_BATCH_LINKS`]): the commands that recorded them, in whatever process they ran.
fn batch_span(projection: &str, events: &[RecordedEvent]) -> tracing::Span {
    let span = tracing::info_span!(
        "flext.projection.batch",
        otel.name = tracing::field::Empty,
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "flext",
        messaging.operation.type = "process",
        messaging.destination.name = projection,
        messaging.batch.message_count = events.len() as u64,
        flext.position.first = events.first().map_or(0, |e| e.position.get()),
        flext.position.last = events.last().map_or(0, |e| e.position.get()),
        error.type = tracing::field::Empty,
    );
    if !span.is_disabled() {
        span.record(
            "otel.name",
            tracing::field::display(format_args!("process {projection}")),
        );
        let mut linked: Vec<&str> = Vec::new();
        for event in events {
            if linked.len() == MAX_BATCH_LINKS {
                break;
            }
            if let Some(tp) = flext_ports::trace::stored_traceparent(event)
                && !linked.contains(&tp)
            {
                linked.push(tp);
                flext_ports::trace::link_to_event(&span, event);
            }
        }
    }
    span
}

//! [`App`]: a service put together in one place: services, macro-registered handlers,
//! projections, pipelines, checked before anything runs.

use std::time::Duration;

use flext_domain::{Error, Position};
use flext_ports::{Command, Context, EventStore, ProjectionStore, Query, WatchAppends};

use crate::bus::{CommandBus, EventBus, QueryBus, Registry};
use crate::pipeline::Pipeline;
use crate::projection::{IntoProjection, ProjectionOptions, ProjectionRunner, Projections};
use crate::scheduler::{Deliveries, Scheduler, SchedulerBuilder};
use crate::services::{Services, ServicesBuilder};

/// Builds an [`App`]: see [`App::builder`].
pub struct AppBuilder<S: ProjectionStore> {
    store: S,
    services: ServicesBuilder,
    runner: ProjectionRunner<S>,
    error: Option<Error>,
    commands: Pipeline,
    queries: Pipeline,
    registry: Registry,
    read_timeout: Duration,
    /// Reactors made from the command bus once it is built.
    reactors: Vec<AddReactor<S>>,
    /// Starts the scheduler, if the App runs one.
    scheduler: Option<StartScheduler>,
}

/// Adds one reactor, made from the command bus, to the runner.
type AddReactor<S> =
    Box<dyn FnOnce(&CommandBus, ProjectionRunner<S>) -> Result<ProjectionRunner<S>, Error> + Send>;

/// Starts the App's scheduler on the command bus, delivering the process managers'
/// commands besides its own.
type StartScheduler = Box<dyn FnOnce(CommandBus, &Deliveries) -> Result<Scheduler, Error> + Send>;

impl<S: ProjectionStore> std::fmt::Debug for AppBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder").finish_non_exhaustive()
    }
}

/// A running service on store `S`: its buses, its projections and its services.
///
/// ```
/// use flext::application::{App, Repository};
/// use flext::memory::InMemoryEventStore;
/// # use flext::{Aggregate, DomainEvent, Error};
/// # #[derive(Default)] struct Counter;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Incremented;
/// # impl DomainEvent for Incremented { fn event_type(&self) -> &'static str { "incremented" } }
/// # impl Aggregate for Counter { const TYPE: &'static str = "counter"; type Event = Incremented; fn apply(&mut self, _: &Incremented) {} }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = InMemoryEventStore::new();
/// let app = App::builder(store.clone())
///     .service(Repository::<Counter, _>::new(store)) // and more services, projections...
///     .start()?; // checks every handler's dependencies first
/// // app.send(command).await?; app.ask_after(query, position).await?;
/// app.shutdown().await;
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
pub struct App<S: ProjectionStore> {
    /// The command bus, with the command pipeline.
    pub commands: CommandBus,
    /// The query bus, with the query pipeline.
    pub queries: QueryBus,
    /// The in-process event bus.
    pub events: EventBus,
    /// The running projections.
    pub projections: Projections<S>,
    /// The services the handlers draw on (the store among them).
    pub services: Services,
    /// The scheduler delivering scheduled commands and the process managers' commands,
    /// when the App has process managers or [`AppBuilder::scheduler`] was called.
    pub scheduler: Option<Scheduler>,
    read_timeout: Duration,
}

impl<S: ProjectionStore> std::fmt::Debug for App<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl<S> App<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone + Sync,
{
    /// An app on `store`, which is also registered as a service (a handler takes it as
    /// `Dep<S>`). Handlers come from the attribute macros; the pipelines are empty until
    /// set.
    pub fn builder(store: S) -> AppBuilder<S> {
        AppBuilder {
            runner: ProjectionRunner::new(store.clone()),
            services: Services::builder().singleton(store.clone()),
            store,
            error: None,
            commands: Pipeline::new(),
            queries: Pipeline::new(),
            registry: Registry::new(),
            read_timeout: Duration::from_secs(10),
            reactors: Vec::new(),
            scheduler: None,
        }
    }

    /// Dispatches `command` with a new [`Context`].
    pub async fn send<C: Command>(&self, command: C) -> Result<C::Output, Error> {
        self.commands.dispatch(command, &Context::new()).await
    }

    /// Asks `query` with a new [`Context`].
    pub async fn ask<Q: Query>(&self, query: Q) -> Result<Q::Output, Error> {
        self.queries.ask(query, &Context::new()).await
    }

    /// Asks `query` once the projections it reads (`Query::READS`; every projection when
    /// it names none) have processed the events up to `position` (a command's output):
    /// read-your-writes. Waits at most the read timeout (10 s unless set) for each; a
    /// projection that does not get there is a `DEADLINE_EXCEEDED` error, and one that
    /// parked an event at or before `position` reports it.
    pub async fn ask_after<Q: Query>(
        &self,
        query: Q,
        position: Position,
    ) -> Result<Q::Output, Error> {
        let names: Vec<&str> = if Q::READS.is_empty() {
            self.projections.names().collect()
        } else {
            Q::READS.to_vec()
        };
        for name in names {
            self.projections
                .wait_for(name, position, self.read_timeout)
                .await?;
        }
        self.ask(query).await
    }

    /// Stops the projections (each finishes the batch in hand and keeps its checkpoint)
    /// and the scheduler (a delivery in hand finishes).
    pub async fn shutdown(self) {
        if let Some(scheduler) = self.scheduler {
            scheduler.shutdown().await;
        }
        self.projections.shutdown().await;
    }
}

impl<S> AppBuilder<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone + Sync,
{
    /// Registers `value` as a singleton service.
    pub fn service<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.services = self.services.singleton(value);
        self
    }

    /// Registers services through the [`ServicesBuilder`] (factories, scoped values).
    pub fn services(mut self, add: impl FnOnce(ServicesBuilder) -> ServicesBuilder) -> Self {
        self.services = add(self.services);
        self
    }

    /// Adds a projection (a `Projection` or an `EventProjection`) with the default
    /// options; a mistake (a duplicate name) is reported by [`AppBuilder::start`].
    pub fn projection<M, P: IntoProjection<S::Transaction, M>>(self, projection: P) -> Self {
        self.projection_with(projection, ProjectionOptions::default())
    }

    /// Adds a projection with `options`.
    pub fn projection_with<M, P: IntoProjection<S::Transaction, M>>(
        mut self,
        projection: P,
        options: ProjectionOptions,
    ) -> Self {
        if self.error.is_none() {
            match self.runner.register_with(projection, options) {
                Ok(runner) => return AppBuilder { runner, ..self },
                Err(e) => {
                    self.runner = ProjectionRunner::new(self.store.clone());
                    self.error = Some(e);
                }
            }
        }
        self
    }

    /// Adds a [`Reactor`](crate::Reactor) (or [`EventReactor`](crate::EventReactor)) made
    /// from the app's command bus, which exists only once [`AppBuilder::start`] has
    /// checked the handlers: a reactor's follow-ups are commands.
    ///
    /// ```
    /// # use flext::application::{App, CommandBus, Reactor};
    /// # use flext::memory::InMemoryEventStore;
    /// # use flext::ports::Context;
    /// # use flext::{Error, RecordedEvent};
    /// struct Welcome(CommandBus);
    /// impl Reactor for Welcome {
    ///     fn name(&self) -> &str { "welcome" }
    ///     async fn react(&self, _: &RecordedEvent, _: &Context) -> Result<(), Error> {
    ///         Ok(()) // self.0.dispatch(SendWelcome(..), &ctx.child_for("welcome")).await
    ///     }
    /// }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let app = App::builder(InMemoryEventStore::new())
    ///     .reactor(|commands| Welcome(commands.clone()))
    ///     .start()?;
    /// app.shutdown().await;
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub fn reactor<M, R>(mut self, make: impl FnOnce(&CommandBus) -> R + Send + 'static) -> Self
    where
        R: crate::IntoReactor<M>,
        S: 'static,
    {
        self.reactors.push(Box::new(move |commands, runner| {
            runner.reactor(make(commands))
        }));
        self
    }

    /// Adds a [`ProcessManager`](crate::ProcessManager): it runs in the projection runner
    /// (see [`ProjectionRunner::process_manager`]), and the App starts a
    /// [`Scheduler`] that delivers its commands and deadlines.
    pub fn process_manager<P: crate::ProcessManager>(mut self, manager: P) -> Self
    where
        S: flext_ports::ProcessStore + 'static,
    {
        if self.error.is_none() {
            match self.runner.process_manager(manager) {
                Ok(runner) => self.runner = runner,
                Err(e) => {
                    self.runner = ProjectionRunner::new(self.store.clone());
                    self.error = Some(e);
                }
            }
        }
        if self.scheduler.is_none() {
            self = self.scheduler(|b| b);
        }
        self
    }

    /// Adds every process manager registered with `#[process_manager]` (and, if there is
    /// one, a [`Scheduler`] for their commands).
    pub fn with_registered_process_managers(mut self) -> Self
    where
        S: flext_ports::ProcessStore + 'static,
    {
        if self.error.is_some() {
            return self;
        }
        let runner = std::mem::replace(&mut self.runner, ProjectionRunner::new(self.store.clone()));
        match runner.with_registered_process_managers() {
            Ok(runner) => {
                let any = !runner.deliveries().names().is_empty();
                self.runner = runner;
                if any && self.scheduler.is_none() {
                    self = self.scheduler(|b| b);
                }
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Runs a [`Scheduler`] in the App (owned by one instance among all that share the
    /// store), configured by `configure` (the commands it delivers besides the process
    /// managers', how often it looks).
    pub fn scheduler(
        mut self,
        configure: impl FnOnce(SchedulerBuilder<S>) -> SchedulerBuilder<S> + Send + 'static,
    ) -> Self
    where
        S: flext_ports::ScheduleStore + 'static,
    {
        let store = self.store.clone();
        self.scheduler = Some(Box::new(move |commands, deliveries| {
            configure(Scheduler::builder(store, commands).commands(deliveries)).start()
        }));
        self
    }

    /// Changes the projection runner (instance name, ownership, metrics, clock) before
    /// projections are added.
    pub fn runner(
        mut self,
        change: impl FnOnce(ProjectionRunner<S>) -> ProjectionRunner<S>,
    ) -> Self {
        self.runner = change(self.runner);
        self
    }

    /// The behaviors around every command.
    pub fn command_pipeline(mut self, pipeline: Pipeline) -> Self {
        self.commands = pipeline;
        self
    }

    /// The behaviors around every query.
    pub fn query_pipeline(mut self, pipeline: Pipeline) -> Self {
        self.queries = pipeline;
        self
    }

    /// Handlers registered by hand, beside the macro-registered ones.
    pub fn registry(mut self, change: impl FnOnce(Registry) -> Registry) -> Self {
        self.registry = change(self.registry);
        self
    }

    /// How long [`App::ask_after`] waits for each projection (10 s by default).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Checks everything, then starts the projections: a projection that could not be
    /// added, a query that reads a projection not added (`UNKNOWN_PROJECTIONS`, all of
    /// them), a handler whose dependencies are not all registered (all of them, listed in
    /// one `MISSING_SERVICES` error), two handlers for one message: each is an error here,
    /// and nothing runs.
    pub fn start(self) -> Result<App<S>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let services = self.services.build();
        let registry = self.registry.with_registered(&services);
        let known: Vec<&str> = self.runner.names().collect();
        let unknown: Vec<(&str, &str)> = registry
            .query_reads()
            .into_iter()
            .filter(|(_, p)| !known.contains(p))
            .collect();
        if !unknown.is_empty() {
            let listed: Vec<String> = unknown
                .iter()
                .map(|(q, p)| format!("{q} reads {p:?}"))
                .collect();
            return Err(Error::failed_precondition(
                "UNKNOWN_PROJECTIONS",
                format!(
                    "queries read projections that are not registered: {} (registered: {known:?})",
                    listed.join("; ")
                ),
            )
            .with_field_violations(unknown.iter().map(|(q, p)| {
                flext_domain::FieldViolation::new(
                    *q,
                    flext_domain::ErrorCode::FailedPrecondition,
                    "UNKNOWN_PROJECTION",
                    format!("reads projection {p:?}, which is not registered"),
                )
            })));
        }
        let commands = registry.command_bus(self.commands)?;
        let queries = registry.query_bus(self.queries)?;
        let events = registry.event_bus();
        let mut runner = self.runner;
        for add in self.reactors {
            runner = add(&commands, runner)?;
        }
        let scheduler = match self.scheduler {
            Some(start) => Some(start(commands.clone(), runner.deliveries())?),
            None => None,
        };
        Ok(App {
            commands,
            queries,
            events,
            projections: runner.start(),
            services,
            scheduler,
            read_timeout: self.read_timeout,
        })
    }
}

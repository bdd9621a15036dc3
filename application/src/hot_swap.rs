//! Hot swap: a plugin replaced at run time by a new version, calls in flight finishing on
//! the old one, new calls going to the new one, the old one stopped once it has drained.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use flext_domain::Error;
use flext_ports::{
    Command, CommandHandler, Context, Health, Plugin, PluginFuture, Query, QueryHandler,
    VersionRequirement,
};
use tokio::sync::Notify;

use crate::catch::CatchPanic;
use crate::pipeline::{Behavior, BoxFuture, Message, Next, Reply};

struct Instance<P> {
    plugin: P,
    in_flight: AtomicUsize,
    drained: Notify,
    panics: AtomicU32,
    stopped: AtomicBool,
}

impl<P: Plugin> Instance<P> {
    fn new(plugin: P) -> Arc<Self> {
        Arc::new(Instance {
            plugin,
            in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
            panics: AtomicU32::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// Stops the plugin unless it was stopped already: every instance is stopped once.
    async fn stop_once(&self) -> Result<(), Error> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.plugin.stop().await
    }
}

/// A call in flight on one instance: counted while it lives.
struct InFlight<P> {
    instance: Arc<Instance<P>>,
}

impl<P> Drop for InFlight<P> {
    fn drop(&mut self) {
        if self.instance.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.instance.drained.notify_waiters();
        }
    }
}

struct Shared<P> {
    name: String,
    version: String,
    current: RwLock<Arc<Instance<P>>>,
    config: Mutex<serde_json::Value>,
    /// What dependents and the manifest require of the version, told by the registry.
    required: Mutex<Vec<VersionRequirement>>,
    swapping: tokio::sync::Mutex<()>,
}

/// A plugin slot whose plugin can be replaced while it serves. Register the slot itself in
/// the [`PluginRegistry`](crate::PluginRegistry) (it is a [`Plugin`] that forwards to the
/// current instance), and its handlers in the handler registry with
/// [`HotSwap::handler`]: every call goes to the instance current when the call starts, so
/// all of a plugin's handlers switch together, in one pointer swap.
///
/// A handler that panics inside the plugin is a typed error for that call
/// (`Internal`/`HANDLER_PANICKED`, with the plugin's name); the plugin's health turns
/// degraded.
pub struct HotSwap<P> {
    shared: Arc<Shared<P>>,
}

impl<P> Clone for HotSwap<P> {
    fn clone(&self) -> Self {
        HotSwap {
            shared: self.shared.clone(),
        }
    }
}

impl<P: Plugin> HotSwap<P> {
    /// A slot serving `plugin`. Its name stays the slot's name; its version is the one the
    /// registry resolves dependencies against.
    pub fn new(plugin: P) -> Self {
        HotSwap {
            shared: Arc::new(Shared {
                name: plugin.name().to_owned(),
                version: plugin.version().to_owned(),
                current: RwLock::new(Instance::new(plugin)),
                config: Mutex::new(serde_json::Value::Null),
                required: Mutex::new(Vec::new()),
                swapping: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn current(&self) -> Arc<Instance<P>> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a call in flight on the current instance. The instance is checked to still
    /// be current after the count went up: a swap that replaced it in between may already
    /// have seen no call in flight and stopped it, so the call moves to the new instance.
    fn enter(&self) -> InFlight<P> {
        loop {
            let instance = self.current();
            instance.in_flight.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in `swap`: either this call sees the new instance, or the
            // swap sees this call in flight on the old one.
            std::sync::atomic::fence(Ordering::SeqCst);
            let in_flight = InFlight { instance };
            let still_current = Arc::ptr_eq(
                &in_flight.instance,
                &self
                    .shared
                    .current
                    .read()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            if still_current {
                return in_flight;
            }
        }
    }

    /// The version of the plugin serving new calls now.
    pub fn current_version(&self) -> String {
        self.current().plugin.version().to_owned()
    }

    /// A handler that runs each call on the instance current when the call starts; the
    /// plugin type implements [`CommandHandler`] or [`QueryHandler`] itself.
    pub fn handler(&self) -> Routed<P> {
        Routed { slot: self.clone() }
    }

    /// Replaces the plugin with `next`: initialises it with the slot's configuration and
    /// starts it, then routes new calls to it, waits up to `drain` for the calls in flight
    /// on the old one, and stops the old one (once). If `next` fails to start, the old one
    /// keeps serving and the error names the cause. If the old one does not drain in time
    /// it is stopped anyway and the swap reports `DeadlineExceeded`/`PLUGIN_DRAIN_TIMEOUT`.
    /// A `next` whose version breaks a requirement the registry told the slot of (a
    /// dependent's, the manifest's) is refused before it is initialised,
    /// `FailedPrecondition`/`PLUGIN_VERSION_MISMATCH` naming who requires what; a version
    /// that is not semver is `InvalidArgument`/`INVALID_PLUGIN_VERSION`.
    /// Dropping the returned future does not abandon the swap: it goes on to its end in a
    /// task of its own (inside a Tokio runtime), so no started version is left unstopped.
    pub async fn swap(&self, next: P, drain: Duration) -> Result<(), Error> {
        if next.name() != self.shared.name {
            return Err(Error::invalid_argument(
                "PLUGIN_NAME_MISMATCH",
                format!(
                    "plugin {} cannot replace plugin {}",
                    next.name(),
                    self.shared.name
                ),
            ));
        }
        // The swap runs as a task of its own: dropping this future (a caller's deadline)
        // does not abandon it half-way, so a started next version is never left
        // unstopped and a replaced one is always stopped after its drain.
        let shared = Arc::clone(&self.shared);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn(swap_in(shared, next, drain))
                .await
                .map_err(|e| {
                    Error::internal(
                        "PLUGIN_SWAP_PANICKED",
                        format!("the swap of plugin {} panicked: {e}", self.shared.name),
                    )
                })?,
            Err(_) => swap_in(shared, next, drain).await,
        }
    }
}

/// The version serving new calls in `shared`.
fn current_version<P: Plugin>(shared: &Shared<P>) -> String {
    shared
        .current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .plugin
        .version()
        .to_owned()
}

/// Refuses `next` when its version breaks a requirement placed on the slot.
fn check_requirements<P: Plugin>(shared: &Shared<P>, next: &P) -> Result<(), Error> {
    let version = semver::Version::parse(next.version()).map_err(|e| {
        Error::invalid_argument(
            "INVALID_PLUGIN_VERSION",
            format!(
                "plugin {} has version {:?}, which is not semver: {e}",
                shared.name,
                next.version()
            ),
        )
    })?;
    let required = shared.required.lock().unwrap_or_else(|p| p.into_inner());
    for r in required.iter() {
        // The registry parsed each requirement before it started the slot.
        let Ok(req) = semver::VersionReq::parse(&r.requirement) else {
            continue;
        };
        if !req.matches(&version) {
            return Err(Error::failed_precondition(
                "PLUGIN_VERSION_MISMATCH",
                format!(
                    "version {version} of plugin {} cannot replace version {}: {} requires {}",
                    shared.name,
                    current_version(shared),
                    r.required_by,
                    r.requirement
                ),
            )
            .with_detail("required_by", r.required_by.as_str())
            .with_detail("requirement", r.requirement.as_str()));
        }
    }
    Ok(())
}

/// The swap itself: start `next`, route new calls to it, drain and stop the old one.
async fn swap_in<P: Plugin>(shared: Arc<Shared<P>>, next: P, drain: Duration) -> Result<(), Error> {
    let _one_at_a_time = shared.swapping.lock().await;
    check_requirements(&shared, &next)?;
    let config = shared
        .config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let started = match next.init(&config).await {
        Ok(()) => next.start().await,
        Err(e) => Err(e),
    };
    if let Err(cause) = started {
        let _ = next.stop().await;
        return Err(Error::failed_precondition(
            "PLUGIN_SWAP_FAILED",
            format!(
                "version {} of plugin {} failed to start, version {} keeps serving: {}",
                next.version(),
                shared.name,
                current_version(&shared),
                cause.message()
            ),
        )
        .with_source(cause));
    }
    let old = {
        let mut current = shared.current.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *current, Instance::new(next))
    };
    // Pairs with the fence in `enter`.
    std::sync::atomic::fence(Ordering::SeqCst);
    let drained = tokio::time::timeout(drain, async {
        loop {
            let notified = old.drained.notified();
            if old.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    })
    .await;
    old.stop_once().await?;
    if drained.is_err() {
        return Err(Error::deadline_exceeded(
            "PLUGIN_DRAIN_TIMEOUT",
            format!(
                "version {} of plugin {} still had calls in flight after {drain:?}; it was stopped",
                old.plugin.version(),
                shared.name
            ),
        ));
    }
    Ok(())
}

impl<P: Plugin> HotSwap<P> {
    /// The behavior of a plugin type that is a [`Behavior`], for a pipeline: each dispatch
    /// runs it on the instance current when the dispatch reaches it, so it switches with
    /// the plugin's handlers and drains with them.
    pub fn behavior(&self) -> Arc<dyn Behavior>
    where
        P: Behavior,
    {
        Arc::new(Routed { slot: self.clone() })
    }
}

impl<P: Plugin> Plugin for HotSwap<P> {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn version(&self) -> &str {
        &self.shared.version
    }

    fn dependencies(&self) -> Vec<flext_ports::PluginDependency> {
        self.current().plugin.dependencies()
    }

    fn required(&self, requirements: Vec<VersionRequirement>) {
        *self
            .shared
            .required
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = requirements;
    }

    fn init<'a>(&'a self, config: &'a serde_json::Value) -> PluginFuture<'a> {
        *self.shared.config.lock().unwrap_or_else(|p| p.into_inner()) = config.clone();
        Box::pin(async move { self.current().plugin.init(config).await })
    }

    fn start(&self) -> PluginFuture<'_> {
        Box::pin(async move { self.current().plugin.start().await })
    }

    fn stop(&self) -> PluginFuture<'_> {
        Box::pin(async move { self.current().stop_once().await })
    }

    fn contribute(&self, contributions: &mut flext_ports::Contributions) {
        self.current().plugin.contribute(contributions);
    }

    fn health(&self) -> Health {
        let current = self.current();
        match current.panics.load(Ordering::SeqCst) {
            0 => current.plugin.health(),
            n => Health::degraded(format!("{n} handler panic(s) isolated")),
        }
    }
}

/// The handler of a [`HotSwap`] slot: each call runs on the instance current when it
/// starts.
pub struct Routed<P> {
    slot: HotSwap<P>,
}

impl<P: Plugin> Routed<P> {
    /// Counts a panic against the instance that served the call and names the plugin.
    fn settle<T>(&self, instance: &Instance<P>, result: Result<T, Error>) -> Result<T, Error> {
        match result {
            Err(e) if e.reason() == "HANDLER_PANICKED" => {
                instance.panics.fetch_add(1, Ordering::SeqCst);
                Err(e.with_detail("plugin", self.slot.shared.name.as_str()))
            }
            other => other,
        }
    }
}

impl<C: Command, P: Plugin + CommandHandler<C>> CommandHandler<C> for Routed<P> {
    async fn handle(&self, command: C, ctx: &Context) -> Result<C::Output, Error> {
        let in_flight = self.slot.enter();
        let result = CatchPanic::new(in_flight.instance.plugin.handle(command, ctx), C::NAME).await;
        self.settle(&in_flight.instance, result)
    }
}

impl<Q: Query, P: Plugin + QueryHandler<Q>> QueryHandler<Q> for Routed<P> {
    async fn handle(&self, query: Q, ctx: &Context) -> Result<Q::Output, Error> {
        let in_flight = self.slot.enter();
        let result = CatchPanic::new(in_flight.instance.plugin.handle(query, ctx), Q::NAME).await;
        self.settle(&in_flight.instance, result)
    }
}

impl<P: Plugin + Behavior> Behavior for Routed<P> {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        Box::pin(async move {
            let in_flight = self.slot.enter();
            let result = CatchPanic::new(
                in_flight.instance.plugin.handle(message, ctx, next),
                message.name(),
            )
            .await;
            self.settle(&in_flight.instance, result)
        })
    }
}

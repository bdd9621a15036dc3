//! Hot swap under load, and panic isolation inside a plugin.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_application::{HotSwap, Pipeline, PluginRegistry, Registry};
use flext_domain::Error;
use flext_ports::{Command, CommandHandler, Context, HealthStatus, Plugin, PluginFuture};

#[derive(Debug, Clone)]
struct Price(u32);
impl Command for Price {
    type Output = u32;
    const NAME: &'static str = "pricing.price";
}

type Stops = Arc<Mutex<HashMap<u32, u32>>>;

/// A pricing plugin that answers with its own version number, and refuses to answer once
/// stopped (so a call not drained before the stop would fail).
struct Pricing {
    version: u32,
    semver: String,
    stops: Stops,
    stopped: AtomicBool,
}

impl Pricing {
    fn new(version: u32, stops: &Stops) -> Self {
        Pricing {
            version,
            semver: format!("1.{version}.0"),
            stops: stops.clone(),
            stopped: AtomicBool::new(false),
        }
    }
}

impl Plugin for Pricing {
    fn name(&self) -> &str {
        "pricing"
    }
    fn version(&self) -> &str {
        &self.semver
    }
    fn stop(&self) -> PluginFuture<'_> {
        Box::pin(async move {
            self.stopped.store(true, Ordering::SeqCst);
            *self
                .stops
                .lock()
                .expect("stops")
                .entry(self.version)
                .or_default() += 1;
            Ok(())
        })
    }
}

impl CommandHandler<Price> for Pricing {
    async fn handle(&self, price: Price, _: &Context) -> Result<u32, Error> {
        tokio::task::yield_now().await;
        if price.0 == 13 {
            panic!("pricing rule 13 blew up");
        }
        tokio::task::yield_now().await;
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "STOPPED",
                format!("version {} answered after its stop", self.version),
            ));
        }
        Ok(self.version)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_100_times_under_load_loses_no_call_and_stops_each_old_version_once() {
    let stops = Stops::default();
    let slot = HotSwap::new(Pricing::new(1, &stops));
    let mut plugins = PluginRegistry::new();
    plugins.register(slot.clone()).expect("register");
    plugins.start_all().await.expect("start");
    let bus = Arc::new(
        Registry::new()
            .command::<Price, _>(slot.handler())
            .command_bus(Pipeline::new())
            .expect("bus"),
    );

    let done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (bus, done, calls) = (bus.clone(), done.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut failures = Vec::new();
            while !done.load(Ordering::SeqCst) {
                match bus.dispatch(Price(1), &Context::new()).await {
                    Ok(version) => seen.push(version),
                    Err(e) => failures.push(e),
                }
                calls.fetch_add(1, Ordering::SeqCst);
            }
            (seen, failures)
        }));
    }
    for version in 2..=101 {
        // Let calls run on the current version before each swap, so swaps meet load.
        let before = calls.load(Ordering::SeqCst);
        while calls.load(Ordering::SeqCst) < before + 8 {
            tokio::task::yield_now().await;
        }
        slot.swap(Pricing::new(version, &stops), Duration::from_secs(10))
            .await
            .expect("swap");
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::SeqCst);

    let mut total = 0;
    for task in tasks {
        let (seen, failures) = task.await.expect("task");
        assert!(failures.is_empty(), "failed calls: {failures:?}");
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "a task saw versions go backwards"
        );
        assert!(
            seen.iter().all(|v| (1..=101).contains(v)),
            "every call answered by one version"
        );
        total += seen.len();
    }
    assert!(total >= 800, "{total} calls overlapped the swaps");
    assert_eq!(slot.current_version(), "1.101.0");
    {
        let stops = stops.lock().expect("stops");
        for version in 1..=100 {
            assert_eq!(
                stops.get(&version),
                Some(&1),
                "version {version} stopped exactly once"
            );
        }
        assert_eq!(stops.get(&101), None, "the current version still serves");
    }
    plugins.stop_all().await.expect("stop");
    assert_eq!(stops.lock().expect("stops").get(&101), Some(&1));
}

#[tokio::test]
async fn a_panic_in_a_plugin_is_a_typed_error_and_degrades_its_health() {
    let stops = Stops::default();
    let slot = HotSwap::new(Pricing::new(1, &stops));
    let mut plugins = PluginRegistry::new();
    plugins.register(slot.clone()).expect("register");
    plugins.start_all().await.expect("start");
    let bus = Registry::new()
        .command::<Price, _>(slot.handler())
        .command_bus(Pipeline::new())
        .expect("bus");

    let err = bus
        .dispatch(Price(13), &Context::new())
        .await
        .expect_err("panicked");
    assert_eq!(err.reason(), "HANDLER_PANICKED");
    assert_eq!(err.detail("plugin"), Some(&serde_json::json!("pricing")));
    // The panic's text goes to the log, never to the caller.
    assert!(
        !err.to_string().contains("pricing rule 13 blew up"),
        "{err}"
    );
    assert_eq!(
        bus.dispatch(Price(1), &Context::new())
            .await
            .expect("still serving"),
        1
    );
    let health = plugins.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(health.plugins["pricing"].details["reason"].contains("1 handler panic"));

    // A fresh version starts healthy.
    slot.swap(Pricing::new(2, &stops), Duration::from_secs(1))
        .await
        .expect("swap");
    assert_eq!(plugins.health().status, HealthStatus::Up);
}

#[tokio::test]
async fn a_version_that_fails_to_start_leaves_the_old_one_serving() {
    struct Broken;
    impl Plugin for Broken {
        fn name(&self) -> &str {
            "pricing"
        }
        fn version(&self) -> &str {
            "2.0.0"
        }
        fn start(&self) -> PluginFuture<'_> {
            Box::pin(async { Err(Error::unavailable("NO_RATES", "rates feed down")) })
        }
    }
    impl CommandHandler<Price> for Broken {
        async fn handle(&self, _: Price, _: &Context) -> Result<u32, Error> {
            Ok(99)
        }
    }
    // The slot's type is fixed: wrap both versions in one enum-like box.
    let slot: HotSwap<Box<dyn PricingPlugin>> =
        HotSwap::new(Box::new(Pricing::new(1, &Stops::default())));
    let err = slot
        .swap(Box::new(Broken), Duration::from_secs(1))
        .await
        .expect_err("fails");
    assert_eq!(err.reason(), "PLUGIN_SWAP_FAILED");
    assert!(
        err.message()
            .contains("version 1.1.0 keeps serving: rates feed down"),
        "{err}"
    );
    assert_eq!(slot.current_version(), "1.1.0");

    trait PricingPlugin: Plugin {}
    impl PricingPlugin for Pricing {}
    impl PricingPlugin for Broken {}
    impl Plugin for Box<dyn PricingPlugin> {
        fn name(&self) -> &str {
            (**self).name()
        }
        fn version(&self) -> &str {
            (**self).version()
        }
        fn start(&self) -> PluginFuture<'_> {
            (**self).start()
        }
        fn stop(&self) -> PluginFuture<'_> {
            (**self).stop()
        }
    }
}

/// A plugin that is a behavior: it answers every command with its version number.
struct Answering {
    version: u32,
    semver: String,
}

impl Plugin for Answering {
    fn name(&self) -> &str {
        "answering"
    }
    fn version(&self) -> &str {
        &self.semver
    }
}

impl flext_application::Behavior for Answering {
    fn handle<'s, 'a: 's>(
        &'s self,
        _: flext_application::Message<'a>,
        _: &'a Context,
        _: flext_application::Next<'a>,
    ) -> flext_application::BoxFuture<'s, Result<flext_application::Reply, Error>> {
        Box::pin(async move { Ok(flext_application::Reply::new(self.version)) })
    }
}

#[tokio::test]
async fn a_plugin_behavior_switches_with_the_swap() {
    let answering = |version: u32| Answering {
        version,
        semver: format!("1.{version}.0"),
    };
    let slot = HotSwap::new(answering(1));
    let stops = Stops::default();
    let bus = Registry::new()
        .command::<Price, _>(HotSwap::new(Pricing::new(0, &stops)).handler())
        .command_bus(Pipeline::new().layer_shared(slot.behavior()))
        .expect("bus");
    assert_eq!(
        bus.dispatch(Price(1), &Context::new())
            .await
            .expect("answered"),
        1
    );
    slot.swap(answering(2), Duration::from_secs(1))
        .await
        .expect("swap");
    assert_eq!(
        bus.dispatch(Price(1), &Context::new())
            .await
            .expect("answered"),
        2
    );
}

/// A version whose start takes a while.
struct SlowStart(Pricing);

impl Plugin for SlowStart {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn version(&self) -> &str {
        self.0.version()
    }
    fn start(&self) -> PluginFuture<'_> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        })
    }
    fn stop(&self) -> PluginFuture<'_> {
        self.0.stop()
    }
}

/// A swap whose future is dropped (a caller's deadline) during the next version's start
/// still completes: the next version serves and the old one is stopped exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_swap_still_stops_what_it_replaced() {
    let stops: Stops = Arc::default();
    let slot = HotSwap::new(SlowStart(Pricing::new(1, &stops)));

    // Dropped while version 2 starts.
    let dropped = tokio::time::timeout(
        Duration::from_millis(10),
        slot.swap(SlowStart(Pricing::new(2, &stops)), Duration::from_secs(5)),
    )
    .await;
    assert!(dropped.is_err(), "the caller gave up during the start");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stops.lock().expect("stops").get(&1).copied().unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "version 1 was never stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(slot.current_version(), "1.2.0", "version 2 serves");

    // Dropped while version 3 starts: version 2 is stopped all the same, once.
    let dropped = tokio::time::timeout(
        Duration::from_millis(10),
        slot.swap(SlowStart(Pricing::new(3, &stops)), Duration::from_secs(5)),
    )
    .await;
    assert!(dropped.is_err());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stops.lock().expect("stops").get(&2).copied().unwrap_or(0) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "version 2 was never stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(slot.current_version(), "1.3.0");
    let stops = stops.lock().expect("stops").clone();
    assert_eq!(stops.get(&1), Some(&1));
    assert_eq!(stops.get(&2), Some(&1));
}

/// A plugin that needs pricing at `^1`.
struct Checkout;

impl Plugin for Checkout {
    fn name(&self) -> &str {
        "checkout"
    }
    fn version(&self) -> &str {
        "0.1.0"
    }
    fn dependencies(&self) -> Vec<flext_ports::PluginDependency> {
        vec![flext_ports::PluginDependency::new("pricing", "^1")]
    }
}

/// A version that breaks a dependent's requirement is refused before it is initialised,
/// and the old one keeps serving; one that meets it goes in.
#[tokio::test]
async fn a_swap_to_a_version_a_dependent_refuses_is_refused() {
    let stops = Stops::default();
    let slot = HotSwap::new(Pricing::new(1, &stops));
    let mut plugins = PluginRegistry::new();
    plugins
        .register(slot.clone())
        .expect("pricing")
        .register(Checkout)
        .expect("checkout");
    plugins.start_all().await.expect("start");

    let mut two = Pricing::new(2, &stops);
    two.semver = "2.0.0".into();
    let refused = slot
        .swap(two, Duration::from_secs(1))
        .await
        .expect_err("checkout requires ^1");
    assert_eq!(refused.reason(), "PLUGIN_VERSION_MISMATCH");
    assert!(
        refused.message().contains("plugin checkout requires ^1"),
        "{refused}"
    );
    assert_eq!(slot.current_version(), "1.1.0");
    assert!(
        stops.lock().expect("stops").is_empty(),
        "nothing was stopped"
    );

    let mut bad = Pricing::new(3, &stops);
    bad.semver = "three".into();
    let refused = slot
        .swap(bad, Duration::from_secs(1))
        .await
        .expect_err("not semver");
    assert_eq!(refused.reason(), "INVALID_PLUGIN_VERSION");

    slot.swap(Pricing::new(4, &stops), Duration::from_secs(1))
        .await
        .expect("1.4.0 meets ^1");
    assert_eq!(slot.current_version(), "1.4.0");
    plugins.stop_all().await.expect("stop");
}

//! The idempotency behavior through the command bus, on every idempotency store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flext_application::{IdempotencyBehavior, Pipeline, Registry};
use flext_domain::{Error, ErrorCode};
use flext_memory::InMemoryEventStore;
use flext_ports::{Command, CommandHandler, Context, IdempotencyStore};
use flext_sqlite::SqliteEventStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
struct PlaceOrder {
    sku: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    order: u32,
}

impl Command for PlaceOrder {
    type Output = Placed;
    const NAME: &'static str = "order.place";
}

#[derive(Debug, Clone, Serialize)]
struct CancelOrder;
impl Command for CancelOrder {
    type Output = ();
    const NAME: &'static str = "order.cancel";
}

/// Counts runs; the `slow` order waits at `gate` until released, after saying it started.
struct Shop(Arc<AtomicU32>, Arc<Gate>);

#[derive(Default)]
struct Gate {
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl CommandHandler<PlaceOrder> for Shop {
    async fn handle(&self, c: PlaceOrder, _: &Context) -> Result<Placed, Error> {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        match c.sku {
            "gone" => Err(Error::failed_precondition("OUT_OF_STOCK", "nothing left")),
            "flaky" if n == 1 => Err(Error::unavailable("WAREHOUSE_DOWN", "try again")),
            "slow" => {
                self.1.started.notify_one();
                self.1.release.notified().await;
                Ok(Placed { order: n })
            }
            _ => Ok(Placed { order: n }),
        }
    }
}

impl CommandHandler<CancelOrder> for Shop {
    async fn handle(&self, _: CancelOrder, _: &Context) -> Result<(), Error> {
        Ok(())
    }
}

async fn first_outcome_is_returned<S: IdempotencyStore + Clone + 'static>(store: S) {
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Gate::default());
    let bus = Registry::new()
        .command::<PlaceOrder, _>(Shop(runs.clone(), gate.clone()))
        .command::<CancelOrder, _>(Shop(runs.clone(), gate.clone()))
        .command_bus(
            Pipeline::new().layer(
                IdempotencyBehavior::new(store)
                    .command::<PlaceOrder>()
                    .command::<CancelOrder>(),
            ),
        )
        .expect("ok");

    // The same command id twice: one run, the same output.
    let ctx = Context::new();
    let first = bus
        .dispatch(PlaceOrder { sku: "a" }, &ctx)
        .await
        .expect("ok");
    let again = bus
        .dispatch(PlaceOrder { sku: "a" }, &ctx)
        .await
        .expect("ok");
    assert_eq!((first.clone(), again), (Placed { order: 1 }, first));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // A new id runs again.
    assert_eq!(
        bus.dispatch(PlaceOrder { sku: "a" }, &Context::new())
            .await
            .expect("ok"),
        Placed { order: 2 }
    );

    // A business refusal is the first outcome too.
    let refused = Context::new();
    let e1 = bus
        .dispatch(PlaceOrder { sku: "gone" }, &refused)
        .await
        .expect_err("an error");
    let e2 = bus
        .dispatch(PlaceOrder { sku: "gone" }, &refused)
        .await
        .expect_err("an error");
    assert_eq!((e1.reason(), e2.reason()), ("OUT_OF_STOCK", "OUT_OF_STOCK"));
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // A transient failure is not stored: the retry runs.
    runs.store(0, Ordering::SeqCst);
    let flaky = Context::new();
    assert_eq!(
        bus.dispatch(PlaceOrder { sku: "flaky" }, &flaky)
            .await
            .expect_err("an error")
            .code(),
        ErrorCode::Unavailable
    );
    assert_eq!(
        bus.dispatch(PlaceOrder { sku: "flaky" }, &flaky)
            .await
            .expect("ok"),
        Placed { order: 2 }
    );

    // The id of one command type sent with another.
    let err = bus.dispatch(CancelOrder, &ctx).await.expect_err("an error");
    assert_eq!(err.reason(), "COMMAND_ID_REUSED", "{err}");

    // A second dispatch while the first runs.
    let slow = Context::new();
    let (a, b) = tokio::join!(bus.dispatch(PlaceOrder { sku: "slow" }, &slow), async {
        gate.started.notified().await;
        let second = bus.dispatch(PlaceOrder { sku: "slow" }, &slow).await;
        gate.release.notify_one();
        second
    });
    assert!(a.is_ok());
    assert_eq!(b.expect_err("an error").reason(), "COMMAND_IN_PROGRESS");
}

#[tokio::test]
async fn memory() {
    first_outcome_is_returned(InMemoryEventStore::new()).await;
}

#[tokio::test]
async fn sqlite() {
    let path =
        std::env::temp_dir().join(format!("flext-idem-{}.db", uuid::Uuid::now_v7().simple()));
    first_outcome_is_returned(SqliteEventStore::open(path).await.expect("ok")).await;
}

#[tokio::test]
async fn postgres() {
    let store = flext_testkit::harness::fresh_pg_store("idem").await;
    first_outcome_is_returned(store).await;
}

/// A dispatch dropped while its handler runs (a deadline, a client gone) releases its
/// claim: the retry runs at once instead of getting `COMMAND_IN_PROGRESS` for 5 minutes.
async fn a_dropped_dispatch_releases_its_claim<S: IdempotencyStore + Clone + 'static>(store: S) {
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Gate::default());
    let bus = Registry::new()
        .command::<PlaceOrder, _>(Shop(runs.clone(), gate.clone()))
        .command_bus(Pipeline::new().layer(IdempotencyBehavior::new(store).command::<PlaceOrder>()))
        .expect("ok");
    let ctx = Context::new();
    tokio::select! {
        _ = bus.dispatch(PlaceOrder { sku: "slow" }, &ctx) => panic!("the gate is shut"),
        _ = gate.started.notified() => {} // claimed and running: now drop it
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let placed = loop {
        match bus.dispatch(PlaceOrder { sku: "fast" }, &ctx).await {
            Ok(placed) => break placed,
            Err(e) if e.reason() == "COMMAND_IN_PROGRESS" => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the dropped dispatch still holds its claim"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(placed, Placed { order: 2 }, "the retry ran");
}

#[tokio::test]
async fn memory_releases_dropped_claims() {
    a_dropped_dispatch_releases_its_claim(InMemoryEventStore::new()).await;
}

#[tokio::test]
async fn sqlite_releases_dropped_claims() {
    let path =
        std::env::temp_dir().join(format!("flext-idem-{}.db", uuid::Uuid::now_v7().simple()));
    a_dropped_dispatch_releases_its_claim(SqliteEventStore::open(path).await.expect("ok")).await;
}

#[tokio::test]
async fn postgres_releases_dropped_claims() {
    let store = flext_testkit::harness::fresh_pg_store("idem").await;
    a_dropped_dispatch_releases_its_claim(store).await;
}

/// Ids are scoped by tenant, and an id is bound to its command's value: another tenant's
/// command with the same id runs on its own; the same id with another value is refused
/// without a word about the first command.
async fn ids_are_per_tenant_and_bound_to_their_command<S: IdempotencyStore + Clone + 'static>(
    store: S,
) {
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Gate::default());
    let bus = Registry::new()
        .command::<PlaceOrder, _>(Shop(runs.clone(), gate.clone()))
        .command::<CancelOrder, _>(Shop(runs.clone(), gate.clone()))
        .command_bus(
            Pipeline::new().layer(
                IdempotencyBehavior::new(store)
                    .command::<PlaceOrder>()
                    .command::<CancelOrder>(),
            ),
        )
        .expect("ok");
    let acme = Context::new().with_tenant(flext_domain::TenantId::new("acme").expect("a tenant"));
    let first = bus
        .dispatch(PlaceOrder { sku: "a" }, &acme)
        .await
        .expect("acme");
    // The same message id from another tenant: its own command, not acme's answer.
    let globex = acme
        .clone()
        .with_tenant(flext_domain::TenantId::new("globex").expect("a tenant"));
    assert_eq!(globex.message_id(), acme.message_id());
    let other = bus
        .dispatch(PlaceOrder { sku: "a" }, &globex)
        .await
        .expect("globex");
    assert_ne!(other, first, "globex's command ran");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // acme retries exactly: the first outcome.
    assert_eq!(
        bus.dispatch(PlaceOrder { sku: "a" }, &acme)
            .await
            .expect("retry"),
        first
    );
    // acme reuses the id for another value, or another command type: refused, opaque.
    let e = bus
        .dispatch(PlaceOrder { sku: "b" }, &acme)
        .await
        .expect_err("another value");
    assert_eq!(e.reason(), "COMMAND_ID_REUSED");
    let e2 = bus
        .dispatch(CancelOrder, &acme)
        .await
        .expect_err("another command");
    assert_eq!(e2.reason(), "COMMAND_ID_REUSED");
    for shown in [e.to_string(), e2.to_string()] {
        assert!(
            !shown.contains("order.place") && !shown.contains("order.cancel"),
            "{shown}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "neither ran");
}

#[tokio::test]
async fn memory_scopes_ids() {
    ids_are_per_tenant_and_bound_to_their_command(InMemoryEventStore::new()).await;
}

#[tokio::test]
async fn sqlite_scopes_ids() {
    let path =
        std::env::temp_dir().join(format!("flext-idem-{}.db", uuid::Uuid::now_v7().simple()));
    ids_are_per_tenant_and_bound_to_their_command(SqliteEventStore::open(path).await.expect("ok"))
        .await;
}

#[tokio::test]
async fn postgres_scopes_ids() {
    let store = flext_testkit::harness::fresh_pg_store("idem").await;
    ids_are_per_tenant_and_bound_to_their_command(store).await;
}

/// A claim that finds the id pending while its holder releases it (between the store's
/// upsert and its read of the record) is a new claim, never a store error: two tasks
/// claim and release one id in a tight loop.
async fn claims_racing_releases_never_fail<S: IdempotencyStore + Clone + 'static>(store: S) {
    let id = uuid::Uuid::now_v7();
    let stale = std::time::Duration::from_secs(300);
    let racer = |store: S| async move {
        let mut claimed = 0;
        for _ in 0..1_000 {
            match store.claim(id, "order.place", stale).await {
                Ok(flext_ports::Claim::Claimed) => {
                    claimed += 1;
                    store.release(id).await.expect("release");
                }
                Ok(flext_ports::Claim::InProgress) => tokio::task::yield_now().await,
                Ok(flext_ports::Claim::Done(_)) => panic!("nothing completes this id"),
                Err(e) => panic!("a claim failed: {e:#}"),
            }
        }
        claimed
    };
    let (a, b) = tokio::join!(
        tokio::spawn(racer(store.clone())),
        tokio::spawn(racer(store.clone()))
    );
    let claimed = a.expect("racer a") + b.expect("racer b");
    assert!(claimed > 0, "someone claimed the id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_claims_race_releases() {
    claims_racing_releases_never_fail(InMemoryEventStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_claims_race_releases() {
    let path =
        std::env::temp_dir().join(format!("flext-idem-{}.db", uuid::Uuid::now_v7().simple()));
    claims_racing_releases_never_fail(SqliteEventStore::open(path).await.expect("ok")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_race_releases() {
    let store = flext_testkit::harness::fresh_pg_store("idem").await;
    claims_racing_releases_never_fail(store).await;
}

//! Ownership in one process: coordinators of several instances on one store share the
//! consumers fairly, rebalance when one joins or leaves, hand over at once on a graceful
//! shutdown, keep a hot standby standing by; projections run by another instance are
//! waited for and reported through the store. (Real processes: `ownership_failover.rs`.)

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use flext_application::{
    Distribution, Ownership, OwnershipOptions, ProjectionOptions, ProjectionRunner,
    ProjectionState, SubscriptionOptions,
};
use flext_domain::{EventId, ExpectedVersion, NewEvent, StreamId};
use flext_memory::InMemoryEventStore;
use flext_ports::{EventStore, HealthCheck, HealthStatus, Instance, OwnershipStore};
use support::Backend;

fn fast() -> OwnershipOptions {
    OwnershipOptions {
        lease_ttl: Duration::from_millis(400),
        renew_every: Duration::from_millis(100),
        poll: Duration::from_millis(20),
        ..OwnershipOptions::default()
    }
}

/// Owner name -> how many consumers it holds, as the store says.
async fn counts<S: OwnershipStore>(store: &S) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in store.consumers().await.expect("consumers") {
        if let (true, Some(o)) = (r.owned, r.owner) {
            *out.entry(o.name).or_default() += 1;
        }
    }
    out
}

async fn eventually<S: OwnershipStore>(
    store: &S,
    what: &str,
    check: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = counts(store).await;
        if check(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn instance_with_slots(
    store: &InMemoryEventStore,
    name: &str,
    options: OwnershipOptions,
) -> (
    Ownership<InMemoryEventStore>,
    Vec<flext_application::ConsumerSlot<InMemoryEventStore>>,
) {
    let o = Ownership::start(store.clone(), Instance::named(name), options);
    let slots = (0..6)
        .map(|i| o.claim(&format!("c{i}")).expect("claim"))
        .collect();
    (o, slots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_fairly_and_rebalance_on_join_and_leave() {
    let store = InMemoryEventStore::new();
    let (a, _a_slots) = instance_with_slots(&store, "a", fast());
    eventually(&store, "a alone owning all", |c| c.get("a") == Some(&6)).await;

    // b joins: a gives back half, b takes it.
    let (b, b_slots) = instance_with_slots(&store, "b", fast());
    // A slot handed over is released by its runner; here the test is the runner.
    let releaser = |slots: Vec<flext_application::ConsumerSlot<InMemoryEventStore>>| {
        tokio::spawn(async move {
            loop {
                for slot in &slots {
                    if let flext_application::Grant::Release(l) = slot.grant() {
                        slot.release(&l).await.expect("release");
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let a_releaser = releaser(_a_slots);
    let c = eventually(&store, "a fair share of two", |c| {
        c.get("a") == Some(&3) && c.get("b") == Some(&3)
    })
    .await;
    println!("two instances: {c:?}");

    // c joins: two each.
    let (c3, c_slots) = instance_with_slots(&store, "c", fast());
    let b_releaser = releaser(b_slots);
    let c = eventually(&store, "a fair share of three", |c| {
        c.len() == 3 && c.values().all(|n| *n == 2)
    })
    .await;
    println!("three instances: {c:?}");

    // c leaves cleanly: its two are released at once and taken by a and b.
    drop(c_slots);
    c3.shutdown().await;
    eventually(&store, "a fair share of two again", |c| {
        c.len() == 2 && c.values().sum::<usize>() == 6 && c.values().all(|n| *n == 3)
    })
    .await;

    // b crashes: its leases lapse, a takes all.
    b.abort();
    b_releaser.abort();
    eventually(&store, "a owning all after b's crash", |c| {
        c.get("a") == Some(&6)
    })
    .await;
    a_releaser.abort();
    a.shutdown().await;
}

/// An instance that runs no consumers (a client that only sends commands) is not
/// counted among those that share them: the one instance that does runs them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_consumers_holds_nothing_back() {
    let store = InMemoryEventStore::new();
    let client = Ownership::start(store.clone(), Instance::named("client"), fast());
    // The client announces itself first, if it announces at all.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (server, _slots) = instance_with_slots(&store, "server", fast());
    eventually(&store, "the server owning all six", |c| {
        c.get("server") == Some(&6)
    })
    .await;
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_standby_takes_everything_when_the_active_one_leaves() {
    let store = InMemoryEventStore::new();
    let hot = OwnershipOptions {
        distribution: Distribution::HotStandby,
        ..fast()
    };
    let (a, a_slots) = instance_with_slots(&store, "a", hot);
    eventually(&store, "a owning all", |c| c.get("a") == Some(&6)).await;
    let (b, _b_slots) = instance_with_slots(&store, "b", hot);
    // b stands by: several rounds later a still owns everything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts(&store).await.get("a"), Some(&6));
    assert_eq!(counts(&store).await.get("b"), None);
    drop(a_slots);
    a.shutdown().await;
    eventually(&store, "b owning all", |c| c.get("b") == Some(&6)).await;
    b.shutdown().await;
}

fn options() -> ProjectionOptions {
    ProjectionOptions {
        batch_size: 10,
        subscription: SubscriptionOptions {
            poll_interval: Duration::from_millis(20),
            idle_recheck: Some(Duration::from_millis(20)),
        },
        ..ProjectionOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_runs_in_one_instance_and_is_waited_for_from_the_other() {
    let store = support::sqlite().await;
    let model = store.model("shared").await;
    let start = |name: &str| {
        ProjectionRunner::new(store.clone())
            .with_instance(Instance::named(name))
            .with_ownership_options(fast())
            .register_with(model.clone(), options())
            .expect("register")
            .start()
    };
    let a = start("a");
    let b = start("b");
    let stream = StreamId::new("acc-1").expect("stream");
    let mut last = flext_domain::Position::START;
    for i in 0..30 {
        last = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new(EventId::new(), "added", i.to_string())],
            )
            .await
            .expect("append")
            .last_position()
            .expect("position");
    }
    // Both handles wait for the write, whichever instance runs the projection.
    a.wait_for("shared", last, Duration::from_secs(10))
        .await
        .expect("a sees it");
    b.wait_for("shared", last, Duration::from_secs(10))
        .await
        .expect("b sees it");
    let (sa, sb) = (
        a.status("shared").await.expect("status"),
        b.status("shared").await.expect("status"),
    );
    assert!(
        sa.owned_here ^ sb.owned_here,
        "exactly one runs it: {sa:?} {sb:?}"
    );
    let (owner, standby, standby_handle) = if sa.owned_here {
        (sa, sb, &b)
    } else {
        (sb, sa, &a)
    };
    assert_eq!(standby.state, ProjectionState::Standby);
    assert_eq!(
        standby.position, owner.position,
        "the standby reads the stored checkpoint"
    );
    assert_eq!(standby.lag_events, 0);
    let record = standby.ownership.expect("a record");
    assert!(record.owned);
    // 1 unless a renewal came later than the 400 ms lease on a loaded machine and the
    // owner acquired it again: any acquisition grows the epoch.
    assert!(record.epoch >= 1);
    let first_epoch = record.epoch;
    let health = standby_handle
        .health_check("shared", 100)
        .expect("check")
        .check()
        .await;
    assert_eq!(
        health.status,
        HealthStatus::Up,
        "owned elsewhere: {health:?}"
    );
    assert_eq!(
        store.totals(&model).await,
        support::expected(&store, &[]).await,
        "applied once"
    );

    // The owner shuts down: the other takes over at once and goes on.
    let (gone, stays) = if owner.owned_here == a.status("shared").await.expect("s").owned_here {
        (a, b)
    } else {
        (b, a)
    };
    gone.shutdown().await;
    let more = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), "added", "5")],
        )
        .await
        .expect("append")
        .last_position()
        .expect("position");
    stays
        .wait_for("shared", more, Duration::from_secs(10))
        .await
        .expect("taken over");
    let now = stays.status("shared").await.expect("status");
    assert!(now.owned_here);
    assert!(
        now.ownership.expect("record").epoch > first_epoch,
        "the takeover is a later acquisition"
    );
    assert_eq!(
        store.totals(&model).await,
        support::expected(&store, &[]).await
    );

    // Nobody owns it (its owner crashed; the only other instance is a hot standby behind
    // an older leader that does not run it): the standby's health goes down.
    stays.abort();
    store
        .announce(&Instance::named("leader"), Duration::from_secs(60))
        .await
        .expect("announce");
    let standby = Ownership::start(
        store.clone(),
        Instance::named("standby"),
        OwnershipOptions {
            distribution: Distribution::HotStandby,
            ..fast()
        },
    );
    let watcher = ProjectionRunner::new(store.clone())
        .with_ownership(standby.clone())
        .register_with(model.clone(), options())
        .expect("register")
        .start();
    let check = watcher
        .health_check("shared", 100)
        .expect("check")
        .with_max_unowned(Duration::from_millis(200));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = check.check().await;
        if h.status == HealthStatus::Down {
            assert!(
                h.details
                    .get("reason")
                    .is_some_and(|r| r.contains("no instance")),
                "{h:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never down: {h:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.shutdown().await;
    standby.shutdown().await;
}

/// A shutdown called before the coordinator's task first ran (a current-thread runtime,
/// no await between start and shutdown) still stops it: the stop is stored, not only
/// sent to the receivers that exist at that moment. It hung forever before.
#[tokio::test(flavor = "current_thread")]
async fn a_shutdown_right_after_start_returns() {
    let store = InMemoryEventStore::new();
    let ownership = Ownership::start(store.clone(), Instance::named("a"), fast());
    tokio::time::timeout(Duration::from_secs(10), ownership.shutdown())
        .await
        .expect("the coordinator stopped");

    let runner = ProjectionRunner::new(store).start();
    tokio::time::timeout(Duration::from_secs(10), runner.shutdown())
        .await
        .expect("the runner and its coordinator stopped");
}

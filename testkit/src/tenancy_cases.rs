//! Conformance cases for tenancy ([`flext_ports::TenantStores`]): what one tenant's store
//! does, another tenant's store cannot see or change through any public call. Each case
//! takes two tenants of the harness's [`Harness::tenants`]. Re-exported from
//! [`crate::cases`].

use std::collections::HashMap;
use std::time::Duration;

use flext_domain::{
    CorrelationId, EventMetadata, ExpectedVersion, Position, StreamId, StreamVersion, TenantId,
};
use flext_ports::{
    AppendCondition, CheckpointStore, Claim, Context, DcbStore, EventQuery, EventStore,
    IdempotencyRecord, IdempotencyStore, Instance, OwnershipStore, QueryItem, ReadDirection,
    Snapshot, SnapshotStore, TenantStores, WatchAppends,
};

use crate::Harness;
use crate::cases::{event, events, stream};
use crate::dcb_cases::tagged;

async fn two<H: Harness>(h: &H) -> (H::Store, H::Store) {
    let tenants = h.tenants();
    let a = tenants
        .store(&TenantId::new("alpha").expect("valid"))
        .await
        .expect("alpha's store");
    let b = tenants
        .store(&TenantId::new("beta-2").expect("valid"))
        .await
        .expect("beta's store");
    (a, b)
}

/// Appends and stream reads are confined: the same stream id in two tenants is two
/// streams, each with its own versions.
pub async fn a_tenant_cannot_read_or_append_to_anothers_stream<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    let s = stream("order-1");
    a.append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .expect("alpha appends");
    assert_eq!(
        b.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    assert!(
        b.read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
            .await
            .expect("read")
            .is_empty()
    );
    b.append(&s, ExpectedVersion::NoStream, events(10, 1))
        .await
        .expect("beta's own order-1 is new");
    assert_eq!(
        a.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
    assert_eq!(
        b.stream_version(&s).await.expect("version"),
        StreamVersion(1)
    );
    h
}

/// The global order, filtered reads, correlation reads, lag counts and replays show a
/// tenant only its own events.
pub async fn a_tenant_cannot_replay_or_read_all_of_anothers_events<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    let correlation = CorrelationId::new();
    let meta = EventMetadata::default().with_correlation(correlation);
    let s = stream("ledger");
    a.append(
        &s,
        ExpectedVersion::NoStream,
        vec![
            event(1).with_metadata(meta.clone()),
            tagged("t", 2, &["account:1"]),
        ],
    )
    .await
    .expect("alpha appends");
    assert!(
        b.read_all(Position::START, 100)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(b.count_after(Position::START).await.expect("count"), 0);
    let types = b
        .read_all_of_types(Position::START, 100, &[crate::cases::EVENT_TYPE, "t"])
        .await
        .expect("read");
    assert!(types.events.is_empty());
    assert!(
        b.read_correlated(correlation, 10)
            .await
            .expect("read")
            .is_empty()
    );
    let tagged_b = b
        .read_matching(
            &EventQuery::of(QueryItem::tags(["account:1"])),
            Position::START,
            10,
        )
        .await
        .expect("read");
    assert!(tagged_b.events.is_empty());
    let mut fed = 0;
    b.replay_stream(&s, StreamVersion(1), 100, |_| {
        fed += 1;
        Ok(())
    })
    .await
    .expect("replay");
    assert_eq!(fed, 0);
    // And the other way round, with events on both sides.
    b.append(&stream("other"), ExpectedVersion::NoStream, events(5, 1))
        .await
        .expect("beta appends");
    let mut seen = 0;
    a.replay_stream(&stream("other"), StreamVersion(1), 100, |_| {
        seen += 1;
        Ok(())
    })
    .await
    .expect("replay");
    assert_eq!(seen, 0);
    h
}

/// A condition in one tenant is not failed by another tenant's matching events.
pub async fn a_tenants_append_condition_ignores_anothers_events<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    let q = EventQuery::of(QueryItem::tags(["seat:1"]));
    let cond = AppendCondition::new(q, Position::START);
    a.append_if(
        &stream("booking"),
        ExpectedVersion::NoStream,
        vec![tagged("booked", 1, &["seat:1"])],
        &cond,
    )
    .await
    .expect("alpha books");
    b.append_if(
        &stream("booking"),
        ExpectedVersion::NoStream,
        vec![tagged("booked", 1, &["seat:1"])],
        &cond,
    )
    .await
    .expect("beta's seat 1 is free");
    h
}

/// Snapshots are confined.
pub async fn a_tenant_cannot_load_anothers_snapshot<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    let s = stream("account-1");
    a.save_snapshot(Snapshot {
        stream_id: s.clone(),
        version: StreamVersion(7),
        schema_version: 1,
        state: bytes::Bytes::from_static(b"{\"balance\":100}"),
    })
    .await
    .expect("save");
    assert!(b.load_snapshot(&s).await.expect("load").is_none());
    assert!(a.load_snapshot(&s).await.expect("load").is_some());
    h
}

/// A command id done in one tenant is new in another: no outcome leaks across.
pub async fn a_tenant_cannot_see_anothers_idempotency_records<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    let id = uuid::Uuid::now_v7();
    let stale = Duration::from_secs(60);
    assert!(matches!(
        a.claim(id, "pay", stale).await.expect("claim"),
        Claim::Claimed
    ));
    a.complete(
        id,
        IdempotencyRecord {
            message_type: "pay".into(),
            outcome: Ok(bytes::Bytes::from_static(b"\"secret receipt\"")),
        },
    )
    .await
    .expect("complete");
    assert!(matches!(
        b.claim(id, "pay", stale).await.expect("claim"),
        Claim::Claimed
    ));
    assert!(matches!(
        a.claim(id, "pay", stale).await.expect("claim"),
        Claim::Done(_)
    ));
    h
}

/// Checkpoints and consumer leases are per tenant: a projection of the same name runs in
/// each tenant, owned and checkpointed apart.
pub async fn a_tenants_checkpoints_and_leases_are_its_own<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    a.save_checkpoint("balances", Position(42))
        .await
        .expect("save");
    assert_eq!(b.load_checkpoint("balances").await.expect("load"), None);
    let ttl = Duration::from_secs(30);
    let held_a = a
        .acquire_lease("balances", &Instance::named("one"), ttl)
        .await
        .expect("acquire");
    assert!(held_a.is_some());
    let held_b = b
        .acquire_lease("balances", &Instance::named("two"), ttl)
        .await
        .expect("acquire");
    assert!(held_b.is_some(), "beta's consumer is free");
    h
}

/// A live reader of one tenant (a watcher and `read_all`, what subscriptions and
/// projection runners do) receives its own appends and none of another's.
pub async fn a_tenants_subscription_receives_only_its_own_events<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    let mut watcher = b.watch_appends();
    a.append(&stream("noise"), ExpectedVersion::NoStream, events(1, 5))
        .await
        .expect("alpha appends");
    let own = b
        .append(&stream("mine"), ExpectedVersion::NoStream, events(100, 1))
        .await
        .expect("beta appends");
    tokio::time::timeout(Duration::from_secs(10), watcher.changed())
        .await
        .expect("beta's watcher wakes for beta's append");
    crate::dcb_cases::visible(&b, own.positions[0]).await;
    let seen = b.read_all(Position::START, 100).await.expect("read");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].stream_id, stream("mine"));
    h
}

/// Tenants come from validated ids and from the request: a context without one gets no
/// store, the same tenant twice gets the same data, an invalid id is refused by name.
pub async fn tenants_are_validated_and_taken_from_the_request<H: Harness>(h: H) -> H {
    let tenants = h.tenants();
    let Err(e) = tenants.for_context(&Context::new()).await else {
        panic!("a request without a tenant got a store");
    };
    assert_eq!(e.reason(), "TENANT_REQUIRED", "{e}");
    for bad in ["", "Acme", "../etc", "a b", "-lead", &"x".repeat(64)] {
        assert!(TenantId::new(bad).is_err(), "{bad:?} was accepted");
    }
    let acme = TenantId::new("acme").expect("valid");
    let ctx = Context::new().with_tenant(acme.clone());
    let one = tenants.for_context(&ctx).await.expect("store");
    one.append(&stream("s"), ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let again = tenants.store(&acme).await.expect("store");
    assert_eq!(
        again.stream_version(&stream("s")).await.expect("v"),
        StreamVersion(1)
    );
    h
}

/// Two tenants, random operations (appends to a few shared stream names, snapshots,
/// checkpoints), seeded and repeatable: after each step every tenant's global order,
/// streams, snapshots and checkpoints are exactly what that tenant did.
pub async fn two_tenants_under_random_operations_see_only_their_own<H: Harness>(h: H) -> H {
    let (a, b) = two(&h).await;
    let stores = [a, b];
    // Events each tenant holds, over all seeds (counted, not read: PostgreSQL's gap-safe
    // reads may lag behind the last append for a moment).
    let mut totals = [0usize; 2];
    for seed in [1u64, 2, 3] {
        let mut rng = fastrand::Rng::with_seed(seed);
        // Per tenant: events per stream, last snapshot version per stream, checkpoint.
        let mut model: [HashMap<String, u64>; 2] = Default::default();
        let mut snaps: [HashMap<String, u64>; 2] = Default::default();
        let mut marks: [Option<u64>; 2] = [None, None];
        for step in 0..40u64 {
            let t = rng.usize(0..2);
            let name = format!("s{seed}-{}", rng.u8(0..3));
            let s = StreamId::new(&name).expect("stream");
            match rng.u8(0..4) {
                0 | 1 => {
                    let n = rng.u64(1..4);
                    let v = model[t].get(&name).copied().unwrap_or(0);
                    stores[t]
                        .append(
                            &s,
                            ExpectedVersion::Exact(StreamVersion(v)),
                            events(step * 10, n),
                        )
                        .await
                        .expect("append");
                    model[t].insert(name.clone(), v + n);
                    totals[t] += n as usize;
                }
                2 => {
                    let v = model[t].get(&name).copied().unwrap_or(0);
                    stores[t]
                        .save_snapshot(Snapshot {
                            stream_id: s.clone(),
                            version: StreamVersion(v),
                            schema_version: 1,
                            state: bytes::Bytes::from(format!("{{\"v\":{v}}}")),
                        })
                        .await
                        .expect("snapshot");
                    snaps[t].insert(name.clone(), v);
                }
                _ => {
                    let p = step + 1;
                    stores[t]
                        .save_checkpoint(&format!("p{seed}"), Position(p))
                        .await
                        .expect("checkpoint");
                    marks[t] = Some(p);
                }
            }
            for u in 0..2 {
                for k in 0..3u8 {
                    let name = format!("s{seed}-{k}");
                    let s = StreamId::new(&name).expect("stream");
                    let want = model[u].get(&name).copied().unwrap_or(0);
                    assert_eq!(
                        stores[u].stream_version(&s).await.expect("version").0,
                        want,
                        "seed {seed} step {step}: tenant {u}, stream {name}"
                    );
                    let snap = stores[u].load_snapshot(&s).await.expect("load");
                    assert_eq!(
                        snap.map(|x| x.version.0),
                        snaps[u].get(&name).copied(),
                        "seed {seed} step {step}: tenant {u}'s snapshot of {name}"
                    );
                }
                assert_eq!(
                    stores[u]
                        .load_checkpoint(&format!("p{seed}"))
                        .await
                        .expect("load")
                        .map(|p| p.0),
                    marks[u],
                    "seed {seed} step {step}: tenant {u}'s checkpoint"
                );
            }
        }
        for u in 0..2 {
            let all = crate::cases::read_all_until(&stores[u], Position::START, totals[u]).await;
            assert_eq!(all.len(), totals[u], "seed {seed}: tenant {u}'s order");
        }
    }
    h
}

//! Faults inside a projection: transient errors are retried without limit and never
//! parked; a panic is a failure under the poison policy, never a silent dead worker.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use flext_application::{PoisonPolicy, ProjectionOptions, ProjectionRunner, ProjectionState};
use flext_domain::{ErrorCode, EventId, ExpectedVersion, NewEvent, Position, StreamId};
use flext_ports::{EventStore, HealthCheck, HealthStatus, Projection, ProjectionStore};
use support::{Backend, expected};

const WAIT: Duration = Duration::from_secs(20);

fn options(on_poison: PoisonPolicy) -> ProjectionOptions {
    ProjectionOptions {
        batch_size: 10,
        max_attempts: 3,
        backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(20),
        on_poison,
        ..ProjectionOptions::default()
    }
}

async fn append<S: EventStore>(store: &S, kind: &str, amount: i64) -> Position {
    store
        .append(
            &StreamId::new("acc-1").expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), kind, amount.to_string())],
        )
        .await
        .expect("append")
        .last_position()
        .expect("position")
}

/// A read model whose table arrives late: 40 transient failures (far more than
/// `max_attempts`) on one event; the projection retries, reports `Retrying` and a degraded
/// health meanwhile, then applies it: nothing parked, the model complete.
async fn transient_errors_are_retried_until_they_pass<S: Backend>(store: S)
where
    support::Model<S>: Projection<<S as ProjectionStore>::Transaction>,
{
    append(&store, "added", 1).await;
    append(&store, "flaky", 2).await;
    let head = append(&store, "added", 3).await;
    let model = store.model("late").await;
    model.knobs.unavailable_left.store(40, Ordering::SeqCst);
    let projections = ProjectionRunner::new(store.clone())
        .register_with(model.clone(), options(PoisonPolicy::Park))
        .expect("register")
        .start();
    let health = projections.health_check("late", 1_000).expect("check");
    let mut seen_retrying = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while model.knobs.unavailable_left.load(Ordering::SeqCst) > 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transient error is not retried: {:?}",
            projections.status("late").await.expect("status")
        );
        let status = projections.status("late").await.expect("status");
        if status.state == ProjectionState::Retrying {
            seen_retrying = true;
            assert_eq!(
                status.last_error.as_ref().map(|e| e.reason()),
                Some("READ_MODEL_MISSING")
            );
            assert_eq!(health.check().await.status, HealthStatus::Degraded);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(seen_retrying, "the status said Retrying while it retried");
    projections
        .wait_for("late", head, WAIT)
        .await
        .expect("applied once the table is there");
    assert!(
        projections
            .dead_letters("late")
            .await
            .expect("dl")
            .is_empty()
    );
    assert_eq!(store.totals(&model).await, expected(&store, &[]).await);
    assert_eq!(
        projections.status("late").await.expect("status").state,
        ProjectionState::Running
    );
    projections.shutdown().await;
}

/// A handler that panics: under `Stop` the projection is `Failed` with the reason and
/// `wait_for` says so at once; under `Park` the event is parked like any failure and the
/// projection goes on.
async fn a_panic_is_a_failure_under_the_poison_policy<S: Backend>(store: S)
where
    support::Model<S>: Projection<<S as ProjectionStore>::Transaction>,
{
    append(&store, "added", 1).await;
    let bad = append(&store, "added", 77).await;
    let head = append(&store, "added", 3).await;

    let model = store.model("stops").await;
    model.knobs.panic_on.store(77, Ordering::SeqCst);
    let projections = ProjectionRunner::new(store.clone())
        .register_with(model.clone(), options(PoisonPolicy::Stop))
        .expect("register")
        .start();
    let e = projections
        .wait_for("stops", head, WAIT)
        .await
        .expect_err("failed");
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert_eq!(e.reason(), "PROJECTION_FAILED");
    let status = projections.status("stops").await.expect("status");
    assert_eq!(status.state, ProjectionState::Failed);
    let cause = status.last_error.expect("the cause");
    assert_eq!(cause.reason(), "PROJECTION_PANICKED");
    assert!(
        !cause.to_string().contains("blew up"),
        "panic text stays in the log"
    );
    projections.shutdown().await;

    let model = store.model("parks").await;
    model.knobs.panic_on.store(77, Ordering::SeqCst);
    let projections = ProjectionRunner::new(store.clone())
        .register_with(model.clone(), options(PoisonPolicy::Park))
        .expect("register")
        .start();
    let e = projections
        .wait_for("parks", head, WAIT)
        .await
        .expect_err("parked");
    assert_eq!(e.reason(), "EVENTS_PARKED");
    let letters = projections.dead_letters("parks").await.expect("dl");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, bad);
    assert_eq!(letters[0].error.reason(), "PROJECTION_PANICKED");
    projections.shutdown().await;
}

macro_rules! on_stores {
    ($($case:ident),*) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(flext_memory::InMemoryEventStore::new()).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(support::postgres().await).await;
                }
            )*
        }
    };
}

on_stores!(
    transient_errors_are_retried_until_they_pass,
    a_panic_is_a_failure_under_the_poison_policy
);

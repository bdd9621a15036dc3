//! Background jobs on memory, SQLite and PostgreSQL: a failing job is retried with
//! backoff, dead after its last attempt and redriven; no more jobs run at once than the
//! concurrency allows; a cancelled job never runs and a running one learns it was
//! cancelled; a recurring job is enqueued at each due time once, across a restart of its
//! workers; statistics count what happened.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_application::{Backoff, Job, JobContext, JobWorkers, enqueue, new_job};
use flext_domain::Error;
use flext_ports::{Clock, Context, JobState, JobStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    n: u32,
}

impl Job for Flaky {
    const KIND: &'static str = "test.flaky";
    const MAX_ATTEMPTS: u32 = 3;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nap {
    millis: u64,
}

impl Job for Nap {
    const KIND: &'static str = "test.nap";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Statement {
    account: String,
}

impl Job for Statement {
    const KIND: &'static str = "test.statement";
}

fn quick() -> Backoff {
    Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(20),
    }
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A job that fails is tried three times (its `MAX_ATTEMPTS`), then dead; redriven once
/// the cause is gone, it succeeds; the stats and the attempts seen agree.
async fn a_failing_job_is_retried_then_dead_then_redriven<S>(store: S)
where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let healthy = Arc::new(AtomicBool::new(false));
    let (seen, ok) = (Arc::clone(&attempts), Arc::clone(&healthy));
    let workers = JobWorkers::builder(store.clone())
        .job(move |job: Flaky, cx: JobContext| {
            let (seen, ok) = (Arc::clone(&seen), Arc::clone(&ok));
            async move {
                seen.lock().expect("seen").push((job.n, cx.attempt()));
                if ok.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(Error::unavailable("DOWN", "the mail server is down"))
                }
            }
        })
        .backoff(quick())
        .poll(Duration::from_millis(5))
        .start()
        .expect("workers");
    let id = enqueue(&store, &Flaky { n: 7 }, &Context::new())
        .await
        .expect("enqueue");
    until(
        "dead",
        async || matches!(store.job(id).await, Ok(Some(j)) if j.state == JobState::Dead),
    )
    .await;
    assert_eq!(
        attempts.lock().expect("seen").clone(),
        [(7, 1), (7, 2), (7, 3)],
        "three attempts, then no more"
    );
    let dead = workers.dead(Some(Flaky::KIND), 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("mail server")),
        "{dead:?}"
    );
    let stats = workers.stats().await.expect("stats");
    let flaky = stats.iter().find(|s| s.kind == Flaky::KIND).expect("kind");
    assert_eq!((flaky.dead, flaky.succeeded, flaky.queued), (1, 0, 0));

    healthy.store(true, Ordering::SeqCst);
    assert!(workers.redrive(id).await.expect("redrive"));
    until(
        "succeeded",
        async || matches!(store.job(id).await, Ok(Some(j)) if j.state == JobState::Succeeded),
    )
    .await;
    assert_eq!(
        attempts.lock().expect("seen").last(),
        Some(&(7, 1)),
        "attempts reset"
    );
    let stats = workers.stats().await.expect("stats");
    let flaky = stats.iter().find(|s| s.kind == Flaky::KIND).expect("kind");
    assert_eq!((flaky.dead, flaky.succeeded), (0, 1));
    workers.shutdown().await;
}

/// Twenty naps with a concurrency of 4: never more than 4 at once, all done.
async fn no_more_jobs_run_at_once_than_the_concurrency<S>(store: S)
where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, m, d) = (Arc::clone(&running), Arc::clone(&most), Arc::clone(&done));
    for _ in 0..20 {
        enqueue(&store, &Nap { millis: 20 }, &Context::new())
            .await
            .expect("enqueue");
    }
    let workers = JobWorkers::builder(store.clone())
        .job(move |job: Nap, _cx: JobContext| {
            let (r, m, d) = (Arc::clone(&r), Arc::clone(&m), Arc::clone(&d));
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(job.millis)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .concurrency(4)
        .poll(Duration::from_millis(5))
        .start()
        .expect("workers");
    until("all done", async || done.load(Ordering::SeqCst) == 20).await;
    let most = most.load(Ordering::SeqCst);
    assert!((1..=4).contains(&most), "{most} at once");
    workers.shutdown().await;
    let stats = store.job_stats().await.expect("stats");
    let naps = stats.iter().find(|s| s.kind == Nap::KIND).expect("kind");
    assert_eq!(naps.succeeded, 20);
}

/// A job cancelled while queued never runs; one cancelled while it runs sees
/// `cancelled()` turn true, and its success is discarded (it stays cancelled).
async fn cancelled_jobs_do_not_run_or_count<S>(store: S)
where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let ran = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ran);
    let queued = enqueue(&store, &Flaky { n: 1 }, &Context::new())
        .await
        .expect("enqueue");
    assert!(store.cancel_job(queued).await.expect("cancel"));
    let long = enqueue(&store, &Flaky { n: 2 }, &Context::new())
        .await
        .expect("enqueue");
    let workers = JobWorkers::builder(store.clone())
        .job(move |job: Flaky, cx: JobContext| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().expect("ran").push(job.n);
                if job.n == 2 {
                    while !cx.cancelled().await {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Ok(())
            }
        })
        .poll(Duration::from_millis(5))
        .start()
        .expect("workers");
    until("the long job runs", async || {
        ran.lock().expect("ran").contains(&2)
    })
    .await;
    assert!(workers.cancel(long).await.expect("cancel running"));
    let sentinel = enqueue(&store, &Flaky { n: 3 }, &Context::new())
        .await
        .expect("enqueue");
    until(
        "the sentinel ran",
        async || matches!(store.job(sentinel).await, Ok(Some(j)) if j.state == JobState::Succeeded),
    )
    .await;
    workers.shutdown().await;
    assert_eq!(
        store.job(long).await.expect("job").map(|j| j.state),
        Some(JobState::Cancelled),
        "its success was discarded"
    );
    assert!(!ran.lock().expect("ran").contains(&1), "never ran");
}

/// A clock the test moves.
#[derive(Clone)]
struct Hands(Arc<Mutex<DateTime<Utc>>>);

impl Clock for Hands {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
}

impl Hands {
    fn advance(&self, seconds: i64) {
        *self.0.lock().expect("clock") += chrono::Duration::seconds(seconds);
    }
}

/// Every 10 s: the clock moves 65 s in 5 s steps, so six due times pass; each is
/// enqueued and run once. The workers stop, new ones (another instance, the same
/// schedule) start and the clock moves 20 s: two more, none twice.
async fn a_recurring_job_fires_at_each_due_time_once<S>(store: S)
where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let start = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let hands = Hands(Arc::new(Mutex::new(start)));
    let runs = Arc::new(AtomicU32::new(0));
    let workers = |name: &str| {
        let runs = Arc::clone(&runs);
        JobWorkers::builder(store.clone())
            .job(move |_: Statement, _cx: JobContext| {
                let runs = Arc::clone(&runs);
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .recurring(
                "statements",
                "*/10 * * * * *",
                &Statement {
                    account: "all".into(),
                },
            )
            .clock(Arc::new(hands.clone()))
            .name(name)
            .poll(Duration::from_millis(5))
            .start()
            .expect("workers")
    };
    let succeeded = async || {
        store
            .jobs_in(JobState::Succeeded, Some(Statement::KIND), 100)
            .await
            .expect("jobs")
            .iter()
            .map(|j| j.run_at)
            .collect::<Vec<_>>()
    };
    let first = workers("first");
    for _ in 0..13 {
        hands.advance(5);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let due: Vec<DateTime<Utc>> = (1..=6)
        .map(|i| start + chrono::Duration::seconds(10 * i))
        .collect();
    until("six statements", async || succeeded().await.len() == 6).await;
    first.shutdown().await;
    assert_eq!(succeeded().await, due, "each due time once, in order");

    let second = workers("second");
    hands.advance(20);
    until("two more", async || succeeded().await.len() == 8).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    second.shutdown().await;
    let mut all = due.clone();
    all.extend([70, 80].map(|s| start + chrono::Duration::seconds(s)));
    assert_eq!(succeeded().await, all, "none twice after the restart");
    assert_eq!(runs.load(Ordering::SeqCst), 8);
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::postgres().await).await;
                }
            )*
        }
    };
}

on_stores!(
    a_failing_job_is_retried_then_dead_then_redriven,
    no_more_jobs_run_at_once_than_the_concurrency,
    cancelled_jobs_do_not_run_or_count,
    a_recurring_job_fires_at_each_due_time_once
);

#[test]
fn backoff_doubles_up_to_its_limit_with_jitter_below_it() {
    let b = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    assert_eq!(b.delay(1), Duration::from_millis(100));
    assert_eq!(b.delay(2), Duration::from_millis(200));
    assert_eq!(b.delay(4), Duration::from_millis(800));
    assert_eq!(b.delay(5), Duration::from_secs(1));
    assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    for attempt in 1..8 {
        let j = b.jittered(attempt);
        assert!(j >= b.delay(attempt) / 2 && j <= b.delay(attempt), "{j:?}");
    }
}

#[test]
fn a_bad_cron_expression_is_refused_at_start() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let e = JobWorkers::builder(flext_memory::InMemoryEventStore::new())
            .recurring(
                "bad",
                "every tuesday",
                &Statement {
                    account: "x".into(),
                },
            )
            .start()
            .expect_err("refused");
        assert_eq!(e.reason(), "INVALID_CRON");
        assert!(e.message().contains("bad"), "{e}");
    });
}

#[test]
fn a_new_job_carries_its_kind_attempts_and_business_action() {
    let ctx = Context::new();
    let job = new_job(&Flaky { n: 1 }, &ctx).expect("job");
    assert_eq!(job.kind, Flaky::KIND);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.metadata.correlation_id, Some(ctx.correlation_id()));
    assert_eq!(job.recurring, None);
}

//! Background jobs: typed work enqueued in the store's database (on its own, or in the
//! transaction that appends events) and run by [`JobWorkers`] with a concurrency limit,
//! retries with exponential backoff and jitter, a dead-letter queue with redrive,
//! cancellation, recurring jobs from cron expressions, and statistics. Workers in several
//! processes compete for jobs (on PostgreSQL with `FOR UPDATE SKIP LOCKED`); each job
//! runs in one worker at a time, at least once: a worker that dies holding a job leaves
//! it to be claimed again when its lock lapses. A handler that must have its effect once
//! deduplicates by [`JobContext::id`].

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::{Clock, Context, JobState, JobStats, JobStore, Metrics, NewJob, SystemClock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, Semaphore, watch};
use uuid::Uuid;

use crate::pipeline::BoxFuture;

/// A type of background job: serialized as JSON into the queue.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The job type's stable name, which picks its handler.
    const KIND: &'static str;
    /// Attempts it gets before it is dead (default 5).
    const MAX_ATTEMPTS: u32 = 5;
}

/// `job` as a [`NewJob`] in the business action of `ctx`, to run now: pass it to
/// [`JobStore::enqueue`], or to [`JobStore::enqueue_in`] with the transaction that
/// appends the events it follows from (set `run_at` or `max_attempts` on it first to
/// change them).
pub fn new_job<J: Job>(job: &J, ctx: &Context) -> Result<NewJob, Error> {
    Ok(NewJob {
        id: Uuid::now_v7(),
        kind: J::KIND.to_owned(),
        payload: serde_json::to_vec(job)?,
        metadata: ctx.event_metadata(),
        run_at: Utc::now(),
        max_attempts: J::MAX_ATTEMPTS,
        recurring: None,
    })
}

/// Enqueues `job` on its own, to run now; its id.
pub async fn enqueue<S: JobStore, J: Job>(
    store: &S,
    job: &J,
    ctx: &Context,
) -> Result<Uuid, Error> {
    let job = new_job(job, ctx)?;
    store.enqueue(&job).await?;
    Ok(job.id)
}

/// What a handler is told of the job it runs.
#[derive(Clone)]
pub struct JobContext {
    id: Uuid,
    attempt: u32,
    due_at: DateTime<Utc>,
    ctx: Context,
    cancelled: Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// The job's id: the same on every attempt, what an effect is deduplicated by.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the job was first due: for a recurring job, its due time (the day a nightly
    /// job is for); the same on every attempt.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.due_at
    }

    /// The business action the job was enqueued in (its id is the job's id): dispatch
    /// follow-up commands with `context().child_for(..)`.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Whether the job has been cancelled since it started (a long job asks now and
    /// then and stops early; its outcome is discarded either way).
    pub async fn cancelled(&self) -> bool {
        (self.cancelled)().await
    }
}

/// Runs jobs of type `J`.
pub trait JobHandler<J: Job>: Send + Sync + 'static {
    /// Runs one attempt. An error fails the attempt: it is retried after a backoff
    /// while attempts remain, and is dead after the last.
    fn run(&self, job: J, cx: &JobContext) -> impl Future<Output = Result<(), Error>> + Send;
}

impl<J, F, Fut> JobHandler<J> for F
where
    J: Job,
    F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    fn run(&self, job: J, cx: &JobContext) -> impl Future<Output = Result<(), Error>> + Send {
        self(job, cx.clone())
    }
}

/// Runs one kind of stored job.
type Run = Arc<dyn Fn(Vec<u8>, JobContext) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

/// Exponential backoff with jitter: attempt `n` failed waits `base * 2^(n-1)`, at most
/// `max`, times a random factor in [0.5, 1] (so workers that failed together do not
/// retry together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed attempt (before jitter). Default 1 s.
    pub base: Duration,
    /// The longest wait. Default 10 min.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (from 1), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// [`Backoff::delay`] with jitter.
    pub fn jittered(&self, attempt: u32) -> Duration {
        self.delay(attempt).mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// A recurring job: a cron expression and the job it enqueues at each due time.
struct Recurring {
    name: String,
    schedule: cron::Schedule,
    kind: &'static str,
    payload: Vec<u8>,
    max_attempts: u32,
}

/// Builds [`JobWorkers`].
pub struct JobWorkersBuilder<S> {
    store: S,
    runs: HashMap<&'static str, Run>,
    recurring: Vec<Recurring>,
    concurrency: usize,
    poll: Duration,
    lock_for: Duration,
    backoff: Backoff,
    name: String,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    error: Option<Error>,
}

impl<S> std::fmt::Debug for JobWorkersBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWorkersBuilder")
            .field("kinds", &self.runs.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Runs background jobs from the store: claims due jobs of the kinds it has handlers for,
/// up to its concurrency, and reports each attempt's outcome; enqueues recurring jobs at
/// their due times. Metrics: `flext.jobs.attempts` (count, labelled `kind` and `outcome`:
/// `succeeded`, `retried`, `dead`, `discarded`), `flext.jobs.duration` (seconds), and the
/// gauges of [`JobWorkers::stats`].
pub struct JobWorkers<S> {
    store: S,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: Arc<dyn Metrics>,
    clock: Arc<dyn Clock>,
}

impl<S> std::fmt::Debug for JobWorkers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWorkers").finish_non_exhaustive()
    }
}

impl<S: JobStore + Clone + Send + Sync + 'static> JobWorkers<S> {
    /// Workers on `store`: add handlers with [`JobWorkersBuilder::job`].
    pub fn builder(store: S) -> JobWorkersBuilder<S> {
        JobWorkersBuilder {
            store,
            runs: HashMap::new(),
            recurring: Vec::new(),
            concurrency: 8,
            poll: Duration::from_millis(200),
            lock_for: Duration::from_secs(300),
            backoff: Backoff::default(),
            name: format!(
                "{}-{}",
                flext_ports::Instance::current().name,
                Uuid::now_v7()
            ),
            clock: Arc::new(SystemClock),
            metrics: Arc::new(()),
            error: None,
        }
    }

    /// The jobs by kind and state; also set as the gauges `flext.jobs.queued`,
    /// `.retrying`, `.running`, `.succeeded`, `.dead` and `.cancelled` (labelled `kind`).
    pub async fn stats(&self) -> Result<Vec<JobStats>, Error> {
        let stats = self.store.job_stats().await?;
        for s in &stats {
            let labels: &[(&str, &str)] = &[("kind", s.kind.as_str())];
            for (name, value) in [
                ("flext.jobs.queued", s.queued),
                ("flext.jobs.retrying", s.retrying),
                ("flext.jobs.running", s.running),
                ("flext.jobs.succeeded", s.succeeded),
                ("flext.jobs.dead", s.dead),
                ("flext.jobs.cancelled", s.cancelled),
            ] {
                self.metrics.gauge(name, value as f64, labels);
            }
        }
        Ok(stats)
    }

    /// Cancels a job (queued: never runs; running: its outcome is discarded and
    /// [`JobContext::cancelled`] says so); whether it could be.
    pub async fn cancel(&self, id: Uuid) -> Result<bool, Error> {
        self.store.cancel_job(id).await
    }

    /// The dead jobs (of `kind`, if given), up to `max`.
    pub async fn dead(
        &self,
        kind: Option<&str>,
        max: usize,
    ) -> Result<Vec<flext_ports::Job>, Error> {
        self.store.jobs_in(JobState::Dead, kind, max).await
    }

    /// Queues a dead job again, attempts reset; whether it was dead.
    pub async fn redrive(&self, id: Uuid) -> Result<bool, Error> {
        self.store.redrive_job(id, self.clock.now()).await
    }

    /// Stops claiming and waits for the jobs in hand to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl<S: JobStore + Clone + Send + Sync + 'static> JobWorkersBuilder<S> {
    /// Runs jobs of type `J` with `handler`; a second handler for one kind is an
    /// `AlreadyExists` error at [`JobWorkersBuilder::start`].
    pub fn job<J: Job, H: JobHandler<J>>(mut self, handler: H) -> Self {
        if self.runs.contains_key(J::KIND) {
            self.error.get_or_insert(Error::already_exists(
                "DUPLICATE_JOB_HANDLER",
                format!("job kind {:?} has a handler already", J::KIND),
            ));
            return self;
        }
        let handler = Arc::new(handler);
        let run: Run = Arc::new(move |payload: Vec<u8>, cx: JobContext| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let job: J = serde_json::from_slice(&payload).map_err(|e| {
                    Error::data_loss(
                        "UNREADABLE_JOB",
                        format!("a {} job does not decode: {e}", J::KIND),
                    )
                })?;
                handler.run(job, &cx).await
            })
        });
        self.runs.insert(J::KIND, run);
        self
    }

    /// Enqueues `job` at every due time of the cron expression `cron` (seconds, minutes,
    /// hours, day of month, month, day of week, optional year; UTC), under the schedule
    /// `name`: each due time once, whichever and however many instances run workers
    /// with it; due times missed while none ran are enqueued when one starts (up to 100
    /// at a time). A bad expression is an `InvalidArgument` error at start.
    pub fn recurring<J: Job>(mut self, name: &str, cron: &str, job: &J) -> Self {
        let schedule = match cron::Schedule::from_str(cron) {
            Ok(s) => s,
            Err(e) => {
                self.error.get_or_insert(Error::invalid_argument(
                    "INVALID_CRON",
                    format!("the recurring job {name:?} has a bad cron expression {cron:?}: {e}"),
                ));
                return self;
            }
        };
        match serde_json::to_vec(job) {
            Ok(payload) => self.recurring.push(Recurring {
                name: name.to_owned(),
                schedule,
                kind: J::KIND,
                payload,
                max_attempts: J::MAX_ATTEMPTS,
            }),
            Err(e) => {
                self.error.get_or_insert(e.into());
            }
        }
        self
    }

    /// How many jobs run at once in this process (at least 1; 8 by default).
    pub fn concurrency(mut self, at_once: usize) -> Self {
        self.concurrency = at_once.max(1);
        self
    }

    /// How often it looks for jobs when none was ready (200 ms by default).
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// How long a claimed job stays this worker's before another may claim it (5 min by
    /// default): longer than a job's longest run.
    pub fn lock_for(mut self, lock: Duration) -> Self {
        self.lock_for = lock;
        self
    }

    /// The retry backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The worker's name in the jobs it holds (default: this instance's name and a
    /// UUID, unique per start).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The clock that says what is due.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where attempts, durations and statistics are recorded.
    pub fn metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Starts claiming (inside a Tokio runtime).
    pub fn start(self) -> Result<JobWorkers<S>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            runs: self.runs,
            name: self.name,
            lock_for: self.lock_for,
            backoff: self.backoff,
            clock: Arc::clone(&self.clock),
            metrics: Arc::clone(&self.metrics),
            freed: Notify::new(),
        });
        if !shared.runs.is_empty() {
            tasks.push(tokio::spawn(work(
                Arc::clone(&shared),
                self.concurrency,
                self.poll,
                stopped.clone(),
            )));
        }
        if !self.recurring.is_empty() {
            tasks.push(tokio::spawn(enqueue_recurring(
                self.store.clone(),
                self.recurring,
                Arc::clone(&self.clock),
                self.poll,
                stopped,
            )));
        }
        Ok(JobWorkers {
            store: self.store,
            stop,
            tasks,
            metrics: self.metrics,
            clock: self.clock,
        })
    }
}

/// What the claim loop and the job tasks share.
struct Shared<S> {
    store: S,
    runs: HashMap<&'static str, Run>,
    name: String,
    lock_for: Duration,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    /// Pulsed when a job finishes (a slot is free).
    freed: Notify,
}

/// The claim loop: claims what the free slots can take, runs each job in a task.
async fn work<S>(
    shared: Arc<Shared<S>>,
    concurrency: usize,
    poll: Duration,
    mut stopped: watch::Receiver<bool>,
) where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let kinds: Vec<&str> = shared.runs.keys().copied().collect();
    // Successes are reported together: one transaction for all that finished meanwhile.
    let (reports, pending) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report_successes(Arc::clone(&shared), pending));
    // Claims are made for at least half the slots while more than half are busy: one
    // claim (a commit) per several jobs, not one per job as each finishes.
    let batch = concurrency.div_ceil(2);
    while !*stopped.borrow() {
        let free = slots.available_permits();
        if free < batch {
            tokio::select! {
                _ = shared.freed.notified() => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
            continue;
        }
        let claimed = shared
            .store
            .claim_jobs(
                &shared.name,
                &kinds,
                shared.clock.now(),
                free,
                shared.lock_for,
            )
            .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim jobs");
                Vec::new()
            }
        };
        let got = jobs.len();
        for job in jobs {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let shared = Arc::clone(&shared);
            let reports = reports.clone();
            tokio::spawn(async move {
                run_job(&shared, job, &reports).await;
                drop(permit);
                shared.freed.notify_one();
            });
        }
        if got < free {
            // Nothing more ready: look again after the poll, or when a slot frees.
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        }
    }
    // Wait for the jobs in hand, then for their reports.
    let _ = slots
        .acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX))
        .await;
    drop(reports);
    let _ = reporter.await;
}

/// Reports succeeded jobs in batches (all that wait, up to 256, in one transaction).
async fn report_successes<S>(
    shared: Arc<Shared<S>>,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<flext_ports::Job>,
) where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let mut batch = Vec::new();
    while pending.recv_many(&mut batch, 256).await > 0 {
        let reported = shared.store.complete_jobs(&batch, shared.clock.now()).await;
        let outcomes: Vec<&str> = match reported {
            Ok(done) => done
                .iter()
                // Not applied: cancelled, or its lock lapsed and another worker took it.
                .map(|ok| if *ok { "succeeded" } else { "discarded" })
                .collect(),
            Err(e) => {
                tracing::warn!(jobs = batch.len(), error = %e, "could not report jobs' success; their locks will lapse");
                vec!["unreported"; batch.len()]
            }
        };
        for (job, outcome) in batch.iter().zip(outcomes) {
            shared.metrics.count(
                "flext.jobs.attempts",
                1,
                &[("kind", job.kind.as_str()), ("outcome", outcome)],
            );
        }
        batch.clear();
    }
}

/// One attempt: decode, run, report.
async fn run_job<S>(
    shared: &Shared<S>,
    job: flext_ports::Job,
    reports: &tokio::sync::mpsc::UnboundedSender<flext_ports::Job>,
) where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let kind = job.kind.clone();
    let now = shared.clock.now();
    let outcome = if job.attempts > job.max_attempts {
        // Claimed again after its lock lapsed on its last attempt (the worker died).
        Err(Error::failed_precondition(
            "JOB_ABANDONED",
            format!(
                "job {} was abandoned by a worker on its last attempt",
                job.id
            ),
        ))
    } else if let Some(run) = shared.runs.get(job.kind.as_str()) {
        let store = shared.store.clone();
        let id = job.id;
        let cx = JobContext {
            id: job.id,
            attempt: job.attempts,
            due_at: job.due_at,
            ctx: Context::from_metadata(job.id, &job.metadata),
            cancelled: Arc::new(move || {
                let store = store.clone();
                Box::pin(async move {
                    matches!(store.job(id).await, Ok(Some(j)) if j.state == JobState::Cancelled)
                })
            }),
        };
        let started = std::time::Instant::now();
        let outcome = crate::catch::CatchPanic::named(
            run(job.payload.clone(), cx),
            format!("job {} ({})", job.id, job.kind),
            "JOB_PANICKED",
        )
        .await;
        shared.metrics.observe(
            "flext.jobs.duration",
            started.elapsed().as_secs_f64(),
            &[("kind", kind.as_str())],
        );
        outcome
    } else {
        Err(Error::internal(
            "NO_JOB_HANDLER",
            format!("no handler for {kind:?}"),
        ))
    };
    let reported = match &outcome {
        Ok(()) => {
            // Reported with the others that finished meanwhile.
            if let Err(back) = reports.send(job) {
                let job = back.0;
                tracing::warn!(job = %job.id, "the reporter has stopped; the job's lock will lapse");
            }
            return;
        }
        Err(e) => {
            // A job that cannot be decoded, or was abandoned, will not do better later.
            let hopeless = e.reason() == "UNREADABLE_JOB" || e.reason() == "JOB_ABANDONED";
            let retry_at = (!hopeless && job.attempts < job.max_attempts).then(|| {
                let wait = shared.backoff.jittered(job.attempts);
                shared.clock.now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
            });
            let message = format!("{e:#}");
            tracing::warn!(job = %job.id, kind = %kind, attempt = job.attempts, error = %message, "a job attempt failed");
            let outcome = if retry_at.is_some() {
                "retried"
            } else {
                "dead"
            };
            shared
                .store
                .fail_job(&job, &message, retry_at, now)
                .await
                .map(|ok| (ok, outcome))
        }
    };
    let outcome = match reported {
        Ok((true, outcome)) => outcome,
        // Cancelled, or its lock lapsed and another worker took it.
        Ok((false, _)) => "discarded",
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "could not report a job's outcome; its lock will lapse");
            "unreported"
        }
    };
    shared.metrics.count(
        "flext.jobs.attempts",
        1,
        &[("kind", kind.as_str()), ("outcome", outcome)],
    );
}

/// Enqueues each recurring job's due times as they come.
async fn enqueue_recurring<S>(
    store: S,
    recurring: Vec<Recurring>,
    clock: Arc<dyn Clock>,
    poll: Duration,
    mut stopped: watch::Receiver<bool>,
) where
    S: JobStore,
{
    let started = clock.now();
    let mut last: Vec<Option<DateTime<Utc>>> = vec![None; recurring.len()];
    while !*stopped.borrow() {
        let now = clock.now();
        for (r, last) in recurring.iter().zip(last.iter_mut()) {
            if let Err(e) = enqueue_due(&store, r, last, started, now).await {
                tracing::warn!(schedule = %r.name, error = %e, "could not enqueue a recurring job");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    }
}

/// Enqueues the due times of `r` after the last one enqueued (or after `started`, the
/// first time the schedule is seen) up to `now`, at most 100.
async fn enqueue_due<S: JobStore>(
    store: &S,
    r: &Recurring,
    last: &mut Option<DateTime<Utc>>,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let from = match *last {
        Some(at) => at,
        None => store.last_recurring(&r.name).await?.unwrap_or(started),
    };
    for due in r.schedule.after(&from).take(100) {
        if due > now {
            break;
        }
        store
            .enqueue(&NewJob {
                id: Uuid::now_v7(),
                kind: r.kind.to_owned(),
                payload: r.payload.clone(),
                metadata: Context::new().event_metadata(),
                run_at: due,
                max_attempts: r.max_attempts,
                recurring: Some(r.name.clone()),
            })
            .await?;
        *last = Some(due);
    }
    if last.is_none() {
        *last = Some(from);
    }
    Ok(())
}

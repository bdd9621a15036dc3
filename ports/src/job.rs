//! The job port: background jobs in the store's database, enqueued on their own or in
//! the transaction that appends events, claimed by workers (competing across processes),
//! retried, dead-lettered, redriven, cancelled, counted.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::{Error, EventMetadata};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ProjectionStore;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at` and a worker (again, after a failed attempt).
    Queued,
    /// Claimed by a worker, until it reports or its lock lapses.
    Running,
    /// Done.
    Succeeded,
    /// Failed its last allowed attempt (or could not be decoded): kept for a redrive.
    Dead,
    /// Cancelled before it succeeded.
    Cancelled,
}

impl JobState {
    /// The state's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// A stored name read back; an unknown one is a `DataLoss` error.
    pub fn parse(stored: &str) -> Result<JobState, Error> {
        Ok(match stored {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            other => {
                return Err(Error::data_loss(
                    "CORRUPTED_JOB",
                    format!("a job has the unknown state {other:?}"),
                ));
            }
        })
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Its id (what a handler can deduplicate its effect by).
    pub id: Uuid,
    /// Its type's name (`Job::KIND`), which picks the handler.
    pub kind: String,
    /// The job, as JSON.
    pub payload: Vec<u8>,
    /// The business action it belongs to.
    pub metadata: EventMetadata,
    /// When it may run first.
    pub run_at: DateTime<Utc>,
    /// How many attempts it gets before it is dead (at least 1).
    pub max_attempts: u32,
    /// The recurring schedule it was enqueued by, if any: with `run_at`, unique, so a
    /// due time is enqueued once however many instances look.
    pub recurring: Option<String>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: Uuid,
    /// Its type's name.
    pub kind: String,
    /// The job, as JSON.
    pub payload: Vec<u8>,
    /// The business action it belongs to.
    pub metadata: EventMetadata,
    /// Where it stands.
    pub state: JobState,
    /// Attempts begun so far (a claim begins one).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it was first due (kept through retries: a recurring job's due time).
    pub due_at: DateTime<Utc>,
    /// When it may run (next).
    pub run_at: DateTime<Utc>,
    /// The error of its last failed attempt.
    pub last_error: Option<String>,
    /// The worker that holds it, while running.
    pub locked_by: Option<String>,
    /// The recurring schedule that enqueued it.
    pub recurring: Option<String>,
}

/// Jobs of one kind by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// The job type.
    pub kind: String,
    /// Waiting to run (first time or again).
    pub queued: u64,
    /// Of the queued, those waiting to be retried after a failed attempt.
    pub retrying: u64,
    /// Claimed by a worker.
    pub running: u64,
    /// Done.
    pub succeeded: u64,
    /// Out of attempts (the dead-letter queue).
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// Stores background jobs. Every adapter keeps the same rules (the conformance suite
/// checks them): a claim takes queued jobs whose `run_at` has come, and running jobs
/// whose lock lapsed, earliest first, at most `max`, each by one claimer at a time, and
/// begins an attempt; `complete` and `fail` apply only while the job is still the
/// caller's (running, locked by it, at that attempt), so a worker whose lock lapsed and
/// was taken over cannot overwrite the new attempt's outcome, nor a cancelled job's state.
pub trait JobStore: ProjectionStore {
    /// Enqueues `job`; `false` when a job of the same recurring schedule and due time
    /// exists already (nothing is written).
    fn enqueue(&self, job: &NewJob) -> impl Future<Output = Result<bool, Error>> + Send;

    /// [`JobStore::enqueue`] inside `tx`: the job exists once `tx` commits (with the
    /// events it appended), not before, and not at all if it does not.
    fn enqueue_in(
        &self,
        tx: &mut Self::Transaction,
        job: &NewJob,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Claims up to `max` jobs of `kinds` for `worker`, locked until `now + lock_for`.
    fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[&str],
        now: DateTime<Utc>,
        max: usize,
        lock_for: Duration,
    ) -> impl Future<Output = Result<Vec<Job>, Error>> + Send;

    /// Marks `job` (as claimed) succeeded; `false` if it is no longer the caller's.
    fn complete_job(
        &self,
        job: &Job,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// [`JobStore::complete_job`] for each of `jobs`, in one transaction where the store
    /// has them (one commit for all); whether each was still the caller's.
    fn complete_jobs(
        &self,
        jobs: &[Job],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<bool>, Error>> + Send
    where
        Self: Sync,
    {
        async move {
            let mut done = Vec::with_capacity(jobs.len());
            for job in jobs {
                done.push(self.complete_job(job, now).await?);
            }
            Ok(done)
        }
    }

    /// Records `job`'s failed attempt: queued again at `retry_at`, or dead when `None`;
    /// `false` if it is no longer the caller's.
    fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Cancels a queued or running job (a running one is not interrupted: its outcome is
    /// discarded); whether it was.
    fn cancel_job(&self, id: Uuid) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Queues a dead job again with its attempts reset, to run at `now`; whether it was
    /// dead.
    fn redrive_job(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The job `id`.
    fn job(&self, id: Uuid) -> impl Future<Output = Result<Option<Job>, Error>> + Send;

    /// Up to `max` jobs in `state` (of `kind`, if given), earliest `run_at` first.
    fn jobs_in(
        &self,
        state: JobState,
        kind: Option<&str>,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Job>, Error>> + Send;

    /// The jobs by kind and state.
    fn job_stats(&self) -> impl Future<Output = Result<Vec<JobStats>, Error>> + Send;

    /// The latest due time (`due_at`) the recurring schedule `name` has enqueued.
    fn last_recurring(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, Error>> + Send;
}

/// A job as the SQL stores keep it: (id, kind, payload, metadata, state, attempts,
/// max_attempts, due_at_us, run_at_us, last_error, locked_by, recurring).
pub type StoredJob = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The columns of a [`StoredJob`], in order, for a `SELECT` or a `RETURNING`.
pub const JOB_COLUMNS: &str = "id, kind, payload, metadata, state, attempts, max_attempts, \
                               due_at_us, run_at_us, last_error, locked_by, recurring";

/// A row of `flext_jobs` read back; a column that does not read is a `DataLoss` error.
pub fn assemble_job(row: StoredJob) -> Result<Job, Error> {
    let (
        id,
        kind,
        payload,
        metadata,
        state,
        attempts,
        max_attempts,
        due_at,
        run_at,
        last_error,
        locked_by,
        recurring,
    ) = row;
    let corrupt = |what: &str| {
        Error::data_loss(
            "CORRUPTED_JOB",
            format!("job {id} has an unreadable {what}"),
        )
    };
    Ok(Job {
        id: id.parse().map_err(|_| corrupt("id"))?,
        payload: payload.into_bytes(),
        metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("metadata"))?,
        state: JobState::parse(&state)?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempt count"))?,
        max_attempts: u32::try_from(max_attempts).map_err(|_| corrupt("attempt limit"))?,
        due_at: DateTime::from_timestamp_micros(due_at).ok_or_else(|| corrupt("due time"))?,
        run_at: DateTime::from_timestamp_micros(run_at).ok_or_else(|| corrupt("run time"))?,
        last_error,
        locked_by,
        recurring,
        kind,
    })
}

/// A new job's columns as the SQL stores write them: (id, kind, payload, metadata,
/// max_attempts, run_at_us, recurring, unique_key); a payload that is not UTF-8 JSON
/// text is an `InvalidArgument` error.
#[allow(clippy::type_complexity)]
pub fn new_job_row(
    job: &NewJob,
) -> Result<
    (
        String,
        String,
        String,
        String,
        i64,
        i64,
        Option<String>,
        Option<String>,
    ),
    Error,
> {
    let payload = String::from_utf8(job.payload.clone()).map_err(|_| {
        Error::invalid_argument(
            "INVALID_PAYLOAD",
            format!("job {} ({}) is not UTF-8 JSON", job.id, job.kind),
        )
    })?;
    let run_at = job.run_at.timestamp_micros();
    Ok((
        job.id.to_string(),
        job.kind.clone(),
        payload,
        serde_json::to_string(&job.metadata)?,
        i64::from(job.max_attempts.max(1)),
        run_at,
        job.recurring.clone(),
        job.recurring.as_ref().map(|r| format!("{r}@{run_at}")),
    ))
}

/// How long a lock lasts, in microseconds (saturating).
pub fn lock_micros(lock_for: Duration) -> i64 {
    i64::try_from(lock_for.as_micros()).unwrap_or(i64::MAX)
}

/// Stats rows (kind, state, count, count with attempts) summed per kind, by kind.
pub fn assemble_stats(rows: Vec<(String, String, i64, i64)>) -> Result<Vec<JobStats>, Error> {
    let mut by_kind: std::collections::BTreeMap<String, JobStats> = Default::default();
    for (kind, state, count, tried) in rows {
        let entry = by_kind.entry(kind.clone()).or_insert_with(|| JobStats {
            kind,
            ..JobStats::default()
        });
        let count = u64::try_from(count).unwrap_or(0);
        match JobState::parse(&state)? {
            JobState::Queued => {
                entry.queued += count;
                entry.retrying += u64::try_from(tried).unwrap_or(0);
            }
            JobState::Running => entry.running += count,
            JobState::Succeeded => entry.succeeded += count,
            JobState::Dead => entry.dead += count,
            JobState::Cancelled => entry.cancelled += count,
        }
    }
    Ok(by_kind.into_values().collect())
}

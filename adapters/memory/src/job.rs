//! Background jobs in memory, under the store's lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::{Job, JobState, JobStats, JobStore, NewJob};
use uuid::Uuid;

use crate::store::State;
use crate::{InMemoryEventStore, MemoryTransaction};

/// A job as the memory store keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    job: Job,
    locked_until: Option<DateTime<Utc>>,
    unique_key: Option<String>,
}

fn unique_key(job: &NewJob) -> Option<String> {
    job.recurring
        .as_ref()
        .map(|r| format!("{r}@{}", job.run_at.timestamp_micros()))
}

/// Inserts `job` unless its unique key is taken; whether it did.
pub(crate) fn insert(state: &mut State, job: &NewJob) -> bool {
    let key = unique_key(job);
    if key.is_some() && state.jobs.values().any(|j| j.unique_key == key) {
        return false;
    }
    let run_at =
        DateTime::from_timestamp_micros(job.run_at.timestamp_micros()).unwrap_or(job.run_at);
    state.jobs.insert(
        job.id,
        Stored {
            job: Job {
                id: job.id,
                kind: job.kind.clone(),
                payload: job.payload.clone(),
                metadata: job.metadata.clone(),
                state: JobState::Queued,
                attempts: 0,
                max_attempts: job.max_attempts.max(1),
                due_at: run_at,
                run_at,
                last_error: None,
                locked_by: None,
                recurring: job.recurring.clone(),
            },
            locked_until: None,
            unique_key: key,
        },
    );
    true
}

/// Whether `stored` is still `job`'s claim.
fn held(stored: &Stored, job: &Job) -> bool {
    stored.job.state == JobState::Running
        && stored.job.locked_by == job.locked_by
        && stored.job.attempts == job.attempts
}

impl JobStore for InMemoryEventStore {
    async fn enqueue(&self, job: &NewJob) -> Result<bool, Error> {
        Ok(insert(&mut self.lock(), job))
    }

    async fn enqueue_in(&self, tx: &mut MemoryTransaction, job: &NewJob) -> Result<bool, Error> {
        let key = unique_key(job);
        let taken = key.is_some()
            && (tx.jobs.iter().any(|j| unique_key(j) == key)
                || self.lock().jobs.values().any(|j| j.unique_key == key));
        if !taken {
            tx.jobs.push(job.clone());
        }
        Ok(!taken)
    }

    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[&str],
        now: DateTime<Utc>,
        max: usize,
        lock_for: Duration,
    ) -> Result<Vec<Job>, Error> {
        let until = now + chrono::Duration::from_std(lock_for).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        let mut ready: Vec<(DateTime<Utc>, Uuid)> = state
            .jobs
            .values()
            .filter(|s| kinds.contains(&s.job.kind.as_str()))
            .filter(|s| match s.job.state {
                JobState::Queued => s.job.run_at <= now,
                JobState::Running => s.locked_until.is_some_and(|u| u < now),
                _ => false,
            })
            .map(|s| (s.job.run_at, s.job.id))
            .collect();
        ready.sort();
        ready.truncate(max);
        let mut claimed = Vec::with_capacity(ready.len());
        for (_, id) in ready {
            if let Some(s) = state.jobs.get_mut(&id) {
                s.job.state = JobState::Running;
                s.job.attempts += 1;
                s.job.locked_by = Some(worker.to_owned());
                s.locked_until = Some(until);
                claimed.push(s.job.clone());
            }
        }
        Ok(claimed)
    }

    async fn complete_job(&self, job: &Job, _now: DateTime<Utc>) -> Result<bool, Error> {
        let mut state = self.lock();
        match state.jobs.get_mut(&job.id) {
            Some(s) if held(s, job) => {
                s.job.state = JobState::Succeeded;
                s.job.locked_by = None;
                s.locked_until = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        _now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut state = self.lock();
        match state.jobs.get_mut(&job.id) {
            Some(s) if held(s, job) => {
                match retry_at {
                    Some(at) => {
                        s.job.state = JobState::Queued;
                        s.job.run_at =
                            DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
                    }
                    None => s.job.state = JobState::Dead,
                }
                s.job.last_error = Some(error.to_owned());
                s.job.locked_by = None;
                s.locked_until = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn cancel_job(&self, id: Uuid) -> Result<bool, Error> {
        let mut state = self.lock();
        match state.jobs.get_mut(&id) {
            Some(s) if matches!(s.job.state, JobState::Queued | JobState::Running) => {
                s.job.state = JobState::Cancelled;
                s.job.locked_by = None;
                s.locked_until = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn redrive_job(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, Error> {
        let mut state = self.lock();
        match state.jobs.get_mut(&id) {
            Some(s) if s.job.state == JobState::Dead => {
                s.job.state = JobState::Queued;
                s.job.attempts = 0;
                s.job.run_at =
                    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn job(&self, id: Uuid) -> Result<Option<Job>, Error> {
        Ok(self.lock().jobs.get(&id).map(|s| s.job.clone()))
    }

    async fn jobs_in(
        &self,
        state: JobState,
        kind: Option<&str>,
        max: usize,
    ) -> Result<Vec<Job>, Error> {
        let mut jobs: Vec<Job> = self
            .lock()
            .jobs
            .values()
            .filter(|s| s.job.state == state && kind.is_none_or(|k| s.job.kind == k))
            .map(|s| s.job.clone())
            .collect();
        jobs.sort_by_key(|j| (j.run_at, j.id));
        jobs.truncate(max);
        Ok(jobs)
    }

    async fn job_stats(&self) -> Result<Vec<JobStats>, Error> {
        let mut rows: std::collections::BTreeMap<(String, &'static str), (i64, i64)> =
            Default::default();
        for s in self.lock().jobs.values() {
            let row = rows
                .entry((s.job.kind.clone(), s.job.state.as_str()))
                .or_default();
            row.0 += 1;
            row.1 += i64::from(s.job.attempts > 0);
        }
        flext_ports::adapter::assemble_stats(
            rows.into_iter()
                .map(|((kind, state), (n, tried))| (kind, state.to_owned(), n, tried))
                .collect(),
        )
    }

    async fn last_recurring(&self, name: &str) -> Result<Option<DateTime<Utc>>, Error> {
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|s| s.job.recurring.as_deref() == Some(name))
            .map(|s| s.job.due_at)
            .max())
    }
}

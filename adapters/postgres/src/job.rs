//! Background jobs in the `flext_jobs` table, claimed with `FOR UPDATE SKIP LOCKED` so workers in several processes compete without waiting on each other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flext_domain::Error;
use flext_ports::adapter::{
    JOB_COLUMNS, StoredJob, assemble_job, assemble_stats, lock_micros, new_job_row,
};
use flext_ports::{Job, JobState, JobStats, JobStore, NewJob};
use uuid::Uuid;

use crate::store::{PgEventStore, PgWriteTransaction, db_error};

/// Inserts `job` through `ex`; `false` when its unique key is taken.
async fn insert<'e>(ex: impl sqlx::PgExecutor<'e>, job: &NewJob) -> Result<bool, Error> {
    let (id, kind, payload, metadata, max_attempts, run_at, recurring, unique_key) =
        new_job_row(job)?;
    let done = sqlx::query(
        "INSERT INTO flext_jobs (id, kind, payload, metadata, state, attempts, max_attempts, \
         due_at_us, run_at_us, recurring, unique_key) VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6, $7, $8) \
         ON CONFLICT ON CONSTRAINT flext_jobs_unique_key_key DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(payload)
    .bind(metadata)
    .bind(max_attempts)
    .bind(run_at)
    .bind(recurring)
    .bind(unique_key)
    .execute(ex)
    .await
    .map_err(|e| db_error("enqueueing a job", e))?;
    Ok(done.rows_affected() == 1)
}

/// Marks `job` succeeded through `ex` while it is still its claimer's.
async fn complete<'e>(ex: impl sqlx::PgExecutor<'e>, job: &Job) -> Result<bool, Error> {
    let done = sqlx::query(
        "UPDATE flext_jobs SET state = 'succeeded', locked_by = NULL, locked_until_us = NULL \
         WHERE id = $1 AND state = 'running' AND locked_by = $2 AND attempts = $3",
    )
    .bind(job.id.to_string())
    .bind(job.locked_by.as_deref())
    .bind(i64::from(job.attempts))
    .execute(ex)
    .await
    .map_err(|e| db_error("completing a job", e))?;
    Ok(done.rows_affected() == 1)
}

impl JobStore for PgEventStore {
    async fn enqueue(&self, job: &NewJob) -> Result<bool, Error> {
        insert(&self.pool, job).await
    }

    async fn enqueue_in(&self, tx: &mut PgWriteTransaction, job: &NewJob) -> Result<bool, Error> {
        insert(tx.connection(), job).await
    }

    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[&str],
        now: DateTime<Utc>,
        max: usize,
        lock_for: Duration,
    ) -> Result<Vec<Job>, Error> {
        let now_us = now.timestamp_micros();
        let sql = format!(
            "UPDATE flext_jobs SET state = 'running', attempts = attempts + 1, locked_by = $1, \
             locked_until_us = $2 WHERE id IN (SELECT id FROM flext_jobs WHERE kind = ANY($3) AND \
             ((state = 'queued' AND run_at_us <= $4) OR (state = 'running' AND locked_until_us < $4)) \
             ORDER BY run_at_us LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLUMNS}"
        );
        let rows: Vec<StoredJob> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(now_us.saturating_add(lock_micros(lock_for)))
            .bind(
                kinds
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect::<Vec<String>>(),
            )
            .bind(now_us)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("claiming jobs", e))?;
        let mut jobs = rows
            .into_iter()
            .map(assemble_job)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| j.run_at);
        Ok(jobs)
    }

    async fn complete_job(&self, job: &Job, _now: DateTime<Utc>) -> Result<bool, Error> {
        complete(&self.pool, job).await
    }

    async fn complete_jobs(&self, jobs: &[Job], _now: DateTime<Utc>) -> Result<Vec<bool>, Error> {
        use flext_ports::ProjectionStore;
        let mut tx: PgWriteTransaction = self.begin().await?;
        let mut done = Vec::with_capacity(jobs.len());
        for job in jobs {
            done.push(complete(tx.connection(), job).await?);
        }
        self.commit(tx).await?;
        Ok(done)
    }

    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        _now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let (state, run_at) = match retry_at {
            Some(at) => (JobState::Queued, at.timestamp_micros()),
            None => (JobState::Dead, job.run_at.timestamp_micros()),
        };
        let done = sqlx::query(
            "UPDATE flext_jobs SET state = $4, run_at_us = $5, last_error = $6, locked_by = NULL, \
             locked_until_us = NULL \
             WHERE id = $1 AND state = 'running' AND locked_by = $2 AND attempts = $3",
        )
        .bind(job.id.to_string())
        .bind(job.locked_by.as_deref())
        .bind(i64::from(job.attempts))
        .bind(state.as_str())
        .bind(run_at)
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("recording a failed job", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel_job(&self, id: Uuid) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE flext_jobs SET state = 'cancelled', locked_by = NULL, locked_until_us = NULL \
             WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("cancelling a job", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn redrive_job(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE flext_jobs SET state = 'queued', attempts = 0, run_at_us = $2 \
             WHERE id = $1 AND state = 'dead'",
        )
        .bind(id.to_string())
        .bind(now.timestamp_micros())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("redriving a job", e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn job(&self, id: Uuid) -> Result<Option<Job>, Error> {
        let row: Option<StoredJob> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM flext_jobs WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("reading a job", e))?;
        row.map(assemble_job).transpose()
    }

    async fn jobs_in(
        &self,
        state: JobState,
        kind: Option<&str>,
        max: usize,
    ) -> Result<Vec<Job>, Error> {
        let filter = if kind.is_some() { "AND kind = $3" } else { "" };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM flext_jobs WHERE state = $1 {filter} \
             ORDER BY run_at_us, id LIMIT $2"
        );
        let mut query = sqlx::query_as::<_, StoredJob>(sqlx::AssertSqlSafe(sql))
            .bind(state.as_str())
            .bind(i64::try_from(max).unwrap_or(i64::MAX));
        if let Some(kind) = kind {
            query = query.bind(kind);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("listing jobs", e))?;
        rows.into_iter().map(assemble_job).collect()
    }

    async fn job_stats(&self) -> Result<Vec<JobStats>, Error> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT kind, state, count(*), coalesce(sum(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), 0)::bigint \
             FROM flext_jobs GROUP BY kind, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("counting jobs", e))?;
        assemble_stats(rows)
    }

    async fn last_recurring(&self, name: &str) -> Result<Option<DateTime<Utc>>, Error> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(due_at_us) FROM flext_jobs WHERE recurring = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| db_error("reading a recurring job's last due time", e))?;
        Ok(last.and_then(DateTime::from_timestamp_micros))
    }
}

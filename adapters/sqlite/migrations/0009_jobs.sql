-- Background jobs: queued, claimed by workers (locked until a time, so a dead worker's
-- job is taken again), retried, dead-lettered, cancelled. Times in microseconds since
-- the Unix epoch (due_at_us: when it was first due, kept; run_at_us: when it may run
-- next); payload and metadata as JSON. A recurring schedule's job has a unique
-- key (schedule and due time), so each due time is enqueued once.
CREATE TABLE IF NOT EXISTS flext_jobs (
    id              TEXT   NOT NULL PRIMARY KEY,
    kind            TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    metadata        TEXT   NOT NULL,
    state           TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    max_attempts    BIGINT NOT NULL,
    due_at_us       BIGINT NOT NULL,
    run_at_us       BIGINT NOT NULL,
    locked_by       TEXT,
    locked_until_us BIGINT,
    last_error      TEXT,
    recurring       TEXT,
    unique_key      TEXT   UNIQUE
);
CREATE INDEX IF NOT EXISTS flext_jobs_ready ON flext_jobs (run_at_us) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS flext_jobs_locked ON flext_jobs (locked_until_us) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS flext_jobs_state ON flext_jobs (state, kind);
CREATE INDEX IF NOT EXISTS flext_jobs_recurring ON flext_jobs (recurring, due_at_us)
    WHERE recurring IS NOT NULL;

-- Stream lifecycle (ADR 0007). A row only for streams whose life changed (deleted,
-- tombstoned, truncated, archived) or that have a retention policy; appends and reads
-- probe it by primary key.
--   state: 0 live, 1 deleted (soft), 2 tombstoned (hard).
--   version: the stream's version when its life last changed (a floor for numbering
--     once its events are gone).
--   life_start: the first version of its current life (a revival starts after the
--     deleted version); truncated_before: the first version truncation kept;
--   archived_below: versions below it are in flext_archive.
-- Lifecycle operations lock flext_events in SHARE ROW EXCLUSIVE mode: they wait for
-- appends in flight, and an append waiting for them takes its snapshot after they commit.
CREATE TABLE flext_streams (
    stream_id        TEXT     PRIMARY KEY,
    state            INTEGER  NOT NULL DEFAULT 0,
    version          BIGINT   NOT NULL DEFAULT 0,
    life_start       BIGINT   NOT NULL DEFAULT 1,
    truncated_before BIGINT   NOT NULL DEFAULT 1,
    archived_below   BIGINT   NOT NULL DEFAULT 1,
    max_count        BIGINT,
    max_age_ms       BIGINT,
    archive_expired  BOOLEAN  NOT NULL DEFAULT false
);

-- Archived events: the columns of flext_events, keyed by stream and version (stream reads
-- read through; read-all does not).
CREATE TABLE flext_archive (
    position       BIGINT      NOT NULL,
    event_id       UUID        NOT NULL,
    stream_id      TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    payload        BYTEA       NOT NULL,
    correlation_id UUID,
    causation_id   UUID,
    headers        TEXT,
    recorded_at    TIMESTAMPTZ NOT NULL,
    tags           TEXT[],
    PRIMARY KEY (stream_id, version)
);

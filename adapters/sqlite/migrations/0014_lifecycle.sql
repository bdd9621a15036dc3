-- Stream lifecycle (ADR 0007). A row only for streams whose life changed (deleted,
-- tombstoned, truncated, archived) or that have a retention policy; appends and reads
-- probe it by primary key.
--   state: 0 live, 1 deleted (soft), 2 tombstoned (hard).
--   version: the stream's version when its life last changed (a floor for numbering
--     once its events are gone).
--   life_start: the first version of its current life (a revival starts after the
--     deleted version); truncated_before: the first version truncation kept;
--   archived_below: versions below it are in flext_archive.
CREATE TABLE flext_streams (
    stream_id        TEXT    PRIMARY KEY,
    state            INTEGER NOT NULL DEFAULT 0,
    version          INTEGER NOT NULL DEFAULT 0,
    life_start       INTEGER NOT NULL DEFAULT 1,
    truncated_before INTEGER NOT NULL DEFAULT 1,
    archived_below   INTEGER NOT NULL DEFAULT 1,
    max_count        INTEGER,
    max_age_ms       INTEGER,
    archive_expired  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Archived events: the columns of flext_events, keyed by stream and version (stream reads
-- read through; read-all does not).
CREATE TABLE flext_archive (
    position       INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    correlation_id BLOB,
    causation_id   BLOB,
    headers        TEXT,
    recorded_at    INTEGER NOT NULL,
    tags           TEXT,
    PRIMARY KEY (stream_id, version)
) WITHOUT ROWID;

-- The highest position ever given: removing the newest events must not let the next
-- append take their positions again (a reader past them would miss it).
CREATE TABLE flext_counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

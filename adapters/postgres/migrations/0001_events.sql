-- flext's PostgreSQL event store.
--
-- position = (writing transaction's xid8 << 20) + index of the event among those the
-- transaction appended (1, 2, ...). Readers
-- return only rows whose transaction is older than every transaction still running
-- (pg_snapshot_xmin), so an event that commits later always sorts after what a reader
-- has seen. See ARCHITECTURE.md, "Gap-safe read-all".
CREATE TABLE flext_events (
    position       BIGINT      PRIMARY KEY,
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
    CONSTRAINT flext_events_event_id_key UNIQUE (event_id),
    CONSTRAINT flext_events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX flext_events_correlation ON flext_events (correlation_id)
    WHERE correlation_id IS NOT NULL;

CREATE TABLE flext_snapshots (
    stream_id      TEXT    PRIMARY KEY,
    version        BIGINT  NOT NULL,
    schema_version INTEGER NOT NULL,
    state          BYTEA   NOT NULL
);

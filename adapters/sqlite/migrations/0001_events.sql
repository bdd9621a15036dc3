-- flext's SQLite event store. Positions are SQLite rowids: one writer at a time assigns
-- them inside its transaction, so commit order is position order.
CREATE TABLE flext_events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL UNIQUE,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    correlation_id BLOB,
    causation_id   BLOB,
    headers        TEXT,
    recorded_at    INTEGER NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE INDEX flext_events_correlation ON flext_events (correlation_id)
    WHERE correlation_id IS NOT NULL;

CREATE TABLE flext_snapshots (
    stream_id      TEXT    PRIMARY KEY,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          BLOB    NOT NULL
);

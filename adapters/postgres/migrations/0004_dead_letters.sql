-- Events a projection could not handle, parked so it could go on; redriven from here.
CREATE TABLE flext_dead_letters (
    projection TEXT        NOT NULL,
    event_id   UUID        NOT NULL,
    position   BIGINT      NOT NULL,
    stream_id  TEXT        NOT NULL,
    version    BIGINT      NOT NULL,
    event_type TEXT        NOT NULL,
    error      TEXT        NOT NULL,
    attempts   INTEGER     NOT NULL,
    parked_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (projection, event_id)
);

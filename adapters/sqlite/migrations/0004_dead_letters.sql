-- Events a projection could not handle, parked so it could go on; redriven from here.
CREATE TABLE flext_dead_letters (
    projection TEXT    NOT NULL,
    event_id   BLOB    NOT NULL,
    position   INTEGER NOT NULL,
    stream_id  TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    parked_at  TEXT    NOT NULL,
    PRIMARY KEY (projection, event_id)
);

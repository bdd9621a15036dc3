-- The ids of the messages each inbox has handled, written in the transaction of the
-- handler's effects: a message delivered again finds its id here and is acknowledged.
CREATE TABLE flext_inbox (
    consumer    TEXT   NOT NULL,
    message_id  TEXT   NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX flext_inbox_received ON flext_inbox (consumer, received_at);

-- Messages an inbox gave up on (after its deliveries, or refused outright).
CREATE TABLE flext_inbox_dead_letters (
    consumer   TEXT        NOT NULL,
    message_id TEXT        NOT NULL,
    subject    TEXT        NOT NULL,
    headers    TEXT        NOT NULL,
    payload    BLOB        NOT NULL,
    error      TEXT        NOT NULL,
    deliveries INTEGER     NOT NULL,
    parked_at  TEXT        NOT NULL,
    PRIMARY KEY (consumer, message_id)
);

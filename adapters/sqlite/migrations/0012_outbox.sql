-- Messages for other services that are not events, written in the transaction of the
-- business data; positions follow commit order (one writer). Removed once the relay
-- published them. AUTOINCREMENT: a position is never taken twice, also after removal.
CREATE TABLE flext_outbox (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    headers    TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

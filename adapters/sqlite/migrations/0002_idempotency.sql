-- First outcomes of commands by command id (the idempotency behavior's records).
CREATE TABLE flext_idempotency (
    command_id   BLOB PRIMARY KEY,
    message_type TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'done')),
    claimed_at   INTEGER NOT NULL,
    output       BLOB,
    error        TEXT
);

-- Control of consumers from outside their process: requests an operator stored, taken and
-- answered by the consumer's owner.
CREATE TABLE flext_control (
    id           UUID        PRIMARY KEY,
    consumer     TEXT        NOT NULL,
    action       TEXT        NOT NULL,
    requested_by TEXT        NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    state        TEXT        NOT NULL,
    taken_by     TEXT,
    finished_at  TIMESTAMPTZ,
    result       TEXT,
    error        TEXT
);
CREATE INDEX flext_control_pending ON flext_control (requested_at) WHERE state = 'pending';

-- Paused consumers: a row while paused, whichever instance owns the consumer.
CREATE TABLE flext_consumer_pauses (
    consumer  TEXT        PRIMARY KEY,
    paused_by TEXT        NOT NULL,
    paused_at TIMESTAMPTZ NOT NULL
);

-- When each consumer's checkpoint last moved, for stall alerts (a consumer whose position
-- has not moved for a while although events wait).
ALTER TABLE flext_checkpoints ADD COLUMN moved_at TIMESTAMPTZ;

-- Payload fields an application marks personal, per event type: operators' views mask
-- them unless asked to show them.
CREATE TABLE flext_personal_fields (
    event_type TEXT NOT NULL,
    field      TEXT NOT NULL,
    PRIMARY KEY (event_type, field)
);

-- Payloads an operator fixed before redriving a dead letter; the stored event is never
-- changed (it stays the original, for audit), the newest edit is what the redrive hands
-- the consumer.
CREATE TABLE flext_dead_letter_edits (
    projection TEXT        NOT NULL,
    event_id   UUID        NOT NULL,
    payload    BYTEA       NOT NULL,
    edited_by  TEXT        NOT NULL,
    edited_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (projection, event_id, edited_at)
);

-- Scheduled messages (deadlines, scheduled commands): one pending message per key,
-- due_us in microseconds since the Unix epoch, metadata as JSON.
CREATE TABLE IF NOT EXISTS flext_schedule (
    key      TEXT   NOT NULL PRIMARY KEY,
    id       TEXT   NOT NULL,
    due_us   BIGINT NOT NULL,
    message  TEXT   NOT NULL,
    payload  TEXT   NOT NULL,
    metadata TEXT   NOT NULL
);
CREATE INDEX IF NOT EXISTS flext_schedule_due ON flext_schedule (due_us);

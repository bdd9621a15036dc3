-- Ownership of checkpointed consumers: a consumer's checkpoint row is also its lease
-- (owner, epoch, expiry), so a fenced checkpoint write checks and writes in one statement.
-- Times are microseconds since the Unix epoch (every process on one file shares a clock).
ALTER TABLE flext_checkpoints ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE flext_checkpoints ADD COLUMN owner_id BLOB;
ALTER TABLE flext_checkpoints ADD COLUMN owner_name TEXT;
ALTER TABLE flext_checkpoints ADD COLUMN owner_host TEXT;
ALTER TABLE flext_checkpoints ADD COLUMN owner_pid INTEGER;
ALTER TABLE flext_checkpoints ADD COLUMN acquired_at INTEGER;
ALTER TABLE flext_checkpoints ADD COLUMN expires_at INTEGER;

-- Instances that announced themselves (by heartbeat) to share the consumers fairly.
CREATE TABLE flext_instances (
    id         BLOB    PRIMARY KEY,
    name       TEXT    NOT NULL,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

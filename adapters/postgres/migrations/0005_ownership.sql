-- Ownership of checkpointed consumers: a consumer's checkpoint row is also its lease
-- (owner, epoch, expiry), so a fenced checkpoint write checks and writes in one statement.
-- Expiry is judged by the server's clock_timestamp(), never a client's clock.
ALTER TABLE flext_checkpoints
    ADD COLUMN epoch       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN owner_id    UUID,
    ADD COLUMN owner_name  TEXT,
    ADD COLUMN owner_host  TEXT,
    ADD COLUMN owner_pid   INTEGER,
    ADD COLUMN acquired_at TIMESTAMPTZ,
    ADD COLUMN expires_at  TIMESTAMPTZ;

-- Instances that announced themselves (by heartbeat) to share the consumers fairly.
CREATE TABLE flext_instances (
    id         UUID        PRIMARY KEY,
    name       TEXT        NOT NULL,
    host       TEXT        NOT NULL,
    pid        INTEGER     NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

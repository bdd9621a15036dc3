-- Process managers' instances: the state (JSON) of each running instance, by manager
-- and association, written in the transaction that moves the manager's checkpoint.
CREATE TABLE IF NOT EXISTS flext_processes (
    manager     TEXT   NOT NULL,
    association TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (manager, association)
);

-- The migration steps each read model has run (flext_ports::sql::migrate, a projection's
-- MIGRATIONS): created with the store, so projections starting together never race to
-- create it.
CREATE TABLE IF NOT EXISTS flext_read_model_migrations (
    name    TEXT   NOT NULL,
    version BIGINT NOT NULL,
    script  TEXT   NOT NULL,
    PRIMARY KEY (name, version)
);

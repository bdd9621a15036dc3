-- How far each named reader of the global order has got.
CREATE TABLE flext_checkpoints (
    name     TEXT   PRIMARY KEY,
    position BIGINT NOT NULL
);

-- Crypto-shredding: a data key per subject, wrapped by a master key the store never
-- sees, and the keys destroyed with a subject's (its streams' snapshot keys).
CREATE TABLE flext_data_keys (
    name       TEXT    PRIMARY KEY,
    wrapped    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE flext_data_key_links (
    subject   TEXT NOT NULL,
    dependent TEXT NOT NULL,
    PRIMARY KEY (subject, dependent)
) WITHOUT ROWID;

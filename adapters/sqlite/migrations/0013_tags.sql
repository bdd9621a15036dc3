-- Tags (dynamic consistency boundaries). On the event a JSON array, NULL when it has
-- none (untagged events cost one NULL); the index rows below are what tagged reads and
-- append conditions search, written in the append's transaction.
ALTER TABLE flext_events ADD COLUMN tags TEXT;

CREATE TABLE flext_event_tags (
    tag      TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tag, position)
) WITHOUT ROWID;

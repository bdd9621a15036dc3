-- Tags (dynamic consistency boundaries): NULL when an event has none, so untagged events
-- cost nothing more to write and read; a GIN index over the tagged rows only.
ALTER TABLE flext_events ADD COLUMN tags TEXT[];

CREATE INDEX flext_events_tags ON flext_events USING gin (tags) WHERE tags IS NOT NULL;

-- The keys of committed conditional appends (a hash of an event type or a tag, or 0 for
-- a condition on every event) with the first position of the newest one. An append in a
-- transaction that took its position early checks here that no conditional append on
-- one of its keys committed after that position (it would otherwise land before an
-- event whose condition never saw it). See ADR 0008.
CREATE TABLE flext_dcb_conditions (
    key      BIGINT PRIMARY KEY,
    position BIGINT NOT NULL
);

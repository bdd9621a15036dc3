-- Messages for other services that are not events, written in the transaction of the
-- business data. A position is taken as an event's is (the transaction id shifted left by
-- 20 bits, plus a count within the transaction), so a gap-safe read stops below the
-- oldest open transaction. Removed once the relay published them.
CREATE TABLE flext_outbox (
    position   BIGINT PRIMARY KEY,
    message_id TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    headers    TEXT   NOT NULL,
    payload    BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);

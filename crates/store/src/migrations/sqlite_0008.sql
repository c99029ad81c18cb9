-- veto schema 8 (SQLite): the webhook outbox.
-- One row per ledger event per configured endpoint, written in the same
-- transaction as the event, so a change that committed is always told and
-- one rolled back never is. status: pending (to deliver; next_attempt_at
-- says when), delivered, failed (retries ran out; visible until retried)
-- or gone (the receiver answered 410). A claim (claimed_by until
-- claimed_until) keeps two workers off the same row; one that crashed
-- leaves a claim that runs out. payload is the exact JSON body sent; an
-- erasure takes the address out of every row of that contact.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        INTEGER NOT NULL,
    contact_id      INTEGER NOT NULL,
    endpoint        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    pending_since   INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    claimed_by      TEXT,
    claimed_until   INTEGER,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_contact ON webhook_deliveries (contact_id);

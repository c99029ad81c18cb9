-- veto schema 6 (PostgreSQL): provider feedback webhooks (SES, SendGrid, Postmark).
-- One row per provider event taken, written in the same transaction as the
-- ledger events (and inbound_reports rows) it led to: the same event
-- delivered again finds its row and records nothing. No personal data here;
-- the evidence per recipient is in inbound_reports.
CREATE TABLE provider_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    -- What the provider said it was (bounce, complaint, spamreport, ...).
    event_type  TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX provider_events_received ON provider_events (received_at);

-- veto schema 4 (SQLite): relayed copies, the service-mail brake.
-- Which (message, recipient) pairs upstream has accepted, so that a tool's
-- retry after a temporary failure delivers only the missing copies. The
-- message is known by its Message-ID (veto makes one from the content's
-- hash when the message has none). Kept for a few days, then pruned.
CREATE TABLE relayed (
    message_key    TEXT NOT NULL,
    recipient      TEXT NOT NULL,
    relayed_at     INTEGER NOT NULL,
    upstream_reply TEXT,
    PRIMARY KEY (message_key, recipient)
);
CREATE INDEX relayed_at ON relayed (relayed_at);
-- Who holds an API key, and what its service mail is by default.
ALTER TABLE api_keys ADD COLUMN owner TEXT;
ALTER TABLE api_keys ADD COLUMN default_service TEXT;
-- Service mail sent, per sender (`api-key:<prefix>`), for the bulk brake.
CREATE TABLE service_volume (
    actor      TEXT NOT NULL,
    sent_at    INTEGER NOT NULL,
    recipients INTEGER NOT NULL
);
CREATE INDEX service_volume_actor ON service_volume (actor, sent_at);
-- Service sends held by the bulk brake, and the DPO's approval.
-- AUTOINCREMENT: ids are quoted to DPOs and never reused.
CREATE TABLE approvals (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    actor          TEXT NOT NULL,
    owner          TEXT,
    class          TEXT NOT NULL,
    recipients     INTEGER NOT NULL,
    window_count   INTEGER NOT NULL,
    requested_at   INTEGER NOT NULL,
    approved_by    TEXT,
    approver_owner TEXT,
    approved_at    INTEGER
);
CREATE INDEX approvals_actor ON approvals (actor, requested_at);

-- veto schema 5 (SQLite): campaigns and their recipient queue.
-- AUTOINCREMENT: campaign ids are quoted to staff and never reused.
CREATE TABLE campaigns (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    topic_id         INTEGER NOT NULL REFERENCES topics (id),
    from_name        TEXT,
    from_address     TEXT NOT NULL,
    subject          TEXT NOT NULL,
    html             TEXT,
    text             TEXT NOT NULL,
    -- SHA-256 of the templates: receipts name the version that was sent.
    template_version TEXT NOT NULL,
    -- draft, scheduled, sending, paused, cancelled, done
    state            TEXT NOT NULL,
    -- Why it is paused (by whom, or which brake), or why it stopped.
    state_reason     TEXT,
    scheduled_at     INTEGER,
    -- Messages per second in all, and to any one domain; NULL: unlimited.
    rate             REAL,
    domain_rate      REAL,
    concurrency      INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);
-- One row per recipient of a started campaign: the queue lives in the
-- store, so a crash or a restart resumes where the campaign was.
-- state: queued, claimed (by a node, until its lease ends), sent, refused
-- (the guard said no; reason is the refusal's code), failed (the MTA
-- refused the message for good, or it could not be made).
CREATE TABLE campaign_recipients (
    campaign_id INTEGER NOT NULL,
    contact_id  INTEGER NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    claimed_by  TEXT,
    claimed_at  INTEGER,
    done_at     INTEGER,
    PRIMARY KEY (campaign_id, contact_id)
);
CREATE INDEX campaign_recipients_queue ON campaign_recipients (campaign_id, state, reason, contact_id);
CREATE INDEX campaign_recipients_done ON campaign_recipients (done_at);
-- Feedback since a campaign started (unsubscribes, bounces, complaints).
CREATE INDEX events_kind_recorded ON events (kind, recorded_at);

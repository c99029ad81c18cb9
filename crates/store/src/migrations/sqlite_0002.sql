-- veto schema 2 (SQLite): double opt-in signups.
-- A pending signup: what the person asked for on the organisation's form,
-- with that form's evidence. Confirming it (the link mailed to the address)
-- records the grant, with the confirmation's own IP and user agent.
-- AUTOINCREMENT: a signup id travels in confirmation tokens, so it must
-- never be handed out twice, even after a row is deleted.
CREATE TABLE signups (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    email_key          TEXT NOT NULL,
    email              TEXT NOT NULL,
    topic_id           INTEGER,
    wording_id         INTEGER NOT NULL,
    ip                 TEXT,
    user_agent         TEXT,
    form_url           TEXT,
    requested_at       INTEGER NOT NULL,
    confirmed_at       INTEGER,
    confirm_ip         TEXT,
    confirm_user_agent TEXT,
    event_id           INTEGER
);
CREATE INDEX signups_email ON signups (email_key);
-- When a confirmation was last mailed to an address (by the suppression
-- list's keyed hash of it): at most one a day, whoever asks.
CREATE TABLE signup_mails (
    addr_hash    BLOB PRIMARY KEY,
    last_sent_at INTEGER NOT NULL
);

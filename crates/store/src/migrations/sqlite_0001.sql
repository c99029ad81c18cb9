-- veto schema 1 (SQLite). Times are microseconds since the Unix epoch (UTC).
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE token_keys (
    id         INTEGER PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
CREATE TABLE topics (
    id            INTEGER PRIMARY KEY,
    key           TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    product_group TEXT,
    created_at    INTEGER NOT NULL
);
CREATE TABLE wordings (
    id         INTEGER PRIMARY KEY,
    text       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE contacts (
    id              INTEGER PRIMARY KEY,
    email_key       TEXT UNIQUE,
    email           TEXT,
    name            TEXT,
    phone           TEXT,
    postal_address  TEXT,
    attributes      TEXT NOT NULL DEFAULT '{}',
    jurisdictions   TEXT NOT NULL DEFAULT '',
    subscriber_type TEXT NOT NULL DEFAULT 'individual',
    created_at      INTEGER NOT NULL,
    erased_at       INTEGER
);
CREATE TABLE personal_data (
    id         INTEGER PRIMARY KEY,
    contact_id INTEGER NOT NULL,
    salt       BLOB NOT NULL,
    body       TEXT NOT NULL,
    hash       BLOB NOT NULL
);
CREATE INDEX personal_data_contact ON personal_data (contact_id);
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    partition       INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    contact_id      INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    scope_topic     INTEGER,
    channel         TEXT,
    source          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    at              INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    wording_id      INTEGER,
    product_group   TEXT,
    order_ref       TEXT,
    opt_out_offered INTEGER,
    form_url        TEXT,
    until_at        INTEGER,
    freq_max        INTEGER,
    freq_per        TEXT,
    pd_id           INTEGER,
    pd_hash         BLOB,
    prev_hash       BLOB NOT NULL,
    hash            BLOB NOT NULL,
    UNIQUE (partition, seq)
);
CREATE INDEX events_contact ON events (contact_id, at);
CREATE TABLE chain_heads (
    partition INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      BLOB NOT NULL
);
CREATE TABLE consent_state (
    contact_id      INTEGER NOT NULL,
    fact_key        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    scope_topic     INTEGER,
    channel         TEXT,
    event_id        INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    source          TEXT NOT NULL,
    product_group   TEXT,
    opt_out_offered INTEGER,
    until_at        INTEGER,
    freq_max        INTEGER,
    freq_per        TEXT,
    PRIMARY KEY (contact_id, fact_key)
);
CREATE TABLE suppressions (
    addr_hash  BLOB NOT NULL,
    scope      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (addr_hash, scope)
);
CREATE TABLE api_keys (
    id            INTEGER PRIMARY KEY,
    prefix        TEXT NOT NULL,
    hash          BLOB NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    default_topic TEXT,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE TABLE receipts (
    id               INTEGER PRIMARY KEY,
    message_id       TEXT NOT NULL,
    contact_id       INTEGER,
    recipient        TEXT,
    subject          TEXT,
    content_hash     TEXT,
    template_version TEXT,
    class            TEXT NOT NULL,
    channel          TEXT NOT NULL,
    allowed          INTEGER NOT NULL,
    rule             TEXT NOT NULL,
    reason           TEXT,
    event_id         INTEGER,
    checked_at       INTEGER NOT NULL,
    outcome          TEXT
);
CREATE INDEX receipts_message ON receipts (message_id);
CREATE INDEX receipts_contact ON receipts (contact_id, checked_at);
-- Ids handed out, so that none is ever reused (personal_data rows are
-- deleted on erasure while the ledger still refers to their old ids).
CREATE TABLE id_counters (
    name TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
INSERT INTO id_counters (name, last) VALUES ('contacts', 0), ('events', 0), ('personal_data', 0);

-- veto schema 7 (SQLite): staff users, the staff audit trail, idempotency keys.
-- Staff who sign in to the admin UI. The password is kept only as an
-- argon2id hash (PHC string); a disabled user cannot sign in. AUTOINCREMENT:
-- user ids appear in the audit trail and are never reused.
CREATE TABLE staff_users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
-- Every staff action (API calls that change something, admin commands):
-- who, what, on what, when, and a short JSON detail without secrets. One
-- append-only hash chain: each row's hash covers the previous row's hash
-- and every column; the head (last seq and hash) is kept in
-- staff_audit_head, so deleting the newest rows shows too.
CREATE TABLE staff_audit (
    seq       INTEGER PRIMARY KEY,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    detail    TEXT NOT NULL,
    at        INTEGER NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE TABLE staff_audit_head (
    id   INTEGER PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
-- Idempotency-Key: a POST that creates something, remembered per caller,
-- so a retry gets the first answer instead of a second creation. status is
-- NULL while the first request is still running.
CREATE TABLE idempotency_keys (
    caller       TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER,
    body         TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Data-subject requests (GDPR Arts 15 to 21) and their deadlines
-- (Art 12(3): one month from receipt, extendable once by two further
-- months). The status is derived from the times below; `email` is the
-- address the person gave, blanked when an erasure is answered, when the
-- contact is erased, and by the retention purge.
CREATE TABLE subject_requests (
    id                  INTEGER PRIMARY KEY,
    kind                TEXT NOT NULL,    -- access, portability, erasure, rectification, objection, restriction
    contact_id          INTEGER REFERENCES contacts (id),
    email               TEXT,
    via                 TEXT NOT NULL,    -- email, letter, phone, web_form, preference_centre
    note                TEXT,
    received_at         INTEGER NOT NULL,
    due_at              INTEGER NOT NULL, -- the last second of the day one calendar month after receipt (UTC)
    extended_due_at     INTEGER,
    extension_reason    TEXT,
    extended_at         INTEGER,
    extended_by         TEXT,
    identity_checked_at INTEGER,
    identity_checked_by TEXT,
    identity_how        TEXT,
    answered_at         INTEGER,
    answered_by         TEXT,
    outcome             TEXT,             -- done or refused
    refusal_reason      TEXT,
    created_by          TEXT NOT NULL,
    created_at          INTEGER NOT NULL
);
CREATE INDEX subject_requests_contact ON subject_requests (contact_id);
CREATE INDEX subject_requests_open ON subject_requests (answered_at, due_at);

-- veto schema 3 (SQLite): mail received at veto's own addresses.
-- One row per mail the inbound listener acted on: a mailto unsubscribe
-- (unsubscribe+TOKEN@), a bounce (RFC 3464 DSN) or a complaint (RFC 5965
-- ARF) to bounces+TOKEN@. It is the evidence behind the ledger event it led
-- to (event_id), and the memory that makes a second delivery of the same
-- mail record nothing: report_key is the mail's Message-ID, or a hash of
-- its body when it has none. A soft bounce waits here without an event
-- until enough of them within the window make a hard bounce; then they all
-- point at that event. Erasure deletes a contact's rows (they hold
-- addresses and diagnostics).
CREATE TABLE inbound_reports (
    id            INTEGER PRIMARY KEY,
    contact_id    INTEGER NOT NULL,
    report_key    TEXT NOT NULL,
    kind          TEXT NOT NULL,
    event_id      INTEGER,
    received_at   INTEGER NOT NULL,
    peer_ip       TEXT,
    envelope_from TEXT,
    envelope_to   TEXT NOT NULL,
    message_id    TEXT,
    status        TEXT,
    diagnostic    TEXT,
    reporting_mta TEXT,
    feedback_type TEXT,
    UNIQUE (contact_id, report_key)
);
CREATE INDEX inbound_reports_kind ON inbound_reports (contact_id, kind, received_at);

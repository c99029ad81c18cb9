-- veto schema 11 (SQLite): retention ([retention] in veto.toml, `veto purge`).
-- The retention purge blanks the evidence (IP address, user agent) in a
-- ledger event's personal-data row once the event is older than
-- [retention] evidence. The event itself is untouched, so the ledger's hash
-- chain still verifies. `hash` stays the hash the event names; the row then
-- holds the rest (address, name) under a new salt, with its hash in
-- `purged_hash`, which `veto audit verify` checks instead.
ALTER TABLE personal_data ADD COLUMN evidence_purged_at INTEGER;
ALTER TABLE personal_data ADD COLUMN purged_hash BLOB;
-- Receipts older than [retention] receipts are deleted in steps, by age.
CREATE INDEX receipts_checked ON receipts (checked_at);

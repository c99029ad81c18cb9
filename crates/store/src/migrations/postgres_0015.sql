-- veto schema 15 (PostgreSQL): the relay memory moves into the receipts.
-- A copy's receipt says when upstream accepted it; a tool's retry of the
-- message sends only the copies whose receipts say nothing of the kind.
-- This saves a table and its random-keyed index on every relayed copy.
ALTER TABLE receipts ADD COLUMN relayed_at BIGINT;
UPDATE receipts SET relayed_at = r.relayed_at
FROM relayed r
WHERE r.message_key = receipts.message_id AND r.recipient = receipts.recipient
  AND r.upstream_reply IS NOT DISTINCT FROM receipts.outcome;
-- Only the marks not yet forgotten ([retention] relay_records clears them).
CREATE INDEX receipts_relayed ON receipts (relayed_at) WHERE relayed_at IS NOT NULL;
DROP TABLE relayed;

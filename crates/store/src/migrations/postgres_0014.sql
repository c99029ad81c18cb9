-- Admin UI sessions. The cookie holds a random token; only its SHA-256 is
-- kept. A session ends at logout, when it has been idle too long, at its
-- absolute expiry, and when its user is disabled or given a new password.
CREATE TABLE staff_sessions (
    token_hash   TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES staff_users (id),
    csrf         TEXT NOT NULL,   -- the token every form of this session carries
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX staff_sessions_user ON staff_sessions (user_id);

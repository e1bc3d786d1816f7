-- Caller-token revocations (issue 18): one row per revocation key (a JSON array naming the
-- tokens: ["jti", org, jti] or ["user", org, user]), the record as JSON, and its expiry for
-- the purge.
CREATE TABLE token_revocations (
    key text PRIMARY KEY,
    rec text NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX token_revocations_expires_at ON token_revocations (expires_at);

-- OAuth grants that must survive a restart: the latest rotated refresh token
-- (encrypted with the site's key, never in clear), the hash of the refresh token
-- the site file held when it was saved (a new configured one wins), and whether
-- the grant needs an administrator (revoked, consent missing, MFA required).
CREATE TABLE oauth_grants (
    grant_key          TEXT PRIMARY KEY,
    state              TEXT NOT NULL,
    refresh_token      BYTEA,
    configured_sha256  TEXT,
    reason             TEXT,
    updated_at         TIMESTAMPTZ NOT NULL
);

-- Retention and erasure (issue 13; docs/operations.md, "Retention" and "Erasure").
--
-- An interaction whose raw message was purged (by the retention job, or by an
-- erasure because the bytes named the erased address) keeps its row: raw_id
-- becomes NULL and these say when and why, so a download can say so clearly.
ALTER TABLE interactions ADD COLUMN raw_purged_at TEXT;
ALTER TABLE interactions ADD COLUMN raw_purged_reason TEXT;
-- The retention job removes interactions by when they were stored.
CREATE INDEX interactions_stored_at ON interactions (stored_at);

-- The dedupe keys of interactions that are gone (erased, or purged whole by
-- retention), kept only as a keyed hash (HMAC-SHA256 with the store's own
-- secret below): the same mail still on a server is recognised and not
-- imported again, and nothing here names a person, a subject or a server key.
CREATE TABLE dedupe_tombstones (
    key_hash    TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);

-- One row per erasure run (never a dry run): when, how many rows of each table
-- (JSON object), what each plugin erased (JSON object; a failed plugin says so),
-- whether it was complete, and the keyed hash of the address, never the address.
CREATE TABLE erasure_audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    address_hash  TEXT NOT NULL,
    complete      INTEGER NOT NULL,
    counts        TEXT NOT NULL,
    plugins       TEXT NOT NULL
);
CREATE INDEX erasure_audit_address_hash ON erasure_audit (address_hash);

-- Secrets the store makes for itself (random, made on first use): "erasure" is
-- the key of the tombstone and audit hashes, so they cannot be checked without
-- this database.
CREATE TABLE store_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

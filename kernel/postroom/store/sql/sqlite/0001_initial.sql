-- The interaction store, SQLite dialect. Keep in step with postroom_postgresql/sql/postgresql/0001_initial.sql (the PostgreSQL
-- plugin; tests/store/test_schemas.py compares the two databases' catalogues):
-- same tables, columns and versions; only the types differ (timestamps are fixed-width
-- ISO-8601 UTC text, so text order is time order; booleans are 0/1).

CREATE TABLE raw_messages (
    id          TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX raw_messages_sha256 ON raw_messages (sha256);

-- A raw message in 1 MiB pieces: copied in and out without ever being whole in memory.
CREATE TABLE raw_chunks (
    raw_id  TEXT NOT NULL REFERENCES raw_messages (id),
    seq     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (raw_id, seq)
);

CREATE TABLE interactions (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order, to break ties
    id             TEXT NOT NULL UNIQUE,
    tenant_id      INTEGER NOT NULL,
    type           TEXT NOT NULL,
    subtype        TEXT NOT NULL,
    status         TEXT NOT NULL,
    parent_id      TEXT,
    mailbox        TEXT,
    message_id     TEXT,
    subject        TEXT NOT NULL,
    from_addr      TEXT,
    to_addrs       TEXT NOT NULL,  -- JSON list
    cc_addrs       TEXT NOT NULL,  -- JSON list
    body_text      TEXT,
    body_html      TEXT,
    attachments    TEXT NOT NULL,  -- JSON list of objects
    attached_data  TEXT NOT NULL,  -- JSON object
    copy_key       TEXT,
    raw_sha256     TEXT,
    created_at     TEXT NOT NULL,
    raw_id         TEXT REFERENCES raw_messages (id),
    stored_at      TEXT NOT NULL
);
CREATE INDEX interactions_message_id ON interactions (message_id);
CREATE INDEX interactions_parent_id ON interactions (parent_id);
CREATE INDEX interactions_mailbox ON interactions (mailbox, created_at);
CREATE INDEX interactions_created_at ON interactions (created_at);

-- src:<mailbox>:<source key>, sha:<sha256>, mid:<Message-ID>, each #<copy key> for copies.
CREATE TABLE dedupe_keys (
    key             TEXT PRIMARY KEY,
    interaction_id  TEXT NOT NULL REFERENCES interactions (id),
    created_at      TEXT NOT NULL
);

CREATE TABLE cursors (
    mailbox     TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    fence       INTEGER
);

CREATE TABLE handoffs (
    interaction_id  TEXT PRIMARY KEY REFERENCES interactions (id),
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    updated_at      TEXT NOT NULL
);
CREATE INDEX handoffs_state ON handoffs (state);

CREATE TABLE outbox (
    id               TEXT PRIMARY KEY REFERENCES interactions (id),
    message_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_error       TEXT,
    request          TEXT NOT NULL,  -- JSON of the OutboundRequest
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_message_id ON outbox (message_id);

CREATE TABLE failures (
    mailbox      TEXT NOT NULL,
    source_key   TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    last_reason  TEXT NOT NULL,
    raw_sha256   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (mailbox, source_key)
);

CREATE TABLE quarantine (
    id          TEXT PRIMARY KEY,
    mailbox     TEXT NOT NULL,
    source_key  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    raw_id      TEXT REFERENCES raw_messages (id),
    released    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- At most one open (unreleased) entry per message.
CREATE UNIQUE INDEX quarantine_open ON quarantine (mailbox, source_key) WHERE released = 0;

-- Room for several processes sharing mailboxes: commit_fetched(fence=...) checks it.
CREATE TABLE leases (
    mailbox     TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    fence       INTEGER NOT NULL,
    expires_at  TEXT NOT NULL
);

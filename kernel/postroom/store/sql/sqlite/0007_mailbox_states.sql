-- What each mailbox (and the smtp-client) was doing when the gateway last said:
-- connected, connection-failed, auth-failed, needs-reauthorisation. Written on
-- each change of state, read by `postroom mailboxes` (another process).
CREATE TABLE mailbox_states (
    mailbox       TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    reason        TEXT,
    failures      INTEGER NOT NULL DEFAULT 0,
    next_attempt  TEXT,
    updated_at    TEXT NOT NULL
);

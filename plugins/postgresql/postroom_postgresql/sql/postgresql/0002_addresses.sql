-- Addresses automatic mail must treat specially (specification, sections 6 and 9).

-- Hard-bounced addresses: no automatic outbound mail goes to them until cleared.
CREATE TABLE suppressions (
    address         TEXT PRIMARY KEY,      -- lower case
    reason          TEXT NOT NULL,
    interaction_id  TEXT,                  -- the NDR that put it here
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    hits            INTEGER NOT NULL DEFAULT 1
);

-- Automatic mails exchanged with an address, for auto-reply war detection.
CREATE TABLE exchanges (
    id              BIGSERIAL PRIMARY KEY,
    address         TEXT NOT NULL,         -- lower case
    direction       TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    at              TIMESTAMPTZ NOT NULL,
    interaction_id  TEXT
);
CREATE INDEX exchanges_address_at ON exchanges (address, at);
-- Recording the same interaction twice (a retried hand-off) counts once.
CREATE UNIQUE INDEX exchanges_once ON exchanges (interaction_id, direction, address)
    WHERE interaction_id IS NOT NULL;

-- Automatic mails exchanged with an address, for auto-reply war detection: one row per
-- automatic mail received from ('in') or sent to ('out') an address.
CREATE TABLE autoreply_exchanges (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address         TEXT NOT NULL,         -- lower case
    direction       TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    at              TIMESTAMPTZ NOT NULL,
    interaction_id  TEXT
);
CREATE INDEX autoreply_exchanges_address_at ON autoreply_exchanges (address, at);
-- Recording the same mail twice (a retried hand-off) counts once.
CREATE UNIQUE INDEX autoreply_exchanges_once
    ON autoreply_exchanges (interaction_id, direction, address)
    WHERE interaction_id IS NOT NULL;

-- The kernel kept this log (table exchanges) until its schema version 3: move its rows
-- here, in their order, and drop it. Its 0001 made it, so every database has it.
INSERT INTO autoreply_exchanges (address, direction, at, interaction_id)
    SELECT address, direction, at, interaction_id FROM exchanges ORDER BY id;
DROP TABLE exchanges;

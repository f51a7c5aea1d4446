-- Outbox operations and outbound delivery status (issue 13).
--
-- round_start: the attempts an entry had made when an operator last retried it
-- after it failed (`postroom outbox retry`): a new round of gateway.max-attempts
-- counts from there, while `attempts` keeps counting every attempt.
ALTER TABLE outbox ADD COLUMN round_start INTEGER NOT NULL DEFAULT 0;

-- Each entry's history: its attempts (time, result, error, the server's reply,
-- the recipients refused at RCPT TO as a JSON object) and the operators'
-- retries and cancels; the newest 50 per entry are kept.
CREATE TABLE outbox_attempts (
    outbox_id   TEXT NOT NULL REFERENCES outbox (id),
    seq         INTEGER NOT NULL,
    at          TEXT NOT NULL,
    result      TEXT NOT NULL,
    error       TEXT,
    reply       TEXT,
    refused     TEXT NOT NULL DEFAULT '{}',
    counted     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (outbox_id, seq)
);

-- Per recipient of a sent outbound interaction: sent, delayed, delivered,
-- failed or displayed, from the send itself and the DSNs and MDNs that thread
-- to it. recipient is the address in lower case (the key), address as given.
-- The interaction's status is derived from these rows in the same transaction.
CREATE TABLE outbound_delivery (
    outbound_id  TEXT NOT NULL REFERENCES interactions (id),
    recipient    TEXT NOT NULL,
    address      TEXT NOT NULL,
    status       TEXT NOT NULL,
    reported_at  TEXT NOT NULL,
    report_id    TEXT,
    action       TEXT,
    diagnostic   TEXT,
    PRIMARY KEY (outbound_id, recipient)
);

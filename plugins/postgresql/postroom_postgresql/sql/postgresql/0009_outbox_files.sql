-- The files of an outbound message (issue 12), in the order they are sent. The
-- bytes are kept like raw messages (raw_messages, raw_chunks: 1 MiB pieces,
-- checked against size and SHA-256 both ways), not inside the request's JSON,
-- so a send after a restart still has them and the request stays small.
CREATE TABLE outbox_files (
    outbox_id     TEXT NOT NULL REFERENCES outbox (id),
    seq           INTEGER NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    raw_id        TEXT NOT NULL REFERENCES raw_messages (id),
    PRIMARY KEY (outbox_id, seq)
);

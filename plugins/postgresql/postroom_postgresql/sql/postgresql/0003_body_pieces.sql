-- Long interaction texts in pieces, so that storing or reading one never needs a whole
-- second copy in memory (binding one 50 MB value costs the database driver two).
-- body_text and body_html keep the first piece (shorter texts: all of it); text_more and
-- html_more count the pieces that follow, kept here in order from seq 1.
CREATE TABLE interaction_bodies (
    interaction_id  TEXT NOT NULL REFERENCES interactions (id),
    field           TEXT NOT NULL CHECK (field IN ('text', 'html')),
    seq             INTEGER NOT NULL,
    data            TEXT NOT NULL,
    PRIMARY KEY (interaction_id, field, seq)
);
ALTER TABLE interactions ADD COLUMN text_more INTEGER NOT NULL DEFAULT 0;
ALTER TABLE interactions ADD COLUMN html_more INTEGER NOT NULL DEFAULT 0;

-- Listing interactions (issue 13): filters and cursor paging that stay fast over
-- many rows. Every listing is newest first by (created_at, seq), so each index
-- ends with those: a filter on one column walks its index in order and stops at
-- the page's limit. The text filter (subject and body, escaped LIKE) reads rows.
-- Keep in step with postroom_postgresql/sql/postgresql/0011_interaction_listing.sql.
CREATE INDEX interactions_listing ON interactions (created_at, seq);
CREATE INDEX interactions_status ON interactions (status, created_at, seq);
CREATE INDEX interactions_type ON interactions (type, created_at, seq);
CREATE INDEX interactions_subtype ON interactions (subtype, created_at, seq);
-- the sender filter compares addresses case-insensitively
CREATE INDEX interactions_sender ON interactions (lower(from_addr), created_at, seq);
-- Display names of the sender and the recipients, as the mail gave them: a JSON
-- object address -> name. Rows stored before: '{}' (names unknown).
ALTER TABLE interactions ADD COLUMN display_names TEXT NOT NULL DEFAULT '{}';

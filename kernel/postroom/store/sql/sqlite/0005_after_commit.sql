-- The side effects of a committed interaction (postroom_committed) have their own state
-- beside its hand-off's: each runs once, whatever the other does. Interactions handed off
-- already had theirs (they ran in postroom_submit before this migration).
ALTER TABLE handoffs ADD COLUMN after_commit TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE handoffs ADD COLUMN after_commit_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE handoffs ADD COLUMN after_commit_error TEXT;
UPDATE handoffs SET after_commit = 'done' WHERE state = 'done';
CREATE INDEX handoffs_after_commit ON handoffs (after_commit);

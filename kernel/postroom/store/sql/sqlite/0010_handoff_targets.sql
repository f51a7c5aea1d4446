-- Hand-off per target (issue 13): each plugin implementing postroom_submit has its own
-- state for each interaction, so a retry calls only the targets still owed and a target
-- may refuse an interaction for good ('refused'). handoffs.state stays the overall state,
-- derived from these rows. Interactions handed off before this migration have no rows.
CREATE TABLE handoff_targets (
    interaction_id  TEXT NOT NULL REFERENCES interactions (id),
    target          TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (interaction_id, target)
);
CREATE INDEX handoff_targets_state ON handoff_targets (state);

-- The event stream (GET /events): what happened to interactions, never their content.
-- seq is the resume id; rows are pruned by count and age (events: keep-count, keep-days).
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    type            TEXT NOT NULL,
    at              TEXT NOT NULL,
    interaction_id  TEXT,
    target          TEXT,
    reason          TEXT
);
CREATE INDEX events_at ON events (at);

-- Plugins keep their own tables, each plugin in its own version track (owner, version),
-- applied after the kernel's migrations (postroom_store_migrations hook).
--
-- The exchange log (table exchanges, made by 0001) was the kernel's until version 3; it
-- belongs to the autoreply plugin now: its first migration moves the rows into its own
-- table and drops this one. The kernel no longer reads or writes it.
CREATE TABLE plugin_migrations (
    owner       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL,
    PRIMARY KEY (owner, version)
);

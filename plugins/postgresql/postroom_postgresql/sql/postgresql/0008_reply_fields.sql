-- What a reply needs of the interaction it answers (issue 12): where answers go
-- (Reply-To, a JSON list of addresses), the References chain (a JSON list of
-- Message-IDs, oldest first, bounded) and the Date header as the sender wrote it:
-- ISO-8601 text with the sender's UTC offset (a timestamp type would lose the
-- offset), NULL when absent or unreadable. Rows stored before: empty lists, NULL.
ALTER TABLE interactions ADD COLUMN reply_to_addrs TEXT NOT NULL DEFAULT '[]';
ALTER TABLE interactions ADD COLUMN refs TEXT NOT NULL DEFAULT '[]';
ALTER TABLE interactions ADD COLUMN sent_date TEXT;

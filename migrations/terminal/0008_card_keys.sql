-- cashless terminal journal, version 8: the key version the ledger recorded for each card.
--
-- AES mode (`[cards] mode = "aes"`) proves a card's key at every tap. A terminal that also
-- accepts UID-only cards must still refuse a UID-only copy of a card that was issued with a
-- key: the card feed carries the master key version the card was issued with, and the
-- replica keeps it. NULL: not issued with a key (or the feed has not said yet).
ALTER TABLE replica_cards ADD COLUMN key_version INTEGER
    CHECK (key_version IS NULL OR key_version BETWEEN 1 AND 255);

-- Cards recorded with a key while this terminal ran an older version came through the feed
-- without the field: the next pull starts from the beginning again, so every card's key
-- version arrives. The rows it rewrites are at the same or a newer version (the upsert keeps
-- the newer); last_feed_at, which the local-charges rule reads, is left as it was.
DELETE FROM replica_meta WHERE key = 'feed_cursor';

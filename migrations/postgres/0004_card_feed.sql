-- cashless ledger schema, version 4 (PostgreSQL): the card feed under several writers.
--
-- Terminals page the card feed with `since`: every card changed after version N. With one
-- writer (SQLite) a card's new version is the largest plus one. With several ledger
-- processes and many connections, two transactions may take versions 7 and 8, and 8 commit
-- first: a terminal paging then would see 8, move its `since` to 8, and never see 7. So:
--
-- * every transaction that will change a card first takes the feed's advisory lock in
--   shared mode (card_feed_writer(), before any row lock: the global lock order), then
--   takes each new version from card_version_seq, and holds the lock until it commits or
--   rolls back;
-- * a page of the feed (card_feed()) takes the same lock in exclusive mode: it waits until
--   every transaction holding a version has ended, reads the last version handed out (the
--   horizon), and returns only cards up to it. Every version up to the horizon is then
--   committed or abandoned, so nothing below a page's last version can appear later.
--
-- Writers share the lock and never wait for one another; a page waits for the writers in
-- flight (a few milliseconds), and new writers wait behind it for as long as it reads.

-- The feed's lock: (ASCII 'cash', 1); the migration lock is a one-key advisory lock, a
-- different lock space.
CREATE FUNCTION card_feed_writer() RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock_shared(1667330920, 1);
$$;

CREATE SEQUENCE card_version_seq AS bigint MINVALUE 1;
-- Past every version already in use (a database moved from SQLite, or written before).
SELECT setval('card_version_seq', COALESCE((SELECT max(version) FROM cards), 0) + 1, false);

CREATE FUNCTION card_feed(p_since_version bigint, p_limit integer)
RETURNS TABLE (card_uid text, balance_cents bigint, status text, version bigint,
               updated_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_horizon bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1667330920, 1);
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END
      INTO v_horizon FROM card_version_seq s;
    -- A new statement: its snapshot sees every transaction that ended before the lock.
    RETURN QUERY
        SELECT c.card_uid, c.balance_cents, c.status, c.version, c.updated_at
          FROM cards c
         WHERE c.version > p_since_version AND c.version <= v_horizon
         ORDER BY c.version
         LIMIT p_limit;
END
$$;

-- cashless ledger schema, version 13 (PostgreSQL): daily voucher allowances (the SQLite
-- schema's version 8).
--
-- A card may have a daily allowance of voucher units (`cashless ledger voucher daily`): it
-- starts every festival day with exactly that many, whatever it had left (`vouchers_day`:
-- the festival day, YYYY-MM-DD, its allowance was last given for). The ledger gives it at
-- the start of each day (`[festival] day_starts_at`); each renewal is in the audit log
-- (`voucher_day`, with the units before and after).
ALTER TABLE cards
    ADD COLUMN daily_voucher_units bigint NOT NULL DEFAULT 0 CHECK (daily_voucher_units >= 0),
    ADD COLUMN vouchers_day text;
-- The cards a new day renews, found without reading the others.
CREATE INDEX cards_daily_vouchers ON cards (vouchers_day) WHERE daily_voucher_units > 0;

-- AdminStore::start_voucher_day: renews the daily allowances of at most p_batch cards for
-- festival day p_day (YYYY-MM-DD): each card with an allowance last given for an earlier day
-- gets exactly its allowance, with the next feed version and an audit-log row
-- (`voucher_day`, the units before and after). Returns how many cards it renewed; one
-- statement, so that the caller bounds it in time like any other.
CREATE FUNCTION ledger_start_voucher_day(p_day text, p_batch bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_count bigint;
BEGIN
    -- The lock order of every card change: the feed's writer lock, then the rows.
    PERFORM card_feed_writer();
    WITH due AS (
        SELECT card_uid, voucher_units FROM cards
         WHERE daily_voucher_units > 0 AND (vouchers_day IS NULL OR vouchers_day < p_day)
         ORDER BY card_uid COLLATE "C" LIMIT p_batch
           FOR NO KEY UPDATE
    ), renewed AS (
        UPDATE cards c SET voucher_units = c.daily_voucher_units, vouchers_day = p_day,
               version = nextval('card_version_seq'),
               updated_at = date_trunc('milliseconds', now())
          FROM due WHERE c.card_uid = due.card_uid
        RETURNING c.card_uid, due.voucher_units AS before, c.voucher_units AS after
    )
    INSERT INTO app_transaction_log (occurred_at, actor, operation, card_uid, outcome, details)
    SELECT date_trunc('milliseconds', now()), 'admin', 'voucher_day', card_uid, 'done',
           jsonb_build_object('day', p_day, 'units_before', before, 'voucher_units', after)
      FROM renewed;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

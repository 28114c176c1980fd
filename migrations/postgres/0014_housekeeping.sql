-- cashless ledger schema, version 14 (PostgreSQL): housekeeping (the SQLite schema's
-- version 9).
--
-- `cashless ledger housekeeping` archives old audit-log and scan-log rows to compressed
-- files and removes them. The audit proves every card's voucher units partly from audit-log
-- rows (the desk's grants, daily allowances): what removed rows proved is carried here, per
-- card, in the same transaction that removes them, so that the proof holds without them.
CREATE TABLE archived_voucher_moves (
    card_uid      text PRIMARY KEY,
    voucher_units bigint NOT NULL
);

-- The audit log stays append-only, with one way out: rows an archive file already holds,
-- removed by ledger_remove_archived_audit_log below (which says so for its own transaction
-- only). An UPDATE, a TRUNCATE or any other DELETE is refused as before. Like the trigger
-- itself, this guards against mistakes, not against the tables' owner.
CREATE FUNCTION refuse_audit_log_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('cashless.archiving', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% on % refused: % is append-only', TG_OP, TG_TABLE_NAME, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'the audit log is never changed; old rows leave it only through cashless ledger housekeeping, archived first';
END
$$;

DROP TRIGGER app_transaction_log_append_only ON app_transaction_log;
CREATE TRIGGER app_transaction_log_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON app_transaction_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_log_change();

-- Removes the audit-log rows p_ids (already archived and fsynced by the caller), carrying
-- the voucher units they proved into archived_voucher_moves, in one transaction. Returns
-- how many rows it removed.
CREATE FUNCTION ledger_remove_archived_audit_log(p_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_count bigint;
BEGIN
    INSERT INTO archived_voucher_moves AS a (card_uid, voucher_units)
    SELECT card_uid, sum(units)::bigint
      FROM (SELECT card_uid, (details ->> 'units')::bigint AS units
              FROM app_transaction_log
             WHERE log_id = ANY (p_ids) AND actor = 'admin' AND operation = 'voucher_grant'
            UNION ALL
            SELECT card_uid, (details ->> 'voucher_units')::bigint
                             - (details ->> 'units_before')::bigint
              FROM app_transaction_log
             WHERE log_id = ANY (p_ids) AND actor = 'admin'
               AND operation IN ('voucher_daily', 'voucher_day')) moves
     WHERE card_uid IS NOT NULL
     GROUP BY card_uid
    ON CONFLICT (card_uid) DO UPDATE SET voucher_units = a.voucher_units + EXCLUDED.voucher_units;
    PERFORM set_config('cashless.archiving', 'on', true);
    DELETE FROM app_transaction_log WHERE log_id = ANY (p_ids);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM set_config('cashless.archiving', 'off', true);
    RETURN v_count;
END
$$;

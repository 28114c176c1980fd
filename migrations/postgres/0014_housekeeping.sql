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
-- removed by ledger_remove_archived_audit_log below. It marks its own transaction (the
-- setting holds that transaction's id, for that transaction only), so a setting left in a
-- session, a role or a database by mistake opens nothing. An UPDATE, a TRUNCATE or any
-- other DELETE is refused as before. Like the trigger itself, this guards against
-- mistakes, not against the tables' owner.
CREATE FUNCTION refuse_audit_log_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('cashless.archiving', true) = txid_current()::text THEN
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

-- Removes the audit-log rows p_ids (already archived and fsynced by the caller) and carries
-- what the rows it removed proved of voucher units into archived_voucher_moves, in one
-- statement: a row another run removed first (it waits for that run, then finds the row
-- gone) is carried by that run alone. Returns how many rows it removed.
CREATE FUNCTION ledger_remove_archived_audit_log(p_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_count bigint;
BEGIN
    PERFORM set_config('cashless.archiving', txid_current()::text, true);
    WITH gone AS (
        DELETE FROM app_transaction_log WHERE log_id = ANY (p_ids)
        RETURNING card_uid, actor, operation, details
    ), moves AS (
        SELECT card_uid, (details ->> 'units')::bigint AS units
          FROM gone WHERE actor = 'admin' AND operation = 'voucher_grant'
        UNION ALL
        SELECT card_uid, (details ->> 'voucher_units')::bigint
                         - (details ->> 'units_before')::bigint
          FROM gone WHERE actor = 'admin' AND operation IN ('voucher_daily', 'voucher_day')
    ), carried AS (
        INSERT INTO archived_voucher_moves AS a (card_uid, voucher_units)
        SELECT card_uid, sum(units)::bigint FROM moves
         WHERE card_uid IS NOT NULL
         GROUP BY card_uid
        ON CONFLICT (card_uid) DO UPDATE SET voucher_units = a.voucher_units + EXCLUDED.voucher_units
    )
    SELECT count(*) INTO v_count FROM gone;
    PERFORM set_config('cashless.archiving', '', true);
    RETURN v_count;
END
$$;

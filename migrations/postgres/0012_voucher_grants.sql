-- cashless ledger schema, version 12 (PostgreSQL): vouchers granted at a checkpoint (the
-- SQLite schema's version 7).
--
-- A checkpoint's supervisor gives a card voucher units (staff and artist drinks) as an
-- operation of its own, idempotent on its client_request_id like every other
-- (`sp_process_voucher_grant`, rules::decide_voucher_grant): `voucher_grants`. A grant has no
-- posting: vouchers are never money. A void takes the units back (voids.target_kind and
-- idempotency_keys.operation gain 'voucher_grant'); the void's answer now says how many
-- voucher units it gave back (`vouchers_returned`, when any moved).
--
-- Only a checkpoint grants (ledger_kind_refusal), and only a supervisor
-- (ledger_start_operation).

ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_operation_check,
    ADD CONSTRAINT idempotency_keys_operation_check
        CHECK (operation IN ('order', 'recharge', 'void', 'shift', 'return', 'voucher_grant'));
ALTER TABLE voids
    DROP CONSTRAINT voids_target_kind_check,
    ADD CONSTRAINT voids_target_kind_check
        CHECK (target_kind IN ('order', 'recharge', 'return', 'voucher_grant'));

CREATE TABLE voucher_grants (
    transaction_id         uuid PRIMARY KEY,
    client_request_id      uuid NOT NULL,
    terminal_id            uuid NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq           bigint NOT NULL,
    point_of_sale          text NOT NULL,
    card_uid               text NOT NULL REFERENCES cards (card_uid),
    staff_id               text NOT NULL,
    units                  bigint NOT NULL CHECK (units > 0),
    mode                   text NOT NULL CHECK (mode IN ('online', 'offline')),
    flags                  jsonb NOT NULL,
    previous_voucher_units bigint NOT NULL,
    new_voucher_units      bigint NOT NULL,
    created_at             timestamptz NOT NULL,
    processed_at           timestamptz NOT NULL,
    voided_by              uuid
);

-- rules::check_terminal_kind: the refusal of an action at a terminal of this kind, or NULL.
CREATE OR REPLACE FUNCTION ledger_kind_refusal(p_kind text, p_action text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_kind = 'bar' AND p_action = 'recharge' THEN 'a bar terminal cannot top up cards'
        WHEN p_kind = 'return' AND p_action = 'recharge'
            THEN 'a return station cannot top up cards'
        WHEN p_kind = 'checkpoint' AND p_action = 'order' THEN 'a checkpoint terminal cannot sell'
        WHEN p_kind = 'return' AND p_action = 'order' THEN 'a return station cannot sell'
        WHEN p_kind = 'checkpoint' AND p_action = 'return'
            THEN 'a checkpoint terminal cannot take returnable items back'
        WHEN p_kind = 'bar' AND p_action = 'voucher_grant'
            THEN 'a bar terminal cannot grant vouchers'
        WHEN p_kind = 'return' AND p_action = 'voucher_grant'
            THEN 'a return station cannot grant vouchers'
    END
$$;

-- 0011's ledger_start_operation; only a supervisor grants vouchers.
CREATE OR REPLACE FUNCTION ledger_start_operation(p_call ledger_call, p_kind text, p_wrong_kind text,
                                       p_card_uid text, p_client_request_id uuid,
                                       p_staff_id text, p_action text, p_online boolean)
RETURNS ledger_start
LANGUAGE plpgsql AS $$
DECLARE
    v_terminal record;
    v_pre record;
    v_refusal record;
    v_message text;
BEGIN
    SELECT t.name, t.kind, t.point_of_sale,
           EXISTS (SELECT 1 FROM cards c WHERE c.card_uid = p_card_uid) AS card_exists
      INTO v_terminal FROM terminals t WHERE t.terminal_id = (p_call).terminal_id;
    v_message := ledger_kind_refusal(v_terminal.kind, p_action);
    IF v_message IS NOT NULL THEN
        SELECT * INTO v_refusal FROM ledger_refuse(p_call, 'FORBIDDEN', v_message, NULL);
        RETURN ROW(v_refusal.o_status, v_refusal.o_body, false, NULL, NULL)::ledger_start;
    END IF;
    IF v_terminal.card_exists IS NOT TRUE THEN
        PERFORM pg_advisory_xact_lock(1667330921, hashtext(p_card_uid));
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1667330920, 1);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_client_request_id::text, 0));
    SELECT k.request_sha256, k.status_code, k.response_body,
           CASE WHEN k.client_request_id IS NULL THEN EXISTS (
               SELECT 1 FROM voids v WHERE v.target_client_request_id = p_client_request_id
                                       AND v.terminal_id = (p_call).terminal_id) END AS voided,
           s.role, s.active
      INTO v_pre
      FROM (SELECT) AS one
      LEFT JOIN idempotency_keys k ON k.client_request_id = p_client_request_id
      LEFT JOIN staff s ON s.staff_id = p_staff_id;
    IF v_pre.request_sha256 IS NOT NULL THEN
        IF v_pre.request_sha256 = (p_call).request_sha256 THEN
            RETURN ROW(v_pre.status_code, v_pre.response_body, true, NULL, NULL)::ledger_start;
        END IF;
        RETURN ROW(422, ledger_error_body('IDEMPOTENCY_KEY_REUSED',
                        'this client_request_id was used before for a different request',
                        NULL, (p_call).request_id), false, NULL, NULL)::ledger_start;
    END IF;
    IF v_pre.voided THEN
        RETURN ROW(409, ledger_error_body('OPERATION_VOIDED',
                        'this operation was voided before it arrived', NULL,
                        (p_call).request_id), false, NULL, NULL)::ledger_start;
    END IF;
    IF v_pre.role IS NULL THEN
        v_message := 'unknown staff member';
    ELSIF p_online AND NOT v_pre.active THEN
        v_message := 'staff member is not active';
    ELSIF NOT ((p_action IN ('order', 'return') AND v_pre.role IN ('supervisor', 'bar'))
               OR (p_action = 'recharge' AND v_pre.role IN ('supervisor', 'cashier'))
               OR (p_action = 'voucher_grant' AND v_pre.role = 'supervisor')) THEN
        v_message := format('a staff member with role %s may not do this', v_pre.role);
    END IF;
    IF v_message IS NOT NULL THEN
        RETURN ROW(403, ledger_error_body('FORBIDDEN', v_message, NULL, (p_call).request_id),
                   false, NULL, NULL)::ledger_start;
    END IF;
    RETURN ROW(NULL, NULL, NULL, v_terminal.name, v_terminal.point_of_sale)::ledger_start;
END
$$;

-- 0011's void, which also reverses a voucher grant and says what vouchers it gave back.
CREATE OR REPLACE FUNCTION sp_process_void(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint,
    p_target_client_request_id uuid, p_staff_id text, p_reason text, p_created_at timestamptz,
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_operation text;
    v_target_tx uuid;
    -- The applied target, if any: 'order', 'recharge', 'return' or 'voucher_grant', its
    -- terminal, card and amount, and the voucher units the void gives back.
    v_kind text;
    v_terminal_id uuid;
    v_card_uid text;
    v_amount bigint;
    v_vouchers bigint := 0;
    v_delta bigint;
    v_previous bigint;
    v_block_reason text;
    v_balance bigint;
    v_card_status text;
    v_next_reason text;
    v_flags text[] := '{}';
    v_status text;
    v_invalid jsonb := jsonb_build_object('field', 'target_client_request_id');
BEGIN
    PERFORM card_feed_writer();
    -- The void's key and its target's, so that the target cannot arrive, nor be voided
    -- again, while this void decides.
    PERFORM ledger_lock_keys(ARRAY[p_client_request_id, p_target_client_request_id]);
    SELECT * INTO o_status, o_body, o_replayed
      FROM ledger_precheck(p_call, p_client_request_id, p_staff_id, 'void', false);
    IF o_status IS NOT NULL THEN
        RETURN;
    END IF;

    SELECT operation, transaction_id INTO v_operation, v_target_tx FROM idempotency_keys
     WHERE client_request_id = p_target_client_request_id AND transaction_id IS NOT NULL;
    IF v_operation = 'void' THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'INVALID_REQUEST', 'a void cannot be voided', v_invalid);
        RETURN;
    ELSIF v_operation = 'shift' THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'INVALID_REQUEST', 'a shift close-out cannot be voided',
                             v_invalid);
        RETURN;
    ELSIF v_operation = 'order' THEN
        -- What the order took: its money (its total, if written before vouchers) and vouchers.
        SELECT 'order', terminal_id, card_uid, coalesce(money_cents, total_cents),
               coalesce(voucher_units, 0)
          INTO v_kind, v_terminal_id, v_card_uid, v_amount, v_vouchers
          FROM bar_orders WHERE transaction_id = v_target_tx;
    ELSIF v_operation = 'recharge' THEN
        SELECT 'recharge', terminal_id, card_uid, amount_cents
          INTO v_kind, v_terminal_id, v_card_uid, v_amount
          FROM recharges WHERE transaction_id = v_target_tx;
    ELSIF v_operation = 'return' THEN
        SELECT 'return', terminal_id, card_uid, amount_cents
          INTO v_kind, v_terminal_id, v_card_uid, v_amount
          FROM deposit_returns WHERE transaction_id = v_target_tx;
    ELSIF v_operation = 'voucher_grant' THEN
        -- A grant moved no money: the void takes its units back.
        SELECT 'voucher_grant', terminal_id, card_uid, 0, -units
          INTO v_kind, v_terminal_id, v_card_uid, v_amount, v_vouchers
          FROM voucher_grants WHERE transaction_id = v_target_tx;
    END IF;
    IF v_operation IS NOT NULL AND v_kind IS NULL THEN
        RAISE EXCEPTION 'key % names transaction %, which is missing',
            p_target_client_request_id, v_target_tx;
    END IF;
    IF v_kind IS NOT NULL AND v_terminal_id <> (p_call).terminal_id THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'FORBIDDEN', 'a terminal may only void its own operations',
                             NULL);
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM voids WHERE target_client_request_id = p_target_client_request_id
                                     AND terminal_id = (p_call).terminal_id) THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'ALREADY_VOIDED', 'this operation is already voided', NULL);
        RETURN;
    END IF;

    IF v_kind IS NOT NULL THEN
        -- Reversed in full (rules::decide_reversal): back to the card for an order, off it
        -- for a top-up or a deposit return; below zero blocks the card for debt.
        v_delta := CASE v_kind WHEN 'order' THEN v_amount ELSE -v_amount END;
        SELECT balance_cents, block_reason INTO v_previous, v_block_reason
          FROM cards WHERE card_uid = v_card_uid FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'card % of an operation is missing', v_card_uid;
        END IF;
        v_balance := ledger_add(v_previous, v_delta);
        IF v_balance IS NULL THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_refuse(p_call, 'INVALID_REQUEST',
                                 'the resulting balance is out of range', v_invalid);
            RETURN;
        END IF;
        IF v_balance < 0 THEN
            v_flags := v_flags || 'NEGATIVE_BALANCE'::text;
        END IF;
        SELECT * INTO v_card_status, v_next_reason
          FROM ledger_status_after(v_balance, v_block_reason);
        v_status := 'voided';
        PERFORM ledger_write_card(p_call, v_card_uid, false, v_balance, v_card_status,
                                  v_next_reason);
        -- rules::decide_reversal: an order's vouchers go back to the card, a grant's off it.
        IF v_vouchers <> 0 THEN
            UPDATE cards SET voucher_units = voucher_units + v_vouchers
             WHERE card_uid = v_card_uid;
        END IF;
        IF v_kind = 'order' THEN
            UPDATE bar_orders SET voided_by = p_client_request_id
             WHERE transaction_id = v_target_tx;
        ELSIF v_kind = 'recharge' THEN
            UPDATE recharges SET voided_by = p_client_request_id
             WHERE transaction_id = v_target_tx;
        ELSIF v_kind = 'return' THEN
            UPDATE deposit_returns SET voided_by = p_client_request_id
             WHERE transaction_id = v_target_tx;
        ELSE
            UPDATE voucher_grants SET voided_by = p_client_request_id
             WHERE transaction_id = v_target_tx;
        END IF;
    ELSE
        v_status := 'tombstoned';
    END IF;
    INSERT INTO voids (transaction_id, client_request_id, terminal_id, terminal_seq,
                       target_client_request_id, target_kind, staff_id, reason, status,
                       card_uid, refunded_cents, previous_balance_cents, new_balance_cents, flags,
                       created_at, processed_at)
    VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id, p_terminal_seq,
            p_target_client_request_id, v_kind, p_staff_id, p_reason, v_status,
            v_card_uid, v_delta, v_previous, v_balance, to_jsonb(v_flags),
            p_created_at, (p_call).now);
    IF v_kind IS NOT NULL THEN
        -- The target's postings reversed, in their order (an order's split by VAT rate).
        INSERT INTO postings (transaction_id, account, amount_cents, created_at)
        SELECT (p_call).transaction_id, t.account, -t.amount_cents, (p_call).now
          FROM postings t WHERE t.transaction_id = v_target_tx
         ORDER BY t.posting_id;
    END IF;
    o_status := 201;
    o_replayed := false;
    o_body := '{"transaction_id":"' || (p_call).transaction_id
        || '","client_request_id":"' || p_client_request_id
        || '","status":"' || v_status
        || '","target_client_request_id":"' || p_target_client_request_id
        || '","card_uid":' || ledger_str(v_card_uid)
        || ',"refunded_cents":' || ledger_num(v_delta)
        || ',"previous_balance_cents":' || ledger_num(v_previous)
        || ',"new_balance_cents":' || ledger_num(v_balance)
        || ',"card_status":' || ledger_str(v_card_status)
        || ',"processed_at":' || ledger_str((p_call).now_text)
        || ',"flags":' || ledger_flags_json(v_flags)
        || CASE WHEN v_vouchers <> 0 THEN ',"vouchers_returned":' || v_vouchers ELSE '' END
        || '}';
    PERFORM ledger_log(p_call, p_staff_id, 'void', p_client_request_id, (p_call).transaction_id,
                       v_card_uid, v_delta, v_status, NULL,
                       jsonb_build_object('reason', p_reason, 'target_client_request_id',
                                          p_target_client_request_id)
                       -- Vouchers are not money: what the void gives back of them.
                       || CASE WHEN v_vouchers <> 0
                               THEN jsonb_build_object('vouchers_returned', v_vouchers)
                               ELSE '{}'::jsonb END);
    PERFORM ledger_key(p_call, p_client_request_id, 'void', o_status, o_body,
                       (p_call).transaction_id);
    PERFORM ledger_record_seq((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

-- A voucher grant (POST /v1/voucher-grants, or a grant of a batch):
-- rules::decide_voucher_grant. `p_units_max`: CARD_VOUCHER_UNITS_MAX.
CREATE FUNCTION sp_process_voucher_grant(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_units bigint, p_created_at timestamptz,
    p_units_max bigint,
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_start ledger_start;
    v_card record;
    v_found boolean;
    v_online boolean := p_mode = 'online';
    v_flags text[] := '{}';
    v_balance bigint := 0;
    v_status text := 'active';
    v_block_reason text;
    v_previous bigint := 0;
    v_units bigint;
    v_log_details jsonb := jsonb_build_object('mode', p_mode, 'terminal_seq', p_terminal_seq,
                                              'units', p_units);
BEGIN
    v_start := ledger_start_operation(p_call, 'voucher_grant', NULL, p_card_uid,
                                      p_client_request_id, p_staff_id, 'voucher_grant',
                                      v_online);
    IF v_start.status IS NOT NULL THEN
        o_status := v_start.status; o_body := v_start.body; o_replayed := v_start.replayed;
        RETURN;
    END IF;

    -- Unknown cards are created with nothing on them but the vouchers.
    SELECT balance_cents, status, block_reason, voucher_units INTO v_card
      FROM cards WHERE card_uid = p_card_uid FOR NO KEY UPDATE;
    v_found := FOUND;
    IF v_found THEN
        v_previous := v_card.voucher_units;
        v_balance := v_card.balance_cents;
        v_status := v_card.status;
        v_block_reason := v_card.block_reason;
    ELSE
        v_flags := v_flags || 'CARD_CREATED'::text;
    END IF;
    v_units := ledger_add(v_previous, p_units);
    IF v_units IS NULL THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'INVALID_REQUEST', 'the resulting balance is out of range',
                             jsonb_build_object('field', 'units'));
        RETURN;
    END IF;
    IF v_online AND v_block_reason IS NOT DISTINCT FROM 'lost' THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_decline(p_call, 'CARD_BLOCKED', 'the card is blocked',
                              jsonb_build_object('balance_cents', v_balance,
                                                 'status', v_status),
                              'voucher_grant', p_client_request_id, p_terminal_seq, p_staff_id,
                              p_card_uid, NULL, v_log_details);
        RETURN;
    ELSIF v_online AND v_units > p_units_max THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_decline(p_call, 'LIMIT_EXCEEDED',
                              'the card would hold more voucher units than allowed',
                              jsonb_build_object('limit', 'voucher_units_max',
                                                 'limit_units', p_units_max,
                                                 'voucher_units', v_previous),
                              'voucher_grant', p_client_request_id, p_terminal_seq, p_staff_id,
                              p_card_uid, NULL, v_log_details);
        RETURN;
    ELSIF v_units > p_units_max THEN
        v_flags := v_flags || 'LIMIT_EXCEEDED'::text;
    END IF;

    -- The writes: the card (next feed version), the grant, the audit log, the key.
    IF v_found THEN
        UPDATE cards SET voucher_units = v_units, version = nextval('card_version_seq'),
                         updated_at = (p_call).now
         WHERE card_uid = p_card_uid;
    ELSE
        INSERT INTO cards (card_uid, balance_cents, status, block_reason, voucher_units,
                           version, created_at, updated_at)
        VALUES (p_card_uid, 0, 'active', NULL, v_units, nextval('card_version_seq'),
                (p_call).now, (p_call).now);
    END IF;
    o_status := 201;
    o_replayed := false;
    o_body := ledger_approval(p_call, p_client_request_id, p_card_uid, NULL, NULL,
                              v_balance, v_balance, v_status, v_flags);
    o_body := left(o_body, -1) || ',"vouchers_granted":' || p_units
        || ',"voucher_units":' || v_units || '}';
    WITH operation AS (
        INSERT INTO voucher_grants (transaction_id, client_request_id, terminal_id,
                                    terminal_seq, point_of_sale, card_uid, staff_id, units,
                                    mode, flags, previous_voucher_units, new_voucher_units,
                                    created_at, processed_at)
        VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id,
                p_terminal_seq, v_start.point_of_sale, p_card_uid, p_staff_id, p_units,
                p_mode, to_jsonb(v_flags), v_previous, v_units, p_created_at, (p_call).now)
    ), log AS (
        INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                         client_request_id, transaction_id, card_uid,
                                         amount_cents, outcome, error_code, details)
        VALUES ((p_call).now, (p_call).request_id, 'terminal:' || v_start.terminal_name,
                p_staff_id, 'voucher_grant', p_client_request_id, (p_call).transaction_id,
                p_card_uid, NULL, 'approved', NULL, v_log_details)
    )
    INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
                                  status_code, response_body, transaction_id, created_at,
                                  expires_at)
    VALUES (p_client_request_id, (p_call).terminal_id, 'voucher_grant', (p_call).request_sha256,
            o_status, o_body, (p_call).transaction_id, (p_call).now, NULL);
    PERFORM ledger_record_seq_fast((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

-- cashless ledger schema, version 8 (PostgreSQL): an order and a top-up in fewer statements;
-- a Stripe credit under the new-card lock.
--
-- 1. Fewer statements. An approved order ran about 17 SQL statements across the procedures
--    of 0005 and 0007 (each with its executor's start and end, which profiles showed as the
--    largest single cost once the helpers were PL/pgSQL). sp_process_bar_order and
--    sp_process_checkpoint_recharge are now one flat body each, with the same checks in the
--    same order, the same answers and the same rows; what both do before their decision
--    is one helper, ledger_start_operation:
--      * the terminal and whether the card exists: one statement (it was two);
--      * the card-creation lock (0007), the feed's lock (0004) and the key's lock (0005):
--        plain expressions, which PL/pgSQL evaluates without the executor (the key's lock
--        was a query over the unnested keys, sorted);
--      * the stored answer, a void of the key, and the staff member: one statement (three);
--      * the operation's rows, its items, its postings, its audit-log row (whose actor no
--        longer joins `terminals` for the name read at the start) and its idempotency
--        record: one statement of data-modifying WITH clauses (five);
--      * the terminal_seq tracking: its usual case inline, ledger_record_seq otherwise;
--      * an order reads its products' prices before it locks the card, not while holding
--        the card's lock (the lock a hot card's orders queue on).
--    An approved one-item order now runs seven statements. The inner procedures 0007 had
--    renamed (ledger_bar_order, ledger_checkpoint_recharge) are dropped.
-- 2. card_feed_writer() is PL/pgSQL (a SQL function's body is parsed and planned again in
--    every transaction); voids and the Stripe procedures still call it.
-- 3. A Stripe credit takes the card-creation lock (0007) for a card not yet in `cards`. It
--    created such a card with INSERT ... ON CONFLICT DO NOTHING, which is safe against
--    another credit but not against an order or a top-up that had taken the creation lock,
--    found no card and was deciding with a balance of 0: that call's INSERT then failed on
--    the credit's row (a unique violation, answered 500; nothing written, the terminal
--    retried). Now the second creator of either kind waits for the first and finds its card.
--
-- The lock order of 0005 and 0007 is unchanged: 0. the creation lock of a card not yet in
-- `cards` (holding nothing else), 1. the card feed's shared lock, 2. the idempotency keys
-- (Stripe's keys, for a Stripe call), 3. the card row, 4. the terminal's row.

CREATE OR REPLACE FUNCTION card_feed_writer() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1667330920, 1);
END
$$;

DROP FUNCTION sp_process_bar_order(ledger_call, uuid, bigint, text, text, text, bigint,
                                   timestamptz, text[], integer[], bigint[]);
DROP FUNCTION ledger_bar_order(ledger_call, uuid, bigint, text, text, text, bigint,
                               timestamptz, text[], integer[], bigint[]);
DROP FUNCTION sp_process_checkpoint_recharge(ledger_call, uuid, bigint, text, text, text,
                                             bigint, text, timestamptz, bigint, bigint);
DROP FUNCTION ledger_checkpoint_recharge(ledger_call, uuid, bigint, text, text, text, bigint,
                                         text, timestamptz, bigint, bigint);

-- How an order or a top-up starts: a refusal or a stored answer (status set), or the
-- terminal's name and point of sale for the call to go on with.
CREATE TYPE ledger_start AS (status integer, body text, replayed boolean, terminal_name text,
                             point_of_sale text);

-- Everything an order or a top-up does before its decision, in three statements:
--   * the terminal and whether the card exists (one statement); a terminal of another kind
--     than p_kind is refused with p_wrong_kind;
--   * locks 0 to 2: the card's creation lock when the card did not exist a moment ago
--     (0007), the feed's lock shared (0004), the key's lock (the lock number of 0005's
--     ledger_lock_keys);
--   * the key's row, whether this terminal voided the key first, the staff member (one
--     statement), checked as 0005's ledger_precheck: the stored answer again, 422 for
--     another request, 409 for a voided key, a staff refusal.
CREATE FUNCTION ledger_start_operation(p_call ledger_call, p_kind text, p_wrong_kind text,
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
    IF v_terminal.kind <> p_kind THEN
        SELECT * INTO v_refusal FROM ledger_refuse(p_call, 'FORBIDDEN', p_wrong_kind, NULL);
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
    ELSIF NOT ((p_action = 'order' AND v_pre.role IN ('supervisor', 'bar'))
               OR (p_action = 'recharge' AND v_pre.role IN ('supervisor', 'cashier'))) THEN
        v_message := format('a staff member with role %s may not do this', v_pre.role);
    END IF;
    IF v_message IS NOT NULL THEN
        RETURN ROW(403, ledger_error_body('FORBIDDEN', v_message, NULL, (p_call).request_id),
                   false, NULL, NULL)::ledger_start;
    END IF;
    RETURN ROW(NULL, NULL, NULL, v_terminal.name, v_terminal.point_of_sale)::ledger_start;
END
$$;

-- Step 4 (0005's ledger_record_seq): its usual case, a terminal in step, in one UPDATE.
CREATE FUNCTION ledger_record_seq_fast(p_terminal_id uuid, p_seq bigint, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE terminals
       SET highest_contiguous_seq = p_seq, highest_seen_seq = p_seq, last_seen_at = p_now
     WHERE terminal_id = p_terminal_id AND highest_contiguous_seq = p_seq - 1
       AND highest_seen_seq < p_seq;
    IF NOT FOUND THEN
        PERFORM ledger_record_seq(p_terminal_id, p_seq, p_now);
    END IF;
END
$$;

-- An order (POST /v1/orders, or an order of a batch).
CREATE FUNCTION sp_process_bar_order(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_total_cents bigint, p_created_at timestamptz,
    p_product_ids text[], p_quantities integer[], p_unit_prices_cents bigint[],
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_start ledger_start;
    v_card record;
    v_found boolean;
    v_online boolean := p_mode = 'online';
    v_flags text[] := '{}';
    v_previous bigint;
    v_block_reason text;
    v_balance bigint;
    v_status text;
    v_price bigint;
    v_catalog bigint[] := '{}';
    v_price_differs boolean := false;
    v_log_details jsonb := jsonb_build_object('mode', p_mode, 'terminal_seq', p_terminal_seq);
    i integer;
BEGIN
    v_start := ledger_start_operation(p_call, 'bar', 'a checkpoint terminal cannot sell', p_card_uid,
                                      p_client_request_id, p_staff_id, 'order', v_online);
    IF v_start.status IS NOT NULL THEN
        o_status := v_start.status; o_body := v_start.body; o_replayed := v_start.replayed;
        RETURN;
    END IF;

    -- The catalog's prices, read before the card's lock (the decision below uses them in
    -- the order of rules::decide_order), so that the card is locked for less time.
    FOR i IN 1 .. coalesce(array_length(p_product_ids, 1), 0) LOOP
        SELECT price_cents INTO v_price FROM products
         WHERE point_of_sale = v_start.point_of_sale AND product_id = p_product_ids[i]
           AND active;
        v_catalog := v_catalog || CASE WHEN FOUND THEN v_price END;
    END LOOP;

    -- The decision (rules::decide_order).
    SELECT balance_cents, status, block_reason INTO v_card
      FROM cards WHERE card_uid = p_card_uid FOR NO KEY UPDATE;
    v_found := FOUND;
    IF v_found THEN
        v_previous := v_card.balance_cents;
        v_block_reason := v_card.block_reason;
    ELSIF v_online THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_decline(p_call, 'CARD_NOT_FOUND', 'the ledger has never seen this card',
                              NULL, 'order', p_client_request_id, p_terminal_seq, p_staff_id,
                              p_card_uid, p_total_cents, v_log_details);
        RETURN;
    ELSE
        v_flags := v_flags || 'CARD_CREATED'::text;
        v_previous := 0;
    END IF;
    IF v_online AND v_card.status = 'blocked' THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_decline(p_call, 'CARD_BLOCKED', 'the card is blocked',
                              jsonb_build_object('balance_cents', v_previous,
                                                 'status', v_card.status),
                              'order', p_client_request_id, p_terminal_seq, p_staff_id,
                              p_card_uid, p_total_cents, v_log_details);
        RETURN;
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_product_ids, 1), 0) LOOP
        v_price := v_catalog[i];
        IF v_price IS NOT DISTINCT FROM p_unit_prices_cents[i] THEN
            CONTINUE;
        END IF;
        IF NOT v_online THEN
            v_price_differs := true;
            CONTINUE;
        END IF;
        IF v_price IS NULL THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'UNKNOWN_PRODUCT',
                                  format('product %s is not on sale here', p_product_ids[i]),
                                  jsonb_build_object('product_id', p_product_ids[i]),
                                  'order', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_total_cents, v_log_details);
        ELSE
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'PRICE_MISMATCH',
                                  format('product %s costs %s now', p_product_ids[i], v_price),
                                  jsonb_build_object('product_id', p_product_ids[i],
                                                     'catalog_price_cents', v_price,
                                                     'unit_price_cents', p_unit_prices_cents[i]),
                                  'order', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_total_cents, v_log_details);
        END IF;
        RETURN;
    END LOOP;
    IF v_price_differs THEN
        v_flags := v_flags || 'PRICE_DIFFERS_FROM_CATALOG'::text;
    END IF;
    IF v_online AND v_previous < p_total_cents THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_decline(p_call, 'INSUFFICIENT_FUNDS', 'the card''s balance is too low',
                              jsonb_build_object('balance_cents', v_previous),
                              'order', p_client_request_id, p_terminal_seq, p_staff_id,
                              p_card_uid, p_total_cents, v_log_details);
        RETURN;
    END IF;
    v_balance := ledger_add(v_previous, -p_total_cents);
    IF v_balance IS NULL THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'INVALID_REQUEST', 'the resulting balance is out of range',
                             jsonb_build_object('field', 'total_cents'));
        RETURN;
    END IF;
    IF v_balance < 0 THEN
        v_flags := v_flags || 'NEGATIVE_BALANCE'::text;
    END IF;
    -- ledger_status_after: below zero blocks for debt; a lost card stays lost.
    IF v_block_reason IS DISTINCT FROM 'lost' THEN
        v_block_reason := CASE WHEN v_balance < 0 THEN 'debt' END;
    END IF;
    v_status := CASE WHEN v_block_reason IS NULL THEN 'active' ELSE 'blocked' END;

    -- The writes.
    PERFORM ledger_write_card(p_call, p_card_uid, NOT v_found, v_balance, v_status,
                              v_block_reason);
    o_status := 201;
    o_replayed := false;
    o_body := ledger_approval(p_call, p_client_request_id, p_card_uid, p_total_cents, NULL,
                              v_previous, v_balance, v_status, v_flags);
    WITH operation AS (
        INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq,
                                point_of_sale, card_uid, staff_id, total_cents, mode, flags,
                                previous_balance_cents, new_balance_cents, created_at,
                                processed_at)
        VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id,
                p_terminal_seq, v_start.point_of_sale, p_card_uid, p_staff_id,
                p_total_cents, p_mode, to_jsonb(v_flags), v_previous, v_balance, p_created_at,
                (p_call).now)
    ), items AS (
        INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity,
                                     unit_price_cents, catalog_price_cents, line_total_cents)
        SELECT (p_call).transaction_id, n - 1, p_product_ids[n], p_quantities[n],
               p_unit_prices_cents[n], NULLIF(v_catalog[n], p_unit_prices_cents[n]),
               p_unit_prices_cents[n] * p_quantities[n]
          FROM generate_subscripts(p_product_ids, 1) AS n
    ), posting AS (
        INSERT INTO postings (transaction_id, account, amount_cents, created_at)
        VALUES ((p_call).transaction_id, 'card:' || p_card_uid, -p_total_cents, (p_call).now),
               ((p_call).transaction_id, 'revenue:' || v_start.point_of_sale, p_total_cents,
                (p_call).now)
    ), log AS (
        INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                         client_request_id, transaction_id, card_uid,
                                         amount_cents, outcome, error_code, details)
        VALUES ((p_call).now, (p_call).request_id, 'terminal:' || v_start.terminal_name, p_staff_id,
                'order', p_client_request_id, (p_call).transaction_id, p_card_uid,
                p_total_cents, 'approved', NULL, v_log_details)
    )
    INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
                                  status_code, response_body, transaction_id, created_at,
                                  expires_at)
    VALUES (p_client_request_id, (p_call).terminal_id, 'order', (p_call).request_sha256,
            o_status, o_body, (p_call).transaction_id, (p_call).now, NULL);
    PERFORM ledger_record_seq_fast((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

-- A top-up (POST /v1/recharges, or a top-up of a batch).
CREATE FUNCTION sp_process_checkpoint_recharge(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_amount_cents bigint, p_payment_method text,
    p_created_at timestamptz, p_recharge_max_cents bigint, p_balance_max_cents bigint,
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_start ledger_start;
    v_card record;
    v_found boolean;
    v_online boolean := p_mode = 'online';
    v_flags text[] := '{}';
    v_previous bigint;
    v_block_reason text;
    v_balance bigint;
    v_status text;
    v_over_recharge boolean;
    v_over_balance boolean;
    v_log_details jsonb := jsonb_build_object('mode', p_mode, 'payment_method',
                                              p_payment_method, 'terminal_seq', p_terminal_seq);
BEGIN
    v_start := ledger_start_operation(p_call, 'checkpoint', 'a bar terminal cannot top up cards', p_card_uid,
                                      p_client_request_id, p_staff_id, 'recharge', v_online);
    IF v_start.status IS NOT NULL THEN
        o_status := v_start.status; o_body := v_start.body; o_replayed := v_start.replayed;
        RETURN;
    END IF;

    -- The decision (rules::decide_recharge): unknown cards are created.
    SELECT balance_cents, status, block_reason INTO v_card
      FROM cards WHERE card_uid = p_card_uid FOR NO KEY UPDATE;
    v_found := FOUND;
    IF v_found THEN
        v_previous := v_card.balance_cents;
        v_block_reason := v_card.block_reason;
    ELSE
        v_flags := v_flags || 'CARD_CREATED'::text;
        v_previous := 0;
    END IF;
    v_balance := ledger_add(v_previous, p_amount_cents);
    IF v_balance IS NULL THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'INVALID_REQUEST', 'the resulting balance is out of range',
                             jsonb_build_object('field', 'amount_cents'));
        RETURN;
    END IF;
    v_over_recharge := p_amount_cents > p_recharge_max_cents;
    v_over_balance := v_balance > p_balance_max_cents;
    IF v_online THEN
        IF v_block_reason = 'lost' THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'CARD_BLOCKED', 'the card is blocked',
                                  jsonb_build_object('balance_cents', v_previous,
                                                     'status', v_card.status),
                                  'recharge', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_amount_cents, v_log_details);
            RETURN;
        END IF;
        IF v_over_recharge THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'LIMIT_EXCEEDED', 'the top-up is larger than allowed',
                                  jsonb_build_object('limit', 'recharge_max_cents',
                                                     'limit_cents', p_recharge_max_cents,
                                                     'amount_cents', p_amount_cents),
                                  'recharge', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_amount_cents, v_log_details);
            RETURN;
        END IF;
        IF v_over_balance THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'LIMIT_EXCEEDED',
                                  'the card''s balance would exceed the maximum',
                                  jsonb_build_object('limit', 'balance_max_cents',
                                                     'limit_cents', p_balance_max_cents,
                                                     'balance_cents', v_previous),
                                  'recharge', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_amount_cents, v_log_details);
            RETURN;
        END IF;
    ELSIF v_over_recharge OR v_over_balance THEN
        v_flags := v_flags || 'LIMIT_EXCEEDED'::text;
    END IF;
    IF v_balance < 0 THEN
        v_flags := v_flags || 'NEGATIVE_BALANCE'::text;
    END IF;
    -- ledger_status_after: back at zero or above lifts a debt block, never a lost one.
    IF v_block_reason IS DISTINCT FROM 'lost' THEN
        v_block_reason := CASE WHEN v_balance < 0 THEN 'debt' END;
    END IF;
    v_status := CASE WHEN v_block_reason IS NULL THEN 'active' ELSE 'blocked' END;

    -- The writes.
    PERFORM ledger_write_card(p_call, p_card_uid, NOT v_found, v_balance, v_status,
                              v_block_reason);
    o_status := 201;
    o_replayed := false;
    o_body := ledger_approval(p_call, p_client_request_id, p_card_uid, NULL, p_amount_cents,
                              v_previous, v_balance, v_status, v_flags);
    WITH operation AS (
        INSERT INTO recharges (transaction_id, client_request_id, terminal_id, terminal_seq,
                               point_of_sale, card_uid, staff_id, amount_cents, payment_method,
                               mode, flags, previous_balance_cents, new_balance_cents,
                               created_at, processed_at)
        VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id,
                p_terminal_seq, v_start.point_of_sale, p_card_uid, p_staff_id,
                p_amount_cents, p_payment_method, p_mode, to_jsonb(v_flags), v_previous,
                v_balance, p_created_at, (p_call).now)
    ), posting AS (
        INSERT INTO postings (transaction_id, account, amount_cents, created_at)
        VALUES ((p_call).transaction_id, 'card:' || p_card_uid, p_amount_cents, (p_call).now),
               ((p_call).transaction_id,
                CASE p_payment_method WHEN 'card' THEN 'card_payments:' ELSE 'cash:' END
                    || v_start.point_of_sale,
                -p_amount_cents, (p_call).now)
    ), log AS (
        INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                         client_request_id, transaction_id, card_uid,
                                         amount_cents, outcome, error_code, details)
        VALUES ((p_call).now, (p_call).request_id, 'terminal:' || v_start.terminal_name, p_staff_id,
                'recharge', p_client_request_id, (p_call).transaction_id, p_card_uid,
                p_amount_cents, 'approved', NULL, v_log_details)
    )
    INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
                                  status_code, response_body, transaction_id, created_at,
                                  expires_at)
    VALUES (p_client_request_id, (p_call).terminal_id, 'recharge', (p_call).request_sha256,
            o_status, o_body, (p_call).transaction_id, (p_call).now, NULL);
    PERFORM ledger_record_seq_fast((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

-- 3. The Stripe credit of 0006, now behind the creation lock of a card it may create.
ALTER FUNCTION sp_process_stripe_recharge(text, text, text, text, text, text, bigint, bigint,
                                          bigint, timestamptz)
    RENAME TO ledger_stripe_recharge;

CREATE FUNCTION sp_process_stripe_recharge(
    p_request_id text, p_event_id text, p_event_type text, p_session_id text,
    p_payment_intent text, p_card_uid text, p_amount_cents bigint,
    p_recharge_max_cents bigint, p_balance_max_cents bigint, p_now timestamptz)
RETURNS TABLE (outcome text, card_uid text, amount_cents bigint, balance_cents bigint,
               checkout_session_id text, other_session_id text, reversed_into_debt boolean)
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cards c WHERE c.card_uid = p_card_uid) THEN
        PERFORM pg_advisory_xact_lock(1667330921, hashtext(p_card_uid));
    END IF;
    RETURN QUERY SELECT * FROM ledger_stripe_recharge(
        p_request_id, p_event_id, p_event_type, p_session_id, p_payment_intent, p_card_uid,
        p_amount_cents, p_recharge_max_cents, p_balance_max_cents, p_now);
END
$$;

-- cashless ledger schema, version 9 (PostgreSQL): VAT.
--
-- The festival's rates are named in the ledger's configuration (`[taxes]`) and passed to
-- each order's call (names, basis points, the default), as the top-up limits are: a rate's
-- value lives in one place, the configuration. A product names its rate (NULL: the
-- default); every order line records the rate it was sold at and its gross amount split
-- into net and tax (per line, half away from zero: domain::split_gross, the same integer
-- arithmetic), and the order posts, per rate in byte order of its name, the net to
-- `revenue:<point of sale>:<rate>` and the tax to `vat:<rate>` (amounts of zero left out).
-- A void reverses its target's postings as they were written, whatever their accounts.
-- Lines and postings written before this version keep their form (no rate;
-- `revenue:<point of sale>` with the gross).

ALTER TABLE products ADD COLUMN tax_rate text;

ALTER TABLE bar_order_items
    ADD COLUMN tax_rate text,
    ADD COLUMN tax_rate_basis_points integer,
    ADD COLUMN net_cents bigint,
    ADD COLUMN tax_cents bigint;

DROP FUNCTION sp_process_bar_order(ledger_call, uuid, bigint, text, text, text, bigint,
                                   timestamptz, text[], integer[], bigint[]);

-- An order (POST /v1/orders, or an order of a batch).
CREATE FUNCTION sp_process_bar_order(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_total_cents bigint, p_created_at timestamptz,
    p_product_ids text[], p_quantities integer[], p_unit_prices_cents bigint[],
    p_tax_rates text[], p_tax_basis_points integer[], p_default_tax_rate text,
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
    v_product_rates text[] := '{}';
    v_product_rate text;
    v_line_rates text[] := '{}';
    v_line_bps integer[] := '{}';
    v_line_nets bigint[] := '{}';
    v_line_taxes bigint[] := '{}';
    v_rate_at integer;
    v_gross bigint;
    v_tax bigint;
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
        SELECT price_cents, tax_rate INTO v_price, v_product_rate FROM products
         WHERE point_of_sale = v_start.point_of_sale AND product_id = p_product_ids[i]
           AND active;
        v_catalog := v_catalog || CASE WHEN FOUND THEN v_price END;
        v_product_rates := v_product_rates || CASE WHEN FOUND THEN v_product_rate END;
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

    -- VAT per line (domain::split_gross): the product's rate, else the default; the tax
    -- gross × bp / (10000 + bp) rounded half away from zero; the net the rest.
    FOR i IN 1 .. coalesce(array_length(p_product_ids, 1), 0) LOOP
        v_product_rate := coalesce(v_product_rates[i], p_default_tax_rate);
        v_rate_at := array_position(p_tax_rates, v_product_rate);
        IF v_rate_at IS NULL THEN
            RAISE EXCEPTION 'product % names tax rate %, which [taxes] lacks',
                p_product_ids[i], v_product_rate;
        END IF;
        v_gross := p_unit_prices_cents[i] * p_quantities[i];
        v_tax := (sign(v_gross::numeric)
                  * div(2 * abs(v_gross::numeric * p_tax_basis_points[v_rate_at])
                            + 10000 + p_tax_basis_points[v_rate_at],
                        2 * (10000 + p_tax_basis_points[v_rate_at])))::bigint;
        v_line_rates := v_line_rates || v_product_rate;
        v_line_bps := v_line_bps || p_tax_basis_points[v_rate_at];
        v_line_nets := v_line_nets || (v_gross - v_tax);
        v_line_taxes := v_line_taxes || v_tax;
    END LOOP;

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
                                     unit_price_cents, catalog_price_cents, line_total_cents,
                                     tax_rate, tax_rate_basis_points, net_cents, tax_cents)
        SELECT (p_call).transaction_id, n - 1, p_product_ids[n], p_quantities[n],
               p_unit_prices_cents[n], NULLIF(v_catalog[n], p_unit_prices_cents[n]),
               p_unit_prices_cents[n] * p_quantities[n], v_line_rates[n], v_line_bps[n],
               v_line_nets[n], v_line_taxes[n]
          FROM generate_subscripts(p_product_ids, 1) AS n
    ), by_rate AS (
        SELECT l.rate, sum(l.net)::bigint AS net, sum(l.tax)::bigint AS tax
          FROM unnest(v_line_rates, v_line_nets, v_line_taxes) AS l (rate, net, tax)
         GROUP BY l.rate
    ), posting AS (
        -- The card's, then per rate in byte order of its name its net, then its tax.
        INSERT INTO postings (transaction_id, account, amount_cents, created_at)
        SELECT (p_call).transaction_id, p.account, p.amount, (p_call).now
          FROM (SELECT 0 AS side, ''::text AS rate, 0 AS part, 'card:' || p_card_uid AS account,
                       -p_total_cents AS amount
                UNION ALL
                SELECT 1, r.rate, 0, 'revenue:' || v_start.point_of_sale || ':' || r.rate, r.net
                  FROM by_rate r WHERE r.net <> 0
                UNION ALL
                SELECT 1, r.rate, 1, 'vat:' || r.rate, r.tax FROM by_rate r WHERE r.tax <> 0) AS p
         ORDER BY p.side, p.rate COLLATE "C", p.part
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

-- A void (POST /v1/voids, or a void of a batch): reverses this terminal's applied order or
-- top-up in full, or tombstones a key that was never applied.
CREATE OR REPLACE FUNCTION sp_process_void(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint,
    p_target_client_request_id uuid, p_staff_id text, p_reason text, p_created_at timestamptz,
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_operation text;
    v_target_tx uuid;
    -- The applied target, if any: 'order' or 'recharge', its terminal, card and amount.
    v_kind text;
    v_terminal_id uuid;
    v_card_uid text;
    v_amount bigint;
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
        SELECT 'order', terminal_id, card_uid, total_cents
          INTO v_kind, v_terminal_id, v_card_uid, v_amount
          FROM bar_orders WHERE transaction_id = v_target_tx;
    ELSIF v_operation = 'recharge' THEN
        SELECT 'recharge', terminal_id, card_uid, amount_cents
          INTO v_kind, v_terminal_id, v_card_uid, v_amount
          FROM recharges WHERE transaction_id = v_target_tx;
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
        -- for a top-up; below zero blocks the card for debt.
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
        IF v_kind = 'order' THEN
            UPDATE bar_orders SET voided_by = p_client_request_id
             WHERE transaction_id = v_target_tx;
        ELSE
            UPDATE recharges SET voided_by = p_client_request_id
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
        || ',"flags":' || ledger_flags_json(v_flags) || '}';
    PERFORM ledger_log(p_call, p_staff_id, 'void', p_client_request_id, (p_call).transaction_id,
                       v_card_uid, v_delta, v_status, NULL,
                       jsonb_build_object('reason', p_reason, 'target_client_request_id',
                                          p_target_client_request_id));
    PERFORM ledger_key(p_call, p_client_request_id, 'void', o_status, o_body,
                       (p_call).transaction_id);
    PERFORM ledger_record_seq((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

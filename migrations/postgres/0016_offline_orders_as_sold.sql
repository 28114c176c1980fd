-- cashless ledger schema, version 16 (PostgreSQL): offline orders booked as they were sold.
--
-- A terminal that had not yet heard of a change may still sell offline what the ledger no
-- longer allows. The order stands when it arrives (the goods were served), and now:
-- - made by a staff member disabled since (`cashless ledger staff disable`), it is flagged
--   `STAFF_INACTIVE`, so that `cashless ledger report` can list it;
-- - a product taken off sale since (`cashless ledger product disable`) is booked at its own
--   VAT rate, and as a deposit if it is returnable, instead of at the default rate as an
--   unknown product (it is still flagged `PRICE_DIFFERS_FROM_CATALOG`).
-- No table changes: 0011's sp_process_bar_order with those two changes (the SQLite store
-- makes them in the program).

CREATE OR REPLACE FUNCTION sp_process_bar_order(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_total_cents bigint, p_created_at timestamptz,
    p_product_ids text[], p_quantities integer[], p_unit_prices_cents bigint[],
    p_tax_rates text[], p_tax_basis_points integer[], p_default_tax_rate text,
    p_voucher_units bigint,
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
    v_open_max bigint;
    v_catalog_open bigint[] := '{}';
    v_min_age integer;
    v_catalog_age integer[] := '{}';
    v_line_catalog bigint[] := '{}';
    v_restricted integer;
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
    v_voucher_price integer;
    v_catalog_vouchers integer[] := '{}';
    v_vouchers_left bigint;
    v_covered bigint;
    v_line_voucher_quantities bigint[] := '{}';
    v_line_voucher_units bigint[] := '{}';
    v_vouchers_used bigint := 0;
    v_voucher_value bigint := 0;
    v_vouchers_after bigint;
    v_money bigint;
    v_returnable boolean;
    v_active boolean;
    v_catalog_returnable boolean[] := '{}';
    v_line_deposits boolean[] := '{}';
    v_deposits bigint := 0;
    v_log_details jsonb := jsonb_build_object('mode', p_mode, 'terminal_seq', p_terminal_seq);
    i integer;
BEGIN
    v_start := ledger_start_operation(p_call, 'bar', 'a checkpoint terminal cannot sell', p_card_uid,
                                      p_client_request_id, p_staff_id, 'order', v_online);
    IF v_start.status IS NOT NULL THEN
        o_status := v_start.status; o_body := v_start.body; o_replayed := v_start.replayed;
        RETURN;
    END IF;

    -- The catalog's prices, open prices' maxima and minimum ages, read before the card's
    -- lock (the decision below uses them in the order of rules::decide_order), so that the
    -- card is locked for less time.
    FOR i IN 1 .. coalesce(array_length(p_product_ids, 1), 0) LOOP
        SELECT price_cents, tax_rate, open_price_max_cents, min_age, voucher_price, returnable,
               active
          INTO v_price, v_product_rate, v_open_max, v_min_age, v_voucher_price, v_returnable,
               v_active
          FROM products
         WHERE point_of_sale = v_start.point_of_sale AND product_id = p_product_ids[i];
        IF NOT FOUND THEN
            v_price := NULL; v_product_rate := NULL; v_open_max := NULL; v_min_age := NULL;
            v_voucher_price := NULL; v_returnable := false;
        ELSIF NOT v_active THEN
            -- Off sale: no catalog entry for the decision, but what was sold offline is
            -- booked at the product's own rate, and as a deposit if it is returnable.
            v_price := NULL; v_open_max := NULL; v_min_age := NULL; v_voucher_price := NULL;
        END IF;
        v_catalog_returnable := v_catalog_returnable || v_returnable;
        v_catalog_vouchers := v_catalog_vouchers || v_voucher_price;
        v_catalog := v_catalog || v_price;
        v_product_rates := v_product_rates || v_product_rate;
        v_catalog_open := v_catalog_open || v_open_max;
        v_catalog_age := v_catalog_age || v_min_age;
        -- CatalogEntry::differs: NULL when the catalog accepts the line's price, else the
        -- fixed price or the open price's maximum.
        v_line_catalog := v_line_catalog || CASE
            WHEN v_price IS NULL THEN NULL
            WHEN v_open_max IS NOT NULL THEN
                CASE WHEN p_unit_prices_cents[i] BETWEEN 1 AND v_open_max THEN NULL
                     ELSE v_open_max END
            ELSE NULLIF(v_price, p_unit_prices_cents[i]) END;
    END LOOP;

    -- The decision (rules::decide_order).
    SELECT balance_cents, status, block_reason, age_flag, voucher_units INTO v_card
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
        IF v_price IS NOT NULL AND v_line_catalog[i] IS NULL THEN
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
        ELSIF v_catalog_open[i] IS NOT NULL THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'PRICE_MISMATCH',
                                  format('product %s has an open price of 1 to %s cents',
                                         p_product_ids[i], v_catalog_open[i]),
                                  jsonb_build_object('product_id', p_product_ids[i],
                                                     'open_price_max_cents', v_catalog_open[i],
                                                     'unit_price_cents', p_unit_prices_cents[i]),
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
    -- AgeFlag::forbids: under_16 forbids 16 and 18, under_18 forbids 18; the first line
    -- whose product the card's flag forbids.
    IF v_card.age_flag IS NOT NULL THEN
        SELECT n INTO v_restricted
          FROM generate_subscripts(p_product_ids, 1) AS n
         WHERE v_catalog_age[n] >= CASE v_card.age_flag WHEN 'under_16' THEN 16 ELSE 18 END
         ORDER BY n LIMIT 1;
        IF v_restricted IS NOT NULL AND v_online THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'AGE_RESTRICTED',
                                  format('product %s is sold from age %s, and the card''s holder is %s',
                                         p_product_ids[v_restricted], v_catalog_age[v_restricted],
                                         replace(v_card.age_flag, '_', ' ')),
                                  jsonb_build_object('product_id', p_product_ids[v_restricted],
                                                     'min_age', v_catalog_age[v_restricted],
                                                     'age_flag', v_card.age_flag),
                                  'order', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_total_cents, v_log_details);
            RETURN;
        ELSIF v_restricted IS NOT NULL THEN
            v_flags := v_flags || 'AGE_RESTRICTED'::text;
        END IF;
    END IF;
    -- rules::voucher_split: vouchers pay first, lines in order, each unit of a product with
    -- a voucher price while they cover it: online the card's, offline what the terminal
    -- used. The money is the total less what they paid.
    v_vouchers_left := greatest(CASE WHEN v_online THEN coalesce(v_card.voucher_units, 0)
                                     ELSE coalesce(p_voucher_units, 0) END, 0);
    FOR i IN 1 .. coalesce(array_length(p_product_ids, 1), 0) LOOP
        v_covered := 0;
        IF v_catalog_vouchers[i] > 0 THEN
            v_covered := least(p_quantities[i], v_vouchers_left / v_catalog_vouchers[i]);
            v_vouchers_left := v_vouchers_left - v_covered * v_catalog_vouchers[i];
            v_vouchers_used := v_vouchers_used + v_covered * v_catalog_vouchers[i];
            v_voucher_value := v_voucher_value + v_covered * p_unit_prices_cents[i];
        END IF;
        v_line_voucher_quantities := v_line_voucher_quantities || v_covered;
        v_line_voucher_units := v_line_voucher_units
            || v_covered * coalesce(v_catalog_vouchers[i], 0);
    END LOOP;
    v_money := p_total_cents - v_voucher_value;
    v_vouchers_after := coalesce(v_card.voucher_units, 0) - v_vouchers_used;
    IF v_vouchers_used > 0 AND v_vouchers_after < 0 THEN
        v_flags := v_flags || 'VOUCHERS_OVERDRAWN'::text;
    END IF;
    IF v_online AND v_previous < v_money THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_decline(p_call, 'INSUFFICIENT_FUNDS', 'the card''s balance is too low',
                              jsonb_build_object('balance_cents', v_previous),
                              'order', p_client_request_id, p_terminal_seq, p_staff_id,
                              p_card_uid, p_total_cents, v_log_details);
        RETURN;
    END IF;
    v_balance := ledger_add(v_previous, -v_money);
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
        -- Only money is split: what vouchers paid earns nothing. A returnable item's money
        -- is a deposit (no sale, no VAT): it goes to the deposits account.
        v_gross := p_unit_prices_cents[i] * (p_quantities[i] - v_line_voucher_quantities[i]);
        v_line_deposits := v_line_deposits || v_catalog_returnable[i];
        IF v_catalog_returnable[i] THEN
            v_deposits := v_deposits + v_gross;
            v_gross := 0;
        END IF;
        v_tax := (sign(v_gross::numeric)
                  * div(2 * abs(v_gross::numeric * p_tax_basis_points[v_rate_at])
                            + 10000 + p_tax_basis_points[v_rate_at],
                        2 * (10000 + p_tax_basis_points[v_rate_at])))::bigint;
        v_line_rates := v_line_rates || v_product_rate;
        v_line_bps := v_line_bps || p_tax_basis_points[v_rate_at];
        v_line_nets := v_line_nets || (v_gross - v_tax);
        v_line_taxes := v_line_taxes || v_tax;
    END LOOP;

    -- An offline order by a staff member disabled by the time it arrives stands (the goods
    -- were served), flagged last, as the SQLite store's flow flags it.
    IF NOT v_online AND NOT (SELECT s.active FROM staff s WHERE s.staff_id = p_staff_id) THEN
        v_flags := v_flags || 'STAFF_INACTIVE'::text;
    END IF;

    -- The writes.
    PERFORM ledger_write_card(p_call, p_card_uid, NOT v_found, v_balance, v_status,
                              v_block_reason);
    IF v_vouchers_used <> 0 THEN
        UPDATE cards SET voucher_units = v_vouchers_after WHERE card_uid = p_card_uid;
        v_log_details := v_log_details || jsonb_build_object('vouchers_used', v_vouchers_used);
    END IF;
    o_status := 201;
    o_replayed := false;
    o_body := ledger_approval(p_call, p_client_request_id, p_card_uid, p_total_cents, NULL,
                              v_previous, v_balance, v_status, v_flags);
    -- An order's approval ends with what vouchers and money it took (Approval's last fields).
    o_body := left(o_body, -1) || ',"vouchers_used":' || v_vouchers_used
        || ',"money_cents":' || v_money || '}';
    WITH operation AS (
        INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq,
                                point_of_sale, card_uid, staff_id, total_cents, mode, flags,
                                previous_balance_cents, new_balance_cents, created_at,
                                processed_at, voucher_units, money_cents)
        VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id,
                p_terminal_seq, v_start.point_of_sale, p_card_uid, p_staff_id,
                p_total_cents, p_mode, to_jsonb(v_flags), v_previous, v_balance, p_created_at,
                (p_call).now, v_vouchers_used, v_money)
    ), items AS (
        INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity,
                                     unit_price_cents, catalog_price_cents, line_total_cents,
                                     tax_rate, tax_rate_basis_points, net_cents, tax_cents,
                                     voucher_quantity, voucher_units, deposit)
        SELECT (p_call).transaction_id, n - 1, p_product_ids[n], p_quantities[n],
               p_unit_prices_cents[n], v_line_catalog[n],
               p_unit_prices_cents[n] * p_quantities[n], v_line_rates[n], v_line_bps[n],
               v_line_nets[n], v_line_taxes[n], v_line_voucher_quantities[n],
               v_line_voucher_units[n], v_line_deposits[n]
          FROM generate_subscripts(p_product_ids, 1) AS n
    ), by_rate AS (
        SELECT l.rate, sum(l.net)::bigint AS net, sum(l.tax)::bigint AS tax
          FROM unnest(v_line_rates, v_line_nets, v_line_taxes) AS l (rate, net, tax)
         GROUP BY l.rate
    ), posting AS (
        -- The card's, then per rate in byte order of its name its net, then its tax, then
        -- the deposits.
        INSERT INTO postings (transaction_id, account, amount_cents, created_at)
        SELECT (p_call).transaction_id, p.account, p.amount, (p_call).now
          FROM (SELECT 0 AS side, ''::text AS rate, 0 AS part, 'card:' || p_card_uid AS account,
                       -v_money AS amount WHERE v_money <> 0
                UNION ALL
                SELECT 1, r.rate, 0, 'revenue:' || v_start.point_of_sale || ':' || r.rate, r.net
                  FROM by_rate r WHERE r.net <> 0
                UNION ALL
                SELECT 1, r.rate, 1, 'vat:' || r.rate, r.tax FROM by_rate r WHERE r.tax <> 0
                UNION ALL
                SELECT 2, '', 0, 'deposits', v_deposits WHERE v_deposits <> 0) AS p
         ORDER BY p.side, p.rate COLLATE "C", p.part
    ), log AS (
        INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                         client_request_id, transaction_id, card_uid,
                                         amount_cents, outcome, error_code, details)
        VALUES ((p_call).now, (p_call).request_id, 'terminal:' || v_start.terminal_name, p_staff_id,
                'order', p_client_request_id, (p_call).transaction_id, p_card_uid,
                v_money, 'approved', NULL, v_log_details)
    )
    INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
                                  status_code, response_body, transaction_id, created_at,
                                  expires_at)
    VALUES (p_client_request_id, (p_call).terminal_id, 'order', (p_call).request_sha256,
            o_status, o_body, (p_call).transaction_id, (p_call).now, NULL);
    PERFORM ledger_record_seq_fast((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

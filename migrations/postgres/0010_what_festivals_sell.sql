-- cashless ledger schema, version 10 (PostgreSQL): age restrictions, open prices, vouchers.
--
-- A card may carry what staff saw on its holder's ID (`under_16`, `under_18`; NULL: nobody
-- said the holder is a minor), set by the desk (`card flag`, in Rust) or by a top-up that
-- names it; the card feed carries it to terminals. A product may require an age (16 or 18):
-- an online order of it for a card whose flag forbids it (domain::AgeFlag::forbids) is a
-- stored decline, AGE_RESTRICTED; an offline one (the terminal did not know the flag yet) is
-- applied and flagged AGE_RESTRICTED. A product may have an open price: staff type the unit
-- price, 1 cent to `open_price_max_cents` (its `price_cents` is 0); beyond it, online, a
-- PRICE_MISMATCH with the maximum; offline, flagged like any price that differs.
-- Vouchers (staff and artist drinks): units on a card (granted by the desk, in Rust); a
-- product may cost `voucher_price` units; an order uses vouchers first, lines in order
-- (rules::voucher_split), and money for the rest; what vouchers pay earns no revenue and
-- no VAT. A void gives an order's vouchers back.
--
-- The order procedure takes the vouchers an offline order used as a new last argument, the
-- top-up procedure the age flag; the void procedure is replaced whole (same arguments).

ALTER TABLE cards ADD COLUMN age_flag text CHECK (age_flag IN ('under_16', 'under_18'));
ALTER TABLE products
    ADD COLUMN min_age integer CHECK (min_age IN (16, 18)),
    ADD COLUMN open_price_max_cents bigint CHECK (open_price_max_cents > 0);
-- The flag a top-up set on its card (NULL: it set none).
ALTER TABLE recharges ADD COLUMN age_flag text CHECK (age_flag IN ('under_16', 'under_18'));
ALTER TABLE cards ADD COLUMN voucher_units bigint NOT NULL DEFAULT 0;
ALTER TABLE products ADD COLUMN voucher_price integer CHECK (voucher_price > 0);
-- What an order took: voucher units and money (NULL in orders written before vouchers:
-- none, and their total). Per line: the units vouchers paid and the voucher units taken.
ALTER TABLE bar_orders ADD COLUMN voucher_units bigint, ADD COLUMN money_cents bigint;
ALTER TABLE bar_order_items ADD COLUMN voucher_quantity bigint,
                            ADD COLUMN voucher_units bigint;

-- The card feed of 0004 (the same horizon), with each card's age flag and voucher units.
DROP FUNCTION card_feed(bigint, integer);
CREATE FUNCTION card_feed(p_since_version bigint, p_limit integer)
RETURNS TABLE (card_uid text, balance_cents bigint, status text, version bigint,
               updated_at timestamptz, age_flag text, voucher_units bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_horizon bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1667330920, 1);
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END
      INTO v_horizon FROM card_version_seq s;
    -- A new statement: its snapshot sees every transaction that ended before the lock.
    RETURN QUERY
        SELECT c.card_uid, c.balance_cents, c.status, c.version, c.updated_at, c.age_flag,
               c.voucher_units
          FROM cards c
         WHERE c.version > p_since_version AND c.version <= v_horizon
         ORDER BY c.version
         LIMIT p_limit;
END
$$;

-- Every HTTP status of the API's codes (crate::protocol::codes, checked by a unit test).
CREATE OR REPLACE FUNCTION ledger_http_status(p_code text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE p_code
        WHEN 'INVALID_REQUEST' THEN 400
        WHEN 'UNAUTHORIZED' THEN 401
        WHEN 'FORBIDDEN' THEN 403
        WHEN 'CARD_NOT_FOUND' THEN 404
        WHEN 'NOT_FOUND' THEN 404
        WHEN 'METHOD_NOT_ALLOWED' THEN 405
        WHEN 'INSUFFICIENT_FUNDS' THEN 402
        WHEN 'CARD_BLOCKED' THEN 423
        WHEN 'LIMIT_EXCEEDED' THEN 422
        WHEN 'UNKNOWN_PRODUCT' THEN 422
        WHEN 'PRICE_MISMATCH' THEN 422
        WHEN 'AGE_RESTRICTED' THEN 422
        WHEN 'IDEMPOTENCY_KEY_REUSED' THEN 422
        WHEN 'DUPLICATE_REQUEST' THEN 409
        WHEN 'ALREADY_VOIDED' THEN 409
        WHEN 'OPERATION_VOIDED' THEN 409
        WHEN 'PAYLOAD_TOO_LARGE' THEN 413
        WHEN 'DATABASE_ERROR' THEN 503
        WHEN 'SERVER_ERROR' THEN 500
    END
$$;

-- The business declines whose answer is stored with the key (ErrorCode::is_stored_decline);
-- every other refusal writes nothing.
CREATE OR REPLACE FUNCTION ledger_is_stored_decline(p_code text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT p_code IN ('INSUFFICIENT_FUNDS', 'CARD_NOT_FOUND', 'CARD_BLOCKED', 'LIMIT_EXCEEDED',
                      'UNKNOWN_PRODUCT', 'PRICE_MISMATCH', 'AGE_RESTRICTED')
$$;

DROP FUNCTION sp_process_bar_order(ledger_call, uuid, bigint, text, text, text, bigint,
                                   timestamptz, text[], integer[], bigint[], text[], integer[],
                                   text);

-- An order (POST /v1/orders, or an order of a batch). `p_voucher_units`: the vouchers an
-- offline order says it used (NULL: none; always NULL online, where the card's pay first).
CREATE FUNCTION sp_process_bar_order(
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
        SELECT price_cents, tax_rate, open_price_max_cents, min_age, voucher_price
          INTO v_price, v_product_rate, v_open_max, v_min_age, v_voucher_price FROM products
         WHERE point_of_sale = v_start.point_of_sale AND product_id = p_product_ids[i]
           AND active;
        IF NOT FOUND THEN
            v_price := NULL; v_product_rate := NULL; v_open_max := NULL; v_min_age := NULL;
            v_voucher_price := NULL;
        END IF;
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
        -- Only money is split: what vouchers paid earns nothing.
        v_gross := p_unit_prices_cents[i] * (p_quantities[i] - v_line_voucher_quantities[i]);
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
                                     voucher_quantity, voucher_units)
        SELECT (p_call).transaction_id, n - 1, p_product_ids[n], p_quantities[n],
               p_unit_prices_cents[n], v_line_catalog[n],
               p_unit_prices_cents[n] * p_quantities[n], v_line_rates[n], v_line_bps[n],
               v_line_nets[n], v_line_taxes[n], v_line_voucher_quantities[n],
               v_line_voucher_units[n]
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
                       -v_money AS amount WHERE v_money <> 0
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

DROP FUNCTION sp_process_checkpoint_recharge(ledger_call, uuid, bigint, text, text, text,
                                             bigint, text, timestamptz, bigint, bigint);

-- A top-up (POST /v1/recharges, or a top-up of a batch).
CREATE FUNCTION sp_process_checkpoint_recharge(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_amount_cents bigint, p_payment_method text,
    p_created_at timestamptz, p_recharge_max_cents bigint, p_balance_max_cents bigint,
    p_age_flag text,
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
                                              p_payment_method, 'terminal_seq', p_terminal_seq)
                           || CASE WHEN p_age_flag IS NULL THEN '{}'::jsonb
                                   ELSE jsonb_build_object('age_flag', p_age_flag) END;
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
    -- rules::decide_recharge: a top-up that names an age flag sets it.
    IF p_age_flag IS NOT NULL THEN
        UPDATE cards SET age_flag = p_age_flag WHERE card_uid = p_card_uid;
    END IF;
    o_status := 201;
    o_replayed := false;
    o_body := ledger_approval(p_call, p_client_request_id, p_card_uid, NULL, p_amount_cents,
                              v_previous, v_balance, v_status, v_flags);
    WITH operation AS (
        INSERT INTO recharges (transaction_id, client_request_id, terminal_id, terminal_seq,
                               point_of_sale, card_uid, staff_id, amount_cents, payment_method,
                               mode, flags, previous_balance_cents, new_balance_cents,
                               created_at, processed_at, age_flag)
        VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id,
                p_terminal_seq, v_start.point_of_sale, p_card_uid, p_staff_id,
                p_amount_cents, p_payment_method, p_mode, to_jsonb(v_flags), v_previous,
                v_balance, p_created_at, (p_call).now, p_age_flag)
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

-- A void (POST /v1/voids, or a void of a batch): reverses this terminal's applied order or
-- top-up in full (an order's money and vouchers), or tombstones a key that was never applied.
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
        -- rules::decide_reversal: an order's vouchers go back to the card.
        IF v_vouchers <> 0 THEN
            UPDATE cards SET voucher_units = voucher_units + v_vouchers
             WHERE card_uid = v_card_uid;
        END IF;
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

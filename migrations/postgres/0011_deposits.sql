-- cashless ledger schema, version 11 (PostgreSQL): deposits on returnable items, and return
-- stations (the SQLite schema's version 6).
--
-- A product may be a returnable item (`returnable`: a cup), whose price is a deposit, and a
-- product may come in one (`deposit_product_id`: the returnable item at the same point of
-- sale that the terminal adds to the order with it). An order line of a returnable item
-- records neither net nor tax (`deposit`); its money goes to the `deposits` liability
-- account. A deposit return credits the items' deposits back to a card
-- (`sp_process_deposit_return`): `deposit_returns` and its lines, posted `card:<UID>`
-- +amount and `deposits` -amount. A void reverses it like a top-up (voids.target_kind gains
-- 'return').
--
-- A return station is a terminal kind of its own (`return`): it only takes items back; a
-- bar takes them back too. ledger_start_operation now names the refusal of a terminal kind
-- itself (ledger_kind_refusal, rules::check_terminal_kind), whatever its p_kind and
-- p_wrong_kind say, and lets bar staff and supervisors take items back.

ALTER TABLE terminals
    DROP CONSTRAINT terminals_kind_check,
    ADD CONSTRAINT terminals_kind_check CHECK (kind IN ('bar', 'checkpoint', 'return'));
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_operation_check,
    ADD CONSTRAINT idempotency_keys_operation_check
        CHECK (operation IN ('order', 'recharge', 'void', 'shift', 'return'));

ALTER TABLE voids
    DROP CONSTRAINT voids_target_kind_check,
    ADD CONSTRAINT voids_target_kind_check
        CHECK (target_kind IN ('order', 'recharge', 'return'));

ALTER TABLE products
    ADD COLUMN returnable boolean NOT NULL DEFAULT false,
    ADD COLUMN deposit_product_id text;
-- True for a returnable item's line; NULL in lines written before this version.
ALTER TABLE bar_order_items ADD COLUMN deposit boolean;

CREATE TABLE deposit_returns (
    transaction_id         uuid PRIMARY KEY,
    client_request_id      uuid NOT NULL,
    terminal_id            uuid NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq           bigint NOT NULL,
    point_of_sale          text NOT NULL,
    card_uid               text NOT NULL REFERENCES cards (card_uid),
    staff_id               text NOT NULL,
    amount_cents           bigint NOT NULL CHECK (amount_cents > 0),
    mode                   text NOT NULL CHECK (mode IN ('online', 'offline')),
    flags                  jsonb NOT NULL,
    previous_balance_cents bigint NOT NULL,
    new_balance_cents      bigint NOT NULL,
    created_at             timestamptz NOT NULL,
    processed_at           timestamptz NOT NULL,
    voided_by              uuid
);

CREATE TABLE deposit_return_items (
    transaction_id        uuid NOT NULL REFERENCES deposit_returns (transaction_id),
    line_no               integer NOT NULL,
    product_id            text NOT NULL,
    quantity              integer NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    unit_deposit_cents    bigint NOT NULL CHECK (unit_deposit_cents >= 0),
    -- The catalog's deposit when it differed (offline returns; 0: the catalog does not take
    -- this item back here), else NULL.
    catalog_deposit_cents bigint,
    line_total_cents      bigint NOT NULL,
    PRIMARY KEY (transaction_id, line_no)
);

-- rules::check_terminal_kind: the refusal of an action at a terminal of this kind, or NULL.
CREATE FUNCTION ledger_kind_refusal(p_kind text, p_action text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_kind = 'bar' AND p_action = 'recharge' THEN 'a bar terminal cannot top up cards'
        WHEN p_kind = 'return' AND p_action = 'recharge'
            THEN 'a return station cannot top up cards'
        WHEN p_kind = 'checkpoint' AND p_action = 'order' THEN 'a checkpoint terminal cannot sell'
        WHEN p_kind = 'return' AND p_action = 'order' THEN 'a return station cannot sell'
        WHEN p_kind = 'checkpoint' AND p_action = 'return'
            THEN 'a checkpoint terminal cannot take returnable items back'
    END
$$;

-- 0008's ledger_start_operation, the terminal kind's refusal and the staff roles of a
-- return changed.
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

-- 0010's order, with deposit lines.
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
        SELECT price_cents, tax_rate, open_price_max_cents, min_age, voucher_price, returnable
          INTO v_price, v_product_rate, v_open_max, v_min_age, v_voucher_price, v_returnable
          FROM products
         WHERE point_of_sale = v_start.point_of_sale AND product_id = p_product_ids[i]
           AND active;
        IF NOT FOUND THEN
            v_price := NULL; v_product_rate := NULL; v_open_max := NULL; v_min_age := NULL;
            v_voucher_price := NULL; v_returnable := false;
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

-- 0010's void, reversing a deposit return like a top-up.
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
    ELSIF v_operation = 'return' THEN
        SELECT 'return', terminal_id, card_uid, amount_cents
          INTO v_kind, v_terminal_id, v_card_uid, v_amount
          FROM deposit_returns WHERE transaction_id = v_target_tx;
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
        -- rules::decide_reversal: an order's vouchers go back to the card.
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
        ELSE
            UPDATE deposit_returns SET voided_by = p_client_request_id
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

-- A deposit return (POST /v1/returns, or a return of a batch): rules::decide_return.
CREATE FUNCTION sp_process_deposit_return(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_amount_cents bigint, p_created_at timestamptz,
    p_product_ids text[], p_quantities integer[], p_unit_deposits_cents bigint[],
    p_balance_max_cents bigint,
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
    v_line_catalog bigint[] := '{}';
    v_items jsonb := '[]';
    v_log_details jsonb;
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_product_ids, 1), 0) LOOP
        v_items := v_items || jsonb_build_array(jsonb_build_object(
            'product_id', p_product_ids[i], 'quantity', p_quantities[i]));
    END LOOP;
    v_log_details := jsonb_build_object('mode', p_mode, 'terminal_seq', p_terminal_seq,
                                        'items', v_items);
    v_start := ledger_start_operation(p_call, 'return', NULL, p_card_uid, p_client_request_id,
                                      p_staff_id, 'return', v_online);
    IF v_start.status IS NOT NULL THEN
        o_status := v_start.status; o_body := v_start.body; o_replayed := v_start.replayed;
        RETURN;
    END IF;

    -- Each line: a returnable item here, at its catalog deposit (online); offline what the
    -- terminal credited, the catalog's deposit recorded when it differs (0: not taken back
    -- here).
    FOR i IN 1 .. coalesce(array_length(p_product_ids, 1), 0) LOOP
        SELECT price_cents INTO v_price FROM products
         WHERE point_of_sale = v_start.point_of_sale AND product_id = p_product_ids[i]
           AND active AND returnable;
        IF NOT FOUND THEN
            v_price := NULL;
        END IF;
        IF v_online AND v_price IS NULL THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'UNKNOWN_PRODUCT',
                                  format('product %s is not a returnable item here',
                                         p_product_ids[i]),
                                  jsonb_build_object('product_id', p_product_ids[i]),
                                  'return', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_amount_cents, v_log_details);
            RETURN;
        ELSIF v_online AND v_price <> p_unit_deposits_cents[i] THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'PRICE_MISMATCH',
                                  format('the deposit of %s is %s now', p_product_ids[i], v_price),
                                  jsonb_build_object('product_id', p_product_ids[i],
                                                     'catalog_price_cents', v_price,
                                                     'unit_deposit_cents', p_unit_deposits_cents[i]),
                                  'return', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_amount_cents, v_log_details);
            RETURN;
        END IF;
        v_line_catalog := v_line_catalog
            || CASE WHEN v_price IS NULL THEN 0::bigint
                    ELSE NULLIF(v_price, p_unit_deposits_cents[i]) END;
    END LOOP;

    -- The credit, as a top-up's (rules::credit): unknown cards are created.
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
    IF v_online THEN
        IF v_block_reason = 'lost' THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'CARD_BLOCKED', 'the card is blocked',
                                  jsonb_build_object('balance_cents', v_previous,
                                                     'status', v_card.status),
                                  'return', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_amount_cents, v_log_details);
            RETURN;
        END IF;
        IF v_balance > p_balance_max_cents THEN
            SELECT * INTO o_status, o_body, o_replayed
              FROM ledger_decline(p_call, 'LIMIT_EXCEEDED',
                                  'the card''s balance would exceed the maximum',
                                  jsonb_build_object('limit', 'balance_max_cents',
                                                     'limit_cents', p_balance_max_cents,
                                                     'balance_cents', v_previous),
                                  'return', p_client_request_id, p_terminal_seq, p_staff_id,
                                  p_card_uid, p_amount_cents, v_log_details);
            RETURN;
        END IF;
    ELSIF v_balance > p_balance_max_cents THEN
        v_flags := v_flags || 'LIMIT_EXCEEDED'::text;
    END IF;
    IF v_balance < 0 THEN
        v_flags := v_flags || 'NEGATIVE_BALANCE'::text;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(v_line_catalog) AS c WHERE c IS NOT NULL) THEN
        v_flags := v_flags || 'PRICE_DIFFERS_FROM_CATALOG'::text;
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
        INSERT INTO deposit_returns (transaction_id, client_request_id, terminal_id,
                                     terminal_seq, point_of_sale, card_uid, staff_id,
                                     amount_cents, mode, flags, previous_balance_cents,
                                     new_balance_cents, created_at, processed_at)
        VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id,
                p_terminal_seq, v_start.point_of_sale, p_card_uid, p_staff_id,
                p_amount_cents, p_mode, to_jsonb(v_flags), v_previous, v_balance,
                p_created_at, (p_call).now)
    ), items AS (
        INSERT INTO deposit_return_items (transaction_id, line_no, product_id, quantity,
                                          unit_deposit_cents, catalog_deposit_cents,
                                          line_total_cents)
        SELECT (p_call).transaction_id, n - 1, p_product_ids[n], p_quantities[n],
               p_unit_deposits_cents[n], v_line_catalog[n],
               p_unit_deposits_cents[n] * p_quantities[n]
          FROM generate_subscripts(p_product_ids, 1) AS n
    ), posting AS (
        INSERT INTO postings (transaction_id, account, amount_cents, created_at)
        VALUES ((p_call).transaction_id, 'card:' || p_card_uid, p_amount_cents, (p_call).now),
               ((p_call).transaction_id, 'deposits', -p_amount_cents, (p_call).now)
    ), log AS (
        INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                         client_request_id, transaction_id, card_uid,
                                         amount_cents, outcome, error_code, details)
        VALUES ((p_call).now, (p_call).request_id, 'terminal:' || v_start.terminal_name,
                p_staff_id, 'return', p_client_request_id, (p_call).transaction_id,
                p_card_uid, p_amount_cents, 'approved', NULL, v_log_details)
    )
    INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
                                  status_code, response_body, transaction_id, created_at,
                                  expires_at)
    VALUES (p_client_request_id, (p_call).terminal_id, 'return', (p_call).request_sha256,
            o_status, o_body, (p_call).transaction_id, (p_call).now, NULL);
    PERFORM ledger_record_seq_fast((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

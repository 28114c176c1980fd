-- cashless ledger schema, version 5 (PostgreSQL): the money operations as stored procedures.
--
-- Each of sp_process_bar_order, sp_process_checkpoint_recharge, sp_process_void and
-- sp_record_shift is one call, one transaction, one round trip: it checks, decides, writes
-- (card, operation rows, postings, audit log, idempotency record, terminal_seq tracking) and
-- returns the answer: its HTTP status, its exact JSON body (also what a replay sends again),
-- and whether it is a replay. They keep the flow's contract (docs/ledger-api.md, "Flow
-- contract (for every backend)"), which the SQLite backend keeps in Rust: the same order of
-- checks, the same arithmetic, the same messages, the same rows. tests/ledger_conformance.rs
-- and the differential test hold the two to each other.
--
-- What the caller computes, because it is pure and the same in both backends: the request's
-- fingerprint (SHA-256 of the terminal and the canonical request), the new transaction id
-- (UUIDv7), `now` (to the millisecond, and as the RFC 3339 text the answers show) and when a
-- decline's key expires.
--
-- Locks, always in this order, so that no two calls can deadlock:
--   1. the card feed's lock, shared (card_feed_writer(), 0004), by every call that may
--      change a card;
--   2. the idempotency keys' advisory locks (ledger_lock_keys), a void's two in ascending
--      order: a duplicate of a request in flight waits here, then finds its stored answer;
--   3. the card row, FOR NO KEY UPDATE (a void: its target's card);
--   4. the terminal's row, for the terminal_seq tracking, last.
--
-- Answers are built as serde_json writes them in the SQLite backend: struct fields in
-- declaration order, maps (an error and its details) with their keys in byte order, no
-- spaces (ledger_json).
--
-- The helpers every approval calls are PL/pgSQL, not SQL functions: PostgreSQL (up to 17)
-- parses and plans a SQL function's body again in every transaction that calls it, unless
-- it can inline it (none of these qualify: they write, return a record, are strict, or call
-- stable functions while declared immutable), whereas PL/pgSQL keeps its plans for the life
-- of the connection. As SQL functions they took about a sixth of the database's CPU per
-- order (BENCHMARKS.md, "PostgreSQL (issue 12)").

-- Every HTTP status of the API's codes (crate::protocol::codes, checked by a unit test).
CREATE FUNCTION ledger_http_status(p_code text) RETURNS integer
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
CREATE FUNCTION ledger_is_stored_decline(p_code text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT p_code IN ('INSUFFICIENT_FUNDS', 'CARD_NOT_FOUND', 'CARD_BLOCKED', 'LIMIT_EXCEEDED',
                      'UNKNOWN_PRODUCT', 'PRICE_MISMATCH')
$$;

-- A JSON value as serde_json writes a map of it: keys in byte order, no spaces.
CREATE FUNCTION ledger_json(p jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    CASE jsonb_typeof(p)
    WHEN 'object' THEN
        RETURN '{' || COALESCE((SELECT string_agg(to_json(k)::text || ':' || ledger_json(v), ','
                                                  ORDER BY k COLLATE "C")
                                  FROM jsonb_each(p) AS e (k, v)), '') || '}';
    WHEN 'array' THEN
        RETURN '[' || COALESCE((SELECT string_agg(ledger_json(v), ',' ORDER BY n)
                                  FROM jsonb_array_elements(p) WITH ORDINALITY AS a (v, n)), '')
                   || ']';
    ELSE
        RETURN p::text;
    END CASE;
END
$$;

-- The error body of the contract: {"error":{"code","details"?,"message","request_id"}}.
CREATE FUNCTION ledger_error_body(p_code text, p_message text, p_details jsonb,
                                  p_request_id text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT ledger_json(jsonb_build_object('error',
        jsonb_build_object('code', p_code, 'message', p_message, 'request_id', p_request_id)
        || CASE WHEN p_details IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('details', p_details) END))
$$;

-- Flags as the answers list them: ["CARD_CREATED","NEGATIVE_BALANCE"].
CREATE FUNCTION ledger_flags_json(p_flags text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN COALESCE(array_to_json(p_flags)::text, '[]');
END
$$;

-- A JSON string, or null.
CREATE FUNCTION ledger_str(p text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN COALESCE(to_json(p)::text, 'null');
END
$$;

-- A JSON number, or null.
CREATE FUNCTION ledger_num(p bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN COALESCE(p::text, 'null');
END
$$;

-- Step 2 of the lock order: the advisory locks of one or two idempotency keys, ascending.
CREATE FUNCTION ledger_lock_keys(p_keys uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_lock bigint;
BEGIN
    FOR v_lock IN SELECT DISTINCT hashtextextended(k::text, 0) FROM unnest(p_keys) AS k
                   ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(v_lock);
    END LOOP;
END
$$;

-- A card's status after its balance changed (rules::status_after): below zero blocks it for
-- debt (a lost card stays lost); back at zero or above lifts a debt block, never a lost one.
CREATE FUNCTION ledger_status_after(p_balance bigint, p_block_reason text,
                                    OUT status text, OUT block_reason text)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    status := CASE WHEN p_balance < 0 OR p_block_reason = 'lost' THEN 'blocked'
                   ELSE 'active' END;
    block_reason := CASE WHEN p_block_reason = 'lost' THEN 'lost'
                         WHEN p_balance < 0 THEN 'debt' END;
END
$$;

-- Step 4: the terminal's highest contiguous and highest seen terminal_seq after receiving
-- p_seq, with the numbers received above the contiguous mark in terminal_seqs.
CREATE FUNCTION ledger_record_seq(p_terminal_id uuid, p_seq bigint, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_contiguous bigint;
    v_seen bigint;
    v_mark bigint;
    v_s bigint;
BEGIN
    -- The usual case: a terminal in step sends the next number, nothing received above it.
    UPDATE terminals
       SET highest_contiguous_seq = p_seq, highest_seen_seq = p_seq, last_seen_at = p_now
     WHERE terminal_id = p_terminal_id AND highest_contiguous_seq = p_seq - 1
       AND highest_seen_seq < p_seq;
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT highest_contiguous_seq, highest_seen_seq INTO v_contiguous, v_seen
      FROM terminals WHERE terminal_id = p_terminal_id FOR NO KEY UPDATE;
    v_mark := v_contiguous;
    IF p_seq = v_contiguous + 1 THEN
        v_mark := p_seq;
        FOR v_s IN SELECT terminal_seq FROM terminal_seqs
                    WHERE terminal_id = p_terminal_id AND terminal_seq > p_seq
                    ORDER BY terminal_seq LIMIT 10000 LOOP
            IF v_s = v_mark + 1 THEN
                v_mark := v_s;
            ELSIF v_s > v_mark + 1 THEN
                EXIT;
            END IF;
        END LOOP;
        DELETE FROM terminal_seqs WHERE terminal_id = p_terminal_id AND terminal_seq <= v_mark;
    ELSIF p_seq > v_contiguous THEN
        INSERT INTO terminal_seqs (terminal_id, terminal_seq) VALUES (p_terminal_id, p_seq)
            ON CONFLICT DO NOTHING;
    END IF;
    UPDATE terminals
       SET highest_contiguous_seq = v_mark, highest_seen_seq = greatest(v_seen, p_seq),
           last_seen_at = p_now
     WHERE terminal_id = p_terminal_id;
END
$$;

-- Who asks, when, and what the caller computed: the first arguments of every procedure.
CREATE TYPE ledger_call AS (
    terminal_id        uuid,
    request_id         text,
    now                timestamptz,
    -- `now` as the answers show it (RFC 3339, milliseconds, Z).
    now_text           text,
    transaction_id     uuid,
    request_sha256     text,
    -- When a stored decline's key expires.
    decline_expires_at timestamptz
);

-- Steps 2 to 4 of the contract for a call whose key is locked: the stored answer again, 422
-- for another request, 409 for a key this terminal voided first, or a staff refusal.
-- Returns NULL when the call may go on to its decision.
CREATE FUNCTION ledger_precheck(p_call ledger_call, p_client_request_id uuid,
                                p_staff_id text, p_action text, p_online boolean,
                                OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_key record;
    v_staff record;
    v_may boolean;
BEGIN
    SELECT request_sha256, status_code, response_body INTO v_key
      FROM idempotency_keys WHERE client_request_id = p_client_request_id;
    IF FOUND THEN
        IF v_key.request_sha256 = (p_call).request_sha256 THEN
            o_status := v_key.status_code; o_body := v_key.response_body; o_replayed := true;
        ELSE
            o_status := 422; o_replayed := false;
            o_body := ledger_error_body('IDEMPOTENCY_KEY_REUSED',
                'this client_request_id was used before for a different request', NULL,
                (p_call).request_id);
        END IF;
        RETURN;
    END IF;
    IF p_action <> 'shift' AND EXISTS (
        SELECT 1 FROM voids WHERE target_client_request_id = p_client_request_id
                              AND terminal_id = (p_call).terminal_id) THEN
        o_status := 409; o_replayed := false;
        o_body := ledger_error_body('OPERATION_VOIDED',
            'this operation was voided before it arrived', NULL, (p_call).request_id);
        RETURN;
    END IF;
    SELECT role, active INTO v_staff FROM staff WHERE staff_id = p_staff_id;
    IF NOT FOUND THEN
        o_body := 'unknown staff member';
    ELSIF p_online AND NOT v_staff.active THEN
        o_body := 'staff member is not active';
    ELSE
        v_may := CASE p_action
            WHEN 'order' THEN v_staff.role IN ('supervisor', 'bar')
            WHEN 'recharge' THEN v_staff.role IN ('supervisor', 'cashier')
            ELSE true END;
        IF NOT v_may THEN
            o_body := format('a staff member with role %s may not do this', v_staff.role);
        END IF;
    END IF;
    IF o_body IS NOT NULL THEN
        o_status := 403; o_replayed := false;
        o_body := ledger_error_body('FORBIDDEN', o_body, NULL, (p_call).request_id);
    END IF;
END
$$;

-- A refusal: its answer, nothing written.
CREATE FUNCTION ledger_refuse(p_call ledger_call, p_code text, p_message text, p_details jsonb,
                              OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE sql IMMUTABLE AS $$
    SELECT ledger_http_status(p_code), ledger_error_body(p_code, p_message, p_details,
                                                          (p_call).request_id), false
$$;

-- Writes the audit-log row of a terminal's request.
CREATE FUNCTION ledger_log(p_call ledger_call, p_staff_id text, p_operation text,
                           p_client_request_id uuid, p_transaction_id uuid, p_card_uid text,
                           p_amount_cents bigint, p_outcome text, p_error_code text,
                           p_details jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                     client_request_id, transaction_id, card_uid, amount_cents,
                                     outcome, error_code, details)
    SELECT (p_call).now, (p_call).request_id, 'terminal:' || t.name, p_staff_id, p_operation,
           p_client_request_id, p_transaction_id, p_card_uid, p_amount_cents, p_outcome,
           p_error_code, p_details
      FROM terminals t WHERE t.terminal_id = (p_call).terminal_id;
END
$$;

-- Writes the idempotency record.
CREATE FUNCTION ledger_key(p_call ledger_call, p_client_request_id uuid, p_operation text,
                           p_status integer, p_body text, p_transaction_id uuid)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
                                  status_code, response_body, transaction_id, created_at,
                                  expires_at)
    VALUES (p_client_request_id, (p_call).terminal_id, p_operation, (p_call).request_sha256,
            p_status, p_body, p_transaction_id, (p_call).now,
            CASE WHEN p_transaction_id IS NULL THEN (p_call).decline_expires_at END);
END
$$;

-- A decline: a stored one writes its audit-log row, its key (expiring) and the terminal_seq
-- tracking; any other is a refusal that writes nothing.
CREATE FUNCTION ledger_decline(p_call ledger_call, p_code text, p_message text, p_details jsonb,
                               p_operation text, p_client_request_id uuid, p_terminal_seq bigint,
                               p_staff_id text, p_card_uid text, p_amount_cents bigint,
                               p_log_details jsonb,
                               OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO o_status, o_body, o_replayed FROM ledger_refuse(p_call, p_code, p_message,
                                                                  p_details);
    IF NOT ledger_is_stored_decline(p_code) THEN
        RETURN;
    END IF;
    PERFORM ledger_log(p_call, p_staff_id, p_operation, p_client_request_id, NULL, p_card_uid,
                       p_amount_cents, 'declined', p_code,
                       CASE WHEN p_details IS NULL THEN p_log_details
                            ELSE p_log_details || jsonb_build_object('decline', p_details) END);
    PERFORM ledger_key(p_call, p_client_request_id, p_operation, o_status, o_body, NULL);
    PERFORM ledger_record_seq((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

-- A card's new state, with the next feed version.
CREATE FUNCTION ledger_write_card(p_call ledger_call, p_card_uid text, p_create boolean,
                                  p_balance bigint, p_status text, p_block_reason text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_create THEN
        INSERT INTO cards (card_uid, balance_cents, status, block_reason, version, created_at,
                           updated_at)
        VALUES (p_card_uid, p_balance, p_status, p_block_reason, nextval('card_version_seq'),
                (p_call).now, (p_call).now);
    ELSE
        UPDATE cards SET balance_cents = p_balance, status = p_status,
                         block_reason = p_block_reason, version = nextval('card_version_seq'),
                         updated_at = (p_call).now
         WHERE card_uid = p_card_uid;
    END IF;
END
$$;

-- Two postings under one transaction, summing to zero.
CREATE FUNCTION ledger_post(p_call ledger_call, p_debit_account text, p_debit_cents bigint,
                            p_other_account text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO postings (transaction_id, account, amount_cents, created_at)
    VALUES ((p_call).transaction_id, p_debit_account, p_debit_cents, (p_call).now),
           ((p_call).transaction_id, p_other_account, -p_debit_cents, (p_call).now);
END
$$;

-- The approval of an order or a top-up.
CREATE FUNCTION ledger_approval(p_call ledger_call, p_client_request_id uuid, p_card_uid text,
                                p_total_cents bigint, p_amount_cents bigint,
                                p_previous bigint, p_next bigint, p_card_status text,
                                p_flags text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN '{"transaction_id":"' || (p_call).transaction_id
        || '","client_request_id":"' || p_client_request_id
        || '","status":"approved","card_uid":' || ledger_str(p_card_uid)
        || COALESCE(',"total_cents":' || p_total_cents, '')
        || COALESCE(',"amount_cents":' || p_amount_cents, '')
        || ',"previous_balance_cents":' || p_previous
        || ',"new_balance_cents":' || p_next
        || ',"card_status":' || ledger_str(p_card_status)
        || ',"processed_at":' || ledger_str((p_call).now_text)
        || ',"flags":' || ledger_flags_json(p_flags) || '}';
END
$$;

-- Adding or subtracting cents without leaving the range of i64: NULL when it would.
CREATE FUNCTION ledger_add(p_a bigint, p_b bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN CASE WHEN p_a::numeric + p_b BETWEEN -9223372036854775808 AND 9223372036854775807
                THEN p_a + p_b END;
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
    v_terminal record;
    v_card record;
    v_found boolean;
    v_online boolean := p_mode = 'online';
    v_flags text[] := '{}';
    v_previous bigint;
    v_block_reason text;
    v_balance bigint;
    v_next record;
    v_price bigint;
    v_catalog bigint[] := '{}';
    v_price_differs boolean := false;
    v_log_details jsonb := jsonb_build_object('mode', p_mode, 'terminal_seq', p_terminal_seq);
    i integer;
BEGIN
    SELECT name, kind, point_of_sale INTO v_terminal
      FROM terminals WHERE terminal_id = (p_call).terminal_id;
    IF v_terminal.kind <> 'bar' THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'FORBIDDEN', 'a checkpoint terminal cannot sell', NULL);
        RETURN;
    END IF;
    PERFORM card_feed_writer();
    PERFORM ledger_lock_keys(ARRAY[p_client_request_id]);
    SELECT * INTO o_status, o_body, o_replayed
      FROM ledger_precheck(p_call, p_client_request_id, p_staff_id, 'order', v_online);
    IF o_status IS NOT NULL THEN
        RETURN;
    END IF;

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
        SELECT price_cents INTO v_price FROM products
         WHERE point_of_sale = v_terminal.point_of_sale AND product_id = p_product_ids[i]
           AND active;
        IF NOT FOUND THEN
            v_price := NULL;
        END IF;
        v_catalog := v_catalog || v_price;
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
    SELECT * INTO v_next FROM ledger_status_after(v_balance, v_block_reason);

    -- The writes.
    PERFORM ledger_write_card(p_call, p_card_uid, NOT v_found, v_balance, v_next.status,
                              v_next.block_reason);
    INSERT INTO bar_orders (transaction_id, client_request_id, terminal_id, terminal_seq,
                            point_of_sale, card_uid, staff_id, total_cents, mode, flags,
                            previous_balance_cents, new_balance_cents, created_at, processed_at)
    VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id, p_terminal_seq,
            v_terminal.point_of_sale, p_card_uid, p_staff_id, p_total_cents, p_mode,
            to_jsonb(v_flags), v_previous, v_balance, p_created_at, (p_call).now);
    INSERT INTO bar_order_items (transaction_id, line_no, product_id, quantity,
                                 unit_price_cents, catalog_price_cents, line_total_cents)
    SELECT (p_call).transaction_id, n - 1, p_product_ids[n], p_quantities[n],
           p_unit_prices_cents[n],
           NULLIF(v_catalog[n], p_unit_prices_cents[n]),
           p_unit_prices_cents[n] * p_quantities[n]
      FROM generate_subscripts(p_product_ids, 1) AS n;
    PERFORM ledger_post(p_call, 'card:' || p_card_uid, -p_total_cents,
                        'revenue:' || v_terminal.point_of_sale);
    o_status := 201;
    o_replayed := false;
    o_body := ledger_approval(p_call, p_client_request_id, p_card_uid, p_total_cents, NULL,
                              v_previous, v_balance, v_next.status, v_flags);
    PERFORM ledger_log(p_call, p_staff_id, 'order', p_client_request_id,
                       (p_call).transaction_id, p_card_uid, p_total_cents, 'approved', NULL,
                       v_log_details);
    PERFORM ledger_key(p_call, p_client_request_id, 'order', o_status, o_body,
                       (p_call).transaction_id);
    PERFORM ledger_record_seq((p_call).terminal_id, p_terminal_seq, (p_call).now);
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
    v_terminal record;
    v_card record;
    v_found boolean;
    v_online boolean := p_mode = 'online';
    v_flags text[] := '{}';
    v_previous bigint;
    v_block_reason text;
    v_balance bigint;
    v_next record;
    v_over_recharge boolean;
    v_over_balance boolean;
    v_log_details jsonb := jsonb_build_object('mode', p_mode, 'payment_method',
                                              p_payment_method, 'terminal_seq', p_terminal_seq);
BEGIN
    SELECT name, kind, point_of_sale INTO v_terminal
      FROM terminals WHERE terminal_id = (p_call).terminal_id;
    IF v_terminal.kind <> 'checkpoint' THEN
        SELECT * INTO o_status, o_body, o_replayed
          FROM ledger_refuse(p_call, 'FORBIDDEN', 'a bar terminal cannot top up cards', NULL);
        RETURN;
    END IF;
    PERFORM card_feed_writer();
    PERFORM ledger_lock_keys(ARRAY[p_client_request_id]);
    SELECT * INTO o_status, o_body, o_replayed
      FROM ledger_precheck(p_call, p_client_request_id, p_staff_id, 'recharge', v_online);
    IF o_status IS NOT NULL THEN
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
    SELECT * INTO v_next FROM ledger_status_after(v_balance, v_block_reason);

    -- The writes.
    PERFORM ledger_write_card(p_call, p_card_uid, NOT v_found, v_balance, v_next.status,
                              v_next.block_reason);
    INSERT INTO recharges (transaction_id, client_request_id, terminal_id, terminal_seq,
                           point_of_sale, card_uid, staff_id, amount_cents, payment_method, mode,
                           flags, previous_balance_cents, new_balance_cents, created_at,
                           processed_at)
    VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id, p_terminal_seq,
            v_terminal.point_of_sale, p_card_uid, p_staff_id, p_amount_cents, p_payment_method,
            p_mode, to_jsonb(v_flags), v_previous, v_balance, p_created_at, (p_call).now);
    PERFORM ledger_post(p_call, 'card:' || p_card_uid, p_amount_cents,
                        CASE p_payment_method WHEN 'card' THEN 'card_payments:' ELSE 'cash:' END
                            || v_terminal.point_of_sale);
    o_status := 201;
    o_replayed := false;
    o_body := ledger_approval(p_call, p_client_request_id, p_card_uid, NULL, p_amount_cents,
                              v_previous, v_balance, v_next.status, v_flags);
    PERFORM ledger_log(p_call, p_staff_id, 'recharge', p_client_request_id,
                       (p_call).transaction_id, p_card_uid, p_amount_cents, 'approved', NULL,
                       v_log_details);
    PERFORM ledger_key(p_call, p_client_request_id, 'recharge', o_status, o_body,
                       (p_call).transaction_id);
    PERFORM ledger_record_seq((p_call).terminal_id, p_terminal_seq, (p_call).now);
END
$$;

-- A void (POST /v1/voids, or a void of a batch): reverses this terminal's applied order or
-- top-up in full, or tombstones a key that was never applied.
CREATE FUNCTION sp_process_void(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint,
    p_target_client_request_id uuid, p_staff_id text, p_reason text, p_created_at timestamptz,
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_operation text;
    v_target_tx uuid;
    -- The applied target, if any: 'order' or 'recharge', its terminal, card, amount, and
    -- the account on the other side of its postings.
    v_kind text;
    v_terminal_id uuid;
    v_card_uid text;
    v_amount bigint;
    v_other text;
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
        SELECT 'order', terminal_id, card_uid, total_cents, 'revenue:' || point_of_sale
          INTO v_kind, v_terminal_id, v_card_uid, v_amount, v_other
          FROM bar_orders WHERE transaction_id = v_target_tx;
    ELSIF v_operation = 'recharge' THEN
        SELECT 'recharge', terminal_id, card_uid, amount_cents,
               CASE payment_method WHEN 'card' THEN 'card_payments:' ELSE 'cash:' END
                   || point_of_sale
          INTO v_kind, v_terminal_id, v_card_uid, v_amount, v_other
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
        PERFORM ledger_post(p_call, 'card:' || v_card_uid, v_delta, v_other);
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

-- A shift close-out (POST /v1/shifts): key, then staff (any role, active or not), then its
-- row, audit-log row and key (kept forever). No card, no posting, no terminal_seq.
CREATE FUNCTION sp_record_shift(
    p_call ledger_call, p_client_request_id uuid, p_staff_id text, p_opened_at timestamptz,
    p_opened_at_text text, p_closed_at timestamptz, p_closed_at_text text, p_first_seq bigint,
    p_last_seq bigint, p_cash_cents bigint, p_card_cents bigint, p_count bigint,
    p_counted_cash_cents bigint,
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_terminal_name text;
    v_difference bigint;
BEGIN
    PERFORM ledger_lock_keys(ARRAY[p_client_request_id]);
    SELECT * INTO o_status, o_body, o_replayed
      FROM ledger_precheck(p_call, p_client_request_id, p_staff_id, 'shift', false);
    IF o_status IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT name INTO v_terminal_name FROM terminals WHERE terminal_id = (p_call).terminal_id;
    v_difference := p_counted_cash_cents - p_cash_cents;
    INSERT INTO shift_closeouts (shift_id, client_request_id, terminal_id, staff_id, opened_at,
                                 closed_at, first_seq, last_seq, cash_cents, card_cents, count,
                                 counted_cash_cents, difference_cents, recorded_at)
    VALUES ((p_call).transaction_id, p_client_request_id, (p_call).terminal_id, p_staff_id,
            p_opened_at, p_closed_at, p_first_seq, p_last_seq, p_cash_cents, p_card_cents,
            p_count, p_counted_cash_cents, v_difference, (p_call).now);
    o_status := 201;
    o_replayed := false;
    o_body := '{"shift_id":"' || (p_call).transaction_id
        || '","client_request_id":"' || p_client_request_id
        || '","terminal":' || ledger_str(v_terminal_name)
        || ',"staff_id":' || ledger_str(p_staff_id)
        || ',"cash_cents":' || p_cash_cents
        || ',"card_cents":' || p_card_cents
        || ',"count":' || p_count
        || ',"counted_cash_cents":' || p_counted_cash_cents
        || ',"difference_cents":' || v_difference
        || ',"recorded_at":' || ledger_str((p_call).now_text) || '}';
    PERFORM ledger_log(p_call, p_staff_id, 'shift', p_client_request_id,
                       (p_call).transaction_id, NULL, NULL, 'recorded', NULL,
                       jsonb_build_object('opened_at', p_opened_at_text,
                                          'closed_at', p_closed_at_text,
                                          'first_seq', p_first_seq, 'last_seq', p_last_seq,
                                          'cash_cents', p_cash_cents,
                                          'card_cents', p_card_cents, 'count', p_count,
                                          'counted_cash_cents', p_counted_cash_cents,
                                          'difference_cents', v_difference));
    PERFORM ledger_key(p_call, p_client_request_id, 'shift', o_status, o_body,
                       (p_call).transaction_id);
END
$$;

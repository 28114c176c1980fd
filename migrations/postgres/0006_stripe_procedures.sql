-- cashless ledger schema, version 6 (PostgreSQL): Stripe events as stored procedures.
--
-- Each verified Stripe event the ledger acts on is ONE call of one function, so one
-- transaction and one round trip: the event's row, the credit or refund rows, the card,
-- the postings against stripe_clearing and the audit-log row commit together or not at all.
-- They do exactly what the SQLite store writes for the same event (src/ledger/flow/stripe.rs
-- decides it there, src/ledger/store/sqlite/stripe.rs writes it; the arithmetic is
-- src/ledger/rules.rs'): tests/ledger_postgres_stripe.rs applies the same events to both
-- and compares what they hold.
--
-- * sp_process_stripe_recharge: a paid checkout session, credited once per session and
--   per event, then the refunds of its payment intent that arrived before it;
-- * sp_process_stripe_refund: a charge.refunded in the festival's currency;
-- * sp_process_stripe_refused: a session or refund the ledger cannot apply, recorded for an
--   operator.
--
-- Lock order, the same in every procedure that changes a card (so none deadlocks with
-- another): first the card feed's shared lock (card_feed_writer(), 0004), then the Stripe
-- keys this event touches (its event id, checkout session and payment intent: transaction
-- advisory locks, taken in ascending key order), then the card row (FOR NO KEY UPDATE).
-- The Stripe keys make concurrent deliveries of one event, and the events of one session or
-- payment intent, run one after the other: the second finds what the first wrote. Each
-- statement of a function under READ COMMITTED sees what committed before it started, so
-- the reads after the locks see the winner's rows.
--
-- Every function returns one row: outcome, card_uid, amount_cents, balance_cents (what the
-- webhook answers), checkout_session_id (the session a refused refund was matched to),
-- other_session_id (the session that already holds a credit's payment intent: the credit
-- went in without the link refunds use) and reversed_into_debt (a refund took the card
-- below zero); Rust logs the last three for operators.

-- A new transaction id: a UUIDv7 (time-ordered, as the Rust side's Uuid::now_v7()), from
-- the clock's milliseconds (the 6 low bytes of the big-endian bigint) over a random
-- UUIDv4's first 6 bytes, its version nibble turned from 4 into 7 (bits 52 and 53 set).
CREATE FUNCTION stripe_transaction_id() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp())
                                                     * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid;
$$;

-- Takes the transaction advisory locks of these Stripe keys (NULLs skipped), in ascending
-- order of their lock numbers: two calls that share keys take them in the same order. The
-- lock space is (ASCII 'strp', hash of the key); two keys with one hash only serialise
-- more than needed.
CREATE FUNCTION stripe_lock(VARIADIC p_keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_key integer;
BEGIN
    FOR v_key IN
        SELECT DISTINCT hashtext(k) FROM unnest(p_keys) AS k WHERE k IS NOT NULL ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(1937011312, v_key);
    END LOOP;
END
$$;

-- rules::status_after, as the block reason: below zero blocks for debt (a lost card stays
-- lost); at zero or above a debt block lifts, a lost-card block stays. The status is
-- 'blocked' exactly when there is a reason.
CREATE FUNCTION stripe_block_reason_after(p_reason text, p_balance_cents bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_reason = 'lost' THEN 'lost'
                WHEN p_balance_cents < 0 THEN 'debt' END;
$$;

-- The sum of a balance and a change, or the error the Rust flow gives for an overflow.
CREATE FUNCTION stripe_balance_plus(p_balance_cents bigint, p_change_cents bigint, p_what text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN p_balance_cents + p_change_cents;
EXCEPTION WHEN numeric_value_out_of_range THEN
    RAISE EXCEPTION '%: the resulting balance is out of range', p_what
        USING ERRCODE = 'numeric_value_out_of_range';
END
$$;

-- A card's new balance and block reason, at the next feed version (the caller holds the
-- feed's lock and the card row's).
CREATE FUNCTION stripe_update_card(p_card_uid text, p_balance_cents bigint, p_reason text,
                                   p_now timestamptz) RETURNS void
LANGUAGE sql AS $$
    UPDATE cards
       SET balance_cents = p_balance_cents,
           status = CASE WHEN p_reason IS NULL THEN 'active' ELSE 'blocked' END,
           block_reason = p_reason,
           version = nextval('card_version_seq'),
           updated_at = p_now
     WHERE card_uid = p_card_uid;
$$;

-- An event's row in stripe_events: what was done with it.
CREATE FUNCTION stripe_record_event(p_event_id text, p_event_type text, p_outcome text,
                                    p_session_id text, p_payment_intent text,
                                    p_amount_cents bigint, p_transaction_id uuid,
                                    p_reason text, p_now timestamptz) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO stripe_events (event_id, event_type, outcome, checkout_session_id,
                               payment_intent_id, amount_cents, transaction_id, reason,
                               received_at)
    VALUES (p_event_id, p_event_type, p_outcome, p_session_id, p_payment_intent,
            p_amount_cents, p_transaction_id, p_reason, p_now);
$$;

-- The two postings of a Stripe transaction: the card's account gets p_card_cents (a credit,
-- or a negative reversal), stripe_clearing the opposite.
CREATE FUNCTION stripe_post(p_transaction_id uuid, p_card_uid text, p_card_cents bigint,
                            p_now timestamptz) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO postings (transaction_id, account, amount_cents, created_at)
    VALUES (p_transaction_id, 'card:' || p_card_uid, p_card_cents, p_now),
           (p_transaction_id, 'stripe_clearing', -p_card_cents, p_now);
$$;

-- The audit log's row of a Stripe event (actor `stripe`): details are the event id and
-- p_more, as the SQLite store writes them.
CREATE FUNCTION stripe_audit(p_request_id text, p_operation text, p_event_id text,
                             p_transaction_id uuid, p_card_uid text, p_amount_cents bigint,
                             p_outcome text, p_more jsonb, p_now timestamptz) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO app_transaction_log (occurred_at, request_id, actor, staff_id, operation,
                                     client_request_id, transaction_id, card_uid,
                                     amount_cents, outcome, error_code, details)
    VALUES (p_now, p_request_id, 'stripe', NULL, p_operation, NULL, p_transaction_id,
            p_card_uid, p_amount_cents, p_outcome, NULL,
            jsonb_build_object('event_id', p_event_id, 'more', p_more));
$$;

-- Reverses p_delta_cents of the credit of p_session_id on its card, whose row the caller
-- holds locked at p_balance_cents / p_reason (the flow's `reverse`): the card, the credit's
-- refunded_cents, a stripe_refunds row, the postings and the audit-log row.
CREATE FUNCTION stripe_reverse(
    p_request_id text, p_event_id text, p_session_id text, p_card_uid text,
    p_delta_cents bigint, p_balance_cents bigint, p_reason text, p_now timestamptz,
    OUT transaction_id uuid, OUT balance_cents bigint, OUT block_reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_tx uuid := stripe_transaction_id();
    v_next bigint := stripe_balance_plus(p_balance_cents, -p_delta_cents, 'a Stripe refund');
    v_reason text := stripe_block_reason_after(p_reason, v_next);
    v_flags jsonb := CASE WHEN v_next < 0 THEN '["NEGATIVE_BALANCE"]'::jsonb ELSE '[]'::jsonb END;
BEGIN
    PERFORM stripe_update_card(p_card_uid, v_next, v_reason, p_now);
    UPDATE stripe_recharges r SET refunded_cents = r.refunded_cents + p_delta_cents
     WHERE r.checkout_session_id = p_session_id;
    INSERT INTO stripe_refunds (transaction_id, event_id, checkout_session_id, card_uid,
                                amount_cents, previous_balance_cents, new_balance_cents,
                                processed_at)
    VALUES (v_tx, p_event_id, p_session_id, p_card_uid, p_delta_cents, p_balance_cents,
            v_next, p_now);
    PERFORM stripe_post(v_tx, p_card_uid, -p_delta_cents, p_now);
    PERFORM stripe_audit(p_request_id, 'stripe_refund', p_event_id, v_tx, p_card_uid,
                         p_delta_cents, 'approved',
                         jsonb_build_object('checkout_session_id', p_session_id,
                                            'flags', v_flags),
                         p_now);
    transaction_id := v_tx;
    balance_cents := v_next;
    block_reason := v_reason;
END
$$;

-- stripe::refund_delta: what a cumulative amount_refunded adds to what was already
-- reversed, never more than the credit.
CREATE FUNCTION stripe_refund_delta(p_credited_cents bigint, p_reversed_cents bigint,
                                    p_amount_refunded_cents bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT GREATEST(LEAST(p_amount_refunded_cents, p_credited_cents) - p_reversed_cents, 0);
$$;

-- A paid checkout session (the flow's `credit`): the event is recorded once; a session is
-- credited once (another event for it is `duplicate_session`); the card is created if
-- unknown and credited whatever the limits (past them flagged LIMIT_EXCEEDED); then the
-- refunds of its payment intent that waited for it are applied, smallest first.
CREATE FUNCTION sp_process_stripe_recharge(
    p_request_id text, p_event_id text, p_event_type text, p_session_id text,
    p_payment_intent text, p_card_uid text, p_amount_cents bigint,
    p_recharge_max_cents bigint, p_balance_max_cents bigint, p_now timestamptz)
RETURNS TABLE (outcome text, card_uid text, amount_cents bigint, balance_cents bigint,
               checkout_session_id text, other_session_id text, reversed_into_debt boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_done uuid;
    v_link text := p_payment_intent;
    v_other text;
    v_created boolean;
    v_balance bigint;
    v_reason text;
    v_next bigint;
    v_next_reason text;
    v_flags jsonb;
    v_tx uuid;
    v_reversed bigint := 0;
    v_delta bigint;
    v_debt boolean := false;
    v_waiting record;
    v_reversal record;
BEGIN
    PERFORM card_feed_writer();
    PERFORM stripe_lock('event:' || p_event_id, 'session:' || p_session_id,
                        'payment_intent:' || p_payment_intent);
    IF EXISTS (SELECT 1 FROM stripe_events e WHERE e.event_id = p_event_id) THEN
        RETURN QUERY SELECT 'duplicate_event'::text, NULL::text, NULL::bigint, NULL::bigint,
                            NULL::text, NULL::text, false;
        RETURN;
    END IF;
    SELECT r.transaction_id INTO v_done
      FROM stripe_recharges r WHERE r.checkout_session_id = p_session_id;
    IF FOUND THEN
        -- Another event for a session already credited (completed, then async succeeded).
        PERFORM stripe_record_event(p_event_id, p_event_type, 'duplicate_session', p_session_id,
                                    p_payment_intent, p_amount_cents, v_done, NULL, p_now);
        RETURN QUERY SELECT 'duplicate_session'::text, p_card_uid, NULL::bigint, NULL::bigint,
                            p_session_id, NULL::text, false;
        RETURN;
    END IF;
    -- A payment intent belongs to one session; should another session name it too, the
    -- credit still happens (the attendee paid), without the link refunds use.
    IF p_payment_intent IS NOT NULL THEN
        SELECT r.checkout_session_id INTO v_other
          FROM stripe_recharges r WHERE r.payment_intent_id = p_payment_intent;
        IF FOUND THEN
            v_link := NULL;
        END IF;
    END IF;
    -- The card: locked if it exists, else created. Should another transaction create it
    -- between the look and the insert, the insert does nothing and the second look finds
    -- (and locks) that card.
    FOR v_attempt IN 1..2 LOOP
        SELECT c.balance_cents, c.block_reason INTO v_balance, v_reason
          FROM cards c WHERE c.card_uid = p_card_uid FOR NO KEY UPDATE;
        v_created := NOT FOUND;
        IF v_created THEN
            v_balance := 0;
            v_reason := NULL;
        END IF;
        -- rules::decide_stripe_credit: an offline top-up's rules.
        v_next := stripe_balance_plus(v_balance, p_amount_cents, 'a Stripe credit');
        v_next_reason := stripe_block_reason_after(v_reason, v_next);
        v_flags := '[]'::jsonb;
        IF v_created THEN
            v_flags := v_flags || to_jsonb('CARD_CREATED'::text);
        END IF;
        IF p_amount_cents > p_recharge_max_cents OR v_next > p_balance_max_cents THEN
            v_flags := v_flags || to_jsonb('LIMIT_EXCEEDED'::text);
        END IF;
        IF v_next < 0 THEN
            v_flags := v_flags || to_jsonb('NEGATIVE_BALANCE'::text);
        END IF;
        IF NOT v_created THEN
            PERFORM stripe_update_card(p_card_uid, v_next, v_next_reason, p_now);
            EXIT;
        END IF;
        INSERT INTO cards AS c (card_uid, balance_cents, status, block_reason, version,
                                created_at, updated_at)
        VALUES (p_card_uid, v_next,
                CASE WHEN v_next_reason IS NULL THEN 'active' ELSE 'blocked' END,
                v_next_reason, nextval('card_version_seq'), p_now, p_now)
        ON CONFLICT (card_uid) DO NOTHING;
        EXIT WHEN FOUND;
        IF v_attempt = 2 THEN
            RAISE EXCEPTION 'card % neither found nor created', p_card_uid;
        END IF;
    END LOOP;
    v_tx := stripe_transaction_id();
    INSERT INTO stripe_recharges (transaction_id, checkout_session_id, payment_intent_id,
                                  event_id, card_uid, amount_cents, flags,
                                  previous_balance_cents, new_balance_cents, processed_at)
    VALUES (v_tx, p_session_id, v_link, p_event_id, p_card_uid, p_amount_cents, v_flags,
            v_balance, v_next, p_now);
    PERFORM stripe_post(v_tx, p_card_uid, p_amount_cents, p_now);
    PERFORM stripe_record_event(p_event_id, p_event_type, 'credited', p_session_id,
                                p_payment_intent, p_amount_cents, v_tx, NULL, p_now);
    PERFORM stripe_audit(p_request_id, 'stripe_recharge', p_event_id, v_tx, p_card_uid,
                         p_amount_cents, 'approved',
                         jsonb_build_object('checkout_session_id', p_session_id,
                                            'payment_intent', p_payment_intent,
                                            'flags', v_flags),
                         p_now);
    -- Refunds of this payment that arrived before it: applied now, against this credit.
    IF v_link IS NOT NULL THEN
        FOR v_waiting IN
            SELECT e.event_id, e.amount_cents FROM stripe_events e
             WHERE e.outcome = 'refund_waiting' AND e.payment_intent_id = v_link
             ORDER BY e.amount_cents, e.event_id COLLATE "C"
        LOOP
            v_delta := stripe_refund_delta(p_amount_cents, v_reversed, v_waiting.amount_cents);
            IF v_delta > 0 THEN
                SELECT * INTO v_reversal
                  FROM stripe_reverse(p_request_id, v_waiting.event_id, p_session_id, p_card_uid,
                                      v_delta, v_next, v_next_reason, p_now);
                v_next := v_reversal.balance_cents;
                v_next_reason := v_reversal.block_reason;
                v_reversed := v_reversed + v_delta;
                v_debt := v_debt OR v_next < 0;
            END IF;
            UPDATE stripe_events e
               SET outcome = 'refund_applied_late', checkout_session_id = p_session_id
             WHERE e.event_id = v_waiting.event_id;
        END LOOP;
    END IF;
    RETURN QUERY SELECT 'credited'::text, p_card_uid, p_amount_cents, v_next, p_session_id,
                        v_other, v_debt;
END
$$;

-- A charge.refunded in the festival's currency (the flow's `refund`): it reverses what its
-- cumulative amount_refunded adds for the session credited through its payment intent
-- (`refunded`, or `refund_nothing_new`); without such a credit yet it waits
-- (`refund_waiting`), applied when the credit arrives.
CREATE FUNCTION sp_process_stripe_refund(
    p_request_id text, p_event_id text, p_payment_intent text,
    p_amount_refunded_cents bigint, p_now timestamptz)
RETURNS TABLE (outcome text, card_uid text, amount_cents bigint, balance_cents bigint,
               checkout_session_id text, other_session_id text, reversed_into_debt boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_session text;
    v_card text;
    v_credited bigint;
    v_reversed bigint;
    v_balance bigint;
    v_reason text;
    v_delta bigint;
    v_reversal record;
BEGIN
    PERFORM card_feed_writer();
    PERFORM stripe_lock('event:' || p_event_id, 'payment_intent:' || p_payment_intent);
    IF EXISTS (SELECT 1 FROM stripe_events e WHERE e.event_id = p_event_id) THEN
        RETURN QUERY SELECT 'duplicate_event'::text, NULL::text, NULL::bigint, NULL::bigint,
                            NULL::text, NULL::text, false;
        RETURN;
    END IF;
    SELECT r.checkout_session_id, r.card_uid, r.amount_cents, r.refunded_cents
      INTO v_session, v_card, v_credited, v_reversed
      FROM stripe_recharges r WHERE r.payment_intent_id = p_payment_intent;
    IF NOT FOUND THEN
        -- Stripe does not promise order: it waits for its session. A charge that is not a
        -- checkout of ours waits forever and moves nothing.
        PERFORM stripe_record_event(p_event_id, 'charge.refunded', 'refund_waiting', NULL,
                                    p_payment_intent, p_amount_refunded_cents, NULL, NULL, p_now);
        RETURN QUERY SELECT 'refund_waiting'::text, NULL::text, NULL::bigint, NULL::bigint,
                            NULL::text, NULL::text, false;
        RETURN;
    END IF;
    SELECT c.balance_cents, c.block_reason INTO v_balance, v_reason
      FROM cards c WHERE c.card_uid = v_card FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'card % of a Stripe credit is missing', v_card;
    END IF;
    v_delta := stripe_refund_delta(v_credited, v_reversed, p_amount_refunded_cents);
    IF v_delta = 0 THEN
        PERFORM stripe_record_event(p_event_id, 'charge.refunded', 'refund_nothing_new',
                                    v_session, p_payment_intent, p_amount_refunded_cents, NULL,
                                    NULL, p_now);
        RETURN QUERY SELECT 'refund_nothing_new'::text, v_card, NULL::bigint, NULL::bigint,
                            v_session, NULL::text, false;
        RETURN;
    END IF;
    SELECT * INTO v_reversal
      FROM stripe_reverse(p_request_id, p_event_id, v_session, v_card, v_delta, v_balance,
                          v_reason, p_now);
    PERFORM stripe_record_event(p_event_id, 'charge.refunded', 'refunded', v_session,
                                p_payment_intent, p_amount_refunded_cents,
                                v_reversal.transaction_id, NULL, p_now);
    RETURN QUERY SELECT 'refunded'::text, v_card, v_delta, v_reversal.balance_cents, v_session,
                        NULL::text, v_reversal.balance_cents < 0;
END
$$;

-- An event the ledger cannot apply (a session in another currency, without a card or with
-- a bad amount; a refund in another currency): recorded for an operator, with the session a
-- refund's payment intent was credited through, if any yet; no money moves, no card
-- changes (so no feed lock).
CREATE FUNCTION sp_process_stripe_refused(
    p_request_id text, p_event_id text, p_event_type text, p_session_id text,
    p_payment_intent text, p_reason text, p_now timestamptz)
RETURNS TABLE (outcome text, card_uid text, amount_cents bigint, balance_cents bigint,
               checkout_session_id text, other_session_id text, reversed_into_debt boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_session text := p_session_id;
BEGIN
    PERFORM stripe_lock('event:' || p_event_id);
    IF EXISTS (SELECT 1 FROM stripe_events e WHERE e.event_id = p_event_id) THEN
        RETURN QUERY SELECT 'duplicate_event'::text, NULL::text, NULL::bigint, NULL::bigint,
                            NULL::text, NULL::text, false;
        RETURN;
    END IF;
    IF v_session IS NULL AND p_payment_intent IS NOT NULL THEN
        SELECT r.checkout_session_id INTO v_session
          FROM stripe_recharges r WHERE r.payment_intent_id = p_payment_intent;
    END IF;
    -- Not `refund_waiting`: a credit that arrives later never applies it.
    PERFORM stripe_record_event(p_event_id, p_event_type, 'refused', v_session,
                                p_payment_intent, NULL, NULL, p_reason, p_now);
    PERFORM stripe_audit(p_request_id,
                         CASE WHEN p_event_type = 'charge.refunded' THEN 'stripe_refund'
                              ELSE 'stripe_recharge' END,
                         p_event_id, NULL, NULL, NULL, 'refused',
                         jsonb_build_object('checkout_session_id', v_session,
                                            'payment_intent', p_payment_intent,
                                            'reason', p_reason),
                         p_now);
    RETURN QUERY SELECT 'refused'::text, NULL::text, NULL::bigint, NULL::bigint, v_session,
                        NULL::text, false;
END
$$;

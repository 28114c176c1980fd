-- cashless ledger schema, version 7 (PostgreSQL): a card first seen by two calls at once.
--
-- An order or a top-up on a card the ledger has never seen decides with a balance of 0 and
-- creates the card. Two such calls at once (two terminals, two ledger processes) both found
-- no row, both decided, and the second's INSERT failed on the primary key once the first
-- committed: a unique violation, answered 500. Nothing was written, but the client saw a
-- server error for an ordinary moment of a festival (two top-ups of a new card).
--
-- Now a call on a card that does not exist yet first takes the card's creation lock (an
-- advisory lock of its own space), before any lock of the order in 0005, and only then makes
-- its decision. The second creator waits there until the first has committed; its decision's
-- SELECT, a new statement, then sees the card the first created. Cards are never deleted, so
-- a call that finds the card needs no such lock (the usual case pays one index probe).
--
-- The lock order of 0005 becomes: 0. the creation lock of a card not yet in `cards` (taken
-- holding nothing else), 1. the card feed's shared lock, 2. the idempotency keys, 3. the
-- card row, 4. the terminal's row.

CREATE FUNCTION ledger_lock_new_card(p_card_uid text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cards WHERE card_uid = p_card_uid) THEN
        -- (ASCII 'casi', hash): another space than the feed's (ASCII 'cash', 1).
        PERFORM pg_advisory_xact_lock(1667330921, hashtext(p_card_uid));
    END IF;
END
$$;

ALTER FUNCTION sp_process_bar_order(ledger_call, uuid, bigint, text, text, text, bigint,
                                    timestamptz, text[], integer[], bigint[])
    RENAME TO ledger_bar_order;

CREATE FUNCTION sp_process_bar_order(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_total_cents bigint, p_created_at timestamptz,
    p_product_ids text[], p_quantities integer[], p_unit_prices_cents bigint[],
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_lock_new_card(p_card_uid);
    SELECT * INTO o_status, o_body, o_replayed
      FROM ledger_bar_order(p_call, p_client_request_id, p_terminal_seq, p_card_uid,
                            p_staff_id, p_mode, p_total_cents, p_created_at, p_product_ids,
                            p_quantities, p_unit_prices_cents);
END
$$;

ALTER FUNCTION sp_process_checkpoint_recharge(ledger_call, uuid, bigint, text, text, text,
                                              bigint, text, timestamptz, bigint, bigint)
    RENAME TO ledger_checkpoint_recharge;

CREATE FUNCTION sp_process_checkpoint_recharge(
    p_call ledger_call, p_client_request_id uuid, p_terminal_seq bigint, p_card_uid text,
    p_staff_id text, p_mode text, p_amount_cents bigint, p_payment_method text,
    p_created_at timestamptz, p_recharge_max_cents bigint, p_balance_max_cents bigint,
    OUT o_status integer, OUT o_body text, OUT o_replayed boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_lock_new_card(p_card_uid);
    SELECT * INTO o_status, o_body, o_replayed
      FROM ledger_checkpoint_recharge(p_call, p_client_request_id, p_terminal_seq, p_card_uid,
                                      p_staff_id, p_mode, p_amount_cents, p_payment_method,
                                      p_created_at, p_recharge_max_cents, p_balance_max_cents);
END
$$;

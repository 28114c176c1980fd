-- cashless ledger schema, version 23 (PostgreSQL): cards issued with an AES key.
--
-- A festival in `[cards] mode = "aes"` issues NTAG 424 DNA cards whose key is diversified
-- from the festival's master key (`cashless card issue`). The ledger records which master
-- key version a card was issued with (NULL: a UID-only card), so that every terminal learns
-- it from the card feed and refuses a UID-only card (a clone on a "magic" card) that claims
-- to be a card issued with a key. The version only moves up (a card re-issued under a newer
-- master key); the keys themselves never reach the ledger.
ALTER TABLE cards ADD COLUMN key_version integer CHECK (key_version BETWEEN 1 AND 255);

-- The card feed (0010) with the key version.
DROP FUNCTION card_feed(bigint, integer);
CREATE FUNCTION card_feed(p_since_version bigint, p_limit integer)
RETURNS TABLE (card_uid text, balance_cents bigint, status text, version bigint,
               updated_at timestamptz, age_flag text, voucher_units bigint,
               key_version integer)
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
               c.voucher_units, c.key_version
          FROM cards c
         WHERE c.version > p_since_version AND c.version <= v_horizon
         ORDER BY c.version
         LIMIT p_limit;
END
$$;

-- Every HTTP status of the API's codes (crate::protocol::codes, checked by a unit test), with
-- CARD_KEY_CONFLICT (no procedure answers it; the table stays the code table).
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
        WHEN 'CARD_KEY_CONFLICT' THEN 409
        WHEN 'PAYLOAD_TOO_LARGE' THEN 413
        WHEN 'DATABASE_ERROR' THEN 503
        WHEN 'SERVER_ERROR' THEN 500
    END
$$;

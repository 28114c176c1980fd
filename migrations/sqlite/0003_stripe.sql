-- cashless ledger schema, version 3 (SQLite): online top-ups through Stripe's webhook.

-- Every Stripe event the ledger acted on or refused, once per event id: a second delivery of
-- the same event finds it here and changes nothing. Event types the ledger does not act on
-- and unpaid sessions are not recorded (nothing to remember).
CREATE TABLE stripe_events (
    event_id            TEXT PRIMARY KEY,
    event_type          TEXT NOT NULL,
    -- credited, duplicate_session, refused, refunded, refund_nothing_new, refund_waiting,
    -- refund_applied_late
    outcome             TEXT NOT NULL,
    checkout_session_id TEXT,
    payment_intent_id   TEXT,
    -- A charge.refunded's cumulative amount_refunded; else the credit.
    amount_cents        INTEGER,
    transaction_id      TEXT,
    reason              TEXT,
    received_at         TEXT NOT NULL
) WITHOUT ROWID;
-- A refund that arrived before its session waits here, found by its payment intent.
CREATE INDEX stripe_events_waiting ON stripe_events (payment_intent_id)
    WHERE outcome = 'refund_waiting';

-- One row per checkout session credited: a session is credited once, whatever its events.
CREATE TABLE stripe_recharges (
    transaction_id         TEXT PRIMARY KEY,
    checkout_session_id    TEXT NOT NULL UNIQUE,
    payment_intent_id      TEXT UNIQUE,
    event_id               TEXT NOT NULL,
    card_uid               TEXT NOT NULL REFERENCES cards (card_uid),
    amount_cents           INTEGER NOT NULL CHECK (amount_cents > 0),
    -- Reversed by refunds so far: never more than the credit.
    refunded_cents         INTEGER NOT NULL DEFAULT 0
                           CHECK (refunded_cents BETWEEN 0 AND amount_cents),
    flags                  TEXT NOT NULL,
    previous_balance_cents INTEGER NOT NULL,
    new_balance_cents      INTEGER NOT NULL,
    processed_at           TEXT NOT NULL
) WITHOUT ROWID;

-- One row per refund event that reversed part of a credit.
CREATE TABLE stripe_refunds (
    transaction_id         TEXT PRIMARY KEY,
    event_id               TEXT NOT NULL UNIQUE,
    checkout_session_id    TEXT NOT NULL REFERENCES stripe_recharges (checkout_session_id),
    card_uid               TEXT NOT NULL REFERENCES cards (card_uid),
    amount_cents           INTEGER NOT NULL CHECK (amount_cents > 0),
    previous_balance_cents INTEGER NOT NULL,
    new_balance_cents      INTEGER NOT NULL,
    processed_at           TEXT NOT NULL
) WITHOUT ROWID;

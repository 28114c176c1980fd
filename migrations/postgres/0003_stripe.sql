-- cashless ledger schema, version 3 (PostgreSQL): online top-ups through Stripe's webhook;
-- the equivalent of migrations/sqlite/0003_stripe.sql.

-- Every Stripe event the ledger acted on or refused, once per event id: a second delivery of
-- the same event finds it here and changes nothing.
CREATE TABLE stripe_events (
    event_id            text PRIMARY KEY,
    event_type          text NOT NULL,
    -- credited, duplicate_session, refused, refunded, refund_nothing_new, refund_waiting,
    -- refund_applied_late
    outcome             text NOT NULL,
    checkout_session_id text,
    payment_intent_id   text,
    -- A charge.refunded's cumulative amount_refunded; else the credit.
    amount_cents        bigint,
    transaction_id      uuid,
    reason              text,
    received_at         timestamptz NOT NULL
);
-- A refund that arrived before its session waits here, found by its payment intent.
CREATE INDEX stripe_events_waiting ON stripe_events (payment_intent_id)
    WHERE outcome = 'refund_waiting';

-- One row per checkout session credited: a session is credited once, whatever its events.
CREATE TABLE stripe_recharges (
    transaction_id         uuid PRIMARY KEY,
    checkout_session_id    text NOT NULL UNIQUE,
    payment_intent_id      text UNIQUE,
    event_id               text NOT NULL,
    card_uid               text NOT NULL REFERENCES cards (card_uid),
    amount_cents           bigint NOT NULL CHECK (amount_cents > 0),
    -- Reversed by refunds so far: never more than the credit.
    refunded_cents         bigint NOT NULL DEFAULT 0
                           CHECK (refunded_cents BETWEEN 0 AND amount_cents),
    flags                  jsonb NOT NULL,
    previous_balance_cents bigint NOT NULL,
    new_balance_cents      bigint NOT NULL,
    processed_at           timestamptz NOT NULL
);

-- One row per refund event that reversed part of a credit.
CREATE TABLE stripe_refunds (
    transaction_id         uuid PRIMARY KEY,
    event_id               text NOT NULL UNIQUE,
    checkout_session_id    text NOT NULL REFERENCES stripe_recharges (checkout_session_id),
    card_uid               text NOT NULL REFERENCES cards (card_uid),
    amount_cents           bigint NOT NULL CHECK (amount_cents > 0),
    previous_balance_cents bigint NOT NULL,
    new_balance_cents      bigint NOT NULL,
    processed_at           timestamptz NOT NULL
);

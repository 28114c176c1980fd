-- cashless ledger schema, version 2 (PostgreSQL): shift close-outs (POST /v1/shifts); the
-- equivalent of migrations/sqlite/0002_shifts.sql.

-- One row per close-out a terminal sent: its own totals of the shift's top-ups, the cash
-- staff counted, and the difference the ledger computed. No card balance and no posting
-- changes with a close-out. The client_request_id is unique through idempotency_keys, which
-- keeps its row forever.
--
-- first_seq and last_seq are the terminal_seq range of the shift's journal entries on the
-- terminal (both NULL for a shift without any entry): `cashless ledger shift list` compares
-- the terminal's totals with the ledger's own top-ups of that terminal in that range.
CREATE TABLE shift_closeouts (
    shift_id           uuid PRIMARY KEY,
    client_request_id  uuid NOT NULL,
    terminal_id        uuid NOT NULL REFERENCES terminals (terminal_id),
    staff_id           text NOT NULL,
    opened_at          timestamptz NOT NULL,
    closed_at          timestamptz NOT NULL,
    first_seq          bigint CHECK (first_seq >= 1),
    last_seq           bigint CHECK (last_seq >= first_seq),
    cash_cents         bigint NOT NULL CHECK (cash_cents >= 0),
    card_cents         bigint NOT NULL CHECK (card_cents >= 0),
    count              bigint NOT NULL CHECK (count >= 0),
    counted_cash_cents bigint NOT NULL CHECK (counted_cash_cents >= 0),
    difference_cents   bigint NOT NULL,
    recorded_at        timestamptz NOT NULL,
    CHECK (opened_at <= closed_at),
    CHECK ((first_seq IS NULL) = (last_seq IS NULL)),
    CHECK (difference_cents = counted_cash_cents - cash_cents)
);

-- Close-outs share the one key space of client_request_ids: idempotency_keys.operation gains
-- 'shift'. (SQLite rebuilds the table for this; PostgreSQL changes the CHECK in place.)
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_operation_check,
    ADD CONSTRAINT idempotency_keys_operation_check
        CHECK (operation IN ('order', 'recharge', 'void', 'shift'));

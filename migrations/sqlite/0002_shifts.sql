-- cashless ledger schema, version 2 (SQLite): shift close-outs (POST /v1/shifts).

-- One row per close-out a terminal sent: its own totals of the shift's top-ups, the cash
-- staff counted, and the difference the ledger computed. No card balance and no posting
-- changes with a close-out. Keyed by time-ordered ids (UUIDv7) like the operation tables;
-- the client_request_id is unique through idempotency_keys, which keeps its row forever.
--
-- first_seq and last_seq are the terminal_seq range of the shift's journal entries on the
-- terminal (both NULL for a shift without any entry): `cashless ledger shift list` compares
-- the terminal's totals with the ledger's own top-ups of that terminal in that range, not
-- between opened_at and closed_at, which a terminal clock step makes wrong or empty.
CREATE TABLE shift_closeouts (
    shift_id           TEXT PRIMARY KEY,
    client_request_id  TEXT NOT NULL,
    terminal_id        TEXT NOT NULL REFERENCES terminals (terminal_id),
    staff_id           TEXT NOT NULL,
    opened_at          TEXT NOT NULL,
    closed_at          TEXT NOT NULL,
    first_seq          INTEGER CHECK (first_seq >= 1),
    last_seq           INTEGER CHECK (last_seq >= first_seq),
    cash_cents         INTEGER NOT NULL CHECK (cash_cents >= 0),
    card_cents         INTEGER NOT NULL CHECK (card_cents >= 0),
    count              INTEGER NOT NULL CHECK (count >= 0),
    counted_cash_cents INTEGER NOT NULL CHECK (counted_cash_cents >= 0),
    difference_cents   INTEGER NOT NULL,
    recorded_at        TEXT NOT NULL,
    CHECK (opened_at <= closed_at),
    CHECK ((first_seq IS NULL) = (last_seq IS NULL)),
    CHECK (difference_cents = counted_cash_cents - cash_cents)
) WITHOUT ROWID;

-- Close-outs share the one key space of client_request_ids: idempotency_keys.operation gains
-- 'shift'. SQLite cannot change a CHECK in place, so the table is rebuilt (nothing refers
-- to it); its rows and its partial index are kept as they were.
ALTER TABLE idempotency_keys RENAME TO idempotency_keys_v1;
CREATE TABLE idempotency_keys (
    client_request_id TEXT PRIMARY KEY,
    terminal_id       TEXT NOT NULL,
    operation         TEXT NOT NULL CHECK (operation IN ('order', 'recharge', 'void', 'shift')),
    request_sha256    TEXT NOT NULL,
    status_code       INTEGER NOT NULL,
    response_body     TEXT NOT NULL,
    transaction_id    TEXT,
    created_at        TEXT NOT NULL,
    expires_at        TEXT,
    CHECK ((transaction_id IS NULL) = (expires_at IS NOT NULL))
);
INSERT INTO idempotency_keys (client_request_id, terminal_id, operation, request_sha256,
    status_code, response_body, transaction_id, created_at, expires_at)
SELECT client_request_id, terminal_id, operation, request_sha256, status_code, response_body,
    transaction_id, created_at, expires_at
FROM idempotency_keys_v1;
DROP TABLE idempotency_keys_v1;
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at) WHERE expires_at IS NOT NULL;

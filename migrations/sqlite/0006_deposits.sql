-- cashless ledger schema, version 6 (SQLite): deposits on returnable items, and return
-- stations.
--
-- A product may be a returnable item (`returnable`: a cup), whose price is a deposit, and a
-- product may come in one (`deposit_product_id`: the returnable item at the same point of
-- sale that the terminal adds to the order with it). An order line of a returnable item
-- records neither net nor tax (`deposit` = 1); its money goes to the `deposits` liability
-- account. A deposit return credits the items' deposits back to a card: `deposit_returns`
-- and its lines, posted `card:<UID>` +amount and `deposits` −amount.
--
-- A void reverses a deposit return like a top-up (`voids.target_kind` gains 'return'; the
-- table is rebuilt like `terminals`).
--
-- A return station is a terminal kind of its own (`return`): it only takes items back.
-- SQLite cannot change a CHECK constraint, so `terminals` is rebuilt (the program runs
-- every migration with foreign keys off and checks them before it commits).

CREATE TABLE terminals_new (
    terminal_id            TEXT PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    kind                   TEXT NOT NULL CHECK (kind IN ('bar', 'checkpoint', 'return')),
    point_of_sale          TEXT NOT NULL,
    token_sha256           TEXT NOT NULL UNIQUE,
    active                 INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at             TEXT NOT NULL,
    last_seen_at           TEXT,
    -- Every terminal_seq up to this one has been received.
    highest_contiguous_seq INTEGER NOT NULL DEFAULT 0,
    highest_seen_seq       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO terminals_new (terminal_id, name, kind, point_of_sale, token_sha256, active,
                           created_at, last_seen_at, highest_contiguous_seq, highest_seen_seq)
SELECT terminal_id, name, kind, point_of_sale, token_sha256, active, created_at, last_seen_at,
       highest_contiguous_seq, highest_seen_seq
  FROM terminals;
DROP TABLE terminals;
ALTER TABLE terminals_new RENAME TO terminals;

ALTER TABLE products ADD COLUMN returnable INTEGER NOT NULL DEFAULT 0 CHECK (returnable IN (0, 1));
ALTER TABLE products ADD COLUMN deposit_product_id TEXT;

-- 1 for a returnable item's line; NULL in lines written before this version (none was).
ALTER TABLE bar_order_items ADD COLUMN deposit INTEGER CHECK (deposit IN (0, 1));

CREATE TABLE deposit_returns (
    transaction_id         TEXT PRIMARY KEY,
    client_request_id      TEXT NOT NULL,
    terminal_id            TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq           INTEGER NOT NULL,
    point_of_sale          TEXT NOT NULL,
    card_uid               TEXT NOT NULL REFERENCES cards (card_uid),
    staff_id               TEXT NOT NULL,
    amount_cents           INTEGER NOT NULL CHECK (amount_cents > 0),
    mode                   TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    flags                  TEXT NOT NULL,
    previous_balance_cents INTEGER NOT NULL,
    new_balance_cents      INTEGER NOT NULL,
    created_at             TEXT NOT NULL,
    processed_at           TEXT NOT NULL,
    voided_by              TEXT
) WITHOUT ROWID;

CREATE TABLE deposit_return_items (
    transaction_id     TEXT NOT NULL REFERENCES deposit_returns (transaction_id),
    line_no            INTEGER NOT NULL,
    product_id         TEXT NOT NULL,
    quantity           INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    unit_deposit_cents INTEGER NOT NULL CHECK (unit_deposit_cents >= 0),
    -- The catalog's deposit when it differed (offline returns; 0: the catalog does not take
    -- this item back here), else NULL.
    catalog_deposit_cents INTEGER,
    line_total_cents   INTEGER NOT NULL,
    PRIMARY KEY (transaction_id, line_no)
) WITHOUT ROWID;

-- Deposit returns share the one key space of client_request_ids: idempotency_keys.operation
-- gains 'return' (the table is rebuilt as in version 2; nothing refers to it).
ALTER TABLE idempotency_keys RENAME TO idempotency_keys_v2;
CREATE TABLE idempotency_keys (
    client_request_id TEXT PRIMARY KEY,
    terminal_id       TEXT NOT NULL,
    operation         TEXT NOT NULL
                      CHECK (operation IN ('order', 'recharge', 'void', 'shift', 'return')),
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
FROM idempotency_keys_v2;
DROP TABLE idempotency_keys_v2;
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at) WHERE expires_at IS NOT NULL;

ALTER TABLE voids RENAME TO voids_v5;
CREATE TABLE voids (
    transaction_id           TEXT PRIMARY KEY,
    client_request_id        TEXT NOT NULL,
    terminal_id              TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq             INTEGER NOT NULL,
    target_client_request_id TEXT NOT NULL,
    target_kind              TEXT CHECK (target_kind IN ('order', 'recharge', 'return')),
    staff_id                 TEXT NOT NULL,
    reason                   TEXT NOT NULL CHECK (reason IN ('in_doubt', 'customer_refund', 'staff_error')),
    status                   TEXT NOT NULL CHECK (status IN ('voided', 'tombstoned')),
    card_uid                 TEXT REFERENCES cards (card_uid),
    refunded_cents           INTEGER,
    previous_balance_cents   INTEGER,
    new_balance_cents        INTEGER,
    flags                    TEXT NOT NULL,
    created_at               TEXT NOT NULL,
    processed_at             TEXT NOT NULL,
    -- A terminal voids an operation once; tombstones only bind the terminal that wrote them.
    UNIQUE (terminal_id, target_client_request_id)
) WITHOUT ROWID;
INSERT INTO voids SELECT transaction_id, client_request_id, terminal_id, terminal_seq,
    target_client_request_id, target_kind, staff_id, reason, status, card_uid, refunded_cents,
    previous_balance_cents, new_balance_cents, flags, created_at, processed_at
FROM voids_v5;
DROP TABLE voids_v5;

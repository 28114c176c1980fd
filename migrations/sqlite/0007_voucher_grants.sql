-- cashless ledger schema, version 7 (SQLite): vouchers granted at a checkpoint.
--
-- A checkpoint's supervisor gives a card voucher units (staff and artist drinks) as an
-- operation of its own, idempotent on its client_request_id like every other:
-- `voucher_grants`. A grant has no posting (vouchers are never money). A void takes the units
-- back: `voids.target_kind` gains 'voucher_grant', and `idempotency_keys.operation` gains
-- 'voucher_grant'. SQLite cannot change a CHECK constraint, so both tables are rebuilt (the
-- program runs every migration with foreign keys off and checks them before it commits).

CREATE TABLE voucher_grants (
    transaction_id         TEXT PRIMARY KEY,
    client_request_id      TEXT NOT NULL,
    terminal_id            TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq           INTEGER NOT NULL,
    point_of_sale          TEXT NOT NULL,
    card_uid               TEXT NOT NULL REFERENCES cards (card_uid),
    staff_id               TEXT NOT NULL,
    units                  INTEGER NOT NULL CHECK (units > 0),
    mode                   TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    flags                  TEXT NOT NULL,
    previous_voucher_units INTEGER NOT NULL,
    new_voucher_units      INTEGER NOT NULL,
    created_at             TEXT NOT NULL,
    processed_at           TEXT NOT NULL,
    voided_by              TEXT
) WITHOUT ROWID;

ALTER TABLE idempotency_keys RENAME TO idempotency_keys_v6;
CREATE TABLE idempotency_keys (
    client_request_id TEXT PRIMARY KEY,
    terminal_id       TEXT NOT NULL,
    operation         TEXT NOT NULL
                      CHECK (operation IN ('order', 'recharge', 'void', 'shift', 'return',
                                           'voucher_grant')),
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
FROM idempotency_keys_v6;
DROP TABLE idempotency_keys_v6;
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at) WHERE expires_at IS NOT NULL;

ALTER TABLE voids RENAME TO voids_v6;
CREATE TABLE voids (
    transaction_id           TEXT PRIMARY KEY,
    client_request_id        TEXT NOT NULL,
    terminal_id              TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq             INTEGER NOT NULL,
    target_client_request_id TEXT NOT NULL,
    target_kind              TEXT CHECK (target_kind IN ('order', 'recharge', 'return',
                                                         'voucher_grant')),
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
FROM voids_v6;
DROP TABLE voids_v6;

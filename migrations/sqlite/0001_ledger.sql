-- cashless ledger schema, version 1 (SQLite).
-- Money is INTEGER cents. Times are RFC 3339 UTC text. Ids are UUID text.
-- Names follow the seed system where they fit (cards, bar_orders, bar_order_items, recharges,
-- idempotency_keys, app_transaction_log, nfc_scan_log).

CREATE TABLE terminals (
    terminal_id            TEXT PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    kind                   TEXT NOT NULL CHECK (kind IN ('bar', 'checkpoint')),
    point_of_sale          TEXT NOT NULL,
    token_sha256           TEXT NOT NULL UNIQUE,
    active                 INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at             TEXT NOT NULL,
    last_seen_at           TEXT,
    -- Every terminal_seq up to this one has been received.
    highest_contiguous_seq INTEGER NOT NULL DEFAULT 0,
    highest_seen_seq       INTEGER NOT NULL DEFAULT 0
);

-- Sequence numbers received above the contiguous mark: what is missing between them is a gap.
CREATE TABLE terminal_seqs (
    terminal_id  TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, terminal_seq)
) WITHOUT ROWID;

CREATE TABLE staff (
    staff_id   TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('bar', 'cashier', 'supervisor')),
    pin_hash   TEXT NOT NULL,
    active     INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE products (
    point_of_sale TEXT NOT NULL,
    product_id    TEXT NOT NULL,
    name          TEXT NOT NULL,
    price_cents   INTEGER NOT NULL CHECK (price_cents >= 0),
    category      TEXT,
    active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (point_of_sale, product_id)
);

CREATE TABLE cards (
    card_uid      TEXT PRIMARY KEY,
    balance_cents INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    block_reason  TEXT CHECK (block_reason IN ('debt', 'lost')),
    -- Position in the card feed: every change takes the largest version plus one.
    version       INTEGER NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CHECK ((status = 'blocked') = (block_reason IS NOT NULL))
);


-- Operation tables are keyed by time-ordered transaction ids (UUIDv7) and stored WITHOUT
-- ROWID, so an insert touches the right edge of one b-tree, and a time range is a key range
-- (no separate index on processed_at). The client_request_id of each
-- applied operation is unique through idempotency_keys, which keeps those rows forever.
CREATE TABLE bar_orders (
    transaction_id         TEXT PRIMARY KEY,
    client_request_id      TEXT NOT NULL,
    terminal_id            TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq           INTEGER NOT NULL,
    point_of_sale          TEXT NOT NULL,
    card_uid               TEXT NOT NULL REFERENCES cards (card_uid),
    staff_id               TEXT NOT NULL,
    total_cents            INTEGER NOT NULL CHECK (total_cents > 0),
    mode                   TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    flags                  TEXT NOT NULL,
    previous_balance_cents INTEGER NOT NULL,
    new_balance_cents      INTEGER NOT NULL,
    created_at             TEXT NOT NULL,
    processed_at           TEXT NOT NULL,
    voided_by              TEXT
) WITHOUT ROWID;

CREATE TABLE bar_order_items (
    transaction_id      TEXT NOT NULL REFERENCES bar_orders (transaction_id),
    line_no             INTEGER NOT NULL,
    product_id          TEXT NOT NULL,
    quantity            INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    unit_price_cents    INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    -- The catalog's price when it differed (offline orders), else NULL.
    catalog_price_cents INTEGER,
    line_total_cents    INTEGER NOT NULL,
    PRIMARY KEY (transaction_id, line_no)
) WITHOUT ROWID;

CREATE TABLE recharges (
    transaction_id         TEXT PRIMARY KEY,
    client_request_id      TEXT NOT NULL,
    terminal_id            TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq           INTEGER NOT NULL,
    point_of_sale          TEXT NOT NULL,
    card_uid               TEXT NOT NULL REFERENCES cards (card_uid),
    staff_id               TEXT NOT NULL,
    amount_cents           INTEGER NOT NULL CHECK (amount_cents > 0),
    payment_method         TEXT NOT NULL CHECK (payment_method IN ('cash', 'card')),
    mode                   TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    flags                  TEXT NOT NULL,
    previous_balance_cents INTEGER NOT NULL,
    new_balance_cents      INTEGER NOT NULL,
    created_at             TEXT NOT NULL,
    processed_at           TEXT NOT NULL,
    voided_by              TEXT
) WITHOUT ROWID;

-- Voids and tombstones.
CREATE TABLE voids (
    transaction_id           TEXT PRIMARY KEY,
    client_request_id        TEXT NOT NULL,
    terminal_id              TEXT NOT NULL REFERENCES terminals (terminal_id),
    terminal_seq             INTEGER NOT NULL,
    target_client_request_id TEXT NOT NULL,
    target_kind              TEXT CHECK (target_kind IN ('order', 'recharge')),
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

-- Double entry: every balance change is a set of postings that sums to zero.
-- Accounts: card:<UID>, revenue:<point of sale>, cash:<point of sale>,
-- card_payments:<point of sale>, stripe_clearing.
CREATE TABLE postings (
    posting_id     INTEGER PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    account        TEXT NOT NULL,
    amount_cents   INTEGER NOT NULL,
    created_at     TEXT NOT NULL
);
-- No index on account: it would dirty a random page per posting; the audit and reports
-- aggregate postings by scanning them.
CREATE INDEX postings_transaction ON postings (transaction_id);

-- One row per client_request_id that got a stored answer. A decline's row expires after the
-- retention; an applied operation's row (transaction_id set) is kept forever, so a replay
-- years later still finds it and is never applied twice.
CREATE TABLE idempotency_keys (
    client_request_id TEXT PRIMARY KEY,
    terminal_id       TEXT NOT NULL,
    operation         TEXT NOT NULL CHECK (operation IN ('order', 'recharge', 'void')),
    request_sha256    TEXT NOT NULL,
    status_code       INTEGER NOT NULL,
    response_body     TEXT NOT NULL,
    transaction_id    TEXT,
    created_at        TEXT NOT NULL,
    expires_at        TEXT,
    CHECK ((transaction_id IS NULL) = (expires_at IS NOT NULL))
);
-- Only declines expire; applied operations' keys are not in this index at all.
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at) WHERE expires_at IS NOT NULL;

-- The audit trail: one row per applied or declined operation and per admin action.
CREATE TABLE app_transaction_log (
    log_id            INTEGER PRIMARY KEY,
    occurred_at       TEXT NOT NULL,
    request_id        TEXT,
    actor             TEXT NOT NULL,
    staff_id          TEXT,
    operation         TEXT NOT NULL,
    client_request_id TEXT,
    transaction_id    TEXT,
    card_uid          TEXT,
    amount_cents      INTEGER,
    outcome           TEXT NOT NULL,
    error_code        TEXT,
    details           TEXT
);
-- log_id grows with occurred_at: the rowid order is the time order, no index needed.

CREATE TABLE nfc_scan_log (
    scan_id      INTEGER PRIMARY KEY,
    terminal_id  TEXT NOT NULL REFERENCES terminals (terminal_id),
    card_uid     TEXT NOT NULL,
    result       TEXT NOT NULL,
    reader       TEXT NOT NULL,
    scanned_at   TEXT NOT NULL,
    terminal_seq INTEGER,
    received_at  TEXT NOT NULL,
    UNIQUE (terminal_id, card_uid, reader, scanned_at)
);

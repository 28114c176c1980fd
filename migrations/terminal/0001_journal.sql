-- cashless terminal journal, version 1 (SQLite).
-- Money is INTEGER cents. Times are RFC 3339 UTC text with milliseconds (they sort as text).
-- Ids are UUID text. Nothing in `journal` is ever deleted: an entry only changes state.

-- One row per money-changing operation, written durably before the network is used and
-- before a decision is shown.
CREATE TABLE journal (
    -- 1, 2, 3, ... with no gaps: assigned as MAX + 1 inside the inserting transaction.
    terminal_seq      INTEGER PRIMARY KEY CHECK (terminal_seq >= 1),
    client_request_id TEXT NOT NULL UNIQUE,
    operation         TEXT NOT NULL CHECK (operation IN ('order', 'recharge', 'void')),
    mode              TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    -- The exact ledger request body; it embeds client_request_id and terminal_seq.
    request_json      TEXT NOT NULL CHECK (json_valid(request_json)),
    card_uid          TEXT,
    -- Signed effect on the card as this terminal sees it: order -total, top-up +amount,
    -- void +refund (or -amount for a reversed top-up), 0 when unknown.
    amount_cents      INTEGER NOT NULL,
    state             TEXT NOT NULL
                      CHECK (state IN ('sending', 'pending', 'in_doubt', 'synced', 'rejected')),
    decision          TEXT
                      CHECK (decision IN ('approved_online', 'approved_offline', 'declined')),
    decline_reason    TEXT,
    -- Sends of this entry: failed ones and answered ones.
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error        TEXT,
    -- The ledger's answer (HTTP status and body) that settled the entry.
    ledger_status     INTEGER CHECK (ledger_status BETWEEN 100 AND 599),
    ledger_body       TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    synced_at         TEXT,
    CHECK ((state = 'synced') = (synced_at IS NOT NULL))
);

-- pending(limit), in_doubt(limit) and counts() read by state, in terminal_seq order.
CREATE INDEX journal_state ON journal (state, terminal_seq);
-- local_charges(uid) reads one card's entries.
CREATE INDEX journal_card ON journal (card_uid, terminal_seq) WHERE card_uid IS NOT NULL;

-- The card feed as last pulled: the ledger's balance and status of each card.
CREATE TABLE replica_cards (
    card_uid      TEXT PRIMARY KEY,
    balance_cents INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    -- Position in the ledger's card feed; an older version never overwrites a newer one.
    version       INTEGER NOT NULL,
    -- When the feed request that carried this row was sent: every operation the ledger
    -- acknowledged before then is reflected in balance_cents.
    fetched_at    TEXT NOT NULL
) WITHOUT ROWID;

-- Small named values: feed_cursor, last_feed_at, last_sync_at, catalog_* and staff_fetched_at.
CREATE TABLE replica_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The catalog of this terminal's point of sale, so that it can sell after a restart offline.
CREATE TABLE catalog_cache (
    product_id  TEXT PRIMARY KEY,
    -- The ledger's order, which is the menu's order on the screen.
    position    INTEGER NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    category    TEXT
) WITHOUT ROWID;

-- The staff feed (argon2 PIN hashes), so that staff can log in offline.
CREATE TABLE staff_cache (
    staff_id TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('bar', 'cashier', 'supervisor')),
    active   INTEGER NOT NULL CHECK (active IN (0, 1)),
    pin_hash TEXT NOT NULL
) WITHOUT ROWID;

-- Every card presentation, uploaded to the ledger's nfc_scan_log.
CREATE TABLE scan_log (
    id           INTEGER PRIMARY KEY,
    card_uid     TEXT NOT NULL,
    result       TEXT NOT NULL,
    reader       TEXT NOT NULL,
    scanned_at   TEXT NOT NULL,
    -- The operation the presentation led to, if any (it may be journaled after the scan).
    terminal_seq INTEGER,
    uploaded     INTEGER NOT NULL DEFAULT 0 CHECK (uploaded IN (0, 1))
);

-- unuploaded_scans(limit) reads only what is left to upload.
CREATE INDEX scan_log_unuploaded ON scan_log (id) WHERE uploaded = 0;

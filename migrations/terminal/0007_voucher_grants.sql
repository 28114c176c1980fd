-- cashless terminal journal, version 7: vouchers granted at a checkpoint.
--
-- A supervisor at a checkpoint gives a card voucher units (staff and artist drinks) as an
-- operation of its own (`voucher_grant`), journaled and replayed like the others. It moves
-- no money: its amount_cents is 0. SQLite cannot change a CHECK constraint in place, so
-- `journal` and `offline_declines` are rebuilt with their rows and indexes (nothing refers
-- to them).

ALTER TABLE journal RENAME TO journal_v6;
CREATE TABLE journal (
    -- 1, 2, 3, ... with no gaps: assigned as MAX + 1 inside the inserting transaction.
    terminal_seq      INTEGER PRIMARY KEY CHECK (terminal_seq >= 1),
    client_request_id TEXT NOT NULL UNIQUE,
    operation         TEXT NOT NULL
                      CHECK (operation IN ('order', 'recharge', 'void', 'return', 'voucher_grant')),
    mode              TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    -- The exact ledger request body; it embeds client_request_id and terminal_seq.
    request_json      TEXT NOT NULL CHECK (json_valid(request_json)),
    card_uid          TEXT,
    -- Signed effect on the card as this terminal sees it: order -total, top-up and deposit
    -- return +amount, void +refund (or -amount for a reversed top-up), voucher grant 0, 0
    -- when unknown.
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
INSERT INTO journal SELECT terminal_seq, client_request_id, operation, mode, request_json,
    card_uid, amount_cents, state, decision, decline_reason, attempts, last_error,
    ledger_status, ledger_body, created_at, updated_at, synced_at
FROM journal_v6;
DROP TABLE journal_v6;
CREATE INDEX journal_state ON journal (state, terminal_seq);
CREATE INDEX journal_card ON journal (card_uid, terminal_seq) WHERE card_uid IS NOT NULL;
CREATE INDEX journal_void_target
    ON journal (json_extract(request_json, '$.target_client_request_id'))
    WHERE operation = 'void';
-- unacknowledged_returns() reads the deposit returns the ledger has not acknowledged.
CREATE INDEX journal_returns ON journal (state) WHERE operation = 'return';

ALTER TABLE offline_declines RENAME TO offline_declines_v6;
CREATE TABLE offline_declines (
    id                INTEGER PRIMARY KEY,
    client_request_id TEXT NOT NULL UNIQUE,
    operation         TEXT NOT NULL
                      CHECK (operation IN ('order', 'recharge', 'return', 'voucher_grant')),
    card_uid          TEXT NOT NULL,
    -- Signed effect the operation would have had on the card (order -total, top-up and
    -- deposit return +amount, voucher grant 0).
    amount_cents      INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    staff_id          TEXT NOT NULL,
    declined_at       TEXT NOT NULL
);
INSERT INTO offline_declines SELECT id, client_request_id, operation, card_uid, amount_cents,
    reason, staff_id, declined_at
FROM offline_declines_v6;
DROP TABLE offline_declines_v6;

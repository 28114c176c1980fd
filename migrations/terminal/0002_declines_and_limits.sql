-- cashless terminal journal, version 2 (SQLite).

-- Sales and top-ups this terminal declined on its own while offline. The ledger never sees
-- them (it has nothing to apply), so they get no terminal_seq; they are kept for the shift's
-- books and the bar manager ("how many sales did the outage cost?"). Never deleted.
CREATE TABLE offline_declines (
    id                INTEGER PRIMARY KEY,
    client_request_id TEXT NOT NULL UNIQUE,
    operation         TEXT NOT NULL CHECK (operation IN ('order', 'recharge')),
    card_uid          TEXT NOT NULL,
    -- Signed effect the operation would have had on the card (order -total, top-up +amount).
    amount_cents      INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    staff_id          TEXT NOT NULL,
    declined_at       TEXT NOT NULL
);

-- The ledger's top-up limits (GET /v1/terminals/me), so that a checkpoint checks them
-- offline too: a single row, replaced whenever the ledger answers.
CREATE TABLE ledger_limits (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    recharge_max_cents INTEGER NOT NULL CHECK (recharge_max_cents >= 1),
    balance_max_cents  INTEGER NOT NULL CHECK (balance_max_cents >= 1),
    fetched_at         TEXT NOT NULL
);

-- Recovery looks for in-doubt attempts without their void; a void names its target only in
-- its request body.
CREATE INDEX journal_void_target
    ON journal (json_extract(request_json, '$.target_client_request_id'))
    WHERE operation = 'void';

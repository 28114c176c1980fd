-- cashless terminal journal, version 3: shift close-outs.

-- One row per closed shift: the top-ups this terminal took since the previous close-out
-- (cash and card, net of voids), the cash staff counted, and the difference. Written in the
-- transaction that computed the totals, then sent to the ledger's POST /v1/shifts by the
-- sync worker until it answers; never deleted.
CREATE TABLE shift_closeouts (
    id                 INTEGER PRIMARY KEY,
    client_request_id  TEXT NOT NULL UNIQUE,
    staff_id           TEXT NOT NULL,
    -- The previous close-out's closed_at, or the shift's first top-up, or closed_at.
    opened_at          TEXT NOT NULL,
    closed_at          TEXT NOT NULL,
    cash_cents         INTEGER NOT NULL CHECK (cash_cents >= 0),
    card_cents         INTEGER NOT NULL CHECK (card_cents >= 0),
    count              INTEGER NOT NULL CHECK (count >= 0),
    voids              INTEGER NOT NULL CHECK (voids >= 0),
    counted_cash_cents INTEGER NOT NULL CHECK (counted_cash_cents >= 0),
    difference_cents   INTEGER NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'recorded', 'rejected')),
    -- The ledger's answer that settled it.
    ledger_status      INTEGER CHECK (ledger_status BETWEEN 100 AND 599),
    ledger_body        TEXT,
    CHECK (opened_at <= closed_at),
    CHECK (difference_cents = counted_cash_cents - cash_cents)
);
CREATE INDEX shift_closeouts_pending ON shift_closeouts (id) WHERE state = 'pending';

-- The shift summary reads one kind of operation since a time.
CREATE INDEX journal_operation_created ON journal (operation, created_at);

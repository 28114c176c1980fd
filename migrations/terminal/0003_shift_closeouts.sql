-- cashless terminal journal, version 3: shift close-outs.

-- One row per closed shift: the top-ups this terminal took since the previous close-out
-- (cash and card, net of voids), the cash staff counted, and the difference. Written in the
-- transaction that computed the totals, then sent to the ledger's POST /v1/shifts by the
-- sync worker until it answers; never deleted.
--
-- A shift is the journal entries with terminal_seq above the previous close-out's last_seq,
-- not those after a time: terminal_seq is gapless and only grows, while the clock can step
-- back (a Pi without a real-time clock booting offline, an NTP correction), and bounded by
-- time a top-up would then fall out of every shift or count in two.
CREATE TABLE shift_closeouts (
    id                 INTEGER PRIMARY KEY,
    client_request_id  TEXT NOT NULL UNIQUE,
    staff_id           TEXT NOT NULL,
    -- The highest terminal_seq in the journal when the shift was closed (0 for an empty
    -- journal): the next shift is the entries above it.
    last_seq           INTEGER NOT NULL CHECK (last_seq >= 0),
    -- The shift's first terminal_seq, the previous close-out's last_seq + 1; NULL for a
    -- shift without any entry. The ledger gets first_seq..last_seq (neither for a shift
    -- without any entry) and compares its own top-ups of that range with the totals.
    first_seq          INTEGER CHECK (first_seq BETWEEN 1 AND last_seq),
    -- Shown, not used to bound the shift: the previous close-out's closed_at, or the
    -- shift's first approved top-up's created_at, or closed_at.
    opened_at          TEXT NOT NULL,
    -- When it was closed, or opened_at if the clock was behind it.
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

-- The shift summary reads the journal above a terminal_seq: a range of its primary key, with
-- no index of its own.

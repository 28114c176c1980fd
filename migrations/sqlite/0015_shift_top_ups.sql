-- cashless ledger schema, version 15 (SQLite): a shift's top-ups found without a scan.
--
-- `shift list`, the report's cashier section and headquarters' shifts page add up, for
-- each close-out, the ledger's own top-ups of the close-out's range of the terminal's
-- sequence numbers. Without this index each close-out read every top-up. It holds every
-- column those sums read, so they never visit the table. It costs one index entry per
-- top-up (top-ups are a small share of the operations; orders pay nothing).
CREATE INDEX recharges_terminal_seq ON recharges
    (terminal_id, terminal_seq, voided_by, payment_method, amount_cents, created_at);

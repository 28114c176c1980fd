-- cashless ledger schema, version 8 (SQLite): daily voucher allowances.
--
-- A card may have a daily allowance of voucher units (`cashless ledger voucher daily`): it
-- starts every festival day with exactly that many, whatever it had left (`vouchers_day`:
-- the festival day, YYYY-MM-DD, its allowance was last given for). The ledger gives it at
-- the start of each day (`[festival] day_starts_at`); each renewal is in the audit log
-- (`voucher_day`, with the units before and after).
ALTER TABLE cards ADD COLUMN daily_voucher_units INTEGER NOT NULL DEFAULT 0
    CHECK (daily_voucher_units >= 0);
ALTER TABLE cards ADD COLUMN vouchers_day TEXT;
-- The cards a new day renews, found without reading the others.
CREATE INDEX cards_daily_vouchers ON cards (vouchers_day) WHERE daily_voucher_units > 0;

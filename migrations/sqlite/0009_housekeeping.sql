-- cashless ledger schema, version 9 (SQLite): housekeeping.
--
-- `cashless ledger housekeeping` archives old audit-log and scan-log rows to compressed
-- files and removes them. The audit proves every card's voucher units partly from audit-log
-- rows (the desk's grants, daily allowances): what removed rows proved is carried here, per
-- card, in the same transaction that removes them, so that the proof holds without them.
CREATE TABLE archived_voucher_moves (
    card_uid      TEXT PRIMARY KEY,
    voucher_units INTEGER NOT NULL
);

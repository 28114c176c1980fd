-- cashless ledger schema, version 10 (SQLite): lost and broken cards replaced.
--
-- `cashless ledger card replace --old UID --new UID` moves the old card's balance (with
-- postings) and voucher units to the new card and blocks the old one as lost for good
-- (`replaced_by`). Offline sales made on the old card before terminals learned of the
-- block still land on it when they arrive; the ledger then settles again, moving what they
-- left (a debt, or vouchers used) to the replacement. Each move is a row here.
ALTER TABLE cards ADD COLUMN replaced_by TEXT;
-- The replaced cards, found without reading the others (the settling check).
CREATE INDEX cards_replaced ON cards (card_uid) WHERE replaced_by IS NOT NULL;
CREATE TABLE card_replacements (
    transaction_id TEXT PRIMARY KEY,
    old_card_uid   TEXT NOT NULL REFERENCES cards (card_uid),
    new_card_uid   TEXT NOT NULL REFERENCES cards (card_uid),
    -- The balance moved (below zero: a debt); postings under transaction_id when not 0.
    amount_cents   INTEGER NOT NULL,
    voucher_units  INTEGER NOT NULL,
    created_at     TEXT NOT NULL
);

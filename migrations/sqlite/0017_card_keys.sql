-- cashless ledger schema, version 17 (SQLite): cards issued with an AES key.
--
-- A festival in `[cards] mode = "aes"` issues NTAG 424 DNA cards whose key is diversified
-- from the festival's master key (`cashless card issue`). The ledger records which master
-- key version a card was issued with (NULL: a UID-only card), so that every terminal learns
-- it from the card feed and refuses a UID-only card (a clone on a "magic" card) that claims
-- to be a card issued with a key. The version only moves up (a card re-issued under a newer
-- master key); the keys themselves never reach the ledger.
ALTER TABLE cards ADD COLUMN key_version INTEGER CHECK (key_version BETWEEN 1 AND 255);

-- cashless ledger schema, version 13 (SQLite): a card's history, found without a scan.
--
-- Headquarters' card page lists a card's operations (the audit log: every operation,
-- approved or declined, with its terminal, staff member and time; Stripe's credits and
-- refunds; the desk's blocks) and its scans, newest first. Without these indexes each
-- look-up would read the whole log. Each costs one index entry per row written.
CREATE INDEX app_transaction_log_card ON app_transaction_log (card_uid, log_id)
    WHERE card_uid IS NOT NULL;
CREATE INDEX nfc_scan_log_card ON nfc_scan_log (card_uid, scanned_at);

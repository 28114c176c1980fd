-- cashless terminal journal, version 5: age restrictions, open prices, vouchers.
--
-- The replica keeps each card's age flag (`under_16`, `under_18`; NULL: none) and voucher
-- units as the card feed carries them, so that a bar refuses a product sold from 16 or 18
-- to a flagged card online and offline, and pays with vouchers offline as far as the card
-- has them. The cached catalog keeps each product's minimum age, the largest unit price
-- staff may type for an open price, and its price in vouchers. (The vouchers an entry used
-- are in its request, `voucher_units`, and in the ledger's answer, `vouchers_used`.)
ALTER TABLE replica_cards ADD COLUMN age_flag TEXT;
ALTER TABLE replica_cards ADD COLUMN voucher_units INTEGER NOT NULL DEFAULT 0;
ALTER TABLE catalog_cache ADD COLUMN min_age INTEGER;
ALTER TABLE catalog_cache ADD COLUMN open_price_max_cents INTEGER;
ALTER TABLE catalog_cache ADD COLUMN voucher_price INTEGER;

-- cashless terminal journal, version 5: age restrictions and open prices.
--
-- The replica keeps each card's age flag as the card feed carries it (`under_16`,
-- `under_18`; NULL: none), so that a bar refuses a product sold from 16 or 18 to a flagged
-- card online and offline. The cached catalog keeps each product's minimum age and, for an
-- open price, the largest unit price staff may type.
ALTER TABLE replica_cards ADD COLUMN age_flag TEXT;
ALTER TABLE catalog_cache ADD COLUMN min_age INTEGER;
ALTER TABLE catalog_cache ADD COLUMN open_price_max_cents INTEGER;

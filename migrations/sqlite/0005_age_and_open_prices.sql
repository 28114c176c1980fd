-- cashless ledger schema, version 5 (SQLite): age restrictions and open prices.
--
-- A card may carry what staff saw on its holder's ID (`under_16`, `under_18`; NULL: nobody
-- said the holder is a minor), set by the desk (`card flag`) or by a top-up that names it.
-- A product may require an age (16 or 18): an online order of it for a card whose flag
-- forbids it is declined with AGE_RESTRICTED (domain::AgeFlag::forbids). A product may have
-- an open price: staff type the unit price, 1 cent to `open_price_max_cents`; such a
-- product's `price_cents` is 0.

ALTER TABLE cards ADD COLUMN age_flag TEXT CHECK (age_flag IN ('under_16', 'under_18'));

ALTER TABLE products ADD COLUMN min_age INTEGER CHECK (min_age IN (16, 18));
ALTER TABLE products ADD COLUMN open_price_max_cents INTEGER CHECK (open_price_max_cents > 0);

-- The flag a top-up set on its card (NULL: it set none).
ALTER TABLE recharges ADD COLUMN age_flag TEXT CHECK (age_flag IN ('under_16', 'under_18'));

-- cashless ledger schema, version 5 (SQLite): age restrictions, open prices, vouchers.
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

-- Vouchers (staff and artist drinks): units on a card, granted by the desk (`voucher
-- grant`). A product may be payable in vouchers (`voucher_price` units per unit); an order
-- uses the card's vouchers first, lines in order, and money for the rest. Vouchers are not
-- money: what they pay earns no revenue and no VAT, and they are never paid out.
ALTER TABLE cards ADD COLUMN voucher_units INTEGER NOT NULL DEFAULT 0;
ALTER TABLE products ADD COLUMN voucher_price INTEGER CHECK (voucher_price > 0);
-- What an order took: voucher units and money (its total less what vouchers paid). NULL
-- in orders written before vouchers (they took no vouchers and charged their total).
ALTER TABLE bar_orders ADD COLUMN voucher_units INTEGER;
ALTER TABLE bar_orders ADD COLUMN money_cents INTEGER;
-- Per line: how many of its units vouchers paid, and the units they took (net and tax
-- split the rest).
ALTER TABLE bar_order_items ADD COLUMN voucher_quantity INTEGER;
ALTER TABLE bar_order_items ADD COLUMN voucher_units INTEGER;

-- cashless ledger schema, version 4 (SQLite): VAT.
--
-- The festival's rates are named in the ledger's configuration (`[taxes]`): a product names
-- its rate, and every order line records the rate it was sold at and its gross amount
-- (`line_total_cents`, as before) split into net and tax (`split_gross`: per line, half
-- away from zero). The order's postings credit `revenue:<point of sale>:<rate>` with the
-- net and `vat:<rate>` with the tax of each rate.

-- The product's rate by name; NULL: the configuration's `default_rate`.
ALTER TABLE products ADD COLUMN tax_rate TEXT;

-- NULL in lines sold before this version (their postings credit `revenue:<point of sale>`
-- with the gross); set in every later line.
ALTER TABLE bar_order_items ADD COLUMN tax_rate TEXT;
ALTER TABLE bar_order_items ADD COLUMN tax_rate_basis_points INTEGER;
ALTER TABLE bar_order_items ADD COLUMN net_cents INTEGER;
ALTER TABLE bar_order_items ADD COLUMN tax_cents INTEGER;

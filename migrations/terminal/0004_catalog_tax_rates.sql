-- cashless terminal journal, version 4: the VAT rate of each cached product, as the
-- ledger's catalog gives it (name and basis points), shown in the bar's menu. NULL for a
-- catalog cached from a ledger that did not say.
ALTER TABLE catalog_cache ADD COLUMN tax_rate TEXT;
ALTER TABLE catalog_cache ADD COLUMN tax_rate_basis_points INTEGER;

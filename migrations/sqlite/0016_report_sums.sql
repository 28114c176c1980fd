-- cashless ledger schema, version 16 (SQLite): the report's sales without reading every order.
--
-- `ledger report` and headquarters' report pages show the sales by point of sale, terminal,
-- staff member, hour and product, each split by VAT rate. Grouping the orders at each look-up
-- reads every order in the range (a festival day is hundreds of thousands). Two tables keep
-- the same sums per quarter hour instead (UTC, by the time the terminal made the sale,
-- `created_at`, as the report's hours), inside each order's own transaction, so they can never
-- disagree with the rows they sum (`ledger audit` recounts them):
--
-- - `till_quarter_sales`, per terminal, point of sale, staff member and VAT rate: the point of
--   sale, terminal, staff and hour sections read it (a few rows per terminal and quarter);
-- - `product_quarter_sales`, per terminal, product and VAT rate: the product section reads
--   it. Each row is one terminal's, as in `till_quarter_sales` (and `quarter_totals`): on
--   PostgreSQL, where orders of several terminals commit at once, a terminal's order never
--   waits for another terminal's to commit to add to a popular product's sum.
--
-- A sale is what the report counts: an order line that is not a deposit, of an order that
-- stands; `lines` counts them (a group whose lines were all voided is left out), `quantity`
-- counts units (those paid with vouchers too), `net_cents` and `tax_cents` the money. A void
-- takes its order's lines back out of their quarter.
--
-- A report over a range that does not start or end on a quarter hour reads the orders of the
-- two ragged quarters themselves, through `bar_orders_created_at`. The other sections read
-- through the partial indexes below.
CREATE TABLE till_quarter_sales (
    quarter_start TEXT NOT NULL,
    terminal_id   TEXT NOT NULL,
    point_of_sale TEXT NOT NULL,
    staff_id      TEXT NOT NULL,
    tax_rate      TEXT NOT NULL,
    lines         INTEGER NOT NULL,
    quantity      INTEGER NOT NULL,
    net_cents     INTEGER NOT NULL,
    tax_cents     INTEGER NOT NULL,
    PRIMARY KEY (quarter_start, terminal_id, point_of_sale, staff_id, tax_rate)
) WITHOUT ROWID;

CREATE TABLE product_quarter_sales (
    quarter_start TEXT NOT NULL,
    terminal_id   TEXT NOT NULL,
    product_id    TEXT NOT NULL,
    tax_rate      TEXT NOT NULL,
    lines         INTEGER NOT NULL,
    quantity      INTEGER NOT NULL,
    net_cents     INTEGER NOT NULL,
    tax_cents     INTEGER NOT NULL,
    PRIMARY KEY (quarter_start, terminal_id, product_id, tax_rate)
) WITHOUT ROWID;

CREATE INDEX bar_orders_created_at ON bar_orders (created_at);

-- The report's other sections over a range, each through an index of the few rows it
-- reads (partial: an operation that is none of these pays nothing for them): offline
-- operations and declines (terminal_sync), orders paid partly with vouchers and the desk's
-- voucher moves (vouchers), orders flagged on arrival (flagged_sales); and top-ups by time
-- (top_ups).
CREATE INDEX bar_orders_offline ON bar_orders (created_at) WHERE mode = 'offline';
CREATE INDEX recharges_offline ON recharges (created_at) WHERE mode = 'offline';
CREATE INDEX bar_orders_voucher_use ON bar_orders (created_at) WHERE voucher_units <> 0;
CREATE INDEX bar_orders_flagged ON bar_orders (created_at) WHERE flags <> '[]';
CREATE INDEX app_transaction_log_admin ON app_transaction_log (occurred_at)
    WHERE actor = 'admin';
CREATE INDEX app_transaction_log_declined ON app_transaction_log (occurred_at)
    WHERE outcome = 'declined';
CREATE INDEX recharges_created_at ON recharges (created_at);

-- The quarter is the stored time's text cut to the quarter hour, as in `quarter_totals`
-- ('2026-07-03T21:37:12.345Z' is in '2026-07-03T21:30:00.000Z').
CREATE TRIGGER report_sums_order_line AFTER INSERT ON bar_order_items
WHEN COALESCE(NEW.deposit, 0) = 0
BEGIN
    INSERT INTO till_quarter_sales
    SELECT substr(o.created_at, 1, 14) || printf('%02d', substr(o.created_at, 15, 2) / 15 * 15)
               || ':00.000Z',
           o.terminal_id, o.point_of_sale, o.staff_id, COALESCE(NEW.tax_rate, ''), 1,
           NEW.quantity, COALESCE(NEW.net_cents, NEW.line_total_cents),
           COALESCE(NEW.tax_cents, 0)
      FROM bar_orders o
     WHERE o.transaction_id = NEW.transaction_id AND o.voided_by IS NULL
    ON CONFLICT DO UPDATE SET lines = lines + 1, quantity = quantity + excluded.quantity,
                              net_cents = net_cents + excluded.net_cents,
                              tax_cents = tax_cents + excluded.tax_cents;
    INSERT INTO product_quarter_sales
    SELECT substr(o.created_at, 1, 14) || printf('%02d', substr(o.created_at, 15, 2) / 15 * 15)
               || ':00.000Z',
           o.terminal_id, NEW.product_id, COALESCE(NEW.tax_rate, ''), 1, NEW.quantity,
           COALESCE(NEW.net_cents, NEW.line_total_cents), COALESCE(NEW.tax_cents, 0)
      FROM bar_orders o
     WHERE o.transaction_id = NEW.transaction_id AND o.voided_by IS NULL
    ON CONFLICT DO UPDATE SET lines = lines + 1, quantity = quantity + excluded.quantity,
                              net_cents = net_cents + excluded.net_cents,
                              tax_cents = tax_cents + excluded.tax_cents;
END;

CREATE TRIGGER report_sums_order_void AFTER UPDATE OF voided_by ON bar_orders
WHEN OLD.voided_by IS NULL AND NEW.voided_by IS NOT NULL
BEGIN
    INSERT INTO till_quarter_sales
    SELECT substr(NEW.created_at, 1, 14)
               || printf('%02d', substr(NEW.created_at, 15, 2) / 15 * 15) || ':00.000Z',
           NEW.terminal_id, NEW.point_of_sale, NEW.staff_id, COALESCE(i.tax_rate, ''),
           -COUNT(*), -SUM(i.quantity), -SUM(COALESCE(i.net_cents, i.line_total_cents)),
           -SUM(COALESCE(i.tax_cents, 0))
      FROM bar_order_items i
     WHERE i.transaction_id = NEW.transaction_id AND COALESCE(i.deposit, 0) = 0
     GROUP BY COALESCE(i.tax_rate, '')
    ON CONFLICT DO UPDATE SET lines = lines + excluded.lines,
                              quantity = quantity + excluded.quantity,
                              net_cents = net_cents + excluded.net_cents,
                              tax_cents = tax_cents + excluded.tax_cents;
    INSERT INTO product_quarter_sales
    SELECT substr(NEW.created_at, 1, 14)
               || printf('%02d', substr(NEW.created_at, 15, 2) / 15 * 15) || ':00.000Z',
           NEW.terminal_id, i.product_id, COALESCE(i.tax_rate, ''), -COUNT(*), -SUM(i.quantity),
           -SUM(COALESCE(i.net_cents, i.line_total_cents)), -SUM(COALESCE(i.tax_cents, 0))
      FROM bar_order_items i
     WHERE i.transaction_id = NEW.transaction_id AND COALESCE(i.deposit, 0) = 0
     GROUP BY i.product_id, COALESCE(i.tax_rate, '')
    ON CONFLICT DO UPDATE SET lines = lines + excluded.lines,
                              quantity = quantity + excluded.quantity,
                              net_cents = net_cents + excluded.net_cents,
                              tax_cents = tax_cents + excluded.tax_cents;
END;

-- What the ledger holds already, summed once.
INSERT INTO till_quarter_sales
SELECT substr(o.created_at, 1, 14) || printf('%02d', substr(o.created_at, 15, 2) / 15 * 15)
           || ':00.000Z',
       o.terminal_id, o.point_of_sale, o.staff_id, COALESCE(i.tax_rate, ''), COUNT(*),
       SUM(i.quantity), SUM(COALESCE(i.net_cents, i.line_total_cents)),
       SUM(COALESCE(i.tax_cents, 0))
  FROM bar_orders o JOIN bar_order_items i ON i.transaction_id = o.transaction_id
 WHERE o.voided_by IS NULL AND COALESCE(i.deposit, 0) = 0
 GROUP BY 1, 2, 3, 4, 5;

INSERT INTO product_quarter_sales
SELECT substr(o.created_at, 1, 14) || printf('%02d', substr(o.created_at, 15, 2) / 15 * 15)
           || ':00.000Z',
       o.terminal_id, i.product_id, COALESCE(i.tax_rate, ''), COUNT(*), SUM(i.quantity),
       SUM(COALESCE(i.net_cents, i.line_total_cents)), SUM(COALESCE(i.tax_cents, 0))
  FROM bar_orders o JOIN bar_order_items i ON i.transaction_id = o.transaction_id
 WHERE o.voided_by IS NULL AND COALESCE(i.deposit, 0) = 0
 GROUP BY 1, 2, 3, 4;

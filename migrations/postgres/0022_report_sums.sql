-- cashless ledger schema, version 22 (PostgreSQL): the report's sales without reading every
-- order.
--
-- `ledger report` and headquarters' report pages show the sales by point of sale, terminal,
-- staff member, hour and product, each split by VAT rate. Grouping the orders at each look-up
-- reads every order in the range (a festival day is hundreds of thousands). Two tables keep
-- the same sums per quarter hour instead (by the time the terminal made the sale,
-- `created_at`, as the report's hours), inside each order's own transaction, so they can never
-- disagree with the rows they sum (`ledger audit` recounts them):
--
-- - `till_quarter_sales`, per terminal, point of sale, staff member and VAT rate: the point of
--   sale, terminal, staff and hour sections read it (a few rows per terminal and quarter);
-- - `product_quarter_sales`, per terminal, product and VAT rate: the product section reads
--   it. Each row is one terminal's, as in `till_quarter_sales` (and `quarter_totals`): a
--   terminal's order never waits for another terminal's to commit to add to a popular
--   product's sum.
--
-- A sale is what the report counts: an order line that is not a deposit, of an order that
-- stands; `lines` counts them (a group whose lines were all voided is left out), `quantity`
-- counts units (those paid with vouchers too), `net_cents` and `tax_cents` the money. A void
-- takes its order's lines back out of their quarter.
--
-- A report over a range that does not start or end on a quarter hour reads the orders of the
-- two ragged quarters themselves, through `bar_orders_created_at`. The other sections read
-- through the partial indexes below.
--
-- The triggers are per statement over the statement's rows, as `quarter_totals`' (0020);
-- each statement's rows are upserted in key order, so that two statements never take the
-- same rows' locks in opposite orders.
CREATE TABLE till_quarter_sales (
    quarter_start timestamptz NOT NULL,
    terminal_id   uuid NOT NULL,
    point_of_sale text NOT NULL,
    staff_id      text NOT NULL,
    tax_rate      text NOT NULL,
    lines         bigint NOT NULL,
    quantity      bigint NOT NULL,
    net_cents     bigint NOT NULL,
    tax_cents     bigint NOT NULL,
    PRIMARY KEY (quarter_start, terminal_id, point_of_sale, staff_id, tax_rate)
);

CREATE TABLE product_quarter_sales (
    quarter_start timestamptz NOT NULL,
    terminal_id   uuid NOT NULL,
    product_id    text NOT NULL,
    tax_rate      text NOT NULL,
    lines         bigint NOT NULL,
    quantity      bigint NOT NULL,
    net_cents     bigint NOT NULL,
    tax_cents     bigint NOT NULL,
    PRIMARY KEY (quarter_start, terminal_id, product_id, tax_rate)
);

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

-- Adds the lines of `lines` (order lines joined to their standing orders, with `sign` 1 to
-- add and -1 to take back) to both tables.
CREATE FUNCTION report_sums_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO till_quarter_sales
        SELECT quarter_of(o.created_at), o.terminal_id, o.point_of_sale, o.staff_id,
               COALESCE(n.tax_rate, ''), count(*), sum(n.quantity),
               sum(COALESCE(n.net_cents, n.line_total_cents)), sum(COALESCE(n.tax_cents, 0))
          FROM added n JOIN bar_orders o ON o.transaction_id = n.transaction_id
         WHERE o.voided_by IS NULL AND NOT COALESCE(n.deposit, false)
         GROUP BY 1, 2, 3, 4, 5
         ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT ON CONSTRAINT till_quarter_sales_pkey DO UPDATE
           SET lines = till_quarter_sales.lines + excluded.lines,
               quantity = till_quarter_sales.quantity + excluded.quantity,
               net_cents = till_quarter_sales.net_cents + excluded.net_cents,
               tax_cents = till_quarter_sales.tax_cents + excluded.tax_cents;
        INSERT INTO product_quarter_sales
        SELECT quarter_of(o.created_at), o.terminal_id, n.product_id, COALESCE(n.tax_rate, ''),
               count(*), sum(n.quantity), sum(COALESCE(n.net_cents, n.line_total_cents)),
               sum(COALESCE(n.tax_cents, 0))
          FROM added n JOIN bar_orders o ON o.transaction_id = n.transaction_id
         WHERE o.voided_by IS NULL AND NOT COALESCE(n.deposit, false)
         GROUP BY 1, 2, 3, 4
         ORDER BY 1, 2, 3, 4
        ON CONFLICT ON CONSTRAINT product_quarter_sales_pkey DO UPDATE
           SET lines = product_quarter_sales.lines + excluded.lines,
               quantity = product_quarter_sales.quantity + excluded.quantity,
               net_cents = product_quarter_sales.net_cents + excluded.net_cents,
               tax_cents = product_quarter_sales.tax_cents + excluded.tax_cents;
    ELSE
        -- Voids: orders whose voided_by was set by the statement.
        INSERT INTO till_quarter_sales
        SELECT quarter_of(n.created_at), n.terminal_id, n.point_of_sale, n.staff_id,
               COALESCE(i.tax_rate, ''), -count(*), -sum(i.quantity),
               -sum(COALESCE(i.net_cents, i.line_total_cents)), -sum(COALESCE(i.tax_cents, 0))
          FROM after_rows n JOIN before_rows b ON b.transaction_id = n.transaction_id
          JOIN bar_order_items i ON i.transaction_id = n.transaction_id
         WHERE b.voided_by IS NULL AND n.voided_by IS NOT NULL
           AND NOT COALESCE(i.deposit, false)
         GROUP BY 1, 2, 3, 4, 5
         ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT ON CONSTRAINT till_quarter_sales_pkey DO UPDATE
           SET lines = till_quarter_sales.lines + excluded.lines,
               quantity = till_quarter_sales.quantity + excluded.quantity,
               net_cents = till_quarter_sales.net_cents + excluded.net_cents,
               tax_cents = till_quarter_sales.tax_cents + excluded.tax_cents;
        INSERT INTO product_quarter_sales
        SELECT quarter_of(n.created_at), n.terminal_id, i.product_id, COALESCE(i.tax_rate, ''),
               -count(*), -sum(i.quantity), -sum(COALESCE(i.net_cents, i.line_total_cents)),
               -sum(COALESCE(i.tax_cents, 0))
          FROM after_rows n JOIN before_rows b ON b.transaction_id = n.transaction_id
          JOIN bar_order_items i ON i.transaction_id = n.transaction_id
         WHERE b.voided_by IS NULL AND n.voided_by IS NOT NULL
           AND NOT COALESCE(i.deposit, false)
         GROUP BY 1, 2, 3, 4
         ORDER BY 1, 2, 3, 4
        ON CONFLICT ON CONSTRAINT product_quarter_sales_pkey DO UPDATE
           SET lines = product_quarter_sales.lines + excluded.lines,
               quantity = product_quarter_sales.quantity + excluded.quantity,
               net_cents = product_quarter_sales.net_cents + excluded.net_cents,
               tax_cents = product_quarter_sales.tax_cents + excluded.tax_cents;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER report_sums_order_line AFTER INSERT ON bar_order_items
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION report_sums_add();
CREATE TRIGGER report_sums_order_void AFTER UPDATE ON bar_orders
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_sums_add();

-- What the ledger holds already, summed once.
INSERT INTO till_quarter_sales
SELECT quarter_of(o.created_at), o.terminal_id, o.point_of_sale, o.staff_id,
       COALESCE(i.tax_rate, ''), count(*), sum(i.quantity),
       sum(COALESCE(i.net_cents, i.line_total_cents)), sum(COALESCE(i.tax_cents, 0))
  FROM bar_orders o JOIN bar_order_items i ON i.transaction_id = o.transaction_id
 WHERE o.voided_by IS NULL AND NOT COALESCE(i.deposit, false)
 GROUP BY 1, 2, 3, 4, 5;

INSERT INTO product_quarter_sales
SELECT quarter_of(o.created_at), o.terminal_id, i.product_id, COALESCE(i.tax_rate, ''),
       count(*), sum(i.quantity), sum(COALESCE(i.net_cents, i.line_total_cents)),
       sum(COALESCE(i.tax_cents, 0))
  FROM bar_orders o JOIN bar_order_items i ON i.transaction_id = o.transaction_id
 WHERE o.voided_by IS NULL AND NOT COALESCE(i.deposit, false)
 GROUP BY 1, 2, 3, 4;

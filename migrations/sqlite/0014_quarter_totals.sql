-- cashless ledger schema, version 14 (SQLite): today's takings without reading today's
-- operations.
--
-- Headquarters' overview shows the festival day's sales and top-ups per hour and per point
-- of sale, online against offline. Summing the day's orders at each look-up would read every
-- order of the day (hundreds of thousands by night). `quarter_totals` keeps the sums instead,
-- per quarter hour (UTC, by the time the terminal made the operation, `created_at`, as the
-- report's hours), point of sale, source (the terminal, or 'stripe'), kind and mode; the
-- triggers below keep it in step inside the operation's own transaction, so it can never
-- disagree with the rows it sums. A look-up reads one row per terminal and quarter hour.
--
-- - A sale is what `ledger report` counts: the net plus tax of an order's lines that are not
--   deposits (units paid with vouchers move no money); `operations` counts orders.
-- - A top-up is a checkpoint's (cash or card) or a Stripe credit (point of sale '', source
--   'stripe', online, at the time the ledger booked it); a Stripe refund takes its amount
--   off the credit's quarter.
-- - A void takes its operation back out, in the operation's quarter.
--
-- The quarter is the stored time's text cut to the quarter hour, in the same form: every
-- time is stored as RFC 3339 UTC text with milliseconds ('YYYY-MM-DDTHH:MM:SS.sssZ'), and a
-- quarter as the time it starts ('2026-07-03T21:45:00.000Z').
CREATE TABLE quarter_totals (
    quarter_start TEXT NOT NULL,
    point_of_sale TEXT NOT NULL,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('sale', 'top_up')),
    mode          TEXT NOT NULL CHECK (mode IN ('online', 'offline')),
    operations    INTEGER NOT NULL,
    amount_cents  INTEGER NOT NULL,
    PRIMARY KEY (quarter_start, point_of_sale, source, kind, mode)
) WITHOUT ROWID;

CREATE TRIGGER quarter_totals_order AFTER INSERT ON bar_orders
WHEN NEW.voided_by IS NULL
BEGIN
    INSERT INTO quarter_totals VALUES (
        substr(NEW.created_at, 1, 14) || CASE WHEN substr(NEW.created_at, 15, 2) < '15' THEN '00'
            WHEN substr(NEW.created_at, 15, 2) < '30' THEN '15'
            WHEN substr(NEW.created_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
        NEW.point_of_sale, NEW.terminal_id, 'sale', NEW.mode, 1, 0)
    ON CONFLICT DO UPDATE SET operations = operations + 1;
END;

CREATE TRIGGER quarter_totals_order_line AFTER INSERT ON bar_order_items
WHEN COALESCE(NEW.deposit, 0) = 0
BEGIN
    INSERT INTO quarter_totals
    SELECT substr(o.created_at, 1, 14) || CASE WHEN substr(o.created_at, 15, 2) < '15' THEN '00'
               WHEN substr(o.created_at, 15, 2) < '30' THEN '15'
               WHEN substr(o.created_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
           o.point_of_sale, o.terminal_id, 'sale', o.mode, 0,
           COALESCE(NEW.net_cents, NEW.line_total_cents) + COALESCE(NEW.tax_cents, 0)
      FROM bar_orders o
     WHERE o.transaction_id = NEW.transaction_id AND o.voided_by IS NULL
    ON CONFLICT DO UPDATE SET amount_cents = amount_cents + excluded.amount_cents;
END;

CREATE TRIGGER quarter_totals_order_void AFTER UPDATE OF voided_by ON bar_orders
WHEN OLD.voided_by IS NULL AND NEW.voided_by IS NOT NULL
BEGIN
    INSERT INTO quarter_totals
    SELECT substr(NEW.created_at, 1, 14) || CASE WHEN substr(NEW.created_at, 15, 2) < '15' THEN '00'
               WHEN substr(NEW.created_at, 15, 2) < '30' THEN '15'
               WHEN substr(NEW.created_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
           NEW.point_of_sale, NEW.terminal_id, 'sale', NEW.mode, -1,
           -COALESCE(SUM(COALESCE(i.net_cents, i.line_total_cents) + COALESCE(i.tax_cents, 0)), 0)
      FROM bar_order_items i
     WHERE i.transaction_id = NEW.transaction_id AND COALESCE(i.deposit, 0) = 0
    ON CONFLICT DO UPDATE SET operations = operations + excluded.operations,
                              amount_cents = amount_cents + excluded.amount_cents;
END;

CREATE TRIGGER quarter_totals_top_up AFTER INSERT ON recharges
WHEN NEW.voided_by IS NULL
BEGIN
    INSERT INTO quarter_totals VALUES (
        substr(NEW.created_at, 1, 14) || CASE WHEN substr(NEW.created_at, 15, 2) < '15' THEN '00'
            WHEN substr(NEW.created_at, 15, 2) < '30' THEN '15'
            WHEN substr(NEW.created_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
        NEW.point_of_sale, NEW.terminal_id, 'top_up', NEW.mode, 1, NEW.amount_cents)
    ON CONFLICT DO UPDATE SET operations = operations + 1,
                              amount_cents = amount_cents + excluded.amount_cents;
END;

CREATE TRIGGER quarter_totals_top_up_void AFTER UPDATE OF voided_by ON recharges
WHEN OLD.voided_by IS NULL AND NEW.voided_by IS NOT NULL
BEGIN
    INSERT INTO quarter_totals VALUES (
        substr(NEW.created_at, 1, 14) || CASE WHEN substr(NEW.created_at, 15, 2) < '15' THEN '00'
            WHEN substr(NEW.created_at, 15, 2) < '30' THEN '15'
            WHEN substr(NEW.created_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
        NEW.point_of_sale, NEW.terminal_id, 'top_up', NEW.mode, -1, -NEW.amount_cents)
    ON CONFLICT DO UPDATE SET operations = operations - 1,
                              amount_cents = amount_cents + excluded.amount_cents;
END;

CREATE TRIGGER quarter_totals_stripe AFTER INSERT ON stripe_recharges
BEGIN
    INSERT INTO quarter_totals VALUES (
        substr(NEW.processed_at, 1, 14) || CASE WHEN substr(NEW.processed_at, 15, 2) < '15' THEN '00'
            WHEN substr(NEW.processed_at, 15, 2) < '30' THEN '15'
            WHEN substr(NEW.processed_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
        '', 'stripe', 'top_up', 'online', 1, NEW.amount_cents - NEW.refunded_cents)
    ON CONFLICT DO UPDATE SET operations = operations + 1,
                              amount_cents = amount_cents + excluded.amount_cents;
END;

CREATE TRIGGER quarter_totals_stripe_refund AFTER UPDATE OF refunded_cents ON stripe_recharges
WHEN NEW.refunded_cents <> OLD.refunded_cents
BEGIN
    INSERT INTO quarter_totals VALUES (
        substr(NEW.processed_at, 1, 14) || CASE WHEN substr(NEW.processed_at, 15, 2) < '15' THEN '00'
            WHEN substr(NEW.processed_at, 15, 2) < '30' THEN '15'
            WHEN substr(NEW.processed_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
        '', 'stripe', 'top_up', 'online', 0, OLD.refunded_cents - NEW.refunded_cents)
    ON CONFLICT DO UPDATE SET amount_cents = amount_cents + excluded.amount_cents;
END;

-- What the ledger holds already, summed once.
INSERT INTO quarter_totals
SELECT q, point_of_sale, source, kind, mode, SUM(operations), SUM(amount_cents)
  FROM (
    SELECT substr(o.created_at, 1, 14) || CASE WHEN substr(o.created_at, 15, 2) < '15' THEN '00'
               WHEN substr(o.created_at, 15, 2) < '30' THEN '15'
               WHEN substr(o.created_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z' AS q,
           o.point_of_sale, o.terminal_id AS source, 'sale' AS kind, o.mode, 1 AS operations,
           (SELECT COALESCE(SUM(COALESCE(i.net_cents, i.line_total_cents) + COALESCE(i.tax_cents, 0)), 0)
              FROM bar_order_items i
             WHERE i.transaction_id = o.transaction_id AND COALESCE(i.deposit, 0) = 0) AS amount_cents
      FROM bar_orders o WHERE o.voided_by IS NULL
    UNION ALL
    SELECT substr(r.created_at, 1, 14) || CASE WHEN substr(r.created_at, 15, 2) < '15' THEN '00'
               WHEN substr(r.created_at, 15, 2) < '30' THEN '15'
               WHEN substr(r.created_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
           r.point_of_sale, r.terminal_id, 'top_up', r.mode, 1, r.amount_cents
      FROM recharges r WHERE r.voided_by IS NULL
    UNION ALL
    SELECT substr(s.processed_at, 1, 14) || CASE WHEN substr(s.processed_at, 15, 2) < '15' THEN '00'
               WHEN substr(s.processed_at, 15, 2) < '30' THEN '15'
               WHEN substr(s.processed_at, 15, 2) < '45' THEN '30' ELSE '45' END || ':00.000Z',
           '', 'stripe', 'top_up', 'online', 1, s.amount_cents - s.refunded_cents
      FROM stripe_recharges s
  )
 GROUP BY 1, 2, 3, 4, 5;

-- The cards deepest in debt, read without a scan; a card's entry changes only while it is
-- in debt.
CREATE INDEX cards_in_debt ON cards (balance_cents, card_uid) WHERE balance_cents < 0;

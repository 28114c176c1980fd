-- cashless ledger schema, version 20 (PostgreSQL): today's takings without reading today's
-- operations.
--
-- Headquarters' overview shows the festival day's sales and top-ups per hour and per point
-- of sale, online against offline. Summing the day's orders at each look-up would read every
-- order of the day (hundreds of thousands by night). `quarter_totals` keeps the sums instead,
-- per quarter hour (by the time the terminal made the operation, `created_at`, as the
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
-- The triggers are per statement, over the statement's rows (transition tables): an order
-- pays one trigger for its row and one for its lines, however many, and a move from SQLite
-- (`COPY`, a thousand rows at a time) one per batch. They run at the end of the statement,
-- so the lines' trigger sees the order written by the same statement. A row is a terminal's
-- own (its source): terminals do not wait on each other's rows.
CREATE TABLE quarter_totals (
    quarter_start timestamptz NOT NULL,
    point_of_sale text NOT NULL,
    source        text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('sale', 'top_up')),
    mode          text NOT NULL CHECK (mode IN ('online', 'offline')),
    operations    bigint NOT NULL,
    amount_cents  bigint NOT NULL,
    PRIMARY KEY (quarter_start, point_of_sale, source, kind, mode)
);

-- The quarter hour a time is in (from the epoch, so the session's time zone plays no part).
CREATE FUNCTION quarter_of(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT to_timestamp(floor(extract(epoch FROM t) / 900) * 900) $$;

-- The sales part of a line: net plus tax, nothing for a deposit.
CREATE FUNCTION sale_cents(net bigint, line_total bigint, tax bigint, deposit boolean)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN COALESCE(deposit, false) THEN 0
                  ELSE COALESCE(net, line_total) + COALESCE(tax, 0) END $$;

CREATE FUNCTION quarter_totals_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'bar_orders' AND TG_OP = 'INSERT' THEN
        INSERT INTO quarter_totals
        SELECT quarter_of(n.created_at), n.point_of_sale, n.terminal_id::text, 'sale', n.mode,
               count(*), 0
          FROM added n WHERE n.voided_by IS NULL
         GROUP BY 1, 2, 3, 5
        ON CONFLICT ON CONSTRAINT quarter_totals_pkey DO UPDATE
           SET operations = quarter_totals.operations + excluded.operations;
    ELSIF TG_TABLE_NAME = 'bar_order_items' THEN
        INSERT INTO quarter_totals
        SELECT quarter_of(o.created_at), o.point_of_sale, o.terminal_id::text, 'sale', o.mode,
               0, sum(sale_cents(n.net_cents, n.line_total_cents, n.tax_cents, n.deposit))
          FROM added n JOIN bar_orders o ON o.transaction_id = n.transaction_id
         WHERE o.voided_by IS NULL
         GROUP BY 1, 2, 3, 5
        ON CONFLICT ON CONSTRAINT quarter_totals_pkey DO UPDATE
           SET amount_cents = quarter_totals.amount_cents + excluded.amount_cents;
    ELSIF TG_TABLE_NAME = 'recharges' AND TG_OP = 'INSERT' THEN
        INSERT INTO quarter_totals
        SELECT quarter_of(n.created_at), n.point_of_sale, n.terminal_id::text, 'top_up', n.mode,
               count(*), sum(n.amount_cents)
          FROM added n WHERE n.voided_by IS NULL
         GROUP BY 1, 2, 3, 5
        ON CONFLICT ON CONSTRAINT quarter_totals_pkey DO UPDATE
           SET operations = quarter_totals.operations + excluded.operations,
               amount_cents = quarter_totals.amount_cents + excluded.amount_cents;
    ELSIF TG_TABLE_NAME = 'stripe_recharges' AND TG_OP = 'INSERT' THEN
        INSERT INTO quarter_totals
        SELECT quarter_of(n.processed_at), '', 'stripe', 'top_up', 'online',
               count(*), sum(n.amount_cents - n.refunded_cents)
          FROM added n
         GROUP BY 1
        ON CONFLICT ON CONSTRAINT quarter_totals_pkey DO UPDATE
           SET operations = quarter_totals.operations + excluded.operations,
               amount_cents = quarter_totals.amount_cents + excluded.amount_cents;
    END IF;
    RETURN NULL;
END
$$;

-- Voids (voided_by set) and Stripe refunds (refunded_cents grown), from the rows before and
-- after the statement.
CREATE FUNCTION quarter_totals_take_back() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'bar_orders' THEN
        INSERT INTO quarter_totals
        SELECT quarter_of(n.created_at), n.point_of_sale, n.terminal_id::text, 'sale', n.mode,
               -count(*),
               -COALESCE(sum((SELECT sum(sale_cents(i.net_cents, i.line_total_cents,
                                                    i.tax_cents, i.deposit))
                                FROM bar_order_items i
                               WHERE i.transaction_id = n.transaction_id)), 0)
          FROM after_rows n JOIN before_rows b ON b.transaction_id = n.transaction_id
         WHERE b.voided_by IS NULL AND n.voided_by IS NOT NULL
         GROUP BY 1, 2, 3, 5
        ON CONFLICT ON CONSTRAINT quarter_totals_pkey DO UPDATE
           SET operations = quarter_totals.operations + excluded.operations,
               amount_cents = quarter_totals.amount_cents + excluded.amount_cents;
    ELSIF TG_TABLE_NAME = 'recharges' THEN
        INSERT INTO quarter_totals
        SELECT quarter_of(n.created_at), n.point_of_sale, n.terminal_id::text, 'top_up', n.mode,
               -count(*), -sum(n.amount_cents)
          FROM after_rows n JOIN before_rows b ON b.transaction_id = n.transaction_id
         WHERE b.voided_by IS NULL AND n.voided_by IS NOT NULL
         GROUP BY 1, 2, 3, 5
        ON CONFLICT ON CONSTRAINT quarter_totals_pkey DO UPDATE
           SET operations = quarter_totals.operations + excluded.operations,
               amount_cents = quarter_totals.amount_cents + excluded.amount_cents;
    ELSIF TG_TABLE_NAME = 'stripe_recharges' THEN
        INSERT INTO quarter_totals
        SELECT quarter_of(n.processed_at), '', 'stripe', 'top_up', 'online',
               0, sum(b.refunded_cents - n.refunded_cents)
          FROM after_rows n JOIN before_rows b ON b.transaction_id = n.transaction_id
         WHERE n.refunded_cents <> b.refunded_cents
         GROUP BY 1
        ON CONFLICT ON CONSTRAINT quarter_totals_pkey DO UPDATE
           SET amount_cents = quarter_totals.amount_cents + excluded.amount_cents;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER quarter_totals_order AFTER INSERT ON bar_orders
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION quarter_totals_add();
CREATE TRIGGER quarter_totals_order_line AFTER INSERT ON bar_order_items
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION quarter_totals_add();
CREATE TRIGGER quarter_totals_top_up AFTER INSERT ON recharges
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION quarter_totals_add();
CREATE TRIGGER quarter_totals_stripe AFTER INSERT ON stripe_recharges
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION quarter_totals_add();
CREATE TRIGGER quarter_totals_order_void AFTER UPDATE ON bar_orders
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION quarter_totals_take_back();
CREATE TRIGGER quarter_totals_top_up_void AFTER UPDATE ON recharges
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION quarter_totals_take_back();
CREATE TRIGGER quarter_totals_stripe_refund AFTER UPDATE ON stripe_recharges
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION quarter_totals_take_back();

-- What the ledger holds already, summed once.
INSERT INTO quarter_totals
SELECT q, point_of_sale, source, kind, mode, sum(operations), sum(amount_cents)
  FROM (
    SELECT quarter_of(o.created_at) AS q, o.point_of_sale, o.terminal_id::text AS source,
           'sale' AS kind, o.mode, 1 AS operations,
           COALESCE((SELECT sum(sale_cents(i.net_cents, i.line_total_cents, i.tax_cents,
                                           i.deposit))
                       FROM bar_order_items i WHERE i.transaction_id = o.transaction_id), 0)
               AS amount_cents
      FROM bar_orders o WHERE o.voided_by IS NULL
    UNION ALL
    SELECT quarter_of(r.created_at), r.point_of_sale, r.terminal_id::text, 'top_up', r.mode, 1,
           r.amount_cents
      FROM recharges r WHERE r.voided_by IS NULL
    UNION ALL
    SELECT quarter_of(s.processed_at), '', 'stripe', 'top_up', 'online', 1,
           s.amount_cents - s.refunded_cents
      FROM stripe_recharges s
  ) AS t
 GROUP BY 1, 2, 3, 4, 5;

-- The cards deepest in debt, read without a scan; a card's entry changes only while it is
-- in debt.
CREATE INDEX cards_in_debt ON cards (balance_cents, card_uid COLLATE "C") WHERE balance_cents < 0;

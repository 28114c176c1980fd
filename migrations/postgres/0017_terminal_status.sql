-- cashless ledger schema, version 17 (PostgreSQL): terminals report their state.
--
-- Each sync round that finds something changed (and at least every status interval) a
-- terminal posts its state to `POST /v1/terminals/me/status`; the last report of each
-- terminal is kept here, replaced by the next, for the headquarters' fleet page.
CREATE TABLE terminal_status (
    terminal_id         uuid PRIMARY KEY REFERENCES terminals (terminal_id),
    -- The ledger's clock when the report arrived: the last contact.
    received_at         timestamptz NOT NULL,
    -- The terminal's clock when it sent the report; minus received_at, its clock's offset.
    reported_at         timestamptz NOT NULL,
    waiting             bigint NOT NULL CHECK (waiting >= 0),
    in_doubt            bigint NOT NULL CHECK (in_doubt >= 0),
    rejected            bigint NOT NULL CHECK (rejected >= 0),
    oldest_unsent_age_s bigint CHECK (oldest_unsent_age_s >= 0),
    card_feed_cursor    text NOT NULL,
    reader_state        text NOT NULL
        CHECK (reader_state IN ('connected', 'waiting', 'disconnected', 'simulated')),
    software_version    text NOT NULL
);

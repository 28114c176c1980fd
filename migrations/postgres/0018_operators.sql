-- cashless ledger schema, version 18 (PostgreSQL): headquarters' operators and their
-- sessions.
--
-- People who use the headquarters pages (/hq/): `cashless ledger operator add` creates them
-- (an argon2id PHC string, never the password). Five wrong passwords in a row lock an
-- operator for a while (`locked_until`). A session is a random cookie value, kept only as
-- its SHA-256, with the CSRF token of its forms; sessions live in the database, so they
-- survive a restart and work across ledger processes.
CREATE TABLE operators (
    operator_id   uuid PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    role          text NOT NULL CHECK (role IN ('viewer', 'desk', 'admin')),
    password_hash text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    failed_logins bigint NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until  timestamptz,
    created_at    timestamptz NOT NULL
);

CREATE TABLE operator_sessions (
    session_sha256 text PRIMARY KEY,
    operator_id    uuid NOT NULL REFERENCES operators (operator_id),
    csrf_token     text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
-- Expired sessions are deleted oldest first, a few at each login.
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

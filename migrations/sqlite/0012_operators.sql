-- cashless ledger schema, version 12 (SQLite): headquarters' operators and their sessions.
--
-- People who use the headquarters pages (/hq/): `cashless ledger operator add` creates them
-- (an argon2id PHC string, never the password). Five wrong passwords in a row lock an
-- operator for a while (`locked_until`). A session is a random cookie value, kept only as
-- its SHA-256, with the CSRF token of its forms; sessions live in the database, so they
-- survive a restart and work across ledger processes.
CREATE TABLE operators (
    operator_id   TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'desk', 'admin')),
    password_hash TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    failed_logins INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until  TEXT,
    created_at    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE operator_sessions (
    session_sha256 TEXT PRIMARY KEY,
    operator_id    TEXT NOT NULL REFERENCES operators (operator_id),
    csrf_token     TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL
) WITHOUT ROWID;
-- Expired sessions are deleted oldest first, a few at each login.
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

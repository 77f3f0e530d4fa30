-- Dashboard sessions (controlplane/internal/ui). A session is created by
-- logging in with an API token; it lives in the database so that every
-- replica behind a load balancer accepts it.
--
-- Only the SHA-256 of the random session id (the cookie value) is stored,
-- as for API tokens. Each request joins the session to its API token and
-- principal (primary-key lookups), so revoking the token, or its expiry,
-- ends the sessions opened with it at once.
CREATE TABLE ui_sessions (
    id_hash       bytea PRIMARY KEY,
    principal_id  uuid NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
    token_id      uuid NOT NULL REFERENCES api_tokens(id) ON DELETE CASCADE,
    -- the principal's role at login; a session whose principal has
    -- another role now is refused
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    -- the synchroniser token every dashboard form carries
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL,
    -- sliding: moved forward while the session is used (12 h by default)
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
-- Purging expired sessions, and ending a token's sessions.
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
CREATE INDEX ui_sessions_token ON ui_sessions (token_id);

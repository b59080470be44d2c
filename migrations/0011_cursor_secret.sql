-- 0011: the secret that signs cursors.
--
-- Every cursor crmd hands out carries an HMAC under one secret that all
-- crmd processes of a deployment share (lib/list/cursor.c). Unless
-- CRMD_CURSOR_SECRET sets it, it lives here: the first crmd to start
-- inserts 32 random bytes (INSERT ... ON CONFLICT DO NOTHING), and every
-- crmd then reads the same row. Deleting the row invalidates every cursor
-- out there (readers get 422 and start again) once every crmd restarts.
CREATE TABLE cursor_secret (
    id         integer PRIMARY KEY CHECK (id = 1),
    secret     bytea NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- GET /v1/api-keys/{id}: the statement apikey_select in lib/auth.c (KEY_COLUMNS
-- expanded), on a random id among the generated keys (-D key_first=... -D key_last=...).
-- Authenticating the request costs no query: the key is in crmd's cache.
\set id random(:key_first, :key_last)
SELECT id, name, prefix, array_to_json(scopes)::text, (extract(epoch FROM created_at) * 1000)::bigint, (extract(epoch FROM revoked_at) * 1000)::bigint FROM api_keys WHERE id = :id;

-- GET /v1/api-keys?limit=50: the statement apikey_list in lib/auth.c
-- (KEY_COLUMNS expanded) as crmd runs it for the first page: after id 0,
-- limit + 1 rows (the extra row tells whether a next page exists).
\set after 0
\set limit 51
SELECT id, name, prefix, array_to_json(scopes)::text, (extract(epoch FROM created_at) * 1000)::bigint, (extract(epoch FROM revoked_at) * 1000)::bigint FROM api_keys WHERE id > :after ORDER BY id LIMIT :limit;

-- GET /v1/customers?q=ferrari&limit=50: the statement lib/customer_list.c
-- assembles at run time for q (LIKE-escaped; "ferrari" has nothing to
-- escape) and the default sort (created_at), first page: limit + 1 rows.
-- bench-sql: runtime
-- bench-define: q=ferrari
\set limit 51
SELECT c.id, c.version, c.kind, c.status, c.merged_into, c.first_name, c.last_name, c.display_name, c.company, c.email, c.phone, c.country, c.region, c.city, c.postal_code, c.street, c.latitude, c.longitude, to_char(c.birth_date, 'YYYY-MM-DD'), c.preferred_language, c.lifecycle_stage, array_to_json(c.tags)::text, c.attributes::text, (extract(epoch FROM c.created_at) * 1000)::bigint, (extract(epoch FROM c.updated_at) * 1000)::bigint, (extract(epoch FROM c.created_at) * 1000000)::bigint FROM customers c WHERE c.status = 'active' AND c.search_text LIKE '%' || lower(:q) || '%' ORDER BY c.created_at, c.id LIMIT :limit::int;

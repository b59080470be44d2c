-- GET /v1/customers?q=ferrari&limit=50: the statement lib/customer_list.c
-- assembles at run time for a search in the default sort (created_at): it
-- finds the words of the search index that "ferrari" begins (just "ferrari"
-- in the generated data) and, there being one, reads limit + 1 rows from its
-- index range in the same statement.
-- bench-sql: runtime
-- bench-define: q=ferrari
\set prefix_terms_max 16
\set limit 51
WITH RECURSIVE t (term, n) AS (  (SELECT term, 1 FROM customer_search_terms WHERE term >= lower(:q) ORDER BY term LIMIT 1)  UNION ALL  SELECT s.term, t.n + 1 FROM t CROSS JOIN LATERAL (SELECT x.term FROM    customer_search_terms x WHERE x.term > t.term ORDER BY x.term LIMIT 1) s  WHERE t.n <= :prefix_terms_max::int AND starts_with(t.term, lower(:q))), terms AS (SELECT json_agg(term) AS list FROM t WHERE starts_with(term, lower(:q))) SELECT terms.list::text AS search_terms, p.* FROM terms LEFT JOIN LATERAL (SELECT c.id, c.version, c.kind, c.status, c.merged_into, c.first_name, c.last_name, c.display_name, c.company, c.email, c.phone, c.country, c.region, c.city, c.postal_code, c.street, c.latitude, c.longitude, c.birth_date, c.preferred_language, c.lifecycle_stage, c.tags, c.attributes::text, (date_part('epoch', c.created_at) * 1000)::bigint, (date_part('epoch', c.updated_at) * 1000)::bigint, (date_part('epoch', c.created_at) * 1000000)::bigint AS sort_key FROM ((SELECT x.created_at, x.customer_id FROM customer_search_terms x WHERE x.term = (terms.list ->> 0) AND json_array_length(terms.list) = 1)) h JOIN customers c ON c.id = h.customer_id WHERE c.status = 'active' ORDER BY h.created_at, h.customer_id LIMIT :limit::int) p ON true ORDER BY p.sort_key, p.id;

-- GET /v1/customers?q=ferrari&limit=50: the statement lib/customers/list.c
-- assembles at run time for a search in the default sort (created_at):
-- "ferrari" is a word of the search index that begins no other word, so
-- the page is read from its own index range, limit + 1 rows, with one more
-- index probe to make sure no longer word begins with it.
-- bench-sql: runtime
-- bench-define: q=ferrari
\set limit 51
SELECT true AS exact_term, c.id, c.version, c.kind, c.status, c.merged_into, c.first_name, c.last_name, c.display_name, c.company, c.email, c.phone, c.country, c.region, c.city, c.postal_code, c.street, c.latitude, c.longitude, c.birth_date, c.preferred_language, c.lifecycle_stage, c.tags, c.attributes::text, c.created_at, c.updated_at FROM ((SELECT x.created_at, x.customer_id FROM customer_search_terms x WHERE x.term = lower(:q) AND NOT EXISTS (SELECT 1 FROM (SELECT z.term FROM customer_search_terms z WHERE z.term > lower(:q) ORDER BY z.term LIMIT 1) z WHERE starts_with(z.term, lower(:q))))) h JOIN customers c ON c.id = h.customer_id WHERE c.status = 'active' ORDER BY h.created_at, h.customer_id LIMIT :limit::int;

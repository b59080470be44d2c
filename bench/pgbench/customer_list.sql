-- GET /v1/customers?country=IT&lifecycle_stage=customer&limit=50: the
-- statement lib/customers/list.c assembles at run time for these two filters
-- and the default sort (created_at), first page: limit + 1 rows. crmd
-- prepares it once per connection (one statement per filter shape).
-- bench-sql: runtime
-- bench-define: country=IT lifecycle_stage=customer
\set limit 51
SELECT c.id, c.version, c.kind, c.status, c.merged_into, c.first_name, c.last_name, c.display_name, c.company, c.email, c.phone, c.country, c.region, c.city, c.postal_code, c.street, c.latitude, c.longitude, c.birth_date, c.preferred_language, c.lifecycle_stage, c.tags, c.attributes::text, c.created_at, c.updated_at FROM customers c WHERE c.status = 'active' AND c.country = :country AND c.lifecycle_stage = :lifecycle_stage ORDER BY c.created_at, c.id LIMIT :limit::int;

-- GET /v1/customers/{id}: the statement customer_get in lib/customers/customers.c
-- (CRM_CUSTOMER_COLUMNS of lib/customers/internal.h expanded), on a random id
-- among the generated customers. The compiler joins the literals into this
-- one string, which is how the runner finds it in the binary.
\set id random(:customer_first, :customer_last)
SELECT c.id, c.version, c.kind, c.status, c.merged_into, c.first_name, c.last_name, c.display_name, c.company, c.email, c.phone, c.country, c.region, c.city, c.postal_code, c.street, c.latitude, c.longitude, c.birth_date, c.preferred_language, c.lifecycle_stage, c.tags, c.attributes::text, c.created_at, c.updated_at FROM customers c WHERE c.id = :id;

/*
 * customers/internal.h — what the customer files of lib/ (lib/customers/,
 * consents.c, sync.c, touchpoints/) share: the column lists of customer
 * statements, the SQL that follows merges, and the representation built
 * from a row. Not for use outside lib/.
 */
#ifndef CRM_CUSTOMERS_INTERNAL_H
#define CRM_CUSTOMERS_INTERNAL_H

#include "jbuf.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

/* Timestamps, the birth date and the tags travel as PostgreSQL prints them
 * (connections use DateStyle ISO and TimeZone UTC; the tags as an array
 * literal, {a,"b c"}), the cheapest forms to produce, and are rewritten in
 * C. */
#define CRM_CUSTOMER_COLUMNS                                                                       \
    "c.id, c.version, c.kind, c.status, c.merged_into, c.first_name, c.last_name, "                \
    "c.display_name, c.company, c.email, c.phone, c.country, c.region, c.city, c.postal_code, "    \
    "c.street, c.latitude, c.longitude, c.birth_date, "                                            \
    "c.preferred_language, c.lifecycle_stage, c.tags, c.attributes::text, "                        \
    "c.created_at, c.updated_at"

/* The columns a write sets, in the order of the $1..$21 parameters. */
#define CRM_CUSTOMER_VALUE_COLUMNS                                                                \
    "kind, first_name, last_name, display_name, company, email, email_normalized, phone, "        \
    "phone_normalized, country, region, city, postal_code, street, latitude, longitude, "         \
    "birth_date, preferred_language, lifecycle_stage, tags, attributes"
#define CRM_CUSTOMER_VALUE_PARAMS                                                                 \
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::float8, $16::float8, "      \
    "$17::date, $18, $19, ARRAY(SELECT jsonb_array_elements_text($20::jsonb)), $21::jsonb"

/* CTEs naming `target`: the active customer that $1 names, following
 * merged_into from merged customers (a bounded walk, so a cycle cannot loop).
 * Follow with ", <more CTEs>" or " SELECT ...". */
#define CRM_SQL_RESOLVE_CUSTOMER                                                                  \
    "WITH RECURSIVE chain (id, status, merged_into, depth) AS ("                                  \
    "  SELECT id, status, merged_into, 0 FROM customers WHERE id = $1"                            \
    "  UNION ALL"                                                                                 \
    "  SELECT c.id, c.status, c.merged_into, chain.depth + 1"                                     \
    "  FROM chain JOIN customers c ON c.id = chain.merged_into"                                   \
    "  WHERE chain.status = 'merged' AND chain.depth < 16), "                                     \
    "target AS (SELECT id FROM chain WHERE status = 'active' LIMIT 1)"

/* An extra column: the customer's external ids as a JSON array text. */
#define CRM_CUSTOMER_EXTERNAL_IDS                                                                 \
    "(SELECT coalesce(json_agg(json_build_object('source', x.source, 'id', x.external_id) "       \
    "ORDER BY x.source, x.external_id), '[]')::text FROM customer_external_ids x "                \
    "WHERE x.customer_id = c.id)"

enum {
    CRM_COL_ID,
    CRM_COL_VERSION,
    CRM_COL_KIND,
    CRM_COL_STATUS,
    CRM_COL_MERGED_INTO,
    CRM_COL_FIRST_NAME, /* then last_name, display_name, company, email, phone */
    CRM_COL_COUNTRY = CRM_COL_FIRST_NAME + 6,
    CRM_COL_REGION,
    CRM_COL_CITY,
    CRM_COL_POSTAL_CODE,
    CRM_COL_STREET,
    CRM_COL_LATITUDE,
    CRM_COL_LONGITUDE,
    CRM_COL_BIRTH_DATE,
    CRM_COL_LANGUAGE,
    CRM_COL_LIFECYCLE_STAGE,
    CRM_COL_TAGS,
    CRM_COL_ATTRIBUTES,
    CRM_COL_CREATED_AT,
    CRM_COL_UPDATED_AT,
    CRM_COL_EXTRA, /* external ids, or a list's sort key */
};

/* Writes the representation of row r; with external_ids, column
 * CRM_COL_EXTRA holds them. The one place that says what a customer looks
 * like in JSON. */
void crm_customer_write(crm_jbuf *b, const PGresult *res, int r, bool external_ids);

/* The same for a row whose customer columns start at column c0. */
void crm_customer_write_at(crm_jbuf *b, const PGresult *res, int r, int c0, bool external_ids);

/* The same representation as a Jansson value, for code that works on it.
 * The caller owns the result (NULL when memory ran out). */
json_t *crm_customer_from_row(const PGresult *res, int r, bool external_ids);

/* Parses JSON text that PostgreSQL produced (numbers too large for an
 * int64 become reals). NULL when it does not parse. */
json_t *crm_json_load_stored(const char *text);

/* The members a client may write: a deep copy of rep without id, version,
 * timestamps and external_ids. The caller owns the result. */
json_t *crm_customer_writable_part(json_t *rep);

/* The live customer that id names, following merges, read on c. */
json_t *crm_customer_get_on(crm_conn *c, long long id, bool external_ids, crm_error *err);

#endif

/*
 * customers_internal.h — what customers.c and customer_list.c share: the
 * column list every customer statement returns and the representation
 * built from it. Not for use outside lib/.
 */
#ifndef CRM_CUSTOMERS_INTERNAL_H
#define CRM_CUSTOMERS_INTERNAL_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

/* Timestamps travel as epoch milliseconds and are formatted in C. */
#define CRM_CUSTOMER_COLUMNS                                                                      \
    "c.id, c.version, c.kind, c.status, c.merged_into, c.first_name, c.last_name, "               \
    "c.display_name, c.company, c.email, c.phone, c.country, c.region, c.city, c.postal_code, "   \
    "c.street, c.latitude, c.longitude, to_char(c.birth_date, 'YYYY-MM-DD'), "                     \
    "c.preferred_language, c.lifecycle_stage, array_to_json(c.tags)::text, c.attributes::text, "  \
    "(extract(epoch FROM c.created_at) * 1000)::bigint, "                                          \
    "(extract(epoch FROM c.updated_at) * 1000)::bigint"

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
    CRM_COL_CREATED_MS,
    CRM_COL_UPDATED_MS,
    CRM_COL_EXTRA, /* external ids, or a list's sort key */
};

/* The representation of row r; with external_ids, column CRM_COL_EXTRA
 * holds them. The caller owns the result. */
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

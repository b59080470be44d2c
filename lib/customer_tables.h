/*
 * customer_tables.h — the one registry of the tables that hold a customer
 * id, and what merge, erasure and export do with each one's rows.
 *
 * Merging (customers/merge.c), erasing and exporting (customers/privacy.c)
 * walk this list instead of each keeping its own: a table that attaches rows
 * to a customer (segment memberships, campaign contacts, ...) is added here
 * once, with a decision for each of the three, and a unit test
 * (test_customer_tables.c) fails while a table of the schema with a
 * customer_id column, or a foreign key to customers, is missing from it.
 *
 * Every step runs inside its caller's transaction on c. ids and the
 * other id lists are PostgreSQL bigint array literals ("{1,2}").
 */
#ifndef CRM_CUSTOMER_TABLES_H
#define CRM_CUSTOMER_TABLES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "db.h"
#include "error.h"

/* What a merge step works on. */
typedef struct crm_merge_step {
    crm_conn *c;
    const char *survivor; /* its id, as text */
    const char *merged;   /* the merged customers' ids */
    const char *parties;  /* the survivor's and the merged customers' ids */
    const char *api_key;  /* the key's id as text, or NULL */
    json_t *changes;      /* what moved, for the survivor's audit row ({"x": {"from", "to"}}) */
} crm_merge_step;

/* What an export step works on. */
typedef struct crm_export_step {
    crm_conn *c;
    long long target; /* the person's customer (the survivor of the others) */
    const char *ids;  /* target and every customer merged into it */
    FILE *out;        /* the export document: the step writes its member(s),
                         each as ,"name":value (members come before) */
} crm_export_step;

typedef struct crm_customer_table {
    const char *name;   /* the table */
    const char *column; /* its column holding the customer id */
    /* What happens to its rows, in words; a NULL step below means the rows
     * are left as they are (the words say why). */
    const char *merge, *erase, *export;
    bool (*on_merge)(const crm_merge_step *m, crm_error *err);
    bool (*on_erase)(crm_conn *c, const char *ids, crm_error *err);
    bool (*on_export)(const crm_export_step *x, crm_error *err);
} crm_customer_table;

/* In the order merge, erasure and export take them (consents before the
 * rest: a merge revokes where the parties disagree before moving history). */
extern const crm_customer_table crm_customer_tables[];
extern const size_t crm_customer_tables_count;

/* The registry's entry for table, or NULL. */
const crm_customer_table *crm_customer_table_find(const char *table);

#endif

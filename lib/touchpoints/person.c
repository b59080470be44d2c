/*
 * touchpoints/person.c — a person's touchpoints for the customer files:
 * exported (right of access), erased (right to erasure: the free text goes)
 * and moved to the survivor of a merge.
 */
#include "touchpoints.h"
#include "customers/internal.h"
#include "touchpoints/internal.h"

#include <stdlib.h>

/* ---- a person's touchpoints (export, erasure, merge) ------------------------------ */

static crm_stmt export_touchpoints = CRM_STMT_RO(
    "touchpoint_export", "SELECT " TP_COLUMNS " FROM touchpoints t"
                         " WHERE t.customer_id = ANY($1::bigint[]) ORDER BY t.occurred_at, t.id");

/* Free text and properties may say anything about the person: they go. The
 * scores, kinds, amounts and items stay, for anonymous aggregates. */
static crm_stmt erase_touchpoints =
    CRM_STMT("touchpoint_erase",
             "UPDATE touchpoints SET feedback = feedback - 'text', properties = '{}', erased = true"
             " WHERE customer_id = ANY($1::bigint[])");

static crm_stmt move_touchpoints =
    CRM_STMT("touchpoint_move",
             "UPDATE touchpoints SET customer_id = $1 WHERE customer_id = ANY($2::bigint[])");

json_t *crm_touchpoints_export(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    PGresult *res = crm_db_exec(c, &export_touchpoints, 1, params, err);
    if (res == NULL)
        return NULL;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    for (int r = 0; r < PQntuples(res); r++)
        crm_touchpoint_write(&b, res, r, 0);
    crm_jbuf_end_array(&b);
    PQclear(res);
    char *text = crm_jbuf_take(&b, NULL);
    json_t *list = text ? crm_json_load_stored(text) : NULL;
    free(text);
    if (list == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return list;
}

bool crm_touchpoints_erase(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    PGresult *res = crm_db_exec(c, &erase_touchpoints, 1, params, err);
    PQclear(res);
    return res != NULL;
}

bool crm_touchpoints_move(crm_conn *c, const char *survivor, const char *ids, crm_error *err)
{
    const char *params[] = {survivor, ids};
    PGresult *res = crm_db_exec(c, &move_touchpoints, 2, params, err);
    PQclear(res);
    return res != NULL;
}

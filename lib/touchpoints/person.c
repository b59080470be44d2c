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

typedef struct tp_export {
    FILE *out;
    crm_jbuf b;
    bool any;
} tp_export;

static bool export_row(const PGresult *res, void *ctx, crm_error *err)
{
    tp_export *x = ctx;
    crm_touchpoint_write(&x->b, res, 0, 0);
    size_t len = 0;
    char *text = crm_jbuf_take(&x->b, &len);
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (x->any)
        fputc(',', x->out);
    x->any = true;
    fwrite(text, 1, len, x->out);
    free(text);
    return true;
}

bool crm_touchpoints_export_write(crm_conn *c, const char *ids, FILE *out, crm_error *err)
{
    tp_export x = {.out = out};
    crm_jbuf_init(&x.b);
    fputc('[', out);
    const char *params[] = {ids};
    bool ok = crm_db_each_row(c, &export_touchpoints, 1, params, export_row, &x, err);
    fputc(']', out);
    crm_jbuf_free(&x.b);
    return ok;
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

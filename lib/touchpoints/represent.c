/*
 * touchpoints/represent.c — a stored touchpoint as JSON (the one writer that
 * the single read, the export, the timeline and the sync feed share), and
 * reading one touchpoint by id.
 */
#include "touchpoints.h"
#include "touchpoints/internal.h"

#include <stdlib.h>

/* ---- the representation ------------------------------------------------------ */

static void write_column(crm_jbuf *b, const PGresult *res, int r, int c, bool json)
{
    if (PQgetisnull(res, r, c))
        crm_jbuf_null(b);
    else if (json)
        crm_jbuf_raw(b, PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
    else
        crm_jbuf_string(b, PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
}

/* Writes the touchpoint whose TP_COLUMNS start at column c0 of row r. */
static void write_touchpoint(crm_jbuf *b, const PGresult *res, int r, int c0)
{
    static const struct {
        const char *name;
        char kind; /* j: JSON or a number as PostgreSQL prints it, s: string, t: time, b: bool,
                      o: a string shown only when set */
    } cols[TP_NCOLUMNS] = {
        {"id", 'j'},        {"customer_id", 'j'}, {"channel", 's'},     {"type", 's'},
        {"direction", 's'}, {"occurred_at", 't'}, {"received_at", 't'}, {"source", 's'},
        {"event_id", 's'},  {"campaign_id", 's'}, {"amount", 'j'},      {"currency", 's'},
        {"items", 'j'},     {"feedback", 'j'},    {"properties", 'j'},  {"erased", 'b'},
        {"purpose", 'o'},   {"offer_code", 'o'},
    };
    crm_jbuf_begin_object(b);
    for (int i = 0; i < TP_NCOLUMNS; i++) {
        int c = c0 + i;
        if (cols[i].kind == 'o' && PQgetisnull(res, r, c))
            continue;
        crm_jbuf_key(b, cols[i].name);
        if (cols[i].kind == 't' && !PQgetisnull(res, r, c))
            crm_jbuf_timestamp(b, atoll(PQgetvalue(res, r, c)));
        else if (cols[i].kind == 'b')
            crm_jbuf_bool(b, PQgetvalue(res, r, c)[0] == 't');
        else
            write_column(b, res, r, c, cols[i].kind == 'j');
    }
    crm_jbuf_end_object(b);
}

const char *crm_touchpoint_columns(int *ncolumns)
{
    *ncolumns = TP_NCOLUMNS;
    return TP_COLUMNS;
}

void crm_touchpoint_write(crm_jbuf *b, const PGresult *res, int r, int c0)
{
    write_touchpoint(b, res, r, c0);
}

static crm_stmt get_touchpoint =
    CRM_STMT_RO("touchpoint_get", "SELECT " TP_COLUMNS " FROM touchpoints t WHERE t.id = $1");

void crm_touchpoint_get_query(crm_query *q, long long id)
{
    crm_query_init(q, &get_touchpoint);
    crm_query_add_int(q, id);
}

char *crm_touchpoint_get_render(const PGresult *res, size_t *len, crm_error *err)
{
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no touchpoint with this id");
        return NULL;
    }
    crm_jbuf b;
    crm_jbuf_init(&b);
    write_touchpoint(&b, res, 0, 0);
    char *text = crm_jbuf_take(&b, len);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}

/*
 * page.c — filters as data, the limit + 1 fetch, the page envelope (see
 * page.h).
 */
#include "list/page.h"

#include <stdio.h>
#include <stdlib.h>

void crm_list_add_filters(crm_sqlbuf *s, const crm_list_filter *filters, size_t n,
                          const char *const *values)
{
    for (size_t i = 0; i < n; i++) {
        if (values[i] == NULL)
            continue;
        crm_sqlbuf_append(s, " AND ");
        crm_sqlbuf_append(s, filters[i].before);
        crm_sqlbuf_bind(s, values[i]);
        crm_sqlbuf_append(s, filters[i].after);
    }
}

int crm_page_fetch(int limit)
{
    return (limit < 1 ? 1 : limit) + 1;
}

int crm_page_shown(int nrows, int limit)
{
    if (limit < 1)
        limit = 1;
    return nrows < limit ? nrows : limit;
}

bool crm_page_has_next(int nrows, int limit)
{
    return nrows > (limit < 1 ? 1 : limit);
}

json_t *crm_page_of_rows(PGresult *res, int limit, crm_page_row_fn row, int key_col,
                         long long *next_after)
{
    int n = PQntuples(res), shown = crm_page_shown(n, limit);
    json_t *data = json_array();
    for (int r = 0; r < shown; r++)
        json_array_append_new(data, row(res, r));
    *next_after = crm_page_has_next(n, limit) ? atoll(PQgetvalue(res, shown - 1, key_col)) : 0;
    PQclear(res);
    return json_pack("{s:o}", "data", data);
}

json_t *crm_row_by_id(crm_conn *c, crm_stmt *stmt, long long id, crm_page_row_fn row,
                      const char *not_found, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGresult *res =
        c != NULL ? crm_db_exec(c, stmt, 1, params, err) : crm_db_run(stmt, 1, params, err);
    if (res == NULL)
        return NULL;
    json_t *doc = NULL;
    if (PQntuples(res) != 1)
        crm_error_set(err, CRM_E_NOT_FOUND, "%s", not_found);
    else if ((doc = row(res, 0)) == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    PQclear(res);
    return doc;
}

void crm_page_begin(crm_jbuf *b)
{
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "data");
    crm_jbuf_begin_array(b);
}

void crm_page_end(crm_jbuf *b, const crm_cursor *next)
{
    crm_jbuf_end_array(b);
    crm_jbuf_key(b, "next_cursor");
    if (next != NULL)
        crm_cursor_write(b, next);
    else
        crm_jbuf_null(b);
    crm_jbuf_end_object(b);
}

/*
 * page.c — filters as data, the limit + 1 fetch, the page envelope (see
 * page.h).
 */
#include "list/page.h"

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

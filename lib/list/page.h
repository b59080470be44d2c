/*
 * page.h — what every keyset list shares besides its cursor and its SQL:
 * filters declared as data, the "limit + 1" fetch that tells whether a
 * next page exists, and the {"data": [...], "next_cursor": ...} envelope.
 *
 * A list declares its filters once, as a table of crm_list_filter rows
 * (the query parameter, and the SQL around its value's placeholder); the
 * builder turns the ones present into " AND ..." conditions with their
 * values as parameters. Segments and rules will add their compiled
 * conditions to the same builder.
 */
#ifndef CRM_LIST_PAGE_H
#define CRM_LIST_PAGE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "error.h"
#include "jbuf.h"
#include "list/cursor.h"
#include "list/sqlbuf.h"

/* One filter of a list: ?name=value becomes " AND <before>$n<after>". */
typedef struct crm_list_filter {
    const char *name;   /* the query parameter, for errors */
    const char *before; /* constant SQL before the value's placeholder */
    const char *after;  /* constant SQL after it ("" for none) */
} crm_list_filter;

/* Appends the condition of every filter whose value (values[i], borrowed,
 * checked before) is not NULL, in the table's order. */
void crm_list_add_filters(crm_sqlbuf *s, const crm_list_filter *filters, size_t n,
                          const char *const *values);

/* The rows a page of limit (at least 1) fetches: one more than it shows,
 * so that the extra row tells whether a next page exists. */
int crm_page_fetch(int limit);

/* How many of nrows fetched a page of limit shows, and whether there is a
 * page after it (then the cursor continues after the last one shown). */
int crm_page_shown(int nrows, int limit);
bool crm_page_has_next(int nrows, int limit);

/* A page from the rows a statement fetched (crm_page_fetch(limit) at most,
 * in the page's order), which it takes (and clears): {"data": [row(res, r)
 * for each row shown]}; *next_after gets the number in column key_col of
 * the last row shown when a next page exists, else 0. */
typedef json_t *(*crm_page_row_fn)(const PGresult *res, int row);
json_t *crm_page_of_rows(PGresult *res, int limit, crm_page_row_fn row, int key_col,
                         long long *next_after);

/* The one row stmt finds for id (its $1), on c (NULL: a connection of the
 * pool's), rendered by row; CRM_E_NOT_FOUND with not_found when there is
 * none. */
json_t *crm_row_by_id(crm_conn *c, crm_stmt *stmt, long long id, crm_page_row_fn row,
                      const char *not_found, crm_error *err);

/* Opens {"data": [ ... */
void crm_page_begin(crm_jbuf *b);

/* ... ], "next_cursor": next (or null when NULL)} */
void crm_page_end(crm_jbuf *b, const crm_cursor *next);

#endif

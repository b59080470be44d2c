/*
 * copytext.h — writes rows in PostgreSQL's COPY text format.
 *
 * Columns are separated by a tab and rows end with a newline; NULL is \N;
 * in a value, backslash, tab, newline and carriage return are escaped with a
 * backslash, and every other byte (UTF-8 included) is copied as it is:
 *
 *     crm_copybuf b;
 *     crm_copy_init(&b);
 *     crm_copy_int(&b, 42);
 *     crm_copy_cstring(&b, "a\tb");
 *     crm_copy_end_row(&b);
 *     size_t len;
 *     char *rows = crm_copy_take(&b, &len);   (NULL when memory ran out)
 *
 * Values must not hold a NUL byte (PostgreSQL's text cannot).
 */
#ifndef CRM_COPYTEXT_H
#define CRM_COPYTEXT_H

#include "bytebuf.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct crm_copybuf {
    crm_bytebuf out; /* failed: memory ran out */
    bool in_row;     /* a column of the current row was written */
} crm_copybuf;

void crm_copy_init(crm_copybuf *b);

/* Frees what b holds (not needed after crm_copy_take). */
void crm_copy_free(crm_copybuf *b);

/* The rows, NUL-terminated, owned by the caller; NULL when writing failed
 * or nothing was written. b is empty afterwards. len may be NULL. */
char *crm_copy_take(crm_copybuf *b, size_t *len);

/* The next column: len bytes of s, or NULL for SQL NULL. */
void crm_copy_text(crm_copybuf *b, const char *s, size_t len);
void crm_copy_cstring(crm_copybuf *b, const char *s); /* NULL writes NULL */
void crm_copy_int(crm_copybuf *b, long long v);

void crm_copy_end_row(crm_copybuf *b);

#endif

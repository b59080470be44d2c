/*
 * copytext.c — rows in PostgreSQL's COPY text format (see copytext.h).
 */
#include "copytext.h"

#include <stdio.h>
#include <string.h>

void crm_copy_init(crm_copybuf *b)
{
    memset(b, 0, sizeof *b);
}

void crm_copy_free(crm_copybuf *b)
{
    crm_bytebuf_free(&b->out);
    crm_copy_init(b);
}

char *crm_copy_take(crm_copybuf *b, size_t *len)
{
    char *text = crm_bytebuf_take(&b->out, len);
    crm_copy_init(b);
    return text;
}

static void put(crm_copybuf *b, const char *s, size_t n)
{
    crm_bytebuf_put(&b->out, s, n);
}

/* The separator before a column that is not the row's first. */
static void next_column(crm_copybuf *b)
{
    if (b->in_row)
        put(b, "\t", 1);
    b->in_row = true;
}

/* The escape of a byte that COPY's text format gives a meaning, or 0. */
static char escape_of(unsigned char c)
{
    switch (c) {
    case '\\':
        return '\\';
    case '\t':
        return 't';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    default:
        return 0;
    }
}

void crm_copy_text(crm_copybuf *b, const char *s, size_t len)
{
    next_column(b);
    if (s == NULL) {
        put(b, "\\N", 2);
        return;
    }
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        char e = escape_of((unsigned char)s[i]);
        if (e == 0)
            continue;
        put(b, s + start, i - start); /* the plain run before it */
        char pair[2] = {'\\', e};
        put(b, pair, 2);
        start = i + 1;
    }
    put(b, s + start, len - start);
}

void crm_copy_cstring(crm_copybuf *b, const char *s)
{
    crm_copy_text(b, s, s ? strlen(s) : 0);
}

void crm_copy_int(crm_copybuf *b, long long v)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%lld", v);
    crm_copy_text(b, digits, (size_t)n);
}

void crm_copy_end_row(crm_copybuf *b)
{
    put(b, "\n", 1);
    b->in_row = false;
}

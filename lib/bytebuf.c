/*
 * bytebuf.c — a growing buffer of bytes (see bytebuf.h).
 */
#include "bytebuf.h"

#include <stdlib.h>
#include <string.h>

void crm_bytebuf_init(crm_bytebuf *b)
{
    memset(b, 0, sizeof *b);
}

void crm_bytebuf_free(crm_bytebuf *b)
{
    free(b->data);
    crm_bytebuf_init(b);
}

bool crm_bytebuf_grow(crm_bytebuf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL) {
        b->failed = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

char *crm_bytebuf_take(crm_bytebuf *b, size_t *len)
{
    char *text = NULL;
    if (!b->failed && b->data != NULL) {
        text = b->data;
        text[b->len] = '\0'; /* reserve always leaves room for it */
        if (len != NULL)
            *len = b->len;
        b->data = NULL;
    }
    crm_bytebuf_free(b);
    return text;
}

void crm_bytebuf_put_array_item(crm_bytebuf *b, const char *v, bool first)
{
    if (!first)
        crm_bytebuf_put_char(b, ',');
    if (v == NULL) {
        crm_bytebuf_put(b, "NULL", 4);
        return;
    }
    crm_bytebuf_put_char(b, '"');
    for (const char *s = v; *s; s++) {
        if (*s == '"' || *s == '\\')
            crm_bytebuf_put_char(b, '\\');
        crm_bytebuf_put_char(b, *s);
    }
    crm_bytebuf_put_char(b, '"');
}

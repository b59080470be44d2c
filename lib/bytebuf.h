/*
 * bytebuf.h — a growing buffer of bytes, always with room for a
 * terminating NUL: what the JSON writer (jbuf.h) and the COPY writer
 * (copytext.h) write into.
 *
 * When memory runs out the buffer remembers it (failed) and ignores later
 * writes, so a writer checks once, at the end, when it takes the bytes.
 */
#ifndef CRM_BYTEBUF_H
#define CRM_BYTEBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct crm_bytebuf {
    char *data;
    size_t len, cap;
    bool failed; /* memory ran out (or the writer gave up): take gives NULL */
} crm_bytebuf;

void crm_bytebuf_init(crm_bytebuf *b);

/* Frees what b holds; b is empty afterwards. */
void crm_bytebuf_free(crm_bytebuf *b);

/* The slow half of crm_bytebuf_reserve: grows the buffer. */
bool crm_bytebuf_grow(crm_bytebuf *b, size_t n);

/* Room for n more bytes and a NUL at data + len; false when memory ran out
 * (now or before). Inline: the writers call it for every token. */
static inline bool crm_bytebuf_reserve(crm_bytebuf *b, size_t n)
{
    return (!b->failed && b->len + n + 1 <= b->cap) || crm_bytebuf_grow(b, n);
}

static inline void crm_bytebuf_put(crm_bytebuf *b, const char *s, size_t n)
{
    if (crm_bytebuf_reserve(b, n)) {
        memcpy(b->data + b->len, s, n);
        b->len += n;
    }
}

static inline void crm_bytebuf_put_char(crm_bytebuf *b, char c)
{
    if (crm_bytebuf_reserve(b, 1))
        b->data[b->len++] = c;
}

/* Appends v as one element of a PostgreSQL array literal being written
 * ("{" ... "}"): a comma first unless first, then NULL for a NULL v, else
 * v in double quotes with '"' and '\\' escaped. */
void crm_bytebuf_put_array_item(crm_bytebuf *b, const char *v, bool first);

/* The bytes, NUL-terminated, owned by the caller; NULL when writing failed
 * or nothing was written. b is empty afterwards. len may be NULL. */
char *crm_bytebuf_take(crm_bytebuf *b, size_t *len);

#endif

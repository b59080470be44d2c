/*
 * jbuf.h — writes JSON text straight into a growing buffer.
 *
 * The hot responses (a customer, a page of fifty) are rows of text that
 * PostgreSQL already produced; building a Jansson tree of them only to print
 * it again cost more CPU than the query. A crm_jbuf prints values in order
 * and places the commas itself:
 *
 *     crm_jbuf b;
 *     crm_jbuf_init(&b);
 *     crm_jbuf_begin_object(&b);
 *     crm_jbuf_key(&b, "id");
 *     crm_jbuf_int(&b, 42);
 *     crm_jbuf_end_object(&b);
 *     size_t len;
 *     char *text = crm_jbuf_take(&b, &len);   (NULL when memory ran out)
 *
 * Strings are escaped as RFC 8259 requires (quote, backslash, control
 * characters); other bytes, UTF-8 included, are copied as they are. Reals are
 * printed with the fewest digits that read back to the same double.
 */
#ifndef CRM_JBUF_H
#define CRM_JBUF_H

#include <jansson.h>
#include "bytebuf.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Four times CRM_JSON_STORED_DEPTH_MAX (json.h), the most that stored JSON
 * may nest: any envelope a representation puts around it fits. */
#define CRM_JBUF_MAX_DEPTH 128

typedef struct crm_jbuf {
    crm_bytebuf out; /* failed: memory ran out or nesting went too deep */
    int depth;
    bool after_key; /* a key was written, its value comes next */
    bool has_member[CRM_JBUF_MAX_DEPTH];
} crm_jbuf;

void crm_jbuf_init(crm_jbuf *b);

/* Frees what b holds (not needed after crm_jbuf_take). */
void crm_jbuf_free(crm_jbuf *b);

/* The text, NUL-terminated, owned by the caller; NULL when writing failed.
 * b is empty afterwards. len may be NULL. */
char *crm_jbuf_take(crm_jbuf *b, size_t *len);

void crm_jbuf_begin_object(crm_jbuf *b);
void crm_jbuf_end_object(crm_jbuf *b);
void crm_jbuf_begin_array(crm_jbuf *b);
void crm_jbuf_end_array(crm_jbuf *b);

/* A member name inside an object; its value is the next thing written. */
void crm_jbuf_key(crm_jbuf *b, const char *key);

void crm_jbuf_string(crm_jbuf *b, const char *s, size_t len);
void crm_jbuf_cstring(crm_jbuf *b, const char *s); /* NULL writes null */
void crm_jbuf_int(crm_jbuf *b, long long v);
void crm_jbuf_real(crm_jbuf *b, double v);
void crm_jbuf_bool(crm_jbuf *b, bool v);
void crm_jbuf_null(crm_jbuf *b);

/* An RFC 3339 UTC timestamp with milliseconds, as a string. */
void crm_jbuf_timestamp(crm_jbuf *b, long long epoch_ms);

/* A value that is already JSON text (PostgreSQL's json output, say). The
 * caller vouches for it. */
void crm_jbuf_raw(crm_jbuf *b, const char *json, size_t len);

/* A Jansson value, printed in member order. */
void crm_jbuf_json(crm_jbuf *b, const json_t *v);

/* v as compact JSON text (the caller frees it), or NULL. Used for every JSON
 * response, so numbers print the same way everywhere. */
char *crm_json_text(const json_t *v, size_t *len);

/* Writes crm_json_text(v) to out; false when memory ran out or the write
 * failed. */
bool crm_json_fwrite(FILE *out, const json_t *v);

/* Room for crm_format_real's text and its NUL. */
#define CRM_REAL_TEXT_SIZE 40

/* Writes a finite v with the fewest significant digits (15 to 17) that read
 * back as the same double, as crm_jbuf_real prints it ("0.92", "1e-07"; no
 * ".0" added), and a NUL; returns the length. PostgreSQL's numeric input
 * reads it exactly. */
size_t crm_format_real(double v, char out[CRM_REAL_TEXT_SIZE]);

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" and a NUL into out (at least 32 bytes);
 * returns the length. */
size_t crm_format_timestamp(long long epoch_ms, char *out);

/* Reads a timestamptz as PostgreSQL prints it with DateStyle ISO
 * ("2026-11-24 14:48:34.123456+00", any UTC offset, a year of four or more
 * digits) into microseconds since the epoch. False for anything else
 * (infinity, BC dates). Printing the column is cheaper for PostgreSQL than
 * any expression that turns it into a number. */
bool crm_parse_pg_timestamp(const char *text, long long *epoch_us);

/* The same, written as crm_jbuf_timestamp does (milliseconds, rounded
 * down); null when text does not parse. */
void crm_jbuf_pg_timestamp(crm_jbuf *b, const char *text);

#endif

/*
 * cursor.h — the one cursor codec of every list and feed.
 *
 * A cursor is where the next page starts: a few typed fields (integers, at
 * most one text key) that only crmd reads. Clients get it as an opaque
 * string: base64url (unpadded) of
 *
 *     version (1) | kind | order | nints (+ 0x80 with a text key)
 *     | nints big-endian int64 | [text length (2 bytes, big-endian) | text]
 *     | HMAC-SHA512-256 of all the bytes before it (32 bytes)
 *
 * The MAC is keyed by a secret that every crmd process of a deployment
 * shares (CRMD_CURSOR_SECRET, or the one-row table cursor_secret of
 * migration 0011, made at the first start), so a cursor made by one process
 * is good in all, and a cursor a client forged or edited is refused before
 * any of it reaches SQL. Decoding also checks the version, the kind and
 * order the list expects, and the fields' count; each list then range-checks
 * the values themselves (crm_cursor_us_valid, ids > 0, ...), so that even a
 * leaked secret cannot make PostgreSQL raise an error.
 */
#ifndef CRM_LIST_CURSOR_H
#define CRM_LIST_CURSOR_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "jbuf.h"

#define CRM_CURSOR_VERSION 1
#define CRM_CURSOR_MAX_INTS 4
#define CRM_CURSOR_MAX_TEXT 1024                             /* bytes of a text key */
#define CRM_CURSOR_SECRET_BYTES 32                           /* crypto_auth_KEYBYTES */
#define CRM_CURSOR_MAX_CHARS ((4 + 8 * CRM_CURSOR_MAX_INTS + 2 + CRM_CURSOR_MAX_TEXT + 32) * 4 / 3 + 4)

/* Which list a cursor belongs to: a cursor of one is refused by the others. */
typedef enum crm_cursor_kind {
    CRM_CURSOR_BY_ID = 1,     /* lists paged by id alone: API keys, audit, consents */
    CRM_CURSOR_CUSTOMERS = 2, /* order: the sort; {key µs, id} or text key + {id} */
    CRM_CURSOR_TIMELINE = 3,  /* {occurred_at µs, id} */
    CRM_CURSOR_SYNC = 4,      /* order: the feed; {xid, seq, issued_at ms} */
    CRM_CURSOR_CURRENCY_RATES = 5, /* text key: the last currency shown */
    CRM_CURSOR_CUSTOMER_SEARCH = 6, /* order: the sort; CUSTOMERS' fields + the rule's hash */
} crm_cursor_kind;

/* The earliest and the latest instants a timestamp key may name, in µs
 * since the epoch: 0001-01-01 and 10001-01-01 (UTC), well inside
 * PostgreSQL's timestamptz range and around every value crmd stores. */
#define CRM_CURSOR_US_MIN (-62135596800000000LL)
#define CRM_CURSOR_US_MAX 253433923200000000LL

typedef struct crm_cursor {
    unsigned kind;  /* crm_cursor_kind */
    unsigned order; /* the list's sort order or feed (0..255) */
    int nints;
    long long ints[CRM_CURSOR_MAX_INTS];
    bool has_text;
    size_t text_len; /* text holds no NUL byte */
    char text[CRM_CURSOR_MAX_TEXT + 1];
} crm_cursor;

/* Starts c for a list with no fields yet. */
void crm_cursor_init(crm_cursor *c, crm_cursor_kind kind, unsigned order);

/* Appends an integer field; false past CRM_CURSOR_MAX_INTS. */
bool crm_cursor_add_int(crm_cursor *c, long long v);

/* Sets the text key (len bytes, no NUL); false when too long or with a NUL. */
bool crm_cursor_set_text(crm_cursor *c, const char *text, size_t len);

/* The cursor as a NUL-terminated string the caller frees; NULL with err set
 * (CRM_E_INTERNAL) when there is no secret or memory ran out. */
char *crm_cursor_encode(const crm_cursor *c, crm_error *err);

/* Writes the cursor as a JSON string into b (marking b failed on error). */
void crm_cursor_write(crm_jbuf *b, const crm_cursor *c);

/* Decodes and authenticates text into out. True only for a cursor this
 * deployment made, of kind and order, with nints integer fields and a text
 * key exactly when with_text. Never reads past the bytes given; any input
 * is safe (no allocation grows with it beyond CRM_CURSOR_MAX_CHARS). */
bool crm_cursor_decode(const char *text, crm_cursor_kind kind, unsigned order, int nints,
                       bool with_text, crm_cursor *out);

/* True for a timestamp key (µs since the epoch) inside the range above. */
bool crm_cursor_us_valid(long long us);

/* Formats us (crm_cursor_us_valid) as PostgreSQL reads a timestamptz
 * exactly: "YYYY-MM-DD HH:MM:SS.ffffff+00" (a longer year past 9999).
 * out holds at least 40 bytes. Returns the length. */
size_t crm_cursor_format_us(long long us, char *out);

/* Loads the shared secret: from CRMD_CURSOR_SECRET when set (at least 32
 * characters; its hash is the key), else from the database's cursor_secret
 * row, which the first crmd to start creates from 32 random bytes. Call once
 * at start, after the migrations and crm_db_init; encode and decode load it
 * on first use otherwise (blocking on the pool). */
bool crm_cursor_secret_load(crm_error *err);

/* Sets the key directly (tests, fuzz targets). */
void crm_cursor_secret_set(const unsigned char key[CRM_CURSOR_SECRET_BYTES]);

#endif

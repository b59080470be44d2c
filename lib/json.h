/*
 * json.h — small helpers around Jansson for request bodies.
 */
#ifndef CRM_JSON_H
#define CRM_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "error.h"

/* Parses a request body: any JSON value, a bare null, number or string
 * included (the caller checks the shape it needs). On failure sets
 * CRM_E_MALFORMED with the line and column of the problem and returns NULL.
 * The caller owns the result. */
json_t *crm_json_parse(const char *buf, size_t len, crm_error *err);

/* Checks that every key of obj is one of the NULL-terminated allowed names;
 * each unknown key is added to err as a field error ("/key"). Returns false
 * (with CRM_E_INVALID) when any was found. */
bool crm_json_only_fields(json_t *obj, const char *const *allowed, crm_error *err);

#define CRM_JSON_POINTER_MAX 256

/* Writes base + "/" + key as a JSON pointer (RFC 6901 escaping) into out,
 * truncating long keys. */
void crm_json_pointer_append(char *out, size_t size, const char *base, const char *key);

/* The deepest nesting of objects and arrays that stored free-form JSON (a
 * customer's attributes, a touchpoint's properties) may have, counting the
 * object itself as level 1. Representations put it a few levels deeper (the
 * customer inside an export, a touchpoint inside a timeline page), and
 * CRM_JBUF_MAX_DEPTH (jbuf.h) leaves ample room for that envelope: what is
 * accepted can always be written back. */
#define CRM_JSON_STORED_DEPTH_MAX 32

/* True when v nests at most max levels of objects and arrays (a scalar is
 * level 0, {} and [] level 1). Stops looking past max. */
bool crm_json_depth_within(const json_t *v, int max);

/* The length of the valid UTF-8 sequence (1 to 4 bytes) at s[0..len), or 0
 * when it is not one: overlong forms, surrogates, code points past
 * U+10FFFF and sequences cut short are not, as Jansson judges them. */
size_t crm_utf8_sequence(const char *s, size_t len);

/* True when s[0..len) is made of such sequences only (RFC 3629's UTF-8). */
bool crm_utf8_valid(const char *s, size_t len);

/* The length of the longest prefix of s[0..len) that does not end inside a
 * multi-byte sequence: where a text cut at len should be cut instead. */
size_t crm_utf8_boundary(const char *s, size_t len);

/* Copies s[0..len) into out as valid UTF-8, each byte that does not start a
 * valid sequence replaced by U+FFFD; stops before a sequence that would not
 * fit, and always NUL-terminates (outsize > 0). Returns the bytes written.
 * An out of 3 * len + 1 bytes holds any input whole. */
size_t crm_utf8_sanitize(const char *s, size_t len, char *out, size_t outsize);

/* An RFC 3339 UTC timestamp with milliseconds ("2026-11-23T10:15:00.000Z")
 * for epoch milliseconds, as a new JSON string. */
json_t *crm_json_timestamp(long long epoch_ms);

/* Encodes bytes as unpadded base64url into out (size >= 4*len/3 + 2). */
void crm_base64url_encode(const unsigned char *bytes, size_t len, char *out, size_t outsize);

/* Decodes unpadded base64url; returns the decoded length or -1. */
long crm_base64url_decode(const char *in, unsigned char *out, size_t outsize);

#endif

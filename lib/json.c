/*
 * json.c — parsing request bodies and checking their shape.
 */
#include "json.h"
#include "jbuf.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

json_t *crm_json_parse(const char *buf, size_t len, crm_error *err)
{
    json_error_t jerr;
    /* JSON_REJECT_DUPLICATES: a body that says "a" twice is ambiguous, and
     * different parsers would pick different values. */
    json_t *root = json_loadb(buf ? buf : "", len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        crm_error_set(err, CRM_E_MALFORMED, "malformed JSON at line %d, column %d: %s", jerr.line,
                      jerr.column, jerr.text);
        return NULL;
    }
    return root;
}

bool crm_json_only_fields(json_t *obj, const char *const *allowed, crm_error *err)
{
    bool ok = true;
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        bool known = false;
        for (const char *const *a = allowed; *a != NULL; a++)
            if (strcmp(*a, key) == 0)
                known = true;
        if (!known) {
            char field[CRM_JSON_POINTER_MAX];
            crm_json_pointer_append(field, sizeof field, "", key);
            crm_error_add_field(err, field, "unknown field");
            ok = false;
        }
    }
    if (!ok)
        crm_error_set(err, CRM_E_INVALID, "the body has fields this operation does not accept");
    return ok;
}

void crm_base64url_encode(const unsigned char *bytes, size_t len, char *out, size_t outsize)
{
    sodium_bin2base64(out, outsize, bytes, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

long crm_base64url_decode(const char *in, unsigned char *out, size_t outsize)
{
    size_t n = 0;
    if (sodium_base642bin(out, outsize, in, strlen(in), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return -1;
    return (long)n;
}

json_t *crm_json_timestamp(long long epoch_ms)
{
    char text[48];
    crm_format_timestamp(epoch_ms, text);
    return json_string(text);
}

/* The length of the character at s: a whole UTF-8 sequence (as far as its
 * continuation bytes go), or one byte. */
static size_t char_length(const char *s)
{
    unsigned char c = (unsigned char)s[0];
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    for (size_t i = 1; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            return i;
    return len;
}

/* Appends len bytes at out + *n when they fit with the final NUL. */
static bool put_bytes(char *out, size_t size, size_t *n, const char *s, size_t len)
{
    if (*n + len >= size)
        return false;
    memcpy(out + *n, s, len);
    *n += len;
    return true;
}

/* Truncates at a character, never inside a UTF-8 sequence or an escape: a
 * field name cut in the middle of a character is not UTF-8, and Jansson
 * refuses to put it into the error body (the error would be lost). */
void crm_json_pointer_append(char *out, size_t size, const char *base, const char *key)
{
    if (size == 0)
        return;
    size_t n = 0;
    bool room = true;
    for (const char *b = base; *b != '\0' && room;) {
        size_t len = char_length(b);
        room = put_bytes(out, size, &n, b, len);
        b += len;
    }
    room = room && put_bytes(out, size, &n, "/", 1);
    for (const char *k = key; *k != '\0' && room;) { /* RFC 6901: ~ is ~0, / is ~1 */
        if (*k == '~' || *k == '/') {
            room = put_bytes(out, size, &n, *k == '~' ? "~0" : "~1", 2);
            k++;
        } else {
            size_t len = char_length(k);
            room = put_bytes(out, size, &n, k, len);
            k += len;
        }
    }
    out[n] = '\0';
}

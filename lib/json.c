/*
 * json.c — parsing request bodies and checking their shape.
 */
#include "json.h"
#include "jbuf.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

_Static_assert(CRM_JBUF_MAX_DEPTH >= CRM_JSON_STORED_DEPTH_MAX + 16,
               "a representation must be able to wrap the deepest stored JSON");

json_t *crm_json_parse(const char *buf, size_t len, crm_error *err)
{
    json_error_t jerr;
    /* JSON_REJECT_DUPLICATES: a body that says "a" twice is ambiguous, and
     * different parsers would pick different values. JSON_DECODE_ANY: a bare
     * null, number or string is well-formed JSON (RFC 8259); the operation
     * then refuses it as the wrong shape (422), as the contract says. */
    json_t *root = json_loadb(buf ? buf : "", len,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
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

bool crm_json_depth_within(const json_t *v, int max)
{
    if (!json_is_object(v) && !json_is_array(v))
        return true;
    if (max < 1)
        return false;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!crm_json_depth_within(json_array_get(v, i), max - 1))
                return false;
        return true;
    }
    const char *key;
    json_t *member;
    json_object_foreach((json_t *)v, key, member)
        if (!crm_json_depth_within(member, max - 1))
            return false;
    return true;
}

size_t crm_utf8_sequence(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    if (len == 0)
        return 0;
    if (u[0] < 0x80)
        return 1;
    size_t n;
    unsigned cp;
    if (u[0] >= 0xc2 && u[0] <= 0xdf)
        n = 2, cp = u[0] & 0x1fu;
    else if (u[0] >= 0xe0 && u[0] <= 0xef)
        n = 3, cp = u[0] & 0x0fu;
    else if (u[0] >= 0xf0 && u[0] <= 0xf4)
        n = 4, cp = u[0] & 0x07u;
    else
        return 0;
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((u[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (u[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

bool crm_utf8_valid(const char *s, size_t len)
{
    for (size_t i = 0, n; i < len; i += n)
        if ((n = crm_utf8_sequence(s + i, len - i)) == 0)
            return false;
    return true;
}

size_t crm_utf8_boundary(const char *s, size_t len)
{
    /* Back over at most three continuation bytes to the lead byte; keep the
     * last sequence only when it is complete. */
    size_t i = len;
    while (i > 0 && len - i < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80)
        i--;
    if (i == 0)
        return len;
    unsigned char lead = (unsigned char)s[i - 1];
    if (lead < 0xc0)
        return len; /* ends in ASCII (or in bytes no cut can mend) */
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
    return len - (i - 1) >= need ? len : i - 1;
}

size_t crm_utf8_sanitize(const char *s, size_t len, char *out, size_t outsize)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t k = crm_utf8_sequence(s + i, len - i);
        const char *from = k > 0 ? s + i : replacement;
        size_t take = k > 0 ? k : 3;
        if (n + take + 1 > outsize)
            break;
        memcpy(out + n, from, take);
        n += take;
        i += k > 0 ? k : 1;
    }
    if (outsize > 0)
        out[n] = '\0';
    return n;
}

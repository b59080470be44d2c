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

void crm_json_pointer_append(char *out, size_t size, const char *base, const char *key)
{
    size_t n = (size_t)snprintf(out, size, "%s/", base);
    for (const char *k = key; *k != '\0' && n + 3 < size; k++) {
        if (*k == '~' || *k == '/') { /* RFC 6901: ~ is ~0, / is ~1 */
            out[n++] = '~';
            out[n++] = *k == '~' ? '0' : '1';
        } else {
            out[n++] = *k;
        }
    }
    out[n < size ? n : size - 1] = '\0';
}

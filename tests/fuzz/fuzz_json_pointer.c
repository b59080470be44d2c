/*
 * fuzz_json_pointer.c — crm_json_pointer_append, which names the field of
 * every validation error after the client's own member names.
 *
 * Input: the first byte is the buffer size (1 to 256), the rest is base and
 * key separated by the first NUL (all key when there is none). Properties:
 * the output fits the buffer (exactly sized, so ASan sees any overflow), is
 * a prefix of the whole pointer (base, '/', the key with '~' as "~0" and '/'
 * as "~1"), is the whole pointer when that fits, never ends inside an
 * escape or a UTF-8 sequence, and is UTF-8 when base and key are: a field
 * name that is not UTF-8 cannot go into a JSON error body.
 */
#include "fuzz.h"

#include "json.h"

#include <stdbool.h>

static char *whole_pointer(const char *base, const char *key)
{
    char *full = malloc(strlen(base) + 2 + 2 * strlen(key));
    FUZZ_CHECK(full != NULL);
    char *p = full + sprintf(full, "%s/", base);
    for (const char *k = key; *k != '\0'; k++) {
        if (*k == '~' || *k == '/') {
            *p++ = '~';
            *p++ = *k == '~' ? '0' : '1';
        } else {
            *p++ = *k;
        }
    }
    *p = '\0';
    return full;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t bufsize = (size_t)data[0] + 1;
    char *rest = fuzz_string(data + 1, size - 1);
    size_t restlen = size - 1;
    const char *base = "", *key = rest;
    size_t nul = strnlen(rest, restlen);
    if (nul < restlen) {
        base = rest;
        key = rest + nul + 1;
    }
    char *out = malloc(bufsize);
    FUZZ_CHECK(out != NULL);
    crm_json_pointer_append(out, bufsize, base, key);
    char *full = whole_pointer(base, key);
    size_t n = strlen(out);
    FUZZ_CHECK(n < bufsize);
    FUZZ_CHECK(strncmp(out, full, n) == 0);
    if (strlen(full) < bufsize)
        FUZZ_CHECK(strcmp(out, full) == 0);
    bool utf8 = fuzz_utf8_valid((const unsigned char *)base, strlen(base)) &&
                fuzz_utf8_valid((const unsigned char *)key, strlen(key));
    if (n < strlen(full)) { /* cut: never after half an escape (or half a character) */
        size_t keystart = strlen(base) + 1;
        FUZZ_CHECK(!(n > keystart && out[n - 1] == '~'));
        if (utf8)
            FUZZ_CHECK(((unsigned char)full[n] & 0xC0) != 0x80);
    }
    if (utf8) /* as member names from Jansson always are */
        FUZZ_CHECK(fuzz_utf8_valid((const unsigned char *)out, n));
    free(full);
    free(out);
    free(rest);
    return 0;
}

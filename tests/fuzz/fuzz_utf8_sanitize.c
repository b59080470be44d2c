/*
 * fuzz_utf8_sanitize.c — crm_utf8_sanitize and crm_utf8_boundary, which
 * make log lines and field errors out of bytes that need not be UTF-8.
 *
 * Properties: the output is valid UTF-8 that Jansson accepts as a string;
 * valid input comes out unchanged; it never writes past outsize, and stops
 * only where a character ends; a cut at crm_utf8_boundary of valid input is
 * valid.
 */
#include "fuzz.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define CHECK FUZZ_CHECK

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t cap = 3 * size + 1;
    char *out = malloc(cap);
    if (out == NULL)
        abort();
    size_t n = crm_utf8_sanitize(in, size, out, cap);
    CHECK(n < cap && out[n] == '\0');
    CHECK(crm_utf8_valid(out, n));
    json_t *j = json_stringn(out, n);
    CHECK(j != NULL);
    json_decref(j);
    bool valid = crm_utf8_valid(in, size);
    if (valid) {
        CHECK(n == size && memcmp(in, out, size) == 0);
        size_t cut = size / 2;
        size_t b = crm_utf8_boundary(in, cut);
        CHECK(b <= cut && crm_utf8_valid(in, b));
    }
    /* A small buffer: a valid prefix that fits. */
    size_t small = size % 7 + 1;
    char *tiny = malloc(small);
    if (tiny == NULL)
        abort();
    size_t t = crm_utf8_sanitize(in, size, tiny, small);
    CHECK(t < small && tiny[t] == '\0' && crm_utf8_valid(tiny, t));
    free(tiny);
    free(out);
    return 0;
}

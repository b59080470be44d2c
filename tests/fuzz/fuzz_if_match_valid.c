/*
 * fuzz_if_match_valid.c — crm_if_match_valid and crm_etag_matches, which read the
 * If-Match header of every conditional write.
 *
 * Properties: crm_if_match_valid agrees with a reference parser of RFC 9110's
 * grammar written here ("*", or a comma-separated list of [W/]"etagc*" with
 * optional whitespace and empty elements); a refusal is CRM_E_MALFORMED
 * with the same detail whatever the input (it never repeats the value);
 * "*" matches every version; and a valid list that holds the strong tag
 * "\"7\"" matches version 7.
 */
#include "fuzz.h"

#include "customers.h"

#include <stdbool.h>

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool etagc(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80;
}

/* The reference: split into elements on the commas outside quotes, then
 * check each element on its own. */
static bool reference_valid(const char *s)
{
    size_t n = strlen(s), b = 0, e = n;
    while (b < n && ows(s[b]))
        b++;
    while (e > b && ows(s[e - 1]))
        e--;
    if (e - b == 1 && s[b] == '*')
        return true;
    int tags = 0;
    size_t start = b;
    bool quoted = false;
    for (size_t i = b; i <= e; i++) {
        if (i < e && s[i] == '"')
            quoted = !quoted;
        if (i < e && (quoted || s[i] != ','))
            continue;
        size_t x = start, y = i;
        while (x < y && ows(s[x]))
            x++;
        while (y > x && ows(s[y - 1]))
            y--;
        if (y > x) {
            if (y - x >= 2 && s[x] == 'W' && s[x + 1] == '/')
                x += 2;
            if (y - x < 2 || s[x] != '"' || s[y - 1] != '"')
                return false;
            for (size_t k = x + 1; k < y - 1; k++)
                if (!etagc((unsigned char)s[k]))
                    return false;
            tags++;
        }
        start = i + 1;
    }
    return !quoted && tags > 0;
}

/* True when s, read as a list, holds the element "\"7\"" exactly. */
static bool lists_seven(const char *s)
{
    const char *p = strstr(s, "\"7\"");
    while (p != NULL) {
        const char *a = p, *z = p + 3;
        while (a > s && ows(a[-1]))
            a--;
        while (ows(*z))
            z++;
        if ((a == s || a[-1] == ',') && (*z == '\0' || *z == ','))
            return true;
        p = strstr(p + 1, "\"7\"");
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_string(data, size);
    crm_error err = CRM_ERROR_INIT;
    bool valid = crm_if_match_valid(s, &err);
    FUZZ_CHECK(valid == reference_valid(s));
    if (!valid) {
        FUZZ_CHECK(err.code == CRM_E_MALFORMED);
        crm_error other = CRM_ERROR_INIT;
        FUZZ_CHECK(!crm_if_match_valid("x", &other));
        FUZZ_CHECK(strcmp(err.detail, other.detail) == 0);
    } else {
        FUZZ_CHECK(err.code == CRM_OK);
        const char *t = s + strspn(s, " \t");
        if (strcmp(t, "*") == 0)
            FUZZ_CHECK(crm_etag_matches(s, 12345));
        if (lists_seven(s))
            FUZZ_CHECK(crm_etag_matches(s, 7));
    }
    crm_error_clear(&err);
    free(s);
    return 0;
}

/*
 * fuzz_rfc3339_utc.c — crm_rfc3339_to_utc, the one form in which a client's
 * date-time goes to SQL.
 *
 * Properties: it accepts only what crm_rfc3339_valid accepts; what it writes
 * is itself valid, already UTC (converting it again gives the same text),
 * ends in 'Z', has a year of 0001 to 9999, and is the same instant
 * (crm_rfc3339_epoch_ms agrees); a buffer one byte too small is refused
 * with an empty string, never a cut one.
 */
#include "fuzz.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customers.h"

#define CHECK FUZZ_CHECK

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        abort();
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    char out[CRM_RFC3339_UTC_SIZE], again[CRM_RFC3339_UTC_SIZE];
    if (crm_rfc3339_to_utc(s, out, sizeof out)) {
        size_t n = strlen(out);
        CHECK(crm_rfc3339_valid(s));
        CHECK(crm_rfc3339_valid(out));
        CHECK(n >= 20 && out[n - 1] == 'Z');
        CHECK(memcmp(out, "0000", 4) != 0);
        CHECK(crm_rfc3339_to_utc(out, again, sizeof again) && strcmp(out, again) == 0);
        long long a = 0, b = 0;
        CHECK(crm_rfc3339_epoch_ms(s, &a) && crm_rfc3339_epoch_ms(out, &b) && a == b);
        char *small = malloc(n);
        if (small == NULL)
            abort();
        CHECK(!crm_rfc3339_to_utc(s, small, n) && small[0] == '\0');
        free(small);
    } else {
        CHECK(out[0] == '\0');
    }
    free(s);
    return 0;
}

/*
 * fuzz_rfc3339.c — RFC 3339 date-times from clients (occurred_at, the
 * *_after / *_before filters, consent times): crm_rfc3339_valid and
 * crm_rfc3339_epoch_ms.
 *
 * Properties: the two agree on what is valid; a valid time lies between the
 * first and the last instant RFC 3339 can write (years 0001 to 9999, offsets
 * up to ±23:59); and crmd's own rendering of the instant (UTC, milliseconds)
 * is valid and reads back as the same instant.
 */
#include "fuzz.h"

#include "customers.h"
#include "jbuf.h"

/* 0001-01-01T00:00:00+23:59 and 9999-12-31T23:59:60.999-23:59, in ms. */
#define FIRST_MS (-62135596800000LL - (23 * 60 + 59) * 60000LL)
#define LAST_MS (253402300799000LL + 1999 + (23 * 60 + 59) * 60000LL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_string(data, size);
    long long ms = 0;
    bool valid = crm_rfc3339_valid(s);
    bool converted = crm_rfc3339_epoch_ms(s, &ms);
    FUZZ_CHECK(valid == converted);
    if (converted) {
        FUZZ_CHECK(ms >= FIRST_MS && ms <= LAST_MS);
        char text[48];
        size_t n = crm_format_timestamp(ms, text);
        FUZZ_CHECK(n == strlen(text));
        long long again = 0;
        /* Years before 0001 or after 9999 have no RFC 3339 form. */
        if (ms >= -62135596800000LL && ms < 253402300800000LL) {
            FUZZ_CHECK(crm_rfc3339_epoch_ms(text, &again));
            FUZZ_CHECK(again == ms);
        }
    }
    free(s);
    return 0;
}

/*
 * fuzz_pg_timestamp.c — crm_parse_pg_timestamp, which reads timestamptz
 * values as PostgreSQL prints them ("2026-11-24 14:48:34.123456+00").
 * They come from the database, but the cursor decoders and any future
 * reader of stored text rely on it refusing garbage without undefined
 * behaviour (years of up to nine digits, offsets of up to 99 hours).
 *
 * Properties: any input parses or is refused without UB; an 8-byte input is
 * also taken as an instant in PostgreSQL's range, printed the way
 * PostgreSQL prints it (UTC session, DateStyle ISO) and must read back
 * exactly, microseconds included.
 */
#include "fuzz.h"

#include "jbuf.h"

#include <time.h>

/* PostgreSQL's timestamptz range is 4713 BC to 294276 AD; crmd reads AD
 * only, and microseconds since 1970 as a long long end in 294247 AD. */
#define PG_FIRST_US (-62135596800000000LL) /* 0001-01-01 00:00:00+00 */
#define PG_LAST_US (9223372036854775807LL - 86400000000LL)

static void round_trip(const uint8_t *data)
{
    uint64_t raw;
    memcpy(&raw, data, sizeof raw);
    uint64_t span = (uint64_t)PG_LAST_US - (uint64_t)PG_FIRST_US; /* modulo 2^64 */
    long long us = (long long)((uint64_t)PG_FIRST_US + raw % span);
    long long secs = us / 1000000 - (us % 1000000 < 0);
    long long frac = us - secs * 1000000;
    time_t t = (time_t)secs;
    struct tm tm;
    FUZZ_CHECK(gmtime_r(&t, &tm) != NULL);
    char text[80];
    snprintf(text, sizeof text, "%04lld-%02d-%02d %02d:%02d:%02d.%06lld+00",
             (long long)tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
             tm.tm_sec, frac);
    long long back = 0;
    FUZZ_CHECK(crm_parse_pg_timestamp(text, &back));
    FUZZ_CHECK(back == us);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 8)
        round_trip(data);
    char *s = fuzz_string(data, size);
    long long us;
    (void)crm_parse_pg_timestamp(s, &us);
    free(s);
    return 0;
}

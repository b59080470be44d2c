/*
 * metrics/rows.c — a customer's metrics as a row of customer_metrics in
 * PostgreSQL's binary COPY format, for the full recompute's staging and the
 * follower's updates alike.
 *
 * Binary, not text: a million rows of a few dozen numbers printed with
 * %.17g cost seconds of printf and as many of parsing in the server; their
 * eight bytes cost neither, and carry the double exactly. The format
 * (PostgreSQL's documentation, "COPY", "Binary Format"): a header, then
 * each row as a 16-bit field count and each field as a 32-bit length (-1:
 * NULL) and its bytes in the type's send format, big-endian; then -1.
 *
 *   bigint, integer, smallint   two's complement, 8, 4, 2 bytes
 *   double precision            IEEE 754, 8 bytes
 *   timestamptz                 microseconds since 2000-01-01 UTC, 8 bytes
 *   text                        the bytes (UTF-8)
 *   numeric                     ndigits, weight, sign, dscale (16 bits each),
 *                               then ndigits base-10000 digits (16 bits),
 *                               the first weighing 10000^weight
 */
#include "metrics/internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01. */
#define PG_EPOCH_MS 946684800000LL

/* The columns of METRICS_ROW_COLUMNS. */
#define ROW_FIELDS 42

static void put_u16(crm_bytebuf *b, uint16_t v)
{
    char x[2] = {(char)(v >> 8), (char)v};
    crm_bytebuf_put(b, x, 2);
}

static void put_u32(crm_bytebuf *b, uint32_t v)
{
    char x[4] = {(char)(v >> 24), (char)(v >> 16), (char)(v >> 8), (char)v};
    crm_bytebuf_put(b, x, 4);
}

static void put_u64(crm_bytebuf *b, uint64_t v)
{
    put_u32(b, (uint32_t)(v >> 32));
    put_u32(b, (uint32_t)v);
}

static void put_null(crm_bytebuf *b)
{
    put_u32(b, UINT32_MAX); /* -1 */
}

static void put_bigint(crm_bytebuf *b, long long v)
{
    put_u32(b, 8);
    put_u64(b, (uint64_t)v);
}

static void put_int(crm_bytebuf *b, bool present, long long v)
{
    if (!present) {
        put_null(b);
        return;
    }
    put_u32(b, 4);
    put_u32(b, (uint32_t)(int32_t)v);
}

static void put_smallint(crm_bytebuf *b, bool present, int v)
{
    if (!present) {
        put_null(b);
        return;
    }
    put_u32(b, 2);
    put_u16(b, (uint16_t)(int16_t)v);
}

/* A double precision; NULL when absent or not finite. */
static void put_double(crm_bytebuf *b, bool present, double v)
{
    if (!present || !isfinite(v)) {
        put_null(b);
        return;
    }
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u32(b, 8);
    put_u64(b, bits);
}

static void put_time(crm_bytebuf *b, bool present, long long ms)
{
    if (!present) {
        put_null(b);
        return;
    }
    put_u32(b, 8);
    put_u64(b, (uint64_t)((ms - PG_EPOCH_MS) * 1000));
}

static void put_text(crm_bytebuf *b, const char *s)
{
    if (s == NULL) {
        put_null(b);
        return;
    }
    size_t n = strlen(s);
    put_u32(b, (uint32_t)n);
    crm_bytebuf_put(b, s, n);
}

/* An amount as numeric with 4 decimals (rounded half away from zero); NULL
 * when absent, not finite or beyond 10^14 (no amount of a CRM comes near). */
static void put_amount(crm_bytebuf *b, bool present, double v)
{
    double scaled = v * 10000.0;
    if (!present || !isfinite(v) || fabs(scaled) >= 1e18) {
        put_null(b);
        return;
    }
    long long n = llround(scaled);
    uint16_t sign = n < 0 ? 0x4000 : 0;
    unsigned long long u = n < 0 ? (unsigned long long)(-(n + 1)) + 1 : (unsigned long long)n;
    /* u's base-10000 digits, least significant first: the first is the
     * fraction (10000^-1), the rest the integer part. */
    uint16_t digits[6];
    int count = 0;
    do {
        digits[count++] = (uint16_t)(u % 10000);
        u /= 10000;
    } while (u > 0);
    int low = 0; /* trailing zero digits are left out */
    while (low < count - 1 && digits[low] == 0)
        low++;
    int ndigits = count == 1 && digits[0] == 0 ? 0 : count - low;
    put_u32(b, (uint32_t)(8 + 2 * ndigits));
    put_u16(b, (uint16_t)ndigits);
    put_u16(b, (uint16_t)(int16_t)(ndigits > 0 ? count - 2 : 0)); /* weight of the first */
    put_u16(b, ndigits > 0 ? sign : 0);
    put_u16(b, 4); /* dscale */
    for (int i = count - 1; i >= low && ndigits > 0; i--)
        put_u16(b, digits[i]);
}

/* The group of an R and F score (openapi.yaml, CustomerMetrics). */
static const char *rfm_group(short r, short f)
{
    if (r >= 4 && f >= 4)
        return "champions";
    if (r == 3 && f >= 4)
        return "loyal";
    if (r >= 4 && f >= 2)
        return "potential_loyalists";
    if (r >= 4)
        return "recent";
    if (r == 3)
        return "needs_attention";
    if (f >= 3)
        return "at_risk";
    return "hibernating";
}

static void put_responses(crm_bytebuf *b, const metrics_scale_responses *r)
{
    put_smallint(b, r->count > 0, r->latest);
    put_double(b, r->count > 0, r->count > 0 ? (double)r->sum / r->count : 0);
    put_int(b, true, r->count);
}

static void copy_header(crm_bytebuf *b)
{
    crm_bytebuf_put(b, "PGCOPY\n\377\r\n\0", 11);
    put_u32(b, 0); /* flags */
    put_u32(b, 0); /* header extension */
}

static void copy_trailer(crm_bytebuf *b)
{
    put_u16(b, UINT16_MAX); /* -1 */
}

static void put_row(crm_bytebuf *b, const metrics_customer *c, long long as_of_ms,
                    long long now_ms)
{
    bool bought = c->purchases > 0, ranked = bought && c->r > 0;
    put_u16(b, ROW_FIELDS);
    put_bigint(b, c->id);
    put_time(b, true, as_of_ms);
    put_time(b, true, now_ms);
    put_int(b, true, c->purchases);
    put_int(b, true, c->refunds);
    put_int(b, true, c->unrated);
    put_time(b, bought, c->first_ms);
    put_time(b, bought, c->last_ms);
    put_amount(b, true, c->historic);
    put_amount(b, c->has_aov, c->aov);
    put_double(b, bought, c->recency_days);
    put_int(b, true, c->frequency);
    put_amount(b, true, c->monetary);
    put_smallint(b, ranked, c->r);
    put_smallint(b, ranked, c->f);
    put_smallint(b, ranked, c->mscore);
    char cell[4] = {(char)('0' + c->r), (char)('0' + c->f), (char)('0' + c->mscore), '\0'};
    put_text(b, ranked ? cell : NULL);
    put_text(b, ranked ? rfm_group(c->r, c->f) : NULL);
    put_int(b, bought, c->x);
    put_int(b, bought, c->t_x);
    put_int(b, bought, c->t_age);
    put_amount(b, c->has_m, c->m);
    put_double(b, c->scored, c->p_alive);
    put_double(b, c->scored, c->predicted_purchases);
    put_double(b, c->scored, c->predicted_value);
    const char *tier = c->tier == 't' ? "top" : c->tier == 'h' ? "high" : "standard";
    put_text(b, c->scored && c->tier ? tier : NULL);
    put_double(b, true, c->interval_mean); /* NAN: NULL */
    put_double(b, true, c->interval_cv);
    put_double(b, true, c->interval_trend);
    put_double(b, true, c->spend_cv);
    put_double(b, true, c->spend_trend);
    put_text(b, c->stage != STAGE_NONE ? metrics_stage_name(c->stage) : NULL);
    put_int(b, c->last_gap > 0, c->last_gap);
    put_double(b, bought, c->recency_days - c->interval_mean); /* NAN without an interval */
    put_int(b, true, c->touchpoints_90d);
    put_time(b, c->has_inbound, c->last_inbound_ms);
    put_responses(b, &c->nps);
    put_responses(b, &c->csat);
}

bool metrics_copy_rows(crm_conn *c, const char *sql, const metrics_customer *customers, size_t n,
                       long long as_of_ms, long long now_ms, crm_error *err)
{
    if (!crm_db_copy_begin(c, sql, err))
        return false;
    crm_bytebuf b;
    crm_bytebuf_init(&b);
    copy_header(&b);
    bool ok = true;
    for (size_t i = 0; ok && i <= n; i++) {
        if (i < n)
            put_row(&b, &customers[i], as_of_ms, now_ms);
        else
            copy_trailer(&b);
        if (b.failed)
            ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory writing the metrics' rows");
        else if (b.len >= 1 << 20 || i == n) {
            ok = crm_db_copy_put(c, b.data, b.len, err);
            b.len = 0;
        }
    }
    crm_bytebuf_free(&b);
    return crm_db_copy_end(c, ok ? NULL : "the metrics' rows could not be written", err) && ok;
}

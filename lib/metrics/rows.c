/*
 * metrics/rows.c — a customer's metrics as a row of customer_metrics in
 * COPY text, for the full recompute's staging and the follower's updates
 * alike.
 */
#include "metrics/internal.h"
#include "jbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

/* Appends printf(fmt, ...); b fails when the text would not fit a line's
 * field (it is never cut short). */
__attribute__((format(printf, 2, 3))) static void put_fmt(crm_bytebuf *b, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof text)
        b->failed = true;
    else
        crm_bytebuf_put(b, text, (size_t)n);
}

static void put_null(crm_bytebuf *b)
{
    put_fmt(b, "\\N\t");
}

static void put_number(crm_bytebuf *b, bool present, double v)
{
    if (present && isfinite(v))
        put_fmt(b, "%.17g\t", v);
    else
        put_null(b);
}

/* Amounts: to 4 decimals, as numeric. */
static void put_amount(crm_bytebuf *b, bool present, double v)
{
    if (present && isfinite(v))
        put_fmt(b, "%.4f\t", v);
    else
        put_null(b);
}

static void put_int(crm_bytebuf *b, bool present, long long v)
{
    if (present)
        put_fmt(b, "%lld\t", v);
    else
        put_null(b);
}

static void put_time(crm_bytebuf *b, bool present, long long ms)
{
    char text[48];
    if (present) {
        crm_format_timestamp(ms, text);
        put_fmt(b, "%s\t", text);
    } else {
        put_null(b);
    }
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
    put_int(b, r->count > 0, r->latest);
    put_number(b, r->count > 0, r->count > 0 ? (double)r->sum / r->count : 0);
    put_int(b, true, r->count);
}

void metrics_put_row(crm_bytebuf *b, const metrics_customer *c, const char *as_of,
                     const char *now)
{
    bool bought = c->purchases > 0;
    put_fmt(b, "%lld\t%s\t%s\t%d\t%d\t%d\t", c->id, as_of, now, c->purchases, c->refunds,
            c->unrated);
    put_time(b, bought, c->first_ms);
    put_time(b, bought, c->last_ms);
    put_amount(b, true, c->historic);
    put_amount(b, c->has_aov, c->aov);
    put_number(b, bought, c->recency_days);
    put_fmt(b, "%d\t", c->frequency);
    put_amount(b, true, c->monetary);
    if (bought && c->r > 0)
        put_fmt(b, "%d\t%d\t%d\t%d%d%d\t%s\t", c->r, c->f, c->mscore, c->r, c->f, c->mscore,
                rfm_group(c->r, c->f));
    else
        put_fmt(b, "\\N\t\\N\t\\N\t\\N\t\\N\t");
    if (bought)
        put_fmt(b, "%d\t%d\t%d\t", c->x, c->t_x, c->t_age);
    else
        put_fmt(b, "\\N\t\\N\t\\N\t");
    put_amount(b, c->has_m, c->m);
    put_number(b, c->scored, c->p_alive);
    put_number(b, c->scored, c->predicted_purchases);
    put_number(b, c->scored, c->predicted_value);
    const char *tier = c->tier == 't' ? "top" : c->tier == 'h' ? "high" : "standard";
    if (c->scored && c->tier)
        put_fmt(b, "%s\t", tier);
    else
        put_null(b);
    put_number(b, true, c->interval_mean); /* NAN: \N */
    put_number(b, true, c->interval_cv);
    put_number(b, true, c->interval_trend);
    put_number(b, true, c->spend_cv);
    put_number(b, true, c->spend_trend);
    if (c->stage != STAGE_NONE)
        put_fmt(b, "%s\t", metrics_stage_name(c->stage));
    else
        put_null(b);
    put_int(b, c->last_gap > 0, c->last_gap);
    put_number(b, bought, c->recency_days - c->interval_mean); /* NAN without an interval */
    put_int(b, true, c->touchpoints_90d);
    put_time(b, c->has_inbound, c->last_inbound_ms);
    put_responses(b, &c->nps);
    put_responses(b, &c->csat);
    if (!b->failed && b->len > 0)
        b->data[b->len - 1] = '\n'; /* the last column ends the row */
}

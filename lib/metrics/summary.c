/*
 * metrics/summary.c — one customer's figures from their purchases and
 * refunds, read in time order: what customer_metrics.h's "aggregate"
 * computes. Pure C, no SQL: the full recompute runs it over a stream of
 * every customer's touchpoints, and the same code serves a single customer.
 */
#include "metrics/internal.h"

#include <math.h>
#include <string.h>

#define DAY_MS 86400000LL

/* The UTC day of t (ms since the epoch), as a day number. */
static long long day_of(long long t_ms)
{
    return t_ms >= 0 ? t_ms / DAY_MS : -((-t_ms + DAY_MS - 1) / DAY_MS);
}

/* Adds y, the series' next value (index n + 1). */
static void series_add(metrics_series *s, double y)
{
    s->n++;
    double i = (double)s->n;
    double di = i - s->mean_i, dy = y - s->mean;
    s->mean_i += di / (double)s->n;
    s->mean += dy / (double)s->n;
    s->m2 += dy * (y - s->mean);
    s->m2_i += di * (i - s->mean_i);
    s->c_iy += di * (y - s->mean);
}

/* The coefficient of variation: the population standard deviation over
 * the mean; NAN below two values or for a mean of 0. */
static double series_cv(const metrics_series *s)
{
    if (s->n < 2 || s->mean == 0)
        return NAN;
    return sqrt(s->m2 / (double)s->n) / s->mean;
}

/* The least-squares slope against the index; NAN below two values. */
static double series_slope(const metrics_series *s)
{
    return s->n < 2 ? NAN : s->c_iy / s->m2_i;
}

void metrics_acc_begin(metrics_acc *a, long long customer_id, long long as_of_ms, int window_days)
{
    memset(a, 0, sizeof *a);
    a->c.id = customer_id;
    a->as_of_ms = as_of_ms;
    /* A day counts in the window when it starts after as_of - window. */
    a->window_start_ms = as_of_ms - (long long)window_days * DAY_MS;
}

/* A scored response: the latest is the last one read (events come in time
 * order). */
static void add_response(metrics_customer *c, const metrics_event *e)
{
    metrics_scale_responses *r = e->scale == 'n' ? &c->nps : &c->csat;
    r->latest = e->score;
    r->count++;
    r->sum += e->score;
}

void metrics_acc_add(metrics_acc *a, const metrics_event *e)
{
    metrics_customer *c = &a->c;
    if (e->kind == 'f') {
        add_response(c, e);
        return;
    }
    if (!e->rated) {
        c->unrated++;
        return;
    }
    long long day = day_of(e->at_ms);
    bool in_window = day * DAY_MS > a->window_start_ms;
    double value = e->has_value ? e->value : 0;
    if (e->kind == 'r') {
        c->refunds++;
        a->refunded += fabs(value);
        if (in_window)
            a->window_net -= fabs(value);
        return;
    }
    c->purchases++;
    if (e->has_value) {
        a->gross += value;
        a->valued++;
        series_add(&a->spend, value);
    }
    if (in_window) {
        c->frequency++;
        a->window_net += value;
    }
    if (c->purchases == 1) {
        c->first_ms = e->at_ms;
        a->first_day = day;
        a->last_day = day;
        a->days = 1;
    } else if (day != a->last_day) {
        c->last_gap = (int)(day - a->last_day);
        series_add(&a->intervals, (double)c->last_gap);
        a->days++;
        a->last_day = day;
    }
    if (day == a->first_day) {
        a->first_day_gross += value;
        a->first_day_valued = a->first_day_valued || e->has_value;
    }
    c->last_ms = e->at_ms;
}

void metrics_acc_end(metrics_acc *a)
{
    metrics_customer *c = &a->c;
    c->historic = a->gross - a->refunded;
    c->monetary = a->window_net;
    c->has_aov = a->valued > 0;
    c->aov = c->has_aov ? a->gross / a->valued : 0;
    c->interval_mean = a->intervals.n > 0 ? a->intervals.mean : NAN;
    c->interval_cv = series_cv(&a->intervals);
    c->interval_trend = series_slope(&a->intervals);
    c->spend_cv = series_cv(&a->spend);
    c->spend_trend = series_slope(&a->spend);
    if (c->purchases == 0)
        return;
    c->recency_days = (double)(a->as_of_ms - c->last_ms) / (double)DAY_MS;
    c->x = a->days - 1;
    c->t_x = (int)(a->last_day - a->first_day);
    c->t_age = (int)(day_of(a->as_of_ms) - a->first_day);
    /* The mean of a repeat purchase day: all days but the first. */
    c->has_m = c->x > 0 && a->first_day_valued;
    c->m = c->has_m ? (a->gross - a->first_day_gross) / c->x : 0;
}

static const char *const stage_names[] = {
    [STAGE_NONE] = "",         [STAGE_PROSPECT] = "prospect", [STAGE_LAPSED] = "lapsed",
    [STAGE_AT_RISK] = "at_risk", [STAGE_WON_BACK] = "won_back", [STAGE_NEW] = "new",
    [STAGE_ACTIVE] = "active",
};

const char *metrics_stage_name(metrics_stage s)
{
    return s <= STAGE_ACTIVE ? stage_names[s] : "";
}

/* The first rule that holds decides: recency first (the customer is gone or
 * going whatever their history), then how they came back or came in. */
metrics_stage metrics_stage_of(const metrics_customer *c, const crm_metrics_config *cfg)
{
    if (c->purchases == 0)
        return STAGE_PROSPECT;
    if (c->recency_days > cfg->lapsed_days)
        return STAGE_LAPSED;
    if (c->recency_days > cfg->at_risk_days || (c->scored && c->p_alive < cfg->at_risk_p_alive))
        return STAGE_AT_RISK;
    if (c->last_gap > cfg->lapsed_days)
        return STAGE_WON_BACK;
    if (c->t_age <= cfg->new_days)
        return STAGE_NEW;
    return STAGE_ACTIVE;
}

short metrics_scale_score(const double bounds[4], double v)
{
    for (short s = 0; s < 4; s++)
        if (v <= bounds[s])
            return (short)(s + 1);
    return 5;
}

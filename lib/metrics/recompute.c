/*
 * metrics/recompute.c — the full recompute of every customer's metrics, a
 * job (see customer_metrics.h for what each phase computes).
 *
 * One pass over the data: the purchases and refunds of the live customers
 * up to as_of stream out of PostgreSQL by COPY, ordered by customer and
 * time, and each customer is summarised as they go by (metrics/summary.c).
 * The scores, the fits and the predictions are then computed here, over
 * the array of customers, and the result streams back by COPY into
 * metrics_staging, which replaces customer_metrics in one statement. The
 * customers' array takes about 150 bytes a customer.
 *
 * Checkpoint: once metrics_staging holds the result (committed), the job's
 * checkpoint says so, and a job taken over after its process died only
 * publishes; before that, it starts over (the fits it stored stay recorded).
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "auth.h"
#include "btyd.h"
#include "bytebuf.h"
#include "clock.h"
#include "customers.h"
#include "jbuf.h"
#include "json.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PHASE_LOAD, PHASE_RFM, PHASE_FIT, PHASE_SCORE, PHASE_STAGE, PHASE_PUBLISH, PHASES };

static const char *const phase_names[PHASES] = {"load", "rfm", "fit", "score", "stage", "publish"};

/* ---- load ----------------------------------------------------------------------- */

/* The rates to the reporting currency, a few hundred at most. */
static crm_stmt rates = CRM_STMT_RO("metrics_rates",
                                    "SELECT currency, rate::float8 FROM currency_rates");

#define LIVE_SQL "COPY (SELECT id FROM customers WHERE status = 'active' ORDER BY id) TO STDOUT"

/* Every purchase and refund as stored, unordered: the columns as they are
 * (printing them is the cheapest COPY there is); as_of's cut, the currency
 * conversion and the order by customer and time cost less here than in
 * PostgreSQL. */
#define EVENTS_SQL                                                                                 \
    "COPY (SELECT customer_id, id, occurred_at, type = 'refund', amount, currency"                 \
    " FROM touchpoints WHERE type IN ('purchase', 'refund')) TO STDOUT"

typedef struct rate {
    char currency[4];
    double rate;
} rate;

/* A purchase or refund as read, before it is sorted into its customer. */
typedef struct loaded_event {
    long long customer_id, id;
    metrics_event e;
} loaded_event;

typedef struct recompute {
    crm_job_ctx *job;
    crm_conn *c;
    crm_metrics_config cfg;
    char as_of[40];
    long long as_of_ms;
    metrics_customer *customers; /* every live customer, by id */
    size_t n, cap;
    metrics_customer **by_summary; /* the purchasers, by (x, t_x, t_age) */
    size_t npurchasers;
    loaded_event *events;
    size_t nevents, events_cap;
    rate *rates;
    size_t nrates;
    crm_bgnbd bg;
    crm_gg gg;
    bool have_bg, have_gg;
    json_t *seconds; /* each phase's, for the result */
} recompute;

/* Grows *items (of size bytes each) to hold one more. */
static bool grow(void **items, size_t *cap, size_t used, size_t size, crm_error *err)
{
    if (used < *cap)
        return true;
    size_t more = *cap ? *cap * 2 : 4096;
    void *grown = realloc(*items, more * size);
    if (grown == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    *items = grown;
    *cap = more;
    return true;
}

static bool live_line(const char *line, size_t len, void *ctx, crm_error *err)
{
    (void)len;
    recompute *R = ctx;
    if (!grow((void **)&R->customers, &R->cap, R->n, sizeof *R->customers, err))
        return false;
    R->customers[R->n++] = (metrics_customer){.id = strtoll(line, NULL, 10)};
    return true;
}

/* value in currency, converted: false when there is no rate for it. */
static bool convert(const recompute *R, const char *currency, double *value)
{
    if (strcmp(currency, R->cfg.currency) == 0)
        return true;
    for (size_t i = 0; i < R->nrates; i++)
        if (strcmp(R->rates[i].currency, currency) == 0) {
            *value *= R->rates[i].rate;
            return true;
        }
    return false;
}

/* One line of EVENTS_SQL: customer, id, occurred_at, refund, amount and
 * currency (\N: none). Those after as_of are passed. */
static bool event_line(const char *line, size_t len, void *ctx, crm_error *err)
{
    recompute *R = ctx;
    char buf[192];
    if (len >= sizeof buf)
        return crm_error_set(err, CRM_E_INTERNAL, "a touchpoint line is too long");
    memcpy(buf, line, len);
    buf[len] = '\0';
    char *fields[6], *p = buf;
    for (int i = 0; i < 6; i++) {
        fields[i] = p;
        p = strpbrk(p, "\t\n");
        if (p == NULL && i < 5)
            return crm_error_set(err, CRM_E_INTERNAL, "a touchpoint line is malformed");
        if (p != NULL)
            *p++ = '\0';
    }
    long long at_us;
    if (!crm_parse_pg_timestamp(fields[2], &at_us))
        return crm_error_set(err, CRM_E_INTERNAL, "a touchpoint's time cannot be read");
    long long at_ms = at_us >= 0 ? at_us / 1000 : -((-at_us + 999) / 1000);
    if (at_ms > R->as_of_ms)
        return true;
    if (!grow((void **)&R->events, &R->events_cap, R->nevents, sizeof *R->events, err))
        return false;
    loaded_event *l = &R->events[R->nevents++];
    l->customer_id = strtoll(fields[0], NULL, 10);
    l->id = strtoll(fields[1], NULL, 10);
    l->e = (metrics_event){.at_ms = at_ms, .refund = fields[3][0] == 't', .rated = true,
                           .has_value = strcmp(fields[4], "\\N") != 0};
    if (l->e.has_value) {
        l->e.value = strtod(fields[4], NULL);
        l->e.rated = convert(R, fields[5], &l->e.value);
    }
    return true;
}

/* The rate table, into R->rates. */
static bool load_rates(recompute *R, crm_error *err)
{
    PGresult *res = crm_db_exec(R->c, &rates, 0, NULL, err);
    if (res == NULL)
        return false;
    R->nrates = (size_t)PQntuples(res);
    R->rates = calloc(R->nrates ? R->nrates : 1, sizeof *R->rates);
    if (R->rates == NULL) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < R->nrates; i++) {
        snprintf(R->rates[i].currency, sizeof R->rates[i].currency, "%s",
                 PQgetvalue(res, (int)i, 0));
        R->rates[i].rate = strtod(PQgetvalue(res, (int)i, 1), NULL);
    }
    PQclear(res);
    return true;
}

static int by_customer_and_time(const void *a, const void *b)
{
    const loaded_event *x = a, *y = b;
    if (x->customer_id != y->customer_id)
        return (x->customer_id > y->customer_id) - (x->customer_id < y->customer_id);
    if (x->e.at_ms != y->e.at_ms)
        return (x->e.at_ms > y->e.at_ms) - (x->e.at_ms < y->e.at_ms);
    return (x->id > y->id) - (x->id < y->id);
}

/* Summarises each live customer from their events (both sorted by id);
 * events of customers not live (merged away, erased, deleted) are passed. */
static void summarise(recompute *R)
{
    size_t e = 0;
    for (size_t i = 0; i < R->n; i++) {
        metrics_customer *c = &R->customers[i];
        while (e < R->nevents && R->events[e].customer_id < c->id)
            e++;
        metrics_acc acc;
        metrics_acc_begin(&acc, c->id, R->as_of_ms, R->cfg.window_days);
        for (; e < R->nevents && R->events[e].customer_id == c->id; e++)
            metrics_acc_add(&acc, &R->events[e].e);
        metrics_acc_end(&acc);
        *c = acc.c;
    }
}

static bool phase_load(recompute *R, crm_error *err)
{
    if (!load_rates(R, err) || !crm_db_copy_out(R->c, LIVE_SQL, live_line, R, err) ||
        !crm_db_copy_out(R->c, EVENTS_SQL, event_line, R, err))
        return false;
    qsort(R->events, R->nevents, sizeof *R->events, by_customer_and_time);
    summarise(R);
    free(R->events);
    R->events = NULL;
    R->nevents = R->events_cap = 0;
    return true;
}

/* ---- rfm ------------------------------------------------------------------------ */

/* The customers who ever purchased, sorted by one value. */
typedef double (*rfm_value)(const metrics_customer *c);

static double recency_reversed(const metrics_customer *c)
{
    return -c->recency_days; /* the most recent ranks highest */
}

static double frequency_of(const metrics_customer *c)
{
    return c->frequency;
}

static double monetary_of(const metrics_customer *c)
{
    return c->monetary;
}

typedef struct ranked {
    double v;
    metrics_customer *c;
} ranked;

static int by_value(const void *a, const void *b)
{
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return (x > y) - (x < y);
}

/* Each customer's score for value: ceil(5 k / n), k the customers whose
 * value is at most theirs (ties share it), in integers. */
static void score_by(ranked *r, size_t n, rfm_value value, size_t which)
{
    for (size_t i = 0; i < n; i++)
        r[i].v = value(r[i].c);
    qsort(r, n, sizeof *r, by_value);
    for (size_t i = 0; i < n;) {
        size_t end = i + 1; /* past the last peer */
        while (end < n && r[end].v == r[i].v)
            end++;
        short score = (short)((5 * end + n - 1) / n);
        for (; i < end; i++) {
            if (which == 0)
                r[i].c->r = score;
            else if (which == 1)
                r[i].c->f = score;
            else
                r[i].c->mscore = score;
        }
    }
}

static bool phase_rfm(recompute *R, crm_error *err)
{
    ranked *r = malloc((R->n ? R->n : 1) * sizeof *r);
    if (r == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < R->n; i++)
        if (R->customers[i].purchases > 0)
            r[n++].c = &R->customers[i];
    static const rfm_value values[] = {recency_reversed, frequency_of, monetary_of};
    for (size_t which = 0; which < 3 && n > 0; which++)
        score_by(r, n, values[which], which);
    free(r);
    return true;
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

/* ---- fit ------------------------------------------------------------------------ */

/* The purchasers in order of (x, t_x, t_age): equal summaries side by side. */
static int by_summary(const void *a, const void *b)
{
    const metrics_customer *x = *(metrics_customer *const *)a, *y = *(metrics_customer *const *)b;
    if (x->x != y->x)
        return (x->x > y->x) - (x->x < y->x);
    if (x->t_x != y->t_x)
        return (x->t_x > y->t_x) - (x->t_x < y->t_x);
    return (x->t_age > y->t_age) - (x->t_age < y->t_age);
}

static bool same_summary(const metrics_customer *a, const metrics_customer *b)
{
    return a->x == b->x && a->t_x == b->t_x && a->t_age == b->t_age;
}

/* The purchasers sorted by summary (R->by_summary, R->npurchasers), made
 * once for the fit and the score. */
static bool sort_purchasers(recompute *R, crm_error *err)
{
    if (R->by_summary != NULL)
        return true;
    R->by_summary = malloc((R->n ? R->n : 1) * sizeof *R->by_summary);
    if (R->by_summary == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    R->npurchasers = 0;
    for (size_t i = 0; i < R->n; i++)
        if (R->customers[i].purchases > 0)
            R->by_summary[R->npurchasers++] = &R->customers[i];
    qsort(R->by_summary, R->npurchasers, sizeof *R->by_summary, by_summary);
    return true;
}

/* Parameters a business could use: finite and within [1e-6, 1e7]. A fit
 * that runs off to a boundary (data that BG/NBD does not describe: no
 * dropout, every customer alike) converges numerically but means nothing,
 * and is recorded as not converged. */
static bool plausible(const double *v, int n)
{
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i]) || v[i] < 1e-6 || v[i] > 1e7)
            return false;
    return true;
}

typedef struct spend_fit {
    pthread_t thread;
    const crm_gg_row *rows;
    size_t n;
    crm_gg out;
    crm_fit_report report;
    bool ok;
} spend_fit;

static void *fit_spend(void *arg)
{
    spend_fit *g = arg;
    g->ok = crm_gg_fit(g->rows, g->n, NULL, &g->out, &g->report);
    return NULL;
}

static bool phase_fit(recompute *R, crm_error *err)
{
    if (!sort_purchasers(R, err))
        return false;
    metrics_customer **p = R->by_summary;
    size_t n = R->npurchasers;
    crm_bgnbd_row *rows = malloc((n ? n : 1) * sizeof *rows);
    crm_gg_row *spend = malloc((n ? n : 1) * sizeof *spend);
    if (rows == NULL || spend == NULL) {
        free(rows);
        free(spend);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    size_t nrows = 0, nspend = 0;
    for (size_t i = 0; i < n; i++) {
        if (nrows > 0 && same_summary(p[i], p[i - 1]))
            rows[nrows - 1].w += 1;
        else
            rows[nrows++] = (crm_bgnbd_row){p[i]->x, p[i]->t_x, p[i]->t_age, 1};
        if (p[i]->x > 0 && p[i]->has_m && p[i]->m > 0)
            spend[nspend++] = (crm_gg_row){p[i]->x, p[i]->m, 1};
    }
    crm_fit_report bg_report = {0};
    crm_bgnbd bg = {NAN, NAN, NAN, NAN};
    /* The two fits are independent: Gamma-Gamma on a thread of its own. */
    spend_fit g = {.rows = spend, .n = nspend, .out = {NAN, NAN, NAN}};
    bool threaded = pthread_create(&g.thread, NULL, fit_spend, &g) == 0;
    if (!threaded)
        fit_spend(&g);
    bool bg_ok = crm_bgnbd_fit(rows, nrows, NULL, &bg, &bg_report) &&
                 plausible((const double[]){bg.r, bg.alpha, bg.a, bg.b}, 4);
    if (threaded)
        pthread_join(g.thread, NULL);
    crm_gg gg = g.out;
    crm_fit_report gg_report = g.report;
    bool gg_ok = g.ok && plausible((const double[]){gg.p, gg.q, gg.gamma}, 3) && gg.q > 1;
    free(rows);
    free(spend);
    return crm_db_begin(R->c, err) &&
           metrics_model_store(R->c, "bg_nbd", metrics_bgnbd_json(&bg), &bg_report, nrows, bg_ok,
                               R->as_of, crm_job_id(R->job), err) &&
           metrics_model_store(R->c, "gamma_gamma", metrics_gg_json(&gg), &gg_report, nspend,
                               gg_ok, R->as_of, crm_job_id(R->job), err) &&
           metrics_models_in_force(R->c, &R->bg, &R->have_bg, &R->gg, &R->have_gg, err) &&
           crm_db_commit(R->c, err);
}

/* ---- score ---------------------------------------------------------------------- */

static int by_predicted_value_desc(const void *a, const void *b)
{
    double x = (*(metrics_customer *const *)a)->predicted_value;
    double y = (*(metrics_customer *const *)b)->predicted_value;
    return (x < y) - (x > y);
}

/* Tiers over the customers with a predicted value: k, the customers whose
 * value is at least theirs (ties share it), within the top share. */
static bool assign_tiers(recompute *R, crm_error *err)
{
    metrics_customer **p = malloc((R->n ? R->n : 1) * sizeof *p);
    if (p == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < R->n; i++)
        if (R->customers[i].scored)
            p[n++] = &R->customers[i];
    qsort(p, n, sizeof *p, by_predicted_value_desc);
    /* Thousandths, as configured: k * 1000 <= permille * n, in integers. */
    long long top = llround(R->cfg.tier_top * 1000), high = llround(R->cfg.tier_high * 1000);
    for (size_t i = 0; i < n;) {
        size_t end = i + 1;
        while (end < n && p[end]->predicted_value == p[i]->predicted_value)
            end++;
        long long k = (long long)end * 1000;
        char tier = k <= top * (long long)n ? 't' : k <= high * (long long)n ? 'h' : 's';
        for (; i < end; i++)
            p[i]->tier = tier;
    }
    free(p);
    return true;
}

static bool phase_score(recompute *R, crm_error *err)
{
    if (!R->have_bg) {
        crm_log(CRM_LOG_WARN, "metrics: no BG/NBD fit in force, predictions left empty");
        return true;
    }
    if (!sort_purchasers(R, err))
        return false;
    metrics_customer **p = R->by_summary;
    size_t n = R->npurchasers;
    double horizon = R->cfg.horizon_days, p_alive = NAN, purchases = NAN, discounted = NAN;
    for (size_t i = 0; i < n; i++) {
        metrics_customer *c = p[i];
        if (i == 0 || !same_summary(c, p[i - 1])) { /* once per summary */
            p_alive = crm_bgnbd_p_alive(&R->bg, c->x, c->t_x, c->t_age);
            purchases = crm_bgnbd_expected_purchases(&R->bg, horizon, c->x, c->t_x, c->t_age);
            discounted = crm_bgnbd_discounted_purchases(&R->bg, c->x, c->t_x, c->t_age, horizon,
                                                        R->cfg.annual_discount);
        }
        /* Without a repeat spend, the population mean (x = 0). */
        bool own = c->has_m && c->m > 0;
        double spend = R->have_gg ? crm_gg_expected_spend(&R->gg, own ? c->x : 0, own ? c->m : 0)
                                  : NAN;
        if (!isfinite(p_alive) || !isfinite(purchases) || !isfinite(spend) ||
            !isfinite(discounted))
            continue; /* a prediction needs both models */
        c->scored = true;
        c->p_alive = p_alive;
        c->predicted_purchases = purchases;
        c->predicted_value = spend * discounted;
    }
    return assign_tiers(R, err);
}

/* ---- stage ---------------------------------------------------------------------- */

static crm_stmt stage_clear = CRM_STMT("metrics_stage_clear", "TRUNCATE metrics_staging");

#define STAGE_SQL                                                                                  \
    "COPY metrics_staging (customer_id, as_of, computed_at, purchases, refunds, unrated,"          \
    " first_purchase_at, last_purchase_at, historic_value, average_order_value, recency_days,"     \
    " frequency, monetary, r_score, f_score, m_score, rfm_cell, rfm_group, x, t_x, t_age,"         \
    " repeat_mean_value, p_alive, predicted_purchases, predicted_value, value_tier,"              \
    " interval_mean, interval_cv, interval_trend, spend_cv, spend_trend) FROM STDIN"

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

static void put_number(crm_bytebuf *b, bool present, double v)
{
    if (present && isfinite(v))
        put_fmt(b, "%.17g\t", v);
    else
        put_fmt(b, "\\N\t");
}

/* Amounts: to 4 decimals, as numeric. */
static void put_amount(crm_bytebuf *b, bool present, double v)
{
    if (present && isfinite(v))
        put_fmt(b, "%.4f\t", v);
    else
        put_fmt(b, "\\N\t");
}

static void put_time(crm_bytebuf *b, bool present, long long ms)
{
    char text[48];
    if (present) {
        crm_format_timestamp(ms, text);
        put_fmt(b, "%s\t", text);
    } else {
        put_fmt(b, "\\N\t");
    }
}

static void put_row(crm_bytebuf *b, const metrics_customer *c, const char *as_of,
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
    if (bought)
        put_fmt(b, "%d\t%d\t%d\t%d%d%d\t%s\t%d\t%d\t%d\t", c->r, c->f, c->mscore, c->r, c->f,
                c->mscore, rfm_group(c->r, c->f), c->x, c->t_x, c->t_age);
    else
        put_fmt(b, "\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t");
    put_amount(b, c->has_m, c->m);
    put_number(b, c->scored, c->p_alive);
    put_number(b, c->scored, c->predicted_purchases);
    put_number(b, c->scored, c->predicted_value);
    const char *tier = c->tier == 't' ? "top" : c->tier == 'h' ? "high" : "standard";
    if (c->scored && c->tier)
        put_fmt(b, "%s\t", tier);
    else
        put_fmt(b, "\\N\t");
    put_number(b, true, c->interval_mean); /* NAN: \N */
    put_number(b, true, c->interval_cv);
    put_number(b, true, c->interval_trend);
    put_number(b, true, c->spend_cv);
    put_number(b, true, c->spend_trend);
    if (!b->failed && b->len > 0)
        b->data[b->len - 1] = '\n'; /* the last column ends the row */
}

static bool phase_stage(recompute *R, crm_error *err)
{
    PGresult *res = crm_db_exec(R->c, &stage_clear, 0, NULL, err);
    if (res == NULL)
        return false;
    PQclear(res);
    if (!crm_db_copy_begin(R->c, STAGE_SQL, err))
        return false;
    char now[48];
    crm_format_timestamp(crm_wall_ms(), now);
    crm_bytebuf b;
    crm_bytebuf_init(&b);
    bool ok = true;
    for (size_t i = 0; ok && i < R->n; i++) {
        put_row(&b, &R->customers[i], R->as_of, now);
        if (b.failed)
            ok = crm_error_set(err, CRM_E_INTERNAL, "a staged row could not be written");
        else if (b.len >= 1 << 20 || i + 1 == R->n) {
            ok = crm_db_copy_put(R->c, b.data, b.len, err);
            b.len = 0;
        }
    }
    crm_bytebuf_free(&b);
    return crm_db_copy_end(R->c, ok ? NULL : "the recompute failed", err) && ok;
}

/* ---- publish -------------------------------------------------------------------- */

/* The staged table becomes customer_metrics and the old one the next
 * staging table: three renames under locks taken at once (waiting at most
 * lock_timeout for readers to finish), then the customers that stopped
 * being live while the job ran go. Prepared statements that name
 * customer_metrics are planned again by name and read the new table. */
static const char *const swap_sql[] = {
    "SET LOCAL lock_timeout = '5s'",
    "LOCK TABLE customer_metrics, metrics_staging IN ACCESS EXCLUSIVE MODE",
    "ALTER TABLE customer_metrics RENAME TO metrics_swap",
    "ALTER TABLE metrics_staging RENAME TO customer_metrics",
    "ALTER TABLE metrics_swap RENAME TO metrics_staging",
    ("DELETE FROM customer_metrics m USING customers c WHERE c.id = m.customer_id"
     " AND c.status <> 'active'"),
    "TRUNCATE metrics_staging",
};

static bool phase_publish(recompute *R, crm_error *err)
{
    for (size_t i = 0; i < sizeof swap_sql / sizeof swap_sql[0]; i++)
        if (!crm_db_command(R->c, swap_sql[i], err))
            return false;
    return true;
}

/* ---- the job -------------------------------------------------------------------- */

static bool report(recompute *R, int phase, int done, const json_t *checkpoint)
{
    return crm_job_progress(R->job, phase_names[phase], done, PHASES, checkpoint);
}

/* Runs one phase, inside a transaction when it writes; records its time. */
static bool run_phase(recompute *R, int phase, crm_error *err)
{
    static bool (*const run[PHASES])(recompute *, crm_error *) = {
        phase_load, phase_rfm, phase_fit, phase_score, phase_stage, phase_publish};
    if (!report(R, phase, phase, NULL))
        return crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
    long long started = crm_monotonic_ms();
    bool in_transaction = phase == PHASE_LOAD || phase == PHASE_STAGE || phase == PHASE_PUBLISH;
    for (int attempt = 1;; attempt++) {
        bool ok = (!in_transaction || crm_db_begin(R->c, err)) && run[phase](R, err) &&
                  (!in_transaction || crm_db_commit(R->c, err));
        if (ok)
            break;
        crm_db_rollback(R->c);
        /* The swap waited too long for readers' locks: try again. */
        if (phase != PHASE_PUBLISH || attempt == 3 || strcmp(crm_db_sqlstate(R->c), "55P03") != 0)
            return false;
        crm_error_clear(err);
    }
    double took = (double)(crm_monotonic_ms() - started) / 1000.0;
    json_object_set_new(R->seconds, phase_names[phase], json_real(took));
    crm_log(CRM_LOG_INFO, "metrics: recompute %s took %.3f s", phase_names[phase], took);
    return true;
}

/* as_of from the job's parameters (validated at submission), else now. */
static bool read_as_of(recompute *R, crm_error *err)
{
    const char *as_of = json_string_value(json_object_get(crm_job_params(R->job), "as_of"));
    if (as_of == NULL || strlen(as_of) >= sizeof R->as_of ||
        !crm_rfc3339_epoch_ms(as_of, &R->as_of_ms))
        return crm_error_set(err, CRM_E_INVALID, "the job has no valid as_of");
    snprintf(R->as_of, sizeof R->as_of, "%s", as_of);
    return true;
}

static bool run_recompute(crm_job_ctx *job, crm_error *err)
{
    recompute R = {.job = job, .c = crm_job_conn(job), .cfg = metrics_config()};
    if (!read_as_of(&R, err))
        return false;
    R.seconds = json_object();
    const json_t *at = crm_job_checkpoint(job);
    bool staged = json_is_true(json_object_get(at, "staged"));
    bool ok = true;
    for (int phase = staged ? PHASE_PUBLISH : PHASE_LOAD; ok && phase < PHASES; phase++) {
        ok = run_phase(&R, phase, err);
        if (ok && phase == PHASE_STAGE) {
            json_t *mark = json_pack("{s:b, s:I}", "staged", 1, "customers", (json_int_t)R.n);
            ok = report(&R, phase, phase + 1, mark) ||
                 crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
            json_decref(mark);
        }
    }
    free(R.customers);
    free(R.by_summary);
    free(R.events);
    free(R.rates);
    if (!ok) {
        json_decref(R.seconds);
        return false;
    }
    long long customers = staged ? json_integer_value(json_object_get(at, "customers")) : (long long)R.n;
    crm_job_set_result(job, json_pack("{s:s, s:I, s:o}", "as_of", R.as_of, "customers",
                                      (json_int_t)customers, "phase_seconds", R.seconds));
    return true;
}

const crm_job_kind crm_metrics_recompute_kind = {"metrics_recompute", run_recompute,
                                                 CRM_SCOPE_METRICS_READ};

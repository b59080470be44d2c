/*
 * metrics/recompute.c — the full recompute of every customer's metrics, a
 * job (see customer_metrics.h for what each phase computes).
 *
 * One pass over the data: the purchases, refunds and scored feedback
 * stream out of PostgreSQL by COPY as stored (cut at as_of, converted and
 * sorted by customer and time here), and each live customer is summarised
 * from them (metrics/load.c, summary.c); a second connection, in the same
 * snapshot, counts each customer's touchpoints (engagement) from the load
 * until the stage, beside the ranking and the fits. The scores, the fits
 * and the predictions are computed here, over the array of customers, and
 * the result streams back by binary COPY on two connections into
 * metrics_staging (metrics/rows.c), indexed after, which then replaces
 * customer_metrics by a swap of names (see phase_publish for the locks).
 * Each phase's seconds are in the job's result. The customers' array takes
 * about 250 bytes a customer, the events 48 bytes each while they are
 * read.
 *
 * Checkpoint: once metrics_staging holds the result (committed), the job's
 * checkpoint says so, and a job taken over after its process died only
 * publishes; before that, it starts over (the fits it stored stay recorded).
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "segment_store.h"
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

/* The live customers: every id (the primary key's index alone) but the
 * ones in customers_not_active_idx (the few that are not): a third of the
 * time of reading each row's status. */
#define LIVE_SQL                                                                                   \
    "COPY (SELECT id FROM customers c WHERE NOT EXISTS (SELECT FROM customers n WHERE n.id ="     \
    " c.id AND n.status <> 'active') ORDER BY id) TO STDOUT"

/* Every purchase, refund and scored feedback as stored, unordered: the
 * columns as they are (printing them is the cheapest COPY there is); as_of's
 * cut, the currency conversion and the order by customer and time cost less
 * here than in PostgreSQL. */
#define EVENTS_SQL                                                                                 \
    "COPY (SELECT " METRICS_EVENT_COLUMNS " FROM touchpoints WHERE " METRICS_EVENT_WHERE           \
    ") TO STDOUT"

/* Every customer's touchpoints of any kind, counted. */
#define ENGAGEMENT_SQL                                                                             \
    "COPY (SELECT " METRICS_ENGAGEMENT_COLUMNS " FROM touchpoints WHERE " METRICS_ENGAGEMENT_WHERE \
    " GROUP BY customer_id) TO STDOUT"

/* as_of for the engagement's COPY, where the change feeds stand (the
 * changes of transactions from xmin on may be missing from what the load
 * reads: the follower goes over them again once this is published), and
 * the snapshot that the engagement's connection reads too. */
static crm_stmt load_start = CRM_STMT(
    "metrics_load_start",
    "SELECT set_config('crmd.metrics_as_of', $1, true), pg_snapshot_xmin(pg_current_snapshot())"
    "::text, " TS("now()") ", pg_export_snapshot()");

/* A load's statements scan millions of rows once: compiling them (JIT)
 * costs more than it saves (2 s of the engagement's 8), and the
 * engagement's hash table over every customer would spill to disk with the
 * default work_mem. */
static bool load_settings(crm_conn *c, crm_error *err)
{
    return crm_db_command(c, "SET LOCAL jit = off", err) &&
           crm_db_command(c, "SET LOCAL work_mem = '256MB'", err);
}

static crm_stmt engagement_as_of =
    CRM_STMT("metrics_engagement_as_of", "SELECT set_config('crmd.metrics_as_of', $1, true)");

/* The engagement's aggregate (every touchpoint, by customer) runs on a
 * second connection, in the load's snapshot, from the load until the
 * stage: PostgreSQL aggregates on one core while this process reads the
 * events, ranks and fits on the other. Its thread appends to L.eng alone. */
typedef struct engagement_reader {
    pthread_t thread;
    crm_conn *c;
    bool running, ok;
    crm_error err;
    long long started_ms, took_ms;
} engagement_reader;

typedef struct recompute {
    crm_job_ctx *job;
    crm_conn *c;
    crm_metrics_config cfg;
    char as_of[40];
    metrics_load L;                /* L.customers: every live customer, by id */
    metrics_customer **by_summary; /* the purchasers, by (x, t_x, t_age) */
    size_t npurchasers;
    crm_bgnbd bg;
    crm_gg gg;
    bool have_bg, have_gg, refit;
    char load_xmin[32], loaded_at[40]; /* see load_start */
    char snapshot[72];                 /* the load's, exported */
    engagement_reader eng;
    json_t *seconds;                   /* each phase's, for the result */
} recompute;

static bool live_line(const char *line, size_t len, void *ctx, crm_error *err)
{
    (void)len;
    recompute *R = ctx;
    return metrics_load_customer(&R->L, strtoll(line, NULL, 10), err);
}

static bool event_line(const char *line, size_t len, void *ctx, crm_error *err)
{
    recompute *R = ctx;
    char buf[256], *f[METRICS_EVENT_FIELDS];
    if (!metrics_split_line(line, len, buf, sizeof buf, f, METRICS_EVENT_FIELDS))
        return crm_error_set(err, CRM_E_INTERNAL, "a touchpoint line is malformed");
    return metrics_load_event(&R->L, f, err);
}

static bool engagement_line(const char *line, size_t len, void *ctx, crm_error *err)
{
    recompute *R = ctx;
    char buf[128], *f[3];
    if (!metrics_split_line(line, len, buf, sizeof buf, f, 3))
        return crm_error_set(err, CRM_E_INTERNAL, "an engagement line is malformed");
    return metrics_load_engagement(&R->L, f, err);
}

static bool start_load(recompute *R, crm_error *err)
{
    const char *params[] = {R->as_of};
    PGresult *res = crm_db_exec(R->c, &load_start, 1, params, err);
    if (res == NULL)
        return false;
    snprintf(R->load_xmin, sizeof R->load_xmin, "%s", PQgetvalue(res, 0, 1));
    snprintf(R->loaded_at, sizeof R->loaded_at, "%s", PQgetvalue(res, 0, 2));
    snprintf(R->snapshot, sizeof R->snapshot, "%s", PQgetvalue(res, 0, 3));
    PQclear(res);
    return true;
}

static void *read_engagement(void *arg)
{
    recompute *R = arg;
    engagement_reader *e = &R->eng;
    e->ok = crm_db_copy_out(e->c, ENGAGEMENT_SQL, engagement_line, R, &e->err) &&
            crm_db_commit(e->c, &e->err);
    e->took_ms = crm_monotonic_ms() - e->started_ms;
    return NULL;
}

/* Opens the second connection in the load's snapshot (here, while the
 * load's transaction that exported it is open) and starts the aggregate. */
static bool engagement_start(recompute *R, crm_error *err)
{
    engagement_reader *e = &R->eng;
    *e = (engagement_reader){.err = CRM_ERROR_INIT, .started_ms = crm_monotonic_ms()};
    const char *params[] = {R->as_of};
    e->c = crm_job_open_conn(R->job, err);
    if (e->c == NULL)
        return false;
    if (!crm_db_begin_snapshot(e->c, R->snapshot, err) || !load_settings(e->c, err) ||
        !metrics_exec(e->c, &engagement_as_of, 1, params, err)) {
        crm_db_close_private(e->c);
        return false;
    }
    if (pthread_create(&e->thread, NULL, read_engagement, R) != 0) {
        crm_db_close_private(e->c);
        return crm_error_set(err, CRM_E_INTERNAL, "cannot start the engagement's reader");
    }
    e->running = true;
    return true;
}

/* Waits for the aggregate (if it runs) and closes its connection; its
 * failure, if any, goes to err (NULL: dropped). */
static bool engagement_finish(recompute *R, crm_error *err)
{
    engagement_reader *e = &R->eng;
    if (!e->running)
        return true;
    long long waited = crm_monotonic_ms();
    pthread_join(e->thread, NULL);
    waited = crm_monotonic_ms() - waited;
    crm_db_close_private(e->c);
    e->running = false;
    crm_log(CRM_LOG_INFO, "metrics: the engagement's aggregate took %.3f s (%.3f s waited for)",
            (double)e->took_ms / 1000.0, (double)waited / 1000.0);
    if (e->ok)
        crm_error_clear(&e->err);
    else
        crm_error_move(err, &e->err);
    return e->ok;
}

static bool phase_load(recompute *R, crm_error *err)
{
    if (!crm_db_command(R->c, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", err) ||
        !load_settings(R->c, err) || !start_load(R, err) || !metrics_load_rates(&R->L, R->c, err) ||
        !crm_db_copy_out(R->c, LIVE_SQL, live_line, R, err) || !engagement_start(R, err) ||
        !crm_db_copy_out(R->c, EVENTS_SQL, event_line, R, err))
        return false;
    metrics_load_summarise(&R->L);
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
    ranked *r = malloc((R->L.n ? R->L.n : 1) * sizeof *r);
    if (r == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < R->L.n; i++)
        if (R->L.customers[i].purchases > 0)
            r[n++].c = &R->L.customers[i];
    static const rfm_value values[] = {recency_reversed, frequency_of, monetary_of};
    for (size_t which = 0; which < 3 && n > 0; which++)
        score_by(r, n, values[which], which);
    free(r);
    return true;
}

/* ---- fit ------------------------------------------------------------------------ */

/* The purchasers in order of (x, t_age, t_x): equal summaries side by
 * side, and within equal (x, t_age) the customers whose predictions share
 * their 2F1 evaluations (crm_bgnbd_expected_if_alive). */
static int by_summary(const void *a, const void *b)
{
    const metrics_customer *x = *(metrics_customer *const *)a, *y = *(metrics_customer *const *)b;
    if (x->x != y->x)
        return (x->x > y->x) - (x->x < y->x);
    if (x->t_age != y->t_age)
        return (x->t_age > y->t_age) - (x->t_age < y->t_age);
    return (x->t_x > y->t_x) - (x->t_x < y->t_x);
}

void metrics_sort_by_summary(metrics_customer **p, size_t n)
{
    qsort(p, n, sizeof *p, by_summary);
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
    R->by_summary = malloc((R->L.n ? R->L.n : 1) * sizeof *R->by_summary);
    if (R->by_summary == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    R->npurchasers = 0;
    for (size_t i = 0; i < R->L.n; i++)
        if (R->L.customers[i].purchases > 0)
            R->by_summary[R->npurchasers++] = &R->L.customers[i];
    metrics_sort_by_summary(R->by_summary, R->npurchasers);
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

/* The models in force, without fitting (the job's "refit": false). */
static bool keep_models(recompute *R, crm_error *err)
{
    return metrics_models_in_force(R->c, &R->bg, &R->have_bg, &R->gg, &R->have_gg, err);
}

static bool phase_fit(recompute *R, crm_error *err)
{
    if (!R->refit)
        return keep_models(R, err);
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
           metrics_model_store(R->c, "gamma_gamma", metrics_gg_json(&gg), &gg_report, nspend, gg_ok,
                               R->as_of, crm_job_id(R->job), err) &&
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
    metrics_customer **p = malloc((R->L.n ? R->L.n : 1) * sizeof *p);
    if (p == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < R->L.n; i++)
        if (R->L.customers[i].scored)
            p[n++] = &R->L.customers[i];
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

void metrics_predict(metrics_customer **p, size_t n, const crm_bgnbd *bg, const crm_gg *gg,
                     bool have_gg, const crm_metrics_config *cfg)
{
    double horizon = cfg->horizon_days, p_alive = NAN, purchases = NAN, discounted = NAN;
    double purchases_if_alive = NAN, discounted_if_alive = NAN;
    for (size_t i = 0; i < n; i++) {
        metrics_customer *c = p[i];
        /* The parts of x and T alone once per (x, T), P(alive) once per
         * summary (p is in summary order). */
        if (i == 0 || c->x != p[i - 1]->x || c->t_age != p[i - 1]->t_age) {
            purchases_if_alive = crm_bgnbd_expected_if_alive(bg, horizon, c->x, c->t_age);
            discounted_if_alive =
                crm_bgnbd_discounted_if_alive(bg, c->x, c->t_age, horizon, cfg->annual_discount);
        }
        if (i == 0 || !same_summary(c, p[i - 1])) {
            p_alive = crm_bgnbd_p_alive(bg, c->x, c->t_x, c->t_age);
            purchases = p_alive * purchases_if_alive;
            discounted = p_alive * discounted_if_alive;
        }
        /* Without a repeat spend, the population mean (x = 0). */
        bool own = c->has_m && c->m > 0;
        double spend = have_gg ? crm_gg_expected_spend(gg, own ? c->x : 0, own ? c->m : 0) : NAN;
        if (!isfinite(p_alive) || !isfinite(purchases) || !isfinite(spend) || !isfinite(discounted))
            continue; /* a prediction needs both models */
        c->scored = true;
        c->p_alive = p_alive;
        c->predicted_purchases = purchases;
        c->predicted_value = spend * discounted;
    }
}

/* Every customer's lifecycle stage, once the predictions are made. */
static void assign_stages(recompute *R)
{
    for (size_t i = 0; i < R->L.n; i++)
        R->L.customers[i].stage = metrics_stage_of(&R->L.customers[i], &R->cfg);
}

/* Half of the purchasers' predictions, on a thread of its own. */
typedef struct predict_half {
    pthread_t thread;
    const recompute *R;
    metrics_customer **p;
    size_t n;
} predict_half;

static void *predict_half_run(void *arg)
{
    predict_half *h = arg;
    metrics_predict(h->p, h->n, &h->R->bg, &h->R->gg, h->R->have_gg, &h->R->cfg);
    return NULL;
}

/* The predictions are independent from one customer to the next: the
 * second half of the purchasers runs on another thread (the machine's other
 * core; PostgreSQL is idle in this phase). */
static void predict_all(recompute *R)
{
    size_t half = R->npurchasers / 2;
    predict_half h = {.R = R, .p = R->by_summary + half, .n = R->npurchasers - half};
    bool threaded = pthread_create(&h.thread, NULL, predict_half_run, &h) == 0;
    metrics_predict(R->by_summary, threaded ? half : R->npurchasers, &R->bg, &R->gg, R->have_gg,
                    &R->cfg);
    if (threaded)
        pthread_join(h.thread, NULL);
}

static bool phase_score(recompute *R, crm_error *err)
{
    if (!R->have_bg) {
        crm_log(CRM_LOG_WARN, "metrics: no BG/NBD fit in force, predictions left empty");
    } else {
        if (!sort_purchasers(R, err))
            return false;
        predict_all(R);
        if (!assign_tiers(R, err))
            return false;
    }
    assign_stages(R);
    return true;
}

/* ---- stage ---------------------------------------------------------------------- */

/* The staging table is emptied and loses its indexes in a transaction of
 * its own; then two connections each COPY half of the rows, side by side
 * (PostgreSQL spends most of the time forming the tuples, on one core per
 * connection); then a VACUUM (FREEZE, ANALYZE) leaves every page frozen
 * and all-visible, as COPY FREEZE would have on one connection (a quarter
 * of a second for a million rows: the first readers after the swap set no
 * hint bits and autovacuum has nothing to rewrite), with the table's
 * statistics; then the indexes are built (0021: about half the time of
 * keeping them up row by row) and the scales stored. A job that dies in
 * between starts over from the load: the staging table is no one else's. */
static crm_stmt stage_clear = CRM_STMT("metrics_stage_clear", "TRUNCATE metrics_staging");
static crm_stmt staging_drop_indexes =
    CRM_STMT("metrics_staging_drop_indexes", "SELECT crm_metrics_staging_drop_indexes()");
static crm_stmt staging_build_indexes =
    CRM_STMT("metrics_staging_build_indexes", "SELECT crm_metrics_staging_build_indexes()");

#define STAGE_SQL "COPY metrics_staging (" METRICS_ROW_COLUMNS ") FROM STDIN (FORMAT binary)"

/* One half of the rows, on its own connection and transaction. */
typedef struct stage_half {
    pthread_t thread;
    crm_conn *c;
    const metrics_customer *customers;
    size_t n;
    long long as_of_ms, now_ms;
    bool ok;
    crm_error err;
} stage_half;

static bool stage_rows(stage_half *h)
{
    return crm_db_begin(h->c, &h->err) &&
           metrics_copy_rows(h->c, STAGE_SQL, h->customers, h->n, h->as_of_ms, h->now_ms,
                             &h->err) &&
           crm_db_commit(h->c, &h->err);
}

static void *stage_half_run(void *arg)
{
    stage_half *h = arg;
    h->ok = stage_rows(h);
    return NULL;
}

/* The rows, half on a second connection and thread: both halves
 * committed, or false with err set. */
static bool stage_all_rows(recompute *R, crm_error *err)
{
    size_t half = R->L.n / 2;
    long long now_ms = crm_wall_ms();
    stage_half mine = {.c = R->c, .customers = R->L.customers, .n = half,
                       .as_of_ms = R->L.as_of_ms, .now_ms = now_ms, .err = CRM_ERROR_INIT};
    stage_half other = mine;
    other.customers = R->L.customers + half;
    other.n = R->L.n - half;
    other.c = crm_job_open_conn(R->job, err);
    if (other.c == NULL)
        return false;
    if (pthread_create(&other.thread, NULL, stage_half_run, &other) != 0) {
        crm_db_close_private(other.c);
        return crm_error_set(err, CRM_E_INTERNAL, "cannot start the staging's second writer");
    }
    mine.ok = stage_rows(&mine);
    if (!mine.ok)
        crm_db_rollback(R->c);
    pthread_join(other.thread, NULL);
    crm_db_close_private(other.c); /* rolled back, if it failed */
    stage_half *failed = !mine.ok ? &mine : !other.ok ? &other : NULL;
    if (failed != NULL)
        crm_error_move(err, &failed->err);
    crm_error_clear(&mine.err);
    crm_error_clear(&other.err);
    return failed == NULL;
}

static bool phase_stage(recompute *R, crm_error *err)
{
    if (!engagement_finish(R, err))
        return false;
    metrics_load_add_engagement(&R->L);
    metrics_scales scales;
    metrics_scales_from(R->L.customers, R->L.n, &scales);
    bool ok = crm_db_begin(R->c, err) && metrics_exec(R->c, &stage_clear, 0, NULL, err) &&
              metrics_exec(R->c, &staging_drop_indexes, 0, NULL, err) &&
              crm_db_commit(R->c, err) && stage_all_rows(R, err) &&
              crm_db_command(R->c, "VACUUM (FREEZE, ANALYZE) metrics_staging", err) &&
              crm_db_begin(R->c, err) &&
              crm_db_command(R->c, "SET LOCAL maintenance_work_mem = '256MB'", err) &&
              metrics_exec(R->c, &staging_build_indexes, 0, NULL, err) &&
              metrics_scales_store(R->c, &scales, R->as_of, R->L.n, crm_job_id(R->job), err) &&
              crm_db_commit(R->c, err);
    if (!ok)
        crm_db_rollback(R->c);
    return ok;
}

/* ---- publish -------------------------------------------------------------------- */

/* The follower's rows written after the load read its data are newer than
 * the staged ones: they stay. */
static crm_stmt keep_newer_drop =
    CRM_STMT("metrics_publish_keep_newer_drop",
             "DELETE FROM metrics_staging s USING customer_metrics m"
             " WHERE m.customer_id = s.customer_id AND m.computed_at > $1::timestamptz");

static crm_stmt keep_newer_copy =
    CRM_STMT("metrics_publish_keep_newer_copy",
             "INSERT INTO metrics_staging (" METRICS_ROW_COLUMNS ") SELECT " METRICS_ROW_COLUMNS
             " FROM customer_metrics WHERE computed_at > $1::timestamptz");

/* Every stage that changed, before the swap. */
static crm_stmt record_transitions =
    CRM_STMT("metrics_publish_transitions",
             "INSERT INTO customer_lifecycle (customer_id, stage, previous, changed_at)"
             " SELECT n.customer_id, n.lifecycle_stage, o.lifecycle_stage, n.as_of"
             " FROM metrics_staging n LEFT JOIN customer_metrics o ON o.customer_id = n.customer_id"
             " WHERE n.lifecycle_stage IS NOT NULL AND n.lifecycle_stage IS DISTINCT FROM "
             "o.lifecycle_stage");

/* The follower goes on from the load: every change older than the load's
 * xmin is in what was published (a follower behind it skips them), every
 * later one is gone over again (a follower ahead of it goes back). */
static crm_stmt rewind_follower =
    CRM_STMT("metrics_publish_rewind_follower",
             "UPDATE metrics_follow SET tp_xid = $1::xid8, tp_seq = 0, cu_xid = $1::xid8,"
             " cu_seq = 0, updated_at = now()");

/* The staged table becomes customer_metrics. First, with the writers of
 * customer_metrics held off (the follower, erasures) and its readers
 * served, the staged rows are made final: the follower's newer rows
 * replace theirs, the customers who stopped being live while the job ran
 * go, and the changes of stage are recorded. (The follower's place is
 * locked before customer_metrics, the order of a sweep, which locks its
 * place FOR UPDATE first: no deadlock.) Then, under locks that hold the
 * readers for an instant (waiting at most lock_timeout for the ones
 * reading), the tables swap names (crm_metrics_swap, 0021) and the old
 * rows go. Prepared statements that name customer_metrics are planned
 * again by name and read the new table. */
static crm_stmt swap_tables = CRM_STMT("metrics_swap", "SELECT crm_metrics_swap()");

static bool phase_publish(recompute *R, crm_error *err)
{
    const char *loaded_at[] = {R->loaded_at};
    if (!crm_db_command(R->c, "SET LOCAL lock_timeout = '5s'", err) ||
        !crm_db_command(R->c, "SET LOCAL jit = off", err) ||
        /* The follower's order: its place FOR UPDATE, then customer_metrics. */
        !crm_db_command(R->c, "LOCK TABLE metrics_follow IN EXCLUSIVE MODE", err) ||
        !crm_db_command(R->c, "LOCK TABLE customer_metrics IN SHARE MODE", err) ||
        !metrics_exec(R->c, &keep_newer_drop, 1, loaded_at, err) ||
        !metrics_exec(R->c, &keep_newer_copy, 1, loaded_at, err) ||
        !crm_db_command(R->c,
                        "DELETE FROM metrics_staging m USING customers c WHERE c.id ="
                        " m.customer_id AND c.status <> 'active'",
                        err) ||
        !metrics_exec(R->c, &record_transitions, 0, NULL, err))
        return false;
    return crm_db_command(R->c,
                          "LOCK TABLE customer_metrics, metrics_staging IN ACCESS EXCLUSIVE MODE",
                          err) &&
           metrics_exec(R->c, &swap_tables, 0, NULL, err) &&
           crm_db_command(R->c, "TRUNCATE metrics_staging", err) &&
           metrics_exec(R->c, &rewind_follower, 1, (const char *[]){R->load_xmin}, err);
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
    /* (The stage runs transactions of its own.) */
    bool in_transaction = phase == PHASE_LOAD || phase == PHASE_PUBLISH;
    for (int attempt = 1;; attempt++) {
        bool ok = (!in_transaction || crm_db_begin(R->c, err)) && run[phase](R, err) &&
                  (!in_transaction || crm_db_commit(R->c, err));
        if (ok)
            break;
        crm_db_rollback(R->c);
        /* The swap waited too long for readers' locks, or met a sweep of
         * the follower: try again. */
        const char *state = crm_db_sqlstate(R->c);
        bool again = strcmp(state, "55P03") == 0 || strcmp(state, "40P01") == 0 ||
                     strcmp(state, "40001") == 0;
        if (phase != PHASE_PUBLISH || attempt == 3 || !again)
            return false;
        crm_error_clear(err);
    }
    double took = (double)(crm_monotonic_ms() - started) / 1000.0;
    json_object_set_new(R->seconds, phase_names[phase], json_real(took));
    crm_log(CRM_LOG_INFO, "metrics: recompute %s took %.3f s", phase_names[phase], took);
    return true;
}

/* as_of and refit from the job's parameters (validated at submission). */
static bool read_params(recompute *R, crm_error *err)
{
    const json_t *params = crm_job_params(R->job);
    const json_t *refit = json_object_get(params, "refit");
    R->refit = refit == NULL || json_is_true(refit);
    const char *as_of = json_string_value(json_object_get(params, "as_of"));
    if (as_of == NULL || strlen(as_of) >= sizeof R->as_of ||
        !crm_rfc3339_epoch_ms(as_of, &R->L.as_of_ms))
        return crm_error_set(err, CRM_E_INVALID, "the job has no valid as_of");
    snprintf(R->as_of, sizeof R->as_of, "%s", as_of);
    return true;
}

/* What a job taken over after staging needs to publish. */
static bool read_staged(recompute *R, const json_t *at)
{
    const char *xmin = json_string_value(json_object_get(at, "load_xmin"));
    const char *loaded_at = json_string_value(json_object_get(at, "loaded_at"));
    if (xmin == NULL || loaded_at == NULL)
        return false;
    snprintf(R->load_xmin, sizeof R->load_xmin, "%s", xmin);
    snprintf(R->loaded_at, sizeof R->loaded_at, "%s", loaded_at);
    return true;
}

/* The base's distributions and daily snapshot, and its cohorts and
 * baskets, follow each published recompute of the present (observed up to
 * within the last day; a backtest leaves the base's history alone), as jobs
 * of their own: the recompute's time stays its own. One already queued or
 * running, or a kind this process has not registered, is passed. */
static void queue_followers(long long as_ms)
{
    if (as_ms < crm_wall_ms() - 86400 * 1000LL)
        return;
    json_t *(*const submit[])(long long, long long, long long *,
                              crm_error *) = {crm_metrics_base_submit, crm_metrics_patterns_submit};
    for (size_t i = 0; i < sizeof submit / sizeof submit[0]; i++) {
        crm_error err = CRM_ERROR_INIT;
        long long running = 0;
        json_t *job = submit[i](as_ms, 0, &running, &err);
        if (job == NULL && err.code != CRM_E_CONFLICT && err.code != CRM_E_INVALID)
            crm_log(CRM_LOG_WARN, "metrics: cannot queue the base's job: %s", err.detail);
        json_decref(job);
        crm_error_clear(&err);
    }
    /* Every customer's metrics changed: the segments that read them are
     * rebuilt (each a job; only those whose standing changed move). */
    crm_error err = CRM_ERROR_INIT;
    if (!crm_segments_rebuild_reading(CRM_RULE_READS_METRICS, "metrics", &err))
        crm_log(CRM_LOG_WARN, "metrics: cannot queue the segments' rebuilds: %s", err.detail);
    crm_error_clear(&err);
}

static bool run_recompute(crm_job_ctx *job, crm_error *err)
{
    recompute R = {.job = job, .c = crm_job_conn(job), .cfg = metrics_config()};
    R.L.cfg = R.cfg;
    if (!read_params(&R, err))
        return false;
    R.seconds = json_object();
    const json_t *at = crm_job_checkpoint(job);
    bool staged = json_is_true(json_object_get(at, "staged")) && read_staged(&R, at);
    bool ok = true;
    /* A phase over a large base can outlast the lease (load and stage
     * stream, fit and score compute, without a progress between). */
    crm_job_keeper *keeper = crm_job_keep_lease(job);
    for (int phase = staged ? PHASE_PUBLISH : PHASE_LOAD; ok && phase < PHASES; phase++) {
        ok = run_phase(&R, phase, err);
        if (ok && phase == PHASE_STAGE) {
            json_t *mark =
                json_pack("{s:b, s:I, s:s, s:s}", "staged", 1, "customers", (json_int_t)R.L.n,
                          "load_xmin", R.load_xmin, "loaded_at", R.loaded_at);
            ok = report(&R, phase, phase + 1, mark) ||
                 crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
            json_decref(mark);
        }
    }
    crm_job_keeper_stop(keeper);
    engagement_finish(&R, NULL); /* after a failure before the stage */
    size_t n = R.L.n;
    long long as_of_ms = R.L.as_of_ms;
    metrics_load_free(&R.L);
    free(R.by_summary);
    if (!ok) {
        json_decref(R.seconds);
        return false;
    }
    long long customers =
        staged ? json_integer_value(json_object_get(at, "customers")) : (long long)n;
    crm_job_set_result(job, json_pack("{s:s, s:I, s:b, s:o}", "as_of", R.as_of, "customers",
                                      (json_int_t)customers, "refit", R.refit, "phase_seconds",
                                      R.seconds));
    queue_followers(as_of_ms);
    return true;
}

const crm_job_kind crm_metrics_recompute_kind = {"metrics_recompute", run_recompute,
                                                 CRM_SCOPE_METRICS_READ};

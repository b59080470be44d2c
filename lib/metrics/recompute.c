/*
 * metrics/recompute.c — the full recompute of every customer's metrics, a
 * job in five phases (see metrics.h). Each phase is one transaction on the
 * job's own connection and ends with a checkpoint {"phase": n, "as_of",
 * "staged"}: a job taken over after its process died resumes at the next
 * phase, or from the start when metrics_staging (unlogged) lost its rows in
 * a crash of the database.
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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PHASE_AGGREGATE = 1, PHASE_RFM, PHASE_FIT, PHASE_SCORE, PHASE_PUBLISH, PHASES = PHASE_PUBLISH };

static const char *const phase_names[] = {"", "aggregate", "rfm", "fit", "score", "publish"};

/* ---- aggregate --------------------------------------------------------------- */

/* $1 as_of, $2 the reporting currency, $3 the RFM window in days. Per
 * (customer, UTC day) first, then per customer: a purchase day counts once
 * for the models (x = purchase days - 1), as in the papers' discrete time. */
static crm_stmt stage_clear = CRM_STMT("metrics_stage_clear", "TRUNCATE metrics_staging");

static crm_stmt stage_aggregate = CRM_STMT(
    "metrics_stage_aggregate",
    "INSERT INTO metrics_staging (customer_id, as_of, computed_at, purchases, refunds, unrated,"
    " first_purchase_at, last_purchase_at, historic_value, average_order_value, recency_days,"
    " frequency, monetary, x, t_x, t_age, repeat_mean_value) "
    "SELECT c.id, $1::timestamptz, now(), coalesce(a.purchases, 0), coalesce(a.refunds, 0),"
    " coalesce(a.unrated, 0), a.first_at, a.last_at, coalesce(a.net, 0), a.aov,"
    " extract(epoch FROM $1::timestamptz - a.last_at)::float8 / 86400,"
    " coalesce(a.window_purchases, 0), coalesce(a.window_net, 0), a.x, a.t_x, a.t_age, a.m "
    "FROM customers c LEFT JOIN ("
    "  SELECT d.customer_id, sum(d.purchases)::int AS purchases, sum(d.refunds)::int AS refunds,"
    "   sum(d.unrated)::int AS unrated, min(d.first_at) AS first_at, max(d.last_at) AS last_at,"
    "   coalesce(sum(d.gross), 0) - coalesce(sum(d.refunded), 0) AS net,"
    "   sum(d.gross) / nullif(sum(d.valued), 0) AS aov,"
    "   sum(d.purchases) FILTER (WHERE d.day > $1::timestamptz - make_interval(days => $3))::int"
    "    AS window_purchases,"
    "   coalesce(sum(d.gross) FILTER (WHERE d.day > $1::timestamptz - make_interval(days => $3)),"
    "    0) - coalesce(sum(d.refunded) FILTER (WHERE d.day > $1::timestamptz -"
    "    make_interval(days => $3)), 0) AS window_net,"
    "   (count(*) FILTER (WHERE d.purchases > 0) - 1)::int AS x,"
    "   (max(d.day) FILTER (WHERE d.purchases > 0)::date -"
    "    min(d.day) FILTER (WHERE d.purchases > 0)::date) AS t_x,"
    "   ($1::timestamptz::date - min(d.day) FILTER (WHERE d.purchases > 0)::date) AS t_age,"
    "   (sum(d.gross) FILTER (WHERE d.purchases > 0) -"
    "    (array_agg(d.gross ORDER BY d.day) FILTER (WHERE d.purchases > 0))[1]) /"
    "    nullif(count(*) FILTER (WHERE d.purchases > 0) - 1, 0) AS m"
    "  FROM (SELECT t.customer_id, date_trunc('day', t.occurred_at) AS day,"
    "     count(*) FILTER (WHERE t.type = 'purchase' AND v.rated) AS purchases,"
    "     count(*) FILTER (WHERE t.type = 'purchase' AND v.rated AND t.amount IS NOT NULL)"
    "      AS valued,"
    "     count(*) FILTER (WHERE t.type = 'refund' AND v.rated) AS refunds,"
    "     count(*) FILTER (WHERE NOT v.rated) AS unrated,"
    "     min(t.occurred_at) FILTER (WHERE t.type = 'purchase' AND v.rated) AS first_at,"
    "     max(t.occurred_at) FILTER (WHERE t.type = 'purchase' AND v.rated) AS last_at,"
    "     sum(v.value) FILTER (WHERE t.type = 'purchase' AND v.rated) AS gross,"
    "     sum(abs(v.value)) FILTER (WHERE t.type = 'refund' AND v.rated) AS refunded"
    "    FROM touchpoints t LEFT JOIN currency_rates r ON r.currency = t.currency"
    "    CROSS JOIN LATERAL (SELECT t.amount IS NULL OR t.currency = $2 OR r.rate IS NOT NULL"
    "      AS rated, CASE WHEN t.currency = $2 THEN t.amount ELSE t.amount * r.rate END AS value) v"
    "    WHERE t.type IN ('purchase', 'refund') AND t.occurred_at <= $1::timestamptz"
    "    GROUP BY 1, 2) d"
    "  GROUP BY d.customer_id) a ON a.customer_id = c.id "
    "WHERE c.status = 'active'");

static crm_stmt stage_count = CRM_STMT_RO("metrics_stage_count", "SELECT count(*) FROM metrics_staging");

/* ---- rfm --------------------------------------------------------------------- */

/* Over the n customers who ever purchased: ceil(5 k / n) in integers, k
 * the customers whose value is at most this one's (count(*) over the
 * ordered window counts peers, so ties share a score; cume_dist = k / n
 * would be the same but for rounding). The groups read R and F as the
 * usual RFM grid does (openapi.yaml, CustomerMetrics). */
static crm_stmt stage_rfm = CRM_STMT(
    "metrics_stage_rfm",
    "UPDATE metrics_staging s SET r_score = q.r, f_score = q.f, m_score = q.m,"
    " rfm_cell = q.r::text || q.f::text || q.m::text,"
    " rfm_group = CASE WHEN q.r >= 4 AND q.f >= 4 THEN 'champions'"
    "  WHEN q.r = 3 AND q.f >= 4 THEN 'loyal'"
    "  WHEN q.r >= 4 AND q.f >= 2 THEN 'potential_loyalists'"
    "  WHEN q.r >= 4 THEN 'recent'"
    "  WHEN q.r = 3 THEN 'needs_attention'"
    "  WHEN q.f >= 3 THEN 'at_risk'"
    "  ELSE 'hibernating' END "
    "FROM (SELECT customer_id,"
    "  ((5 * count(*) OVER (ORDER BY recency_days DESC) + n - 1) / n)::smallint AS r,"
    "  ((5 * count(*) OVER (ORDER BY frequency) + n - 1) / n)::smallint AS f,"
    "  ((5 * count(*) OVER (ORDER BY monetary) + n - 1) / n)::smallint AS m"
    "  FROM (SELECT *, count(*) OVER () AS n FROM metrics_staging WHERE purchases > 0) b) q "
    "WHERE s.customer_id = q.customer_id");

/* ---- fit --------------------------------------------------------------------- */

static crm_stmt summaries = CRM_STMT_RO(
    "metrics_summaries",
    "SELECT x, t_x, t_age, count(*) FROM metrics_staging WHERE x IS NOT NULL GROUP BY 1, 2, 3");

static crm_stmt spend_summaries = CRM_STMT_RO(
    "metrics_spend_summaries",
    "SELECT x, repeat_mean_value::float8, count(*) FROM metrics_staging"
    " WHERE x > 0 AND repeat_mean_value > 0 GROUP BY 1, 2");

/* ---- score ------------------------------------------------------------------- */

static crm_stmt scores_table = CRM_STMT(
    "metrics_scores_table",
    "CREATE TEMP TABLE IF NOT EXISTS metrics_scores (x int, t_x int, t_age int,"
    " p_alive float8, purchases float8, discounted float8) ON COMMIT DELETE ROWS");

/* $1..$3: Gamma-Gamma p, q, gamma; NULL when no fit is in force. The
 * expected spend is crm_gg_expected_spend's formula (test_metrics.c holds
 * the two equal): p (gamma + x m) / (p x + q - 1), the population mean
 * p gamma / (q - 1) without repeat values. */
static crm_stmt stage_scores = CRM_STMT(
    "metrics_stage_scores",
    "UPDATE metrics_staging s SET p_alive = k.p_alive, predicted_purchases = k.purchases,"
    " predicted_value = k.discounted * CASE"
    "  WHEN s.x > 0 AND s.repeat_mean_value IS NOT NULL THEN"
    "   $1::float8 * ($3::float8 + s.x * s.repeat_mean_value::float8) /"
    "   ($1::float8 * s.x + $2::float8 - 1)"
    "  ELSE $1::float8 * $3::float8 / ($2::float8 - 1) END "
    "FROM metrics_scores k WHERE s.x = k.x AND s.t_x = k.t_x AND s.t_age = k.t_age");

static crm_stmt stage_tiers = CRM_STMT(
    "metrics_stage_tiers",
    "UPDATE metrics_staging s SET value_tier = CASE WHEN q.k <= $1::numeric * q.n THEN 'top'"
    " WHEN q.k <= $2::numeric * q.n THEN 'high' ELSE 'standard' END "
    "FROM (SELECT customer_id, count(*) OVER (ORDER BY predicted_value DESC) AS k,"
    "  count(*) OVER () AS n FROM metrics_staging WHERE predicted_value IS NOT NULL) q "
    "WHERE s.customer_id = q.customer_id");

/* ---- publish ----------------------------------------------------------------- */

#define METRIC_COLUMNS                                                                             \
    "as_of, computed_at, purchases, refunds, unrated, first_purchase_at, last_purchase_at,"        \
    " historic_value, average_order_value, recency_days, frequency, monetary, r_score, f_score,"   \
    " m_score, rfm_cell, rfm_group, x, t_x, t_age, repeat_mean_value, p_alive,"                    \
    " predicted_purchases, predicted_value, value_tier"

#define EXCLUDED_COLUMNS                                                                           \
    "EXCLUDED.as_of, EXCLUDED.computed_at, EXCLUDED.purchases, EXCLUDED.refunds,"                \
    " EXCLUDED.unrated, EXCLUDED.first_purchase_at, EXCLUDED.last_purchase_at,"                   \
    " EXCLUDED.historic_value, EXCLUDED.average_order_value, EXCLUDED.recency_days,"              \
    " EXCLUDED.frequency, EXCLUDED.monetary, EXCLUDED.r_score, EXCLUDED.f_score,"                 \
    " EXCLUDED.m_score, EXCLUDED.rfm_cell, EXCLUDED.rfm_group, EXCLUDED.x, EXCLUDED.t_x,"         \
    " EXCLUDED.t_age, EXCLUDED.repeat_mean_value, EXCLUDED.p_alive,"                              \
    " EXCLUDED.predicted_purchases, EXCLUDED.predicted_value, EXCLUDED.value_tier"

/* Customers merged, erased or deleted while the job ran are left out: the
 * join reads their status at publication. */
static crm_stmt publish_upsert = CRM_STMT(
    "metrics_publish_upsert",
    "INSERT INTO customer_metrics (customer_id, " METRIC_COLUMNS ") "
    "SELECT s.customer_id, " METRIC_COLUMNS " FROM metrics_staging s"
    " JOIN customers c ON c.id = s.customer_id AND c.status = 'active' "
    "ON CONFLICT (customer_id) DO UPDATE SET (" METRIC_COLUMNS ") = ROW(" EXCLUDED_COLUMNS ")");

static crm_stmt publish_prune = CRM_STMT(
    "metrics_publish_prune",
    "DELETE FROM customer_metrics m WHERE NOT EXISTS (SELECT 1 FROM metrics_staging s"
    " JOIN customers c ON c.id = s.customer_id AND c.status = 'active'"
    " WHERE s.customer_id = m.customer_id)");

/* ---- the job ----------------------------------------------------------------- */

typedef struct recompute {
    crm_job_ctx *job;
    crm_conn *c;
    crm_metrics_config cfg;
    char as_of[40];  /* RFC 3339, as the job's parameter or when it started */
    long long staged; /* rows in metrics_staging after the aggregate */
} recompute;

static bool exec_ok(crm_conn *c, crm_stmt *stmt, int n, const char *const *params,
                    crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, n, params, err);
    PQclear(res);
    return res != NULL;
}

static long long count_staged(crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &stage_count, 0, NULL, err);
    if (res == NULL)
        return -1;
    long long n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

static bool phase_aggregate(recompute *R, crm_error *err)
{
    char window[16];
    snprintf(window, sizeof window, "%d", R->cfg.window_days);
    const char *params[] = {R->as_of, R->cfg.currency, window};
    if (!exec_ok(R->c, &stage_clear, 0, NULL, err) ||
        !exec_ok(R->c, &stage_aggregate, 3, params, err))
        return false;
    R->staged = count_staged(R->c, err);
    return R->staged >= 0;
}

static bool phase_rfm(recompute *R, crm_error *err)
{
    return exec_ok(R->c, &stage_rfm, 0, NULL, err);
}

/* Reads the summaries collapsed by stmt into rows of ncols doubles (the
 * last column is the weight). *n gets their number; NULL with err. */
static double *read_rows(crm_conn *c, crm_stmt *stmt, int ncols, size_t *n, crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, 0, NULL, err);
    if (res == NULL)
        return NULL;
    *n = (size_t)PQntuples(res);
    double *rows = malloc((*n ? *n : 1) * (size_t)ncols * sizeof *rows);
    if (rows == NULL) {
        PQclear(res);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < *n; i++)
        for (int k = 0; k < ncols; k++)
            rows[i * (size_t)ncols + (size_t)k] = atof(PQgetvalue(res, (int)i, k));
    PQclear(res);
    return rows;
}

static bool phase_fit(recompute *R, crm_error *err)
{
    size_t n = 0;
    double *flat = read_rows(R->c, &summaries, 4, &n, err);
    if (flat == NULL)
        return false;
    crm_bgnbd_row *rows = malloc((n ? n : 1) * sizeof *rows);
    if (rows == NULL) {
        free(flat);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        rows[i] = (crm_bgnbd_row){flat[4 * i], flat[4 * i + 1], flat[4 * i + 2], flat[4 * i + 3]};
    free(flat);
    crm_bgnbd bg;
    crm_fit_report bg_report;
    bool bg_ok = crm_bgnbd_fit(rows, n, NULL, &bg, &bg_report);
    free(rows);
    size_t bg_rows = n;

    flat = read_rows(R->c, &spend_summaries, 3, &n, err);
    if (flat == NULL)
        return false;
    crm_gg_row *spend = malloc((n ? n : 1) * sizeof *spend);
    if (spend == NULL) {
        free(flat);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        spend[i] = (crm_gg_row){flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]};
    free(flat);
    size_t spend_rows = n;
    crm_gg gg;
    crm_fit_report gg_report;
    bool gg_ok = crm_gg_fit(spend, spend_rows, NULL, &gg, &gg_report);
    free(spend);

    return metrics_model_store(R->c, "bg_nbd", metrics_bgnbd_json(&bg), &bg_report, bg_rows,
                               bg_ok, R->as_of, crm_job_id(R->job), err) &&
           metrics_model_store(R->c, "gamma_gamma", metrics_gg_json(&gg), &gg_report,
                               spend_rows, gg_ok, R->as_of, crm_job_id(R->job), err);
}

/* Appends one COPY text row of metrics_scores. */
static void put_score_row(crm_bytebuf *b, const double *key, double p_alive, double purchases,
                          double discounted)
{
    char line[192];
    int len = snprintf(line, sizeof line, "%.0f\t%.0f\t%.0f\t%.17g\t%.17g\t%.17g\n", key[0],
                       key[1], key[2], p_alive, purchases, discounted);
    if (len > 0 && (size_t)len < sizeof line)
        crm_bytebuf_put(b, line, (size_t)len);
    else
        b->failed = true;
}

static bool phase_score(recompute *R, crm_error *err)
{
    crm_bgnbd bg;
    crm_gg gg;
    bool have_bg = false, have_gg = false;
    if (!metrics_models_in_force(R->c, &bg, &have_bg, &gg, &have_gg, err))
        return false;
    if (!have_bg) {
        crm_log(CRM_LOG_WARN, "metrics: no BG/NBD fit in force, predictions left empty");
        return true;
    }
    size_t n = 0;
    double *flat = read_rows(R->c, &summaries, 4, &n, err);
    if (flat == NULL)
        return false;
    crm_bytebuf copy;
    crm_bytebuf_init(&copy);
    double horizon = R->cfg.horizon_days;
    for (size_t i = 0; i < n; i++) {
        const double *k = &flat[4 * i];
        double p_alive = crm_bgnbd_p_alive(&bg, k[0], k[1], k[2]);
        double purchases = crm_bgnbd_expected_purchases(&bg, horizon, k[0], k[1], k[2]);
        double discounted = crm_bgnbd_discounted_purchases(&bg, k[0], k[1], k[2], horizon,
                                                           R->cfg.annual_discount);
        if (isfinite(p_alive) && isfinite(purchases) && isfinite(discounted))
            put_score_row(&copy, k, p_alive, purchases, discounted);
    }
    free(flat);
    size_t len = 0;
    char *text = crm_bytebuf_take(&copy, &len);
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    char p[32], q[32], g[32];
    snprintf(p, sizeof p, "%.17g", gg.p);
    snprintf(q, sizeof q, "%.17g", gg.q);
    snprintf(g, sizeof g, "%.17g", gg.gamma);
    const char *spend_params[] = {have_gg ? p : NULL, have_gg ? q : NULL, have_gg ? g : NULL};
    char top[32], high[32]; /* thousandths, exactly as configured */
    snprintf(top, sizeof top, "%.3f", R->cfg.tier_top);
    snprintf(high, sizeof high, "%.3f", R->cfg.tier_high);
    const char *tier_params[] = {top, high};
    bool ok = exec_ok(R->c, &scores_table, 0, NULL, err) &&
              crm_db_copy_in(R->c, "COPY metrics_scores FROM STDIN", text, len, err) &&
              exec_ok(R->c, &stage_scores, 3, spend_params, err) &&
              exec_ok(R->c, &stage_tiers, 2, tier_params, err);
    free(text);
    return ok;
}

static bool phase_publish(recompute *R, crm_error *err)
{
    return exec_ok(R->c, &publish_upsert, 0, NULL, err) &&
           exec_ok(R->c, &publish_prune, 0, NULL, err);
}

typedef bool (*phase_fn)(recompute *R, crm_error *err);

static const phase_fn phases[] = {NULL, phase_aggregate, phase_rfm, phase_fit, phase_score,
                                  phase_publish};

/* Where to start: after the checkpoint's phase, unless the staged rows are
 * gone (the database restarted: metrics_staging is unlogged). */
static int resume_phase(recompute *R, crm_error *err)
{
    const json_t *at = crm_job_checkpoint(R->job);
    int done = at ? (int)json_integer_value(json_object_get(at, "phase")) : 0;
    if (done < PHASE_AGGREGATE || done >= PHASES)
        return PHASE_AGGREGATE;
    R->staged = json_integer_value(json_object_get(at, "staged"));
    long long now_staged = count_staged(R->c, err);
    if (now_staged < 0)
        return -1;
    if (now_staged != R->staged) {
        crm_log(CRM_LOG_WARN, "metrics: staged rows lost (%lld of %lld), starting over",
                now_staged, R->staged);
        return PHASE_AGGREGATE;
    }
    return done + 1;
}

/* as_of from the job's parameters (validated at submission), else now. */
static void read_as_of(recompute *R)
{
    const char *as_of = json_string_value(json_object_get(crm_job_params(R->job), "as_of"));
    if (as_of != NULL && strlen(as_of) < sizeof R->as_of)
        snprintf(R->as_of, sizeof R->as_of, "%s", as_of);
    else
        crm_format_timestamp(crm_wall_ms(), R->as_of);
}

static bool run_recompute(crm_job_ctx *job, crm_error *err)
{
    recompute R = {.job = job, .c = crm_job_conn(job), .cfg = metrics_config()};
    read_as_of(&R);
    int from = resume_phase(&R, err);
    if (from < 0)
        return false;
    json_t *seconds = json_object(); /* each phase this run ran, for the result */
    for (int phase = from; phase <= PHASES; phase++) {
        if (!crm_job_progress(job, phase_names[phase], phase - 1, PHASES, NULL)) {
            json_decref(seconds);
            return crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
        }
        long long started = crm_monotonic_ms();
        bool ok = crm_db_begin(R.c, err) && phases[phase](&R, err) && crm_db_commit(R.c, err);
        if (!ok) {
            crm_db_rollback(R.c);
            json_decref(seconds);
            return false;
        }
        double took = (double)(crm_monotonic_ms() - started) / 1000.0;
        json_object_set_new(seconds, phase_names[phase], json_real(took));
        crm_log(CRM_LOG_INFO, "metrics: recompute %s took %.3f s", phase_names[phase], took);
        json_t *at = json_pack("{s:i, s:s, s:I}", "phase", phase, "as_of", R.as_of, "staged",
                               (json_int_t)R.staged);
        bool going = crm_job_progress(job, phase_names[phase], phase, PHASES, at);
        json_decref(at);
        if (!going) {
            json_decref(seconds);
            return crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
        }
    }
    crm_job_set_result(job, json_pack("{s:s, s:I, s:o}", "as_of", R.as_of, "customers",
                                      (json_int_t)R.staged, "phase_seconds", seconds));
    return true;
}

const crm_job_kind crm_metrics_recompute_kind = {"metrics_recompute", run_recompute,
                                                 CRM_SCOPE_METRICS_READ};

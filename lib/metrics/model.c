/*
 * metrics/model.c — the configuration, and the fits of the models: stored
 * at each recompute, the converged one in force, shown at
 * GET /v1/metrics/model.
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "customers/internal.h"
#include "json.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t config_lock = PTHREAD_MUTEX_INITIALIZER;
static crm_metrics_config config;
static bool configured;

crm_metrics_config crm_metrics_defaults(void)
{
    return (crm_metrics_config){.window_days = 365,
                                .horizon_days = 365,
                                .annual_discount = 0.10,
                                .tier_top = 0.01,
                                .tier_high = 0.20,
                                .currency = "EUR",
                                .new_days = 90,
                                .at_risk_days = 180,
                                .at_risk_p_alive = 0.3,
                                .lapsed_days = 365,
                                .basket_min_orders = 2};
}

void crm_metrics_configure(const crm_metrics_config *cfg)
{
    pthread_mutex_lock(&config_lock);
    config = *cfg;
    config.currency[3] = '\0';
    configured = true;
    pthread_mutex_unlock(&config_lock);
}

crm_metrics_config metrics_config(void)
{
    pthread_mutex_lock(&config_lock);
    crm_metrics_config copy = configured ? config : crm_metrics_defaults();
    pthread_mutex_unlock(&config_lock);
    return copy;
}

/* A number, or null where a failed fit left none. */
static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *metrics_bgnbd_json(const crm_bgnbd *m)
{
    return json_pack("{s:o, s:o, s:o, s:o}", "r", real_or_null(m->r), "alpha",
                     real_or_null(m->alpha), "a", real_or_null(m->a), "b", real_or_null(m->b));
}

json_t *metrics_gg_json(const crm_gg *m)
{
    return json_pack("{s:o, s:o, s:o}", "p", real_or_null(m->p), "q", real_or_null(m->q),
                     "gamma", real_or_null(m->gamma));
}

/* $1 model, $2 params, $3 loglik (NULL when not finite), $4 customers,
 * $5 rows, $6 iterations, $7 converged, $8 as_of, $9 job. A converged fit
 * retires the one in force. */
static crm_stmt store_fit = CRM_STMT(
    "metrics_store_fit",
    "WITH retired AS (UPDATE metrics_models SET in_force = false"
    "  WHERE model = $1 AND in_force AND $7::boolean RETURNING id) "
    "INSERT INTO metrics_models (model, params, loglik, customers, rows_used, iterations,"
    " converged, in_force, as_of, job_id) "
    "SELECT $1, $2::jsonb, $3::float8, $4::bigint, $5::bigint, $6::int, $7::boolean,"
    " $7::boolean, $8::timestamptz, $9::bigint FROM (SELECT count(*) FROM retired) r");

bool metrics_model_store(crm_conn *c, const char *model, json_t *params,
                         const crm_fit_report *report, size_t nrows, bool converged,
                         const char *as_of, long long job_id, crm_error *err)
{
    char *text = params ? json_dumps(params, JSON_COMPACT) : NULL;
    json_decref(params);
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    char ll[32], customers[32], rows[32], iterations[16], job[24];
    snprintf(ll, sizeof ll, "%.17g", report->loglik);
    snprintf(customers, sizeof customers, "%.0f", report->customers);
    snprintf(rows, sizeof rows, "%zu", nrows);
    snprintf(iterations, sizeof iterations, "%d", report->iterations);
    snprintf(job, sizeof job, "%lld", job_id);
    const char *values[] = {model,      text,
                            isfinite(report->loglik) ? ll : NULL,
                            customers,  rows,
                            iterations, converged ? "true" : "false",
                            as_of,      job_id > 0 ? job : NULL};
    PGresult *res = crm_db_exec(c, &store_fit, 9, values, err);
    free(text);
    PQclear(res);
    return res != NULL;
}

static crm_stmt in_force = CRM_STMT_RO(
    "metrics_in_force", "SELECT model, params::text FROM metrics_models WHERE in_force");

static double number(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

bool metrics_models_in_force(crm_conn *c, crm_bgnbd *bg, bool *have_bg, crm_gg *gg, bool *have_gg,
                             crm_error *err)
{
    *have_bg = *have_gg = false;
    PGresult *res = crm_db_exec(c, &in_force, 0, NULL, err);
    if (res == NULL)
        return false;
    for (int r = 0; r < PQntuples(res); r++) {
        json_t *p = json_loads(PQgetvalue(res, r, 1), 0, NULL);
        const char *model = PQgetvalue(res, r, 0);
        if (p != NULL && strcmp(model, "bg_nbd") == 0) {
            *bg = (crm_bgnbd){number(p, "r"), number(p, "alpha"), number(p, "a"), number(p, "b")};
            *have_bg = isfinite(bg->r) && isfinite(bg->alpha) && isfinite(bg->a) &&
                       isfinite(bg->b);
        } else if (p != NULL && strcmp(model, "gamma_gamma") == 0) {
            *gg = (crm_gg){number(p, "p"), number(p, "q"), number(p, "gamma")};
            *have_gg = isfinite(gg->p) && isfinite(gg->q) && isfinite(gg->gamma) && gg->q > 1;
        }
        json_decref(p);
    }
    PQclear(res);
    return true;
}

/* ---- GET /v1/metrics/model ------------------------------------------------------ */


/* Per model: the latest fit and the one in force, as JSON text. */
static crm_stmt fits = CRM_STMT_RO(
    "metrics_fits",
    "SELECT m.model, m.in_force AND m.id = l.id, json_build_object('id', m.id,"
    " 'params', m.params, 'log_likelihood', m.loglik, 'customers', m.customers,"
    " 'rows', m.rows_used, 'iterations', m.iterations, 'converged', m.converged,"
    " 'as_of', " TS("m.as_of") ", 'fitted_at', " TS("m.fitted_at") ", 'job_id', m.job_id)::text,"
    " m.in_force, m.id = l.id "
    "FROM metrics_models m JOIN (SELECT model, max(id) AS id FROM metrics_models GROUP BY model) l"
    " ON l.model = m.model WHERE m.in_force OR m.id = l.id");

json_t *crm_metrics_model(crm_error *err)
{
    PGresult *res = crm_db_run(&fits, 0, NULL, err);
    if (res == NULL)
        return NULL;
    crm_metrics_config cfg = metrics_config();
    json_t *doc = json_pack(
        "{s:s, s:{s:i, s:i, s:f, s:s}, s:{s:n, s:n}, s:{s:n, s:n}}", "time_unit", "days",
        "settings", "horizon_days", cfg.horizon_days, "window_days", cfg.window_days,
        "annual_discount", cfg.annual_discount, "currency", cfg.currency, "bg_nbd", "in_force",
        "latest", "gamma_gamma", "in_force", "latest");
    for (int r = 0; doc != NULL && r < PQntuples(res); r++) {
        json_t *model = json_object_get(doc, PQgetvalue(res, r, 0));
        json_t *fit = crm_json_load_stored(PQgetvalue(res, r, 2));
        if (model == NULL || fit == NULL) {
            json_decref(fit);
            continue;
        }
        if (strcmp(PQgetvalue(res, r, 3), "t") == 0)
            json_object_set(model, "in_force", fit);
        if (strcmp(PQgetvalue(res, r, 4), "t") == 0)
            json_object_set(model, "latest", fit);
        json_decref(fit);
    }
    PQclear(res);
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return doc;
}

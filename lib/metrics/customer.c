/*
 * metrics/customer.c — one customer's metrics (GET /v1/customers/{id}/metrics)
 * and the submission of a full recompute (POST /v1/metrics/recompute).
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "clock.h"
#include "jbuf.h"
#include "customers/internal.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>


/* $1 the id, $2 the reporting currency, $3 the horizon, $4 the window. A
 * merged id is one hop from its survivor (merges compress their chains,
 * migration 0012). The document is built here, amounts as PostgreSQL's
 * exact decimals. No row: every member null but the customer's id. */
static crm_stmt customer_metrics = CRM_STMT_RO(
    "metrics_customer",
    "SELECT json_build_object('customer_id', c.id, 'as_of', " TS("m.as_of") ","
    " 'computed_at', " TS("m.computed_at") ", 'currency', $2::text,"
    " 'value', json_build_object('purchases', m.purchases, 'refunds', m.refunds,"
    "  'unrated', m.unrated, 'first_purchase_at', " TS("m.first_purchase_at") ","
    "  'last_purchase_at', " TS("m.last_purchase_at") ", 'historic', m.historic_value,"
    "  'average_order', round(m.average_order_value, 4),"
    "  'predicted_purchases', m.predicted_purchases, 'predicted_value', m.predicted_value,"
    "  'horizon_days', $3::int, 'tier', m.value_tier),"
    " 'rfm', json_build_object('recency_days', m.recency_days, 'frequency', m.frequency,"
    "  'monetary', m.monetary, 'window_days', $4::int, 'r', m.r_score, 'f', m.f_score,"
    "  'm', m.m_score, 'cell', m.rfm_cell, 'group', m.rfm_group),"
    " 'risk', json_build_object('p_alive', m.p_alive, 'churn_risk', 1 - m.p_alive),"
    " 'summary', json_build_object('x', m.x, 't_x', m.t_x, 'T', m.t_age,"
    "  'repeat_mean_value', round(m.repeat_mean_value, 4)),"
    " 'velocity', json_build_object('interval_mean_days', m.interval_mean,"
    "  'interval_cv', m.interval_cv, 'interval_trend_days', m.interval_trend,"
    "  'spend_cv', m.spend_cv, 'spend_trend', m.spend_trend))::text "
    "FROM customers c0"
    " JOIN customers c ON c.id = CASE WHEN c0.status = 'merged' THEN c0.merged_into"
    "  ELSE c0.id END AND c.status = 'active'"
    " LEFT JOIN customer_metrics m ON m.customer_id = c.id "
    "WHERE c0.id = $1");

json_t *crm_metrics_customer(long long id, crm_error *err)
{
    crm_metrics_config cfg = metrics_config();
    char idbuf[24], horizon[16], window[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(horizon, sizeof horizon, "%d", cfg.horizon_days);
    snprintf(window, sizeof window, "%d", cfg.window_days);
    const char *params[] = {idbuf, cfg.currency, horizon, window};
    PGresult *res = crm_db_run(&customer_metrics, 4, params, err);
    if (res == NULL)
        return NULL;
    json_t *doc = NULL;
    if (PQntuples(res) == 1) {
        doc = crm_json_load_stored(PQgetvalue(res, 0, 0));
        if (doc == NULL)
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    } else {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    }
    PQclear(res);
    return doc;
}

json_t *crm_metrics_recompute_submit(long long as_ms, long long api_key_id, long long *running,
                                     crm_error *err)
{
    long long now = crm_wall_ms();
    if (as_ms > now) {
        crm_error_add_field(err, "/as_of", "must not lie in the future");
        crm_error_set(err, CRM_E_INVALID, "the recompute cannot observe the future");
        return NULL;
    }
    char as_of[48];
    crm_format_timestamp(as_ms > 0 ? as_ms : now, as_of);
    json_t *params = json_pack("{s:s}", "as_of", as_of);
    if (params == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    json_t *job = crm_job_submit(crm_metrics_recompute_kind.name, params, "metrics_recompute",
                                 api_key_id, running, err);
    json_decref(params);
    return job;
}

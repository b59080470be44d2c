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
#include "list/page.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* $1 the reporting currency, $2 the horizon, $3 the window, $4 the id
 * (numbered in the order they first appear, as a pgbench script numbers its
 * variables: bench/pgbench/customer_metrics.sql holds this text). A merged
 * id is one hop from its survivor (merges compress their chains, migration
 * 0012). The document is built here, amounts as PostgreSQL's exact
 * decimals. No row: every member null but the customer's id. */
static crm_stmt customer_metrics = CRM_STMT_RO(
    "metrics_customer",
    "SELECT json_build_object('customer_id', c.id, 'as_of', " TS("m.as_of") ","
    " 'computed_at', " TS("m.computed_at") ", 'currency', $1::text,"
    " 'value', json_build_object('purchases', m.purchases, 'refunds', m.refunds,"
    "  'unrated', m.unrated, 'first_purchase_at', " TS("m.first_purchase_at") ","
    "  'last_purchase_at', " TS("m.last_purchase_at") ", 'historic', m.historic_value,"
    "  'average_order', round(m.average_order_value, 4),"
    "  'predicted_purchases', m.predicted_purchases, 'predicted_value', m.predicted_value,"
    "  'horizon_days', $2::int, 'tier', m.value_tier),"
    " 'rfm', json_build_object('recency_days', m.recency_days, 'frequency', m.frequency,"
    "  'monetary', m.monetary, 'window_days', $3::int, 'r', m.r_score, 'f', m.f_score,"
    "  'm', m.m_score, 'cell', m.rfm_cell, 'group', m.rfm_group),"
    " 'lifecycle', json_build_object('stage', m.lifecycle_stage),"
    " 'risk', json_build_object('p_alive', m.p_alive, 'churn_risk', 1 - m.p_alive,"
    "  'overdue_days', m.overdue_days),"
    " 'engagement', json_build_object('touchpoints_90d', m.touchpoints_90d,"
    "  'touchpoints_per_30d', round(m.touchpoints_90d / 3.0, 4),"
    "  'last_inbound_at', " TS("m.last_inbound_at") "),"
    " 'satisfaction', json_build_object("
    "  'nps', json_build_object('latest', m.nps_latest, 'mean', m.nps_mean,"
    "   'responses', m.nps_responses),"
    "  'csat', json_build_object('latest', m.csat_latest, 'mean', m.csat_mean,"
    "   'responses', m.csat_responses)),"
    " 'summary', json_build_object('x', m.x, 't_x', m.t_x, 'T', m.t_age,"
    "  'repeat_mean_value', round(m.repeat_mean_value, 4)),"
    " 'velocity', json_build_object('interval_mean_days', m.interval_mean,"
    "  'interval_cv', m.interval_cv, 'interval_trend_days', m.interval_trend,"
    "  'spend_cv', m.spend_cv, 'spend_trend', m.spend_trend, 'last_gap_days', m.last_gap_days)"
    ")::text "
    "FROM customers c0"
    " JOIN customers c ON c.id = CASE WHEN c0.status = 'merged' THEN c0.merged_into"
    "  ELSE c0.id END AND c.status = 'active'"
    " LEFT JOIN customer_metrics m ON m.customer_id = c.id "
    "WHERE c0.id = $4");

void crm_metrics_customer_query(crm_query *q, long long id)
{
    crm_metrics_config cfg = metrics_config();
    crm_query_init(q, &customer_metrics);
    crm_query_add_text(q, cfg.currency);
    crm_query_add_int(q, cfg.horizon_days);
    crm_query_add_int(q, cfg.window_days);
    crm_query_add_int(q, id);
}

char *crm_metrics_customer_render(const PGresult *res, size_t *len, crm_error *err)
{
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    *len = (size_t)PQgetlength(res, 0, 0);
    char *text = malloc(*len + 1);
    if (text == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    memcpy(text, PQgetvalue(res, 0, 0), *len + 1);
    return text;
}

/* The document of res (freed by the caller), or NULL with err set. */
static json_t *customer_decode(const PGresult *res, crm_error *err)
{
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    json_t *doc = crm_json_load_stored(PQgetvalue(res, 0, 0));
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return doc;
}

json_t *crm_metrics_customer(long long id, crm_error *err)
{
    crm_query q;
    crm_metrics_customer_query(&q, id);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    json_t *doc = customer_decode(res, err);
    PQclear(res);
    return doc;
}

json_t *crm_metrics_customer_on(crm_conn *c, long long id, crm_error *err)
{
    crm_query q;
    crm_metrics_customer_query(&q, id);
    if (q.failed) {
        crm_error_set(err, CRM_E_INTERNAL, "a statement's parameters did not fit");
        return NULL;
    }
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    if (res == NULL)
        return NULL;
    json_t *doc = customer_decode(res, err);
    PQclear(res);
    return doc;
}

json_t *crm_metrics_recompute_submit(long long as_ms, long long api_key_id, long long *running,
                                     crm_error *err)
{
    return crm_metrics_recompute_submit_with(as_ms, true, api_key_id, running, err);
}

json_t *crm_metrics_recompute_submit_with(long long as_ms, bool refit, long long api_key_id,
                                          long long *running, crm_error *err)
{
    long long now = crm_wall_ms();
    if (as_ms > now) {
        crm_error_add_field(err, "/as_of", "must not lie in the future");
        crm_error_set(err, CRM_E_INVALID, "the recompute cannot observe the future");
        return NULL;
    }
    char as_of[48];
    crm_format_timestamp(as_ms > 0 ? as_ms : now, as_of);
    json_t *params = json_pack("{s:s, s:b}", "as_of", as_of, "refit", refit);
    if (params == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    json_t *job = crm_job_submit(crm_metrics_recompute_kind.name, params, "metrics_recompute",
                                 api_key_id, running, err);
    json_decref(params);
    return job;
}

static crm_stmt recompute_due = CRM_STMT_RO(
    "metrics_recompute_due",
    "SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE kind = 'metrics_recompute'"
    " AND created_at > now() - make_interval(hours => $1::int))");

bool crm_metrics_schedule(int hours, bool *queued, crm_error *err)
{
    *queued = false;
    char h[16];
    snprintf(h, sizeof h, "%d", hours);
    const char *params[] = {h};
    PGresult *res = crm_db_run(&recompute_due, 1, params, err);
    if (res == NULL)
        return false;
    bool due = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!due)
        return true;
    long long running = 0;
    json_t *job = crm_metrics_recompute_submit(0, 0, &running, err);
    if (job == NULL) {
        if (err->code != CRM_E_CONFLICT)
            return false;
        crm_error_clear(err); /* one is queued or running already */
        return true;
    }
    json_decref(job);
    *queued = true;
    return true;
}

/* $1 the id (a merged one resolves to its survivor), $2 the history's rows
 * before this id, $3 how many. One row per history row shown, newest
 * first; one row with null history columns when there is none. */
static crm_stmt lifecycle_page = CRM_STMT_RO(
    "metrics_lifecycle",
    "SELECT c.id, m.lifecycle_stage, h.id, h.stage, h.previous, " TS("h.changed_at") ","
    " (SELECT " TS("l.changed_at") " FROM customer_lifecycle l WHERE l.customer_id = c.id"
    "  ORDER BY l.id DESC LIMIT 1) "
    "FROM customers c0"
    " JOIN customers c ON c.id = CASE WHEN c0.status = 'merged' THEN c0.merged_into"
    "  ELSE c0.id END AND c.status = 'active'"
    " LEFT JOIN customer_metrics m ON m.customer_id = c.id"
    " LEFT JOIN LATERAL (SELECT id, stage, previous, changed_at FROM customer_lifecycle"
    "  WHERE customer_id = c.id AND id < $2::bigint ORDER BY id DESC LIMIT $3::int) h ON true "
    "WHERE c0.id = $1 ORDER BY h.id DESC");

static json_t *text_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

json_t *crm_metrics_lifecycle(long long id, long long before_id, int limit, long long *next_before,
                              crm_error *err)
{
    *next_before = 0;
    char idbuf[24], before[24], fetch[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(before, sizeof before, "%lld", before_id > 0 ? before_id : LLONG_MAX);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    const char *params[] = {idbuf, before, fetch};
    PGresult *res = crm_db_run(&lifecycle_page, 3, params, err);
    if (res == NULL)
        return NULL;
    int n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    json_t *rows = json_array();
    int shown = crm_page_shown(n, limit);
    for (int r = 0; r < shown && !PQgetisnull(res, r, 2); r++)
        json_array_append_new(rows, json_pack("{s:I, s:s, s:o, s:s}", "id",
                                              (json_int_t)atoll(PQgetvalue(res, r, 2)), "stage",
                                              PQgetvalue(res, r, 3), "previous",
                                              text_or_null(res, r, 4), "changed_at",
                                              PQgetvalue(res, r, 5)));
    if (crm_page_has_next(n, limit) && !PQgetisnull(res, shown - 1, 2))
        *next_before = atoll(PQgetvalue(res, shown - 1, 2));
    json_t *doc = json_pack("{s:I, s:o, s:o, s:o}", "customer_id",
                            (json_int_t)atoll(PQgetvalue(res, 0, 0)), "stage",
                            text_or_null(res, 0, 1), "since", text_or_null(res, 0, 6), "data",
                            rows);
    PQclear(res);
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return doc;
}

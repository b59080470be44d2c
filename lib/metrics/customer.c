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


/* ---- the document ---------------------------------------------------------------- */

/* What a member of the document holds, and how it is written. */
typedef enum doc_kind {
    DOC_NUMBER,   /* an integer, numeric or float8 column as PostgreSQL prints it */
    DOC_TEXT,     /* a text column */
    DOC_TIME,     /* a timestamptz column, written as the API writes times */
    DOC_CURRENCY, /* the reporting currency, from the configuration */
    DOC_HORIZON,  /* the horizon in days, likewise */
    DOC_WINDOW,   /* the RFM window in days, likewise */
} doc_kind;

/* Every member of a customer's metrics document, in order: the group it
 * belongs to (NULL: the top level) and the subgroup inside that, its name,
 * its kind and the SQL it is read from (NULL for the configuration's). One
 * list gives both the statement's columns and the renderer's members, so
 * the two cannot drift apart. The document is written in C from plain
 * columns: building it with json_build_object cost PostgreSQL more than the
 * read itself. */
#define METRICS_DOC_FIELDS(X)                                                                      \
    X(NULL, NULL, "customer_id", DOC_NUMBER, "c.id")                                               \
    X(NULL, NULL, "as_of", DOC_TIME, "m.as_of")                                                    \
    X(NULL, NULL, "computed_at", DOC_TIME, "m.computed_at")                                        \
    X(NULL, NULL, "currency", DOC_CURRENCY, "NULL")                                                \
    X("value", NULL, "purchases", DOC_NUMBER, "m.purchases")                                       \
    X("value", NULL, "refunds", DOC_NUMBER, "m.refunds")                                           \
    X("value", NULL, "unrated", DOC_NUMBER, "m.unrated")                                           \
    X("value", NULL, "first_purchase_at", DOC_TIME, "m.first_purchase_at")                         \
    X("value", NULL, "last_purchase_at", DOC_TIME, "m.last_purchase_at")                           \
    X("value", NULL, "historic", DOC_NUMBER, "m.historic_value")                                   \
    X("value", NULL, "average_order", DOC_NUMBER, "round(m.average_order_value, 4)")               \
    X("value", NULL, "predicted_purchases", DOC_NUMBER, "m.predicted_purchases")                   \
    X("value", NULL, "predicted_value", DOC_NUMBER, "m.predicted_value")                           \
    X("value", NULL, "horizon_days", DOC_HORIZON, "NULL")                                          \
    X("value", NULL, "tier", DOC_TEXT, "m.value_tier")                                             \
    X("rfm", NULL, "recency_days", DOC_NUMBER, "m.recency_days")                                   \
    X("rfm", NULL, "frequency", DOC_NUMBER, "m.frequency")                                         \
    X("rfm", NULL, "monetary", DOC_NUMBER, "m.monetary")                                           \
    X("rfm", NULL, "window_days", DOC_WINDOW, "NULL")                                              \
    X("rfm", NULL, "r", DOC_NUMBER, "m.r_score")                                                   \
    X("rfm", NULL, "f", DOC_NUMBER, "m.f_score")                                                   \
    X("rfm", NULL, "m", DOC_NUMBER, "m.m_score")                                                   \
    X("rfm", NULL, "cell", DOC_TEXT, "m.rfm_cell")                                                 \
    X("rfm", NULL, "group", DOC_TEXT, "m.rfm_group")                                               \
    X("lifecycle", NULL, "stage", DOC_TEXT, "m.lifecycle_stage")                                   \
    X("risk", NULL, "p_alive", DOC_NUMBER, "m.p_alive")                                            \
    X("risk", NULL, "churn_risk", DOC_NUMBER, "1 - m.p_alive")                                     \
    X("risk", NULL, "overdue_days", DOC_NUMBER, "m.overdue_days")                                  \
    X("engagement", NULL, "touchpoints_90d", DOC_NUMBER, "m.touchpoints_90d")                      \
    X("engagement", NULL, "touchpoints_per_30d", DOC_NUMBER, "round(m.touchpoints_90d / 3.0, 4)")  \
    X("engagement", NULL, "last_inbound_at", DOC_TIME, "m.last_inbound_at")                        \
    X("satisfaction", "nps", "latest", DOC_NUMBER, "m.nps_latest")                                 \
    X("satisfaction", "nps", "mean", DOC_NUMBER, "m.nps_mean")                                     \
    X("satisfaction", "nps", "responses", DOC_NUMBER, "m.nps_responses")                           \
    X("satisfaction", "csat", "latest", DOC_NUMBER, "m.csat_latest")                               \
    X("satisfaction", "csat", "mean", DOC_NUMBER, "m.csat_mean")                                   \
    X("satisfaction", "csat", "responses", DOC_NUMBER, "m.csat_responses")                         \
    X("summary", NULL, "x", DOC_NUMBER, "m.x")                                                     \
    X("summary", NULL, "t_x", DOC_NUMBER, "m.t_x")                                                 \
    X("summary", NULL, "T", DOC_NUMBER, "m.t_age")                                                 \
    X("summary", NULL, "repeat_mean_value", DOC_NUMBER, "round(m.repeat_mean_value, 4)")           \
    X("velocity", NULL, "interval_mean_days", DOC_NUMBER, "m.interval_mean")                       \
    X("velocity", NULL, "interval_cv", DOC_NUMBER, "m.interval_cv")                                \
    X("velocity", NULL, "interval_trend_days", DOC_NUMBER, "m.interval_trend")                     \
    X("velocity", NULL, "spend_cv", DOC_NUMBER, "m.spend_cv")                                      \
    X("velocity", NULL, "spend_trend", DOC_NUMBER, "m.spend_trend")                                \
    X("velocity", NULL, "last_gap_days", DOC_NUMBER, "m.last_gap_days")

typedef struct doc_field {
    const char *group, *sub, *name;
    doc_kind kind;
} doc_field;

#define DOC_FIELD(group, sub, name, kind, sql) {group, sub, name, kind},
static const doc_field doc_fields[] = {METRICS_DOC_FIELDS(DOC_FIELD)};
#define N_DOC_FIELDS (sizeof doc_fields / sizeof doc_fields[0])

/* Column 0 is the id asked for; member i of doc_fields is column i + 1. */
#define DOC_COLUMN(group, sub, name, kind, sql) ", " sql

/* $1 the id. A merged id is one hop from its survivor (merges compress
 * their chains, migration 0012). No metrics row: every member null but the
 * customer's id and the configuration's. */
static crm_stmt customer_metrics =
    CRM_STMT_RO("metrics_customer",
                "SELECT c0.id" METRICS_DOC_FIELDS(DOC_COLUMN) " FROM customers c0"
                " JOIN customers c ON c.id = CASE WHEN c0.status = 'merged' THEN c0.merged_into"
                "  ELSE c0.id END AND c.status = 'active'"
                " LEFT JOIN customer_metrics m ON m.customer_id = c.id "
                "WHERE c0.id = $1");

static bool same_name(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* A number as PostgreSQL prints it is JSON, but for NaN and the infinities,
 * which JSON lacks: those are written as null. */
static void write_number(crm_jbuf *b, const char *text, size_t len)
{
    const char *digits = text[0] == '-' ? text + 1 : text;
    if (*digits >= '0' && *digits <= '9')
        crm_jbuf_raw(b, text, len);
    else
        crm_jbuf_null(b);
}

static void write_member(crm_jbuf *b, const doc_field *f, const PGresult *res, int col,
                         const crm_metrics_config *cfg)
{
    crm_jbuf_key(b, f->name);
    if (f->kind == DOC_CURRENCY)
        crm_jbuf_cstring(b, cfg->currency);
    else if (f->kind == DOC_HORIZON)
        crm_jbuf_int(b, cfg->horizon_days);
    else if (f->kind == DOC_WINDOW)
        crm_jbuf_int(b, cfg->window_days);
    else if (PQgetisnull(res, 0, col))
        crm_jbuf_null(b);
    else if (f->kind == DOC_TIME)
        crm_jbuf_pg_timestamp(b, PQgetvalue(res, 0, col));
    else if (f->kind == DOC_TEXT)
        crm_jbuf_string(b, PQgetvalue(res, 0, col), (size_t)PQgetlength(res, 0, col));
    else
        write_number(b, PQgetvalue(res, 0, col), (size_t)PQgetlength(res, 0, col));
}

/* Writes the document of res's row, opening and closing the groups as the
 * members of doc_fields pass from one to the next. */
static void write_document(crm_jbuf *b, const PGresult *res, const crm_metrics_config *cfg)
{
    const char *group = NULL, *sub = NULL;
    crm_jbuf_begin_object(b);
    for (size_t i = 0; i < N_DOC_FIELDS; i++) {
        const doc_field *f = &doc_fields[i];
        bool new_group = !same_name(group, f->group);
        if (sub != NULL && (new_group || !same_name(sub, f->sub))) {
            crm_jbuf_end_object(b);
            sub = NULL;
        }
        if (new_group) {
            if (group != NULL)
                crm_jbuf_end_object(b);
            group = f->group;
            if (group != NULL) {
                crm_jbuf_key(b, group);
                crm_jbuf_begin_object(b);
            }
        }
        if (f->sub != NULL && sub == NULL) {
            sub = f->sub;
            crm_jbuf_key(b, sub);
            crm_jbuf_begin_object(b);
        }
        write_member(b, f, res, (int)i + 1, cfg);
    }
    if (sub != NULL)
        crm_jbuf_end_object(b);
    if (group != NULL)
        crm_jbuf_end_object(b);
    crm_jbuf_end_object(b);
}

void crm_metrics_customer_query(crm_query *q, long long id)
{
    crm_query_init(q, &customer_metrics);
    crm_query_add_int(q, id);
}

char *crm_metrics_customer_render(const PGresult *res, size_t *len, crm_error *err)
{
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    if (PQnfields(res) != (int)N_DOC_FIELDS + 1) {
        crm_error_set(err, CRM_E_INTERNAL, "the metrics read has %d columns", PQnfields(res));
        return NULL;
    }
    crm_metrics_config cfg = metrics_config();
    crm_jbuf b;
    crm_jbuf_init(&b);
    write_document(&b, res, &cfg);
    char *text = crm_jbuf_take(&b, len);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}

/* The document of res (freed by the caller), or NULL with err set. */
static json_t *customer_decode(const PGresult *res, crm_error *err)
{
    size_t len = 0;
    char *text = crm_metrics_customer_render(res, &len, err);
    if (text == NULL)
        return NULL;
    json_t *doc = crm_json_load_stored(text);
    free(text);
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

json_t *metrics_job_submit(const crm_job_kind *kind, const char *what, long long as_ms,
                           json_t *params, long long api_key_id, long long *running,
                           crm_error *err)
{
    long long now = crm_wall_ms();
    if (as_ms > now) {
        json_decref(params);
        crm_error_add_field(err, "/as_of", "must not lie in the future");
        crm_error_set(err, CRM_E_INVALID, "%s cannot observe the future", what);
        return NULL;
    }
    char as_of[48];
    crm_format_timestamp(as_ms > 0 ? as_ms : now, as_of);
    if (params == NULL || json_object_set_new(params, "as_of", json_string(as_of)) != 0) {
        json_decref(params);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    json_t *job = crm_job_submit(kind->name, params, kind->name, api_key_id, running, err);
    json_decref(params);
    return job;
}

json_t *crm_metrics_recompute_submit_with(long long as_ms, bool refit, long long api_key_id,
                                          long long *running, crm_error *err)
{
    return metrics_job_submit(&crm_metrics_recompute_kind, "the recompute", as_ms,
                              json_pack("{s:b}", "refit", refit), api_key_id, running, err);
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

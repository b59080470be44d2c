/*
 * handlers_metrics.c — the metrics (lib/metrics.h):
 * GET  /v1/customers/{id}/metrics  (metrics:read)  one customer's metrics;
 * GET  /v1/customers/{id}/lifecycle (metrics:read) its stage and their history;
 * GET  /v1/metrics/model           (metrics:read)  the fitted models;
 * POST /v1/metrics/recompute       (metrics:write) queue a full recompute,
 *      202 with the job (GET /v1/jobs/{id} follows it), 409 naming the job
 *      when one is already queued or running;
 * the rate table (lib/metrics/rates.c), which the next recompute (and the
 * follower's next sweep) reads:
 * GET    /v1/metrics/currency-rates             (metrics:read)  a page of them;
 * GET    /v1/metrics/currency-rates/{currency}  (metrics:read)  one, with its ETag;
 * PUT    /v1/metrics/currency-rates/{currency}  (metrics:write) set one (201
 *        created, 200 replaced), under If-Match when sent;
 * DELETE /v1/metrics/currency-rates/{currency}  (metrics:write) remove one (204).
 */
#include "customers.h"
#include "handlers.h"
#include "json.h"
#include "customer_metrics.h"

#include <stdio.h>
#include <string.h>

static void customer_metrics_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    size_t len = 0;
    char *text = crm_metrics_customer_render(res, &len, &derr);
    if (text == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

/* One statement on the event loop, its row written as the document. */
void handle_customer_metrics(http_request *req)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_query q;
    crm_metrics_customer_query(&q, id);
    http_defer_query(req, &q, customer_metrics_done);
}

void handle_customer_lifecycle(http_request *req)
{
    long long id, before, next = 0;
    int limit;
    crm_error err = CRM_ERROR_INIT;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &before, &err))
        doc = crm_metrics_lifecycle(id, before, limit, &next, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_metrics_model(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_metrics_model(&err);
    if (doc == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    http_reply_json(req, 200, doc);
}

/* The body is optional: {} or {"as_of": RFC 3339, "refit": boolean}. */
static bool recompute_params(http_request *req, long long *as_ms, bool *refit, crm_error *err)
{
    *as_ms = 0;
    *refit = true;
    if (http_body_len(req) == 0)
        return true;
    json_t *body = http_json_body(req, err);
    if (body == NULL)
        return false;
    static const char *const allowed[] = {"as_of", "refit", NULL};
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    if (!crm_json_only_fields(body, allowed, err))
        return false;
    json_t *fit = json_object_get(body, "refit");
    if (fit != NULL && !json_is_boolean(fit)) {
        crm_error_add_field(err, "/refit", "must be true or false");
        return crm_error_set(err, CRM_E_INVALID, "the recompute's parameters are invalid");
    }
    *refit = fit == NULL || json_is_true(fit);
    json_t *as_of = json_object_get(body, "as_of");
    if (as_of == NULL || json_is_null(as_of))
        return true;
    if (!json_is_string(as_of) || !crm_rfc3339_epoch_ms(json_string_value(as_of), as_ms) ||
        *as_ms <= 0) {
        crm_error_add_field(err, "/as_of", "must be an RFC 3339 date-time after 1970");
        return crm_error_set(err, CRM_E_INVALID, "the recompute's parameters are invalid");
    }
    return true;
}

void handle_metrics_recompute(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long as_ms, running = 0;
    bool refit;
    json_t *job = NULL;
    if (recompute_params(req, &as_ms, &refit, &err)) {
        const crm_principal *p = http_principal(req);
        job = crm_metrics_recompute_submit_with(as_ms, refit, p ? p->key_id : 0, &running, &err);
    }
    if (job == NULL) {
        if (err.code == CRM_E_CONFLICT && running > 0) {
            char location[48];
            snprintf(location, sizeof location, "/v1/jobs/%lld", running);
            http_add_header(req, "Location", location);
            crm_error_set(&err, CRM_E_CONFLICT,
                          "a recompute is already queued or running: job %lld (%s)", running,
                          location);
        }
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/jobs/%lld",
             (long long)json_integer_value(json_object_get(job, "id")));
    http_add_header(req, "Location", location);
    http_reply_json(req, 202, job);
}

/* ---- the rate table ------------------------------------------------------------- */

void handle_currency_rates_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int limit;
    size_t len = 0;
    char *page = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err))
        page = crm_metrics_rates_list(http_query(req, "after"), limit, &len, &err);
    if (page == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_json_text(req, 200, page, len);
}

/* Answers a rate (its text taken) with its ETag. */
static void reply_rate(http_request *req, int status, crm_rate_doc *doc)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", doc->version);
    http_add_header(req, "ETag", etag);
    http_reply_json_text(req, status, doc->text, doc->len);
    doc->text = NULL; /* the reply owns it */
}

void handle_currency_rate_get(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rate_doc doc = {0};
    if (!crm_metrics_rate_get(http_param(req, "currency"), &doc, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    reply_rate(req, 200, &doc);
}

void handle_currency_rate_put(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rate_doc doc = {0};
    bool created = false;
    const char *currency = http_param(req, "currency");
    json_t *body = http_json_body(req, &err);
    if (body == NULL || !crm_metrics_rate_put(currency, body, http_header(req, "If-Match"), &doc,
                                              &created, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    if (created) {
        char location[64];
        snprintf(location, sizeof location, "/v1/metrics/currency-rates/%s", currency);
        http_add_header(req, "Location", location);
    }
    reply_rate(req, created ? 201 : 200, &doc);
}

void handle_currency_rate_delete(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    if (!crm_metrics_rate_delete(http_param(req, "currency"), http_header(req, "If-Match"),
                                 &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_empty(req, 204);
}

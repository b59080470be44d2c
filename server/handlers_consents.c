/*
 * handlers_consents.c — a customer's consent decisions:
 * POST /v1/customers/{id}/consents (customers:write) records decisions
 * (with Idempotency-Key, like POST /v1/customers),
 * GET  /v1/customers/{id}/consents (customers:read) shows the current state
 * and a page of the history.
 */
#include "consents.h"
#include "handlers.h"

#include <stdio.h>
#include <string.h>

#define HISTORY_LIMIT_DEFAULT 50
#define HISTORY_LIMIT_MAX 200

void handle_consents_record(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    crm_idem_response out;
    bool replayed = false, ok = false;
    if (!http_param_id(req, "id", &id)) {
        crm_error_set(&err, CRM_E_NOT_FOUND, "no customer with this id");
    } else {
        json_t *body = http_json_body(req, &err);
        const crm_principal *who = http_principal(req);
        if (body != NULL)
            ok = crm_consents_record_keyed(id, body, who ? who->key_id : 0,
                                           http_header(req, "Idempotency-Key"), &out, &replayed,
                                           &err);
    }
    if (!ok) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    if (out.location != NULL)
        http_add_header(req, "Location", out.location);
    if (replayed)
        http_add_header(req, "Idempotent-Replayed", "true");
    const char *body = out.body ? out.body : "";
    http_reply_bytes(req, out.status, "application/json", body, strlen(body), false);
    crm_idem_response_free(&out);
}

static void get_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    long long id = 0, next = 0;
    int limit = HISTORY_LIMIT_DEFAULT;
    http_param_id(req, "id", &id);
    http_query_limit(req, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX, &limit, &derr); /* checked */
    json_t *doc = crm_consents_get_decode(res, id, limit, &next, &derr);
    if (doc == NULL) {
        http_reply_error(req, &derr);
        crm_error_clear(&derr);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_consents_get(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id, before;
    int limit;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    if (!http_query_limit(req, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX, &limit, &err) ||
        !http_query_after_id(req, &before, &err)) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    crm_query q;
    crm_consents_get_query(&q, id, before, limit);
    http_defer_query(req, &q, get_done);
}

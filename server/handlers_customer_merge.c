/*
 * handlers_customer_merge.c — GET /v1/customers/{id}/duplicates (scope
 * customers:read) and POST /v1/customers/{id}/merge (customers:write):
 * parse the request, call lib/customer_merge.h, render.
 */
#include "customer_merge.h"
#include "handlers.h"

#include <stdio.h>

static void duplicates_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    long long id = 0;
    http_param_id(req, "id", &id);
    json_t *doc = crm_customer_duplicates_decode(res, id, &derr);
    if (doc == NULL) {
        http_reply_error(req, &derr);
        crm_error_clear(&derr);
        return;
    }
    http_reply_json(req, 200, doc);
}

void handle_customer_duplicates(http_request *req)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_query q;
    crm_customer_duplicates_query(&q, id);
    http_defer_query(req, &q, duplicates_done);
}

void handle_customer_merge(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    bool dry_run = false;
    json_t *body = http_json_body(req, &err);
    json_t *rep = body ? crm_customer_merge(id, body, &ctx, &dry_run, &err) : NULL;
    if (rep == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    /* A dry run's version was never stored, so it gets no ETag. */
    if (!dry_run) {
        char etag[32];
        snprintf(etag, sizeof etag, "\"%lld\"",
                 (long long)json_integer_value(json_object_get(rep, "version")));
        http_add_header(req, "ETag", etag);
    }
    http_reply_json(req, 200, rep);
}

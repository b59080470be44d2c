/*
 * handlers_customer_privacy.c — the person's rights over their record:
 * GET  /v1/customers/{id}/export (customers:export) everything held about
 *      them, as one JSON document (right of access), recorded in their
 *      audit trail;
 * POST /v1/customers/{id}/erase  (customers:write, body {"confirm": true})
 *      their personal data removed for good (right to erasure).
 * Parse, call lib/customer_privacy.h, render.
 */
#include "customer_privacy.h"
#include "handlers.h"

#include <stdio.h>

void handle_customer_export(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    json_t *doc = crm_customer_export_audited(id, &ctx, &err);
    if (doc == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    char disposition[80];
    snprintf(
        disposition, sizeof disposition, "attachment; filename=\"customer-%lld.json\"",
        (long long)json_integer_value(json_object_get(json_object_get(doc, "customer"), "id")));
    http_add_header(req, "Content-Disposition", disposition);
    http_add_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 200, doc);
}

void handle_customer_erase(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    bool already = false;
    json_t *body = http_json_body(req, &err);
    json_t *stone = NULL;
    if (body != NULL && crm_customer_erase_body_valid(body, &err))
        stone = crm_customer_erase(id, &ctx, &already, &err);
    if (stone == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(stone, "version")));
    http_add_header(req, "ETag", etag);
    http_reply_json(req, 200, stone);
}

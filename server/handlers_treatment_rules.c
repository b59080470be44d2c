/*
 * handlers_treatment_rules.c — treatment rules (lib/treatments.h,
 * lib/treatment_simulate.h):
 * POST   /v1/treatment-rules                (rules:write) create; 201
 * GET    /v1/treatment-rules                (rules:read)  a page, in order of evaluation
 * POST   /v1/treatment-rules/simulate       (rules:read)  an unsaved rule tried on the base
 * GET    /v1/treatment-rules/{id}           (rules:read)  one, with its ETag
 * PATCH  /v1/treatment-rules/{id}           (rules:write) merge patch; a new version
 * DELETE /v1/treatment-rules/{id}           (rules:write) 204
 * GET    /v1/treatment-rules/{id}/versions  (rules:read)  every version, oldest first
 * POST   /v1/treatment-rules/{id}/simulate  (rules:read)  the stored rule tried on the base
 */
#include "handlers.h"
#include "treatment_simulate.h"
#include "treatments.h"

#include <stdio.h>

static bool rule_id(http_request *req, long long *id)
{
    if (http_param_id(req, "id", id))
        return true;
    http_reply_problem(req, 404, "no treatment rule with this id");
    return false;
}

static void reply_rule(http_request *req, int status, json_t *doc)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(doc, "version")));
    http_add_header(req, "ETag", etag);
    http_reply_json(req, status, doc);
}

/* A page's document with its next_cursor, or the error. */
static void reply_page(http_request *req, json_t *doc, long long next, crm_error *err)
{
    if (doc == NULL) {
        handler_reply_error(req, err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_treatment_rule_create(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc = body ? crm_treatment_rule_create(body, p ? p->key_id : 0, &err) : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/treatment-rules/%lld",
             (long long)json_integer_value(json_object_get(doc, "id")));
    http_add_header(req, "Location", location);
    reply_rule(req, 201, doc);
}

void handle_treatment_rule_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int limit;
    long long after, next = 0;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_treatment_rules_list(after, limit, &next, &err);
    reply_page(req, doc, next, &err);
}

void handle_treatment_rule_get(http_request *req)
{
    long long id;
    if (!rule_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_treatment_rule_get(id, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_rule(req, 200, doc);
}

void handle_treatment_rule_patch(http_request *req)
{
    long long id;
    if (!rule_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc = body ? crm_treatment_rule_patch(id, body, http_header(req, "If-Match"),
                                                  p ? p->key_id : 0, &err)
                       : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_rule(req, 200, doc);
}

void handle_treatment_rule_delete(http_request *req)
{
    long long id;
    if (!rule_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    if (!crm_treatment_rule_delete(id, http_header(req, "If-Match"), &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_empty(req, 204);
}

void handle_treatment_rule_versions(http_request *req)
{
    long long id, after, next = 0;
    int limit;
    if (!rule_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_treatment_rule_versions(id, after, limit, &next, &err);
    reply_page(req, doc, next, &err);
}

static void reply_simulation(http_request *req, json_t *doc, crm_error *err)
{
    if (doc == NULL) {
        handler_reply_error(req, err);
        return;
    }
    http_reply_json(req, 200, doc);
}

void handle_treatment_rule_simulate(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    reply_simulation(req, body ? crm_treatment_rule_simulate(0, body, &err) : NULL, &err);
}

void handle_treatment_rule_simulate_stored(http_request *req)
{
    long long id;
    if (!rule_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    reply_simulation(req, crm_treatment_rule_simulate(id, NULL, &err), &err);
}

/*
 * handlers_contacts.c — contact policies and the contact decision
 * (lib/treatments.h):
 * POST   /v1/contact-policies            (rules:write) create; 201
 * GET    /v1/contact-policies            (rules:read)  a page of them
 * GET    /v1/contact-policies/{id}       (rules:read)  one, with its ETag
 * PATCH  /v1/contact-policies/{id}       (rules:write) merge patch, If-Match
 * DELETE /v1/contact-policies/{id}       (rules:write) 204
 * POST   /v1/customers/{id}/contacts     (touchpoints:write) decide a contact:
 *        201 allowed, 409 refused (the decision in the problem's "decision");
 *        the same (source, event_id) again answers the first decision with
 *        its status and Idempotent-Replayed.
 */
#include "handlers.h"
#include "treatments.h"

#include <stdio.h>
#include <string.h>

static bool policy_id(http_request *req, long long *id)
{
    if (http_param_id(req, "id", id))
        return true;
    http_reply_problem(req, 404, "no contact policy with this id");
    return false;
}

static void reply_policy(http_request *req, int status, json_t *doc)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(doc, "version")));
    http_add_header(req, "ETag", etag);
    http_reply_json(req, status, doc);
}

void handle_contact_policy_create(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc = body ? crm_contact_policy_create(body, p ? p->key_id : 0, &err) : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/contact-policies/%lld",
             (long long)json_integer_value(json_object_get(doc, "id")));
    http_add_header(req, "Location", location);
    reply_policy(req, 201, doc);
}

void handle_contact_policy_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int limit;
    long long after, next = 0;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_contact_policies_list(after, limit, &next, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_contact_policy_get(http_request *req)
{
    long long id;
    if (!policy_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_contact_policy_get(id, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_policy(req, 200, doc);
}

void handle_contact_policy_patch(http_request *req)
{
    long long id;
    if (!policy_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc = body ? crm_contact_policy_patch(id, body, http_header(req, "If-Match"),
                                                  p ? p->key_id : 0, &err)
                       : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_policy(req, 200, doc);
}

void handle_contact_policy_delete(http_request *req)
{
    long long id;
    if (!policy_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    if (!crm_contact_policy_delete(id, http_header(req, "If-Match"), &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_empty(req, 204);
}

void handle_customer_contact(http_request *req)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    bool allowed = false, replayed = false;
    json_t *doc =
        body ? crm_contact_decide(id, body, p ? p->key_id : 0, &allowed, &replayed, &err) : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    if (replayed)
        http_add_header(req, "Idempotent-Replayed", "true");
    if (allowed) {
        http_reply_json(req, 201, doc);
        return;
    }
    http_reply_problem_member(req, 409,
                              "the customer may not be contacted now on this channel for this "
                              "purpose: see the reasons of the decision",
                              "decision", doc);
}

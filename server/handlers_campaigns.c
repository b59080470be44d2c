/*
 * handlers_campaigns.c — campaign definitions (lib/campaigns.h):
 * POST   /v1/campaigns                 (campaigns:write) create, as a draft; 201
 * GET    /v1/campaigns                 (campaigns:read)  a page by id, ?status= filters
 * GET    /v1/campaigns/{id}            (campaigns:read)  one, with its ETag
 * PATCH  /v1/campaigns/{id}            (campaigns:write) merge patch and status; If-Match required
 * DELETE /v1/campaigns/{id}            (campaigns:write) a draft only; 204
 * GET    /v1/campaigns/{id}/versions   (campaigns:read)  every version, oldest first
 */
#include "campaigns.h"
#include "handlers.h"

#include <stdio.h>

static bool campaign_id(http_request *req, long long *id)
{
    if (http_param_id(req, "id", id))
        return true;
    http_reply_problem(req, 404, "no campaign with this id");
    return false;
}

static void reply_campaign(http_request *req, int status, json_t *doc)
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

void handle_campaign_create(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc = body ? crm_campaign_create(body, p ? p->key_id : 0, &err) : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/campaigns/%lld",
             (long long)json_integer_value(json_object_get(doc, "id")));
    http_add_header(req, "Location", location);
    reply_campaign(req, 201, doc);
}

void handle_campaign_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int limit;
    long long after, next = 0;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_campaigns_list(http_query(req, "status"), after, limit, &next, &err);
    reply_page(req, doc, next, &err);
}

void handle_campaign_get(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_campaign_get(id, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_campaign(req, 200, doc);
}

void handle_campaign_patch(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    /* A campaign's changes are conditional: the status machine must not
     * act on a version the client has not seen. */
    const char *if_match = http_header(req, "If-Match");
    if (if_match == NULL) {
        http_reply_problem(req, 428, "a change of a campaign needs If-Match with its ETag");
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *allowed = NULL;
    json_t *doc =
        body ? crm_campaign_patch(id, body, if_match, p ? p->key_id : 0, &allowed, &err) : NULL;
    if (doc != NULL) {
        reply_campaign(req, 200, doc);
    } else if (allowed != NULL) {
        http_reply_problem_member(req, 409, err.detail, "allowed_transitions", allowed);
        crm_error_clear(&err);
    } else {
        handler_reply_error(req, &err);
    }
}

void handle_campaign_delete(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    if (!crm_campaign_delete(id, http_header(req, "If-Match"), &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_empty(req, 204);
}

void handle_campaign_versions(http_request *req)
{
    long long id, after, next = 0;
    int limit;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_campaign_versions(id, after, limit, &next, &err);
    reply_page(req, doc, next, &err);
}

/* POST /v1/campaigns/{id}/execute: 202 with the job (Location: the job),
 * the campaign now running. */
void handle_campaign_execute(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    const crm_principal *p = http_principal(req);
    json_t *job = crm_campaign_execute(id, p ? p->key_id : 0, &err);
    if (job == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/jobs/%lld",
             (long long)json_integer_value(json_object_get(job, "id")));
    http_add_header(req, "Location", location);
    http_reply_json(req, 202, job);
}

/* GET /v1/campaigns/{id}/results: the stored results (campaigns/results.c). */
void handle_campaign_results(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    size_t len = 0;
    char *text = crm_campaign_results(id, crm_campaigns_currency(), &len, &err);
    if (text == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

/*
 * handlers_segments.c — segments (lib/segment_store.h):
 * POST   /v1/segments                 (segments:write) create; 201, its build queued
 * GET    /v1/segments                 (segments:read)  a page of them
 * GET    /v1/segments/{id}            (segments:read)  one, with its ETag
 * PATCH  /v1/segments/{id}            (segments:write) merge patch; a new rule rebuilds
 * DELETE /v1/segments/{id}            (segments:write) 204; 409 while another names it
 * GET    /v1/segments/{id}/count      (segments:read)  the kept count, or ?at= from the log
 * GET    /v1/segments/{id}/customers  (segments:read)  members now, or ?at=
 * GET    /v1/segments/{id}/changes    (segments:read)  entries and exits, ?since=
 * GET    /v1/segments/{id}/history    (segments:read)  the size over time
 */
#include "customers.h"
#include "handlers.h"
#include "segment_store.h"

#include <stdio.h>
#include <string.h>

/* Reads an optional RFC 3339 query parameter (0 when absent). */
static bool query_time(http_request *req, const char *name, long long *ms, crm_error *err)
{
    *ms = 0;
    const char *v = http_query(req, name);
    if (v == NULL)
        return true;
    if (!crm_rfc3339_epoch_ms(v, ms) || *ms <= 0) {
        char field[32];
        snprintf(field, sizeof field, "%s", name);
        crm_error_add_field(err, field, "must be an RFC 3339 date-time after 1970");
        return crm_error_set(err, CRM_E_INVALID, "the query parameter %s is invalid", name);
    }
    return true;
}

static bool segment_id(http_request *req, long long *id)
{
    if (http_param_id(req, "id", id))
        return true;
    http_reply_problem(req, 404, "no segment with this id");
    return false;
}

static void reply_segment(http_request *req, int status, json_t *doc)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(doc, "version")));
    http_add_header(req, "ETag", etag);
    http_reply_json(req, status, doc);
}

void handle_segment_create(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc = body ? crm_segment_create(body, p ? p->key_id : 0, &err) : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/segments/%lld",
             (long long)json_integer_value(json_object_get(doc, "id")));
    http_add_header(req, "Location", location);
    reply_segment(req, 201, doc);
}

void handle_segment_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int limit;
    long long after, next = 0;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_segments_list(after, limit, &next, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_segment_get(http_request *req)
{
    long long id;
    if (!segment_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_segment_get(id, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_segment(req, 200, doc);
}

void handle_segment_patch(http_request *req)
{
    long long id;
    if (!segment_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc =
        body ? crm_segment_patch(id, body, http_header(req, "If-Match"), p ? p->key_id : 0, &err)
             : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_segment(req, 200, doc);
}

void handle_segment_delete(http_request *req)
{
    long long id;
    if (!segment_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    if (!crm_segment_delete(id, http_header(req, "If-Match"), &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_empty(req, 204);
}

/* ---- the membership --------------------------------------------------------------- */

static void count_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    long long id = 0, at = 0;
    crm_error derr = CRM_ERROR_INIT;
    http_param_id(req, "id", &id);
    if (!query_time(req, "at", &at, &derr)) {
        handler_reply_error(req, &derr);
        return;
    }
    size_t len = 0;
    char *text = crm_segment_count_render(res, id, at, &len, &derr);
    if (text == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

/* One statement on the event loop: the kept count is a point read. */
void handle_segment_count(http_request *req)
{
    long long id, at;
    if (!segment_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    if (!query_time(req, "at", &at, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    crm_query q;
    crm_segment_count_query(&q, id, at);
    http_defer_query(req, &q, count_done);
}

void handle_segment_customers(http_request *req)
{
    long long id, at, after, next = 0;
    int limit;
    if (!segment_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err) &&
        query_time(req, "at", &at, &err))
        doc = crm_segment_customers(id, at, after, limit, &next, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_segment_changes(http_request *req)
{
    long long id, since, after, next = 0;
    int limit;
    if (!segment_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = NULL;
    if (http_query_limit(req, 100, 1000, &limit, &err) && http_query_after_id(req, &after, &err) &&
        query_time(req, "since", &since, &err))
        doc = crm_segment_changes(id, since, after, limit, &next, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_segment_history(http_request *req)
{
    long long id, after, next = 0;
    int limit;
    if (!segment_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = NULL;
    if (http_query_limit(req, 100, 1000, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_segment_history(id, after, limit, &next, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

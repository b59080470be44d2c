/*
 * handlers_touchpoints.c — /v1/touchpoints and a customer's timeline
 * (scopes touchpoints:read and touchpoints:write): parse the request, call
 * lib/touchpoints.h, render.
 */
#include "handlers.h"
#include "touchpoints.h"

#include <stdio.h>
#include <stdlib.h>

/* POST /v1/touchpoints: 201 with the new touchpoint, or 200 with the one
 * already stored under the same (source, event_id). */
void handle_touchpoint_record(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err); /* the request owns it */
    if (body == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    bool created = false;
    json_t *rep = crm_touchpoint_record(body, &ctx, &created, &err);
    if (rep == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/touchpoints/%lld",
             (long long)json_integer_value(json_object_get(rep, "id")));
    http_add_header(req, created ? "Location" : "Content-Location", location);
    http_reply_json(req, created ? 201 : 200, rep);
}

/* POST /v1/touchpoints/batch: an array of touchpoints, answered item by item. */
void handle_touchpoint_batch(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err); /* the request owns it */
    if (body == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    if (!json_is_array(body)) {
        crm_error_add_field(&err, "", "must be an array of touchpoints");
        crm_error_set(&err, CRM_E_INVALID, "a batch is a JSON array of touchpoints");
        handler_reply_error(req, &err);
        return;
    }
    if (json_array_size(body) > CRM_TOUCHPOINT_BATCH_MAX) {
        crm_error_set(&err, CRM_E_TOO_LARGE, "a batch holds at most %d touchpoints",
                      CRM_TOUCHPOINT_BATCH_MAX);
        handler_reply_error(req, &err);
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    json_t *report = crm_touchpoint_record_batch(body, &ctx, &err);
    if (report == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_json(req, 200, report);
}

static void get_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    size_t len = 0;
    char *text = crm_touchpoint_get_render(res, &len, &derr);
    if (text == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

void handle_touchpoint_get(http_request *req)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no touchpoint with this id");
        return;
    }
    crm_query q;
    crm_touchpoint_get_query(&q, id);
    http_defer_query(req, &q, get_done);
}

/* The timeline's parameters, borrowed from the request. */
static bool timeline_filter(http_request *req, crm_timeline_filter *f, crm_error *err)
{
    *f = (crm_timeline_filter){
        .channel = http_query(req, "channel"),
        .type = http_query(req, "type"),
        .occurred_after = http_query(req, "occurred_after"),
        .occurred_before = http_query(req, "occurred_before"),
        .after = http_query(req, "after"),
    };
    if (!http_param_id(req, "id", &f->customer_id))
        return crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    return http_query_limit(req, 50, 200, &f->limit, err);
}

static void timeline_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    const crm_timeline_filter *f = http_context(req); /* parsed by the handler */
    size_t len = 0;
    char *text = crm_timeline_render(res, f, &len, &derr);
    if (text == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

void handle_customer_timeline(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_timeline_filter *f = crm_arena_alloc(http_arena(req), sizeof *f);
    crm_query q;
    if (f == NULL) {
        http_reply_problem(req, 500, "out of memory");
        return;
    }
    if (!timeline_filter(req, f, &err) || !crm_timeline_query(f, http_arena(req), &q, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_set_context(req, f); /* parsed once: timeline_done renders with it */
    http_defer_query(req, &q, timeline_done);
}

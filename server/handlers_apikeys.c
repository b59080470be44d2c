/*
 * handlers_apikeys.c — admin endpoints for API keys (scope: admin).
 */
#include "handlers.h"

#include <stdio.h>

void handle_apikey_create(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    json_t *key = body ? crm_apikey_create(body, &err) : NULL;
    if (key == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    char location[64];
    snprintf(location, sizeof location, "/v1/api-keys/%lld",
             (long long)json_integer_value(json_object_get(key, "id")));
    http_add_header(req, "Location", location);
    http_add_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 201, key);
}

static void list_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    const int *limit = http_context(req); /* parsed by the handler */
    long long next = 0;
    json_t *keys = crm_apikey_list_decode(res, *limit, &next);
    json_t *page = json_pack("{s:o, s:o}", "data", keys, "next_cursor",
                             next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, page);
}

void handle_apikey_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int *limit = crm_arena_alloc(http_arena(req), sizeof *limit);
    long long after;
    if (limit == NULL) {
        http_reply_problem(req, 500, "out of memory");
        return;
    }
    if (!http_query_limit(req, 50, 200, limit, &err) || !http_query_after_id(req, &after, &err)) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    crm_query q;
    crm_apikey_list_query(&q, after, *limit);
    http_set_context(req, limit); /* parsed once: list_done renders with it */
    http_defer_query(req, &q, list_done);
}

static void get_done(http_request *req, const PGresult *res, const crm_error *err)
{
    crm_error derr = CRM_ERROR_INIT;
    long long id = 0;
    http_param_id(req, "id", &id);
    json_t *key = res ? crm_apikey_get_decode(res, id, &derr) : NULL;
    if (key == NULL) {
        http_reply_error(req, res ? &derr : err);
        crm_error_clear(&derr);
        return;
    }
    http_reply_json(req, 200, key);
}

void handle_apikey_get(http_request *req)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no API key with this id");
        return;
    }
    crm_query q;
    crm_apikey_get_query(&q, id);
    http_defer_query(req, &q, get_done);
}

void handle_apikey_revoke(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    bool ok = false;
    if (!http_param_id(req, "id", &id))
        crm_error_set(&err, CRM_E_NOT_FOUND, "no API key with this id");
    else
        ok = crm_apikey_revoke(id, &err);
    if (!ok) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    http_reply_empty(req, 204);
}

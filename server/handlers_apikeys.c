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

void handle_apikey_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int limit;
    long long after, next = 0;
    json_t *keys = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        keys = crm_apikey_list(after, limit, &next, &err);
    if (keys == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    json_t *page = json_pack("{s:o, s:o}", "data", keys, "next_cursor",
                             next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, page);
}

void handle_apikey_get(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    json_t *key = NULL;
    if (!http_param_id(req, "id", &id))
        crm_error_set(&err, CRM_E_NOT_FOUND, "no API key with this id");
    else
        key = crm_apikey_get(id, &err);
    if (key == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    http_reply_json(req, 200, key);
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

/*
 * http_admit.c — admission: what crmd decides from the request line and
 * headers alone (sizes, route, key, content type), and the body's limits.
 *
 * admit_request runs once per request on its I/O thread, before any body
 * byte is read; a refusal here answers without reading the body (the
 * connection then closes). Further checks (rate limits, CORS, query
 * parameters) belong in admit_request as one call each.
 */
#include "http_internal.h"
#include "cors.h"
#include "log.h"
#include "query_check.h"
#include "throttle.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static enum MHD_Result sum_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

/* Adds the length of one query argument as it appeared in the URL. */
static enum MHD_Result sum_argument(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) + 1 : 0) + 1;
    return MHD_YES;
}

bool req_body_announced(http_request *req)
{
    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return (cl != NULL && strcmp(cl, "0") != 0) || te != NULL;
}

static bool content_type_is_json(const char *ct)
{
    if (ct == NULL)
        return false;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return true;
    /* application/merge-patch+json, application/problem+json, ... */
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* The key is known: refuses (403) a key without the route's scope. A
 * route for any key (ROUTE_ANY_KEY) leaves that to its handler. */
static bool authorize(http_request *req)
{
    req->has_principal = true;
    if (!http_throttle_admit(req, req->principal.key_id)) /* 429 (server/throttle.c) */
        return false;
    unsigned scope = req->match.route->scope;
    if (scope == ROUTE_ANY_KEY || crm_principal_allows(&req->principal, scope))
        return true;
    char detail[128];
    snprintf(detail, sizeof detail, "this operation needs the '%s' scope", crm_scope_name(scope));
    http_reply_problem(req, 403, detail);
    return false;
}

/* The request line and headers within the configured sizes (414, 431). */
static bool admit_sizes(http_request *req)
{
    const crmd_config *cfg = req->srv->cfg;
    if (req->too_many_params) {
        char detail[128];
        snprintf(detail, sizeof detail, "the request has more than %d query parameters",
                 HTTP_MAX_QUERY_PARAMS);
        http_reply_problem(req, 414, detail);
        return false;
    }
    size_t url_bytes = strlen(req->path);
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, sum_argument, &url_bytes);
    if (url_bytes > cfg->max_url_bytes) {
        http_reply_problem(req, 414, "the request URL is longer than the server accepts");
        return false;
    }
    size_t header_bytes = 0;
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, sum_header, &header_bytes);
    if (header_bytes > cfg->max_header_bytes) {
        http_reply_problem(req, 431, "the request headers are larger than the server accepts");
        return false;
    }
    return true;
}

/* A route for the method and path (404, 405 with Allow, 400). */
static bool admit_route(http_request *req)
{
    req->route_status = router_match(req->method, req->path, &req->arena, &req->match);
    switch (req->route_status) {
    case ROUTE_FOUND:
        return true;
    case ROUTE_NOT_FOUND:
        http_reply_problem(req, 404, "no resource at this path");
        return false;
    case ROUTE_BAD_PATH:
        http_reply_problem(req, 400, "the path contains an encoded NUL byte");
        return false;
    case ROUTE_BAD_PARAM: /* 422 naming it (server/query_check.c) */
        http_refuse_path_param(req, &req->match);
        return false;
    case ROUTE_BAD_METHOD: {
        if (http_cors_preflight(req, req->method, req->match.allow))
            return false;
        char detail[200];
        snprintf(detail, sizeof detail, "this resource supports %s", req->match.allow);
        http_add_header(req, "Allow", req->match.allow);
        http_reply_problem(req, 405, detail);
        return false;
    }
    }
    return false;
}

/* The key, as far as the cache knows it (401, 403). On an I/O thread only
 * the cache is asked; a key it does not hold is checked on a worker. */
static bool admit_key(http_request *req)
{
    if (req->match.route->scope == 0)
        return true;
    crm_error err = CRM_ERROR_INIT;
    const char *authorization = http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    crm_auth_result auth = crm_auth_authenticate_cached(authorization, &req->principal, &err);
    if (auth == CRM_AUTH_REFUSED) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return false;
    }
    if (auth == CRM_AUTH_UNKNOWN) {
        req->key_unchecked = true;
        return true;
    }
    return authorize(req);
}

/* Query keys and values, for every route: known to the route, once each,
 * strict UTF-8 (server/query_check.c). */
static bool admit_query(http_request *req)
{
    return http_query_acceptable(req, req->conn, req->match.route);
}

/* The route's body limit within the server's. */
static size_t body_limit(const http_request *req)
{
    size_t route_max = req->match.route->max_body;
    size_t server_max = req->srv->cfg->max_body_bytes;
    return route_max < server_max ? route_max : server_max;
}

static void refuse_too_large(http_request *req)
{
    char detail[128];
    if (req->body_limit == 0)
        snprintf(detail, sizeof detail, "this operation takes no request body");
    else
        snprintf(detail, sizeof detail, "the request body is larger than %zu bytes",
                 req->body_limit);
    http_reply_problem(req, 413, detail);
}

/* What the headers say of the body: its size and type (413, 415). */
static bool admit_body_announcement(http_request *req)
{
    req->body_limit = body_limit(req);
    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    bool too_large = cl != NULL ? strtoull(cl, NULL, 10) > req->body_limit
                                : req->body_limit == 0 && req_body_announced(req);
    if (too_large) {
        refuse_too_large(req);
        return false;
    }
    if (req->match.route->json_body && req_body_announced(req) &&
        !content_type_is_json(http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
        http_reply_problem(req, 415, "send the body as application/json");
        return false;
    }
    return true;
}

/* Takes n bytes from the process-wide budget for bodies in flight
 * (CRMD_BODY_BUDGET_BYTES): many slow uploads cannot add up to more. */
static bool reserve_body_bytes(http_request *req, size_t n)
{
    http_server *srv = req->srv;
    size_t before = atomic_fetch_add(&srv->body_bytes, n);
    if (before + n > srv->cfg->body_budget_bytes) {
        atomic_fetch_sub(&srv->body_bytes, n);
        return false;
    }
    req->body_reserved += n;
    return true;
}

void admit_release_body(http_request *req)
{
    if (req->body_reserved > 0)
        atomic_fetch_sub(&req->srv->body_bytes, req->body_reserved);
    req->body_reserved = 0;
}

static void refuse_busy(http_request *req)
{
    http_reply_problem(req, 503, "the server is receiving too many request bodies; retry later");
}

bool admit_body_budget(http_request *req)
{
    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    size_t announced = cl != NULL ? (size_t)strtoull(cl, NULL, 10) : 0;
    if (announced == 0 || reserve_body_bytes(req, announced))
        return true;
    refuse_busy(req);
    return false;
}

/* Everything decided from the request line and headers alone, in order;
 * the first check that refuses answers and ends admission. */
void admit_request(http_request *req)
{
    http_cors_annotate(req); /* before any answer (server/cors.c) */
    if (!admit_sizes(req) || !admit_route(req) || !admit_key(req) || !admit_query(req) ||
        !admit_body_announcement(req))
        return;
}

static bool append_body(http_request *req, const char *data, size_t len)
{
    size_t max = req->body_limit;
    if (req->body_len + len > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *grown = realloc(req->body, cap);
        if (grown == NULL)
            return false;
        req->body = grown;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    return true;
}

bool admit_body_bytes(http_request *req, const char *data, size_t len)
{
    bool fits = req->body_len + len <= req->body_limit;
    /* A chunked body (or one longer than announced) takes its budget as it
     * comes. */
    bool budgeted = !fits || req->body_len + len <= req->body_reserved ||
                    reserve_body_bytes(req, req->body_len + len - req->body_reserved);
    if (fits && budgeted && append_body(req, data, len))
        return true;
    if (!fits)
        refuse_too_large(req);
    else if (!budgeted)
        refuse_busy(req);
    else
        http_reply_problem(req, 500, "out of memory");
    free(req->body);
    req->body = NULL;
    req->body_cap = 0;
    return false;
}

/* On a worker: the key the cache did not hold, from the database. */
bool admit_unchecked_key(http_request *req)
{
    req->key_unchecked = false;
    crm_error err = CRM_ERROR_INIT;
    bool allowed =
        crm_auth_authenticate(http_header(req, MHD_HTTP_HEADER_AUTHORIZATION), &req->principal,
                              &err) &&
        authorize(req);
    if (err.code != CRM_OK)
        http_reply_error(req, &err);
    crm_error_clear(&err);
    return allowed;
}

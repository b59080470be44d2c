/*
 * http_request.c — what handlers use: accessors for the request's parts,
 * replies, and problem+json (RFC 9457) for every error answer.
 *
 * A reply fills the answer and moves the request to REQ_ANSWERED; whoever
 * owns the request then (its I/O thread, or a worker that hands it back)
 * passes it on. The I/O thread queues it to libmicrohttpd.
 */
#include "http_internal.h"
#include "jbuf.h"
#include "json.h"
#include "log.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- accessors for handlers -------------------------------------------- */

const char *http_param(http_request *req, const char *name)
{
    size_t len = strlen(name);
    for (int i = 0; i < req->match.nparams; i++)
        if (req->match.params[i].name_len == len &&
            memcmp(req->match.params[i].name, name, len) == 0)
            return req->match.params[i].value;
    return NULL;
}

const char *http_query(http_request *req, const char *name)
{
    /* The unescape callback leaves values raw; decode them here. */
    const char *raw = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
    if (raw == NULL)
        return NULL;
    return router_percent_decode(&req->arena, raw, strlen(raw), true);
}

const char *http_header(http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

json_t *http_json_body(http_request *req, crm_error *err)
{
    if (req->json == NULL) {
        if (req->body_len == 0) {
            crm_error_set(err, CRM_E_MALFORMED, "the request body is empty; a JSON document "
                                                "is required");
            return NULL;
        }
        req->json = crm_json_parse(req->body, req->body_len, err);
    }
    return req->json;
}

size_t http_body_len(const http_request *req)
{
    return req->body_len;
}

const crm_principal *http_principal(const http_request *req)
{
    return req->has_principal ? &req->principal : NULL;
}

crm_arena *http_arena(http_request *req)
{
    return &req->arena;
}

void http_set_context(http_request *req, void *ctx)
{
    req->handler_ctx = ctx;
}

void *http_context(const http_request *req)
{
    return req->handler_ctx;
}

/* ---- replies ----------------------------------------------------------- */

void http_add_header(http_request *req, const char *name, const char *value)
{
    if (req->nheaders == MAX_EXTRA_HEADERS)
        return;
    req->headers[req->nheaders].name = crm_arena_strndup(&req->arena, name, strlen(name));
    req->headers[req->nheaders].value = crm_arena_strndup(&req->arena, value, strlen(value));
    req->nheaders++;
}

static void set_answer(http_request *req, int status, const char *content_type, char *body,
                       size_t len, bool is_static)
{
    if (req_answered(req)) { /* a handler bug: keep the first answer */
        if (!is_static)
            free(body);
        crm_log(CRM_LOG_ERROR, "second reply for request %s ignored", req->request_id);
        return;
    }
    req->status = status;
    req->content_type = content_type;
    req->resp_body = body;
    req->resp_len = len;
    req->resp_static = is_static;
    /* Last: a worker's answer is complete before the state says so. */
    req_set_state(req, REQ_ANSWERED);
}

bool req_answered(const http_request *req)
{
    req_state s = req_get_state(req);
    return s == REQ_ANSWERED || s == REQ_QUEUED;
}

void req_check_answered(http_request *req)
{
    req_state s = req_get_state(req);
    if (s == REQ_RUNNING_IO || s == REQ_ON_WORKER) {
        crm_log(CRM_LOG_ERROR, "handler for %s %s gave no answer", req->match.route->method,
                req->match.route->pattern);
        http_reply_problem(req, 500, "internal error");
    }
}

void http_reply_bytes(http_request *req, int status, const char *content_type, const char *data,
                      size_t len, bool is_static)
{
    char *body = (char *)data;
    if (!is_static) {
        body = malloc(len ? len : 1);
        if (body == NULL) {
            http_reply_problem(req, 500, "out of memory");
            return;
        }
        memcpy(body, data, len);
    }
    set_answer(req, status, content_type, body, len, is_static);
}

void http_reply_fd(http_request *req, int status, const char *content_type, int fd, size_t len)
{
    if (req_answered(req)) {
        close(fd);
        crm_log(CRM_LOG_ERROR, "second reply for request %s ignored", req->request_id);
        return;
    }
    req->resp_is_file = true;
    req->resp_fd = fd;
    set_answer(req, status, content_type, NULL, len, true);
}

void http_reply_json(http_request *req, int status, json_t *doc)
{
    size_t len = 0;
    char *text = crm_json_text(doc, &len);
    json_decref(doc);
    if (text == NULL) {
        crm_log(CRM_LOG_ERROR, "could not render a response for request %s", req->request_id);
        http_reply_problem(req, 500, "internal error");
        return;
    }
    set_answer(req, status, "application/json", text, len, false);
}

void http_reply_json_text(http_request *req, int status, char *text, size_t len)
{
    if (text == NULL) {
        crm_log(CRM_LOG_ERROR, "could not render a response for request %s", req->request_id);
        http_reply_problem(req, 500, "internal error");
        return;
    }
    set_answer(req, status, "application/json", text, len, false);
}

void http_reply_empty(http_request *req, int status)
{
    set_answer(req, status, NULL, NULL, 0, true);
}

int http_status_for(crm_errcode code)
{
    switch (code) {
    case CRM_OK: return 200;
    case CRM_E_MALFORMED: return 400;
    case CRM_E_INVALID: return 422;
    case CRM_E_NOT_FOUND: return 404;
    case CRM_E_CONFLICT: return 409;
    case CRM_E_UNAUTHORIZED: return 401;
    case CRM_E_FORBIDDEN: return 403;
    case CRM_E_TOO_LARGE: return 413;
    case CRM_E_UNSUPPORTED: return 415;
    case CRM_E_PRECONDITION: return 412;
    case CRM_E_GONE: return 410;
    case CRM_E_UNAVAILABLE: return 503;
    case CRM_E_INTERNAL: return 500;
    }
    return 500;
}

static const char *status_title(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

static const char *status_type(int status)
{
    switch (status) {
    case 400: return "malformed-request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not-found";
    case 405: return "method-not-allowed";
    case 409: return "conflict";
    case 410: return "gone";
    case 412: return "precondition-failed";
    case 413: return "payload-too-large";
    case 414: return "uri-too-long";
    case 415: return "unsupported-media-type";
    case 422: return "validation-failed";
    case 428: return "precondition-required";
    case 429: return "rate-limited";
    case 431: return "headers-too-large";
    case 503: return "service-unavailable";
    default: return "internal-error";
    }
}

/* The problem document; member (not NULL) adds one extension member,
 * value stolen. */
static void reply_problem_full(http_request *req, int status, const char *detail, json_t *errors,
                               const char *member, json_t *value)
{
    char type[96], instance[96];
    snprintf(type, sizeof type, "https://crmd.dev/problems/%s", status_type(status));
    snprintf(instance, sizeof instance, "urn:crmd:request:%s", req->request_id);
    json_t *doc = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "type", type, "title",
                            status_title(status), "status", status, "detail", detail ? detail : "",
                            "instance", instance, "request_id", req->request_id);
    if (doc == NULL) /* detail was not UTF-8: say less rather than nothing */
        doc = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", type, "title", status_title(status),
                        "status", status, "instance", instance, "request_id", req->request_id);
    if (errors != NULL)
        json_object_set(doc, "errors", errors);
    if (member != NULL)
        json_object_set_new(doc, member, value);
    if (status == 503) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", req->srv->cfg->retry_after_s);
        http_add_header(req, "Retry-After", secs);
    }
    if (status == 401)
        http_add_header(req, "WWW-Authenticate", "Bearer realm=\"crmd\"");
    size_t len = 0;
    char *text = crm_json_text(doc, &len);
    json_decref(doc);
    if (text == NULL) {
        http_reply_bytes(req, 500, "application/problem+json", "{\"status\":500}", 14, true);
        return;
    }
    set_answer(req, status, "application/problem+json", text, len, false);
}

void http_reply_problem(http_request *req, int status, const char *detail)
{
    reply_problem_full(req, status, detail, NULL, NULL, NULL);
}

void http_reply_problem_member(http_request *req, int status, const char *detail,
                               const char *member, json_t *value)
{
    reply_problem_full(req, status, detail, NULL, member, value);
}

void http_reply_error(http_request *req, const crm_error *err)
{
    if (err->code == CRM_OK) {
        /* A lib function failed without saying why (an allocation, most
         * likely): never a 200 with a problem body. */
        crm_log(CRM_LOG_ERROR, "request %s failed without an error code (%s %s)",
                req->request_id, req->method,
                req->match.route ? req->match.route->pattern : "unrouted");
        reply_problem_full(req, 500,
                           "internal error; the server log has the details under "
                           "this request id",
                           NULL, NULL, NULL);
        return;
    }
    int status = http_status_for(err->code);
    const char *detail = err->detail;
    if (status == 500)
        detail = "internal error; the server log has the details under this request id";
    reply_problem_full(req, status, detail, err->errors, NULL, NULL);
}

/* ---- request ids ------------------------------------------------------- */

static bool request_id_acceptable(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

void req_assign_id(http_request *req)
{
    const char *given = http_header(req, "X-Request-Id");
    if (given != NULL && request_id_acceptable(given)) {
        memcpy(req->request_id, given, strlen(given) + 1);
        return;
    }
    /* Request ids need to be unique, not secret: a per-thread splitmix64
     * stream seeded once from the system generator saves a getrandom(2)
     * call per request. */
    static _Thread_local uint64_t state;
    if (state == 0)
        randombytes_buf(&state, sizeof state);
    unsigned char raw[16];
    for (int half = 0; half < 2; half++) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        memcpy(raw + 8 * half, &z, 8);
    }
    sodium_bin2hex(req->request_id, sizeof req->request_id, raw, sizeof raw);
}


/*
 * http.c — libmicrohttpd glue: request lifecycle, limits, replies, logging.
 *
 * libmicrohttpd calls access_handler several times per request:
 *   1. headers received (*con_cls == NULL): we create the request, route it
 *      and check limits, the key and the content type;
 *   2. zero or more times with body data, which we append up to the limit;
 *   3. once more with no data: the request is complete, the handler runs.
 * We answer on the first call only when the request carries a body we do not
 * want to read (413, 401, 415, ...): libmicrohttpd then closes the
 * connection instead of reading the rest. Answering a body-less request on
 * the first call would also close it and defeat keep-alive, so those answers
 * wait for call 3.
 *
 * Handlers run on the thread-pool thread that owns the connection; see
 * README ("Threading") for why and what was measured.
 */
#include "http.h"
#include "dbloop.h"
#include "jbuf.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "cors.h"        /* HOOK(router) */
#include "query_check.h" /* HOOK(router) */
#include "throttle.h"    /* HOOK(router) */

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EXTRA_HEADERS 16 /* HOOK(router): CORS and RateLimit-* need room */

/* One I/O thread: its own libmicrohttpd daemon (sharing the port through
 * SO_REUSEPORT), its own pipelined database loop, one epoll over both. */
typedef struct io_thread {
    http_server *srv;
    struct MHD_Daemon *daemon;
    crm_dbloop *loop;
    int epfd;
    int wakefd; /* written once, to make the thread exit */
    int kickfd; /* written by workers after resuming one of this thread's requests */
    bool resumed; /* this thread resumed a request libmicrohttpd has not seen yet */
    pthread_t thread;
} io_thread;

struct http_server {
    const crmd_config *cfg;
    io_thread *io;
    int nio;
    /* Worker threads run the handlers that may block (writes, transactions). */
    pthread_t *workers;
    int nworkers;
    pthread_mutex_t work_mu;
    pthread_cond_t work_cv;
    http_request *work_head, *work_tail;
    bool work_stop;
    atomic_int in_flight;
    atomic_bool stopping;
    int port;
};

/* The running server, for /metrics. One per process. */
static http_server *current_server;

/* The I/O thread this code runs on, or NULL on a worker thread. */
static _Thread_local io_thread *current_io;

struct http_request {
    struct MHD_Connection *conn;
    http_server *srv;
    const char *method;
    const char *path;
    struct timespec started;
    char request_id[64];
    route_match match;
    route_status route_status;
    crm_principal principal;
    bool has_principal;
    crm_arena arena;

    /* body */
    char *body;
    size_t body_len, body_cap;
    size_t discarded; /* bytes read and dropped after a 413 */
    json_t *json; /* parsed body, owned */

    /* a statement running on the database loop (http_defer_query) */
    http_query_done deferred;
    bool suspended;
    bool worker_done;          /* a worker ran the handler */
    bool auth_pending;         /* the key was not cached: a worker checks it */
    struct io_thread *io;      /* the I/O thread that owns the connection */
    struct http_request *next; /* in the worker queue */
    PGresult *db_res;
    crm_error db_err;

    /* response */
    bool answered;  /* a reply_* call filled the fields below */
    bool queued;    /* handed to libmicrohttpd */
    int status;
    const char *content_type;
    char *resp_body; /* malloc'd, or static when resp_static */
    size_t resp_len;
    bool resp_static;
    struct {
        const char *name, *value; /* arena copies */
    } headers[MAX_EXTRA_HEADERS];
    int nheaders;
};

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

const crm_principal *http_principal(const http_request *req)
{
    return req->has_principal ? &req->principal : NULL;
}

crm_arena *http_arena(http_request *req)
{
    return &req->arena;
}

/* ---- deferred queries ---------------------------------------------------- */

/* On the I/O thread, from crm_dbloop_run: keep the outcome, wake the request. */
static void deferred_query_done(void *arg, PGresult *res, const crm_error *err)
{
    http_request *req = arg;
    req->io->resumed = true;
    req->db_res = res;
    if (err != NULL) {
        req->db_err.code = err->code;
        memcpy(req->db_err.detail, err->detail, sizeof req->db_err.detail);
    }
    MHD_resume_connection(req->conn);
}

void http_defer_query(http_request *req, const crm_query *q, http_query_done done)
{
    crm_error err = CRM_ERROR_INIT;
    if (current_io == NULL) {
        /* On a worker thread blocking is allowed: run it here, answer now. */
        PGresult *res = crm_db_run_query(q, &err);
        done(req, res, res ? NULL : &err);
        PQclear(res);
        crm_error_clear(&err);
        return;
    }
    const char **values = crm_arena_alloc(&req->arena, sizeof *values * (size_t)(q->nparams + 1));
    for (int i = 0; i < q->nparams; i++)
        values[i] = q->values[i] ? crm_arena_strndup(&req->arena, q->values[i],
                                                     strlen(q->values[i]))
                                 : NULL;
    req->deferred = done;
    req->suspended = true;
    MHD_suspend_connection(req->conn);
    if (!crm_dbloop_submit(current_io->loop, q->stmt, q->nparams, values, deferred_query_done,
                           req, &err)) {
        req->db_err = err;
        current_io->resumed = true;
        MHD_resume_connection(req->conn);
    }
}

/* Back on the HTTP thread after the resume: let the handler answer. */
static void finish_deferred(http_request *req)
{
    http_query_done done = req->deferred;
    PGresult *res = req->db_res;
    crm_error err = req->db_err;
    /* Cleared first: done may defer the next query of a request. */
    req->deferred = NULL;
    req->suspended = false;
    req->db_res = NULL;
    memset(&req->db_err, 0, sizeof req->db_err);
    done(req, res, res ? NULL : &err);
    PQclear(res);
    crm_error_clear(&err);
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
    if (req->answered) { /* a handler bug: keep the first answer */
        if (!is_static)
            free(body);
        crm_log(CRM_LOG_ERROR, "second reply for request %s ignored", req->request_id);
        return;
    }
    req->answered = true;
    req->status = status;
    req->content_type = content_type;
    req->resp_body = body;
    req->resp_len = len;
    req->resp_static = is_static;
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

static void reply_problem_full(http_request *req, int status, const char *detail, json_t *errors)
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
    reply_problem_full(req, status, detail, NULL);
}

void http_reply_error(http_request *req, const crm_error *err)
{
    int status = http_status_for(err->code);
    const char *detail = err->detail;
    if (status == 500)
        detail = "internal error; the server log has the details under this request id";
    reply_problem_full(req, status, detail, err->errors);
}

/* ---- request lifecycle ------------------------------------------------- */

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

static void assign_request_id(http_request *req)
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

static bool body_announced(http_request *req)
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

/* The key is known: refuses (403) a key without the route's scope. */
static bool authorize(http_request *req)
{
    req->has_principal = true;
    if (!http_throttle_admit(req, req->principal.key_id)) /* HOOK(router): 429 (server/throttle.c) */
        return false;
    unsigned scope = req->match.route->scope;
    if (crm_principal_allows(&req->principal, scope))
        return true;
    char detail[128];
    snprintf(detail, sizeof detail, "this operation needs the '%s' scope", crm_scope_name(scope));
    http_reply_problem(req, 403, detail);
    return false;
}

/* Everything we can decide from the request line and headers alone. Leaves
 * req->answered set when the request is refused. */
static void admit_request(http_request *req)
{
    const http_server *srv = req->srv;
    const crmd_config *cfg = srv->cfg;

    http_cors_annotate(req); /* HOOK(router): before any answer (server/cors.c) */
    size_t url_bytes = strlen(req->path);
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, sum_argument, &url_bytes);
    if (url_bytes > cfg->max_url_bytes) {
        http_reply_problem(req, 414, "the request URL is longer than the server accepts");
        return;
    }
    size_t header_bytes = 0;
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, sum_header, &header_bytes);
    if (header_bytes > cfg->max_header_bytes) {
        http_reply_problem(req, 431, "the request headers are larger than the server accepts");
        return;
    }

    req->route_status = router_match(req->method, req->path, &req->arena, &req->match);
    switch (req->route_status) {
    case ROUTE_FOUND:
        break;
    case ROUTE_NOT_FOUND:
        http_reply_problem(req, 404, "no resource at this path");
        return;
    case ROUTE_BAD_PATH:
        http_reply_problem(req, 400, "the path contains an encoded NUL byte");
        return;
    case ROUTE_BAD_PARAM: /* HOOK(router): 422 naming it (server/query_check.c) */
        http_refuse_path_param(req, &req->match);
        return;
    case ROUTE_BAD_METHOD: {
        if (http_cors_preflight(req, req->method, req->match.allow)) /* HOOK(router) */
            return;
        char detail[200];
        snprintf(detail, sizeof detail, "this resource supports %s", req->match.allow);
        http_add_header(req, "Allow", req->match.allow);
        http_reply_problem(req, 405, detail);
        return;
    }
    }

    const http_route *route = req->match.route;
    if (route->scope != 0) {
        /* On an I/O thread only the cache is asked; a key it does not hold
         * is checked on a worker once the request is complete. */
        crm_error err = CRM_ERROR_INIT;
        const char *authorization = http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
        crm_auth_result auth =
            current_io != NULL
                ? crm_auth_authenticate_cached(authorization, &req->principal, &err)
                : (crm_auth_authenticate(authorization, &req->principal, &err) ? CRM_AUTH_OK
                                                                                  : CRM_AUTH_REFUSED);
        if (auth == CRM_AUTH_REFUSED) {
            http_reply_error(req, &err);
            crm_error_clear(&err);
            return;
        }
        if (auth == CRM_AUTH_UNKNOWN)
            req->auth_pending = true;
        else if (!authorize(req))
            return;
    }

    /* HOOK(router): query keys and values, for every route (server/query_check.c). */
    if (!http_query_acceptable(req, req->conn, route))
        return;

    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL && strtoull(cl, NULL, 10) > cfg->max_body_bytes) {
        char detail[128];
        snprintf(detail, sizeof detail, "the request body is larger than %zu bytes",
                 cfg->max_body_bytes);
        http_reply_problem(req, 413, detail);
        return;
    }
    if (route->json_body && body_announced(req) &&
        !content_type_is_json(http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
        http_reply_problem(req, 415, "send the body as application/json");
        return;
    }
}

static bool append_body(http_request *req, const char *data, size_t len)
{
    size_t max = req->srv->cfg->max_body_bytes;
    if (req->body_len + len > max)
        return false;
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

/* Hands the answer to libmicrohttpd. */
static enum MHD_Result queue_answer(http_request *req)
{
    struct MHD_Response *resp;
    if (req->resp_body == NULL)
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    else
        resp = MHD_create_response_from_buffer(req->resp_len, req->resp_body,
                                               req->resp_static ? MHD_RESPMEM_PERSISTENT
                                                                : MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
        return MHD_NO;
    req->resp_body = NULL; /* the response owns it now */
    if (req->content_type != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    for (int i = 0; i < req->nheaders; i++)
        MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
    if (atomic_load(&req->srv->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    req->queued = true;
    return rc;
}

static void check_answered(http_request *req)
{
    if (!req->answered && !req->suspended) {
        crm_log(CRM_LOG_ERROR, "handler for %s %s gave no answer", req->match.route->method,
                req->match.route->pattern);
        http_reply_problem(req, 500, "internal error");
    }
}

/* A worker takes requests whose handler may block, runs it, and hands the
 * request back to its I/O thread. */
static void *worker_main(void *arg)
{
    http_server *srv = arg;
    for (;;) {
        pthread_mutex_lock(&srv->work_mu);
        while (srv->work_head == NULL && !srv->work_stop)
            pthread_cond_wait(&srv->work_cv, &srv->work_mu);
        http_request *req = srv->work_head;
        if (req == NULL) {
            pthread_mutex_unlock(&srv->work_mu);
            return NULL;
        }
        srv->work_head = req->next;
        if (srv->work_head == NULL)
            srv->work_tail = NULL;
        pthread_mutex_unlock(&srv->work_mu);

        bool allowed = true;
        if (req->auth_pending) {
            req->auth_pending = false;
            crm_error err = CRM_ERROR_INIT;
            allowed = crm_auth_authenticate(http_header(req, MHD_HTTP_HEADER_AUTHORIZATION),
                                            &req->principal, &err) &&
                      authorize(req);
            if (err.code != CRM_OK)
                http_reply_error(req, &err);
            crm_error_clear(&err);
        }
        if (allowed)
            req->match.route->handler(req);
        check_answered(req);
        req->worker_done = true;
        req->suspended = false;
        /* The owner may finish and free req as soon as it is resumed. */
        int kickfd = req->io->kickfd;
        MHD_resume_connection(req->conn);
        /* libmicrohttpd's own signal does not reach an external epoll
         * reliably; wake the I/O thread ourselves. */
        uint64_t one = 1;
        ssize_t rc = write(kickfd, &one, sizeof one);
        (void)rc;
    }
}

static void hand_to_worker(http_request *req)
{
    http_server *srv = req->srv;
    req->suspended = true;
    MHD_suspend_connection(req->conn);
    req->next = NULL;
    pthread_mutex_lock(&srv->work_mu);
    if (srv->work_tail != NULL)
        srv->work_tail->next = req;
    else
        srv->work_head = req;
    srv->work_tail = req;
    pthread_cond_signal(&srv->work_cv);
    pthread_mutex_unlock(&srv->work_mu);
}

bool http_on_io_thread(void)
{
    return current_io != NULL;
}

void http_continue_on_worker(http_request *req)
{
    if (current_io != NULL)
        hand_to_worker(req);
}

/* The request is complete: answer it here, or start its handler where it may
 * run (inline when it never blocks, else on a worker). */
static void run_handler(http_request *req)
{
    if (req->deferred != NULL)
        finish_deferred(req);
    else if (req->worker_done)
        return;
    else if (req->match.route->nonblocking && !req->auth_pending)
        req->match.route->handler(req);
    else
        hand_to_worker(req);
    check_answered(req);
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    (void)version;
    http_server *srv = cls;
    http_request *req = *con_cls;

    if (req == NULL) {
        req = calloc(1, sizeof *req);
        if (req == NULL)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &req->started);
        req->conn = conn;
        req->srv = srv;
        req->method = method;
        req->path = url;
        req->io = current_io;
        req->match.index = -1;
        crm_arena_init(&req->arena);
        *con_cls = req;
        atomic_fetch_add(&srv->in_flight, 1);
        assign_request_id(req);
        admit_request(req);
        if (req->answered && body_announced(req))
            return queue_answer(req);
        return MHD_YES;
    }
    if (req->queued)
        return MHD_YES;

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->answered) {
            /* Already refused (a chunked body ran over the limit). This
             * libmicrohttpd cannot answer in mid-body, so the rest is read
             * and dropped, never stored; a client that keeps sending far
             * beyond the limit loses the connection instead. */
            req->discarded += n;
            return req->discarded > srv->cfg->max_body_bytes ? MHD_NO : MHD_YES;
        }
        if (!append_body(req, upload_data, n)) {
            char detail[128];
            snprintf(detail, sizeof detail, "the request body is larger than %zu bytes",
                     srv->cfg->max_body_bytes);
            http_reply_problem(req, 413, detail);
            req->discarded = n;
            free(req->body);
            req->body = NULL;
            req->body_cap = 0;
        }
        return MHD_YES;
    }

    if (!req->answered || req->deferred != NULL)
        run_handler(req);
    if (req->suspended)
        return MHD_YES; /* resumed, and called again, when the work is done */
    return queue_answer(req);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static const char *loggable_method(const char *m)
{
    static const char *const known[] = {"GET",     "HEAD",  "POST",  "PUT",  "PATCH",
                                        "DELETE",  "OPTIONS", "TRACE", "CONNECT"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "OTHER";
}

/* One JSON line per request: identifiers only, never personal data. The
 * route is the pattern, not the path, which may contain e-mail addresses. */
static void log_request(const http_request *req, double seconds)
{
    char ts[40], line[512];
    crm_log_timestamp(ts, sizeof ts);
    const http_route *route = req->match.route;
    int n = snprintf(line, sizeof line,
                     "{\"ts\":\"%s\",\"level\":\"info\",\"msg\":\"request\",\"request_id\":\"%s\","
                     "\"method\":\"%s\",\"route\":%s%s%s,\"status\":%d,\"duration_ms\":%.3f,"
                     "\"key_prefix\":%s%s%s,\"bytes_in\":%zu}",
                     ts, req->request_id, loggable_method(req->method), route ? "\"" : "",
                     route ? route->pattern : "null", route ? "\"" : "", req->status,
                     seconds * 1000.0, req->has_principal ? "\"" : "",
                     req->has_principal ? req->principal.prefix : "null",
                     req->has_principal ? "\"" : "", req->body_len);
    if (n > 0 && (size_t)n < sizeof line)
        crm_log_write_line(line, (size_t)n);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    http_server *srv = cls;
    http_request *req = *con_cls;
    if (req == NULL)
        return;
    *con_cls = NULL;
    double seconds = seconds_since(&req->started);
    if (req->queued) {
        metrics_record(req->match.index, req->status, seconds);
        if (srv->cfg->access_log)
            log_request(req, seconds);
    }
    if (!req->resp_static)
        free(req->resp_body);
    /* A client that went away while its query ran: the result was never used. */
    PQclear(req->db_res);
    crm_error_clear(&req->db_err);
    free(req->body);
    json_decref(req->json);
    crm_arena_free(&req->arena);
    free(req);
    atomic_fetch_sub(&srv->in_flight, 1);
}

/* Keep the path percent-encoded: the router splits on '/' first and decodes
 * each segment, so "%2F" inside an external id stays inside its segment. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    crm_log(CRM_LOG_WARN, "libmicrohttpd: %s", msg);
}

void http_server_stats(int *connections, int *in_flight)
{
    *connections = 0;
    *in_flight = 0;
    http_server *srv = current_server;
    if (srv == NULL)
        return;
    for (int i = 0; i < srv->nio; i++) {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(srv->io[i].daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (info != NULL)
            *connections += (int)info->num_connections;
    }
    *in_flight = atomic_load(&srv->in_flight);
}

/* The I/O loop: wait for HTTP or database news, then let each side work.
 * Database results first (they resume requests), then libmicrohttpd (which
 * answers resumed requests and runs new ones, queueing their statements),
 * then the database loop again to send the new statements in one write. */
static void *io_main(void *arg)
{
    io_thread *io = arg;
    current_io = io;
    struct epoll_event events[8];
    for (;;) {
        MHD_UNSIGNED_LONG_LONG mhd_timeout;
        int timeout = 1000;
        if (io->resumed) /* resumed after libmicrohttpd last ran: run it again now */
            timeout = 0;
        else if (MHD_get_timeout(io->daemon, &mhd_timeout) == MHD_YES && mhd_timeout < 1000)
            timeout = (int)mhd_timeout;
        int n = epoll_wait(io->epfd, events, 8, timeout);
        bool exit_now = false;
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == io->wakefd)
                exit_now = true;
            if (events[i].data.fd == io->kickfd) {
                uint64_t count;
                ssize_t rc = read(io->kickfd, &count, sizeof count);
                (void)rc;
            }
        }
        if (exit_now)
            break;
        crm_dbloop_run(io->loop);
        io->resumed = false;
        MHD_run(io->daemon);
        crm_dbloop_run(io->loop);
    }
    current_io = NULL;
    return NULL;
}

static struct MHD_Daemon *start_daemon(http_server *srv, const struct sockaddr_in *addr,
                                       unsigned connection_limit)
{
    const crmd_config *cfg = srv->cfg;
    /* Room for the request line and headers we accept plus a read buffer;
     * libmicrohttpd answers 431/414 itself only beyond our own limits. */
    size_t memory_limit = cfg->max_header_bytes + cfg->max_url_bytes + 8 * 1024;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)addr, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        1u, MHD_OPTION_CONNECTION_LIMIT, connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory_limit,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_NOTIFY_COMPLETED, request_completed,
        srv, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_END);
}

static bool io_thread_init(io_thread *io, http_server *srv, const struct sockaddr_in *addr,
                           const crm_db_config *dbcfg, crm_error *err)
{
    const crmd_config *cfg = srv->cfg;
    io->srv = srv;
    io->epfd = io->wakefd = io->kickfd = -1;
    unsigned limit = (unsigned)(cfg->max_connections / srv->nio);
    io->daemon = start_daemon(srv, addr, limit > 0 ? limit : 1);
    if (io->daemon == NULL)
        return crm_error_set(err, CRM_E_UNAVAILABLE, "cannot listen on %s:%d", cfg->listen_host,
                             ntohs(addr->sin_port));
    io->loop = crm_dbloop_new(dbcfg, cfg->async_pool_size, err);
    if (io->loop == NULL)
        return false;
    io->epfd = epoll_create1(EPOLL_CLOEXEC);
    io->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    io->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(io->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (io->epfd < 0 || io->wakefd < 0 || io->kickfd < 0 || info == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "cannot create an I/O thread's epoll");
    int fds[] = {info->epoll_fd, crm_dbloop_fd(io->loop), io->wakefd, io->kickfd};
    for (int i = 0; i < 4; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fds[i], &ev) != 0)
            return crm_error_set(err, CRM_E_INTERNAL, "cannot watch an I/O thread's events");
    }
    return true;
}

static void io_thread_release(io_thread *io)
{
    if (io->daemon != NULL)
        MHD_stop_daemon(io->daemon);
    crm_dbloop_free(io->loop);
    if (io->epfd >= 0)
        close(io->epfd);
    if (io->wakefd >= 0)
        close(io->wakefd);
    if (io->kickfd >= 0)
        close(io->kickfd);
}

/* The I/O threads share the port through SO_REUSEPORT, which would also let
 * them share it, silently, with another process of the same user (a second
 * crmd started by mistake). A plain bind first tells whether the port is free. */
static bool port_is_free(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return true; /* let the real bind report the problem */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bool free_port = bind(fd, (const struct sockaddr *)addr, sizeof *addr) == 0;
    close(fd);
    return free_port;
}

http_server *http_server_start(const crmd_config *cfg, const crm_db_config *dbcfg, crm_error *err)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->listen_port)};
    if (inet_pton(AF_INET, cfg->listen_host, &addr.sin_addr) != 1) {
        crm_error_set(err, CRM_E_INVALID, "CRMD_LISTEN host must be an IPv4 address, got '%s'",
                      cfg->listen_host);
        return NULL;
    }
    if (cfg->listen_port != 0 && !port_is_free(&addr)) {
        crm_error_set(err, CRM_E_UNAVAILABLE, "cannot listen on %s:%d: the address is in use",
                      cfg->listen_host, cfg->listen_port);
        return NULL;
    }
    http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    srv->cfg = cfg;
    srv->nio = cfg->io_threads;
    srv->nworkers = cfg->threads;
    srv->io = calloc((size_t)srv->nio, sizeof *srv->io);
    srv->workers = calloc((size_t)srv->nworkers, sizeof *srv->workers);
    pthread_mutex_init(&srv->work_mu, NULL);
    pthread_cond_init(&srv->work_cv, NULL);
    router_init();
    metrics_init();

    bool ok = srv->io != NULL && srv->workers != NULL;
    for (int i = 0; ok && i < srv->nio; i++) {
        ok = io_thread_init(&srv->io[i], srv, &addr, dbcfg, err);
        if (ok && i == 0) { /* the others bind the port the first one got */
            const union MHD_DaemonInfo *info =
                MHD_get_daemon_info(srv->io[0].daemon, MHD_DAEMON_INFO_BIND_PORT);
            srv->port = info ? info->port : cfg->listen_port;
            addr.sin_port = htons((uint16_t)srv->port);
        }
    }
    int started_io = 0, started_workers = 0;
    for (; ok && started_io < srv->nio; started_io++)
        ok = pthread_create(&srv->io[started_io].thread, NULL, io_main, &srv->io[started_io]) == 0;
    for (; ok && started_workers < srv->nworkers; started_workers++)
        ok = pthread_create(&srv->workers[started_workers], NULL, worker_main, srv) == 0;
    if (!ok) {
        if (err->code == CRM_OK)
            crm_error_set(err, CRM_E_INTERNAL, "cannot start the HTTP threads");
        srv->nio = started_io;
        srv->nworkers = started_workers;
        current_server = srv;
        http_server_stop(srv);
        return NULL;
    }
    current_server = srv;
    return srv;
}

int http_server_port(const http_server *srv)
{
    return srv->port;
}

void http_server_stop(http_server *srv)
{
    if (srv == NULL)
        return;
    atomic_store(&srv->stopping, true);
    for (int i = 0; i < srv->nio; i++) {
        if (srv->io[i].daemon == NULL)
            continue;
        MHD_socket listen_fd = MHD_quiesce_daemon(srv->io[i].daemon);
        if (listen_fd != MHD_INVALID_SOCKET)
            close(listen_fd);
    }
    /* Let requests already started finish; new requests on kept-alive
     * connections are still answered, with Connection: close. */
    long waited_ms = 0, limit_ms = (long)srv->cfg->shutdown_timeout_s * 1000;
    while (atomic_load(&srv->in_flight) > 0 && waited_ms < limit_ms) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
        waited_ms += 10;
    }
    if (atomic_load(&srv->in_flight) > 0)
        crm_log(CRM_LOG_WARN, "shutdown timeout: %d requests still in flight",
                atomic_load(&srv->in_flight));
    for (int i = 0; i < srv->nio; i++) {
        uint64_t one = 1;
        ssize_t rc = write(srv->io[i].wakefd, &one, sizeof one);
        (void)rc;
        pthread_join(srv->io[i].thread, NULL);
    }
    pthread_mutex_lock(&srv->work_mu);
    srv->work_stop = true;
    pthread_cond_broadcast(&srv->work_cv);
    pthread_mutex_unlock(&srv->work_mu);
    for (int i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i], NULL);
    for (int i = 0; srv->io != NULL && i < srv->cfg->io_threads; i++)
        io_thread_release(&srv->io[i]);
    pthread_mutex_destroy(&srv->work_mu);
    pthread_cond_destroy(&srv->work_cv);
    current_server = NULL;
    free(srv->io);
    free(srv->workers);
    free(srv);
}

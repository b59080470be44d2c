/*
 * http.h — the HTTP edge: libmicrohttpd glue and what handlers may use.
 *
 * A handler receives an http_request, reads its parameters and body through
 * the accessors below, calls lib/, and answers with exactly one http_reply_*
 * call. Everything a request allocates through its arena dies with it.
 */
#ifndef HTTP_HTTP_H
#define HTTP_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth.h"
#include "config.h"
#include "db.h"
#include "error.h"
#include "router.h"

typedef struct http_server http_server;

/* Starts serving with cfg (which must outlive the server): CRMD_IO_THREADS
 * I/O threads, each with its own listening socket on the shared port and its
 * own pipelined database loop (dbcfg, CRMD_ASYNC_POOL_SIZE connections), and
 * CRMD_THREADS workers for handlers that may block. */
http_server *http_server_start(const crmd_config *cfg, const crm_db_config *dbcfg,
                               crm_error *err);

/* Stops accepting, lets in-flight requests finish (up to the configured
 * shutdown timeout), then closes every connection and frees the server. */
void http_server_stop(http_server *srv);

/* Open connections and requests in flight, for /metrics. */
void http_server_stats(int *connections, int *in_flight);

/* The port actually bound (useful with CRMD_LISTEN=...:0). */
int http_server_port(const http_server *srv);

/* ---- for handlers ----------------------------------------------------- */

/* A decoded path parameter ("id" for /v1/api-keys/{id}); NULL if absent. */
const char *http_param(http_request *req, const char *name);

/* A decoded query parameter; NULL when absent. */
const char *http_query(http_request *req, const char *name);

/* A request header; NULL when absent. */
const char *http_header(http_request *req, const char *name);

/* The parsed JSON body; NULL with CRM_E_MALFORMED (line and column) when it
 * does not parse. The request owns the result. */
json_t *http_json_body(http_request *req, crm_error *err);

/* The number of body bytes the request sent (0: none). */
size_t http_body_len(const http_request *req);

/* The authenticated caller (routes with a scope only). */
const crm_principal *http_principal(const http_request *req);

/* The request's scratch arena. */
crm_arena *http_arena(http_request *req);

/* What a handler parsed from the request (in its arena, typically), kept
 * for the callbacks of its deferred queries so that they render without
 * parsing the request again. NULL until set. */
void http_set_context(http_request *req, void *ctx);
void *http_context(const http_request *req);

/* Called on an HTTP thread when a deferred query is done, with its result
 * (freed after done returns) or with res NULL and err set. It must answer. */
typedef void (*http_query_done)(http_request *req, const PGresult *res, const crm_error *err);

/* Runs q on the database event loop and calls done with the outcome; the
 * request's thread serves other connections meanwhile. The parameters are
 * copied. The handler must return right after this call without answering. */
void http_defer_query(http_request *req, const crm_query *q, http_query_done done);

/* True on an I/O thread, where a handler must not block. A handler of a
 * nonblocking route that finds it needs blocking work (several statements, a
 * transaction) calls http_continue_on_worker() and returns: a worker thread
 * then calls the same handler again from the start. */
bool http_on_io_thread(void);
void http_continue_on_worker(http_request *req);

/* Adds a response header (name and value are copied). */
void http_add_header(http_request *req, const char *name, const char *value);

/* Answers with a JSON document; takes ownership of body. */
void http_reply_json(http_request *req, int status, json_t *body);

/* Answers with JSON text already written (a crm_jbuf's); takes ownership
 * of text, which may be NULL when writing it failed (then: 500). */
void http_reply_json_text(http_request *req, int status, char *text, size_t len);

/* Answers with raw bytes. With is_static the data must outlive the response
 * (it is not copied); otherwise it is copied. */
void http_reply_bytes(http_request *req, int status, const char *content_type, const char *data,
                      size_t len, bool is_static);

/* Answers with no body (204, ...). */
/* Answers with the first len bytes of the file fd (a temporary file, its
 * offset at 0), sent from the file; takes the descriptor. */
void http_reply_fd(http_request *req, int status, const char *content_type, int fd, size_t len);
void http_reply_empty(http_request *req, int status);

/* Answers with problem+json built from err (status from its code). */
void http_reply_error(http_request *req, const crm_error *err);

/* Answers with problem+json for an HTTP-level problem. */
void http_reply_problem(http_request *req, int status, const char *detail);

/* The same with one extension member (RFC 9457) beside the standard ones:
 * a refusal that carries its reasons. Takes ownership of value. */
void http_reply_problem_member(http_request *req, int status, const char *detail,
                               const char *member, json_t *value);

/* The HTTP status a crm_errcode becomes. */
int http_status_for(crm_errcode code);

#endif

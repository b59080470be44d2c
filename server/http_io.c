/*
 * http_io.c — a request's life on its I/O thread: libmicrohttpd's callbacks,
 * the state machine, suspend and resume, the database loop glue, and the
 * I/O thread's event loop.
 *
 * libmicrohttpd calls http_access_handler several times per request:
 *   1. headers received (*con_cls == NULL): the request is created and
 *      admitted (http_admit.c) — REQ_ADMITTING, then REQ_READING_BODY or
 *      REQ_ANSWERED;
 *   2. zero or more times with body data, appended within the limits;
 *   3. once more with no data: the request is complete, and its handler runs
 *      inline (REQ_RUNNING_IO, nonblocking routes) or on a worker
 *      (REQ_ON_WORKER). An inline handler may defer one statement to the
 *      database loop (REQ_DEFERRED) or move to a worker.
 * Suspended requests are called again after their resume. We answer on the
 * first call only when the request carries a body we do not want to read
 * (413, 401, 415, ...): libmicrohttpd then closes the connection instead of
 * reading the rest. Answering a body-less request on the first call would
 * also close it and defeat keep-alive, so those answers wait for call 3.
 *
 * Fast path: a single-statement read runs its handler inline on call 3,
 * defers its statement (queued, sent with the other requests' statements in
 * one write per connection at the end of the round), and is answered on the
 * call after the result's resume; it never leaves its thread.
 *
 * Handlers run on the thread that owns the connection; see README
 * ("Threading") for why and what was measured.
 */
#include "http_internal.h"
#include "log.h"
#include "metrics.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

_Thread_local io_thread *http_current_io;

/* ---- the state machine ---------------------------------------------------- */

static const char *state_name(req_state s)
{
    static const char *const names[] = {"admitting",   "authenticating", "reading-body",
                                        "running-io",  "deferred",       "on-worker",
                                        "answered",    "queued"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

/* The transitions a request may make; everything else is a bug. */
static bool transition_allowed(req_state from, req_state to)
{
    switch (from) {
    case REQ_ADMITTING:
        return to == REQ_AUTHENTICATING || to == REQ_READING_BODY || to == REQ_ANSWERED;
    case REQ_AUTHENTICATING:
        return to == REQ_READING_BODY || to == REQ_ANSWERED;
    case REQ_READING_BODY:
        return to == REQ_RUNNING_IO || to == REQ_ON_WORKER || to == REQ_ANSWERED;
    case REQ_RUNNING_IO:
        return to == REQ_DEFERRED || to == REQ_ON_WORKER || to == REQ_ANSWERED;
    case REQ_DEFERRED:
        return to == REQ_RUNNING_IO;
    case REQ_ON_WORKER:
        return to == REQ_ANSWERED;
    case REQ_ANSWERED:
        return to == REQ_QUEUED;
    case REQ_QUEUED:
        return false;
    }
    return false;
}

req_state req_get_state(const http_request *req)
{
    return atomic_load_explicit(&req->state, memory_order_acquire);
}

bool req_set_state(http_request *req, req_state next)
{
    req_state now = atomic_load_explicit(&req->state, memory_order_relaxed);
    if (!transition_allowed(now, next)) {
        crm_log(CRM_LOG_ERROR, "request %s: no transition from %s to %s", req->request_id,
                state_name(now), state_name(next));
        return false;
    }
    atomic_store_explicit(&req->state, next, memory_order_release);
    return true;
}

/* ---- suspend, resume, hand-off ------------------------------------------- */

void io_kick(io_thread *io)
{
    /* libmicrohttpd's own signal does not reach an external epoll reliably;
     * wake the I/O thread ourselves. */
    uint64_t one = 1;
    ssize_t rc = write(io->kickfd, &one, sizeof one);
    (void)rc;
}

static void suspend(http_request *req)
{
    req->parked = true;
    req->io->suspended++;
    MHD_suspend_connection(req->conn);
}

/* Gives req to a worker in state next. From here on this thread does not
 * touch req until libmicrohttpd calls it back after the worker's resume. */
static void hand_to_worker(http_request *req, req_state next)
{
    io_thread *io = req->io;
    req_set_state(req, next);
    conn_set_phase(req, CONN_BUSY);
    suspend(req);
    io->handed_off = true;
    workers_enqueue(req);
}

bool http_on_io_thread(void)
{
    return http_current_io != NULL;
}

void http_continue_on_worker(http_request *req)
{
    if (http_current_io != NULL)
        hand_to_worker(req, REQ_ON_WORKER);
}

/* ---- deferred queries ------------------------------------------------------ */

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
    io_thread *io = http_current_io;
    if (io == NULL) {
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
    req_set_state(req, REQ_DEFERRED);
    suspend(req);
    /* After the shutdown deadline the loop takes no more work. */
    bool submitted =
        !atomic_load(&req->srv->abandon) &&
        crm_dbloop_submit(io->loop, q->stmt, q->nparams, values, deferred_query_done, req, &err);
    if (!submitted) {
        if (err.code == CRM_OK)
            crm_error_set(&err, CRM_E_UNAVAILABLE, "the server is shutting down");
        req->db_err = err;
        io->resumed = true;
        MHD_resume_connection(req->conn);
    }
}

/* Back on the I/O thread after the resume: let the handler answer. */
static void finish_deferred(http_request *req)
{
    http_query_done done = req->deferred;
    PGresult *res = req->db_res;
    crm_error err = req->db_err;
    /* Cleared first: done may defer the next query of a request. */
    req->deferred = NULL;
    req->db_res = NULL;
    memset(&req->db_err, 0, sizeof req->db_err);
    req_set_state(req, REQ_RUNNING_IO);
    done(req, res, res ? NULL : &err);
    PQclear(res);
    crm_error_clear(&err);
}

/* ---- answers ----------------------------------------------------------------- */

/* Hands the answer to libmicrohttpd. */
static enum MHD_Result queue_answer(http_request *req)
{
    struct MHD_Response *resp;
    if (req->resp_is_file) {
        resp = MHD_create_response_from_fd64(req->resp_len, req->resp_fd);
        if (resp != NULL)
            req->resp_is_file = false; /* the response owns the descriptor now */
    } else if (req->resp_body == NULL)
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
    if (req->close_after || atomic_load(&req->srv->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    req_set_state(req, REQ_QUEUED);
    conn_set_phase(req, CONN_BUSY);
    return rc;
}

/* After a handler ran on this thread: whatever it left the request in. */
static enum MHD_Result after_inline_handler(http_request *req, io_thread *io)
{
    if (io->handed_off) { /* it belongs to a worker now: hands off */
        io->handed_off = false;
        return MHD_YES;
    }
    if (req_get_state(req) == REQ_DEFERRED)
        return MHD_YES; /* resumed, and called again, when the statement is done */
    req_check_answered(req);
    return queue_answer(req);
}

/* The request is complete: run its handler here when it never blocks, else
 * on a worker. */
static enum MHD_Result run_request(http_request *req)
{
    const http_route *route = req->match.route;
    if (!route->nonblocking) {
        hand_to_worker(req, REQ_ON_WORKER);
        return MHD_YES;
    }
    io_thread *io = req->io;
    io->handed_off = false;
    req_set_state(req, REQ_RUNNING_IO);
    conn_set_phase(req, CONN_BUSY);
    route->handler(req);
    return after_inline_handler(req, io);
}

/* ---- libmicrohttpd's callbacks ------------------------------------------------ */

/* What http_uri_seen returns for a request whose query string it cut. */
static char too_many_params_mark;

/* libmicrohttpd stores every query argument in the connection's pool (sized
 * for the fast path, see start_daemon) before the first access_handler
 * call; a few hundred of them exhaust it and it closes the connection
 * without an answer. Here, before it parses them, a query string with too
 * many is cut short at its '?' (the line is libmicrohttpd's writable read
 * buffer; it has already found the '?', or finds it again, and parses
 * nothing after it) and the request is marked for a 414. */
void *http_uri_seen(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    char *query = strchr(uri, '?');
    if (query == NULL)
        return NULL;
    int params = 1;
    for (const char *p = query; (p = strchr(p + 1, '&')) != NULL;)
        if (++params > HTTP_MAX_QUERY_PARAMS) {
            query[1] = '\0';
            return &too_many_params_mark;
        }
    return NULL;
}

/* A request refused at headers time. With a body on its way the answer
 * goes now and the body is never read (libmicrohttpd closes the connection
 * after it); without one it waits for the request's last call, which
 * keeps the connection alive. */
static enum MHD_Result refuse_early(http_request *req)
{
    if (!req_body_announced(req))
        return MHD_YES;
    req->close_after = true;
    return queue_answer(req);
}

static enum MHD_Result start_request(http_server *srv, struct MHD_Connection *conn,
                                     const char *url, const char *method, void **con_cls)
{
    http_request *req = calloc(1, sizeof *req);
    if (req == NULL)
        return MHD_NO;
    clock_gettime(CLOCK_MONOTONIC, &req->started);
    req->conn = conn;
    req->srv = srv;
    req->method = method;
    req->path = url;
    req->io = http_current_io;
    req->match.index = -1;
    req->too_many_params = *con_cls == &too_many_params_mark;
    atomic_init(&req->state, REQ_ADMITTING);
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    req->watch = info != NULL ? info->socket_context : NULL;
    conn_set_phase(req, CONN_READING_BODY);
    crm_arena_init(&req->arena);
    *con_cls = req;
    req->io->requests++;
    atomic_fetch_add(&srv->in_flight, 1);
    req_assign_id(req);
    admit_request(req);
    if (req_get_state(req) == REQ_ADMITTING && req->key_unchecked) {
        /* The key is checked before any body byte is read. */
        req->headers_recall = true;
        hand_to_worker(req, REQ_AUTHENTICATING);
        return MHD_YES;
    }
    if (req_get_state(req) == REQ_ADMITTING && admit_body_budget(req))
        req_set_state(req, REQ_READING_BODY);
    if (req_get_state(req) == REQ_ANSWERED)
        return refuse_early(req);
    return MHD_YES;
}

/* Body bytes for a request in REQ_READING_BODY or already refused. */
static enum MHD_Result take_body(http_request *req, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0;
    if (req_get_state(req) == REQ_READING_BODY) {
        if (!admit_body_bytes(req, data, n))
            req->discarded = n;
        return MHD_YES;
    }
    /* Already refused in mid-body (a chunked body ran over the limit). This
     * libmicrohttpd cannot answer in mid-body, so the rest is read and
     * dropped, never stored; a client that keeps sending far beyond the
     * limit loses the connection instead. */
    req->discarded += n;
    return req->discarded > req->srv->cfg->max_body_bytes ? MHD_NO : MHD_YES;
}

enum MHD_Result http_access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)version;
    http_request *req = *con_cls;
    if (req == NULL || *con_cls == &too_many_params_mark)
        return start_request(cls, conn, url, method, con_cls);
    if (req->parked) { /* back from a worker or the database loop */
        req->parked = false;
        req->io->suspended--;
    }
    if (req->headers_recall) {
        /* Back from the key check: the body's deadline starts now. The
         * repeated headers call is not the end of the body. */
        req->headers_recall = false;
        if (req_get_state(req) == REQ_READING_BODY) {
            conn_set_phase(req, CONN_READING_BODY);
            if (*upload_data_size == 0)
                return MHD_YES;
        }
    }

    switch (req_get_state(req)) {
    case REQ_READING_BODY:
        if (*upload_data_size > 0)
            return take_body(req, upload_data, upload_data_size);
        return run_request(req);
    case REQ_ANSWERED:
        /* Refused in mid-body: the rest is read and dropped. */
        if (*upload_data_size > 0 && (req->discarded > 0 || req->body_len > 0))
            return take_body(req, upload_data, upload_data_size);
        /* Refused before any body byte was taken (a key a worker did not
         * know): answer now; the body is never read. */
        if (*upload_data_size > 0)
            req->close_after = true;
        return queue_answer(req);
    case REQ_DEFERRED: {
        io_thread *io = req->io; /* req may be a worker's after the callback */
        io->handed_off = false;
        finish_deferred(req);
        return after_inline_handler(req, io);
    }
    case REQ_QUEUED:
        *upload_data_size = 0;
        return MHD_YES;
    case REQ_ADMITTING:
    case REQ_AUTHENTICATING:
    case REQ_RUNNING_IO:
    case REQ_ON_WORKER:
        break;
    }
    crm_log(CRM_LOG_ERROR, "request %s called back while %s", req->request_id,
            state_name(req_get_state(req)));
    return MHD_NO;
}

void http_request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    http_server *srv = cls;
    http_request *req = *con_cls;
    *con_cls = NULL;
    if (req == NULL || (void *)req == &too_many_params_mark)
        return; /* no request was started */
    /* Resumed but never called back (the client had gone): no longer
     * suspended either. */
    if (req->parked)
        req->io->suspended--;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double seconds = (double)(now.tv_sec - req->started.tv_sec) +
                     (double)(now.tv_nsec - req->started.tv_nsec) / 1e9;
    if (req_get_state(req) == REQ_QUEUED) {
        metrics_record(req->match.index, req->status, seconds);
        if (srv->cfg->access_log)
            access_log_write(req, seconds);
    }
    if (!req->resp_static)
        free(req->resp_body);
    if (req->resp_is_file)
        close(req->resp_fd);
    /* A client that went away while its query ran: the result was never used. */
    PQclear(req->db_res);
    crm_error_clear(&req->db_err);
    admit_release_body(req);
    free(req->body);
    json_decref(req->json);
    crm_arena_free(&req->arena);
    req->io->requests--;
    conn_set_phase(req, CONN_WAIT_HEADERS);
    free(req);
    atomic_fetch_sub(&srv->in_flight, 1);
}

/* ---- the I/O thread ------------------------------------------------------------ */

/* At the shutdown deadline: fail every statement of this thread's loop (their
 * callbacks resume the requests, which answer 503), once. */
static void abandon_waiting_work(io_thread *io)
{
    if (io->aborted)
        return;
    io->aborted = true;
    if (io->suspended > 0)
        crm_log(CRM_LOG_WARN, "shutdown timeout: failing %d suspended requests with 503",
                io->suspended);
    crm_dbloop_abort_all(io->loop);
}

/* How long epoll may sleep: at once when a resume is pending, else until
 * libmicrohttpd's next timeout, at most a second. */
static int wait_ms(io_thread *io)
{
    MHD_UNSIGNED_LONG_LONG mhd_timeout;
    if (io->resumed || io->aborted)
        return io->resumed ? 0 : 10;
    if (MHD_get_timeout(io->daemon, &mhd_timeout) == MHD_YES && mhd_timeout < 1000)
        return (int)mhd_timeout;
    return 1000;
}

/* The I/O loop: wait for HTTP or database news, then let each side work.
 * Database results first (they resume requests), then libmicrohttpd (which
 * answers resumed requests and runs new ones, queueing their statements),
 * then the database loop again to send the new statements in one write.
 *
 * It ends after the shutdown deadline (http_server_stop writes wakefd) once
 * none of its requests is suspended: libmicrohttpd cannot be stopped with a
 * suspended connection, and a pending callback would outlive its request.
 * Requests still being answered get a moment to be sent. */
void *io_main(void *arg)
{
    io_thread *io = arg;
    http_current_io = io;
    struct epoll_event events[64];
    long drain_ms = 0;
    for (;;) {
        int n = epoll_wait(io->epfd, events, 64, wait_ms(io));
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &io->wakefd || tag == &io->kickfd) {
                uint64_t count;
                ssize_t rc = read(*(int *)tag, &count, sizeof count);
                (void)rc;
            } else if (tag != NULL) {
                conn_on_event(tag, events[i].events);
            }
        }
        if (atomic_load(&io->srv->abandon))
            abandon_waiting_work(io);
        crm_dbloop_run(io->loop);
        io->resumed = false;
        MHD_run(io->daemon);
        conn_sweep(io);
        crm_dbloop_run(io->loop);
        if (io->aborted && io->suspended == 0) {
            if (io->requests == 0 || drain_ms >= 200)
                break;
            drain_ms += 10;
        }
    }
    http_current_io = NULL;
    return NULL;
}

/*
 * http_internal.h — what the files of the HTTP edge share (not for handlers:
 * they use http.h).
 *
 *   http_request.c  accessors, replies, problem+json
 *   http_admit.c    admission at headers time: limits, route, key, body
 *   http_io.c       the request's life (access_handler), the I/O threads,
 *                   suspend/resume and the database loop glue
 *   http_workers.c  the worker pool for handlers that may block
 *   http_server.c   start, stop, stats
 *   access_log.c    one JSON line per request
 *
 * A request's life is one state machine (req_state). Exactly one thread owns
 * a request at a time: its I/O thread, except while it is REQ_AUTHENTICATING
 * or REQ_ON_WORKER, when a worker does. The I/O thread hands a request over
 * by queueing it for the workers (under the queue's mutex) and never touches
 * it again until libmicrohttpd calls it back after the worker's resume; the
 * worker's last change of state is a release store that the I/O thread reads
 * with acquire.
 */
#ifndef HTTP_HTTP_INTERNAL_H
#define HTTP_HTTP_INTERNAL_H

#include "dbloop.h"
#include "http.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define MAX_EXTRA_HEADERS 16 /* CORS and RateLimit-* need room */

typedef enum req_state {
    REQ_ADMITTING,      /* I/O thread: headers in; route, limits, key (cache only) */
    REQ_AUTHENTICATING, /* worker: checks a key the cache did not hold; suspended */
    REQ_READING_BODY,   /* I/O thread: admitted, body arriving */
    REQ_RUNNING_IO,     /* I/O thread: the handler runs inline */
    REQ_DEFERRED,       /* I/O thread: a statement is on its database loop; suspended */
    REQ_ON_WORKER,      /* worker: the handler runs there; suspended */
    REQ_ANSWERED,       /* an answer is ready; the I/O thread queues it */
    REQ_QUEUED,         /* libmicrohttpd has the answer */
} req_state;

/* What a connection is waiting for, for its deadlines. */
typedef enum conn_phase {
    CONN_WAIT_HEADERS, /* accepted, or kept alive after an answer */
    CONN_READING_BODY, /* headers in, body arriving */
    CONN_BUSY,         /* the request is complete: handler, database, answer */
} conn_phase;

/* One client connection of an I/O thread, from libmicrohttpd's
 * connection notifications: deadlines for headers and body, and whether the
 * client closed its side (libmicrohttpd's edge-triggered epoll misses a FIN
 * that arrives with the last data, and would hold the request until its
 * idle timeout). Touched only by its I/O thread. */
typedef struct conn_watch {
    struct io_thread *io;
    int fd;
    conn_phase phase;
    long long deadline_ms; /* monotonic; the phase's end, unless CONN_BUSY */
    bool cut;              /* shut down by us; libmicrohttpd closes it next */
    bool peer_closed;      /* on io->hup, checked after the next MHD_run */
    struct conn_watch *prev, *next, *hup_next;
} conn_watch;

/* One I/O thread: its own libmicrohttpd daemon (sharing the port through
 * SO_REUSEPORT), its own pipelined database loop, one epoll over both. */
typedef struct io_thread {
    struct http_server *srv;
    struct MHD_Daemon *daemon;
    crm_dbloop *loop;
    int epfd;
    int wakefd; /* written once, to make the thread exit */
    int kickfd; /* written by workers after resuming one of this thread's requests */
    bool resumed; /* this thread resumed a request libmicrohttpd has not seen yet */
    bool handed_off; /* the handler just run gave its request to a worker */
    bool aborted;    /* its database loop's jobs were failed for the shutdown */
    int requests;    /* requests of its connections, started and not completed */
    int suspended;   /* of those, suspended (deferred, on a worker) */
    conn_watch *watches; /* its connections */
    conn_watch *hup;     /* of those, the ones whose client closed its side */
    long long next_sweep_ms;
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
    atomic_bool abandon;   /* the shutdown deadline passed: fail what waits */
    atomic_size_t body_bytes; /* bytes of request bodies reserved, process-wide */
    int port;
};

struct http_request {
    struct MHD_Connection *conn;
    http_server *srv;
    struct io_thread *io; /* the I/O thread that owns the connection */
    conn_watch *watch;    /* the connection's deadlines; NULL if none */
    _Atomic req_state state;
    const char *method;
    const char *path;
    struct timespec started;
    char request_id[64];
    route_match match;
    route_status route_status;
    crm_principal principal;
    bool has_principal;
    bool key_unchecked; /* the key was not cached: a worker checks it */
    bool parked;        /* suspended by its I/O thread, not yet called back */
    bool headers_recall; /* suspended in the headers call: libmicrohttpd
                            repeats that call (no data) after the resume */
    bool too_many_params; /* its query string was cut short (http_uri_seen) */
    crm_arena arena;
    void *handler_ctx; /* http_set_context: the handler's parsed request */

    /* body */
    char *body;
    size_t body_len, body_cap;
    size_t body_limit;    /* the route's limit */
    size_t body_reserved; /* taken from the server's body budget */
    size_t discarded;     /* bytes read and dropped after a refusal mid-body */
    json_t *json;         /* parsed body, owned */

    /* a statement running on the database loop (http_defer_query) */
    http_query_done deferred;
    struct http_request *next; /* in the worker queue */
    PGresult *db_res;
    crm_error db_err;

    /* response */
    int status;
    const char *content_type;
    char *resp_body; /* malloc'd, or static when resp_static */
    size_t resp_len;
    bool resp_static;
    bool resp_is_file; /* the body is resp_len bytes of resp_fd (owned) */
    int resp_fd;
    bool close_after; /* send Connection: close */
    struct {
        const char *name, *value; /* arena copies */
    } headers[MAX_EXTRA_HEADERS];
    int nheaders;
};

/* The I/O thread this code runs on, or NULL on a worker thread. */
extern _Thread_local io_thread *http_current_io;

/* ---- the state machine (http_io.c) ---- */

/* The request's state, read by its owner (acquire: a worker's last writes
 * are visible). */
req_state req_get_state(const http_request *req);

/* Moves req to next (release). Logs and refuses a transition the state
 * machine does not have; returns whether it moved. */
bool req_set_state(http_request *req, req_state next);

/* ---- replies (http_request.c) ---- */

/* True once a reply_* call filled the answer. */
bool req_answered(const http_request *req);

/* Answers 500 when a handler returned without answering or deferring. */
void req_check_answered(http_request *req);

/* Request ids: X-Request-Id when acceptable, else random. */
void req_assign_id(http_request *req);

/* ---- admission (http_admit.c) ---- */

/* Everything decided from the request line and headers alone; leaves req
 * ANSWERED when it is refused. Hooks for further checks go here. */
void admit_request(http_request *req);

/* On a worker: checks a key the cache did not hold, then the scope. False
 * with req answered (401/403/503) when it is refused. */
bool admit_unchecked_key(http_request *req);

/* Appends body bytes within the route's limit and the server's budget;
 * false with req answered (413/503) when they do not fit. */
bool admit_body_bytes(http_request *req, const char *data, size_t len);

/* Takes the announced body's size from the server's budget for bodies in
 * flight; false with req answered 503 when it is spent. */
bool admit_body_budget(http_request *req);

/* Gives the request's share of the body budget back. */
void admit_release_body(http_request *req);

/* True when the request announced a body (Content-Length > 0 or chunked). */
bool req_body_announced(http_request *req);

/* ---- workers (http_workers.c) ---- */

/* Queues req (suspended, owned by nobody else from now on) for a worker. */
void workers_enqueue(http_request *req);
void *worker_main(void *arg);

/* ---- access log (access_log.c) ---- */

void access_log_write(const http_request *req, double seconds);

/* ---- the I/O side (http_io.c) ---- */

enum MHD_Result http_access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls);
void http_request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe);
void http_connection_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe);
void *io_main(void *arg);

/* libmicrohttpd's URI callback, before it parses the query string. */
void *http_uri_seen(void *cls, const char *uri, struct MHD_Connection *conn);

/* No operation takes more than a few dozen query parameters; hundreds are
 * an attack on whatever scans them (and on libmicrohttpd's pool). */
#define HTTP_MAX_QUERY_PARAMS 256

/* Wakes the I/O thread io (from any thread). */
void io_kick(io_thread *io);

/* ---- connection deadlines (http_conn.c) ---- */

long long monotonic_ms(void);

/* Enters phase on the request's connection (I/O thread). */
void conn_set_phase(http_request *req, conn_phase phase);

/* An event on a watched connection's socket (before MHD_run). */
void conn_on_event(conn_watch *w, uint32_t events);

/* After MHD_run: cuts connections whose client left mid-request, and once a
 * second those past their deadline. */
void conn_sweep(io_thread *io);

#endif

/*
 * dbloop.c — one thread, a few pipelined connections, one epoll.
 *
 * A loop belongs to one HTTP I/O thread, which watches crm_dbloop_fd() in
 * its own epoll: nothing here locks. Each round the loop hands every queued job to the least-loaded
 * connection (opening one while all open ones are busy), queues it in libpq's pipeline mode (with a
 * PREPARE ahead of a statement's first use on that connection), then ends the round with one sync
 * point and one flush per connection: a burst of requests costs one write, and its answers arrive
 * in one read. When a socket turns readable the loop completes, in order, every job whose results
 * are in and calls its callback.
 *
 * Statements differ in cost by a factor of ten or more: a point read takes
 * some 40 µs of a backend, a page of 50 customers some 300 µs. Cheap ones
 * share one deep pipeline (one backend, one write and one read per burst:
 * the fastest way through). An expensive one in a deep pipeline holds up
 * everything behind it, and while its backend waits for a core so does the
 * whole queue; so a heavy statement goes to a
 * connection with no more than HEAVY_PER_CONN heavy ones in flight, opening
 * another while the pool allows, and otherwise waits in the loop's queue for
 * the first backend to free up: one shared queue in front of a few backends,
 * not a long queue in front of each. Heavy are the statements that read a
 * page of rows (crm_stmt.page) and those planned for their values.
 *
 * A connection that dies fails its unanswered jobs, except read-only ones not
 * yet retried, which go back to the queue for a fresh connection. After a
 * failed connect the loop answers CRM_E_UNAVAILABLE at once for
 * retry_backoff_ms, like the blocking pool.
 */
#include "dbloop.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

typedef struct job {
    crm_stmt *stmt;
    int nparams;
    const char *const *values;
    crm_dbloop_done done; /* NULL: an internal PQsendPrepare */
    void *arg;
    int attempts;
    bool heavy;       /* counted in its connection's heavy */
    bool started;     /* at least one result has arrived */
    PGresult *result; /* the first result */
    struct job *next;
} job;

/* Statements in flight on one connection at most; beyond, another is used. */
#define PIPELINE_DEPTH 32

/* Heavy statements in flight on one connection at most. Measured on the
 * bench box (2 cores, 32 clients, a search page of 50 customers, some
 * 300 µs of a backend, against a point read's 40): one connection with 32
 * pages in flight, 3.2k req/s, p99 17-20 ms; three with 2 each, 3.5k req/s,
 * p99 15-16.5 ms. Point reads spread over three connections fell from 23k
 * req/s to 18-19k: they stay on one. */
#define HEAVY_PER_CONN 2

typedef struct loop_conn {
    struct crm_dbloop *loop;
    PGconn *pg;
    int fd;           /* registered in epoll, or -1 */
    job *head, *tail; /* sent and unanswered, in order */
    int inflight;     /* client jobs among them */
    int heavy;        /* heavy jobs among them */
    int batch;        /* jobs sent in the current dispatch round */
    bool want_write;  /* output left to flush */
    bool prepared[CRM_DB_MAX_STMTS];
} loop_conn;

struct crm_dbloop {
    crm_db_config cfg;
    char *url;
    loop_conn *conns;
    int nconns;
    int epfd;
    job *head, *tail; /* waiting for a connection */
    int queued, busy;
};

/* Whether j is heavy: it reads a page, or it is planned for its values
 * (crmd does that only for list shapes whose best plan depends on them). */
static bool is_heavy(const job *j)
{
    return j->stmt->page || j->stmt->name == NULL;
}

/* Process-wide figures for /metrics, summed over every loop. */
static atomic_int stat_open, stat_busy, stat_queued;

static void finish(job *j, PGresult *res, const crm_error *err)
{
    if (j->done != NULL)
        j->done(j->arg, res, err);
    else
        PQclear(res);
    free(j);
}

static void fail_job(job *j, crm_errcode code, const char *detail)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_set(&err, code, "%s", detail);
    finish(j, NULL, &err);
}

static void push_front(crm_dbloop *L, job *j);

/* Closes c. Its unanswered jobs fail, except read-only ones not yet retried,
 * which go back to the front of the queue for a fresh connection. */
static void conn_close(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    if (c->fd >= 0)
        epoll_ctl(L->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        atomic_fetch_sub(&stat_open, 1);
    }
    L->busy -= c->inflight;
    atomic_fetch_sub(&stat_busy, c->inflight);
    job *j = c->head;
    while (j != NULL) {
        job *next = j->next;
        j->heavy = false;
        PQclear(j->result);
        j->result = NULL;
        j->started = false;
        j->next = NULL;
        if (j->done == NULL)
            free(j);
        else if (j->stmt->read_only && j->attempts++ == 0)
            push_front(L, j);
        else
            fail_job(j, CRM_E_UNAVAILABLE, "database unavailable");
        j = next;
    }
    c->head = c->tail = NULL;
    c->inflight = 0;
    c->heavy = 0;
    c->batch = 0;
    c->want_write = false;
    c->pg = NULL;
    c->fd = -1;
    memset(c->prepared, 0, sizeof c->prepared);
}

static void watch(loop_conn *c, int op)
{
    crm_dbloop *L = c->loop;
    struct epoll_event ev = {.events = EPOLLIN | (c->want_write ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(L->epfd, op, c->fd, &ev);
}

static bool conn_open(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    if (crm_db_in_backoff())
        return false;
    crm_error err = CRM_ERROR_INIT;
    PGconn *pg = crm_db_connect_direct(&L->cfg, &err);
    crm_error_clear(&err);
    crm_db_note_connect(pg != NULL, L->cfg.retry_backoff_ms);
    if (pg == NULL)
        return false;
    if (PQsetnonblocking(pg, 1) != 0 || PQenterPipelineMode(pg) != 1) {
        crm_log(CRM_LOG_ERROR, "cannot enter pipeline mode: %.200s", PQerrorMessage(pg));
        PQfinish(pg);
        return false;
    }
    c->pg = pg;
    c->fd = PQsocket(pg);
    c->want_write = false;
    watch(c, EPOLL_CTL_ADD);
    atomic_fetch_add(&stat_open, 1);
    return true;
}

/* An idle connection with something to read is dead (see db.c). */
static bool idle_alive(loop_conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return PQstatus(c->pg) == CONNECTION_OK && poll(&p, 1, 0) == 0;
}

static void append(loop_conn *c, job *j)
{
    j->next = NULL;
    if (c->tail != NULL)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
}

/* Queues j's statement (and its PREPARE the first time) on c's pipeline.
 * Returns false when the connection failed; c is then closed. */
static bool send_job(loop_conn *c, job *j)
{
    crm_dbloop *L = c->loop;
    if (j->stmt->name == NULL) { /* unprepared: planned for its values */
        if (!PQsendQueryParams(c->pg, j->stmt->sql, j->nparams, NULL, j->values, NULL, NULL, 0)) {
            crm_log(CRM_LOG_WARN, "database send failed: %.200s", PQerrorMessage(c->pg));
            push_front(L, j);
            conn_close(c);
            return false;
        }
        goto sent;
    }
    int slot = crm_db_stmt_slot(j->stmt);
    if (!c->prepared[slot]) {
        job *prep = calloc(1, sizeof *prep);
        if (prep == NULL || !PQsendPrepare(c->pg, j->stmt->name, j->stmt->sql, 0, NULL)) {
            free(prep);
            push_front(L, j);
            conn_close(c);
            return false;
        }
        prep->stmt = j->stmt;
        append(c, prep);
        c->prepared[slot] = true;
    }
    if (!PQsendQueryPrepared(c->pg, j->stmt->name, j->nparams, j->values, NULL, NULL, 0)) {
        crm_log(CRM_LOG_WARN, "database send failed: %.200s", PQerrorMessage(c->pg));
        push_front(L, j);
        conn_close(c);
        return false;
    }
sent:
    append(c, j);
    j->heavy = is_heavy(j);
    c->heavy += j->heavy;
    c->inflight++;
    c->batch++;
    L->busy++;
    atomic_fetch_add(&stat_busy, 1);
    return true;
}

/* Ends a dispatch round on c: one sync point and one flush for the batch. */
static void flush_batch(loop_conn *c)
{
    if (c->pg == NULL || c->batch == 0)
        return;
    c->batch = 0;
    if (PQpipelineSync(c->pg) != 1) {
        conn_close(c);
        return;
    }
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    bool want = rc == 1;
    if (want != c->want_write) {
        c->want_write = want;
        watch(c, EPOLL_CTL_MOD);
    }
}

static void on_writable(loop_conn *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    if (rc == 0) {
        c->want_write = false;
        watch(c, EPOLL_CTL_MOD);
    }
}

/* Completes the job at the head of c's pipeline with what it received. */
static void complete_head(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    job *j = c->head;
    c->head = j->next;
    if (c->head == NULL)
        c->tail = NULL;
    PGresult *res = j->result;
    j->result = NULL;
    ExecStatusType st = PQresultStatus(res);
    if (j->done == NULL) { /* our PREPARE */
        if (st != PGRES_COMMAND_OK) {
            crm_error err = CRM_ERROR_INIT;
            crm_db_result_error(c->pg, res, j->stmt->name, &err);
            crm_error_clear(&err);
            c->prepared[crm_db_stmt_slot(j->stmt)] = false;
        }
        finish(j, res, NULL);
        return;
    }
    c->inflight--;
    c->heavy -= j->heavy;
    L->busy--;
    atomic_fetch_sub(&stat_busy, 1);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        finish(j, res, NULL);
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    if (st == PGRES_PIPELINE_ABORTED)
        crm_error_set(&err, CRM_E_INTERNAL, "an earlier statement in the pipeline failed");
    else
        crm_db_result_error(c->pg, res, j->stmt->name ? j->stmt->name : "ad-hoc statement", &err);
    PQclear(res);
    finish(j, NULL, &err);
    crm_error_clear(&err);
}

/* Reads what arrived on c and completes every job whose results are in. */
static void on_readable(loop_conn *c)
{
    if (c->head == NULL) { /* nothing asked, something arrived: the server went away */
        conn_close(c);
        return;
    }
    if (!PQconsumeInput(c->pg)) {
        crm_log(CRM_LOG_WARN, "database connection lost: %.200s", PQerrorMessage(c->pg));
        conn_close(c);
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            /* The end of one statement's results, or nothing more for now. */
            if (c->head == NULL || !c->head->started)
                break;
            complete_head(c);
            continue;
        }
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            continue;
        }
        if (c->head == NULL) { /* a result nobody asked for: protocol out of step */
            PQclear(res);
            crm_log(CRM_LOG_ERROR, "database loop received an unexpected result");
            conn_close(c);
            return;
        }
        c->head->started = true;
        if (c->head->result == NULL)
            c->head->result = res;
        else
            PQclear(res);
    }
    if (PQstatus(c->pg) != CONNECTION_OK)
        conn_close(c);
}

static job *pop_job(crm_dbloop *L)
{
    job *j = L->head;
    if (j != NULL) {
        L->head = j->next;
        if (L->head == NULL)
            L->tail = NULL;
        L->queued--;
        atomic_fetch_sub(&stat_queued, 1);
    }
    return j;
}

static void push_front(crm_dbloop *L, job *j)
{
    j->next = L->head;
    L->head = j;
    if (L->tail == NULL)
        L->tail = j;
    L->queued++;
    atomic_fetch_add(&stat_queued, 1);
}

/* The connection for j, NULL when nothing can take it now. A cheap job goes
 * to the first open connection without heavy work in flight (cheap ones
 * pack onto one pipeline). A heavy job goes to the open connection with the
 * fewest heavy ones, below HEAVY_PER_CONN. Either opens another connection,
 * while the pool has room, rather than queue behind heavy work. */
static loop_conn *pick_connection(crm_dbloop *L, const job *j)
{
    bool heavy = is_heavy(j);
    loop_conn *best = NULL, *unopened = NULL;
    for (int i = 0; i < L->nconns; i++) {
        loop_conn *c = &L->conns[i];
        if (c->pg == NULL) {
            if (unopened == NULL)
                unopened = c;
            continue;
        }
        if (c->inflight >= PIPELINE_DEPTH || (heavy && c->heavy >= HEAVY_PER_CONN))
            continue;
        if (!heavy && c->heavy == 0)
            return c;
        if (best == NULL || c->heavy < best->heavy ||
            (c->heavy == best->heavy && c->inflight < best->inflight))
            best = c;
    }
    if (best != NULL && (best->heavy == 0 || unopened == NULL))
        return best;
    if (unopened != NULL && !crm_db_in_backoff())
        return unopened;
    return best;
}

/* Sends every queued job that a connection can take, then flushes each
 * connection once: a burst of requests becomes one write per connection. */
static void dispatch_queued(crm_dbloop *L)
{
    while (L->head != NULL) {
        loop_conn *c = pick_connection(L, L->head);
        if (c == NULL) {
            /* Nothing can take work. While the database is down, fail fast. */
            bool any_open = false;
            for (int i = 0; i < L->nconns; i++)
                any_open |= L->conns[i].pg != NULL;
            if (any_open)
                break;
            fail_job(pop_job(L), CRM_E_UNAVAILABLE, "database unavailable");
            continue;
        }
        if (c->pg != NULL && c->head == NULL && !idle_alive(c)) {
            conn_close(c);
            continue;
        }
        if (c->pg == NULL && !conn_open(c))
            continue; /* now inside the fail-fast window: handled above */
        send_job(c, pop_job(L));
    }
    for (int i = 0; i < L->nconns; i++)
        flush_batch(&L->conns[i]);
}

void crm_dbloop_run(crm_dbloop *L)
{
    struct epoll_event events[64];
    int n;
    do {
        n = epoll_wait(L->epfd, events, 64, 0);
        for (int i = 0; i < n; i++) {
            loop_conn *c = events[i].data.ptr;
            if (c->pg != NULL && (events[i].events & EPOLLOUT))
                on_writable(c);
            if (c->pg != NULL && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(c);
        }
    } while (n == 64);
    if (L->head != NULL)
        dispatch_queued(L);
}

crm_dbloop *crm_dbloop_new(const crm_db_config *cfg, int connections, crm_error *err)
{
    crm_dbloop *L = calloc(1, sizeof *L);
    if (L == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    L->cfg = *cfg;
    L->url = strdup(cfg->url ? cfg->url : "");
    L->cfg.url = L->url;
    L->nconns = connections;
    L->conns = calloc((size_t)connections, sizeof *L->conns);
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (L->url == NULL || L->conns == NULL || L->epfd < 0) {
        crm_error_set(err, CRM_E_INTERNAL, "cannot create a database loop");
        crm_dbloop_free(L);
        return NULL;
    }
    for (int i = 0; i < connections; i++) {
        L->conns[i].fd = -1;
        L->conns[i].loop = L;
    }
    return L;
}

/* Asks the server to stop what c's backend runs (a statement waiting on a
 * lock would otherwise go on after its connection is closed). */
static void cancel_running(loop_conn *c)
{
    if (c->pg == NULL || c->inflight == 0)
        return;
    PGcancel *cancel = PQgetCancel(c->pg);
    char errbuf[256];
    if (cancel != NULL && !PQcancel(cancel, errbuf, sizeof errbuf))
        crm_log(CRM_LOG_WARN, "cannot cancel a statement: %.200s", errbuf);
    PQfreeCancel(cancel);
}

void crm_dbloop_abort_all(crm_dbloop *L)
{
    job *j;
    while ((j = pop_job(L)) != NULL)
        fail_job(j, CRM_E_UNAVAILABLE, "the server is shutting down");
    for (int i = 0; L->conns != NULL && i < L->nconns; i++) {
        cancel_running(&L->conns[i]);
        conn_close(&L->conns[i]);
    }
    /* conn_close requeues read-only jobs for a retry: fail those too. */
    while ((j = pop_job(L)) != NULL)
        fail_job(j, CRM_E_UNAVAILABLE, "the server is shutting down");
}

void crm_dbloop_free(crm_dbloop *L)
{
    if (L == NULL)
        return;
    crm_dbloop_abort_all(L);
    if (L->epfd >= 0)
        close(L->epfd);
    free(L->conns);
    free(L->url);
    free(L);
}

int crm_dbloop_fd(const crm_dbloop *L)
{
    return L->epfd;
}

bool crm_dbloop_idle(const crm_dbloop *L)
{
    return L->head == NULL && L->busy == 0;
}

bool crm_dbloop_submit(crm_dbloop *L, crm_stmt *stmt, int nparams, const char *const *values,
                       crm_dbloop_done done, void *arg, crm_error *err)
{
    job *j = malloc(sizeof *j);
    if (j == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    *j = (job){.stmt = stmt, .nparams = nparams, .values = values, .done = done, .arg = arg};
    if (L->tail != NULL)
        L->tail->next = j;
    else
        L->head = j;
    L->tail = j;
    L->queued++;
    atomic_fetch_add(&stat_queued, 1);
    return true;
}

crm_dbloop_stats crm_dbloop_get_stats(void)
{
    crm_dbloop_stats s = {atomic_load(&stat_open), atomic_load(&stat_busy),
                          atomic_load(&stat_queued)};
    return s;
}

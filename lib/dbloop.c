/*
 * dbloop.c — one thread, several connections, one epoll.
 *
 * Jobs arrive on a mutex-protected FIFO and an eventfd wakes the loop. The
 * loop hands each job to an idle connection (connecting on demand), sends it
 * with PQsendQueryPrepared, and when the connection's socket turns readable
 * collects the result and calls the job's callback. A connection found dead
 * is closed; a read-only statement whose connection died before an answer
 * is sent once more on a fresh connection. After a failed connect the loop
 * answers CRM_E_UNAVAILABLE at once for retry_backoff_ms, like the pool.
 *
 * Preparing a statement is done synchronously, once per connection and
 * statement: it costs one round trip the first time and never again.
 */
#include "dbloop.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

typedef struct job {
    crm_stmt *stmt;
    int nparams;
    const char *const *values;
    crm_dbloop_done done;
    void *arg;
    int attempts;
    struct job *next;
} job;

typedef struct loop_conn {
    PGconn *pg;
    int fd;           /* registered in epoll, or -1 */
    job *current;     /* the statement in flight, or NULL when idle */
    PGresult *result; /* first result of the current statement */
    bool prepared[CRM_DB_MAX_STMTS];
} loop_conn;

static struct {
    crm_db_config cfg;
    char *url;
    loop_conn *conns;
    int nconns;
    int epfd, evfd;
    pthread_t thread;
    bool running;
    pthread_mutex_t mu; /* guards queue, stopping and the stats below */
    job *head, *tail;
    int queued;
    int busy, open;
    bool stopping;
    long long down_until_ms;
} L = {.mu = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .evfd = -1};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void finish(job *j, PGresult *res, const crm_error *err)
{
    j->done(j->arg, res, err);
    free(j);
}

static void fail_job(job *j, crm_errcode code, const char *detail)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_set(&err, code, "%s", detail);
    finish(j, NULL, &err);
}

static void conn_close(loop_conn *c)
{
    if (c->fd >= 0)
        epoll_ctl(L.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        pthread_mutex_lock(&L.mu);
        L.open--;
        pthread_mutex_unlock(&L.mu);
    }
    PQclear(c->result);
    c->result = NULL;
    c->pg = NULL;
    c->fd = -1;
    memset(c->prepared, 0, sizeof c->prepared);
}

static bool conn_open(loop_conn *c)
{
    if (now_ms() < L.down_until_ms)
        return false;
    crm_error err = CRM_ERROR_INIT;
    PGconn *pg = crm_db_connect_direct(&L.cfg, &err);
    crm_error_clear(&err);
    if (pg == NULL) {
        L.down_until_ms = now_ms() + L.cfg.retry_backoff_ms;
        return false;
    }
    c->pg = pg;
    c->fd = PQsocket(pg);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(L.epfd, EPOLL_CTL_ADD, c->fd, &ev);
    pthread_mutex_lock(&L.mu);
    L.open++;
    pthread_mutex_unlock(&L.mu);
    return true;
}

/* An idle connection with something to read is dead (see db.c). */
static bool idle_alive(loop_conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return PQstatus(c->pg) == CONNECTION_OK && poll(&p, 1, 0) == 0;
}

static void set_busy(int delta)
{
    pthread_mutex_lock(&L.mu);
    L.busy += delta;
    pthread_mutex_unlock(&L.mu);
}

/* Starts j on c. On failure the job is either finished with an error or, when
 * the connection died and the statement may be repeated, returned to the
 * caller through *retry. */
static void dispatch(loop_conn *c, job *j, job **retry)
{
    *retry = NULL;
    if (c->pg != NULL && !idle_alive(c))
        conn_close(c);
    if (c->pg == NULL && !conn_open(c)) {
        fail_job(j, CRM_E_UNAVAILABLE, "database unavailable");
        return;
    }
    int slot = crm_db_stmt_slot(j->stmt);
    crm_error err = CRM_ERROR_INIT;
    if (!c->prepared[slot]) {
        PGresult *res = PQprepare(c->pg, j->stmt->name, j->stmt->sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            crm_db_result_error(c->pg, res, j->stmt->name, &err);
            PQclear(res);
            bool dead = PQstatus(c->pg) != CONNECTION_OK;
            if (dead)
                conn_close(c);
            if (dead && j->stmt->read_only && j->attempts++ == 0) {
                crm_error_clear(&err);
                *retry = j;
                return;
            }
            finish(j, NULL, &err);
            crm_error_clear(&err);
            return;
        }
        PQclear(res);
        c->prepared[slot] = true;
    }
    if (!PQsendQueryPrepared(c->pg, j->stmt->name, j->nparams, j->values, NULL, NULL, 0)) {
        crm_log(CRM_LOG_WARN, "database send failed: %.200s", PQerrorMessage(c->pg));
        conn_close(c);
        if (j->stmt->read_only && j->attempts++ == 0) {
            *retry = j;
            return;
        }
        fail_job(j, CRM_E_UNAVAILABLE, "database unavailable");
        return;
    }
    c->current = j;
    set_busy(1);
}

/* Reads what arrived on c; completes its job once the last result is in. */
static void on_readable(loop_conn *c, job **retry)
{
    *retry = NULL;
    if (c->current == NULL) { /* idle and readable: the server went away */
        conn_close(c);
        return;
    }
    job *j = c->current;
    bool alive = PQconsumeInput(c->pg) != 0;
    while (alive && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) { /* the statement is complete */
            c->current = NULL;
            set_busy(-1);
            PGresult *first = c->result;
            c->result = NULL;
            ExecStatusType st = PQresultStatus(first);
            if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
                finish(j, first, NULL);
            } else {
                crm_error err = CRM_ERROR_INIT;
                crm_db_result_error(c->pg, first, j->stmt->name, &err);
                PQclear(first);
                finish(j, NULL, &err);
                crm_error_clear(&err);
            }
            return;
        }
        if (c->result == NULL)
            c->result = res;
        else
            PQclear(res);
    }
    if (alive && PQstatus(c->pg) == CONNECTION_OK)
        return; /* more to come */
    /* The connection died in mid-statement. */
    c->current = NULL;
    set_busy(-1);
    crm_log(CRM_LOG_WARN, "database connection lost: %.200s", PQerrorMessage(c->pg));
    conn_close(c);
    if (j->stmt->read_only && j->attempts++ == 0) {
        *retry = j;
        return;
    }
    fail_job(j, CRM_E_UNAVAILABLE, "database unavailable");
}

static job *pop_job(void)
{
    pthread_mutex_lock(&L.mu);
    job *j = L.head;
    if (j != NULL) {
        L.head = j->next;
        if (L.head == NULL)
            L.tail = NULL;
        L.queued--;
    }
    pthread_mutex_unlock(&L.mu);
    return j;
}

static void push_front(job *j)
{
    pthread_mutex_lock(&L.mu);
    j->next = L.head;
    L.head = j;
    if (L.tail == NULL)
        L.tail = j;
    L.queued++;
    pthread_mutex_unlock(&L.mu);
}

/* Gives queued jobs to idle connections, preferring open ones. */
static void dispatch_queued(void)
{
    for (;;) {
        loop_conn *idle = NULL;
        for (int i = 0; i < L.nconns; i++) {
            loop_conn *c = &L.conns[i];
            if (c->current != NULL)
                continue;
            if (c->pg != NULL) {
                idle = c;
                break;
            }
            if (idle == NULL)
                idle = c;
        }
        if (idle == NULL)
            return;
        job *j = pop_job();
        if (j == NULL)
            return;
        job *retry;
        dispatch(idle, j, &retry);
        if (retry != NULL)
            push_front(retry);
    }
}

static void *loop_main(void *unused)
{
    (void)unused;
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(L.epfd, events, 64, -1);
        if (n < 0 && errno != EINTR) {
            crm_log(CRM_LOG_ERROR, "database loop: epoll_wait failed: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                uint64_t v;
                ssize_t rc = read(L.evfd, &v, sizeof v);
                (void)rc;
                continue;
            }
            job *retry;
            on_readable(events[i].data.ptr, &retry);
            if (retry != NULL)
                push_front(retry);
        }
        dispatch_queued();
        pthread_mutex_lock(&L.mu);
        bool done = L.stopping && L.head == NULL && L.busy == 0;
        pthread_mutex_unlock(&L.mu);
        if (done)
            break;
    }
    return NULL;
}

bool crm_dbloop_start(const crm_db_config *cfg, int connections, crm_error *err)
{
    L.cfg = *cfg;
    L.url = strdup(cfg->url ? cfg->url : "");
    L.cfg.url = L.url;
    L.nconns = connections;
    L.conns = calloc((size_t)connections, sizeof *L.conns);
    L.epfd = epoll_create1(EPOLL_CLOEXEC);
    L.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (L.url == NULL || L.conns == NULL || L.epfd < 0 || L.evfd < 0)
        return crm_error_set(err, CRM_E_INTERNAL, "cannot create the database loop");
    for (int i = 0; i < connections; i++)
        L.conns[i].fd = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(L.epfd, EPOLL_CTL_ADD, L.evfd, &ev);
    L.stopping = false;
    L.head = L.tail = NULL;
    L.queued = L.busy = L.open = 0;
    L.down_until_ms = 0;
    if (pthread_create(&L.thread, NULL, loop_main, NULL) != 0)
        return crm_error_set(err, CRM_E_INTERNAL, "cannot start the database loop thread");
    L.running = true;
    return true;
}

static void wake(void)
{
    uint64_t one = 1;
    ssize_t rc = write(L.evfd, &one, sizeof one);
    (void)rc;
}

void crm_dbloop_stop(void)
{
    if (!L.running)
        return;
    pthread_mutex_lock(&L.mu);
    L.stopping = true;
    job *pending = L.head;
    L.head = L.tail = NULL;
    L.queued = 0;
    pthread_mutex_unlock(&L.mu);
    while (pending != NULL) {
        job *next = pending->next;
        fail_job(pending, CRM_E_UNAVAILABLE, "the server is shutting down");
        pending = next;
    }
    wake();
    pthread_join(L.thread, NULL);
    for (int i = 0; i < L.nconns; i++)
        conn_close(&L.conns[i]);
    close(L.epfd);
    close(L.evfd);
    free(L.conns);
    free(L.url);
    L.conns = NULL;
    L.url = NULL;
    L.epfd = L.evfd = -1;
    L.running = false;
}

bool crm_dbloop_submit(crm_stmt *stmt, int nparams, const char *const *values,
                       crm_dbloop_done done, void *arg, crm_error *err)
{
    if (!L.running)
        return crm_error_set(err, CRM_E_UNAVAILABLE, "the database loop is not running");
    job *j = malloc(sizeof *j);
    if (j == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    *j = (job){.stmt = stmt, .nparams = nparams, .values = values, .done = done, .arg = arg};
    pthread_mutex_lock(&L.mu);
    if (L.stopping) {
        pthread_mutex_unlock(&L.mu);
        free(j);
        return crm_error_set(err, CRM_E_UNAVAILABLE, "the server is shutting down");
    }
    bool was_empty = L.head == NULL;
    if (L.tail != NULL)
        L.tail->next = j;
    else
        L.head = j;
    L.tail = j;
    L.queued++;
    pthread_mutex_unlock(&L.mu);
    /* One wake-up per burst: the loop drains the whole queue when it runs. */
    if (was_empty)
        wake();
    return true;
}

crm_dbloop_stats crm_dbloop_get_stats(void)
{
    crm_dbloop_stats s;
    pthread_mutex_lock(&L.mu);
    s.connections = L.open;
    s.busy = L.busy;
    s.queued = L.queued;
    pthread_mutex_unlock(&L.mu);
    return s;
}

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
 * Failure domains. The statements between two sync points run as one implicit transaction: when
 * one fails, PostgreSQL skips every later one up to the sync (libpq answers them
 * PGRES_PIPELINE_ABORTED) and rolls back the earlier ones. A sync point per statement would
 * isolate them, but it is not free: libpq 15's PQpipelineSync flushes (a write per statement), and
 * the server flushes its output at every Sync (a write per statement on its side, and more reads
 * on ours), which is what makes a pipelined round cheap in the first place. So a round keeps one
 * sync point, and failures are contained instead:
 *  - a job answered PGRES_PIPELINE_ABORTED never ran: it goes back to the front of the queue once,
 *    marked isolated, and is then sent between sync points of its own, where no other statement
 *    can abort it (the extra writes are paid only after a failure);
 *  - a job that writes is always isolated, so that a later failure cannot roll back a write that
 *    was already answered as done;
 *  - a PREPARE opens a segment (a sync point before it when the round has sent something on that
 *    connection), so that it can fail only on its own account: statements sent in later rounds
 *    count on it having succeeded.
 * One failing statement therefore costs its own request an error, and the requests that shared
 * its segment one more round trip, never an error.
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
 * yet retried, which go back to the queue for a fresh connection.
 *
 * Connecting never blocks the thread (a database host that accepts TCP and
 * never answers must not freeze the HTTP connections the thread serves):
 * PQconnectStartParams, then PQconnectPoll whenever the socket is ready as
 * libpq asked, in the same epoll as the pipelines. libpq does not enforce
 * connect_timeout in this mode, so a timerfd in that epoll does. Jobs
 * assigned to a connection that is connecting wait for it and go out in one
 * write when it is up. After a failed or timed-out connect the database is
 * "down": for retry_backoff_ms (shared with the blocking pool) jobs fail
 * with CRM_E_UNAVAILABLE at once; after that the next job starts one probe
 * connect but fails at once too, and jobs wait for connects again only once
 * a probe succeeded. Session settings travel in the startup packet (db.c),
 * so nothing but PREPAREs, pipelined like any statement, follows a connect.
 */
#include "dbloop.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct job {
    crm_stmt *stmt;
    int nparams;
    const char *const *values;
    crm_dbloop_done done; /* NULL: an internal PQsendPrepare */
    void *arg;
    int attempts;      /* sent on a connection that died */
    int send_failures; /* libpq refused to queue it (see send_failed) */
    bool isolated;     /* sent between sync points of its own (see the top of the file) */
    bool heavy;        /* counted in its connection's heavy */
    bool started;      /* at least one result has arrived */
    PGresult *result;  /* the first result */
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
    int fd;                     /* registered in epoll, or -1 */
    bool connecting;            /* PQconnectPoll has not finished */
    long long deadline_ms;      /* while connecting: when the connect has failed */
    job *wait_head, *wait_tail; /* while connecting: assigned, sent once connected */
    job *head, *tail;           /* sent and unanswered, in order */
    int inflight;               /* client jobs among them */
    int heavy;                  /* heavy jobs among them */
    int batch;                  /* statements sent since the last sync point */
    int syncs;                  /* sync points sent whose PGRES_PIPELINE_SYNC has not arrived */
    bool want_write;            /* output left to flush */
    bool prepared[CRM_DB_MAX_STMTS];
    crm_errcode prepare_failed; /* how the last failed PREPARE failed, for its job */
} loop_conn;

struct crm_dbloop {
    crm_db_config cfg;
    char *url;
    loop_conn *conns;
    int nconns;
    int epfd;
    int timerfd;                  /* in epfd: fires at the earliest connect deadline */
    int connecting;               /* connections in PQconnectPoll */
    bool down;                    /* the last connect failed; cleared by one that succeeds */
    bool aborted;                 /* crm_dbloop_abort_all ran: no more work */
    job *head, *tail;             /* waiting for a connection */
    job *retry_head, *retry_tail; /* aborted by another statement's failure: go first */
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
static void prepend(crm_dbloop *L, job *list);
static void arm_timer(crm_dbloop *L);

/* Detaches the jobs waiting for c's connect, undoing their accounting, and
 * returns them in order. */
static job *take_waiting(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    job *list = c->wait_head;
    for (job *j = list; j != NULL; j = j->next) {
        c->inflight--;
        c->heavy -= j->heavy;
        j->heavy = false;
        L->busy--;
        atomic_fetch_sub(&stat_busy, 1);
    }
    c->wait_head = c->wait_tail = NULL;
    return list;
}

/* Closes c. Its unanswered jobs fail, except read-only ones not yet retried,
 * which go back to the front of the queue for a fresh connection; jobs that
 * waited for its connect never ran and go back too. */
static void conn_close(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    prepend(L, take_waiting(c));
    if (c->connecting) {
        c->connecting = false;
        L->connecting--;
        arm_timer(L);
    }
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
    c->syncs = 0;
    c->want_write = false;
    c->pg = NULL;
    c->fd = -1;
    memset(c->prepared, 0, sizeof c->prepared);
}

/* Watches c's socket for events, following libpq when it changed the socket
 * (a connect tries each address of the host in turn). */
static void watch_events(loop_conn *c, uint32_t events)
{
    crm_dbloop *L = c->loop;
    int fd = PQsocket(c->pg);
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (fd != c->fd) {
        if (c->fd >= 0) /* libpq closed it: nothing of ours holds that number now */
            epoll_ctl(L->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->fd = fd;
        if (fd >= 0 && epoll_ctl(L->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
            epoll_ctl(L->epfd, EPOLL_CTL_MOD, fd, &ev);
        return;
    }
    if (fd >= 0 && epoll_ctl(L->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        epoll_ctl(L->epfd, EPOLL_CTL_ADD, fd, &ev); /* a new socket under the old number */
}

static void watch(loop_conn *c)
{
    watch_events(c, EPOLLIN | (c->want_write ? EPOLLOUT : 0));
}

/* Sets the timer to the earliest connect deadline, or stops it. */
static void arm_timer(crm_dbloop *L)
{
    long long earliest = 0;
    for (int i = 0; i < L->nconns; i++)
        if (L->conns[i].connecting && (earliest == 0 || L->conns[i].deadline_ms < earliest))
            earliest = L->conns[i].deadline_ms;
    struct itimerspec at = {{0, 0}, {0, 0}};
    if (earliest > 0) {
        at.it_value.tv_sec = earliest / 1000;
        at.it_value.tv_nsec = (earliest % 1000) * 1000000;
    }
    timerfd_settime(L->timerfd, TFD_TIMER_ABSTIME, &at, NULL);
}

/* Whether a connect may start now: not inside the fail-fast window, and
 * while the database is down, one probe at a time. */
static bool can_open(const crm_dbloop *L)
{
    return !crm_db_in_backoff() && !(L->down && L->connecting > 0);
}

/* Starts connecting c without waiting (see crm_db_connect_start); the
 * loop's epoll and timer drive it from there. False when it failed at once
 * (the fail-fast window then begins). */
static bool conn_open(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    if (!can_open(L))
        return false;
    int timeout_s = 0;
    PGconn *pg = crm_db_connect_start(&L->cfg, &timeout_s);
    if (pg == NULL) {
        crm_db_note_connect(false, L->cfg.retry_backoff_ms);
        L->down = true;
        return false;
    }
    c->pg = pg;
    c->fd = -1;
    c->connecting = true;
    c->deadline_ms = crm_monotonic_ms() + timeout_s * 1000LL;
    L->connecting++;
    atomic_fetch_add(&stat_open, 1);
    watch_events(c, EPOLLOUT); /* libpq's first step is writing */
    arm_timer(L);
    return true;
}

/* c's connect failed or timed out: the fail-fast window begins, and the
 * jobs that waited for it go back to the queue (where, with no connection
 * to take them, they fail with CRM_E_UNAVAILABLE). */
static void connect_failed(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    crm_db_note_connect(false, L->cfg.retry_backoff_ms);
    L->down = true;
    conn_close(c);
}

static bool send_job(loop_conn *c, job *j);
static void flush_batch(loop_conn *c);

/* c is connected: pipeline mode, then the jobs that waited, in one write. */
static void connect_done(loop_conn *c)
{
    crm_dbloop *L = c->loop;
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        crm_log(CRM_LOG_ERROR, "cannot enter pipeline mode: %.200s", PQerrorMessage(c->pg));
        connect_failed(c);
        return;
    }
    c->connecting = false;
    L->connecting--;
    arm_timer(L);
    crm_db_note_connect(true, 0);
    L->down = false;
    c->want_write = false;
    watch(c);
    job *j = take_waiting(c);
    while (j != NULL && c->pg != NULL) {
        job *next = j->next;
        send_job(c, j);
        j = next;
    }
    prepend(L, j); /* the connection failed meanwhile: these never went out */
    flush_batch(c);
}

/* One step of c's connect, when its socket is ready as libpq asked. */
static void connect_step(loop_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_OK:
        connect_done(c);
        return;
    case PGRES_POLLING_READING:
        watch_events(c, EPOLLIN);
        return;
    case PGRES_POLLING_WRITING:
        watch_events(c, EPOLLOUT);
        return;
    default:
        crm_db_log_connect_failure(c->pg);
        connect_failed(c);
        return;
    }
}

/* Fails the connects that passed their deadline: libpq does not enforce
 * connect_timeout in nonblocking mode, and a host that accepts TCP and never
 * answers would otherwise hold them (and the jobs waiting) forever. */
static void expire_connects(crm_dbloop *L)
{
    long long now = crm_monotonic_ms();
    for (int i = 0; i < L->nconns; i++) {
        loop_conn *c = &L->conns[i];
        if (c->connecting && now >= c->deadline_ms) {
            crm_log(CRM_LOG_WARN, "database connect failed: timed out");
            connect_failed(c);
        }
    }
}

/* Assigns j to c while c connects; it is sent once connected. */
static void wait_for_connect(loop_conn *c, job *j)
{
    crm_dbloop *L = c->loop;
    j->next = NULL;
    if (c->wait_tail != NULL)
        c->wait_tail->next = j;
    else
        c->wait_head = j;
    c->wait_tail = j;
    j->heavy = is_heavy(j);
    c->heavy += j->heavy;
    c->inflight++;
    L->busy++;
    atomic_fetch_add(&stat_busy, 1);
}

static void on_readable(loop_conn *c);

/* Before an idle connection is reused: reads whatever arrived since its last
 * job (a late sync point, a notice, a notification, a parameter status:
 * all normal) and tells whether it is still alive. Only EOF, an error or an
 * unexpected result mean death, and on_readable has then closed it. */
static bool idle_alive(loop_conn *c)
{
    if (PQstatus(c->pg) != CONNECTION_OK)
        return false;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 0)
        return true;
    on_readable(c);
    return c->pg != NULL;
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

/* Ends the current segment of c's pipeline with a sync point (which libpq
 * 15 also flushes). Returns false when the connection failed; c is then
 * closed. */
static bool sync_segment(loop_conn *c)
{
    c->batch = 0;
    if (PQpipelineSync(c->pg) != 1) {
        crm_log(CRM_LOG_WARN, "database send failed: %.200s", PQerrorMessage(c->pg));
        conn_close(c);
        return false;
    }
    c->syncs++;
    return true;
}

/* Sends of one job that libpq may refuse before the job fails. */
#define SEND_ATTEMPTS 2

/* After libpq refused to queue j on c: closes c (what it holds in its
 * output buffer is unknown) and puts j back at the front of the queue for a
 * fresh connection, or fails it once SEND_ATTEMPTS sends failed, so that a
 * job libpq always refuses (too many parameters, no memory) cannot keep the
 * loop reconnecting forever. */
static bool send_failed(loop_conn *c, job *j)
{
    crm_log(CRM_LOG_WARN, "database send failed: %.200s", PQerrorMessage(c->pg));
    conn_close(c);
    if (++j->send_failures >= SEND_ATTEMPTS)
        fail_job(j, CRM_E_UNAVAILABLE, "the statement could not be sent to the database");
    else
        push_front(c->loop, j);
    return false;
}

/* Queues j's statement (and its PREPARE the first time) on c's pipeline,
 * with the sync points that contain failures (see the top of the file).
 * Returns false when the connection failed; c is then closed. */
static bool send_job(loop_conn *c, job *j)
{
    crm_dbloop *L = c->loop;
    bool isolate = j->isolated || !j->stmt->read_only;
    int slot = j->stmt->name != NULL ? crm_db_stmt_slot(j->stmt) : 0;
    bool prepare = j->stmt->name != NULL && !c->prepared[slot];
    if ((isolate || prepare) && c->batch > 0 && !sync_segment(c)) {
        push_front(L, j);
        return false;
    }
    if (prepare) {
        job *prep = calloc(1, sizeof *prep);
        if (prep == NULL || !PQsendPrepare(c->pg, j->stmt->name, j->stmt->sql, 0, NULL)) {
            free(prep);
            return send_failed(c, j);
        }
        prep->stmt = j->stmt;
        append(c, prep);
        c->prepared[slot] = true;
        c->batch++;
    }
    bool sent =
        j->stmt->name == NULL /* unprepared: planned for its values */
            ? PQsendQueryParams(c->pg, j->stmt->sql, j->nparams, NULL, j->values, NULL, NULL, 0)
            : PQsendQueryPrepared(c->pg, j->stmt->name, j->nparams, j->values, NULL, NULL, 0);
    if (!sent)
        return send_failed(c, j);
    append(c, j);
    j->heavy = is_heavy(j);
    c->heavy += j->heavy;
    c->inflight++;
    c->batch++;
    L->busy++;
    atomic_fetch_add(&stat_busy, 1);
    if (isolate)
        return sync_segment(c);
    return true;
}

/* Ends a dispatch round on c: one sync point and one flush for the batch
 * (an isolated job's own sync point may already have flushed most of it). */
static void flush_batch(loop_conn *c)
{
    if (c->pg == NULL || c->connecting)
        return;
    if (c->batch > 0 && !sync_segment(c))
        return;
    int rc = PQflush(c->pg);
    if (rc < 0) {
        conn_close(c);
        return;
    }
    bool want = rc == 1;
    if (want != c->want_write) {
        c->want_write = want;
        watch(c);
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
        watch(c);
    }
}

/* Keeps j, which a failure of another statement aborted, for the front of
 * the queue: it is sent again once, isolated. Order is kept. */
static void push_retry(crm_dbloop *L, job *j)
{
    j->isolated = true;
    j->heavy = false;
    j->started = false;
    j->next = NULL;
    if (L->retry_tail != NULL)
        L->retry_tail->next = j;
    else
        L->retry_head = j;
    L->retry_tail = j;
    L->queued++;
    atomic_fetch_add(&stat_queued, 1);
}

/* Moves the jobs kept by push_retry to the front of the queue. */
static void requeue_retries(crm_dbloop *L)
{
    if (L->retry_head == NULL)
        return;
    L->retry_tail->next = L->head;
    if (L->tail == NULL)
        L->tail = L->retry_tail;
    L->head = L->retry_head;
    L->retry_head = L->retry_tail = NULL;
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
            c->prepare_failed = err.code;
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
    if (st == PGRES_PIPELINE_ABORTED && !j->isolated) {
        /* Another statement of its segment failed; this one never ran. */
        PQclear(res);
        push_retry(L, j);
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    if (st == PGRES_PIPELINE_ABORTED) { /* only when its own PREPARE failed (logged) */
        /* As that failed: a timeout or a lost database is a 503, not a 500. */
        if (c->prepare_failed == CRM_E_UNAVAILABLE)
            crm_error_set(&err, CRM_E_UNAVAILABLE, "database unavailable");
        else
            crm_error_set(&err, CRM_E_INTERNAL, "the statement could not be prepared");
        c->prepare_failed = CRM_OK;
    } else
        crm_db_result_error(c->pg, res, j->stmt->name ? j->stmt->name : "ad-hoc statement", &err);
    PQclear(res);
    finish(j, NULL, &err);
    crm_error_clear(&err);
}

/* Drops asynchronous notifications: nothing here LISTENs on purpose. */
static void drop_notifications(PGconn *pg)
{
    PGnotify *n;
    while ((n = PQnotifies(pg)) != NULL)
        PQfreemem(n);
}

/* Reads what arrived on c and completes every job whose results are in.
 * Bytes on a connection without jobs are normal (the sync point of the last
 * round read late, a notice, a parameter status, a notification): libpq
 * takes them in. Only EOF, a read error or a result that no job and no
 * sync point accounts for close the connection. */
static void on_readable(loop_conn *c)
{
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
        bool sync = PQresultStatus(res) == PGRES_PIPELINE_SYNC;
        if (sync && c->syncs > 0) {
            c->syncs--;
            PQclear(res);
            continue;
        }
        if (sync || c->head == NULL) { /* nothing asked for it: protocol out of step */
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
    drop_notifications(c->pg);
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

/* Puts a list of jobs, in its order, at the front of the queue. */
static void prepend(crm_dbloop *L, job *list)
{
    if (list == NULL)
        return;
    job *last = list;
    int n = 1;
    for (; last->next != NULL; last = last->next)
        n++;
    last->next = L->head;
    L->head = list;
    if (L->tail == NULL)
        L->tail = last;
    L->queued += n;
    atomic_fetch_add(&stat_queued, n);
}

/* Whether c can take jobs: connected, or connecting while the database is
 * not known to be down (jobs wait for a first connect, not for a probe). */
static bool usable(const crm_dbloop *L, const loop_conn *c)
{
    return c->pg != NULL && (!c->connecting || !L->down);
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
        if (!usable(L, c))
            continue;
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
    if (unopened != NULL && can_open(L))
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
            bool any_usable = false;
            for (int i = 0; i < L->nconns; i++)
                any_usable |= usable(L, &L->conns[i]);
            if (any_usable)
                break;
            fail_job(pop_job(L), CRM_E_UNAVAILABLE, "database unavailable");
            continue;
        }
        if (c->pg == NULL) {
            /* Failed at once, or a probe while the database is down: either
             * way the next pick sees that nothing can take the job. */
            conn_open(c);
            continue;
        }
        if (c->connecting) {
            wait_for_connect(c, pop_job(L));
            continue;
        }
        if (c->head == NULL && !idle_alive(c)) {
            if (c->pg != NULL)
                conn_close(c);
            continue;
        }
        send_job(c, pop_job(L));
    }
    for (int i = 0; i < L->nconns; i++)
        flush_batch(&L->conns[i]);
}

void crm_dbloop_run(crm_dbloop *L)
{
    if (L->aborted)
        return;
    struct epoll_event events[64];
    int n;
    do {
        n = epoll_wait(L->epfd, events, 64, 0);
        for (int i = 0; i < n; i++) {
            loop_conn *c = events[i].data.ptr;
            if (c == NULL) { /* the timer: a connect deadline */
                uint64_t expirations;
                ssize_t rc = read(L->timerfd, &expirations, sizeof expirations);
                (void)rc;
                continue;
            }
            if (c->pg != NULL && c->connecting) {
                connect_step(c);
                continue;
            }
            if (c->pg != NULL && (events[i].events & EPOLLOUT))
                on_writable(c);
            if (c->pg != NULL && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(c);
        }
    } while (n == 64);
    if (L->connecting > 0)
        expire_connects(L);
    requeue_retries(L);
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
    L->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event timer = {.events = EPOLLIN, .data.ptr = NULL};
    if (L->url == NULL || L->conns == NULL || L->epfd < 0 || L->timerfd < 0 ||
        epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->timerfd, &timer) != 0) {
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

/* Fails every job, queued or in flight, with CRM_E_UNAVAILABLE and closes
 * every connection. */
static void fail_everything(crm_dbloop *L)
{
    requeue_retries(L);
    job *j;
    while ((j = pop_job(L)) != NULL)
        fail_job(j, CRM_E_UNAVAILABLE, "the server is shutting down");
    for (int i = 0; L->conns != NULL && i < L->nconns; i++)
        conn_close(&L->conns[i]);
    /* conn_close requeues read-only jobs for a retry: fail those too. */
    while ((j = pop_job(L)) != NULL)
        fail_job(j, CRM_E_UNAVAILABLE, "the server is shutting down");
}

typedef struct cancel_batch {
    int n;
    PGcancel *cancels[];
} cancel_batch;

/* On a thread of its own: PQcancel opens a connection and waits for it,
 * and a database host that stopped answering must not hold the I/O thread
 * at shutdown. The process may exit before it is done: then PostgreSQL's
 * statement_timeout ends the statements. */
static void *send_cancels(void *arg)
{
    cancel_batch *b = arg;
    for (int i = 0; i < b->n; i++) {
        char why[256];
        if (!PQcancel(b->cancels[i], why, sizeof why))
            crm_log(CRM_LOG_WARN, "cannot cancel a statement: %.200s", why);
        PQfreeCancel(b->cancels[i]);
    }
    free(b);
    return NULL;
}

/* Asks PostgreSQL to cancel what runs on every connection with jobs in
 * flight, without waiting for the answers. */
static void cancel_in_flight(crm_dbloop *L)
{
    cancel_batch *b = calloc(1, sizeof *b + sizeof b->cancels[0] * (size_t)L->nconns);
    if (b == NULL)
        return;
    for (int i = 0; i < L->nconns; i++) {
        loop_conn *c = &L->conns[i];
        if (c->pg != NULL && !c->connecting && c->head != NULL) {
            PGcancel *k = PQgetCancel(c->pg);
            if (k != NULL)
                b->cancels[b->n++] = k;
        }
    }
    if (b->n == 0) {
        free(b);
        return;
    }
    pthread_attr_t attr;
    pthread_t thread;
    bool started = false;
    if (pthread_attr_init(&attr) == 0) {
        started = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                  pthread_create(&thread, &attr, send_cancels, b) == 0;
        pthread_attr_destroy(&attr);
    }
    if (started)
        return;
    crm_log(CRM_LOG_WARN, "cannot start the thread that cancels statements");
    for (int i = 0; i < b->n; i++)
        PQfreeCancel(b->cancels[i]);
    free(b);
}

void crm_dbloop_abort_all(crm_dbloop *L)
{
    if (L == NULL || L->aborted)
        return;
    L->aborted = true;
    cancel_in_flight(L);
    fail_everything(L);
}

void crm_dbloop_free(crm_dbloop *L)
{
    if (L == NULL)
        return;
    fail_everything(L);
    if (L->epfd >= 0)
        close(L->epfd);
    if (L->timerfd >= 0)
        close(L->timerfd);
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
    if (L->aborted)
        return crm_error_set(err, CRM_E_UNAVAILABLE, "the server is shutting down");
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

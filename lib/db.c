/*
 * db.c — a bounded pool of libpq connections with lazy prepared statements.
 *
 * The pool holds at most cfg.pool_size connections. A slot is free or in use;
 * a free slot may hold a live connection or none. Connecting happens outside
 * the pool mutex so a slow connect never blocks other threads from taking a
 * live connection. After a failed connect the pool is "down" for
 * retry_backoff_ms: requests in that window fail at once instead of piling up
 * on connect attempts, and the first request after it tries again. That is
 * how service resumes by itself when the database comes back.
 *
 * An idle connection can die without us noticing (the server restarted). On
 * acquire we poll its socket: anything readable on an idle connection is
 * either EOF or the server's termination notice, so we close and reconnect.
 */
#include "db.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct crm_conn {
    PGconn *pg;
    bool in_use;
    bool broken;
    bool prepared[CRM_DB_MAX_STMTS];
    char sqlstate[6];
};

static struct {
    crm_db_config cfg;
    char *url;
    crm_conn *slots;
    int size;
    int in_use;
    int waiting;
    unsigned long connect_failures;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_int next_stmt_slot = 1;

/* Until when connects are not tried after a failure. Shared by the pool and
 * the event loop, so that whichever reaches the database first ends the
 * fail-fast window for both. */
static atomic_llong down_until_ms;

bool crm_db_in_backoff(void)
{
    return crm_monotonic_ms() < atomic_load(&down_until_ms);
}

void crm_db_note_connect(bool ok, int backoff_ms)
{
    atomic_store(&down_until_ms, ok ? 0 : crm_monotonic_ms() + backoff_ms);
}

bool crm_db_init(const crm_db_config *cfg, crm_error *err)
{
    if (cfg->pool_size < 1)
        return crm_error_set(err, CRM_E_INVALID, "pool size must be at least 1");
    pool.cfg = *cfg;
    pool.url = strdup(cfg->url ? cfg->url : "");
    pool.cfg.url = pool.url;
    pool.size = cfg->pool_size;
    pool.slots = calloc((size_t)pool.size, sizeof *pool.slots);
    if (pool.url == NULL || pool.slots == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory creating the pool");
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool.cv, &attr);
    pthread_condattr_destroy(&attr);
    pool.in_use = pool.waiting = 0;
    pool.connect_failures = 0;
    atomic_store(&down_until_ms, 0);
    return true;
}

void crm_db_shutdown(void)
{
    if (pool.slots == NULL)
        return;
    for (int i = 0; i < pool.size; i++)
        if (pool.slots[i].pg != NULL)
            PQfinish(pool.slots[i].pg);
    free(pool.slots);
    free(pool.url);
    pool.slots = NULL;
    pool.url = NULL;
    pthread_cond_destroy(&pool.cv);
}

/* Server notices (NOTICE: relation already exists, ...) go to the debug log. */
static void log_notice(void *arg, const char *message)
{
    (void)arg;
    crm_log(CRM_LOG_DEBUG, "database notice: %.*s", (int)strcspn(message, "\n"), message);
}

PGconn *crm_db_connect_direct(const crm_db_config *cfg, crm_error *err)
{
    char timeout[16], options[128];
    snprintf(timeout, sizeof timeout, "%d",
             cfg->connect_timeout_s > 0 ? cfg->connect_timeout_s : 2);
    /* JIT compiling costs milliseconds that a request's statement never wins back. */
    snprintf(options, sizeof options,
             "-c statement_timeout=%d -c jit=off -c plan_cache_mode=force_generic_plan "
             "-c DateStyle=ISO,YMD -c TimeZone=UTC",
             cfg->statement_timeout_ms);
    /* Our defaults come before dbname so that values in the URL override them. */
    /* Keepalives bound how long a vanished database host can hold a request. */
    const char *keys[] = {"connect_timeout",
                          "options",
                          "fallback_application_name",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "dbname",
                          NULL};
    const char *vals[] = {timeout, options, "crmd", "10", "3", "3", cfg->url, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (pg == NULL) {
        crm_error_set(err, CRM_E_UNAVAILABLE, "database unavailable");
        return NULL;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(pg));
        msg[strcspn(msg, "\n")] = '\0';
        crm_log(CRM_LOG_WARN, "database connect failed: %s", msg);
        PQfinish(pg);
        crm_error_set(err, CRM_E_UNAVAILABLE, "database unavailable");
        return NULL;
    }
    PQsetNoticeProcessor(pg, log_notice, NULL);
    return pg;
}

/* True when an idle connection is still usable. We never LISTEN, so nothing
 * should arrive on an idle connection: anything readable is EOF or the
 * server's termination notice (57P01 on restart), and the connection goes. */
static bool idle_connection_alive(PGconn *pg)
{
    if (PQstatus(pg) != CONNECTION_OK)
        return false;
    struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, 0);
    while (rc < 0 && errno == EINTR);
    return rc == 0;
}

static void slot_reset(crm_conn *c)
{
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
    c->broken = false;
    memset(c->prepared, 0, sizeof c->prepared);
    c->sqlstate[0] = '\0';
}

/* Picks a free slot, preferring one with a live connection. Called locked. */
static crm_conn *pick_free_slot(void)
{
    crm_conn *empty = NULL;
    for (int i = 0; i < pool.size; i++) {
        crm_conn *c = &pool.slots[i];
        if (c->in_use)
            continue;
        if (c->pg != NULL)
            return c;
        if (empty == NULL)
            empty = c;
    }
    return empty;
}

crm_conn *crm_db_acquire(crm_error *err)
{
    long long deadline = crm_monotonic_ms() + pool.cfg.acquire_timeout_ms;

    pthread_mutex_lock(&pool.mu);
    for (;;) {
        crm_conn *c = pick_free_slot();
        if (c != NULL && c->pg != NULL) {
            c->in_use = true;
            pool.in_use++;
            pthread_mutex_unlock(&pool.mu);
            if (idle_connection_alive(c->pg))
                return c;
            /* Dead while idle: reconnect in place below. */
            slot_reset(c);
            pthread_mutex_lock(&pool.mu);
            c->in_use = false;
            pool.in_use--;
            continue;
        }
        if (c != NULL) {
            if (crm_db_in_backoff()) {
                pthread_mutex_unlock(&pool.mu);
                crm_error_set(err, CRM_E_UNAVAILABLE, "database unavailable");
                return NULL;
            }
            c->in_use = true;
            pool.in_use++;
            pthread_mutex_unlock(&pool.mu);

            crm_error cerr = CRM_ERROR_INIT;
            PGconn *pg = crm_db_connect_direct(&pool.cfg, &cerr);

            pthread_mutex_lock(&pool.mu);
            if (pg != NULL) {
                slot_reset(c);
                c->pg = pg;
                atomic_store(&down_until_ms, 0);
                pthread_mutex_unlock(&pool.mu);
                return c;
            }
            c->in_use = false;
            pool.in_use--;
            pool.connect_failures++;
            crm_db_note_connect(false, pool.cfg.retry_backoff_ms);
            pthread_cond_broadcast(&pool.cv);
            pthread_mutex_unlock(&pool.mu);
            if (err != NULL)
                *err = cerr;
            else
                crm_error_clear(&cerr);
            return NULL;
        }
        /* Every slot is in use: wait for a release, up to the deadline. */
        long long left = deadline - crm_monotonic_ms();
        if (left <= 0) {
            pthread_mutex_unlock(&pool.mu);
            crm_error_set(err, CRM_E_UNAVAILABLE, "all database connections are busy");
            return NULL;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pool.waiting++;
        pthread_cond_timedwait(&pool.cv, &pool.mu, &ts);
        pool.waiting--;
    }
}

void crm_db_release(crm_conn *c)
{
    if (c == NULL)
        return;
    if (c->pg != NULL && (c->broken || PQstatus(c->pg) != CONNECTION_OK ||
                          PQtransactionStatus(c->pg) != PQTRANS_IDLE))
        slot_reset(c);
    pthread_mutex_lock(&pool.mu);
    c->in_use = false;
    pool.in_use--;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

void crm_db_mark_broken(crm_conn *c)
{
    c->broken = true;
}

PGconn *crm_db_pgconn(crm_conn *c)
{
    return c->pg;
}

const char *crm_db_sqlstate(const crm_conn *c)
{
    return c->sqlstate;
}

bool crm_db_result_error(PGconn *conn, const PGresult *res, const char *what, crm_error *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    if (PQstatus(conn) == CONNECTION_OK && state == NULL) {
        crm_log(CRM_LOG_ERROR, "database error during %s: %.300s", what, msg);
        return crm_error_set(err, CRM_E_INTERNAL, "internal error");
    }
    if (PQstatus(conn) != CONNECTION_OK || state == NULL || strncmp(state, "08", 2) == 0 ||
        strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0 ||
        strncmp(state, "53", 2) == 0) {
        crm_log(CRM_LOG_WARN, "database unavailable during %s: %.200s", what, msg);
        return crm_error_set(err, CRM_E_UNAVAILABLE, "database unavailable");
    }
    if (strcmp(state, "23505") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return crm_error_set(err, CRM_E_CONFLICT, "conflicting concurrent change");
    if (strcmp(state, "57014") == 0) {
        crm_log(CRM_LOG_WARN, "statement timeout during %s", what);
        return crm_error_set(err, CRM_E_UNAVAILABLE, "database statement timed out");
    }
    crm_log(CRM_LOG_ERROR, "database error %s during %s: %.300s", state, what, msg);
    return crm_error_set(err, CRM_E_INTERNAL, "internal error");
}

int crm_db_stmt_slot(crm_stmt *stmt)
{
    int slot = atomic_load(&stmt->slot);
    if (slot != 0)
        return slot;
    int fresh = atomic_fetch_add(&next_stmt_slot, 1);
    if (fresh >= CRM_DB_MAX_STMTS) {
        crm_log(CRM_LOG_ERROR, "too many prepared statements; raise CRM_DB_MAX_STMTS");
        abort();
    }
    int expected = 0;
    if (atomic_compare_exchange_strong(&stmt->slot, &expected, fresh))
        return fresh;
    return expected; /* another thread won; the fresh number is simply unused */
}

/* Statements whose SQL is assembled at run time (a list with its filters),
 * one per distinct text, kept for the life of the process: there are few
 * shapes, and each connection prepares a shape once. */
#define DYNAMIC_STMTS_MAX 256

static struct {
    pthread_mutex_t lock;
    int count;
    struct {
        unsigned long long hash;
        crm_stmt *stmt;
    } entries[DYNAMIC_STMTS_MAX];
} dynamic = {.lock = PTHREAD_MUTEX_INITIALIZER};

static unsigned long long fnv1a(const char *s)
{
    unsigned long long h = 14695981039346656037ULL;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

crm_stmt *crm_db_stmt_for_sql(const char *sql, bool read_only, bool page)
{
    unsigned long long hash = fnv1a(sql);
    crm_stmt *found = NULL;
    pthread_mutex_lock(&dynamic.lock);
    for (int i = 0; i < dynamic.count && found == NULL; i++)
        if (dynamic.entries[i].hash == hash && strcmp(dynamic.entries[i].stmt->sql, sql) == 0 &&
            dynamic.entries[i].stmt->read_only == read_only &&
            dynamic.entries[i].stmt->page == page)
            found = dynamic.entries[i].stmt;
    if (found == NULL && dynamic.count < DYNAMIC_STMTS_MAX) {
        crm_stmt *st = calloc(1, sizeof *st);
        char *name = malloc(32), *text = strdup(sql);
        if (st != NULL && name != NULL && text != NULL) {
            snprintf(name, 32, "dynamic_%d", dynamic.count);
            st->name = name;
            st->sql = text;
            st->read_only = read_only;
            st->page = page;
            dynamic.entries[dynamic.count].hash = hash;
            dynamic.entries[dynamic.count].stmt = st;
            dynamic.count++;
            found = st;
        } else {
            free(st);
            free(name);
            free(text);
        }
    }
    pthread_mutex_unlock(&dynamic.lock);
    return found;
}

static bool fail_result(crm_conn *c, PGresult *res, const char *what, crm_error *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
    crm_db_result_error(c->pg, res, what, err);
    if (PQstatus(c->pg) != CONNECTION_OK)
        c->broken = true;
    PQclear(res);
    return false;
}

PGresult *crm_db_exec(crm_conn *c, crm_stmt *stmt, int nparams, const char *const *values,
                      crm_error *err)
{
    if (stmt->name == NULL)
        return crm_db_exec_sql(c, stmt->sql, nparams, values, err);
    int slot = crm_db_stmt_slot(stmt);
    c->sqlstate[0] = '\0';
    if (!c->prepared[slot]) {
        PGresult *res = PQprepare(c->pg, stmt->name, stmt->sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fail_result(c, res, stmt->name, err);
            return NULL;
        }
        PQclear(res);
        c->prepared[slot] = true;
    }
    PGresult *res = PQexecPrepared(c->pg, stmt->name, nparams, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fail_result(c, res, stmt->name, err);
        return NULL;
    }
    return res;
}

PGresult *crm_db_exec_sql(crm_conn *c, const char *sql, int nparams, const char *const *values,
                          crm_error *err)
{
    c->sqlstate[0] = '\0';
    PGresult *res = PQexecParams(c->pg, sql, nparams, NULL, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fail_result(c, res, "ad-hoc statement", err);
        return NULL;
    }
    return res;
}

PGresult *crm_db_run(crm_stmt *stmt, int nparams, const char *const *values, crm_error *err)
{
    for (int attempt = 0;; attempt++) {
        crm_conn *c = crm_db_acquire(err);
        if (c == NULL)
            return NULL;
        PGresult *res = crm_db_exec(c, stmt, nparams, values, err);
        bool lost = res == NULL && c->broken;
        crm_db_release(c);
        if (res != NULL || !lost || !stmt->read_only || attempt > 0)
            return res;
        crm_error_clear(err);
    }
}

void crm_query_init(crm_query *q, crm_stmt *stmt)
{
    q->stmt = stmt;
    q->nparams = 0;
    q->failed = false;
    q->buf_used = 0;
}

/* Marks q unusable, once logged: a statement with a parameter missing must
 * never run (its placeholders would bind the wrong values). */
static bool query_overflow(crm_query *q, const char *what)
{
    if (!q->failed)
        crm_log(CRM_LOG_ERROR, "%s for %s", what,
                q->stmt && q->stmt->name ? q->stmt->name : "a run-time statement");
    q->failed = true;
    return false;
}

bool crm_query_add(crm_query *q, const char *value)
{
    if (q->failed || q->nparams == CRM_QUERY_MAX_PARAMS)
        return query_overflow(q, "too many parameters");
    q->values[q->nparams++] = value;
    return true;
}

bool crm_query_add_int(crm_query *q, long long value)
{
    char *dst = q->buf + q->buf_used;
    int n = snprintf(dst, sizeof q->buf - q->buf_used, "%lld", value);
    if (n < 0 || (size_t)n >= sizeof q->buf - q->buf_used)
        return query_overflow(q, "query buffer full");
    q->buf_used += (size_t)n + 1;
    return crm_query_add(q, dst);
}

PGresult *crm_db_run_query(const crm_query *q, crm_error *err)
{
    if (q->failed) {
        crm_error_set(err, CRM_E_INTERNAL, "a statement's parameters did not fit");
        return NULL;
    }
    return crm_db_run(q->stmt, q->nparams, q->values, err);
}

/* Checks the result of a transaction-control command. */
static bool command_done(crm_conn *c, PGresult *res, const char *what, crm_error *err)
{
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail_result(c, res, what, err);
    PQclear(res);
    return true;
}

bool crm_db_command(crm_conn *c, const char *sql, crm_error *err)
{
    c->sqlstate[0] = '\0';
    return command_done(c, PQexecParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0), sql, err);
}

bool crm_db_begin(crm_conn *c, crm_error *err)
{
    return crm_db_command(c, "BEGIN", err);
}

bool crm_db_commit(crm_conn *c, crm_error *err)
{
    return crm_db_command(c, "COMMIT", err);
}

bool crm_db_copy_in(crm_conn *c, const char *sql, const char *data, size_t len, crm_error *err)
{
    c->sqlstate[0] = '\0';
    PGresult *res = PQexecParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        return fail_result(c, res, "COPY", err);
    PQclear(res);
    /* In pieces: one call with the whole batch would make libpq copy it
     * into its output buffer first. */
    const size_t piece = 256 * 1024;
    for (size_t at = 0; at < len; at += piece) {
        size_t n = len - at < piece ? len - at : piece;
        if (PQputCopyData(c->pg, data + at, (int)n) != 1) {
            c->broken = true;
            return fail_result(c, NULL, "COPY", err);
        }
    }
    if (PQputCopyEnd(c->pg, NULL) != 1) {
        c->broken = true;
        return fail_result(c, NULL, "COPY", err);
    }
    res = PQgetResult(c->pg);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fail_result(c, res, "COPY", err);
    else
        PQclear(res);
    while ((res = PQgetResult(c->pg)) != NULL) /* the end of the command */
        PQclear(res);
    return ok;
}

void crm_db_rollback(crm_conn *c)
{
    if (c->pg != NULL && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        crm_error ignored = CRM_ERROR_INIT;
        if (!command_done(c, PQexec(c->pg, "ROLLBACK"), "ROLLBACK", &ignored))
            c->broken = true;
        crm_error_clear(&ignored);
    }
}

crm_db_stats crm_db_get_stats(void)
{
    crm_db_stats s = {0};
    pthread_mutex_lock(&pool.mu);
    s.size = pool.size;
    s.in_use = pool.in_use;
    s.waiting = pool.waiting;
    s.connect_failures = pool.connect_failures;
    for (int i = 0; i < pool.size; i++)
        if (pool.slots[i].pg != NULL)
            s.connected++;
    pthread_mutex_unlock(&pool.mu);
    return s;
}

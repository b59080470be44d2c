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

#include <assert.h>
#include <ctype.h>
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
    bool private_conn; /* from crm_db_open_private: not a slot of the pool */
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
    /* Slots holding a connection. Atomic: the thread that holds a slot
     * closes or opens its connection outside mu. */
    atomic_int connected;
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
    atomic_store(&pool.connected, 0);
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
    atomic_store(&pool.connected, 0);
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

/* The connection parameters every crmd connection uses; keys and vals get
 * CONNECT_PARAMS entries (NULL-terminated) that point into bufs. */
#define CONNECT_PARAMS 8

typedef struct connect_bufs {
    char timeout[16], options[256];
} connect_bufs;

static void connect_params(const crm_db_config *cfg, connect_bufs *b, const char **keys,
                           const char **vals)
{
    snprintf(b->timeout, sizeof b->timeout, "%d",
             cfg->connect_timeout_s > 0 ? cfg->connect_timeout_s : 2);
    /* JIT compiling costs milliseconds that a request's statement never wins back.
     * A session of ours idle inside a transaction is a bug (crmd never waits
     * for a client inside one), and it would hold back both sync feeds and
     * vacuum: PostgreSQL ends it after a minute. */
    int n = snprintf(b->options, sizeof b->options,
                     "-c statement_timeout=%d -c jit=off -c plan_cache_mode=force_generic_plan "
                     "-c DateStyle=ISO,YMD -c TimeZone=UTC "
                     "-c idle_in_transaction_session_timeout=60000",
                     cfg->statement_timeout_ms);
    assert(n > 0 && (size_t)n < sizeof b->options);
    (void)n;
    /* Our defaults come before dbname so that values in the URL override them. */
    /* Keepalives bound how long a vanished database host can hold a request. */
    static const char *const names[CONNECT_PARAMS] = {"connect_timeout",
                                                      "options",
                                                      "fallback_application_name",
                                                      "keepalives_idle",
                                                      "keepalives_interval",
                                                      "keepalives_count",
                                                      "dbname",
                                                      NULL};
    const char *values[CONNECT_PARAMS] = {b->timeout, b->options, "crmd",   "10",
                                          "3",        "3",        cfg->url, NULL};
    memcpy(keys, names, sizeof names);
    memcpy(vals, values, sizeof values);
}

void crm_db_log_connect_failure(PGconn *pg)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s", pg != NULL ? PQerrorMessage(pg) : "out of memory");
    msg[strcspn(msg, "\n")] = '\0';
    crm_log(CRM_LOG_WARN, "database connect failed: %s", msg);
}

PGconn *crm_db_connect_direct(const crm_db_config *cfg, crm_error *err)
{
    connect_bufs bufs;
    const char *keys[CONNECT_PARAMS], *vals[CONNECT_PARAMS];
    connect_params(cfg, &bufs, keys, vals);
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        crm_db_log_connect_failure(pg);
        PQfinish(pg);
        crm_error_set(err, CRM_E_UNAVAILABLE, "database unavailable");
        return NULL;
    }
    PQsetNoticeProcessor(pg, log_notice, NULL);
    return pg;
}

/* The connect_timeout in effect for pg (the URL's, else ours), in seconds. */
static int effective_connect_timeout_s(PGconn *pg, const crm_db_config *cfg)
{
    int seconds = cfg->connect_timeout_s > 0 ? cfg->connect_timeout_s : 2;
    PQconninfoOption *opts = PQconninfo(pg);
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val != NULL && atoi(o->val) > 0)
            seconds = atoi(o->val);
    PQconninfoFree(opts);
    return seconds;
}

PGconn *crm_db_connect_start(const crm_db_config *cfg, int *timeout_s)
{
    connect_bufs bufs;
    const char *keys[CONNECT_PARAMS], *vals[CONNECT_PARAMS];
    connect_params(cfg, &bufs, keys, vals);
    PGconn *pg = PQconnectStartParams(keys, vals, 1);
    if (pg == NULL || PQstatus(pg) == CONNECTION_BAD) {
        crm_db_log_connect_failure(pg);
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, log_notice, NULL);
    *timeout_s = effective_connect_timeout_s(pg, cfg);
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
    if (c->pg != NULL) {
        PQfinish(c->pg);
        atomic_fetch_sub(&pool.connected, 1);
    }
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
                atomic_fetch_add(&pool.connected, 1);
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
            crm_error_move(err, &cerr);
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
    if (c->private_conn) { /* not the pool's: closing it is all release can do */
        crm_db_close_private(c);
        return;
    }
    if (c->pg != NULL && (c->broken || PQstatus(c->pg) != CONNECTION_OK ||
                          PQtransactionStatus(c->pg) != PQTRANS_IDLE))
        slot_reset(c);
    pthread_mutex_lock(&pool.mu);
    c->in_use = false;
    pool.in_use--;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

crm_conn *crm_db_open_private(const crm_db_config *cfg, crm_error *err)
{
    crm_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory opening a connection");
        return NULL;
    }
    c->pg = crm_db_connect_direct(cfg, err);
    if (c->pg == NULL) {
        free(c);
        return NULL;
    }
    c->private_conn = true;
    c->in_use = true;
    return c;
}

void crm_db_close_private(crm_conn *c)
{
    if (c == NULL)
        return;
    PQfinish(c->pg);
    free(c);
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

/* A field of a failed result, or "-". */
static const char *diag(const PGresult *res, int field)
{
    const char *v = PQresultErrorField(res, field);
    return v != NULL && v[0] != '\0' ? v : "-";
}

/* Logs a failed statement. A result from the server is logged by its
 * fields, never by its text: the DETAIL ("Failing row contains (...)",
 * "Key (email)=(...)") and even the primary message can quote the values of
 * a row, personal data that must not reach the log. The SQLSTATE, the
 * schema object (constraint, table, column) and the server routine that
 * raised the error say what went wrong without them. Without a result,
 * libpq's own message (a lost connection: no row data) is logged. */
static void log_failure(crm_log_level level, PGconn *conn, const PGresult *res, const char *what)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state != NULL) {
        crm_log(level,
                "database error %s during %s (constraint %s, table %s, column %s, routine %s)",
                state, what, diag(res, PG_DIAG_CONSTRAINT_NAME), diag(res, PG_DIAG_TABLE_NAME),
                diag(res, PG_DIAG_COLUMN_NAME), diag(res, PG_DIAG_SOURCE_FUNCTION));
        return;
    }
    const char *msg = res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    crm_log(level, "database error during %s: %.*s", what, (int)strcspn(msg, "\n"), msg);
}

/* crm_db_result_error, logging expected_state (a SQLSTATE the caller
 * handles as an ordinary outcome, or NULL) at debug level only. */
static bool result_error(PGconn *conn, const PGresult *res, const char *what,
                         const char *expected_state, crm_error *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(conn) == CONNECTION_OK && state == NULL) {
        log_failure(CRM_LOG_ERROR, conn, res, what);
        return crm_error_set(err, CRM_E_INTERNAL, "internal error");
    }
    if (PQstatus(conn) != CONNECTION_OK || state == NULL || strncmp(state, "08", 2) == 0 ||
        strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0 ||
        strncmp(state, "53", 2) == 0) {
        log_failure(CRM_LOG_WARN, conn, res, what);
        return crm_error_set(err, CRM_E_UNAVAILABLE, "database unavailable");
    }
    if (strcmp(state, "23505") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        log_failure(CRM_LOG_DEBUG, conn, res, what);
        return crm_error_set(err, CRM_E_CONFLICT, "conflicting concurrent change");
    }
    if (strcmp(state, "57014") == 0) {
        crm_log(CRM_LOG_WARN, "statement timeout during %s", what);
        return crm_error_set(err, CRM_E_UNAVAILABLE, "database statement timed out");
    }
    bool expected = expected_state != NULL && strcmp(state, expected_state) == 0;
    log_failure(expected ? CRM_LOG_DEBUG : CRM_LOG_ERROR, conn, res, what);
    return crm_error_set(err, CRM_E_INTERNAL, "internal error");
}

bool crm_db_result_error(PGconn *conn, const PGresult *res, const char *what, crm_error *err)
{
    return result_error(conn, res, what, NULL, err);
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

/* Records and maps a failed result on c (see result_error) and frees it. */
static bool fail_result_expecting(crm_conn *c, PGresult *res, const char *what,
                                  const char *expected_state, crm_error *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
    result_error(c->pg, res, what, expected_state, err);
    if (PQstatus(c->pg) != CONNECTION_OK)
        c->broken = true;
    PQclear(res);
    return false;
}

static bool fail_result(crm_conn *c, PGresult *res, const char *what, crm_error *err)
{
    return fail_result_expecting(c, res, what, NULL, err);
}

/* Prepares stmt on c unless it already is; false with err set. */
static bool ensure_prepared(crm_conn *c, crm_stmt *stmt, crm_error *err)
{
    int slot = crm_db_stmt_slot(stmt);
    if (c->prepared[slot])
        return true;
    PGresult *res = PQprepare(c->pg, stmt->name, stmt->sql, 0, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail_result(c, res, stmt->name, err);
    PQclear(res);
    c->prepared[slot] = true;
    return true;
}

PGresult *crm_db_exec(crm_conn *c, crm_stmt *stmt, int nparams, const char *const *values,
                      crm_error *err)
{
    if (stmt->name == NULL)
        return crm_db_exec_sql(c, stmt->sql, nparams, values, err);
    c->sqlstate[0] = '\0';
    if (!ensure_prepared(c, stmt, err))
        return NULL;
    PGresult *res = PQexecPrepared(c->pg, stmt->name, nparams, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fail_result(c, res, stmt->name, err);
        return NULL;
    }
    return res;
}

bool crm_db_each_row(crm_conn *c, crm_stmt *stmt, int nparams, const char *const *values,
                     crm_db_row_fn fn, void *ctx, crm_error *err)
{
    c->sqlstate[0] = '\0';
    if (!ensure_prepared(c, stmt, err))
        return false;
    if (!PQsendQueryPrepared(c->pg, stmt->name, nparams, values, NULL, NULL, 0))
        return fail_result(c, NULL, stmt->name, err);
    /* Every result is read, to the end, even after fn or the statement
     * failed: the connection is then ready for the next statement. */
    bool ok = true, fn_ok = true;
    if (!PQsetSingleRowMode(c->pg)) /* cannot happen right after the send */
        fn_ok = crm_error_set(err, CRM_E_INTERNAL, "internal error");
    PGresult *res;
    while ((res = PQgetResult(c->pg)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE) {
            if (fn_ok && ok)
                fn_ok = fn(res, ctx, err);
            PQclear(res);
        } else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            PQclear(res);
        } else if (ok) {
            ok = fail_result(c, res, stmt->name, err);
        } else {
            PQclear(res);
        }
    }
    if (PQstatus(c->pg) != CONNECTION_OK)
        c->broken = true;
    return ok && fn_ok;
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

/* A snapshot id as pg_export_snapshot() prints it: 0000000A-0000001B-1. */
static bool snapshot_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)id[i]) && id[i] != '-')
            return false;
    return true;
}

bool crm_db_begin_snapshot(crm_conn *c, const char *snapshot_id, crm_error *err)
{
    if (snapshot_id == NULL || !snapshot_id_valid(snapshot_id))
        return crm_error_set(err, CRM_E_INTERNAL, "not a snapshot id of PostgreSQL's");
    char sql[96];
    snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT '%s'", snapshot_id);
    if (!crm_db_command(c, "BEGIN ISOLATION LEVEL REPEATABLE READ", err))
        return false;
    if (crm_db_command(c, sql, err))
        return true;
    crm_db_rollback(c);
    return false;
}

bool crm_db_commit(crm_conn *c, crm_error *err)
{
    return crm_db_command(c, "COMMIT", err);
}

bool crm_db_copy_begin(crm_conn *c, const char *sql, crm_error *err)
{
    c->sqlstate[0] = '\0';
    PGresult *res = PQexecParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        return fail_result(c, res, "COPY", err);
    PQclear(res);
    return true;
}

bool crm_db_copy_put(crm_conn *c, const char *data, size_t len, crm_error *err)
{
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
    return true;
}

/* Ends the COPY; a failure with expected_state (may be NULL) is logged as
 * expected. */
static bool copy_end_expecting(crm_conn *c, const char *abort_reason, const char *expected_state,
                               crm_error *err)
{
    if (PQputCopyEnd(c->pg, abort_reason) != 1) {
        c->broken = true;
        return fail_result(c, NULL, "COPY", err);
    }
    PGresult *res = PQgetResult(c->pg);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fail_result_expecting(c, res, "COPY", expected_state, err);
    else
        PQclear(res);
    while ((res = PQgetResult(c->pg)) != NULL) /* the end of the command */
        PQclear(res);
    return ok && abort_reason == NULL;
}

bool crm_db_copy_end(crm_conn *c, const char *abort_reason, crm_error *err)
{
    return copy_end_expecting(c, abort_reason, NULL, err);
}

bool crm_db_copy_in(crm_conn *c, const char *sql, const char *data, size_t len, crm_error *err)
{
    /* An unknown customer id refuses a COPY: callers fall back
     * (touchpoints/store.c), so that failure is expected. */
    return crm_db_copy_begin(c, sql, err) && crm_db_copy_put(c, data, len, err) &&
           copy_end_expecting(c, NULL, "23503", err);
}

bool crm_db_copy_out(crm_conn *c, const char *sql, crm_db_line_fn fn, void *ctx, crm_error *err)
{
    c->sqlstate[0] = '\0';
    PGresult *res = PQexecParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COPY_OUT)
        return fail_result(c, res, "COPY", err);
    PQclear(res);
    /* Every line is read, to the end, even after fn failed: the connection
     * is then ready for the next statement. */
    bool fn_ok = true;
    char *line;
    int n;
    while ((n = PQgetCopyData(c->pg, &line, 0)) > 0) {
        if (fn_ok)
            fn_ok = fn(line, (size_t)n, ctx, err);
        PQfreemem(line);
    }
    if (n == -2) {
        c->broken = true;
        return fail_result(c, NULL, "COPY", err);
    }
    bool ok = true;
    while ((res = PQgetResult(c->pg)) != NULL) {
        if (ok && PQresultStatus(res) != PGRES_COMMAND_OK)
            ok = fail_result(c, res, "COPY", err);
        else
            PQclear(res);
    }
    return ok && fn_ok;
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
    pthread_mutex_unlock(&pool.mu);
    s.connected = atomic_load(&pool.connected);
    return s;
}

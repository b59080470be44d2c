/*
 * support.c — helpers shared by the unit suites (see support.h).
 */
#include "support.h"
#include "db.h"
#include "embedded.h"
#include "jobs.h"
#include "migrate.h"

#include <check.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *unit_env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v != NULL && v[0] != '\0', "%s must be set (see tests/CMakeLists.txt)", name);
    return v;
}

/* Appends key='value' to buf with libpq's quoting (backslash before ' and \). */
static void append_option(char *buf, size_t size, const char *key, const char *value)
{
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, size - n, "%s%s='", n > 0 ? " " : "", key);
    for (const char *p = value; *p != '\0' && n + 3 < size; p++) {
        if (*p == '\'' || *p == '\\')
            buf[n++] = '\\';
        buf[n++] = *p;
    }
    snprintf(buf + n, size - n, "'");
}

char *unit_conninfo_with_dbname(const char *conninfo, const char *dbname)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    ck_assert_msg(opts != NULL, "cannot parse conninfo: %s", errmsg ? errmsg : "out of memory");
    size_t size = strlen(conninfo) * 2 + strlen(dbname) * 2 + 64;
    char *out = calloc(1, size);
    ck_assert_ptr_nonnull(out);
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (o->val != NULL && strcmp(o->keyword, "dbname") != 0)
            append_option(out, size, o->keyword, o->val);
    append_option(out, size, "dbname", dbname);
    PQconninfoFree(opts);
    return out;
}

/* Server notices ("relation already exists, skipping") are expected here. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *unit_connect(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    ck_assert_ptr_nonnull(conn);
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn));
        PQfinish(conn);
        ck_abort_msg("cannot connect to %s: %s", conninfo, msg);
    }
    PQsetNoticeProcessor(conn, ignore_notice, NULL);
    return conn;
}

PGresult *unit_sql(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
        PQclear(res);
        ck_abort_msg("%s failed: %s", sql, msg);
    }
    return res;
}

long unit_sql_long(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = unit_sql(conn, sql, nparams, params);
    if (PQntuples(res) < 1) {
        PQclear(res);
        ck_abort_msg("%s returned no row", sql);
    }
    long v = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

bool unit_has_field_error(const crm_error *err, const char *field)
{
    size_t i;
    json_t *entry;
    json_array_foreach(err->errors, i, entry)
    {
        const char *f = json_string_value(json_object_get(entry, "field"));
        if (f != NULL && strcmp(f, field) == 0)
            return true;
    }
    return false;
}

long long unit_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void unit_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

PGconn *unit_db_start(int pool_size)
{
    crm_db_config cfg = {
        .url = unit_env("CRMD_TEST_DATABASE_URL"),
        .pool_size = pool_size,
        .acquire_timeout_ms = 5000,
        .connect_timeout_s = 2,
        .statement_timeout_ms = 10000,
        .retry_backoff_ms = 500,
    };
    crm_error err = CRM_ERROR_INIT;
    PGconn *conn = crm_db_connect_direct(&cfg, &err);
    ck_assert_msg(conn != NULL, "connect: %s", err.detail);
    bool ok = crm_migrate_apply(conn, crm_migration_files, crm_migration_files_count, NULL, &err);
    PQfinish(conn);
    ck_assert_msg(ok, "migrate: %s", err.detail);
    ck_assert_msg(crm_db_init(&cfg, &err), "crm_db_init: %s", err.detail);
    return unit_connect(cfg.url);
}

void unit_db_stop(PGconn *direct)
{
    PQfinish(direct);
    crm_db_shutdown();
}

void unit_unique(char *buf, size_t size, const char *what)
{
    static unsigned serial;
    snprintf(buf, size, "%s%ld%u%08x", what, (long)getpid(), serial++, randombytes_random());
}

void unit_assert_index_condition(PGconn *conn, const crm_query *q, const char *needle)
{
    PQclear(unit_sql(conn, "SET plan_cache_mode = force_generic_plan", 0, NULL));
    PQclear(unit_sql(conn, "SET enable_seqscan = off", 0, NULL));
    PQclear(unit_sql(conn, "SET enable_bitmapscan = off", 0, NULL));
    PGresult *res = PQprepare(conn, "unit_explained", q->stmt->sql, 0, NULL);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "prepare: %s", PQerrorMessage(conn));
    PQclear(res);
    /* EXPLAIN EXECUTE with the values as literals: the generic plan shows. */
    char sql[4096];
    size_t n = (size_t)snprintf(sql, sizeof sql, "EXPLAIN EXECUTE unit_explained(");
    for (int i = 0; i < q->nparams; i++) {
        char *lit = q->values[i] ? PQescapeLiteral(conn, q->values[i], strlen(q->values[i])) : NULL;
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%s%s", i ? ", " : "", lit ? lit : "NULL");
        PQfreemem(lit);
        ck_assert_uint_lt(n, sizeof sql - 2);
    }
    snprintf(sql + n, sizeof sql - n, ")");
    res = unit_sql(conn, sql, 0, NULL);
    bool in_index_cond = false;
    char plan[8192] = "";
    size_t used = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *line = PQgetvalue(res, r, 0);
        size_t len = strlen(line);
        if (used + len + 2 < sizeof plan) {
            memcpy(plan + used, line, len);
            used += len;
            plan[used++] = '\n';
            plan[used] = '\0';
        }
        if (strstr(line, needle) == NULL)
            continue;
        ck_assert_msg(strstr(line, "Filter:") == NULL, "a filter, not an index bound: %s", line);
        in_index_cond |= strstr(line, "Index Cond:") != NULL;
    }
    PQclear(res);
    ck_assert_msg(in_index_cond, "no Index Cond holds %s in the plan:\n%s", needle, plan);
    PQclear(unit_sql(conn, "DEALLOCATE unit_explained", 0, NULL));
    PQclear(unit_sql(conn, "RESET enable_bitmapscan", 0, NULL));
    PQclear(unit_sql(conn, "RESET enable_seqscan", 0, NULL));
    PQclear(unit_sql(conn, "RESET plan_cache_mode", 0, NULL));
}

/* Runs verb followed by the database's name, and then tail, as the admin. */
static void admin_sql(const char *verb, const char *name, const char *tail)
{
    PGconn *admin = unit_connect(unit_env("CRMD_TEST_ADMIN_URL"));
    char sql[160];
    snprintf(sql, sizeof sql, "%s%s%s", verb, name, tail);
    PQclear(unit_sql(admin, sql, 0, NULL));
    PQfinish(admin);
}

void unit_own_db_start(unit_own_db *o, const char *prefix)
{
    unsigned char r[4];
    randombytes_buf(r, sizeof r);
    snprintf(o->name, sizeof o->name, "%s_%ld_%02x%02x%02x%02x", prefix, (long)getpid(), r[0],
             r[1], r[2], r[3]);
    admin_sql("CREATE DATABASE ", o->name, "");
    o->conninfo = unit_conninfo_with_dbname(unit_env("CRMD_TEST_ADMIN_URL"), o->name);
    crm_db_config cfg = {.url = o->conninfo,
                         .pool_size = 3,
                         .acquire_timeout_ms = 5000,
                         .connect_timeout_s = 2,
                         .statement_timeout_ms = 60000,
                         .retry_backoff_ms = 500};
    crm_error err = CRM_ERROR_INIT;
    PGconn *conn = crm_db_connect_direct(&cfg, &err);
    ck_assert_msg(conn != NULL, "connect: %s", err.detail);
    bool ok = crm_migrate_apply(conn, crm_migration_files, crm_migration_files_count, NULL, &err);
    PQfinish(conn);
    ck_assert_msg(ok, "migrate: %s", err.detail);
    ck_assert_msg(crm_db_init(&cfg, &err), "crm_db_init: %s", err.detail);
    o->db = unit_connect(o->conninfo);
}

void unit_own_db_stop(unit_own_db *o)
{
    crm_db_shutdown();
    if (o->db != NULL)
        PQfinish(o->db);
    o->db = NULL;
    free(o->conninfo);
    o->conninfo = NULL;
    admin_sql("DROP DATABASE IF EXISTS ", o->name, " WITH (FORCE)");
}

json_t *unit_run_queued_job(json_t *queued, const char *conninfo)
{
    long long id = json_integer_value(json_object_get(queued, "id"));
    json_decref(queued);
    crm_jobs_config cfg = {.db = {.url = conninfo, .pool_size = 1, .connect_timeout_s = 2},
                           .lease_s = 30,
                           .worker = "unit"};
    crm_error err = CRM_ERROR_INIT;
    long long ran = 0;
    ck_assert_msg(crm_jobs_run_one(&cfg, &ran, &err), "run: %s", err.detail);
    ck_assert_int_eq(ran, id);
    unsigned scope = 0;
    json_t *job = crm_job_get(id, &scope, &err);
    ck_assert_msg(job != NULL, "get: %s", err.detail);
    char *error = json_dumps(json_object_get(job, "error"), JSON_ENCODE_ANY);
    ck_assert_msg(strcmp(json_string_value(json_object_get(job, "state")), "succeeded") == 0,
                  "job %lld ended %s: %s", id, json_string_value(json_object_get(job, "state")),
                  error);
    free(error);
    return job;
}

/*
 * test_db.c — the connection pool and prepared statements (lib/db.h)
 * against a real PostgreSQL: exhaustion, dead connections, an unreachable
 * server, and how database errors map to crm_error codes.
 *
 * crm_db_init/crm_db_shutdown manage one process-wide pool: each test
 * starts it with the settings it needs and the fixture shuts it down.
 */
#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "suites.h"
#include "support.h"

#include <unistd.h>

#define UNREACHABLE_URL "host=/nonexistent dbname=x"

static crm_stmt select_echo =
    CRM_STMT_RO("unit_db_select_echo", "SELECT 1, $1::text, generate_series(1, 3)");
static crm_stmt select_is_null = CRM_STMT_RO("unit_db_select_is_null", "SELECT $1::text IS NULL");
static crm_stmt select_backend_pid = CRM_STMT_RO("unit_db_backend_pid", "SELECT pg_backend_pid()");
static crm_stmt insert_unique =
    CRM_STMT("unit_db_insert_unique", "INSERT INTO unit_db_unique (k) VALUES ($1::int)");
static crm_stmt select_missing_table =
    CRM_STMT_RO("unit_db_select_missing", "SELECT * FROM unit_db_no_such_table");
static crm_stmt select_sleep = CRM_STMT_RO("unit_db_select_sleep", "SELECT pg_sleep(2)");
static crm_stmt select_division_by_zero =
    CRM_STMT_RO("unit_db_division_by_zero", "SELECT 1 / $1::int");
/* Rows 1 to $1, then, when $2 is 0, a division by zero on row $1 + 1. */
static crm_stmt select_rows_then_fail = CRM_STMT_RO(
    "unit_db_rows_then_fail",
    "SELECT n, CASE WHEN n > $1::int THEN 1 / $2::int END FROM generate_series(1, $1::int + 1) n");

static void teardown(void)
{
    crm_db_shutdown();
}

/* Starts the pool on url with the given limits; fails the test otherwise. */
static void start_pool(const char *url, int pool_size, int acquire_timeout_ms, int retry_backoff_ms)
{
    crm_db_config cfg = {
        .url = url,
        .pool_size = pool_size,
        .acquire_timeout_ms = acquire_timeout_ms,
        .connect_timeout_s = 2,
        .statement_timeout_ms = 5000,
        .retry_backoff_ms = retry_backoff_ms,
    };
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_db_init(&cfg, &err), "crm_db_init: %s", err.detail);
}

static void start_test_pool(int pool_size)
{
    start_pool(unit_env("CRMD_TEST_DATABASE_URL"), pool_size, 2000, 1000);
}

/* Acquires a connection or fails the test. */
static crm_conn *acquire(void)
{
    crm_error err = CRM_ERROR_INIT;
    crm_conn *c = crm_db_acquire(&err);
    ck_assert_msg(c != NULL, "acquire: %s", err.detail);
    return c;
}

/* The backend process id behind c. */
static long backend_pid(crm_conn *c)
{
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_exec(c, &select_backend_pid, 0, NULL, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    long pid = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return pid;
}

/* Terminates backend pid from a separate connection and waits until it is gone. */
static void terminate_backend(long pid)
{
    PGconn *killer = unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));
    char pidbuf[24];
    snprintf(pidbuf, sizeof pidbuf, "%ld", pid);
    const char *params[] = {pidbuf};
    /* With a timeout, pg_terminate_backend waits for the process to exit. */
    long ok = unit_sql_long(killer, "SELECT pg_terminate_backend($1::int, 5000)::int", 1, params);
    PQfinish(killer);
    ck_assert_int_eq(ok, 1);
}

/* ---- configuration -------------------------------------------------- */

START_TEST(test_init_rejects_empty_pool)
{
    crm_db_config cfg = {.url = "dbname=x", .pool_size = 0, .acquire_timeout_ms = 100};
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_db_init(&cfg, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
}
END_TEST

START_TEST(test_init_does_not_connect)
{
    start_pool(UNREACHABLE_URL, 2, 100, 1000);
    crm_db_stats s = crm_db_get_stats();
    ck_assert_int_eq(s.size, 2);
    ck_assert_int_eq(s.connected, 0);
}
END_TEST

START_TEST(test_init_copies_the_url)
{
    char *url = strdup(unit_env("CRMD_TEST_DATABASE_URL"));
    start_pool(url, 1, 1000, 1000);
    memset(url, 'x', strlen(url));
    free(url);
    crm_db_release(acquire());
}
END_TEST

/* ---- statements ----------------------------------------------------- */

START_TEST(test_exec_prepared_statement_returns_rows)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    crm_error err = CRM_ERROR_INIT;
    const char *params[] = {"hello"};
    PGresult *res = crm_db_exec(c, &select_echo, 1, params, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    ck_assert_int_eq(PQntuples(res), 3);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "hello");
    ck_assert_str_eq(PQgetvalue(res, 2, 2), "3");
    PQclear(res);
    crm_db_release(c);
}
END_TEST

START_TEST(test_null_parameter_is_sql_null)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    crm_error err = CRM_ERROR_INIT;
    const char *params[] = {NULL};
    PGresult *res = crm_db_exec(c, &select_is_null, 1, params, &err);
    ck_assert_ptr_nonnull(res);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    crm_db_release(c);
}
END_TEST

START_TEST(test_statement_runs_twice_on_one_connection_prepared_once)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    crm_error err = CRM_ERROR_INIT;
    const char *first[] = {"one"}, *second[] = {"two"};
    PGresult *res = crm_db_exec(c, &select_echo, 1, first, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    PQclear(res);
    res = crm_db_exec(c, &select_echo, 1, second, &err);
    ck_assert_msg(res != NULL, "second run: %s", err.detail);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "two");
    PQclear(res);

    const char *name[] = {select_echo.name};
    ck_assert_int_eq(unit_sql_long(crm_db_pgconn(c),
                                   "SELECT count(*) FROM pg_prepared_statements WHERE name = $1", 1,
                                   name),
                     1);
    crm_db_release(c);
}
END_TEST

START_TEST(test_statement_stays_prepared_across_acquires)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    crm_error err = CRM_ERROR_INIT;
    const char *params[] = {"x"};
    PGresult *res = crm_db_exec(c, &select_echo, 1, params, &err);
    ck_assert_ptr_nonnull(res);
    PQclear(res);
    crm_db_release(c);

    c = acquire();
    res = crm_db_exec(c, &select_echo, 1, params, &err);
    ck_assert_msg(res != NULL, "after re-acquire: %s", err.detail);
    PQclear(res);
    crm_db_release(c);
}
END_TEST

START_TEST(test_run_acquires_executes_and_releases)
{
    start_test_pool(1);
    crm_error err = CRM_ERROR_INIT;
    const char *params[] = {"run"};
    PGresult *res = crm_db_run(&select_echo, 1, params, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "run");
    PQclear(res);
    ck_assert_int_eq(crm_db_get_stats().in_use, 0);
}
END_TEST

START_TEST(test_failed_statement_leaves_connection_usable)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    crm_error err = CRM_ERROR_INIT;
    const char *zero[] = {"0"}, *two[] = {"2"};
    ck_assert_ptr_null(crm_db_exec(c, &select_division_by_zero, 1, zero, &err));
    crm_error_clear(&err);
    PGresult *res = crm_db_exec(c, &select_division_by_zero, 1, two, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    ck_assert_str_eq(crm_db_sqlstate(c), "");
    crm_db_release(c);
}
END_TEST

/* ---- crm_db_each_row ------------------------------------------------- */

typedef struct row_tally {
    int rows, stop_after;
    long sum;
} row_tally;

static bool tally_row(const PGresult *row, void *ctx, crm_error *err)
{
    row_tally *t = ctx;
    ck_assert_int_eq(PQntuples(row), 1); /* one row at a time */
    t->rows++;
    t->sum += atol(PQgetvalue(row, 0, 0));
    if (t->stop_after > 0 && t->rows == t->stop_after)
        return crm_error_set(err, CRM_E_INTERNAL, "enough");
    return true;
}

START_TEST(test_each_row_hands_every_row_one_at_a_time)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    crm_error err = CRM_ERROR_INIT;
    const char *params[] = {"1000", "1"};
    row_tally t = {0};
    ck_assert_msg(crm_db_each_row(c, &select_rows_then_fail, 2, params, tally_row, &t, &err), "%s",
                  err.detail);
    ck_assert_int_eq(t.rows, 1001);
    ck_assert_int_eq(t.sum, 1001L * 1002 / 2);
    crm_db_release(c);
}
END_TEST

/* A statement that fails after some rows: the rows before stay handed, the
 * error is the statement's, and the connection serves the next statement. */
START_TEST(test_each_row_reports_a_failure_mid_stream_and_leaves_the_connection_usable)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    long pid = backend_pid(c);
    crm_error err = CRM_ERROR_INIT;
    const char *params[] = {"50", "0"};
    row_tally t = {0};
    ck_assert(!crm_db_each_row(c, &select_rows_then_fail, 2, params, tally_row, &t, &err));
    ck_assert_int_eq(err.code, CRM_E_INTERNAL);
    ck_assert_str_eq(crm_db_sqlstate(c), "22012");
    ck_assert_int_le(t.rows, 50);
    crm_error_clear(&err);
    ck_assert_int_eq(backend_pid(c), pid);
    crm_db_release(c);
}
END_TEST

/* A callback that says stop: no more rows reach it, the rest are read and
 * dropped, and the connection serves the next statement. */
START_TEST(test_each_row_stops_calling_back_after_a_refusal)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    long pid = backend_pid(c);
    crm_error err = CRM_ERROR_INIT;
    const char *params[] = {"500", "1"};
    row_tally t = {.stop_after = 7};
    ck_assert(!crm_db_each_row(c, &select_rows_then_fail, 2, params, tally_row, &t, &err));
    ck_assert_str_eq(err.detail, "enough");
    ck_assert_int_eq(t.rows, 7);
    crm_error_clear(&err);
    ck_assert_int_eq(backend_pid(c), pid);
    crm_db_release(c);
}
END_TEST

/* ---- crm_query ------------------------------------------------------ */

START_TEST(test_query_starts_without_parameters)
{
    crm_query q;
    crm_query_init(&q, &select_echo);
    ck_assert_ptr_eq(q.stmt, &select_echo);
    ck_assert_int_eq(q.nparams, 0);
}
END_TEST

START_TEST(test_query_add_int_formats_decimal_text)
{
    crm_query q;
    crm_query_init(&q, &select_echo);
    crm_query_add_int(&q, 42);
    crm_query_add_int(&q, -7);
    crm_query_add_int(&q, LLONG_MIN);
    ck_assert_int_eq(q.nparams, 3);
    ck_assert_str_eq(q.values[0], "42");
    ck_assert_str_eq(q.values[1], "-7");
    ck_assert_str_eq(q.values[2], "-9223372036854775808");
}
END_TEST

START_TEST(test_query_keeps_text_parameters_in_order)
{
    crm_query q;
    crm_query_init(&q, &select_echo);
    crm_query_add(&q, "a");
    crm_query_add_int(&q, 1);
    crm_query_add(&q, NULL);
    ck_assert_str_eq(q.values[0], "a");
    ck_assert_str_eq(q.values[1], "1");
    ck_assert_ptr_null(q.values[2]);
}
END_TEST

START_TEST(test_run_query_runs_statement_with_its_parameters)
{
    start_test_pool(1);
    crm_query q;
    crm_query_init(&q, &select_echo);
    crm_query_add(&q, "queried");
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "queried");
    PQclear(res);
}
END_TEST

START_TEST(test_run_query_null_parameter_is_sql_null)
{
    start_test_pool(1);
    crm_query q;
    crm_query_init(&q, &select_is_null);
    crm_query_add(&q, NULL);
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_ptr_nonnull(res);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
}
END_TEST

/* ---- error mapping -------------------------------------------------- */

START_TEST(test_unique_violation_maps_to_conflict)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    PQclear(unit_sql(crm_db_pgconn(c), "CREATE TEMP TABLE unit_db_unique (k int PRIMARY KEY)", 0,
                     NULL));
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_db_begin(c, &err));
    const char *params[] = {"1"};
    PGresult *res = crm_db_exec(c, &insert_unique, 1, params, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    PQclear(res);
    ck_assert_ptr_null(crm_db_exec(c, &insert_unique, 1, params, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_str_eq(crm_db_sqlstate(c), "23505");
    crm_db_rollback(c);
    crm_db_release(c);
}
END_TEST

START_TEST(test_rollback_discards_the_transaction)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    PGconn *pg = crm_db_pgconn(c);
    PQclear(unit_sql(pg, "CREATE TEMP TABLE unit_db_unique (k int PRIMARY KEY)", 0, NULL));
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_db_begin(c, &err));
    const char *params[] = {"5"};
    PQclear(crm_db_exec(c, &insert_unique, 1, params, &err));
    crm_db_rollback(c);
    ck_assert_int_eq(PQtransactionStatus(pg), PQTRANS_IDLE);
    ck_assert_int_eq(unit_sql_long(pg, "SELECT count(*) FROM unit_db_unique", 0, NULL), 0);
    crm_db_release(c);
}
END_TEST

START_TEST(test_commit_keeps_the_transaction)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    PGconn *pg = crm_db_pgconn(c);
    PQclear(unit_sql(pg, "CREATE TEMP TABLE unit_db_unique (k int PRIMARY KEY)", 0, NULL));
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_db_begin(c, &err));
    const char *params[] = {"5"};
    PQclear(crm_db_exec(c, &insert_unique, 1, params, &err));
    ck_assert(crm_db_commit(c, &err));
    ck_assert_int_eq(unit_sql_long(pg, "SELECT count(*) FROM unit_db_unique", 0, NULL), 1);
    crm_db_release(c);
}
END_TEST

START_TEST(test_syntax_error_maps_to_internal)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    PGconn *pg = crm_db_pgconn(c);
    PGresult *res = PQexec(pg, "SELEC 1");
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_db_result_error(pg, res, "unit test", &err));
    ck_assert_int_eq(err.code, CRM_E_INTERNAL);
    PQclear(res);
    crm_db_release(c);
}
END_TEST

START_TEST(test_internal_error_detail_hides_database_message)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    PGconn *pg = crm_db_pgconn(c);
    PGresult *res = PQexec(pg, "SELECT * FROM unit_db_secret_table_name");
    crm_error err = CRM_ERROR_INIT;
    crm_db_result_error(pg, res, "unit test", &err);
    ck_assert_ptr_null(strstr(err.detail, "unit_db_secret_table_name"));
    PQclear(res);
    crm_db_release(c);
}
END_TEST

START_TEST(test_undefined_table_maps_to_internal)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_exec(c, &select_missing_table, 0, NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_INTERNAL);
    ck_assert_str_eq(crm_db_sqlstate(c), "42P01");
    crm_db_release(c);
}
END_TEST

START_TEST(test_statement_timeout_maps_to_unavailable)
{
    crm_db_config cfg = {
        .url = unit_env("CRMD_TEST_DATABASE_URL"),
        .pool_size = 1,
        .acquire_timeout_ms = 1000,
        .connect_timeout_s = 2,
        .statement_timeout_ms = 100,
        .retry_backoff_ms = 1000,
    };
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_db_init(&cfg, &err));
    crm_conn *c = acquire();
    ck_assert_ptr_null(crm_db_exec(c, &select_sleep, 0, NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
    ck_assert_str_eq(crm_db_sqlstate(c), "57014");
    crm_db_release(c);
}
END_TEST

/* ---- exhaustion ----------------------------------------------------- */

START_TEST(test_acquire_fails_unavailable_when_pool_exhausted)
{
    start_pool(unit_env("CRMD_TEST_DATABASE_URL"), 1, 200, 1000);
    crm_conn *held = acquire();
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_acquire(&err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
    crm_db_release(held);
}
END_TEST

START_TEST(test_released_connection_can_be_acquired_again)
{
    start_pool(unit_env("CRMD_TEST_DATABASE_URL"), 1, 200, 1000);
    crm_conn *first = acquire();
    long pid = backend_pid(first);
    crm_db_release(first);
    crm_conn *second = acquire();
    ck_assert_int_eq(backend_pid(second), pid);
    crm_db_release(second);
}
END_TEST

struct waiter {
    crm_conn *got;
    crm_error err;
};

static void *acquire_in_thread(void *arg)
{
    struct waiter *w = arg;
    w->got = crm_db_acquire(&w->err);
    return NULL;
}

START_TEST(test_release_wakes_a_waiting_acquire)
{
    start_pool(unit_env("CRMD_TEST_DATABASE_URL"), 1, 10000, 1000);
    crm_conn *held = acquire();
    struct waiter w = {NULL, CRM_ERROR_INIT};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, acquire_in_thread, &w), 0);
    for (int i = 0; i < 500 && crm_db_get_stats().waiting == 0; i++)
        unit_sleep_ms(10);
    ck_assert_int_eq(crm_db_get_stats().waiting, 1);
    crm_db_release(held);
    pthread_join(t, NULL);
    ck_assert_msg(w.got == held, "waiter got %p (%s)", (void *)w.got, w.err.detail);
    crm_db_release(w.got);
}
END_TEST

enum { RUNNERS = 6, RUNS_EACH = 25 };

static void *run_many(void *arg)
{
    int *failures = arg;
    for (int i = 0; i < RUNS_EACH; i++) {
        crm_error err = CRM_ERROR_INIT;
        const char *params[] = {"many"};
        PGresult *res = crm_db_run(&select_echo, 1, params, &err);
        if (res == NULL || strcmp(PQgetvalue(res, 0, 1), "many") != 0)
            (*failures)++;
        PQclear(res);
    }
    return NULL;
}

START_TEST(test_many_threads_share_a_small_pool)
{
    start_pool(unit_env("CRMD_TEST_DATABASE_URL"), 2, 10000, 1000);
    pthread_t t[RUNNERS];
    int failures[RUNNERS] = {0};
    for (int i = 0; i < RUNNERS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, run_many, &failures[i]), 0);
    for (int i = 0; i < RUNNERS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < RUNNERS; i++)
        ck_assert_int_eq(failures[i], 0);
    crm_db_stats s = crm_db_get_stats();
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_int_le(s.connected, 2);
}
END_TEST

START_TEST(test_stats_count_connections_in_use)
{
    start_test_pool(3);
    crm_conn *a = acquire();
    crm_conn *b = acquire();
    crm_db_stats s = crm_db_get_stats();
    ck_assert_int_eq(s.size, 3);
    ck_assert_int_eq(s.in_use, 2);
    ck_assert_int_eq(s.connected, 2);
    crm_db_release(a);
    ck_assert_int_eq(crm_db_get_stats().in_use, 1);
    crm_db_release(b);
    s = crm_db_get_stats();
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_int_eq(s.connected, 2);
}
END_TEST

START_TEST(test_release_of_null_is_ignored)
{
    start_test_pool(1);
    crm_db_release(NULL);
    ck_assert_int_eq(crm_db_get_stats().in_use, 0);
}
END_TEST

/* ---- broken connections --------------------------------------------- */

START_TEST(test_terminated_idle_connection_is_replaced_on_acquire)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    long old_pid = backend_pid(c);
    crm_db_release(c);
    terminate_backend(old_pid);

    c = acquire();
    ck_assert_int_eq(PQstatus(crm_db_pgconn(c)), CONNECTION_OK);
    ck_assert_int_ne(backend_pid(c), old_pid);
    crm_db_release(c);
}
END_TEST

START_TEST(test_run_read_only_statement_succeeds_after_backend_terminated)
{
    start_test_pool(1);
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_run(&select_backend_pid, 0, NULL, &err);
    ck_assert_ptr_nonnull(res);
    long old_pid = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    terminate_backend(old_pid);

    res = crm_db_run(&select_backend_pid, 0, NULL, &err);
    ck_assert_msg(res != NULL, "run after terminate: %s", err.detail);
    ck_assert_int_ne(atol(PQgetvalue(res, 0, 0)), old_pid);
    PQclear(res);
}
END_TEST

START_TEST(test_connection_killed_while_held_fails_unavailable)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    terminate_backend(backend_pid(c));
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_exec(c, &select_backend_pid, 0, NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
    crm_db_release(c);

    c = acquire();
    ck_assert_int_eq(PQstatus(crm_db_pgconn(c)), CONNECTION_OK);
    crm_db_release(c);
}
END_TEST

START_TEST(test_release_inside_transaction_discards_connection)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    long old_pid = backend_pid(c);
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_db_begin(c, &err));
    crm_db_release(c);

    c = acquire();
    ck_assert_int_eq(PQtransactionStatus(crm_db_pgconn(c)), PQTRANS_IDLE);
    ck_assert_int_ne(backend_pid(c), old_pid);
    crm_db_release(c);
}
END_TEST

START_TEST(test_connection_marked_broken_is_replaced)
{
    start_test_pool(1);
    crm_conn *c = acquire();
    long old_pid = backend_pid(c);
    crm_db_mark_broken(c);
    crm_db_release(c);

    c = acquire();
    ck_assert_int_ne(backend_pid(c), old_pid);
    crm_db_release(c);
}
END_TEST

/* ---- unreachable database ------------------------------------------- */

START_TEST(test_unreachable_database_fails_unavailable)
{
    start_pool(UNREACHABLE_URL, 2, 1000, 5000);
    unsigned long failures = crm_db_get_stats().connect_failures;
    crm_error err = CRM_ERROR_INIT;
    long long start = unit_now_ms();
    ck_assert_ptr_null(crm_db_acquire(&err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
    ck_assert_int_lt(unit_now_ms() - start, 2000);
    crm_db_stats s = crm_db_get_stats();
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_uint_eq(s.connect_failures, failures + 1);
}
END_TEST

START_TEST(test_unreachable_database_fails_fast_during_backoff)
{
    start_pool(UNREACHABLE_URL, 2, 1000, 10000);
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_acquire(&err));
    unsigned long failures = crm_db_get_stats().connect_failures;
    crm_error_clear(&err);
    long long start = unit_now_ms();
    ck_assert_ptr_null(crm_db_acquire(&err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
    /* No second connection attempt inside the backoff window. */
    ck_assert_uint_eq(crm_db_get_stats().connect_failures, failures);
    ck_assert_int_lt(unit_now_ms() - start, 1000);
}
END_TEST

START_TEST(test_connect_is_tried_again_after_backoff)
{
    start_pool(UNREACHABLE_URL, 1, 1000, 100);
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_acquire(&err));
    unsigned long failures = crm_db_get_stats().connect_failures;
    unit_sleep_ms(150);
    ck_assert_ptr_null(crm_db_acquire(&err));
    ck_assert_uint_eq(crm_db_get_stats().connect_failures, failures + 1);
}
END_TEST

START_TEST(test_new_pool_starts_with_no_connect_failures)
{
    start_pool(UNREACHABLE_URL, 1, 1000, 100);
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_acquire(&err));
    crm_db_shutdown();
    start_pool(UNREACHABLE_URL, 1, 1000, 100);
    ck_assert_uint_eq(crm_db_get_stats().connect_failures, 0);
}
END_TEST

START_TEST(test_connect_direct_to_unreachable_database_fails_unavailable)
{
    crm_db_config cfg = {.url = UNREACHABLE_URL, .connect_timeout_s = 1};
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_connect_direct(&cfg, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
}
END_TEST

START_TEST(test_connect_direct_applies_statement_timeout)
{
    crm_db_config cfg = {.url = unit_env("CRMD_TEST_DATABASE_URL"), .statement_timeout_ms = 1234};
    crm_error err = CRM_ERROR_INIT;
    PGconn *pg = crm_db_connect_direct(&cfg, &err);
    ck_assert_msg(pg != NULL, "%s", err.detail);
    PGresult *res = unit_sql(pg, "SHOW statement_timeout", 0, NULL);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "1234ms");
    PQclear(res);
    /* A session of ours left idle in a transaction would hold back the sync
     * feeds (and vacuum) of the whole cluster: PostgreSQL ends it. */
    res = unit_sql(pg, "SHOW idle_in_transaction_session_timeout", 0, NULL);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "1min");
    PQclear(res);
    PQfinish(pg);
}
END_TEST

static crm_stmt select_statement_timeout = CRM_STMT_RO(
    "unit_db_statement_timeout", "SELECT current_setting('statement_timeout')");

/* The statement_timeout of c's session. */
static void assert_statement_timeout(crm_conn *c, const char *want)
{
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_exec(c, &select_statement_timeout, 0, NULL, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), want);
    PQclear(res);
}

START_TEST(test_private_connection_has_its_own_timeout_and_no_slot_of_the_pool)
{
    start_pool(unit_env("CRMD_TEST_DATABASE_URL"), 1, 200, 1000);
    crm_db_config cfg = {.url = unit_env("CRMD_TEST_DATABASE_URL"), .statement_timeout_ms = 1234};
    crm_error err = CRM_ERROR_INIT;
    crm_conn *mine = crm_db_open_private(&cfg, &err);
    ck_assert_msg(mine != NULL, "%s", err.detail);
    assert_statement_timeout(mine, "1234ms");
    crm_db_stats s = crm_db_get_stats();
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_int_eq(s.connected, 0);

    /* The pool's one connection is free for others meanwhile. */
    crm_conn *pooled = acquire();
    assert_statement_timeout(pooled, "5s");
    ck_assert(backend_pid(pooled) != backend_pid(mine));
    crm_db_release(pooled);
    crm_db_close_private(mine);
    s = crm_db_get_stats();
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_int_eq(s.connected, 1);
}
END_TEST

START_TEST(test_private_connection_runs_transactions_and_row_streams)
{
    crm_db_config cfg = {.url = unit_env("CRMD_TEST_DATABASE_URL"), .statement_timeout_ms = 0};
    crm_error err = CRM_ERROR_INIT;
    crm_conn *c = crm_db_open_private(&cfg, &err); /* no pool at all */
    ck_assert_msg(c != NULL, "%s", err.detail);
    assert_statement_timeout(c, "0");
    ck_assert(crm_db_begin(c, &err));
    ck_assert(crm_db_command(c, "CREATE TEMPORARY TABLE unit_db_private (n int)", &err));
    ck_assert(crm_db_commit(c, &err));
    ck_assert(crm_db_begin(c, &err));
    ck_assert(crm_db_command(c, "INSERT INTO unit_db_private VALUES (1)", &err));
    crm_db_rollback(c);
    PGresult *res = crm_db_exec_sql(c, "SELECT count(*) FROM unit_db_private", 0, NULL, &err);
    ck_assert_ptr_nonnull(res);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    const char *params[] = {"10", "1"};
    row_tally t = {0};
    ck_assert_msg(crm_db_each_row(c, &select_rows_then_fail, 2, params, tally_row, &t, &err), "%s",
                  err.detail);
    ck_assert_int_eq(t.rows, 11);
    ck_assert_int_eq(t.sum, 11L * 12 / 2);
    crm_db_close_private(c);
    crm_db_close_private(NULL);
}
END_TEST

static PGresult *exec_ok(crm_conn *c, const char *sql)
{
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_exec_sql(c, sql, 0, NULL, &err);
    ck_assert_msg(res != NULL, "%s: %s", sql, err.detail);
    return res;
}

/* A second connection begun in an exported snapshot reads what the first
 * one reads, not what was committed since; an id that is not PostgreSQL's
 * own is refused before anything is sent. */
START_TEST(test_second_connection_reads_the_exported_snapshot)
{
    crm_db_config cfg = {.url = unit_env("CRMD_TEST_DATABASE_URL")};
    crm_error err = CRM_ERROR_INIT;
    crm_conn *one = crm_db_open_private(&cfg, &err), *two = crm_db_open_private(&cfg, &err);
    crm_conn *writer = crm_db_open_private(&cfg, &err);
    ck_assert(one != NULL && two != NULL && writer != NULL);
    PQclear(exec_ok(writer, "DROP TABLE IF EXISTS unit_db_snapshot"));
    PQclear(exec_ok(writer, "CREATE TABLE unit_db_snapshot (n int)"));
    PQclear(exec_ok(writer, "INSERT INTO unit_db_snapshot VALUES (1)"));
    ck_assert(crm_db_command(one, "BEGIN ISOLATION LEVEL REPEATABLE READ", &err));
    PGresult *res = exec_ok(one, "SELECT pg_export_snapshot()");
    char id[80];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    PQclear(exec_ok(writer, "INSERT INTO unit_db_snapshot VALUES (2)"));

    static const char *const refused[] = {"", "x' ; DROP TABLE unit_db_snapshot; --",
                                          "00000003-0000001B-1 ", "0000000000000000000000000000000000"
                                                                  "000000000000000000000000000000001"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        ck_assert(!crm_db_begin_snapshot(two, refused[i], &err));
        ck_assert_int_eq(err.code, CRM_E_INTERNAL);
        crm_error_clear(&err);
        ck_assert_int_eq(PQtransactionStatus(crm_db_pgconn(two)), PQTRANS_IDLE);
    }
    ck_assert_msg(crm_db_begin_snapshot(two, id, &err), "%s", err.detail);
    res = exec_ok(two, "SELECT count(*) FROM unit_db_snapshot");
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "1"); /* not the row committed since */
    PQclear(res);
    ck_assert(crm_db_commit(two, &err) && crm_db_commit(one, &err));
    res = exec_ok(two, "SELECT count(*) FROM unit_db_snapshot");
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "2");
    PQclear(res);
    PQclear(exec_ok(writer, "DROP TABLE unit_db_snapshot"));
    crm_db_close_private(one);
    crm_db_close_private(two);
    crm_db_close_private(writer);
}
END_TEST

START_TEST(test_private_connection_to_unreachable_database_fails_unavailable)
{
    crm_db_config cfg = {.url = UNREACHABLE_URL, .connect_timeout_s = 1};
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_db_open_private(&cfg, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
}
END_TEST

/* Captures what crm_log writes to stderr (at info level and above) while
 * it runs; stop_capture returns it (the caller frees it). */
typedef struct log_capture {
    int saved, fd;
    char path[64];
} log_capture;

static void start_capture(log_capture *cap)
{
    snprintf(cap->path, sizeof cap->path, "/tmp/crmd-unit-log-XXXXXX");
    cap->fd = mkstemp(cap->path);
    ck_assert_int_ge(cap->fd, 0);
    fflush(stderr);
    cap->saved = dup(STDERR_FILENO);
    ck_assert_int_ge(cap->saved, 0);
    ck_assert_int_ge(dup2(cap->fd, STDERR_FILENO), 0);
    crm_log_set_level(CRM_LOG_INFO);
}

static char *stop_capture(log_capture *cap)
{
    /* Back to what main.c set: nothing unless CRMD_TEST_LOG names a level. */
    const char *name = getenv("CRMD_TEST_LOG");
    int level = name != NULL ? crm_log_level_parse(name) : -1;
    crm_log_set_level(level >= 0 ? (crm_log_level)level : (crm_log_level)(CRM_LOG_ERROR + 1));
    fflush(stderr);
    dup2(cap->saved, STDERR_FILENO);
    close(cap->saved);
    off_t size = lseek(cap->fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(pread(cap->fd, text, (size_t)size, 0), size);
    close(cap->fd);
    unlink(cap->path);
    return text;
}

/* A constraint violation is logged by its SQLSTATE, constraint and table,
 * never with the DETAIL that quotes the row ("Failing row contains (...)");
 * a foreign key that refuses a COPY (which callers handle) is not logged
 * at info level or above at all. */
START_TEST(test_database_errors_are_logged_without_the_values_of_the_row)
{
    PGconn *direct = unit_db_start(1);
    crm_error err = CRM_ERROR_INIT;
    crm_conn *c = crm_db_acquire(&err);
    ck_assert_ptr_nonnull(c);
    const char *setup[] = {
        "CREATE TEMP TABLE unit_s6 (v text CONSTRAINT unit_s6_short CHECK (length(v) < 3))",
        "CREATE TEMP TABLE unit_s6_parent (k text PRIMARY KEY)",
        "CREATE TEMP TABLE unit_s6_child (k text REFERENCES unit_s6_parent)"};
    for (size_t i = 0; i < sizeof setup / sizeof setup[0]; i++)
        PQclear(crm_db_exec_sql(c, setup[i], 0, NULL, &err));
    const char *marker = "MARKER-s6-personal";
    const char *values[] = {marker};

    log_capture cap;
    start_capture(&cap);
    PGresult *res = crm_db_exec_sql(c, "INSERT INTO unit_s6 VALUES ($1)", 1, values, &err);
    bool copied = crm_db_copy_in(c, "COPY unit_s6_child FROM STDIN", "MARKER-s6-copy\n", 15, &err);
    char *log = stop_capture(&cap);

    ck_assert_ptr_null(res);
    ck_assert(!copied);
    ck_assert_str_eq(crm_db_sqlstate(c), "23503");
    ck_assert_msg(strstr(log, "MARKER") == NULL, "personal data in the log: %s", log);
    ck_assert_msg(strstr(log, "23514") != NULL && strstr(log, "unit_s6_short") != NULL &&
                      strstr(log, "unit_s6") != NULL,
                  "the log does not say what failed: %s", log);
    ck_assert_msg(strstr(log, "23503") == NULL, "an expected COPY refusal was logged: %s", log);
    free(log);
    crm_error_clear(&err);
    crm_db_release(c);
    unit_db_stop(direct);
}
END_TEST

static atomic_bool stats_stop;

static void *read_stats_until_stopped(void *arg)
{
    long *reads = arg;
    while (!atomic_load(&stats_stop)) {
        crm_db_stats st = crm_db_get_stats();
        *reads += st.connected >= 0;
        sched_yield(); /* under valgrind threads share one core */
    }
    return NULL;
}

/* The connected count is right while connections are dropped and opened
 * outside the pool's lock, and reading it races with nothing (the TSan
 * build checks the second half).  The loop only records what it saw: the
 * reader is stopped and joined before anything is asserted, so a failure
 * never leaves it running into the next test. */
START_TEST(test_stats_count_connections_while_they_are_replaced)
{
    PGconn *direct = unit_db_start(1);
    long reads = 0;
    atomic_store(&stats_stop, false);
    pthread_t reader;
    ck_assert_int_eq(pthread_create(&reader, NULL, read_stats_until_stopped, &reads), 0);
    char failure[640] = "";
    for (int i = 0; i < 20 && failure[0] == '\0'; i++) {
        crm_error err = CRM_ERROR_INIT;
        crm_conn *c = crm_db_acquire(&err);
        if (c == NULL) {
            snprintf(failure, sizeof failure, "round %d: acquire: %s", i, err.detail);
            break;
        }
        int open_while_held = crm_db_get_stats().connected;
        crm_db_mark_broken(c);
        crm_db_release(c); /* closes it, outside the lock */
        int open_after = crm_db_get_stats().connected;
        if (open_while_held != 1 || open_after != 0)
            snprintf(failure, sizeof failure, "round %d: connected %d while held, %d after",
                     i, open_while_held, open_after);
    }
    atomic_store(&stats_stop, true);
    pthread_join(reader, NULL);
    ck_assert_msg(failure[0] == '\0', "%s", failure);
    ck_assert_int_gt(reads, 0);
    unit_db_stop(direct);
}
END_TEST

Suite *db_suite(void)
{
    Suite *s = suite_create("db");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_init_rejects_empty_pool);
    tcase_add_test(tc, test_init_does_not_connect);
    tcase_add_test(tc, test_init_copies_the_url);
    tcase_add_test(tc, test_connect_direct_applies_statement_timeout);
    tcase_add_test(tc, test_private_connection_has_its_own_timeout_and_no_slot_of_the_pool);
    tcase_add_test(tc, test_private_connection_runs_transactions_and_row_streams);
    tcase_add_test(tc, test_second_connection_reads_the_exported_snapshot);
    tcase_add_test(tc, test_private_connection_to_unreachable_database_fails_unavailable);
    suite_add_tcase(s, tc);

    tc = tcase_create("statements");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_exec_prepared_statement_returns_rows);
    tcase_add_test(tc, test_null_parameter_is_sql_null);
    tcase_add_test(tc, test_statement_runs_twice_on_one_connection_prepared_once);
    tcase_add_test(tc, test_statement_stays_prepared_across_acquires);
    tcase_add_test(tc, test_run_acquires_executes_and_releases);
    tcase_add_test(tc, test_failed_statement_leaves_connection_usable);
    tcase_add_test(tc, test_each_row_hands_every_row_one_at_a_time);
    tcase_add_test(tc, test_each_row_reports_a_failure_mid_stream_and_leaves_the_connection_usable);
    tcase_add_test(tc, test_each_row_stops_calling_back_after_a_refusal);
    suite_add_tcase(s, tc);

    tc = tcase_create("query");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_query_starts_without_parameters);
    tcase_add_test(tc, test_query_add_int_formats_decimal_text);
    tcase_add_test(tc, test_query_keeps_text_parameters_in_order);
    tcase_add_test(tc, test_run_query_runs_statement_with_its_parameters);
    tcase_add_test(tc, test_run_query_null_parameter_is_sql_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_unique_violation_maps_to_conflict);
    tcase_add_test(tc, test_rollback_discards_the_transaction);
    tcase_add_test(tc, test_commit_keeps_the_transaction);
    tcase_add_test(tc, test_syntax_error_maps_to_internal);
    tcase_add_test(tc, test_internal_error_detail_hides_database_message);
    tcase_add_test(tc, test_undefined_table_maps_to_internal);
    tcase_add_test(tc, test_statement_timeout_maps_to_unavailable);
    tcase_add_test(tc, test_database_errors_are_logged_without_the_values_of_the_row);
    suite_add_tcase(s, tc);

    tc = tcase_create("exhaustion");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_acquire_fails_unavailable_when_pool_exhausted);
    tcase_add_test(tc, test_released_connection_can_be_acquired_again);
    tcase_add_test(tc, test_release_wakes_a_waiting_acquire);
    tcase_add_test(tc, test_many_threads_share_a_small_pool);
    tcase_add_test(tc, test_stats_count_connections_in_use);
    tcase_add_test(tc, test_release_of_null_is_ignored);
    suite_add_tcase(s, tc);

    tc = tcase_create("broken");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_terminated_idle_connection_is_replaced_on_acquire);
    tcase_add_test(tc, test_run_read_only_statement_succeeds_after_backend_terminated);
    tcase_add_test(tc, test_connection_killed_while_held_fails_unavailable);
    tcase_add_test(tc, test_release_inside_transaction_discards_connection);
    tcase_add_test(tc, test_connection_marked_broken_is_replaced);
    tcase_add_test(tc, test_stats_count_connections_while_they_are_replaced);
    suite_add_tcase(s, tc);

    tc = tcase_create("unreachable");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_unreachable_database_fails_unavailable);
    tcase_add_test(tc, test_unreachable_database_fails_fast_during_backoff);
    tcase_add_test(tc, test_connect_is_tried_again_after_backoff);
    tcase_add_test(tc, test_new_pool_starts_with_no_connect_failures);
    tcase_add_test(tc, test_connect_direct_to_unreachable_database_fails_unavailable);
    suite_add_tcase(s, tc);
    return s;
}

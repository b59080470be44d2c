/*
 * test_dbloop.c — the pipelined database loop (lib/dbloop.h) against a real
 * PostgreSQL: which connection a statement goes to. Cheap statements share
 * one pipeline; statements that read a page go at most two to a connection,
 * spread over the pool, and wait in the loop's queue beyond that; a cheap
 * statement never waits behind a page while the pool has room.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "dbloop.h"
#include "suites.h"
#include "support.h"

/* A page that takes a while, and a point read; both echo $1 and name the
 * backend that ran them. */
static crm_stmt slow_page =
    CRM_STMT_PAGE("unit_dbloop_slow_page", "SELECT $1::int, pg_backend_pid() FROM pg_sleep(0.3)");
static crm_stmt point_read = CRM_STMT_RO("unit_dbloop_point", "SELECT $1::int, pg_backend_pid()");
/* A point read that fails for $1 = 0 (division by zero, 22012) and one that
 * fails for any $1 (timestamp out of range, 22008), as a forged cursor did. */
static crm_stmt divide_read =
    CRM_STMT_RO("unit_dbloop_divide", "SELECT 100 / $1::int, pg_backend_pid()");
static crm_stmt out_of_range_read =
    CRM_STMT_RO("unit_dbloop_out_of_range",
                "SELECT $1::int, pg_backend_pid(), "
                "'epoch'::timestamptz + (-300000000000000000 * interval '1 microsecond')");

#define MAX_JOBS 32

/* What one statement's callback saw. */
typedef struct outcome {
    bool done;
    int value; /* echoed $1, -1 on error */
    long pid;
    int order;        /* 1 for the first completion */
    crm_errcode code; /* CRM_OK, or the error's code */
    char param[12];
    const char *values[1]; /* what the loop reads until the callback */
} outcome;

static int completions;

static void on_done(void *arg, PGresult *res, const crm_error *err)
{
    outcome *o = arg;
    ck_assert_msg(!o->done, "a callback ran twice");
    o->code = err != NULL ? err->code : CRM_OK;
    o->done = true;
    o->order = ++completions;
    bool row = res != NULL && PQntuples(res) > 0 && PQnfields(res) >= 2;
    o->value = row ? atoi(PQgetvalue(res, 0, 0)) : -1;
    o->pid = row ? atol(PQgetvalue(res, 0, 1)) : 0;
    PQclear(res);
}

/* A loop of `connections` connections to url. */
static crm_dbloop *new_loop_with(const char *url, int connections, int connect_timeout_s,
                                 int statement_timeout_ms)
{
    crm_db_config cfg = {
        .url = url,
        .pool_size = 1,
        .acquire_timeout_ms = 2000,
        .connect_timeout_s = connect_timeout_s,
        .statement_timeout_ms = statement_timeout_ms,
        .retry_backoff_ms = 1000,
    };
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_db_init(&cfg, &err), "crm_db_init: %s", err.detail);
    crm_dbloop *loop = crm_dbloop_new(&cfg, connections, &err);
    ck_assert_msg(loop != NULL, "crm_dbloop_new: %s", err.detail);
    completions = 0;
    return loop;
}

static crm_dbloop *new_loop_at(const char *url, int connections, int connect_timeout_s)
{
    return new_loop_with(url, connections, connect_timeout_s, 5000);
}

static crm_dbloop *new_loop(int connections)
{
    return new_loop_at(unit_env("CRMD_TEST_DATABASE_URL"), connections, 2);
}

static void free_loop(crm_dbloop *loop)
{
    crm_dbloop_free(loop);
    crm_db_shutdown();
}

/* Submits stmt with nparams parameters, the first of them value. */
static void submit_n(crm_dbloop *loop, crm_stmt *stmt, outcome *o, int value, int nparams,
                     const char *const *values)
{
    memset(o, 0, sizeof *o);
    snprintf(o->param, sizeof o->param, "%d", value);
    o->values[0] = o->param;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(
        crm_dbloop_submit(loop, stmt, nparams, values ? values : o->values, on_done, o, &err));
}

static void submit(crm_dbloop *loop, crm_stmt *stmt, outcome *o, int value)
{
    submit_n(loop, stmt, o, value, 1, NULL);
}

/* Runs the loop until it is idle (or 10 s pass, which fails the test). */
static void run_until_idle(crm_dbloop *loop)
{
    long long deadline = unit_now_ms() + 10000;
    crm_dbloop_run(loop);
    while (!crm_dbloop_idle(loop)) {
        ck_assert_msg(unit_now_ms() < deadline, "the loop did not finish in 10 s");
        struct pollfd p = {.fd = crm_dbloop_fd(loop), .events = POLLIN};
        poll(&p, 1, 100);
        crm_dbloop_run(loop);
    }
}

/* Distinct backends among o[0..n). */
static int distinct_backends(const outcome *o, int n)
{
    int count = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int k = 0; k < i && !seen; k++)
            seen = o[k].pid == o[i].pid;
        count += !seen;
    }
    return count;
}

START_TEST(test_cheap_statements_share_one_connection)
{
    crm_dbloop *loop = new_loop(3);
    outcome o[20];
    crm_dbloop_stats before = crm_dbloop_get_stats();
    for (int i = 0; i < 20; i++)
        submit(loop, &point_read, &o[i], 100 + i);
    crm_dbloop_run(loop);
    crm_dbloop_stats sent = crm_dbloop_get_stats();
    ck_assert_int_eq(sent.connections - before.connections, 1);
    ck_assert_int_eq(sent.busy - before.busy, 20);
    run_until_idle(loop);
    for (int i = 0; i < 20; i++) {
        ck_assert(o[i].done);
        ck_assert_int_eq(o[i].value, 100 + i);
        ck_assert_int_eq(o[i].order, i + 1); /* one pipeline answers in order */
    }
    ck_assert_int_eq(distinct_backends(o, 20), 1);
    free_loop(loop);
}
END_TEST

START_TEST(test_pages_go_two_to_a_connection_and_the_rest_wait_in_the_queue)
{
    crm_dbloop *loop = new_loop(3);
    outcome o[8];
    crm_dbloop_stats before = crm_dbloop_get_stats();
    for (int i = 0; i < 8; i++)
        submit(loop, &slow_page, &o[i], i);
    crm_dbloop_run(loop);
    crm_dbloop_stats sent = crm_dbloop_get_stats();
    ck_assert_int_eq(sent.connections - before.connections, 3);
    ck_assert_int_eq(sent.busy - before.busy, 6);
    ck_assert_int_eq(sent.queued - before.queued, 2);
    run_until_idle(loop);
    for (int i = 0; i < 8; i++) {
        ck_assert(o[i].done);
        ck_assert_int_eq(o[i].value, i);
    }
    ck_assert_int_eq(distinct_backends(o, 8), 3);
    /* The two that waited went out only when a page had come back. */
    ck_assert_int_gt(o[6].order, 1);
    ck_assert_int_gt(o[7].order, 1);
    free_loop(loop);
}
END_TEST

START_TEST(test_a_cheap_statement_does_not_wait_behind_pages)
{
    crm_dbloop *loop = new_loop(3);
    outcome pages[2], point;
    submit(loop, &slow_page, &pages[0], 1);
    submit(loop, &slow_page, &pages[1], 2);
    submit(loop, &point_read, &point, 3);
    long long t0 = unit_now_ms();
    crm_dbloop_run(loop);
    while (!point.done) {
        ck_assert_msg(unit_now_ms() - t0 < 10000, "the point read did not finish");
        struct pollfd p = {.fd = crm_dbloop_fd(loop), .events = POLLIN};
        poll(&p, 1, 100);
        crm_dbloop_run(loop);
    }
    ck_assert_int_eq(point.order, 1);
    ck_assert_int_eq(point.value, 3);
    ck_assert(!pages[0].done && !pages[1].done);
    run_until_idle(loop);
    ck_assert_int_eq(pages[0].value, 1);
    ck_assert_int_eq(pages[1].value, 2);
    /* Three backends: one per page, and one for the point read. */
    outcome all[3] = {pages[0], pages[1], point};
    ck_assert_int_eq(distinct_backends(all, 3), 3);
    free_loop(loop);
}
END_TEST

START_TEST(test_with_one_connection_pages_queue_and_all_complete_in_order)
{
    crm_dbloop *loop = new_loop(1);
    outcome o[5];
    crm_dbloop_stats before = crm_dbloop_get_stats();
    for (int i = 0; i < 5; i++)
        submit(loop, &slow_page, &o[i], 10 + i);
    crm_dbloop_run(loop);
    crm_dbloop_stats sent = crm_dbloop_get_stats();
    ck_assert_int_eq(sent.busy - before.busy, 2);
    ck_assert_int_eq(sent.queued - before.queued, 3);
    run_until_idle(loop);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(o[i].value, 10 + i);
        ck_assert_int_eq(o[i].order, i + 1);
    }
    free_loop(loop);
}
END_TEST

/* A round of point reads with one that fails in the middle, all on one
 * pipeline: the failure is the failing read's alone. */
static void assert_one_failure_fails_only_itself(crm_stmt *failing)
{
    crm_dbloop *loop = new_loop(1);
    enum { N = 12, BAD = 5 };
    outcome o[N];
    for (int i = 0; i < N; i++)
        submit(loop, i == BAD ? failing : &point_read, &o[i], i == BAD ? 0 : 100 + i);
    run_until_idle(loop);
    for (int i = 0; i < N; i++) {
        ck_assert(o[i].done);
        if (i == BAD)
            continue;
        ck_assert_msg(o[i].code == CRM_OK && o[i].value == 100 + i,
                      "read %d failed (code %d) beside a failing one", i, o[i].code);
    }
    ck_assert_int_eq(o[BAD].value, -1);
    ck_assert_int_eq(o[BAD].code, CRM_E_INTERNAL);
    ck_assert_int_eq(distinct_backends(o, BAD), 1);
    free_loop(loop);
}

START_TEST(test_a_division_by_zero_fails_only_its_own_request)
{
    assert_one_failure_fails_only_itself(&divide_read);
}
END_TEST

START_TEST(test_a_timestamp_out_of_range_fails_only_its_own_request)
{
    assert_one_failure_fails_only_itself(&out_of_range_read);
}
END_TEST

/* Failing reads among good ones, in the first use of each statement (with
 * its PREPARE) and in later rounds: every good read succeeds, and each
 * failing one reports its own error, also when it was first aborted by
 * another's failure and sent again. */
START_TEST(test_several_failures_in_a_round_fail_only_themselves)
{
    crm_dbloop *loop = new_loop(1);
    enum { N = 16 };
    outcome o[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            bool bad = i % 4 == 1;
            submit(loop, bad ? &divide_read : &point_read, &o[i], bad ? 0 : 200 + i);
        }
        run_until_idle(loop);
        for (int i = 0; i < N; i++) {
            ck_assert(o[i].done);
            if (i % 4 == 1)
                ck_assert_int_eq(o[i].code, CRM_E_INTERNAL);
            else
                ck_assert_msg(o[i].code == CRM_OK && o[i].value == 200 + i,
                              "round %d: read %d failed (code %d)", round, i, o[i].code);
        }
    }
    free_loop(loop);
}
END_TEST

/* Bytes that arrive on a connection between jobs (here a notification on a
 * channel it listens to) are read, not taken for a dead connection: the
 * next statement runs on the same backend. */
START_TEST(test_a_notification_on_an_idle_connection_does_not_reconnect_it)
{
    static crm_stmt listen = {.name = NULL, .sql = "LISTEN unit_dbloop_idle", .read_only = true};
    crm_dbloop *loop = new_loop(1);
    outcome listened, before, after;
    submit_n(loop, &listen, &listened, 0, 0, NULL);
    submit(loop, &point_read, &before, 1);
    run_until_idle(loop);
    ck_assert_int_eq(listened.code, CRM_OK);
    ck_assert_int_eq(before.value, 1);

    PGconn *other = unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));
    PQclear(unit_sql(other, "SELECT pg_notify('unit_dbloop_idle', 'x')", 0, NULL));
    PQfinish(other);
    struct pollfd p = {.fd = crm_dbloop_fd(loop), .events = POLLIN};
    ck_assert_msg(poll(&p, 1, 5000) == 1, "the notification did not arrive");
    crm_dbloop_run(loop);
    crm_dbloop_stats idle = crm_dbloop_get_stats();

    submit(loop, &point_read, &after, 2);
    run_until_idle(loop);
    ck_assert_int_eq(after.value, 2);
    ck_assert_int_eq(crm_dbloop_get_stats().connections, idle.connections);
    ck_assert_int_eq(after.pid, before.pid);
    free_loop(loop);
}
END_TEST

/* A statement that libpq refuses to send (more parameters than the protocol
 * allows) fails with CRM_E_UNAVAILABLE after a bounded number of attempts,
 * instead of being retried forever; a read queued behind it still runs. */
START_TEST(test_a_statement_that_cannot_be_sent_fails_after_bounded_attempts)
{
    enum { TOO_MANY = 70000 };
    const char **values = calloc(TOO_MANY, sizeof *values);
    ck_assert_ptr_nonnull(values);
    crm_dbloop *loop = new_loop(1);
    outcome poison, good;
    submit_n(loop, &point_read, &poison, 0, TOO_MANY, values);
    submit(loop, &point_read, &good, 7);
    run_until_idle(loop);
    ck_assert(poison.done);
    ck_assert_int_eq(poison.code, CRM_E_UNAVAILABLE);
    ck_assert_int_eq(good.code, CRM_OK);
    ck_assert_int_eq(good.value, 7);
    free_loop(loop);
    free(values);
}
END_TEST

/* A TCP listener on 127.0.0.1 that never accepts: the kernel completes
 * the handshake, and nothing ever answers (a database host behind a black
 * hole). Returns the socket; its port in *port. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

/* Connecting to a host that never answers does not hold the thread that
 * runs the loop: crm_dbloop_run returns at once, the job fails with
 * CRM_E_UNAVAILABLE when the connect timeout (enforced by the loop, not
 * libpq) passes, and during the fail-fast window that follows a new job
 * fails in the same run. The bound of one second per run is a liveness
 * bound: the connect timeout is three. */
START_TEST(test_a_connect_to_a_host_that_never_answers_does_not_block_and_times_out)
{
    int port;
    int listener = silent_listener(&port);
    char url[128];
    snprintf(url, sizeof url, "host=127.0.0.1 port=%d dbname=nobody user=nobody sslmode=disable",
             port);
    crm_dbloop *loop = new_loop_at(url, 1, 3);
    outcome first, second;
    submit(loop, &point_read, &first, 1);
    long long start = unit_now_ms();
    while (!first.done) {
        long long before = unit_now_ms();
        crm_dbloop_run(loop);
        ck_assert_msg(unit_now_ms() - before < 1000, "crm_dbloop_run blocked for %lld ms",
                      unit_now_ms() - before);
        ck_assert_msg(unit_now_ms() - start < 10000, "the connect never timed out");
        struct pollfd p = {.fd = crm_dbloop_fd(loop), .events = POLLIN};
        poll(&p, 1, 100);
    }
    ck_assert_int_eq(first.code, CRM_E_UNAVAILABLE);

    submit(loop, &point_read, &second, 2);
    crm_dbloop_run(loop);
    ck_assert(second.done);
    ck_assert_int_eq(second.code, CRM_E_UNAVAILABLE);
    ck_assert(crm_dbloop_idle(loop));
    free_loop(loop);
    close(listener);
}
END_TEST

/* Backends of the test database waiting for a lock on unit_dbloop_locked. */
static long lock_waiters(PGconn *conn)
{
    return unit_sql_long(conn,
                         "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                         "WHERE c.relname = 'unit_dbloop_locked' AND NOT l.granted",
                         0, NULL);
}

/* The shutdown deadline with a statement held behind a lock: abort_all
 * fails the job in flight, the one behind it in the pipeline and the one
 * still queued, each callback once (on_done fails the test on a second
 * call), and PostgreSQL stops waiting for the lock while it is still held
 * (the cancel arrived: a closed client alone does not end a lock wait).
 * Afterwards the loop takes no work and its free calls nothing. */
START_TEST(test_abort_all_cancels_and_fails_every_job_once)
{
    static crm_stmt count_locked =
        CRM_STMT_RO("unit_dbloop_count_locked", "SELECT $1::int, count(*) FROM unit_dbloop_locked");
    PGconn *holder = unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));
    PQclear(unit_sql(holder, "CREATE TABLE IF NOT EXISTS unit_dbloop_locked (x int)", 0, NULL));
    PQclear(unit_sql(holder, "BEGIN", 0, NULL));
    PQclear(unit_sql(holder, "LOCK TABLE unit_dbloop_locked IN ACCESS EXCLUSIVE MODE", 0, NULL));
    PGconn *watcher = unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));

    /* A statement timeout far beyond the test's wait: only the cancel ends it. */
    crm_dbloop *loop = new_loop_with(unit_env("CRMD_TEST_DATABASE_URL"), 1, 2, 120000);
    outcome locked, behind, queued;
    submit(loop, &count_locked, &locked, 1);
    submit(loop, &point_read, &behind, 2);
    long long start = unit_now_ms();
    while (lock_waiters(watcher) == 0) {
        ck_assert_msg(unit_now_ms() - start < 10000, "the statement never reached the lock");
        struct pollfd p = {.fd = crm_dbloop_fd(loop), .events = POLLIN};
        poll(&p, 1, 20);
        crm_dbloop_run(loop);
    }
    submit(loop, &point_read, &queued, 3);

    crm_dbloop_abort_all(loop);
    outcome *all[] = {&locked, &behind, &queued};
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(all[i]->done, "job %d was not answered", i);
        ck_assert_int_eq(all[i]->code, CRM_E_UNAVAILABLE);
    }
    ck_assert(crm_dbloop_idle(loop));
    start = unit_now_ms();
    while (lock_waiters(watcher) > 0) {
        ck_assert_msg(unit_now_ms() - start < 10000, "the statement was not cancelled");
        unit_sleep_ms(20);
    }

    crm_dbloop_run(loop);
    outcome late;
    memset(&late, 0, sizeof late);
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_dbloop_submit(loop, &point_read, 1, late.values, on_done, &late, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
    crm_error_clear(&err);
    free_loop(loop);
    ck_assert(!late.done);
    PQclear(unit_sql(holder, "ROLLBACK", 0, NULL));
    PQfinish(holder);
    PQfinish(watcher);
}
END_TEST

Suite *dbloop_suite(void)
{
    Suite *s = suite_create("dbloop");
    TCase *tc = tcase_create("dispatch");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_cheap_statements_share_one_connection);
    tcase_add_test(tc, test_pages_go_two_to_a_connection_and_the_rest_wait_in_the_queue);
    tcase_add_test(tc, test_a_cheap_statement_does_not_wait_behind_pages);
    tcase_add_test(tc, test_with_one_connection_pages_queue_and_all_complete_in_order);
    suite_add_tcase(s, tc);

    TCase *failures = tcase_create("failures");
    tcase_set_timeout(failures, 30);
    tcase_add_test(failures, test_a_division_by_zero_fails_only_its_own_request);
    tcase_add_test(failures, test_a_timestamp_out_of_range_fails_only_its_own_request);
    tcase_add_test(failures, test_several_failures_in_a_round_fail_only_themselves);
    tcase_add_test(failures, test_a_notification_on_an_idle_connection_does_not_reconnect_it);
    tcase_add_test(failures, test_a_statement_that_cannot_be_sent_fails_after_bounded_attempts);
    suite_add_tcase(s, failures);

    TCase *connect = tcase_create("connect");
    tcase_set_timeout(connect, 30);
    tcase_add_test(connect,
                   test_a_connect_to_a_host_that_never_answers_does_not_block_and_times_out);
    suite_add_tcase(s, connect);

    TCase *shutdown = tcase_create("shutdown");
    tcase_set_timeout(shutdown, 30);
    tcase_add_test(shutdown, test_abort_all_cancels_and_fails_every_job_once);
    suite_add_tcase(s, shutdown);
    return s;
}

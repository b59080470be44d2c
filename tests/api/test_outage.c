/*
 * test_outage.c — crmd while its database goes away and comes back: fast
 * 503s with Retry-After (never a hang), liveness unaffected, and service
 * resuming by itself without a restart.
 *
 * Run alone (`api_tests outage`): it stops the test database with
 * CRMD_TEST_PG_STOP. The database is started again before every test, after
 * every test that completes, in the parent process once the test case is
 * over (which a failed or timed-out test cannot skip), and at exit.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNAVAILABLE_WITHIN_MS 1000
#define RECOVERED_WITHIN_MS 10000
#define POLL_MS 25

static crmd_server srv;

static void database_start(void)
{
    int rc = harness_run_env_command("CRMD_TEST_PG_START");
    if (rc != 0)
        fprintf(stderr, "api_tests: could not start the test database (status %d)\n", rc);
}

static void database_stop(void)
{
    ck_assert_msg(harness_run_env_command("CRMD_TEST_PG_STOP") == 0, "CRMD_TEST_PG_STOP failed");
}

static void setup(void)
{
    static const char *const env[] = {"CRMD_DB_RETRY_MS=250", NULL};
    database_start();
    crmd_fixture_start(&srv, env);
}

static void teardown(void)
{
    database_start();
    crmd_fixture_stop(&srv);
}

/* Requests path until it answers want or limit_ms pass. Every answer must
 * arrive (a hang or a dropped connection fails the test). Returns the last
 * response (the caller frees it) and the time taken in *elapsed_ms. */
static http_response poll_until(const char *path, const char *key, long want, long long limit_ms,
                                long long *elapsed_ms)
{
    long long start = harness_now_ms();
    for (;;) {
        http_response r = http_get(&srv, path, key);
        ck_assert_msg(r.curl_code == CURLE_OK, "GET %s got no answer: %s", path, r.curl_error);
        *elapsed_ms = harness_now_ms() - start;
        if (r.status == want || *elapsed_ms > limit_ms)
            return r;
        http_response_free(&r);
        harness_sleep_ms(POLL_MS);
    }
}

static void assert_retry_after(const http_response *r)
{
    const char *retry = http_response_header(r, "Retry-After");
    ck_assert_msg(retry != NULL && atoi(retry) >= 1 && strspn(retry, "0123456789") == strlen(retry),
                  "Retry-After: %s", retry ? retry : "(none)");
}

static void assert_healthz_200(void)
{
    http_response r = http_get(&srv, "/healthz", NULL);
    ck_assert_msg(r.status == 200, "/healthz answered %ld (%s)", r.status, r.curl_error);
    http_response_free(&r);
}

START_TEST(readyz_answers_503_with_retry_after_within_1_s_of_the_database_stopping)
{
    long long ms;
    http_response before = poll_until("/readyz", NULL, 200, 0, &ms);
    ck_assert_int_eq(before.status, 200);
    http_response_free(&before);

    database_stop();
    http_response r = poll_until("/readyz", NULL, 503, UNAVAILABLE_WITHIN_MS, &ms);
    ck_assert_msg(r.status == 503 && ms <= UNAVAILABLE_WITHIN_MS,
                  "/readyz answered %ld after %lld ms with the database stopped", r.status, ms);
    json_decref(assert_problem(&r, 503));
    assert_retry_after(&r);
    http_response_free(&r);
}
END_TEST

START_TEST(uncached_key_answers_503_problem_while_the_database_is_down)
{
    api_key fresh; /* never used, so no crmd has it cached */
    ck_assert(api_key_create("admin", &fresh));
    database_stop();
    long long ms;
    http_response ready = poll_until("/readyz", NULL, 503, UNAVAILABLE_WITHIN_MS, &ms);
    ck_assert_int_eq(ready.status, 503);
    http_response_free(&ready);

    http_response r = http_get(&srv, "/v1/api-keys", fresh.secret);
    ck_assert_msg(r.curl_code == CURLE_OK, "no answer: %s", r.curl_error);
    json_decref(assert_problem(&r, 503));
    assert_retry_after(&r);
    http_response_free(&r);
}
END_TEST

START_TEST(healthz_answers_200_and_crmd_stays_up_while_the_database_is_down)
{
    database_stop();
    long long until = harness_now_ms() + 1500;
    while (harness_now_ms() < until) {
        assert_healthz_200();
        http_response ready = http_get(&srv, "/readyz", NULL);
        ck_assert_msg(ready.curl_code == CURLE_OK, "/readyz: %s", ready.curl_error);
        http_response_free(&ready);
        harness_sleep_ms(50);
    }
    ck_assert_msg(crmd_running(&srv), "crmd exited with status %d", srv.exit_status);
}
END_TEST

START_TEST(service_resumes_without_a_restart_when_the_database_returns)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    pid_t pid = srv.pid;
    database_stop();
    http_response down = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_int_eq(down.status, 503);
    http_response_free(&down);
    assert_healthz_200();

    database_start();
    long long ms;
    http_response ready = poll_until("/readyz", NULL, 200, RECOVERED_WITHIN_MS, &ms);
    ck_assert_msg(ready.status == 200,
                  "/readyz still answered %ld %lld ms after the database "
                  "came back",
                  ready.status, ms);
    http_response_free(&ready);
    ck_assert_msg(crmd_running(&srv) && srv.pid == pid, "crmd was restarted or exited");
    assert_healthz_200();

    http_response list = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_msg(list.status == 200, "HTTP %ld: %.300s", list.status, list.body);
    http_response_free(&list);
}
END_TEST

Suite *outage_suite(void)
{
    atexit(database_start); /* also in forked tests: whoever ends, the database is up */
    Suite *s = suite_create("outage");
    TCase *tc = tcase_create("outage");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_unchecked_fixture(tc, NULL, database_start);
    tcase_add_test(tc, readyz_answers_503_with_retry_after_within_1_s_of_the_database_stopping);
    tcase_add_test(tc, uncached_key_answers_503_problem_while_the_database_is_down);
    tcase_add_test(tc, healthz_answers_200_and_crmd_stays_up_while_the_database_is_down);
    tcase_add_test(tc, service_resumes_without_a_restart_when_the_database_returns);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_jobs.c — GET /v1/jobs/{id} and POST /v1/jobs/{id}/cancel over real
 * HTTP: 401 without a key, 404 for no job, the representation, the scope
 * rule (a key that may not see a job gets the very 404 of a job that does
 * not exist), cancel of a queued, a running and an ended job (409).
 *
 * crmd registers no kind of job of its own yet, so the jobs here are rows
 * inserted by SQL with kinds it does not know (it never runs them): such a
 * job is admin's alone. Claiming, running and taking over jobs are in the
 * unit suite (tests/unit/test_jobs.c).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_KIND "api_test_job" /* known to no crmd */

static crmd_server srv;
static PGconn *db;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    db = harness_db_connect();
}

static void teardown(void)
{
    PQfinish(db);
    db = NULL;
    crmd_fixture_stop(&srv);
}

/* Inserts a job of TEST_KIND with the given extra SQL assignments applied
 * right after; returns its id. */
static long long insert_job(const char *then_set)
{
    long long id = harness_sql_number(
        db, "INSERT INTO jobs (kind, params) VALUES ($1, '{\"year\": 2026}') RETURNING id",
        TEST_KIND);
    if (then_set != NULL) {
        char sql[512], idtext[24];
        snprintf(sql, sizeof sql, "UPDATE jobs SET %s WHERE id = $1::bigint RETURNING id",
                 then_set);
        snprintf(idtext, sizeof idtext, "%lld", id);
        ck_assert_int_eq(harness_sql_number(db, sql, idtext), id);
    }
    return id;
}

static const char *column(long long id, const char *expression, char *out, size_t size)
{
    char sql[256], idtext[24];
    snprintf(sql, sizeof sql, "SELECT (%s)::text FROM jobs WHERE id = $1::bigint", expression);
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *params[] = {idtext};
    PGresult *res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1, "%s",
                  PQresultErrorMessage(res));
    snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

static http_response get_job(long long id, const char *key)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    return http_get(&srv, path, key);
}

static http_response cancel_job(long long id, const char *key)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", id);
    http_call call = {.method = "POST", .path = path, .api_key = key};
    return http_send(&srv, &call);
}

/* The 200 answer's job; the caller json_decref's it. */
static json_t *job_of(http_response *r)
{
    ck_assert_msg(r->status == 200, "HTTP %ld: %.300s", r->status, r->body);
    json_t *job = http_response_json(r);
    ck_assert_ptr_nonnull(job);
    return job;
}

static const char *string_at(json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

START_TEST(reading_a_job_needs_a_key)
{
    long long id = insert_job(NULL);
    http_response r = get_job(id, NULL);
    json_decref(assert_problem(&r, 401));
    http_response_free(&r);
    r = cancel_job(id, NULL);
    json_decref(assert_problem(&r, 401));
    http_response_free(&r);
}
END_TEST

START_TEST(a_job_that_does_not_exist_is_404)
{
    http_response r = get_job(9000000000000LL, harness_admin_key.secret);
    json_t *p = assert_problem(&r, 404);
    ck_assert_str_eq(string_at(p, "detail"), "no job with this id");
    json_decref(p);
    http_response_free(&r);
    const char *paths[] = {"/v1/jobs/abc", "/v1/jobs/0", "/v1/jobs/-1", "/v1/jobs/abc/cancel"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        http_call call = {.method = strstr(paths[i], "cancel") ? "POST" : "GET",
                          .path = paths[i],
                          .api_key = harness_admin_key.secret};
        r = http_send(&srv, &call);
        json_decref(assert_problem(&r, 404));
        http_response_free(&r);
    }
    r = cancel_job(9000000000000LL, harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

START_TEST(an_admin_reads_the_jobs_representation)
{
    long long id = insert_job(
        "state = 'succeeded', phase = 'fit', done = 5, total = 5, attempts = 2, "
        "result = '{\"customers\": 12}', claimed_by = 'elsewhere', "
        "created_at = '2026-01-02 03:04:05.678+00', started_at = '2026-01-02 03:04:06.5+00', "
        "finished_at = '2026-01-02 03:05:00+00'");
    http_response r = get_job(id, harness_admin_key.secret);
    json_t *job = job_of(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(job, "id")), id);
    ck_assert_str_eq(string_at(job, "kind"), TEST_KIND);
    ck_assert_str_eq(string_at(job, "state"), "succeeded");
    ck_assert_str_eq(string_at(job, "phase"), "fit");
    json_t *progress = json_object_get(job, "progress");
    ck_assert_int_eq(json_integer_value(json_object_get(progress, "done")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(progress, "total")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(job, "params"), "year")),
                     2026);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(job, "result"), "customers")), 12);
    ck_assert(json_is_null(json_object_get(job, "error")));
    ck_assert_int_eq(json_integer_value(json_object_get(job, "attempts")), 2);
    ck_assert_str_eq(string_at(job, "created_at"), "2026-01-02T03:04:05.678Z");
    ck_assert_str_eq(string_at(job, "started_at"), "2026-01-02T03:04:06.500Z");
    ck_assert_str_eq(string_at(job, "finished_at"), "2026-01-02T03:05:00.000Z");
    ck_assert_int_eq(json_object_size(job), 12); /* claimed_by and the rest stay inside */
    ck_assert_ptr_nonnull(strstr(http_response_header(&r, "Content-Type"), "application/json"));
    json_decref(job);
    http_response_free(&r);
}
END_TEST

/* The job's kind is unknown to crmd, so only admin may see it; any other
 * key, whatever its scopes, gets exactly the answer for no job at all. */
START_TEST(a_key_that_may_not_see_a_job_gets_the_404_of_no_job)
{
    long long id = insert_job(NULL);
    api_key reader;
    ck_assert(api_key_create("metrics:read,customers:read,segments:read", &reader));

    http_response none = get_job(9000000000000LL, reader.secret);
    json_t *p_none = assert_problem(&none, 404);
    const char *verbs[] = {"get", "cancel"};
    for (size_t i = 0; i < 2; i++) {
        http_response r = i == 0 ? get_job(id, reader.secret) : cancel_job(id, reader.secret);
        json_t *p = assert_problem(&r, 404);
        ck_assert_msg(strcmp(string_at(p, "detail"), string_at(p_none, "detail")) == 0 &&
                          strcmp(string_at(p, "type"), string_at(p_none, "type")) == 0,
                      "%s tells the job apart: %s", verbs[i], r.body);
        json_decref(p);
        http_response_free(&r);
    }
    json_decref(p_none);
    http_response_free(&none);
    char state[32];
    ck_assert_str_eq(column(id, "state", state, sizeof state), "queued");
    ck_assert_str_eq(column(id, "cancel_requested", state, sizeof state), "false");
}
END_TEST

START_TEST(cancelling_a_queued_job_ends_it_and_a_second_cancel_is_409)
{
    long long id = insert_job(NULL);
    http_response r = cancel_job(id, harness_admin_key.secret);
    json_t *job = job_of(&r);
    ck_assert_str_eq(string_at(job, "state"), "cancelled");
    ck_assert(json_is_string(json_object_get(job, "finished_at")));
    json_decref(job);
    http_response_free(&r);
    char state[32];
    ck_assert_str_eq(column(id, "state", state, sizeof state), "cancelled");

    r = cancel_job(id, harness_admin_key.secret);
    json_t *p = assert_problem(&r, 409);
    ck_assert_str_eq(string_at(p, "detail"), "the job has already ended (cancelled)");
    json_decref(p);
    http_response_free(&r);
}
END_TEST

START_TEST(cancelling_a_job_that_ended_is_409_and_changes_nothing)
{
    long long id = insert_job("state = 'succeeded', finished_at = now(), result = '{}'");
    http_response r = cancel_job(id, harness_admin_key.secret);
    json_t *p = assert_problem(&r, 409);
    ck_assert_str_eq(string_at(p, "detail"), "the job has already ended (succeeded)");
    json_decref(p);
    http_response_free(&r);
    char value[32];
    ck_assert_str_eq(column(id, "state", value, sizeof value), "succeeded");
    ck_assert_str_eq(column(id, "cancel_requested", value, sizeof value), "false");
}
END_TEST

START_TEST(cancelling_a_running_job_asks_it_to_stop)
{
    long long id = insert_job("state = 'running', claimed_by = 'elsewhere', attempts = 1, "
                              "started_at = now(), lease_until = now() + interval '1 minute'");
    for (int round = 0; round < 2; round++) { /* asking again is answered the same */
        http_response r = cancel_job(id, harness_admin_key.secret);
        json_t *job = job_of(&r);
        ck_assert_str_eq(string_at(job, "state"), "running");
        ck_assert(json_is_null(json_object_get(job, "finished_at")));
        json_decref(job);
        http_response_free(&r);
    }
    char value[32];
    ck_assert_str_eq(column(id, "cancel_requested", value, sizeof value), "true");
}
END_TEST

START_TEST(cancel_takes_no_body)
{
    long long id = insert_job(NULL);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", id);
    http_response r = http_post_json(&srv, path, harness_admin_key.secret, "{}");
    json_decref(assert_problem(&r, 413));
    http_response_free(&r);
    char state[32];
    ck_assert_str_eq(column(id, "state", state, sizeof state), "queued");
}
END_TEST

Suite *jobs_suite(void)
{
    Suite *s = suite_create("jobs");
    TCase *tc = tcase_create("jobs");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, reading_a_job_needs_a_key);
    tcase_add_test(tc, a_job_that_does_not_exist_is_404);
    tcase_add_test(tc, an_admin_reads_the_jobs_representation);
    tcase_add_test(tc, a_key_that_may_not_see_a_job_gets_the_404_of_no_job);
    tcase_add_test(tc, cancelling_a_queued_job_ends_it_and_a_second_cancel_is_409);
    tcase_add_test(tc, cancelling_a_job_that_ended_is_409_and_changes_nothing);
    tcase_add_test(tc, cancelling_a_running_job_asks_it_to_stop);
    tcase_add_test(tc, cancel_takes_no_body);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_metrics.c — the metrics over real HTTP: a recompute queued as a job,
 * followed at /v1/jobs/{id} to its end and run by crmd's own job runner;
 * the customer's metrics and the models afterwards; the errors (scope,
 * future as_of, unknown members, a second recompute while one waits).
 * The figures themselves are checked by hand in tests/unit/test_metrics.c.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static api_key reader, writer, customers_rw;

static void keys(void)
{
    if (reader.id == 0)
        ck_assert(api_key_create("metrics:read", &reader));
    if (writer.id == 0)
        ck_assert(api_key_create("metrics:read,metrics:write", &writer));
    if (customers_rw.id == 0)
        ck_assert(api_key_create("customers:read,customers:write,touchpoints:write",
                                 &customers_rw));
}

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    keys();
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

static http_response post_empty(const crmd_server *server, const char *path, const char *key)
{
    http_call call = {.method = "POST", .path = path, .api_key = key};
    return http_send(server, &call);
}

/* Polls the job at location until it ends; returns it. */
static json_t *wait_for_job(const crmd_server *server, const char *location)
{
    long long deadline = harness_now_ms() + 30000;
    for (;;) {
        http_response r = http_get(server, location, writer.secret);
        ck_assert_msg(r.status == 200, "GET %s: %ld %.300s", location, r.status, r.body);
        json_t *job = http_response_json(&r);
        http_response_free(&r);
        const char *state = json_string_value(json_object_get(job, "state"));
        ck_assert_ptr_nonnull(state);
        if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0)
            return job;
        json_decref(job);
        ck_assert_msg(harness_now_ms() < deadline, "the job did not end within 30 s");
        harness_sleep_ms(100);
    }
}

static long long create_customer_with_purchases(void)
{
    http_response r = http_post_json(&srv, "/v1/customers", customers_rw.secret,
                                      "{\"first_name\": \"Metric\", \"last_name\": \"Buyer\"}");
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    json_t *c = http_response_json(&r);
    long long id = json_integer_value(json_object_get(c, "id"));
    json_decref(c);
    http_response_free(&r);
    char ev[48], body[512];
    static const char *const days[] = {"2025-01-10", "2025-06-01", "2025-12-01"};
    for (int i = 0; i < 3; i++) {
        harness_unique(ev, sizeof ev, "m");
        snprintf(body, sizeof body,
                 "{\"customer_id\": %lld, \"channel\": \"store\", \"type\": \"purchase\","
                 " \"direction\": \"inbound\", \"occurred_at\": \"%sT10:00:00Z\","
                 " \"source\": \"api-metrics\", \"event_id\": \"%s\", \"amount\": %d,"
                 " \"currency\": \"EUR\"}",
                 id, days[i], ev, 100 * (i + 1));
        r = http_post_json(&srv, "/v1/touchpoints", customers_rw.secret, body);
        ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
        http_response_free(&r);
    }
    return id;
}

START_TEST(a_recompute_is_a_job_that_ends_with_the_customers_metrics)
{
    long long id = create_customer_with_purchases();
    /* The follower takes the purchases in first (as of now): once it has,
     * the recompute's rows as of its as_of are the last word. Otherwise a
     * slow follower (under ThreadSanitizer, say) could bring them in after
     * the recompute's publication, rightly as of now. */
    char mpath[64];
    snprintf(mpath, sizeof mpath, "/v1/customers/%lld/metrics", id);
    bool followed = false;
    for (int i = 0; i < 600 && !followed; i++) {
        http_response f = http_get(&srv, mpath, reader.secret);
        json_t *fm = f.status == 200 ? http_response_json(&f) : NULL;
        followed = json_integer_value(
                       json_object_get(json_object_get(fm, "value"), "purchases")) == 3;
        json_decref(fm);
        http_response_free(&f);
        if (!followed)
            harness_sleep_ms(100);
    }
    ck_assert_msg(followed, "the follower did not take the purchases in within 60 s");
    http_response r = http_post_json(&srv, "/v1/metrics/recompute", writer.secret,
                                     "{\"as_of\": \"2026-01-01T00:00:00Z\"}");
    ck_assert_msg(r.status == 202, "%ld %.300s", r.status, r.body);
    const char *location = http_response_header(&r, "Location");
    ck_assert_ptr_nonnull(location);
    ck_assert_int_eq(strncmp(location, "/v1/jobs/", 9), 0);
    char where[64];
    snprintf(where, sizeof where, "%s", location);
    json_t *queued = http_response_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(queued, "kind")), "metrics_recompute");
    json_decref(queued);
    http_response_free(&r);

    /* The kind's read scope (metrics:read) reads the job; another key
     * gets the 404 of a job that does not exist. */
    http_response seen = http_get(&srv, where, reader.secret);
    ck_assert_msg(seen.status == 200, "%ld %.300s", seen.status, seen.body);
    http_response_free(&seen);
    seen = http_get(&srv, where, customers_rw.secret);
    json_decref(assert_problem(&seen, 404));
    http_response_free(&seen);

    json_t *job = wait_for_job(&srv, where);
    ck_assert_msg(strcmp(json_string_value(json_object_get(job, "state")), "succeeded") == 0,
                  "the job ended %s", json_string_value(json_object_get(job, "state")));
    json_decref(job);

    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/metrics", id);
    r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    json_t *m = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "customer_id")), id);
    ck_assert_str_eq(json_string_value(json_object_get(m, "as_of")), "2026-01-01T00:00:00.000Z");
    json_t *value = json_object_get(m, "value");
    ck_assert_int_eq(json_integer_value(json_object_get(value, "purchases")), 3);
    ck_assert_double_eq_tol(json_number_value(json_object_get(value, "historic")), 600, 1e-9);
    json_t *summary = json_object_get(m, "summary");
    ck_assert_int_eq(json_integer_value(json_object_get(summary, "x")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(summary, "t_x")), 325);
    ck_assert_int_eq(json_integer_value(json_object_get(summary, "T")), 356);
    ck_assert_double_eq_tol(json_number_value(json_object_get(summary, "repeat_mean_value")), 250,
                            1e-9);
    json_decref(m);

    r = http_get(&srv, "/v1/metrics/model", reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    json_t *model = http_response_json(&r);
    http_response_free(&r);
    ck_assert_str_eq(json_string_value(json_object_get(model, "time_unit")), "days");
    json_t *latest = json_object_get(json_object_get(model, "bg_nbd"), "latest");
    ck_assert_msg(json_is_object(latest), "no BG/NBD fit recorded");
    ck_assert_int_ge(json_integer_value(json_object_get(latest, "customers")), 1);
    json_decref(model);
}
END_TEST

/* Polls the customer's metrics until want(doc) holds (at most 15 s);
 * returns the document and the milliseconds it took. */
static json_t *wait_for_metrics(long long id, bool (*want)(const json_t *), long long *took_ms)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/metrics", id);
    long long start = harness_now_ms(), deadline = start + 15000;
    for (;;) {
        http_response r = http_get(&srv, path, reader.secret);
        ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
        json_t *m = http_response_json(&r);
        http_response_free(&r);
        if (want(m)) {
            *took_ms = harness_now_ms() - start;
            return m;
        }
        json_decref(m);
        ck_assert_msg(harness_now_ms() < deadline, "the metrics did not follow within 15 s");
        harness_sleep_ms(50);
    }
}

static bool three_purchases(const json_t *m)
{
    return json_integer_value(json_object_get(json_object_get(m, "value"), "purchases")) == 3;
}

static bool one_refund(const json_t *m)
{
    return json_integer_value(json_object_get(json_object_get(m, "value"), "refunds")) == 1;
}

/* No recompute: the follower brings each purchase and refund into the
 * customer's metrics within seconds of its ingest, and records the stage. */
START_TEST(a_purchase_reaches_the_customers_metrics_within_seconds)
{
    long long id = create_customer_with_purchases(), took;
    json_t *m = wait_for_metrics(id, three_purchases, &took);
    ck_assert_double_eq_tol(
        json_number_value(json_object_get(json_object_get(m, "value"), "historic")), 600, 1e-9);
    json_decref(m);
    char ev[48], body[512];
    harness_unique(ev, sizeof ev, "r");
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"store\", \"type\": \"refund\","
             " \"direction\": \"inbound\", \"occurred_at\": \"2025-12-02T10:00:00Z\","
             " \"source\": \"api-metrics\", \"event_id\": \"%s\", \"amount\": -50,"
             " \"currency\": \"EUR\"}",
             id, ev);
    http_response r = http_post_json(&srv, "/v1/touchpoints", customers_rw.secret, body);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    m = wait_for_metrics(id, one_refund, &took);
    ck_assert_msg(took < 10000, "the refund took %lld ms to follow", took);
    ck_assert_double_eq_tol(
        json_number_value(json_object_get(json_object_get(m, "value"), "historic")), 550, 1e-9);
    const char *now_stage =
        json_string_value(json_object_get(json_object_get(m, "lifecycle"), "stage"));
    ck_assert_ptr_nonnull(now_stage);
    char stage[32];
    snprintf(stage, sizeof stage, "%s", now_stage);
    json_decref(m);

    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/lifecycle", id);
    r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    json_t *life = http_response_json(&r);
    http_response_free(&r);
    ck_assert_str_eq(json_string_value(json_object_get(life, "stage")), stage);
    ck_assert_int_ge(json_array_size(json_object_get(life, "data")), 1);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(json_object_get(life, "data"), 0), "stage")),
        stage);
    json_decref(life);
    r = http_get(&srv, "/v1/customers/9000000000000/lifecycle", reader.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
    r = http_get(&srv, path, customers_rw.secret);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    snprintf(path, sizeof path, "/v1/customers/%lld/lifecycle?after=nonsense", id);
    r = http_get(&srv, path, reader.secret);
    json_decref(assert_problem(&r, 422));
    http_response_free(&r);
}
END_TEST

/* Polls path until its member "as_of" is at least since (RFC 3339 in UTC
 * with milliseconds, compared as text; at most 30 s). */
static void wait_for_as_of(const char *path, const char *since)
{
    long long deadline = harness_now_ms() + 30000;
    for (;;) {
        http_response r = http_get(&srv, path, reader.secret);
        ck_assert_msg(r.status == 200, "%s: %ld %.300s", path, r.status, r.body);
        json_t *doc = http_response_json(&r);
        http_response_free(&r);
        const char *as_of = json_string_value(json_object_get(doc, "as_of"));
        bool set = as_of != NULL && strcmp(as_of, since) >= 0;
        json_decref(doc);
        if (set)
            return;
        ck_assert_msg(harness_now_ms() < deadline, "%s has no as_of after 30 s", path);
        harness_sleep_ms(100);
    }
}

/* A recompute of the present queues the base's jobs after it: the summary,
 * the distributions and the cohorts are computed without being asked. */
START_TEST(a_recompute_of_the_present_brings_the_base_pages_after_it)
{
    create_customer_with_purchases();
    http_response r = post_empty(&srv, "/v1/metrics/recompute", writer.secret);
    ck_assert_msg(r.status == 202, "%ld %.300s", r.status, r.body);
    char where[64];
    snprintf(where, sizeof where, "%s", http_response_header(&r, "Location"));
    http_response_free(&r);
    json_t *job = wait_for_job(&srv, where);
    ck_assert_str_eq(json_string_value(json_object_get(job, "state")), "succeeded");
    char since[64];
    snprintf(since, sizeof since, "%s",
             json_string_value(json_object_get(json_object_get(job, "result"), "as_of")));
    json_decref(job);
    wait_for_as_of("/v1/metrics/summary", since);
    wait_for_as_of("/v1/metrics/distribution?measure=historic_value", since);
    wait_for_as_of("/v1/metrics/cohorts", since);
    wait_for_as_of("/v1/metrics/market-basket", since);
}
END_TEST

START_TEST(recompute_refuses_what_it_cannot_do)
{
    http_response r =
        http_post_json(&srv, "/v1/metrics/recompute", reader.secret, "{}");
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    r = http_post_json(&srv, "/v1/metrics/recompute", writer.secret,
                       "{\"as_of\": \"2999-01-01T00:00:00Z\"}");
    json_t *p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/as_of"));
    json_decref(p);
    http_response_free(&r);
    r = http_post_json(&srv, "/v1/metrics/recompute", writer.secret, "{\"asof\": \"x\"}");
    p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/asof"));
    json_decref(p);
    http_response_free(&r);
    r = http_post_json(&srv, "/v1/metrics/recompute", writer.secret, "{\"refit\": \"no\"}");
    p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/refit"));
    json_decref(p);
    http_response_free(&r);
    r = http_post_json(&srv, "/v1/metrics/recompute", writer.secret,
                       "{\"as_of\": \"yesterday\"}");
    json_decref(assert_problem(&r, 422));
    http_response_free(&r);
    r = http_get(&srv, "/v1/customers/9000000000000/metrics", reader.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

/* With no job runner in this crmd the first recompute stays queued: the
 * second is a 409 naming it. The first is cancelled afterwards. */
START_TEST(a_second_recompute_while_one_waits_is_a_conflict_naming_the_job)
{
    static const char *const env[] = {"CRMD_JOB_WORKERS=0", NULL};
    keys();
    crmd_server idle;
    crmd_fixture_start(&idle, env);
    http_response first = post_empty(&idle, "/v1/metrics/recompute", writer.secret);
    ck_assert_msg(first.status == 202, "%ld %.300s", first.status, first.body);
    char where[64];
    snprintf(where, sizeof where, "%s", http_response_header(&first, "Location"));
    http_response_free(&first);

    http_response second = http_post_json(&idle, "/v1/metrics/recompute", writer.secret, "{}");
    json_t *p = assert_problem(&second, 409);
    ck_assert_str_eq(http_response_header(&second, "Location"), where);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "detail")), where));
    json_decref(p);
    http_response_free(&second);

    char cancel[80];
    snprintf(cancel, sizeof cancel, "%s/cancel", where);
    http_response c = post_empty(&idle, cancel, writer.secret);
    ck_assert_msg(c.status == 200, "cancel: %ld %.300s", c.status, c.body);
    http_response_free(&c);
    crmd_fixture_stop(&idle);
}
END_TEST

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_test(tc, recompute_refuses_what_it_cannot_do);
    tcase_add_test(tc, a_recompute_is_a_job_that_ends_with_the_customers_metrics);
    tcase_add_test(tc, a_purchase_reaches_the_customers_metrics_within_seconds);
    tcase_add_test(tc, a_recompute_of_the_present_brings_the_base_pages_after_it);
    suite_add_tcase(s, tc);
    /* Without the fixture's crmd, whose job runner would take the job. */
    TCase *alone = tcase_create("no-runner");
    tcase_set_timeout(alone, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_test(alone, a_second_recompute_while_one_waits_is_a_conflict_naming_the_job);
    suite_add_tcase(s, alone);
    return s;
}

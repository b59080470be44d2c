/*
 * test_metrics_patterns.c — cohorts and market basket over real HTTP: the
 * job metrics_patterns run by crmd's own job runner (queued here in SQL: no
 * route starts it on its own) and followed at /v1/jobs/{id}, then the two
 * pages' shapes, their 422s and the scope they need. The figures
 * themselves are checked by hand in tests/unit/test_metrics_patterns.c;
 * here the database is shared with every other suite, so only what this
 * suite's own SKUs determine is checked exactly.
 */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static api_key reader, writer;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (reader.id == 0)
        ck_assert(api_key_create("metrics:read", &reader));
    if (writer.id == 0)
        ck_assert(api_key_create("customers:read,customers:write,touchpoints:write", &writer));
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

static json_t *get_ok(const char *path)
{
    http_response r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "GET %s: %ld %.300s", path, r.status, r.body);
    json_t *doc = http_response_json(&r);
    ck_assert_ptr_nonnull(doc);
    http_response_free(&r);
    return doc;
}

/* A customer with two orders of {a, b} and one of {a, a, c}. */
static void buy(const char *a, const char *b, const char *c)
{
    http_response r = http_post_json(&srv, "/v1/customers", writer.secret,
                                     "{\"first_name\": \"Basket\", \"last_name\": \"Buyer\"}");
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    json_t *customer = http_response_json(&r);
    long long id = json_integer_value(json_object_get(customer, "id"));
    json_decref(customer);
    http_response_free(&r);
    const char *baskets[][3] = {{a, b, b}, {a, b, b}, {a, a, c}};
    for (int i = 0; i < 3; i++) {
        char ev[48], body[768];
        harness_unique(ev, sizeof ev, "basket");
        snprintf(body, sizeof body,
                 "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"purchase\","
                 " \"direction\": \"inbound\", \"occurred_at\": \"2025-06-0%dT10:00:00Z\","
                 " \"source\": \"api-patterns\", \"event_id\": \"%s\", \"amount\": 10,"
                 " \"currency\": \"EUR\", \"items\": [{\"sku\": \"%s\", \"quantity\": 1},"
                 " {\"sku\": \"%s\", \"quantity\": 3}, {\"sku\": \"%s\", \"quantity\": 1}]}",
                 id, i + 1, ev, baskets[i][0], baskets[i][1], baskets[i][2]);
        r = http_post_json(&srv, "/v1/touchpoints", writer.secret, body);
        ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
        http_response_free(&r);
    }
}

/* Queues the job as of now and waits for crmd to run it. */
static void run_patterns_job(void)
{
    PGconn *db = harness_db_connect();
    long long id =
        harness_sql_number(db,
                           "INSERT INTO jobs (kind, params, exclusive) VALUES ('metrics_patterns',"
                           " jsonb_build_object('as_of', to_char(now() AT TIME ZONE 'UTC',"
                           " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')), 'metrics_patterns') RETURNING id",
                           NULL);
    PQfinish(db);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    long long deadline = harness_now_ms() + 30000;
    for (;;) {
        json_t *job = get_ok(path); /* metrics:read reads the kind's jobs */
        const char *state = json_string_value(json_object_get(job, "state"));
        ck_assert_ptr_nonnull(state);
        if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0) {
            ck_assert_msg(strcmp(state, "succeeded") == 0, "the job ended %s", state);
            ck_assert(json_is_integer(json_object_get(json_object_get(job, "result"), "orders")));
            json_decref(job);
            return;
        }
        json_decref(job);
        ck_assert_msg(harness_now_ms() < deadline, "the job did not end within 30 s");
        harness_sleep_ms(100);
    }
}

START_TEST(the_pages_answer_the_computed_patterns)
{
    char a[48], b[48], c[48];
    harness_unique(a, sizeof a, "sku-a");
    harness_unique(b, sizeof b, "sku-b");
    harness_unique(c, sizeof c, "sku-c");
    buy(a, b, c);
    run_patterns_job();

    char path[256];
    snprintf(path, sizeof path, "/v1/metrics/market-basket?sku=%s&limit=10", a);
    json_t *page = get_ok(path);
    ck_assert(json_is_string(json_object_get(page, "as_of")));
    ck_assert(json_is_string(json_object_get(page, "computed_at")));
    ck_assert_str_eq(json_string_value(json_object_get(page, "sku")), a);
    ck_assert_int_eq(json_integer_value(json_object_get(page, "sku_orders")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(page, "min_pair_orders")), 2);
    double orders = (double)json_integer_value(json_object_get(page, "orders"));
    ck_assert(orders >= 3);
    /* a -> b in 2 of a's 3 orders; a -> c once only: cut. */
    json_t *data = json_object_get(page, "data");
    ck_assert_int_eq(json_array_size(data), 1);
    json_t *rule = json_array_get(data, 0);
    ck_assert_str_eq(json_string_value(json_object_get(rule, "a")), a);
    ck_assert_str_eq(json_string_value(json_object_get(rule, "b")), b);
    ck_assert_int_eq(json_integer_value(json_object_get(rule, "orders")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(rule, "a_orders")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(rule, "b_orders")), 2);
    ck_assert_double_eq_tol(json_number_value(json_object_get(rule, "support")), 2 / orders, 1e-12);
    ck_assert_double_eq_tol(json_number_value(json_object_get(rule, "confidence")), 2.0 / 3, 1e-12);
    ck_assert_double_eq_tol(json_number_value(json_object_get(rule, "lift")), 2 * orders / (3 * 2),
                            1e-9);
    json_decref(page);

    /* Every rule: an array of at most limit, ordered by lift. */
    page = get_ok("/v1/metrics/market-basket?limit=5&min_lift=0&min_support=0&min_confidence=0");
    ck_assert(json_is_null(json_object_get(page, "sku")));
    data = json_object_get(page, "data");
    ck_assert(json_array_size(data) >= 1 && json_array_size(data) <= 5);
    for (size_t i = 1; i < json_array_size(data); i++)
        ck_assert(json_number_value(json_object_get(json_array_get(data, i), "lift")) <=
                  json_number_value(json_object_get(json_array_get(data, i - 1), "lift")));
    json_decref(page);

    /* An SKU nobody bought: 200, nothing. */
    page = get_ok("/v1/metrics/market-basket?sku=no-such-sku-anywhere");
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(page, "sku_orders")), 0);
    json_decref(page);

    /* June 2025 holds this suite's customer's cohort (and maybe others'). */
    page = get_ok("/v1/metrics/cohorts?from=2025-06&to=2025-06&months=2");
    ck_assert_str_eq(json_string_value(json_object_get(page, "from")), "2025-06");
    ck_assert_str_eq(json_string_value(json_object_get(page, "to")), "2025-06");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "months")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(page, "currency")), "EUR");
    data = json_object_get(page, "data");
    ck_assert_int_eq(json_array_size(data), 1);
    json_t *june = json_array_get(data, 0);
    ck_assert_str_eq(json_string_value(json_object_get(june, "cohort")), "2025-06");
    ck_assert_int_ge(json_integer_value(json_object_get(june, "customers")), 1);
    json_t *retention = json_object_get(june, "retention");
    ck_assert_int_eq(json_array_size(retention), 3);
    ck_assert_double_eq(json_number_value(json_array_get(retention, 0)), 1.0);
    ck_assert_int_eq(json_array_size(json_object_get(june, "purchasers")), 3);
    ck_assert_int_eq(json_array_size(json_object_get(june, "revenue")), 3);
    ck_assert(json_is_number(json_object_get(june, "revenue_total")));
    ck_assert(json_is_integer(json_object_get(june, "unrated")));
    json_decref(page);

    page = get_ok("/v1/metrics/cohorts");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "months")), 12);
    json_decref(page);
}
END_TEST

/* A 422 naming field for GET path. */
static void assert_refused(const char *path, const char *field)
{
    http_response r = http_get(&srv, path, reader.secret);
    json_t *p = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(p, field), "%s: no error names %s: %.300s", path, field,
                  r.body);
    json_decref(p);
    http_response_free(&r);
}

START_TEST(bad_parameters_are_refused_naming_them)
{
    assert_refused("/v1/metrics/cohorts?months=0", "months");
    assert_refused("/v1/metrics/cohorts?months=121", "months");
    assert_refused("/v1/metrics/cohorts?months=twelve", "months");
    assert_refused("/v1/metrics/cohorts?from=2025-13", "from");
    assert_refused("/v1/metrics/cohorts?to=2025-1", "to");
    assert_refused("/v1/metrics/cohorts?from=2025-06&to=2025-05", "from");
    assert_refused("/v1/metrics/cohorts?from=2000-01&to=2025-01", "from");
    assert_refused("/v1/metrics/cohorts?cohort=2025-01", "cohort");
    assert_refused("/v1/metrics/market-basket?min_support=1.5", "min_support");
    assert_refused("/v1/metrics/market-basket?min_support=-0.1", "min_support");
    assert_refused("/v1/metrics/market-basket?min_confidence=abc", "min_confidence");
    assert_refused("/v1/metrics/market-basket?min_lift=-1", "min_lift");
    assert_refused("/v1/metrics/market-basket?min_lift=inf", "min_lift");
    assert_refused("/v1/metrics/market-basket?limit=0", "limit");
    assert_refused("/v1/metrics/market-basket?limit=1001", "limit");
    assert_refused("/v1/metrics/market-basket?sku=", "sku");
    assert_refused("/v1/metrics/market-basket?min_suport=0.1", "min_suport");
}
END_TEST

START_TEST(the_pages_need_metrics_read)
{
    static const char *const paths[] = {"/v1/metrics/cohorts", "/v1/metrics/market-basket"};
    for (size_t i = 0; i < 2; i++) {
        http_response r = http_get(&srv, paths[i], writer.secret);
        json_decref(assert_problem(&r, 403));
        http_response_free(&r);
        r = http_get(&srv, paths[i], NULL);
        json_decref(assert_problem(&r, 401));
        http_response_free(&r);
    }
}
END_TEST

Suite *metrics_patterns_suite(void)
{
    Suite *s = suite_create("metrics_patterns");
    TCase *tc = tcase_create("patterns");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_test(tc, bad_parameters_are_refused_naming_them);
    tcase_add_test(tc, the_pages_need_metrics_read);
    tcase_add_test(tc, the_pages_answer_the_computed_patterns);
    suite_add_tcase(s, tc);
    return s;
}

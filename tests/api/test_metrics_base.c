/*
 * test_metrics_base.c — the whole base's pages over real HTTP: the shapes
 * of the summary, the distribution and the time series, before and after
 * crmd's own job runner ran the job metrics_base; the errors (scope,
 * unknown measure or interval, bad bins, edges or period, a customer that
 * does not exist). The figures themselves are checked by hand and against
 * numpy in tests/unit/test_metrics_base.c; the database here is shared
 * with the other suites, so only shapes are checked.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static api_key reader, outsider, customers_rw;

static void keys(void)
{
    if (reader.id == 0)
        ck_assert(api_key_create("metrics:read", &reader));
    if (outsider.id == 0)
        ck_assert(api_key_create("customers:read", &outsider));
    if (customers_rw.id == 0)
        ck_assert(api_key_create("customers:read,customers:write", &customers_rw));
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

static json_t *get_ok(const char *path)
{
    http_response r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "GET %s: %ld %.300s", path, r.status, r.body);
    json_t *doc = http_response_json(&r);
    http_response_free(&r);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

/* GET path is a 422 naming field. */
static void refused(const char *path, const char *field)
{
    http_response r = http_get(&srv, path, reader.secret);
    json_t *p = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(p, field), "GET %s does not name %s: %.300s", path, field,
                  r.body);
    json_decref(p);
    http_response_free(&r);
}

static bool has(const json_t *obj, const char *key)
{
    return json_object_get(obj, key) != NULL;
}

/* Queues the job as crm_metrics_base_submit does (no route queues it:
 * crmd queues it itself) and waits until crmd's runner has run it. */
static void run_base_job(void)
{
    PGconn *db = harness_db_connect();
    long long id =
        harness_sql_number(db,
                           "INSERT INTO jobs (kind, params, exclusive) VALUES ('metrics_base',"
                           " jsonb_build_object('as_of', to_char(now() AT TIME ZONE 'UTC',"
                           " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')), 'metrics_base') RETURNING id",
                           NULL);
    PQfinish(db);
    char where[48];
    snprintf(where, sizeof where, "/v1/jobs/%lld", id);
    long long deadline = harness_now_ms() + 60000;
    for (;;) {
        json_t *job = get_ok(where);
        const char *state = json_string_value(json_object_get(job, "state"));
        ck_assert_ptr_nonnull(state);
        bool ended = strcmp(state, "queued") != 0 && strcmp(state, "running") != 0;
        if (ended)
            ck_assert_msg(strcmp(state, "succeeded") == 0, "the job ended %s", state);
        json_decref(job);
        if (ended)
            return;
        ck_assert_msg(harness_now_ms() < deadline, "the job did not end within 60 s");
        harness_sleep_ms(100);
    }
}

START_TEST(the_summary_has_its_shape)
{
    json_t *s = get_ok("/v1/metrics/summary?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z");
    static const char *const members[] = {
        "as_of",    "computed_at", "currency", "customers", "active_customers",
        "by_stage", "nps_latest",  "value",    "all_time",  "period"};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
        ck_assert_msg(has(s, members[i]), "no %s", members[i]);
    json_t *period = json_object_get(s, "period");
    ck_assert_str_eq(json_string_value(json_object_get(period, "from")),
                     "2026-01-01T00:00:00.000Z");
    ck_assert_str_eq(json_string_value(json_object_get(period, "to")), "2026-02-01T00:00:00.000Z");
    ck_assert_int_eq(json_integer_value(json_object_get(period, "days")), 31);
    json_t *churn = json_object_get(period, "churn");
    ck_assert(has(churn, "rate") && has(churn, "reason") && has(churn, "active_at_start"));
    ck_assert(has(json_object_get(period, "nps"), "score"));
    json_decref(s);
}
END_TEST

START_TEST(the_pages_after_the_job)
{
    run_base_job();
    json_t *s = get_ok("/v1/metrics/summary");
    ck_assert(json_is_string(json_object_get(s, "computed_at")));
    ck_assert(json_is_integer(json_object_get(s, "customers")));
    ck_assert(json_is_object(json_object_get(s, "by_stage")));
    ck_assert(json_is_integer(json_object_get(json_object_get(s, "all_time"), "days_recorded")));
    json_decref(s);

    json_t *d = get_ok("/v1/metrics/distribution?measure=historic_value");
    ck_assert_str_eq(json_string_value(json_object_get(d, "measure")), "historic_value");
    ck_assert(json_is_string(json_object_get(d, "computed_at")));
    ck_assert(json_is_integer(json_object_get(d, "n")));
    json_t *h = json_object_get(d, "histogram");
    ck_assert(json_is_object(h));
    ck_assert(json_is_false(json_object_get(h, "live")));
    ck_assert_int_eq(json_array_size(json_object_get(h, "counts")) + 1 -
                         (json_array_size(json_object_get(h, "edges")) == 0),
                     json_array_size(json_object_get(h, "edges")));
    json_decref(d);

    /* A customer the metrics have not covered: placed, with null members. */
    http_response r =
        http_post_json(&srv, "/v1/customers", customers_rw.secret, "{\"first_name\": \"Placed\"}");
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    json_t *c = http_response_json(&r);
    long long id = json_integer_value(json_object_get(c, "id"));
    json_decref(c);
    http_response_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/metrics/distribution?measure=recency_days&customer_id=%lld",
             id);
    d = get_ok(path);
    json_t *place = json_object_get(d, "customer");
    ck_assert_int_eq(json_integer_value(json_object_get(place, "customer_id")), id);
    ck_assert(json_is_null(json_object_get(place, "value")));
    ck_assert(has(place, "percentile_rank") && has(place, "z_score") && has(place, "bin"));
    json_decref(d);

    json_t *t = get_ok("/v1/metrics/timeseries?measure=orders");
    ck_assert_str_eq(json_string_value(json_object_get(t, "interval")), "day");
    ck_assert_int_eq(json_array_size(json_object_get(t, "points")), 90);
    json_decref(t);
}
END_TEST

START_TEST(a_histogram_of_given_edges_is_counted_live)
{
    json_t *d = get_ok("/v1/metrics/distribution?measure=purchases&edges=0,1,10,1e6");
    json_t *h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "edges");
    ck_assert(json_is_true(json_object_get(h, "live")));
    ck_assert_int_eq(json_array_size(json_object_get(h, "counts")), 3);
    ck_assert(json_is_integer(json_object_get(h, "below")));
    json_decref(d);
    d = get_ok("/v1/metrics/distribution?measure=frequency&bins=7");
    h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "bins");
    size_t bins = json_array_size(json_object_get(h, "counts"));
    ck_assert_msg(bins == 7 || bins == 0, "%zu bins", bins);
    json_decref(d);
}
END_TEST

START_TEST(the_time_series_has_a_point_per_interval)
{
    static const struct {
        const char *interval;
        size_t points;
    } cases[] = {{"day", 7}, {"week", 2}, {"month", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[160];
        snprintf(path, sizeof path,
                 "/v1/metrics/timeseries?measure=nps&interval=%s"
                 "&from=2026-01-01T00:00:00Z&to=2026-01-08T00:00:00Z",
                 cases[i].interval);
        json_t *t = get_ok(path);
        json_t *points = json_object_get(t, "points");
        ck_assert_int_eq(json_array_size(points), cases[i].points);
        json_t *first = json_array_get(points, 0);
        ck_assert_str_eq(json_string_value(json_object_get(first, "start")),
                         "2026-01-01T00:00:00.000Z");
        ck_assert(has(first, "value") && has(first, "responses") && has(first, "days_recorded"));
        json_decref(t);
    }
}
END_TEST

START_TEST(bad_parameters_are_422_naming_them)
{
    refused("/v1/metrics/distribution?measure=lifetime_value", "measure");
    refused("/v1/metrics/distribution", "measure");
    refused("/v1/metrics/distribution?measure=frequency&bins=0", "bins");
    refused("/v1/metrics/distribution?measure=frequency&bins=201", "bins");
    refused("/v1/metrics/distribution?measure=frequency&bins=many", "bins");
    refused("/v1/metrics/distribution?measure=frequency&edges=3", "edges");
    refused("/v1/metrics/distribution?measure=frequency&edges=3,2", "edges");
    refused("/v1/metrics/distribution?measure=frequency&edges=1,inf", "edges");
    refused("/v1/metrics/distribution?measure=frequency&edges=1,2&bins=4", "edges");
    refused("/v1/metrics/distribution?measure=frequency&customer_id=x", "customer_id");
    refused("/v1/metrics/distribution?measure=frequency&bin=3", "bin");
    refused("/v1/metrics/timeseries?measure=customers", "measure");
    refused("/v1/metrics/timeseries?measure=orders&interval=year", "interval");
    refused("/v1/metrics/timeseries?measure=orders&from=2026-02-01T00:00:00Z"
            "&to=2026-01-01T00:00:00Z",
            "from");
    refused("/v1/metrics/timeseries?measure=orders&from=1990-01-01T00:00:00Z"
            "&to=2026-01-01T00:00:00Z",
            "from");
    refused("/v1/metrics/timeseries?measure=orders&to=soon", "to");
    refused("/v1/metrics/summary?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from");
    refused("/v1/metrics/summary?from=2026-02-30T00:00:00Z", "from");
    http_response r =
        http_get(&srv, "/v1/metrics/distribution?measure=frequency&customer_id=9000000000000",
                 reader.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

START_TEST(the_pages_need_metrics_read)
{
    static const char *const paths[] = {"/v1/metrics/summary",
                                        "/v1/metrics/distribution?measure=frequency",
                                        "/v1/metrics/timeseries?measure=orders"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        http_response r = http_get(&srv, paths[i], outsider.secret);
        json_decref(assert_problem(&r, 403));
        http_response_free(&r);
        r = http_get(&srv, paths[i], NULL);
        json_decref(assert_problem(&r, 401));
        http_response_free(&r);
    }
}
END_TEST

Suite *metrics_base_suite(void)
{
    Suite *s = suite_create("metrics_base");
    TCase *tc = tcase_create("metrics_base");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_test(tc, the_summary_has_its_shape);
    tcase_add_test(tc, the_pages_after_the_job);
    tcase_add_test(tc, a_histogram_of_given_edges_is_counted_live);
    tcase_add_test(tc, the_time_series_has_a_point_per_interval);
    tcase_add_test(tc, bad_parameters_are_422_naming_them);
    tcase_add_test(tc, the_pages_need_metrics_read);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_ops.c — the operational endpoints (/healthz, /readyz, /metrics,
 * /openapi.yaml) and what every response carries (X-Request-Id, HEAD).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPS_POOL_SIZE "4"

static crmd_server srv;

static void setup(void)
{
    static const char *const env[] = {"CRMD_POOL_SIZE=" OPS_POOL_SIZE, NULL};
    crmd_fixture_start(&srv, env);
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

static bool is_hex32(const char *s)
{
    if (s == NULL || strlen(s) != 32)
        return false;
    return strspn(s, "0123456789abcdef") == 32;
}

/* Sum of the samples of metric whose labels contain every one of labels
 * (NULL-terminated); -1 when there is none. */
static long long metric_sum(const char *text, const char *metric, const char *const *labels)
{
    long long sum = -1;
    size_t mlen = strlen(metric);
    for (const char *line = text; *line != '\0';) {
        size_t len = strcspn(line, "\n");
        if (strncmp(line, metric, mlen) == 0 && line[mlen] == '{') {
            const char *close = memchr(line, '}', len);
            bool all = close != NULL;
            for (const char *const *l = labels; all && *l != NULL; l++) {
                const char *hit = strstr(line, *l);
                all = hit != NULL && hit < close;
            }
            if (all)
                sum = (sum < 0 ? 0 : sum) + atoll(close + 1);
        }
        line += len;
        if (*line == '\n')
            line++;
    }
    return sum;
}

static long long healthz_count(void)
{
    static const char *const labels[] = {"route=\"/healthz\"", "status=\"200\"", NULL};
    http_response r = http_get(&srv, "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    long long n = metric_sum(r.body, "crmd_http_requests_total", labels);
    http_response_free(&r);
    return n;
}

START_TEST(healthz_answers_200_with_json_status_ok)
{
    http_response r = http_get(&srv, "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "Content-Type"), "application/json");
    json_t *doc = http_response_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "status")), "ok");
    json_decref(doc);
    http_response_free(&r);
}
END_TEST

START_TEST(readyz_answers_200_ready_while_the_database_is_reachable)
{
    http_response r = http_get(&srv, "/readyz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "Content-Type"), "application/json");
    json_t *doc = http_response_json(&r);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "status")), "ready");
    json_decref(doc);
    http_response_free(&r);
}
END_TEST

START_TEST(metrics_are_served_as_prometheus_text)
{
    http_response r = http_get(&srv, "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    const char *ct = http_response_header(&r, "Content-Type");
    ck_assert_ptr_nonnull(ct);
    ck_assert_msg(strncmp(ct, "text/plain", 10) == 0 && strstr(ct, "version=0.0.4") != NULL,
                  "Content-Type: %s", ct);
    ck_assert_ptr_nonnull(strstr(r.body, "# TYPE crmd_http_requests_total counter\n"));
    http_response_free(&r);
}
END_TEST

START_TEST(metrics_count_a_healthz_request_under_its_route_and_status)
{
    long long before = healthz_count();
    http_response r = http_get(&srv, "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);

    /* The count is taken when the request completes, just after the
     * client has the answer: allow it a moment. */
    long long deadline = harness_now_ms() + 2000, after;
    while ((after = healthz_count()) < before + 1 && harness_now_ms() < deadline)
        harness_sleep_ms(20);
    ck_assert_msg(after >= before + 1 && after >= 1,
                  "crmd_http_requests_total for route=\"/healthz\" went from %lld to %lld", before,
                  after);
}
END_TEST

START_TEST(metrics_expose_a_latency_histogram_per_route)
{
    static const char *const inf[] = {"route=\"/healthz\"", "le=\"+Inf\"", NULL};
    static const char *const route[] = {"route=\"/healthz\"", NULL};
    http_response r = http_get(&srv, "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "# TYPE crmd_http_request_duration_seconds histogram\n"));
    long long total = metric_sum(r.body, "crmd_http_request_duration_seconds_bucket", inf);
    long long count = metric_sum(r.body, "crmd_http_request_duration_seconds_count", route);
    /* Startup polled /healthz at least once; the +Inf bucket holds every
     * observation, as _count does. */
    ck_assert_int_ge(total, 1);
    ck_assert_int_eq(count, total);
    ck_assert_int_ge(metric_sum(r.body, "crmd_http_request_duration_seconds_sum", route), 0);
    http_response_free(&r);
}
END_TEST

START_TEST(metrics_report_the_configured_database_pool_size)
{
    http_response r = http_get(&srv, "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.body, "\ncrmd_db_pool_size " OPS_POOL_SIZE "\n") != NULL,
                  "no 'crmd_db_pool_size " OPS_POOL_SIZE "' line in:\n%.2000s", r.body);
    http_response_free(&r);
}
END_TEST

START_TEST(openapi_contract_is_served_as_application_yaml)
{
    http_response r = http_get(&srv, "/openapi.yaml", NULL);
    ck_assert_int_eq(r.status, 200);
    const char *ct = http_response_header(&r, "Content-Type");
    ck_assert_ptr_nonnull(ct);
    ck_assert_msg(strncmp(ct, "application/yaml", 16) == 0, "Content-Type: %s", ct);
    ck_assert_msg(strncmp(r.body, "openapi:", 8) == 0, "the document starts with: %.40s", r.body);
    http_response_free(&r);
}
END_TEST

START_TEST(request_id_sent_by_the_client_is_echoed)
{
    static const char *const headers[] = {"X-Request-Id: client-chosen_id.42:abc", NULL};
    http_call call = {.path = "/healthz", .headers = headers};
    http_response r = http_send(&srv, &call);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "X-Request-Id"), "client-chosen_id.42:abc");
    http_response_free(&r);
}
END_TEST

START_TEST(request_id_of_63_characters_is_echoed)
{
    char id[64], header[96];
    memset(id, 'r', 63);
    id[63] = '\0';
    snprintf(header, sizeof header, "X-Request-Id: %s", id);
    const char *headers[] = {header, NULL};
    http_call call = {.path = "/healthz", .headers = headers};
    http_response r = http_send(&srv, &call);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "X-Request-Id"), id);
    http_response_free(&r);
}
END_TEST

START_TEST(request_id_is_generated_as_32_hex_digits_when_absent)
{
    http_response a = http_get(&srv, "/healthz", NULL);
    http_response b = http_get(&srv, "/healthz", NULL);
    const char *ida = http_response_header(&a, "X-Request-Id");
    const char *idb = http_response_header(&b, "X-Request-Id");
    ck_assert_msg(is_hex32(ida), "X-Request-Id: %s", ida ? ida : "(none)");
    ck_assert_msg(is_hex32(idb), "X-Request-Id: %s", idb ? idb : "(none)");
    ck_assert_str_ne(ida, idb);
    http_response_free(&a);
    http_response_free(&b);
}
END_TEST

static const char *const unacceptable_ids[] = {
    "X-Request-Id: has space",
    "X-Request-Id: quote\"inside",
    "X-Request-Id: slash/inside",
    "X-Request-Id: <script>",
    /* 64 characters: one more than the server keeps */
    "X-Request-Id: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

START_TEST(request_id_that_is_not_acceptable_is_replaced_by_a_generated_one)
{
    const char *headers[] = {unacceptable_ids[_i], NULL};
    http_call call = {.path = "/healthz", .headers = headers};
    http_response r = http_send(&srv, &call);
    ck_assert_int_eq(r.status, 200);
    const char *id = http_response_header(&r, "X-Request-Id");
    ck_assert_msg(is_hex32(id), "for '%s' the server answered X-Request-Id: %s", headers[0],
                  id ? id : "(none)");
    http_response_free(&r);
}
END_TEST

START_TEST(head_healthz_answers_200_without_a_body)
{
    size_t len = 0;
    char *raw = http_raw_exchange(
        &srv, "HEAD /healthz HTTP/1.1\r\nHost: crmd\r\nConnection: close\r\n\r\n", &len, 3000);
    ck_assert_ptr_nonnull(raw);
    ck_assert_msg(strncmp(raw, "HTTP/1.1 200 ", 13) == 0, "answer: %.300s", raw);
    const char *end = strstr(raw, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    ck_assert_msg(end + 4 == raw + len, "HEAD answer carries %zu body bytes: %.300s",
                  (size_t)(raw + len - (end + 4)), end + 4);
    free(raw);
}
END_TEST

/* The gauge's value in a /metrics text, or -1 when it is absent. */
static double sync_lag(void)
{
    http_response r = http_get(&srv, "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    const char *line = strstr(r.body, "\ncrmd_sync_lag_seconds ");
    double v = line != NULL ? strtod(line + strlen("\ncrmd_sync_lag_seconds "), NULL) : -1;
    http_response_free(&r);
    return v;
}

/* A transaction that holds a transaction id holds both sync feeds back
 * (review C7): /metrics shows how long the oldest one has, so an operator
 * sees a stall before a sync app does. */
START_TEST(metrics_show_how_long_a_transaction_holds_the_sync_feeds_back)
{
    ck_assert_msg(sync_lag() >= 0, "no crmd_sync_lag_seconds in /metrics");
    PGconn *holder = harness_db_connect();
    PQclear(PQexec(holder, "BEGIN"));
    PGresult *res = PQexec(holder, "SELECT pg_current_xact_id()"); /* takes an xid */
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    harness_sleep_ms(1500);
    double held = sync_lag();
    ck_assert_msg(held >= 1.4, "crmd_sync_lag_seconds %.3f while a transaction was 1.5 s old",
                  held);
    PQclear(PQexec(holder, "COMMIT"));
    PQfinish(holder);
    double after = sync_lag();
    ck_assert_msg(after >= 0 && after < held, "crmd_sync_lag_seconds %.3f after the commit, %.3f "
                  "before", after, held);
}
END_TEST

/* The value of gauge name in /metrics, or -1 when it is absent. */
static double gauge(const char *name)
{
    http_response r = http_get(&srv, "/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    char key[96];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *line = strstr(r.body, key);
    double v = line != NULL ? strtod(line + strlen(key), NULL) : -1;
    http_response_free(&r);
    return v;
}

/* The segments' queue of batches shows in /metrics: how many wait and how
 * old the oldest is; an idle server's upkeep leaves none. */
START_TEST(metrics_show_the_segments_queue)
{
    double batches = -1, age = -1;
    for (int i = 0; i < 50; i++) {
        batches = gauge("crmd_segments_queue_batches");
        age = gauge("crmd_segments_queue_seconds");
        if (batches == 0)
            break;
        harness_sleep_ms(100);
    }
    ck_assert_msg(batches == 0, "crmd_segments_queue_batches %.0f on an idle server", batches);
    ck_assert_msg(age == 0, "crmd_segments_queue_seconds %.3f with no batch waiting", age);
}
END_TEST

Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, healthz_answers_200_with_json_status_ok);
    tcase_add_test(tc, readyz_answers_200_ready_while_the_database_is_reachable);
    tcase_add_test(tc, metrics_are_served_as_prometheus_text);
    tcase_add_test(tc, metrics_count_a_healthz_request_under_its_route_and_status);
    tcase_add_test(tc, metrics_expose_a_latency_histogram_per_route);
    tcase_add_test(tc, metrics_report_the_configured_database_pool_size);
    tcase_add_test(tc, metrics_show_how_long_a_transaction_holds_the_sync_feeds_back);
    tcase_add_test(tc, metrics_show_the_segments_queue);
    tcase_add_test(tc, openapi_contract_is_served_as_application_yaml);
    tcase_add_test(tc, request_id_sent_by_the_client_is_echoed);
    tcase_add_test(tc, request_id_of_63_characters_is_echoed);
    tcase_add_test(tc, request_id_is_generated_as_32_hex_digits_when_absent);
    tcase_add_loop_test(tc, request_id_that_is_not_acceptable_is_replaced_by_a_generated_one, 0,
                        sizeof unacceptable_ids / sizeof unacceptable_ids[0]);
    tcase_add_test(tc, head_healthz_answers_200_without_a_body);
    suite_add_tcase(s, tc);
    return s;
}

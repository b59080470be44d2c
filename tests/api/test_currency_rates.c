/*
 * test_currency_rates.c — the rate table over real HTTP
 * (/v1/metrics/currency-rates): every status of its four operations, a rate
 * that changes the reporting-currency amounts at the next recompute (and
 * not before) and at the follower's next update of a customer, and
 * ?expand=metrics on a customer read (its scope, its document, its ETag).
 *
 * Where a test compares metrics before and after a recompute, its crmd runs
 * without the follower (CRMD_METRICS_FOLLOW_MS=0), which would otherwise
 * update the customer again at any moment after the recompute.
 *
 * The rates used are USD, GBP and NOK; they are removed before each test.
 * crmd's reporting currency is the default, EUR.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static api_key writer, reader, outsider, customers_only, customers_metrics;

static void keys(void)
{
    if (writer.id == 0)
        ck_assert(api_key_create("metrics:read,metrics:write", &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("metrics:read", &reader));
    if (outsider.id == 0)
        ck_assert(api_key_create("customers:read,customers:write,touchpoints:write", &outsider));
    if (customers_only.id == 0)
        ck_assert(api_key_create("customers:read", &customers_only));
    if (customers_metrics.id == 0)
        ck_assert(api_key_create("customers:read,metrics:read", &customers_metrics));
}

static void forget_rates(void)
{
    PGconn *db = harness_db_connect();
    PQclear(PQexec(db, "DELETE FROM currency_rates WHERE currency IN ('USD', 'GBP', 'NOK')"));
    PQfinish(db);
}

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    keys();
    forget_rates();
}

static void setup_without_follower(void)
{
    static const char *const env[] = {"CRMD_METRICS_FOLLOW_MS=0", NULL};
    crmd_fixture_start(&srv, env);
    keys();
    forget_rates();
}

static void teardown(void)
{
    forget_rates();
    crmd_fixture_stop(&srv);
}

#define RATES "/v1/metrics/currency-rates"

/* PUT body to path with key, and If-Match when if_match is not NULL. */
static http_response put(const char *path, const char *key, const char *body, const char *if_match)
{
    char header[128];
    const char *headers[] = {header, NULL};
    snprintf(header, sizeof header, "If-Match: %s", if_match ? if_match : "");
    http_call call = {.method = "PUT",
                      .path = path,
                      .api_key = key,
                      .body = body,
                      .headers = if_match ? headers : NULL};
    return http_send(&srv, &call);
}

static http_response delete_with(const char *path, const char *key, const char *if_match)
{
    char header[128];
    const char *headers[] = {header, NULL};
    snprintf(header, sizeof header, "If-Match: %s", if_match ? if_match : "");
    http_call call = {.method = "DELETE", .path = path, .api_key = key,
                      .headers = if_match ? headers : NULL};
    return http_send(&srv, &call);
}

/* Asserts r is status with a problem naming field (NULL: any), frees r. */
static void expect_problem(http_response *r, long status, const char *field)
{
    json_t *p = assert_problem(r, status);
    if (field != NULL)
        ck_assert_msg(problem_names_field(p, field), "the %ld does not name '%s': %.300s", status,
                      field, r->body);
    json_decref(p);
    http_response_free(r);
}

/* The rate document of a 200/201 r, checked against its ETag; *etag gets
 * the header. */
static json_t *rate_of(const http_response *r, char *etag, size_t size)
{
    const char *h = http_response_header(r, "ETag");
    ck_assert_ptr_nonnull(h);
    snprintf(etag, size, "%s", h);
    json_t *doc = http_response_json(r);
    ck_assert_ptr_nonnull(doc);
    char want[40];
    snprintf(want, sizeof want, "\"%lld\"",
             (long long)json_integer_value(json_object_get(doc, "version")));
    ck_assert_str_eq(etag, want);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "reporting_currency")), "EUR");
    return doc;
}

START_TEST(a_rate_is_created_read_replaced_listed_and_removed)
{
    http_response r = http_get(&srv, RATES "/USD", reader.secret);
    expect_problem(&r, 404, NULL);

    r = put(RATES "/USD", writer.secret, "{\"rate\": 0.92}", NULL);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "Location"), RATES "/USD");
    char etag1[40], etag2[40], etag[40];
    json_t *doc = rate_of(&r, etag1, sizeof etag1);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "currency")), "USD");
    ck_assert(json_number_value(json_object_get(doc, "rate")) == 0.92);
    ck_assert_ptr_nonnull(strstr(r.body, "\"rate\":0.92,")); /* not 0.92000000000000004 */
    json_decref(doc);
    http_response_free(&r);

    r = put(RATES "/USD", writer.secret, "{\"rate\": 0.95}", NULL);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    ck_assert_ptr_null(http_response_header(&r, "Location"));
    json_decref(rate_of(&r, etag2, sizeof etag2));
    ck_assert_str_ne(etag1, etag2);
    http_response_free(&r);

    r = http_get(&srv, RATES "/USD", reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    doc = rate_of(&r, etag, sizeof etag);
    ck_assert_str_eq(etag, etag2);
    ck_assert(json_number_value(json_object_get(doc, "rate")) == 0.95);
    json_decref(doc);
    http_response_free(&r);

    r = put(RATES "/GBP", writer.secret, "{\"rate\": 1.17}", NULL);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    http_response_free(&r);

    /* The list, one rate a page: GBP before USD, each with the reporting currency. */
    r = http_get(&srv, RATES "?limit=200", reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    json_t *page = http_response_json(&r);
    http_response_free(&r);
    ck_assert(json_is_null(json_object_get(page, "next_cursor")));
    int gbp = -1, usd = -1;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(page, "data"), i, item) {
        const char *c = json_string_value(json_object_get(item, "currency"));
        ck_assert_str_eq(json_string_value(json_object_get(item, "reporting_currency")), "EUR");
        if (strcmp(c, "GBP") == 0)
            gbp = (int)i;
        if (strcmp(c, "USD") == 0)
            usd = (int)i;
    }
    ck_assert_int_ge(gbp, 0);
    ck_assert_int_gt(usd, gbp);
    json_decref(page);

    r = http_get(&srv, RATES "?limit=1", reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    page = http_response_json(&r);
    http_response_free(&r);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 1);
    const char *next = json_string_value(json_object_get(page, "next_cursor"));
    ck_assert_ptr_nonnull(next);
    char path[600];
    snprintf(path, sizeof path, RATES "?limit=1&after=%s", next);
    json_decref(page);
    r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    http_response_free(&r);

    r = delete_with(RATES "/USD", writer.secret, NULL);
    ck_assert_msg(r.status == 204, "%ld %.300s", r.status, r.body);
    ck_assert_uint_eq(r.body_len, 0);
    http_response_free(&r);
    r = delete_with(RATES "/USD", writer.secret, NULL);
    expect_problem(&r, 404, NULL);
    r = http_get(&srv, RATES "/USD", reader.secret);
    expect_problem(&r, 404, NULL);
}
END_TEST

START_TEST(if_match_makes_a_write_conditional)
{
    http_response r = put(RATES "/NOK", writer.secret, "{\"rate\": 0.085}", "*");
    expect_problem(&r, 412, NULL); /* nothing to match */
    r = http_get(&srv, RATES "/NOK", reader.secret);
    expect_problem(&r, 404, NULL);

    r = put(RATES "/NOK", writer.secret, "{\"rate\": 0.085}", NULL);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    char first[40], second[40];
    json_decref(rate_of(&r, first, sizeof first));
    http_response_free(&r);

    r = put(RATES "/NOK", writer.secret, "{\"rate\": 0.086}", first);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    json_decref(rate_of(&r, second, sizeof second));
    http_response_free(&r);

    /* The first tag is stale now: 412 naming the current one, nothing written. */
    r = put(RATES "/NOK", writer.secret, "{\"rate\": 9}", first);
    json_t *p = assert_problem(&r, 412);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "detail")), second));
    json_decref(p);
    http_response_free(&r);
    r = delete_with(RATES "/NOK", writer.secret, first);
    expect_problem(&r, 412, NULL);
    /* Unquoted is malformed. */
    r = put(RATES "/NOK", writer.secret, "{\"rate\": 9}", "12345");
    expect_problem(&r, 400, NULL);
    r = http_get(&srv, RATES "/NOK", reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    char now[40];
    json_t *doc = rate_of(&r, now, sizeof now);
    ck_assert_str_eq(now, second);
    ck_assert(json_number_value(json_object_get(doc, "rate")) == 0.086);
    json_decref(doc);
    http_response_free(&r);

    r = delete_with(RATES "/NOK", writer.secret, second);
    ck_assert_msg(r.status == 204, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

START_TEST(bad_codes_rates_and_bodies_are_refused_and_nothing_is_written)
{
    struct {
        const char *path, *body;
        long status;
        const char *field;
    } cases[] = {
        {RATES "/XAU", "{\"rate\": 1}", 422, "currency"},   /* gold: not a currency */
        {RATES "/HRK", "{\"rate\": 1}", 422, "currency"},   /* replaced by the euro */
        {RATES "/usd", "{\"rate\": 1}", 422, "currency"},   /* lowercase */
        {RATES "/USDX", "{\"rate\": 1}", 422, "currency"},
        {RATES "/EUR", "{\"rate\": 1}", 422, "currency"},   /* the reporting currency */
        {RATES "/USD", "{\"rate\": 0}", 422, "/rate"},
        {RATES "/USD", "{\"rate\": -1.5}", 422, "/rate"},
        {RATES "/USD", "{\"rate\": 1e9}", 422, "/rate"},
        {RATES "/USD", "{\"rate\": \"0.9\"}", 422, "/rate"},
        {RATES "/USD", "{}", 422, "/rate"},
        {RATES "/USD", "{\"rate\": 0.9, \"note\": \"x\"}", 422, "/note"},
        {RATES "/USD", "[0.9]", 422, ""},
        {RATES "/USD", "{\"rate\": 0.9", 400, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_response r = put(cases[i].path, writer.secret, cases[i].body, NULL);
        expect_problem(&r, cases[i].status, cases[i].field);
    }
    http_call call = {.method = "PUT", .path = RATES "/USD", .api_key = writer.secret,
                      .body = "rate=0.9", .content_type = "text/plain"};
    http_response r = http_send(&srv, &call);
    expect_problem(&r, 415, NULL);
    r = http_get(&srv, RATES "?limit=0", reader.secret);
    expect_problem(&r, 422, "limit");
    r = http_get(&srv, RATES "?after=forged", reader.secret);
    expect_problem(&r, 422, "after");
    r = http_get(&srv, RATES "?sort=currency", reader.secret);
    expect_problem(&r, 422, "sort");

    PGconn *db = harness_db_connect();
    ck_assert_int_eq(harness_sql_number(db, "SELECT count(*) FROM currency_rates WHERE currency"
                                            " IN ('XAU', 'HRK', 'usd', 'USDX', 'EUR', 'USD')",
                                        NULL),
                     0);
    PQfinish(db);
}
END_TEST

START_TEST(each_operation_needs_its_scope)
{
    http_response r = put(RATES "/USD", reader.secret, "{\"rate\": 0.9}", NULL);
    json_t *p = assert_problem(&r, 403);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "detail")), "metrics:write"));
    json_decref(p);
    http_response_free(&r);
    r = delete_with(RATES "/USD", reader.secret, NULL);
    expect_problem(&r, 403, NULL);
    r = http_get(&srv, RATES, outsider.secret);
    expect_problem(&r, 403, NULL);
    r = http_get(&srv, RATES "/USD", outsider.secret);
    expect_problem(&r, 403, NULL);
    r = http_get(&srv, RATES, NULL);
    expect_problem(&r, 401, NULL);
}
END_TEST

/* ---- a rate at the next recompute ---------------------------------------------------- */

static long long new_customer(const char *key)
{
    http_response r = http_post_json(&srv, "/v1/customers", key,
                                     "{\"first_name\": \"Rate\", \"last_name\": \"Payer\"}");
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    json_t *c = http_response_json(&r);
    long long id = json_integer_value(json_object_get(c, "id"));
    json_decref(c);
    http_response_free(&r);
    return id;
}

static void purchase(long long id, const char *day, const char *amount, const char *currency)
{
    char ev[48], body[512];
    harness_unique(ev, sizeof ev, "rate");
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"purchase\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%sT12:00:00Z\","
             " \"source\": \"api-rates\", \"event_id\": \"%s\", \"amount\": %s,"
             " \"currency\": \"%s\"}",
             id, day, ev, amount, currency);
    http_response r = http_post_json(&srv, "/v1/touchpoints", outsider.secret, body);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
}

/* Runs a recompute as of 2026-01-01 to its end. */
static void recompute(void)
{
    http_response r = http_post_json(&srv, "/v1/metrics/recompute", writer.secret,
                                     "{\"as_of\": \"2026-01-01T00:00:00Z\"}");
    ck_assert_msg(r.status == 202, "%ld %.300s", r.status, r.body);
    char where[64];
    snprintf(where, sizeof where, "%s", http_response_header(&r, "Location"));
    http_response_free(&r);
    long long deadline = harness_now_ms() + 30000;
    for (;;) {
        r = http_get(&srv, where, writer.secret);
        ck_assert_msg(r.status == 200, "GET %s: %ld", where, r.status);
        json_t *job = http_response_json(&r);
        http_response_free(&r);
        char state[16];
        snprintf(state, sizeof state, "%s", json_string_value(json_object_get(job, "state")));
        json_decref(job);
        if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0) {
            ck_assert_str_eq(state, "succeeded");
            return;
        }
        ck_assert_msg(harness_now_ms() < deadline, "the recompute did not end within 30 s");
        harness_sleep_ms(100);
    }
}

static json_t *metrics_of(long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/metrics", id);
    http_response r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    json_t *m = http_response_json(&r);
    http_response_free(&r);
    return m;
}

static double value_of(const json_t *m, const char *group, const char *key)
{
    const json_t *v = json_object_get(json_object_get(m, group), key);
    ck_assert_msg(json_is_number(v), "%s.%s is not a number", group, key);
    return json_number_value(v);
}

/* Checks the customer's value figures: purchases counted, unrated, historic
 * value, average order. */
static void expect_value(long long id, int purchases, int unrated, double historic, double aov)
{
    json_t *m = metrics_of(id);
    ck_assert_int_eq((int)value_of(m, "value", "purchases"), purchases);
    ck_assert_int_eq((int)value_of(m, "value", "unrated"), unrated);
    ck_assert_double_eq_tol(value_of(m, "value", "historic"), historic, 1e-9);
    ck_assert_double_eq_tol(value_of(m, "value", "average_order"), aov, 1e-9);
    ck_assert_double_eq_tol(value_of(m, "rfm", "monetary"), historic, 1e-9);
    json_decref(m);
}

/* The customer buys 100 EUR on 2025-03-01 and 40 USD on 2025-06-01; as of
 * 2026-01-01 (both inside the 365-day window):
 *   no USD rate:  1 purchase, 1 unrated, historic 100, average 100;
 *   USD at 0.5:   2 purchases, 0 unrated, historic 100 + 40 x 0.5 = 120,
 *                 average 120 / 2 = 60; the summary x = 1 repeat day,
 *                 t_x = 92 days (Mar 1 to Jun 1: 31 + 30 + 31), T = 306
 *                 (Mar 1 to Jan 1: 306 days), repeat mean 20;
 *   USD at 2:     historic 100 + 80 = 180, average 90;
 *   rate removed: as with none. */
START_TEST(a_rate_converts_purchases_at_the_next_recompute_and_not_before)
{
    long long id = new_customer(outsider.secret);
    purchase(id, "2025-03-01", "100", "EUR");
    purchase(id, "2025-06-01", "40", "USD");
    recompute();
    expect_value(id, 1, 1, 100, 100);

    http_response r = put(RATES "/USD", writer.secret, "{\"rate\": 0.5}", NULL);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    expect_value(id, 1, 1, 100, 100); /* the metrics already computed keep their rates */

    recompute();
    expect_value(id, 2, 0, 120, 60);
    json_t *m = metrics_of(id);
    ck_assert_int_eq((int)value_of(m, "summary", "x"), 1);
    ck_assert_int_eq((int)value_of(m, "summary", "t_x"), 92);
    ck_assert_int_eq((int)value_of(m, "summary", "T"), 306);
    ck_assert_double_eq_tol(value_of(m, "summary", "repeat_mean_value"), 20, 1e-9);
    ck_assert_str_eq(json_string_value(json_object_get(m, "currency")), "EUR");
    json_decref(m);

    r = put(RATES "/USD", writer.secret, "{\"rate\": 2}", NULL);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    recompute();
    expect_value(id, 2, 0, 180, 90);

    r = delete_with(RATES "/USD", writer.secret, NULL);
    ck_assert_msg(r.status == 204, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    recompute();
    expect_value(id, 1, 1, 100, 100);
}
END_TEST

/* Polls the customer's metrics until they count purchases and unrated (15 s at most). */
static json_t *wait_for_value(long long id, int purchases, int unrated)
{
    long long deadline = harness_now_ms() + 15000;
    for (;;) {
        json_t *m = metrics_of(id);
        json_t *v = json_object_get(m, "value");
        if (json_integer_value(json_object_get(v, "purchases")) == purchases &&
            json_integer_value(json_object_get(v, "unrated")) == unrated)
            return m;
        json_decref(m);
        ck_assert_msg(harness_now_ms() < deadline,
                      "the follower did not bring %d purchases, %d unrated within 15 s", purchases,
                      unrated);
        harness_sleep_ms(50);
    }
}

/* No recompute: the follower updates a customer with the rates in force
 * at its update. 40 USD unrated; then USD at 0.5 and a purchase of 10 EUR:
 * 2 purchases, historic 10 + 40 x 0.5 = 30, average 15. */
START_TEST(the_follower_applies_the_rate_in_force_at_its_next_update)
{
    long long id = new_customer(outsider.secret);
    purchase(id, "2025-06-01", "40", "USD");
    json_t *m = wait_for_value(id, 0, 1);
    json_decref(m);
    http_response r = put(RATES "/USD", writer.secret, "{\"rate\": 0.5}", NULL);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    purchase(id, "2025-07-01", "10", "EUR");
    m = wait_for_value(id, 2, 0);
    ck_assert_double_eq_tol(value_of(m, "value", "historic"), 30, 1e-9);
    ck_assert_double_eq_tol(value_of(m, "value", "average_order"), 15, 1e-9);
    json_decref(m);
}
END_TEST

/* ---- ?expand=metrics ---------------------------------------------------------------- */

static http_response get_customer(long long id, const char *query, const char *key)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/customers/%lld%s", id, query);
    return http_get(&srv, path, key);
}

START_TEST(expand_metrics_embeds_the_metrics_document_and_sends_no_etag)
{
    long long id = new_customer(outsider.secret);
    purchase(id, "2025-03-01", "100", "EUR");
    recompute();

    http_response r = get_customer(id, "?expand=metrics", customers_metrics.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    /* The metrics change under the same version: no ETag claims this body. */
    ck_assert_ptr_null(http_response_header(&r, "ETag"));
    json_t *c = http_response_json(&r);
    http_response_free(&r);
    json_t *m = metrics_of(id);
    ck_assert_msg(json_equal(json_object_get(c, "metrics"), m), "the expanded metrics differ");
    ck_assert_double_eq_tol(value_of(m, "value", "historic"), 100, 1e-9);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "version")), 1);
    ck_assert_ptr_null(json_object_get(c, "consents"));
    ck_assert_ptr_null(json_object_get(c, "external_ids"));
    json_decref(m);
    json_decref(c);

    /* All three expansions at once. */
    r = get_customer(id, "?expand=external_ids,consents,metrics", customers_metrics.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    ck_assert_ptr_null(http_response_header(&r, "ETag"));
    c = http_response_json(&r);
    http_response_free(&r);
    ck_assert(json_is_array(json_object_get(c, "external_ids")));
    ck_assert(json_is_array(json_object_get(c, "consents")));
    ck_assert(json_is_object(json_object_get(c, "metrics")));
    json_decref(c);

    /* Without metrics the ETag is the version, as before. */
    r = get_customer(id, "?expand=consents", customers_metrics.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    http_response_free(&r);
    r = get_customer(id, "", customers_metrics.secret);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    http_response_free(&r);

    /* A customer no recompute covered yet: the document with null figures. */
    long long fresh = new_customer(outsider.secret);
    r = get_customer(fresh, "?expand=metrics", customers_metrics.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    c = http_response_json(&r);
    http_response_free(&r);
    json_t *fm = json_object_get(c, "metrics");
    ck_assert_int_eq(json_integer_value(json_object_get(fm, "customer_id")), fresh);
    ck_assert(json_is_null(json_object_get(fm, "computed_at")));
    json_decref(c);

    r = get_customer(9000000000000LL, "?expand=metrics", customers_metrics.secret);
    expect_problem(&r, 404, NULL);
    r = get_customer(id, "?expand=metrics,history", customers_metrics.secret);
    expect_problem(&r, 422, "expand");
}
END_TEST

START_TEST(expand_metrics_needs_the_metrics_read_scope)
{
    long long id = new_customer(outsider.secret);
    http_response r = get_customer(id, "?expand=metrics", customers_only.secret);
    json_t *p = assert_problem(&r, 403);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "detail")), "'metrics:read'"));
    ck_assert(problem_names_field(p, "expand"));
    json_decref(p);
    http_response_free(&r);
    /* Other expansions stay within customers:read. */
    r = get_customer(id, "?expand=external_ids,consents", customers_only.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

START_TEST(expand_metrics_works_by_external_id_too)
{
    char ext[64], body[256], path[160];
    harness_unique(ext, sizeof ext, "rates-ext");
    snprintf(body, sizeof body,
             "{\"first_name\": \"By\", \"external_ids\": [{\"source\": \"erp\", \"id\": \"%s\"}]}",
             ext);
    http_response r = http_post_json(&srv, "/v1/customers", outsider.secret, body);
    ck_assert_msg(r.status == 201, "%ld %.300s", r.status, r.body);
    json_t *c = http_response_json(&r);
    long long id = json_integer_value(json_object_get(c, "id"));
    json_decref(c);
    http_response_free(&r);

    snprintf(path, sizeof path, "/v1/customers/by-external-id/erp/%s?expand=metrics,external_ids",
             ext);
    r = http_get(&srv, path, customers_metrics.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    ck_assert_ptr_null(http_response_header(&r, "ETag"));
    c = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "id")), id);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(c, "metrics"), "customer_id")),
                     id);
    ck_assert_uint_eq(json_array_size(json_object_get(c, "external_ids")), 1);
    json_decref(c);

    r = http_get(&srv, path, customers_only.secret);
    expect_problem(&r, 403, "expand");
    snprintf(path, sizeof path, "/v1/customers/by-external-id/erp/%s?expand=consents", ext);
    r = http_get(&srv, path, customers_metrics.secret);
    expect_problem(&r, 422, "expand");
    snprintf(path, sizeof path, "/v1/customers/by-external-id/erp/%s-none?expand=metrics", ext);
    r = http_get(&srv, path, customers_metrics.secret);
    expect_problem(&r, 404, NULL);
}
END_TEST

Suite *currency_rates_suite(void)
{
    Suite *s = suite_create("currency_rates");
    TCase *tc = tcase_create("rates");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_test(tc, a_rate_is_created_read_replaced_listed_and_removed);
    tcase_add_test(tc, if_match_makes_a_write_conditional);
    tcase_add_test(tc, bad_codes_rates_and_bodies_are_refused_and_nothing_is_written);
    tcase_add_test(tc, each_operation_needs_its_scope);
    tcase_add_test(tc, the_follower_applies_the_rate_in_force_at_its_next_update);
    suite_add_tcase(s, tc);
    TCase *recompute = tcase_create("recompute");
    tcase_add_checked_fixture(recompute, setup_without_follower, teardown);
    tcase_set_timeout(recompute, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_test(recompute, a_rate_converts_purchases_at_the_next_recompute_and_not_before);
    suite_add_tcase(s, recompute);
    TCase *expand = tcase_create("expand");
    tcase_add_checked_fixture(expand, setup_without_follower, teardown);
    tcase_set_timeout(expand, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_test(expand, expand_metrics_embeds_the_metrics_document_and_sends_no_etag);
    tcase_add_test(expand, expand_metrics_needs_the_metrics_read_scope);
    tcase_add_test(expand, expand_metrics_works_by_external_id_too);
    suite_add_tcase(s, expand);
    return s;
}

/*
 * test_metrics_patterns.c — the patterns job (lib/metrics/patterns.c,
 * cohorts.c, basket.c) and its pages, on a database of its own, so that the
 * whole base is the fixture below and every figure can be worked out by
 * hand.
 *
 * The fixture, observed as of 2025-04-15T00:00:00Z, EUR the reporting
 * currency, USD at 0.5, GBP without a rate (items are SKUs):
 *   A  purchases 2025-01-05 100 EUR {X, Y}; 2025-01-20 50 EUR {X};
 *      2025-03-10 40 USD (20 EUR) {X, Y, Z}; a refund 2025-03-12 of -10 EUR
 *   B  purchases 2025-01-31T23:30Z 30 EUR {Y, Z}; 2025-02-01T00:30+01:00
 *      (still January in UTC) 20 EUR, lines Z, Z, W; 2025-02-10 10 GBP {X}
 *   C  purchases 2025-02-03 60 EUR {X, Y}; 2025-04-01 15 EUR without
 *      items; 2025-05-01 99 EUR {X, Y} (after as_of)
 *   D  a refund 2025-01-15 of 5 EUR (before any purchase); a purchase
 *      2025-02-20 25 EUR {Y}
 *   E  erased: a purchase 2025-01-10 1000 EUR {X, Y} (not live: left out)
 *   F  only a page view
 *   G  a purchase 2025-03-05 40 EUR with an empty list of items; a refund
 *      2025-03-06 of 30 USD (15 EUR)
 *
 * Cohorts (month offsets 0, 1, 2, 3; as_of's month is April 2025, so later
 * offsets are not observed yet: null):
 *   2025-01  A, B: size 2. Jan: A and B, 150 + 50 = 200; Feb: B, 0 (its
 *            GBP amount is unrated); Mar: A, 20 - 10 = 10; Apr: nobody.
 *            retention 1, 1/2, 1/2, 0; revenue 200, 0, 10, 0; total 210;
 *            unrated 1.
 *   2025-02  C, D: size 2. Feb: C and D, 60 + 25 = 85; Mar: nobody; Apr:
 *            C, 15 (D's January refund came before the cohort: left out).
 *            retention 1, 0, 1/2, null; revenue 85, 0, 15, null; total 100.
 *   2025-03  G: size 1. Mar: 40 - 15 = 25; Apr: nobody.
 *            retention 1, 0, null, null; revenue 25, 0, null, null.
 * Purchasers: 5 customers.
 *
 * Baskets: the orders with SKUs up to as_of of live customers: A1 {X, Y},
 * A2 {X}, A3 {X, Y, Z}, B1 {Y, Z}, B2 {Z, W} (Z once), B3 {X}, C1 {X, Y},
 * D1 {Y}: N = 8; n(X) = 5, n(Y) = 5, n(Z) = 3, n(W) = 1; n(X, Y) = 3,
 * n(Y, Z) = 2, n(X, Z) = 1, n(W, Z) = 1 (2 if B2's repeated Z counted
 * twice). With the default minimum of 2 orders, (X, Y) and (Y, Z) stay:
 *   X -> Y, Y -> X  support 3/8, confidence 3/5, lift 3 * 8 / (5 * 5) = 0.96
 *   Y -> Z          support 2/8, confidence 2/5, lift 2 * 8 / (5 * 3) = 16/15
 *   Z -> Y          support 2/8, confidence 2/3, lift 16/15
 * With a minimum of 1, also:
 *   W -> Z  support 1/8, confidence 1, lift 8/3;  Z -> W  confidence 1/3, lift 8/3
 *   X -> Z  support 1/8, confidence 1/5, lift 8/15; Z -> X  confidence 1/3, lift 8/15
 */
#include "clock.h"
#include "customer_metrics.h"
#include "db.h"
#include "embedded.h"
#include "jobs.h"
#include "migrate.h"
#include "support.h"
#include "suites.h"

#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AS_OF_MS 1744675200000LL /* 2025-04-15T00:00:00Z */

static unit_own_db own;
static char *conninfo;
static PGconn *db;

static void fresh_database(void)
{
    unit_own_db_start(&own, "unit_patterns");
    conninfo = own.conninfo;
    db = own.db;
    crm_jobs_register(&crm_metrics_patterns_kind);
    crm_metrics_config m = crm_metrics_defaults();
    crm_metrics_configure(&m);
}

static void drop_database(void)
{
    unit_own_db_stop(&own);
    conninfo = NULL;
    db = NULL;
}

/* A customer named name with status; its id. */
static long long customer(const char *name, const char *status)
{
    const char *params[] = {name, status};
    return unit_sql_long(
        db, "INSERT INTO customers (first_name, status) VALUES ($1, $2) RETURNING id", 2, params);
}

/* A touchpoint of customer id: type at when, amount in currency (NULL:
 * none), items a JSON array of SKUs (NULL: no items). */
static void touchpoint(long long id, const char *type, const char *when, const char *amount,
                       const char *currency, const char *skus)
{
    static int serial;
    char idtext[24], event[32];
    snprintf(idtext, sizeof idtext, "%lld", id);
    snprintf(event, sizeof event, "p%d", ++serial);
    const char *params[] = {idtext, type, when, event, amount, currency, skus};
    PQclear(unit_sql(db,
                     "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at,"
                     " source, event_id, amount, currency, items) VALUES ($1, 'store', $2,"
                     " 'inbound', $3, 'unit', $4, $5, $6, (SELECT CASE WHEN $7 IS NOT NULL THEN"
                     " coalesce(jsonb_agg(jsonb_build_object('sku', s, 'quantity', 2)), '[]')"
                     " END FROM jsonb_array_elements_text($7::jsonb) s))",
                     7, params));
}

static void make_fixture(void)
{
    PQclear(
        unit_sql(db, "INSERT INTO currency_rates (currency, rate) VALUES ('USD', 0.5)", 0, NULL));
    long long a = customer("A", "active"), b = customer("B", "active"), c = customer("C", "active"),
              d = customer("D", "active"), e = customer("E", "erased"), f = customer("F", "active"),
              g = customer("G", "active");
    touchpoint(a, "purchase", "2025-01-05T10:00:00Z", "100", "EUR", "[\"X\", \"Y\"]");
    touchpoint(a, "purchase", "2025-01-20T10:00:00Z", "50", "EUR", "[\"X\"]");
    touchpoint(a, "purchase", "2025-03-10T10:00:00Z", "40", "USD", "[\"X\", \"Y\", \"Z\"]");
    touchpoint(a, "refund", "2025-03-12T10:00:00Z", "-10", "EUR", NULL);
    touchpoint(b, "purchase", "2025-01-31T23:30:00Z", "30", "EUR", "[\"Y\", \"Z\"]");
    touchpoint(b, "purchase", "2025-02-01T00:30:00+01:00", "20", "EUR", "[\"Z\", \"Z\", \"W\"]");
    touchpoint(b, "purchase", "2025-02-10T10:00:00Z", "10", "GBP", "[\"X\"]");
    touchpoint(c, "purchase", "2025-02-03T10:00:00Z", "60", "EUR", "[\"X\", \"Y\"]");
    touchpoint(c, "purchase", "2025-04-01T10:00:00Z", "15", "EUR", NULL);
    touchpoint(c, "purchase", "2025-05-01T10:00:00Z", "99", "EUR", "[\"X\", \"Y\"]");
    touchpoint(d, "refund", "2025-01-15T10:00:00Z", "5", "EUR", NULL);
    touchpoint(d, "purchase", "2025-02-20T10:00:00Z", "25", "EUR", "[\"Y\"]");
    touchpoint(e, "purchase", "2025-01-10T10:00:00Z", "1000", "EUR", "[\"X\", \"Y\"]");
    touchpoint(f, "page_view", "2025-02-01T10:00:00Z", NULL, NULL, NULL);
    touchpoint(g, "purchase", "2025-03-05T10:00:00Z", "40", "EUR", "[]");
    touchpoint(g, "refund", "2025-03-06T10:00:00Z", "30", "USD", NULL);
}

/* Queues the patterns job as of as_ms and runs it here; returns the job. */
static json_t *run_patterns(long long as_ms)
{
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    json_t *job = crm_metrics_patterns_submit(as_ms, 0, &running, &err);
    ck_assert_msg(job != NULL, "submit: %s", err.detail);
    return unit_run_queued_job(job, conninfo);
}

/* A page's text, parsed. */
static json_t *parsed(char *text)
{
    ck_assert_ptr_nonnull(text);
    json_error_t e;
    json_t *doc = json_loads(text, 0, &e);
    ck_assert_msg(doc != NULL, "not JSON (%s): %s", e.text, text);
    free(text);
    return doc;
}

static json_t *cohorts_page(int from, int to, int months)
{
    crm_error err = CRM_ERROR_INIT;
    crm_cohorts_query q = {.from = from, .to = to, .months = months};
    char *text = crm_metrics_cohorts(&q, &err);
    ck_assert_msg(text != NULL, "cohorts: %s", err.detail);
    return parsed(text);
}

static json_t *basket_page(double support, double confidence, double lift, int limit,
                           const char *sku)
{
    crm_error err = CRM_ERROR_INIT;
    crm_basket_query q = {support, confidence, lift, limit, sku};
    char *text = crm_metrics_market_basket(&q, &err);
    ck_assert_msg(text != NULL, "market basket: %s", err.detail);
    return parsed(text);
}

/* 2025 * 12 + month - 1 */
#define MONTH_2025(m) (2025 * 12 + (m)-1)

/* An array of numbers, NAN for null, checked against want. */
static void check_series(const json_t *cohort, const char *key, const double *want, size_t n)
{
    const json_t *a = json_object_get(cohort, key);
    ck_assert_msg(json_is_array(a) && json_array_size(a) == n, "%s is not an array of %zu", key, n);
    for (size_t k = 0; k < n; k++) {
        const json_t *v = json_array_get(a, k);
        if (isnan(want[k]))
            ck_assert_msg(json_is_null(v), "%s[%zu] is not null", key, k);
        else
            ck_assert_msg(json_is_number(v) && fabs(json_number_value(v) - want[k]) < 1e-12,
                          "%s[%zu] = %g, not %g", key, k,
                          json_is_number(v) ? json_number_value(v) : NAN, want[k]);
    }
}

static const json_t *cohort_at(const json_t *page, size_t i, const char *month)
{
    const json_t *c = json_array_get(json_object_get(page, "data"), i);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(json_string_value(json_object_get(c, "cohort")), month);
    return c;
}

static double num(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_number(v), "%s is not a number", key);
    return json_number_value(v);
}

START_TEST(cohorts_give_the_sizes_retention_and_revenue_worked_out_by_hand)
{
    make_fixture();
    json_t *job = run_patterns(AS_OF_MS);
    json_t *result = json_object_get(job, "result");
    ck_assert_int_eq(json_integer_value(json_object_get(result, "customers")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(result, "cohorts")), 3);
    json_decref(job);

    json_t *page = cohorts_page(-1, -1, 3);
    ck_assert_str_eq(json_string_value(json_object_get(page, "as_of")), "2025-04-15T00:00:00.000Z");
    ck_assert_str_eq(json_string_value(json_object_get(page, "currency")), "EUR");
    /* By default the 12 months to as_of's. */
    ck_assert_str_eq(json_string_value(json_object_get(page, "from")), "2024-05");
    ck_assert_str_eq(json_string_value(json_object_get(page, "to")), "2025-04");
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 3);

    const json_t *jan = cohort_at(page, 0, "2025-01");
    ck_assert_int_eq((int)num(jan, "customers"), 2);
    check_series(jan, "retention", (double[]){1, 0.5, 0.5, 0}, 4);
    check_series(jan, "purchasers", (double[]){2, 1, 1, 0}, 4);
    check_series(jan, "revenue", (double[]){200, 0, 10, 0}, 4);
    ck_assert_double_eq_tol(num(jan, "revenue_total"), 210, 1e-12);
    ck_assert_int_eq((int)num(jan, "unrated"), 1);

    const json_t *feb = cohort_at(page, 1, "2025-02");
    ck_assert_int_eq((int)num(feb, "customers"), 2);
    check_series(feb, "retention", (double[]){1, 0, 0.5, NAN}, 4);
    check_series(feb, "purchasers", (double[]){2, 0, 1, NAN}, 4);
    check_series(feb, "revenue", (double[]){85, 0, 15, NAN}, 4);
    ck_assert_double_eq_tol(num(feb, "revenue_total"), 100, 1e-12);
    ck_assert_int_eq((int)num(feb, "unrated"), 0);

    const json_t *mar = cohort_at(page, 2, "2025-03");
    ck_assert_int_eq((int)num(mar, "customers"), 1);
    check_series(mar, "retention", (double[]){1, 0, NAN, NAN}, 4);
    check_series(mar, "revenue", (double[]){25, 0, NAN, NAN}, 4);
    ck_assert_double_eq_tol(num(mar, "revenue_total"), 25, 1e-12);
    json_decref(page);
}
END_TEST

START_TEST(the_cohorts_page_shows_the_range_asked_for)
{
    make_fixture();
    json_decref(run_patterns(AS_OF_MS));
    json_t *page = cohorts_page(MONTH_2025(2), MONTH_2025(2), 1);
    ck_assert_str_eq(json_string_value(json_object_get(page, "from")), "2025-02");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "months")), 1);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 1);
    const json_t *feb = cohort_at(page, 0, "2025-02");
    check_series(feb, "retention", (double[]){1, 0}, 2);
    /* The total is the cohort's, whatever the offsets shown. */
    ck_assert_double_eq_tol(num(feb, "revenue_total"), 100, 1e-12);
    json_decref(page);
    /* From a month with no cohort on: none before 2025-03. */
    page = cohorts_page(MONTH_2025(3), -1, 120);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 1);
    ck_assert_int_eq(json_array_size(json_object_get(cohort_at(page, 0, "2025-03"), "retention")),
                     121);
    json_decref(page);
}
END_TEST

static void assert_cohorts_refused(int from, int to, int months, const char *field)
{
    crm_error err = CRM_ERROR_INIT;
    crm_cohorts_query q = {.from = from, .to = to, .months = months};
    ck_assert_ptr_null(crm_metrics_cohorts(&q, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_msg(unit_has_field_error(&err, field), "no error names %s: %s", field, err.detail);
    crm_error_clear(&err);
}

START_TEST(cohort_ranges_out_of_bounds_are_refused_naming_the_parameter)
{
    assert_cohorts_refused(-1, -1, 0, "months");
    assert_cohorts_refused(-1, -1, 121, "months");
    assert_cohorts_refused(MONTH_2025(5), MONTH_2025(4), 12, "from");
    /* 121 cohorts: 2015-04 to 2025-04. */
    assert_cohorts_refused(MONTH_2025(4) - 120, MONTH_2025(4), 12, "from");
    /* 120 are fine. */
    json_decref(cohorts_page(MONTH_2025(4) - 119, MONTH_2025(4), 120));
}
END_TEST

START_TEST(before_any_run_the_pages_are_empty_without_as_of)
{
    json_t *page = cohorts_page(-1, -1, 12);
    ck_assert(json_is_null(json_object_get(page, "as_of")));
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
    page = basket_page(0, 0, 0, 50, NULL);
    ck_assert(json_is_null(json_object_get(page, "as_of")));
    ck_assert_int_eq(json_integer_value(json_object_get(page, "orders")), 0);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
}
END_TEST

typedef struct rule {
    const char *a, *b;
    int orders, a_orders, b_orders;
    double support, confidence, lift;
} rule;

/* The page's rules are want, in this order. */
static void check_rules(const json_t *page, const rule *want, size_t n)
{
    const json_t *data = json_object_get(page, "data");
    ck_assert_msg(json_array_size(data) == n, "%zu rules, not %zu", json_array_size(data), n);
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(data, i);
        ck_assert_str_eq(json_string_value(json_object_get(r, "a")), want[i].a);
        ck_assert_str_eq(json_string_value(json_object_get(r, "b")), want[i].b);
        ck_assert_int_eq((int)num(r, "orders"), want[i].orders);
        ck_assert_int_eq((int)num(r, "a_orders"), want[i].a_orders);
        ck_assert_int_eq((int)num(r, "b_orders"), want[i].b_orders);
        ck_assert_double_eq_tol(num(r, "support"), want[i].support, 1e-12);
        ck_assert_double_eq_tol(num(r, "confidence"), want[i].confidence, 1e-12);
        ck_assert_double_eq_tol(num(r, "lift"), want[i].lift, 1e-12);
    }
}

static const rule ZY = {"Z", "Y", 2, 3, 5, 2.0 / 8, 2.0 / 3, 16.0 / 15};
static const rule YZ = {"Y", "Z", 2, 5, 3, 2.0 / 8, 2.0 / 5, 16.0 / 15};
static const rule XY = {"X", "Y", 3, 5, 5, 3.0 / 8, 3.0 / 5, 0.96};
static const rule YX = {"Y", "X", 3, 5, 5, 3.0 / 8, 3.0 / 5, 0.96};

START_TEST(basket_rules_give_support_confidence_and_lift_worked_out_by_hand)
{
    make_fixture();
    json_t *job = run_patterns(AS_OF_MS);
    json_t *result = json_object_get(job, "result");
    ck_assert_int_eq(json_integer_value(json_object_get(result, "orders")), 8);
    ck_assert_int_eq(json_integer_value(json_object_get(result, "skus")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(result, "pairs")), 2);
    json_decref(job);

    json_t *page = basket_page(0, 0, 0, 50, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(page, "as_of")), "2025-04-15T00:00:00.000Z");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "orders")), 8);
    ck_assert_int_eq(json_integer_value(json_object_get(page, "min_pair_orders")), 2);
    ck_assert(json_is_null(json_object_get(page, "sku")));
    /* By lift, then confidence, then orders, then the SKUs. (W, Z) and
     * (X, Z) were bought together once only: cut. */
    check_rules(page, (rule[]){ZY, YZ, XY, YX}, 4);
    json_decref(page);
}
END_TEST

START_TEST(basket_thresholds_and_limit_keep_the_rules_that_pass)
{
    make_fixture();
    json_decref(run_patterns(AS_OF_MS));
    json_t *page = basket_page(0.3, 0, 0, 50, NULL);
    check_rules(page, (rule[]){XY, YX}, 2);
    json_decref(page);
    /* A threshold equal to the value passes. */
    page = basket_page(0, 0.6, 0, 50, NULL);
    check_rules(page, (rule[]){ZY, XY, YX}, 3);
    json_decref(page);
    page = basket_page(0, 0, 1, 50, NULL);
    check_rules(page, (rule[]){ZY, YZ}, 2);
    json_decref(page);
    page = basket_page(0, 0, 0, 1, NULL);
    check_rules(page, (rule[]){ZY}, 1);
    json_decref(page);
}
END_TEST

START_TEST(basket_by_sku_lists_what_its_buyers_also_bought_by_lift_then_confidence)
{
    make_fixture();
    json_decref(run_patterns(AS_OF_MS));
    /* Y -> Z before Y -> X: the higher lift first, whatever the confidence. */
    json_t *page = basket_page(0, 0, 0, 50, "Y");
    ck_assert_str_eq(json_string_value(json_object_get(page, "sku")), "Y");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "sku_orders")), 5);
    check_rules(page, (rule[]){YZ, YX}, 2);
    json_decref(page);
    /* W was bought, but never with anything twice. */
    page = basket_page(0, 0, 0, 50, "W");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "sku_orders")), 1);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
    /* An SKU nobody bought: an empty list, not an error. */
    page = basket_page(0, 0, 0, 50, "NOPE");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "sku_orders")), 0);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
}
END_TEST

START_TEST(with_a_minimum_of_one_order_every_pair_is_kept_and_ties_go_by_confidence)
{
    crm_metrics_config cfg = crm_metrics_defaults();
    cfg.basket_min_orders = 1;
    crm_metrics_configure(&cfg);
    make_fixture();
    json_t *job = run_patterns(AS_OF_MS);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(job, "result"), "pairs")),
                     4);
    json_decref(job);
    const rule WZ = {"W", "Z", 1, 1, 3, 1.0 / 8, 1, 8.0 / 3};
    const rule ZW = {"Z", "W", 1, 3, 1, 1.0 / 8, 1.0 / 3, 8.0 / 3};
    const rule ZX = {"Z", "X", 1, 3, 5, 1.0 / 8, 1.0 / 3, 8.0 / 15};
    const rule XZ = {"X", "Z", 1, 5, 3, 1.0 / 8, 1.0 / 5, 8.0 / 15};
    json_t *page = basket_page(0, 0, 0, 50, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(page, "min_pair_orders")), 1);
    check_rules(page, (rule[]){WZ, ZW, ZY, YZ, XY, YX, ZX, XZ}, 8);
    json_decref(page);
    page = basket_page(0, 0, 0, 50, "Z");
    check_rules(page, (rule[]){ZW, ZY, ZX}, 3);
    json_decref(page);
}
END_TEST

static void assert_basket_refused(double support, double confidence, double lift, int limit,
                                  const char *sku, const char *field)
{
    crm_error err = CRM_ERROR_INIT;
    crm_basket_query q = {support, confidence, lift, limit, sku};
    ck_assert_ptr_null(crm_metrics_market_basket(&q, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_msg(unit_has_field_error(&err, field), "no error names %s: %s", field, err.detail);
    crm_error_clear(&err);
}

START_TEST(basket_thresholds_out_of_range_are_refused_naming_the_parameter)
{
    assert_basket_refused(-0.1, 0, 0, 50, NULL, "min_support");
    assert_basket_refused(1.5, 0, 0, 50, NULL, "min_support");
    assert_basket_refused(NAN, 0, 0, 50, NULL, "min_support");
    assert_basket_refused(0, 1.01, 0, 50, NULL, "min_confidence");
    assert_basket_refused(0, 0, -1, 50, NULL, "min_lift");
    assert_basket_refused(0, 0, INFINITY, 50, NULL, "min_lift");
    assert_basket_refused(0, 0, 0, 0, NULL, "limit");
    assert_basket_refused(0, 0, 0, 1001, NULL, "limit");
    assert_basket_refused(0, 0, 0, 50, "", "sku");
}
END_TEST

/* An earlier as_of: only what happened by then counts, and a run replaces
 * the previous result instead of adding to it. */
START_TEST(a_later_run_replaces_the_result_for_its_own_as_of)
{
    make_fixture();
    json_decref(run_patterns(AS_OF_MS));
    json_decref(run_patterns(1738368000000LL)); /* 2025-02-01T00:00:00Z: January only */
    json_t *page = cohorts_page(-1, -1, 2);
    ck_assert_str_eq(json_string_value(json_object_get(page, "as_of")), "2025-02-01T00:00:00.000Z");
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 1);
    const json_t *jan = cohort_at(page, 0, "2025-01");
    /* A and B; February is observed (as_of's month) and empty so far. */
    check_series(jan, "retention", (double[]){1, 0, NAN}, 3);
    check_series(jan, "revenue", (double[]){200, 0, NAN}, 3);
    json_decref(page);
    /* Orders A1, A2, B1, B2: n(X) = 2, n(Y) = 2, n(Z) = 2, n(W) = 1;
     * n(X, Y) = 1, n(Y, Z) = 1, n(W, Z) = 1: no pair twice. */
    page = basket_page(0, 0, 0, 50, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(page, "orders")), 4);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
    page = basket_page(0, 0, 0, 50, "Z");
    ck_assert_int_eq(json_integer_value(json_object_get(page, "sku_orders")), 2);
    json_decref(page);
}
END_TEST

START_TEST(a_second_run_while_one_is_queued_is_a_conflict_naming_it)
{
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    json_t *first = crm_metrics_patterns_submit(AS_OF_MS, 0, &running, &err);
    ck_assert_msg(first != NULL, "%s", err.detail);
    ck_assert_str_eq(json_string_value(json_object_get(first, "kind")), "metrics_patterns");
    ck_assert_ptr_null(crm_metrics_patterns_submit(0, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_int_eq(running, json_integer_value(json_object_get(first, "id")));
    crm_error_clear(&err);
    ck_assert_ptr_null(crm_metrics_patterns_submit(crm_wall_ms() + 3600000, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    json_decref(first);
}
END_TEST

/* ---- random baskets against a count made here ----------------------------------- */

#define RANDOM_ORDERS 400
#define RANDOM_SKUS 6

/* Orders of 1 to 5 lines drawn from RANDOM_SKUS SKUs (repeats allowed),
 * their baskets' pair counts counted here, and the stored rules compared
 * with those counts, every pair in both directions. */
START_TEST(random_baskets_match_a_direct_count)
{
    long long id = customer("R", "active");
    long long single[RANDOM_SKUS] = {0}, both[RANDOM_SKUS][RANDOM_SKUS] = {{0}};
    srand(1234);
    for (int o = 0; o < RANDOM_ORDERS; o++) {
        int lines = 1 + rand() % 5;
        bool in[RANDOM_SKUS] = {false};
        char skus[64] = "[";
        for (int l = 0; l < lines; l++) {
            int s = rand() % RANDOM_SKUS;
            in[s] = true;
            char one[8];
            snprintf(one, sizeof one, "%s\"S%d\"", l ? ", " : "", s);
            strcat(skus, one);
        }
        strcat(skus, "]");
        for (int a = 0; a < RANDOM_SKUS; a++)
            for (int b = 0; in[a] && b < RANDOM_SKUS; b++)
                both[a][b] += in[b] && a != b;
        for (int a = 0; a < RANDOM_SKUS; a++)
            single[a] += in[a];
        touchpoint(id, "purchase", "2025-01-10T10:00:00Z", "1", "EUR", skus);
    }
    json_decref(run_patterns(AS_OF_MS));
    json_t *page = basket_page(0, 0, 0, 1000, NULL);
    const json_t *data = json_object_get(page, "data");
    size_t expected = 0;
    for (int a = 0; a < RANDOM_SKUS; a++)
        for (int b = 0; b < RANDOM_SKUS; b++)
            expected += both[a][b] >= 2;
    ck_assert_int_eq(json_array_size(data), expected);
    double prev_lift = INFINITY;
    for (size_t i = 0; i < json_array_size(data); i++) {
        const json_t *r = json_array_get(data, i);
        int a = atoi(json_string_value(json_object_get(r, "a")) + 1);
        int b = atoi(json_string_value(json_object_get(r, "b")) + 1);
        double n = both[a][b];
        ck_assert_int_eq((long long)num(r, "orders"), both[a][b]);
        ck_assert_double_eq_tol(num(r, "support"), n / RANDOM_ORDERS, 1e-12);
        ck_assert_double_eq_tol(num(r, "confidence"), n / single[a], 1e-12);
        ck_assert_double_eq_tol(num(r, "lift"), n * RANDOM_ORDERS / (single[a] * single[b]), 1e-12);
        ck_assert(num(r, "lift") <= prev_lift);
        prev_lift = num(r, "lift");
    }
    json_decref(page);
}
END_TEST

/* ---- a statement longer than the lease ------------------------------------------ */

/* Holds touchpoints locked for hold_ms (the job's statement waits for it),
 * meanwhile looking at the job: after 6 s (past its 5 s lease, had nothing
 * renewed it), and cancelling it at cancel_ms when that is set. */
typedef struct blocker {
    long long job;
    int hold_ms, cancel_ms;
    pthread_t thread;
    bool locked, lease_renewed, cancel_accepted;
} blocker;

static void *block_touchpoints(void *arg)
{
    blocker *b = arg;
    PGconn *conn = PQconnectdb(conninfo);
    PQclear(PQexec(conn, "BEGIN"));
    PGresult *res = PQexec(conn, "LOCK TABLE touchpoints IN ACCESS EXCLUSIVE MODE");
    b->locked = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    long long started = unit_now_ms();
    if (b->cancel_ms > 0) {
        unit_sleep_ms(b->cancel_ms);
        crm_error err = CRM_ERROR_INIT;
        json_t *job = crm_job_cancel(b->job, &err);
        b->cancel_accepted = job != NULL;
        json_decref(job);
        crm_error_clear(&err);
    } else {
        unit_sleep_ms(6000);
        char id[24];
        snprintf(id, sizeof id, "%lld", b->job);
        const char *params[] = {id};
        res = PQexecParams(conn, "SELECT lease_until > now() FROM jobs WHERE id = $1::bigint", 1,
                           NULL, params, NULL, NULL, 0);
        b->lease_renewed = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                           strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
    }
    long long left = b->hold_ms - (unit_now_ms() - started);
    if (left > 0)
        unit_sleep_ms((int)left);
    PQclear(PQexec(conn, "COMMIT"));
    PQfinish(conn);
    return NULL;
}

/* Runs the job queued as id with a 5 s lease while b holds the lock;
 * returns how long the run took, in ms. */
static long long run_blocked(blocker *b, long long id)
{
    b->job = id;
    ck_assert_int_eq(pthread_create(&b->thread, NULL, block_touchpoints, b), 0);
    unit_sleep_ms(300); /* the lock first */
    crm_jobs_config cfg = {.db = {.url = conninfo, .pool_size = 1, .connect_timeout_s = 2},
                           .lease_s = 5,
                           .worker = "unit"};
    crm_error err = CRM_ERROR_INIT;
    long long ran = 0, started = unit_now_ms();
    crm_jobs_run_one(&cfg, &ran, &err);
    crm_error_clear(&err);
    long long took = unit_now_ms() - started;
    pthread_join(b->thread, NULL);
    ck_assert(b->locked);
    ck_assert_int_eq(ran, id);
    return took;
}

static long long submit_patterns(void)
{
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    json_t *job = crm_metrics_patterns_submit(AS_OF_MS, 0, &running, &err);
    ck_assert_msg(job != NULL, "submit: %s", err.detail);
    long long id = json_integer_value(json_object_get(job, "id"));
    json_decref(job);
    return id;
}

static const char *job_state(long long id)
{
    static char state[16];
    crm_error err = CRM_ERROR_INIT;
    unsigned scope;
    json_t *job = crm_job_get(id, &scope, &err);
    ck_assert_ptr_nonnull(job);
    snprintf(state, sizeof state, "%s", json_string_value(json_object_get(job, "state")));
    json_decref(job);
    return state;
}

START_TEST(a_statement_longer_than_the_lease_keeps_it)
{
    make_fixture();
    long long id = submit_patterns();
    blocker b = {.hold_ms = 8000};
    run_blocked(&b, id);
    ck_assert_msg(b.lease_renewed, "the lease ran out while the statement waited");
    ck_assert_str_eq(job_state(id), "succeeded");
}
END_TEST

START_TEST(a_job_cancelled_during_its_statement_stops_at_once)
{
    make_fixture();
    long long id = submit_patterns();
    blocker b = {.hold_ms = 15000, .cancel_ms = 500};
    long long took = run_blocked(&b, id);
    ck_assert(b.cancel_accepted);
    ck_assert_str_eq(job_state(id), "cancelled");
    /* At the next renewal (2 s), not when the lock went (15 s). */
    ck_assert_msg(took < 6000, "the run took %lld ms", took);
    /* Nothing was stored. */
    ck_assert_int_eq(unit_sql_long(db, "SELECT count(*) FROM metrics_patterns", 0, NULL), 0);
}
END_TEST

/* The pages' query values: months as YYYY-MM only, plain decimals only
 * (no sign, no hexadecimal, no infinity), counts within their bound. */
START_TEST(the_query_values_are_read_as_the_contract_says)
{
    int m = -1;
    ck_assert(crm_metrics_parse_month("2025-04", &m));
    ck_assert_int_eq(m, 2025 * 12 + 3);
    ck_assert(!crm_metrics_parse_month("2025-13", &m));
    ck_assert(!crm_metrics_parse_month("0000-01", &m));
    ck_assert(!crm_metrics_parse_month("2025-4", &m));
    ck_assert(!crm_metrics_parse_month("+025-04", &m));
    ck_assert_double_eq(crm_metrics_parse_decimal("0.015"), 0.015);
    ck_assert_double_eq(crm_metrics_parse_decimal(".5"), 0.5);
    ck_assert_double_eq(crm_metrics_parse_decimal("1e-3"), 0.001);
    ck_assert(isnan(crm_metrics_parse_decimal("0x1p-3")));
    ck_assert(isnan(crm_metrics_parse_decimal("-0.1")));
    ck_assert(isnan(crm_metrics_parse_decimal("inf")));
    ck_assert(isnan(crm_metrics_parse_decimal("1e999")));
    ck_assert(isnan(crm_metrics_parse_decimal("0.1 ")));
    ck_assert_int_eq(crm_metrics_parse_count("12", 120), 12);
    ck_assert_int_eq(crm_metrics_parse_count("007", 120), 7);
    ck_assert_int_eq(crm_metrics_parse_count("121", 120), 0);
    ck_assert_int_eq(crm_metrics_parse_count("-1", 120), 0);
    ck_assert_int_eq(crm_metrics_parse_count("1x", 120), 0);
}
END_TEST

Suite *metrics_patterns_suite(void)
{
    Suite *s = suite_create("metrics_patterns");
    TCase *tc = tcase_create("patterns");
    tcase_add_checked_fixture(tc, fresh_database, drop_database);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, the_query_values_are_read_as_the_contract_says);
    tcase_add_test(tc, cohorts_give_the_sizes_retention_and_revenue_worked_out_by_hand);
    tcase_add_test(tc, the_cohorts_page_shows_the_range_asked_for);
    tcase_add_test(tc, cohort_ranges_out_of_bounds_are_refused_naming_the_parameter);
    tcase_add_test(tc, before_any_run_the_pages_are_empty_without_as_of);
    tcase_add_test(tc, basket_rules_give_support_confidence_and_lift_worked_out_by_hand);
    tcase_add_test(tc, basket_thresholds_and_limit_keep_the_rules_that_pass);
    tcase_add_test(tc, basket_by_sku_lists_what_its_buyers_also_bought_by_lift_then_confidence);
    tcase_add_test(tc, with_a_minimum_of_one_order_every_pair_is_kept_and_ties_go_by_confidence);
    tcase_add_test(tc, basket_thresholds_out_of_range_are_refused_naming_the_parameter);
    tcase_add_test(tc, a_later_run_replaces_the_result_for_its_own_as_of);
    tcase_add_test(tc, a_second_run_while_one_is_queued_is_a_conflict_naming_it);
    tcase_add_test(tc, random_baskets_match_a_direct_count);
    tcase_add_test(tc, a_statement_longer_than_the_lease_keeps_it);
    tcase_add_test(tc, a_job_cancelled_during_its_statement_stops_at_once);
    suite_add_tcase(s, tc);
    return s;
}

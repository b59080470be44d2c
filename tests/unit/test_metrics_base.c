/*
 * test_metrics_base.c — the whole base's metrics (lib/metrics/base.c,
 * distribution.c, daily.c, base_summary.c, histogram.c) on a database of
 * its own, so that the base is exactly the fixture below.
 *
 * customer_metrics is written here directly (the recompute and the
 * lifecycle are tested elsewhere), so that every value is chosen. The 11
 * customers K0..K10:
 *
 *   historic_value  10 20 20 30 40 50 60 70 80 90 190
 *   frequency        1  1  1  1  1  1  1  1  1  2   5
 *   csat_mean        4 everywhere
 *   nps_mean         null for K0, K1, K2; 5 6 7 8 9 10 10 10 for the rest
 *   p_alive          0.25 for K7, 0.5 elsewhere
 *   touchpoints_90d  9 for K7, 3 elsewhere
 *   lifecycle_stage  K0 prospect, K1 K2 new, K3..K6 active, K7 at_risk,
 *                    K8 K9 lapsed, K10 won_back   (active customers: 8)
 *   nps_latest       K3 9, K4 10, K5 7, K6 3      (NPS 100 (2 - 1) / 4 = 25)
 *
 * historic_value, worked out by hand (n = 11, sorted x0..x10):
 *   mean 660 / 11 = 60; deviations -50 -40 -40 -30 -20 -10 0 10 20 30 130,
 *   squares sum 25400: population sd = sqrt(25400 / 11) = 48.0530...
 *   percentiles (linear: x at index p (n - 1) = 10 p, interpolated):
 *   p1 = 10 + 0.1 * 10 = 11, p5 = 15, p10 = x1 = 20, p25 = (20 + 30) / 2 = 25,
 *   p50 = x5 = 50, p75 = (70 + 80) / 2 = 75, p90 = x9 = 90,
 *   p95 = 90 + 0.5 * 100 = 140, p99 = 90 + 0.9 * 100 = 180
 *   within 0.5 sd (|d| <= 24.03): -20 -10 0 10 20 -> 5 / 11
 *   within 1 sd (|d| <= 48.05): all but -50 and 130 -> 9 / 11
 *   Freedman-Diaconis: IQR = 75 - 25 = 50, width 2 * 50 * 11^(-1/3) =
 *   44.9644..., bins ceil(180 / 44.96) = ceil(4.003) = 5 of width 36:
 *   edges 10 46 82 118 154 190, counts 5 4 1 0 1
 *   percentile rank (the P where the percentile function reaches the
 *   value; n - 1 = 10 divides 1000, so the 1001 stored quantiles give it
 *   exactly): K7 (70) 70; K1 and K2 (20, the stretch P 10..20) 15;
 *   K10 (190) 100; z-score of K7 = 10 / 48.0530
 * frequency: 1 nine times, 2, 5: IQR 0 -> Sturges, ceil(log2 11) + 1 = 5
 *   bins over [1, 5] of width 0.8: counts 9 1 0 0 1; the percentile
 *   function is 1 for P 0..80, so K0's rank is 40.
 * csat_mean: one value: one bin [3.5, 4.5] of 11, sd 0, rank 50.
 */
#include "clock.h"
#include "customer_metrics.h"
#include "db.h"
#include "jobs.h"
#include "metrics/internal.h"
#include "migrate.h"
#include "embedded.h"
#include "support.h"
#include "suites.h"

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unit_own_db own;
static char *conninfo;
static PGconn *db;

static void fresh_database(void)
{
    unit_own_db_start(&own, "unit_base");
    conninfo = own.conninfo;
    db = own.db;
    crm_jobs_register(&crm_metrics_base_kind);
    crm_metrics_config m = crm_metrics_defaults();
    crm_metrics_configure(&m);
}

static void drop_database(void)
{
    unit_own_db_stop(&own);
    conninfo = NULL;
    db = NULL;
}

static long long customer(const char *name)
{
    const char *params[] = {name};
    return unit_sql_long(db, "INSERT INTO customers (first_name) VALUES ($1) RETURNING id", 1,
                         params);
}

static void sql(const char *text)
{
    PQclear(unit_sql(db, text, 0, NULL));
}

/* ---- the fixture ------------------------------------------------------------------ */

#define K 11
static const double historic[K] = {10, 20, 20, 30, 40, 50, 60, 70, 80, 90, 190};
static const int frequency[K] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 5};
static const char *const nps_mean[K] = {NULL, NULL, NULL, "5",  "6", "7",
                                        "8",  "9",  "10", "10", "10"};
static const char *const stage[K] = {"prospect", "new",     "new",    "active", "active",  "active",
                                     "active",   "at_risk", "lapsed", "lapsed", "won_back"};
static const char *const nps_latest[K] = {NULL, NULL, NULL, "9",  "10", "7",
                                          "3",  NULL, NULL, NULL, NULL};

static long long ids[K];

static void make_base(void)
{
    for (int i = 0; i < K; i++) {
        char name[8], id[24], hv[32], fr[8];
        snprintf(name, sizeof name, "K%d", i);
        ids[i] = customer(name);
        snprintf(id, sizeof id, "%lld", ids[i]);
        snprintf(hv, sizeof hv, "%g", historic[i]);
        snprintf(fr, sizeof fr, "%d", frequency[i]);
        const char *params[] = {id,
                                hv,
                                fr,
                                nps_mean[i],
                                stage[i],
                                nps_latest[i],
                                i == 7 ? "0.25" : "0.5",
                                i == 7 ? "9" : "3"};
        PQclear(unit_sql(db,
                         "INSERT INTO customer_metrics (customer_id, as_of, computed_at, purchases,"
                         " refunds, unrated, historic_value, frequency, monetary, nps_mean,"
                         " lifecycle_stage, nps_latest, p_alive, touchpoints_90d, csat_mean)"
                         " VALUES ($1, '2026-01-07T00:00:00Z', now(), $3, 0, 0, $2, $3, $2, $4,"
                         " $5, $6, $7, $8, 4)",
                         8, params));
    }
}

/* Queues the base job as of as_ms and runs it here; returns the job. */
static json_t *run_base(long long as_ms)
{
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    json_t *job = crm_metrics_base_submit(as_ms, 0, &running, &err);
    ck_assert_msg(job != NULL, "submit: %s", err.detail);
    return unit_run_queued_job(job, conninfo);
}

static json_t *distribution(const char *measure, const char *bins, const char *edges,
                            long long customer_id)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", customer_id);
    crm_distribution_request r = {measure, bins, edges, customer_id > 0 ? id : NULL};
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_metrics_distribution(&r, &err);
    ck_assert_msg(doc != NULL, "distribution of %s: %s", measure, err.detail);
    return doc;
}

static double num(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_number(v), "%s is not a number", key);
    return json_number_value(v);
}

static void assert_near(double got, double want, const char *what)
{
    ck_assert_msg(fabs(got - want) <= 1e-9 * fmax(1, fabs(want)), "%s: %.17g, not %.17g", what, got,
                  want);
}

/* The array of numbers at key equals want (n of them). */
static void assert_numbers(const json_t *obj, const char *key, const double *want, size_t n)
{
    const json_t *a = json_object_get(obj, key);
    ck_assert_msg(json_array_size(a) == n, "%s has %zu entries, not %zu", key, json_array_size(a),
                  n);
    for (size_t i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s[%zu]", key, i);
        assert_near(json_number_value(json_array_get(a, i)), want[i], what);
    }
}

#define AS_OF_MS 1767787200000LL /* 2026-01-07T12:00:00Z */

/* ---- the distributions, by hand ---------------------------------------------------- */

START_TEST(the_distribution_of_a_measure_is_the_one_worked_out_by_hand)
{
    make_base();
    json_decref(run_base(AS_OF_MS));
    json_t *d = distribution("historic_value", NULL, NULL, 0);
    ck_assert_str_eq(json_string_value(json_object_get(d, "measure")), "historic_value");
    ck_assert_str_eq(json_string_value(json_object_get(d, "as_of")), "2026-01-07T00:00:00.000Z");
    ck_assert(json_is_string(json_object_get(d, "computed_at")));
    ck_assert_int_eq(json_integer_value(json_object_get(d, "n")), 11);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "missing")), 0);
    assert_near(num(d, "mean"), 60, "mean");
    assert_near(num(d, "median"), 50, "median");
    assert_near(num(d, "sd"), sqrt(25400.0 / 11), "sd");
    assert_near(num(d, "min"), 10, "min");
    assert_near(num(d, "max"), 190, "max");
    static const struct {
        const char *name;
        double want;
    } pct[] = {{"p1", 11},  {"p5", 15},  {"p10", 20},  {"p25", 25}, {"p50", 50},
               {"p75", 75}, {"p90", 90}, {"p95", 140}, {"p99", 180}};
    for (size_t i = 0; i < sizeof pct / sizeof pct[0]; i++)
        assert_near(num(json_object_get(d, "percentiles"), pct[i].name), pct[i].want, pct[i].name);
    assert_near(num(d, "within_half_sd"), 5.0 / 11, "within_half_sd");
    assert_near(num(d, "within_one_sd"), 9.0 / 11, "within_one_sd");
    json_t *h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "freedman_diaconis");
    ck_assert(json_is_false(json_object_get(h, "live")));
    assert_near(num(h, "fd_width"), 44.96443130226092, "fd_width");
    assert_near(num(h, "bin_width"), 36, "bin_width");
    assert_numbers(h, "edges", (const double[]){10, 46, 82, 118, 154, 190}, 6);
    assert_numbers(h, "counts", (const double[]){5, 4, 1, 0, 1}, 5);
    json_decref(d);
}
END_TEST

static json_t *place_of(const char *measure, long long id)
{
    json_t *d = distribution(measure, NULL, NULL, id);
    json_t *place = json_incref(json_object_get(d, "customer"));
    json_decref(d);
    ck_assert_msg(json_is_object(place), "no customer member");
    return place;
}

START_TEST(a_customer_is_placed_by_percentile_rank_z_score_and_bin)
{
    make_base();
    json_decref(run_base(AS_OF_MS));
    json_t *p = place_of("historic_value", ids[7]);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "customer_id")), ids[7]);
    assert_near(num(p, "value"), 70, "value");
    assert_near(num(p, "percentile_rank"), 70, "rank of 70");
    assert_near(num(p, "z_score"), 10 / sqrt(25400.0 / 11), "z-score");
    assert_near(num(p, "distance_to_mean"), 10, "distance");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "bin")), 1);
    json_decref(p);
    p = place_of("historic_value", ids[1]);
    assert_near(num(p, "percentile_rank"), 15, "rank of a tie");
    json_decref(p);
    p = place_of("historic_value", ids[10]);
    assert_near(num(p, "percentile_rank"), 100, "rank of the maximum");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "bin")), 4);
    json_decref(p);
    p = place_of("historic_value", ids[0]);
    assert_near(num(p, "percentile_rank"), 0, "rank of the minimum");
    json_decref(p);
    /* Derived measures: 1 - p_alive, touchpoints_90d / 3. */
    p = place_of("churn_risk", ids[7]);
    assert_near(num(p, "value"), 0.75, "churn risk");
    json_decref(p);
    p = place_of("touchpoints_per_30d", ids[7]);
    assert_near(num(p, "value"), 3, "touchpoints per 30 days");
    json_decref(p);
    /* Without a value: null members, but the customer is named. */
    p = place_of("nps_mean", ids[0]);
    ck_assert(json_is_null(json_object_get(p, "value")));
    ck_assert(json_is_null(json_object_get(p, "percentile_rank")));
    ck_assert(json_is_null(json_object_get(p, "z_score")));
    json_decref(p);
    /* A merged customer's id places the survivor. */
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", ids[7]);
    long long merged = customer("merged");
    snprintf(b, sizeof b, "%lld", merged);
    const char *params[] = {b, a};
    PQclear(unit_sql(db, "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1",
                     2, params));
    p = place_of("historic_value", merged);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "customer_id")), ids[7]);
    json_decref(p);
    /* No such customer: not found. */
    crm_distribution_request r = {"historic_value", NULL, NULL, "999999"};
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_metrics_distribution(&r, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
}
END_TEST

START_TEST(the_fallbacks_of_the_automatic_bins_and_the_missing_values)
{
    make_base();
    json_decref(run_base(AS_OF_MS));
    json_t *d = distribution("frequency", NULL, NULL, ids[0]);
    json_t *h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "sturges");
    ck_assert(json_is_null(json_object_get(h, "fd_width")));
    assert_numbers(h, "edges", (const double[]){1, 1.8, 2.6, 3.4, 4.2, 5}, 6);
    assert_numbers(h, "counts", (const double[]){9, 1, 0, 0, 1}, 5);
    assert_near(num(d, "mean"), 16.0 / 11, "mean frequency");
    assert_near(num(json_object_get(d, "customer"), "percentile_rank"), 40, "rank of 1");
    json_decref(d);

    d = distribution("csat_mean", NULL, NULL, ids[3]);
    h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "single");
    assert_numbers(h, "edges", (const double[]){3.5, 4.5}, 2);
    assert_numbers(h, "counts", (const double[]){11}, 1);
    assert_near(num(d, "sd"), 0, "sd of one value");
    assert_near(num(d, "within_half_sd"), 1, "all within");
    json_t *p = json_object_get(d, "customer");
    assert_near(num(p, "percentile_rank"), 50, "rank in a single value");
    ck_assert(json_is_null(json_object_get(p, "z_score")));
    json_decref(d);

    /* nps_mean: 3 customers without a value are left out and counted. */
    d = distribution("nps_mean", NULL, NULL, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "n")), 8);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "missing")), 3);
    assert_near(num(d, "mean"), 65.0 / 8, "mean nps");
    assert_near(num(d, "min"), 5, "min nps");
    json_decref(d);

    /* A measure nobody has: n 0, no histogram. */
    d = distribution("spend_cv", NULL, NULL, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "n")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "missing")), 11);
    ck_assert(json_is_null(json_object_get(d, "mean")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(d, "histogram"), "method")),
                     "none");
    json_decref(d);
}
END_TEST

START_TEST(bins_and_edges_are_counted_live)
{
    make_base();
    json_decref(run_base(AS_OF_MS));
    json_t *d = distribution("historic_value", NULL, "0,50,100", ids[8]);
    json_t *h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "edges");
    ck_assert(json_is_true(json_object_get(h, "live")));
    assert_numbers(h, "counts", (const double[]){5, 5}, 2);
    ck_assert_int_eq(json_integer_value(json_object_get(h, "below")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(h, "above")), 1);
    /* K8 (80) in [50, 100], the last bin, which holds 100. */
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(d, "customer"), "bin")), 1);
    json_decref(d);

    /* Live means now: a value changed since the job counts. */
    sql("UPDATE customer_metrics SET historic_value = 100 WHERE historic_value = 190");
    d = distribution("historic_value", "3", NULL, 0);
    h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "bins");
    assert_numbers(h, "edges", (const double[]){10, 40, 70, 100}, 4);
    assert_numbers(h, "counts", (const double[]){4, 3, 4}, 3);
    assert_near(num(h, "bin_width"), 30, "bin width");
    /* ... while the statistics stay the job's. */
    assert_near(num(d, "max"), 190, "stored max");
    json_decref(d);
}
END_TEST

/* Each measure's four statements run: the stored statistics, a customer's
 * value, live bins and live edges; every customer is in or missing. */
START_TEST(every_measure_is_served)
{
    make_base();
    json_decref(run_base(AS_OF_MS));
    for (size_t i = 0; i < metrics_measure_count(); i++) {
        const char *name = metrics_measure_name(i);
        json_t *d = distribution(name, NULL, NULL, ids[5]);
        ck_assert_msg(json_integer_value(json_object_get(d, "n")) +
                              json_integer_value(json_object_get(d, "missing")) ==
                          K,
                      "%s does not count every customer", name);
        ck_assert_int_eq(
            json_integer_value(json_object_get(json_object_get(d, "customer"), "customer_id")),
            ids[5]);
        json_decref(d);
        json_decref(distribution(name, "4", NULL, 0));
        json_decref(distribution(name, NULL, "-1000,0,1000", 0));
    }
    ck_assert_ptr_null(metrics_measure_name(metrics_measure_count()));
}
END_TEST

/* openapi.yaml's MetricsMeasure lists exactly the measures served. */
START_TEST(the_contract_lists_the_measures)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/openapi.yaml", CRMD_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    char *schema = strstr(text, "\n    MetricsMeasure:\n");
    ck_assert_ptr_nonnull(schema);
    char *list = strstr(schema, "enum: [");
    ck_assert_ptr_nonnull(list);
    char *end = strchr(list, ']');
    ck_assert_ptr_nonnull(end);
    *end = '\0';
    size_t listed = 1;
    for (char *p = list; *p; p++)
        listed += *p == ',';
    ck_assert_int_eq(listed, metrics_measure_count());
    for (size_t i = 0; i < metrics_measure_count(); i++) {
        char word[64];
        snprintf(word, sizeof word, " %s,", metrics_measure_name(i));
        bool found = strstr(list, word) != NULL;
        snprintf(word, sizeof word, "[%s,", metrics_measure_name(i));
        found = found || strstr(list, word) != NULL;
        snprintf(word, sizeof word, " %s", metrics_measure_name(i));
        found = found || (strlen(list) >= strlen(word) &&
                          strcmp(list + strlen(list) - strlen(word), word) == 0);
        ck_assert_msg(found, "openapi.yaml does not list %s", metrics_measure_name(i));
    }
}
END_TEST

START_TEST(bad_parameters_are_named)
{
    static const struct {
        crm_distribution_request r;
        const char *field;
    } cases[] = {
        {{"lifetime", NULL, NULL, NULL}, "measure"},
        {{NULL, NULL, NULL, NULL}, "measure"},
        {{"frequency", "0", NULL, NULL}, "bins"},
        {{"frequency", "201", NULL, NULL}, "bins"},
        {{"frequency", "1e2", NULL, NULL}, "bins"},
        {{"frequency", NULL, "5", NULL}, "edges"},
        {{"frequency", NULL, "5,1", NULL}, "edges"},
        {{"frequency", NULL, "1,1", NULL}, "edges"},
        {{"frequency", NULL, "1,x", NULL}, "edges"},
        {{"frequency", NULL, "1,,2", NULL}, "edges"},
        {{"frequency", NULL, "nan,2", NULL}, "edges"},
        {{"frequency", NULL, "1,1e999", NULL}, "edges"},
        {{"frequency", NULL, " 1,2", NULL}, "edges"},
        {{"frequency", "3", "1,2", NULL}, "edges"},
        {{"frequency", NULL, NULL, "-4"}, "customer_id"},
        {{"frequency", NULL, NULL, "abc"}, "customer_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        crm_error err = CRM_ERROR_INIT;
        ck_assert_ptr_null(crm_metrics_distribution(&cases[i].r, &err));
        ck_assert_int_eq(err.code, CRM_E_INVALID);
        ck_assert_msg(unit_has_field_error(&err, cases[i].field), "case %zu does not name %s", i,
                      cases[i].field);
        crm_error_clear(&err);
    }
    char many[4096] = "0";
    for (int i = 1; i <= 201; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), ",%d", i);
    crm_distribution_request r = {"frequency", NULL, many, NULL};
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_metrics_distribution(&r, &err));
    ck_assert(unit_has_field_error(&err, "edges"));
    crm_error_clear(&err);
    /* 201 edges are fine. */
    *strrchr(many, ',') = '\0';
    json_decref(distribution("frequency", NULL, many, 0));
}
END_TEST

/* ---- the numerics alone ----------------------------------------------------------- */

START_TEST(the_automatic_bins_are_clamped_to_200)
{
    metrics_edges e;
    metrics_auto_edges(1000000, 1e-9, 0, 1e6, &e);
    ck_assert_int_eq(e.count, 201);
    ck_assert_str_eq(e.method, "freedman_diaconis");
    ck_assert_double_eq(e.at[200], 1e6);
    metrics_auto_edges(8, 1e9, 0, 1, &e); /* a width past the range: one bin */
    ck_assert_int_eq(e.count, 2);
    metrics_auto_edges(0, 0, NAN, NAN, &e);
    ck_assert_int_eq(e.count, 0);
    ck_assert_int_eq(metrics_bin_of(&e, 1), -1);
}
END_TEST

START_TEST(the_percentile_rank_inverts_the_stored_quantiles)
{
    /* Values 0 .. 10 by 1: the percentile function at P is P / 10. */
    double q[METRICS_QUANTILES];
    for (int k = 0; k < METRICS_QUANTILES; k++)
        q[k] = k / 100.0;
    assert_near(metrics_percentile_rank(q, METRICS_QUANTILES, 2.5), 25, "2.5");
    assert_near(metrics_percentile_rank(q, METRICS_QUANTILES, 2.505), 25.05, "between points");
    ck_assert_double_eq(metrics_percentile_rank(q, METRICS_QUANTILES, -1), 0);
    ck_assert_double_eq(metrics_percentile_rank(q, METRICS_QUANTILES, 11), 100);
    ck_assert(isnan(metrics_percentile_rank(q, 1, 1)));
}
END_TEST

/* ---- the days ---------------------------------------------------------------------- */

typedef struct shop {
    long long a, b, c;
} shop;

static void touchpoint(long long id, const char *type, const char *when, const char *amount,
                       const char *currency, const char *feedback)
{
    static int serial;
    char idtext[24], event[32];
    snprintf(idtext, sizeof idtext, "%lld", id);
    snprintf(event, sizeof event, "b%d", ++serial);
    const char *params[] = {idtext, type, when, event, amount, currency, feedback};
    PQclear(unit_sql(db,
                     "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at,"
                     " source, event_id, amount, currency, feedback) VALUES ($1, 'web', $2,"
                     " 'inbound', $3, 'unit', $4, $5, $6, $7)",
                     7, params));
}

static void nps(long long id, const char *when, int score)
{
    char fb[64];
    snprintf(fb, sizeof fb, "{\"scale\": \"nps\", \"score\": %d}", score);
    touchpoint(id, "feedback", when, NULL, NULL, fb);
}

/* The touchpoints, by UTC day (USD at 0.5, GBP without a rate):
 *   2025-11-20  C buys 200 EUR (C's first purchase)
 *   2025-12-29  A buys 100 EUR (A's first; a Monday)
 *   2025-12-30  NPS answers 10, 9, 3 (and a CSAT one, not counted)
 *   2025-12-31  B buys 40 USD = 20 EUR (B's first)
 *   2026-01-02  A buys 50, C buys 30 (neither new)
 *   2026-01-03  A's refund of -20
 *   2026-01-04  NPS 7 and 0; A views a page
 *   2026-01-05  B buys 10 GBP: an order, no revenue, unrated (a Monday)
 *   2026-01-06  NPS 8
 * By week (from Mondays): of 12-29: revenue 100 + 20 + 80 - 20 = 180,
 * orders 4, new 2, NPS answers 10 9 3 7 0 = 2 promoters, 1 passive, 2
 * detractors: 0. Of 01-05: orders 1, revenue 0. By month: November 200,
 * 1 order, 1 new; December 120, 2 orders, 2 new, NPS (2 - 1) / 3 = 33.3;
 * January (to the 6th) 60, 3 orders, 0 new, NPS (0 - 1) / 3 = -33.3. */
static shop make_shop(void)
{
    shop s = {customer("A"), customer("B"), customer("C")};
    sql("INSERT INTO currency_rates (currency, rate) VALUES ('USD', 0.5)");
    touchpoint(s.c, "purchase", "2025-11-20T10:00:00Z", "200", "EUR", NULL);
    touchpoint(s.a, "purchase", "2025-12-29T23:59:59Z", "100", "EUR", NULL);
    nps(s.a, "2025-12-30T08:00:00Z", 10);
    nps(s.b, "2025-12-30T09:00:00Z", 9);
    nps(s.c, "2025-12-30T10:00:00Z", 3);
    touchpoint(s.c, "feedback", "2025-12-30T11:00:00Z", NULL, NULL,
               "{\"scale\": \"csat\", \"score\": 2}");
    touchpoint(s.b, "purchase", "2025-12-31T00:00:00Z", "40", "USD", NULL);
    touchpoint(s.a, "purchase", "2026-01-02T12:00:00+01:00", "50", "EUR", NULL);
    touchpoint(s.c, "purchase", "2026-01-02T13:00:00Z", "30", "EUR", NULL);
    touchpoint(s.a, "refund", "2026-01-03T13:00:00Z", "-20", "EUR", NULL);
    nps(s.a, "2026-01-04T13:00:00Z", 7);
    nps(s.b, "2026-01-04T14:00:00Z", 0);
    touchpoint(s.a, "page_view", "2026-01-04T15:00:00Z", NULL, NULL, NULL);
    touchpoint(s.b, "purchase", "2026-01-05T01:00:00Z", "10", "GBP", NULL);
    nps(s.c, "2026-01-06T23:00:00Z", 8);
    /* Not yet over at as_of: left for the next run. */
    touchpoint(s.c, "purchase", "2026-01-07T01:00:00Z", "1000", "EUR", NULL);
    return s;
}

static json_t *series(const char *measure, const char *interval, const char *from, const char *to)
{
    crm_timeseries_request r = {measure, interval, from, to};
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_metrics_timeseries(&r, &err);
    ck_assert_msg(doc != NULL, "timeseries %s: %s", measure, err.detail);
    return doc;
}

/* The points' values, NAN for null. */
static void assert_points(const json_t *doc, const double *want, size_t n)
{
    const json_t *points = json_object_get(doc, "points");
    ck_assert_int_eq(json_array_size(points), n);
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_object_get(json_array_get(points, i), "value");
        if (isnan(want[i]))
            ck_assert_msg(json_is_null(v), "point %zu is not null", i);
        else {
            char what[32];
            snprintf(what, sizeof what, "point %zu", i);
            ck_assert_msg(json_is_number(v), "point %zu is not a number", i);
            assert_near(json_number_value(v), want[i], what);
        }
    }
}

static long day_value(const char *column, const char *day)
{
    char q[160];
    snprintf(q, sizeof q, "SELECT coalesce(%s::text, '-1') FROM metrics_daily WHERE day = $1",
             column);
    const char *params[] = {day};
    return unit_sql_long(db, q, 1, params);
}

START_TEST(the_snapshot_writes_each_complete_day_from_the_touchpoints)
{
    make_base();
    make_shop();
    json_t *job = run_base(AS_OF_MS);
    json_t *days = json_object_get(json_object_get(job, "result"), "days");
    ck_assert_int_eq(json_integer_value(json_object_get(days, "days_written")), 48);
    ck_assert_str_eq(json_string_value(json_object_get(days, "first_day")), "2025-11-20");
    ck_assert_str_eq(json_string_value(json_object_get(days, "last_day")), "2026-01-06");
    json_decref(job);
    ck_assert_int_eq(day_value("new_customers", "2025-12-29"), 1);
    ck_assert_int_eq(day_value("new_customers", "2026-01-02"), 0);
    ck_assert_int_eq(day_value("revenue", "2026-01-02"), 80);
    ck_assert_int_eq(day_value("revenue", "2026-01-03"), -20);
    ck_assert_int_eq(day_value("unrated", "2026-01-05"), 1);
    ck_assert_int_eq(day_value("nps_promoters", "2025-12-30"), 2);
    ck_assert_int_eq(day_value("nps_detractors", "2025-12-30"), 1);
    /* Backfilled days have no lifecycle figures; the snapshot's day has. */
    ck_assert_int_eq(day_value("active", "2026-01-05"), -1);
    ck_assert_int_eq(day_value("lapsed", "2026-01-05"), -1);
    ck_assert_int_eq(day_value("active", "2026-01-06"), 8);
    ck_assert_int_eq(day_value("stage_lapsed", "2026-01-06"), 2);
    ck_assert_int_eq(day_value("lapsed", "2026-01-06"), 0);
    ck_assert_int_eq(unit_sql_long(db,
                                   "SELECT count(*) FROM metrics_daily WHERE source = "
                                   "'backfill'",
                                   0, NULL),
                     47);
}
END_TEST

START_TEST(the_time_series_sums_days_by_week_and_month)
{
    make_base();
    make_shop();
    json_decref(run_base(AS_OF_MS));
    const char *from = "2025-12-01T00:00:00Z", *to = "2026-01-07T00:00:00Z";
    json_t *s = series("revenue", "week", from, to);
    ck_assert_str_eq(json_string_value(json_object_get(s, "from")), "2025-12-01T00:00:00.000Z");
    ck_assert_str_eq(json_string_value(json_object_get(s, "currency")), "EUR");
    assert_points(s, (const double[]){0, 0, 0, 0, 180, 0}, 6);
    json_t *last = json_array_get(json_object_get(s, "points"), 5);
    ck_assert_str_eq(json_string_value(json_object_get(last, "start")), "2026-01-05T00:00:00.000Z");
    ck_assert_str_eq(json_string_value(json_object_get(last, "end")), "2026-01-07T00:00:00.000Z");
    ck_assert_int_eq(json_integer_value(json_object_get(last, "days")), 2);
    json_decref(s);
    s = series("orders", "week", from, to);
    assert_points(s, (const double[]){0, 0, 0, 0, 4, 1}, 6);
    json_decref(s);
    s = series("nps", "week", from, to);
    assert_points(s, (const double[]){NAN, NAN, NAN, NAN, 0, 0}, 6);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_array_get(json_object_get(s, "points"), 4), "responses")),
                     5);
    json_decref(s);
    s = series("active", "week", from, to);
    assert_points(s, (const double[]){NAN, NAN, NAN, NAN, NAN, 8}, 6);
    json_decref(s);

    from = "2025-11-01T00:00:00Z";
    s = series("revenue", "month", from, to);
    assert_points(s, (const double[]){200, 120, 60}, 3);
    json_t *nov = json_array_get(json_object_get(s, "points"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(nov, "days")), 30);
    ck_assert_int_eq(json_integer_value(json_object_get(nov, "days_recorded")), 11);
    json_decref(s);
    s = series("new", "month", from, to);
    assert_points(s, (const double[]){1, 2, 0}, 3);
    json_decref(s);
    s = series("nps", "month", from, to);
    assert_points(s, (const double[]){NAN, 100.0 / 3, -100.0 / 3}, 3);
    json_decref(s);
    /* Days before the first recorded one: no figure. */
    s = series("orders", "day", "2025-11-18T00:00:00Z", "2025-11-21T00:00:00Z");
    assert_points(s, (const double[]){NAN, NAN, 1}, 3);
    json_decref(s);
    /* A bound inside a day starts at the next day. */
    s = series("orders", "day", "2025-11-19T00:00:01Z", "2025-11-21T00:00:00Z");
    assert_points(s, (const double[]){1}, 1);
    json_decref(s);
}
END_TEST

START_TEST(history_survives_merges_and_late_touchpoints_and_lapses_are_counted)
{
    make_base();
    shop s = make_shop();
    json_decref(run_base(AS_OF_MS));
    /* A merges into C; a purchase of 2026-01-02 arrives late; two
     * customers lapse on the 7th and the 8th (the lifecycle's history). */
    char a[24], c[24];
    snprintf(a, sizeof a, "%lld", s.a);
    snprintf(c, sizeof c, "%lld", s.c);
    const char *params[] = {a, c};
    PQclear(
        unit_sql(db, "UPDATE touchpoints SET customer_id = $2 WHERE customer_id = $1", 2, params));
    PQclear(unit_sql(db, "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1",
                     2, params));
    touchpoint(s.b, "purchase", "2026-01-02T18:00:00Z", "500", "EUR", NULL);
    sql("INSERT INTO customer_lifecycle (customer_id, stage, previous, changed_at) VALUES"
        " (1, 'lapsed', 'at_risk', '2026-01-07T05:00:00Z'),"
        " (2, 'lapsed', 'at_risk', '2026-01-08T05:00:00Z')");
    sql("UPDATE customer_metrics SET lifecycle_stage = 'lapsed'"
        " WHERE lifecycle_stage = 'active' AND historic_value < 50");
    json_t *job = run_base(1767920400000LL); /* 2026-01-09T01:00:00Z */
    json_t *days = json_object_get(json_object_get(job, "result"), "days");
    ck_assert_int_eq(json_integer_value(json_object_get(days, "days_written")), 2);
    json_decref(job);
    /* What was recorded stays. */
    ck_assert_int_eq(day_value("new_customers", "2025-12-29"), 1);
    ck_assert_int_eq(day_value("revenue", "2026-01-02"), 80);
    /* The day caught up on has its lapses but no stages; the last has both. */
    ck_assert_int_eq(day_value("lapsed", "2026-01-07"), 1);
    ck_assert_int_eq(day_value("active", "2026-01-07"), -1);
    ck_assert_int_eq(day_value("revenue", "2026-01-07"), 1000);
    ck_assert_int_eq(day_value("lapsed", "2026-01-08"), 1);
    ck_assert_int_eq(day_value("active", "2026-01-08"), 6);
    /* Once more: nothing new to write. */
    job = run_base(1767920400000LL);
    days = json_object_get(json_object_get(job, "result"), "days");
    ck_assert_int_eq(json_integer_value(json_object_get(days, "days_written")), 0);
    json_decref(job);

    /* Churn over [01-07, 01-09): 2 lapsed of the 8 active at the end of 01-06. */
    crm_error err = CRM_ERROR_INIT;
    json_t *sum = crm_metrics_summary("2026-01-07T00:00:00Z", "2026-01-09T00:00:00Z", &err);
    ck_assert_msg(sum != NULL, "%s", err.detail);
    json_t *churn = json_object_get(json_object_get(sum, "period"), "churn");
    assert_near(num(churn, "rate"), 0.25, "churn rate");
    ck_assert_int_eq(json_integer_value(json_object_get(churn, "active_at_start")), 8);
    ck_assert_int_eq(json_integer_value(json_object_get(churn, "lapsed")), 2);
    ck_assert(json_is_null(json_object_get(churn, "reason")));
    json_decref(sum);
}
END_TEST

START_TEST(the_summary_reads_the_stored_figures)
{
    make_base();
    make_shop();
    json_decref(run_base(AS_OF_MS));
    crm_error err = CRM_ERROR_INIT;
    json_t *sum = crm_metrics_summary("2025-12-01T00:00:00Z", "2026-01-07T00:00:00Z", &err);
    ck_assert_msg(sum != NULL, "%s", err.detail);
    ck_assert_str_eq(json_string_value(json_object_get(sum, "as_of")), "2026-01-07T00:00:00.000Z");
    ck_assert_int_eq(json_integer_value(json_object_get(sum, "customers")), 11);
    ck_assert_int_eq(json_integer_value(json_object_get(sum, "active_customers")), 8);
    json_t *stages = json_object_get(sum, "by_stage");
    ck_assert_int_eq(json_integer_value(json_object_get(stages, "prospect")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(stages, "active")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(stages, "won_back")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(stages, "unknown")), 0);
    assert_near(num(json_object_get(sum, "nps_latest"), "score"), 25, "latest NPS");
    json_t *value = json_object_get(sum, "value");
    assert_near(num(value, "mean_historic"), 60, "mean value");
    assert_near(num(value, "median_historic"), 50, "median value");
    /* All time: 200 + 100 + 20 + 80 - 20 = 380 over 6 orders; NPS answers
     * 10 9 3 7 0 8: 2 - 2 of 6 = 0. */
    json_t *all = json_object_get(sum, "all_time");
    assert_near(num(all, "revenue"), 380, "revenue");
    ck_assert_int_eq(json_integer_value(json_object_get(all, "orders")), 6);
    ck_assert_int_eq(json_integer_value(json_object_get(all, "refunds")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(all, "unrated")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(all, "new_customers")), 3);
    assert_near(num(json_object_get(all, "nps"), "score"), 0, "all-time NPS");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(all, "nps"), "responses")),
                     6);
    /* The period: December and January to the 6th. */
    json_t *period = json_object_get(sum, "period");
    assert_near(num(period, "revenue"), 180, "period revenue");
    ck_assert_int_eq(json_integer_value(json_object_get(period, "orders")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(period, "days")), 37);
    ck_assert_int_eq(json_integer_value(json_object_get(period, "days_recorded")), 37);
    assert_near(num(json_object_get(period, "nps"), "score"), 0, "period NPS");
    /* No snapshot of the active customers on 2025-11-30: no churn rate. */
    json_t *churn = json_object_get(period, "churn");
    ck_assert(json_is_null(json_object_get(churn, "rate")));
    ck_assert_ptr_nonnull(
        strstr(json_string_value(json_object_get(churn, "reason")), "2025-11-30"));
    json_decref(sum);
    /* The default period: the 90 days to the end of the last one recorded. */
    sum = crm_metrics_summary(NULL, NULL, &err);
    ck_assert_msg(sum != NULL, "%s", err.detail);
    period = json_object_get(sum, "period");
    ck_assert_str_eq(json_string_value(json_object_get(period, "to")), "2026-01-07T00:00:00.000Z");
    ck_assert_str_eq(json_string_value(json_object_get(period, "from")),
                     "2025-10-09T00:00:00.000Z");
    assert_near(num(period, "revenue"), 380, "default period revenue");
    json_decref(sum);
}
END_TEST

START_TEST(an_empty_base_gives_null_figures)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *sum = crm_metrics_summary(NULL, NULL, &err);
    ck_assert_msg(sum != NULL, "%s", err.detail);
    ck_assert(json_is_null(json_object_get(sum, "customers")));
    ck_assert(json_is_null(json_object_get(json_object_get(sum, "all_time"), "revenue")));
    json_decref(sum);
    json_t *d = distribution("historic_value", NULL, NULL, 0);
    ck_assert(json_is_null(json_object_get(d, "computed_at")));
    ck_assert(json_is_null(json_object_get(d, "n")));
    json_decref(d);
    json_t *s = series("revenue", "day", NULL, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(s, "points")), 90);
    json_decref(s);
    /* The job on nothing: every measure empty, one day written. */
    json_t *job = run_base(AS_OF_MS);
    json_t *days = json_object_get(json_object_get(job, "result"), "days");
    ck_assert_int_eq(json_integer_value(json_object_get(days, "days_written")), 1);
    json_decref(job);
    d = distribution("historic_value", NULL, NULL, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "n")), 0);
    json_decref(d);
}
END_TEST

START_TEST(bad_time_series_parameters_are_named)
{
    static const struct {
        crm_timeseries_request r;
        const char *field;
    } cases[] = {
        {{"customers", "day", NULL, NULL}, "measure"},
        {{NULL, "day", NULL, NULL}, "measure"},
        {{"revenue", "year", NULL, NULL}, "interval"},
        {{"revenue", "day", "yesterday", NULL}, "from"},
        {{"revenue", "day", NULL, "2026-13-01T00:00:00Z"}, "to"},
        {{"revenue", "day", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"}, "from"},
        {{"revenue", "day", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"}, "from"},
        {{"revenue", "day", "2000-01-01T00:00:00Z", "2026-01-01T00:00:00Z"}, "from"},
        {{"nope", "day", "bad", NULL}, "from"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        crm_error err = CRM_ERROR_INIT;
        ck_assert_ptr_null(crm_metrics_timeseries(&cases[i].r, &err));
        ck_assert_int_eq(err.code, CRM_E_INVALID);
        ck_assert_msg(unit_has_field_error(&err, cases[i].field), "case %zu does not name %s", i,
                      cases[i].field);
        crm_error_clear(&err);
    }
    /* 3660 days are allowed, 3661 are not; in months they are 121. */
    json_decref(series("orders", "day", "2016-01-01T00:00:00Z", "2026-01-08T00:00:00Z"));
    crm_timeseries_request r = {"orders", "day", "2016-01-01T00:00:00Z", "2026-01-09T00:00:00Z"};
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_metrics_timeseries(&r, &err));
    crm_error_clear(&err);
    json_t *s = series("orders", "month", "2016-01-01T00:00:00Z", "2026-01-09T00:00:00Z");
    ck_assert_int_eq(json_array_size(json_object_get(s, "points")), 121);
    json_decref(s);
    /* The summary's period too. */
    ck_assert_ptr_null(crm_metrics_summary("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", &err));
    ck_assert(unit_has_field_error(&err, "from"));
    crm_error_clear(&err);
}
END_TEST

/* ---- the job ------------------------------------------------------------------------ */

START_TEST(the_job_runs_one_at_a_time_and_not_in_the_future)
{
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    json_t *first = crm_metrics_base_submit(0, 0, &running, &err);
    ck_assert_msg(first != NULL, "%s", err.detail);
    ck_assert_str_eq(json_string_value(json_object_get(first, "kind")), "metrics_base");
    ck_assert_ptr_null(crm_metrics_base_submit(0, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_int_eq(running, json_integer_value(json_object_get(first, "id")));
    crm_error_clear(&err);
    ck_assert_ptr_null(crm_metrics_base_submit(crm_wall_ms() + 3600000, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    json_decref(first);
}
END_TEST

START_TEST(the_job_reports_its_phases)
{
    make_base();
    json_t *job = run_base(AS_OF_MS);
    ck_assert_str_eq(json_string_value(json_object_get(job, "phase")), "snapshot");
    json_t *result = json_object_get(job, "result");
    ck_assert_int_eq(json_integer_value(json_object_get(result, "measures")),
                     (long long)metrics_measure_count());
    json_t *seconds = json_object_get(result, "phase_seconds");
    ck_assert(json_is_number(json_object_get(seconds, "distributions")));
    ck_assert(json_is_number(json_object_get(seconds, "snapshot")));
    json_decref(job);
    ck_assert_int_eq(unit_sql_long(db, "SELECT count(*) FROM metrics_distributions", 0, NULL),
                     (long)metrics_measure_count());
}
END_TEST

/* ---- against numpy ------------------------------------------------------------------- */

#define RANDOM_N 3000

/* Runs tests/reference/distribution_reference.py on {"values", "ranks_of"};
 * returns its answer. */
static json_t *numpy_reference(json_t *request)
{
    char input[] = "/tmp/crmd_distribution_XXXXXX";
    int fd = mkstemp(input);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(json_dumpf(request, f, JSON_COMPACT | JSON_REAL_PRECISION(17)), 0);
    ck_assert_int_eq(fclose(f), 0);
    const char *python = getenv("CRMD_TEST_PYTHON");
    char command[4096];
    int len = snprintf(command, sizeof command,
                       "'%s' '%s/tests/reference/distribution_reference.py' < '%s'",
                       python != NULL ? python : "/usr/bin/python3", CRMD_SOURCE_DIR, input);
    ck_assert(len > 0 && (size_t)len < sizeof command);
    FILE *pipe = popen(command, "r");
    ck_assert_ptr_nonnull(pipe);
    json_error_t error;
    json_t *answer = json_loadf(pipe, 0, &error);
    int status = pclose(pipe);
    unlink(input);
    ck_assert_msg(status == 0 && answer != NULL,
                  "the reference script failed (status %d, %s): is python3-numpy installed?",
                  status, error.text);
    return answer;
}

static void assert_close(double got, double want, const char *what)
{
    ck_assert_msg(fabs(got - want) <= 1e-10 * fmax(1, fabs(want)), "%s: %.17g, numpy %.17g", what,
                  got, want);
}

START_TEST(the_statistics_match_numpy_on_random_values)
{
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 20260107);
    PGresult *made = unit_sql(db,
                              "INSERT INTO customers (first_name) SELECT 'r' || n"
                              " FROM generate_series(1, 3000) n RETURNING id",
                              0, NULL);
    ck_assert_int_eq(PQntuples(made), RANDOM_N);
    json_t *values = json_array(), *ranks_of = json_array();
    long long picked[5];
    char *copy = malloc(RANDOM_N * 128);
    ck_assert_ptr_nonnull(copy);
    size_t used = 0;
    for (int i = 0; i < RANDOM_N; i++) {
        /* Skewed, like values are: lognormal, to 4 decimals as amounts are. */
        double v = round(gsl_ran_lognormal(rng, 4, 0.6) * 10000) / 10000;
        json_array_append_new(values, json_real(v));
        used += (size_t)snprintf(
            copy + used, 128,
            "%s\t2026-01-07T00:00:00Z\t2026-01-07T00:00:00Z\t1\t0\t0\t%.4f\t1\t0\n",
            PQgetvalue(made, i, 0), v);
        if (i % 700 == 0) {
            picked[i / 700] = atoll(PQgetvalue(made, i, 0));
            json_array_append_new(ranks_of, json_real(v));
        }
    }
    PQclear(made);
    gsl_rng_free(rng);
    PGresult *res =
        PQexec(db, "COPY customer_metrics (customer_id, as_of, computed_at, purchases,"
                   " refunds, unrated, historic_value, frequency, monetary) FROM STDIN");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COPY_IN);
    PQclear(res);
    ck_assert_int_eq(PQputCopyData(db, copy, (int)used), 1);
    ck_assert_int_eq(PQputCopyEnd(db, NULL), 1);
    res = PQgetResult(db);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(res);
    while ((res = PQgetResult(db)) != NULL)
        PQclear(res);
    free(copy);

    json_decref(run_base(AS_OF_MS));
    json_t *request = json_pack("{s:o, s:o}", "values", values, "ranks_of", ranks_of);
    json_t *want = numpy_reference(request);
    json_decref(request);

    json_t *d = distribution("historic_value", NULL, NULL, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "n")), RANDOM_N);
    static const char *const stats[] = {"mean",           "sd",           "min", "max", "median",
                                        "within_half_sd", "within_one_sd"};
    for (size_t i = 0; i < sizeof stats / sizeof stats[0]; i++)
        assert_close(num(d, stats[i]), num(want, stats[i]), stats[i]);
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(want, "percentiles"), key, v)
        assert_close(num(json_object_get(d, "percentiles"), key), json_number_value(v), key);
    json_t *h = json_object_get(d, "histogram");
    ck_assert_str_eq(json_string_value(json_object_get(h, "method")), "freedman_diaconis");
    assert_close(num(h, "fd_width"), num(want, "fd_width"), "fd_width");
    json_t *edges = json_object_get(want, "edges"), *counts = json_object_get(want, "counts");
    ck_assert_int_eq(json_array_size(json_object_get(h, "edges")), json_array_size(edges));
    size_t i;
    json_array_foreach(edges, i, v)
        assert_close(json_number_value(json_array_get(json_object_get(h, "edges"), i)),
                     json_number_value(v), "edge");
    json_array_foreach(counts, i, v) ck_assert_int_eq(
        json_integer_value(json_array_get(json_object_get(h, "counts"), i)), json_integer_value(v));
    json_decref(d);
    /* The stated precision of a percentile rank: 0.1 percentage point. */
    json_array_foreach(json_object_get(want, "ranks"), i, v)
    {
        json_t *p = place_of("historic_value", picked[i]);
        ck_assert_msg(fabs(num(p, "percentile_rank") - json_number_value(v)) <= 0.1,
                      "rank %.6f, exactly %.6f", num(p, "percentile_rank"), json_number_value(v));
        json_decref(p);
    }
    json_decref(want);
}
END_TEST

Suite *metrics_base_suite(void)
{
    Suite *s = suite_create("metrics_base");
    TCase *tc = tcase_create("base");
    tcase_add_checked_fixture(tc, fresh_database, drop_database);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, the_distribution_of_a_measure_is_the_one_worked_out_by_hand);
    tcase_add_test(tc, a_customer_is_placed_by_percentile_rank_z_score_and_bin);
    tcase_add_test(tc, the_fallbacks_of_the_automatic_bins_and_the_missing_values);
    tcase_add_test(tc, bins_and_edges_are_counted_live);
    tcase_add_test(tc, every_measure_is_served);
    tcase_add_test(tc, bad_parameters_are_named);
    tcase_add_test(tc, the_snapshot_writes_each_complete_day_from_the_touchpoints);
    tcase_add_test(tc, the_time_series_sums_days_by_week_and_month);
    tcase_add_test(tc, history_survives_merges_and_late_touchpoints_and_lapses_are_counted);
    tcase_add_test(tc, the_summary_reads_the_stored_figures);
    tcase_add_test(tc, an_empty_base_gives_null_figures);
    tcase_add_test(tc, bad_time_series_parameters_are_named);
    tcase_add_test(tc, the_job_runs_one_at_a_time_and_not_in_the_future);
    tcase_add_test(tc, the_job_reports_its_phases);
    tcase_add_test(tc, the_statistics_match_numpy_on_random_values);
    suite_add_tcase(s, tc);
    TCase *pure = tcase_create("numerics");
    tcase_add_test(pure, the_automatic_bins_are_clamped_to_200);
    tcase_add_test(pure, the_contract_lists_the_measures);
    tcase_add_test(pure, the_percentile_rank_inverts_the_stored_quantiles);
    suite_add_tcase(s, pure);
    return s;
}

/*
 * test_campaign_stats.c — the statistics of a campaign's results
 * (lib/campaigns/stats.h).
 *
 * Two independent sources of truth:
 *   - hand-worked cases: Newcombe's (1998) worked example 56/70 against
 *     48/80, whose hybrid score interval (method 10) the paper publishes,
 *     with the other figures of the same data worked out in the comments;
 *     a small revenue example; a sample-ratio test checked through the
 *     identity P(chi^2_1 >= X^2) = erfc(sqrt(X^2 / 2)); and the degenerate
 *     cases (no responder, all responders, an empty group, no control share);
 *   - SciPy: tests/reference/campaign_stats_reference.py computes every
 *     figure of many cases with scipy.stats and its own formulas
 *     (python3-scipy; the interpreter is /usr/bin/python3, Debian's, or
 *     CRMD_TEST_PYTHON).
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaigns/stats.h"
#include "jbuf.h"
#include "suites.h"

/* Counts only: revenue 0 for everybody. */
static crm_campaign_stats_input counts(long long n_t, long long x_t, long long n_c, long long x_c,
                                       double share)
{
    return (crm_campaign_stats_input){
        .treatment = {.customers = n_t, .responders = x_t},
        .control = {.customers = n_c, .responders = x_c},
        .control_share = share,
    };
}

static crm_campaign_stats compute(const crm_campaign_stats_input *in)
{
    crm_campaign_stats st;
    ck_assert(crm_campaign_stats_compute(in, &st));
    return st;
}

#define assert_near(got, want, tol)                                                                \
    do {                                                                                           \
        double got_ = (got), want_ = (want);                                                       \
        ck_assert_msg(fabs(got_ - want_) <= (tol), "%s is %.10g, want %.10g (within %g)", #got,    \
                      got_, want_, (double)(tol));                                                 \
    } while (0)

#define assert_undefined(v) ck_assert_msg(isnan(v), "%s is %.10g, want undefined", #v, (double)(v))

/* ---- Newcombe's worked example: 56/70 against 48/80 --------------------- */

static crm_campaign_stats newcombe_example(void)
{
    crm_campaign_stats_input in = counts(70, 56, 80, 48, 0.5);
    return compute(&in);
}

START_TEST(test_newcombe_example_rates_and_difference)
{
    crm_campaign_stats st = newcombe_example();
    assert_near(st.treatment.response_rate, 0.8, 1e-15);
    assert_near(st.control.response_rate, 0.6, 1e-15);
    assert_near(st.uplift, 0.2, 1e-15);
    assert_near(st.confidence, 0.95, 0);
    assert_near(st.z_critical, 1.959964, 1e-6);
}
END_TEST

START_TEST(test_newcombe_example_hybrid_score_interval_matches_publication)
{
    /* Newcombe (1998), Statistics in Medicine 17:873-890, Table II, example
     * (a), method 10: 0.0524 to 0.3339. */
    crm_campaign_stats st = newcombe_example();
    assert_near(st.newcombe.low, 0.0524, 0.5e-4);
    assert_near(st.newcombe.high, 0.3339, 0.5e-4);
}
END_TEST

START_TEST(test_newcombe_example_wald_interval_by_hand)
{
    /* 0.8 * 0.2 / 70 = 0.16 / 70 = 0.00228571
     * 0.6 * 0.4 / 80 = 0.24 / 80 = 0.00300000
     * sum 0.00528571, root 0.0727029, times z* 1.959964: 0.142495
     * 0.2 -+ 0.142495 = (0.057505, 0.342495); Newcombe's Table II, method
     * 1, prints 0.0575 to 0.3425. */
    crm_campaign_stats st = newcombe_example();
    assert_near(st.wald.low, 0.057505, 1e-6);
    assert_near(st.wald.high, 0.342495, 1e-6);
}
END_TEST

START_TEST(test_newcombe_example_pooled_z_test_by_hand)
{
    /* pooled p = 104 / 150 = 0.693333, p (1 - p) = 0.212622,
     * 1/70 + 1/80 = 0.0267857, product 0.00569524, root 0.0754668,
     * z = 0.2 / 0.0754668 = 2.650172;
     * two-sided p = 2 Q(z) = erfc(z / sqrt 2) = 0.0080451. */
    crm_campaign_stats st = newcombe_example();
    assert_near(st.z, 2.650172, 1e-6);
    assert_near(st.p_value, 0.0080451, 1e-7);
    assert_near(st.p_value, erfc(st.z / sqrt(2)), 1e-15);
}
END_TEST

START_TEST(test_newcombe_example_relative_lift_by_hand)
{
    /* r = 0.8 / 0.6 - 1 = 1/3;
     * se = sqrt(0.2 / (70 * 0.8) + 0.4 / (80 * 0.6)) = sqrt(0.2/56 + 0.4/48)
     *    = sqrt(0.00357143 + 0.00833333) = 0.1091089;
     * ln(4/3) = 0.2876821 -+ 1.959964 * 0.1091089 = 0.2138494
     * exp(0.0738327) - 1 = 0.076626, exp(0.5015315) - 1 = 0.651249. */
    crm_campaign_stats st = newcombe_example();
    assert_near(st.relative_lift, 1.0 / 3, 1e-15);
    assert_near(st.relative_lift_ci.low, 0.076626, 1e-6);
    assert_near(st.relative_lift_ci.high, 0.651249, 1e-6);
}
END_TEST

/* ---- revenue -------------------------------------------------------------- */

START_TEST(test_revenue_welch_interval_by_hand)
{
    /* Treatment revenues 10, 0, 30, 0, 20: S = 60, Q = 1400, mean 12,
     * variance (1400 - 5 * 144) / 4 = 170. Control 0, 10, 5: S = 15,
     * Q = 125, mean 5, variance (125 - 3 * 25) / 2 = 25.
     * Uplift 7, se = sqrt(170/5 + 25/3) = sqrt(42.333333) = 6.506407,
     * 7 -+ 1.959964 * 6.506407 = 7 -+ 12.752324 = (-5.752324, 19.752324). */
    crm_campaign_stats_input in = counts(5, 3, 3, 2, 0.4);
    in.treatment.revenue = 60;
    in.treatment.revenue_sq = 1400;
    in.control.revenue = 15;
    in.control.revenue_sq = 125;
    crm_campaign_stats st = compute(&in);
    assert_near(st.treatment.revenue_per_customer, 12, 1e-12);
    assert_near(st.control.revenue_per_customer, 5, 1e-12);
    assert_near(st.treatment.revenue_variance, 170, 1e-12);
    assert_near(st.control.revenue_variance, 25, 1e-12);
    assert_near(st.revenue_uplift, 7, 1e-12);
    assert_near(st.revenue_uplift_ci.low, -5.752324, 1e-6);
    assert_near(st.revenue_uplift_ci.high, 19.752324, 1e-6);
}
END_TEST

START_TEST(test_revenue_variance_never_negative)
{
    /* Three customers of 0.1 each: S = 0.3 and Q = 0.03 as doubles, whose
     * Q - S^2/n comes out a hair off 0 either way; the variance is 0, and
     * so is a group whose sum of squares is (wrongly) too small. */
    crm_campaign_stats_input in = counts(3, 3, 3, 3, 0.5);
    in.treatment.revenue = 0.1 + 0.1 + 0.1;
    in.treatment.revenue_sq = 0.01 + 0.01 + 0.01;
    in.control.revenue = 30;
    in.control.revenue_sq = 1;
    crm_campaign_stats st = compute(&in);
    ck_assert(st.treatment.revenue_variance >= 0 && st.treatment.revenue_variance < 1e-15);
    assert_near(st.control.revenue_variance, 0, 0);
    ck_assert(isfinite(st.revenue_uplift_ci.low) && isfinite(st.revenue_uplift_ci.high));
}
END_TEST

START_TEST(test_revenue_stable_for_large_means)
{
    /* A million customers spending 1e6 +- 1 (half each way): the variance is
     * n / (n - 1), six orders of magnitude below the mean's square; it
     * keeps its leading digits (Q = 1e18 + 1e6 is itself rounded to a
     * multiple of 128). */
    long long n = 1000000;
    crm_campaign_stats_input in = counts(n, 0, n, 0, 0.5);
    in.treatment.revenue = 1e6 * (double)n;
    in.treatment.revenue_sq = (1e12 + 1) * (double)n;
    in.control.revenue = in.treatment.revenue;
    in.control.revenue_sq = in.treatment.revenue_sq;
    crm_campaign_stats st = compute(&in);
    double want = (double)n / (double)(n - 1);
    ck_assert_msg(fabs(st.treatment.revenue_variance - want) < 1e-3, "variance %.10g",
                  st.treatment.revenue_variance);
}
END_TEST

START_TEST(test_revenue_interval_needs_two_customers_per_group)
{
    crm_campaign_stats_input in = counts(1, 1, 4, 1, 0.5);
    in.treatment.revenue = 20;
    in.treatment.revenue_sq = 400;
    in.control.revenue = 8;
    in.control.revenue_sq = 40;
    crm_campaign_stats st = compute(&in);
    assert_near(st.treatment.revenue_per_customer, 20, 0);
    assert_undefined(st.treatment.revenue_variance);
    assert_near(st.control.revenue_variance, (40 - 16) / 3.0, 1e-12);
    assert_near(st.revenue_uplift, 18, 1e-12);
    assert_undefined(st.revenue_uplift_ci.low);
    assert_undefined(st.revenue_uplift_ci.high);
}
END_TEST

/* ---- degenerate proportions ------------------------------------------------ */

START_TEST(test_no_responders_anywhere)
{
    /* 0/10 against 0/10: d = 0, the Wald interval is the point 0, the
     * Wilson limits are (0, z^2 / (10 + z^2)) = (0, 0.2775328), so
     * Newcombe's interval is -+0.2775328; no variation to test; no ratio. */
    crm_campaign_stats_input in = counts(10, 0, 10, 0, 0.5);
    crm_campaign_stats st = compute(&in);
    assert_near(st.uplift, 0, 0);
    assert_near(st.wald.low, 0, 0);
    assert_near(st.wald.high, 0, 0);
    assert_near(st.newcombe.low, -0.2775328, 1e-7);
    assert_near(st.newcombe.high, 0.2775328, 1e-7);
    assert_undefined(st.z);
    assert_undefined(st.p_value);
    assert_undefined(st.relative_lift);
    assert_undefined(st.relative_lift_ci.low);
}
END_TEST

START_TEST(test_every_customer_responded)
{
    /* 10/10 against 10/10: the Wilson limits are (10 / (10 + z^2), 1) =
     * (0.7224672, 1); the lift is 0 with se 0, a point interval. */
    crm_campaign_stats_input in = counts(10, 10, 10, 10, 0.5);
    crm_campaign_stats st = compute(&in);
    assert_near(st.uplift, 0, 0);
    assert_near(st.wald.low, 0, 0);
    assert_near(st.wald.high, 0, 0);
    assert_near(st.newcombe.low, -(1 - 0.7224672), 1e-7);
    assert_near(st.newcombe.high, 1 - 0.7224672, 1e-7);
    assert_undefined(st.z);
    assert_undefined(st.p_value);
    assert_near(st.relative_lift, 0, 0);
    assert_near(st.relative_lift_ci.low, 0, 0);
    assert_near(st.relative_lift_ci.high, 0, 0);
}
END_TEST

START_TEST(test_no_treatment_responder_gives_lift_minus_one_without_interval)
{
    crm_campaign_stats_input in = counts(10, 0, 10, 3, 0.5);
    crm_campaign_stats st = compute(&in);
    assert_near(st.relative_lift, -1, 0);
    assert_undefined(st.relative_lift_ci.low);
    assert_undefined(st.relative_lift_ci.high);
    /* Wilson of 0/10 starts at 0 exactly: L = -0.3 - sqrt(0 + (u_c - 0.3)^2). */
    ck_assert(st.newcombe.low < st.uplift && st.uplift < st.newcombe.high);
    ck_assert(isfinite(st.z) && st.z < 0);
}
END_TEST

START_TEST(test_no_control_responder_leaves_the_lift_undefined)
{
    crm_campaign_stats_input in = counts(10, 3, 10, 0, 0.5);
    crm_campaign_stats st = compute(&in);
    assert_undefined(st.relative_lift);
    assert_undefined(st.relative_lift_ci.low);
    assert_near(st.uplift, 0.3, 1e-15);
    ck_assert(isfinite(st.newcombe.low) && isfinite(st.p_value));
}
END_TEST

START_TEST(test_empty_group_leaves_comparisons_undefined)
{
    /* No control customer: its rate and every comparison are undefined,
     * but the split is still tested: N = 100, E_c = 10, E_t = 90,
     * X^2 = 100/10 + 100/90 = 11.111111. */
    crm_campaign_stats_input in = counts(100, 7, 0, 0, 0.1);
    crm_campaign_stats st = compute(&in);
    assert_near(st.treatment.response_rate, 0.07, 1e-15);
    assert_undefined(st.control.response_rate);
    assert_undefined(st.control.revenue_per_customer);
    assert_undefined(st.uplift);
    assert_undefined(st.wald.low);
    assert_undefined(st.newcombe.high);
    assert_undefined(st.z);
    assert_undefined(st.p_value);
    assert_undefined(st.relative_lift);
    assert_undefined(st.revenue_uplift);
    assert_undefined(st.revenue_uplift_ci.low);
    assert_near(st.observed_control_share, 0, 0);
    ck_assert(st.srm_defined);
    assert_near(st.chi_square, 10 + 100.0 / 90, 1e-12);
    ck_assert(st.srm_mismatch);
}
END_TEST

START_TEST(test_both_groups_empty)
{
    crm_campaign_stats_input in = counts(0, 0, 0, 0, 0.1);
    crm_campaign_stats st = compute(&in);
    assert_undefined(st.treatment.response_rate);
    assert_undefined(st.uplift);
    assert_undefined(st.observed_control_share);
    assert_near(st.expected_control_share, 0.1, 0);
    ck_assert(!st.srm_defined);
    assert_undefined(st.chi_square);
    assert_undefined(st.srm_p_value);
}
END_TEST

/* ---- sample ratio ------------------------------------------------------------ */

START_TEST(test_sample_ratio_mismatch_by_hand)
{
    /* 1100 control and 8900 treated where 10 % was configured:
     * X^2 = 100^2 / 1000 + 100^2 / 9000 = 11.111111; with one degree of
     * freedom P(chi^2 >= X^2) = erfc(sqrt(X^2 / 2)) = 0.00085812 < 0.001. */
    crm_campaign_stats_input in = counts(8900, 800, 1100, 90, 0.1);
    crm_campaign_stats st = compute(&in);
    assert_near(st.observed_control_share, 0.11, 1e-15);
    assert_near(st.chi_square, 11.111111, 1e-6);
    assert_near(st.srm_p_value, 0.00085812, 1e-8);
    assert_near(st.srm_p_value, erfc(sqrt(st.chi_square / 2)), 1e-15);
    ck_assert(st.srm_defined);
    ck_assert(st.srm_mismatch);
}
END_TEST

START_TEST(test_sample_ratio_as_configured_is_no_mismatch)
{
    /* Exactly 10 %: X^2 = 0, p = 1. 1060 of 10000 (X^2 = 4, p = 0.0455)
     * is not flagged either: the threshold is 0.001. */
    crm_campaign_stats_input in = counts(9000, 800, 1000, 90, 0.1);
    crm_campaign_stats st = compute(&in);
    assert_near(st.chi_square, 0, 1e-12);
    assert_near(st.srm_p_value, 1, 1e-12);
    ck_assert(st.srm_defined && !st.srm_mismatch);

    in = counts(8940, 800, 1060, 90, 0.1);
    st = compute(&in);
    assert_near(st.chi_square, 4, 1e-12);
    assert_near(st.srm_p_value, erfc(sqrt(2.0)), 1e-15);
    ck_assert(st.srm_defined && !st.srm_mismatch);
}
END_TEST

START_TEST(test_sample_ratio_undefined_without_control_share)
{
    crm_campaign_stats_input in = counts(900, 80, 100, 9, 0);
    crm_campaign_stats st = compute(&in);
    assert_near(st.expected_control_share, 0, 0);
    assert_near(st.observed_control_share, 0.1, 1e-15);
    ck_assert(!st.srm_defined);
    ck_assert(!st.srm_mismatch);
    assert_undefined(st.chi_square);
    assert_undefined(st.srm_p_value);
    /* The comparisons do not depend on s. */
    assert_near(st.uplift, 80.0 / 900 - 0.09, 1e-15);
}
END_TEST

/* ---- confidence and input checks --------------------------------------------- */

START_TEST(test_confidence_defaults_to_95_percent)
{
    crm_campaign_stats_input in = counts(70, 56, 80, 48, 0.5);
    crm_campaign_stats st = compute(&in);
    assert_near(st.confidence, 0.95, 0);
    in.confidence = 0.99;
    st = compute(&in);
    assert_near(st.confidence, 0.99, 0);
    assert_near(st.z_critical, 2.5758293, 1e-7);
    /* Wider than at 95 %. */
    ck_assert(st.wald.low < 0.057505 && st.wald.high > 0.342495);
}
END_TEST

static void assert_refused(const crm_campaign_stats_input *in)
{
    crm_campaign_stats st;
    ck_assert(!crm_campaign_stats_compute(in, &st));
    assert_undefined(st.confidence);
    assert_undefined(st.treatment.response_rate);
    assert_undefined(st.uplift);
    assert_undefined(st.newcombe.low);
    assert_undefined(st.expected_control_share);
    ck_assert(!st.srm_defined);
    ck_assert(st.treatment.customers == in->treatment.customers);
}

START_TEST(test_invalid_input_is_refused)
{
    crm_campaign_stats_input in = counts(10, 11, 10, 1, 0.5);
    assert_refused(&in);
    in = counts(-1, 0, 10, 1, 0.5);
    assert_refused(&in);
    in = counts(10, -1, 10, 1, 0.5);
    assert_refused(&in);
    in = counts(CRM_CAMPAIGN_CUSTOMERS_MAX + 1, 0, 10, 1, 0.5);
    assert_refused(&in);
    in = counts(10, 1, 10, 1, 0.6);
    assert_refused(&in);
    in = counts(10, 1, 10, 1, -0.1);
    assert_refused(&in);
    in = counts(10, 1, 10, 1, NAN);
    assert_refused(&in);
    in = counts(10, 1, 10, 1, 0.5);
    in.confidence = 1;
    assert_refused(&in);
    in.confidence = -0.5;
    assert_refused(&in);
    in.confidence = NAN;
    assert_refused(&in);
    in = counts(10, 1, 10, 1, 0.5);
    in.control.revenue = INFINITY;
    assert_refused(&in);
    in = counts(10, 1, 10, 1, 0.5);
    in.treatment.revenue_sq = -1;
    assert_refused(&in);
    in = counts(10, 1, 10, 1, 0.5);
    in.treatment.revenue_sq = NAN;
    assert_refused(&in);
}
END_TEST

/* ---- JSON ------------------------------------------------------------------ */

static json_t *render(const crm_campaign_stats *st)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_campaign_stats_write_json(&b, st);
    char *text = crm_jbuf_take(&b, NULL);
    ck_assert_ptr_nonnull(text);
    json_error_t error;
    json_t *doc = json_loads(text, 0, &error);
    ck_assert_msg(doc != NULL, "%s: %s", error.text, text);
    free(text);
    return doc;
}

static double member_real(const json_t *doc, const char *path)
{
    char copy[128];
    snprintf(copy, sizeof copy, "%s", path);
    const json_t *v = doc;
    for (char *save = NULL, *name = strtok_r(copy, ".", &save); name != NULL;
         name = strtok_r(NULL, ".", &save)) {
        v = json_object_get(v, name);
        ck_assert_msg(v != NULL, "no %s in %s", name, path);
    }
    if (json_is_null(v))
        return NAN;
    ck_assert_msg(json_is_number(v), "%s is not a number", path);
    return json_number_value(v);
}

START_TEST(test_json_has_every_figure)
{
    crm_campaign_stats_input in = counts(70, 56, 80, 48, 0.5);
    in.treatment.revenue = 700;
    in.treatment.revenue_sq = 14000;
    in.control.revenue = 400;
    in.control.revenue_sq = 6000;
    crm_campaign_stats st = compute(&in);
    json_t *doc = render(&st);
    ck_assert(json_is_integer(json_object_get(json_object_get(doc, "treatment"), "customers")));
    assert_near(member_real(doc, "treatment.customers"), 70, 0);
    assert_near(member_real(doc, "treatment.responders"), 56, 0);
    assert_near(member_real(doc, "treatment.response_rate"), 0.8, 0);
    assert_near(member_real(doc, "treatment.revenue"), 700, 0);
    assert_near(member_real(doc, "treatment.revenue_per_customer"), 10, 0);
    assert_near(member_real(doc, "control.customers"), 80, 0);
    assert_near(member_real(doc, "control.responders"), 48, 0);
    assert_near(member_real(doc, "control.response_rate"), 0.6, 0);
    assert_near(member_real(doc, "control.revenue"), 400, 0);
    assert_near(member_real(doc, "control.revenue_per_customer"), 5, 0);
    assert_near(member_real(doc, "uplift.absolute"), st.uplift, 0);
    assert_near(member_real(doc, "uplift.wald.low"), st.wald.low, 0);
    assert_near(member_real(doc, "uplift.wald.high"), st.wald.high, 0);
    assert_near(member_real(doc, "uplift.newcombe.low"), st.newcombe.low, 0);
    assert_near(member_real(doc, "uplift.newcombe.high"), st.newcombe.high, 0);
    assert_near(member_real(doc, "uplift.z"), st.z, 0);
    assert_near(member_real(doc, "uplift.p_value"), st.p_value, 0);
    assert_near(member_real(doc, "relative_lift.value"), st.relative_lift, 0);
    assert_near(member_real(doc, "relative_lift.low"), st.relative_lift_ci.low, 0);
    assert_near(member_real(doc, "relative_lift.high"), st.relative_lift_ci.high, 0);
    assert_near(member_real(doc, "revenue_per_customer_uplift.value"), 5, 0);
    assert_near(member_real(doc, "revenue_per_customer_uplift.low"), st.revenue_uplift_ci.low, 0);
    assert_near(member_real(doc, "revenue_per_customer_uplift.high"), st.revenue_uplift_ci.high, 0);
    assert_near(member_real(doc, "sample_ratio.expected_control_share"), 0.5, 0);
    assert_near(member_real(doc, "sample_ratio.observed_control_share"), 80.0 / 150, 0);
    assert_near(member_real(doc, "sample_ratio.chi_square"), st.chi_square, 0);
    assert_near(member_real(doc, "sample_ratio.p_value"), st.srm_p_value, 0);
    ck_assert(json_is_false(json_object_get(json_object_get(doc, "sample_ratio"), "mismatch")));
    assert_near(member_real(doc, "confidence"), 0.95, 0);
    /* Nothing else at the top. */
    ck_assert_int_eq((int)json_object_size(doc), 7);
    json_decref(doc);
}
END_TEST

START_TEST(test_json_writes_undefined_figures_as_null)
{
    crm_campaign_stats_input in = counts(10, 0, 0, 0, 0);
    crm_campaign_stats st = compute(&in);
    json_t *doc = render(&st);
    const char *nulls[] = {"control.response_rate",
                           "control.revenue_per_customer",
                           "uplift.absolute",
                           "uplift.wald.low",
                           "uplift.wald.high",
                           "uplift.newcombe.low",
                           "uplift.newcombe.high",
                           "uplift.z",
                           "uplift.p_value",
                           "relative_lift.value",
                           "relative_lift.low",
                           "relative_lift.high",
                           "revenue_per_customer_uplift.value",
                           "revenue_per_customer_uplift.low",
                           "revenue_per_customer_uplift.high",
                           "sample_ratio.chi_square",
                           "sample_ratio.p_value"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        ck_assert_msg(isnan(member_real(doc, nulls[i])), "%s is not null", nulls[i]);
    ck_assert(json_is_null(json_object_get(json_object_get(doc, "sample_ratio"), "mismatch")));
    assert_near(member_real(doc, "treatment.response_rate"), 0, 0);
    assert_near(member_real(doc, "control.customers"), 0, 0);
    assert_near(member_real(doc, "sample_ratio.observed_control_share"), 0, 0);
    json_decref(doc);
}
END_TEST

START_TEST(test_json_nests_as_a_member)
{
    /* Later code renders the figures inside a campaign's representation. */
    crm_campaign_stats_input in = counts(70, 56, 80, 48, 0.5);
    crm_campaign_stats st = compute(&in);
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_object(&b);
    crm_jbuf_key(&b, "id");
    crm_jbuf_int(&b, 7);
    crm_jbuf_key(&b, "results");
    crm_campaign_stats_write_json(&b, &st);
    crm_jbuf_key(&b, "state");
    crm_jbuf_cstring(&b, "done");
    crm_jbuf_end_object(&b);
    char *text = crm_jbuf_take(&b, NULL);
    ck_assert_ptr_nonnull(text);
    json_t *doc = json_loads(text, 0, NULL);
    ck_assert_msg(doc != NULL, "%s", text);
    free(text);
    assert_near(member_real(doc, "results.uplift.absolute"), st.uplift, 0);
    assert_near(member_real(doc, "id"), 7, 0);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "state")), "done");
    json_decref(doc);
}
END_TEST

/* ---- SciPy reference ------------------------------------------------------ */

/* One case: counts, revenue mean and standard deviation per group (the sums
 * are made from them), the control share and the confidence. */
typedef struct reference_input {
    long long n_t, x_t;
    double mean_t, sd_t;
    long long n_c, x_c;
    double mean_c, sd_c;
    double share, confidence;
} reference_input;

static const reference_input REFERENCE_INPUTS[] = {
    {70, 56, 10, 25, 80, 48, 8, 20, 0.5, 0.95}, /* Newcombe's example */
    {250000, 12500, 12.5, 40, 250000, 11800, 11.9, 38, 0.5, 0.95},
    {250000, 12500, 12.5, 40, 250000, 12500, 12.5, 40, 0.5, 0.95},
    {250000, 3000, 3, 50, 250000, 2900, 2.8, 49, 0.2, 0.95}, /* split far off */
    {5, 3, 20, 30, 3, 1, 10, 15, 0.4, 0.95},
    {5, 0, 0, 0, 3, 0, 0, 0, 0.4, 0.95},
    {5, 5, 40, 10, 3, 3, 35, 12, 0.4, 0.95},
    {5, 5, 40, 10, 3, 0, 0, 0, 0.4, 0.95},
    {10, 0, 0, 0, 10, 3, 15, 20, 0.5, 0.95},
    {10, 3, 15, 20, 10, 0, 0, 0, 0.5, 0.95},
    {1, 1, 25, 0, 1, 0, 0, 0, 0.5, 0.95},
    {1, 0, 0, 0, 2, 1, 5, 7.0710678118654755, 0.5, 0.95},
    {2, 1, 5, 7.0710678118654755, 1, 1, 30, 0, 0.5, 0.95},
    {0, 0, 0, 0, 10, 2, 4, 8, 0.5, 0.95},
    {10, 2, 4, 8, 0, 0, 0, 0, 0.5, 0.95},
    {0, 0, 0, 0, 0, 0, 0, 0, 0.1, 0.95},
    {9000, 900, 6, 18, 1000, 100, 5, 17, 0.1, 0.95},
    {8900, 900, 6, 18, 1100, 100, 5, 17, 0.1, 0.95},
    {1000000, 20000, 1.5, 12, 50000, 900, 1.3, 11, 0.05, 0.90},
    {100000, 99990, 80, 30, 100000, 99950, 79, 31, 0.5, 0.95},
    {100000, 3, 0.01, 2, 100000, 1, 0.002, 0.6, 0.5, 0.95},
    {2000, 150, 9, 33, 2000, 150, 9, 33, 0.5, 0.95},
    {400, 40, 7, 21, 100, 10, 6, 20, 0.2, 0.99},
    {30, 12, 14, 20, 20, 4, 6, 12, 0.4, 0.80},
    {1234, 321, 22.5, 41, 567, 123, 19.25, 39, 0.3, 0.975},
    {50000, 2600, 4.2, 25, 50000, 2500, 4.0, 24, 0.5, 0.95},
    {5, 2, 10, 0, 4, 1, 0, 0, 0.5, 0.95}, /* revenue without spread */
    {1000, 100, 5, 15, 0, 0, 0, 0, 0, 0.95},
    {900, 90, 5, 15, 100, 8, 4, 14, 0, 0.95},
    {10001, 1000, 3, 9, 9999, 950, 3, 9, 0.5, 0.95},
    {7, 1, 2, 5, 13, 2, 1.5, 4, 0.5, 0.50},
    {3, 2, 12, 9, 2, 1, 6, 8.48528137423857, 0.4, 0.999},
    {800000, 8000, 0.9, 11, 200000, 1900, 0.85, 10.5, 0.2, 0.95},
    {60, 59, 120, 40, 60, 60, 125, 35, 0.5, 0.95},
    {150, 75, 10000, 50000, 150, 75, 9000, 48000, 0.5, 0.95},
    {500, 1, 0.2, 4, 500, 499, 45, 10, 0.5, 0.95},
    {3000, 240, -2, 10, 1000, 70, -1.5, 9, 0.25, 0.95}, /* refunds */
    {20, 20, 50, 5, 20, 19, 48, 6, 0.5, 0.95},
};

#define REFERENCE_FIGURES 23

typedef struct reference_case {
    crm_campaign_stats_input in;
    crm_campaign_stats st;
    const char *names[REFERENCE_FIGURES];
    double values[REFERENCE_FIGURES];
} reference_case;

static void group_sums(crm_campaign_group_counts *g, long long n, long long x, double mean,
                       double sd)
{
    g->customers = n;
    g->responders = x;
    g->revenue = (double)n * mean;
    g->revenue_sq = n > 0 ? (double)(n - 1) * sd * sd + (double)n * mean * mean : 0;
}

static void build_reference_case(reference_case *c, const reference_input *r)
{
    memset(c, 0, sizeof *c);
    group_sums(&c->in.treatment, r->n_t, r->x_t, r->mean_t, r->sd_t);
    group_sums(&c->in.control, r->n_c, r->x_c, r->mean_c, r->sd_c);
    c->in.control_share = r->share;
    c->in.confidence = r->confidence;
    ck_assert(crm_campaign_stats_compute(&c->in, &c->st));
    const crm_campaign_stats *st = &c->st;
    const char *names[REFERENCE_FIGURES] = {
        "p_t",          "p_c",           "d",       "wald_low", "wald_high",
        "newcombe_low", "newcombe_high", "z",       "p_value",  "lift",
        "lift_low",     "lift_high",     "m_t",     "m_c",      "v_t",
        "v_c",          "rev_d",         "rev_low", "rev_high", "observed_share",
        "chi_square",   "srm_p_value",   "mismatch"};
    double values[REFERENCE_FIGURES] = {st->treatment.response_rate,
                                        st->control.response_rate,
                                        st->uplift,
                                        st->wald.low,
                                        st->wald.high,
                                        st->newcombe.low,
                                        st->newcombe.high,
                                        st->z,
                                        st->p_value,
                                        st->relative_lift,
                                        st->relative_lift_ci.low,
                                        st->relative_lift_ci.high,
                                        st->treatment.revenue_per_customer,
                                        st->control.revenue_per_customer,
                                        st->treatment.revenue_variance,
                                        st->control.revenue_variance,
                                        st->revenue_uplift,
                                        st->revenue_uplift_ci.low,
                                        st->revenue_uplift_ci.high,
                                        st->observed_control_share,
                                        st->chi_square,
                                        st->srm_p_value,
                                        st->srm_defined ? (double)st->srm_mismatch : NAN};
    memcpy(c->names, names, sizeof names);
    memcpy(c->values, values, sizeof values);
}

static json_t *reference_request(const crm_campaign_stats_input *in)
{
    return json_pack("{sI sI sf sf sI sI sf sf sf sf}", "n_t", (json_int_t)in->treatment.customers,
                     "x_t", (json_int_t)in->treatment.responders, "sum_t", in->treatment.revenue,
                     "sumsq_t", in->treatment.revenue_sq, "n_c", (json_int_t)in->control.customers,
                     "x_c", (json_int_t)in->control.responders, "sum_c", in->control.revenue,
                     "sumsq_c", in->control.revenue_sq, "share", in->control_share, "confidence",
                     in->confidence);
}

/* Runs the reference script on the cases; returns its list of results
 * (caller decrefs). Fails the test when it cannot. */
static json_t *run_reference(const reference_case *cases, int n)
{
    json_t *requests = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(requests, reference_request(&cases[i].in));
    char input[] = "/tmp/crmd_campaign_stats_cases_XXXXXX";
    int fd = mkstemp(input);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(json_dumpf(requests, f, JSON_COMPACT | JSON_REAL_PRECISION(17)), 0);
    ck_assert_int_eq(fclose(f), 0);
    json_decref(requests);

    const char *python = getenv("CRMD_TEST_PYTHON");
    char command[4096];
    int len = snprintf(command, sizeof command,
                       "'%s' '%s/tests/reference/campaign_stats_reference.py' < '%s'",
                       python != NULL ? python : "/usr/bin/python3", CRMD_SOURCE_DIR, input);
    ck_assert(len > 0 && (size_t)len < sizeof command);
    FILE *pipe = popen(command, "r");
    ck_assert_ptr_nonnull(pipe);
    json_error_t error;
    json_t *results = json_loadf(pipe, 0, &error);
    int status = pclose(pipe);
    unlink(input);
    ck_assert_msg(status == 0 && results != NULL,
                  "the reference script failed (status %d, %s): is python3-scipy installed?",
                  status, error.text);
    ck_assert(json_is_array(results));
    ck_assert_int_eq((int)json_array_size(results), n);
    return results;
}

/* Both sides round differently (Wilson limits from the textbook form here,
 * from the quadratic's roots there; the variance with a fused multiply-add
 * here, in extended precision there): 1e-9 relative or 1e-12 absolute
 * leaves room for that and for nothing a wrong formula would give. */
static bool reference_agrees(double got, const json_t *want, double *used)
{
    *used = 0;
    if (json_is_null(want))
        return isnan(got);
    if (json_is_boolean(want))
        return !isnan(got) && (got != 0) == json_is_true(want);
    if (!json_is_number(want) || isnan(got))
        return false;
    double w = json_number_value(want), diff = fabs(got - w);
    /* The share of the looser of the two tolerances that diff takes. */
    *used = fmin(diff / 1e-12, diff / (1e-9 * fabs(w)));
    return diff <= 1e-12 || diff <= 1e-9 * fabs(w);
}

START_TEST(test_agrees_with_scipy_reference)
{
    enum { N = sizeof REFERENCE_INPUTS / sizeof REFERENCE_INPUTS[0] };
    static reference_case cases[N];
    for (int i = 0; i < N; i++)
        build_reference_case(&cases[i], &REFERENCE_INPUTS[i]);
    json_t *results = run_reference(cases, N);
    int compared = 0, n_defined = 0;
    double worst = 0;
    for (int i = 0; i < N; i++) {
        json_t *result = json_array_get(results, (size_t)i);
        for (int k = 0; k < REFERENCE_FIGURES; k++) {
            const json_t *want = json_object_get(result, cases[i].names[k]);
            ck_assert_msg(want != NULL, "case %d: no %s from the reference", i, cases[i].names[k]);
            double got = cases[i].values[k];
            double used;
            ck_assert_msg(reference_agrees(got, want, &used),
                          "case %d: %s is %.17g, the reference says %.17g%s", i, cases[i].names[k],
                          got, json_is_number(want) ? json_number_value(want) : NAN,
                          json_is_null(want) ? " (null)" : "");
            worst = fmax(worst, used);
            compared++;
            n_defined += !json_is_null(want);
        }
    }
    /* Most figures are defined: the comparison is not vacuous. */
    ck_assert_int_ge(N, 30);
    ck_assert_int_ge(n_defined, compared * 3 / 4);
    /* Reported so that a drift shows before it fails. */
    if (getenv("CRMD_TEST_CAMPAIGN_STATS_VERBOSE") != NULL)
        fprintf(stderr,
                "campaign_stats: %d cases, %d of %d figures defined, %.3g of the tolerance used at "
                "most\n",
                N, n_defined, compared, worst);
    json_decref(results);
}
END_TEST

Suite *campaign_stats_suite(void)
{
    Suite *s = suite_create("campaign_stats");
    TCase *tc = tcase_create("worked");
    tcase_add_test(tc, test_newcombe_example_rates_and_difference);
    tcase_add_test(tc, test_newcombe_example_hybrid_score_interval_matches_publication);
    tcase_add_test(tc, test_newcombe_example_wald_interval_by_hand);
    tcase_add_test(tc, test_newcombe_example_pooled_z_test_by_hand);
    tcase_add_test(tc, test_newcombe_example_relative_lift_by_hand);
    tcase_add_test(tc, test_revenue_welch_interval_by_hand);
    tcase_add_test(tc, test_revenue_variance_never_negative);
    tcase_add_test(tc, test_revenue_stable_for_large_means);
    tcase_add_test(tc, test_revenue_interval_needs_two_customers_per_group);
    tcase_add_test(tc, test_sample_ratio_mismatch_by_hand);
    tcase_add_test(tc, test_sample_ratio_as_configured_is_no_mismatch);
    tcase_add_test(tc, test_sample_ratio_undefined_without_control_share);
    tcase_add_test(tc, test_confidence_defaults_to_95_percent);
    suite_add_tcase(s, tc);

    tc = tcase_create("degenerate");
    tcase_add_test(tc, test_no_responders_anywhere);
    tcase_add_test(tc, test_every_customer_responded);
    tcase_add_test(tc, test_no_treatment_responder_gives_lift_minus_one_without_interval);
    tcase_add_test(tc, test_no_control_responder_leaves_the_lift_undefined);
    tcase_add_test(tc, test_empty_group_leaves_comparisons_undefined);
    tcase_add_test(tc, test_both_groups_empty);
    tcase_add_test(tc, test_invalid_input_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_add_test(tc, test_json_has_every_figure);
    tcase_add_test(tc, test_json_writes_undefined_figures_as_null);
    tcase_add_test(tc, test_json_nests_as_a_member);
    suite_add_tcase(s, tc);

    tc = tcase_create("reference");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_agrees_with_scipy_reference);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * campaigns/stats.h — the statistics of a campaign's results: the treated
 * customers against the control group held out of the campaign.
 *
 * Pure functions over counts and sums; nothing here touches the database or
 * HTTP, and every function is thread-safe. The normal and chi-square
 * distribution functions come from GSL (lib/campaigns/stats.c).
 *
 * Input, per group g (t = treatment, c = control):
 *   n_g   customers in the group, 0 <= n_g <= 2^40
 *         (CRM_CAMPAIGN_CUSTOMERS_MAX: every count and sum of counts is then
 *         exact in a double);
 *   x_g   responders: customers with at least one attributed response
 *         (0 <= x_g <= n_g);
 *   S_g   the sum of revenue over the group's customers, a customer without
 *         revenue counting as 0 (finite; refunds may make it negative);
 *   Q_g   the sum of the squares of those revenues (finite, >= 0);
 * and for the campaign:
 *   s     the configured control share, 0 <= s <= 0.5 (0: no control group
 *         was configured);
 *   c     the confidence level of every interval, 0 < c < 1; 0 in the input
 *         stands for the default 0.95 (CRM_CAMPAIGN_CONFIDENCE_DEFAULT).
 * Input outside these ranges (or NAN) is refused as a whole: see
 * crm_campaign_stats_compute.
 *
 * Figures. alpha = 1 - c and z* = Phi^-1(1 - alpha/2), Phi the standard
 * normal distribution function (1.959964 for c = 0.95); Q(z) = 1 - Phi(z).
 * A figure that is undefined for the input is NAN (JSON null); the rule
 * for each is given with it.
 *
 *  1. Response rate p_g = x_g / n_g. Undefined when n_g = 0.
 *
 *  2. Absolute uplift d = p_t - p_c. Undefined when n_t = 0 or n_c = 0, and
 *     so are its intervals and test (2a, 2b, 3).
 *     a. Wald interval: d -+ z* sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c).
 *        When every customer of each group responded or none did, the root
 *        is 0 and the interval is the point [d, d].
 *     b. Newcombe's hybrid score interval (Newcombe 1998, "Interval
 *        estimation for the difference between independent proportions",
 *        Statistics in Medicine 17, method 10). The Wilson score limits of
 *        each proportion,
 *            l_g, u_g = (p_g + z*^2 / (2 n_g) -+ z* sqrt(p_g (1 - p_g) / n_g
 *                        + z*^2 / (4 n_g^2))) / (1 + z*^2 / n_g),
 *        clamped to [0, 1] (they are exactly 0 at x_g = 0 and 1 at
 *        x_g = n_g; the clamp only drops rounding), give
 *            L = d - sqrt((p_t - l_t)^2 + (u_c - p_c)^2),
 *            U = d + sqrt((u_t - p_t)^2 + (p_c - l_c)^2).
 *
 *  3. Two-proportion z-test with the pooled rate p = (x_t + x_c) / (n_t + n_c):
 *        z = d / sqrt(p (1 - p) (1 / n_t + 1 / n_c)),
 *     two-sided p-value 2 Q(|z|). Undefined (z and p-value) also when p = 0
 *     or p = 1: nobody or everybody responded, there is no variation to
 *     test.
 *
 *  4. Relative lift r = p_t / p_c - 1. Undefined when n_t = 0, n_c = 0 or
 *     x_c = 0 (no control responder: no ratio); r = -1 when x_t = 0. Its
 *     interval comes from the delta method on ln(p_t / p_c):
 *        se = sqrt((1 - p_t) / (n_t p_t) + (1 - p_c) / (n_c p_c)),
 *        [exp(ln(p_t / p_c) - z* se) - 1, exp(ln(p_t / p_c) + z* se) - 1],
 *     undefined when x_t = 0 or x_c = 0 (the logarithm or se is infinite).
 *
 *  5. Revenue per customer m_g = S_g / n_g, undefined when n_g = 0. The
 *     sample variance of a group,
 *        v_g = (Q_g - m_g S_g) / (n_g - 1),
 *     is computed with a fused multiply-add (one rounding in Q_g - m_g S_g),
 *     and is 0 when it comes out negative, which only rounding (or input
 *     that no real revenues can give) makes happen; undefined when n_g < 2.
 *     The uplift m_t - m_c is undefined when n_t = 0 or n_c = 0; its Welch
 *     (unpooled) normal interval
 *        m_t - m_c -+ z* sqrt(v_t / n_t + v_c / n_c)
 *     is undefined when n_t < 2 or n_c < 2.
 *
 *  6. Sample-ratio mismatch: were the customers split between the groups
 *     as configured? With N = n_t + n_c and expected counts E_c = s N,
 *     E_t = (1 - s) N, Pearson's chi-square goodness of fit
 *        X^2 = (n_c - E_c)^2 / E_c + (n_t - E_t)^2 / E_t,
 *     1 degree of freedom, p-value P(chi^2_1 >= X^2) (gsl_cdf_chisq_Q); a
 *     mismatch is flagged when that p-value is below 0.001
 *     (CRM_CAMPAIGN_SRM_ALPHA). X^2, its p-value and the flag are undefined
 *     when s = 0 (no control group configured) or N = 0. The observed
 *     control share n_c / N is undefined when N = 0; the expected one is s.
 */
#ifndef CRM_CAMPAIGN_STATS_H
#define CRM_CAMPAIGN_STATS_H

#include <stdbool.h>

#include "jbuf.h"

#define CRM_CAMPAIGN_CONFIDENCE_DEFAULT 0.95
#define CRM_CAMPAIGN_CUSTOMERS_MAX (1LL << 40)
/* The sample-ratio test's p-value under which the split is flagged. */
#define CRM_CAMPAIGN_SRM_ALPHA 0.001

/* One group's counts and sums (n, x, S, Q above). */
typedef struct crm_campaign_group_counts {
    long long customers;  /* n */
    long long responders; /* x */
    double revenue;       /* S */
    double revenue_sq;    /* Q */
} crm_campaign_group_counts;

typedef struct crm_campaign_stats_input {
    crm_campaign_group_counts treatment, control;
    double control_share; /* s */
    double confidence;    /* c; 0 means CRM_CAMPAIGN_CONFIDENCE_DEFAULT */
} crm_campaign_stats_input;

/* A two-sided interval at the confidence level; both ends NAN or neither. */
typedef struct crm_campaign_interval {
    double low, high;
} crm_campaign_interval;

/* One group's figures (1 and 5); the counts are copied from the input. */
typedef struct crm_campaign_group_stats {
    long long customers, responders;
    double revenue;
    double response_rate;        /* p_g */
    double revenue_per_customer; /* m_g */
    double revenue_variance;     /* v_g */
} crm_campaign_group_stats;

typedef struct crm_campaign_stats {
    double confidence; /* c, the default filled in */
    double z_critical; /* z* */
    crm_campaign_group_stats treatment, control;

    double uplift;                  /* d (2) */
    crm_campaign_interval wald;     /* 2a */
    crm_campaign_interval newcombe; /* 2b */
    double z, p_value;              /* 3 */

    double relative_lift;                   /* r (4) */
    crm_campaign_interval relative_lift_ci; /* 4 */

    double revenue_uplift;                   /* m_t - m_c (5) */
    crm_campaign_interval revenue_uplift_ci; /* 5 */

    double expected_control_share; /* s (6) */
    double observed_control_share; /* n_c / N */
    double chi_square;             /* X^2 */
    double srm_p_value;            /* P(chi^2_1 >= X^2) */
    bool srm_defined;              /* X^2, srm_p_value and srm_mismatch are defined */
    bool srm_mismatch;             /* srm_p_value < CRM_CAMPAIGN_SRM_ALPHA */
} crm_campaign_stats;

/* Computes every figure of in into out (documented above). Returns false,
 * with every figure of out NAN (srm_defined false) and only the counts
 * copied, when in is outside its documented ranges: a negative count,
 * customers above CRM_CAMPAIGN_CUSTOMERS_MAX, responders above customers,
 * a revenue sum that is not finite, a sum of squares that is negative or
 * not finite, s outside [0, 0.5], or c outside (0, 1) and not 0. */
bool crm_campaign_stats_compute(const crm_campaign_stats_input *in, crm_campaign_stats *out);

/* Writes st as one JSON value (an object; after a crm_jbuf_key when it is a
 * member), undefined figures as null:
 *   {"treatment": G, "control": G,
 *    "uplift": {"absolute", "wald": I, "newcombe": I, "z", "p_value"},
 *    "relative_lift": {"value", "low", "high"},
 *    "revenue_per_customer_uplift": {"value", "low", "high"},
 *    "sample_ratio": {"expected_control_share", "observed_control_share",
 *                     "chi_square", "p_value", "mismatch"},
 *    "confidence"}
 * with G = {"customers", "responders", "response_rate", "revenue",
 * "revenue_per_customer"} and I = {"low", "high"}. "mismatch" is a
 * boolean, null when the test is undefined. Revenue figures are plain
 * numbers in the unit of the input's sums. */
void crm_campaign_stats_write_json(crm_jbuf *b, const crm_campaign_stats *st);

#endif

/*
 * btyd.c — the BG/NBD and Gamma-Gamma models of lib/btyd.h: one customer's
 * log-likelihood and predictions, and maximum-likelihood fits over weighted
 * summary rows.
 *
 * Numerics. Log-likelihoods are sums of logs, never logs of products that
 * could overflow; the BG/NBD's two-term likelihood of a repeat buyer is a
 * log-sum-exp. The conditional expectation of purchases needs the Gauss
 * hypergeometric function 2F1 at z = t / (alpha + T + t), which tends to 1
 * for long horizons; GSL evaluates it directly or after Euler's
 * transformation, whichever GSL reports as more accurate, and where both
 * fail (GSL gives up on z near 1 with large parameters) or the closed form
 * would cancel badly (a near 1, or a tiny horizon), the same expectation is
 * computed as its integral over the dropout probability (GSL's QAWS).
 *
 * GSL's default error handler aborts the process; the first call into this
 * file turns it off (it is process-wide) and every GSL status is checked.
 */
#include "btyd.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_integration.h>
#include <gsl/gsl_multimin.h>
#include <gsl/gsl_sf_gamma.h>
#include <gsl/gsl_sf_hyperg.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

/* The closed form of the expected purchases divides by a - 1 a difference
 * 1 - G that vanishes with it: closer to 1 than this, its rounding error
 * (about 1e-16 / |a - 1|) is too large and the integral takes over. */
#define A_NEAR_ONE 1e-4
/* Likewise 1 - G itself is small for horizons short against alpha + T. */
#define MIN_ONE_MINUS_G 1e-4
/* GSL's 2F1 takes z, not 1 - z: the rounding of z = u / (1 + u) costs
 * 1 - z a relative 1e-16 / (1 - z), which 2F1 raises to a power near
 * c - a - b. Beyond u = 1000 (1 - z < 1e-3) the integral is more exact. */
#define CLOSED_FORM_MAX_U 1e3
/* The largest relative error of 2F1, as GSL estimates it, that the closed
 * form accepts. */
#define HYP2F1_MAX_REL_ERR 1e-12
/* The integral's requested relative error, and its subinterval limit. */
#define INTEGRAL_REL_ERR 1e-12
#define INTEGRAL_LIMIT 200
/* crm_btyd_clv: the length of one period, and the longest horizon. */
#define CLV_PERIOD_DAYS 30.0
#define CLV_MAX_HORIZON_DAYS 36525.0
/* The simplex: its first steps in log-parameters (a factor e^0.5), the
 * vertex spread at which it has converged (relative 1e-6 in every
 * parameter, far below any standard error; much tighter and the changes of
 * the objective across the simplex, about size^2, sink into the rounding
 * of a sum over many rows, and the simplex wanders instead of shrinking),
 * how often it restarts from its best point to confirm it, and its
 * iteration budget over all runs. */
#define FIT_FIRST_STEP 0.5
#define FIT_RESTART_STEP 0.05
#define FIT_SIZE_TOLERANCE 1e-6
#define FIT_MAX_RESTARTS 4
#define FIT_MAX_ITERATIONS 10000
/* A restart that lowers the mean negative log-likelihood by no more than
 * this confirms the optimum. */
#define FIT_CONFIRM_DELTA 1e-10
/* The objective of a point where the model is undefined: finite, since the
 * simplex refuses non-finite values, and above every real one. */
#define FIT_PENALTY 1e300

static pthread_once_t gsl_quiet_once = PTHREAD_ONCE_INIT;

static void turn_off_gsl_abort(void)
{
    gsl_set_error_handler_off();
}

/* Called before any GSL use: GSL then reports errors by status only. */
static void gsl_quiet(void)
{
    pthread_once(&gsl_quiet_once, turn_off_gsl_abort);
}

/* ---- input checks ------------------------------------------------------ */

static bool positive_finite(double v)
{
    return isfinite(v) && v > 0;
}

/* A count of purchases: a whole number >= 0. */
static bool is_count(double x)
{
    return isfinite(x) && x >= 0 && x == floor(x);
}

static bool bgnbd_valid(const crm_bgnbd *m)
{
    return m != NULL && positive_finite(m->r) && positive_finite(m->alpha) &&
           positive_finite(m->a) && positive_finite(m->b);
}

static bool gg_valid(const crm_gg *m)
{
    return m != NULL && positive_finite(m->p) && positive_finite(m->q) && positive_finite(m->gamma);
}

/* x repeat purchases, the last at t_x, observed until T: 0 <= t_x <= T,
 * and t_x == 0 when there was no repeat purchase. */
static bool history_valid(double x, double t_x, double T)
{
    return is_count(x) && isfinite(t_x) && isfinite(T) && t_x >= 0 && t_x <= T &&
           (x > 0 || t_x == 0);
}

/* ---- BG/NBD ------------------------------------------------------------ */

static double log_add_exp(double u, double v)
{
    double hi = fmax(u, v), lo = fmin(u, v);
    return hi + log1p(exp(lo - hi));
}

/* The parts of one customer's log-likelihood (FHL 2005, eq. 6) that depend
 * on x alone: ln A1 + ln A2 = ln[Gamma(r+x) alpha^r / Gamma(r)]
 * + ln[B(a, b+x) / B(a, b)]. lnbeta_ab is ln B(a, b), ln_alpha ln alpha. */
static double bgnbd_count_terms(const crm_bgnbd *m, double x, double lnbeta_ab, double ln_alpha)
{
    return gsl_sf_lnpoch(m->r, x) + m->r * ln_alpha + gsl_sf_lnbeta(m->a, m->b + x) - lnbeta_ab;
}

/* The rest: ln(A3 + [x > 0] A4), A3 = (alpha+T)^-(r+x) the customer still
 * being alive at T, A4 = a/(b+x-1) (alpha+t_x)^-(r+x) having dropped out
 * right after the last purchase. ln_a is ln a. */
static double bgnbd_time_terms(const crm_bgnbd *m, double x, double t_x, double T, double ln_a)
{
    double rx = m->r + x;
    double ln_a3 = -rx * log(m->alpha + T);
    if (x == 0)
        return ln_a3;
    double ln_a4 = ln_a - log(m->b + x - 1) - rx * log(m->alpha + t_x);
    return log_add_exp(ln_a3, ln_a4);
}

double crm_bgnbd_loglik(const crm_bgnbd *m, double x, double t_x, double T)
{
    if (!bgnbd_valid(m) || !history_valid(x, t_x, T))
        return NAN;
    gsl_quiet();
    return bgnbd_count_terms(m, x, gsl_sf_lnbeta(m->a, m->b), log(m->alpha)) +
           bgnbd_time_terms(m, x, t_x, T, log(m->a));
}

/* ln(A4 / A3) for x > 0: the log-odds of having dropped out after the last
 * purchase against being alive at T. */
static double log_odds_dropped(const crm_bgnbd *m, double x, double t_x, double T)
{
    return log(m->a / (m->b + x - 1)) + (m->r + x) * log1p((T - t_x) / (m->alpha + t_x));
}

double crm_bgnbd_p_alive(const crm_bgnbd *m, double x, double t_x, double T)
{
    if (!bgnbd_valid(m) || !history_valid(x, t_x, T))
        return NAN;
    if (x == 0)
        return 1.0;
    return 1.0 / (1.0 + exp(log_odds_dropped(m, x, t_x, T)));
}

/* (1-z)^s 2F1(A, B; C; z) for A, B, C > 0 and 0 <= z < 1 (a positive
 * value), given ln(1-z). GSL evaluates 2F1 both as given and after Euler's
 * transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z); the
 * result with the smaller error estimate is kept. False when neither
 * succeeds within HYP2F1_MAX_REL_ERR (GSL gives up near z = 1 when the
 * parameters are large). */
static bool scaled_hyp2f1(double A, double B, double C, double z, double ln_1mz, double s,
                          double *out)
{
    struct {
        double a, b, power; /* 2F1(a, b; C; z) times (1-z)^power */
    } forms[2] = {{A, B, s}, {C - A, C - B, s + C - A - B}};
    double best_rel_err = HUGE_VAL;
    for (int i = 0; i < 2; i++) {
        gsl_sf_result f;
        if (gsl_sf_hyperg_2F1_e(forms[i].a, forms[i].b, C, z, &f) != GSL_SUCCESS ||
            !isfinite(f.val) || f.val <= 0)
            continue;
        double rel_err = f.err / f.val;
        if (rel_err < best_rel_err) {
            best_rel_err = rel_err;
            *out = exp(forms[i].power * ln_1mz + log(f.val));
        }
    }
    return best_rel_err <= HYP2F1_MAX_REL_ERR;
}

/* The closed form of expected_if_alive (FHL 2005, eq. 10 without its
 * P(alive) denominator): (a+b+x-1)/(a-1) (1 - G), with
 * G = (1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z), z = u/(1+u). False when it
 * would not be accurate (see A_NEAR_ONE, CLOSED_FORM_MAX_U,
 * MIN_ONE_MINUS_G) or GSL fails. */
static bool expected_if_alive_closed(const crm_bgnbd *m, double u, double x, double *out)
{
    double C = m->a + m->b + x - 1;
    if (fabs(m->a - 1) < A_NEAR_ONE || C <= 0 || u > CLOSED_FORM_MAX_U)
        return false;
    double z = u / (1 + u), G = NAN;
    if (!scaled_hyp2f1(m->r + x, m->b + x, C, z, -log1p(u), m->r + x, &G))
        return false;
    double one_minus_G = 1 - G;
    if (fabs(one_minus_G) < MIN_ONE_MINUS_G)
        return false;
    *out = C / (m->a - 1) * one_minus_G;
    return isfinite(*out) && *out > 0;
}

typedef struct {
    double rx, u;            /* r + x; t / (alpha + T) */
    double p_power, q_power; /* the powers of p and 1 - p left to the integrand */
    double ln_beta;          /* ln B(a, b + x) */
} alive_integrand;

/* power * ln(base), 0 for power 0 even where ln(base) is -inf. */
static double power_log(double power, double ln_base)
{
    return power == 0 ? 0 : power * ln_base;
}

/* The expected purchases in (T, T + t] of a customer alive at T whose
 * dropout probability is p, averaged over the posterior Gamma(r+x, alpha+T)
 * of the purchase rate lambda: E[(1 - exp(-lambda p t)) / p]
 * = (1 - (1 + p u)^-(r+x)) / p, which tends to (r+x) u as p -> 0; times the
 * part of the posterior Beta(a, b+x) density of p that is not QAWS's
 * weight. */
static double alive_integrand_at(double p, void *arg)
{
    const alive_integrand *g = arg;
    double purchases = p == 0 ? g->rx * g->u : -expm1(-g->rx * log1p(p * g->u)) / p;
    double ln_density =
        power_log(g->p_power, log(p)) + power_log(g->q_power, log1p(-p)) - g->ln_beta;
    return purchases * exp(ln_density);
}

/* expected_if_alive as an integral over the posterior Beta(a, b+x) of the
 * dropout probability (GSL's QAWS). The density's powers p^(a-1) and
 * (1-p)^(b+x-1) are QAWS's weight where they are singular (a power in
 * (-1, 0)); the moments QAWS computes for a large power are inexact, so a
 * positive power stays in the integrand. NAN when GSL fails. */
static double expected_if_alive_integral(const crm_bgnbd *m, double u, double x)
{
    double p_power = m->a - 1, q_power = m->b + x - 1;
    double p_weight = fmin(p_power, 0), q_weight = fmin(q_power, 0);
    gsl_integration_qaws_table *weight = gsl_integration_qaws_table_alloc(p_weight, q_weight, 0, 0);
    gsl_integration_workspace *ws = gsl_integration_workspace_alloc(INTEGRAL_LIMIT);
    double value = NAN;
    if (weight != NULL && ws != NULL) {
        alive_integrand g = {m->r + x, u, p_power - p_weight, q_power - q_weight,
                             gsl_sf_lnbeta(m->a, m->b + x)};
        gsl_function f = {alive_integrand_at, &g};
        double integral, abserr;
        int status = gsl_integration_qaws(&f, 0, 1, weight, 0, INTEGRAL_REL_ERR, INTEGRAL_LIMIT, ws,
                                          &integral, &abserr);
        /* Asking for 1e-12 can end in "roundoff prevents the tolerance"
         * with a result still far better than any use needs. */
        bool accurate =
            status == GSL_SUCCESS || (status == GSL_EROUND && abserr <= 1e-9 * fabs(integral));
        if (accurate && integral > 0)
            value = integral;
    }
    if (ws != NULL)
        gsl_integration_workspace_free(ws);
    if (weight != NULL)
        gsl_integration_qaws_table_free(weight);
    return value;
}

/* E[purchases in (T, T + t] | alive at T, x purchases in (0, T]]; t_x does
 * not enter once the customer is known to be alive. */
static double expected_if_alive(const crm_bgnbd *m, double t, double x, double T)
{
    if (t == 0)
        return 0;
    gsl_quiet();
    double u = t / (m->alpha + T), value;
    if (expected_if_alive_closed(m, u, x, &value))
        return value;
    return expected_if_alive_integral(m, u, x);
}

double crm_bgnbd_expected_if_alive(const crm_bgnbd *m, double t, double x, double T)
{
    if (!bgnbd_valid(m) || !history_valid(x, 0, T) || !isfinite(t) || t < 0)
        return NAN;
    return expected_if_alive(m, t, x, T);
}

double crm_bgnbd_expected_purchases(const crm_bgnbd *m, double t, double x, double t_x, double T)
{
    if (!bgnbd_valid(m) || !history_valid(x, t_x, T) || !isfinite(t) || t < 0)
        return NAN;
    return crm_bgnbd_p_alive(m, x, t_x, T) * expected_if_alive(m, t, x, T);
}

double crm_bgnbd_expected_unconditional(const crm_bgnbd *m, double t)
{
    if (!bgnbd_valid(m) || !isfinite(t) || t < 0)
        return NAN;
    /* FHL 2005 eq. 9 is eq. 10 for a customer just acquired: x = T = 0,
     * alive for certain. */
    return expected_if_alive(m, t, 0, 0);
}

/* ---- Gamma-Gamma --------------------------------------------------------- */

/* The mean of x spends Gamma(p, nu) is Gamma(px, nu x); with nu ~ Gamma(q,
 * gamma) integrated out its log-density (Fader & Hardie 2013, eq. 3) is
 * these terms that depend on x alone (lngamma_q is ln Gamma(q))... */
static double gg_count_terms(const crm_gg *m, double x, double lngamma_q, double ln_gamma)
{
    double px = m->p * x;
    return gsl_sf_lnpoch(px, m->q) - lngamma_q + m->q * ln_gamma + px * log(x);
}

/* ...plus these, which depend on the mean spend mv too. */
static double gg_spend_terms(const crm_gg *m, double x, double mv)
{
    double px = m->p * x;
    return (px - 1) * log(mv) - (px + m->q) * log(m->gamma + x * mv);
}

double crm_gg_loglik(const crm_gg *m, double x, double mv)
{
    if (!gg_valid(m) || !is_count(x) || x < 1 || !positive_finite(mv))
        return NAN;
    gsl_quiet();
    return gg_count_terms(m, x, gsl_sf_lngamma(m->q), log(m->gamma)) + gg_spend_terms(m, x, mv);
}

double crm_gg_expected_spend(const crm_gg *m, double x, double mv)
{
    if (!gg_valid(m) || !is_count(x))
        return NAN;
    /* The posterior of nu is Gamma(px + q, gamma + x mv), and the mean spend
     * p / nu; its mean exists when px + q > 1. */
    if (x == 0)
        return m->q > 1 ? m->p * m->gamma / (m->q - 1) : NAN;
    double denominator = m->p * x + m->q - 1;
    if (!positive_finite(mv) || denominator <= 0)
        return NAN;
    return m->p * (m->gamma + x * mv) / denominator;
}

/* ---- customer value -------------------------------------------------------- */

double crm_bgnbd_discounted_if_alive(const crm_bgnbd *bg, double x, double T, double horizon_days,
                                     double annual_discount)
{
    if (!bgnbd_valid(bg) || !history_valid(x, 0, T) || !isfinite(horizon_days) ||
        horizon_days < 0 || horizon_days > CLV_MAX_HORIZON_DAYS || !isfinite(annual_discount) ||
        annual_discount <= -1)
        return NAN;
    double sum = 0, expected_before = 0;
    for (int k = 1; CLV_PERIOD_DAYS * (k - 1) < horizon_days; k++) {
        double end = fmin(CLV_PERIOD_DAYS * k, horizon_days);
        double expected = expected_if_alive(bg, end, x, T);
        if (isnan(expected))
            return NAN;
        sum += (expected - expected_before) / pow(1 + annual_discount, end / 365.0);
        expected_before = expected;
    }
    return sum;
}

double crm_bgnbd_discounted_purchases(const crm_bgnbd *bg, double x, double t_x, double T,
                                      double horizon_days, double annual_discount)
{
    if (!history_valid(x, t_x, T))
        return NAN;
    double if_alive = crm_bgnbd_discounted_if_alive(bg, x, T, horizon_days, annual_discount);
    return isnan(if_alive) ? NAN : crm_bgnbd_p_alive(bg, x, t_x, T) * if_alive;
}

double crm_btyd_clv(const crm_bgnbd *bg, const crm_gg *gg, double x, double t_x, double T,
                    double mv, double horizon_days, double annual_discount)
{
    double spend = crm_gg_expected_spend(gg, x, mv);
    double purchases =
        crm_bgnbd_discounted_purchases(bg, x, t_x, T, horizon_days, annual_discount);
    if (isnan(spend) || isnan(purchases))
        return NAN;
    return spend * purchases;
}

/* ---- fitting ------------------------------------------------------------------ */

/* One run of the simplex from theta (log-parameters) with first steps
 * `step`, at most max_iterations; theta becomes its best point and *f its
 * objective there. Counts its iterations into *iterations. True when the
 * simplex shrank below FIT_SIZE_TOLERANCE. */
static bool simplex_run(gsl_multimin_function *fn, gsl_vector *theta, double step,
                        int max_iterations, int *iterations, double *f)
{
    gsl_multimin_fminimizer *s =
        gsl_multimin_fminimizer_alloc(gsl_multimin_fminimizer_nmsimplex2, fn->n);
    gsl_vector *steps = gsl_vector_alloc(fn->n);
    bool converged = false;
    if (s == NULL || steps == NULL)
        goto done;
    gsl_vector_set_all(steps, step);
    if (gsl_multimin_fminimizer_set(s, fn, theta, steps) != GSL_SUCCESS)
        goto done;
    for (int i = 0; i < max_iterations && !converged; i++) {
        ++*iterations;
        if (gsl_multimin_fminimizer_iterate(s) != GSL_SUCCESS)
            break;
        converged = gsl_multimin_test_size(gsl_multimin_fminimizer_size(s), FIT_SIZE_TOLERANCE) ==
                    GSL_SUCCESS;
    }
    gsl_vector_memcpy(theta, gsl_multimin_fminimizer_x(s));
    *f = gsl_multimin_fminimizer_minimum(s);
done:
    if (steps != NULL)
        gsl_vector_free(steps);
    if (s != NULL)
        gsl_multimin_fminimizer_free(s);
    return converged;
}

/* Minimizes fn from theta (in place). Nelder-Mead can stall on a ridge and
 * call that convergence, so a converged run is restarted from its best
 * point with small steps until a restart no longer improves the objective.
 * True when that happened within the budget; *iterations counts all runs. */
static bool minimize(gsl_multimin_function *fn, gsl_vector *theta, int *iterations)
{
    *iterations = 0;
    double f = HUGE_VAL;
    if (!simplex_run(fn, theta, FIT_FIRST_STEP, FIT_MAX_ITERATIONS, iterations, &f))
        return false;
    for (int restart = 0; restart < FIT_MAX_RESTARTS; restart++) {
        double before = f;
        if (!simplex_run(fn, theta, FIT_RESTART_STEP, FIT_MAX_ITERATIONS - *iterations, iterations,
                         &f))
            return false;
        if (before - f <= FIT_CONFIRM_DELTA)
            return f < FIT_PENALTY;
    }
    return false;
}

/* A count x of purchases and the total weight of the rows that have it:
 * the log-likelihood terms that depend on x alone are computed once per
 * distinct x, not once per row (GSL's log-gamma costs far more than a
 * log). */
typedef struct {
    double x, w;
} count_weight;

static int compare_counts(const void *left, const void *right)
{
    const count_weight *l = left, *r = right;
    return (l->x > r->x) - (l->x < r->x);
}

/* Sorts counts[0..n) by x and merges equal x, summing their weights;
 * returns the number of distinct x. */
static size_t merge_counts(count_weight *counts, size_t n)
{
    if (n == 0)
        return 0;
    qsort(counts, n, sizeof counts[0], compare_counts);
    size_t distinct = 1;
    for (size_t i = 1; i < n; i++) {
        if (counts[i].x == counts[distinct - 1].x)
            counts[distinct - 1].w += counts[i].w;
        else
            counts[distinct++] = counts[i];
    }
    return distinct;
}

/* The largest whole number of days (and of purchases) the objective keeps
 * tables for. */
#define TABLE_MAX 100000

typedef struct {
    const crm_bgnbd_row *rows;
    size_t n;
    double total_w;
    count_weight *counts; /* the distinct x of rows, owned by crm_bgnbd_fit */
    size_t n_counts;
    /* When every row's x, t_x and T are whole numbers up to TABLE_MAX (days
     * and purchases, as the metrics give them), the logs of a row's terms
     * are looked up in tables made once per evaluation: ln_days[k] =
     * ln(alpha + k) for k up to max_day, ln_bx[k] = ln(b + k - 1) for k from
     * 1 up to max_x. Owned by crm_bgnbd_fit; NULL otherwise. */
    double *ln_days, *ln_bx;
    int max_day, max_x;
    struct half_sum *helper; /* sums the second half of the rows; NULL: none */
} bgnbd_data;

static crm_bgnbd bgnbd_from_theta(const gsl_vector *theta)
{
    return (crm_bgnbd){exp(gsl_vector_get(theta, 0)), exp(gsl_vector_get(theta, 1)),
                       exp(gsl_vector_get(theta, 2)), exp(gsl_vector_get(theta, 3))};
}

/* The mean negative log-likelihood per customer at theta = ln(r, alpha, a,
 * b): a mean, so the simplex's tolerance means the same for any number of
 * customers. */
/* bgnbd_time_terms with the logs from d's tables. */
static double bgnbd_time_terms_tabled(const bgnbd_data *d, const crm_bgnbd *m,
                                      const crm_bgnbd_row *row, double ln_a)
{
    double rx = m->r + row->x;
    double ln_a3 = -rx * d->ln_days[(int)row->T];
    if (row->x == 0)
        return ln_a3;
    double ln_a4 = ln_a - d->ln_bx[(int)row->x] - rx * d->ln_days[(int)row->t_x];
    return log_add_exp(ln_a3, ln_a4);
}

static void fill_tables(const bgnbd_data *d, const crm_bgnbd *m)
{
    for (int k = 0; k <= d->max_day; k++)
        d->ln_days[k] = log(m->alpha + k);
    for (int k = 1; k <= d->max_x; k++)
        d->ln_bx[k] = log(m->b + k - 1);
}

/* The time terms of rows [from, to) at m, weighted and summed. */
static double time_terms_sum(const bgnbd_data *d, const crm_bgnbd *m, double ln_a, size_t from,
                             size_t to)
{
    double sum = 0;
    for (size_t i = from; i < to; i++) {
        const crm_bgnbd_row *row = &d->rows[i];
        if (row->w > 0)
            sum += row->w * (d->ln_days != NULL
                                 ? bgnbd_time_terms_tabled(d, m, row, ln_a)
                                 : bgnbd_time_terms(m, row->x, row->t_x, row->T, ln_a));
    }
    return sum;
}

/* Over many rows the objective's sum runs in two halves, the second on a
 * thread of its own that waits for each evaluation (the simplex asks for
 * a few hundred). The halves are the same with or without it, and added
 * in the same order: the fit does not depend on whether it started. */
#define HALVES_MIN_ROWS 4096

typedef struct half_sum {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t asked, answered;
    const bgnbd_data *d;
    crm_bgnbd m;
    double ln_a, sum;
    unsigned long asked_n, answered_n; /* evaluations asked for and summed */
    bool stop;
} half_sum;

static void *half_sum_run(void *arg)
{
    half_sum *h = arg;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (h->asked_n == h->answered_n && !h->stop)
            pthread_cond_wait(&h->asked, &h->lock);
        if (h->stop)
            break;
        crm_bgnbd m = h->m;
        double ln_a = h->ln_a;
        pthread_mutex_unlock(&h->lock);
        double sum = time_terms_sum(h->d, &m, ln_a, h->d->n / 2, h->d->n);
        pthread_mutex_lock(&h->lock);
        h->sum = sum;
        h->answered_n++;
        pthread_cond_signal(&h->answered);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Starts d's helper when d has rows enough (and a thread can start). */
static void half_sum_start(bgnbd_data *d)
{
    if (d->n < HALVES_MIN_ROWS)
        return;
    half_sum *h = calloc(1, sizeof *h);
    if (h == NULL)
        return;
    h->d = d;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->asked, NULL);
    pthread_cond_init(&h->answered, NULL);
    if (pthread_create(&h->thread, NULL, half_sum_run, h) != 0) {
        pthread_cond_destroy(&h->answered);
        pthread_cond_destroy(&h->asked);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return;
    }
    d->helper = h;
}

static void half_sum_stop(bgnbd_data *d)
{
    half_sum *h = d->helper;
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_cond_signal(&h->asked);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->answered);
    pthread_cond_destroy(&h->asked);
    pthread_mutex_destroy(&h->lock);
    free(h);
    d->helper = NULL;
}

/* The time terms of every row: the first half here, the second on the
 * helper if there is one. */
static double time_terms_all(const bgnbd_data *d, const crm_bgnbd *m, double ln_a)
{
    half_sum *h = d->helper;
    if (h == NULL)
        return time_terms_sum(d, m, ln_a, 0, d->n / 2) +
               time_terms_sum(d, m, ln_a, d->n / 2, d->n);
    pthread_mutex_lock(&h->lock);
    h->m = *m;
    h->ln_a = ln_a;
    h->asked_n++;
    pthread_cond_signal(&h->asked);
    pthread_mutex_unlock(&h->lock);
    double first = time_terms_sum(d, m, ln_a, 0, d->n / 2);
    pthread_mutex_lock(&h->lock);
    while (h->answered_n != h->asked_n)
        pthread_cond_wait(&h->answered, &h->lock);
    double second = h->sum;
    pthread_mutex_unlock(&h->lock);
    return first + second;
}

static double bgnbd_objective(const gsl_vector *theta, void *arg)
{
    const bgnbd_data *d = arg;
    crm_bgnbd m = bgnbd_from_theta(theta);
    if (!bgnbd_valid(&m))
        return FIT_PENALTY;
    double lnbeta_ab = gsl_sf_lnbeta(m.a, m.b), ln_alpha = log(m.alpha), ln_a = log(m.a);
    double sum = 0;
    for (size_t i = 0; i < d->n_counts; i++)
        sum += d->counts[i].w * bgnbd_count_terms(&m, d->counts[i].x, lnbeta_ab, ln_alpha);
    if (d->ln_days != NULL)
        fill_tables(d, &m); /* before the helper reads them */
    sum += time_terms_all(d, &m, ln_a);
    double f = -sum / d->total_w;
    return isfinite(f) ? f : FIT_PENALTY;
}

static bool weight_valid(double w)
{
    return isfinite(w) && w >= 0;
}

/* Sum of w * loglik(row) at the fitted model, for the report: computed
 * row by row with the public function, independently of the objective. */
static double bgnbd_total_loglik(const crm_bgnbd *m, const crm_bgnbd_row *rows, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i].w > 0)
            sum += rows[i].w * crm_bgnbd_loglik(m, rows[i].x, rows[i].t_x, rows[i].T);
    return sum;
}

/* Runs the simplex on d from *model (in place), setting the report's
 * iterations and converged; returns converged. */
static bool bgnbd_minimize(bgnbd_data *d, crm_bgnbd *model, crm_fit_report *report)
{
    gsl_vector *theta = gsl_vector_alloc(4);
    if (theta == NULL)
        return false;
    gsl_vector_set(theta, 0, log(model->r));
    gsl_vector_set(theta, 1, log(model->alpha));
    gsl_vector_set(theta, 2, log(model->a));
    gsl_vector_set(theta, 3, log(model->b));
    gsl_multimin_function fn = {bgnbd_objective, 4, d};
    report->converged = minimize(&fn, theta, &report->iterations);
    *model = bgnbd_from_theta(theta);
    gsl_vector_free(theta);
    return report->converged;
}

static bool whole(double v)
{
    return v >= 0 && v <= TABLE_MAX && v == floor(v);
}

/* The tables of d, when its rows allow them (else, or out of memory, the
 * objective computes every log). */
static void make_tables(bgnbd_data *d)
{
    int max_day = 0, max_x = 0;
    for (size_t i = 0; i < d->n; i++) {
        const crm_bgnbd_row *row = &d->rows[i];
        if (!whole(row->x) || !whole(row->t_x) || !whole(row->T))
            return;
        max_day = row->T > max_day ? (int)row->T : max_day;
        max_x = row->x > max_x ? (int)row->x : max_x;
    }
    d->ln_days = malloc(((size_t)max_day + 1) * sizeof *d->ln_days);
    d->ln_bx = malloc(((size_t)max_x + 1) * sizeof *d->ln_bx);
    if (d->ln_days == NULL || d->ln_bx == NULL) {
        free(d->ln_days);
        free(d->ln_bx);
        d->ln_days = d->ln_bx = NULL;
        return;
    }
    d->max_day = max_day;
    d->max_x = max_x;
}

bool crm_bgnbd_fit(const crm_bgnbd_row *rows, size_t n, const crm_bgnbd *start, crm_bgnbd *out,
                   crm_fit_report *report)
{
    gsl_quiet();
    *report = (crm_fit_report){.loglik = NAN};
    *out = start != NULL ? *start : (crm_bgnbd){1, 1, 1, 1};
    if (rows == NULL || n == 0)
        return false;
    bgnbd_data d = {rows, n, 0, malloc(n * sizeof(count_weight)), 0, NULL, NULL, 0, 0, NULL};
    if (d.counts == NULL)
        return false;
    double sum_wx = 0, sum_wT = 0;
    bool rows_valid = true;
    for (size_t i = 0; rows_valid && i < n; i++) {
        const crm_bgnbd_row *row = &rows[i];
        rows_valid = history_valid(row->x, row->t_x, row->T) && weight_valid(row->w);
        d.total_w += row->w;
        sum_wx += row->w * row->x;
        sum_wT += row->w * row->T;
        d.counts[i] = (count_weight){row->x, row->w};
    }
    report->customers = rows_valid ? d.total_w : NAN;
    /* Without any repeat purchase the likelihood has no maximum (it grows
     * as r / alpha -> 0). */
    bool identified = rows_valid && isfinite(d.total_w) && d.total_w > 0 && sum_wx > 0 &&
                      isfinite(sum_wx) && isfinite(sum_wT);
    /* The default start: r = a = b = 1, and alpha such that the mean
     * purchase rate r / alpha is the observed repeat purchases per unit of
     * time. */
    if (identified && start == NULL)
        *out = (crm_bgnbd){1, sum_wT / sum_wx, 1, 1};
    if (identified && bgnbd_valid(out)) {
        d.n_counts = merge_counts(d.counts, n);
        make_tables(&d);
        half_sum_start(&d);
        bgnbd_minimize(&d, out, report);
        half_sum_stop(&d);
        report->loglik = bgnbd_total_loglik(out, rows, n);
    }
    free(d.counts);
    free(d.ln_days);
    free(d.ln_bx);
    return report->converged;
}

typedef struct {
    const crm_gg_row *rows;
    size_t n;
    double total_w;
    count_weight *counts; /* the distinct x of rows, owned by crm_gg_fit */
    size_t n_counts;
    double *ln_m; /* ln(m) of each row, which no parameter changes; owned there */
} gg_data;

static crm_gg gg_from_theta(const gsl_vector *theta)
{
    return (crm_gg){exp(gsl_vector_get(theta, 0)), exp(gsl_vector_get(theta, 1)),
                    exp(gsl_vector_get(theta, 2))};
}

/* The mean negative log-likelihood per customer at theta = ln(p, q,
 * gamma). */
static double gg_objective(const gsl_vector *theta, void *arg)
{
    const gg_data *d = arg;
    crm_gg m = gg_from_theta(theta);
    if (!gg_valid(&m))
        return FIT_PENALTY;
    double lngamma_q = gsl_sf_lngamma(m.q), ln_gamma = log(m.gamma), sum = 0;
    for (size_t i = 0; i < d->n_counts; i++)
        sum += d->counts[i].w * gg_count_terms(&m, d->counts[i].x, lngamma_q, ln_gamma);
    for (size_t i = 0; i < d->n; i++) {
        const crm_gg_row *row = &d->rows[i];
        if (row->w > 0) /* gg_spend_terms, with ln(m) made once */
            sum += row->w * ((m.p * row->x - 1) * d->ln_m[i] -
                             (m.p * row->x + m.q) * log(m.gamma + row->x * row->m));
    }
    double f = -sum / d->total_w;
    return isfinite(f) ? f : FIT_PENALTY;
}

static double gg_total_loglik(const crm_gg *m, const crm_gg_row *rows, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i].w > 0)
            sum += rows[i].w * crm_gg_loglik(m, rows[i].x, rows[i].m);
    return sum;
}

/* As bgnbd_minimize. */
static bool gg_minimize(gg_data *d, crm_gg *model, crm_fit_report *report)
{
    gsl_vector *theta = gsl_vector_alloc(3);
    if (theta == NULL)
        return false;
    gsl_vector_set(theta, 0, log(model->p));
    gsl_vector_set(theta, 1, log(model->q));
    gsl_vector_set(theta, 2, log(model->gamma));
    gsl_multimin_function fn = {gg_objective, 3, d};
    report->converged = minimize(&fn, theta, &report->iterations);
    *model = gg_from_theta(theta);
    gsl_vector_free(theta);
    return report->converged;
}

bool crm_gg_fit(const crm_gg_row *rows, size_t n, const crm_gg *start, crm_gg *out,
                crm_fit_report *report)
{
    gsl_quiet();
    *report = (crm_fit_report){.loglik = NAN};
    *out = start != NULL ? *start : (crm_gg){1, 2, 1};
    if (rows == NULL || n == 0)
        return false;
    gg_data d = {rows, n, 0, malloc(n * sizeof(count_weight)), 0, NULL};
    if (d.counts == NULL)
        return false;
    double sum_wm = 0;
    bool rows_valid = true;
    for (size_t i = 0; rows_valid && i < n; i++) {
        const crm_gg_row *row = &rows[i];
        rows_valid =
            is_count(row->x) && row->x >= 1 && positive_finite(row->m) && weight_valid(row->w);
        d.total_w += row->w;
        sum_wm += row->w * row->m;
        d.counts[i] = (count_weight){row->x, row->w};
    }
    report->customers = rows_valid ? d.total_w : NAN;
    bool usable = rows_valid && isfinite(d.total_w) && d.total_w > 0 && isfinite(sum_wm);
    /* The default start: p = 1, q = 2, and gamma such that the population
     * mean p gamma / (q - 1) is the observed mean spend. */
    if (usable && start == NULL)
        out->gamma = sum_wm / d.total_w;
    if (usable && gg_valid(out) && (d.ln_m = malloc(n * sizeof *d.ln_m)) != NULL) {
        for (size_t i = 0; i < n; i++)
            d.ln_m[i] = log(rows[i].m);
        d.n_counts = merge_counts(d.counts, n);
        gg_minimize(&d, out, report);
        report->loglik = gg_total_loglik(out, rows, n);
    }
    free(d.counts);
    free(d.ln_m);
    return report->converged;
}

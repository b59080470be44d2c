/*
 * btyd.h — "buy till you die" models of repeat purchasing: BG/NBD for how
 * many purchases a customer will make and whether they are still "alive"
 * (Fader, Hardie & Lee 2005, "Counting your customers the easy way"), and
 * Gamma-Gamma for how much they spend per purchase (Fader, Hardie & Lee
 * 2005, "RFM and CLV: using iso-value curves"; Fader & Hardie 2013, "The
 * Gamma-Gamma model of monetary value").
 *
 * A customer is summarised as in the papers: x repeat purchases (purchases
 * after the first, counted once per distinct time unit), t_x the time of the
 * last one since the first purchase, T the time from the first purchase to
 * the end of observation (0 <= t_x <= T), all in one time unit (crmd uses
 * days); and m the mean value of the repeat purchases (x > 0 only).
 *
 * Special functions (log-gamma, Gauss hypergeometric 2F1), integration and
 * the optimizer (Nelder-Mead simplex over the log parameters) come from GSL
 * (lib/metrics/btyd.c); nothing here touches the database. Every function
 * is thread-safe. GSL's default error handler, which aborts, is turned off
 * for the whole process at the first call.
 *
 * Inputs. A model's parameters are finite and > 0; x is a whole number >= 0;
 * t_x and T are finite with 0 <= t_x <= T, and t_x == 0 when x == 0;
 * horizons t are finite and >= 0. The per-customer functions return NAN
 * for anything else (and, not expected for such inputs, where GSL fails).
 */
#ifndef CRM_BTYD_H
#define CRM_BTYD_H

#include <stdbool.h>
#include <stddef.h>

typedef struct crm_bgnbd {
    double r, alpha; /* Gamma(r, alpha): purchase rates */
    double a, b;     /* Beta(a, b): dropout probability after each purchase */
} crm_bgnbd;

typedef struct crm_gg {
    double p, q, gamma; /* spend per purchase ~ Gamma(p, nu), nu ~ Gamma(q, gamma) */
} crm_gg;

/* Customers with identical summaries collapse into one row of weight w. */
typedef struct crm_bgnbd_row {
    double x, t_x, T, w;
} crm_bgnbd_row;

typedef struct crm_gg_row {
    double x, m, w; /* x > 0 */
} crm_gg_row;

typedef struct crm_fit_report {
    double loglik;    /* at the parameters returned: sum of w * log-likelihood */
    double customers; /* sum of w */
    int iterations;
    bool converged; /* the simplex shrank below its tolerance within the limit */
} crm_fit_report;

/* One customer's log-likelihood under the model (FHL 2005, eq. 6). */
double crm_bgnbd_loglik(const crm_bgnbd *m, double x, double t_x, double T);

/* Maximum-likelihood fit over rows (each row valid as above, with a weight
 * w finite and >= 0); start may be NULL: r = a = b = 1 and alpha = sum(w T)
 * / sum(w x), matching the observed purchase rate. The simplex runs until
 * its spread is below 1e-6 in every log-parameter, then restarts from its
 * best point until a restart no longer improves (10,000 iterations in all).
 * True when it converged. False when it did not (out: its last point,
 * report->loglik there), and without fitting (out: start or all ones,
 * report->loglik NAN, iterations 0) when there are no rows, sum(w) == 0,
 * a row or start is invalid, or there is no repeat purchase at all (the
 * likelihood then has no maximum). report->customers is sum(w), NAN when
 * a row is invalid. */
bool crm_bgnbd_fit(const crm_bgnbd_row *rows, size_t n, const crm_bgnbd *start, crm_bgnbd *out,
                   crm_fit_report *report);

/* P(alive | x, t_x, T); 1 when x == 0. */
double crm_bgnbd_p_alive(const crm_bgnbd *m, double x, double t_x, double T);

/* E[purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10). */
double crm_bgnbd_expected_purchases(const crm_bgnbd *m, double t, double x, double t_x, double T);

/* The two factors of crm_bgnbd_expected_purchases and
 * crm_bgnbd_discounted_purchases: each is P(alive | x, t_x, T) times a
 * value that depends on x and T alone, given here (the expected purchases
 * in (T, T + t], or the discounted purchases over the horizon, of a
 * customer known to be alive at T), so that customers who share x and T
 * share its 2F1 evaluations. Both functions above return exactly
 * crm_bgnbd_p_alive times these. NAN for an invalid model, x not a whole
 * number >= 0, T not finite and >= 0, or (as above) t or the horizon or
 * discount out of range. */
double crm_bgnbd_expected_if_alive(const crm_bgnbd *m, double t, double x, double T);
double crm_bgnbd_discounted_if_alive(const crm_bgnbd *m, double x, double T, double horizon_days,
                                     double annual_discount);

/* E[X(t)]: expected purchases of a new customer in t after the first
 * (FHL 2005, eq. 9). */
double crm_bgnbd_expected_unconditional(const crm_bgnbd *m, double t);

/* One customer's Gamma-Gamma log-likelihood of their mean spend mv over x
 * purchases (Fader & Hardie 2013, eq. 3): x >= 1 whole, mv finite and > 0,
 * else NAN. */
double crm_gg_loglik(const crm_gg *m, double x, double mv);

/* As crm_bgnbd_fit, over rows with x >= 1 whole, m finite and > 0, w
 * finite and >= 0. The default start: p = 1, q = 2 and gamma = the mean of
 * m (the population mean spend p gamma / (q - 1) is then the observed
 * one); refused without fitting, out is start or {1, 2, 1}. */
bool crm_gg_fit(const crm_gg_row *rows, size_t n, const crm_gg *start, crm_gg *out,
                crm_fit_report *report);

/* E[spend per purchase | x, mv] = p (gamma + x mv) / (p x + q - 1); the
 * population mean p * gamma / (q - 1) when x == 0 (mv is then ignored,
 * NAN included). NAN when that mean does not exist (q <= 1 for x == 0,
 * p x + q <= 1), or x is not a whole number >= 0, or x > 0 and mv is not
 * finite and > 0. */
double crm_gg_expected_spend(const crm_gg *m, double x, double mv);

/* The expected purchases of each 30-day period of the horizon (the last
 * one ends at the horizon), each divided by (1 + annual_discount)^(end /
 * 365), summed: what crm_btyd_clv multiplies by the expected spend. The
 * same NAN cases as crm_btyd_clv without the spend's. */
double crm_bgnbd_discounted_purchases(const crm_bgnbd *bg, double x, double t_x, double T,
                                      double horizon_days, double annual_discount);

/* Customer value over horizon days (bg fitted in days): the expected
 * purchases of each 30-day period (differences of
 * crm_bgnbd_expected_purchases; the last period ends at the horizon, so it
 * is shorter when horizon_days is not a multiple of 30) times
 * crm_gg_expected_spend(gg, x, mv), each period divided by
 * (1 + annual_discount)^(end / 365), end its last day: 0.1 is 10 % a year;
 * that is, crm_gg_expected_spend times crm_bgnbd_discounted_purchases.
 * 0 for a horizon of 0. NAN for an invalid customer or model, a horizon
 * outside [0, 36525] days, an annual_discount not finite or <= -1, or an
 * expected spend that is NAN. */
double crm_btyd_clv(const crm_bgnbd *bg, const crm_gg *gg, double x, double t_x, double T,
                    double mv, double horizon_days, double annual_discount);

#endif

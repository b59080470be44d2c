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
 * Special functions (log-gamma, Gauss hypergeometric 2F1) and the optimizer
 * (Nelder-Mead simplex over the log parameters) come from GSL; nothing here
 * touches the database.
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
    double loglik;     /* at the parameters returned: sum of w * log-likelihood */
    double customers;  /* sum of w */
    int iterations;
    bool converged;    /* the simplex shrank below its tolerance within the limit */
} crm_fit_report;

/* One customer's log-likelihood under the model. */
double crm_bgnbd_loglik(const crm_bgnbd *m, double x, double t_x, double T);

/* Maximum-likelihood fit over rows; start may be NULL (a default start).
 * False (out and report still filled with the last point) when the fit did
 * not converge or the data cannot identify the model (no rows, no repeat
 * purchases at all). */
bool crm_bgnbd_fit(const crm_bgnbd_row *rows, size_t n, const crm_bgnbd *start, crm_bgnbd *out,
                   crm_fit_report *report);

/* P(alive | x, t_x, T). */
double crm_bgnbd_p_alive(const crm_bgnbd *m, double x, double t_x, double T);

/* E[purchases in (T, T + t] | x, t_x, T]. */
double crm_bgnbd_expected_purchases(const crm_bgnbd *m, double t, double x, double t_x,
                                    double T);

/* E[X(t)]: expected purchases of a new customer in t after the first. */
double crm_bgnbd_expected_unconditional(const crm_bgnbd *m, double t);

/* One customer's Gamma-Gamma log-likelihood of their mean spend mv over x
 * purchases. */
double crm_gg_loglik(const crm_gg *m, double x, double mv);

bool crm_gg_fit(const crm_gg_row *rows, size_t n, const crm_gg *start, crm_gg *out,
                crm_fit_report *report);

/* E[spend per purchase | x, mv]; the population mean p * gamma / (q - 1)
 * when x == 0. */
double crm_gg_expected_spend(const crm_gg *m, double x, double mv);

/* Customer value over horizon days: the expected purchases of each 30-day
 * period (crm_bgnbd_expected_purchases differences) times the expected
 * spend, each period discounted at annual_discount (0.1: 10 % a year,
 * compounded per period as (1 + annual_discount)^(30/365)). */
double crm_btyd_clv(const crm_bgnbd *bg, const crm_gg *gg, double x, double t_x, double T,
                    double mv, double horizon_days, double annual_discount);

#endif

/*
 * metrics/internal.h — what the files of lib/metrics/ share.
 */
#ifndef CRM_METRICS_INTERNAL_H
#define CRM_METRICS_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "btyd.h"
#include "db.h"
#include "error.h"
#include "customer_metrics.h"

/* A purchase or refund, as the recompute reads it. */
typedef struct metrics_event {
    long long at_ms;
    bool refund;    /* else a purchase */
    bool rated;     /* its amount converts to the reporting currency (or has none) */
    bool has_value; /* it has an amount */
    double value;   /* in the reporting currency */
} metrics_event;

/* One customer's figures (customer_metrics' columns); the scores are set by
 * the recompute after every customer is summarised. */
typedef struct metrics_customer {
    long long id;
    int purchases, refunds, unrated;
    long long first_ms, last_ms; /* of the purchases; when purchases > 0 */
    double historic, aov, monetary, recency_days, m;
    bool has_aov, has_m;
    int frequency, x, t_x, t_age; /* x, t_x, t_age: when purchases > 0 */
    short r, f, mscore;           /* 1..5; 0 without purchases */
    bool scored;                  /* the predictions below are set */
    double p_alive, predicted_purchases, predicted_value;
    char tier; /* 't'op, 'h'igh, 's'tandard, 0: none */
    /* Velocity and variability: the intervals between purchase days and
     * the purchases' amounts, in order; NAN where there are too few. */
    double interval_mean, interval_cv, interval_trend, spend_cv, spend_trend;
} metrics_customer;

/* A series y_1, y_2, ... read one value at a time: its mean and variance
 * (Welford) and its least-squares slope against the index. */
typedef struct metrics_series {
    long n;
    double mean, m2;      /* m2: the sum of squared deviations */
    double mean_i, c_iy;  /* the index's mean and the co-moment */
    double m2_i;
} metrics_series;

/* Summarises one customer's events, given in time order. */
typedef struct metrics_acc {
    metrics_customer c;
    long long as_of_ms, window_start_ms;
    long long first_day, last_day;
    int days, valued;
    double gross, refunded, window_net, first_day_gross;
    bool first_day_valued;
    metrics_series intervals, spend;
} metrics_acc;

void metrics_acc_begin(metrics_acc *a, long long customer_id, long long as_of_ms, int window_days);
void metrics_acc_add(metrics_acc *a, const metrics_event *e);
/* Finishes a->c. */
void metrics_acc_end(metrics_acc *a);

/* SQL that prints a timestamptz column as the API does (db.h). */
#define TS(col) CRM_SQL_TS(col)

/* This process's configuration (crm_metrics_configure), by value. */
crm_metrics_config metrics_config(void);

/* The parameters as JSON objects ({"r", "alpha", "a", "b"}, {"p", "q", "gamma"}). */
json_t *metrics_bgnbd_json(const crm_bgnbd *m);
json_t *metrics_gg_json(const crm_gg *m);

/* Records a fit of model ("bg_nbd", "gamma_gamma") with params (stolen),
 * over nrows collapsed rows, on c; a converged fit goes in force, replacing the one before. */
bool metrics_model_store(crm_conn *c, const char *model, json_t *params,
                         const crm_fit_report *report, size_t nrows, bool converged,
                         const char *as_of, long long job_id, crm_error *err);

/* The fits in force on c; *have_* false when a model has none. */
bool metrics_models_in_force(crm_conn *c, crm_bgnbd *bg, bool *have_bg, crm_gg *gg, bool *have_gg,
                             crm_error *err);


/* ---- the whole base (base.c, distribution.c, daily.c, base_summary.c) ---------- */

#define METRICS_QUANTILES 1001 /* the percentile function at 0, 0.001, ..., 1 */
#define METRICS_MAX_BINS 200
#define METRICS_MAX_EDGES (METRICS_MAX_BINS + 1)
#define METRICS_DAY_MS 86400000LL

/* A histogram's edges: count = bins + 1 (0: no histogram, no values). */
typedef struct metrics_edges {
    int count;
    double at[METRICS_MAX_EDGES];
    const char *method;  /* freedman_diaconis, sturges, single, none, bins, edges */
    double bin_width;    /* equal bins: their width; NAN for given edges */
    double fd_width;     /* freedman_diaconis: 2 IQR n^(-1/3); else NAN */
} metrics_edges;

/* k equal bins over [lo, hi] (k clamped to 1..METRICS_MAX_BINS); lo = hi
 * makes [lo - 0.5, hi + 0.5], as numpy does. */
void metrics_equal_edges(double lo, double hi, int bins, metrics_edges *out);

/* The automatic bins of n values in [lo, hi] with interquartile range iqr:
 * Freedman-Diaconis, ceil((hi - lo) / (2 iqr n^(-1/3))) equal bins clamped
 * to 1..200; Sturges, ceil(log2 n) + 1, when iqr is 0; one bin around a
 * single repeated value; none without values. */
void metrics_auto_edges(long long n, double iqr, double lo, double hi, metrics_edges *out);

/* The bin (0-based) of v: [at[i], at[i+1]), the last bin closed; -1 outside. */
int metrics_bin_of(const metrics_edges *e, double v);

/* Reads `edges=` ("0,10.5,1e3"): 2 to 201 finite decimal numbers, strictly
 * ascending. False with *why (a constant) otherwise. */
bool metrics_parse_edges(const char *text, metrics_edges *out, const char **why);

/* The percentile rank (0-100) of v from the percentile function's values
 * q[k] at k / (nq - 1), linear between them: the P at which the function
 * reaches v, the middle of the stretch where it equals v; 0 below q[0], 100
 * above q[nq - 1]; NAN when nq < 2 or v is NAN. */
double metrics_percentile_rank(const double *q, int nq, double v);

/* The numeric measures (customer_metrics' columns) whose distributions the
 * base job computes; their number and the name of the i-th. */
size_t metrics_measure_count(void);
const char *metrics_measure_name(size_t i);

/* Computes the i-th measure's distribution over customer_metrics as it
 * stands, on c (outside a transaction: it runs its own, read-only), and
 * appends {"measure", "as_of", "n", "missing", "doc", "quantiles"} to rows. */
bool metrics_distribution_compute(crm_conn *c, size_t i, json_t *rows, crm_error *err);

/* Stores rows (metrics_distribution_compute's) and counts the base's
 * lifecycle stages and latest NPS answers into metrics_base, in one
 * transaction on c, as computed at computed_at by job job_id. */
bool metrics_distributions_store(crm_conn *c, const json_t *rows, const char *computed_at,
                                 long long job_id, crm_error *err);

/* Writes metrics_daily's rows for the UTC days after the last one written
 * (on a first run: from the first purchase, refund or feedback's day) up to
 * the last day complete at as_of_ms, on c (job's connection) in one
 * transaction, reporting progress (done, total) between its two passes over
 * the touchpoints, which renews job's lease. *result gets {"days_written",
 * "first_day", "last_day"} (the days null when none). */
bool metrics_daily_snapshot(crm_job_ctx *job, crm_conn *c, long long as_of_ms,
                            const long long progress[2], json_t **result, crm_error *err);

/* The UTC day (days since 1970-01-01) of epoch ms t, and its text
 * "YYYY-MM-DD" (out: 16 bytes at least). */
long long metrics_day_of(long long t_ms);
void metrics_day_text(long long day, char *out, size_t size);

/* A period of whole UTC days [*first, *end) from the query's from and to
 * (RFC 3339; NULL: absent): the days whose start lies in [from, to). to
 * defaults to the end of the last day recorded (today's start when none),
 * from to 90 days before it ("day"), the Monday 51 weeks before the last
 * day's week ("week"), the 1st of the month 11 months before the last
 * day's ("month"). CRM_E_INVALID naming from or to when one is not a date-time
 * or the period holds no day. */
bool metrics_read_period(const char *from, const char *to, const char *interval,
                         long long *first, long long *end, crm_error *err);

#endif

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

/* ---- the patterns job (patterns.c, cohorts.c, basket.c) --------------------------- */

typedef struct metrics_patterns_run {
    crm_job_ctx *job;
    crm_conn *c;             /* the job's own connection */
    char as_of[40];          /* RFC 3339, from the job's parameters */
    char currency[4];        /* the reporting currency */
    int min_pair_orders;     /* basket: pairs kept from this many orders */
    long long done, total;   /* the progress that long statements report again */
    const char *phase;
} metrics_patterns_run;

/* Opens the phase's transaction on run->c, with the settings its statements
 * read (a CREATE TABLE AS takes no parameters): crmd.as_of, crmd.currency,
 * crmd.min_pair_orders, and the memory its sorts and hashes may take. */
bool metrics_patterns_begin(metrics_patterns_run *run, crm_error *err);

/* Runs sql (constant text without parameters) on run->c and waits for it,
 * renewing the job's lease every few seconds meanwhile (crm_job_progress), so
 * that a statement longer than the lease is not taken for a dead process.
 * When the job is cancelled, taken over or its process stops, the statement
 * is cancelled and this fails with CRM_E_CONFLICT. */
bool metrics_patterns_run_long(metrics_patterns_run *run, const char *sql, crm_error *err);

/* The phases, inside the transaction metrics_patterns_begin opened: each
 * computes its result and replaces the stored one, and adds its figures to
 * result. */
bool metrics_cohorts_compute(metrics_patterns_run *run, json_t *result, crm_error *err);
bool metrics_basket_compute(metrics_patterns_run *run, json_t *result, crm_error *err);

#endif

/*
 * customer_metrics.h — what each customer is worth, how they buy and how
 * likely they are to stay (the "assess" and "track" halves of the CRM
 * loop), computed from the touchpoints that crmd holds.
 *
 * A full recompute is a job (jobs.h, kind "metrics_recompute") that runs in
 * phases, each its own transaction, with a checkpoint after each so that a
 * job taken over from a dead process resumes where it stopped:
 *
 *   aggregate  one statement over the purchases and refunds up to as_of,
 *              into metrics_staging: counts, values, first and last
 *              purchase, the RFM inputs and the models' summary (x, t_x, T
 *              in days: repeat purchase days, the last one's day, the
 *              customer's age, counted from the first purchase day);
 *   rfm        each of R, F, M scored 1-5 by quintile over the customers
 *              who ever purchased: score = ceil(5 * cume_dist), so equal
 *              values always share a score; recency inverted;
 *   fit        BG/NBD over the summaries collapsed into (x, t_x, T, count)
 *              and Gamma-Gamma over (x, mean repeat value, count) of the
 *              repeat customers (btyd.h); each fit is kept in
 *              metrics_models, and one that does not converge leaves the
 *              previous one in force;
 *   score      P(alive), expected purchases and discounted value over the
 *              horizon from the models in force; value tiers;
 *   publish    metrics_staging replaces customer_metrics in one statement.
 *
 * Amounts are converted to the reporting currency with currency_rates;
 * purchases and refunds in a currency without a rate are left out and
 * counted (unrated). Net value subtracts refunds whatever their sign.
 */
#ifndef CRM_CUSTOMER_METRICS_H
#define CRM_CUSTOMER_METRICS_H

#include <jansson.h>
#include <stdbool.h>

#include "error.h"
#include "jobs.h"

typedef struct crm_metrics_config {
    int window_days;        /* RFM frequency and monetary window (365) */
    int horizon_days;       /* predictions (365) */
    double annual_discount; /* of predicted value (0.10) */
    double tier_top;        /* share of customers by predicted value in tier "top" (0.01) */
    double tier_high;       /* ... in "top" or "high" (0.20) */
    char currency[4];       /* the reporting currency (EUR) */
} crm_metrics_config;

/* The defaults above. */
crm_metrics_config crm_metrics_defaults(void);

/* Sets the configuration (copied) for this process's recomputes and reads. */
void crm_metrics_configure(const crm_metrics_config *cfg);

/* The job kind of a full recompute (register it with crm_jobs_register). */
extern const crm_job_kind crm_metrics_recompute_kind;

/* Queues a full recompute observed up to as_ms (epoch ms; 0: now); as_ms
 * in the future is CRM_E_INVALID. One at a time: CRM_E_CONFLICT with
 * *running set when one is queued or running. Returns the job. */
json_t *crm_metrics_recompute_submit(long long as_ms, long long api_key_id, long long *running,
                                     crm_error *err);

/* A customer's metrics (following merges to the survivor): the stored row,
 * with null members when no recompute has covered them yet. NULL with
 * CRM_E_NOT_FOUND when there is no live customer with this id. */
json_t *crm_metrics_customer(long long id, crm_error *err);

/* The models: for each, the fit in force and the latest attempt. */
json_t *crm_metrics_model(crm_error *err);

#endif

/*
 * customer_metrics.h — what each customer is worth, how they buy and how
 * likely they are to stay (the "assess" and "track" halves of the CRM
 * loop), computed from the touchpoints that crmd holds.
 *
 * A full recompute is a job (jobs.h, kind "metrics_recompute") in phases:
 *
 *   load     the purchases and refunds of the live customers up to as_of,
 *            streamed by COPY in customer and time order, each customer
 *            summarised as they go by (metrics/summary.c): counts, values,
 *            first and last purchase, the RFM inputs and the models'
 *            summary (x, t_x, T in days: repeat purchase days, the last
 *            one's day, the customer's age, counted from the first
 *            purchase day, on UTC days);
 *   rfm      each of R, F, M scored 1-5 over the customers who ever
 *            purchased: ceil(5 k / n), k the customers whose value is at
 *            most this one's, so equal values share a score; recency
 *            reversed;
 *   fit      BG/NBD over the summaries collapsed into (x, t_x, T, count)
 *            and Gamma-Gamma over the repeat customers' (x, mean repeat
 *            value) (btyd.h); each fit is kept in metrics_models, and one
 *            that does not converge (or runs off to implausible values)
 *            leaves the previous one in force;
 *   score    P(alive), expected purchases and discounted value over the
 *            horizon from the models in force; value tiers;
 *   stage    the result into metrics_staging by COPY (the checkpoint: a job
 *            taken over after this only publishes);
 *   publish  metrics_staging replaces customer_metrics in one statement,
 *            every live customer included.
 *
 * Amounts are converted to the reporting currency with currency_rates;
 * purchases and refunds in a currency without a rate are left out and
 * counted (unrated). Net value subtracts refunds whatever their sign.
 */
#ifndef CRM_CUSTOMER_METRICS_H
#define CRM_CUSTOMER_METRICS_H

#include <jansson.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"
#include "jobs.h"

typedef struct crm_metrics_config {
    int window_days;        /* RFM frequency and monetary window (365) */
    int horizon_days;       /* predictions (365) */
    double annual_discount; /* of predicted value (0.10) */
    double tier_top;        /* share of customers by predicted value in tier "top" (0.01) */
    double tier_high;       /* ... in "top" or "high" (0.20) */
    char currency[4];       /* the reporting currency (EUR) */
    /* Lifecycle rules (openapi.yaml, CustomerMetrics.lifecycle) */
    int new_days;           /* first purchase at most this long ago: new (90) */
    int at_risk_days;       /* no purchase for longer: at risk (180) */
    double at_risk_p_alive; /* P(alive) below this: at risk (0.3) */
    int lapsed_days;        /* no purchase for longer: lapsed (365); a purchase
                               after a longer gap: won back */
    int basket_min_orders;  /* market basket: pairs bought together in fewer orders
                               are not kept (2) */
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

/* The same; refit false scores with the models in force instead of fitting
 * them again. */
json_t *crm_metrics_recompute_submit_with(long long as_ms, bool refit, long long api_key_id,
                                          long long *running, crm_error *err);

/* One sweep of the follower (metrics/follow.c) on c, a connection of its
 * own: the customers whose purchases, refunds or scored feedback changed,
 * or who were created, changed, merged or erased, since the last sweep (at
 * most batch changes of each feed) get their rows recomputed and replaced,
 * all in one transaction. *customers: how many were looked at; *more: a
 * feed had more changes waiting. False with err when the sweep failed
 * (nothing changed; the next one goes over the same changes). */
bool crm_metrics_follow(crm_conn *c, int batch, long long *customers, bool *more, crm_error *err);

/* Where the change feeds that the follower reads end now, as a text
 * (size >= 96 bytes) that differs from the last one read whenever a
 * touchpoint or customer changed in between: a follower that finds it
 * unmoved after a sweep knows that no ingest runs beside it. */
bool crm_metrics_follow_head(crm_conn *c, char *head, size_t size, crm_error *err);

/* Takes the follower's advisory lock on c for as long as c lives:
 * *claimed false when another connection holds it. */
bool crm_metrics_follow_claim(crm_conn *c, bool *claimed, crm_error *err);

/* Queues a full recompute observed up to now when none was queued in the
 * last hours (*queued says whether this call queued it). For the process
 * that follows, so that one process schedules. */
bool crm_metrics_schedule(int hours, bool *queued, crm_error *err);

/* A customer's metrics (following merges to the survivor): the stored row,
 * with null members when no recompute has covered them yet. NULL with
 * CRM_E_NOT_FOUND when there is no live customer with this id. */
json_t *crm_metrics_customer(long long id, crm_error *err);

/* A customer's lifecycle (following merges to the survivor): the current
 * stage, since when, and a page of its changes, newest first, before the
 * change before_id (0: from the newest); *next_before is where the next
 * page starts (0: none). {"customer_id", "stage", "since", "data": [{"id",
 * "stage", "previous", "changed_at"}]}. CRM_E_NOT_FOUND without a live
 * customer. */
json_t *crm_metrics_lifecycle(long long id, long long before_id, int limit, long long *next_before,
                              crm_error *err);

/* The same read split for the event loop (dbloop.h): the query for id,
 * then the document as JSON text (caller frees) of *len bytes, or NULL with
 * CRM_E_NOT_FOUND. */
void crm_metrics_customer_query(crm_query *q, long long id);
char *crm_metrics_customer_render(const PGresult *res, size_t *len, crm_error *err);

/* crm_metrics_customer on c, inside the caller's transaction (a customer
 * read with ?expand=metrics, in the customer's snapshot). */
json_t *crm_metrics_customer_on(crm_conn *c, long long id, crm_error *err);

/* The models: for each, the fit in force and the latest attempt. */
json_t *crm_metrics_model(crm_error *err);

/* ---- the rate table (metrics/rates.c) ------------------------------------------
 *
 * currency_rates holds, for each currency, the units of the reporting
 * currency one unit of it is worth. A recompute reads the table when it
 * starts and the follower at each sweep: a change applies from the next
 * computation of a customer's metrics, never to the metrics already
 * computed. A rate is the document
 *   {"currency", "rate", "reporting_currency", "updated_at", "version"}
 * whose version (its ETag "<version>") is updated_at in microseconds since
 * the epoch, which every write moves forward. */

/* A rate is above 0 and below this (the table's CHECK). */
#define CRM_RATE_MAX 1e9

/* A rate's document as JSON text (owned: crm_rate_doc_free) and its version. */
typedef struct crm_rate_doc {
    char *text;
    size_t len;
    long long version;
} crm_rate_doc;

void crm_rate_doc_free(crm_rate_doc *d);

/* Checks a PUT of currency's rate: currency one of currency.h's codes and
 * not the reporting currency, body exactly {"rate": number above 0 and
 * below CRM_RATE_MAX}; sets *rate. False with CRM_E_INVALID naming each bad
 * field ("currency" for the path's code, "/rate", unknown members). */
bool crm_metrics_rate_check(const char *currency, json_t *body, double *rate, crm_error *err);

/* The rate of currency; CRM_E_NOT_FOUND when the table has none. */
bool crm_metrics_rate_get(const char *currency, crm_rate_doc *out, crm_error *err);

/* Creates (*created) or replaces currency's rate with body's (checked as
 * crm_metrics_rate_check does) under If-Match (if_match NULL: none; "*" or
 * tags: the rate must exist with one of those versions). Fails with
 * CRM_E_INVALID, CRM_E_MALFORMED (an If-Match that is not * or quoted
 * tags) or CRM_E_PRECONDITION (no match; nothing written). */
bool crm_metrics_rate_put(const char *currency, json_t *body, const char *if_match,
                          crm_rate_doc *out, bool *created, crm_error *err);

/* Removes currency's rate under If-Match as above; CRM_E_NOT_FOUND when
 * there is none. */
bool crm_metrics_rate_delete(const char *currency, const char *if_match, crm_error *err);

/* A page of the rates in currency order: {"data": [rate, ...],
 * "next_cursor"} as JSON text (caller frees) of *len bytes. after is NULL
 * or a next_cursor of this list (else CRM_E_INVALID naming "after"); limit
 * at least 1. */
char *crm_metrics_rates_list(const char *after, int limit, size_t *len, crm_error *err);

/* ---- the base's purchase patterns (metrics/patterns.c, cohorts.c, basket.c) ----
 *
 * A job (kind "metrics_patterns") in two phases, each one set-based
 * statement over the purchase and refund touchpoints of the live customers
 * up to as_of, whose result replaces the previous one in one transaction:
 *
 *   cohorts  each customer's cohort is the UTC month of their first
 *            purchase; per cohort and month offset k (0: that month), the
 *            customers purchasing in month k and their net revenue there
 *            (purchases - |refunds| in the reporting currency, amounts
 *            without a rate left out and counted);
 *   basket   an order is one purchase touchpoint with items; its basket the
 *            distinct SKUs of its items (quantities do not matter); per SKU
 *            the orders holding it, per pair bought together in at least
 *            basket_min_orders orders the orders holding both, with support,
 *            confidence and lift (openapi.yaml, getMarketBasket).
 *
 * The pages read the stored result, with the as_of it was computed for. */

/* The job kind (register it with crm_jobs_register). */
extern const crm_job_kind crm_metrics_patterns_kind;

/* Queues the patterns job observed up to as_ms (epoch ms; 0: now); as_ms in
 * the future is CRM_E_INVALID. One at a time: CRM_E_CONFLICT with *running
 * set when one is queued or running. Returns the job. */
json_t *crm_metrics_patterns_submit(long long as_ms, long long api_key_id, long long *running,
                                    crm_error *err);

/* Cohort months are counted as year * 12 + (month - 1): January 2026 is
 * 2026 * 12 + 0. */
#define CRM_COHORT_MONTHS_MAX 120 /* offsets shown, and cohorts in one page */

typedef struct crm_cohorts_query {
    int from, to; /* the cohorts shown, as months (above); -1: the default */
    int months;   /* offsets 0 .. months are shown (1 .. CRM_COHORT_MONTHS_MAX) */
} crm_cohorts_query;

/* GET /v1/metrics/cohorts: the stored cohorts from .from to .to (default:
 * the 12 months to as_of's), as JSON text (openapi.yaml, MetricsCohorts)
 * that the caller frees with free(). Out-of-range values are CRM_E_INVALID
 * naming the query parameter ("from", "to", "months"). */
char *crm_metrics_cohorts(const crm_cohorts_query *q, crm_error *err);

/* The pages' query values, as the client sent them (tests/fuzz/
 * fuzz_metrics_query.c): "YYYY-MM" (0001-01 to 9999-12) as a month count
 * (false when not one); a plain decimal number, digits with a point or an
 * exponent but no sign or space (NAN when not one); a whole number from 0
 * to max in decimal digits (0 when not one). */
bool crm_metrics_parse_month(const char *s, int *month);
double crm_metrics_parse_decimal(const char *s);
int crm_metrics_parse_count(const char *s, int max);

#define CRM_BASKET_LIMIT_MAX 1000

typedef struct crm_basket_query {
    double min_support, min_confidence, min_lift; /* [0, 1], [0, 1], >= 0 */
    int limit;                                    /* 1 .. CRM_BASKET_LIMIT_MAX */
    const char *sku; /* NULL: every rule; else the rules sku -> other */
} crm_basket_query;

/* GET /v1/metrics/market-basket: the stored rules that pass the thresholds,
 * by lift, then confidence, then orders (openapi.yaml, MarketBasket), as
 * JSON text that the caller frees with free(). An unknown sku has no rules
 * (an empty list, not an error). Out-of-range values are CRM_E_INVALID
 * naming the query parameter. */
char *crm_metrics_market_basket(const crm_basket_query *q, crm_error *err);

/* ---- the whole base (metrics/base.c, distribution.c, daily.c, base_summary.c) ---- */

/* The job kind of the base's metrics, "metrics_base" (register it with
 * crm_jobs_register). Phases: "distributions", every measure's distribution
 * over customer_metrics as it stands, with the base's counts by lifecycle
 * stage, into metrics_distributions and metrics_base; "snapshot", the rows
 * of metrics_daily for the UTC days complete at the job's as_of that are
 * not written yet (migration 0019 says what each holds). Queue it after
 * each recompute and on a schedule: a run with nothing new to write only
 * refreshes the distributions. */
extern const crm_job_kind crm_metrics_base_kind;

/* Queues the base's metrics as of as_ms (epoch ms; 0: now; in the future:
 * CRM_E_INVALID). One at a time: CRM_E_CONFLICT with *running set when one
 * is queued or running. Returns the job. */
json_t *crm_metrics_base_submit(long long as_ms, long long api_key_id, long long *running,
                                crm_error *err);

/* GET /v1/metrics/summary: from and to (RFC 3339, NULL: the default
 * period) bound the period's figures and its churn rate (openapi.yaml,
 * MetricsSummary). The caller owns the result; NULL with err
 * (CRM_E_INVALID naming the parameter). */
json_t *crm_metrics_summary(const char *from, const char *to, crm_error *err);

/* The query parameters of GET /v1/metrics/distribution, as the request
 * gave them (NULL: absent), borrowed. */
typedef struct crm_distribution_request {
    const char *measure, *bins, *edges, *customer_id;
} crm_distribution_request;

/* GET /v1/metrics/distribution (openapi.yaml, MetricsDistribution). NULL
 * with err: CRM_E_INVALID naming each bad parameter, CRM_E_NOT_FOUND for a
 * customer_id that names no live customer. The caller owns the result. */
json_t *crm_metrics_distribution(const crm_distribution_request *r, crm_error *err);

/* The query parameters of GET /v1/metrics/timeseries, borrowed. */
typedef struct crm_timeseries_request {
    const char *measure, *interval, *from, *to;
} crm_timeseries_request;

/* At most this many points in one time series. */
#define CRM_METRICS_MAX_POINTS 3660

/* GET /v1/metrics/timeseries (openapi.yaml, MetricsTimeseries), from
 * metrics_daily. NULL with err (CRM_E_INVALID naming each bad parameter).
 * The caller owns the result. */
json_t *crm_metrics_timeseries(const crm_timeseries_request *r, crm_error *err);

#endif

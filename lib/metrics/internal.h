/*
 * metrics/internal.h — what the files of lib/metrics/ share.
 */
#ifndef CRM_METRICS_INTERNAL_H
#define CRM_METRICS_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "btyd.h"
#include "bytebuf.h"
#include "db.h"
#include "error.h"
#include "customer_metrics.h"

/* A purchase, refund or scored feedback, as the recompute reads it. */
typedef struct metrics_event {
    long long at_ms;
    char kind;      /* 'p'urchase, 'r'efund, 'f'eedback */
    bool rated;     /* its amount converts to the reporting currency (or has none) */
    bool has_value; /* it has an amount */
    double value;   /* in the reporting currency */
    char scale;     /* feedback: 'n'ps or 'c'sat */
    int score;      /* feedback: 0-10 (nps), 1-5 (csat) */
} metrics_event;

/* The lifecycle stages, in the order of the rules that assign them
 * (openapi.yaml, CustomerMetrics.lifecycle). */
typedef enum metrics_stage {
    STAGE_NONE,
    STAGE_PROSPECT,
    STAGE_LAPSED,
    STAGE_AT_RISK,
    STAGE_WON_BACK,
    STAGE_NEW,
    STAGE_ACTIVE,
} metrics_stage;

/* A stage's name ("" for STAGE_NONE). */
const char *metrics_stage_name(metrics_stage s);

/* One feedback scale's responses: the latest, their count and sum. */
typedef struct metrics_scale_responses {
    int latest, count;
    long long sum;
} metrics_scale_responses;

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
    int last_gap;                     /* days between the last two purchase days; 0: none */
    metrics_scale_responses nps, csat;
    /* Engagement (any kind of touchpoint): set by the loader, not the events. */
    int touchpoints_90d;
    bool has_inbound;
    long long last_inbound_ms;
    metrics_stage stage; /* set with the scores (metrics_stage_of) */
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

/* The customer's lifecycle stage by the configured rules, from the summary
 * and, when scored, P(alive). */
metrics_stage metrics_stage_of(const metrics_customer *c, const crm_metrics_config *cfg);

/* The score (1-5) of value v on a scale of four upper bounds: the lowest
 * score whose bound v does not pass, else 5. */
short metrics_scale_score(const double bounds[4], double v);

/* ---- what a computation reads (metrics/load.c) ---------------------------------- */

typedef struct metrics_rate {
    char currency[4];
    double rate; /* units of the reporting currency for one */
} metrics_rate;

typedef struct metrics_loaded_event {
    long long customer_id, id;
    metrics_event e;
} metrics_loaded_event;

/* A customer's touchpoints of any kind: how many in the 90 days to as_of,
 * and the last inbound one. */
typedef struct metrics_engagement {
    long long customer_id;
    int touchpoints_90d;
    bool has_inbound;
    long long last_inbound_ms;
} metrics_engagement;

typedef struct metrics_load {
    crm_metrics_config cfg;
    long long as_of_ms;
    metrics_customer *customers; /* the live customers, in id order */
    size_t n, cap;
    metrics_loaded_event *events;
    size_t nevents, events_cap;
    metrics_engagement *eng;
    size_t neng, eng_cap;
    metrics_rate *rates;
    size_t nrates;
} metrics_load;

/* The fields of an event: customer_id, id, occurred_at, type, amount,
 * currency, feedback scale, feedback score (COPY text; \N for none). */
#define METRICS_EVENT_FIELDS 8
#define METRICS_EVENT_COLUMNS                                                                      \
    "customer_id, id, occurred_at, type, amount, currency, feedback->>'scale',"                    \
    " feedback->>'score'"
#define METRICS_EVENT_WHERE                                                                        \
    "(type IN ('purchase', 'refund') OR (type = 'feedback' AND feedback ? 'score'))"

/* The engagement of the customers in the 90 days to the transaction's
 * setting crmd.metrics_as_of: customer_id, touchpoints, last inbound. */
#define METRICS_ENGAGEMENT_COLUMNS                                                                 \
    "customer_id, count(*) FILTER (WHERE occurred_at > (SELECT current_setting("                   \
    "'crmd.metrics_as_of')::timestamptz - interval '90 days')), max(occurred_at) FILTER (WHERE"    \
    " direction = 'inbound')"
/* (The settings are read in subqueries: evaluated once, not on every row.) */
#define METRICS_ENGAGEMENT_WHERE                                                                   \
    "occurred_at <= (SELECT current_setting('crmd.metrics_as_of')::timestamptz)"

/* Runs stmt with its n parameters for its effect (the result dropped). */
bool metrics_exec(crm_conn *c, crm_stmt *stmt, int n, const char *const *params, crm_error *err);

/* Grows *items (of size bytes each) to hold one more than used. */
bool metrics_grow(void **items, size_t *cap, size_t used, size_t size, crm_error *err);
bool metrics_load_rates(metrics_load *L, crm_conn *c, crm_error *err);
/* Appends a live customer (in id order). */
bool metrics_load_customer(metrics_load *L, long long id, crm_error *err);
/* An event's fields; one after as_of, or feedback without a score, is passed. */
bool metrics_load_event(metrics_load *L, char *const f[METRICS_EVENT_FIELDS], crm_error *err);
/* An engagement row's fields: customer_id, touchpoints, last inbound (or \N). */
bool metrics_load_engagement(metrics_load *L, char *const f[3], crm_error *err);
/* Splits a COPY text line of n fields into f, in buf (size bytes); false
 * when it does not fit or has fewer fields. */
bool metrics_split_line(const char *line, size_t len, char *buf, size_t size, char **f, int n);
/* Summarises every customer from the events read (then freed)... */
void metrics_load_summarise(metrics_load *L);
/* ...then gives them the engagement read (then freed). */
void metrics_load_add_engagement(metrics_load *L);
void metrics_load_free(metrics_load *L);

/* ---- scoring against the base (metrics/scales.c) ----------------------------------- */

/* The base's scales as of the last full recompute (migration 0018). */
typedef struct metrics_scales {
    bool have;
    double recency[4], frequency[4], monetary[4]; /* recency: the last purchase's epoch ms */
    bool have_top, have_high;
    double tier_top, tier_high; /* the lowest predicted value in the tier */
} metrics_scales;

/* The latest scales on c (s->have false when none). */
bool metrics_scales_latest(crm_conn *c, metrics_scales *s, crm_error *err);
/* R, F, M and the value tier of c (a purchaser; the tier when scored). */
void metrics_scales_apply(const metrics_scales *s, metrics_customer *c);
/* The scales of the customers as scored by the full recompute. */
void metrics_scales_from(const metrics_customer *customers, size_t n, metrics_scales *s);
/* Records s for the recompute observed at as_of (job_id 0: none). */
bool metrics_scales_store(crm_conn *c, const metrics_scales *s, const char *as_of, size_t customers,
                          long long job_id, crm_error *err);

/* Sorts p by (x, t_age, t_x): equal summaries side by side, and equal
 * (x, t_age) too. */
void metrics_sort_by_summary(metrics_customer **p, size_t n);

/* P(alive), the expected and discounted purchases and the predicted value
 * of the purchasers p (what depends on x and t_age alone is computed once
 * for equal ones side by side, P(alive) once for equal summaries: any
 * order is right, metrics_sort_by_summary's is the fastest);
 * the ones a model cannot predict are left unscored. */
void metrics_predict(metrics_customer **p, size_t n, const crm_bgnbd *bg, const crm_gg *gg,
                     bool have_gg, const crm_metrics_config *cfg);

/* ---- the rows (metrics/rows.c) ------------------------------------------------------ */

/* customer_metrics' columns in the order metrics_put_row writes them. */
#define METRICS_ROW_COLUMNS                                                                        \
    "customer_id, as_of, computed_at, purchases, refunds, unrated, first_purchase_at,"             \
    " last_purchase_at, historic_value, average_order_value, recency_days, frequency, monetary,"   \
    " r_score, f_score, m_score, rfm_cell, rfm_group, x, t_x, t_age, repeat_mean_value, p_alive,"  \
    " predicted_purchases, predicted_value, value_tier, interval_mean, interval_cv,"               \
    " interval_trend, spend_cv, spend_trend, lifecycle_stage, last_gap_days, overdue_days,"        \
    " touchpoints_90d, last_inbound_at, nps_latest, nps_mean, nps_responses, csat_latest,"         \
    " csat_mean, csat_responses"

/* Runs sql, a "COPY <table> (METRICS_ROW_COLUMNS) FROM STDIN (FORMAT
 * binary)", sending it the n customers' rows, observed at as_of_ms and
 * computed at now_ms (metrics/rows.c). */
bool metrics_copy_rows(crm_conn *c, const char *sql, const metrics_customer *customers, size_t n,
                       long long as_of_ms, long long now_ms, crm_error *err);

/* Queues a job of kind (one at a time: its name is its exclusive name)
 * observed up to as_ms (epoch ms; 0: now), with params (an object, stolen;
 * "as_of" is added). as_ms in the future is CRM_E_INVALID naming /as_of,
 * "what" saying whose; CRM_E_CONFLICT with *running set when one is queued
 * or running. */
json_t *metrics_job_submit(const crm_job_kind *kind, const char *what, long long as_ms,
                           json_t *params, long long api_key_id, long long *running,
                           crm_error *err);

/* The advisory lock of the follower (one process at a time). */
#define METRICS_FOLLOW_LOCK "7210013"

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

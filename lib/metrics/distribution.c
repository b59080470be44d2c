/*
 * metrics/distribution.c — each numeric measure's distribution over the
 * base ("manage around the mean"): computed by the job metrics_base
 * (metrics/base.c) into metrics_distributions, and served at
 * GET /v1/metrics/distribution from there, so that a request never ranks
 * the base again. Only a histogram over bins or edges that the client
 * chooses is counted live, over customer_metrics.
 *
 * A measure is an expression over customer_metrics' columns. Each has its
 * own statements, made at compile time from one text per use with the
 * expression in it (MEASURES below): every statement is static and
 * prepared, and a request's measure only selects one of them.
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "clock.h"
#include "customers/internal.h"
#include "jbuf.h"
#include "json.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* name, then the SQL expression over customer_metrics (openapi.yaml,
 * MetricsMeasure, documents each). */
#define MEASURES(X)                                                                                \
    X(recency_days, "recency_days")                                                                \
    X(frequency, "frequency")                                                                      \
    X(monetary, "monetary")                                                                        \
    X(historic_value, "historic_value")                                                            \
    X(average_order_value, "average_order_value")                                                  \
    X(purchases, "purchases")                                                                      \
    X(predicted_purchases, "predicted_purchases")                                                  \
    X(predicted_value, "predicted_value")                                                          \
    X(p_alive, "p_alive")                                                                          \
    X(churn_risk, "1 - p_alive")                                                                   \
    X(interval_mean_days, "interval_mean")                                                         \
    X(interval_cv, "interval_cv")                                                                  \
    X(interval_trend_days, "interval_trend")                                                       \
    X(spend_cv, "spend_cv")                                                                        \
    X(spend_trend, "spend_trend")                                                                  \
    X(overdue_days, "overdue_days")                                                                \
    X(touchpoints_per_30d, "touchpoints_90d / 3.0")                                                \
    X(nps_mean, "nps_mean")                                                                        \
    X(csat_mean, "csat_mean")

/* The SQL as written: clang-format would split its strings. */
/* clang-format off */
/* The values a measure takes: finite ones only (NULL, NaN and infinities
 * are left out and counted as missing). */
#define FINITE(v) "abs(" v ") < 'Infinity'::float8"

/* Everything but the histogram, in one pass over customer_metrics: $1 the
 * fractions of the quantiles. The shares within 0.5 and 1 standard
 * deviation read the values again, once the mean is known. */
#define STATS_SQL(expr)                                                                            \
    "WITH d AS MATERIALIZED (SELECT (" expr ")::float8 AS v, as_of FROM customer_metrics),"        \
    " s AS (SELECT count(*) AS total, max(as_of) AS as_of,"                                        \
    "  count(*) FILTER (WHERE " FINITE("v") ") AS n,"                                              \
    "  avg(v) FILTER (WHERE " FINITE("v") ") AS mean,"                                             \
    "  stddev_pop(v) FILTER (WHERE " FINITE("v") ") AS sd,"                                        \
    "  min(v) FILTER (WHERE " FINITE("v") ") AS lo,"                                               \
    "  max(v) FILTER (WHERE " FINITE("v") ") AS hi,"                                               \
    "  percentile_cont($1::float8[]) WITHIN GROUP (ORDER BY v)"                                    \
    "   FILTER (WHERE " FINITE("v") ") AS q FROM d) "                                              \
    "SELECT s.total, s.n, " CRM_SQL_TS("s.as_of") ", s.mean, s.sd, s.lo, s.hi, s.q::text,"         \
    " (SELECT count(*) FROM d WHERE abs(d.v - s.mean) <= 0.5 * s.sd),"                             \
    " (SELECT count(*) FROM d WHERE abs(d.v - s.mean) <= s.sd) FROM s"

/* The count of each bin of the edges $1: width_bucket gives 0 below the
 * first edge, cardinality($1) at or above the last, which the last bin
 * holds. */
#define COUNTS_SQL(expr)                                                                           \
    "SELECT b, count(*) FROM (SELECT CASE WHEN d.v = p.e[cardinality(p.e)]"                        \
    "  THEN cardinality(p.e) - 1 ELSE width_bucket(d.v, p.e) END AS b"                             \
    " FROM (SELECT (" expr ")::float8 AS v FROM customer_metrics) d,"                              \
    "  (SELECT $1::float8[] AS e) p WHERE " FINITE("d.v") ") x GROUP BY b"

/* The values' count and range, for bins= counted live. */
#define RANGE_SQL(expr)                                                                            \
    "SELECT count(*), min(v), max(v) FROM (SELECT (" expr ")::float8 AS v"                         \
    " FROM customer_metrics) d WHERE " FINITE("v")

/* One customer's value ($1, following a merge to the survivor): no row
 * when there is no live customer with this id, a null value when they have
 * none. The expression's columns are customer_metrics' (the inner scope). */
#define VALUE_SQL(expr)                                                                            \
    "SELECT c.id, (SELECT (" expr ")::float8 FROM customer_metrics WHERE customer_id = c.id)"      \
    " FROM customers c0 JOIN customers c ON c.id = CASE WHEN c0.status = 'merged'"                 \
    "  THEN c0.merged_into ELSE c0.id END AND c.status = 'active' WHERE c0.id = $1"
/* clang-format on */

typedef struct measure {
    const char *name;
    crm_stmt stats, counts, range, value;
} measure;

#define MEASURE_ROW(id, expr)                                                                      \
    {#id, CRM_STMT_RO("metrics_dist_stats_" #id, STATS_SQL(expr)),                                 \
     CRM_STMT_RO("metrics_dist_counts_" #id, COUNTS_SQL(expr)),                                    \
     CRM_STMT_RO("metrics_dist_range_" #id, RANGE_SQL(expr)),                                      \
     CRM_STMT_RO("metrics_dist_value_" #id, VALUE_SQL(expr))},

static measure measures[] = {MEASURES(MEASURE_ROW)};

#define NMEASURES (sizeof measures / sizeof measures[0])

size_t metrics_measure_count(void)
{
    return NMEASURES;
}

const char *metrics_measure_name(size_t i)
{
    return i < NMEASURES ? measures[i].name : NULL;
}

static measure *measure_named(const char *name)
{
    for (size_t i = 0; name != NULL && i < NMEASURES; i++)
        if (strcmp(measures[i].name, name) == 0)
            return &measures[i];
    return NULL;
}

/* ---- shared pieces -------------------------------------------------------------- */

/* A number, or null for NULL, NaN or an infinity. */
static json_t *number_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static double column_number(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? NAN : strtod(PQgetvalue(res, r, c), NULL);
}

/* "{e0,e1,...}", an array parameter that reads back as the same doubles. */
static bool edges_param(const metrics_edges *e, char *out, size_t size)
{
    size_t used = 0;
    for (int i = 0; i < e->count; i++) {
        int n = snprintf(out + used, size - used, "%c%.17g", i == 0 ? '{' : ',', e->at[i]);
        if (n < 0 || (size_t)n >= size - used)
            return false;
        used += (size_t)n;
    }
    if (used + 2 > size)
        return false;
    memcpy(out + used, "}", 2);
    return true;
}

/* Room for 201 edges of at most 24 characters and their commas. */
#define EDGES_PARAM_SIZE (METRICS_MAX_EDGES * 26 + 4)

/* The histogram object: method, edges, counts, below and above. counts has
 * e->count - 1 entries (below, above: outside the edges). */
static json_t *histogram_json(const metrics_edges *e, const long long *counts, long long below,
                              long long above, bool live)
{
    json_t *edges = json_array(), *bins = json_array();
    for (int i = 0; i < e->count; i++)
        json_array_append_new(edges, json_real(e->at[i]));
    for (int i = 0; i + 1 < e->count; i++)
        json_array_append_new(bins, json_integer(counts[i]));
    return json_pack("{s:s, s:b, s:o, s:o, s:o, s:o, s:I, s:I}", "method", e->method, "live", live,
                     "bin_width", number_or_null(e->bin_width), "fd_width",
                     number_or_null(e->fd_width), "edges", edges, "counts", bins, "below",
                     (json_int_t)below, "above", (json_int_t)above);
}

/* Counts the values of m in each bin of e with the statement m->counts, on
 * c (NULL: the pool); counts (e->count - 1 of them) zeroed first. */
static bool count_bins(crm_conn *c, measure *m, const metrics_edges *e, long long *counts,
                       long long *below, long long *above, crm_error *err)
{
    char param[EDGES_PARAM_SIZE];
    if (!edges_param(e, param, sizeof param))
        return crm_error_set(err, CRM_E_INTERNAL, "the edges do not fit");
    const char *values[] = {param};
    PGresult *res = c != NULL ? crm_db_exec(c, &m->counts, 1, values, err)
                              : crm_db_run(&m->counts, 1, values, err);
    if (res == NULL)
        return false;
    int nbins = e->count - 1;
    memset(counts, 0, (size_t)nbins * sizeof *counts);
    *below = *above = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        long b = strtol(PQgetvalue(res, r, 0), NULL, 10);
        long long n = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        if (b <= 0)
            *below += n;
        else if (b > nbins)
            *above += n;
        else
            counts[b - 1] += n;
    }
    PQclear(res);
    return true;
}

/* ---- the job: computing a measure's distribution --------------------------------- */

/* "{0,0.001,...,1}", the quantiles' fractions, exact decimals. */
static void fractions_param(char *out, size_t size)
{
    size_t used = 0;
    for (int k = 0; k < METRICS_QUANTILES && used < size; k++) {
        int n =
            snprintf(out + used, size - used, "%c%d.%03d", k == 0 ? '{' : ',', k / 1000, k % 1000);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used + 2 <= size)
        memcpy(out + used, "}", 2);
}

/* Reads PostgreSQL's float8[] text "{a,b,...}" into q (nq values); false
 * when it holds another number of them. */
static bool read_quantiles(const char *text, double *q, int nq)
{
    if (text[0] != '{')
        return false;
    const char *p = text + 1;
    for (int k = 0; k < nq; k++) {
        char *end;
        q[k] = strtod(p, &end);
        if (end == p || (*end != ',' && *end != '}'))
            return false;
        p = end + 1;
        if (*end == '}')
            return k == nq - 1;
    }
    return false;
}

/* The percentiles the page lists, as per cent, and their quantile index. */
static const struct {
    const char *name;
    int k;
} listed_percentiles[] = {{"p1", 10},   {"p5", 50},   {"p10", 100}, {"p25", 250}, {"p50", 500},
                          {"p75", 750}, {"p90", 900}, {"p95", 950}, {"p99", 990}};

typedef struct stats {
    long long total, n, within_half, within_one;
    double mean, sd, lo, hi;
    double q[METRICS_QUANTILES];
    char as_of[40];
    bool have_as_of;
} stats;

static bool read_stats(crm_conn *c, measure *m, stats *s, crm_error *err)
{
    char fractions[METRICS_QUANTILES * 6 + 4];
    fractions_param(fractions, sizeof fractions);
    const char *values[] = {fractions};
    PGresult *res = crm_db_exec(c, &m->stats, 1, values, err);
    if (res == NULL)
        return false;
    bool ok = PQntuples(res) == 1;
    if (ok) {
        s->total = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        s->n = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        s->have_as_of = !PQgetisnull(res, 0, 2);
        snprintf(s->as_of, sizeof s->as_of, "%s", PQgetvalue(res, 0, 2));
        s->mean = column_number(res, 0, 3);
        s->sd = column_number(res, 0, 4);
        s->lo = column_number(res, 0, 5);
        s->hi = column_number(res, 0, 6);
        s->within_half = strtoll(PQgetvalue(res, 0, 8), NULL, 10);
        s->within_one = strtoll(PQgetvalue(res, 0, 9), NULL, 10);
        ok = s->n == 0 || read_quantiles(PQgetvalue(res, 0, 7), s->q, METRICS_QUANTILES);
    }
    PQclear(res);
    return ok || crm_error_set(err, CRM_E_INTERNAL, "the %s statistics cannot be read", m->name);
}

static json_t *share_or_null(long long part, long long n)
{
    return n > 0 ? json_real((double)part / (double)n) : json_null();
}

/* The stored document: everything the page shows but the customer. */
static json_t *distribution_doc(const measure *m, const stats *s, const metrics_edges *e,
                                const long long *counts)
{
    json_t *pct = json_object();
    for (size_t i = 0; i < sizeof listed_percentiles / sizeof listed_percentiles[0]; i++)
        json_object_set_new(pct, listed_percentiles[i].name,
                            s->n > 0 ? number_or_null(s->q[listed_percentiles[i].k]) : json_null());
    json_t *doc = json_pack(
        "{s:s, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "measure", m->name, "n",
        (json_int_t)s->n, "missing", (json_int_t)(s->total - s->n), "mean", number_or_null(s->mean),
        "median", s->n > 0 ? number_or_null(s->q[500]) : json_null(), "sd", number_or_null(s->sd),
        "min", number_or_null(s->lo), "max", number_or_null(s->hi), "percentiles", pct,
        "within_half_sd", share_or_null(s->within_half, s->n), "within_one_sd",
        share_or_null(s->within_one, s->n));
    if (doc != NULL)
        json_object_set_new(doc, "histogram", histogram_json(e, counts, 0, 0, false));
    return doc;
}

bool metrics_distribution_compute(crm_conn *c, size_t i, json_t *rows, crm_error *err)
{
    if (i >= NMEASURES)
        return crm_error_set(err, CRM_E_INTERNAL, "no measure %zu", i);
    measure *m = &measures[i];
    stats *s = malloc(sizeof *s);
    if (s == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    metrics_edges e;
    long long counts[METRICS_MAX_BINS], below, above;
    /* One snapshot for the statistics and the histogram; read-only, and a
     * statement at a time, so that a recompute's publish waits for one
     * measure at most. */
    bool ok =
        crm_db_begin(c, err) &&
        crm_db_command(c, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", err) &&
        crm_db_command(c, "SET LOCAL work_mem = '128MB'", err) && read_stats(c, m, s, err);
    if (ok) {
        metrics_auto_edges(s->n, s->n > 0 ? s->q[750] - s->q[250] : 0, s->lo, s->hi, &e);
        ok = e.count == 0 || count_bins(c, m, &e, counts, &below, &above, err);
    }
    ok = ok && crm_db_commit(c, err);
    if (!ok) {
        crm_db_rollback(c);
        free(s);
        return false;
    }
    json_t *quantiles = json_null();
    if (s->n > 0) {
        quantiles = json_array();
        for (int k = 0; k < METRICS_QUANTILES; k++)
            json_array_append_new(quantiles, json_real(s->q[k]));
    }
    json_t *doc = distribution_doc(m, s, &e, counts);
    json_t *row = json_pack("{s:s, s:o, s:I, s:I, s:o, s:o}", "measure", m->name, "as_of",
                            s->have_as_of ? json_string(s->as_of) : json_null(), "n",
                            (json_int_t)s->n, "missing", (json_int_t)(s->total - s->n), "doc",
                            doc ? doc : json_null(), "quantiles", quantiles);
    free(s);
    if (doc == NULL || row == NULL || json_array_append_new(rows, row) != 0)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return true;
}

/* $1 the rows, $2 computed_at, $3 the job. */
/* clang-format off */
static crm_stmt store_distributions = CRM_STMT(
    "metrics_dist_store",
    "INSERT INTO metrics_distributions (measure, as_of, computed_at, n, missing, doc, quantiles,"
    " job_id) "
    "SELECT r.measure, r.as_of, $2::timestamptz, r.n, r.missing,"
    " r.doc || jsonb_build_object('as_of', r.as_of_text, 'computed_at', $2::text), r.quantiles,"
    " $3::bigint FROM (SELECT x.*, " CRM_SQL_TS("x.as_of") " AS as_of_text"
    "  FROM jsonb_to_recordset($1::jsonb) AS x(measure text, as_of timestamptz, n bigint,"
    "   missing bigint, doc jsonb, quantiles jsonb)) r "
    "ON CONFLICT (measure) DO UPDATE SET as_of = EXCLUDED.as_of,"
    " computed_at = EXCLUDED.computed_at, n = EXCLUDED.n, missing = EXCLUDED.missing,"
    " doc = EXCLUDED.doc, quantiles = EXCLUDED.quantiles, job_id = EXCLUDED.job_id");
/* clang-format on */

/* The base's stages and latest NPS answers, counted over customer_metrics
 * ($1 computed_at, $2 the job). */
/* clang-format off */
static crm_stmt store_base = CRM_STMT(
    "metrics_base_store",
    "INSERT INTO metrics_base (one, as_of, computed_at, customers, stage_prospect, stage_new,"
    " stage_active, stage_at_risk, stage_lapsed, stage_won_back, stage_unknown,"
    " nps_latest_promoters, nps_latest_passives, nps_latest_detractors, job_id) "
    "SELECT true, max(as_of), $1::timestamptz, count(*),"
    " count(*) FILTER (WHERE lifecycle_stage = 'prospect'),"
    " count(*) FILTER (WHERE lifecycle_stage = 'new'),"
    " count(*) FILTER (WHERE lifecycle_stage = 'active'),"
    " count(*) FILTER (WHERE lifecycle_stage = 'at_risk'),"
    " count(*) FILTER (WHERE lifecycle_stage = 'lapsed'),"
    " count(*) FILTER (WHERE lifecycle_stage = 'won_back'),"
    " count(*) FILTER (WHERE lifecycle_stage IS NULL),"
    " count(*) FILTER (WHERE nps_latest >= 9),"
    " count(*) FILTER (WHERE nps_latest BETWEEN 7 AND 8),"
    " count(*) FILTER (WHERE nps_latest <= 6), $2::bigint FROM customer_metrics "
    "ON CONFLICT (one) DO UPDATE SET as_of = EXCLUDED.as_of, computed_at = EXCLUDED.computed_at,"
    " customers = EXCLUDED.customers, stage_prospect = EXCLUDED.stage_prospect,"
    " stage_new = EXCLUDED.stage_new, stage_active = EXCLUDED.stage_active,"
    " stage_at_risk = EXCLUDED.stage_at_risk, stage_lapsed = EXCLUDED.stage_lapsed,"
    " stage_won_back = EXCLUDED.stage_won_back, stage_unknown = EXCLUDED.stage_unknown,"
    " nps_latest_promoters = EXCLUDED.nps_latest_promoters,"
    " nps_latest_passives = EXCLUDED.nps_latest_passives,"
    " nps_latest_detractors = EXCLUDED.nps_latest_detractors, job_id = EXCLUDED.job_id");
/* clang-format on */

bool metrics_distributions_store(crm_conn *c, const json_t *rows, const char *computed_at,
                                 long long job_id, crm_error *err)
{
    char *text = json_dumps(rows, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    char job[24];
    snprintf(job, sizeof job, "%lld", job_id);
    const char *dist[] = {text, computed_at, job_id > 0 ? job : NULL};
    const char *base[] = {computed_at, job_id > 0 ? job : NULL};
    PGresult *a = NULL, *b = NULL;
    bool ok = crm_db_begin(c, err) &&
              (a = crm_db_exec(c, &store_distributions, 3, dist, err)) != NULL &&
              (b = crm_db_exec(c, &store_base, 2, base, err)) != NULL && crm_db_commit(c, err);
    PQclear(a);
    PQclear(b);
    free(text);
    if (!ok)
        crm_db_rollback(c);
    return ok;
}

/* ---- GET /v1/metrics/distribution ----------------------------------------------- */

/* $1 the measure, $2 whether the quantiles are wanted. */
static crm_stmt stored_distribution = CRM_STMT_RO(
    "metrics_dist_stored", "SELECT doc::text, CASE WHEN $2::boolean THEN quantiles::text END"
                           " FROM metrics_distributions WHERE measure = $1");

/* A positive integer written plainly ("12", never "+12", "012" or "1e2"),
 * up to max. */
static bool plain_integer(const char *s, long long max, long long *out)
{
    if (s == NULL || s[0] < '1' || s[0] > '9' || strlen(s) > 18)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    *out = strtoll(s, NULL, 10);
    return *out <= max;
}

static void add_measure_error(crm_error *err)
{
    char list[512];
    size_t used = 0;
    for (size_t i = 0; i < NMEASURES; i++) {
        int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", measures[i].name);
        if (n < 0 || (size_t)n >= sizeof list - used)
            break;
        used += (size_t)n;
    }
    char message[600];
    snprintf(message, sizeof message, "not a known measure; one of %s", list);
    crm_error_add_field(err, "measure", message);
}

/* The request's parameters, checked; false with every fault named. */
static bool read_request(const crm_distribution_request *r, measure **m, int *bins,
                         metrics_edges *edges, long long *customer, crm_error *err)
{
    *m = measure_named(r->measure);
    if (*m == NULL) {
        if (r->measure == NULL)
            crm_error_add_field(err, "measure", "is required");
        else
            add_measure_error(err);
    }
    long long v = 0;
    *bins = 0;
    if (r->bins != NULL && !plain_integer(r->bins, METRICS_MAX_BINS, &v))
        crm_error_add_field(err, "bins", "must be an integer from 1 to 200");
    *bins = (int)v;
    edges->count = 0;
    const char *why = NULL;
    if (r->edges != NULL && r->bins != NULL)
        crm_error_add_field(err, "edges", "give bins or edges, not both");
    else if (r->edges != NULL && !metrics_parse_edges(r->edges, edges, &why))
        crm_error_add_field(err, "edges", why);
    *customer = 0;
    if (r->customer_id != NULL && !plain_integer(r->customer_id, LLONG_MAX / 10, customer))
        crm_error_add_field(err, "customer_id", "must be a customer's id (a positive integer)");
    if (json_array_size(err->errors) > 0)
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    return true;
}

/* The stored document (NULL with *doc_missing when no job computed it yet)
 * and, when want_quantiles, the quantiles into q (*nq of them). */
static json_t *read_stored(measure *m, bool want_quantiles, double *q, int *nq, crm_error *err)
{
    const char *values[] = {m->name, want_quantiles ? "true" : "false"};
    PGresult *res = crm_db_run(&stored_distribution, 2, values, err);
    if (res == NULL)
        return NULL;
    *nq = 0;
    json_t *doc;
    if (PQntuples(res) == 0) {
        /* No job has computed it yet: the same shape, empty. */
        static const char *const members[] = {
            "as_of",    "computed_at", "n",   "missing",     "mean",           "median",
            "sd",       "min",         "max", "percentiles", "within_half_sd", "within_one_sd",
            "histogram"};
        doc = json_pack("{s:s}", "measure", m->name);
        for (size_t i = 0; doc != NULL && i < sizeof members / sizeof members[0]; i++)
            json_object_set_new(doc, members[i], json_null());
    } else {
        doc = crm_json_load_stored(PQgetvalue(res, 0, 0));
        json_t *quantiles =
            PQgetisnull(res, 0, 1) ? NULL : crm_json_load_stored(PQgetvalue(res, 0, 1));
        size_t k;
        json_t *v;
        if (json_array_size(quantiles) == METRICS_QUANTILES)
            json_array_foreach(quantiles, k, v) q[(*nq)++] = json_number_value(v);
        json_decref(quantiles);
    }
    PQclear(res);
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "the stored distribution cannot be read");
    return doc;
}

/* The live histogram of m over the current customer_metrics: bins equal
 * bins over the values' range, else edges as given. */
static json_t *live_histogram(measure *m, int bins, metrics_edges *edges, crm_error *err)
{
    long long counts[METRICS_MAX_BINS], below = 0, above = 0;
    if (bins == 0) {
        if (!count_bins(NULL, m, edges, counts, &below, &above, err))
            return NULL;
        return histogram_json(edges, counts, below, above, true);
    }
    /* The range and the counts from one snapshot. */
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    PGresult *res = NULL;
    bool ok =
        crm_db_begin(c, err) &&
        crm_db_command(c, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", err) &&
        (res = crm_db_exec(c, &m->range, 0, NULL, err)) != NULL;
    long long n = ok ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    if (ok && n == 0) {
        edges->count = 0;
        edges->method = "bins";
        edges->bin_width = edges->fd_width = NAN;
    } else if (ok) {
        metrics_equal_edges(column_number(res, 0, 1), column_number(res, 0, 2), bins, edges);
        edges->method = "bins";
        edges->fd_width = NAN;
        ok = count_bins(c, m, edges, counts, &below, &above, err);
    }
    PQclear(res);
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    crm_db_release(c);
    return ok ? histogram_json(edges, counts, below, above, true) : NULL;
}

/* Where customer sits: {"customer_id", "value", "percentile_rank",
 * "z_score", "distance_to_mean", "bin"}; NULL with CRM_E_NOT_FOUND when
 * there is no live customer with this id. */
static json_t *customer_place(measure *m, long long customer, const json_t *doc, const double *q,
                              int nq, crm_error *err)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", customer);
    const char *values[] = {id};
    PGresult *res = crm_db_run(&m->value, 1, values, err);
    if (res == NULL)
        return NULL;
    if (PQntuples(res) == 0) {
        PQclear(res);
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    long long survivor = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    double v = column_number(res, 0, 1);
    PQclear(res);
    json_t *place = json_pack("{s:I, s:n, s:n, s:n, s:n, s:n}", "customer_id", (json_int_t)survivor,
                              "value", "percentile_rank", "z_score", "distance_to_mean", "bin");
    if (place == NULL || !isfinite(v))
        return place;
    json_object_set_new(place, "value", json_real(v));
    const json_t *mean = json_object_get(doc, "mean"), *sd = json_object_get(doc, "sd");
    if (json_is_number(mean)) {
        double d = v - json_number_value(mean);
        json_object_set_new(place, "distance_to_mean", json_real(d));
        if (json_is_number(sd) && json_number_value(sd) > 0)
            json_object_set_new(place, "z_score", json_real(d / json_number_value(sd)));
    }
    if (nq > 0)
        json_object_set_new(place, "percentile_rank", json_real(metrics_percentile_rank(q, nq, v)));
    /* The bin of the histogram the page shows. */
    const json_t *edges = json_object_get(json_object_get(doc, "histogram"), "edges");
    metrics_edges e = {.count = 0};
    size_t k;
    json_t *x;
    if (json_array_size(edges) >= 2 && json_array_size(edges) <= METRICS_MAX_EDGES)
        json_array_foreach(edges, k, x) e.at[e.count++] = json_number_value(x);
    int bin = metrics_bin_of(&e, v);
    if (bin >= 0)
        json_object_set_new(place, "bin", json_integer(bin));
    return place;
}

json_t *crm_metrics_distribution(const crm_distribution_request *r, crm_error *err)
{
    measure *m;
    int bins;
    long long customer;
    metrics_edges *edges = malloc(sizeof *edges);
    double *q = malloc(METRICS_QUANTILES * sizeof *q);
    json_t *doc = NULL;
    int nq = 0;
    if (edges == NULL || q == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    else if (read_request(r, &m, &bins, edges, &customer, err))
        doc = read_stored(m, customer > 0, q, &nq, err);
    if (doc != NULL && (bins > 0 || edges->count > 0)) {
        json_t *live = live_histogram(m, bins, edges, err);
        if (live == NULL) {
            json_decref(doc);
            doc = NULL;
        } else {
            json_object_set_new(doc, "histogram", live);
        }
    }
    if (doc != NULL && customer > 0) {
        json_t *place = customer_place(m, customer, doc, q, nq, err);
        if (place == NULL) {
            json_decref(doc);
            doc = NULL;
        } else {
            json_object_set_new(doc, "customer", place);
        }
    }
    free(edges);
    free(q);
    return doc;
}

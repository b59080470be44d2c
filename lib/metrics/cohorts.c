/*
 * metrics/cohorts.c — retention and revenue by first-purchase month: the
 * patterns job's phase "cohorts" (customer_metrics.h) and the page that
 * reads its result (GET /v1/metrics/cohorts).
 *
 * A customer's cohort is the UTC month of their first purchase up to
 * as_of; month offset k is the k-th calendar month after it. The phase
 * stores, per cohort and offset, the cohort's customers who purchased in
 * that month and their net revenue there; the cohort's size is its
 * customers at offset 0 (each of them purchased in their first month).
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "clock.h"
#include "jbuf.h"
#include "json.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the phase ------------------------------------------------------------------ */

/* One pass over the purchases and refunds of the live customers up to
 * as_of (merged customers' touchpoints were moved to their survivor):
 * first a row per customer and UTC month, whether they purchased and their
 * net amount (a refund subtracts its absolute value, amounts in the
 * reporting currency or converted by currency_rates; an amount without a
 * rate counts as unrated and adds nothing); then each customer's cohort, the
 * first month with a purchase, by a window over their rows (which come
 * sorted by customer); then the sums per cohort and month. Months before the
 * cohort (a refund before any purchase) are left out. Live customers are
 * those no non-active customer row names: an anti-join against the few that
 * are not active (customers_not_active_idx), not a join with every live one.
 * A CREATE TABLE AS, unlike an INSERT, may run in parallel workers. */
#define COHORTS_SQL                                                                                \
    "CREATE TEMP TABLE metrics_cohorts_next ON COMMIT DROP AS "                                    \
    "SELECT w.cohort::date AS cohort,"                                                             \
    " ((extract(year FROM w.m) - extract(year FROM w.cohort)) * 12"                                \
    "  + extract(month FROM w.m) - extract(month FROM w.cohort))::int AS month_offset,"            \
    " count(*) FILTER (WHERE w.bought) AS customers,"                                              \
    " coalesce(sum(w.net), 0) AS revenue,"                                                         \
    " sum(w.unrated)::bigint AS unrated "                                                          \
    "FROM ("                                                                                       \
    " SELECT g.m, g.bought, g.net, g.unrated,"                                                     \
    "  min(g.m) FILTER (WHERE g.bought) OVER (PARTITION BY g.customer_id) AS cohort"               \
    " FROM ("                                                                                      \
    "  SELECT t.customer_id, date_trunc('month', t.occurred_at AT TIME ZONE 'UTC') AS m,"          \
    "   bool_or(t.type = 'purchase') AS bought,"                                                   \
    "   sum(CASE WHEN t.type = 'refund' THEN -abs(v.value) ELSE v.value END) AS net,"              \
    "   count(*) FILTER (WHERE t.amount IS NOT NULL AND v.value IS NULL) AS unrated"               \
    "  FROM touchpoints t"                                                                         \
    "  LEFT JOIN currency_rates r ON r.currency = t.currency"                                      \
    "  CROSS JOIN LATERAL (SELECT CASE WHEN t.amount IS NULL THEN 0"                               \
    "   WHEN t.currency = (SELECT current_setting('crmd.currency')) THEN t.amount"                 \
    "   ELSE t.amount * r.rate END AS value) v"                                                    \
    "  WHERE t.type IN ('purchase', 'refund')"                                                     \
    "   AND t.occurred_at <= (SELECT current_setting('crmd.as_of')::timestamptz)"                  \
    "   AND NOT EXISTS (SELECT FROM customers c WHERE c.id = t.customer_id"                        \
    "    AND c.status <> 'active')"                                                                \
    "  GROUP BY t.customer_id, 2"                                                                  \
    " ) g"                                                                                         \
    ") w "                                                                                         \
    "WHERE w.m >= w.cohort "                                                                       \
    "GROUP BY w.cohort, w.m"

static crm_stmt cohorts_clear = CRM_STMT("metrics_cohorts_clear", "DELETE FROM metrics_cohorts");

static crm_stmt cohorts_store =
    CRM_STMT("metrics_cohorts_store",
             "INSERT INTO metrics_cohorts (cohort, month_offset, customers, revenue, unrated)"
             " SELECT cohort, month_offset, customers, revenue, unrated FROM metrics_cohorts_next");

/* $1 as_of, $2 job, $3 currency. Returns the customers and cohorts. */
static crm_stmt cohorts_record = CRM_STMT(
    "metrics_cohorts_record",
    "INSERT INTO metrics_patterns (pattern, as_of, computed_at, job_id, currency, customers)"
    " SELECT 'cohorts', $1::timestamptz, now(), $2::bigint, $3::text,"
    "  coalesce(sum(customers), 0) FROM metrics_cohorts_next WHERE month_offset = 0 "
    "ON CONFLICT (pattern) DO UPDATE SET as_of = excluded.as_of,"
    " computed_at = excluded.computed_at, job_id = excluded.job_id,"
    " currency = excluded.currency, customers = excluded.customers "
    "RETURNING customers, (SELECT count(*) FROM metrics_cohorts_next WHERE month_offset = 0)");

/* Runs a statement without parameters for its effect. */
static bool exec_plain(crm_conn *c, crm_stmt *stmt, crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, 0, NULL, err);
    PQclear(res);
    return res != NULL;
}

bool metrics_cohorts_compute(metrics_patterns_run *run, json_t *result, crm_error *err)
{
    if (!metrics_patterns_run_long(run, COHORTS_SQL, err) ||
        !exec_plain(run->c, &cohorts_clear, err) || !exec_plain(run->c, &cohorts_store, err))
        return false;
    char job[24];
    snprintf(job, sizeof job, "%lld", crm_job_id(run->job));
    const char *values[] = {run->as_of, job, run->currency};
    PGresult *res = crm_db_exec(run->c, &cohorts_record, 3, values, err);
    if (res == NULL)
        return false;
    json_object_set_new(result, "customers", json_integer(atoll(PQgetvalue(res, 0, 0))));
    json_object_set_new(result, "cohorts", json_integer(atoll(PQgetvalue(res, 0, 1))));
    PQclear(res);
    return true;
}

/* ---- GET /v1/metrics/cohorts ---------------------------------------------------- */

/* What the stored cohorts cover: as_of and computed_at as the API prints
 * them, the currency, and as_of's UTC month (year * 12 + month - 1). */
static crm_stmt cohorts_info = CRM_STMT_RO(
    "metrics_cohorts_info",
    "SELECT " TS("as_of") ","
    " " TS("computed_at") ","
    " currency, (extract(year FROM as_of AT TIME ZONE 'UTC') * 12"
    "  + extract(month FROM as_of AT TIME ZONE 'UTC') - 1)::int "
    "FROM metrics_patterns WHERE pattern = 'cohorts'");

/* The page: $1 and $2 the first days of the first and last cohort shown,
 * $3 months, $4 the first day of as_of's month (NULL: nothing computed),
 * $5 as_of, $6 computed_at, $7 currency. Offsets past as_of's month are
 * null: not observed yet. */
static crm_stmt cohorts_page = CRM_STMT_RO(
    "metrics_cohorts_page",
    "SELECT json_build_object('as_of', $5::text, 'computed_at', $6::text, 'currency', $7::text,"
    " 'from', to_char($1::date, 'YYYY-MM'), 'to', to_char($2::date, 'YYYY-MM'),"
    " 'months', $3::int, 'data', coalesce(json_agg(json_build_object("
    "  'cohort', to_char(c.cohort, 'YYYY-MM'), 'customers', c.customers,"
    "  'retention', a.retention, 'purchasers', a.purchasers, 'revenue', a.revenue,"
    "  'revenue_total', t.revenue, 'unrated', t.unrated) ORDER BY c.cohort), '[]'))::text "
    "FROM metrics_cohorts c "
    "CROSS JOIN LATERAL ("
    " SELECT json_agg(CASE WHEN o.seen THEN coalesce(x.customers, 0)::float8 / c.customers END"
    "   ORDER BY k.k) AS retention,"
    "  json_agg(CASE WHEN o.seen THEN coalesce(x.customers, 0) END ORDER BY k.k) AS purchasers,"
    "  json_agg(CASE WHEN o.seen THEN round(coalesce(x.revenue, 0), 4) END ORDER BY k.k) AS revenue"
    " FROM generate_series(0, $3::int) k (k)"
    " CROSS JOIN LATERAL (SELECT c.cohort + make_interval(months => k.k) <= $4::date AS seen) o"
    " LEFT JOIN metrics_cohorts x ON x.cohort = c.cohort AND x.month_offset = k.k) a "
    "CROSS JOIN LATERAL (SELECT round(sum(y.revenue), 4) AS revenue, sum(y.unrated) AS unrated"
    " FROM metrics_cohorts y WHERE y.cohort = c.cohort) t "
    "WHERE c.month_offset = 0 AND c.cohort BETWEEN $1::date AND $2::date");

/* month (year * 12 + month - 1, years 1 to 9999) as the date of its
 * first day. */
static void month_date(int month, char out[24])
{
    snprintf(out, 24, "%04d-%02d-01", month / 12, month % 12 + 1);
}

static bool invalid(crm_error *err, const char *field, const char *message)
{
    crm_error_add_field(err, field, message);
    return crm_error_set(err, CRM_E_INVALID, "invalid query parameter '%s'", field);
}

/* The range shown: defaults from as_of's month (the current month when
 * nothing was computed), then the bounds. */
static bool cohort_range(const crm_cohorts_query *q, int last, int *from, int *to, crm_error *err)
{
    if (q->months < 1 || q->months > CRM_COHORT_MONTHS_MAX)
        return invalid(err, "months", "must be an integer from 1 to 120");
    *to = q->to >= 0 ? q->to : last;
    *from = q->from >= 0 ? q->from : *to - 11;
    if (*from < 1 * 12 || *to > 9999 * 12 + 11)
        return invalid(err, q->from >= 0 ? "from" : "to",
                       "must be a month from 0001-01 to 9999-12");
    if (*from > *to)
        return invalid(err, q->from >= 0 ? "from" : "to", "must not come after 'to'");
    if (*to - *from >= CRM_COHORT_MONTHS_MAX)
        return invalid(err, q->from >= 0 ? "from" : "to",
                       "'from' to 'to' may span at most 120 months");
    return true;
}

/* The month of now (UTC), for the default range before any computation. */
static int current_month(void)
{
    char now[48];
    crm_format_timestamp(crm_wall_ms(), now);
    return atoi(now) * 12 + atoi(now + 5) - 1;
}

char *crm_metrics_cohorts(const crm_cohorts_query *q, crm_error *err)
{
    PGresult *info = crm_db_run(&cohorts_info, 0, NULL, err);
    if (info == NULL)
        return NULL;
    bool computed = PQntuples(info) == 1;
    int last = computed ? atoi(PQgetvalue(info, 0, 3)) : current_month();
    int from = 0, to = 0;
    if (!cohort_range(q, last, &from, &to, err)) {
        PQclear(info);
        return NULL;
    }
    char lo[24], hi[24], seen[24], months[16];
    month_date(from, lo);
    month_date(to, hi);
    month_date(last, seen);
    snprintf(months, sizeof months, "%d", q->months);
    crm_metrics_config cfg = metrics_config();
    const char *values[] = {lo,
                            hi,
                            months,
                            computed ? seen : NULL,
                            computed ? PQgetvalue(info, 0, 0) : NULL,
                            computed ? PQgetvalue(info, 0, 1) : NULL,
                            computed ? PQgetvalue(info, 0, 2) : cfg.currency};
    PGresult *res = crm_db_run(&cohorts_page, 7, values, err);
    PQclear(info);
    if (res == NULL)
        return NULL;
    char *text = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}

bool crm_metrics_parse_month(const char *s, int *month)
{
    bool shaped = strlen(s) == 7 && s[4] == '-';
    for (int i = 0; shaped && i < 7; i++)
        shaped = i == 4 || isdigit((unsigned char)s[i]);
    int y = shaped ? atoi(s) : 0, m = shaped ? atoi(s + 5) : 0;
    if (!shaped || y < 1 || m < 1 || m > 12)
        return false;
    *month = y * 12 + m - 1;
    return true;
}

double crm_metrics_parse_decimal(const char *s)
{
    /* strtod alone would also take hexadecimal ("0x1p-3"). */
    if ((!isdigit((unsigned char)s[0]) && s[0] != '.') ||
        strspn(s, "0123456789.eE+-") != strlen(s))
        return NAN;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    return errno == 0 && *end == '\0' && isfinite(v) ? v : NAN;
}

int crm_metrics_parse_count(const char *s, int max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return isdigit((unsigned char)s[0]) && errno == 0 && *end == '\0' && v <= max ? (int)v : 0;
}

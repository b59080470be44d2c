/*
 * metrics/base_summary.c — GET /v1/metrics/summary: the base in one page,
 * read from what the job metrics_base stored (metrics_base, the
 * historic_value distribution and metrics_daily), never from the customers
 * or their touchpoints, so that it costs a few index reads whatever the
 * base's size. openapi.yaml (MetricsSummary) defines every figure.
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "customers/internal.h"
#include "json.h"

#include <stdio.h>

/* The SQL as written: clang-format would split its strings. */
/* clang-format off */
/* An NPS object from promoter, passive and detractor counts (SQL
 * expressions; NULL counts give null members). */
#define NPS_SQL(p, pa, d)                                                                          \
    "json_build_object('score', CASE WHEN " p " + " pa " + " d " > 0 THEN 100 * (" p " - " d       \
    ")::float8 / (" p " + " pa " + " d ") END, 'promoters', " p ", 'passives', " pa                \
    ", 'detractors', " d ", 'responses', " p " + " pa " + " d ")"

/* A date column as the API's timestamp of its start (00:00 UTC). */
#define DAY_TS(col) CRM_SQL_TS("(" col ")::timestamp AT TIME ZONE 'UTC'")

#define DAILY_SUMS                                                                                 \
    "count(*) AS days, sum(revenue) AS revenue, sum(orders) AS orders,"                            \
    " sum(refunds) AS refunds, sum(unrated) AS unrated, sum(new_customers) AS new_customers,"      \
    " sum(nps_promoters) AS p, sum(nps_passives) AS pa, sum(nps_detractors) AS d"

/* $1 the period's first day, $2 its end (exclusive), $3 the currency. */
static crm_stmt summary = CRM_STMT_RO(
    "metrics_summary",
    "WITH a AS (SELECT min(day) AS first_day, max(day) AS last_day, " DAILY_SUMS
    "  FROM metrics_daily),"
    " q AS (SELECT " DAILY_SUMS ", sum(lapsed) AS lapsed FROM metrics_daily"
    "  WHERE day >= $1::date AND day < $2::date),"
    " s AS (SELECT (SELECT active FROM metrics_daily WHERE day = $1::date - 1) AS active) "
    "SELECT json_build_object("
    " 'as_of', " CRM_SQL_TS("b.as_of") ", 'computed_at', " CRM_SQL_TS("b.computed_at") ","
    " 'currency', $3::text, 'customers', b.customers,"
    " 'active_customers', b.stage_new + b.stage_active + b.stage_at_risk + b.stage_won_back,"
    " 'by_stage', CASE WHEN b.one THEN json_build_object('prospect', b.stage_prospect,"
    "  'new', b.stage_new, 'active', b.stage_active, 'at_risk', b.stage_at_risk,"
    "  'lapsed', b.stage_lapsed, 'won_back', b.stage_won_back, 'unknown', b.stage_unknown) END,"
    " 'nps_latest', " NPS_SQL("b.nps_latest_promoters", "b.nps_latest_passives",
                              "b.nps_latest_detractors") ","
    " 'value', json_build_object('customers', hv.doc->'n', 'mean_historic', hv.doc->'mean',"
    "  'median_historic', hv.doc->'median'),"
    " 'all_time', json_build_object('first_day', " DAY_TS("a.first_day") ","
    "  'last_day', " DAY_TS("a.last_day") ", 'days_recorded', a.days,"
    "  'revenue', round(a.revenue, 4), 'orders', a.orders, 'refunds', a.refunds,"
    "  'unrated', a.unrated, 'new_customers', a.new_customers,"
    "  'nps', " NPS_SQL("a.p", "a.pa", "a.d") "),"
    " 'period', json_build_object('from', " DAY_TS("$1::date") ", 'to', " DAY_TS("$2::date") ","
    "  'days', $2::date - $1::date, 'days_recorded', q.days, 'revenue', round(q.revenue, 4),"
    "  'orders', q.orders, 'refunds', q.refunds, 'unrated', q.unrated,"
    "  'new_customers', q.new_customers, 'lapsed', q.lapsed,"
    "  'nps', " NPS_SQL("q.p", "q.pa", "q.d") ","
    "  'churn', json_build_object("
    "   'rate', CASE WHEN s.active > 0 AND q.lapsed IS NOT NULL"
    "    THEN q.lapsed::float8 / s.active END,"
    "   'lapsed', q.lapsed, 'active_at_start', s.active,"
    "   'reason', CASE WHEN s.active IS NULL THEN 'no daily snapshot of the active customers on '"
    "     || to_char($1::date - 1, 'YYYY-MM-DD') || ', the day before the period'"
    "    WHEN s.active = 0 THEN 'no active customers at the start of the period'"
    "    WHEN q.lapsed IS NULL THEN 'no lapses recorded in the period' END)))::text "
    "FROM a CROSS JOIN q CROSS JOIN s LEFT JOIN metrics_base b ON true"
    " LEFT JOIN metrics_distributions hv ON hv.measure = 'historic_value'");
/* clang-format on */

json_t *crm_metrics_summary(const char *from, const char *to, crm_error *err)
{
    long long first, end;
    if (!metrics_read_period(from, to, "day", &first, &end, err))
        return NULL;
    char first_day[16], end_day[16];
    metrics_day_text(first, first_day, sizeof first_day);
    metrics_day_text(end, end_day, sizeof end_day);
    crm_metrics_config cfg = metrics_config();
    const char *values[] = {first_day, end_day, cfg.currency};
    PGresult *res = crm_db_run(&summary, 3, values, err);
    if (res == NULL)
        return NULL;
    json_t *doc = PQntuples(res) == 1 ? crm_json_load_stored(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "the summary cannot be read");
    return doc;
}

/*
 * metrics/daily.c — the base's figures day by day (metrics_daily,
 * migration 0019): written by the job metrics_base once each UTC day is
 * over, never recomputed, and read by GET /v1/metrics/timeseries (and the
 * summary, metrics/base_summary.c).
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "civil.h"
#include "clock.h"
#include "customers.h"
#include "jbuf.h"
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long long metrics_day_of(long long t_ms)
{
    return t_ms >= 0 ? t_ms / METRICS_DAY_MS : -((-t_ms + METRICS_DAY_MS - 1) / METRICS_DAY_MS);
}

void metrics_day_text(long long day, char *out, size_t size)
{
    long long y;
    int m, d;
    crm_civil_from_days(day, &y, &m, &d);
    snprintf(out, size, "%04lld-%02d-%02d", y, m, d);
}

/* ---- the snapshot ----------------------------------------------------------------- */

/* Days since 1970-01-01 of the last day written, and of the first
 * purchase, refund or feedback (read only on a first run: a scan of the
 * touchpoints). */
static crm_stmt last_written =
    CRM_STMT_RO("metrics_daily_last", "SELECT max(day) - DATE '1970-01-01' FROM metrics_daily");

static crm_stmt first_event = CRM_STMT_RO(
    "metrics_daily_first_event",
    "SELECT (min(occurred_at) AT TIME ZONE 'UTC')::date - DATE '1970-01-01' FROM touchpoints"
    " WHERE type IN ('purchase', 'refund', 'feedback')");

/* The rows for the days $1 to $2 (inclusive): $3 the reporting currency,
 * $4 the source of the days before $2 ('backfill' or 'catch_up'), $5 the
 * job. One pass over the touchpoints of those days, by day (orders,
 * refunds, revenue, NPS answers); the new customers come next
 * (count_firsts), in the same transaction. The stages come from
 * metrics_base, counted by the same job's first phase, on the last day
 * only. */
/* clang-format off */
static crm_stmt write_days = CRM_STMT(
    "metrics_daily_write",
    "WITH span AS (SELECT $1::date AS first, $2::date AS last,"
    "  $1::date::timestamp AT TIME ZONE 'UTC' AS t0,"
    "  ($2::date + 1)::timestamp AT TIME ZONE 'UTC' AS t1),"
    " by_day AS (SELECT (t.occurred_at AT TIME ZONE 'UTC')::date AS day,"
    "  count(*) FILTER (WHERE t.type = 'purchase') AS orders,"
    "  count(*) FILTER (WHERE t.type = 'refund') AS refunds,"
    "  sum(CASE WHEN t.type = 'refund' THEN -abs(t.amount) ELSE t.amount END"
    "   * CASE WHEN t.currency = $3 THEN 1 ELSE r.rate END)"
    "   FILTER (WHERE t.type <> 'feedback' AND (t.currency = $3 OR r.rate IS NOT NULL)) AS revenue,"
    "  count(*) FILTER (WHERE t.type <> 'feedback' AND t.amount IS NOT NULL"
    "   AND t.currency <> $3 AND r.rate IS NULL) AS unrated,"
    "  count(*) FILTER (WHERE t.type = 'feedback' AND t.feedback->>'scale' = 'nps'"
    "   AND (t.feedback->>'score')::int >= 9) AS promoters,"
    "  count(*) FILTER (WHERE t.type = 'feedback' AND t.feedback->>'scale' = 'nps'"
    "   AND (t.feedback->>'score')::int BETWEEN 7 AND 8) AS passives,"
    "  count(*) FILTER (WHERE t.type = 'feedback' AND t.feedback->>'scale' = 'nps'"
    "   AND (t.feedback->>'score')::int <= 6) AS detractors"
    "  FROM span, touchpoints t LEFT JOIN currency_rates r ON r.currency = t.currency"
    "  WHERE t.type IN ('purchase', 'refund', 'feedback')"
    "   AND t.occurred_at >= span.t0 AND t.occurred_at < span.t1 GROUP BY 1),"
    " lapses AS (SELECT (l.changed_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n"
    "  FROM span, customer_lifecycle l WHERE l.stage = 'lapsed'"
    "   AND l.changed_at >= span.t0 AND l.changed_at < span.t1 GROUP BY 1) "
    "INSERT INTO metrics_daily (day, source, currency, orders, refunds, revenue, unrated,"
    " new_customers, nps_promoters, nps_passives, nps_detractors, lapsed, active,"
    " stage_prospect, stage_new, stage_active, stage_at_risk, stage_lapsed, stage_won_back,"
    " stage_unknown, job_id) "
    "SELECT g.day, CASE WHEN g.day = span.last THEN 'snapshot' ELSE $4 END, $3,"
    " coalesce(d.orders, 0), coalesce(d.refunds, 0), coalesce(d.revenue, 0),"
    " coalesce(d.unrated, 0), 0, coalesce(d.promoters, 0),"
    " coalesce(d.passives, 0), coalesce(d.detractors, 0),"
    " CASE WHEN g.day = span.last OR $4 = 'catch_up' THEN coalesce(l.n, 0) END,"
    " CASE WHEN g.day = span.last THEN b.stage_new + b.stage_active + b.stage_at_risk"
    "  + b.stage_won_back END,"
    " CASE WHEN g.day = span.last THEN b.stage_prospect END,"
    " CASE WHEN g.day = span.last THEN b.stage_new END,"
    " CASE WHEN g.day = span.last THEN b.stage_active END,"
    " CASE WHEN g.day = span.last THEN b.stage_at_risk END,"
    " CASE WHEN g.day = span.last THEN b.stage_lapsed END,"
    " CASE WHEN g.day = span.last THEN b.stage_won_back END,"
    " CASE WHEN g.day = span.last THEN b.stage_unknown END, $5::bigint "
    "FROM span CROSS JOIN LATERAL (SELECT s::date AS day"
    "  FROM generate_series(span.first::timestamp, span.last::timestamp, interval '1 day') s) g"
    " LEFT JOIN by_day d ON d.day = g.day LEFT JOIN lapses l ON l.day = g.day"
    " LEFT JOIN metrics_base b ON true "
    "ON CONFLICT (day) DO NOTHING");

/* The new customers of the days $1 to $2 just written: customers whose
 * first purchase of the span falls on the day and who bought nothing
 * before it. The earlier purchase is looked up customer by customer with
 * the timeline index (a LATERAL ... LIMIT 1 keeps that plan whatever the
 * span): a few probes on a day's run, and on a backfill, where there is
 * nothing before the span, one empty probe a buyer. */
static crm_stmt count_firsts = CRM_STMT(
    "metrics_daily_firsts",
    "WITH span AS (SELECT $1::date::timestamp AT TIME ZONE 'UTC' AS t0,"
    "  ($2::date + 1)::timestamp AT TIME ZONE 'UTC' AS t1),"
    " firsts AS (SELECT (w.first AT TIME ZONE 'UTC')::date AS day, count(*) AS n"
    "  FROM span, (SELECT t.customer_id, min(t.occurred_at) AS first FROM span, touchpoints t"
    "   WHERE t.type = 'purchase' AND t.occurred_at >= span.t0 AND t.occurred_at < span.t1"
    "   GROUP BY t.customer_id) w"
    "  LEFT JOIN LATERAL (SELECT 1 AS before FROM touchpoints p"
    "   WHERE p.customer_id = w.customer_id AND p.occurred_at < span.t0 AND p.type = 'purchase'"
    "   LIMIT 1) e ON true"
    "  WHERE e.before IS NULL GROUP BY 1) "
    "UPDATE metrics_daily d SET new_customers = f.n FROM firsts f"
    " WHERE d.day = f.day AND d.day BETWEEN $1::date AND $2::date");
/* clang-format on */

/* A day number from a one-column result, or *have false for NULL. */
static bool day_from(PGresult *res, long long *day, bool *have)
{
    *have = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0);
    if (*have)
        *day = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return true;
}

/* Days before 1970 are not backfilled: a touchpoint dated then is a
 * mistake more likely than history, and would add a row a day since. */
#define FIRST_BACKFILL_DAY 0

/* Writes the rows of the days [first, last], the figures of the
 * touchpoints then the new customers, in one transaction; the job's lease
 * is renewed between the two passes. */
static bool write_span(crm_job_ctx *job, crm_conn *c, long long first, long long last,
                       const char *source, const long long progress[2], long long *written,
                       crm_error *err)
{
    crm_metrics_config cfg = metrics_config();
    char from[16], to[16], id[24];
    metrics_day_text(first, from, sizeof from);
    metrics_day_text(last, to, sizeof to);
    snprintf(id, sizeof id, "%lld", crm_job_id(job));
    const char *values[] = {from, to, cfg.currency, source, crm_job_id(job) > 0 ? id : NULL};
    PGresult *res = NULL;
    bool ok = crm_db_begin(c, err) && crm_db_command(c, "SET LOCAL work_mem = '256MB'", err) &&
              (res = crm_db_exec(c, &write_days, 5, values, err)) != NULL;
    if (ok) {
        *written = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        ok = crm_job_progress(job, NULL, progress[0], progress[1], NULL) ||
             crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
    }
    ok = ok && (res = crm_db_exec(c, &count_firsts, 2, values, err)) != NULL;
    if (ok)
        PQclear(res);
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    return ok;
}

bool metrics_daily_snapshot(crm_job_ctx *job, crm_conn *c, long long as_of_ms,
                            const long long progress[2], json_t **result, crm_error *err)
{
    *result = NULL;
    long long last = metrics_day_of(as_of_ms) - 1, first = 0, written = 0;
    bool have;
    PGresult *res = crm_db_exec(c, &last_written, 0, NULL, err);
    if (res == NULL || !day_from(res, &first, &have))
        return false;
    const char *source = "catch_up";
    if (have) {
        first += 1;
    } else {
        source = "backfill";
        if ((res = crm_db_exec(c, &first_event, 0, NULL, err)) == NULL ||
            !day_from(res, &first, &have))
            return false;
        if (!have || first > last)
            first = last;
        if (first < FIRST_BACKFILL_DAY)
            first = FIRST_BACKFILL_DAY;
    }
    if (first <= last && !write_span(job, c, first, last, source, progress, &written, err))
        return false;
    char from[16], to[16];
    metrics_day_text(first, from, sizeof from);
    metrics_day_text(last, to, sizeof to);
    *result = json_pack("{s:I, s:s?, s:s?}", "days_written", (json_int_t)written, "first_day",
                        written > 0 ? from : NULL, "last_day", written > 0 ? to : NULL);
    return *result != NULL || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
}

/* The last day recorded in metrics_daily; false with *have false when none. */
static bool metrics_daily_last_day(long long *day, bool *have, crm_error *err)
{
    PGresult *res = crm_db_run(&last_written, 0, NULL, err);
    return res != NULL && day_from(res, day, have);
}

/* ---- GET /v1/metrics/timeseries ------------------------------------------------- */

static const char *const series_measures[] = {"active", "new", "lapsed", "revenue",
                                              "orders", "nps", NULL};
static const char *const intervals[] = {"day", "week", "month", NULL};

/* The UTC day whose start is the first at or after t: a period's days are
 * those whose start lies in [from, to). */
static long long day_at_or_after(long long t_ms)
{
    long long day = metrics_day_of(t_ms);
    return day * METRICS_DAY_MS == t_ms ? day : day + 1;
}

/* Reads a period bound (NULL: absent) into a day; names it when bad. */
static bool read_bound(const char *text, const char *name, long long *day, bool *given,
                       crm_error *err)
{
    long long ms;
    *given = text != NULL;
    if (text == NULL)
        return true;
    if (!crm_rfc3339_epoch_ms(text, &ms)) {
        crm_error_add_field(err, name, "must be an RFC 3339 date-time");
        return false;
    }
    *day = day_at_or_after(ms);
    return true;
}

/* Monday-based weeks (1970-01-01 was a Thursday) and calendar months,
 * numbered from an epoch of their own. */
static long long metrics_week_of(long long day)
{
    long long d = day + 3; /* days since Monday 1969-12-29 */
    return d >= 0 ? d / 7 : -((-d + 6) / 7);
}

static long long metrics_month_of(long long day)
{
    long long y;
    int m, d;
    crm_civil_from_days(day, &y, &m, &d);
    return y * 12 + (m - 1);
}

/* The points a period [first, end) holds at an interval. */
static long long points_in(long long first, long long end, const char *interval)
{
    if (end <= first)
        return 0;
    if (strcmp(interval, "week") == 0)
        return metrics_week_of(end - 1) - metrics_week_of(first) + 1;
    if (strcmp(interval, "month") == 0)
        return metrics_month_of(end - 1) - metrics_month_of(first) + 1;
    return end - first;
}

/* The default start for a period ending (exclusive) at end: 90 days, 52
 * weeks from a Monday, 12 months from a 1st. */
static long long default_first(long long end, const char *interval)
{
    long long last = end - 1;
    if (strcmp(interval, "week") == 0)
        return (metrics_week_of(last) - 51) * 7 - 3;
    if (strcmp(interval, "month") == 0) {
        long long month = metrics_month_of(last) - 11;
        long long y = month >= 0 ? month / 12 : -((-month + 11) / 12);
        return crm_days_from_civil(y, (int)(month - y * 12) + 1, 1);
    }
    return end - 90;
}

/* The period [*first, *end): the bounds given, else to the end of the
 * last day recorded (today when none) and from the default before it. */
bool metrics_read_period(const char *from, const char *to, const char *interval, long long *first,
                         long long *end, crm_error *err)
{
    bool have_from, have_to;
    bool ok = read_bound(from, "from", first, &have_from, err);
    ok = read_bound(to, "to", end, &have_to, err) && ok;
    if (!ok)
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    if (!have_to) {
        bool have;
        if (!metrics_daily_last_day(end, &have, err))
            return false;
        *end = have ? *end + 1 : metrics_day_of(crm_wall_ms());
    }
    if (!have_from)
        *first = default_first(*end, interval);
    if (*first >= *end) {
        crm_error_add_field(err, have_from ? "from" : "to",
                            "the period [from, to) must hold the start of at least one UTC day");
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    }
    return true;
}

/* $1 the first day, $2 the end (exclusive), $3 the interval: each
 * interval's days in the period and the figures of those recorded. */
/* clang-format off */
static crm_stmt series = CRM_STMT_RO(
    "metrics_timeseries",
    "WITH p AS (SELECT greatest(g::date, $1::date) AS start,"
    "  least((g + s.step)::date, $2::date) AS stop"
    "  FROM (SELECT CASE $3 WHEN 'week' THEN interval '1 week'"
    "   WHEN 'month' THEN interval '1 month' ELSE interval '1 day' END AS step) s,"
    "  generate_series(date_trunc($3, $1::date::timestamp), ($2::date - 1)::timestamp,"
    "   s.step) g) "
    "SELECT p.start - DATE '1970-01-01', p.stop - DATE '1970-01-01', count(d.day),"
    " sum(d.new_customers), sum(d.lapsed), round(sum(d.revenue), 4), sum(d.orders),"
    " (array_agg(d.active ORDER BY d.day DESC) FILTER (WHERE d.active IS NOT NULL))[1],"
    " sum(d.nps_promoters), sum(d.nps_passives), sum(d.nps_detractors) "
    "FROM p LEFT JOIN metrics_daily d ON d.day >= p.start AND d.day < p.stop "
    "GROUP BY p.start, p.stop ORDER BY p.start");
/* clang-format on */

enum {
    S_START,
    S_STOP,
    S_DAYS,
    S_NEW,
    S_LAPSED,
    S_REVENUE,
    S_ORDERS,
    S_ACTIVE,
    S_PROMOTERS,
    S_PASSIVES,
    S_DETRACTORS
};

static json_t *integer_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null()
                                  : json_integer(strtoll(PQgetvalue(res, r, c), NULL, 10));
}

static json_t *day_timestamp(long long day)
{
    return crm_json_timestamp(day * METRICS_DAY_MS);
}

/* NPS = 100 (promoters - detractors) / answers, null without answers. */
static json_t *nps_score(long long promoters, long long passives, long long detractors)
{
    long long answers = promoters + passives + detractors;
    return answers > 0 ? json_real(100.0 * (double)(promoters - detractors) / (double)answers)
                       : json_null();
}

static json_t *point(const PGresult *res, int r, const char *measure)
{
    long long start = strtoll(PQgetvalue(res, r, S_START), NULL, 10);
    long long stop = strtoll(PQgetvalue(res, r, S_STOP), NULL, 10);
    json_t *p = json_pack("{s:o, s:o, s:I, s:o}", "start", day_timestamp(start), "end",
                          day_timestamp(stop), "days", (json_int_t)(stop - start), "days_recorded",
                          integer_or_null(res, r, S_DAYS));
    if (p == NULL)
        return NULL;
    json_t *value;
    if (strcmp(measure, "nps") == 0) {
        long long a[3] = {0, 0, 0};
        bool any = !PQgetisnull(res, r, S_PROMOTERS);
        for (int i = 0; any && i < 3; i++)
            a[i] = strtoll(PQgetvalue(res, r, S_PROMOTERS + i), NULL, 10);
        value = any ? nps_score(a[0], a[1], a[2]) : json_null();
        json_object_set_new(p, "promoters", any ? json_integer(a[0]) : json_null());
        json_object_set_new(p, "passives", any ? json_integer(a[1]) : json_null());
        json_object_set_new(p, "detractors", any ? json_integer(a[2]) : json_null());
        json_object_set_new(p, "responses", any ? json_integer(a[0] + a[1] + a[2]) : json_null());
    } else if (strcmp(measure, "revenue") == 0) {
        value = PQgetisnull(res, r, S_REVENUE)
                    ? json_null()
                    : json_real(strtod(PQgetvalue(res, r, S_REVENUE), NULL));
    } else {
        int c = strcmp(measure, "new") == 0      ? S_NEW
                : strcmp(measure, "lapsed") == 0 ? S_LAPSED
                : strcmp(measure, "orders") == 0 ? S_ORDERS
                                                 : S_ACTIVE;
        value = integer_or_null(res, r, c);
    }
    json_object_set_new(p, "value", value);
    return p;
}

json_t *crm_metrics_timeseries(const crm_timeseries_request *r, crm_error *err)
{
    bool ok = true;
    if (r->measure == NULL || !crm_one_of(r->measure, series_measures)) {
        crm_error_add_field(err, "measure",
                            r->measure == NULL
                                ? "is required"
                                : "must be active, new, lapsed, revenue, orders or nps");
        ok = false;
    }
    const char *interval = r->interval != NULL ? r->interval : "day";
    if (!crm_one_of(interval, intervals)) {
        crm_error_add_field(err, "interval", "must be day, week or month");
        ok = false;
    }
    long long first, end;
    if (!ok) {
        /* The bounds' own faults are named too. */
        bool given;
        read_bound(r->from, "from", &first, &given, err);
        read_bound(r->to, "to", &end, &given, err);
        crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
        return NULL;
    }
    if (!metrics_read_period(r->from, r->to, interval, &first, &end, err))
        return NULL;
    long long points = points_in(first, end, interval);
    if (points > CRM_METRICS_MAX_POINTS) {
        char message[160];
        snprintf(message, sizeof message,
                 "the period holds %lld points of a %s; at most %d: shorten it or take a longer "
                 "interval",
                 points, interval, CRM_METRICS_MAX_POINTS);
        crm_error_add_field(err, "from", message);
        crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
        return NULL;
    }
    char from_day[16], end_day[16];
    metrics_day_text(first, from_day, sizeof from_day);
    metrics_day_text(end, end_day, sizeof end_day);
    const char *values[] = {from_day, end_day, interval};
    PGresult *res = crm_db_run(&series, 3, values, err);
    if (res == NULL)
        return NULL;
    crm_metrics_config cfg = metrics_config();
    json_t *list = json_array();
    for (int i = 0; list != NULL && i < PQntuples(res); i++)
        if (json_array_append_new(list, point(res, i, r->measure)) != 0) {
            json_decref(list);
            list = NULL;
        }
    PQclear(res);
    json_t *doc = list == NULL
                      ? NULL
                      : json_pack("{s:s, s:s, s:o, s:o, s:s, s:o}", "measure", r->measure,
                                  "interval", interval, "from", day_timestamp(first), "to",
                                  day_timestamp(end), "currency", cfg.currency, "points", list);
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return doc;
}

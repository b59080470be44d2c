/*
 * campaigns/results.c — what a campaign did (campaigns.h, migration 0027):
 * the attribution of responses, made once by a follower of the
 * touchpoints' change feed, and each campaign's results, kept in
 * campaign_results and recomputed by the upkeep when they moved (never per
 * read).
 *
 * The follower (one process at a time: its place's row is claimed FOR
 * UPDATE SKIP LOCKED) reads the touchpoints written after its place and
 * older than every transaction still running (pg_snapshot_xmin, as the
 * metrics' follower and the sync feed do: one that commits late is never
 * passed over), and attributes each, in the statement that moves nothing
 * else, to the campaign whose decision about its customer came last before
 * it, among those for which it is a response (migration 0027); the
 * campaigns it attributed to are marked dirty, and its place moves, in the
 * same transaction.
 *
 * The results of a campaign compare its contacted targets (the treatment)
 * with its control targets held out (campaigns/stats.h gives every
 * formula): per group the customers, those with at least one response
 * (responders), and the revenue of their responses (reporting currency);
 * the audience, what is still pending, the excluded by reason; cost and
 * ROI; and the same response figures day by day (UTC) since the
 * execution.
 */
#include "campaigns.h"
#include "campaigns/stats.h"
#include "clock.h"
#include "jbuf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAYS_MAX 400

static char reporting_currency[4] = "EUR";

void crm_campaigns_set_currency(const char *code)
{
    snprintf(reporting_currency, sizeof reporting_currency, "%s", code);
}

const char *crm_campaigns_currency(void)
{
    return reporting_currency;
}

/* ---- the follower --------------------------------------------------------------- */

static crm_stmt follow_place =
    CRM_STMT("campaign_follow_place",
             "SELECT tp_xid::text, tp_seq FROM campaign_follow FOR UPDATE SKIP LOCKED");

static crm_stmt follow_changes =
    CRM_STMT("campaign_follow_changes",
             "SELECT id, change_xid::text AS place_xid, change_seq FROM touchpoints"
             " WHERE (change_xid, change_seq) > ($1::xid8, $2::bigint)"
             " AND change_xid < pg_snapshot_xmin(pg_current_snapshot())"
             " ORDER BY change_xid, change_seq LIMIT $3::int");

/* The touchpoints $1 attributed ($2 the reporting currency); the campaigns
 * that got responses marked dirty. */
static crm_stmt attribute = CRM_STMT(
    "campaign_attribute",
    "WITH a AS (INSERT INTO campaign_responses (touchpoint_id, campaign_id, customer_id, grp,"
    "  type, revenue, unrated, occurred_at)"
    " SELECT DISTINCT ON (t.id) t.id, g.campaign_id, t.customer_id, g.grp, t.type,"
    "  CASE WHEN t.amount IS NULL THEN 0"
    "   ELSE (CASE WHEN t.type = 'refund' THEN -abs(t.amount) ELSE t.amount END)"
    "    * CASE WHEN t.currency = $2 THEN 1 ELSE coalesce(r.rate, 0) END END,"
    "  t.amount IS NOT NULL AND t.currency <> $2 AND r.rate IS NULL, t.occurred_at"
    " FROM touchpoints t"
    " JOIN campaign_targets g ON g.customer_id = t.customer_id"
    "  AND g.state IN ('contacted', 'control')"
    " JOIN campaigns k ON k.id = g.campaign_id AND t.type = ANY (k.response_types)"
    " LEFT JOIN currency_rates r ON r.currency = t.currency"
    " WHERE t.id = ANY ($1::bigint[]) AND t.source <> 'crmd:campaign'"
    "  AND t.occurred_at >= g.decided_at"
    "  AND t.occurred_at < g.decided_at + make_interval(days => k.attribution_days)"
    " ORDER BY t.id, g.decided_at DESC, g.campaign_id DESC"
    " ON CONFLICT (touchpoint_id) DO NOTHING RETURNING campaign_id)"
    " INSERT INTO campaign_results (campaign_id) SELECT DISTINCT campaign_id FROM a"
    " ON CONFLICT (campaign_id) DO UPDATE SET dirty = true");

static crm_stmt follow_move = CRM_STMT(
    "campaign_follow_move", "UPDATE campaign_follow SET tp_xid = $1::xid8, tp_seq = $2::bigint");

bool crm_campaigns_follow(crm_conn *c, const char *currency, int limit, int *seen, crm_error *err)
{
    *seen = 0;
    if (!crm_db_begin(c, err))
        return false;
    PGresult *place = crm_db_exec(c, &follow_place, 0, NULL, err), *changes = NULL;
    bool ok = place != NULL;
    if (ok && PQntuples(place) == 1) { /* else another process follows */
        char lim[16];
        snprintf(lim, sizeof lim, "%d", limit);
        const char *p[] = {PQgetvalue(place, 0, 0), PQgetvalue(place, 0, 1), lim};
        changes = crm_db_exec(c, &follow_changes, 3, p, err);
        ok = changes != NULL;
        int n = ok ? PQntuples(changes) : 0;
        crm_bytebuf ids;
        crm_bytebuf_init(&ids);
        crm_bytebuf_put_char(&ids, '{');
        for (int i = 0; i < n; i++) {
            if (i > 0)
                crm_bytebuf_put_char(&ids, ',');
            const char *v = PQgetvalue(changes, i, 0);
            crm_bytebuf_put(&ids, v, strlen(v));
        }
        crm_bytebuf_put_char(&ids, '}');
        char *list = crm_bytebuf_take(&ids, NULL);
        if (ok && list == NULL)
            ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        if (ok && n > 0) {
            const char *ap[] = {list, currency};
            PGresult *res = crm_db_exec(c, &attribute, 2, ap, err);
            ok = res != NULL;
            PQclear(res);
            const char *mp[] = {PQgetvalue(changes, n - 1, 1), PQgetvalue(changes, n - 1, 2)};
            res = ok ? crm_db_exec(c, &follow_move, 2, mp, err) : NULL;
            ok = res != NULL;
            PQclear(res);
            *seen = n;
        }
        free(list);
    }
    PQclear(changes);
    PQclear(place);
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    return ok;
}

/* ---- the results ---------------------------------------------------------------- */

static crm_stmt campaign_facts = CRM_STMT_RO(
    "campaign_results_facts",
    "SELECT code, control_share::float8, cost_per_contact::text, fixed_cost::text, currency,"
    " cost_per_contact::float8, fixed_cost::float8, " CRM_SQL_TS(
        "executed_at") ","
                       " attribution_days FROM campaigns WHERE id = $1");

/* Per state, group and reason: targets, responders, revenue, its sum of
 * squares per customer, responses, unrated responses; and a row "pending"
 * of what is still to be decided (the execution's chunks left). */
static crm_stmt group_totals = CRM_STMT_RO(
    "campaign_results_groups",
    "SELECT g.state, g.grp, coalesce(g.reason, ''), count(*), count(r.customer_id),"
    " coalesce(sum(r.revenue), 0)::float8, coalesce(sum(r.revenue * r.revenue), 0)::float8,"
    " coalesce(sum(r.n), 0), coalesce(sum(r.unrated), 0)"
    " FROM campaign_targets g LEFT JOIN (SELECT customer_id, sum(revenue) AS revenue,"
    "  count(*) AS n, count(*) FILTER (WHERE unrated) AS unrated FROM campaign_responses"
    "  WHERE campaign_id = $1 GROUP BY customer_id) r ON r.customer_id = g.customer_id"
    " WHERE g.campaign_id = $1 GROUP BY 1, 2, 3"
    " UNION ALL SELECT 'pending', '', '', sum(cardinality(customer_ids)), 0, 0, 0, 0, 0"
    " FROM campaign_audience WHERE campaign_id = $1 HAVING count(*) > 0");

/* Day by day (UTC) since the execution, to the end of attribution or
 * today: the responders and the revenue of each group so far. */
static crm_stmt daily = CRM_STMT_RO(
    "campaign_results_daily",
    "WITH f AS (SELECT grp, customer_id, min((occurred_at AT TIME ZONE 'UTC')::date) AS day"
    "  FROM campaign_responses WHERE campaign_id = $1 GROUP BY grp, customer_id),"
    " v AS (SELECT grp, (occurred_at AT TIME ZONE 'UTC')::date AS day, sum(revenue) AS revenue"
    "  FROM campaign_responses WHERE campaign_id = $1 GROUP BY 1, 2),"
    " d AS (SELECT generate_series((k.executed_at AT TIME ZONE 'UTC')::date,"
    "  least((now() AT TIME ZONE 'UTC')::date, ((coalesce(k.ends_at, now())"
    "  + make_interval(days => k.attribution_days)) AT TIME ZONE 'UTC')::date),"
    "  interval '1 day')::date AS day FROM campaigns k WHERE k.id = $1"
    "  AND k.executed_at IS NOT NULL)"
    " SELECT d.day::text,"
    " (SELECT count(*) FROM f WHERE f.grp = 'treatment' AND f.day <= d.day),"
    " (SELECT count(*) FROM f WHERE f.grp = 'control' AND f.day <= d.day),"
    " (SELECT coalesce(sum(v.revenue), 0) FROM v WHERE v.grp = 'treatment' AND v.day <= d.day)"
    "  ::float8,"
    " (SELECT coalesce(sum(v.revenue), 0) FROM v WHERE v.grp = 'control' AND v.day <= d.day)"
    "  ::float8"
    " FROM d ORDER BY d.day LIMIT 400"); /* DAYS_MAX */

static const char *const reasons[] = {"not_active", "no_consent", "consent_revoked", "cap_reached",
                                      "quiet_hours"};
#define NREASONS (sizeof reasons / sizeof reasons[0])

typedef struct totals {
    long long audience, pending, contacted, control, excluded, responses, unrated;
    long long by_reason[NREASONS];
    crm_campaign_stats_input in;
} totals;

static void add_row(totals *t, const PGresult *res, int r)
{
    const char *state = PQgetvalue(res, r, 0), *grp = PQgetvalue(res, r, 1),
               *reason = PQgetvalue(res, r, 2);
    long long n = atoll(PQgetvalue(res, r, 3)), responders = atoll(PQgetvalue(res, r, 4));
    double revenue = strtod(PQgetvalue(res, r, 5), NULL), sq = strtod(PQgetvalue(res, r, 6), NULL);
    t->audience += n;
    if (strcmp(state, "pending") == 0) {
        t->pending += n;
    } else if (strcmp(state, "excluded") == 0) {
        t->excluded += n;
        for (size_t i = 0; i < NREASONS; i++)
            if (strcmp(reason, reasons[i]) == 0)
                t->by_reason[i] += n;
    } else {
        crm_campaign_group_counts *g =
            strcmp(grp, "control") == 0 ? &t->in.control : &t->in.treatment;
        if (strcmp(grp, "control") == 0)
            t->control += n;
        else
            t->contacted += n;
        g->customers += n;
        g->responders += responders;
        g->revenue += revenue;
        g->revenue_sq += sq;
        t->responses += atoll(PQgetvalue(res, r, 7));
        t->unrated += atoll(PQgetvalue(res, r, 8));
    }
}

static void write_number_or_null(crm_jbuf *b, const char *key, double v)
{
    crm_jbuf_key(b, key);
    if (isfinite(v))
        crm_jbuf_real(b, v);
    else
        crm_jbuf_null(b);
}

/* The day entries: each day's figures as the results' (no revenue
 * interval: the sums of squares are not kept per day). */
static void write_daily(crm_jbuf *b, const PGresult *res, const totals *t)
{
    crm_jbuf_key(b, "daily");
    crm_jbuf_begin_array(b);
    for (int r = 0; r < PQntuples(res); r++) {
        crm_campaign_stats_input in = t->in;
        in.treatment.responders = atoll(PQgetvalue(res, r, 1));
        in.control.responders = atoll(PQgetvalue(res, r, 2));
        in.treatment.revenue = strtod(PQgetvalue(res, r, 3), NULL);
        in.control.revenue = strtod(PQgetvalue(res, r, 4), NULL);
        in.treatment.revenue_sq = in.control.revenue_sq = 0; /* not used below */
        crm_campaign_stats st;
        bool ok = crm_campaign_stats_compute(&in, &st);
        crm_jbuf_begin_object(b);
        crm_jbuf_key(b, "day");
        crm_jbuf_cstring(b, PQgetvalue(res, r, 0));
        crm_jbuf_key(b, "treatment_responders");
        crm_jbuf_int(b, in.treatment.responders);
        crm_jbuf_key(b, "control_responders");
        crm_jbuf_int(b, in.control.responders);
        write_number_or_null(b, "treatment_response_rate", ok ? st.treatment.response_rate : NAN);
        write_number_or_null(b, "control_response_rate", ok ? st.control.response_rate : NAN);
        write_number_or_null(b, "treatment_revenue", in.treatment.revenue);
        write_number_or_null(b, "control_revenue", in.control.revenue);
        write_number_or_null(b, "uplift", ok ? st.uplift : NAN);
        crm_jbuf_key(b, "newcombe");
        crm_jbuf_begin_object(b);
        write_number_or_null(b, "low", ok ? st.newcombe.low : NAN);
        write_number_or_null(b, "high", ok ? st.newcombe.high : NAN);
        crm_jbuf_end_object(b);
        write_number_or_null(b, "p_value", ok ? st.p_value : NAN);
        write_number_or_null(b, "relative_lift", ok ? st.relative_lift : NAN);
        crm_jbuf_end_object(b);
    }
    crm_jbuf_end_array(b);
}

/* The results of campaign id as JSON text (the caller frees it); NULL with
 * err. */
static char *compute(crm_conn *c, long long id, const char *currency, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *p[] = {idbuf};
    PGresult *facts = crm_db_exec(c, &campaign_facts, 1, p, err);
    if (facts == NULL)
        return NULL;
    if (PQntuples(facts) != 1) {
        PQclear(facts);
        crm_error_set(err, CRM_E_NOT_FOUND, "no campaign with this id");
        return NULL;
    }
    PGresult *groups = crm_db_exec(c, &group_totals, 1, p, err);
    PGresult *days = groups != NULL ? crm_db_exec(c, &daily, 1, p, err) : NULL;
    char *out = NULL;
    if (days != NULL) {
        totals t = {.in.control_share = strtod(PQgetvalue(facts, 0, 1), NULL)};
        for (int r = 0; r < PQntuples(groups); r++)
            add_row(&t, groups, r);
        crm_campaign_stats st;
        crm_campaign_stats_compute(&t.in, &st);
        crm_jbuf b;
        crm_jbuf_init(&b);
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "campaign_id");
        crm_jbuf_int(&b, id);
        crm_jbuf_key(&b, "code");
        crm_jbuf_cstring(&b, PQgetvalue(facts, 0, 0));
        crm_jbuf_key(&b, "executed_at");
        crm_jbuf_cstring(&b, PQgetisnull(facts, 0, 7) ? NULL : PQgetvalue(facts, 0, 7));
        crm_jbuf_key(&b, "audience");
        crm_jbuf_int(&b, t.audience);
        crm_jbuf_key(&b, "pending");
        crm_jbuf_int(&b, t.pending);
        crm_jbuf_key(&b, "contacted");
        crm_jbuf_int(&b, t.contacted);
        crm_jbuf_key(&b, "control");
        crm_jbuf_int(&b, t.control);
        crm_jbuf_key(&b, "excluded");
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "total");
        crm_jbuf_int(&b, t.excluded);
        for (size_t i = 0; i < NREASONS; i++) {
            crm_jbuf_key(&b, reasons[i]);
            crm_jbuf_int(&b, t.by_reason[i]);
        }
        crm_jbuf_end_object(&b);
        crm_jbuf_key(&b, "responses");
        crm_jbuf_int(&b, t.responses);
        crm_jbuf_key(&b, "unrated_responses");
        crm_jbuf_int(&b, t.unrated);
        crm_jbuf_key(&b, "revenue_currency");
        crm_jbuf_cstring(&b, currency);
        crm_jbuf_key(&b, "statistics");
        crm_campaign_stats_write_json(&b, &st);
        /* Cost in the campaign's currency; ROI = (incremental revenue -
         * cost) / cost, incremental revenue = revenue per customer uplift x
         * contacted, when the cost is in the reporting currency and above 0. */
        double per = strtod(PQgetvalue(facts, 0, 5), NULL),
               fixed = strtod(PQgetvalue(facts, 0, 6), NULL);
        double cost = per * (double)t.contacted + fixed;
        bool same = !PQgetisnull(facts, 0, 4) && strcmp(PQgetvalue(facts, 0, 4), currency) == 0;
        crm_jbuf_key(&b, "cost");
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "currency");
        crm_jbuf_cstring(&b, PQgetisnull(facts, 0, 4) ? NULL : PQgetvalue(facts, 0, 4));
        crm_jbuf_key(&b, "per_contact");
        crm_jbuf_cstring(&b, PQgetvalue(facts, 0, 2));
        crm_jbuf_key(&b, "fixed");
        crm_jbuf_cstring(&b, PQgetvalue(facts, 0, 3));
        write_number_or_null(&b, "total", cost);
        crm_jbuf_end_object(&b);
        double incremental = st.revenue_uplift * (double)t.contacted;
        write_number_or_null(&b, "incremental_revenue", incremental);
        write_number_or_null(&b, "roi", same && cost > 0 ? (incremental - cost) / cost : NAN);
        write_daily(&b, days, &t);
        crm_jbuf_end_object(&b);
        out = crm_jbuf_take(&b, NULL);
        if (out == NULL)
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    PQclear(days);
    PQclear(groups);
    PQclear(facts);
    return out;
}

/* A campaign whose results moved, claimed and marked clean in a short
 * transaction of its own, then computed without a lock (an execution
 * marking it again meanwhile does not wait: the mark makes it dirty
 * again), and stored unless a later computation was stored first. Each
 * campaign at most once every 2 s, or every ten times its last
 * computation's length when that is longer: a large campaign deciding a
 * batch a second does not spend its time recomputing. */
static crm_stmt dirty_claim = CRM_STMT(
    "campaign_results_dirty",
    "UPDATE campaign_results SET dirty = false WHERE campaign_id = (SELECT campaign_id FROM"
    " campaign_results WHERE dirty AND (computed_at IS NULL OR computed_at < now()"
    " - make_interval(secs => greatest(2, compute_ms / 100.0)))"
    " ORDER BY campaign_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING campaign_id, (extract(epoch FROM clock_timestamp()) * 1000)::bigint");

static crm_stmt results_store = CRM_STMT(
    "campaign_results_store",
    "INSERT INTO campaign_results AS r (campaign_id, results, computed_at, compute_ms, dirty)"
    " VALUES ($1, $2::jsonb, 'epoch'::timestamptz + $3::bigint * interval '1 millisecond',"
    " $4::int, false) ON CONFLICT (campaign_id) DO UPDATE SET results = excluded.results,"
    " computed_at = excluded.computed_at, compute_ms = excluded.compute_ms"
    " WHERE r.computed_at IS NULL OR r.computed_at <= excluded.computed_at");

static crm_stmt results_redirty = CRM_STMT(
    "campaign_results_redirty", "UPDATE campaign_results SET dirty = true WHERE campaign_id = $1");

/* Computes campaign id's results (started at started_ms) and stores them. */
static bool store(crm_conn *c, long long id, long long started_ms, const char *currency,
                  crm_error *err)
{
    char *text = compute(c, id, currency, err);
    if (text == NULL)
        return false;
    long long took = crm_wall_ms() - started_ms;
    char idbuf[24], at[24], ms[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(at, sizeof at, "%lld", started_ms);
    snprintf(ms, sizeof ms, "%lld", took < 0 ? 0 : took > 86400000 ? 86400000 : took);
    const char *p[] = {idbuf, text, at, ms};
    PGresult *res = crm_db_exec(c, &results_store, 4, p, err);
    free(text);
    PQclear(res);
    return res != NULL;
}

bool crm_campaigns_refresh_results(crm_conn *c, const char *currency, int max, int *done,
                                   crm_error *err)
{
    *done = 0;
    for (int i = 0; i < max; i++) {
        PGresult *res = crm_db_exec(c, &dirty_claim, 0, NULL, err);
        if (res == NULL)
            return false;
        if (PQntuples(res) != 1) {
            PQclear(res);
            break;
        }
        long long id = atoll(PQgetvalue(res, 0, 0)), started = atoll(PQgetvalue(res, 0, 1));
        PQclear(res);
        if (!store(c, id, started, currency, err)) {
            /* Dirty again, so that it is tried once more. */
            char idbuf[24];
            snprintf(idbuf, sizeof idbuf, "%lld", id);
            const char *p[] = {idbuf};
            crm_error ignored = CRM_ERROR_INIT;
            PQclear(crm_db_exec(c, &results_redirty, 1, p, &ignored));
            crm_error_clear(&ignored);
            return false;
        }
        ++*done;
    }
    return true;
}

static crm_stmt results_read = CRM_STMT_RO(
    "campaign_results_read",
    "SELECT k.id, r.results::text, " CRM_SQL_TS(
        "r.computed_at") ", r.dirty"
                         " FROM campaigns k LEFT JOIN campaign_results r ON r.campaign_id = k.id"
                         " WHERE k.id = $1 AND k.deleted_at IS NULL");

/* The stored document of a result of results_read, with when it was
 * computed and whether it is current (nothing moved since); NULL with
 * *need_compute when none was computed yet, or with err. */
static char *render_stored(const PGresult *res, size_t *len, bool *need_compute, crm_error *err)
{
    *need_compute = false;
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no campaign with this id");
        return NULL;
    }
    if (PQgetisnull(res, 0, 1)) {
        *need_compute = true;
        return NULL;
    }
    const char *stored = PQgetvalue(res, 0, 1);
    size_t n = strlen(stored);
    crm_bytebuf b;
    crm_bytebuf_init(&b);
    if (n >= 2 && stored[n - 1] == '}') {
        crm_bytebuf_put(&b, stored, n - 1);
        crm_bytebuf_put(&b, ", \"computed_at\": \"", 18);
        crm_bytebuf_put(&b, PQgetvalue(res, 0, 2), strlen(PQgetvalue(res, 0, 2)));
        crm_bytebuf_put(&b, "\", \"current\": ", 14);
        bool current = PQgetvalue(res, 0, 3)[0] != 't';
        crm_bytebuf_put(&b, current ? "true}" : "false}", current ? 5 : 6);
    }
    char *out = crm_bytebuf_take(&b, len);
    if (out == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "the stored results could not be read");
    return out;
}

void crm_campaign_results_query(long long id, crm_query *q)
{
    crm_query_init(q, &results_read);
    crm_query_add_int(q, id);
}

char *crm_campaign_results_render(const PGresult *res, size_t *len, bool *need_compute,
                                  crm_error *err)
{
    return render_stored(res, len, need_compute, err);
}

char *crm_campaign_results(long long id, const char *currency, size_t *len, crm_error *err)
{
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    crm_query q;
    crm_campaign_results_query(id, &q);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    char *out = NULL;
    bool need = false;
    if (res != NULL)
        out = render_stored(res, len, &need, err);
    if (need) { /* never computed: now, once (later reads find it stored) */
        PQclear(res);
        res = store(c, id, crm_wall_ms(), currency, err)
                  ? crm_db_exec(c, q.stmt, q.nparams, q.values, err)
                  : NULL;
        if (res != NULL)
            out = render_stored(res, len, &need, err);
    }
    PQclear(res);
    crm_db_release(c);
    return out;
}

static crm_stmt mark_dirty =
    CRM_STMT("campaign_results_mark", "INSERT INTO campaign_results (campaign_id) VALUES ($1)"
                                      " ON CONFLICT (campaign_id) DO UPDATE SET dirty = true");

bool crm_campaign_results_moved(crm_conn *c, long long id, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *p[] = {idbuf};
    PGresult *res = crm_db_exec(c, &mark_dirty, 1, p, err);
    PQclear(res);
    return res != NULL;
}

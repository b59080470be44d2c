/*
 * test_metrics.c — the full recompute (lib/metrics/) on a database of its
 * own, so that the whole base is the fixture below and every quintile can be
 * worked out by hand.
 *
 * The fixture, observed as of 2026-01-01T00:00:00Z with a 365-day window
 * (from 2025-01-01T00:00:00Z), EUR the reporting currency, USD at 0.5:
 *   A  purchases 2025-01-10 100, 2025-06-01 50 and 30 (one day),
 *      2025-12-01 120 EUR; a refund of -20 EUR on 2025-12-05
 *   B  one purchase 2025-03-01 of 40 USD (20 EUR)
 *   C  a purchase 2024-06-01 of 200 EUR (before the window); one of
 *      10 GBP (no rate: left out, counted) on 2025-09-01
 *   D  only a page view
 *   E  only a purchase after as_of (2026-02-01): none for this as_of
 *   F  purchases 2025-11-01 and 2025-11-15 of 500 EUR each
 *   G  one purchase 2025-07-01 of 20 EUR
 * Worked out (days between UTC midnights):
 *        purchases historic AOV recency freq monetary  x  t_x   T  m
 *   A        4       280    75     31     4     280    2  325 356 100
 *   B        1        20    20    306     1      20    0    0 306  -
 *   C        1       200   200    579     0       0    0    0 579  -
 *   F        2      1000   500     47     2    1000    1   14  61 500
 *   G        1        20    20    184     1      20    0    0 184  -
 * RFM over the 5 who purchased, score = ceil(5 k / 5) = k, k the number of
 * customers whose value is at most this one's (recency reversed):
 *   R: C 579 -> 1, B 306 -> 2, G 184 -> 3, F 47 -> 4, A 31 -> 5
 *   F: C 0 -> 1, B and G 1 -> 3 (tied: k = 3), F 2 -> 4, A 4 -> 5
 *   M: C 0 -> 1, B and G 20 -> 3, A 280 -> 4, F 1000 -> 5
 * cells A 554, B 233, C 111, F 445, G 333; groups A and F champions,
 * B at_risk, C hibernating, G needs_attention.
 */
#include "btyd.h"
#include "clock.h"
#include "db.h"
#include "embedded.h"
#include "jbuf.h"
#include "jobs.h"
#include "customer_metrics.h"
#include "customer_merge.h"
#include "customer_privacy.h"
#include "migrate.h"
#include "support.h"
#include "suites.h"

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AS_OF "2026-01-01T00:00:00Z"
#define AS_OF_MS 1767225600000LL
#define TS_TEXT(col) CRM_SQL_TS(col)

static unit_own_db own;
static char *conninfo;
static PGconn *db;

static void fresh_database(void)
{
    unit_own_db_start(&own, "unit_metrics");
    conninfo = own.conninfo;
    db = own.db;
    crm_jobs_register(&crm_metrics_recompute_kind);
    crm_metrics_config m = crm_metrics_defaults();
    crm_metrics_configure(&m);
}

static void drop_database(void)
{
    unit_own_db_stop(&own);
    conninfo = NULL;
    db = NULL;
}

/* A customer named name; its id. */
static long long customer(const char *name)
{
    const char *params[] = {name};
    return unit_sql_long(db, "INSERT INTO customers (first_name) VALUES ($1) RETURNING id", 1,
                         params);
}

/* A touchpoint of customer id: type, direction, at when (RFC 3339), amount
 * in currency and feedback JSON (NULL: none). */
static void insert_touchpoint(long long id, const char *type, const char *direction,
                              const char *when, const char *amount, const char *currency,
                              const char *feedback)
{
    static int serial;
    char idtext[24], event[32];
    snprintf(idtext, sizeof idtext, "%lld", id);
    snprintf(event, sizeof event, "e%d", ++serial);
    const char *params[] = {idtext, type, direction, when, event, amount, currency, feedback};
    PQclear(unit_sql(db,
                     "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at,"
                     " source, event_id, amount, currency, feedback) VALUES ($1, 'web', $2, $3,"
                     " $4, 'unit', $5, $6, $7, $8::jsonb)",
                     8, params));
}

/* An inbound touchpoint of customer id: type at when, amount in currency. */
static void touchpoint(long long id, const char *type, const char *when, const char *amount,
                       const char *currency)
{
    insert_touchpoint(id, type, "inbound", when, amount, currency, NULL);
}

typedef struct fixture {
    long long a, b, c, d, e, f, g;
} fixture;

static fixture make_fixture(void)
{
    fixture x = {customer("A"), customer("B"), customer("C"), customer("D"),
                 customer("E"), customer("F"), customer("G")};
    PQclear(unit_sql(db, "INSERT INTO currency_rates (currency, rate) VALUES ('USD', 0.5)", 0,
                     NULL));
    touchpoint(x.a, "purchase", "2025-01-10T00:00:00Z", "100", "EUR");
    touchpoint(x.a, "purchase", "2025-06-01T09:00:00Z", "50", "EUR");
    touchpoint(x.a, "purchase", "2025-06-01T17:00:00Z", "30", "EUR");
    touchpoint(x.a, "purchase", "2025-12-01T00:00:00Z", "120", "EUR");
    touchpoint(x.a, "refund", "2025-12-05T00:00:00Z", "-20", "EUR");
    touchpoint(x.b, "purchase", "2025-03-01T00:00:00Z", "40", "USD");
    touchpoint(x.c, "purchase", "2024-06-01T00:00:00Z", "200", "EUR");
    touchpoint(x.c, "purchase", "2025-09-01T00:00:00Z", "10", "GBP");
    touchpoint(x.d, "page_view", "2025-05-01T00:00:00Z", NULL, NULL);
    touchpoint(x.e, "purchase", "2026-02-01T00:00:00Z", "70", "EUR");
    touchpoint(x.f, "purchase", "2025-11-01T00:00:00Z", "500", "EUR");
    touchpoint(x.f, "purchase", "2025-11-15T00:00:00Z", "500", "EUR");
    touchpoint(x.g, "purchase", "2025-07-01T00:00:00Z", "20", "EUR");
    return x;
}

/* Queues a recompute as of as_ms and runs it here; returns the job. */
static json_t *recompute(long long as_ms)
{
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    json_t *job = crm_metrics_recompute_submit(as_ms, 0, &running, &err);
    ck_assert_msg(job != NULL, "submit: %s", err.detail);
    return unit_run_queued_job(job, conninfo);
}

/* The customer's metrics document. */
static json_t *metrics_of(long long id)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *m = crm_metrics_customer(id, &err);
    ck_assert_msg(m != NULL, "metrics of %lld: %s", id, err.detail);
    return m;
}

static double num(const json_t *doc, const char *group, const char *key)
{
    const json_t *v = json_object_get(group ? json_object_get(doc, group) : doc, key);
    ck_assert_msg(json_is_number(v), "%s.%s is not a number", group ? group : "", key);
    return json_number_value(v);
}

static bool is_null(const json_t *doc, const char *group, const char *key)
{
    return json_is_null(json_object_get(json_object_get(doc, group), key));
}

static const char *str(const json_t *doc, const char *group, const char *key)
{
    const char *s = json_string_value(json_object_get(json_object_get(doc, group), key));
    ck_assert_msg(s != NULL, "%s.%s is not a string", group, key);
    return s;
}

typedef struct expected {
    int purchases, unrated;
    double historic, aov, recency;
    int frequency;
    double monetary;
    int x, t_x, age;
    double m; /* NAN: none */
    const char *cell, *group;
} expected;

static void check_customer(long long id, const expected *e)
{
    json_t *m = metrics_of(id);
    ck_assert_str_eq(json_string_value(json_object_get(m, "as_of")), "2026-01-01T00:00:00.000Z");
    ck_assert_int_eq((int)num(m, "value", "purchases"), e->purchases);
    ck_assert_int_eq((int)num(m, "value", "unrated"), e->unrated);
    ck_assert_double_eq_tol(num(m, "value", "historic"), e->historic, 1e-9);
    ck_assert_double_eq_tol(num(m, "value", "average_order"), e->aov, 1e-9);
    ck_assert_double_eq_tol(num(m, "rfm", "recency_days"), e->recency, 1e-9);
    ck_assert_int_eq((int)num(m, "rfm", "frequency"), e->frequency);
    ck_assert_double_eq_tol(num(m, "rfm", "monetary"), e->monetary, 1e-9);
    ck_assert_int_eq((int)num(m, "summary", "x"), e->x);
    ck_assert_int_eq((int)num(m, "summary", "t_x"), e->t_x);
    ck_assert_int_eq((int)num(m, "summary", "T"), e->age);
    if (isnan(e->m))
        ck_assert(is_null(m, "summary", "repeat_mean_value"));
    else
        ck_assert_double_eq_tol(num(m, "summary", "repeat_mean_value"), e->m, 1e-9);
    ck_assert_str_eq(str(m, "rfm", "cell"), e->cell);
    ck_assert_str_eq(str(m, "rfm", "group"), e->group);
    json_decref(m);
}

/* A velocity figure: NAN expects null. */
static void check_velocity(long long id, const char *key, double want)
{
    json_t *m = metrics_of(id);
    if (isnan(want))
        ck_assert_msg(is_null(m, "velocity", key), "velocity.%s is not null", key);
    else
        ck_assert_msg(fabs(num(m, "velocity", key) - want) <= 1e-9 * fmax(1, fabs(want)),
                      "velocity.%s = %.17g, not %.17g", key, num(m, "velocity", key), want);
    json_decref(m);
}

START_TEST(a_recompute_gives_the_figures_worked_out_by_hand)
{
    fixture x = make_fixture();
    json_decref(recompute(AS_OF_MS));
    check_customer(x.a, &(expected){4, 0, 280, 75, 31, 4, 280, 2, 325, 356, 100, "554",
                                    "champions"});
    check_customer(x.b, &(expected){1, 0, 20, 20, 306, 1, 20, 0, 0, 306, NAN, "233", "at_risk"});
    check_customer(x.c, &(expected){1, 1, 200, 200, 579, 0, 0, 0, 0, 579, NAN, "111",
                                    "hibernating"});
    check_customer(x.f, &(expected){2, 0, 1000, 500, 47, 2, 1000, 1, 14, 61, 500, "445",
                                    "champions"});
    check_customer(x.g, &(expected){1, 0, 20, 20, 184, 1, 20, 0, 0, 184, NAN, "333",
                                    "needs_attention"});
    /* Velocity, by hand. A's purchase days 2025-01-10, 06-01, 12-01: intervals
     * 142 and 183 days, mean 162.5, population sd 20.5, CV 20.5 / 162.5,
     * slope 41 days an interval; amounts 100, 50, 30, 120 in order: mean 75,
     * variance (625 + 625 + 2025 + 2025) / 4 = 1325, slope
     * sum((i - 2.5)(y - 75)) / sum((i - 2.5)^2) = 20 / 5 = 4. F: one interval
     * (no CV, no trend), amounts 500 and 500: CV 0, trend 0. */
    check_velocity(x.a, "interval_mean_days", 162.5);
    check_velocity(x.a, "interval_cv", 20.5 / 162.5);
    check_velocity(x.a, "interval_trend_days", 41);
    check_velocity(x.a, "spend_cv", sqrt(1325.0) / 75);
    check_velocity(x.a, "spend_trend", 4);
    check_velocity(x.f, "interval_mean_days", 14);
    check_velocity(x.f, "interval_cv", NAN);
    check_velocity(x.f, "interval_trend_days", NAN);
    check_velocity(x.f, "spend_cv", 0);
    check_velocity(x.f, "spend_trend", 0);
    check_velocity(x.b, "interval_mean_days", NAN);
    check_velocity(x.b, "spend_cv", NAN);
    /* No purchase up to as_of: counted, no scores, no summary. */
    long long none[] = {x.d, x.e};
    for (size_t i = 0; i < 2; i++) {
        json_t *m = metrics_of(none[i]);
        ck_assert_int_eq((int)num(m, "value", "purchases"), 0);
        ck_assert_double_eq(num(m, "value", "historic"), 0);
        ck_assert(is_null(m, "rfm", "cell"));
        ck_assert(is_null(m, "summary", "x"));
        ck_assert(is_null(m, "risk", "p_alive"));
        json_decref(m);
    }
}
END_TEST

/* Whatever the models fitted on five customers, the stored predictions are
 * the model functions of btyd.h at the parameters in force (the SQL's
 * Gamma-Gamma spend is crm_gg_expected_spend's formula). */
START_TEST(the_stored_predictions_are_the_models_at_the_parameters_in_force)
{
    fixture x = make_fixture();
    json_decref(recompute(AS_OF_MS));
    crm_error err = CRM_ERROR_INIT;
    json_t *model = crm_metrics_model(&err);
    ck_assert_ptr_nonnull(model);
    json_t *bg_fit = json_object_get(json_object_get(model, "bg_nbd"), "latest");
    json_t *gg_fit = json_object_get(json_object_get(model, "gamma_gamma"), "latest");
    ck_assert_msg(json_is_object(bg_fit) && json_is_object(gg_fit), "no fits recorded");
    ck_assert_int_eq(json_integer_value(json_object_get(bg_fit, "customers")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(bg_fit, "rows")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(gg_fit, "customers")), 2);
    json_t *bg_in = json_object_get(json_object_get(model, "bg_nbd"), "in_force");
    json_t *gg_in = json_object_get(json_object_get(model, "gamma_gamma"), "in_force");
    json_t *a = metrics_of(x.a);
    if (!json_is_object(bg_in)) {
        /* Not converged on five customers: no predictions, as documented. */
        ck_assert(is_null(a, "risk", "p_alive"));
    } else {
        json_t *p = json_object_get(bg_in, "params");
        crm_bgnbd bg = {num(p, NULL, "r"), num(p, NULL, "alpha"), num(p, NULL, "a"),
                        num(p, NULL, "b")};
        ck_assert_double_eq_tol(num(a, "risk", "p_alive"), crm_bgnbd_p_alive(&bg, 2, 325, 356),
                                1e-12);
        ck_assert_double_eq_tol(num(a, "risk", "churn_risk"),
                                1 - crm_bgnbd_p_alive(&bg, 2, 325, 356), 1e-12);
        ck_assert_double_eq_tol(num(a, "value", "predicted_purchases"),
                                crm_bgnbd_expected_purchases(&bg, 365, 2, 325, 356), 1e-9);
        if (json_is_object(gg_in)) {
            json_t *q = json_object_get(gg_in, "params");
            crm_gg gg = {num(q, NULL, "p"), num(q, NULL, "q"), num(q, NULL, "gamma")};
            double want = crm_btyd_clv(&bg, &gg, 2, 325, 356, 100, 365, 0.10);
            ck_assert_msg(fabs(num(a, "value", "predicted_value") - want) <= 1e-9 * fabs(want),
                          "predicted value %.17g, the models say %.17g",
                          num(a, "value", "predicted_value"), want);
        }
    }
    json_decref(a);
    json_decref(model);
}
END_TEST

/* Backtesting: as of 2025-07-01 only what happened by then counts. */
START_TEST(an_earlier_as_of_ignores_what_happened_after_it)
{
    fixture x = make_fixture();
    json_decref(recompute(1751328000000LL)); /* 2025-07-01T00:00:00Z */
    json_t *a = metrics_of(x.a);
    ck_assert_str_eq(json_string_value(json_object_get(a, "as_of")), "2025-07-01T00:00:00.000Z");
    ck_assert_int_eq((int)num(a, "value", "purchases"), 3);
    ck_assert_double_eq_tol(num(a, "value", "historic"), 180, 1e-9);
    ck_assert_int_eq((int)num(a, "summary", "x"), 1);
    ck_assert_int_eq((int)num(a, "summary", "t_x"), 142); /* 2025-01-10 to 2025-06-01 */
    ck_assert_int_eq((int)num(a, "summary", "T"), 172);   /* 2025-01-10 to 2025-07-01 */
    json_decref(a);
    json_t *f = metrics_of(x.f);
    ck_assert_int_eq((int)num(f, "value", "purchases"), 0);
    json_decref(f);
}
END_TEST

START_TEST(a_second_recompute_while_one_is_queued_is_a_conflict_naming_it)
{
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    json_t *first = crm_metrics_recompute_submit(AS_OF_MS, 0, &running, &err);
    ck_assert_msg(first != NULL, "%s", err.detail);
    ck_assert_ptr_null(crm_metrics_recompute_submit(0, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_int_eq(running, json_integer_value(json_object_get(first, "id")));
    crm_error_clear(&err);
    ck_assert_ptr_null(crm_metrics_recompute_submit(crm_wall_ms() + 3600000, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    json_decref(first);
}
END_TEST

/* The staged table is filled without indexes, which are built after it;
 * after each publication customer_metrics has its primary key and stage
 * index under its own names, metrics_staging (empty) under its own, and
 * every live customer has one row. */
START_TEST(each_publication_leaves_both_tables_indexed_under_their_names)
{
    fixture x = make_fixture();
    (void)x;
    for (int round = 0; round < 3; round++) {
        json_decref(recompute(AS_OF_MS));
        PGresult *r = unit_sql(db,
                               "SELECT string_agg(tablename || ':' || indexname, ' ' ORDER BY"
                               " tablename, indexname) FROM pg_indexes WHERE tablename IN"
                               " ('customer_metrics', 'metrics_staging')",
                               0, NULL);
        ck_assert_str_eq(PQgetvalue(r, 0, 0),
                         "customer_metrics:customer_metrics_lifecycle_stage_idx"
                         " customer_metrics:customer_metrics_pkey"
                         " metrics_staging:metrics_staging_lifecycle_stage_idx"
                         " metrics_staging:metrics_staging_pkey");
        PQclear(r);
        r = unit_sql(db,
                     "SELECT (SELECT count(*) FROM customer_metrics) = (SELECT count(*) FROM"
                     " customers WHERE status = 'active'), (SELECT count(*) FROM"
                     " metrics_staging), (SELECT count(*) FROM pg_constraint WHERE conrelid ="
                     " 'customer_metrics'::regclass AND contype = 'p')",
                     0, NULL);
        ck_assert_str_eq(PQgetvalue(r, 0, 0), "t");
        ck_assert_str_eq(PQgetvalue(r, 0, 1), "0");
        ck_assert_str_eq(PQgetvalue(r, 0, 2), "1");
        PQclear(r);
    }
}
END_TEST

/* A merged customer's id reads the survivor's metrics; an erased one is
 * gone from customer_metrics. */
START_TEST(metrics_follow_merges_and_go_with_erasure)
{
    fixture x = make_fixture();
    json_decref(recompute(AS_OF_MS));
    char a[24], g[24];
    snprintf(a, sizeof a, "%lld", x.a);
    snprintf(g, sizeof g, "%lld", x.g);
    const char *params[] = {g, a};
    PQclear(unit_sql(db, "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1",
                     2, params));
    json_t *m = metrics_of(x.g);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "customer_id")), x.a);
    json_decref(m);
    const char *erase[] = {a};
    PQclear(unit_sql(db, "UPDATE customers SET status = 'erased' WHERE id = $1", 1, erase));
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_metrics_customer(x.a, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
}
END_TEST


/* ---- lifecycle, engagement, satisfaction ---------------------------------------- */

/* A touchpoint with a direction and, for feedback, its JSON (NULL: none). */
static void contact(long long id, const char *type, const char *direction, const char *when,
                    const char *feedback)
{
    insert_touchpoint(id, type, direction, when, NULL, NULL, feedback);
}

static const char *stage_of(long long id)
{
    static char stage[32];
    json_t *m = metrics_of(id);
    const json_t *s = json_object_get(json_object_get(m, "lifecycle"), "stage");
    snprintf(stage, sizeof stage, "%s", json_is_string(s) ? json_string_value(s) : "(null)");
    json_decref(m);
    return stage;
}

/* The fixture as of 2026-01-01, the P(alive) rule off (five customers fit
 * no model worth trusting), and H, who bought on 2024-01-01 and again on
 * 2025-12-01 (a 700-day gap). Stages by the rules (new 90, at risk 180,
 * lapsed 365 days):
 *   A  last purchase 31 days ago, first 356 days ago, last gap 183: active
 *   B  306 days since its purchase: at_risk      C  579 days: lapsed
 *   D, E  no purchase by as_of: prospect         F  first purchase 61 days ago: new
 *   G  184 days: at_risk                         H  gap 700 > 365, bought 31 days ago: won_back
 * Overdue (recency - mean interval): A 31 - 162.5 = -131.5, F 47 - 14 = 33,
 * H 31 - 700 = -669; B has no interval (null).
 * A's other touchpoints: NPS 9 (2025-03-01), CSAT 4 (2025-06-02), an inbound
 * call (2025-11-01), NPS 6 (2025-11-20), feedback with text only
 * (2025-12-10), an outbound e-mail (2025-12-20), NPS 0 after as_of
 * (2026-01-15). In the 90 days from 2025-10-03: the call, the NPS 6, the
 * purchase of 12-01, the refund of 12-05, the text, the e-mail: 6, so 2 a
 * month; the last inbound one is the text of 2025-12-10. NPS latest 6, mean
 * 7.5 of 2; CSAT 4, 4 of 1. */
START_TEST(a_recompute_gives_stages_engagement_and_satisfaction_by_hand)
{
    crm_metrics_config cfg = crm_metrics_defaults();
    cfg.at_risk_p_alive = 0;
    crm_metrics_configure(&cfg);
    fixture x = make_fixture();
    long long h = customer("H");
    touchpoint(h, "purchase", "2024-01-01T00:00:00Z", "10", "EUR");
    touchpoint(h, "purchase", "2025-12-01T00:00:00Z", "10", "EUR");
    contact(x.a, "feedback", "inbound", "2025-03-01T00:00:00Z", "{\"scale\":\"nps\",\"score\":9}");
    contact(x.a, "feedback", "inbound", "2025-06-02T00:00:00Z", "{\"scale\":\"csat\",\"score\":4}");
    contact(x.a, "call", "inbound", "2025-11-01T00:00:00Z", NULL);
    contact(x.a, "feedback", "inbound", "2025-11-20T00:00:00Z", "{\"scale\":\"nps\",\"score\":6}");
    contact(x.a, "feedback", "inbound", "2025-12-10T00:00:00Z", "{\"text\":\"fine\"}");
    contact(x.a, "email_sent", "outbound", "2025-12-20T00:00:00Z", NULL);
    contact(x.a, "feedback", "inbound", "2026-01-15T00:00:00Z", "{\"scale\":\"nps\",\"score\":0}");
    json_decref(recompute(AS_OF_MS));

    ck_assert_str_eq(stage_of(x.a), "active");
    ck_assert_str_eq(stage_of(x.b), "at_risk");
    ck_assert_str_eq(stage_of(x.c), "lapsed");
    ck_assert_str_eq(stage_of(x.d), "prospect");
    ck_assert_str_eq(stage_of(x.e), "prospect");
    ck_assert_str_eq(stage_of(x.f), "new");
    ck_assert_str_eq(stage_of(x.g), "at_risk");
    ck_assert_str_eq(stage_of(h), "won_back");

    json_t *a = metrics_of(x.a);
    ck_assert_double_eq_tol(num(a, "risk", "overdue_days"), -131.5, 1e-9);
    ck_assert_int_eq((int)num(a, "engagement", "touchpoints_90d"), 6);
    ck_assert_double_eq_tol(num(a, "engagement", "touchpoints_per_30d"), 2, 1e-9);
    ck_assert_str_eq(str(a, "engagement", "last_inbound_at"), "2025-12-10T00:00:00.000Z");
    ck_assert_int_eq((int)num(a, "velocity", "last_gap_days"), 183);
    json_t *nps = json_object_get(json_object_get(a, "satisfaction"), "nps");
    json_t *csat = json_object_get(json_object_get(a, "satisfaction"), "csat");
    ck_assert_int_eq(json_integer_value(json_object_get(nps, "latest")), 6);
    ck_assert_double_eq_tol(json_number_value(json_object_get(nps, "mean")), 7.5, 1e-12);
    ck_assert_int_eq(json_integer_value(json_object_get(nps, "responses")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(csat, "latest")), 4);
    ck_assert_double_eq_tol(json_number_value(json_object_get(csat, "mean")), 4, 1e-12);
    ck_assert_int_eq(json_integer_value(json_object_get(csat, "responses")), 1);
    json_decref(a);

    json_t *f = metrics_of(x.f);
    ck_assert_double_eq_tol(num(f, "risk", "overdue_days"), 33, 1e-9);
    json_decref(f);
    json_t *hm = metrics_of(h);
    ck_assert_double_eq_tol(num(hm, "risk", "overdue_days"), -669, 1e-9);
    ck_assert_int_eq((int)num(hm, "velocity", "last_gap_days"), 700);
    json_decref(hm);
    /* Amounts travel to the table exactly, to 4 decimals, whatever their
     * sign and size (binary numeric). */
    long long k = customer("K");
    touchpoint(k, "refund", "2025-12-20T00:00:00Z", "-12.3456", "EUR");
    touchpoint(k, "purchase", "2025-12-21T00:00:00Z", "123456789.5", "EUR");
    touchpoint(k, "purchase", "2025-12-22T00:00:00Z", "0.0001", "EUR");
    json_decref(recompute(AS_OF_MS));
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT historic_value::text || ' ' || monetary::text || ' ' || average_order_value"
             " FROM customer_metrics WHERE customer_id = %lld", k);
    PGresult *amounts = unit_sql(db, sql, 0, NULL);
    ck_assert_str_eq(PQgetvalue(amounts, 0, 0), "123456777.1545 123456777.1545 61728394.7501");
    PQclear(amounts);
    json_t *b = metrics_of(x.b);
    ck_assert(is_null(b, "risk", "overdue_days"));
    ck_assert(is_null(b, "velocity", "last_gap_days"));
    ck_assert(json_is_null(
        json_object_get(json_object_get(json_object_get(b, "satisfaction"), "nps"), "latest")));
    ck_assert_int_eq((int)num(b, "engagement", "touchpoints_90d"), 0);
    json_decref(b);
    /* D's page view of 2025-05-01 is its last inbound contact; E's only
     * touchpoint lies after as_of. */
    json_t *d = metrics_of(x.d);
    ck_assert_str_eq(str(d, "engagement", "last_inbound_at"), "2025-05-01T00:00:00.000Z");
    json_decref(d);
    json_t *e = metrics_of(x.e);
    ck_assert(is_null(e, "engagement", "last_inbound_at"));
    json_decref(e);
}
END_TEST

/* The history: the first recompute records each customer's first stage;
 * one two months later moves F from new to active (its first purchase is
 * 120 days old on 2026-03-01) and E from prospect to new (it bought on
 * 2026-02-01); the others keep theirs and gain no row. */
START_TEST(each_change_of_stage_is_kept_with_its_time)
{
    crm_metrics_config cfg = crm_metrics_defaults();
    cfg.at_risk_p_alive = 0;
    crm_metrics_configure(&cfg);
    fixture x = make_fixture();
    json_decref(recompute(AS_OF_MS));
    json_decref(recompute(1772323200000LL)); /* 2026-03-01T00:00:00Z */
    crm_error err = CRM_ERROR_INIT;
    long long next = 0;
    json_t *f = crm_metrics_lifecycle(x.f, 0, 50, &next, &err);
    ck_assert_msg(f != NULL, "%s", err.detail);
    ck_assert_str_eq(json_string_value(json_object_get(f, "stage")), "active");
    ck_assert_str_eq(json_string_value(json_object_get(f, "since")), "2026-03-01T00:00:00.000Z");
    json_t *rows = json_object_get(f, "data");
    ck_assert_int_eq(json_array_size(rows), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "stage")), "active");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "previous")), "new");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 1), "stage")), "new");
    ck_assert(json_is_null(json_object_get(json_array_get(rows, 1), "previous")));
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 1), "changed_at")),
                     "2026-01-01T00:00:00.000Z");
    ck_assert_int_eq(next, 0);
    json_decref(f);
    /* A page of one: the newest, and where the next starts. */
    json_t *page = crm_metrics_lifecycle(x.f, 0, 1, &next, &err);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 1);
    ck_assert_int_gt(next, 0);
    json_t *rest = crm_metrics_lifecycle(x.f, next, 1, &next, &err);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(json_object_get(rest, "data"), 0), "stage")),
        "new");
    ck_assert_int_eq(next, 0);
    json_decref(page);
    json_decref(rest);
    json_t *e = crm_metrics_lifecycle(x.e, 0, 50, &next, &err);
    ck_assert_str_eq(json_string_value(json_object_get(e, "stage")), "new");
    ck_assert_int_eq(json_array_size(json_object_get(e, "data")), 2);
    json_decref(e);
    json_t *a = crm_metrics_lifecycle(x.a, 0, 50, &next, &err);
    ck_assert_int_eq(json_array_size(json_object_get(a, "data")), 1);
    json_decref(a);
    ck_assert_ptr_null(crm_metrics_lifecycle(999999, 0, 50, &next, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
}
END_TEST

/* The person's export holds their metrics and every stage change; erasure
 * removes both (the base's fits and aggregates keep anonymous figures). */
START_TEST(export_holds_the_metrics_and_lifecycle_and_erasure_removes_them)
{
    fixture x = make_fixture();
    json_decref(recompute(AS_OF_MS));
    json_decref(recompute(1772323200000LL)); /* F: new, then active */
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_customer_export(x.f, &err);
    ck_assert_msg(doc != NULL, "export: %s", err.detail);
    json_t *metrics = json_object_get(doc, "metrics"), *life = json_object_get(doc, "lifecycle");
    ck_assert_int_eq(json_array_size(metrics), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(metrics, 0), "purchases")), 2);
    ck_assert_int_eq(json_array_size(life), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(life, 0), "stage")), "new");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(life, 1), "stage")), "active");
    json_decref(doc);
    crm_write_ctx ctx = {0};
    bool already = false;
    json_t *gone = crm_customer_erase(x.f, &ctx, &already, &err);
    ck_assert_msg(gone != NULL, "erase: %s", err.detail);
    json_decref(gone);
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM customer_metrics WHERE customer_id = %lld)"
             " + (SELECT count(*) FROM customer_lifecycle WHERE customer_id = %lld)",
             x.f, x.f);
    ck_assert_int_eq(unit_sql_long(db, sql, 0, NULL), 0);
}
END_TEST

/* ---- the follower ------------------------------------------------------------------ */

static crm_conn *private_conn(void)
{
    crm_db_config cfg = {.url = conninfo, .pool_size = 1, .connect_timeout_s = 2};
    crm_error err = CRM_ERROR_INIT;
    crm_conn *c = crm_db_open_private(&cfg, &err);
    ck_assert_msg(c != NULL, "%s", err.detail);
    return c;
}

/* Sweeps of batch changes until the feeds are read to their end; the
 * customers looked at. */
/* The follower reads a feed only up to the oldest transaction still open
 * anywhere in the cluster (an autovacuum's ANALYZE in another database
 * counts): waits (at most 10 s) until none is older than the feeds' last
 * changes, so that a sweep sees every change committed before it. */
static void wait_for_feeds_settled(void)
{
    static const char *const settled =
        "SELECT pg_snapshot_xmin(pg_current_snapshot()) > coalesce((SELECT change_xid FROM"
        " touchpoints ORDER BY change_xid DESC LIMIT 1), '0') AND pg_snapshot_xmin("
        "pg_current_snapshot()) > coalesce((SELECT change_xid FROM customers ORDER BY change_xid"
        " DESC LIMIT 1), '0')";
    for (int i = 0; i < 200; i++) {
        PGresult *r = unit_sql(db, settled, 0, NULL);
        bool done = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (done)
            return;
        usleep(50000);
    }
    ck_abort_msg("a transaction older than the feeds' last changes stayed open for 10 s");
}

static long long follow_all(crm_conn *c, int batch)
{
    long long total = 0, n;
    bool more = true;
    crm_error err = CRM_ERROR_INIT;
    wait_for_feeds_settled();
    while (more) {
        ck_assert_msg(crm_metrics_follow(c, batch, &n, &more, &err), "follow: %s", err.detail);
        total += n;
    }
    return total;
}

START_TEST(one_follower_at_a_time)
{
    crm_conn *one = private_conn(), *two = private_conn();
    bool claimed = false;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_metrics_follow_claim(one, &claimed, &err) && claimed);
    ck_assert(crm_metrics_follow_claim(two, &claimed, &err) && !claimed);
    crm_db_close_private(one); /* the lock goes with its connection, once its backend ends */
    for (int i = 0; i < 100 && !claimed; i++) {
        ck_assert(crm_metrics_follow_claim(two, &claimed, &err));
        if (!claimed)
            usleep(50000);
    }
    ck_assert(claimed);
    crm_db_close_private(two);
}
END_TEST

/* The feeds' head moves with each new touchpoint or changed customer, and
 * only then: what tells the follower that an ingest goes on. */
START_TEST(the_feeds_head_moves_with_each_change_and_only_then)
{
    crm_conn *c = private_conn();
    crm_error err = CRM_ERROR_INIT;
    char before[96], after[96], again[96], renamed[96];
    ck_assert(crm_metrics_follow_head(c, before, sizeof before, &err));
    long long id = customer("Ada");
    ck_assert(crm_metrics_follow_head(c, after, sizeof after, &err));
    ck_assert_str_ne(before, after);
    insert_touchpoint(id, "page_view", "inbound", "2026-01-01T00:00:00Z", NULL, NULL, NULL);
    ck_assert(crm_metrics_follow_head(c, again, sizeof again, &err));
    ck_assert_str_ne(after, again);
    ck_assert(crm_metrics_follow_head(c, after, sizeof after, &err));
    ck_assert_str_eq(after, again); /* nothing in between */
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    PQclear(unit_sql(db, "UPDATE customers SET first_name = 'Ada L.' WHERE id = $1", 1,
                     (const char *[]){idtext}));
    ck_assert(crm_metrics_follow_head(c, renamed, sizeof renamed, &err));
    ck_assert_str_ne(again, renamed);
    crm_db_close_private(c);
}
END_TEST

/* A recompute's publication moves the follower to where its load began:
 * what the load read is not gone over again, what came after is. */
START_TEST(the_follower_goes_on_from_the_last_recompute)
{
    fixture x = make_fixture();
    crm_conn *c = private_conn();
    ck_assert_int_eq(follow_all(c, 1000), 7); /* before any recompute: every customer */
    json_decref(recompute(0));
    ck_assert_int_eq(follow_all(c, 1000), 0);
    touchpoint(x.d, "purchase", "2026-06-01T00:00:00Z", "15", "EUR");
    ck_assert_int_eq(follow_all(c, 1000), 1);
    json_t *d = metrics_of(x.d);
    ck_assert_int_eq((int)num(d, "value", "purchases"), 1);
    json_decref(d);
    crm_db_close_private(c);
}
END_TEST

/* The schedule queues a recompute when none was queued in the hours given,
 * and only then. */
START_TEST(the_schedule_queues_a_recompute_when_none_is_recent)
{
    crm_error err = CRM_ERROR_INIT;
    bool queued = false;
    ck_assert_msg(crm_metrics_schedule(24, &queued, &err), "%s", err.detail);
    ck_assert(queued);
    ck_assert(crm_metrics_schedule(24, &queued, &err));
    ck_assert(!queued); /* one is queued */
    PQclear(unit_sql(db,
                     "UPDATE jobs SET state = 'cancelled', finished_at = now(),"
                     " created_at = now() - interval '2 hours'",
                     0, NULL));
    ck_assert(crm_metrics_schedule(3, &queued, &err));
    ck_assert(!queued); /* one was queued 2 hours ago */
    ck_assert(crm_metrics_schedule(1, &queued, &err));
    ck_assert(queued);
    ck_assert_int_eq(unit_sql_long(db, "SELECT count(*) FROM jobs WHERE kind = 'metrics_recompute'",
                                   0, NULL),
                     2);
}
END_TEST

/* A random base: n customers, each with up to 12 purchases (EUR, USD at a
 * rate, or GBP without one), refunds, NPS and CSAT responses and page views
 * over the two years before now. */
static long long *random_base(gsl_rng *rng, int n)
{
    long long *ids = calloc((size_t)n, sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    PQclear(unit_sql(db, "INSERT INTO currency_rates (currency, rate) VALUES ('USD', 0.8)", 0,
                     NULL));
    for (int i = 0; i < n; i++)
        ids[i] = customer("R");
    for (int i = 0; i < n; i++) {
        int k = (int)gsl_rng_uniform_int(rng, 13);
        for (int j = 0; j < k; j++) {
            static const char *const types[] = {"purchase", "purchase", "purchase", "refund",
                                                "page_view", "feedback"};
            const char *type = types[gsl_rng_uniform_int(rng, 6)];
            char when[48], amount[32];
            crm_format_timestamp(crm_wall_ms() - (long long)(gsl_rng_uniform(rng) * 730 * 86400e3),
                                 when);
            if (strcmp(type, "feedback") == 0) {
                bool nps = gsl_rng_uniform(rng) < 0.5;
                char fb[64];
                snprintf(fb, sizeof fb, "{\"scale\":\"%s\",\"score\":%d}", nps ? "nps" : "csat",
                         nps ? (int)gsl_rng_uniform_int(rng, 11)
                             : 1 + (int)gsl_rng_uniform_int(rng, 5));
                contact(ids[i], type, "inbound", when, fb);
            } else if (strcmp(type, "page_view") == 0) {
                contact(ids[i], type, gsl_rng_uniform(rng) < 0.5 ? "inbound" : "outbound", when,
                        NULL);
            } else {
                static const char *const currencies[] = {"EUR", "EUR", "USD", "GBP"};
                double v = 5 + gsl_rng_uniform(rng) * 200;
                snprintf(amount, sizeof amount, "%s%.2f", type[0] == 'r' ? "-" : "", v);
                touchpoint(ids[i], type, when, amount, currencies[gsl_rng_uniform_int(rng, 4)]);
            }
        }
    }
    return ids;
}

/* Every stored figure of a customer but the time it was computed and the
 * scores ranked against the whole base, as text. */
#define COMPARED_COLUMNS                                                                           \
    "customer_id, as_of, purchases, refunds, unrated, first_purchase_at, last_purchase_at,"        \
    " historic_value, average_order_value, recency_days, frequency, monetary, x, t_x, t_age,"      \
    " repeat_mean_value, p_alive, predicted_purchases, predicted_value, interval_mean,"            \
    " interval_cv, interval_trend, spend_cv, spend_trend, lifecycle_stage, last_gap_days,"         \
    " overdue_days, touchpoints_90d, last_inbound_at, nps_latest, nps_mean, nps_responses,"        \
    " csat_latest, csat_mean, csat_responses"

/* The rows computed at as_of, each as one line of text, in id order. */
static PGresult *rows_as_of(const char *as_of)
{
    const char *params[] = {as_of};
    return unit_sql(db,
                    "SELECT concat_ws('|', " COMPARED_COLUMNS ") FROM customer_metrics"
                    " WHERE as_of = $1::timestamptz ORDER BY customer_id",
                    1, params);
}

/* Incremental updates equal a full recompute: a random base is recomputed;
 * then, in one transaction, a third of its customers get new purchases,
 * refunds and feedback; one is merged into another and one erased. The
 * follower brings them in. A full recompute observed at the follower's
 * as_of, with the same models (refit false), gives the same rows for every
 * customer the follower touched, figure for figure. */
START_TEST(incremental_updates_equal_a_full_recompute_on_random_data)
{
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 20261203);
    int n = 240;
    long long *ids = random_base(rng, n);
    json_decref(recompute(0));
    crm_conn *c = private_conn();
    follow_all(c, 50); /* the base's own inserts: every customer, in sweeps of 50 */

    PQclear(unit_sql(db, "BEGIN", 0, NULL));
    for (int i = 0; i < n; i += 3) {
        char when[48], amount[32];
        crm_format_timestamp(crm_wall_ms() - (long long)(gsl_rng_uniform(rng) * 30 * 86400e3),
                             when);
        snprintf(amount, sizeof amount, "%.2f", 1 + gsl_rng_uniform(rng) * 90);
        touchpoint(ids[i], i % 2 ? "refund" : "purchase", when, amount, "EUR");
        contact(ids[i], "feedback", "inbound", when, "{\"scale\":\"nps\",\"score\":10}");
    }
    PQclear(unit_sql(db, "COMMIT", 0, NULL));
    crm_write_ctx ctx = {0};
    crm_error err = CRM_ERROR_INIT;
    char body[64];
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", ids[4]);
    json_t *merge = json_loads(body, 0, NULL);
    bool dry = false;
    json_t *merged = crm_customer_merge(ids[1], merge, &ctx, &dry, &err);
    ck_assert_msg(merged != NULL, "merge: %s", err.detail);
    json_decref(merged);
    json_decref(merge);
    bool already = false;
    json_t *erased = crm_customer_erase(ids[7], &ctx, &already, &err);
    ck_assert_msg(erased != NULL, "erase: %s", err.detail);
    json_decref(erased);

    long long looked = follow_all(c, 100000); /* one sweep: one as_of */
    ck_assert_int_ge(looked, n / 3);
    PGresult *latest = unit_sql(db, "SELECT max(as_of)::text, " TS_TEXT("max(as_of)")
                                    " FROM customer_metrics", 0, NULL);
    char as_of[64], as_of_rfc[64];
    snprintf(as_of, sizeof as_of, "%s", PQgetvalue(latest, 0, 0));
    snprintf(as_of_rfc, sizeof as_of_rfc, "%s", PQgetvalue(latest, 0, 1));
    PQclear(latest);
    /* The touched customers, and no other, carry the follower's as_of;
     * the merged and the erased customers have no row. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM customer_metrics WHERE customer_id IN (%lld, %lld)", ids[4],
             ids[7]);
    ck_assert_int_eq(unit_sql_long(db, sql, 0, NULL), 0);
    PGresult *incremental = rows_as_of(as_of);
    ck_assert_int_ge(PQntuples(incremental), n / 3 - 1);

    long long as_ms;
    ck_assert(crm_rfc3339_epoch_ms(as_of_rfc, &as_ms));
    long long running = 0;
    json_t *job = crm_metrics_recompute_submit_with(as_ms, false, 0, &running, &err);
    ck_assert_msg(job != NULL, "submit: %s", err.detail);
    json_decref(job);
    crm_jobs_config cfg = {.db = {.url = conninfo, .pool_size = 1, .connect_timeout_s = 2},
                           .lease_s = 30,
                           .worker = "unit"};
    long long ran = 0;
    ck_assert_msg(crm_jobs_run_one(&cfg, &ran, &err), "run: %s", err.detail);
    PGresult *full = rows_as_of(as_of);
    /* Every row the follower wrote is among the full recompute's, equal. */
    int j = 0, compared = 0;
    for (int i = 0; i < PQntuples(incremental); i++) {
        const char *want = PQgetvalue(incremental, i, 0);
        long long id = atoll(want);
        while (j < PQntuples(full) && atoll(PQgetvalue(full, j, 0)) < id)
            j++;
        ck_assert_msg(j < PQntuples(full), "customer %lld is missing from the full recompute", id);
        ck_assert_msg(strcmp(PQgetvalue(full, j, 0), want) == 0,
                      "customer %lld:\n incremental %s\n full        %s", id, want,
                      PQgetvalue(full, j, 0));
        compared++;
    }
    ck_assert_int_ge(compared, n / 3 - 1);
    PQclear(incremental);
    PQclear(full);
    crm_db_close_private(c);
    free(ids);
    gsl_rng_free(rng);
}
END_TEST

/* Scored by the base's scales, hours or days after a recompute, a customer
 * whose figures did not change keeps the scores the recompute ranked. */
START_TEST(the_base_scales_give_the_scores_the_recompute_ranked)
{
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 7);
    int n = 200;
    long long *ids = random_base(rng, n);
    json_decref(recompute(0));
    PGresult *ranked = unit_sql(db,
                                "SELECT customer_id, concat_ws('|', r_score, f_score, m_score,"
                                " rfm_cell, rfm_group) FROM customer_metrics ORDER BY customer_id",
                                0, NULL);
    crm_conn *c = private_conn();
    follow_all(c, 50);
    PGresult *followed = unit_sql(db,
                                  "SELECT customer_id, concat_ws('|', r_score, f_score, m_score,"
                                  " rfm_cell, rfm_group) FROM customer_metrics ORDER BY customer_id",
                                  0, NULL);
    ck_assert_int_eq(PQntuples(ranked), n);
    ck_assert_int_eq(PQntuples(followed), n);
    for (int i = 0; i < n; i++)
        ck_assert_msg(strcmp(PQgetvalue(ranked, i, 1), PQgetvalue(followed, i, 1)) == 0,
                      "customer %s: ranked %s, scaled %s", PQgetvalue(ranked, i, 0),
                      PQgetvalue(ranked, i, 1), PQgetvalue(followed, i, 1));
    PQclear(ranked);
    PQclear(followed);
    crm_db_close_private(c);
    free(ids);
    gsl_rng_free(rng);
}
END_TEST

/* ---- end to end on a simulated base -------------------------------------------- */

/* One simulated customer: the UTC days (since the epoch) of their purchase
 * days and the amount in cents of each day, and the summary worked out
 * here, independently of the SQL. */
typedef struct sim_customer {
    long long id;
    int ndays;
    long days[64];
    long cents[64];
    double x, t_x, T, m; /* m: NAN without repeat days */
} sim_customer;

#define SIM_CUSTOMERS 3000
#define AS_OF_DAY (AS_OF_MS / 86400000LL)

/* BG/NBD (per day) and Gamma-Gamma: first purchases spread over the two
 * years before as_of, purchases at rate lambda until a dropout after a
 * repeat purchase; several on one day make one purchase day. */
static void simulate(gsl_rng *rng, sim_customer *c)
{
    const crm_bgnbd bg = {0.25, 15, 0.8, 2.5};
    const crm_gg gg = {6, 4, 15};
    double lambda = gsl_ran_gamma(rng, bg.r, 1 / bg.alpha);
    double dropout = gsl_ran_beta(rng, bg.a, bg.b);
    double nu = gsl_ran_gamma(rng, gg.q, 1 / gg.gamma);
    double t = (double)AS_OF_DAY - 730 * gsl_rng_uniform(rng); /* in days */
    bool first_purchase = true; /* no dropout after it: only after repeats */
    c->ndays = 0;
    for (;;) {
        long day = (long)floor(t);
        long cents = (long)llround(100 * gsl_ran_gamma(rng, gg.p, 1 / nu));
        if (cents < 1)
            cents = 1;
        if (c->ndays > 0 && c->days[c->ndays - 1] == day)
            c->cents[c->ndays - 1] += cents;
        else if (c->ndays < 64) {
            c->days[c->ndays] = day;
            c->cents[c->ndays++] = cents;
        }
        if (c->ndays > 0 && !first_purchase && gsl_rng_uniform(rng) < dropout)
            break;
        first_purchase = false;
        t += gsl_ran_exponential(rng, 1 / lambda);
        if (t >= (double)AS_OF_DAY)
            break;
    }
    c->x = c->ndays - 1;
    c->t_x = (double)(c->days[c->ndays - 1] - c->days[0]);
    c->T = (double)(AS_OF_DAY - c->days[0]);
    long repeat = 0;
    for (int i = 1; i < c->ndays; i++)
        repeat += c->cents[i];
    c->m = c->ndays > 1 ? repeat / 100.0 / c->x : NAN;
}

/* The simulated base into the database: customers, then one COPY of their
 * purchases at noon UTC of each purchase day. */
static sim_customer *insert_simulated_base(void)
{
    sim_customer *base = calloc(SIM_CUSTOMERS, sizeof *base);
    ck_assert_ptr_nonnull(base);
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 20261203);
    PGresult *ids = unit_sql(db,
                             "INSERT INTO customers (first_name) SELECT 'sim' || n"
                             " FROM generate_series(1, 3000) n RETURNING id",
                             0, NULL);
    ck_assert_int_eq(PQntuples(ids), SIM_CUSTOMERS);
    size_t cap = 1 << 20, len = 0;
    char *copy = malloc(cap);
    ck_assert_ptr_nonnull(copy);
    for (int i = 0; i < SIM_CUSTOMERS; i++) {
        sim_customer *c = &base[i];
        c->id = atoll(PQgetvalue(ids, i, 0));
        simulate(rng, c);
        for (int d = 0; d < c->ndays; d++) {
            if (cap - len < 256) {
                copy = realloc(copy, cap *= 2);
                ck_assert_ptr_nonnull(copy);
            }
            char noon[48];
            crm_format_timestamp(c->days[d] * 86400000LL + 43200000LL, noon);
            len += (size_t)snprintf(copy + len, cap - len,
                                    "%lld\tstore\tpurchase\tinbound\t%s\tsim\ts%d-%d\t%ld.%02ld\tEUR\n",
                                    c->id, noon, i, d, c->cents[d] / 100, c->cents[d] % 100);
        }
    }
    PQclear(ids);
    gsl_rng_free(rng);
    PGresult *res = PQexec(db, "COPY touchpoints (customer_id, channel, type, direction, "
                               "occurred_at, source, event_id, amount, currency) FROM STDIN");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COPY_IN);
    PQclear(res);
    ck_assert_int_eq(PQputCopyData(db, copy, (int)len), 1);
    ck_assert_int_eq(PQputCopyEnd(db, NULL), 1);
    res = PQgetResult(db);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(res);
    while ((res = PQgetResult(db)) != NULL)
        PQclear(res);
    free(copy);
    return base;
}

static crm_bgnbd bgnbd_from(const json_t *params)
{
    return (crm_bgnbd){num(params, NULL, "r"), num(params, NULL, "alpha"), num(params, NULL, "a"),
                       num(params, NULL, "b")};
}

static bool close_rel(double got, double want, double rel)
{
    return fabs(got - want) <= rel * fabs(want);
}

/* The SQL's summaries feed the same fits as the summaries worked out from
 * the simulation, and the stored predictions are the models' functions. */
START_TEST(on_a_simulated_base_the_fits_and_predictions_match_the_models)
{
    sim_customer *base = insert_simulated_base();
    json_decref(recompute(AS_OF_MS));

    crm_bgnbd_row *rows = calloc(SIM_CUSTOMERS, sizeof *rows);
    crm_gg_row *spend = calloc(SIM_CUSTOMERS, sizeof *spend);
    size_t nspend = 0;
    for (int i = 0; i < SIM_CUSTOMERS; i++) {
        rows[i] = (crm_bgnbd_row){base[i].x, base[i].t_x, base[i].T, 1};
        if (base[i].x > 0)
            spend[nspend++] = (crm_gg_row){base[i].x, base[i].m, 1};
    }
    crm_bgnbd bg_here;
    crm_gg gg_here;
    crm_fit_report rep;
    ck_assert(crm_bgnbd_fit(rows, SIM_CUSTOMERS, NULL, &bg_here, &rep));
    ck_assert(crm_gg_fit(spend, nspend, NULL, &gg_here, &rep));
    free(rows);
    free(spend);

    crm_error err = CRM_ERROR_INIT;
    json_t *model = crm_metrics_model(&err);
    ck_assert_ptr_nonnull(model);
    json_t *bg_fit = json_object_get(json_object_get(model, "bg_nbd"), "in_force");
    json_t *gg_fit = json_object_get(json_object_get(model, "gamma_gamma"), "in_force");
    ck_assert_msg(json_is_object(bg_fit) && json_is_object(gg_fit), "a fit did not converge");
    ck_assert_int_eq(json_integer_value(json_object_get(bg_fit, "customers")), SIM_CUSTOMERS);
    ck_assert_int_eq(json_integer_value(json_object_get(gg_fit, "customers")), (int)nspend);
    crm_bgnbd bg = bgnbd_from(json_object_get(bg_fit, "params"));
    json_t *q = json_object_get(gg_fit, "params");
    crm_gg gg = {num(q, NULL, "p"), num(q, NULL, "q"), num(q, NULL, "gamma")};
    /* Equal to the optimizer's tolerance (relative 1e-6 in each parameter,
     * amplified by the conditioning): the SQL's rows are weighted and in
     * another order than the 3,000 here. */
    ck_assert_msg(close_rel(bg.r, bg_here.r, 1e-4) && close_rel(bg.alpha, bg_here.alpha, 1e-4) &&
                      close_rel(bg.a, bg_here.a, 1e-4) && close_rel(bg.b, bg_here.b, 1e-4),
                  "BG/NBD from SQL (%g %g %g %g), from the simulation (%g %g %g %g)", bg.r,
                  bg.alpha, bg.a, bg.b, bg_here.r, bg_here.alpha, bg_here.a, bg_here.b);
    ck_assert_msg(close_rel(gg.p, gg_here.p, 1e-4) && close_rel(gg.q, gg_here.q, 1e-4) &&
                      close_rel(gg.gamma, gg_here.gamma, 1e-4),
                  "Gamma-Gamma from SQL (%g %g %g), from the simulation (%g %g %g)", gg.p, gg.q,
                  gg.gamma, gg_here.p, gg_here.q, gg_here.gamma);
    json_decref(model);

    for (int i = 0; i < SIM_CUSTOMERS; i += 97) {
        const sim_customer *c = &base[i];
        json_t *m = metrics_of(c->id);
        ck_assert_int_eq((int)num(m, "summary", "x"), (int)c->x);
        ck_assert_int_eq((int)num(m, "summary", "t_x"), (int)c->t_x);
        ck_assert_int_eq((int)num(m, "summary", "T"), (int)c->T);
        double p_alive = crm_bgnbd_p_alive(&bg, c->x, c->t_x, c->T);
        ck_assert_msg(close_rel(num(m, "risk", "p_alive"), p_alive, 1e-12), "p_alive %.17g %.17g",
                      num(m, "risk", "p_alive"), p_alive);
        double want = crm_bgnbd_expected_purchases(&bg, 365, c->x, c->t_x, c->T);
        ck_assert(close_rel(num(m, "value", "predicted_purchases"), want, 1e-12));
        want = crm_btyd_clv(&bg, &gg, c->x, c->t_x, c->T, c->x > 0 ? c->m : 0, 365, 0.10);
        ck_assert_msg(close_rel(num(m, "value", "predicted_value"), want, 1e-9),
                      "predicted value %.17g, the models say %.17g",
                      num(m, "value", "predicted_value"), want);
        json_decref(m);
    }
    /* Tiers: the top 1 % and 20 % of 3,000 by predicted value. */
    ck_assert_int_eq(unit_sql_long(db, "SELECT count(*) FROM customer_metrics WHERE value_tier = 'top'",
                                   0, NULL),
                     30);
    ck_assert_int_eq(unit_sql_long(db, "SELECT count(*) FROM customer_metrics WHERE value_tier "
                                       "IN ('top', 'high')",
                                   0, NULL),
                     600);
    free(base);
}
END_TEST

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("recompute");
    tcase_add_checked_fixture(tc, fresh_database, drop_database);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_recompute_gives_the_figures_worked_out_by_hand);
    tcase_add_test(tc, the_stored_predictions_are_the_models_at_the_parameters_in_force);
    tcase_add_test(tc, an_earlier_as_of_ignores_what_happened_after_it);
    tcase_add_test(tc, a_second_recompute_while_one_is_queued_is_a_conflict_naming_it);
    tcase_add_test(tc, metrics_follow_merges_and_go_with_erasure);
    tcase_add_test(tc, each_publication_leaves_both_tables_indexed_under_their_names);
    tcase_add_test(tc, on_a_simulated_base_the_fits_and_predictions_match_the_models);
    tcase_add_test(tc, a_recompute_gives_stages_engagement_and_satisfaction_by_hand);
    tcase_add_test(tc, each_change_of_stage_is_kept_with_its_time);
    tcase_add_test(tc, export_holds_the_metrics_and_lifecycle_and_erasure_removes_them);
    tcase_add_test(tc, one_follower_at_a_time);
    tcase_add_test(tc, the_feeds_head_moves_with_each_change_and_only_then);
    tcase_add_test(tc, the_follower_goes_on_from_the_last_recompute);
    tcase_add_test(tc, the_schedule_queues_a_recompute_when_none_is_recent);
    tcase_add_test(tc, incremental_updates_equal_a_full_recompute_on_random_data);
    tcase_add_test(tc, the_base_scales_give_the_scores_the_recompute_ranked);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_segment_flips.c — when a rule's value may next change as time
 * passes with no write (lib/segments.h, crm_rule_flip_sql and
 * crm_rule_next_flip): hand-worked instants for each way time enters a
 * rule, and on a database of its own with a few hundred random customers
 * and random time-heavy rules, the property that matters: the SQL and the
 * in-process answer are equal for every customer, and the rule's value
 * stays what it is at every millisecond before that instant, walking from
 * flip to flip as a live segment would.
 */
#include "db.h"
#include "jbuf.h"
#include "segments.h"
#include "segments/internal.h"
#include "suites.h"
#include "support.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2026-06-01T00:00:00Z */
#define NOW_MS 1780272000000LL
#define DAY_MS 86400000LL

static unit_own_db own;
static PGconn *db;

static void fresh_database(void)
{
    unit_own_db_start(&own, "unit_flips");
    db = own.db;
}

static void drop_database(void)
{
    unit_own_db_stop(&own);
    db = NULL;
}

static crm_rule *parse_ok(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    ck_assert_msg(j != NULL, "test JSON: %s", jerr.text);
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = crm_rule_parse(j, &err);
    json_decref(j);
    char *errors = json_dumps(err.errors, 0);
    ck_assert_msg(r != NULL, "%s refused: %s", text, errors ? errors : err.detail);
    free(errors);
    return r;
}

/* A timestamptz as PostgreSQL prints it, in epoch microseconds; 0 for NULL. */
static long long instant(const char *text)
{
    if (text == NULL)
        return 0;
    long long us;
    ck_assert_msg(crm_parse_pg_timestamp(text, &us), "not a timestamp: %s", text);
    return us;
}

/* The flip of each customer (in id order) that crm_rule_flip_sql gives at
 * now_ms, on a pooled connection; n of them. The caller frees the array. */
static long long *sql_flips(crm_conn *conn, const crm_rule *r, long long now_ms, int n,
                            const char *rule_text)
{
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    crm_error err = CRM_ERROR_INIT;
    crm_sqlbuf_append(&s, "SELECT c.id, ");
    ck_assert_msg(crm_rule_flip_sql(r, &s, now_ms, &arena, &err), "%s", err.detail);
    crm_sqlbuf_append(&s, " FROM customers c ORDER BY c.id");
    PGresult *res = crm_db_exec_sql(conn, crm_sqlbuf_text(&s), s.nparams, s.params, &err);
    ck_assert_msg(res != NULL, "%s\nfor %s\nSQL %s", err.detail, rule_text, crm_sqlbuf_text(&s));
    ck_assert_int_eq(PQntuples(res), n);
    long long *flips = calloc((size_t)n + 1, sizeof *flips);
    for (int i = 0; i < n; i++)
        flips[i] = instant(PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1));
    PQclear(res);
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    return flips;
}

/* Every customer's state, in id order. */
static crm_rule_state **load_states(crm_conn *conn, int *n)
{
    PGresult *res = unit_sql(db, "SELECT id FROM customers ORDER BY id", 0, NULL);
    *n = PQntuples(res);
    crm_rule_state **states = calloc((size_t)*n + 1, sizeof *states);
    for (int i = 0; i < *n; i++) {
        crm_error err = CRM_ERROR_INIT;
        states[i] = crm_rule_state_load(conn, atoll(PQgetvalue(res, i, 0)), &err);
        ck_assert_msg(states[i] != NULL, "load: %s", err.detail);
    }
    PQclear(res);
    return states;
}

static void free_states(crm_rule_state **states, int n)
{
    for (int i = 0; i < n; i++)
        crm_rule_state_free(states[i]);
    free(states);
}

static long long insert_customer(const char *created_at, const char *email, const char *birth_date)
{
    const char *params[] = {created_at, email, birth_date};
    return unit_sql_long(db,
                         "INSERT INTO customers (first_name, created_at, updated_at, email,"
                         " birth_date) VALUES ('Flip', $1, $1, $2, $3) RETURNING id",
                         3, params);
}

/* A touchpoint; offer_code NULL: none. */
static void insert_offer_touchpoint(long long id, const char *type, const char *occurred_at,
                                    const char *amount, const char *offer_code)
{
    static int serial;
    char idtext[24], event[32];
    snprintf(idtext, sizeof idtext, "%lld", id);
    snprintf(event, sizeof event, "flip%d", ++serial);
    const char *params[] = {idtext,    type, occurred_at, event, amount, amount ? "EUR" : NULL,
                            offer_code};
    PQclear(unit_sql(db,
                     "INSERT INTO touchpoints (customer_id, type, channel, direction, occurred_at,"
                     " source, event_id, amount, currency, offer_code) VALUES ($1, $2, 'web',"
                     " 'inbound', $3, 'unit', $4, $5::numeric, $6, $7)",
                     7, params));
}

static void insert_touchpoint(long long id, const char *type, const char *occurred_at,
                              const char *amount)
{
    insert_offer_touchpoint(id, type, occurred_at, amount, NULL);
}

/* A customer_metrics row with the required columns and three optional
 * timestamps (NULL: none). */
static void insert_metrics(long long id, const char *last_purchase_at,
                           const char *first_purchase_at, const char *last_inbound_at)
{
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *params[] = {idtext, last_purchase_at, first_purchase_at, last_inbound_at};
    PQclear(unit_sql(db,
                     "INSERT INTO customer_metrics (customer_id, as_of, computed_at, purchases,"
                     " refunds, unrated, historic_value, frequency, monetary, last_purchase_at,"
                     " first_purchase_at, last_inbound_at) VALUES ($1, '2026-05-31T00:00:00Z',"
                     " '2026-05-31T00:00:00Z', 0, 0, 0, 0, 0, 0, $2, $3, $4)",
                     4, params));
}

/* ---- hand-worked instants ------------------------------------------------------ */

START_TEST(a_rule_without_time_never_flips_and_its_sql_is_null)
{
    const char *rules[] = {
        "{\"field\": \"email\", \"op\": \"exists\"}",
        "{\"field\": \"created_at\", \"op\": \"exists\"}",
        "{\"field\": \"created_at\", \"op\": \"gte\", \"value\": \"2026-05-01T00:00:00Z\"}",
        "{\"touchpoints\": {\"since\": \"2026-05-01T00:00:00Z\", \"until\":"
        " \"2026-07-01T00:00:00Z\"}, \"agg\": \"count\", \"op\": \"gt\", \"value\": 0}",
        "{\"touchpoints\": {}, \"agg\": \"last\", \"op\": \"lt\","
        " \"value\": \"2026-05-01T00:00:00Z\"}",
        "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"vip\"},"
        " {\"not\": {\"field\": \"consent.email.marketing\", \"op\": \"eq\", \"value\": "
        "\"none\"}}]}",
        "{\"any\": []}",
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        crm_rule *r = parse_ok(rules[i]);
        crm_sqlbuf s;
        crm_sqlbuf_init(&s);
        crm_arena arena;
        crm_arena_init(&arena);
        crm_error err = CRM_ERROR_INIT;
        ck_assert(crm_rule_flip_sql(r, &s, NOW_MS, &arena, &err));
        ck_assert_msg(strcmp(crm_sqlbuf_text(&s), "NULL::timestamptz") == 0, "%s: %s", rules[i],
                      crm_sqlbuf_text(&s));
        ck_assert_int_eq(s.nparams, 0);
        crm_sqlbuf_free(&s);
        crm_arena_free(&arena);
        crm_rule_free(r);
    }
}
END_TEST

START_TEST(flip_sql_carries_values_only_as_parameters)
{
    crm_rule *r = parse_ok(
        "{\"any\": [{\"field\": \"created_at\", \"op\": \"gte\", \"value\": {\"days_ago\": 7}},"
        " {\"touchpoints\": {\"sku\": \"S'1\", \"within_days\": 2}, \"agg\": \"count\","
        "  \"op\": \"gt\", \"value\": 0}]}");
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_rule_flip_sql(r, &s, NOW_MS, &arena, &err));
    const char *sql = crm_sqlbuf_text(&s);
    ck_assert_ptr_null(strstr(sql, "S'1"));
    ck_assert_ptr_null(strstr(sql, "168")); /* 7 days, as hours */
    ck_assert_ptr_null(strstr(sql, "2026"));
    bool hours = false, now = false, window = false;
    for (int i = 0; i < s.nparams; i++) {
        hours |= s.params[i] != NULL && strcmp(s.params[i], "168") == 0;
        now |= s.params[i] != NULL && strcmp(s.params[i], "2026-06-01T00:00:00.000Z") == 0;
        window |= s.params[i] != NULL && strcmp(s.params[i], "2026-05-30T00:00:00.000Z") == 0;
    }
    ck_assert_msg(hours && now && window, "parameters: hours %d, now %d, window %d", hours, now,
                  window);
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    crm_rule_free(r);
}
END_TEST

/* Asserts that both answers give rule the expected instant (NULL: never)
 * for states[i], i < n, at NOW_MS, and that its value holds at the last
 * millisecond before it. */
static void assert_flips(crm_conn *conn, crm_rule_state **states, int n, const char *rule,
                         const char *const *expected)
{
    crm_rule *r = parse_ok(rule);
    long long *flips = sql_flips(conn, r, NOW_MS, n, rule);
    for (int i = 0; i < n; i++) {
        long long want = instant(expected[i]), got = crm_rule_next_flip(r, states[i], NOW_MS);
        ck_assert_msg(got == want, "%s, customer %d: in process %lld, expected %s (%lld)", rule, i,
                      got, expected[i] ? expected[i] : "never", want);
        ck_assert_msg(flips[i] == want, "%s, customer %d: SQL %lld, expected %s (%lld)", rule, i,
                      flips[i], expected[i] ? expected[i] : "never", want);
        if (want != 0) {
            bool at_now = crm_rule_eval(r, states[i], NOW_MS);
            ck_assert_msg(crm_rule_eval(r, states[i], (want - 1) / 1000) == at_now,
                          "%s, customer %d: changed before its flip", rule, i);
        }
    }
    free(flips);
    crm_rule_free(r);
}

START_TEST(hand_worked_instants_agree_both_ways)
{
    /* a: created three and a half days ago, born 2026-05-20, purchases 10
     *    and 40 days ago, a page view two days ahead, metrics;
     * b: created exactly 7 days ago, nothing else. */
    long long a = insert_customer("2026-05-28T12:00:00Z", NULL, "2026-05-20");
    long long b = insert_customer("2026-05-25T00:00:00Z", "b@example.com", NULL);
    insert_touchpoint(a, "purchase", "2026-05-22T00:00:00Z", "10");
    insert_touchpoint(a, "purchase", "2026-04-22T00:00:00Z", "5");
    insert_touchpoint(a, "page_view", "2026-06-03T00:00:00Z", NULL);
    insert_metrics(a, "2026-05-22T00:00:00Z", "2026-04-22T00:00:00Z", NULL);
    ck_assert_int_lt(a, b);
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_msg(conn != NULL, "%s", err.detail);
    int n;
    crm_rule_state **states = load_states(conn, &n);
    ck_assert_int_eq(n, 2);
    struct {
        const char *rule;
        const char *a, *b; /* the instants expected, NULL for never */
    } cases[] = {
        /* the purchase of 10 days ago leaves a 30-day window 30 days after
         * it, at the microsecond after; the one of 40 days ago is out */
        {"{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30}, \"agg\": \"count\","
         " \"op\": \"gte\", \"value\": 1}",
         "2026-06-21 00:00:00.000001+00", NULL},
        /* a 45-day window holds both: the earlier leaves first */
        {"{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 45}, \"agg\": \"sum\","
         " \"op\": \"gt\", \"value\": 12}",
         "2026-06-06 00:00:00.000001+00", NULL},
        /* ... but "last" changes only when the latest leaves */
        {"{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 45}, \"agg\": \"last\","
         " \"op\": \"exists\"}",
         "2026-07-06 00:00:00.000001+00", NULL},
        /* a touchpoint dated ahead is inside its window already */
        {"{\"touchpoints\": {\"type\": \"page_view\", \"within_days\": 1}, \"agg\": \"count\","
         " \"op\": \"eq\", \"value\": 1}",
         "2026-06-04 00:00:00.000001+00", NULL},
        /* created_at >= now - 7 days holds through created_at + 7 days;
         * for b that is now itself */
        {"{\"field\": \"created_at\", \"op\": \"gte\", \"value\": {\"days_ago\": 7}}",
         "2026-06-04 12:00:00.000001+00", "2026-06-01 00:00:00.000001+00"},
        /* > stops at created_at + 7 days; for b it has stopped at now */
        {"{\"field\": \"created_at\", \"op\": \"gt\", \"value\": {\"days_ago\": 7}}",
         "2026-06-04 12:00:00+00", NULL},
        {"{\"field\": \"created_at\", \"op\": \"lt\", \"value\": {\"days_ago\": 7}}",
         "2026-06-04 12:00:00.000001+00", "2026-06-01 00:00:00.000001+00"},
        {"{\"field\": \"created_at\", \"op\": \"eq\", \"value\": {\"days_ago\": 7}}",
         "2026-06-04 12:00:00+00", "2026-06-01 00:00:00.000001+00"},
        /* between: the upper end reaches created_at first; for b it
         * reached it at now, and the lower end passes it in 30 days */
        {"{\"field\": \"created_at\", \"op\": \"between\","
         " \"value\": [{\"days_ago\": 30}, {\"days_ago\": 7}]}",
         "2026-06-04 12:00:00+00", "2026-06-24 00:00:00.000001+00"},
        {"{\"field\": \"created_at\", \"op\": \"between\","
         " \"value\": [\"2026-01-01T00:00:00Z\", {\"days_ago\": 7}]}",
         "2026-06-04 12:00:00+00", NULL},
        /* nested: the earliest of the comparisons under not and any, unless a
         * condition time does not move decides the any (or an all) */
        {"{\"not\": {\"any\": [{\"field\": \"email\", \"op\": \"exists\"},"
         " {\"field\": \"created_at\", \"op\": \"lt\", \"value\": {\"days_ago\": 7}},"
         " {\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30}, \"agg\": \"count\","
         "  \"op\": \"gte\", \"value\": 1}]}}",
         /* b has an e-mail: the any holds whatever time does, until a write */
         "2026-06-04 12:00:00.000001+00", NULL},
        {"{\"all\": [{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30},"
         " \"agg\": \"count\", \"op\": \"gte\", \"value\": 1},"
         " {\"not\": {\"field\": \"email\", \"op\": \"exists\"}}]}",
         "2026-06-21 00:00:00.000001+00", NULL},
        /* "last" against days_ago: the latest purchase + N days */
        {"{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30}, \"agg\": \"last\","
         " \"op\": \"gte\", \"value\": {\"days_ago\": 20}}",
         "2026-06-11 00:00:00.000001+00", NULL},
        {"{\"touchpoints\": {\"type\": \"purchase\"}, \"agg\": \"last\", \"op\": \"eq\","
         " \"value\": {\"days_ago\": 10}}",
         "2026-06-01 00:00:00.000001+00", NULL},
        /* a date against the UTC day N days ago: 2026-05-20 < that day
         * from 2026-06-10 on; equal to it through 2026-06-01 */
        {"{\"field\": \"birth_date\", \"op\": \"lt\", \"value\": {\"days_ago\": 20}}",
         "2026-06-10 00:00:00+00", NULL},
        {"{\"field\": \"birth_date\", \"op\": \"eq\", \"value\": {\"days_ago\": 12}}",
         "2026-06-02 00:00:00+00", NULL},
        {"{\"field\": \"birth_date\", \"op\": \"eq\", \"value\": {\"days_ago\": 5}}", NULL, NULL},
        /* a metric's timestamp; no metrics row, never */
        {"{\"field\": \"metrics.last_purchase_at\", \"op\": \"gte\","
         " \"value\": {\"days_ago\": 30}}",
         "2026-06-21 00:00:00.000001+00", NULL},
        {"{\"field\": \"metrics.last_inbound_at\", \"op\": \"gte\","
         " \"value\": {\"days_ago\": 30}}",
         NULL, NULL},
        {"{\"field\": \"email\", \"op\": \"exists\"}", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *expected[] = {cases[i].a, cases[i].b};
        assert_flips(conn, states, n, cases[i].rule, expected);
    }
    /* As wide as a rule gets, one term per comparison: created_at >=
     * now - k days, for k = 0 to 198, first passes created_at in 4 days
     * for a, in 7 for b. */
    char *wide = malloc(200 * 80), *p = wide;
    p += sprintf(p, "{\"all\": [");
    for (int k = 0; k < CRM_RULE_MAX_NODES - 1; k++)
        p += sprintf(
            p, "%s{\"field\": \"created_at\", \"op\": \"gte\", \"value\": {\"days_ago\": %d}}",
            k ? ", " : "", k);
    sprintf(p, "]}");
    const char *expected[] = {"2026-06-01 12:00:00.000001+00", "2026-06-01 00:00:00.000001+00"};
    assert_flips(conn, states, n, wide, expected);
    free(wide);
    free_states(states, n);
    crm_db_release(conn);
}
END_TEST

/* The flip of rule for the only customer, by SQL run in the session time
 * zone zone, as PostgreSQL prints it there. The caller frees it. */
static char *flip_in_zone(const char *rule, long long now_ms, const char *zone)
{
    crm_rule *r = parse_ok(rule);
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    crm_error err = CRM_ERROR_INIT;
    crm_sqlbuf_append(&s, "SELECT ");
    ck_assert(crm_rule_flip_sql(r, &s, now_ms, &arena, &err));
    crm_sqlbuf_append(&s, " FROM customers c");
    const char *params[] = {zone};
    PQclear(unit_sql(db, "SELECT set_config('TimeZone', $1, false)", 1, params));
    PGresult *res = unit_sql(db, crm_sqlbuf_text(&s), s.nparams, s.params);
    char *out = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQclear(unit_sql(db, "RESET TimeZone", 0, NULL));
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    crm_rule_free(r);
    return out;
}

START_TEST(days_are_24_hours_whatever_the_session_time_zone)
{
    /* Rome moves its clocks on 2026-03-29: that day is 23 hours long there,
     * and a calendar day added in Rome would end an hour early. */
    insert_customer("2026-03-28T12:00:00Z", NULL, "2026-03-27");
    const long long now_ms = 1774656000000LL; /* 2026-03-28T00:00:00Z */
    char *created =
        flip_in_zone("{\"field\": \"created_at\", \"op\": \"gt\", \"value\": {\"days_ago\": 2}}",
                     now_ms, "Europe/Rome");
    ck_assert_str_eq(created, "2026-03-30 14:00:00+02");
    free(created);
    /* the UTC day three days before now reaches 2026-03-27 at 2026-03-30T00:00Z */
    char *born =
        flip_in_zone("{\"field\": \"birth_date\", \"op\": \"lte\", \"value\": {\"days_ago\": 3}}",
                     now_ms, "Europe/Rome");
    ck_assert_str_eq(born, "2026-03-30 02:00:00+02");
    free(born);
}
END_TEST

/* ---- the property test ---------------------------------------------------------- */

typedef struct rng {
    unsigned long long s;
} rng;

static unsigned long long next(rng *g)
{
    g->s ^= g->s >> 12;
    g->s ^= g->s << 25;
    g->s ^= g->s >> 27;
    return g->s * 2685821657736338717ULL;
}

static int pick(rng *g, int n)
{
    return (int)(next(g) % (unsigned long long)n);
}

static bool chance(rng *g, int percent)
{
    return pick(g, 100) < percent;
}

#define PICK(g, pool) ((pool)[pick((g), (int)(sizeof(pool) / sizeof((pool)[0])))])

/* Days that both the data and the rules use, so that boundaries meet. */
static const int day_pool[] = {0, 1, 2, 3, 7, 10, 30, 90};

/* An instant near a boundary: whole days from now (mostly before it), on
 * it or a microsecond or a millisecond off it, or anywhere in its day; as
 * RFC 3339 text to the microsecond. */
static void random_instant(rng *g, long long now_ms, char *out, size_t size)
{
    long long days = PICK(g, day_pool) + (chance(g, 20) ? pick(g, 5) : 0);
    long long us = (now_ms + (chance(g, 85) ? -days : days) * DAY_MS) * 1000;
    static const long long offsets[] = {0, 1, -1, 1000, -1000, 999, -999};
    us += chance(g, 80) ? PICK(g, offsets) : (long long)(next(g) % (DAY_MS * 1000ULL));
    long long ms = us / 1000, rest = us % 1000;
    if (rest < 0) {
        rest += 1000;
        ms--;
    }
    char text[32];
    size_t n = crm_format_timestamp(ms, text);
    text[n - 1] = '\0'; /* the Z */
    snprintf(out, size, "%s%03lldZ", text, rest);
}

/* A UTC day near today. */
static void random_day(rng *g, char *out, size_t size)
{
    char text[32];
    crm_format_timestamp(NOW_MS - (PICK(g, day_pool) + pick(g, 3)) * DAY_MS, text);
    snprintf(out, size, "%.10s", text);
}

static void random_customer(rng *g)
{
    char created[40], updated[40], birth[16];
    random_instant(g, NOW_MS, created, sizeof created);
    random_instant(g, NOW_MS, updated, sizeof updated);
    random_day(g, birth, sizeof birth);
    const char *params[] = {created, updated, chance(g, 70) ? birth : NULL,
                            chance(g, 50) ? "x@example.com" : NULL};
    long long id = unit_sql_long(db,
                                 "INSERT INTO customers (first_name, created_at, updated_at,"
                                 " birth_date, email) VALUES ('Flip', $1, $2, $3, $4) RETURNING id",
                                 4, params);
    if (chance(g, 70)) {
        char t[3][40];
        for (int i = 0; i < 3; i++)
            random_instant(g, NOW_MS, t[i], sizeof t[i]);
        insert_metrics(id, chance(g, 80) ? t[0] : NULL, chance(g, 80) ? t[1] : NULL,
                       chance(g, 80) ? t[2] : NULL);
    }
    static const char *const types[] = {"purchase", "purchase", "refund", "page_view",
                                        "offer_rejected"};
    static const char *const amounts[] = {"10", "2.5", "-3", NULL};
    static const char *const offers[] = {"OFF-1", "OFF-2", NULL};
    for (int i = pick(g, 8); i > 0; i--) {
        char when[40];
        random_instant(g, NOW_MS, when, sizeof when);
        insert_offer_touchpoint(id, PICK(g, types), when, PICK(g, amounts), PICK(g, offers));
    }
}

/* ---- random time-heavy rules ---- */

static json_t *time_value(rng *g, bool date)
{
    if (chance(g, 75))
        return json_pack("{s:i}", "days_ago", PICK(g, day_pool));
    char text[40];
    if (date) {
        random_day(g, text, sizeof text);
        return json_string(text);
    }
    crm_format_timestamp(NOW_MS - PICK(g, day_pool) * DAY_MS + pick(g, 3) - 1, text);
    return json_string(text);
}

static void set_time_op(rng *g, json_t *node, bool date)
{
    static const char *const ops[] = {"eq", "ne", "lt", "lte", "gt", "gte", "between", "exists"};
    const char *op = PICK(g, ops);
    json_object_set_new(node, "op", json_string(op));
    if (strcmp(op, "between") == 0)
        json_object_set_new(node, "value",
                            json_pack("[o, o]", time_value(g, date), time_value(g, date)));
    else if (strcmp(op, "exists") != 0)
        json_object_set_new(node, "value", time_value(g, date));
}

static json_t *random_time_leaf(rng *g)
{
    static const char *const fields[] = {"created_at",
                                         "updated_at",
                                         "metrics.last_purchase_at",
                                         "metrics.first_purchase_at",
                                         "metrics.last_inbound_at",
                                         "birth_date"};
    const char *field = PICK(g, fields);
    json_t *node = json_pack("{s:s}", "field", field);
    set_time_op(g, node, strcmp(field, "birth_date") == 0);
    return node;
}

static json_t *random_aggregate_leaf(rng *g)
{
    json_t *filter = json_object();
    if (chance(g, 60))
        json_object_set_new(filter, "type", json_string(chance(g, 70) ? "purchase" : "page_view"));
    if (chance(g, 20))
        json_object_set_new(filter, "offer_code", json_string(chance(g, 50) ? "OFF-1" : "OFF-2"));
    int window = pick(g, 10);
    char text[32];
    if (window < 7) {
        int days = PICK(g, day_pool);
        json_object_set_new(filter, "within_days", json_integer(days > 0 ? days : 1));
        if (window == 0) {
            crm_format_timestamp(NOW_MS + (pick(g, 5) - 2) * DAY_MS, text);
            json_object_set_new(filter, "until", json_string(text));
        }
    } else if (window == 7) {
        crm_format_timestamp(NOW_MS - 20 * DAY_MS, text);
        json_object_set_new(filter, "since", json_string(text));
    }
    static const char *const aggs[] = {"count", "sum", "last", "last"};
    const char *agg = PICK(g, aggs);
    json_t *node = json_pack("{s:o, s:s}", "touchpoints", filter, "agg", agg);
    if (strcmp(agg, "last") == 0) {
        set_time_op(g, node, false);
        return node;
    }
    static const char *const ops[] = {"eq", "ne", "lt", "lte", "gt", "gte"};
    json_object_set_new(node, "op", json_string(PICK(g, ops)));
    json_object_set_new(node, "value", json_integer(pick(g, 4)));
    return node;
}

static json_t *random_static_leaf(rng *g)
{
    if (chance(g, 50))
        return json_pack("{s:s, s:s}", "field", "email", "op", "exists");
    return json_pack("{s:s, s:s, s:s}", "field", "consent.email.marketing", "op", "eq", "value",
                     "none");
}

static json_t *random_rule(rng *g, int depth)
{
    int k = depth >= 3 ? 3 + pick(g, 7) : pick(g, 10);
    if (k <= 1) {
        json_t *children = json_array();
        for (int i = pick(g, 4); i > 0; i--)
            json_array_append_new(children, random_rule(g, depth + 1));
        return json_pack("{s:o}", k == 0 ? "all" : "any", children);
    }
    if (k == 2)
        return json_pack("{s:o}", "not", random_rule(g, depth + 1));
    int leaf = pick(g, 100);
    if (leaf < 45)
        return random_time_leaf(g);
    if (leaf < 85)
        return random_aggregate_leaf(g);
    return random_static_leaf(g);
}

/* ---- the checks ---- */

typedef struct tally {
    int flips;   /* (rule, customer) pairs with a flip at the first now */
    int changes; /* flips at which the value did change */
    int steps;   /* flips walked */
} tally;

/* The last millisecond strictly before the instant f (microseconds). */
static long long ms_before(long long f)
{
    return (f - 1) / 1000;
}

/* Walks st's timeline under r from now_ms as a live segment would: at each
 * flip asks for the next. Fails unless each flip lies after the time it
 * was asked at and the value holds at every millisecond sampled before it,
 * and, after the last, at times far ahead. */
static void walk(rng *g, const crm_rule *r, const crm_rule_state *st, long long now_ms,
                 const char *rule_text, tally *t)
{
    long long at = now_ms;
    bool value = crm_rule_eval(r, st, at);
    for (int step = 0; step < 6; step++) {
        long long f = crm_rule_next_flip(r, st, at);
        if (f == 0) {
            const long long ahead[] = {1, DAY_MS, 400 * DAY_MS + 1,
                                       (long long)(next(g) % (800 * DAY_MS)), 40000 * DAY_MS};
            for (size_t i = 0; i < sizeof ahead / sizeof ahead[0]; i++)
                ck_assert_msg(crm_rule_eval(r, st, at + ahead[i]) == value,
                              "%s: customer %lld changes at %lld ms with no flip after %lld ms",
                              rule_text, crm_rule_state_customer(st), at + ahead[i], at);
            return;
        }
        ck_assert_msg(f > at * 1000, "%s: customer %lld flips at %lld us, not after %lld ms",
                      rule_text, crm_rule_state_customer(st), f, at);
        long long last = ms_before(f),
                  between = at + (long long)(next(g) % (unsigned long long)(last - at + 1));
        ck_assert_msg(crm_rule_eval(r, st, last) == value && crm_rule_eval(r, st, between) == value,
                      "%s: customer %lld changes before its flip at %lld us (asked at %lld ms)",
                      rule_text, crm_rule_state_customer(st), f, at);
        at = (f + 999) / 1000; /* the first millisecond not before the flip */
        bool then = crm_rule_eval(r, st, at);
        t->changes += then != value;
        t->steps++;
        value = then;
    }
}

/* SQL and in process agree at now_ms on every customer. */
static void assert_same_flips(crm_conn *conn, crm_rule_state **states, int n, const crm_rule *r,
                              long long now_ms, const char *rule_text, tally *t)
{
    long long *flips = sql_flips(conn, r, now_ms, n, rule_text);
    for (int i = 0; i < n; i++) {
        long long mine = crm_rule_next_flip(r, states[i], now_ms);
        ck_assert_msg(flips[i] == mine, "%s at %lld ms: customer %lld, SQL %lld, in process %lld",
                      rule_text, now_ms, crm_rule_state_customer(states[i]), flips[i], mine);
        if (t != NULL)
            t->flips += mine != 0;
    }
    free(flips);
}

#define PROPERTY_CUSTOMERS 300
#define PROPERTY_RULES 300

START_TEST(sql_and_state_agree_and_nothing_changes_before_the_flip)
{
    rng g = {0x2545f4914f6cdd1dULL};
    PQclear(unit_sql(db, "BEGIN", 0, NULL));
    for (int i = 0; i < PROPERTY_CUSTOMERS; i++)
        random_customer(&g);
    PQclear(unit_sql(db, "COMMIT", 0, NULL));
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_msg(conn != NULL, "%s", err.detail);
    int n;
    crm_rule_state **states = load_states(conn, &n);
    ck_assert_int_eq(n, PROPERTY_CUSTOMERS);
    tally t = {0, 0, 0};
    for (int i = 0; i < PROPERTY_RULES; i++) {
        json_t *rule = random_rule(&g, 1);
        char *text = json_dumps(rule, JSON_COMPACT);
        json_decref(rule);
        crm_rule *r = parse_ok(text);
        assert_same_flips(conn, states, n, r, NOW_MS, text, &t);
        /* and at a later now, off the whole days */
        long long later = NOW_MS + (1 + pick(&g, 40)) * DAY_MS + pick(&g, (int)DAY_MS);
        assert_same_flips(conn, states, n, r, later, text, NULL);
        for (int c = 0; c < n; c++)
            walk(&g, r, states[c], NOW_MS, text, &t);
        crm_rule_free(r);
        free(text);
    }
    /* Agreeing proves little unless many customers have a flip, and the
     * flips must often be real changes, not only early calls. */
    ck_assert_msg(t.flips > PROPERTY_RULES * PROPERTY_CUSTOMERS / 4, "only %d flips over %d rules",
                  t.flips, PROPERTY_RULES);
    ck_assert_msg(t.changes > t.steps / 4, "only %d of %d flips changed the value", t.changes,
                  t.steps);
    free_states(states, n);
    crm_db_release(conn);
}
END_TEST

Suite *segment_flips_suite(void)
{
    Suite *s = suite_create("segment_flips");
    TCase *sql = tcase_create("sql");
    tcase_add_test(sql, a_rule_without_time_never_flips_and_its_sql_is_null);
    tcase_add_test(sql, flip_sql_carries_values_only_as_parameters);
    suite_add_tcase(s, sql);
    TCase *agree = tcase_create("agreement");
    tcase_add_checked_fixture(agree, fresh_database, drop_database);
    tcase_set_timeout(agree, 120);
    tcase_add_test(agree, hand_worked_instants_agree_both_ways);
    tcase_add_test(agree, days_are_24_hours_whatever_the_session_time_zone);
    tcase_add_test(agree, sql_and_state_agree_and_nothing_changes_before_the_flip);
    suite_add_tcase(s, agree);
    return s;
}

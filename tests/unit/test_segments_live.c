/*
 * test_segments_live.c — a segment's build and the writes beside it
 * (lib/segments/live.c): while a thread keeps moving customers in and out
 * of Italy, each write refreshing the segments in its transaction, a
 * segment is built from nothing and then rebuilt under a new rule. When
 * everything has settled, the membership must be exactly what the rule
 * gives, the log must agree with it entry by entry, and the kept count
 * (size plus its deltas, folded or not) must equal it: a build that missed a
 * write, or undid one, leaves a difference.
 */
#include "consents.h"
#include "customers.h"
#include "touchpoints.h"
#include "arena.h"
#include "list/sqlbuf.h"
#include "jobs.h"
#include "clock.h"
#include "segment_store.h"
#include "segments.h"
#include "support.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CUSTOMERS 3000
/* One writer: the suite's pool has three connections, and the job's
 * progress and the keeper of its lease need the others while the writer
 * waits for the build's locks holding its own. */
#define WRITERS 1

static unit_own_db own;
static atomic_bool stop_writers;
static long long first_id;
static atomic_long writes;

static void fresh_database(void)
{
    unit_own_db_start(&own, "unit_segments_live");
    crm_segments_register_jobs();
}

static void drop_database(void)
{
    unit_own_db_stop(&own);
}

/* Moves random customers between Italy and France until told to stop. */
static void *writer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    crm_write_ctx ctx = {0};
    while (!atomic_load(&stop_writers)) {
        long long id = first_id + rand_r(&seed) % CUSTOMERS;
        json_t *patch =
            json_pack("{s:{s:s}}", "address", "country", rand_r(&seed) % 2 ? "IT" : "FR");
        crm_error err = CRM_ERROR_INIT;
        json_t *rep = crm_customer_patch(id, patch, NULL, &ctx, &err);
        json_decref(patch);
        if (rep != NULL)
            atomic_fetch_add(&writes, 1);
        json_decref(rep);
        crm_error_clear(&err); /* a conflict on the same row is fine: retried by the next */
    }
    return NULL;
}

static long long sql_number(const char *sql, const char *param)
{
    const char *params[] = {param};
    return unit_sql_long(own.db, sql, param ? 1 : 0, params);
}

static void run_job(long long job)
{
    crm_jobs_config cfg = {.db = {.url = own.conninfo, .pool_size = 1, .connect_timeout_s = 2},
                           .lease_s = 30,
                           .worker = "unit"};
    crm_error err = CRM_ERROR_INIT;
    long long ran = 0;
    ck_assert_msg(crm_jobs_run_one(&cfg, &ran, &err), "run: %s", err.detail);
    ck_assert_int_eq(ran, job);
    char id[24];
    snprintf(id, sizeof id, "%lld", job);
    ck_assert_int_eq(
        sql_number("SELECT count(*) FROM jobs WHERE id = $1::bigint AND state = 'succeeded'", id),
        1);
}

/* The membership of seg is exactly the active customers in country. */
static void assert_exact(long long seg, const char *country)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", seg);
    const char *params[] = {s, country};
    ck_assert_int_eq(
        unit_sql_long(own.db,
                      "SELECT count(*) FROM ((SELECT id FROM customers WHERE status ="
                      " 'active' AND country = $2 EXCEPT SELECT customer_id FROM"
                      " segment_memberships WHERE segment_id = $1::bigint) UNION ALL"
                      " (SELECT customer_id FROM segment_memberships WHERE segment_id ="
                      " $1::bigint EXCEPT SELECT id FROM customers WHERE status ="
                      " 'active' AND country = $2)) d",
                      2, params),
        0);
    /* Every customer's last logged change says where it stands. */
    ck_assert_int_eq(
        sql_number("SELECT count(*) FROM (SELECT DISTINCT ON (customer_id) customer_id,"
                   " entered FROM segment_changes WHERE segment_id = $1::bigint ORDER BY"
                   " customer_id, id DESC) l WHERE l.entered IS DISTINCT FROM EXISTS ("
                   "SELECT 1 FROM segment_memberships m WHERE m.segment_id = $1::bigint"
                   " AND m.customer_id = l.customer_id)",
                   s),
        0);
    ck_assert_int_eq(sql_number("SELECT count(*) FROM segment_memberships m WHERE segment_id ="
                                " $1::bigint AND NOT EXISTS (SELECT 1 FROM segment_changes x WHERE"
                                " x.segment_id = m.segment_id AND x.customer_id = m.customer_id)",
                                s),
                     0);
    /* The kept count. */
    long long count = 0;
    char state[16];
    crm_error err = CRM_ERROR_INIT;
    crm_query q;
    crm_segment_count_query(&q, seg, 0);
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    count = atoll(PQgetvalue(res, 0, 0));
    snprintf(state, sizeof state, "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    ck_assert_str_eq(state, "live");
    ck_assert_int_eq(count, sql_number("SELECT count(*) FROM segment_memberships WHERE segment_id ="
                                       " $1::bigint",
                                       s));
}

START_TEST(a_build_beside_writes_neither_misses_nor_undoes_one)
{
    PQclear(unit_sql(own.db,
                     "INSERT INTO customers (first_name, country) SELECT 'w' || g,"
                     " CASE WHEN g % 2 = 0 THEN 'IT' ELSE 'FR' END FROM generate_series(1, 3000) g",
                     0, NULL));
    first_id = sql_number("SELECT min(id) FROM customers", NULL);
    atomic_store(&stop_writers, false);
    atomic_store(&writes, 0);
    pthread_t threads[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, writer, (void *)(uintptr_t)(i + 7)), 0);

    crm_error err = CRM_ERROR_INIT;
    json_t *body = json_pack("{s:s, s:{s:s, s:s, s:s}}", "name", "italians", "rule", "field",
                             "address.country", "op", "eq", "value", "IT");
    json_t *seg = crm_segment_create(body, 0, &err);
    json_decref(body);
    ck_assert_msg(seg != NULL, "%s", err.detail);
    long long id = json_integer_value(json_object_get(seg, "id"));
    long long job = json_integer_value(json_object_get(seg, "build_job_id"));
    json_decref(seg);
    unit_sleep_ms(50);
    run_job(job);

    /* A new rule while the writes go on. */
    unit_sleep_ms(50);
    json_t *patch = json_pack("{s:{s:s, s:s, s:s}}", "rule", "field", "address.country", "op", "eq",
                              "value", "FR");
    seg = crm_segment_patch(id, patch, NULL, 0, &err);
    json_decref(patch);
    ck_assert_msg(seg != NULL, "%s", err.detail);
    job = json_integer_value(json_object_get(seg, "build_job_id"));
    json_decref(seg);
    run_job(job);
    unit_sleep_ms(100);
    atomic_store(&stop_writers, true);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(threads[i], NULL);
    ck_assert_int_gt(atomic_load(&writes), 20);
    assert_exact(id, "FR");

    /* The upkeep folds the deltas: the count stays right. */
    long did = 0;
    ck_assert_msg(crm_segments_tick(100, &did, &err), "%s", err.detail);
    ck_assert_int_eq(sql_number("SELECT count(*) FROM segment_size_deltas", NULL), 0);
    assert_exact(id, "FR");
    /* The history has the build and the new rule. */
    char s[24];
    snprintf(s, sizeof s, "%lld", id);
    ck_assert_int_eq(sql_number("SELECT count(*) FROM segment_sizes WHERE segment_id = $1::bigint"
                                " AND reason IN ('build', 'rule')",
                                s),
                     2);
}
END_TEST

/* ---- many segments, many kinds of write ------------------------------------------- */

/* Six segments of two ranks over 300 customers, then 40 rounds of random
 * writes (a batch of touchpoints of several types, channels, skus and
 * dates, a move of country, a consent decision): after each round every
 * segment's membership is exactly what its rule gives, evaluated in SQL
 * over the whole base, and the log agrees with it. */
static const char *const mixed_rules[] = {
    "{\"all\": [{\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"IT\"},"
    " {\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30}, \"agg\": \"count\","
    " \"op\": \"gte\", \"value\": 2}]}",
    "{\"touchpoints\": {\"channel\": \"web\", \"sku\": \"S-1\"}, \"agg\": \"sum\", \"op\": \"gt\","
    " \"value\": 15}",
    "{\"not\": {\"touchpoints\": {\"type\": \"email_opened\", \"within_days\": 60}, \"agg\": "
    "\"count\","
    " \"op\": \"eq\", \"value\": 0}}",
    "{\"any\": [{\"field\": \"consent.email.marketing\", \"op\": \"eq\", \"value\": \"granted\"},"
    " {\"touchpoints\": {\"type\": \"purchase\"}, \"agg\": \"last\", \"op\": \"gte\","
    " \"value\": {\"days_ago\": 10}}]}",
};

static long long create_segment(const char *name, const char *rule_text)
{
    json_error_t jerr;
    json_t *rule = json_loads(rule_text, 0, &jerr);
    ck_assert_msg(rule != NULL, "%s", jerr.text);
    json_t *body = json_pack("{s:s, s:o}", "name", name, "rule", rule);
    crm_error err = CRM_ERROR_INIT;
    json_t *seg = crm_segment_create(body, 0, &err);
    json_decref(body);
    ck_assert_msg(seg != NULL, "%s", err.detail);
    long long id = json_integer_value(json_object_get(seg, "id"));
    run_job(json_integer_value(json_object_get(seg, "build_job_id")));
    json_decref(seg);
    return id;
}

/* The customers a segment's rule holds for now, against its membership. */
static void assert_rule_exact(long long seg)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", seg);
    char *rule = NULL;
    {
        const char *params[] = {s};
        PGresult *res =
            unit_sql(own.db, "SELECT rule::text FROM segments WHERE id = $1::bigint", 1, params);
        rule = strdup(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    json_error_t jerr;
    json_t *json = json_loads(rule, 0, &jerr);
    free(rule);
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = crm_rule_parse(json, &err);
    json_decref(json);
    ck_assert_msg(r != NULL, "%s", err.detail);
    crm_sqlbuf b;
    crm_sqlbuf_init(&b);
    crm_arena arena;
    crm_arena_init(&arena);
    int pseg = crm_sqlbuf_param(&b, s);
    crm_sqlbuf_append(&b, "SELECT count(*), string_agg(c.id || ':' || EXISTS (SELECT 1 FROM "
                          "segment_memberships m WHERE m.segment_id = ");
    crm_sqlbuf_placeholder(&b, pseg);
    crm_sqlbuf_append(&b,
                      "::bigint AND m.customer_id = c.id) || ':' || (SELECT count(*) FROM "
                      "touchpoints t WHERE t.customer_id = c.id AND t.type = 'email_opened') || "
                      "':' || (SELECT coalesce(string_agg(x.entered || '/' || x.cause, ','), '') "
                      "FROM segment_changes x WHERE x.customer_id = c.id AND x.segment_id = ");
    crm_sqlbuf_placeholder(&b, pseg);
    crm_sqlbuf_append(&b, "::bigint), ' ') FROM customers c WHERE (c.status = 'active' AND (");
    ck_assert(crm_rule_sql(r, &b, crm_wall_ms(), &arena, &err));
    crm_sqlbuf_append(&b, ")) IS DISTINCT FROM EXISTS (SELECT 1 FROM segment_memberships m WHERE"
                          " m.segment_id = ");
    crm_sqlbuf_placeholder(&b, pseg);
    crm_sqlbuf_append(&b, "::bigint AND m.customer_id = c.id)");
    ck_assert(crm_sqlbuf_ok(&b));
    PGresult *res = unit_sql(own.db, crm_sqlbuf_text(&b), b.nparams, b.params);
    ck_assert_msg(strcmp(PQgetvalue(res, 0, 0), "0") == 0,
                  "segment %lld: %s customers stand otherwise than its rule: %.500s", seg,
                  PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
    PQclear(res);
    crm_sqlbuf_free(&b);
    crm_arena_free(&arena);
    crm_rule_free(r);
}

/* The upkeep's judging of the queued batches, until none is left. */
static void drain_queue(void)
{
    crm_error err = CRM_ERROR_INIT;
    long did;
    do
        ck_assert_msg(crm_segments_drain(3, &did, &err), "%s", err.detail);
    while (did > 0);
    ck_assert_int_eq(sql_number("SELECT count(*) FROM segment_pending", NULL), 0);
}

START_TEST(memberships_stay_exact_through_random_writes_to_many_segments)
{
    PQclear(unit_sql(own.db,
                     "INSERT INTO customers (first_name, country) SELECT 'm' || g,"
                     " (ARRAY['IT', 'FR', 'DE'])[1 + g % 3] FROM generate_series(1, 300) g",
                     0, NULL));
    first_id = sql_number("SELECT min(id) FROM customers", NULL);
    long long segs[6];
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "mixed %d", i);
        segs[i] = create_segment(name, mixed_rules[i]);
    }
    /* Rank 1: segments that name the first two. */
    char rule[256];
    snprintf(rule, sizeof rule, "{\"any\": [{\"segment\": %lld}, {\"segment\": %lld}]}", segs[0],
             segs[1]);
    segs[4] = create_segment("either", rule);
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"segment\": %lld}, {\"field\": \"address.country\", \"op\": \"ne\","
             " \"value\": \"DE\"}]}",
             segs[3]);
    segs[5] = create_segment("reachable", rule);
    unsigned seed = 20261204;
    static const char *const types[] = {"purchase", "email_opened", "visit"};
    static const char *const channels[] = {"web", "store", "email"};
    static const char *const countries[] = {"IT", "FR", "DE"};
    crm_write_ctx ctx = {0};
    long long now_s = crm_wall_ms() / 1000;
    for (int round = 0; round < 40; round++) {
        json_t *items = json_array();
        int n = 1 + rand_r(&seed) % 30;
        for (int k = 0; k < n; k++) {
            char when[32], event[48];
            time_t t =
                (time_t)(now_s - (long long)(rand_r(&seed) % 90) * 86400 - rand_r(&seed) % 86400);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
            snprintf(event, sizeof event, "r%d-%d", round, k);
            const char *type = types[rand_r(&seed) % 3];
            json_t *tp =
                json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "customer_id",
                          (json_int_t)(first_id + rand_r(&seed) % 300), "channel",
                          channels[rand_r(&seed) % 3], "type", type, "direction", "inbound",
                          "occurred_at", when, "source", "mixed", "event_id", event);
            if (strcmp(type, "purchase") == 0) {
                double amount = rand_r(&seed) % 2 ? 9.5 : 3;
                json_object_set_new(tp, "amount", json_real(amount));
                json_object_set_new(tp, "currency", json_string("EUR"));
                json_object_set_new(tp, "items",
                                    json_pack("[{s:s, s:i, s:f}]", "sku",
                                              rand_r(&seed) % 2 ? "S-1" : "S-2", "quantity", 1,
                                              "unit_price", amount));
            }
            json_array_append_new(items, tp);
        }
        crm_error err = CRM_ERROR_INIT;
        json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
        ck_assert_msg(report != NULL, "batch: %s", err.detail);
        ck_assert_msg(json_integer_value(json_object_get(report, "created")) == n,
                      "round %d: %lld of %d created", round,
                      (long long)json_integer_value(json_object_get(report, "created")), n);
        json_decref(report);
        json_decref(items);
        /* A batch of several is judged by the upkeep: at once, or after the
         * customer and consent writes below. */
        bool drain_late = rand_r(&seed) % 2;
        if (!drain_late)
            drain_queue();
        long long id = first_id + rand_r(&seed) % 300;
        json_t *patch = json_pack("{s:{s:s}}", "address", "country", countries[rand_r(&seed) % 3]);
        json_decref(crm_customer_patch(id, patch, NULL, &ctx, &err));
        json_decref(patch);
        crm_error_clear(&err);
        json_t *decision =
            json_pack("{s:s, s:s, s:s, s:s}", "channel", "email", "purpose", "marketing", "status",
                      rand_r(&seed) % 2 ? "granted" : "revoked", "source", "unit");
        json_decref(crm_consents_record(first_id + rand_r(&seed) % 300, decision, 0, &err));
        json_decref(decision);
        crm_error_clear(&err);
        if (drain_late)
            drain_queue();
        if (round % 8 == 7)
            for (int i = 0; i < 6; i++)
                assert_rule_exact(segs[i]);
    }
    for (int i = 0; i < 6; i++) {
        assert_rule_exact(segs[i]);
        char s[24];
        snprintf(s, sizeof s, "%lld", segs[i]);
        ck_assert_int_eq(
            sql_number("SELECT count(*) FROM (SELECT DISTINCT ON (customer_id)"
                       " customer_id, entered FROM segment_changes WHERE segment_id ="
                       " $1::bigint ORDER BY customer_id, id DESC) l WHERE l.entered IS"
                       " DISTINCT FROM EXISTS (SELECT 1 FROM segment_memberships m"
                       " WHERE m.segment_id = $1::bigint AND m.customer_id ="
                       " l.customer_id)",
                       s),
            0);
    }
    /* Touchpoints, customer writes and consent all moved someone. */
    ck_assert_int_ge(sql_number("SELECT count(DISTINCT cause) FROM segment_changes WHERE cause IN"
                                " ('touchpoints', 'customer', 'consent')",
                                NULL),
                     3);
}
END_TEST

/* ---- two writes to one customer at once ------------------------------------------ */

typedef struct one_purchase {
    long long customer;
    char event[48];
    pthread_barrier_t *start;
    bool ok;
} one_purchase;

static void *post_purchase(void *arg)
{
    one_purchase *p = arg;
    json_t *items = json_pack("[{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:s}]", "customer_id",
                              (json_int_t)p->customer, "channel", "store", "type", "purchase",
                              "direction", "inbound", "occurred_at", "2026-01-01T00:00:00Z",
                              "source", "skew", "event_id", p->event, "amount", 5.0, "currency",
                              "EUR");
    crm_write_ctx ctx = {0};
    crm_error err = CRM_ERROR_INIT;
    pthread_barrier_wait(p->start);
    json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
    p->ok = report != NULL && json_integer_value(json_object_get(report, "created")) == 1;
    json_decref(report);
    json_decref(items);
    crm_error_clear(&err);
    return NULL;
}

/* "Two purchases or more": two batches that each add one purchase of the
 * same customer, at the same moment, must leave it a member, whichever
 * commits first. */
START_TEST(two_writes_to_one_customer_at_once_are_judged_one_after_the_other)
{
    long long seg = create_segment("two or more",
                                   "{\"touchpoints\": {\"type\": \"purchase\"}, \"agg\": \"count\","
                                   " \"op\": \"gte\", \"value\": 2}");
    for (int round = 0; round < 20; round++) {
        char name[32];
        snprintf(name, sizeof name, "skew%d", round);
        const char *params[] = {name};
        long long customer = unit_sql_long(
            own.db, "INSERT INTO customers (first_name) VALUES ($1) RETURNING id", 1, params);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        one_purchase a = {.customer = customer, .start = &start},
                     b = {.customer = customer, .start = &start};
        snprintf(a.event, sizeof a.event, "%d-a", round);
        snprintf(b.event, sizeof b.event, "%d-b", round);
        pthread_t ta, tb;
        ck_assert_int_eq(pthread_create(&ta, NULL, post_purchase, &a), 0);
        ck_assert_int_eq(pthread_create(&tb, NULL, post_purchase, &b), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&start);
        ck_assert(a.ok && b.ok);
        char s[24], c[24];
        snprintf(s, sizeof s, "%lld", seg);
        snprintf(c, sizeof c, "%lld", customer);
        const char *two[] = {s, c};
        ck_assert_msg(unit_sql_long(own.db,
                                    "SELECT count(*) FROM segment_memberships WHERE segment_id ="
                                    " $1::bigint AND customer_id = $2::bigint",
                                    2, two) == 1,
                      "round %d: two purchases, and the customer is not a member", round);
    }
}
END_TEST

/* ---- definitions beside a build ------------------------------------------------------- */

typedef struct job_run {
    const char *conninfo;
    long long ran;
    bool ok;
} job_run;

static void *run_job_thread(void *arg)
{
    job_run *r = arg;
    crm_jobs_config cfg = {.db = {.url = r->conninfo, .pool_size = 1, .connect_timeout_s = 2},
                           .lease_s = 30,
                           .worker = "unit-side"};
    crm_error err = CRM_ERROR_INIT;
    r->ok = crm_jobs_run_one(&cfg, &r->ran, &err);
    crm_error_clear(&err);
    return NULL;
}

typedef struct creation {
    const char *rule;
    atomic_llong id; /* 0 until created, -1 when it failed */
} creation;

static void *create_thread(void *arg)
{
    creation *k = arg;
    json_error_t jerr;
    json_t *body = json_pack("{s:s, s:o}", "name", "names the rebuilt",
                             "rule", json_loads(k->rule, 0, &jerr));
    crm_error err = CRM_ERROR_INIT;
    json_t *seg = crm_segment_create(body, 0, &err);
    json_decref(body);
    atomic_store(&k->id, seg ? (long long)json_integer_value(json_object_get(seg, "build_job_id")) : -1);
    json_decref(seg);
    crm_error_clear(&err);
    return NULL;
}

/* A build that is running (here: waiting for a write under way, a side
 * connection's shared lock on its segment) does not hold up the creation of
 * another segment, even one that names it; the new segment's own build
 * comes after and reads the rebuilt members. */
START_TEST(a_definition_does_not_wait_for_a_build)
{
    PQclear(unit_sql(own.db,
                     "INSERT INTO customers (first_name, country) SELECT 'd' || g,"
                     " (ARRAY['IT', 'FR'])[1 + g % 2] FROM generate_series(1, 100) g",
                     0, NULL));
    long long a = create_segment("rebuilt", "{\"field\": \"address.country\", \"op\": \"eq\","
                                            " \"value\": \"IT\"}");
    json_t *patch = json_pack("{s:{s:s, s:s, s:s}}", "rule", "field", "address.country", "op",
                              "eq", "value", "FR");
    crm_error err = CRM_ERROR_INIT;
    json_t *seg = crm_segment_patch(a, patch, NULL, 0, &err);
    json_decref(patch);
    ck_assert_msg(seg != NULL, "%s", err.detail);
    long long rebuild = json_integer_value(json_object_get(seg, "build_job_id"));
    json_decref(seg);

    PGconn *side = PQconnectdb(own.conninfo);
    ck_assert(PQstatus(side) == CONNECTION_OK);
    char key[24];
    snprintf(key, sizeof key, "%lld", a);
    const char *kp[] = {key};
    PQclear(unit_sql(side, "BEGIN", 0, NULL));
    PQclear(unit_sql(side, "SELECT pg_advisory_xact_lock_shared(1229, $1::int)", 1, kp));
    job_run r = {.conninfo = own.conninfo};
    pthread_t tr;
    ck_assert_int_eq(pthread_create(&tr, NULL, run_job_thread, &r), 0);
    char job[24];
    snprintf(job, sizeof job, "%lld", rebuild);
    for (int i = 0; i < 100 && sql_number("SELECT count(*) FROM jobs WHERE id = $1::bigint"
                                          " AND state = 'running'", job) == 0; i++)
        unit_sleep_ms(50);
    unit_sleep_ms(300); /* the build is past its gate, waiting for the segment's lock */

    char rule[96];
    snprintf(rule, sizeof rule, "{\"segment\": %lld}", a);
    creation k = {.rule = rule};
    atomic_init(&k.id, 0);
    pthread_t tc;
    ck_assert_int_eq(pthread_create(&tc, NULL, create_thread, &k), 0);
    for (int i = 0; i < 100 && atomic_load(&k.id) == 0; i++)
        unit_sleep_ms(50);
    long long created = atomic_load(&k.id);
    bool still_building = sql_number("SELECT count(*) FROM jobs WHERE id = $1::bigint"
                                     " AND state = 'running'", job) == 1;
    PQclear(unit_sql(side, "COMMIT", 0, NULL));
    PQfinish(side);
    pthread_join(tc, NULL);
    pthread_join(tr, NULL);
    ck_assert_msg(created > 0, "the segment was not created within 5 s of a build under way");
    ck_assert(still_building);
    ck_assert(r.ok);
    ck_assert_int_eq(r.ran, rebuild);
    run_job(atomic_load(&k.id));
    assert_exact(a, "FR");
    long long b = sql_number("SELECT id FROM segments WHERE name = 'names the rebuilt'", NULL);
    assert_exact(b, "FR");
}
END_TEST

/* ---- the queue of batches, drained side by side ------------------------------------ */

typedef struct drainer {
    pthread_barrier_t *start;
    long taken;
    bool ok;
} drainer;

static void *drain_one_at_a_time(void *arg)
{
    drainer *d = arg;
    crm_error err = CRM_ERROR_INIT;
    pthread_barrier_wait(d->start);
    long did = 0;
    d->ok = true;
    do {
        d->ok = crm_segments_drain(1, &did, &err);
        d->taken += did;
    } while (d->ok && did > 0);
    crm_error_clear(&err);
    return NULL;
}

/* Four batches, each with a purchase of the same 40 customers, queued;
 * four upkeeps drain the queue at once: every batch is taken once, every
 * customer enters "two or more" once, logged once, by "touchpoints". */
START_TEST(queued_batches_are_judged_once_by_upkeeps_side_by_side)
{
    long long seg = create_segment("queued two", "{\"touchpoints\": {\"type\": \"purchase\"},"
                                                 " \"agg\": \"count\", \"op\": \"gte\", \"value\": 2}");
    PQclear(unit_sql(own.db,
                     "INSERT INTO customers (first_name) SELECT 'q' || g FROM generate_series(1, 40) g",
                     0, NULL));
    long long first = sql_number("SELECT min(id) FROM customers WHERE first_name LIKE 'q%'", NULL);
    crm_write_ctx ctx = {0};
    for (int b = 0; b < 4; b++) {
        json_t *items = json_array();
        for (int k = 0; k < 40; k++) {
            char event[32];
            snprintf(event, sizeof event, "q%d-%d", b, k);
            json_array_append_new(
                items, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:s}", "customer_id",
                                 (json_int_t)(first + k), "channel", "store", "type", "purchase",
                                 "direction", "inbound", "occurred_at", "2026-01-01T00:00:00Z",
                                 "source", "queue", "event_id", event, "amount", 5.0, "currency",
                                 "EUR"));
        }
        crm_error err = CRM_ERROR_INIT;
        json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
        ck_assert_msg(report != NULL, "batch: %s", err.detail);
        json_decref(report);
        json_decref(items);
    }
    ck_assert_int_eq(sql_number("SELECT count(*) FROM segment_pending", NULL), 4);
    char s[24];
    snprintf(s, sizeof s, "%lld", seg);
    /* Nothing judged yet: the batches answered before the upkeep ran. */
    ck_assert_int_eq(
        sql_number("SELECT count(*) FROM segment_memberships WHERE segment_id = $1::bigint", s), 0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 4);
    drainer d[4] = {{.start = &start}, {.start = &start}, {.start = &start}, {.start = &start}};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, drain_one_at_a_time, &d[i]), 0);
    long taken = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert(d[i].ok);
        taken += d[i].taken;
    }
    pthread_barrier_destroy(&start);
    ck_assert_int_eq(taken, 4);
    ck_assert_int_eq(sql_number("SELECT count(*) FROM segment_pending", NULL), 0);
    ck_assert_int_eq(
        sql_number("SELECT count(*) FROM segment_memberships WHERE segment_id = $1::bigint", s), 40);
    ck_assert_int_eq(sql_number("SELECT count(*) FROM segment_changes WHERE segment_id = $1::bigint"
                                " AND entered AND cause = 'touchpoints'",
                                s),
                     40);
    ck_assert_int_eq(
        sql_number("SELECT count(*) FROM segment_changes WHERE segment_id = $1::bigint", s), 40);
    assert_rule_exact(seg);
}
END_TEST

/* ---- which new touchpoints matter to a rule ----------------------------------------------- */

#define FACTS_NOW_MS 1800000000000LL

/* Whether rule_text would count a touchpoint like f at FACTS_NOW_MS. */
static bool counts_facts(const char *rule_text, const crm_rule_touchpoint_facts *f)
{
    json_error_t jerr;
    json_t *json = json_loads(rule_text, 0, &jerr);
    ck_assert_msg(json != NULL, "%s", jerr.text);
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = crm_rule_parse(json, &err);
    json_decref(json);
    ck_assert_msg(r != NULL, "%s", err.detail);
    bool counts = crm_rule_touchpoint_counts(r, f, FACTS_NOW_MS);
    crm_rule_free(r);
    return counts;
}

static bool counts_for(const char *rule_text, const char *type, const char *channel,
                       const char *sku, long long age_days)
{
    const char *skus[] = {"OTHER", sku};
    crm_rule_touchpoint_facts f = {.type = type,
                                   .channel = channel,
                                   .skus = skus,
                                   .nskus = sku ? 2 : 1,
                                   .occurred_us = (FACTS_NOW_MS - age_days * 86400000LL) * 1000};
    return counts_facts(rule_text, &f);
}

/* A reaction to offer offer_code (NULL: none) of campaign campaign_id (NULL:
 * none), age_days old. */
static bool offer_counts_for(const char *rule_text, const char *type, const char *offer_code,
                             const char *campaign_id, long long age_days)
{
    crm_rule_touchpoint_facts f = {.type = type,
                                   .channel = "email",
                                   .campaign_id = campaign_id,
                                   .offer_code = offer_code,
                                   .occurred_us = (FACTS_NOW_MS - age_days * 86400000LL) * 1000};
    return counts_facts(rule_text, &f);
}

START_TEST(a_new_touchpoint_matters_only_to_the_aggregates_that_count_it)
{
    const char *window = "{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30},"
                         " \"agg\": \"count\", \"op\": \"gte\", \"value\": 1}";
    ck_assert(counts_for(window, "purchase", "store", NULL, 0));
    ck_assert(counts_for(window, "purchase", "web", NULL, 29));
    ck_assert(!counts_for(window, "purchase", "store", NULL, 31)); /* before the window */
    ck_assert(!counts_for(window, "visit", "store", NULL, 0));
    const char *sku =
        "{\"not\": {\"any\": [{\"field\": \"email\", \"op\": \"exists\"},"
        " {\"touchpoints\": {\"sku\": \"A-1\", \"channel\": \"web\"}, \"agg\": \"sum\","
        " \"op\": \"gt\", \"value\": 10}]}}";
    ck_assert(counts_for(sku, "purchase", "web", "A-1", 400));
    ck_assert(!counts_for(sku, "purchase", "web", NULL, 0));
    ck_assert(!counts_for(sku, "purchase", "store", "A-1", 0));
    ck_assert(!counts_for("{\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"IT\"}",
                          "purchase", "store", NULL, 0));
    const char *since = "{\"touchpoints\": {\"since\": \"2020-01-01T00:00:00Z\", \"until\":"
                        " \"2021-01-01T00:00:00Z\"}, \"agg\": \"last\", \"op\": \"exists\"}";
    ck_assert(!counts_for(since, "purchase", "store", NULL, 0));
    const char *offer = "{\"touchpoints\": {\"type\": \"offer_rejected\", \"offer_code\":"
                        " \"OFF-1\", \"within_days\": 30}, \"agg\": \"count\", \"op\": \"gte\","
                        " \"value\": 2}";
    ck_assert(offer_counts_for(offer, "offer_rejected", "OFF-1", NULL, 0));
    ck_assert(offer_counts_for(offer, "offer_rejected", "OFF-1", "c1", 29));
    ck_assert(!offer_counts_for(offer, "offer_rejected", "OFF-2", NULL, 0));
    ck_assert(!offer_counts_for(offer, "offer_rejected", NULL, NULL, 0));    /* no offer */
    ck_assert(!offer_counts_for(offer, "offer_rejected", "off-1", NULL, 0)); /* byte for byte */
    ck_assert(!offer_counts_for(offer, "offer_accepted", "OFF-1", NULL, 0));
    ck_assert(!offer_counts_for(offer, "offer_rejected", "OFF-1", NULL, 31));
    /* beside a campaign: both must match */
    const char *both = "{\"any\": [{\"field\": \"email\", \"op\": \"exists\"},"
                       " {\"touchpoints\": {\"offer_code\": \"OFF-1\", \"campaign_id\": \"c1\"},"
                       " \"agg\": \"last\", \"op\": \"exists\"}]}";
    ck_assert(offer_counts_for(both, "offer_ignored", "OFF-1", "c1", 400));
    ck_assert(!offer_counts_for(both, "offer_ignored", "OFF-1", NULL, 0));
    ck_assert(!offer_counts_for(both, "offer_ignored", NULL, "c1", 0));
    /* no offer_code filter: any offer, or none, counts */
    ck_assert(offer_counts_for(window, "purchase", "OFF-1", NULL, 0));
    ck_assert(offer_counts_for("{\"touchpoints\": {\"type\": \"offer_rejected\"}, \"agg\":"
                               " \"count\", \"op\": \"gte\", \"value\": 1}",
                               "offer_rejected", NULL, NULL, 0));
}
END_TEST

Suite *segments_live_suite(void)
{
    Suite *s = suite_create("segments_live");
    TCase *tc = tcase_create("build beside writes");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, fresh_database, drop_database);
    tcase_add_test(tc, a_build_beside_writes_neither_misses_nor_undoes_one);
    tcase_add_test(tc, memberships_stay_exact_through_random_writes_to_many_segments);
    tcase_add_test(tc, two_writes_to_one_customer_at_once_are_judged_one_after_the_other);
    tcase_add_test(tc, queued_batches_are_judged_once_by_upkeeps_side_by_side);
    tcase_add_test(tc, a_definition_does_not_wait_for_a_build);
    suite_add_tcase(s, tc);
    TCase *facts = tcase_create("touchpoint facts");
    tcase_add_test(facts, a_new_touchpoint_matters_only_to_the_aggregates_that_count_it);
    suite_add_tcase(s, facts);
    return s;
}

/*
 * test_touchpoints.c — lib/touchpoints.h against the migrated
 * CRMD_TEST_DATABASE_URL: two batches racing with overlapping event ids
 * store each event once, customer references (ids through merges, external
 * ids, e-mails, ambiguous e-mails, create_customer), the rules an item must
 * keep, and what merge, erasure and export do to touchpoints.
 */
#include <check.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "customer_merge.h"
#include "customer_privacy.h"
#include "customers.h"
#include "db.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"
#include "touchpoints.h"

static PGconn *direct;
static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};

static void setup_db(void)
{
    direct = unit_db_start(4);
}

static void teardown_db(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

static long long customer(const char *email)
{
    const char *params[] = {email};
    return unit_sql_long(direct,
                         "INSERT INTO customers (first_name, email, email_normalized) VALUES "
                         "('Tess', $1, lower($1)) RETURNING id",
                         1, params);
}

static long count_of(const char *sql, const char *param)
{
    const char *params[] = {param};
    return unit_sql_long(direct, sql, param ? 1 : 0, params);
}

/* A purchase of customer id from source with event_id. */
static json_t *purchase(long long id, const char *source, const char *event_id)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:s}", "customer_id", (json_int_t)id,
                     "channel", "web", "type", "purchase", "direction", "inbound", "occurred_at",
                     "2026-11-01T10:00:00Z", "source", source, "event_id", event_id, "amount", 10.5,
                     "currency", "EUR");
}

static const char *status_of(json_t *report, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(report, "items"), i), "status"));
}

/* ---- races ----------------------------------------------------------------------- */

typedef struct {
    json_t *items;
    json_t *report;
} race_arg;

static void *record_batch(void *p)
{
    race_arg *a = p;
    crm_error err = CRM_ERROR_INIT;
    a->report = crm_touchpoint_record_batch(a->items, &ctx, &err);
    crm_error_clear(&err);
    return NULL;
}

START_TEST(two_racing_batches_with_shared_events_store_each_once)
{
    /* Batch A holds events 0..299, batch B 150..449 in the opposite order:
     * 150 events in both. Each event is created by exactly one batch and a
     * duplicate in the other; none is stored twice, and neither deadlocks. */
    char source[48];
    unit_unique(source, sizeof source, "race");
    long long id = customer(NULL);
    race_arg a = {.items = json_array(), .report = NULL},
             b = {.items = json_array(), .report = NULL};
    for (int i = 0; i < 300; i++) {
        char e[16];
        snprintf(e, sizeof e, "ev-%d", i);
        json_array_append_new(a.items, purchase(id, source, e));
        snprintf(e, sizeof e, "ev-%d", 449 - i);
        json_array_append_new(b.items, purchase(id, source, e));
    }
    pthread_t ta, tb;
    pthread_create(&ta, NULL, record_batch, &a);
    pthread_create(&tb, NULL, record_batch, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_ptr_nonnull(a.report);
    ck_assert_ptr_nonnull(b.report);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE source = $1", source), 450);
    ck_assert_int_eq(
        count_of("SELECT count(DISTINCT event_id) FROM touchpoints WHERE source = $1", source),
        450);
    long long created = json_integer_value(json_object_get(a.report, "created")) +
                        json_integer_value(json_object_get(b.report, "created"));
    long long duplicates = json_integer_value(json_object_get(a.report, "duplicates")) +
                           json_integer_value(json_object_get(b.report, "duplicates"));
    ck_assert_int_eq(created, 450);
    ck_assert_int_eq(duplicates, 150);
    /* Event 200 is in both: created in one, a duplicate with the same id in the other. */
    json_t *in_a = json_array_get(json_object_get(a.report, "items"), 200);
    json_t *in_b = json_array_get(json_object_get(b.report, "items"), 249);
    ck_assert(strcmp(json_string_value(json_object_get(in_a, "status")),
                     json_string_value(json_object_get(in_b, "status"))) != 0);
    ck_assert_int_eq(json_integer_value(json_object_get(in_a, "id")),
                     json_integer_value(json_object_get(in_b, "id")));
    json_decref(a.items);
    json_decref(b.items);
    json_decref(a.report);
    json_decref(b.report);
}
END_TEST

/* ---- references ------------------------------------------------------------------- */

START_TEST(references_resolve_through_merges_emails_and_external_ids)
{
    char source[48], email[96], ext[48];
    unit_unique(source, sizeof source, "ref");
    unit_unique(ext, sizeof ext, "x");
    snprintf(email, sizeof email, "%s@example.com", ext);
    long long survivor = customer(email), merged = customer(NULL);
    char body[128];
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", merged);
    json_t *mb = json_loads(body, 0, NULL);
    crm_error err = CRM_ERROR_INIT;
    bool dry = false;
    json_t *m = crm_customer_merge(survivor, mb, &ctx, &dry, &err);
    ck_assert_msg(m != NULL, "merge: %s", err.detail);
    json_decref(m);
    json_decref(mb);
    /* Two live customers share this e-mail: it names neither. */
    char shared[96];
    unit_unique(shared, sizeof shared, "s");
    strcat(shared, "@example.com");
    customer(shared);
    customer(shared);

    json_t *items = json_array();
    json_array_append_new(items, purchase(merged, source, "r-0")); /* -> survivor */
    json_t *by_email = purchase(0, source, "r-1");
    json_object_del(by_email, "customer_id");
    json_object_set_new(by_email, "customer_email", json_string(email));
    json_array_append_new(items, by_email);
    json_t *ambiguous = purchase(0, source, "r-2");
    json_object_del(ambiguous, "customer_id");
    json_object_set_new(ambiguous, "customer_email", json_string(shared));
    json_object_set_new(ambiguous, "create_customer", json_true());
    json_array_append_new(items, ambiguous);
    json_t *fresh = purchase(0, source, "r-3");
    json_object_del(fresh, "customer_id");
    json_object_set_new(fresh, "customer_external_id",
                        json_pack("{s:s, s:s}", "source", "shop", "id", ext));
    json_object_set_new(fresh, "create_customer", json_true());
    json_array_append_new(items, fresh);
    json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
    ck_assert_msg(report != NULL, "batch: %s", err.detail);
    ck_assert_str_eq(status_of(report, 0), "created");
    ck_assert_str_eq(status_of(report, 1), "created");
    ck_assert_str_eq(status_of(report, 2), "rejected");
    ck_assert_str_eq(status_of(report, 3), "created");
    char id[24];
    snprintf(id, sizeof id, "%lld", survivor);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE customer_id = $1", id), 2);
    ck_assert_int_eq(count_of("SELECT count(*) FROM customer_external_ids x JOIN customers c ON "
                              "c.id = x.customer_id WHERE x.source = 'shop' AND x.external_id = $1 "
                              "AND c.status = 'active'",
                              ext),
                     1);
    ck_assert_int_eq(count_of("SELECT count(*) FROM customer_audit a JOIN customer_external_ids x "
                              "ON x.customer_id = a.customer_id WHERE x.external_id = $1 AND "
                              "a.action = 'create'",
                              ext),
                     1);
    json_decref(report);
    json_decref(items);
}
END_TEST

START_TEST(items_breaking_a_rule_are_rejected_with_their_fields)
{
    char source[48];
    unit_unique(source, sizeof source, "rule");
    long long id = customer(NULL);
    crm_touchpoint_set_future_tolerance(60);
    struct {
        const char *member;
        json_t *value;
        const char *field;
    } cases[] = {
        {"channel", json_string("fax"), "/channel"},
        {"type", json_string("dance"), "/type"},
        {"occurred_at", json_string("2999-01-01T00:00:00Z"), "/occurred_at"},
        {"occurred_at", json_string("1 Nov 2026"), "/occurred_at"},
        {"currency", json_string("EU"), "/currency"},
        {"currency", json_null(), "/currency"},
        {"amount", json_string("12"), "/amount"},
        {"items", json_pack("[{s:s, s:i}]", "sku", "A", "quantity", 0), "/items/0"},
        {"feedback", json_pack("{s:i}", "score", 7), "/feedback"},
        {"properties", json_string("x"), "/properties"},
        {"event_id", json_string(""), "/event_id"},
        {"colour", json_string("red"), "/colour"},
    };
    size_t n = sizeof cases / sizeof cases[0];
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) {
        char e[16];
        snprintf(e, sizeof e, "bad-%zu", i);
        json_t *it = purchase(id, source, e);
        json_object_set_new(it, cases[i].member, cases[i].value);
        json_array_append_new(items, it);
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
    ck_assert_msg(report != NULL, "batch: %s", err.detail);
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(json_object_get(report, "items"), i);
        ck_assert_msg(strcmp(json_string_value(json_object_get(it, "status")), "rejected") == 0,
                      "case %zu accepted", i);
        bool named = false;
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(it, "errors"), k, e) named =
            named || strcmp(json_string_value(json_object_get(e, "field")), cases[i].field) == 0;
        ck_assert_msg(named, "case %zu does not name %s", i, cases[i].field);
    }
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE source = $1", source), 0);
    crm_touchpoint_set_future_tolerance(300);
    json_decref(report);
    json_decref(items);
}
END_TEST

/* ---- merge, erasure, export ------------------------------------------------------- */

START_TEST(erasure_removes_the_free_text_and_export_lists_touchpoints)
{
    char source[48];
    unit_unique(source, sizeof source, "erase");
    long long id = customer(NULL);
    json_t *fb = purchase(id, source, "fb-1");
    json_object_set_new(fb, "type", json_string("feedback"));
    json_object_del(fb, "amount");
    json_object_del(fb, "currency");
    json_object_set_new(fb, "feedback",
                        json_pack("{s:i, s:s, s:s}", "score", 2, "scale", "csat", "text",
                                  "Tess Ferrante lost her parcel"));
    json_object_set_new(fb, "properties", json_pack("{s:s}", "phone", "+39 333 1234567"));
    crm_error err = CRM_ERROR_INIT;
    bool created = false;
    json_t *tp = crm_touchpoint_record(fb, &ctx, &created, &err);
    ck_assert_msg(tp != NULL, "record: %s", err.detail);
    ck_assert(created);
    json_t *doc = crm_customer_export(id, &err);
    ck_assert_msg(doc != NULL, "export: %s", err.detail);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "touchpoints")), 1);
    json_decref(doc);
    bool already = false;
    json_t *stone = crm_customer_erase(id, &ctx, &already, &err);
    ck_assert_msg(stone != NULL, "erase: %s", err.detail);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE source = $1 AND erased AND "
                              "properties = '{}' AND NOT feedback ? 'text' AND "
                              "(feedback->>'score')::int = 2",
                              source),
                     1);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints t WHERE t::text LIKE '%Ferrante%' "
                              "OR t::text LIKE '%1234567%' OR source = $1 AND false",
                              source),
                     0);
    json_decref(stone);
    json_decref(tp);
    json_decref(fb);
}
END_TEST

START_TEST(a_merge_moves_the_touchpoints_to_the_survivor)
{
    char source[48];
    unit_unique(source, sizeof source, "merge");
    long long survivor = customer(NULL), merged = customer(NULL);
    json_t *items = json_array();
    json_array_append_new(items, purchase(survivor, source, "m-0"));
    json_array_append_new(items, purchase(merged, source, "m-1"));
    json_array_append_new(items, purchase(merged, source, "m-2"));
    crm_error err = CRM_ERROR_INIT;
    json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
    ck_assert_msg(report != NULL, "batch: %s", err.detail);
    char body[64];
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", merged);
    json_t *mb = json_loads(body, 0, NULL);
    bool dry = false;
    json_t *m = crm_customer_merge(survivor, mb, &ctx, &dry, &err);
    ck_assert_msg(m != NULL, "merge: %s", err.detail);
    char id[24];
    snprintf(id, sizeof id, "%lld", survivor);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE customer_id = $1", id), 3);
    snprintf(id, sizeof id, "%lld", merged);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE customer_id = $1", id), 0);
    /* The merged id's timeline is the survivor's. */
    crm_timeline_filter f = {.customer_id = merged, .limit = 10};
    crm_arena arena;
    crm_arena_init(&arena);
    crm_query q;
    ck_assert(crm_timeline_query(&f, &arena, &q, &err));
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_msg(res != NULL, "timeline: %s", err.detail);
    size_t len;
    char *text = crm_timeline_render(res, &f, &len, &err);
    ck_assert_ptr_nonnull(text);
    json_t *page = json_loads(text, 0, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 3);
    json_decref(page);
    free(text);
    PQclear(res);
    crm_arena_free(&arena);
    json_decref(m);
    json_decref(mb);
    json_decref(report);
    json_decref(items);
}
END_TEST

Suite *touchpoints_suite(void)
{
    Suite *s = suite_create("touchpoints");
    TCase *tc = tcase_create("store");
    tcase_add_unchecked_fixture(tc, setup_db, teardown_db);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, two_racing_batches_with_shared_events_store_each_once);
    tcase_add_test(tc, references_resolve_through_merges_emails_and_external_ids);
    tcase_add_test(tc, items_breaking_a_rule_are_rejected_with_their_fields);
    tcase_add_test(tc, erasure_removes_the_free_text_and_export_lists_touchpoints);
    tcase_add_test(tc, a_merge_moves_the_touchpoints_to_the_survivor);
    suite_add_tcase(s, tc);
    return s;
}

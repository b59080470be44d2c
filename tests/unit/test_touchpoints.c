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
#include "list/cursor.h"
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

START_TEST(timeline_pages_are_index_bounded_under_generic_plans)
{
    /* C5: with "$6 IS NULL OR (occurred_at, id) < ...", a generic plan
     * filtered the row comparison, reading the timeline from the top down
     * to the cursor on every page. Both the first page (sentinels) and a
     * page with a cursor must bound the index range with it. */
    char email[64];
    unit_unique(email, sizeof email, "tl");
    strcat(email, "@example.com");
    long long id = customer(email);
    crm_arena arena;
    crm_arena_init(&arena);
    crm_timeline_filter f = {.customer_id = id, .limit = 10};
    crm_query q;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_timeline_query(&f, &arena, &q, &err));
    unit_assert_index_condition(direct, &q, "ROW(");
    crm_cursor c;
    crm_cursor_init(&c, CRM_CURSOR_TIMELINE, 0);
    crm_cursor_add_int(&c, 1764547200000000LL); /* 2025-12-01 */
    crm_cursor_add_int(&c, 42);
    char *after = crm_cursor_encode(&c, &err);
    ck_assert_ptr_nonnull(after);
    f.after = after;
    f.channel = "web";
    f.occurred_after = "2020-01-01T00:00:00Z";
    ck_assert_msg(crm_timeline_query(&f, &arena, &q, &err), "%s", err.detail);
    ck_assert_str_eq(q.values[5], "2025-12-01 00:00:00.000000+00"); /* exact, as text */
    ck_assert_str_eq(q.values[6], "42");
    unit_assert_index_condition(direct, &q, "ROW(");
    free(after);
    crm_arena_free(&arena);
}
END_TEST

START_TEST(timeline_cursors_are_exact_to_the_microsecond_far_from_now)
{
    /* C12: the key went through float8 date_part; in year 0001 or 9999 that
     * is not exact, and pages skipped or repeated rows. Touchpoints a
     * microsecond apart page one at a time, each exactly once. */
    char email[64];
    unit_unique(email, sizeof email, "far");
    strcat(email, "@example.com");
    long long id = customer(email);
    char cid[24];
    snprintf(cid, sizeof cid, "%lld", id);
    const char *instants[] = {"0001-01-01 00:00:00.000001+00", "0001-01-01 00:00:00.000002+00",
                              "9999-12-31 23:59:59.999998+00", "9999-12-31 23:59:59.999999+00"};
    for (int i = 0; i < 4; i++) {
        char event[64];
        unit_unique(event, sizeof event, "far");
        const char *params[] = {cid, instants[i], event};
        PQclear(unit_sql(direct,
                         "INSERT INTO touchpoints (customer_id, channel, type, direction, "
                         "occurred_at, source, event_id) VALUES ($1, 'web', 'visit', 'inbound', "
                         "$2, 'far-test', $3)",
                         3, params));
    }
    crm_timeline_filter f = {.customer_id = id, .limit = 1};
    char *after = NULL;
    int seen = 0;
    do {
        crm_arena arena;
        crm_arena_init(&arena);
        crm_query q;
        crm_error err = CRM_ERROR_INIT;
        f.after = after;
        ck_assert_msg(crm_timeline_query(&f, &arena, &q, &err), "%s", err.detail);
        PGresult *res = crm_db_run_query(&q, &err);
        ck_assert_msg(res != NULL, "%s", err.detail);
        size_t len;
        char *text = crm_timeline_render(res, &f, &len, &err);
        PQclear(res);
        crm_arena_free(&arena);
        ck_assert_ptr_nonnull(text);
        json_t *page = json_loads(text, 0, NULL);
        free(text);
        seen += (int)json_array_size(json_object_get(page, "data"));
        free(after);
        json_t *next = json_object_get(page, "next_cursor");
        after = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
        json_decref(page);
    } while (after != NULL && seen < 10);
    ck_assert_int_eq(seen, 4);
    free(after);
}
END_TEST

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

/* ---- how a batch is stored --------------------------------------------------------- */

static long long id_of(json_t *report, size_t i)
{
    return json_integer_value(
        json_object_get(json_array_get(json_object_get(report, "items"), i), "id"));
}

/* n more purchases of customer id, events prefix-0 .. prefix-(n-1): with
 * CRM_TOUCHPOINT_COPY_FROM_ITEMS of them, a batch goes in by COPY. */
static void pad(json_t *items, long long id, const char *source, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        char e[32];
        snprintf(e, sizeof e, "%s-%d", prefix, i);
        json_array_append_new(items, purchase(id, source, e));
    }
}

START_TEST(a_batch_with_events_stored_before_stores_only_the_new_ones)
{
    /* The second batch repeats two events of the first among new ones, and
     * names a deleted customer and a customer id nobody has. A batch of a
     * few goes in by INSERT ... ON CONFLICT (_i = 0); a batch of many by
     * COPY (_i = 1), which these make fail and fall back to the INSERT: the
     * answers are the same. */
    int extra = _i == 0 ? 0 : CRM_TOUCHPOINT_COPY_FROM_ITEMS;
    char source[48];
    unit_unique(source, sizeof source, "again");
    long long live = customer(NULL), gone = customer(NULL);
    char gone_id[24];
    snprintf(gone_id, sizeof gone_id, "%lld", gone);
    const char *gp[] = {gone_id};
    PQclear(unit_sql(direct, "UPDATE customers SET status = 'deleted' WHERE id = $1", 1, gp));
    json_t *first = json_array();
    json_array_append_new(first, purchase(live, source, "e-1"));
    json_array_append_new(first, purchase(live, source, "e-2"));
    pad(first, live, source, "f1", extra);
    crm_error err = CRM_ERROR_INIT;
    json_t *r1 = crm_touchpoint_record_batch(first, &ctx, &err);
    ck_assert_msg(r1 != NULL, "first batch: %s", err.detail);
    ck_assert_str_eq(status_of(r1, 0), "created");
    ck_assert_str_eq(status_of(r1, 1), "created");
    ck_assert(id_of(r1, 0) > 0 && id_of(r1, 1) > 0 && id_of(r1, 0) != id_of(r1, 1));

    json_t *second = json_array();
    json_array_append_new(second, purchase(live, source, "e-0"));
    json_array_append_new(second, purchase(live, source, "e-2"));      /* stored before */
    json_array_append_new(second, purchase(gone, source, "e-3"));      /* deleted customer */
    json_array_append_new(second, purchase(live, source, "e-1"));      /* stored before */
    json_array_append_new(second, purchase(987654321, source, "e-4")); /* nobody */
    json_array_append_new(second, purchase(live, source, "e-5"));
    pad(second, live, source, "f2", extra);
    json_t *r2 = crm_touchpoint_record_batch(second, &ctx, &err);
    ck_assert_msg(r2 != NULL, "second batch: %s", err.detail);
    ck_assert_str_eq(status_of(r2, 0), "created");
    ck_assert_str_eq(status_of(r2, 1), "duplicate");
    ck_assert_int_eq(id_of(r2, 1), id_of(r1, 1));
    ck_assert_str_eq(status_of(r2, 2), "rejected");
    ck_assert_str_eq(status_of(r2, 3), "duplicate");
    ck_assert_int_eq(id_of(r2, 3), id_of(r1, 0));
    ck_assert_str_eq(status_of(r2, 4), "rejected");
    ck_assert_str_eq(status_of(r2, 5), "created");
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE source = $1", source),
                     4 + 2 * extra);
    ck_assert_int_eq(json_integer_value(json_object_get(r2, "created")), 2 + extra);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE customer_id = $1", gone_id),
                     0);
    char id[24];
    snprintf(id, sizeof id, "%lld", id_of(r2, 5));
    ck_assert_int_eq(
        count_of("SELECT count(*) FROM touchpoints WHERE id = $1 AND event_id = 'e-5'", id), 1);
    json_decref(r1);
    json_decref(r2);
    json_decref(first);
    json_decref(second);
}
END_TEST

START_TEST(text_with_tabs_newlines_and_backslashes_is_stored_byte_for_byte)
{
    /* By INSERT (_i = 0) and by COPY (_i = 1), whose text format gives
     * these bytes a meaning. */
    char source[48];
    unit_unique(source, sizeof source, "bytes\t\\N");
    static const char event_id[] = "a\tb\\c\nd\re\\N \\. \xe2\x80\xae\xf0\x9f\x98\x80";
    long long id = customer(NULL);
    json_t *item = purchase(id, source, event_id);
    json_object_set_new(item, "campaign_id", json_string("spring\\summer\t2027"));
    json_object_set_new(item, "properties", json_pack("{s:s}", "note", "line 1\nline\t\"2\"\\"));
    json_t *items = json_array();
    json_array_append_new(items, item);
    pad(items, id, source, "pad", _i == 0 ? 0 : CRM_TOUCHPOINT_COPY_FROM_ITEMS); /* by COPY */
    crm_error err = CRM_ERROR_INIT;
    json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
    ck_assert_msg(report != NULL, "batch: %s", err.detail);
    ck_assert_str_eq(status_of(report, 0), "created");
    char tp[24];
    snprintf(tp, sizeof tp, "%lld", id_of(report, 0));
    const char *params[] = {tp};
    PGresult *res = unit_sql(direct,
                             "SELECT source, event_id, campaign_id, properties ->> 'note' FROM "
                             "touchpoints WHERE id = $1",
                             1, params);
    ck_assert_int_eq(PQntuples(res), 1);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), source);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), event_id);
    ck_assert_str_eq(PQgetvalue(res, 0, 2), "spring\\summer\t2027");
    ck_assert_str_eq(PQgetvalue(res, 0, 3), "line 1\nline\t\"2\"\\");
    PQclear(res);
    json_decref(report);
    json_decref(items);
}
END_TEST

START_TEST(a_merge_that_commits_while_a_batch_waits_sends_its_touchpoints_to_the_survivor)
{
    /* A merge has locked the customer (FOR UPDATE) when the batch looks at
     * it: still active. The batch's COPY (_i = 1: a batch of many) or
     * INSERT (_i = 0: of a few) then waits for the lock; the merge commits;
     * the batch must see that and store the touchpoint on the survivor, not
     * on the merged customer (where no timeline shows it). */
    char source[48];
    unit_unique(source, sizeof source, "mrace");
    long long survivor = customer(NULL), victim = customer(NULL);
    char victim_id[24], survivor_id[24];
    snprintf(victim_id, sizeof victim_id, "%lld", victim);
    snprintf(survivor_id, sizeof survivor_id, "%lld", survivor);
    PGconn *merger = unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));
    PQclear(unit_sql(merger, "BEGIN", 0, NULL));
    const char *vp[] = {victim_id};
    PQclear(unit_sql(merger, "SELECT id FROM customers WHERE id = $1 FOR UPDATE", 1, vp));

    race_arg m = {.items = json_array(), .report = NULL};
    json_array_append_new(m.items, purchase(victim, source, "r-0"));
    int n = _i == 0 ? 2 : CRM_TOUCHPOINT_COPY_FROM_ITEMS + 1;
    for (int i = 1; i < n; i++) {
        char e[16];
        snprintf(e, sizeof e, "r-%d", i);
        json_array_append_new(m.items, purchase(survivor, source, e));
    }
    pthread_t t;
    pthread_create(&t, NULL, record_batch, &m);
    /* Until the batch waits for the merge's lock. */
    long waiting = 0;
    for (int i = 0; i < 1000 && waiting == 0; i++) {
        unit_sleep_ms(10);
        waiting = count_of("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database() AND (query LIKE 'COPY touchpoints%' "
                           "OR query LIKE 'INSERT INTO touchpoints%')",
                           NULL);
    }
    ck_assert_msg(waiting > 0, "the batch never waited for the merge's lock");
    const char *mp[] = {victim_id, survivor_id};
    PQclear(unit_sql(
        merger, "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1", 2, mp));
    PQclear(unit_sql(merger, "COMMIT", 0, NULL));
    pthread_join(t, NULL);
    PQfinish(merger);

    ck_assert_ptr_nonnull(m.report);
    ck_assert_int_eq(json_integer_value(json_object_get(m.report, "created")), n);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE customer_id = $1", victim_id),
                     0);
    ck_assert_int_eq(
        count_of("SELECT count(*) FROM touchpoints WHERE customer_id = $1", survivor_id), n);
    json_decref(m.items);
    json_decref(m.report);
}
END_TEST

Suite *touchpoints_suite(void)
{
    Suite *s = suite_create("touchpoints");
    TCase *tc = tcase_create("store");
    tcase_add_unchecked_fixture(tc, setup_db, teardown_db);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, timeline_pages_are_index_bounded_under_generic_plans);
    tcase_add_test(tc, timeline_cursors_are_exact_to_the_microsecond_far_from_now);
    tcase_add_test(tc, two_racing_batches_with_shared_events_store_each_once);
    tcase_add_test(tc, references_resolve_through_merges_emails_and_external_ids);
    tcase_add_test(tc, items_breaking_a_rule_are_rejected_with_their_fields);
    tcase_add_test(tc, erasure_removes_the_free_text_and_export_lists_touchpoints);
    tcase_add_test(tc, a_merge_moves_the_touchpoints_to_the_survivor);
    tcase_add_loop_test(tc, a_batch_with_events_stored_before_stores_only_the_new_ones, 0, 2);
    tcase_add_loop_test(tc, text_with_tabs_newlines_and_backslashes_is_stored_byte_for_byte, 0, 2);
    tcase_add_loop_test(
        tc, a_merge_that_commits_while_a_batch_waits_sends_its_touchpoints_to_the_survivor, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_sync.c — GET /v1/sync/customers and GET /v1/sync/touchpoints over
 * real HTTP: the sync:read scope, reading a feed from no cursor to an empty
 * page, a change made afterwards arriving on the next poll (customers
 * created, changed and deleted, touchpoints recorded), 410 for a cursor
 * older than the retention (CRMD_SYNC_RETENTION_DAYS) and 422 for a cursor
 * or limit the feed cannot use.
 */
#include "harness.h"
#include "json.h"
#include "list/cursor.h"
#include "sync.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DAY_MS (24LL * 60 * 60 * 1000)

static crmd_server srv;
static api_key syncer, writer, reader;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (syncer.id == 0)
        ck_assert(api_key_create("sync:read", &syncer));
    if (writer.id == 0)
        ck_assert(api_key_create(
            "customers:read,customers:write,touchpoints:read,touchpoints:write", &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("customers:read,touchpoints:read", &reader));
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* ---- helpers ------------------------------------------------------------------- */

static json_t *expect_json(http_response *r, long status)
{
    ck_assert_msg(r->status == status, "answered %ld, not %ld: %.400s", r->status, status, r->body);
    json_t *doc = http_response_json(r);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

static void expect_problem(http_response *r, long status, const char *field)
{
    json_t *p = assert_problem(r, status);
    if (field != NULL)
        ck_assert_msg(problem_names_field(p, field), "no error for %s in %.400s", field, r->body);
    json_decref(p);
    http_response_free(r);
}

/* GET of a feed page; cursor and extra query (without '&') may be NULL. */
static http_response get_page(const crmd_server *s, const char *feed, const char *cursor,
                              const char *query, const char *key)
{
    char path[1024];
    int n = snprintf(path, sizeof path, "/v1/sync/%s?", feed);
    if (cursor != NULL)
        n += snprintf(path + n, sizeof path - (size_t)n, "cursor=%s&", cursor);
    if (query != NULL)
        snprintf(path + n, sizeof path - (size_t)n, "%s", query);
    return http_get(s, path, key);
}

/* One page, checked to have the documented shape. */
static json_t *page(const char *feed, const char *cursor, int limit)
{
    char query[32];
    snprintf(query, sizeof query, "limit=%d", limit);
    http_response r = get_page(&srv, feed, cursor, query, syncer.secret);
    json_t *doc = expect_json(&r, 200);
    const char *type = http_response_header(&r, "Content-Type");
    ck_assert_ptr_nonnull(type);
    ck_assert_ptr_nonnull(strstr(type, "application/json"));
    http_response_free(&r);
    ck_assert(json_is_array(json_object_get(doc, "data")));
    ck_assert(json_is_string(json_object_get(doc, "next_cursor")));
    ck_assert_uint_eq(json_object_size(doc), 2);
    return doc;
}

/* Reads a feed from cursor (NULL: the beginning) to an empty page, adding
 * every entry to entries when not NULL; returns the last next_cursor (the
 * caller frees it). */
static char *drain(const char *feed, const char *cursor, json_t *entries)
{
    char *at = cursor ? strdup(cursor) : NULL;
    for (int pages = 0;; pages++) {
        ck_assert_msg(pages < 10000, "the feed never ends");
        json_t *doc = page(feed, at, 1000);
        json_t *data = json_object_get(doc, "data");
        size_t n = json_array_size(data);
        free(at);
        at = strdup(json_string_value(json_object_get(doc, "next_cursor")));
        if (entries != NULL)
            json_array_extend(entries, data);
        json_decref(doc);
        if (n == 0)
            return at;
    }
}

/* The id an entry is about. */
static long long entry_id(json_t *entry)
{
    json_t *inner = json_object_get(entry, "customer");
    if (inner == NULL)
        inner = json_object_get(entry, "touchpoint");
    return json_integer_value(json_object_get(inner ? inner : entry, "id"));
}

/* Polls the feed from cursor (NULL: the beginning) until the entry about id
 * comes, and returns it (the caller decrefs it) with the cursor after its
 * page in *next (the caller frees it). Polling waits on empty pages: the
 * test database's cluster may be shared with other runs, whose running
 * transactions hold pages back for a moment. */
static json_t *poll_for(const char *feed, const char *cursor, long long id, char **next)
{
    char *at = cursor ? strdup(cursor) : NULL;
    long long deadline = harness_now_ms() + 10000;
    for (;;) {
        json_t *doc = page(feed, at, 1000);
        json_t *data = json_object_get(doc, "data"), *found = NULL;
        for (size_t i = 0; i < json_array_size(data) && found == NULL; i++)
            if (entry_id(json_array_get(data, i)) == id)
                found = json_incref(json_array_get(data, i));
        free(at);
        at = strdup(json_string_value(json_object_get(doc, "next_cursor")));
        bool empty = json_array_size(data) == 0;
        json_decref(doc);
        if (found != NULL) {
            *next = at;
            return found;
        }
        ck_assert_msg(harness_now_ms() < deadline, "no change of %lld in the %s feed", id, feed);
        if (empty)
            harness_sleep_ms(50);
    }
}

static long long create_customer(void)
{
    char email[96], body[160];
    harness_unique(email, sizeof email, "sync");
    snprintf(body, sizeof body, "{\"first_name\": \"Sync\", \"email\": \"%s@example.org\"}", email);
    http_response r = http_post_json(&srv, "/v1/customers", writer.secret, body);
    json_t *doc = expect_json(&r, 201);
    long long id = json_integer_value(json_object_get(doc, "id"));
    json_decref(doc);
    http_response_free(&r);
    return id;
}

/* The cursor with the time its reader last caught up moved back by age_ms
 * (a client that kept it that long), signed as crmd signs. The caller
 * frees it. */
static char *aged_cursor(const char *cursor, long long age_ms)
{
    harness_cursor_secret_load();
    crm_cursor c;
    unsigned feed = CRM_SYNC_CUSTOMERS;
    if (!crm_cursor_decode(cursor, CRM_CURSOR_SYNC, feed, 3, false, &c))
        feed = CRM_SYNC_TOUCHPOINTS;
    ck_assert(crm_cursor_decode(cursor, CRM_CURSOR_SYNC, feed, 3, false, &c));
    c.ints[2] -= age_ms;
    crm_error err = CRM_ERROR_INIT;
    char *out = crm_cursor_encode(&c, &err);
    ck_assert_msg(out != NULL, "%s", err.detail);
    return out;
}

/* The cursor as the old, unsigned format spelled it, with issued_at now: a
 * client forging its age. The caller frees it. */
static char *forged_unsigned_cursor(const char *feed)
{
    char raw[128];
    int n = snprintf(raw, sizeof raw, "[\"%s\",\"1\",1,%lld]", feed,
                     (long long)time(NULL) * 1000);
    char *out = malloc(256);
    ck_assert_ptr_nonnull(out);
    crm_base64url_encode((const unsigned char *)raw, (size_t)n, out, 256);
    return out;
}

/* ---- scope ----------------------------------------------------------------------- */

START_TEST(the_feeds_need_the_sync_read_scope)
{
    const char *feeds[] = {"customers", "touchpoints"};
    for (int i = 0; i < 2; i++) {
        http_response r = get_page(&srv, feeds[i], NULL, NULL, NULL);
        expect_problem(&r, 401, NULL);
        r = get_page(&srv, feeds[i], NULL, NULL, reader.secret);
        json_t *p = assert_problem(&r, 403);
        ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "detail")), "sync:read"));
        json_decref(p);
        http_response_free(&r);
        r = get_page(&srv, feeds[i], NULL, "limit=1", harness_admin_key.secret);
        json_decref(expect_json(&r, 200));
        http_response_free(&r);
    }
}
END_TEST

/* ---- reading and polling ---------------------------------------------------------- */

START_TEST(the_customer_feed_drains_to_an_empty_page_then_brings_new_changes)
{
    /* From the beginning, the feed has what was there before. */
    long long before = create_customer();
    char *at = NULL;
    json_decref(poll_for("customers", NULL, before, &at));
    char *end = drain("customers", at, NULL);
    free(at);

    /* Caught up: polling again gives an empty page. */
    json_t *empty = page("customers", end, 100);
    ck_assert_uint_eq(json_array_size(json_object_get(empty, "data")), 0);
    json_decref(empty);

    /* A customer made now comes on the next poll, as GET shows it with its
     * external ids (which the feed always carries). */
    long long id = create_customer();
    char *after_create = NULL;
    json_t *entry = poll_for("customers", end, id, &after_create);
    ck_assert_str_eq(json_string_value(json_object_get(entry, "change")), "upsert");
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld?expand=external_ids", id);
    http_response r = http_get(&srv, path, writer.secret);
    json_t *read = expect_json(&r, 200);
    http_response_free(&r);
    ck_assert_msg(json_equal(json_object_get(entry, "customer"), read),
                  "the feed's customer is not GET's");
    json_decref(read);
    json_decref(entry);

    /* Deleted: a tombstone on the next poll. */
    snprintf(path, sizeof path, "/v1/customers/%lld", id);
    r = http_delete(&srv, path, writer.secret);
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);
    char *after_delete = NULL;
    json_t *gone = poll_for("customers", after_create, id, &after_delete);
    char want[96];
    snprintf(want, sizeof want, "{\"change\": \"deleted\", \"id\": %lld}", id);
    json_t *expected = json_loads(want, 0, NULL);
    ck_assert_msg(json_equal(gone, expected), "not a tombstone");
    json_decref(expected);
    json_decref(gone);
    free(after_delete);
    free(after_create);
    free(end);
}
END_TEST

START_TEST(the_touchpoint_feed_brings_a_recorded_touchpoint_on_the_next_poll)
{
    long long customer = create_customer();
    char *end = drain("touchpoints", NULL, NULL);
    char event[64], body[320];
    harness_unique(event, sizeof event, "ev");
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"visit\", "
             "\"direction\": \"inbound\", \"occurred_at\": \"2026-01-02T03:04:05Z\", "
             "\"source\": \"sync-test\", \"event_id\": \"%s\"}",
             customer, event);
    http_response r = http_post_json(&srv, "/v1/touchpoints", writer.secret, body);
    json_t *made = expect_json(&r, 201);
    http_response_free(&r);

    char *next = NULL;
    json_t *entry =
        poll_for("touchpoints", end, json_integer_value(json_object_get(made, "id")), &next);
    ck_assert_str_eq(json_string_value(json_object_get(entry, "change")), "upsert");
    ck_assert_msg(json_equal(json_object_get(entry, "touchpoint"), made),
                  "the feed's touchpoint is not the recorded one");
    json_decref(entry);
    json_decref(made);
    free(next);
    free(end);
}
END_TEST

/* ---- cursors that cannot be used ----------------------------------------------------- */

START_TEST(a_cursor_older_than_the_retention_is_410)
{
    char *end = drain("customers", NULL, NULL);
    char *old = aged_cursor(end, 91 * DAY_MS);
    http_response r = get_page(&srv, "customers", old, NULL, syncer.secret);
    json_t *p = assert_problem(&r, 410);
    ck_assert_str_eq(json_string_value(json_object_get(p, "type")),
                     "https://crmd.dev/problems/gone");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(p, "detail")), "full resync"));
    json_decref(p);
    http_response_free(&r);

    char *recent = aged_cursor(end, 89 * DAY_MS);
    json_decref(page("customers", recent, 10));
    free(recent);
    free(old);
    free(end);
}
END_TEST

START_TEST(the_retention_comes_from_crmd_sync_retention_days)
{
    crmd_server short_lived;
    const char *env[] = {"CRMD_SYNC_RETENTION_DAYS=1", NULL};
    crmd_fixture_start(&short_lived, env);
    char *end = drain("touchpoints", NULL, NULL);
    char *two_days = aged_cursor(end, 2 * DAY_MS);
    http_response r = get_page(&short_lived, "touchpoints", two_days, NULL, syncer.secret);
    expect_problem(&r, 410, NULL);
    r = get_page(&srv, "touchpoints", two_days, NULL, syncer.secret); /* the default: 90 */
    json_decref(expect_json(&r, 200));
    http_response_free(&r);
    crmd_fixture_stop(&short_lived);
    free(two_days);
    free(end);
}
END_TEST

START_TEST(a_cursor_or_limit_the_feed_cannot_use_is_422)
{
    char *customers = drain("customers", NULL, NULL);
    http_response r = get_page(&srv, "touchpoints", customers, NULL, syncer.secret);
    expect_problem(&r, 422, "cursor");
    const char *bad[] = {"x", "W10", "eyJhIjoxfQ", "%20"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = get_page(&srv, "customers", bad[i], NULL, syncer.secret);
        expect_problem(&r, 422, "cursor");
    }
    r = get_page(&srv, "customers", NULL, "cursor=", syncer.secret);
    expect_problem(&r, 422, "cursor");
    /* The unsigned format of old, which let a client forge its cursor's age
     * and dodge the 410: refused before anything reaches SQL. */
    char *forged = forged_unsigned_cursor("customers");
    r = get_page(&srv, "customers", forged, NULL, syncer.secret);
    expect_problem(&r, 422, "cursor");
    free(forged);
    const char *limits[] = {"limit=0", "limit=1001", "limit=ten"};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        r = get_page(&srv, "touchpoints", NULL, limits[i], syncer.secret);
        expect_problem(&r, 422, "limit");
    }
    r = get_page(&srv, "customers", NULL, "limit=1000", syncer.secret);
    json_decref(expect_json(&r, 200));
    http_response_free(&r);
    free(customers);
}
END_TEST

START_TEST(housekeeping_purges_tombstones_past_the_retention)
{
    /* Two crmd processes housekeeping every second over the same database
     * (SKIP LOCKED keeps them apart): a customer deleted 92 days ago leaves
     * the feed, one deleted now stays in it. */
    crmd_server keepers[2];
    const char *env[] = {"CRMD_HOUSEKEEPING_S=1", NULL};
    for (int i = 0; i < 2; i++)
        crmd_fixture_start(&keepers[i], env);
    long long old_id = create_customer(), new_id = create_customer();
    char path[64], sql[256];
    long long ids[] = {old_id, new_id};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/v1/customers/%lld", ids[i]);
        http_response r = http_delete(&srv, path, writer.secret);
        ck_assert_msg(r.status == 204, "delete: %ld %s", r.status, r.body);
        http_response_free(&r);
    }
    PGconn *db = harness_db_connect();
    snprintf(sql, sizeof sql,
             "UPDATE customers SET updated_at = now() - interval '92 days' WHERE id = %lld",
             old_id);
    PQclear(PQexec(db, sql));
    snprintf(sql, sizeof sql, "SELECT change_xid::text::bigint FROM customers WHERE id = %lld",
             old_id);
    long long xid = 1;
    for (int waited = 0; waited < 10000 && xid != 0; waited += 100) {
        harness_sleep_ms(100);
        xid = harness_sql_number(db, sql, NULL);
    }
    ck_assert_int_eq(xid, 0);
    snprintf(sql, sizeof sql, "SELECT change_xid::text::bigint FROM customers WHERE id = %lld",
             new_id);
    ck_assert_int_ne(harness_sql_number(db, sql, NULL), 0);
    PQfinish(db);
    json_t *entries = json_array();
    free(drain("customers", NULL, entries));
    bool seen_old = false, seen_new = false;
    for (size_t i = 0; i < json_array_size(entries); i++) {
        long long id = json_integer_value(json_object_get(json_array_get(entries, i), "id"));
        seen_old |= id == old_id;
        seen_new |= id == new_id;
    }
    ck_assert(!seen_old);
    ck_assert(seen_new);
    json_decref(entries);
    for (int i = 0; i < 2; i++)
        crmd_fixture_stop(&keepers[i]);
}
END_TEST

Suite *sync_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("feeds");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_feeds_need_the_sync_read_scope);
    tcase_add_test(tc, the_customer_feed_drains_to_an_empty_page_then_brings_new_changes);
    tcase_add_test(tc, the_touchpoint_feed_brings_a_recorded_touchpoint_on_the_next_poll);
    tcase_add_test(tc, a_cursor_older_than_the_retention_is_410);
    tcase_add_test(tc, the_retention_comes_from_crmd_sync_retention_days);
    tcase_add_test(tc, a_cursor_or_limit_the_feed_cannot_use_is_422);
    tcase_add_test(tc, housekeeping_purges_tombstones_past_the_retention);
    suite_add_tcase(s, tc);
    return s;
}

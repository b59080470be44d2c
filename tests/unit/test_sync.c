/*
 * test_sync.c — lib/sync.h against the migrated CRMD_TEST_DATABASE_URL: a
 * transaction that takes its place in the feed early and commits late is
 * never passed over (two connections, interleaved step by step); pages
 * follow the cursor to the end with no duplicates or gaps; a change moves a
 * row to the end; tombstones of deleted, erased and merged customers have
 * their shapes and carry no personal data; the touchpoints feed; cursors
 * that are malformed, of the other feed, or older than the retention.
 *
 * The database is shared by the whole run, so every test first reads the
 * feed to its end and then looks only at what it changed itself; and its
 * cluster may be shared with other runs, whose transactions can hold a page
 * back for a moment, so reading "to the end" means past every committed
 * change (see drain_pages).
 */
#include <check.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "customer_merge.h"
#include "customer_privacy.h"
#include "customers.h"
#include "db.h"
#include "json.h"
#include "list/cursor.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"
#include "sync.h"
#include "touchpoints.h"

#define DAY_MS (24LL * 60 * 60 * 1000)

static PGconn *direct;
static const char *url;
static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};

static void setup_db(void)
{
    url = unit_env("CRMD_TEST_DATABASE_URL");
    direct = unit_db_start(3);
    crm_sync_set_retention_days(CRM_SYNC_RETENTION_DAYS_DEFAULT);
}

static void teardown_db(void)
{
    crm_sync_set_retention_days(CRM_SYNC_RETENTION_DAYS_DEFAULT);
    unit_db_stop(direct);
    direct = NULL;
}

/* ---- helpers ------------------------------------------------------------------ */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    ck_assert_msg(doc != NULL, "bad JSON %s: %s", text, jerr.text);
    return doc;
}

/* A string no other test or run uses (letters and digits). */
/* Creates a customer with a unique e-mail (whose local part goes to
 * marker when not NULL); returns its id. */
static long long create_customer(const char *first_name, char *marker, size_t size)
{
    char local[64], body[256];
    unit_unique(local, sizeof local, "sync");
    snprintf(body, sizeof body, "{\"first_name\": \"%s\", \"email\": \"%s@example.org\"}",
             first_name, local);
    if (marker != NULL)
        snprintf(marker, size, "%s", local);
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created out;
    json_t *doc = parse(body);
    bool ok = crm_customer_create(doc, &ctx, &out, &err);
    json_decref(doc);
    ck_assert_msg(ok, "create: %s", err.detail);
    json_t *rep = parse(out.body);
    crm_customer_created_free(&out);
    long long id = json_integer_value(json_object_get(rep, "id"));
    json_decref(rep);
    return id;
}

static void patch_city(long long id, const char *city)
{
    char body[128];
    snprintf(body, sizeof body, "{\"address\": {\"city\": \"%s\"}}", city);
    crm_error err = CRM_ERROR_INIT;
    json_t *p = parse(body);
    json_t *rep = crm_customer_patch(id, p, NULL, &ctx, &err);
    json_decref(p);
    ck_assert_msg(rep != NULL, "patch: %s", err.detail);
    json_decref(rep);
}

/* Inserts a touchpoint for customer id with SQL (the feed reads the table,
 * whoever wrote it); returns its id. */
static long long insert_touchpoint(long long customer_id)
{
    char cid[24], event[64];
    snprintf(cid, sizeof cid, "%lld", customer_id);
    unit_unique(event, sizeof event, "ev");
    const char *params[] = {cid, event};
    return unit_sql_long(direct,
                         "INSERT INTO touchpoints (customer_id, channel, type, direction, "
                         "occurred_at, source, event_id, properties) VALUES ($1, 'web', 'visit', "
                         "'inbound', now(), 'sync-test', $2, '{\"page\": \"/private\"}') "
                         "RETURNING id",
                         2, params);
}

/* One page as text (the caller frees it); fails the test on an error. */
static char *page_text(crm_sync_feed feed, const char *cursor, int limit)
{
    crm_sync_request r = {.feed = feed, .cursor = cursor, .limit = limit};
    crm_error err = CRM_ERROR_INIT;
    size_t len = 0;
    char *text = crm_sync_page(&r, &len, &err);
    ck_assert_msg(text != NULL, "page: %s", err.detail);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

static json_t *page(crm_sync_feed feed, const char *cursor, int limit)
{
    char *text = page_text(feed, cursor, limit);
    json_t *doc = parse(text);
    free(text);
    ck_assert(json_is_array(json_object_get(doc, "data")));
    ck_assert(json_is_string(json_object_get(doc, "next_cursor")));
    return doc;
}

/* The error of a page that must fail. */
static crm_error page_error(crm_sync_feed feed, const char *cursor)
{
    crm_sync_request r = {.feed = feed, .cursor = cursor, .limit = 10};
    crm_error err = CRM_ERROR_INIT;
    size_t len = 0;
    char *text = crm_sync_page(&r, &len, &err);
    ck_assert_msg(text == NULL, "a page came back: %s", text);
    return err;
}

/* The id an entry is about. */
static long long entry_id(json_t *entry)
{
    json_t *inner = json_object_get(entry, "customer");
    if (inner == NULL)
        inner = json_object_get(entry, "touchpoint");
    return json_integer_value(json_object_get(inner ? inner : entry, "id"));
}

/* The entries about id (a new array; the caller decrefs it). */
static json_t *entries_for(json_t *entries, long long id)
{
    json_t *out = json_array();
    for (size_t i = 0; i < json_array_size(entries); i++)
        if (entry_id(json_array_get(entries, i)) == id)
            json_array_append(out, json_array_get(entries, i));
    return out;
}

typedef struct cursor_parts {
    char feed[32];
    long long xid, seq, issued_ms;
} cursor_parts;

/* Opens a cursor (opaque to clients, not to its tests: they share the
 * signing secret with lib/). */
static cursor_parts decode_cursor(const char *cursor)
{
    crm_cursor c;
    cursor_parts p;
    if (crm_cursor_decode(cursor, CRM_CURSOR_SYNC, CRM_SYNC_CUSTOMERS, 3, false, &c)) {
        snprintf(p.feed, sizeof p.feed, "customers");
    } else {
        ck_assert_msg(crm_cursor_decode(cursor, CRM_CURSOR_SYNC, CRM_SYNC_TOUCHPOINTS, 3, false, &c),
                      "not a sync cursor: %s", cursor);
        snprintf(p.feed, sizeof p.feed, "touchpoints");
    }
    p.xid = c.ints[0];
    p.seq = c.ints[1];
    p.issued_ms = c.ints[2]; /* when the reader last caught up */
    return p;
}

/* How many committed rows of the feed's table lie after cursor, whether or
 * not a page may show them yet. */
static long rows_after(crm_sync_feed feed, const char *cursor)
{
    cursor_parts p = decode_cursor(cursor);
    char xid[24], seq[24];
    snprintf(xid, sizeof xid, "%lld", p.xid);
    snprintf(seq, sizeof seq, "%lld", p.seq);
    const char *params[] = {xid, seq};
    return unit_sql_long(direct,
                         feed == CRM_SYNC_CUSTOMERS
                             ? "SELECT count(*) FROM customers "
                               "WHERE (change_xid, change_seq) > ($1::xid8, $2::bigint)"
                             : "SELECT count(*) FROM touchpoints "
                               "WHERE (change_xid, change_seq) > ($1::xid8, $2::bigint)",
                         2, params);
}

/* Reads the feed from cursor (NULL: the beginning) past every change
 * committed so far, appending each entry to entries when not NULL and
 * counting the pages that had entries in *pages when not NULL; returns the
 * last cursor (the caller frees it). The database's cluster may be shared
 * with other test runs, whose running transactions hold pages back for a
 * moment: an empty page while committed rows lie ahead means waiting for
 * them, not the end. */
static char *drain_pages(crm_sync_feed feed, const char *cursor, int limit, json_t *entries,
                         int *pages)
{
    char *at = cursor ? strdup(cursor) : NULL;
    long long deadline = unit_now_ms() + 10000;
    for (;;) {
        json_t *doc = page(feed, at, limit);
        json_t *data = json_object_get(doc, "data");
        size_t n = json_array_size(data);
        ck_assert_int_le(n, limit);
        free(at);
        at = strdup(json_string_value(json_object_get(doc, "next_cursor")));
        if (entries != NULL)
            json_array_extend(entries, data);
        json_decref(doc);
        if (n > 0 && pages != NULL)
            (*pages)++;
        if (n > 0)
            continue;
        if (rows_after(feed, at) == 0)
            return at;
        ck_assert_msg(unit_now_ms() < deadline, "committed changes stay held back");
        unit_sleep_ms(20);
    }
}

static char *drain(crm_sync_feed feed, const char *cursor, int limit, json_t *entries)
{
    return drain_pages(feed, cursor, limit, entries, NULL);
}

/* Encodes raw text as a cursor; the caller frees it. */
static char *encode_cursor(const char *raw)
{
    size_t len = strlen(raw), size = len * 4 / 3 + 4;
    char *out = malloc(size);
    ck_assert_ptr_nonnull(out);
    crm_base64url_encode((const unsigned char *)raw, len, out, size);
    return out;
}

/* A signed cursor of feed at (xid, seq) whose reader last caught up at
 * issued_ms, as crmd would make it; the caller frees it. */
static char *make_cursor(const char *feed, long long xid, long long seq, long long issued_ms)
{
    crm_cursor c;
    crm_cursor_init(&c, CRM_CURSOR_SYNC,
                    strcmp(feed, "customers") == 0 ? CRM_SYNC_CUSTOMERS : CRM_SYNC_TOUCHPOINTS);
    crm_cursor_add_int(&c, xid);
    crm_cursor_add_int(&c, seq);
    crm_cursor_add_int(&c, issued_ms);
    crm_error err = CRM_ERROR_INIT;
    char *text = crm_cursor_encode(&c, &err);
    ck_assert_msg(text != NULL, "encode: %s", err.detail);
    return text;
}

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void exec_ok(PGconn *conn, const char *sql)
{
    PQclear(unit_sql(conn, sql, 0, NULL));
}

static void exec_id(PGconn *conn, const char *sql, long long id)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", id);
    const char *params[] = {text};
    PQclear(unit_sql(conn, sql, 1, params));
}

static const char *customer_city(json_t *entry)
{
    return json_string_value(
        json_object_get(json_object_get(json_object_get(entry, "customer"), "address"), "city"));
}

/* ---- the order of commits ------------------------------------------------------- */

START_TEST(a_transaction_that_commits_late_is_not_passed_over)
{
    long long a = create_customer("Early", NULL, 0), b = create_customer("Late", NULL, 0);
    char *start = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    PGconn *ta = unit_connect(url), *tb = unit_connect(url);

    /* A takes its place in the order first... */
    exec_ok(ta, "BEGIN");
    exec_id(ta, "UPDATE customers SET city = 'A-city', version = version + 1 WHERE id = $1", a);
    long long xid_a = unit_sql_long(ta, "SELECT pg_current_xact_id()::text::bigint", 0, NULL);
    /* ...B takes a later one and commits while A is still running. */
    exec_ok(tb, "BEGIN");
    exec_id(tb, "UPDATE customers SET city = 'B-city', version = version + 1 WHERE id = $1", b);
    long long xid_b = unit_sql_long(tb, "SELECT pg_current_xact_id()::text::bigint", 0, NULL);
    exec_ok(tb, "COMMIT");
    ck_assert_int_lt(xid_a, xid_b);

    /* The reader sees nothing yet: B is held back behind A, and the cursor
     * it gets stays before A's place. */
    json_t *held = page(CRM_SYNC_CUSTOMERS, start, 100);
    ck_assert_uint_eq(json_array_size(json_object_get(held, "data")), 0);
    const char *held_cursor = json_string_value(json_object_get(held, "next_cursor"));
    cursor_parts p = decode_cursor(held_cursor);
    ck_assert_int_lt(p.xid, xid_a);
    json_t *again = page(CRM_SYNC_CUSTOMERS, held_cursor, 100);
    ck_assert_uint_eq(json_array_size(json_object_get(again, "data")), 0);
    const char *again_cursor = json_string_value(json_object_get(again, "next_cursor"));
    ck_assert_int_lt(decode_cursor(again_cursor).xid, xid_a);

    exec_ok(ta, "COMMIT");

    /* Now the next page has A's change, then B's. */
    json_t *entries = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, again_cursor, 100, entries));
    ck_assert_uint_eq(json_array_size(entries), 2);
    ck_assert_int_eq(entry_id(json_array_get(entries, 0)), a);
    ck_assert_str_eq(customer_city(json_array_get(entries, 0)), "A-city");
    ck_assert_int_eq(entry_id(json_array_get(entries, 1)), b);
    ck_assert_str_eq(customer_city(json_array_get(entries, 1)), "B-city");

    json_decref(entries);
    json_decref(again);
    json_decref(held);
    PQfinish(ta);
    PQfinish(tb);
    free(start);
}
END_TEST

START_TEST(a_transaction_that_rolls_back_holds_the_feed_only_while_it_runs)
{
    long long a = create_customer("Undone", NULL, 0), b = create_customer("Kept", NULL, 0);
    char *start = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    PGconn *ta = unit_connect(url);
    exec_ok(ta, "BEGIN");
    exec_id(ta, "UPDATE customers SET city = 'never' WHERE id = $1", a);
    patch_city(b, "Turin");

    json_t *held = page(CRM_SYNC_CUSTOMERS, start, 100);
    ck_assert_uint_eq(json_array_size(json_object_get(held, "data")), 0);
    exec_ok(ta, "ROLLBACK");

    json_t *entries = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, json_string_value(json_object_get(held, "next_cursor")), 100,
               entries));
    ck_assert_uint_eq(json_array_size(entries), 1);
    ck_assert_int_eq(entry_id(json_array_get(entries, 0)), b);
    ck_assert_str_eq(customer_city(json_array_get(entries, 0)), "Turin");

    json_decref(entries);
    json_decref(held);
    PQfinish(ta);
    free(start);
}
END_TEST

/* ---- pages ------------------------------------------------------------------------ */

START_TEST(pages_follow_the_cursor_to_the_end_without_duplicates_or_gaps)
{
    char *start = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    long long ids[7];
    for (int i = 0; i < 7; i++)
        ids[i] = create_customer("Paged", NULL, 0);
    json_t *entries = json_array();
    int pages = 0;
    free(drain_pages(CRM_SYNC_CUSTOMERS, start, 3, entries, &pages));
    ck_assert_uint_eq(json_array_size(entries), 7);
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(entry_id(json_array_get(entries, i)), ids[i]);
    ck_assert_int_ge(pages, 3); /* 3 entries a page at most, which drain checks */
    json_decref(entries);
    free(start);
}
END_TEST

START_TEST(a_first_page_without_cursor_starts_from_the_beginning)
{
    long long id = create_customer("Everything", NULL, 0);
    json_t *entries = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, NULL, 1000, entries));
    json_t *mine = entries_for(entries, id);
    ck_assert_uint_eq(json_array_size(mine), 1);
    long long smallest = entry_id(json_array_get(entries, 0));
    long long first = unit_sql_long(direct,
                                    "SELECT id FROM customers WHERE (change_xid, change_seq) > "
                                    "('0'::xid8, 0) ORDER BY change_xid, change_seq LIMIT 1",
                                    0, NULL);
    ck_assert_int_eq(smallest, first);
    json_decref(mine);
    json_decref(entries);
}
END_TEST

START_TEST(an_upsert_is_the_representation_a_read_returns)
{
    char *start = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    long long id = create_customer("Same", NULL, 0);
    patch_city(id, "Genoa");
    json_t *entries = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, start, 100, entries));
    ck_assert_uint_eq(json_array_size(entries), 1);
    json_t *entry = json_array_get(entries, 0);
    ck_assert_str_eq(json_string_value(json_object_get(entry, "change")), "upsert");
    ck_assert_uint_eq(json_object_size(entry), 2);
    crm_error err = CRM_ERROR_INIT;
    json_t *read = crm_customer_get(id, true, &err);
    ck_assert_msg(read != NULL, "get: %s", err.detail);
    ck_assert_msg(json_equal(json_object_get(entry, "customer"), read), "feed and read differ");
    ck_assert_ptr_nonnull(json_object_get(read, "external_ids"));
    ck_assert_int_eq(json_integer_value(json_object_get(read, "version")), 2);
    json_decref(read);
    json_decref(entries);
    free(start);
}
END_TEST

START_TEST(a_change_moves_a_customer_to_the_end_of_the_feed)
{
    long long a = create_customer("Moves", NULL, 0), b = create_customer("Stays", NULL, 0);
    char *start = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    patch_city(a, "Milan");
    json_t *entries = json_array();
    char *end = drain(CRM_SYNC_CUSTOMERS, start, 100, entries);
    ck_assert_uint_eq(json_array_size(entries), 1);
    ck_assert_int_eq(entry_id(json_array_get(entries, 0)), a);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_array_get(entries, 0), "customer"), "version")),
                     2);
    json_t *all = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, NULL, 1000, all));
    json_t *of_a = entries_for(all, a), *of_b = entries_for(all, b);
    ck_assert_uint_eq(json_array_size(of_a), 1); /* once, at its latest place */
    ck_assert_uint_eq(json_array_size(of_b), 1);
    json_decref(of_a);
    json_decref(of_b);
    json_decref(all);
    json_decref(entries);
    free(end);
    free(start);
}
END_TEST

START_TEST(an_empty_page_gives_the_same_place_freshly_issued)
{
    char *end = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    cursor_parts p = decode_cursor(end);
    char *old = make_cursor("customers", p.xid, p.seq, wall_ms() - DAY_MS);
    long long before = wall_ms();
    json_t *doc = page(CRM_SYNC_CUSTOMERS, old, 10);
    ck_assert_uint_eq(json_array_size(json_object_get(doc, "data")), 0);
    cursor_parts q = decode_cursor(json_string_value(json_object_get(doc, "next_cursor")));
    ck_assert_str_eq(q.feed, "customers");
    ck_assert_int_eq(q.xid, p.xid);
    ck_assert_int_eq(q.seq, p.seq);
    ck_assert_int_ge(q.issued_ms, before);
    json_decref(doc);
    free(old);
    free(end);
}
END_TEST

START_TEST(limit_bounds_a_page)
{
    json_t *doc = page(CRM_SYNC_CUSTOMERS, NULL, 1);
    ck_assert_uint_le(json_array_size(json_object_get(doc, "data")), 1);
    json_decref(doc);
}
END_TEST

/* ---- tombstones ------------------------------------------------------------------- */

START_TEST(tombstones_of_deleted_erased_and_merged_customers_have_their_shapes)
{
    char marker_deleted[64], marker_erased[64], marker_merged[64];
    long long deleted = create_customer("Deleted", marker_deleted, sizeof marker_deleted);
    long long erased = create_customer("Erased", marker_erased, sizeof marker_erased);
    long long merged = create_customer("Merged", marker_merged, sizeof marker_merged);
    long long survivor = create_customer("Survivor", NULL, 0);
    char *start = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);

    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_customer_delete(deleted, NULL, &ctx, &err), "delete: %s", err.detail);
    bool already = false;
    json_t *tomb = crm_customer_erase(erased, &ctx, &already, &err);
    ck_assert_msg(tomb != NULL, "erase: %s", err.detail);
    json_decref(tomb);
    char body[96];
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", merged);
    json_t *mb = parse(body);
    bool dry = true;
    json_t *rep = crm_customer_merge(survivor, mb, &ctx, &dry, &err);
    ck_assert_msg(rep != NULL, "merge: %s", err.detail);
    json_decref(rep);
    json_decref(mb);

    json_t *data = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, start, 1000, data));
    ck_assert_uint_eq(json_array_size(data), 4);
    /* No personal data of the three travels. */
    char *text = json_dumps(data, 0);
    ck_assert_ptr_null(strstr(text, marker_deleted));
    ck_assert_ptr_null(strstr(text, marker_erased));
    ck_assert_ptr_null(strstr(text, marker_merged));
    ck_assert_ptr_null(strstr(text, "Deleted"));
    ck_assert_ptr_null(strstr(text, "Erased"));
    free(text);

    char expect[160];
    snprintf(expect, sizeof expect, "{\"change\": \"deleted\", \"id\": %lld}", deleted);
    json_t *want = parse(expect);
    ck_assert_msg(json_equal(json_array_get(data, 0), want), "deleted entry");
    json_decref(want);
    snprintf(expect, sizeof expect, "{\"change\": \"erased\", \"id\": %lld}", erased);
    want = parse(expect);
    ck_assert_msg(json_equal(json_array_get(data, 1), want), "erased entry");
    json_decref(want);
    /* The merge changes the survivor and the merged customer in one
     * transaction; each comes once, in the order they were written. */
    snprintf(expect, sizeof expect, "{\"change\": \"merged\", \"id\": %lld, \"merged_into\": %lld}",
             merged, survivor);
    want = parse(expect);
    json_t *m = entries_for(data, merged), *s = entries_for(data, survivor);
    ck_assert_uint_eq(json_array_size(m), 1);
    ck_assert_msg(json_equal(json_array_get(m, 0), want), "merged entry");
    ck_assert_uint_eq(json_array_size(s), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(s, 0), "change")), "upsert");
    json_decref(want);
    json_decref(m);
    json_decref(s);
    json_decref(data);
    free(start);
}
END_TEST

/* An app that knew a customer by its own id learns, after a merge, that the
 * id now belongs to the survivor: the survivor's upsert lists its external
 * ids, the merged one's included. */
START_TEST(after_a_merge_the_survivors_upsert_carries_the_merged_external_ids)
{
    char local[64], body[256];
    unit_unique(local, sizeof local, "ext");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Known\", \"external_ids\": [{\"source\": \"app\", \"id\": \"%s\"}]}",
             local);
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created out;
    json_t *doc = parse(body);
    ck_assert_msg(crm_customer_create(doc, &ctx, &out, &err), "create: %s", err.detail);
    json_decref(doc);
    json_t *rep = parse(out.body);
    crm_customer_created_free(&out);
    long long merged = json_integer_value(json_object_get(rep, "id"));
    json_decref(rep);
    long long survivor = create_customer("Survivor", NULL, 0);
    char *start = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);

    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", merged);
    json_t *mb = parse(body);
    bool dry = true;
    json_t *m = crm_customer_merge(survivor, mb, &ctx, &dry, &err);
    ck_assert_msg(m != NULL, "merge: %s", err.detail);
    json_decref(m);
    json_decref(mb);

    json_t *data = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, start, 1000, data));
    json_t *s = entries_for(data, survivor);
    ck_assert_uint_eq(json_array_size(s), 1);
    json_t *ids = json_object_get(json_object_get(json_array_get(s, 0), "customer"), "external_ids");
    ck_assert_msg(json_is_array(ids), "no external_ids in the upsert");
    bool found = false;
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *x = json_array_get(ids, i);
        found |= strcmp(json_string_value(json_object_get(x, "source")), "app") == 0 &&
                 strcmp(json_string_value(json_object_get(x, "id")), local) == 0;
    }
    ck_assert_msg(found, "the merged customer's external id is not on the survivor");
    json_decref(s);
    json_decref(data);
    free(start);
}
END_TEST

/* ---- touchpoints ------------------------------------------------------------------ */

START_TEST(the_touchpoint_feed_lists_touchpoints_in_full)
{
    long long customer = create_customer("Visitor", NULL, 0);
    char *start = drain(CRM_SYNC_TOUCHPOINTS, NULL, 1000, NULL);
    long long tp = insert_touchpoint(customer);

    json_t *entries = json_array();
    char *end = drain(CRM_SYNC_TOUCHPOINTS, start, 100, entries);
    ck_assert_uint_eq(json_array_size(entries), 1);
    json_t *entry = json_array_get(entries, 0);
    ck_assert_str_eq(json_string_value(json_object_get(entry, "change")), "upsert");
    ck_assert_int_eq(entry_id(entry), tp);
    ck_assert_str_eq(decode_cursor(end).feed, "touchpoints");

    crm_query q;
    crm_touchpoint_get_query(&q, tp);
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_msg(res != NULL, "get: %s", err.detail);
    size_t len;
    char *read_text = crm_touchpoint_get_render(res, &len, &err);
    PQclear(res);
    ck_assert_ptr_nonnull(read_text);
    json_t *read = parse(read_text);
    free(read_text);
    ck_assert_msg(json_equal(json_object_get(entry, "touchpoint"), read), "feed and read differ");

    json_decref(read);
    json_decref(entries);
    free(end);
    free(start);
}
END_TEST

START_TEST(an_erased_customers_touchpoints_come_again_without_their_free_text)
{
    long long customer = create_customer("Forgotten", NULL, 0);
    long long tp = insert_touchpoint(customer);
    char *start = drain(CRM_SYNC_TOUCHPOINTS, NULL, 1000, NULL);
    crm_error err = CRM_ERROR_INIT;
    bool already = false;
    json_t *tomb = crm_customer_erase(customer, &ctx, &already, &err);
    ck_assert_msg(tomb != NULL, "erase: %s", err.detail);
    json_decref(tomb);

    json_t *entries = json_array();
    free(drain(CRM_SYNC_TOUCHPOINTS, start, 100, entries));
    ck_assert_uint_eq(json_array_size(entries), 1);
    json_t *rep = json_object_get(json_array_get(entries, 0), "touchpoint");
    ck_assert_int_eq(json_integer_value(json_object_get(rep, "id")), tp);
    ck_assert(json_is_true(json_object_get(rep, "erased")));
    ck_assert_uint_eq(json_object_size(json_object_get(rep, "properties")), 0);
    json_decref(entries);
    free(start);
}
END_TEST

/* ---- cursors -------------------------------------------------------------------- */

START_TEST(a_cursor_of_the_other_feed_is_invalid)
{
    char *end = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    crm_error err = page_error(CRM_SYNC_TOUCHPOINTS, end);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert(unit_has_field_error(&err, "cursor"));
    crm_error_clear(&err);
    free(end);
}
END_TEST

START_TEST(a_malformed_cursor_is_invalid)
{
    long long now = wall_ms();
    char fine[200];
    snprintf(fine, sizeof fine, "[\"customers\",\"5\",1,%lld]", now);
    const char *raws[] = {
        "[]",
        "{}",
        "[\"customers\",\"5\",1]",
        "[\"customers\",5,1,1]",
        "[\"customers\",\"5x\",1,1]",
        "[\"customers\",\"-5\",1,1]",
        "[\"customers\",\"\",1,1]",
        "[\"customers\",\"99999999999999999999\",1,1]",
        "[\"customers\",\"9999999999999999999\",1,1]",
        "[\"customers\",\"5\",-1,1]",
        "[\"customers\",\"5\",1,0]",
        "[\"customers\",\"5\",1.5,1]",
        "[\"customers\",\"5\",1,1,1]",
        "not json",
    };
    for (size_t i = 0; i < sizeof raws / sizeof raws[0]; i++) {
        char *cursor = encode_cursor(raws[i]);
        crm_error err = page_error(CRM_SYNC_CUSTOMERS, cursor);
        ck_assert_msg(err.code == CRM_E_INVALID, "%s gave %d", raws[i], err.code);
        ck_assert(unit_has_field_error(&err, "cursor"));
        crm_error_clear(&err);
        free(cursor);
    }
    const char *texts[] = {"", "!!!!", "a", "%%"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        crm_error err = page_error(CRM_SYNC_CUSTOMERS, texts[i]);
        ck_assert_msg(err.code == CRM_E_INVALID, "'%s' gave %d", texts[i], err.code);
        crm_error_clear(&err);
    }
    char long_cursor[1000];
    memset(long_cursor, 'A', sizeof long_cursor - 1);
    long_cursor[sizeof long_cursor - 1] = '\0';
    crm_error err = page_error(CRM_SYNC_CUSTOMERS, long_cursor);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    /* The old, unsigned format with a fresh issued_at, which could dodge
     * the 410, is refused; signed cursors with values no page gives too. */
    char *unsigned_fine = encode_cursor(fine);
    err = page_error(CRM_SYNC_CUSTOMERS, unsigned_fine);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert(unit_has_field_error(&err, "cursor"));
    crm_error_clear(&err);
    free(unsigned_fine);
    long long bad[][3] = {{-1, 1, now}, {5, -1, now}, {5, 1, 0}, {5, 1, -now}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *signed_bad = make_cursor("customers", bad[i][0], bad[i][1], bad[i][2]);
        err = page_error(CRM_SYNC_CUSTOMERS, signed_bad);
        ck_assert_msg(err.code == CRM_E_INVALID, "case %zu gave %d", i, err.code);
        crm_error_clear(&err);
        free(signed_bad);
    }
    /* A tampered signature: one character of a good cursor changed. */
    char *good = make_cursor("customers", 5, 1, now);
    good[strlen(good) / 2] = good[strlen(good) / 2] == 'A' ? 'B' : 'A';
    err = page_error(CRM_SYNC_CUSTOMERS, good);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    free(good);
    /* The well-formed one, for contrast, is accepted. */
    char *ok = make_cursor("customers", 5, 1, now);
    json_decref(page(CRM_SYNC_CUSTOMERS, ok, 1));
    free(ok);
}
END_TEST

START_TEST(a_cursor_older_than_the_retention_is_gone)
{
    char *end = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    cursor_parts p = decode_cursor(end);
    char *old = make_cursor("customers", p.xid, p.seq, wall_ms() - 91 * DAY_MS);
    crm_error err = page_error(CRM_SYNC_CUSTOMERS, old);
    ck_assert_int_eq(err.code, CRM_E_GONE);
    ck_assert_msg(strstr(err.detail, "full resync") != NULL, "detail: %s", err.detail);
    crm_error_clear(&err);
    free(old);

    char *recent = make_cursor("customers", p.xid, p.seq, wall_ms() - 89 * DAY_MS);
    json_decref(page(CRM_SYNC_CUSTOMERS, recent, 10));
    free(recent);
    free(end);
}
END_TEST

START_TEST(the_retention_is_configurable)
{
    crm_sync_set_retention_days(1);
    ck_assert_int_eq(crm_sync_retention_days(), 1);
    char *two_days = make_cursor("touchpoints", 0, 0, wall_ms() - 2 * DAY_MS);
    char *half_day = make_cursor("touchpoints", 0, 0, wall_ms() - DAY_MS / 2);
    crm_error err = page_error(CRM_SYNC_TOUCHPOINTS, two_days);
    ck_assert_int_eq(err.code, CRM_E_GONE);
    crm_error_clear(&err);
    json_decref(page(CRM_SYNC_TOUCHPOINTS, half_day, 1));

    crm_sync_set_retention_days(3);
    json_decref(page(CRM_SYNC_TOUCHPOINTS, two_days, 1));
    free(two_days);
    free(half_day);
}
END_TEST

/* The place of customer id, as "xid/seq". */
static long long change_xid_of(long long id)
{
    char cid[24];
    snprintf(cid, sizeof cid, "%lld", id);
    const char *params[] = {cid};
    return unit_sql_long(direct, "SELECT change_xid::text::bigint FROM customers WHERE id = $1", 1,
                         params);
}

static void age_customer(long long id, int days)
{
    char cid[24], d[16];
    snprintf(cid, sizeof cid, "%lld", id);
    snprintf(d, sizeof d, "%d", days);
    const char *params[] = {cid, d};
    PQclear(unit_sql(direct,
                     "UPDATE customers SET updated_at = now() - $2::int * interval '1 day' "
                     "WHERE id = $1",
                     2, params));
}

START_TEST(tombstones_past_the_retention_are_purged_from_the_feed)
{
    /* A deleted 92 days ago (past 90 + 1), B deleted now, C live but not
     * changed for 92 days: only A's tombstone goes, in batches of one. */
    long long a = create_customer("Purged", NULL, 0), b = create_customer("Kept", NULL, 0),
              c = create_customer("Live", NULL, 0);
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_customer_delete(a, NULL, &ctx, &err), "delete: %s", err.detail);
    ck_assert_msg(crm_customer_delete(b, NULL, &ctx, &err), "delete: %s", err.detail);
    age_customer(a, 92);
    age_customer(c, 92);
    long purged = crm_sync_purge_tombstones(1, 1000, &err);
    ck_assert_msg(purged >= 1, "purge: %ld %s", purged, err.detail);
    ck_assert_int_eq(change_xid_of(a), 0);
    ck_assert_int_ne(change_xid_of(b), 0);
    ck_assert_int_ne(change_xid_of(c), 0);
    ck_assert_int_eq(crm_sync_purge_tombstones(100, 10, &err), 0); /* nothing left */

    json_t *entries = json_array();
    free(drain(CRM_SYNC_CUSTOMERS, NULL, 1000, entries));
    json_t *of_a = entries_for(entries, a), *of_b = entries_for(entries, b),
           *of_c = entries_for(entries, c);
    ck_assert_uint_eq(json_array_size(of_a), 0);
    ck_assert_uint_eq(json_array_size(of_b), 1);
    ck_assert_uint_eq(json_array_size(of_c), 1);
    json_decref(of_a);
    json_decref(of_b);
    json_decref(of_c);
    json_decref(entries);

    /* Any later change gives the row a place again. */
    char cid[24];
    snprintf(cid, sizeof cid, "%lld", a);
    const char *params[] = {cid};
    PQclear(unit_sql(direct, "UPDATE customers SET version = version + 1 WHERE id = $1", 1,
                     params));
    ck_assert_int_ne(change_xid_of(a), 0);
}
END_TEST

START_TEST(a_reader_that_caught_up_keeps_its_cursor_good_however_long_it_polls)
{
    /* The retention counts from the last page that was not full: a reader
     * paging through a backlog carries its catch-up time along, one that
     * caught up gets a fresh one. */
    create_customer("One", NULL, 0);
    create_customer("Two", NULL, 0);
    long long old = wall_ms() - 10 * DAY_MS;
    char *start = make_cursor("customers", 0, 0, old);
    json_t *doc = page(CRM_SYNC_CUSTOMERS, start, 1); /* full: not caught up */
    cursor_parts p = decode_cursor(json_string_value(json_object_get(doc, "next_cursor")));
    ck_assert_int_eq(p.issued_ms, old);
    json_decref(doc);
    char *end = drain(CRM_SYNC_CUSTOMERS, NULL, 1000, NULL);
    long long before = wall_ms();
    char *aged = make_cursor("customers", decode_cursor(end).xid, decode_cursor(end).seq, old);
    doc = page(CRM_SYNC_CUSTOMERS, aged, 1000); /* not full: caught up */
    ck_assert_int_ge(decode_cursor(json_string_value(json_object_get(doc, "next_cursor"))).issued_ms,
                     before);
    json_decref(doc);
    free(aged);
    free(end);
    free(start);
}
END_TEST

Suite *sync_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("feed");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup_db, teardown_db);
    tcase_add_test(tc, a_transaction_that_commits_late_is_not_passed_over);
    tcase_add_test(tc, a_transaction_that_rolls_back_holds_the_feed_only_while_it_runs);
    tcase_add_test(tc, pages_follow_the_cursor_to_the_end_without_duplicates_or_gaps);
    tcase_add_test(tc, a_first_page_without_cursor_starts_from_the_beginning);
    tcase_add_test(tc, an_upsert_is_the_representation_a_read_returns);
    tcase_add_test(tc, after_a_merge_the_survivors_upsert_carries_the_merged_external_ids);
    tcase_add_test(tc, a_change_moves_a_customer_to_the_end_of_the_feed);
    tcase_add_test(tc, an_empty_page_gives_the_same_place_freshly_issued);
    tcase_add_test(tc, limit_bounds_a_page);
    tcase_add_test(tc, tombstones_of_deleted_erased_and_merged_customers_have_their_shapes);
    tcase_add_test(tc, the_touchpoint_feed_lists_touchpoints_in_full);
    tcase_add_test(tc, an_erased_customers_touchpoints_come_again_without_their_free_text);
    tcase_add_test(tc, a_cursor_of_the_other_feed_is_invalid);
    tcase_add_test(tc, a_malformed_cursor_is_invalid);
    tcase_add_test(tc, a_cursor_older_than_the_retention_is_gone);
    tcase_add_test(tc, the_retention_is_configurable);
    tcase_add_test(tc, tombstones_past_the_retention_are_purged_from_the_feed);
    tcase_add_test(tc, a_reader_that_caught_up_keeps_its_cursor_good_however_long_it_polls);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_customers.c — /v1/customers over real HTTP: create (201, Location,
 * ETag, Idempotency-Key), read (ETag, expand, merged customers), merge
 * patch (If-Match, and two concurrent writers with the same ETag), delete,
 * lists (filters, 422s, cursors that stay stable while rows are inserted),
 * upsert by external id, the audit trail, and the naughty strings round
 * trip. Rows are counted straight in the database to prove that refused
 * requests store nothing.
 */
#include "harness.h"
#include "json.h"
#include "list/cursor.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLNS_PATH "/work/shared/data/naughty-strings/blns.json"

static crmd_server srv;
static api_key writer, reader;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (writer.id == 0)
        ck_assert(api_key_create("customers:read,customers:write", &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("customers:read", &reader));
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* ---- helpers ------------------------------------------------------------------- */

static http_response send_json(const char *method, const char *path, const char *key,
                               const char *body, const char *const *headers)
{
    http_call call = {.method = method, .path = path, .api_key = key, .body = body,
                      .headers = headers};
    return http_send(&srv, &call);
}

/* POSTs body as the writer and expects 201; returns the representation. */
static json_t *create(const char *body)
{
    http_response r = send_json("POST", "/v1/customers", writer.secret, body, NULL);
    ck_assert_msg(r.status == 201, "create answered %ld: %.400s", r.status, r.body);
    json_t *doc = http_response_json(&r);
    ck_assert_ptr_nonnull(doc);
    http_response_free(&r);
    return doc;
}

static long long id_of(json_t *rep)
{
    return json_integer_value(json_object_get(rep, "id"));
}

static long count_rows(const char *sql)
{
    PGconn *c = PQconnectdb(harness_env("CRMD_TEST_DATABASE_URL"));
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    PGresult *res = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return n;
}

static void exec_sql(const char *sql)
{
    PGconn *c = PQconnectdb(harness_env("CRMD_TEST_DATABASE_URL"));
    PGresult *res = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
}

/* Expects a problem with status whose errors[] names field (field may be NULL). */
static void expect_problem(http_response *r, long status, const char *field)
{
    json_t *p = assert_problem(r, status);
    if (field != NULL)
        ck_assert_msg(problem_names_field(p, field), "no error for %s in %.400s", field, r->body);
    json_decref(p);
    http_response_free(r);
}

/* ---- create and read ------------------------------------------------------------- */

START_TEST(create_answers_201_with_location_and_etag_and_get_returns_it)
{
    http_response r = send_json("POST", "/v1/customers", writer.secret,
                                "{\"first_name\": \"Ada\", \"email\": \"ada@example.com\", "
                                "\"address\": {\"country\": \"GB\"}, \"tags\": [\"vip\"]}",
                                NULL);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    const char *location = http_response_header(&r, "Location");
    ck_assert_ptr_nonnull(location);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    json_t *created = http_response_json(&r);
    char want[64];
    snprintf(want, sizeof want, "/v1/customers/%lld", id_of(created));
    ck_assert_str_eq(location, want);

    http_response g = http_get(&srv, location, reader.secret);
    ck_assert_int_eq(g.status, 200);
    ck_assert_str_eq(http_response_header(&g, "ETag"), "\"1\"");
    ck_assert_str_eq(g.body, r.body);
    json_t *doc = http_response_json(&g);
    ck_assert(json_is_null(json_object_get(doc, "location")));
    ck_assert(json_is_null(json_object_get(json_object_get(doc, "address"), "city")));
    ck_assert_ptr_nonnull(json_object_get(doc, "created_at"));
    json_decref(doc);
    json_decref(created);
    http_response_free(&g);
    http_response_free(&r);
}
END_TEST

START_TEST(create_refuses_without_key_scope_or_json)
{
    http_response r = send_json("POST", "/v1/customers", NULL, "{}", NULL);
    expect_problem(&r, 401, NULL);
    r = send_json("POST", "/v1/customers", reader.secret, "{}", NULL);
    expect_problem(&r, 403, NULL);
    http_call call = {.method = "POST", .path = "/v1/customers", .api_key = writer.secret,
                      .body = "x", .content_type = "text/plain"};
    r = http_send(&srv, &call);
    expect_problem(&r, 415, NULL);
    r = send_json("POST", "/v1/customers", writer.secret, "{\"a\": ", NULL);
    expect_problem(&r, 400, NULL);
}
END_TEST

START_TEST(an_invalid_create_names_every_field_and_stores_nothing)
{
    long before = count_rows("SELECT count(*) FROM customers");
    http_response r = send_json(
        "POST", "/v1/customers", writer.secret,
        "{\"email\": \"no\", \"phone\": \"12\", \"address\": {\"country\": \"XX\"}, "
        "\"birth_date\": \"2001-02-29\", \"location\": {\"latitude\": 1}, \"kind\": \"cat\", "
        "\"tags\": [\"a\", \"a\"], \"attributes\": [], \"display_name\": \"a\\u0000\", "
        "\"preferred_language\": \"english!\", \"lifecycle_stage\": \"x\", \"bogus\": 1}",
        NULL);
    json_t *p = assert_problem(&r, 422);
    const char *fields[] = {"/email", "/phone", "/address/country", "/birth_date",
                            "/location/longitude", "/kind", "/tags/1", "/attributes",
                            "/display_name", "/preferred_language", "/lifecycle_stage",
                            "/bogus"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        ck_assert_msg(problem_names_field(p, fields[i]), "no error for %s: %s", fields[i], r.body);
    json_decref(p);
    http_response_free(&r);
    ck_assert_int_eq(count_rows("SELECT count(*) FROM customers"), before);
}
END_TEST

START_TEST(get_answers_404_for_unknown_ids_and_422_for_unknown_expansions)
{
    http_response r = http_get(&srv, "/v1/customers/999999999999", reader.secret);
    expect_problem(&r, 404, NULL);
    r = http_get(&srv, "/v1/customers/abc", reader.secret);
    expect_problem(&r, 404, NULL);
    json_t *c = create("{}");
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld?expand=history", id_of(c));
    r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 422, "expand");
    json_decref(c);
}
END_TEST

START_TEST(expand_external_ids_lists_them)
{
    char ext[48], body[160], path[96];
    harness_unique(ext, sizeof ext, "x");
    snprintf(body, sizeof body, "{\"external_ids\": [{\"source\": \"sf\", \"id\": \"%s\"}]}", ext);
    json_t *c = create(body);
    ck_assert_ptr_null(json_object_get(c, "external_ids"));
    snprintf(path, sizeof path, "/v1/customers/%lld?expand=external_ids", id_of(c));
    http_response r = http_get(&srv, path, reader.secret);
    ck_assert_int_eq(r.status, 200);
    json_t *doc = http_response_json(&r);
    json_t *ids = json_object_get(doc, "external_ids");
    ck_assert_uint_eq(json_array_size(ids), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ids, 0), "source")), "sf");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ids, 0), "id")), ext);
    json_decref(doc);
    json_decref(c);
    http_response_free(&r);
}
END_TEST

START_TEST(a_merged_customer_answers_with_its_survivor)
{
    json_t *survivor = create("{\"first_name\": \"Survivor\"}");
    json_t *merged = create("{\"first_name\": \"Merged\"}");
    char sql[160], path[64], want[64];
    snprintf(sql, sizeof sql, "UPDATE customers SET status = 'merged', merged_into = %lld "
                              "WHERE id = %lld", id_of(survivor), id_of(merged));
    exec_sql(sql);
    snprintf(path, sizeof path, "/v1/customers/%lld", id_of(merged));
    http_response r = http_get(&srv, path, reader.secret);
    ck_assert_int_eq(r.status, 200);
    json_t *doc = http_response_json(&r);
    ck_assert_int_eq(id_of(doc), id_of(survivor));
    snprintf(want, sizeof want, "/v1/customers/%lld", id_of(survivor));
    ck_assert_str_eq(http_response_header(&r, "Content-Location"), want);
    json_decref(doc);
    json_decref(survivor);
    json_decref(merged);
    http_response_free(&r);
}
END_TEST

/* ---- patch and delete --------------------------------------------------------------- */

START_TEST(patch_is_a_merge_patch_under_if_match)
{
    json_t *c = create("{\"first_name\": \"Ada\", \"address\": {\"city\": \"London\"}, "
                       "\"tags\": [\"a\"]}");
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld", id_of(c));
    const char *if1[] = {"If-Match: \"1\"", NULL};
    http_call call = {.method = "PATCH", .path = path, .api_key = writer.secret,
                      .body = "{\"address\": {\"country\": \"GB\"}, \"tags\": null}",
                      .content_type = "application/merge-patch+json", .headers = if1};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"2\"");
    json_t *doc = http_response_json(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), 2);
    json_t *addr = json_object_get(doc, "address");
    ck_assert_str_eq(json_string_value(json_object_get(addr, "city")), "London");
    ck_assert_str_eq(json_string_value(json_object_get(addr, "country")), "GB");
    ck_assert_uint_eq(json_array_size(json_object_get(doc, "tags")), 0);
    ck_assert_str_ne(json_string_value(json_object_get(doc, "updated_at")),
                     json_string_value(json_object_get(c, "updated_at")));
    json_decref(doc);
    http_response_free(&r);

    r = http_send(&srv, &call); /* the same If-Match again: stale now */
    expect_problem(&r, 412, NULL);
    call.headers = NULL;
    call.body = "{\"email\": \"nope\"}";
    r = http_send(&srv, &call);
    expect_problem(&r, 422, "/email");
    call.body = "[1]";
    r = http_send(&srv, &call);
    expect_problem(&r, 422, NULL);
    call.path = "/v1/customers/999999999999";
    call.body = "{}";
    r = http_send(&srv, &call);
    expect_problem(&r, 404, NULL);
    json_decref(c);
}
END_TEST

START_TEST(unquoted_if_match_answers_400_saying_entity_tags_are_quoted)
{
    /* `If-Match: 1` used to get 412 "the customer has changed" although
     * the customer was at version 1. */
    json_t *c = create("{\"first_name\": \"Ada\"}");
    char path[64], ext_path[128], ext[64];
    snprintf(path, sizeof path, "/v1/customers/%lld", id_of(c));
    const char *unquoted[] = {"If-Match: 1", NULL};
    http_call call = {.method = "PATCH", .path = path, .api_key = writer.secret,
                      .body = "{\"first_name\": \"Grace\"}", .headers = unquoted};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == 400, "HTTP %ld: %.300s", r.status, r.body);
    json_t *problem = assert_problem(&r, 400);
    const char *detail = json_string_value(json_object_get(problem, "detail"));
    ck_assert_ptr_nonnull(strstr(detail, "quoted"));
    ck_assert_ptr_nonnull(strstr(detail, "\"3\""));
    json_decref(problem);
    http_response_free(&r);

    /* The raw value is never repeated back. */
    const char *odd[] = {"If-Match: zq9-not-a-tag", NULL};
    call.headers = odd;
    r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 400));
    ck_assert_ptr_null(strstr(r.body, "zq9"));
    http_response_free(&r);

    call.method = "DELETE";
    call.body = NULL;
    call.headers = unquoted;
    r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);

    harness_unique(ext, sizeof ext, "ifm");
    snprintf(ext_path, sizeof ext_path, "/v1/customers/by-external-id/crm/%s", ext);
    call = (http_call){.method = "PUT", .path = ext_path, .api_key = writer.secret,
                       .body = "{\"first_name\": \"Grace\"}", .headers = unquoted};
    r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);

    /* Nothing changed: still version 1, still there; the quoted tag works. */
    r = http_get(&srv, path, reader.secret);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    http_response_free(&r);
    const char *quoted[] = {"If-Match: \"1\"", NULL};
    call = (http_call){.method = "PATCH", .path = path, .api_key = writer.secret,
                       .body = "{\"first_name\": \"Grace\"}", .headers = quoted};
    r = http_send(&srv, &call);
    ck_assert_msg(r.status == 200, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
    json_decref(c);
}
END_TEST

typedef struct racer {
    const char *path, *body;
    pthread_barrier_t *barrier;
    long status;
} racer;

static void *race_patch(void *arg)
{
    racer *r = arg;
    const char *headers[] = {"If-Match: \"1\"", NULL};
    http_call call = {.method = "PATCH", .path = r->path, .api_key = writer.secret,
                      .body = r->body, .headers = headers};
    pthread_barrier_wait(r->barrier);
    http_response resp = http_send(&srv, &call);
    r->status = resp.status;
    http_response_free(&resp);
    return NULL;
}

START_TEST(two_concurrent_patches_with_the_same_etag_one_wins)
{
    for (int round = 0; round < 5; round++) {
        json_t *c = create("{\"first_name\": \"Start\"}");
        char path[64];
        snprintf(path, sizeof path, "/v1/customers/%lld", id_of(c));
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 2);
        racer a = {path, "{\"first_name\": \"A\"}", &barrier, 0};
        racer b = {path, "{\"first_name\": \"B\"}", &barrier, 0};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, race_patch, &a);
        pthread_create(&tb, NULL, race_patch, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&barrier);
        ck_assert_msg((a.status == 200 && b.status == 412) || (a.status == 412 && b.status == 200),
                      "round %d: statuses %ld and %ld", round, a.status, b.status);
        http_response g = http_get(&srv, path, reader.secret);
        json_t *doc = http_response_json(&g);
        ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), 2);
        json_decref(doc);
        http_response_free(&g);
        json_decref(c);
    }
}
END_TEST

START_TEST(delete_hides_the_customer_but_keeps_the_row)
{
    char email[80], body[128], path[64], list[160], sql[128];
    harness_unique(email, sizeof email, "gone");
    strcat(email, "@example.com");
    snprintf(body, sizeof body, "{\"email\": \"%s\"}", email);
    json_t *c = create(body);
    snprintf(path, sizeof path, "/v1/customers/%lld", id_of(c));
    const char *stale[] = {"If-Match: \"5\"", NULL};
    http_call del = {.method = "DELETE", .path = path, .api_key = writer.secret, .headers = stale};
    http_response r = http_send(&srv, &del);
    expect_problem(&r, 412, NULL);
    r = http_delete(&srv, path, reader.secret);
    expect_problem(&r, 403, NULL);
    r = http_delete(&srv, path, writer.secret);
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);
    r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 404, NULL);
    r = http_delete(&srv, path, writer.secret);
    expect_problem(&r, 404, NULL);
    snprintf(list, sizeof list, "/v1/customers?email=%s", email);
    r = http_get(&srv, list, reader.secret);
    ck_assert_int_eq(r.status, 200);
    json_t *page = http_response_json(&r);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
    http_response_free(&r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM customers WHERE id = %lld AND status = "
                              "'deleted'", id_of(c));
    ck_assert_int_eq(count_rows(sql), 1);
    json_decref(c);
}
END_TEST

/* ---- lists -------------------------------------------------------------------------- */

START_TEST(list_filters_by_each_parameter)
{
    char tag[48], body[512], path[256];
    harness_unique(tag, sizeof tag, "f");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Zed\", \"last_name\": \"%sfinder\", \"email\": \"Z.%s@Example.com\", "
             "\"phone\": \"+1 (555) 010-0000\", \"address\": {\"country\": \"IT\", \"city\": "
             "\"Roma\"}, \"lifecycle_stage\": \"loyal\", \"tags\": [\"%s\"]}",
             tag, tag, tag);
    json_t *c = create(body);
    snprintf(body, sizeof body, "{\"tags\": [\"%s\"], \"address\": {\"country\": \"FR\"}}", tag);
    json_decref(create(body));
    /* Each query is before + tag + after (no format strings as data). */
    const char *filters[][2] = {
        {"email=z.", "%40example.com"},
        {"phone=%2B15550100000&tag=", ""},
        {"country=IT&tag=", ""},
        {"city=Roma&tag=", ""},
        {"lifecycle_stage=loyal&tag=", ""},
        {"q=", "FINDER"},
        {"tag=", "&created_after=2000-01-01T00:00:00Z&created_before=2999-01-01T00:00:00Z"
                 "&updated_after=2000-01-01T00:00:00%2B02:00&country=IT"}};
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        char query[200];
        snprintf(query, sizeof query, "%s%s%s", filters[i][0], tag, filters[i][1]);
        snprintf(path, sizeof path, "/v1/customers?%s", query);
        http_response r = http_get(&srv, path, reader.secret);
        ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
        json_t *page = http_response_json(&r);
        json_t *data = json_object_get(page, "data");
        ck_assert_msg(json_array_size(data) == 1 && id_of(json_array_get(data, 0)) == id_of(c),
                      "%s: %s", path, r.body);
        json_decref(page);
        http_response_free(&r);
    }
    snprintf(path, sizeof path, "/v1/customers?tag=%s&created_before=2000-01-01T00:00:00Z", tag);
    http_response r = http_get(&srv, path, reader.secret);
    json_t *page = http_response_json(&r);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
    http_response_free(&r);
    json_decref(c);
}
END_TEST

START_TEST(list_search_pages_follow_the_cursor)
{
    /* Five customers; "<tag>p" begins the words of all of them, and two of
     * them hold two such words: every page of two comes from merged ranges. */
    char tag[48], body[256], path[512];
    harness_unique(tag, sizeof tag, "pg");
    long long made[5];
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof body, "{\"first_name\": \"%sp%d\", \"company\": \"%sp%s\"}", tag,
                 i, tag, i < 2 ? "x" : "y");
        json_t *c = create(body);
        made[i] = id_of(c);
        json_decref(c);
    }
    const char *sorts[] = {"created_at", "-created_at"};
    for (int s = 0; s < 2; s++) {
        char *after = NULL;
        int seen = 0, pages = 0;
        do {
            snprintf(path, sizeof path, "/v1/customers?q=%sp&limit=2&sort=%s%s%s", tag, sorts[s],
                     after ? "&after=" : "", after ? after : "");
            free(after);
            after = NULL;
            http_response r = http_get(&srv, path, reader.secret);
            ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
            json_t *page = http_response_json(&r), *c;
            size_t k;
            json_array_foreach(json_object_get(page, "data"), k, c) {
                int want = s == 0 ? seen : 4 - seen; /* creation order, then its reverse */
                ck_assert_msg(id_of(c) == made[want], "%s: item %d is %lld", path, seen, id_of(c));
                seen++;
            }
            json_t *next = json_object_get(page, "next_cursor");
            if (json_is_string(next))
                after = strdup(json_string_value(next));
            json_decref(page);
            http_response_free(&r);
            pages++;
        } while (after != NULL && pages < 10);
        ck_assert_int_eq(seen, 5);
        ck_assert_int_eq(pages, 3);
    }
}
END_TEST

START_TEST(a_search_with_every_filter_answers_200)
{
    /* The one-request crash: all ten filters and eight q words, no
     * data needed; and the server is still there afterwards. */
    const char *path =
        "/v1/customers?sort=name&q=aaa%20bbb%20ccc%20ddd%20eee%20fff%20ggg%20hhh"
        "&email=a@b.co&phone=%2B391234567&country=IT&city=x&lifecycle_stage=lead&tag=t"
        "&created_after=2000-01-01T00:00:00Z&created_before=2100-01-01T00:00:00Z"
        "&updated_after=2000-01-01T00:00:00Z&updated_before=2100-01-01T00:00:00Z";
    for (int i = 0; i < 2; i++) {
        http_response r = http_get(&srv, path, reader.secret);
        ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
        http_response_free(&r);
    }
    http_response h = http_get(&srv, "/healthz", NULL);
    ck_assert_int_eq(h.status, 200);
    http_response_free(&h);
}
END_TEST

START_TEST(a_search_over_sixteen_words_of_one_prefix_pages_to_the_end)
{
    /* 16 customers Zqxw1 .. Zqxw16, then q=zqxw&limit=1 and every next page:
     * the second page was a 503 ("bind message supplies 0 parameters"), then
     * a crash. Also q=0.0.0 and q=0,0,0 from the naughty strings. */
    char tag[48], body[256], path[512];
    harness_unique(tag, sizeof tag, "zq");
    for (int i = 1; i <= 16; i++) {
        snprintf(body, sizeof body, "{\"last_name\": \"%sZqxw%d\"}", tag, i);
        json_decref(create(body));
    }
    char *after = NULL;
    int seen = 0, pages = 0;
    do {
        snprintf(path, sizeof path, "/v1/customers?q=%szqxw&limit=1%s%s", tag,
                 after ? "&after=" : "", after ? after : "");
        free(after);
        after = NULL;
        http_response r = http_get(&srv, path, reader.secret);
        ck_assert_msg(r.status == 200, "%s: %ld %.300s", path, r.status, r.body);
        json_t *page = http_response_json(&r);
        seen += (int)json_array_size(json_object_get(page, "data"));
        json_t *next = json_object_get(page, "next_cursor");
        if (json_is_string(next))
            after = strdup(json_string_value(next));
        json_decref(page);
        http_response_free(&r);
    } while (after != NULL && ++pages < 40);
    ck_assert_int_eq(seen, 16);
    const char *naughty[] = {"/v1/customers?q=0.0.0", "/v1/customers?q=0,0,0",
                             "/v1/customers?q=0.0.0&limit=1&sort=-created_at"};
    for (size_t i = 0; i < 3; i++) {
        http_response r = http_get(&srv, naughty[i], reader.secret);
        ck_assert_msg(r.status == 200, "%s: %ld %.300s", naughty[i], r.status, r.body);
        http_response_free(&r);
    }
}
END_TEST

/* base64url of text; the caller frees it. */
static char *b64(const char *text)
{
    size_t len = strlen(text), size = len * 4 / 3 + 4;
    char *out = malloc(size);
    ck_assert_ptr_nonnull(out);
    crm_base64url_encode((const unsigned char *)text, len, out, size);
    return out;
}

START_TEST(a_forged_cursor_is_refused_with_422_never_500)
{
    /* S2: ["created_at", -300000000000000000, 5] made PostgreSQL raise
     * "timestamp out of range" (a 500, and other clients' requests in the
     * same pipeline failed with it). Unsigned, it is refused at once; even
     * signed with the deployment's own secret, its value is range-checked
     * in C. Likewise the old "k"+id cursor of the id-paged lists. */
    char path[512];
    char *forged = b64("[\"created_at\", -300000000000000000, 5]");
    snprintf(path, sizeof path, "/v1/customers?after=%s", forged);
    http_response r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 422, "after");
    free(forged);

    static api_key timeline_reader;
    if (timeline_reader.id == 0)
        ck_assert(api_key_create("touchpoints:read", &timeline_reader));
    json_t *c = create("{\"first_name\": \"Cursor\"}");
    long long id = id_of(c);
    json_decref(c);
    harness_cursor_secret_load();
    const long long keys[] = {-300000000000000000LL, 9000000000000000000LL, CRM_CURSOR_US_MIN - 1,
                              CRM_CURSOR_US_MAX};
    for (size_t i = 0; i < 4; i++) {
        crm_cursor cur;
        crm_cursor_init(&cur, CRM_CURSOR_CUSTOMERS, 0); /* created_at */
        crm_cursor_add_int(&cur, keys[i]);
        crm_cursor_add_int(&cur, 5);
        crm_error err = CRM_ERROR_INIT;
        char *text = crm_cursor_encode(&cur, &err);
        ck_assert_ptr_nonnull(text);
        snprintf(path, sizeof path, "/v1/customers?after=%s", text);
        r = http_get(&srv, path, reader.secret);
        expect_problem(&r, 422, "after");
        free(text);
        crm_cursor_init(&cur, CRM_CURSOR_TIMELINE, 0); /* [occurred_at µs, id] */
        crm_cursor_add_int(&cur, keys[i]);
        crm_cursor_add_int(&cur, 5);
        text = crm_cursor_encode(&cur, &err);
        ck_assert_ptr_nonnull(text);
        snprintf(path, sizeof path, "/v1/customers/%lld/touchpoints?after=%s", id, text);
        r = http_get(&srv, path, timeline_reader.secret);
        expect_problem(&r, 422, "after");
        free(text);
    }
    forged = b64("[-300000000000000000, 5]");
    snprintf(path, sizeof path, "/v1/customers/%lld/touchpoints?after=%s", id, forged);
    r = http_get(&srv, path, timeline_reader.secret);
    expect_problem(&r, 422, "after");
    free(forged);
    char *old_k = b64("k5");
    snprintf(path, sizeof path, "/v1/customers/%lld/audit?after=%s", id, old_k);
    r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 422, "after");
    free(old_k);
}
END_TEST

START_TEST(list_names_each_bad_parameter)
{
    const char *cases[][2] = {
        {"/v1/customers?q=ab", "q"},
        {"/v1/customers?sort=size", "sort"},
        {"/v1/customers?limit=201", "limit"},
        {"/v1/customers?limit=0", "limit"},
        {"/v1/customers?after=zzz", "after"},
        {"/v1/customers?country=it", "country"},
        {"/v1/customers?phone=12", "phone"},
        {"/v1/customers?lifecycle_stage=vip", "lifecycle_stage"},
        {"/v1/customers?created_after=yesterday", "created_after"},
        {"/v1/customers?updated_before=2026-13-01T00:00:00Z", "updated_before"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_response r = http_get(&srv, cases[i][0], reader.secret);
        expect_problem(&r, 422, cases[i][1]);
    }
    http_response r = http_get(&srv, "/v1/customers", NULL);
    expect_problem(&r, 401, NULL);
}
END_TEST

/* Walks the list for tag in sort order, inserting a new tagged customer
 * after every page; returns how often each of ids[0..n) was seen. */
static void walk_while_inserting(const char *tag, const char *sort, long long *ids, int n,
                                 int *seen)
{
    char path[512], body[128];
    char *after = NULL;
    memset(seen, 0, sizeof(int) * (size_t)n);
    for (int pages = 0; pages < 50; pages++) {
        snprintf(path, sizeof path, "/v1/customers?tag=%s&sort=%s&limit=2%s%s", tag, sort,
                 after ? "&after=" : "", after ? after : "");
        http_response r = http_get(&srv, path, reader.secret);
        ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
        json_t *page = http_response_json(&r);
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(page, "data"), i, item)
        {
            for (int k = 0; k < n; k++)
                if (ids[k] == id_of(item))
                    seen[k]++;
        }
        json_t *next = json_object_get(page, "next_cursor");
        free(after);
        after = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
        json_decref(page);
        http_response_free(&r);
        if (after == NULL)
            return;
        snprintf(body, sizeof body, "{\"display_name\": \"Aaa new\", \"tags\": [\"%s\"]}", tag);
        json_decref(create(body));
    }
    ck_abort_msg("the list did not end");
}

START_TEST(list_pages_are_stable_while_customers_are_inserted)
{
    char tag[48], body[128];
    harness_unique(tag, sizeof tag, "p");
    long long ids[7];
    for (int i = 0; i < 7; i++) {
        snprintf(body, sizeof body, "{\"display_name\": \"N%d\", \"tags\": [\"%s\"]}", i, tag);
        json_t *c = create(body);
        ids[i] = id_of(c);
        json_decref(c);
    }
    const char *sorts[] = {"created_at", "-created_at", "name", "updated_at"};
    for (size_t s = 0; s < sizeof sorts / sizeof sorts[0]; s++) {
        int seen[7];
        walk_while_inserting(tag, sorts[s], ids, 7, seen);
        for (int k = 0; k < 7; k++)
            ck_assert_msg(seen[k] == 1, "sort %s: customer %lld seen %d times", sorts[s], ids[k],
                          seen[k]);
    }
}
END_TEST

/* ---- upsert by external id ------------------------------------------------------------- */

START_TEST(upsert_by_external_id_creates_then_updates)
{
    char ext[48], path[160];
    harness_unique(ext, sizeof ext, "a/b "); /* a slash and a space, percent-encoded below */
    char *enc = curl_easy_escape(NULL, ext, 0);
    snprintf(path, sizeof path, "/v1/customers/by-external-id/salesforce/%s", enc);
    curl_free(enc);

    http_response r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 404, NULL);
    const char *if_match[] = {"If-Match: \"1\"", NULL};
    r = send_json("PUT", path, writer.secret, "{\"first_name\": \"Ada\"}", if_match);
    expect_problem(&r, 412, NULL); /* nothing to match yet */

    r = send_json("PUT", path, writer.secret, "{\"first_name\": \"Ada\"}", NULL);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    ck_assert_ptr_nonnull(http_response_header(&r, "Location"));
    json_t *first = http_response_json(&r);
    http_response_free(&r);

    r = send_json("PUT", path, writer.secret, "{\"last_name\": \"Lovelace\"}", if_match);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"2\"");
    json_t *second = http_response_json(&r);
    ck_assert_int_eq(id_of(first), id_of(second));
    ck_assert_str_eq(json_string_value(json_object_get(second, "first_name")), "Ada");
    ck_assert_str_eq(json_string_value(json_object_get(second, "last_name")), "Lovelace");
    http_response_free(&r);

    char get[200];
    snprintf(get, sizeof get, "%s?expand=external_ids", path);
    r = http_get(&srv, get, reader.secret);
    ck_assert_int_eq(r.status, 200);
    json_t *doc = http_response_json(&r);
    json_t *id0 = json_array_get(json_object_get(doc, "external_ids"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(id0, "id")), ext);
    json_decref(doc);
    http_response_free(&r);

    r = send_json("PUT", path, writer.secret, "{\"email\": \"x\"}", NULL);
    expect_problem(&r, 422, "/email");
    r = send_json("PUT", path, reader.secret, "{}", NULL);
    expect_problem(&r, 403, NULL);
    json_decref(first);
    json_decref(second);
}
END_TEST

START_TEST(an_external_id_of_a_deleted_customer_is_a_conflict_naming_it)
{
    char ext[48], path[160];
    harness_unique(ext, sizeof ext, "d");
    snprintf(path, sizeof path, "/v1/customers/by-external-id/crm/%s", ext);
    http_response r = send_json("PUT", path, writer.secret, "{}", NULL);
    ck_assert_int_eq(r.status, 201);
    json_t *c = http_response_json(&r);
    http_response_free(&r);
    char del[64];
    snprintf(del, sizeof del, "/v1/customers/%lld", id_of(c));
    r = http_delete(&srv, del, writer.secret);
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);
    r = send_json("PUT", path, writer.secret, "{\"first_name\": \"Back\"}", NULL);
    json_t *p = assert_problem(&r, 409);
    json_t *e = json_array_get(json_object_get(p, "errors"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), "external_id");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "customer_id")), id_of(c));
    json_decref(p);
    http_response_free(&r);

    /* The same id in a create body names the holder too. */
    char body[160];
    snprintf(body, sizeof body, "{\"external_ids\": [{\"source\": \"crm\", \"id\": \"%s\"}]}", ext);
    r = send_json("POST", "/v1/customers", writer.secret, body, NULL);
    p = assert_problem(&r, 409);
    e = json_array_get(json_object_get(p, "errors"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), "/external_ids/0");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "customer_id")), id_of(c));
    json_decref(p);
    http_response_free(&r);
    json_decref(c);
}
END_TEST

typedef struct upserter {
    const char *path;
    pthread_barrier_t *barrier;
    long status;
} upserter;

static void *race_upsert(void *arg)
{
    upserter *u = arg;
    http_call call = {.method = "PUT", .path = u->path, .api_key = writer.secret,
                      .body = "{\"company\": \"Race\"}"};
    pthread_barrier_wait(u->barrier);
    http_response r = http_send(&srv, &call);
    u->status = r.status;
    http_response_free(&r);
    return NULL;
}

START_TEST(two_concurrent_upserts_of_a_new_external_id_create_once)
{
    for (int round = 0; round < 5; round++) {
        char ext[48], path[160], sql[256];
        harness_unique(ext, sizeof ext, "race");
        snprintf(path, sizeof path, "/v1/customers/by-external-id/crm/%s", ext);
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 2);
        upserter a = {path, &barrier, 0}, b = {path, &barrier, 0};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, race_upsert, &a);
        pthread_create(&tb, NULL, race_upsert, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&barrier);
        ck_assert_msg((a.status == 201 && b.status == 200) || (a.status == 200 && b.status == 201),
                      "statuses %ld and %ld", a.status, b.status);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM customer_external_ids WHERE "
                                  "source = 'crm' AND external_id = '%s'", ext);
        ck_assert_int_eq(count_rows(sql), 1);
    }
}
END_TEST

/* ---- audit ------------------------------------------------------------------------------- */

START_TEST(the_audit_trail_records_every_write_newest_first)
{
    json_t *c = create("{\"first_name\": \"Ada\"}");
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld", id_of(c));
    http_response r = send_json("PATCH", path, writer.secret, "{\"first_name\": \"Bea\"}", NULL);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    r = http_delete(&srv, path, writer.secret);
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);

    snprintf(path, sizeof path, "/v1/customers/%lld/audit?limit=2", id_of(c));
    r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    json_t *page = http_response_json(&r);
    json_t *data = json_object_get(page, "data");
    ck_assert_uint_eq(json_array_size(data), 2);
    json_t *del = json_array_get(data, 0), *upd = json_array_get(data, 1);
    ck_assert_str_eq(json_string_value(json_object_get(del, "action")), "delete");
    ck_assert_str_eq(json_string_value(json_object_get(upd, "action")), "update");
    ck_assert_int_eq(json_integer_value(json_object_get(upd, "api_key_id")), writer.id);
    json_t *fn = json_object_get(json_object_get(upd, "changes"), "first_name");
    ck_assert_str_eq(json_string_value(json_object_get(fn, "from")), "Ada");
    ck_assert_str_eq(json_string_value(json_object_get(fn, "to")), "Bea");
    ck_assert_uint_eq(json_object_size(json_object_get(upd, "changes")), 1);
    const char *next = json_string_value(json_object_get(page, "next_cursor"));
    ck_assert_ptr_nonnull(next);
    char more[256];
    snprintf(more, sizeof more, "/v1/customers/%lld/audit?limit=2&after=%s", id_of(c), next);
    http_response r2 = http_get(&srv, more, reader.secret);
    json_t *page2 = http_response_json(&r2);
    json_t *data2 = json_object_get(page2, "data");
    ck_assert_uint_eq(json_array_size(data2), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(data2, 0), "action")),
                     "create");
    ck_assert(json_is_null(json_object_get(page2, "next_cursor")));
    json_decref(page2);
    http_response_free(&r2);
    json_decref(page);
    http_response_free(&r);

    r = http_get(&srv, "/v1/customers/999999999999/audit", reader.secret);
    expect_problem(&r, 404, NULL);
    json_decref(c);
}
END_TEST

/* ---- idempotency ------------------------------------------------------------------------ */

START_TEST(an_idempotency_key_replays_the_first_response_byte_for_byte)
{
    char key[64], header[96];
    harness_unique(key, sizeof key, "k");
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    const char *headers[] = {header, NULL};
    long before = count_rows("SELECT count(*) FROM customers");
    http_response a = send_json("POST", "/v1/customers", writer.secret,
                                "{\"first_name\": \"Once\"}", headers);
    ck_assert_int_eq(a.status, 201);
    http_response b = send_json("POST", "/v1/customers", writer.secret,
                                "{ \"first_name\" : \"Once\" }", headers);
    ck_assert_int_eq(b.status, 201);
    ck_assert_uint_eq(a.body_len, b.body_len);
    ck_assert(memcmp(a.body, b.body, a.body_len) == 0);
    ck_assert_str_eq(http_response_header(&a, "Location"), http_response_header(&b, "Location"));
    ck_assert_str_eq(http_response_header(&a, "ETag"), http_response_header(&b, "ETag"));
    ck_assert_int_eq(count_rows("SELECT count(*) FROM customers"), before + 1);
    http_response c = send_json("POST", "/v1/customers", writer.secret,
                                "{\"first_name\": \"Twice\"}", headers);
    expect_problem(&c, 409, NULL);
    ck_assert_int_eq(count_rows("SELECT count(*) FROM customers"), before + 1);
    http_response_free(&a);
    http_response_free(&b);
    const char *bad[] = {"Idempotency-Key: has space", NULL};
    http_response d = send_json("POST", "/v1/customers", writer.secret, "{}", bad);
    expect_problem(&d, 422, "Idempotency-Key");
}
END_TEST

/* Responses older than 24 hours are deleted by crmd's housekeeping, every
 * CRMD_HOUSEKEEPING_S seconds; younger ones stay. */
START_TEST(housekeeping_deletes_idempotency_responses_older_than_24_hours)
{
    crmd_server keeper;
    const char *env[] = {"CRMD_HOUSEKEEPING_S=1", NULL};
    crmd_fixture_start(&keeper, env);
    char old_key[64], new_key[64], header[96], sql[256];
    harness_unique(old_key, sizeof old_key, "old");
    harness_unique(new_key, sizeof new_key, "new");
    const char *keys[] = {old_key, new_key};
    for (int i = 0; i < 2; i++) {
        snprintf(header, sizeof header, "Idempotency-Key: %s", keys[i]);
        const char *headers[] = {header, NULL};
        http_response r = send_json("POST", "/v1/customers", writer.secret,
                                    "{\"first_name\": \"Kept\"}", headers);
        ck_assert_int_eq(r.status, 201);
        http_response_free(&r);
    }
    snprintf(sql, sizeof sql,
             "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = '%s'",
             old_key);
    exec_sql(sql);
    long left = 1;
    for (int waited = 0; waited < 5000 && left != 0; waited += 100) {
        harness_sleep_ms(100);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM idempotency_keys WHERE key = '%s'",
                 old_key);
        left = count_rows(sql);
    }
    ck_assert_int_eq(left, 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM idempotency_keys WHERE key = '%s'", new_key);
    ck_assert_int_eq(count_rows(sql), 1);
    /* A backlog larger than one purge batch (1,000 rows) goes too. */
    exec_sql("INSERT INTO idempotency_keys (api_key_id, key, request_hash, created_at) "
             "SELECT (SELECT min(id) FROM api_keys), 'hk-backlog-' || g, '\\x00'::bytea, "
             "now() - interval '25 hours' FROM generate_series(1, 2500) g");
    left = 1;
    for (int waited = 0; waited < 8000 && left != 0; waited += 100) {
        harness_sleep_ms(100);
        left = count_rows("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'hk-backlog-%'");
    }
    ck_assert_int_eq(left, 0);
    crmd_fixture_stop(&keeper);
}
END_TEST

/* ---- naughty strings ------------------------------------------------------------------- */

/* Creates a customer with s in field (a top-level name, or "street") and
 * checks that GET returns it byte for byte. */
static void round_trip(CURL *curl, const char *s, size_t len, bool as_street)
{
    json_t *value = json_stringn(s, len);
    json_t *body = as_street ? json_pack("{s:{s:O}}", "address", "street", value)
                             : json_pack("{s:O}", "display_name", value);
    char *text = json_dumps(body, JSON_COMPACT);
    http_call call = {.method = "POST", .path = "/v1/customers", .api_key = writer.secret,
                      .body = text, .curl = curl};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == 201, "%s answered %ld: %.300s", text, r.status, r.body);
    http_call get = {.path = http_response_header(&r, "Location"), .api_key = reader.secret,
                     .curl = curl};
    http_response g = http_send(&srv, &get);
    ck_assert_int_eq(g.status, 200);
    json_t *doc = http_response_json(&g);
    json_t *got = as_street ? json_object_get(json_object_get(doc, "address"), "street")
                            : json_object_get(doc, "display_name");
    ck_assert_msg(json_is_string(got) && json_string_length(got) == len &&
                      memcmp(json_string_value(got), s, len) == 0,
                  "%s did not round-trip: %.300s", text, g.body);
    json_decref(doc);
    http_response_free(&g);
    http_response_free(&r);
    free(text);
    json_decref(body);
    json_decref(value);
}

START_TEST(naughty_strings_round_trip_byte_for_byte)
{
    json_error_t jerr;
    json_t *list = json_load_file(BLNS_PATH, JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(json_is_array(list), "cannot read %s: %s", BLNS_PATH, jerr.text);
    json_array_append_new(list, json_stringn("nul\0inside", 10)); /* must be refused */
    CURL *curl = curl_easy_init();
    size_t i;
    json_t *item;
    int tried = 0;
    json_array_foreach(list, i, item)
    {
        const char *s = json_string_value(item);
        size_t len = json_string_length(item);
        size_t chars = 0;
        for (size_t k = 0; k < len; k++)
            chars += ((unsigned char)s[k] & 0xC0) != 0x80;
        tried++;
        if (memchr(s, '\0', len) != NULL || chars > 200) {
            /* Refused as a display_name (NUL, or over 200 characters) ... */
            json_t *body = json_pack("{s:O}", "display_name", item);
            char *text = json_dumps(body, JSON_COMPACT);
            http_call call = {.method = "POST", .path = "/v1/customers",
                              .api_key = writer.secret, .body = text, .curl = curl};
            http_response r = http_send(&srv, &call);
            expect_problem(&r, 422, "/display_name");
            free(text);
            json_decref(body);
            /* ... and the long ones still round-trip where 500 fit. */
            if (memchr(s, '\0', len) == NULL)
                round_trip(curl, s, len, true);
            continue;
        }
        round_trip(curl, s, len, false);
    }
    ck_assert_int_eq(tried, (int)json_array_size(list));
    curl_easy_cleanup(curl);
    json_decref(list);
}
END_TEST

Suite *customers_suite(void)
{
    Suite *s = suite_create("customers");
    TCase *tc = tcase_create("customers");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 3);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, create_answers_201_with_location_and_etag_and_get_returns_it);
    tcase_add_test(tc, create_refuses_without_key_scope_or_json);
    tcase_add_test(tc, an_invalid_create_names_every_field_and_stores_nothing);
    tcase_add_test(tc, get_answers_404_for_unknown_ids_and_422_for_unknown_expansions);
    tcase_add_test(tc, expand_external_ids_lists_them);
    tcase_add_test(tc, a_merged_customer_answers_with_its_survivor);
    tcase_add_test(tc, patch_is_a_merge_patch_under_if_match);
    tcase_add_test(tc, unquoted_if_match_answers_400_saying_entity_tags_are_quoted);
    tcase_add_test(tc, two_concurrent_patches_with_the_same_etag_one_wins);
    tcase_add_test(tc, delete_hides_the_customer_but_keeps_the_row);
    tcase_add_test(tc, list_filters_by_each_parameter);
    tcase_add_test(tc, list_search_pages_follow_the_cursor);
    tcase_add_test(tc, a_search_with_every_filter_answers_200);
    tcase_add_test(tc, a_search_over_sixteen_words_of_one_prefix_pages_to_the_end);
    tcase_add_test(tc, a_forged_cursor_is_refused_with_422_never_500);
    tcase_add_test(tc, list_names_each_bad_parameter);
    tcase_add_test(tc, list_pages_are_stable_while_customers_are_inserted);
    tcase_add_test(tc, upsert_by_external_id_creates_then_updates);
    tcase_add_test(tc, an_external_id_of_a_deleted_customer_is_a_conflict_naming_it);
    tcase_add_test(tc, two_concurrent_upserts_of_a_new_external_id_create_once);
    tcase_add_test(tc, the_audit_trail_records_every_write_newest_first);
    tcase_add_test(tc, an_idempotency_key_replays_the_first_response_byte_for_byte);
    tcase_add_test(tc, housekeeping_deletes_idempotency_responses_older_than_24_hours);
    tcase_add_test(tc, naughty_strings_round_trip_byte_for_byte);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_hostile_values.c — values a client may send that PostgreSQL or the
 * JSON writer could not take, over real HTTP: time-zone offsets past
 * +-15:59 in the list and timeline filters (200 with the right rows, never
 * a 500), JSON bodies that are a bare null, number or string (422), JSON
 * nested past the documented depth in attributes and properties (422, never
 * a 500), and old ids that stay readable after twenty successive merges.
 */
#include "harness.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static PGconn *db;
static api_key writer, reader;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    db = harness_db_connect();
    if (writer.id == 0)
        ck_assert(api_key_create("customers:read,customers:write,customers:export,"
                                 "touchpoints:read,touchpoints:write",
                                 &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("customers:read,touchpoints:read", &reader));
}

static void teardown(void)
{
    PQfinish(db);
    crmd_fixture_stop(&srv);
}

static http_response send_json(const char *method, const char *path, const char *body)
{
    http_call call = {.method = method, .path = path, .api_key = writer.secret, .body = body};
    return http_send(&srv, &call);
}

static long long create_customer(const char *body)
{
    http_response r = send_json("POST", "/v1/customers", body);
    ck_assert_msg(r.status == 201, "create answered %ld: %.400s", r.status, r.body);
    json_t *doc = http_response_json(&r);
    long long id = json_integer_value(json_object_get(doc, "id"));
    json_decref(doc);
    http_response_free(&r);
    return id;
}

/* The ids of a page's data, in order, as "1,2,3". */
static void page_ids(const http_response *r, char *out, size_t size)
{
    json_t *page = http_response_json(r);
    json_t *item;
    size_t i, n = 0;
    out[0] = '\0';
    json_array_foreach(json_object_get(page, "data"), i, item)
        n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%s%lld", i ? "," : "",
                              (long long)json_integer_value(json_object_get(item, "id")));
    json_decref(page);
}

/* ---- time-zone offsets past +-15:59 ---------------------------------------------------- */

START_TEST(list_filters_with_an_offset_of_minus_18_00_answer_the_right_rows)
{
    char tag[48], body[160], path[320], ids[64], want[64];
    harness_unique(tag, sizeof tag, "tz");
    snprintf(body, sizeof body, "{\"first_name\": \"Tz\", \"tags\": [\"%s\"]}", tag);
    long long a = create_customer(body);
    long long b = create_customer(body);
    char id[24];
    snprintf(id, sizeof id, "%lld", a);
    /* a was created a day ago, b now: created_after two hours ago, written
     * as the local time of -18:00, finds b only. */
    harness_sql_number(db,
                       "UPDATE customers SET created_at = now() - interval '1 day' WHERE id = $1"
                       " RETURNING 1",
                       id);
    char local[40];
    PGresult *res = PQexec(db, "SELECT to_char((now() - interval '2 hours') AT TIME ZONE 'UTC'"
                               " - interval '18 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS')");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    snprintf(local, sizeof local, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    snprintf(path, sizeof path, "/v1/customers?tag=%s&created_after=%s-18:00", tag, local);
    http_response r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
    page_ids(&r, ids, sizeof ids);
    snprintf(want, sizeof want, "%lld", b);
    ck_assert_str_eq(ids, want);
    http_response_free(&r);

    snprintf(path, sizeof path,
             "/v1/customers?tag=%s&created_before=2999-12-31T00:00:00-18:00&sort=created_at", tag);
    r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
    page_ids(&r, ids, sizeof ids);
    snprintf(want, sizeof want, "%lld,%lld", a, b);
    ck_assert_str_eq(ids, want);
    http_response_free(&r);

    snprintf(path, sizeof path, "/v1/customers?tag=%s&updated_after=0001-01-01T00:00:00%%2B23:59",
             tag);
    r = http_get(&srv, path, reader.secret);
    json_t *p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "updated_after"));
    json_decref(p);
    http_response_free(&r);
}
END_TEST

START_TEST(timeline_filters_and_touchpoints_take_offsets_of_23_59)
{
    long long c = create_customer("{\"first_name\": \"Tl\"}");
    char source[48], body[512], path[256], ids[64];
    harness_unique(source, sizeof source, "tz");
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"visit\","
             " \"direction\": \"inbound\", \"occurred_at\": \"2026-06-01T23:30:00-18:00\","
             " \"source\": \"%s\", \"event_id\": \"late\"}",
             c, source);
    http_response r = send_json("POST", "/v1/touchpoints", body);
    ck_assert_msg(r.status == 201, "touchpoint: %ld %s", r.status, r.body);
    json_t *doc = http_response_json(&r);
    long long tp = json_integer_value(json_object_get(doc, "id"));
    ck_assert_str_eq(json_string_value(json_object_get(doc, "occurred_at")),
                     "2026-06-02T17:30:00.000Z");
    json_decref(doc);
    http_response_free(&r);

    snprintf(path, sizeof path,
             "/v1/customers/%lld/touchpoints?occurred_after=2026-06-03T17:29:00%%2B23:59"
             "&occurred_before=2026-06-02T00:00:00-23:59",
             c);
    r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
    page_ids(&r, ids, sizeof ids);
    char want[24];
    snprintf(want, sizeof want, "%lld", tp);
    ck_assert_str_eq(ids, want);
    http_response_free(&r);

    snprintf(path, sizeof path,
             "/v1/customers/%lld/touchpoints?occurred_after=2026-06-03T17:31:00%%2B23:59", c);
    r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
    page_ids(&r, ids, sizeof ids);
    ck_assert_str_eq(ids, "");
    http_response_free(&r);
}
END_TEST

/* ---- bodies that are a bare null, number or string ------------------------------------ */

START_TEST(a_body_that_is_a_bare_scalar_is_422_on_every_write)
{
    long long c = create_customer("{\"first_name\": \"Scalar\"}");
    char patch[64], merge[64], erase[64], consents[64];
    snprintf(patch, sizeof patch, "/v1/customers/%lld", c);
    snprintf(merge, sizeof merge, "/v1/customers/%lld/merge", c);
    snprintf(erase, sizeof erase, "/v1/customers/%lld/erase", c);
    snprintf(consents, sizeof consents, "/v1/customers/%lld/consents", c);
    const struct {
        const char *method, *path;
    } writes[] = {{"POST", "/v1/customers"},           {"PATCH", patch},
                  {"POST", merge},                     {"POST", erase},
                  {"POST", consents},                  {"POST", "/v1/touchpoints"},
                  {"POST", "/v1/touchpoints/batch"},   {"PUT", "/v1/customers/by-external-id/s/x"}};
    const char *bodies[] = {"null", "42", "\"x\"", "true"};
    for (size_t w = 0; w < sizeof writes / sizeof writes[0]; w++)
        for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++) {
            const char *headers[] = {"If-Match: *", NULL};
            http_call call = {.method = writes[w].method, .path = writes[w].path,
                              .api_key = writer.secret, .body = bodies[b],
                              .headers = strcmp(writes[w].method, "PATCH") == 0 ? headers : NULL};
            http_response r = http_send(&srv, &call);
            ck_assert_msg(r.status == 422, "%s %s with %s: %ld %s", writes[w].method,
                          writes[w].path, bodies[b], r.status, r.body);
            json_decref(assert_problem(&r, 422));
            http_response_free(&r);
        }
    for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++) {
        http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret,
                                         bodies[b]);
        json_decref(assert_problem(&r, 422));
        http_response_free(&r);
    }
    /* Nothing was written: the customer is still there, unchanged. */
    char id[24];
    snprintf(id, sizeof id, "%lld", c);
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(*) FROM customers WHERE id = $1 AND"
                                        " status = 'active' AND version = 1",
                                        id),
                     1);
}
END_TEST

/* ---- JSON nested past the stored depth limit ------------------------------------------- */

#define STORED_DEPTH_MAX 32 /* as openapi.yaml documents for attributes and properties */

/* {"k":[{"k":[ ... 1 ... ]}]} with depth levels, the outermost an object,
 * into out. */
static void deep_json(char *out, size_t size, int depth)
{
    size_t n = 0;
    for (int i = 0; i < depth; i++)
        n += (size_t)snprintf(out + n, size - n, "%s", i % 2 ? "[" : "{\"k\":");
    n += (size_t)snprintf(out + n, size - n, "1");
    for (int i = depth - 1; i >= 0; i--)
        n += (size_t)snprintf(out + n, size - n, "%s", i % 2 ? "]" : "}");
    ck_assert_uint_lt(n, size);
}

static void expect_422_naming(http_response *r, const char *field)
{
    ck_assert_msg(r->status == 422, "answered %ld: %.300s", r->status, r->body);
    json_t *p = assert_problem(r, 422);
    ck_assert_msg(problem_names_field(p, field), "no error for %s in %.300s", field, r->body);
    json_decref(p);
    http_response_free(r);
}

START_TEST(json_nested_past_the_limit_is_422_and_never_a_500)
{
    char deep[512], body[1024], path[64], source[48];
    long long c = create_customer("{\"first_name\": \"Deep\"}");
    snprintf(path, sizeof path, "/v1/customers/%lld", c);
    harness_unique(source, sizeof source, "deep");
    const char *if_match[] = {"If-Match: *", NULL};
    /* At the limit: stored, and read back whole, in the customer and in
     * its export. */
    deep_json(deep, sizeof deep, STORED_DEPTH_MAX);
    snprintf(body, sizeof body, "{\"attributes\": %s}", deep);
    http_call patch = {.method = "PATCH", .path = path, .api_key = writer.secret,
                       .body = body, .headers = if_match};
    http_response r = http_send(&srv, &patch);
    ck_assert_msg(r.status == 200, "patch at the limit: %ld %.300s", r.status, r.body);
    http_response_free(&r);
    long long at_limit = create_customer(body);
    char export_path[80];
    snprintf(export_path, sizeof export_path, "/v1/customers/%lld/export", at_limit);
    r = http_get(&srv, export_path, writer.secret);
    ck_assert_msg(r.status == 200, "export: %ld %.300s", r.status, r.body);
    http_response_free(&r);
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"visit\","
             " \"direction\": \"inbound\", \"occurred_at\": \"2026-06-01T10:00:00Z\","
             " \"source\": \"%s\", \"event_id\": \"at-limit\", \"properties\": %s}",
             c, source, deep);
    r = send_json("POST", "/v1/touchpoints", body);
    ck_assert_msg(r.status == 201, "touchpoint at the limit: %ld %.300s", r.status, r.body);
    http_response_free(&r);

    /* One past the limit, and the 62 to 64 that used to commit and then
     * answer 500: 422 naming the field, nothing stored. */
    const int depths[] = {STORED_DEPTH_MAX + 1, 62, 63, 64};
    for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        deep_json(deep, sizeof deep, depths[i]);
        snprintf(body, sizeof body, "{\"first_name\": \"Deep\", \"attributes\": %s}", deep);
        r = send_json("POST", "/v1/customers", body);
        expect_422_naming(&r, "/attributes");
        snprintf(body, sizeof body, "{\"attributes\": %s}", deep);
        r = http_send(&srv, &patch);
        expect_422_naming(&r, "/attributes");
        snprintf(body, sizeof body,
                 "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"visit\","
                 " \"direction\": \"inbound\", \"occurred_at\": \"2026-06-01T10:00:00Z\","
                 " \"source\": \"%s\", \"event_id\": \"past-%d\", \"properties\": %s}",
                 c, source, depths[i], deep);
        r = send_json("POST", "/v1/touchpoints", body);
        expect_422_naming(&r, "/properties");
    }
    char id[24];
    snprintf(id, sizeof id, "%lld", c);
    ck_assert_int_eq(harness_sql_number(db, "SELECT version FROM customers WHERE id = $1", id), 2);
    ck_assert_int_eq(harness_sql_number(db, "SELECT count(*) FROM touchpoints WHERE source = $1",
                                        source),
                     1);
}
END_TEST

START_TEST(attributes_stored_64_deep_before_the_limit_still_render)
{
    /* Rows written before the limit existed may nest up to 64 levels: the
     * customer and its export must still be readable (the right of access). */
    char deep[512], id[24], path[80];
    long long c = create_customer("{\"first_name\": \"Old\"}");
    snprintf(id, sizeof id, "%lld", c);
    deep_json(deep, sizeof deep, 64);
    const char *params[] = {id, deep};
    PGresult *res = PQexecParams(db, "UPDATE customers SET attributes = $2::jsonb WHERE id = $1",
                                 2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    snprintf(path, sizeof path, "/v1/customers/%lld", c);
    http_response r = http_get(&srv, path, reader.secret);
    ck_assert_msg(r.status == 200, "get: %ld %.300s", r.status, r.body);
    http_response_free(&r);
    snprintf(path, sizeof path, "/v1/customers/%lld/export", c);
    r = http_get(&srv, path, writer.secret);
    ck_assert_msg(r.status == 200, "export: %ld %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

/* ---- many successive merges ------------------------------------------------------------- */

START_TEST(every_id_of_twenty_successive_merges_reads_as_the_last_survivor)
{
    enum { CHAIN = 20 };
    long long ids[CHAIN + 1];
    for (int i = 0; i <= CHAIN; i++)
        ids[i] = create_customer("{\"first_name\": \"Link\"}");
    for (int i = 0; i < CHAIN; i++) {
        char path[64], body[64];
        snprintf(path, sizeof path, "/v1/customers/%lld/merge", ids[i + 1]);
        snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", ids[i]);
        http_response r = send_json("POST", path, body);
        ck_assert_msg(r.status == 200, "merge %d: %ld %.300s", i, r.status, r.body);
        http_response_free(&r);
    }
    for (int k = 0; k <= CHAIN; k++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/customers/%lld", ids[k]);
        http_response r = http_get(&srv, path, reader.secret);
        ck_assert_msg(r.status == 200, "GET id %d: %ld %.300s", k, r.status, r.body);
        json_t *doc = http_response_json(&r);
        ck_assert_int_eq(json_integer_value(json_object_get(doc, "id")), ids[CHAIN]);
        json_decref(doc);
        http_response_free(&r);
    }
}
END_TEST

Suite *hostile_values_suite(void)
{
    Suite *s = suite_create("hostile_values");
    TCase *tc = tcase_create("values");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_test(tc, list_filters_with_an_offset_of_minus_18_00_answer_the_right_rows);
    tcase_add_test(tc, timeline_filters_and_touchpoints_take_offsets_of_23_59);
    tcase_add_test(tc, a_body_that_is_a_bare_scalar_is_422_on_every_write);
    tcase_add_test(tc, json_nested_past_the_limit_is_422_and_never_a_500);
    tcase_add_test(tc, attributes_stored_64_deep_before_the_limit_still_render);
    tcase_add_test(tc, every_id_of_twenty_successive_merges_reads_as_the_last_survivor);
    suite_add_tcase(s, tc);
    return s;
}

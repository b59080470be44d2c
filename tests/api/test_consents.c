/*
 * test_consents.c — /v1/customers/{id}/consents over HTTP: recording
 * decisions (201, Location, the current state), reading the current state
 * and the history page by page, 404 for customers that are not there, 422
 * naming the fields (and nothing stored), the audit row, and the scopes.
 * Customers are made with SQL on CRMD_TEST_DATABASE_URL.
 */
#include "harness.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DECISION                                                                                   \
    "{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":\"granted\",\"source\":\"web\"}"

static crmd_server srv;
static PGconn *db;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    db = harness_db_connect();
}

static void teardown(void)
{
    PQfinish(db);
    crmd_fixture_stop(&srv);
}

static long long customer_with_status(const char *status)
{
    return harness_sql_number(
        db, "INSERT INTO customers (first_name, status) VALUES ('api', $1) RETURNING id", status);
}

static long long consent_rows(long long id)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", id);
    return harness_sql_number(db, "SELECT count(*) FROM customer_consents WHERE customer_id = $1",
                              buf);
}

static void consents_path(char *out, size_t size, long long id)
{
    snprintf(out, size, "/v1/customers/%lld/consents", id);
}

/* POSTs body for customer id with key and expects status. */
static http_response post_consents(long long id, const char *key, const char *body)
{
    char path[64];
    consents_path(path, sizeof path, id);
    return http_post_json(&srv, path, key, body);
}

static json_t *get_consents_ok(const char *path)
{
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    ck_assert_msg(r.status == 200, "%s answered %ld: %.300s", path, r.status, r.body);
    json_t *doc = http_response_json(&r);
    ck_assert_ptr_nonnull(doc);
    http_response_free(&r);
    return doc;
}

/* ---- recording ------------------------------------------------------------- */

START_TEST(post_answers_201_with_location_and_the_current_state)
{
    long long id = customer_with_status("active");
    http_response r = post_consents(id, harness_admin_key.secret, DECISION);
    ck_assert_msg(r.status == 201, "answered %ld: %.300s", r.status, r.body);
    char expected[64];
    consents_path(expected, sizeof expected, id);
    ck_assert_str_eq(http_response_header(&r, "Location"), expected);
    json_t *doc = http_response_json(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "customer_id")), id);
    json_t *current = json_object_get(doc, "current");
    ck_assert_int_eq(json_array_size(current), 1);
    json_t *state = json_array_get(current, 0);
    ck_assert_str_eq(json_string_value(json_object_get(state, "channel")), "email");
    ck_assert_str_eq(json_string_value(json_object_get(state, "purpose")), "marketing");
    ck_assert_str_eq(json_string_value(json_object_get(state, "status")), "granted");
    ck_assert_str_eq(json_string_value(json_object_get(state, "source")), "web");
    ck_assert_ptr_nonnull(json_string_value(json_object_get(state, "captured_at")));
    ck_assert_int_eq(json_array_size(json_object_get(doc, "recorded")), 1);
    json_decref(doc);
    http_response_free(&r);
    ck_assert_int_eq(consent_rows(id), 1);
}
END_TEST

START_TEST(post_a_batch_stores_every_decision_and_one_audit_row)
{
    long long id = customer_with_status("active");
    http_response r = post_consents(
        id, harness_admin_key.secret,
        "{\"consents\":[" DECISION ","
        "{\"channel\":\"sms\",\"purpose\":\"service\",\"status\":\"revoked\","
        "\"source\":\"call-centre\",\"captured_at\":\"2026-01-01T09:00:00+01:00\"}]}");
    ck_assert_msg(r.status == 201, "answered %ld: %.300s", r.status, r.body);
    http_response_free(&r);
    ck_assert_int_eq(consent_rows(id), 2);
    char buf[24], sql[160];
    snprintf(buf, sizeof buf, "%lld", id);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM customer_audit WHERE customer_id = $1 AND action = 'consent' "
             "AND api_key_id = %lld AND jsonb_array_length(changes->'consents') = 2",
             harness_admin_key.id);
    ck_assert_int_eq(harness_sql_number(db, sql, buf), 1);
}
END_TEST

START_TEST(invalid_decisions_get_422_naming_the_fields_and_store_nothing)
{
    long long id = customer_with_status("active");
    http_response r = post_consents(
        id, harness_admin_key.secret,
        "{\"consents\":[" DECISION ","
        "{\"channel\":\"fax\",\"purpose\":\"marketing\",\"status\":\"granted\",\"source\":\"\","
        "\"captured_at\":\"2999-01-01T00:00:00Z\",\"note\":1}]}");
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "/consents/1/channel"));
    ck_assert(problem_names_field(problem, "/consents/1/source"));
    ck_assert(problem_names_field(problem, "/consents/1/captured_at"));
    ck_assert(problem_names_field(problem, "/consents/1/note"));
    ck_assert(!problem_names_field(problem, "/consents/0/channel"));
    json_decref(problem);
    http_response_free(&r);
    ck_assert_int_eq(consent_rows(id), 0);
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", id);
    ck_assert_int_eq(
        harness_sql_number(db, "SELECT count(*) FROM customer_audit WHERE customer_id = $1", buf),
        0);
}
END_TEST

START_TEST(malformed_json_gets_400_and_stores_nothing)
{
    long long id = customer_with_status("active");
    http_response r = post_consents(id, harness_admin_key.secret, "{\"channel\":");
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);
    ck_assert_int_eq(consent_rows(id), 0);
}
END_TEST

START_TEST(customers_that_are_not_there_get_404)
{
    long long deleted = customer_with_status("deleted");
    long long erased = customer_with_status("erased");
    const long long ids[] = {deleted, erased, 9000000000000LL};
    for (size_t i = 0; i < 3; i++) {
        http_response r = post_consents(ids[i], harness_admin_key.secret, DECISION);
        json_decref(assert_problem(&r, 404));
        http_response_free(&r);
        char path[64];
        consents_path(path, sizeof path, ids[i]);
        r = http_get(&srv, path, harness_admin_key.secret);
        json_decref(assert_problem(&r, 404));
        http_response_free(&r);
        ck_assert_int_eq(consent_rows(ids[i]), 0);
    }
    http_response r = http_get(&srv, "/v1/customers/abc/consents", harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

/* ---- reading --------------------------------------------------------------- */

START_TEST(get_shows_the_current_state_and_the_history_newest_first)
{
    long long id = customer_with_status("active");
    http_response r = post_consents(id, harness_admin_key.secret,
                                    "{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":"
                                    "\"granted\",\"source\":\"web\",\"captured_at\":"
                                    "\"2026-03-01T00:00:00Z\"}");
    ck_assert_int_eq(r.status, 201);
    http_response_free(&r);
    /* Captured earlier, recorded later: history, but not the current state. */
    r = post_consents(id, harness_admin_key.secret,
                      "{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":\"revoked\","
                      "\"source\":\"offline\",\"captured_at\":\"2026-02-01T00:00:00Z\"}");
    ck_assert_int_eq(r.status, 201);
    http_response_free(&r);

    char path[64];
    consents_path(path, sizeof path, id);
    json_t *doc = get_consents_ok(path);
    json_t *current = json_object_get(doc, "current");
    ck_assert_int_eq(json_array_size(current), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(current, 0), "status")),
                     "granted");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(current, 0), "captured_at")),
                     "2026-03-01T00:00:00.000Z");
    json_t *history = json_object_get(doc, "history");
    ck_assert_int_eq(json_array_size(history), 2);
    json_t *newest = json_array_get(history, 0);
    ck_assert_str_eq(json_string_value(json_object_get(newest, "source")), "offline");
    ck_assert_ptr_nonnull(json_object_get(newest, "id"));
    ck_assert_ptr_nonnull(json_object_get(newest, "recorded_at"));
    ck_assert(json_is_null(json_object_get(doc, "next_cursor")));
    json_decref(doc);
}
END_TEST

START_TEST(get_pages_the_history_with_limit_and_after)
{
    long long id = customer_with_status("active");
    for (int i = 0; i < 3; i++) {
        http_response r = post_consents(id, harness_admin_key.secret, DECISION);
        ck_assert_int_eq(r.status, 201);
        http_response_free(&r);
    }
    char path[160];
    snprintf(path, sizeof path, "/v1/customers/%lld/consents?limit=2", id);
    json_t *first = get_consents_ok(path);
    ck_assert_int_eq(json_array_size(json_object_get(first, "history")), 2);
    const char *cursor = json_string_value(json_object_get(first, "next_cursor"));
    ck_assert_ptr_nonnull(cursor);
    snprintf(path, sizeof path, "/v1/customers/%lld/consents?limit=2&after=%s", id, cursor);
    json_t *second = get_consents_ok(path);
    ck_assert_int_eq(json_array_size(json_object_get(second, "history")), 1);
    ck_assert(json_is_null(json_object_get(second, "next_cursor")));
    ck_assert_int_lt(json_integer_value(json_object_get(
                         json_array_get(json_object_get(second, "history"), 0), "id")),
                     json_integer_value(json_object_get(
                         json_array_get(json_object_get(first, "history"), 1), "id")));
    json_decref(first);
    json_decref(second);

    snprintf(path, sizeof path, "/v1/customers/%lld/consents?limit=0", id);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "limit"));
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

/* ---- scopes ---------------------------------------------------------------- */

START_TEST(a_read_key_can_get_but_not_post)
{
    api_key reader;
    ck_assert(api_key_create("customers:read", &reader));
    long long id = customer_with_status("active");
    http_response r = post_consents(id, reader.secret, DECISION);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    ck_assert_int_eq(consent_rows(id), 0);
    char path[64];
    consents_path(path, sizeof path, id);
    r = http_get(&srv, path, reader.secret);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
}
END_TEST

START_TEST(a_write_key_can_post_but_not_get)
{
    api_key writer;
    ck_assert(api_key_create("customers:write", &writer));
    long long id = customer_with_status("active");
    http_response r = post_consents(id, writer.secret, DECISION);
    ck_assert_int_eq(r.status, 201);
    http_response_free(&r);
    char path[64];
    consents_path(path, sizeof path, id);
    r = http_get(&srv, path, writer.secret);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
}
END_TEST

START_TEST(no_key_gets_401)
{
    long long id = customer_with_status("active");
    http_response r = post_consents(id, NULL, DECISION);
    json_decref(assert_problem(&r, 401));
    http_response_free(&r);
    ck_assert_int_eq(consent_rows(id), 0);
}
END_TEST

Suite *consents_suite(void)
{
    Suite *s = suite_create("consents");
    TCase *tc = tcase_create("consents");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, post_answers_201_with_location_and_the_current_state);
    tcase_add_test(tc, post_a_batch_stores_every_decision_and_one_audit_row);
    tcase_add_test(tc, invalid_decisions_get_422_naming_the_fields_and_store_nothing);
    tcase_add_test(tc, malformed_json_gets_400_and_stores_nothing);
    tcase_add_test(tc, customers_that_are_not_there_get_404);
    tcase_add_test(tc, get_shows_the_current_state_and_the_history_newest_first);
    tcase_add_test(tc, get_pages_the_history_with_limit_and_after);
    tcase_add_test(tc, a_read_key_can_get_but_not_post);
    tcase_add_test(tc, a_write_key_can_post_but_not_get);
    tcase_add_test(tc, no_key_gets_401);
    suite_add_tcase(s, tc);
    return s;
}

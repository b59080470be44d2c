/*
 * test_query.c — what every route does with its query string and path
 * parameters before a handler runs: values that are not UTF-8 once
 * percent-decoded get 422 naming the parameter (they used to reach
 * PostgreSQL and come back as 500, SQLSTATE 22021), and a key that is not
 * UTF-8 is never echoed; a parameter the operation does not declare
 * (`?emial=x`, which used to return every customer) or one given twice gets
 * 422 naming it.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>

static crmd_server srv;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* GETs path with the admin key and expects a 422 whose errors[] names field;
 * returns the problem (caller json_decref's it). */
static json_t *expect_422_naming(const char *path, const char *field)
{
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    ck_assert_msg(r.status == 422, "%s: HTTP %ld: %.300s", path, r.status, r.body);
    json_t *problem = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(problem, field), "%s: %.300s", path, r.body);
    http_response_free(&r);
    return problem;
}

/* ---- values that are not UTF-8 ------------------------------------------- */

typedef struct bad_value {
    const char *path, *field;
} bad_value;

static const bad_value bad_values[] = {
    {"/v1/customers?q=%ff%ff%ff", "q"},
    {"/v1/customers?email=%ff@x.com", "email"},
    {"/v1/customers?city=%c0%80", "city"},                 /* overlong NUL */
    {"/v1/customers?country=%ed%a0%80", "country"},        /* a surrogate */
    {"/v1/customers?tag=%f4%90%80%80", "tag"},             /* above U+10FFFF */
    {"/v1/customers/by-external-id/%ff/x", "source"},
    {"/v1/customers/by-external-id/crm/%ff", "external_id"},
    {"/v1/customers/1/touchpoints?type=%ff", "type"},
    {"/v1/sync/customers?cursor=%ff", "cursor"},
};

START_TEST(value_that_is_not_utf8_answers_422_naming_the_parameter)
{
    const bad_value *c = &bad_values[_i];
    json_decref(expect_422_naming(c->path, c->field));
}
END_TEST

START_TEST(put_by_external_id_that_is_not_utf8_answers_422_and_stores_nothing)
{
    PGconn *db = harness_db_connect();
    long long before = harness_sql_number(db, "SELECT count(*) FROM customers", NULL);
    http_call call = {.method = "PUT",
                      .path = "/v1/customers/by-external-id/crm/%c0%80",
                      .api_key = harness_admin_key.secret,
                      .body = "{\"first_name\":\"Ada\"}"};
    http_response r = http_send(&srv, &call);
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "external_id"));
    ck_assert_int_eq(harness_sql_number(db, "SELECT count(*) FROM customers", NULL), before);
    json_decref(problem);
    http_response_free(&r);
    PQfinish(db);
}
END_TEST

START_TEST(key_that_is_not_utf8_answers_422_without_echoing_it)
{
    http_response r = http_get(&srv, "/v1/customers?%ff%fe=1", harness_admin_key.secret);
    json_t *problem = assert_problem(&r, 422);
    ck_assert_ptr_null(strstr(r.body, "%ff"));
    ck_assert_ptr_null(strstr(r.body, "\\u00ff"));
    ck_assert_ptr_null(strstr(r.body, "\xff"));
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

START_TEST(utf8_values_still_reach_the_handler)
{
    http_response r = http_get(&srv, "/v1/customers?q=caf%C3%A9&city=K%C3%B8benhavn",
                               harness_admin_key.secret);
    ck_assert_msg(r.status == 200, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

/* ---- unknown and repeated parameters --------------------------------------- */

/* Creates a customer with the given e-mail through the API. */
static void create_customer_with_email(const char *email)
{
    char body[256];
    snprintf(body, sizeof body, "{\"first_name\":\"Q\",\"email\":\"%s\"}", email);
    http_response r = http_post_json(&srv, "/v1/customers", harness_admin_key.secret, body);
    ck_assert_msg(r.status == 201, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
}

START_TEST(misspelt_filter_answers_422_naming_it_instead_of_listing_everyone)
{
    create_customer_with_email("someone@example.com");
    json_t *problem = expect_422_naming("/v1/customers?emial=x", "emial");
    ck_assert_ptr_null(json_object_get(problem, "data"));
    json_decref(problem);
}
END_TEST

typedef struct unknown_case {
    const char *method, *path, *field;
} unknown_case;

static const unknown_case unknown_cases[] = {
    {"GET", "/healthz?verbose=1", "verbose"},
    {"GET", "/v1/api-keys?limit=5&sort=name", "sort"},
    {"GET", "/v1/customers/1?expnad=external_ids", "expnad"},
    {"GET", "/v1/customers/1/touchpoints?chanel=email", "chanel"},
    {"GET", "/v1/sync/customers?after=x", "after"},
    {"DELETE", "/v1/api-keys/999999999?force=1", "force"},
};

START_TEST(parameter_the_operation_does_not_declare_answers_422)
{
    const unknown_case *c = &unknown_cases[_i];
    http_call call = {.method = c->method, .path = c->path, .api_key = harness_admin_key.secret};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == 422, "%s %s: HTTP %ld: %.300s", c->method, c->path, r.status,
                  r.body);
    json_t *problem = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(problem, c->field), "%.300s", r.body);
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

START_TEST(repeated_parameter_answers_422_naming_it)
{
    json_decref(expect_422_naming("/v1/customers?tag=a&tag=b", "tag"));
    json_decref(expect_422_naming("/v1/api-keys?limit=1&limit=2", "limit"));
}
END_TEST

START_TEST(percent_encoded_name_of_a_filter_answers_422_instead_of_being_ignored)
{
    json_decref(expect_422_naming("/v1/customers?%65mail=nobody@example.com", "email"));
}
END_TEST

START_TEST(every_declared_parameter_still_works)
{
    http_response r = http_get(&srv,
                               "/v1/customers?email=a@b.co&phone=%2B391234567&country=IT&city=x"
                               "&lifecycle_stage=lead&tag=t&q=abc&sort=name&limit=5",
                               harness_admin_key.secret);
    ck_assert_msg(r.status == 200, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

Suite *query_suite(void)
{
    Suite *s = suite_create("query");
    TCase *tc = tcase_create("utf8");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, value_that_is_not_utf8_answers_422_naming_the_parameter, 0,
                        sizeof bad_values / sizeof bad_values[0]);
    tcase_add_test(tc, put_by_external_id_that_is_not_utf8_answers_422_and_stores_nothing);
    tcase_add_test(tc, key_that_is_not_utf8_answers_422_without_echoing_it);
    tcase_add_test(tc, utf8_values_still_reach_the_handler);
    suite_add_tcase(s, tc);

    tc = tcase_create("declared");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, misspelt_filter_answers_422_naming_it_instead_of_listing_everyone);
    tcase_add_loop_test(tc, parameter_the_operation_does_not_declare_answers_422, 0,
                        sizeof unknown_cases / sizeof unknown_cases[0]);
    tcase_add_test(tc, repeated_parameter_answers_422_naming_it);
    tcase_add_test(tc, percent_encoded_name_of_a_filter_answers_422_instead_of_being_ignored);
    tcase_add_test(tc, every_declared_parameter_still_works);
    suite_add_tcase(s, tc);
    return s;
}

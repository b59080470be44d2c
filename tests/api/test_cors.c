/*
 * test_cors.c — CORS for browser front ends: with CRMD_CORS_ORIGINS set, a
 * preflight from a listed origin is answered 204 with the path's methods
 * and no key, answers carry Access-Control-Allow-Origin and
 * Access-Control-Expose-Headers (errors too, so a page can read them); an
 * origin not listed gets none of it; "*" allows any origin; unset, crmd
 * sends no CORS headers at all.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define APP "https://app.example.com"
#define EVIL "https://evil.example.net"

static crmd_server srv;

static void setup_listed(void)
{
    static const char *const env[] = {
        "CRMD_CORS_ORIGINS=" APP ", http://localhost:5173", NULL};
    crmd_fixture_start(&srv, env);
}

static void setup_any(void)
{
    static const char *const env[] = {"CRMD_CORS_ORIGINS=*", NULL};
    crmd_fixture_start(&srv, env);
}

static void setup_off(void)
{
    crmd_fixture_start(&srv, NULL);
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* Sends a preflight for method on path from origin (no key). */
static http_response preflight(const char *path, const char *origin, const char *method)
{
    char o[256], m[64];
    snprintf(o, sizeof o, "Origin: %s", origin);
    snprintf(m, sizeof m, "Access-Control-Request-Method: %s", method);
    const char *headers[] = {o, m, "Access-Control-Request-Headers: authorization, if-match",
                             NULL};
    http_call call = {.method = "OPTIONS", .path = path, .headers = headers};
    return http_send(&srv, &call);
}

/* GETs path with the admin key (or none) from origin. */
static http_response get_from(const char *path, const char *origin, bool with_key)
{
    char o[256];
    snprintf(o, sizeof o, "Origin: %s", origin);
    const char *headers[] = {o, NULL};
    http_call call = {.path = path, .headers = headers,
                      .api_key = with_key ? harness_admin_key.secret : NULL};
    return http_send(&srv, &call);
}

static bool header_has(const http_response *r, const char *name, const char *part)
{
    const char *v = http_response_header(r, name);
    return v != NULL && strstr(v, part) != NULL;
}

/* ---- an allow-list ---------------------------------------------------------- */

START_TEST(preflight_from_a_listed_origin_answers_204_without_a_key)
{
    http_response r = preflight("/v1/customers/42", APP, "PATCH");
    ck_assert_msg(r.status == 204, "HTTP %ld: %.300s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Origin"), APP);
    /* The methods of this path, from the route table. */
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Methods"),
                     "GET, HEAD, PATCH, DELETE");
    const char *wanted[] = {"Authorization", "Content-Type", "If-Match", "Idempotency-Key",
                            "X-Request-Id"};
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
        ck_assert_msg(header_has(&r, "Access-Control-Allow-Headers", wanted[i]), "%s", wanted[i]);
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Max-Age"), "600");
    ck_assert(header_has(&r, "Vary", "Origin"));
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Allow-Credentials"));
    ck_assert_uint_eq(r.body_len, 0);
    http_response_free(&r);
}
END_TEST

START_TEST(preflight_lists_the_methods_of_the_collection)
{
    http_response r = preflight("/v1/customers", "http://localhost:5173", "POST");
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Origin"),
                     "http://localhost:5173");
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Methods"), "POST, GET, HEAD");
    http_response_free(&r);
}
END_TEST

START_TEST(preflight_from_an_origin_not_listed_answers_403_without_cors_headers)
{
    http_response r = preflight("/v1/customers/42", EVIL, "PATCH");
    json_decref(assert_problem(&r, 403));
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Allow-Origin"));
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Allow-Methods"));
    http_response_free(&r);
}
END_TEST

START_TEST(preflight_to_a_path_that_does_not_exist_answers_404)
{
    http_response r = preflight("/v1/nowhere", APP, "GET");
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

START_TEST(options_without_preflight_headers_is_still_405)
{
    http_call call = {.method = "OPTIONS", .path = "/v1/customers"};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 405));
    http_response_free(&r);
}
END_TEST

START_TEST(answer_to_a_listed_origin_lets_the_page_read_it)
{
    http_response r = get_from("/v1/api-keys?limit=1", APP, true);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Origin"), APP);
    const char *exposed[] = {"ETag", "Location", "X-Request-Id", "RateLimit-Limit",
                             "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"};
    for (size_t i = 0; i < sizeof exposed / sizeof exposed[0]; i++)
        ck_assert_msg(header_has(&r, "Access-Control-Expose-Headers", exposed[i]), "%s",
                      exposed[i]);
    ck_assert(header_has(&r, "Vary", "Origin"));
    http_response_free(&r);
}
END_TEST

START_TEST(error_to_a_listed_origin_carries_cors_headers_too)
{
    http_response r = get_from("/v1/api-keys", APP, false);
    json_decref(assert_problem(&r, 401));
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Origin"), APP);
    http_response_free(&r);
}
END_TEST

START_TEST(answer_to_an_origin_not_listed_has_no_allow_origin)
{
    http_response r = get_from("/v1/api-keys?limit=1", EVIL, true);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Allow-Origin"));
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Expose-Headers"));
    ck_assert(header_has(&r, "Vary", "Origin"));
    http_response_free(&r);
}
END_TEST

/* ---- any origin ---------------------------------------------------------------- */

START_TEST(star_allows_any_origin_without_credentials)
{
    http_response r = preflight("/v1/customers", EVIL, "POST");
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Origin"), "*");
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Allow-Credentials"));
    http_response_free(&r);
    r = get_from("/healthz", EVIL, false);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "Access-Control-Allow-Origin"), "*");
    http_response_free(&r);
}
END_TEST

/* ---- off (the default) ---------------------------------------------------------- */

START_TEST(without_an_allow_list_no_cors_headers_are_sent)
{
    http_response r = preflight("/v1/customers", APP, "POST");
    json_decref(assert_problem(&r, 405));
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Allow-Origin"));
    http_response_free(&r);
    r = get_from("/healthz", APP, false);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(http_response_header(&r, "Access-Control-Allow-Origin"));
    ck_assert_ptr_null(http_response_header(&r, "Vary"));
    http_response_free(&r);
}
END_TEST

Suite *cors_suite(void)
{
    Suite *s = suite_create("cors");
    TCase *tc = tcase_create("listed");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup_listed, teardown);
    tcase_add_test(tc, preflight_from_a_listed_origin_answers_204_without_a_key);
    tcase_add_test(tc, preflight_lists_the_methods_of_the_collection);
    tcase_add_test(tc, preflight_from_an_origin_not_listed_answers_403_without_cors_headers);
    tcase_add_test(tc, preflight_to_a_path_that_does_not_exist_answers_404);
    tcase_add_test(tc, options_without_preflight_headers_is_still_405);
    tcase_add_test(tc, answer_to_a_listed_origin_lets_the_page_read_it);
    tcase_add_test(tc, error_to_a_listed_origin_carries_cors_headers_too);
    tcase_add_test(tc, answer_to_an_origin_not_listed_has_no_allow_origin);
    suite_add_tcase(s, tc);

    tc = tcase_create("any");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup_any, teardown);
    tcase_add_test(tc, star_allows_any_origin_without_credentials);
    suite_add_tcase(s, tc);

    tc = tcase_create("off");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup_off, teardown);
    tcase_add_test(tc, without_an_allow_list_no_cors_headers_are_sent);
    suite_add_tcase(s, tc);
    return s;
}

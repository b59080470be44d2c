/*
 * test_router.c — the route table and path matching (server/router.h):
 * every row is reachable, path parameters are decoded, and 404 / 405 / bad
 * paths are told apart.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "cors.h"
#include "query_check.h"
#include "router.h"
#include "suites.h"

static crm_arena arena;

static void setup(void)
{
    router_init();
    crm_arena_init(&arena);
}

static void teardown(void)
{
    crm_arena_free(&arena);
}

/* Matches and returns the status; *m is filled. */
static route_status match(const char *method, const char *path, route_match *m)
{
    return router_match(method, path, &arena, m);
}

/* Replaces each {name} of a pattern with "42". */
static void concrete_path(const char *pattern, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = pattern; *p != '\0' && o + 3 < size; p++) {
        if (*p == '{') {
            p = strchr(p, '}');
            out[o++] = '4';
            out[o++] = '2';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

/* ---- the table ------------------------------------------------------ */

START_TEST(test_every_route_matches_its_own_method_and_path)
{
    size_t n;
    const http_route *table = router_table(&n);
    ck_assert_uint_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        char path[256];
        concrete_path(table[i].pattern, path, sizeof path);
        route_match m;
        ck_assert_msg(match(table[i].method, path, &m) == ROUTE_FOUND, "%s %s", table[i].method,
                      path);
        ck_assert_ptr_eq(m.route, &table[i]);
        ck_assert_int_eq(m.index, (int)i);
    }
}
END_TEST

START_TEST(test_every_route_has_a_handler_and_an_absolute_pattern)
{
    size_t n;
    const http_route *table = router_table(&n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(table[i].handler != NULL, "%s %s", table[i].method, table[i].pattern);
        ck_assert_msg(table[i].pattern[0] == '/', "%s", table[i].pattern);
    }
}
END_TEST

START_TEST(test_no_two_routes_share_method_and_pattern)
{
    size_t n;
    const http_route *table = router_table(&n);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            ck_assert_msg(strcmp(table[i].method, table[j].method) != 0 ||
                              strcmp(table[i].pattern, table[j].pattern) != 0,
                          "%s %s twice", table[i].method, table[i].pattern);
}
END_TEST

START_TEST(test_api_key_routes_require_admin_scope)
{
    size_t n;
    const http_route *table = router_table(&n);
    int seen = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(table[i].pattern, "/v1/api-keys", 12) == 0) {
            ck_assert_uint_eq(table[i].scope, CRM_SCOPE_ADMIN);
            seen++;
        }
    ck_assert_int_gt(seen, 0);
}
END_TEST

START_TEST(test_create_api_key_route_takes_json_body)
{
    route_match m;
    ck_assert_int_eq(match("POST", "/v1/api-keys", &m), ROUTE_FOUND);
    ck_assert(m.route->json_body);
    ck_assert_int_eq(match("GET", "/v1/api-keys", &m), ROUTE_FOUND);
    ck_assert(!m.route->json_body);
}
END_TEST

START_TEST(test_health_route_needs_no_key)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/healthz", &m), ROUTE_FOUND);
    ck_assert_str_eq(m.route->pattern, "/healthz");
    ck_assert_uint_eq(m.route->scope, 0);
}
END_TEST

/* ---- matching ------------------------------------------------------- */

START_TEST(test_same_path_picks_route_by_method)
{
    route_match get, del;
    ck_assert_int_eq(match("GET", "/v1/api-keys/7", &get), ROUTE_FOUND);
    ck_assert_int_eq(match("DELETE", "/v1/api-keys/7", &del), ROUTE_FOUND);
    ck_assert_str_eq(get.route->method, "GET");
    ck_assert_str_eq(del.route->method, "DELETE");
    ck_assert_ptr_ne(get.route, del.route);
}
END_TEST

START_TEST(test_head_matches_get_route)
{
    route_match head, get;
    ck_assert_int_eq(match("HEAD", "/v1/api-keys", &head), ROUTE_FOUND);
    ck_assert_int_eq(match("GET", "/v1/api-keys", &get), ROUTE_FOUND);
    ck_assert_ptr_eq(head.route, get.route);
}
END_TEST

START_TEST(test_param_is_named_and_returned)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/api-keys/123", &m), ROUTE_FOUND);
    ck_assert_int_eq(m.nparams, 1);
    ck_assert_uint_eq(m.params[0].name_len, 2);
    ck_assert_int_eq(strncmp(m.params[0].name, "id", 2), 0);
    ck_assert_str_eq(m.params[0].value, "123");
}
END_TEST

START_TEST(test_route_without_params_has_none)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/api-keys", &m), ROUTE_FOUND);
    ck_assert_int_eq(m.nparams, 0);
}
END_TEST

START_TEST(test_param_is_percent_decoded)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/api-keys/%41%62c", &m), ROUTE_FOUND);
    ck_assert_str_eq(m.params[0].value, "Abc");
}
END_TEST

START_TEST(test_encoded_slash_stays_inside_one_segment)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/api-keys/a%2Fb", &m), ROUTE_FOUND);
    ck_assert_str_eq(m.route->pattern, "/v1/api-keys/{id}");
    ck_assert_str_eq(m.params[0].value, "a/b");
}
END_TEST

START_TEST(test_encoded_nul_in_param_is_bad_path)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/api-keys/1%00", &m), ROUTE_BAD_PATH);
}
END_TEST


START_TEST(test_non_utf8_param_is_bad_param_naming_it)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/customers/by-external-id/%ff/x", &m), ROUTE_BAD_PARAM);
    ck_assert_uint_eq(m.bad_param_len, 6);
    ck_assert_int_eq(strncmp(m.bad_param, "source", 6), 0);
    ck_assert_int_eq(match("GET", "/v1/customers/by-external-id/crm/%c0%80", &m), ROUTE_BAD_PARAM);
    ck_assert_uint_eq(m.bad_param_len, 11);
    ck_assert_int_eq(strncmp(m.bad_param, "external_id", 11), 0);
}
END_TEST

START_TEST(test_raw_non_utf8_byte_in_param_is_bad_param)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/customers/by-external-id/a\xff" "b/x", &m), ROUTE_BAD_PARAM);
}
END_TEST

/* ---- not found ------------------------------------------------------ */

START_TEST(test_unknown_path_is_not_found)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/nothing-here", &m), ROUTE_NOT_FOUND);
    ck_assert_ptr_null(m.route);
    ck_assert_int_eq(m.index, -1);
}
END_TEST

START_TEST(test_trailing_slash_is_not_found)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/api-keys/", &m), ROUTE_NOT_FOUND);
    ck_assert_int_eq(match("GET", "/healthz/", &m), ROUTE_NOT_FOUND);
    ck_assert_int_eq(match("GET", "/v1/api-keys/7/", &m), ROUTE_NOT_FOUND);
}
END_TEST

START_TEST(test_doubled_slash_is_not_found)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1//api-keys", &m), ROUTE_NOT_FOUND);
    ck_assert_int_eq(match("GET", "//healthz", &m), ROUTE_NOT_FOUND);
}
END_TEST

START_TEST(test_extra_segment_is_not_found)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/v1/api-keys/7/extra", &m), ROUTE_NOT_FOUND);
}
END_TEST

START_TEST(test_path_without_leading_slash_is_not_found)
{
    route_match m;
    ck_assert_int_eq(match("GET", "healthz", &m), ROUTE_NOT_FOUND);
    ck_assert_int_eq(match("GET", "", &m), ROUTE_NOT_FOUND);
    ck_assert_int_eq(match("GET", "/", &m), ROUTE_NOT_FOUND);
}
END_TEST

START_TEST(test_literal_segments_compare_case_sensitively)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/V1/api-keys", &m), ROUTE_NOT_FOUND);
}
END_TEST

START_TEST(test_path_with_many_segments_is_not_found)
{
    char path[256] = "";
    for (int i = 0; i < 40; i++)
        strcat(path, "/a");
    route_match m;
    ck_assert_int_eq(match("GET", path, &m), ROUTE_NOT_FOUND);
}
END_TEST

START_TEST(test_prefix_of_a_literal_is_not_found)
{
    route_match m;
    ck_assert_int_eq(match("GET", "/health", &m), ROUTE_NOT_FOUND);
    ck_assert_int_eq(match("GET", "/healthzz", &m), ROUTE_NOT_FOUND);
}
END_TEST

/* ---- bad method ----------------------------------------------------- */

START_TEST(test_wrong_method_lists_allowed_methods)
{
    route_match m;
    ck_assert_int_eq(match("DELETE", "/v1/api-keys", &m), ROUTE_BAD_METHOD);
    ck_assert_str_eq(m.allow, "POST, GET, HEAD");
    ck_assert_ptr_null(m.route);
}
END_TEST

START_TEST(test_wrong_method_on_item_lists_get_head_delete)
{
    route_match m;
    ck_assert_int_eq(match("PUT", "/v1/api-keys/7", &m), ROUTE_BAD_METHOD);
    ck_assert_str_eq(m.allow, "GET, HEAD, DELETE");
}
END_TEST

START_TEST(test_post_to_get_only_route_allows_get_and_head)
{
    route_match m;
    ck_assert_int_eq(match("POST", "/healthz", &m), ROUTE_BAD_METHOD);
    ck_assert_str_eq(m.allow, "GET, HEAD");
}
END_TEST

START_TEST(test_methods_are_case_sensitive)
{
    route_match m;
    ck_assert_int_eq(match("get", "/healthz", &m), ROUTE_BAD_METHOD);
}
END_TEST

/* ---- router_percent_decode ------------------------------------------ */

static char *decode(const char *s, bool plus_is_space)
{
    return router_percent_decode(&arena, s, strlen(s), plus_is_space);
}

START_TEST(test_decode_hex_either_case)
{
    ck_assert_str_eq(decode("%2f%2F%41%6a", false), "//Aj");
}
END_TEST

START_TEST(test_decode_escape_at_end_of_input)
{
    ck_assert_str_eq(decode("ab%41", false), "abA");
}
END_TEST

START_TEST(test_decode_multibyte_utf8)
{
    ck_assert_str_eq(decode("%E2%82%AC", false), "\xe2\x82\xac");
}
END_TEST

START_TEST(test_decode_plus_is_space_in_query_strings)
{
    ck_assert_str_eq(decode("a+b", true), "a b");
}
END_TEST

START_TEST(test_decode_plus_is_literal_in_paths)
{
    ck_assert_str_eq(decode("a+b", false), "a+b");
}
END_TEST

START_TEST(test_decode_encoded_plus_stays_plus)
{
    ck_assert_str_eq(decode("a%2Bb", true), "a+b");
}
END_TEST

START_TEST(test_decode_rejects_encoded_nul)
{
    ck_assert_ptr_null(decode("a%00b", false));
    ck_assert_ptr_null(decode("%00", true));
}
END_TEST

START_TEST(test_decode_reads_only_len_bytes)
{
    char *s = router_percent_decode(&arena, "abc%41", 3, false);
    ck_assert_str_eq(s, "abc");
}
END_TEST

START_TEST(test_decode_does_not_read_escape_past_len)
{
    /* The escape is cut by len: its hex digits are not part of the input. */
    char *s = router_percent_decode(&arena, "ab%41", 4, false);
    ck_assert_str_eq(s, "ab%4");
}
END_TEST

START_TEST(test_decode_empty_input)
{
    ck_assert_str_eq(decode("", false), "");
}
END_TEST


/* ---- strict UTF-8 ---------------------------------------------------- */

static decode_status decode_status_of(const char *s)
{
    char *out;
    return router_decode(&arena, s, strlen(s), true, &out);
}

START_TEST(test_decode_refuses_bytes_that_are_not_utf8)
{
    ck_assert_int_eq(decode_status_of("%ff%ff%ff"), DECODE_NOT_UTF8);
    ck_assert_int_eq(decode_status_of("%ff@x.com"), DECODE_NOT_UTF8);
    ck_assert_ptr_null(decode("%ff", true));
    ck_assert_int_eq(decode_status_of("a%80"), DECODE_NOT_UTF8);      /* lone continuation */
    ck_assert_int_eq(decode_status_of("%e2%82"), DECODE_NOT_UTF8);    /* cut sequence */
    ck_assert_int_eq(decode_status_of("%e2%82x"), DECODE_NOT_UTF8);   /* cut, then ASCII */
    ck_assert_int_eq(decode_status_of("%fe"), DECODE_NOT_UTF8);
}
END_TEST

START_TEST(test_decode_refuses_overlong_forms)
{
    ck_assert_int_eq(decode_status_of("%c0%80"), DECODE_NOT_UTF8);       /* NUL in 2 bytes */
    ck_assert_int_eq(decode_status_of("%c1%bf"), DECODE_NOT_UTF8);
    ck_assert_int_eq(decode_status_of("%e0%80%af"), DECODE_NOT_UTF8);    /* '/' in 3 bytes */
    ck_assert_int_eq(decode_status_of("%e0%9f%bf"), DECODE_NOT_UTF8);
    ck_assert_int_eq(decode_status_of("%f0%8f%bf%bf"), DECODE_NOT_UTF8); /* U+FFFF in 4 */
}
END_TEST

START_TEST(test_decode_refuses_surrogates)
{
    ck_assert_int_eq(decode_status_of("%ed%a0%80"), DECODE_NOT_UTF8); /* U+D800 */
    ck_assert_int_eq(decode_status_of("%ed%bf%bf"), DECODE_NOT_UTF8); /* U+DFFF */
}
END_TEST

START_TEST(test_decode_refuses_code_points_above_10ffff)
{
    ck_assert_int_eq(decode_status_of("%f4%90%80%80"), DECODE_NOT_UTF8); /* U+110000 */
    ck_assert_int_eq(decode_status_of("%f5%80%80%80"), DECODE_NOT_UTF8);
}
END_TEST

START_TEST(test_decode_accepts_the_edges_of_utf8)
{
    ck_assert_str_eq(decode("%c2%80", true), "\xc2\x80");             /* U+0080 */
    ck_assert_str_eq(decode("%df%bf", true), "\xdf\xbf");             /* U+07FF */
    ck_assert_str_eq(decode("%e0%a0%80", true), "\xe0\xa0\x80");      /* U+0800 */
    ck_assert_str_eq(decode("%ed%9f%bf", true), "\xed\x9f\xbf");      /* U+D7FF */
    ck_assert_str_eq(decode("%ee%80%80", true), "\xee\x80\x80");      /* U+E000 */
    ck_assert_str_eq(decode("%ef%bf%bf", true), "\xef\xbf\xbf");      /* U+FFFF */
    ck_assert_str_eq(decode("%f0%90%80%80", true), "\xf0\x90\x80\x80"); /* U+10000 */
    ck_assert_str_eq(decode("%f4%8f%bf%bf", true), "\xf4\x8f\xbf\xbf"); /* U+10FFFF */
}
END_TEST

START_TEST(test_decode_tells_nul_from_bad_utf8)
{
    ck_assert_int_eq(decode_status_of("a%00"), DECODE_NUL);
    ck_assert_int_eq(decode_status_of("ok%20fine"), DECODE_OK);
}
END_TEST

/* ---- the query checker ------------------------------------------------ */

static const http_route *route_of(const char *method, const char *path)
{
    route_match m;
    ck_assert_int_eq(match(method, path, &m), ROUTE_FOUND);
    return m.route;
}

/* Runs the checker over NULL-terminated key, value pairs; true when accepted. */
static bool check_query(const http_route *route, crm_error *err, const char *const *pairs)
{
    query_checker qc;
    query_checker_init(&qc, route, &arena, err);
    for (int i = 0; pairs[i] != NULL; i += 2)
        query_checker_add(&qc, pairs[i], pairs[i + 1]);
    return query_checker_finish(&qc);
}

/* The field of errors[i], or NULL. */
static const char *error_field(const crm_error *err, size_t i)
{
    return json_string_value(json_object_get(json_array_get(err->errors, i), "field"));
}

START_TEST(test_query_value_not_utf8_is_refused_naming_the_parameter)
{
    crm_error err = CRM_ERROR_INIT;
    const char *const pairs[] = {"q", "%ff%ff%ff", "city", "%c0%80", NULL};
    ck_assert(!check_query(route_of("GET", "/v1/customers"), &err, pairs));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_uint_eq(json_array_size(err.errors), 2);
    ck_assert_str_eq(error_field(&err, 0), "q");
    ck_assert_str_eq(error_field(&err, 1), "city");
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_query_key_not_utf8_is_refused_without_echoing_it)
{
    crm_error err = CRM_ERROR_INIT;
    const char *const pairs[] = {"%ff%fe", "1", NULL};
    ck_assert(!check_query(route_of("GET", "/v1/customers"), &err, pairs));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_ptr_null(err.errors);
    ck_assert_ptr_null(strstr(err.detail, "%ff"));
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_query_with_good_values_is_accepted)
{
    crm_error err = CRM_ERROR_INIT;
    const char *const pairs[] = {"q", "caf%C3%A9", "limit", "10", NULL};
    ck_assert(check_query(route_of("GET", "/v1/customers"), &err, pairs));
    ck_assert_int_eq(err.code, CRM_OK);
}
END_TEST

START_TEST(test_unknown_query_parameter_is_refused_naming_it)
{
    crm_error err = CRM_ERROR_INIT;
    const char *const pairs[] = {"emial", "x", NULL};
    ck_assert(!check_query(route_of("GET", "/v1/customers"), &err, pairs));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    ck_assert_str_eq(error_field(&err, 0), "emial");
    const char *msg =
        json_string_value(json_object_get(json_array_get(err.errors, 0), "message"));
    ck_assert_ptr_nonnull(strstr(msg, "email"));
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_route_without_query_parameters_refuses_any)
{
    crm_error err = CRM_ERROR_INIT;
    const char *const pairs[] = {"limit", "1", NULL};
    ck_assert(!check_query(route_of("GET", "/v1/customers/7/export"), &err, pairs));
    ck_assert_str_eq(error_field(&err, 0), "limit");
    crm_error_clear(&err);
    const char *const bare[] = {"_", NULL, NULL};
    ck_assert(!check_query(route_of("GET", "/healthz"), &err, bare));
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_every_declared_parameter_is_accepted)
{
    size_t n;
    const http_route *table = router_table(&n);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; table[i].query != NULL && table[i].query[k] != NULL; k++) {
            crm_error err = CRM_ERROR_INIT;
            const char *const pairs[] = {table[i].query[k], "1", NULL};
            ck_assert_msg(check_query(&table[i], &err, pairs), "%s %s ?%s", table[i].method,
                          table[i].pattern, table[i].query[k]);
        }
    }
}
END_TEST

START_TEST(test_repeated_parameter_is_refused_once)
{
    crm_error err = CRM_ERROR_INIT;
    const char *const pairs[] = {"tag", "a", "tag", "b", "tag", "c", NULL};
    ck_assert(!check_query(route_of("GET", "/v1/customers"), &err, pairs));
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    ck_assert_str_eq(error_field(&err, 0), "tag");
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_percent_encoded_name_of_a_known_parameter_is_refused)
{
    /* Handlers look keys up as sent: %65mail would be silently missed. */
    crm_error err = CRM_ERROR_INIT;
    const char *const pairs[] = {"%65mail", "a@b.co", NULL};
    ck_assert(!check_query(route_of("GET", "/v1/customers"), &err, pairs));
    ck_assert_str_eq(error_field(&err, 0), "email");
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_unknown_key_with_control_characters_or_too_long_is_not_echoed)
{
    crm_error err = CRM_ERROR_INIT;
    char longkey[100];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    const char *const pairs[] = {"a%0Ab", "1", longkey, "1", "", "1", NULL};
    ck_assert(!check_query(route_of("GET", "/v1/customers"), &err, pairs));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_ptr_null(err.errors);
    ck_assert_ptr_null(strstr(err.detail, "kkkk"));
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_errors_reported_are_bounded)
{
    crm_error err = CRM_ERROR_INIT;
    query_checker qc;
    query_checker_init(&qc, route_of("GET", "/v1/customers"), &arena, &err);
    for (int i = 0; i < 1000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        query_checker_add(&qc, key, "v");
    }
    ck_assert(!query_checker_finish(&qc));
    ck_assert_uint_le(json_array_size(err.errors), 16);
    ck_assert_uint_gt(json_array_size(err.errors), 0);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_declared_query_lists_are_short_and_without_repeats)
{
    size_t n;
    const http_route *table = router_table(&n);
    for (size_t i = 0; i < n; i++) {
        const char *const *q = table[i].query;
        int count = 0;
        for (; q != NULL && q[count] != NULL; count++)
            for (int j = 0; j < count; j++)
                ck_assert_msg(strcmp(q[j], q[count]) != 0, "%s twice", q[j]);
        ck_assert_int_le(count, ROUTE_MAX_QUERY);
    }
}
END_TEST

/* ---- the CORS allow-list ------------------------------------------------ */

static bool cors_set(const char *list)
{
    char errbuf[256];
    return cors_configure(list, errbuf, sizeof errbuf);
}

START_TEST(test_cors_empty_list_allows_no_origin)
{
    ck_assert(cors_set(""));
    ck_assert(!cors_origin_allowed("https://app.example.com"));
    ck_assert(cors_set(NULL));
    ck_assert(!cors_origin_allowed("https://app.example.com"));
}
END_TEST

START_TEST(test_cors_list_allows_exactly_its_origins)
{
    ck_assert(cors_set(" https://app.example.com , http://localhost:5173,https://[::1]:8443"));
    ck_assert(cors_origin_allowed("https://app.example.com"));
    ck_assert(cors_origin_allowed("HTTPS://APP.example.com"));
    ck_assert(cors_origin_allowed("http://localhost:5173"));
    ck_assert(cors_origin_allowed("https://[::1]:8443"));
    ck_assert(!cors_origin_allowed("http://app.example.com"));       /* other scheme */
    ck_assert(!cors_origin_allowed("https://app.example.com:444"));  /* other port */
    ck_assert(!cors_origin_allowed("https://app.example.com.evil.net"));
    ck_assert(!cors_origin_allowed("null"));
    ck_assert(!cors_origin_allowed(NULL));
    cors_set("");
}
END_TEST

START_TEST(test_cors_star_allows_any_origin)
{
    ck_assert(cors_set("*"));
    ck_assert(cors_origin_allowed("https://anything.example"));
    cors_set("");
}
END_TEST

START_TEST(test_cors_refuses_entries_that_are_not_origins)
{
    const char *bad[] = {"app.example.com",          "https://app.example.com/",
                         "https://app.example.com/x", "ftp://app.example.com",
                         "https://",                 "https://a:",
                         "https://a:123456",         "*,https://app.example.com",
                         "https://a b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!cors_set(bad[i]), "%s", bad[i]);
    ck_assert(!cors_origin_allowed("https://app.example.com"));
    cors_set("");
}
END_TEST

Suite *router_suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("table");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_every_route_matches_its_own_method_and_path);
    tcase_add_test(tc, test_every_route_has_a_handler_and_an_absolute_pattern);
    tcase_add_test(tc, test_no_two_routes_share_method_and_pattern);
    tcase_add_test(tc, test_api_key_routes_require_admin_scope);
    tcase_add_test(tc, test_create_api_key_route_takes_json_body);
    tcase_add_test(tc, test_health_route_needs_no_key);
    suite_add_tcase(s, tc);

    tc = tcase_create("match");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_same_path_picks_route_by_method);
    tcase_add_test(tc, test_head_matches_get_route);
    tcase_add_test(tc, test_param_is_named_and_returned);
    tcase_add_test(tc, test_route_without_params_has_none);
    tcase_add_test(tc, test_param_is_percent_decoded);
    tcase_add_test(tc, test_encoded_slash_stays_inside_one_segment);
    tcase_add_test(tc, test_encoded_nul_in_param_is_bad_path);
    tcase_add_test(tc, test_non_utf8_param_is_bad_param_naming_it);
    tcase_add_test(tc, test_raw_non_utf8_byte_in_param_is_bad_param);
    suite_add_tcase(s, tc);

    tc = tcase_create("not_found");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_unknown_path_is_not_found);
    tcase_add_test(tc, test_trailing_slash_is_not_found);
    tcase_add_test(tc, test_doubled_slash_is_not_found);
    tcase_add_test(tc, test_extra_segment_is_not_found);
    tcase_add_test(tc, test_path_without_leading_slash_is_not_found);
    tcase_add_test(tc, test_literal_segments_compare_case_sensitively);
    tcase_add_test(tc, test_path_with_many_segments_is_not_found);
    tcase_add_test(tc, test_prefix_of_a_literal_is_not_found);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_method");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_wrong_method_lists_allowed_methods);
    tcase_add_test(tc, test_wrong_method_on_item_lists_get_head_delete);
    tcase_add_test(tc, test_post_to_get_only_route_allows_get_and_head);
    tcase_add_test(tc, test_methods_are_case_sensitive);
    suite_add_tcase(s, tc);

    tc = tcase_create("percent_decode");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_decode_hex_either_case);
    tcase_add_test(tc, test_decode_escape_at_end_of_input);
    tcase_add_test(tc, test_decode_multibyte_utf8);
    tcase_add_test(tc, test_decode_plus_is_space_in_query_strings);
    tcase_add_test(tc, test_decode_plus_is_literal_in_paths);
    tcase_add_test(tc, test_decode_encoded_plus_stays_plus);
    tcase_add_test(tc, test_decode_rejects_encoded_nul);
    tcase_add_test(tc, test_decode_reads_only_len_bytes);
    tcase_add_test(tc, test_decode_does_not_read_escape_past_len);
    tcase_add_test(tc, test_decode_empty_input);
    tcase_add_test(tc, test_decode_refuses_bytes_that_are_not_utf8);
    tcase_add_test(tc, test_decode_refuses_overlong_forms);
    tcase_add_test(tc, test_decode_refuses_surrogates);
    tcase_add_test(tc, test_decode_refuses_code_points_above_10ffff);
    tcase_add_test(tc, test_decode_accepts_the_edges_of_utf8);
    tcase_add_test(tc, test_decode_tells_nul_from_bad_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("query_check");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_query_value_not_utf8_is_refused_naming_the_parameter);
    tcase_add_test(tc, test_query_key_not_utf8_is_refused_without_echoing_it);
    tcase_add_test(tc, test_query_with_good_values_is_accepted);
    tcase_add_test(tc, test_unknown_query_parameter_is_refused_naming_it);
    tcase_add_test(tc, test_route_without_query_parameters_refuses_any);
    tcase_add_test(tc, test_every_declared_parameter_is_accepted);
    tcase_add_test(tc, test_repeated_parameter_is_refused_once);
    tcase_add_test(tc, test_percent_encoded_name_of_a_known_parameter_is_refused);
    tcase_add_test(tc, test_unknown_key_with_control_characters_or_too_long_is_not_echoed);
    tcase_add_test(tc, test_errors_reported_are_bounded);
    tcase_add_test(tc, test_declared_query_lists_are_short_and_without_repeats);
    suite_add_tcase(s, tc);

    tc = tcase_create("cors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_cors_empty_list_allows_no_origin);
    tcase_add_test(tc, test_cors_list_allows_exactly_its_origins);
    tcase_add_test(tc, test_cors_star_allows_any_origin);
    tcase_add_test(tc, test_cors_refuses_entries_that_are_not_origins);
    suite_add_tcase(s, tc);
    return s;
}

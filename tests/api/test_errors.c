/*
 * test_errors.c — how crmd refuses requests: 404, 405 with Allow, 401, 403,
 * 400 for malformed JSON, 413, 414, 415, 431, and that every refusal is
 * problem+json (RFC 9457) whose status matches the HTTP status.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define MAX_BODY 4096

static crmd_server srv;

static void setup(void)
{
    static const char *const env[] = {"CRMD_MAX_BODY_BYTES=4096", NULL};
    crmd_fixture_start(&srv, env);
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* A valid key-creation body padded with spaces to exactly size bytes: if the
 * size limit were not enforced, it would create a key. Caller frees. */
static char *padded_key_body(size_t size)
{
    static const char json[] = "{\"name\":\"padded\",\"scopes\":[\"admin\"]}";
    char *body = malloc(size + 1);
    memset(body, ' ', size);
    memcpy(body, json, sizeof json - 1);
    body[size] = '\0';
    return body;
}

/* A string of n copies of c after prefix; caller frees. */
static char *repeat_after(const char *prefix, char c, size_t n)
{
    size_t p = strlen(prefix);
    char *s = malloc(p + n + 1);
    memcpy(s, prefix, p);
    memset(s + p, c, n);
    s[p + n] = '\0';
    return s;
}

/* Counts every stored key by walking the list. */
static long count_keys(void)
{
    long count = 0;
    char path[256] = "/v1/api-keys?limit=200";
    for (int page = 0; page < 1000; page++) {
        http_response r = http_get(&srv, path, harness_admin_key.secret);
        ck_assert_int_eq(r.status, 200);
        json_t *doc = http_response_json(&r);
        count += (long)json_array_size(json_object_get(doc, "data"));
        const char *next = json_string_value(json_object_get(doc, "next_cursor"));
        if (next != NULL)
            snprintf(path, sizeof path, "/v1/api-keys?limit=200&after=%s", next);
        json_decref(doc);
        http_response_free(&r);
        if (next == NULL)
            return count;
    }
    ck_abort_msg("the key list did not end after 1000 pages");
    return -1;
}

/* ---- routing ----------------------------------------------------------- */

START_TEST(unknown_path_answers_404_problem)
{
    http_response r = http_get(&srv, "/v1/no-such-resource", harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

START_TEST(wrong_method_answers_405_with_allow_listing_the_collection_methods)
{
    http_call call = {.method = "PUT", .path = "/v1/api-keys", .api_key = harness_admin_key.secret};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 405));
    ck_assert_str_eq(http_response_header(&r, "Allow"), "POST, GET, HEAD");
    http_response_free(&r);
}
END_TEST

START_TEST(wrong_method_answers_405_with_allow_listing_the_item_methods)
{
    http_call call = {
        .method = "PATCH", .path = "/v1/api-keys/1", .api_key = harness_admin_key.secret};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 405));
    ck_assert_str_eq(http_response_header(&r, "Allow"), "GET, HEAD, DELETE");
    http_response_free(&r);
}
END_TEST

/* ---- authentication and scopes ----------------------------------------- */

START_TEST(missing_key_answers_401_with_www_authenticate_bearer)
{
    http_response r = http_get(&srv, "/v1/api-keys", NULL);
    json_decref(assert_problem(&r, 401));
    ck_assert_str_eq(http_response_header(&r, "WWW-Authenticate"), "Bearer realm=\"crmd\"");
    http_response_free(&r);
}
END_TEST

static const char *const bad_authorizations[] = {
    "Authorization: Bearer not-a-key",
    "Authorization: Basic dXNlcjpwYXNzd29yZA==",
    "Authorization: Bearer",
    /* well formed, but no such prefix */
    "Authorization: Bearer crm_0000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    /* well formed, upper-case hex in the prefix */
    "Authorization: Bearer crm_ABCDEF0123_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
};

START_TEST(malformed_or_unknown_key_answers_401)
{
    const char *headers[] = {bad_authorizations[_i], NULL};
    http_call call = {.path = "/v1/api-keys", .headers = headers};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 401));
    ck_assert_ptr_nonnull(http_response_header(&r, "WWW-Authenticate"));
    http_response_free(&r);
}
END_TEST

START_TEST(known_prefix_with_a_wrong_secret_answers_401)
{
    char forged[64];
    snprintf(forged, sizeof forged, "%s", harness_admin_key.secret);
    size_t last = strlen(forged) - 1;
    forged[last] = forged[last] == 'A' ? 'B' : 'A';
    http_response r = http_get(&srv, "/v1/api-keys", forged);
    json_decref(assert_problem(&r, 401));
    http_response_free(&r);
}
END_TEST

START_TEST(revoked_key_answers_401)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    http_response before = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_int_eq(before.status, 200);
    http_response_free(&before);

    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld", key.id);
    http_response del = http_delete(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(del.status, 204);
    http_response_free(&del);

    http_response after = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    json_decref(assert_problem(&after, 401));
    http_response_free(&after);
}
END_TEST

START_TEST(key_without_the_admin_scope_answers_403_on_api_keys)
{
    api_key key;
    ck_assert(api_key_create("customers:read,customers:write", &key));
    http_response r = http_get(&srv, "/v1/api-keys", key.secret);
    json_t *problem = assert_problem(&r, 403);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(problem, "detail")), "admin"));
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

/* ---- bodies -------------------------------------------------------------- */

START_TEST(malformed_json_answers_400_saying_line_and_column)
{
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret,
                                     "{\"name\": \"t\",\n \"scopes\": [\"admin\",]}");
    json_t *problem = assert_problem(&r, 400);
    const char *detail = json_string_value(json_object_get(problem, "detail"));
    ck_assert_msg(strstr(detail, "line 2") != NULL && strstr(detail, "column") != NULL,
                  "detail does not point at line 2 and a column: %s", detail);
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

START_TEST(malformed_json_stores_nothing)
{
    long before = count_keys();
    /* A complete key followed by garbage: a lenient parser would store it. */
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret,
                                     "{\"name\":\"t\",\"scopes\":[\"admin\"]} trailing");
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);
    ck_assert_int_eq(count_keys(), before);
}
END_TEST

START_TEST(repeated_member_name_answers_400)
{
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret,
                                     "{\"name\":\"a\",\"name\":\"b\",\"scopes\":[\"admin\"]}");
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);
}
END_TEST

START_TEST(body_that_is_not_utf8_answers_400)
{
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret,
                                     "{\"name\":\"caf\xe9\",\"scopes\":[\"admin\"]}");
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);
}
END_TEST

START_TEST(empty_body_answers_400)
{
    http_call call = {
        .path = "/v1/api-keys", .api_key = harness_admin_key.secret, .body = "", .method = "POST"};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);
}
END_TEST

START_TEST(body_of_exactly_the_limit_is_accepted)
{
    char *body = padded_key_body(MAX_BODY);
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret, body);
    ck_assert_msg(r.status == 201, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
    free(body);
}
END_TEST

START_TEST(body_over_the_limit_with_content_length_answers_413)
{
    long before = count_keys();
    char *body = padded_key_body(MAX_BODY + 1);
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret, body);
    json_decref(assert_problem(&r, 413));
    http_response_free(&r);
    free(body);
    ck_assert_int_eq(count_keys(), before);
}
END_TEST

START_TEST(body_over_the_limit_sent_chunked_answers_413)
{
    long before = count_keys();
    char *body = padded_key_body(MAX_BODY + 1500);
    http_call call = {
        .path = "/v1/api-keys", .api_key = harness_admin_key.secret, .body = body, .chunked = true};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 413));
    http_response_free(&r);
    free(body);
    ck_assert_int_eq(count_keys(), before);
}
END_TEST

START_TEST(body_over_the_limit_on_an_operation_that_takes_none_answers_413)
{
    char *body = padded_key_body(MAX_BODY + 1);
    http_call call = {
        .method = "GET", .path = "/v1/api-keys", .api_key = harness_admin_key.secret, .body = body};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 413));
    http_response_free(&r);
    free(body);
}
END_TEST

START_TEST(body_sent_as_text_plain_answers_415)
{
    http_call call = {.path = "/v1/api-keys",
                      .api_key = harness_admin_key.secret,
                      .body = "{\"name\":\"t\",\"scopes\":[\"admin\"]}",
                      .content_type = "text/plain"};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 415));
    http_response_free(&r);
}
END_TEST

START_TEST(json_content_type_with_charset_is_accepted)
{
    http_call call = {.path = "/v1/api-keys",
                      .api_key = harness_admin_key.secret,
                      .body = "{\"name\":\"t\",\"scopes\":[\"admin\"]}",
                      .content_type = "application/json; charset=utf-8"};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == 201, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

/* ---- request size limits -------------------------------------------------- */

START_TEST(path_longer_than_the_url_limit_answers_414)
{
    char *path = repeat_after("/v1/api-keys/", 'a', 9000);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    json_decref(assert_problem(&r, 414));
    http_response_free(&r);
    free(path);
}
END_TEST

START_TEST(query_string_making_the_url_longer_than_the_limit_answers_414)
{
    char *path = repeat_after("/v1/api-keys?limit=1&pad=", 'a', 9000);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    json_decref(assert_problem(&r, 414));
    http_response_free(&r);
    free(path);
}
END_TEST

START_TEST(headers_larger_than_the_limit_answer_431)
{
    char *pad = repeat_after("X-Pad: ", 'a', 17000);
    const char *headers[] = {pad, NULL};
    http_call call = {.path = "/healthz", .headers = headers};
    http_response r = http_send(&srv, &call);
    json_decref(assert_problem(&r, 431));
    http_response_free(&r);
    free(pad);
}
END_TEST

/* ---- every refusal is problem+json ------------------------------------------ */

typedef struct refusal {
    const char *method, *path;
    bool with_key;
    const char *body, *content_type;
    long status;
    const char *slug; /* the tail of the problem type */
} refusal;

static const refusal refusals[] = {
    {"GET", "/nowhere", false, NULL, NULL, 404, "not-found"},
    {"GET", "/v1/api-keys/%00", true, NULL, NULL, 400, "malformed-request"},
    {"DELETE", "/healthz", false, NULL, NULL, 405, "method-not-allowed"},
    {"POST", "/metrics", false, "{}", NULL, 405, "method-not-allowed"},
    {"GET", "/v1/api-keys", false, NULL, NULL, 401, "unauthorized"},
    {"POST", "/v1/api-keys", false, "{\"name\":\"t\",\"scopes\":[\"admin\"]}", NULL, 401,
     "unauthorized"},
    {"POST", "/v1/api-keys", true, "{\"name\":", NULL, 400, "malformed-request"},
    {"POST", "/v1/api-keys", true, "{\"name\":\"t\"}", NULL, 422, "validation-failed"},
    {"POST", "/v1/api-keys", true, "{}", "application/xml", 415, "unsupported-media-type"},
    {"GET", "/v1/api-keys/999999999", true, NULL, NULL, 404, "not-found"},
    {"DELETE", "/v1/api-keys/999999999", true, NULL, NULL, 404, "not-found"},
    {"GET", "/v1/api-keys?limit=0", true, NULL, NULL, 422, "validation-failed"},
};

START_TEST(every_refusal_is_problem_json_whose_status_matches_http)
{
    const refusal *c = &refusals[_i];
    http_call call = {.method = c->method,
                      .path = c->path,
                      .body = c->body,
                      .content_type = c->content_type,
                      .api_key = c->with_key ? harness_admin_key.secret : NULL};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == c->status, "%s %s: expected %ld, got %ld", c->method, c->path,
                  c->status, r.status);
    json_t *problem = assert_problem(&r, c->status);
    char type[128], instance[128];
    snprintf(type, sizeof type, "https://crmd.dev/problems/%s", c->slug);
    snprintf(instance, sizeof instance, "urn:crmd:request:%s",
             http_response_header(&r, "X-Request-Id"));
    ck_assert_str_eq(json_string_value(json_object_get(problem, "type")), type);
    ck_assert_str_eq(json_string_value(json_object_get(problem, "instance")), instance);
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

Suite *errors_suite(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("errors");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unknown_path_answers_404_problem);
    tcase_add_test(tc, wrong_method_answers_405_with_allow_listing_the_collection_methods);
    tcase_add_test(tc, wrong_method_answers_405_with_allow_listing_the_item_methods);
    tcase_add_test(tc, missing_key_answers_401_with_www_authenticate_bearer);
    tcase_add_loop_test(tc, malformed_or_unknown_key_answers_401, 0,
                        sizeof bad_authorizations / sizeof bad_authorizations[0]);
    tcase_add_test(tc, known_prefix_with_a_wrong_secret_answers_401);
    tcase_add_test(tc, revoked_key_answers_401);
    tcase_add_test(tc, key_without_the_admin_scope_answers_403_on_api_keys);
    tcase_add_test(tc, malformed_json_answers_400_saying_line_and_column);
    tcase_add_test(tc, malformed_json_stores_nothing);
    tcase_add_test(tc, repeated_member_name_answers_400);
    tcase_add_test(tc, body_that_is_not_utf8_answers_400);
    tcase_add_test(tc, empty_body_answers_400);
    tcase_add_test(tc, body_of_exactly_the_limit_is_accepted);
    tcase_add_test(tc, body_over_the_limit_with_content_length_answers_413);
    tcase_add_test(tc, body_over_the_limit_sent_chunked_answers_413);
    tcase_add_test(tc, body_over_the_limit_on_an_operation_that_takes_none_answers_413);
    tcase_add_test(tc, body_sent_as_text_plain_answers_415);
    tcase_add_test(tc, json_content_type_with_charset_is_accepted);
    tcase_add_test(tc, path_longer_than_the_url_limit_answers_414);
    tcase_add_test(tc, query_string_making_the_url_longer_than_the_limit_answers_414);
    tcase_add_test(tc, headers_larger_than_the_limit_answer_431);
    tcase_add_loop_test(tc, every_refusal_is_problem_json_whose_status_matches_http, 0,
                        sizeof refusals / sizeof refusals[0]);
    suite_add_tcase(s, tc);
    return s;
}

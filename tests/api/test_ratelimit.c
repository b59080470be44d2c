/*
 * test_ratelimit.c — the per-key rate limit over real HTTP, with a tiny
 * limit (1 request a second, bursts of 3): every answer to an authenticated
 * request carries RateLimit-Limit, -Remaining and -Reset; once the burst is
 * spent the key gets 429 problem+json with Retry-After, other keys are not
 * affected, unauthenticated requests carry no RateLimit headers, and the key
 * is served again after Retry-After.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

static crmd_server srv;

static void setup(void)
{
    static const char *const env[] = {"CRMD_RATE_LIMIT_RPS=1", "CRMD_RATE_LIMIT_BURST=3", NULL};
    crmd_fixture_start(&srv, env);
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

static long header_number(const http_response *r, const char *name)
{
    const char *v = http_response_header(r, name);
    ck_assert_msg(v != NULL, "no %s header", name);
    return strtol(v, NULL, 10);
}

/* Sends GET /v1/api-keys?limit=1 with key until it is refused (at most
 * max times); returns the 429, or fails. *allowed counts the 200s. */
static http_response send_until_refused(const api_key *key, int max, int *allowed)
{
    *allowed = 0;
    for (int i = 0; i < max; i++) {
        http_response r = http_get(&srv, "/v1/api-keys?limit=1", key->secret);
        if (r.status == 429)
            return r;
        ck_assert_msg(r.status == 200, "HTTP %ld: %.300s", r.status, r.body);
        (*allowed)++;
        http_response_free(&r);
    }
    ck_abort_msg("no 429 after %d requests", max);
    return (http_response){0};
}

START_TEST(every_authenticated_answer_carries_ratelimit_headers)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    http_response r = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(header_number(&r, "RateLimit-Limit"), 3);
    long remaining = header_number(&r, "RateLimit-Remaining");
    ck_assert_msg(remaining == 2, "remaining %ld", remaining);
    long reset = header_number(&r, "RateLimit-Reset");
    ck_assert_msg(reset >= 1 && reset <= 3, "reset %ld", reset);
    http_response_free(&r);
    /* Errors too: a 404 still took a token. */
    r = http_get(&srv, "/v1/api-keys/999999999", key.secret);
    json_decref(assert_problem(&r, 404));
    ck_assert_int_eq(header_number(&r, "RateLimit-Limit"), 3);
    ck_assert_int_le(header_number(&r, "RateLimit-Remaining"), 1);
    http_response_free(&r);
}
END_TEST

START_TEST(spent_burst_answers_429_with_retry_after)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    int allowed;
    http_response r = send_until_refused(&key, 12, &allowed);
    ck_assert_int_ge(allowed, 3);
    json_t *problem = assert_problem(&r, 429);
    ck_assert_str_eq(json_string_value(json_object_get(problem, "type")),
                     "https://crmd.dev/problems/rate-limited");
    long retry = header_number(&r, "Retry-After");
    ck_assert_msg(retry >= 1 && retry <= 2, "Retry-After %ld", retry);
    ck_assert_int_eq(header_number(&r, "RateLimit-Remaining"), 0);
    ck_assert_int_eq(header_number(&r, "RateLimit-Limit"), 3);
    json_decref(problem);
    http_response_free(&r);

    /* After Retry-After, the key is served again. */
    harness_sleep_ms(retry * 1000 + 100);
    r = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_msg(r.status == 200, "HTTP %ld: %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

START_TEST(refused_request_changes_nothing)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    int allowed;
    http_response r = send_until_refused(&key, 12, &allowed);
    http_response_free(&r);
    PGconn *db = harness_db_connect();
    long long before = harness_sql_number(db, "SELECT count(*) FROM api_keys", NULL);
    r = http_post_json(&srv, "/v1/api-keys", key.secret,
                       "{\"name\":\"throttled\",\"scopes\":[\"customers:read\"]}");
    if (r.status != 429) { /* a token came back meanwhile: spend it and retry once */
        http_response_free(&r);
        r = send_until_refused(&key, 12, &allowed);
        http_response_free(&r);
        before = harness_sql_number(db, "SELECT count(*) FROM api_keys", NULL);
        r = http_post_json(&srv, "/v1/api-keys", key.secret,
                           "{\"name\":\"throttled\",\"scopes\":[\"customers:read\"]}");
    }
    json_decref(assert_problem(&r, 429));
    ck_assert_int_eq(harness_sql_number(db, "SELECT count(*) FROM api_keys", NULL), before);
    http_response_free(&r);
    PQfinish(db);
}
END_TEST

START_TEST(another_key_is_not_limited_by_a_spent_one)
{
    api_key spent, other;
    ck_assert(api_key_create("admin", &spent));
    ck_assert(api_key_create("admin", &other));
    int allowed;
    http_response r = send_until_refused(&spent, 12, &allowed);
    http_response_free(&r);
    r = http_get(&srv, "/v1/api-keys?limit=1", other.secret);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(header_number(&r, "RateLimit-Remaining"), 2);
    http_response_free(&r);
}
END_TEST

START_TEST(unauthenticated_answers_carry_no_ratelimit_headers)
{
    http_response r = http_get(&srv, "/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(http_response_header(&r, "RateLimit-Limit"));
    http_response_free(&r);
    r = http_get(&srv, "/v1/api-keys", NULL);
    json_decref(assert_problem(&r, 401));
    ck_assert_ptr_null(http_response_header(&r, "RateLimit-Limit"));
    http_response_free(&r);
}
END_TEST

Suite *ratelimit_suite(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("ratelimit");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, every_authenticated_answer_carries_ratelimit_headers);
    tcase_add_test(tc, spent_burst_answers_429_with_retry_after);
    tcase_add_test(tc, refused_request_changes_nothing);
    tcase_add_test(tc, another_key_is_not_limited_by_a_spent_one);
    tcase_add_test(tc, unauthenticated_answers_carry_no_ratelimit_headers);
    suite_add_tcase(s, tc);
    return s;
}

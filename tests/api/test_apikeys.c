/*
 * test_apikeys.c — /v1/api-keys: create (201, Location, a secret shown
 * once), validation (422 naming the fields), cursor pagination, read by id,
 * revoke (and how soon a revoked key stops working).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_TTL_MS 300
#define REVOCATION_POLL_MS 3000

static crmd_server srv;
static const char *const server_env[] = {"CRMD_KEY_CACHE_TTL_MS=300", NULL};

static void setup(void)
{
    crmd_fixture_start(&srv, server_env);
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* POSTs body with the admin key and returns the parsed 201 representation. */
static json_t *create_key(const char *body, http_response *out)
{
    *out = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret, body);
    ck_assert_msg(out->status == 201, "create answered %ld: %.300s", out->status, out->body);
    json_t *doc = http_response_json(out);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

static bool is_rfc3339_utc_millis(const char *s)
{
    /* 2026-11-23T10:15:00.000Z */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (s == NULL || strlen(s) != sizeof shape - 1)
        return false;
    for (size_t i = 0; shape[i] != '\0'; i++)
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return false;
    return true;
}

/* Polls GET /v1/api-keys with secret on server until it answers 401 or
 * limit_ms pass; returns the milliseconds it took, or -1. */
static long long ms_until_unauthorized(const crmd_server *server, const char *secret,
                                       long long limit_ms)
{
    long long start = harness_now_ms();
    for (;;) {
        http_response r = http_get(server, "/v1/api-keys?limit=1", secret);
        long status = r.status;
        http_response_free(&r);
        long long elapsed = harness_now_ms() - start;
        if (status == 401)
            return elapsed;
        ck_assert_msg(status == 200, "unexpected HTTP %ld while waiting for 401", status);
        if (elapsed > limit_ms)
            return -1;
        harness_sleep_ms(25);
    }
}

/* Walks the whole list with the given limit; returns the ids in order (a
 * JSON array the caller json_decref's) and the number of pages. Fails the
 * test when a listed key shows a secret, or a page contains forbidden
 * (unless NULL). */
static json_t *walk_ids(int limit, int *pages, const char *forbidden)
{
    json_t *ids = json_array();
    char path[256];
    snprintf(path, sizeof path, "/v1/api-keys?limit=%d", limit);
    for (*pages = 0; *pages < 100000;) {
        http_response r = http_get(&srv, path, harness_admin_key.secret);
        ck_assert_msg(r.status == 200, "%s answered %ld: %.300s", path, r.status, r.body);
        (*pages)++;
        json_t *doc = http_response_json(&r);
        json_t *data = json_object_get(doc, "data");
        ck_assert_msg(json_is_array(data) && json_array_size(data) <= (size_t)limit,
                      "page %d of limit %d: %.300s", *pages, limit, r.body);
        size_t i;
        json_t *item;
        json_array_foreach(data, i, item)
        {
            json_array_append(ids, json_object_get(item, "id"));
            ck_assert_msg(json_object_get(item, "secret") == NULL, "a listed key shows its secret");
        }
        ck_assert_msg(forbidden == NULL || strstr(r.body, forbidden) == NULL, "a page shows '%s'",
                      forbidden);
        json_t *next = json_object_get(doc, "next_cursor");
        ck_assert_msg(next != NULL && (json_is_null(next) || json_is_string(next)),
                      "next_cursor must be a string or null: %.300s", r.body);
        bool last = json_is_null(next);
        if (!last)
            snprintf(path, sizeof path, "/v1/api-keys?limit=%d&after=%s", limit,
                     json_string_value(next));
        json_decref(doc);
        http_response_free(&r);
        if (last)
            return ids;
    }
    ck_abort_msg("the list did not end");
    return NULL;
}

static bool ids_contain(json_t *ids, long long id)
{
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) if (json_integer_value(v) == id) return true;
    return false;
}

/* ---- create --------------------------------------------------------------- */

START_TEST(create_answers_201_with_location_of_the_new_key)
{
    http_response r;
    json_t *key = create_key("{\"name\":\"located\",\"scopes\":[\"admin\"]}", &r);
    char expected[64];
    snprintf(expected, sizeof expected, "/v1/api-keys/%lld",
             (long long)json_integer_value(json_object_get(key, "id")));
    ck_assert_str_eq(http_response_header(&r, "Location"), expected);
    ck_assert_str_eq(http_response_header(&r, "Content-Type"), "application/json");
    json_decref(key);
    http_response_free(&r);
}
END_TEST

START_TEST(create_returns_the_key_representation)
{
    http_response r;
    json_t *key = create_key(
        "{\"name\":\"web front end\",\"scopes\":[\"customers:read\",\"touchpoints:write\"]}", &r);
    ck_assert_int_ge(json_integer_value(json_object_get(key, "id")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(key, "name")), "web front end");
    json_t *scopes = json_object_get(key, "scopes");
    ck_assert_int_eq(json_array_size(scopes), 2);
    bool read = false, write = false;
    size_t i;
    json_t *s;
    json_array_foreach(scopes, i, s)
    {
        read |= strcmp(json_string_value(s), "customers:read") == 0;
        write |= strcmp(json_string_value(s), "touchpoints:write") == 0;
    }
    ck_assert(read && write);
    const char *created = json_string_value(json_object_get(key, "created_at"));
    ck_assert_msg(is_rfc3339_utc_millis(created), "created_at: %s", created ? created : "");
    ck_assert(json_is_null(json_object_get(key, "revoked_at")));
    json_decref(key);
    http_response_free(&r);
}
END_TEST

START_TEST(create_shows_a_58_character_secret_whose_first_14_characters_are_the_prefix)
{
    http_response r;
    json_t *key = create_key("{\"name\":\"secretive\",\"scopes\":[\"admin\"]}", &r);
    const char *secret = json_string_value(json_object_get(key, "secret"));
    const char *prefix = json_string_value(json_object_get(key, "prefix"));
    ck_assert_ptr_nonnull(secret);
    ck_assert_ptr_nonnull(prefix);
    ck_assert_int_eq(strlen(secret), 58);
    ck_assert_int_eq(strlen(prefix), 14);
    ck_assert_msg(strncmp(secret, prefix, 14) == 0, "secret %s does not start with %s", secret,
                  prefix);
    ck_assert_msg(strncmp(prefix, "crm_", 4) == 0 && strspn(prefix + 4, "0123456789abcdef") == 10,
                  "prefix: %s", prefix);
    ck_assert_int_eq(secret[14], '_');
    json_decref(key);
    http_response_free(&r);
}
END_TEST

START_TEST(create_response_may_not_be_cached)
{
    http_response r;
    json_t *key = create_key("{\"name\":\"uncached\",\"scopes\":[\"admin\"]}", &r);
    ck_assert_str_eq(http_response_header(&r, "Cache-Control"), "no-store");
    json_decref(key);
    http_response_free(&r);
}
END_TEST

START_TEST(created_key_authenticates_for_api_keys)
{
    http_response r;
    json_t *key = create_key("{\"name\":\"works\",\"scopes\":[\"admin\"]}", &r);
    http_response list =
        http_get(&srv, "/v1/api-keys?limit=1", json_string_value(json_object_get(key, "secret")));
    ck_assert_int_eq(list.status, 200);
    http_response_free(&list);
    json_decref(key);
    http_response_free(&r);
}
END_TEST

START_TEST(secret_is_never_shown_again)
{
    http_response r;
    json_t *key = create_key("{\"name\":\"once\",\"scopes\":[\"admin\"]}", &r);
    const char *secret = json_string_value(json_object_get(key, "secret"));
    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld",
             (long long)json_integer_value(json_object_get(key, "id")));

    http_response one = http_get(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(one.status, 200);
    json_t *doc = http_response_json(&one);
    ck_assert_ptr_null(json_object_get(doc, "secret"));
    ck_assert_ptr_null(strstr(one.body, secret + 15));
    json_decref(doc);

    int pages;
    json_decref(walk_ids(200, &pages, secret + 15));
    http_response_free(&one);
    json_decref(key);
    http_response_free(&r);
}
END_TEST

/* ---- create: validation ------------------------------------------------------ */

typedef struct invalid_create {
    const char *body;
    const char *field; /* the JSON pointer errors[] must name */
} invalid_create;

static const invalid_create invalid_creates[] = {
    {"{\"scopes\":[\"admin\"]}", "/name"},
    {"{\"name\":\"\",\"scopes\":[\"admin\"]}", "/name"},
    {"{\"name\":42,\"scopes\":[\"admin\"]}", "/name"},
    {"{\"name\":\"nul\\u0000inside\",\"scopes\":[\"admin\"]}", "/name"},
    {"{\"name\":\"t\",\"scopes\":[\"no-such-scope\"]}", "/scopes/0"},
    {"{\"name\":\"t\",\"scopes\":[17]}", "/scopes/0"},
    {"{\"name\":\"t\",\"scopes\":[\"admin\",\"admin\"]}", "/scopes/1"},
    {"{\"name\":\"t\",\"scopes\":[]}", "/scopes"},
    {"{\"name\":\"t\",\"scopes\":\"admin\"}", "/scopes"},
    {"{\"name\":\"t\"}", "/scopes"},
    {"{\"name\":\"t\",\"scopes\":[\"admin\"],\"foo\":1}", "/foo"},
};

START_TEST(invalid_create_answers_422_naming_the_field)
{
    const invalid_create *c = &invalid_creates[_i];
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret, c->body);
    json_t *problem = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(problem, c->field), "%s: errors[] does not name %s: %.300s",
                  c->body, c->field, r.body);
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

START_TEST(invalid_create_names_every_field_at_fault)
{
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret,
                                     "{\"name\":\"\",\"scopes\":[\"admin\",\"nope\"]}");
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "/name"));
    ck_assert(problem_names_field(problem, "/scopes/1"));
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

/* A name is limited in characters, as the contract's maxLength counts them:
 * 200 two-byte characters (400 bytes) are accepted, 201 characters are not,
 * whether of one byte or two. */
static long create_named(const char *name)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"name\":\"%s\",\"scopes\":[\"admin\"]}", name);
    http_response r = http_post_json(&srv, "/v1/api-keys", harness_admin_key.secret, body);
    long status = r.status;
    if (status == 422) {
        json_t *problem = assert_problem(&r, 422);
        ck_assert(problem_names_field(problem, "/name"));
        json_decref(problem);
    }
    http_response_free(&r);
    return status;
}

START_TEST(name_of_200_characters_is_accepted_and_201_is_not)
{
    char name[512];
    memset(name, 'n', 200);
    name[200] = '\0';
    ck_assert_int_eq(create_named(name), 201);
    strcat(name, "n");
    ck_assert_int_eq(create_named(name), 422);

    name[0] = '\0';
    for (int i = 0; i < 200; i++)
        strcat(name, "\xc3\xa8"); /* è: two bytes */
    ck_assert_int_eq(create_named(name), 201);
    strcat(name, "\xc3\xa8");
    ck_assert_int_eq(create_named(name), 422);
}
END_TEST

/* ---- list --------------------------------------------------------------------- */

START_TEST(list_with_limit_1_follows_next_cursor_to_the_end_seeing_every_key_once)
{
    long long created[3];
    for (int k = 0; k < 3; k++) {
        http_response r;
        json_t *key = create_key("{\"name\":\"paged\",\"scopes\":[\"admin\"]}", &r);
        created[k] = json_integer_value(json_object_get(key, "id"));
        json_decref(key);
        http_response_free(&r);
    }
    int pages_one, pages_all;
    json_t *one_by_one = walk_ids(1, &pages_one, NULL);
    json_t *all = walk_ids(200, &pages_all, NULL);

    ck_assert_int_eq(json_array_size(one_by_one), json_array_size(all));
    ck_assert_int_eq(pages_one, (int)json_array_size(all));
    for (size_t i = 1; i < json_array_size(one_by_one); i++)
        ck_assert_msg(json_integer_value(json_array_get(one_by_one, i)) >
                          json_integer_value(json_array_get(one_by_one, i - 1)),
                      "ids out of order or repeated at position %zu", i);
    for (int k = 0; k < 3; k++)
        ck_assert_msg(ids_contain(one_by_one, created[k]), "key %lld never listed", created[k]);
    json_decref(one_by_one);
    json_decref(all);
}
END_TEST

START_TEST(revoked_key_stays_listed_and_shows_revoked_at)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld", key.id);
    http_response del = http_delete(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(del.status, 204);
    http_response_free(&del);

    int pages;
    json_t *ids = walk_ids(200, &pages, NULL);
    ck_assert_msg(ids_contain(ids, key.id), "revoked key %lld is not listed", key.id);
    json_decref(ids);

    http_response one = http_get(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(one.status, 200);
    json_t *doc = http_response_json(&one);
    const char *revoked = json_string_value(json_object_get(doc, "revoked_at"));
    ck_assert_msg(is_rfc3339_utc_millis(revoked), "revoked_at: %.300s", one.body);
    json_decref(doc);
    http_response_free(&one);
}
END_TEST

static const char *const bad_limits[] = {"0",   "201", "x",   "-1",
                                         "1.5", "",    "%00", "99999999999999999999"};

START_TEST(list_with_a_bad_limit_answers_422_naming_limit)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/api-keys?limit=%s", bad_limits[_i]);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    json_t *problem = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(problem, "limit"), "limit=%s: %.300s", bad_limits[_i],
                  r.body);
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

START_TEST(list_accepts_the_maximum_limit_of_200)
{
    http_response r = http_get(&srv, "/v1/api-keys?limit=200", harness_admin_key.secret);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
}
END_TEST

/* "azA" is base64url("k0"), "eDE" of "x1": well-formed base64, not cursors. */
static const char *const bad_cursors[] = {"not-a-cursor!", "azA", "eDE", "%00"};

START_TEST(list_with_a_cursor_it_did_not_issue_answers_422_naming_after)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/api-keys?limit=1&after=%s", bad_cursors[_i]);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    json_t *problem = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(problem, "after"), "after=%s: %.300s", bad_cursors[_i],
                  r.body);
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

/* ---- read by id ------------------------------------------------------------------ */

START_TEST(get_by_id_answers_200_with_the_key)
{
    api_key key;
    ck_assert(api_key_create("customers:read", &key));
    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld", key.id);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(r.status, 200);
    json_t *doc = http_response_json(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "id")), key.id);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "prefix")), key.prefix);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "name")), "t");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(doc, "scopes"), 0)),
                     "customers:read");
    json_decref(doc);
    http_response_free(&r);
}
END_TEST

START_TEST(get_unknown_id_answers_404)
{
    http_response r = http_get(&srv, "/v1/api-keys/987654321", harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

static const char *const not_ids[] = {
    "abc", "12abc", "0", "-1", "1e3", "01", "99999999999999999999999"};

START_TEST(get_with_an_id_that_is_not_a_positive_integer_answers_404)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/api-keys/%s", not_ids[_i]);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

/* ---- revoke ------------------------------------------------------------------------ */

START_TEST(delete_answers_204_with_no_body)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld", key.id);
    http_response r = http_delete(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(r.status, 204);
    ck_assert_int_eq(r.body_len, 0);
    http_response_free(&r);
}
END_TEST

START_TEST(deleted_key_answers_401_at_once_on_the_crmd_that_revoked_it)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    http_response used = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_int_eq(used.status, 200); /* now cached */
    http_response_free(&used);

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

START_TEST(key_revoked_through_another_crmd_stops_working_here_within_the_cache_ttl)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    http_response used = http_get(&srv, "/v1/api-keys?limit=1", key.secret);
    ck_assert_int_eq(used.status, 200); /* cached in srv for up to the TTL */
    http_response_free(&used);

    crmd_server other;
    crmd_fixture_start(&other, server_env);
    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld", key.id);
    http_response del = http_delete(&other, path, harness_admin_key.secret);
    ck_assert_int_eq(del.status, 204);
    http_response_free(&del);
    long long revoked_at = harness_now_ms();

    long long ms = ms_until_unauthorized(&srv, key.secret, REVOCATION_POLL_MS);
    ck_assert_msg(ms >= 0, "the revoked key still worked after %d ms", REVOCATION_POLL_MS);
    /* TTL plus the polling step and a request's own time. */
    ck_assert_msg(harness_now_ms() - revoked_at <= CACHE_TTL_MS + 500,
                  "the revoked key worked for %lld ms with a %d ms cache TTL",
                  harness_now_ms() - revoked_at, CACHE_TTL_MS);
    crmd_fixture_stop(&other);
}
END_TEST

START_TEST(delete_of_a_revoked_key_answers_204_and_keeps_the_first_revoked_at)
{
    api_key key;
    ck_assert(api_key_create("admin", &key));
    char path[64];
    snprintf(path, sizeof path, "/v1/api-keys/%lld", key.id);
    http_response first = http_delete(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(first.status, 204);
    http_response_free(&first);
    http_response a = http_get(&srv, path, harness_admin_key.secret);
    json_t *before = http_response_json(&a);

    harness_sleep_ms(20); /* so a second timestamp would differ */
    http_response second = http_delete(&srv, path, harness_admin_key.secret);
    ck_assert_int_eq(second.status, 204);
    http_response_free(&second);
    http_response b = http_get(&srv, path, harness_admin_key.secret);
    json_t *after = http_response_json(&b);

    ck_assert_ptr_nonnull(json_string_value(json_object_get(before, "revoked_at")));
    ck_assert_str_eq(json_string_value(json_object_get(after, "revoked_at")),
                     json_string_value(json_object_get(before, "revoked_at")));
    json_decref(before);
    json_decref(after);
    http_response_free(&a);
    http_response_free(&b);
}
END_TEST

START_TEST(delete_unknown_id_answers_404)
{
    http_response r = http_delete(&srv, "/v1/api-keys/987654321", harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

Suite *apikeys_suite(void)
{
    Suite *s = suite_create("apikeys");
    TCase *tc = tcase_create("apikeys");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, create_answers_201_with_location_of_the_new_key);
    tcase_add_test(tc, create_returns_the_key_representation);
    tcase_add_test(tc, create_shows_a_58_character_secret_whose_first_14_characters_are_the_prefix);
    tcase_add_test(tc, create_response_may_not_be_cached);
    tcase_add_test(tc, created_key_authenticates_for_api_keys);
    tcase_add_test(tc, secret_is_never_shown_again);
    tcase_add_loop_test(tc, invalid_create_answers_422_naming_the_field, 0,
                        sizeof invalid_creates / sizeof invalid_creates[0]);
    tcase_add_test(tc, invalid_create_names_every_field_at_fault);
    tcase_add_test(tc, name_of_200_characters_is_accepted_and_201_is_not);
    tcase_add_test(tc, list_with_limit_1_follows_next_cursor_to_the_end_seeing_every_key_once);
    tcase_add_test(tc, revoked_key_stays_listed_and_shows_revoked_at);
    tcase_add_loop_test(tc, list_with_a_bad_limit_answers_422_naming_limit, 0,
                        sizeof bad_limits / sizeof bad_limits[0]);
    tcase_add_test(tc, list_accepts_the_maximum_limit_of_200);
    tcase_add_loop_test(tc, list_with_a_cursor_it_did_not_issue_answers_422_naming_after, 0,
                        sizeof bad_cursors / sizeof bad_cursors[0]);
    tcase_add_test(tc, get_by_id_answers_200_with_the_key);
    tcase_add_test(tc, get_unknown_id_answers_404);
    tcase_add_loop_test(tc, get_with_an_id_that_is_not_a_positive_integer_answers_404, 0,
                        sizeof not_ids / sizeof not_ids[0]);
    tcase_add_test(tc, delete_answers_204_with_no_body);
    tcase_add_test(tc, deleted_key_answers_401_at_once_on_the_crmd_that_revoked_it);
    tcase_add_test(tc, key_revoked_through_another_crmd_stops_working_here_within_the_cache_ttl);
    tcase_add_test(tc, delete_of_a_revoked_key_answers_204_and_keeps_the_first_revoked_at);
    tcase_add_test(tc, delete_unknown_id_answers_404);
    suite_add_tcase(s, tc);
    return s;
}

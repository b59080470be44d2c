/*
 * test_customer_merge.c — GET /v1/customers/{id}/duplicates and POST
 * /v1/customers/{id}/merge over real HTTP: reasons and order, a merge that
 * loses nothing (checked through the API and by counting rows), the most
 * restrictive consent, dry runs, every refusal storing nothing, merged ids
 * answering for their survivor (through chains) on GET, PATCH and consents,
 * scopes, and two overlapping merges sent at once.
 */
#include "harness.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
                               const char *body)
{
    http_call call = {.method = method, .path = path, .api_key = key, .body = body};
    return http_send(&srv, &call);
}

static long long id_of(json_t *rep)
{
    return json_integer_value(json_object_get(rep, "id"));
}

/* Sends a request that must answer status; returns the parsed body. */
static json_t *expect_json(const char *method, const char *path, const char *body, long status)
{
    http_response r = send_json(method, path, writer.secret, body);
    ck_assert_msg(r.status == status, "%s %s answered %ld: %.600s", method, path, r.status,
                  r.body);
    json_t *doc = http_response_json(&r);
    ck_assert_ptr_nonnull(doc);
    http_response_free(&r);
    return doc;
}

static long long create(const char *body)
{
    json_t *doc = expect_json("POST", "/v1/customers", body, 201);
    long long id = id_of(doc);
    json_decref(doc);
    return id;
}

static void consent(long long id, const char *status, const char *captured_at)
{
    char path[64], body[256];
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", id);
    snprintf(body, sizeof body,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": \"%s\", "
             "\"source\": \"test\", \"captured_at\": \"%s\"}",
             status, captured_at);
    json_decref(expect_json("POST", path, body, 201));
}

/* POSTs body to /v1/customers/{survivor}/merge. */
static http_response post_merge(long long survivor, const char *body, const char *key)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/merge", survivor);
    return send_json("POST", path, key, body);
}

/* GETs /v1/customers/{id}<tail> and expects 200. */
static json_t *get_path(long long id, const char *tail)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/customers/%lld%s", id, tail);
    return expect_json("GET", path, NULL, 200);
}

/* Everything stored about customers ids (an SQL array text): the rows of
 * customers, external ids, consents and audit, as one text. Caller frees. */
static char *snapshot(const char *ids)
{
    PGconn *c = PQconnectdb(harness_env("CRMD_TEST_DATABASE_URL"));
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    const char *params[] = {ids};
    PGresult *res = PQexecParams(
        c,
        "SELECT concat_ws('|',"
        " (SELECT json_agg(c ORDER BY c.id)::text FROM customers c WHERE c.id = ANY($1::bigint[])),"
        " (SELECT json_agg(x ORDER BY x.source, x.external_id)::text FROM customer_external_ids x"
        "   WHERE x.customer_id = ANY($1::bigint[])),"
        " (SELECT json_agg(k ORDER BY k.id)::text FROM customer_consents k"
        "   WHERE k.customer_id = ANY($1::bigint[])),"
        " (SELECT json_agg(a ORDER BY a.id)::text FROM customer_audit a"
        "   WHERE a.customer_id = ANY($1::bigint[])))",
        1, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    char *s = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return s;
}

static json_t *email_marketing(json_t *consents)
{
    size_t i;
    json_t *c;
    json_array_foreach(consents, i, c) {
        if (strcmp(json_string_value(json_object_get(c, "channel")), "email") == 0 &&
            strcmp(json_string_value(json_object_get(c, "purpose")), "marketing") == 0)
            return c;
    }
    return NULL;
}

/* ---- duplicates ----------------------------------------------------------------------- */

START_TEST(duplicates_list_each_match_with_its_reasons)
{
    char tag[64], body[512], path[64];
    harness_unique(tag, sizeof tag, "apidup");
    char phone[24], postal[24];
    snprintf(phone, sizeof phone, "+44%010u", randombytes_uniform(1000000000));
    snprintf(postal, sizeof postal, "Z%08x%05u", randombytes_random(), randombytes_uniform(99999));
    snprintf(body, sizeof body,
             "{\"first_name\": \"Mario\", \"last_name\": \"Verdi\", \"email\": \"%s@x.org\", "
             "\"phone\": \"%s\", \"address\": {\"postal_code\": \"%s\"}}",
             tag, phone, postal);
    long long me = create(body);
    snprintf(body, sizeof body, "{\"email\": \"%s@X.org\", \"phone\": \"%s\"}", tag, phone);
    long long both = create(body);
    snprintf(body, sizeof body,
             "{\"first_name\": \"Mario\", \"last_name\": \"Verdi\", "
             "\"address\": {\"postal_code\": \"%s\"}}",
             postal);
    long long name = create(body);

    json_t *doc = get_path(me, "/duplicates");
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "customer_id")), me);
    json_t *data = json_object_get(doc, "data");
    ck_assert_int_eq(json_array_size(data), 2);
    json_t *first = json_array_get(data, 0), *second = json_array_get(data, 1);
    ck_assert_int_eq(id_of(json_object_get(first, "customer")), both);
    ck_assert_int_eq(id_of(json_object_get(second, "customer")), name);
    char *r1 = json_dumps(json_object_get(first, "reasons"), JSON_COMPACT);
    char *r2 = json_dumps(json_object_get(second, "reasons"), JSON_COMPACT);
    ck_assert_str_eq(r1, "[\"email\",\"phone\"]");
    ck_assert_str_eq(r2, "[\"name_and_postal_code\"]");
    free(r1);
    free(r2);
    json_decref(doc);

    snprintf(path, sizeof path, "/v1/customers/%lld/duplicates", 999999999999LL);
    http_response r = send_json("GET", path, reader.secret, NULL);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

/* ---- merge ------------------------------------------------------------------------------- */

START_TEST(a_merge_answers_the_survivor_and_loses_nothing)
{
    char s[64], body[512];
    harness_unique(s, sizeof s, "apimerge");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Keep\", \"tags\": [\"a\"], \"attributes\": {\"k\": 1}, "
             "\"external_ids\": [{\"source\": \"%s\", \"id\": \"1\"}]}",
             s);
    long long a = create(body);
    snprintf(body, sizeof body,
             "{\"first_name\": \"Lose\", \"last_name\": \"Filled\", \"phone\": \"+39 06 1234567\", "
             "\"tags\": [\"b\"], \"attributes\": {\"k\": 2, \"j\": 3}, "
             "\"external_ids\": [{\"source\": \"%s\", \"id\": \"2\"}, "
             "{\"source\": \"%s\", \"id\": \"3\"}]}",
             s, s);
    long long b = create(body);
    consent(a, "granted", "2026-01-01T00:00:00Z");
    consent(b, "granted", "2026-01-02T00:00:00Z");
    consent(b, "granted", "2026-01-03T00:00:00Z");

    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", b);
    http_response r = post_merge(a, body, writer.secret);
    ck_assert_msg(r.status == 200, "merge answered %ld: %.600s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"2\"");
    json_t *rep = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(id_of(rep), a);
    ck_assert_str_eq(json_string_value(json_object_get(rep, "first_name")), "Keep");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "last_name")), "Filled");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "phone")), "+39 06 1234567");
    ck_assert_int_eq(json_array_size(json_object_get(rep, "tags")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(rep, "attributes"), "k")),
                     1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(rep, "attributes"), "j")),
                     3);
    ck_assert_int_eq(json_array_size(json_object_get(rep, "external_ids")), 3);
    ck_assert_int_eq(json_array_size(json_object_get(rep, "consents")), 1);
    json_decref(rep);

    /* The consent history has all three decisions, on the survivor. */
    json_t *consents = get_path(b, "/consents");
    ck_assert_int_eq(json_integer_value(json_object_get(consents, "customer_id")), a);
    ck_assert_int_eq(json_array_size(json_object_get(consents, "history")), 3);
    json_decref(consents);
    /* The merged id reads as the survivor; both audit trails say 'merge'. */
    json_t *alias = get_path(b, "");
    ck_assert_int_eq(id_of(alias), a);
    json_decref(alias);
    long long both[] = {a, b};
    for (int i = 0; i < 2; i++) {
        json_t *audit = get_path(both[i], "/audit");
        json_t *last = json_array_get(json_object_get(audit, "data"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(last, "action")), "merge");
        json_decref(audit);
    }
}
END_TEST

START_TEST(a_merged_customers_later_grant_does_not_override_a_revocation)
{
    long long a = create("{\"first_name\": \"No\"}");
    long long b = create("{\"first_name\": \"Yes\"}");
    consent(a, "revoked", "2026-01-01T00:00:00Z");
    consent(b, "granted", "2026-06-01T00:00:00Z");
    char body[64];
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", b);
    http_response r = post_merge(a, body, writer.secret);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    json_t *consents = get_path(a, "/consents");
    json_t *cur = email_marketing(json_object_get(consents, "current"));
    ck_assert_ptr_nonnull(cur);
    ck_assert_str_eq(json_string_value(json_object_get(cur, "status")), "revoked");
    ck_assert_str_eq(json_string_value(json_object_get(cur, "source")), "merge");
    ck_assert_int_eq(json_array_size(json_object_get(consents, "history")), 3);
    json_decref(consents);
}
END_TEST

START_TEST(a_dry_run_answers_the_result_and_changes_nothing)
{
    char s[64], body[256];
    harness_unique(s, sizeof s, "apidry");
    snprintf(body, sizeof body,
             "{\"first_name\": \"D\", \"external_ids\": [{\"source\": \"%s\", \"id\": \"1\"}]}",
             s);
    long long a = create(body);
    snprintf(body, sizeof body,
             "{\"last_name\": \"R\", \"external_ids\": [{\"source\": \"%s\", \"id\": \"2\"}]}", s);
    long long b = create(body);
    consent(a, "revoked", "2026-01-01T00:00:00Z");
    consent(b, "granted", "2026-02-01T00:00:00Z");
    char parties[64];
    snprintf(parties, sizeof parties, "{%lld,%lld}", a, b);
    char *before = snapshot(parties);
    json_t *rep_a = get_path(a, "?expand=external_ids");
    json_t *rep_b = get_path(b, "?expand=external_ids");

    snprintf(body, sizeof body, "{\"merge_ids\": [%lld], \"dry_run\": true}", b);
    http_response r = post_merge(a, body, writer.secret);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(http_response_header(&r, "ETag"));
    json_t *dry = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(dry, "version")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(dry, "last_name")), "R");
    ck_assert_int_eq(json_array_size(json_object_get(dry, "external_ids")), 2);
    ck_assert_str_eq(
        json_string_value(json_object_get(email_marketing(json_object_get(dry, "consents")),
                                          "status")),
        "revoked");

    char *after = snapshot(parties);
    ck_assert_str_eq(before, after);
    json_t *again_a = get_path(a, "?expand=external_ids");
    json_t *again_b = get_path(b, "?expand=external_ids");
    ck_assert(json_equal(rep_a, again_a));
    ck_assert(json_equal(rep_b, again_b));
    free(before);
    free(after);
    json_decref(dry);
    json_decref(rep_a);
    json_decref(rep_b);
    json_decref(again_a);
    json_decref(again_b);
}
END_TEST

/* Posts body to survivor's merge and expects status naming field (or no
 * field), with nothing about parties changed. */
static void expect_refused(long long survivor, const char *body, const char *key,
                           const char *parties, long status, const char *field)
{
    char *before = snapshot(parties);
    http_response r = post_merge(survivor, body, key);
    json_t *p = assert_problem(&r, status);
    if (field != NULL)
        ck_assert_msg(problem_names_field(p, field), "%s: no error for %s in %.400s", body, field,
                      r.body);
    json_decref(p);
    http_response_free(&r);
    char *after = snapshot(parties);
    ck_assert_msg(strcmp(before, after) == 0, "%s changed something", body);
    free(before);
    free(after);
}

START_TEST(every_refused_merge_answers_its_error_and_stores_nothing)
{
    long long a = create("{\"first_name\": \"A\"}");
    long long b = create("{\"first_name\": \"B\"}");
    long long gone = create("{\"first_name\": \"Gone\"}");
    long long m = create("{\"first_name\": \"M\"}");
    char path[64], body[256], parties[128];
    snprintf(path, sizeof path, "/v1/customers/%lld", gone);
    http_response r = send_json("DELETE", path, writer.secret, NULL);
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", m);
    r = post_merge(b, body, writer.secret);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    snprintf(parties, sizeof parties, "{%lld,%lld,%lld,%lld}", a, b, gone, m);

    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, %lld]}", b, a);
    expect_refused(a, body, writer.secret, parties, 422, "/merge_ids/1");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, %lld]}", b, b);
    expect_refused(a, body, writer.secret, parties, 422, "/merge_ids/1");
    snprintf(body, sizeof body, "{\"merge_ids\": [999999999999, %lld]}", b);
    expect_refused(a, body, writer.secret, parties, 422, "/merge_ids/0");
    expect_refused(a, "{\"merge_ids\": []}", writer.secret, parties, 422, "/merge_ids");
    expect_refused(a, "{\"merge_ids\": [1], \"dry_run\": \"yes\"}", writer.secret, parties, 422,
                   "/dry_run");
    expect_refused(a, "{\"merge_ids\": [1", writer.secret, parties, 400, NULL);
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, %lld]}", b, gone);
    expect_refused(a, body, writer.secret, parties, 409, "/merge_ids/1");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", m);
    expect_refused(a, body, writer.secret, parties, 409, "/merge_ids/0");
    expect_refused(b, body, writer.secret, parties, 409, "/merge_ids/0"); /* already done */
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", a);
    expect_refused(gone, body, writer.secret, parties, 409, "id");
    expect_refused(m, body, writer.secret, parties, 409, "id");
    expect_refused(999999999999LL, body, writer.secret, parties, 404, NULL);
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", b);
    expect_refused(a, body, reader.secret, parties, 403, NULL);
    expect_refused(a, body, NULL, parties, 401, NULL);
}
END_TEST

START_TEST(a_merged_id_answers_for_its_survivor_through_chains)
{
    long long a = create("{\"first_name\": \"One\"}");
    long long b = create("{\"first_name\": \"Two\"}");
    long long c = create("{\"first_name\": \"Three\"}");
    char body[64];
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", a);
    http_response r = post_merge(b, body, writer.secret);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", b);
    r = post_merge(c, body, writer.secret);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);

    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld", a);
    json_t *patched = expect_json("PATCH", path, "{\"lifecycle_stage\": \"customer\"}", 200);
    ck_assert_int_eq(id_of(patched), c);
    json_decref(patched);
    consent(a, "granted", "2026-01-01T00:00:00Z");
    json_t *consents = get_path(c, "/consents");
    ck_assert_int_eq(json_array_size(json_object_get(consents, "history")), 1);
    json_decref(consents);
    json_t *got = get_path(a, "");
    ck_assert_int_eq(id_of(got), c);
    ck_assert_str_eq(json_string_value(json_object_get(got, "lifecycle_stage")), "customer");
    json_decref(got);
}
END_TEST

/* ---- two merges at once -------------------------------------------------------------------- */

typedef struct race {
    long long survivor;
    char body[96];
    long status;
} race;

static void *race_merge(void *arg)
{
    race *r = arg;
    http_response resp = post_merge(r->survivor, r->body, writer.secret);
    r->status = resp.status;
    http_response_free(&resp);
    return NULL;
}

START_TEST(two_overlapping_merges_at_once_one_wins_and_nothing_is_lost)
{
    for (int round = 0; round < 5; round++) {
        char s[64], body[256];
        harness_unique(s, sizeof s, "apirace");
        long long id[5];
        for (int i = 0; i < 5; i++) {
            snprintf(body, sizeof body,
                     "{\"external_ids\": [{\"source\": \"%s\", \"id\": \"%d\"}]}", s, i);
            id[i] = create(body);
        }
        race r1 = {.survivor = id[0]}, r2 = {.survivor = id[4]};
        snprintf(r1.body, sizeof r1.body, "{\"merge_ids\": [%lld, %lld]}", id[3], id[2]);
        snprintf(r2.body, sizeof r2.body, "{\"merge_ids\": [%lld, %lld]}", id[1], id[3]);
        pthread_t t1, t2;
        pthread_create(&t1, NULL, race_merge, &r1);
        pthread_create(&t2, NULL, race_merge, &r2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        ck_assert_msg((r1.status == 200 && r2.status == 409) ||
                          (r1.status == 409 && r2.status == 200),
                      "round %d: %ld and %ld", round, r1.status, r2.status);
        /* Every external id still names an active customer. */
        for (int i = 0; i < 5; i++) {
            char path[160];
            snprintf(path, sizeof path, "/v1/customers/by-external-id/%s/%d", s, i);
            json_decref(expect_json("GET", path, NULL, 200));
        }
    }
}
END_TEST

Suite *customer_merge_suite(void)
{
    Suite *s = suite_create("customer_merge");
    TCase *tc = tcase_create("merge");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, duplicates_list_each_match_with_its_reasons);
    tcase_add_test(tc, a_merge_answers_the_survivor_and_loses_nothing);
    tcase_add_test(tc, a_merged_customers_later_grant_does_not_override_a_revocation);
    tcase_add_test(tc, a_dry_run_answers_the_result_and_changes_nothing);
    tcase_add_test(tc, every_refused_merge_answers_its_error_and_stores_nothing);
    tcase_add_test(tc, a_merged_id_answers_for_its_survivor_through_chains);
    tcase_add_test(tc, two_overlapping_merges_at_once_one_wins_and_nothing_is_lost);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_touchpoints.c — /v1/touchpoints and /v1/customers/{id}/touchpoints
 * over HTTP: one touchpoint (201, then 200 for the same event), batches
 * answered item by item, the limits (413, 422 for a body that is not an
 * array), customers made by create_customer, the timeline with its filters
 * and cursor, the scopes, and a crmd killed in the middle of a batch that is
 * then sent again: every event ends up stored exactly once.
 */
#include "harness.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CRM_TEST_BATCH_MAX 10000 /* the documented limit of a batch */

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

static long long new_customer(void)
{
    return harness_sql_number(db, "INSERT INTO customers (first_name) VALUES ('tp') RETURNING id",
                              NULL);
}

static long long events_of(const char *source)
{
    return harness_sql_number(db, "SELECT count(*) FROM touchpoints WHERE source = $1", source);
}

static long long id_of(json_t *doc)
{
    return json_integer_value(json_object_get(doc, "id"));
}

/* A touchpoint body for customer (by id) from source with event_id. */
static void body_for(char *out, size_t size, long long customer, const char *source,
                     const char *event_id, const char *occurred_at)
{
    snprintf(out, size,
             "{\"customer_id\": %lld, \"channel\": \"store\", \"type\": \"purchase\", "
             "\"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\", "
             "\"event_id\": \"%s\", \"amount\": 19.99, \"currency\": \"EUR\", "
             "\"items\": [{\"sku\": \"A-1\", \"name\": \"Mug\", \"quantity\": 2, "
             "\"unit_price\": 9.995}], \"properties\": {\"store\": \"Milano 3\"}}",
             customer, occurred_at, source, event_id);
}

/* ---- one touchpoint ------------------------------------------------------------ */

START_TEST(one_touchpoint_is_created_then_acknowledged_as_duplicate)
{
    char source[48], body[1024];
    harness_unique(source, sizeof source, "pos");
    long long customer = new_customer();
    body_for(body, sizeof body, customer, source, "e-1", "2026-11-20T10:00:00Z");
    http_response r = http_post_json(&srv, "/v1/touchpoints", harness_admin_key.secret, body);
    ck_assert_msg(r.status == 201, "answered %ld: %.300s", r.status, r.body);
    json_t *made = http_response_json(&r);
    char location[64];
    snprintf(location, sizeof location, "/v1/touchpoints/%lld", id_of(made));
    ck_assert_str_eq(http_response_header(&r, "Location"), location);
    ck_assert_int_eq(json_integer_value(json_object_get(made, "customer_id")), customer);
    ck_assert_str_eq(json_string_value(json_object_get(made, "occurred_at")),
                     "2026-11-20T10:00:00.000Z");
    ck_assert(json_real_value(json_object_get(made, "amount")) == 19.99);
    ck_assert_str_eq(json_string_value(json_object_get(made, "currency")), "EUR");
    http_response_free(&r);

    r = http_post_json(&srv, "/v1/touchpoints", harness_admin_key.secret, body);
    ck_assert_msg(r.status == 200, "again: %ld: %.300s", r.status, r.body);
    json_t *again = http_response_json(&r);
    ck_assert_int_eq(id_of(again), id_of(made));
    http_response_free(&r);
    ck_assert_int_eq(events_of(source), 1);

    r = http_get(&srv, location, harness_admin_key.secret);
    ck_assert_msg(r.status == 200, "get: %ld", r.status);
    json_t *got = http_response_json(&r);
    ck_assert(json_equal(got, made));
    json_decref(got);
    json_decref(again);
    json_decref(made);
    http_response_free(&r);

    r = http_get(&srv, "/v1/touchpoints/999999999999", harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

START_TEST(an_invalid_touchpoint_gets_422_naming_each_field_and_stores_nothing)
{
    char source[48], body[1024];
    harness_unique(source, sizeof source, "bad");
    snprintf(body, sizeof body,
             "{\"channel\": \"fax\", \"type\": \"purchase\", \"direction\": \"sideways\", "
             "\"occurred_at\": \"2999-01-01T00:00:00Z\", \"source\": \"%s\", \"event_id\": \"x\", "
             "\"amount\": 5, \"feedback\": {\"score\": 3}, \"colour\": \"red\"}",
             source);
    http_response r = http_post_json(&srv, "/v1/touchpoints", harness_admin_key.secret, body);
    json_t *problem = assert_problem(&r, 422);
    const char *fields[] = {"/customer_id", "/channel",  "/direction", "/occurred_at",
                            "/currency",    "/feedback", "/colour"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        ck_assert_msg(problem_names_field(problem, fields[i]), "%s not named: %s", fields[i],
                      r.body);
    json_decref(problem);
    http_response_free(&r);

    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"visit\", "
             "\"direction\": \"inbound\", \"occurred_at\": \"yesterday\", \"source\": \"%s\", "
             "\"event_id\": \"y\", \"amount\": 1, \"currency\": \"EURO\"}",
             new_customer(), source);
    r = http_post_json(&srv, "/v1/touchpoints", harness_admin_key.secret, body);
    problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "/occurred_at"));
    ck_assert(problem_names_field(problem, "/currency"));
    json_decref(problem);
    http_response_free(&r);
    ck_assert_int_eq(events_of(source), 0);
}
END_TEST

/* Found by tests/fuzz/fuzz_touchpoint_item: an item that is not an object
 * was rejected without an error code, so a single touchpoint sent as an
 * array was answered 200 with a problem body. */
START_TEST(a_touchpoint_that_is_not_an_object_gets_422)
{
    static const char *const bodies[] = {"[]", "[{\"channel\": \"web\"}]"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        http_response r =
            http_post_json(&srv, "/v1/touchpoints", harness_admin_key.secret, bodies[i]);
        json_t *problem = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(problem, ""), "%s: %s", bodies[i], r.body);
        json_decref(problem);
        http_response_free(&r);
    }
}
END_TEST

/* ---- batches ---------------------------------------------------------------- */

START_TEST(a_batch_is_answered_item_by_item_and_stores_the_valid_ones)
{
    char source[48], ext[48], email[96], item[1024];
    harness_unique(source, sizeof source, "batch");
    harness_unique(ext, sizeof ext, "ext");
    snprintf(email, sizeof email, "%s@Example.COM", ext);
    long long customer = new_customer();
    size_t cap = 16384, len = 0;
    char *body = malloc(cap);
    len += (size_t)snprintf(body + len, cap - len, "[");
    body_for(item, sizeof item, customer, source, "b-1", "2026-11-20T10:00:00Z");
    len += (size_t)snprintf(body + len, cap - len, "%s,", item); /* 0: created */
    len += (size_t)snprintf(body + len, cap - len, "%s,", item); /* 1: duplicate of 0 */
    len += (size_t)snprintf(body + len, cap - len, "42,");       /* 2: not an object */
    len += (size_t)snprintf(body + len, cap - len,               /* 3: unknown customer */
                            "{\"customer_id\": 999999999999, \"channel\": \"web\", \"type\": "
                            "\"visit\", \"direction\": \"inbound\", \"occurred_at\": "
                            "\"2026-11-20T10:00:00Z\", \"source\": \"%s\", \"event_id\": \"b-3\"},",
                            source);
    len += (size_t)snprintf(body + len, cap - len, /* 4: a new customer by external id */
                            "{\"customer_external_id\": {\"source\": \"partner\", \"id\": \"%s\"}, "
                            "\"create_customer\": true, \"channel\": \"partner\", \"type\": "
                            "\"signup\", \"direction\": \"inbound\", \"occurred_at\": "
                            "\"2026-11-19T08:00:00+01:00\", \"source\": \"%s\", \"event_id\": "
                            "\"b-4\"},",
                            ext, source);
    len += (size_t)snprintf(body + len, cap - len, /* 5: the same new customer: one is made */
                            "{\"customer_external_id\": {\"source\": \"partner\", \"id\": \"%s\"}, "
                            "\"create_customer\": true, \"channel\": \"partner\", \"type\": "
                            "\"visit\", \"direction\": \"inbound\", \"occurred_at\": "
                            "\"2026-11-19T09:00:00Z\", \"source\": \"%s\", \"event_id\": \"b-5\"},",
                            ext, source);
    len += (size_t)snprintf(body + len, cap - len, /* 6: unknown e-mail without create: rejected */
                            "{\"customer_email\": \"%s\", \"channel\": \"email\", \"type\": "
                            "\"email_opened\", \"direction\": \"inbound\", \"occurred_at\": "
                            "\"2026-11-19T09:00:00Z\", \"source\": \"%s\", \"event_id\": \"b-6\"},",
                            email, source);
    len +=
        (size_t)snprintf(body + len, cap - len, /* 7: feedback */
                         "{\"customer_id\": %lld, \"channel\": \"call_centre\", \"type\": "
                         "\"feedback\", \"direction\": \"inbound\", \"occurred_at\": "
                         "\"2026-11-18T09:00:00Z\", \"source\": \"%s\", \"event_id\": \"b-7\", "
                         "\"feedback\": {\"score\": 9, \"scale\": \"nps\", \"kind\": \"praise\", "
                         "\"text\": \"Très bien 👍\"}}]",
                         customer, source);
    http_response r = http_post_json(&srv, "/v1/touchpoints/batch", harness_admin_key.secret, body);
    free(body);
    ck_assert_msg(r.status == 200, "answered %ld: %.400s", r.status, r.body);
    json_t *report = http_response_json(&r);
    const char *expected[] = {"created", "duplicate", "rejected", "rejected",
                              "created", "created",   "rejected", "created"};
    json_t *items = json_object_get(report, "items");
    ck_assert_int_eq(json_array_size(items), 8);
    for (size_t i = 0; i < 8; i++) {
        json_t *it = json_array_get(items, i);
        ck_assert_int_eq(json_integer_value(json_object_get(it, "index")), (long long)i);
        ck_assert_msg(strcmp(json_string_value(json_object_get(it, "status")), expected[i]) == 0,
                      "item %zu: %s", i, r.body);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(report, "created")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(report, "duplicates")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(report, "rejected")), 3);
    ck_assert_int_eq(id_of(json_array_get(items, 1)), id_of(json_array_get(items, 0)));
    json_t *errors = json_object_get(json_array_get(items, 3), "errors");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(errors, 0), "field")),
                     "/customer_id");
    ck_assert_int_eq(events_of(source), 4);
    /* Items 4 and 5 made one customer, who now holds the external id. */
    char path[160];
    snprintf(path, sizeof path, "/v1/customers/by-external-id/partner/%s", ext);
    http_response c = http_get(&srv, path, harness_admin_key.secret);
    ck_assert_msg(c.status == 200, "%s: %ld", path, c.status);
    http_response_free(&c);
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(DISTINCT customer_id) FROM touchpoints WHERE "
                                        "source = $1 AND event_id IN ('b-4', 'b-5')",
                                        source),
                     1);
    json_decref(report);
    http_response_free(&r);
}
END_TEST

START_TEST(a_batch_that_is_not_an_array_or_too_long_is_refused)
{
    http_response r =
        http_post_json(&srv, "/v1/touchpoints/batch", harness_admin_key.secret, "{\"items\": []}");
    json_decref(assert_problem(&r, 422));
    http_response_free(&r);

    size_t n = CRM_TEST_BATCH_MAX + 1, cap = n * 3 + 8, len = 0;
    char *body = malloc(cap);
    body[len++] = '[';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, cap - len, i ? ",{}" : "{}");
    body[len++] = ']';
    body[len] = '\0';
    r = http_post_json(&srv, "/v1/touchpoints/batch", harness_admin_key.secret, body);
    free(body);
    json_decref(assert_problem(&r, 413));
    http_response_free(&r);
}
END_TEST

/* ---- the timeline ---------------------------------------------------------------- */

START_TEST(the_timeline_is_newest_first_filtered_and_paged)
{
    char source[48], body[1024], path[256];
    harness_unique(source, sizeof source, "tl");
    long long customer = new_customer();
    /* Out of order, as a sales app syncs a week at once. */
    const char *days[] = {"2026-11-03", "2026-11-01", "2026-11-05", "2026-11-02", "2026-11-04"};
    for (int i = 0; i < 5; i++) {
        char at[40], event[16];
        snprintf(at, sizeof at, "%sT12:00:00Z", days[i]);
        snprintf(event, sizeof event, "t-%d", i);
        body_for(body, sizeof body, customer, source, event, at);
        http_response r = http_post_json(&srv, "/v1/touchpoints", harness_admin_key.secret, body);
        ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
        http_response_free(&r);
    }
    const char *want[] = {"2026-11-05", "2026-11-04", "2026-11-03", "2026-11-02", "2026-11-01"};
    char *after = NULL;
    int seen = 0;
    for (int page = 0; page < 3; page++) {
        snprintf(path, sizeof path, "/v1/customers/%lld/touchpoints?limit=2&channel=store%s%s",
                 customer, after ? "&after=" : "", after ? after : "");
        free(after);
        after = NULL;
        http_response r = http_get(&srv, path, harness_admin_key.secret);
        ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
        json_t *doc = http_response_json(&r), *tp;
        size_t i;
        json_array_foreach(json_object_get(doc, "data"), i, tp)
        {
            ck_assert(strncmp(json_string_value(json_object_get(tp, "occurred_at")), want[seen],
                              10) == 0);
            seen++;
        }
        json_t *next = json_object_get(doc, "next_cursor");
        if (json_is_string(next))
            after = strdup(json_string_value(next));
        json_decref(doc);
        http_response_free(&r);
    }
    ck_assert_int_eq(seen, 5);
    ck_assert_ptr_null(after);

    snprintf(path, sizeof path,
             "/v1/customers/%lld/touchpoints?occurred_after=2026-11-02T00:00:00Z"
             "&occurred_before=2026-11-04T00:00:00Z",
             customer);
    http_response r = http_get(&srv, path, harness_admin_key.secret);
    json_t *doc = http_response_json(&r);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "data")), 2);
    json_decref(doc);
    http_response_free(&r);

    snprintf(path, sizeof path, "/v1/customers/%lld/touchpoints?channel=web", customer);
    r = http_get(&srv, path, harness_admin_key.secret);
    doc = http_response_json(&r);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "data")), 0);
    json_decref(doc);
    http_response_free(&r);

    snprintf(path, sizeof path, "/v1/customers/%lld/touchpoints?channel=fax&after=zz", customer);
    r = http_get(&srv, path, harness_admin_key.secret);
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "channel"));
    ck_assert(problem_names_field(problem, "after"));
    json_decref(problem);
    http_response_free(&r);

    r = http_get(&srv, "/v1/customers/999999999999/touchpoints", harness_admin_key.secret);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
}
END_TEST

START_TEST(touchpoints_need_their_scopes)
{
    api_key reader;
    ck_assert(api_key_create("customers:read", &reader));
    char body[1024];
    body_for(body, sizeof body, new_customer(), "scope", "s-1", "2026-11-20T10:00:00Z");
    http_response r = http_post_json(&srv, "/v1/touchpoints", reader.secret, body);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    r = http_get(&srv, "/v1/touchpoints/1", reader.secret);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
}
END_TEST

/* ---- a crmd killed in the middle of a batch ------------------------------------- */

typedef struct {
    const char *body;
    long status;
} post_job;

static void *post_batch(void *arg)
{
    post_job *job = arg;
    http_response r =
        http_post_json(&srv, "/v1/touchpoints/batch", harness_admin_key.secret, job->body);
    job->status = r.status;
    http_response_free(&r);
    return NULL;
}

START_TEST(a_batch_sent_again_after_crmd_was_killed_midway_is_stored_once)
{
    char source[48];
    harness_unique(source, sizeof source, "kill");
    long long customer = new_customer();
    size_t n = 5000, cap = n * 400, len = 0;
    char *body = malloc(cap), item[1024];
    body[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        char event[24];
        snprintf(event, sizeof event, "k-%zu", i);
        body_for(item, sizeof item, customer, source, event, "2026-11-20T10:00:00Z");
        len += (size_t)snprintf(body + len, cap - len, "%s%s", i ? "," : "", item);
    }
    snprintf(body + len, cap - len, "]");

    post_job job = {.body = body, .status = 0};
    pthread_t t;
    pthread_create(&t, NULL, post_batch, &job);
    /* Kill crmd while the batch's transaction is open in PostgreSQL. */
    bool seen = false;
    for (int i = 0; i < 5000 && !seen; i++) {
        seen = harness_sql_number(db,
                                  "SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' AND "
                                  "backend_xid IS NOT NULL AND query LIKE '%touchpoint%'",
                                  NULL) > 0;
        if (!seen)
            harness_sleep_ms(1);
    }
    crmd_kill(&srv);
    pthread_join(t, NULL);
    ck_assert_msg(seen, "the batch never reached the database");
    ck_assert_int_ne(job.status, 200); /* the client saw the connection drop */
    /* Whatever the killed crmd's connections held is rolled back. */
    for (int i = 0; i < 2000; i++) {
        if (harness_sql_number(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                "AND query LIKE '%touchpoint%'",
                NULL) == 0)
            break;
        harness_sleep_ms(5);
    }

    crmd_fixture_start(&srv, NULL);
    pthread_create(&t, NULL, post_batch, &job);
    pthread_join(t, NULL);
    ck_assert_int_eq(job.status, 200);
    ck_assert_int_eq(events_of(source), (long long)n);
    ck_assert_int_eq(
        harness_sql_number(db, "SELECT count(DISTINCT event_id) FROM touchpoints WHERE source = $1",
                           source),
        (long long)n);
    free(body);
}
END_TEST

Suite *touchpoints_suite(void)
{
    Suite *s = suite_create("touchpoints");
    TCase *tc = tcase_create("http");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, one_touchpoint_is_created_then_acknowledged_as_duplicate);
    tcase_add_test(tc, an_invalid_touchpoint_gets_422_naming_each_field_and_stores_nothing);
    tcase_add_test(tc, a_touchpoint_that_is_not_an_object_gets_422);
    tcase_add_test(tc, a_batch_is_answered_item_by_item_and_stores_the_valid_ones);
    tcase_add_test(tc, a_batch_that_is_not_an_array_or_too_long_is_refused);
    tcase_add_test(tc, the_timeline_is_newest_first_filtered_and_paged);
    tcase_add_test(tc, touchpoints_need_their_scopes);
    tcase_add_test(tc, a_batch_sent_again_after_crmd_was_killed_midway_is_stored_once);
    suite_add_tcase(s, tc);
    return s;
}

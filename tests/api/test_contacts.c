/*
 * test_contacts.c — contact policies (/v1/contact-policies) and the
 * contact decision (POST /v1/customers/{id}/contacts) over real HTTP:
 * policy CRUD with If-Match and the config stamp, bad input that changes
 * nothing, caps under concurrent requests (two, then twelve at once),
 * caps that count touchpoints posted through POST /v1/touchpoints, consent
 * revoked between two decisions, quiet hours around now, replays of one
 * event, the rule version each decision records, and the segments that
 * count the offer code of a contact's touchpoint.
 *
 * Policies apply to every customer: each test starts with none live (the
 * setup soft-deletes what earlier tests left) and its customers are its own.
 * Treatment rules are inserted with SQL (their API is not this suite's).
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static crmd_server srv;
static PGconn *db;
static api_key contacter, rules;

static void exec_sql(const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
}

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (contacter.id == 0)
        ck_assert(api_key_create("touchpoints:write", &contacter));
    if (rules.id == 0)
        ck_assert(api_key_create("rules:read,rules:write", &rules));
    db = harness_db_connect();
    exec_sql("UPDATE contact_policies SET deleted_at = now() WHERE deleted_at IS NULL");
}

static void teardown(void)
{
    exec_sql("UPDATE contact_policies SET deleted_at = now() WHERE deleted_at IS NULL");
    PQfinish(db);
    crmd_fixture_stop(&srv);
}

/* ---- helpers ------------------------------------------------------------------ */

static http_response send_json(const char *method, const char *path, const char *key,
                               const char *body, const char *if_match)
{
    char header[128];
    const char *headers[] = {header, NULL};
    snprintf(header, sizeof header, "If-Match: %s", if_match ? if_match : "");
    http_call call = {.method = method,
                      .path = path,
                      .api_key = key,
                      .body = body,
                      .content_type =
                          strcmp(method, "PATCH") == 0 ? "application/merge-patch+json" : NULL,
                      .headers = if_match ? headers : NULL};
    return http_send(&srv, &call);
}

static json_t *expect(const char *method, const char *path, const char *key, const char *body,
                      long status)
{
    http_response r = send_json(method, path, key, body, NULL);
    ck_assert_msg(r.status == status, "%s %s answered %ld, not %ld: %.600s", method, path, r.status,
                  status, r.body);
    json_t *doc = r.body_len ? http_response_json(&r) : NULL;
    http_response_free(&r);
    return doc;
}

static long long id_of(const json_t *doc)
{
    return json_integer_value(json_object_get(doc, "id"));
}

/* A customer of its own with a decision granted (or not) for email/marketing. */
static long long new_customer(bool granted)
{
    json_t *doc = expect("POST", "/v1/customers", harness_admin_key.secret,
                         "{\"first_name\": \"Contact\"}", 201);
    long long id = id_of(doc);
    json_decref(doc);
    if (granted) {
        char path[64];
        snprintf(path, sizeof path, "/v1/customers/%lld/consents", id);
        json_decref(expect("POST", path, harness_admin_key.secret,
                           "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": "
                           "\"granted\", \"source\": \"test\"}",
                           201));
    }
    return id;
}

static long long new_policy(const char *body)
{
    json_t *doc = expect("POST", "/v1/contact-policies", rules.secret, body, 201);
    long long id = id_of(doc);
    json_decref(doc);
    return id;
}

/* POST /v1/customers/{customer}/contacts with body; the response. */
static http_response contact(long long customer, const char *body)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/contacts", customer);
    return send_json("POST", path, contacter.secret, body, NULL);
}

/* A marketing e-mail contact with a fresh event id; the status, and the
 * decision (from the body or the problem's "decision") in *decision when
 * not NULL. */
static long email_contact(long long customer, const char *extra, json_t **decision)
{
    char event[96], body[512];
    harness_unique(event, sizeof event, "contact");
    snprintf(body, sizeof body,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"api-test\","
             " \"event_id\": \"%s\"%s}",
             event, extra ? extra : "");
    http_response r = contact(customer, body);
    long status = r.status;
    ck_assert_msg(status == 201 || status == 409, "HTTP %ld: %.500s", status, r.body);
    json_t *doc = http_response_json(&r);
    if (status == 409) {
        json_t *problem = assert_problem(&r, 409);
        json_decref(doc);
        doc = json_incref(json_object_get(problem, "decision"));
        json_decref(problem);
        ck_assert_ptr_nonnull(doc);
        ck_assert(json_is_false(json_object_get(doc, "allowed")));
    } else {
        ck_assert(json_is_true(json_object_get(doc, "allowed")));
    }
    http_response_free(&r);
    if (decision != NULL)
        *decision = doc;
    else
        json_decref(doc);
    return status;
}

static const char *first_reason(const json_t *decision)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(decision, "reasons"), 0), "code"));
}

static long long count_for(const char *sql, long long customer)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", customer);
    return harness_sql_number(db, sql, id);
}

static long long stamp(void)
{
    return harness_sql_number(db, "SELECT stamp FROM treatment_config", NULL);
}

/* ---- policies ---------------------------------------------------------------- */

START_TEST(a_policy_is_created_read_listed_patched_and_deleted)
{
    long long before = stamp();
    http_response r = send_json("POST", "/v1/contact-policies", rules.secret,
                                "{\"name\": \"crud\", \"channel\": \"sms\", \"cap\":"
                                " {\"max_contacts\": 3, \"period_hours\": 24}}",
                                NULL);
    ck_assert_int_eq(r.status, 201);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    json_t *doc = http_response_json(&r);
    long long id = id_of(doc);
    char location[64];
    snprintf(location, sizeof location, "/v1/contact-policies/%lld", id);
    ck_assert_str_eq(http_response_header(&r, "Location"), location);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "channel")), "sms");
    ck_assert(json_is_null(json_object_get(doc, "purpose")));
    ck_assert(json_is_null(json_object_get(doc, "quiet_hours")));
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(doc, "cap"), "max_contacts")), 3);
    json_decref(doc);
    http_response_free(&r);
    ck_assert_int_eq(stamp(), before + 1);

    doc = expect("GET", location, rules.secret, NULL, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), 1);
    json_decref(doc);
    doc = expect("GET", "/v1/contact-policies?limit=10", rules.secret, NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "data")), 1);
    ck_assert_int_eq(id_of(json_array_get(json_object_get(doc, "data"), 0)), id);
    json_decref(doc);

    /* the cap's max alone changes; quiet hours added; channel removed */
    r = send_json("PATCH", location, rules.secret,
                  "{\"channel\": null, \"cap\": {\"max_contacts\": 5}, \"quiet_hours\":"
                  " {\"from\": \"22:00\", \"until\": \"07:30\", \"time_zone\": \"Europe/Rome\"}}",
                  "\"1\"");
    ck_assert_msg(r.status == 200, "HTTP %ld: %s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"2\"");
    doc = http_response_json(&r);
    ck_assert(json_is_null(json_object_get(doc, "channel")));
    json_t *cap = json_object_get(doc, "cap");
    ck_assert_int_eq(json_integer_value(json_object_get(cap, "max_contacts")), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(cap, "period_hours")), 24);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(doc, "quiet_hours"), "until")), "07:30");
    json_decref(doc);
    http_response_free(&r);
    ck_assert_int_eq(stamp(), before + 2);

    r = send_json("PATCH", location, rules.secret, "{\"name\": \"late\"}", "\"1\"");
    ck_assert_int_eq(r.status, 412);
    http_response_free(&r);
    r = send_json("DELETE", location, rules.secret, NULL, "\"1\"");
    ck_assert_int_eq(r.status, 412);
    http_response_free(&r);
    ck_assert_int_eq(stamp(), before + 2);

    r = send_json("DELETE", location, rules.secret, NULL, "\"2\"");
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);
    ck_assert_int_eq(stamp(), before + 3);
    json_decref(expect("GET", location, rules.secret, NULL, 404));
    /* its name is free again */
    json_decref(expect("POST", "/v1/contact-policies", rules.secret,
                       "{\"name\": \"crud\", \"cap\": {\"max_contacts\": 1, \"period_hours\": 1}}",
                       201));
    json_decref(expect("POST", "/v1/contact-policies", rules.secret,
                       "{\"name\": \"crud\", \"cap\": {\"max_contacts\": 1, \"period_hours\": 1}}",
                       409));
    /* a key without rules:write cannot write policies */
    r = send_json("POST", "/v1/contact-policies", contacter.secret,
                  "{\"name\": \"x\", \"cap\": {\"max_contacts\": 1, \"period_hours\": 1}}", NULL);
    ck_assert_int_eq(r.status, 403);
    http_response_free(&r);
}
END_TEST

START_TEST(bad_policies_are_refused_with_pointers_and_change_nothing)
{
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"name\": \"b\", \"cap\": {\"max_contacts\": 0, \"period_hours\": 24}}",
         "/cap/max_contacts"},
        {"{\"name\": \"b\", \"cap\": {\"max_contacts\": -2, \"period_hours\": 24}}",
         "/cap/max_contacts"},
        {"{\"name\": \"b\", \"cap\": {\"max_contacts\": 1, \"period_hours\": 0}}",
         "/cap/period_hours"},
        {"{\"name\": \"b\", \"cap\": {\"max_contacts\": 1, \"period_hours\": -24}}",
         "/cap/period_hours"},
        {"{\"name\": \"b\", \"quiet_hours\": {\"from\": \"22:00\", \"until\": \"22:00\","
         " \"time_zone\": \"UTC\"}}",
         "/quiet_hours/until"},
        {"{\"name\": \"b\", \"quiet_hours\": {\"from\": \"24:00\", \"until\": \"07:00\","
         " \"time_zone\": \"UTC\"}}",
         "/quiet_hours/from"},
        {"{\"name\": \"b\", \"quiet_hours\": {\"from\": \"22:00\", \"until\": \"07:00\","
         " \"time_zone\": \"Mars/Olympus_Mons\"}}",
         "/quiet_hours/time_zone"},
        {"{\"name\": \"b\", \"channel\": \"fax\", \"cap\": {\"max_contacts\": 1, \"period_hours\": "
         "1}}",
         "/channel"},
        {"{\"name\": \"b\", \"purpose\": \"fun\", \"cap\": {\"max_contacts\": 1, \"period_hours\": "
         "1}}",
         "/purpose"},
        {"{\"name\": \"b\", \"rule_id\": 999999999, \"cap\": {\"max_contacts\": 1,"
         " \"period_hours\": 1}}",
         "/rule_id"},
        {"{\"name\": \"b\", \"colour\": \"red\", \"cap\": {\"max_contacts\": 1, \"period_hours\": "
         "1}}",
         "/colour"},
        {"{\"name\": \"b\", \"cap\": {\"max_contacts\": 1, \"period_hours\": 1, \"per\": 2}}",
         "/cap/per"},
        {"{\"name\": \"b\"}", "/cap"},
        {"{\"cap\": {\"max_contacts\": 1, \"period_hours\": 1}}", "/name"},
    };
    long long before = stamp();
    long long rows = harness_sql_number(db, "SELECT count(*) FROM contact_policies", NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_response r =
            send_json("POST", "/v1/contact-policies", rules.secret, cases[i].body, NULL);
        json_t *problem = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(problem, cases[i].field), "case %zu: %s does not name %s",
                      i, r.body, cases[i].field);
        json_decref(problem);
        http_response_free(&r);
    }
    /* a patch whose result breaks a rule changes nothing either */
    long long id =
        new_policy("{\"name\": \"good\", \"cap\": {\"max_contacts\": 2, \"period_hours\": 24}}");
    before = stamp();
    rows = harness_sql_number(db, "SELECT count(*) FROM contact_policies", NULL);
    char path[64];
    snprintf(path, sizeof path, "/v1/contact-policies/%lld", id);
    http_response r = send_json("PATCH", path, rules.secret, "{\"cap\": null}", NULL);
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "/cap"));
    json_decref(problem);
    http_response_free(&r);
    r = send_json("PATCH", path, rules.secret, "{\"cap\": {\"period_hours\": 0}}", NULL);
    problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "/cap/period_hours"));
    json_decref(problem);
    http_response_free(&r);
    json_t *doc = expect("GET", path, rules.secret, NULL, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), 1);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(doc, "cap"), "period_hours")), 24);
    json_decref(doc);
    ck_assert_int_eq(stamp(), before);
    ck_assert_int_eq(harness_sql_number(db, "SELECT count(*) FROM contact_policies", NULL), rows);
}
END_TEST

/* ---- decisions --------------------------------------------------------------- */

typedef struct racer {
    long long customer;
    int index;
    pthread_barrier_t *barrier;
    long status;
} racer;

static void *race_contact(void *arg)
{
    racer *r = arg;
    char body[256], event[96];
    harness_unique(event, sizeof event, "race");
    snprintf(body, sizeof body,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"race\","
             " \"event_id\": \"%s-%d\"}",
             event, r->index);
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/contacts", r->customer);
    http_call call = {.method = "POST", .path = path, .api_key = contacter.secret, .body = body};
    pthread_barrier_wait(r->barrier);
    http_response resp = http_send(&srv, &call);
    r->status = resp.status;
    http_response_free(&resp);
    return NULL;
}

/* n requests at once for customer; how many were allowed (each answer is
 * 201 or 409). */
static int race(long long customer, int n)
{
    racer r[16];
    pthread_t t[16];
    pthread_barrier_t barrier;
    ck_assert_int_le(n, 16);
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        r[i] = (racer){.customer = customer, .index = i, .barrier = &barrier};
        pthread_create(&t[i], NULL, race_contact, &r[i]);
    }
    int allowed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        ck_assert_msg(r[i].status == 201 || r[i].status == 409, "request %d: HTTP %ld", i,
                      r[i].status);
        allowed += r[i].status == 201;
    }
    pthread_barrier_destroy(&barrier);
    return allowed;
}

START_TEST(two_concurrent_contacts_under_a_cap_of_one_allow_exactly_one)
{
    new_policy("{\"name\": \"one a day\", \"channel\": \"email\", \"cap\": {\"max_contacts\": 1,"
               " \"period_hours\": 24}}");
    for (int round = 0; round < 4; round++) {
        long long c = new_customer(true);
        ck_assert_int_eq(race(c, 2), 1);
        ck_assert_int_eq(
            count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint", c), 2);
        ck_assert_int_eq(count_for("SELECT count(*) FROM touchpoints WHERE customer_id = "
                                   "$1::bigint AND type = 'contact' AND direction = 'outbound'",
                                   c),
                         1);
    }
}
END_TEST

START_TEST(twelve_racing_contacts_under_a_cap_of_one_allow_exactly_one)
{
    new_policy("{\"name\": \"once\", \"cap\": {\"max_contacts\": 1, \"period_hours\": 1}}");
    long long c = new_customer(true);
    ck_assert_int_eq(race(c, 12), 1);
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint AND allowed", c),
        1);
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint AND NOT allowed"
                  " AND reasons @> '[{\"code\": \"cap_reached\", \"count\": 1}]'",
                  c),
        11);
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM touchpoints WHERE customer_id = $1::bigint", c), 1);
}
END_TEST

/* An e-mail touchpoint of customer's, now, through POST /v1/touchpoints. */
static void post_touchpoint(long long customer, const char *direction, const char *purpose)
{
    char body[512], event[96], now[32], member[64] = "";
    harness_unique(event, sizeof event, "tp");
    time_t t = time(NULL);
    struct tm utc;
    gmtime_r(&t, &utc);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &utc);
    if (purpose != NULL)
        snprintf(member, sizeof member, ", \"purpose\": \"%s\"", purpose);
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"email\", \"type\": \"email_sent\","
             " \"direction\": \"%s\", \"occurred_at\": \"%s\", \"source\": \"mailer\","
             " \"event_id\": \"%s\"%s}",
             customer, direction, now, event, member);
    json_t *doc = expect("POST", "/v1/touchpoints", harness_admin_key.secret, body, 201);
    if (purpose != NULL)
        ck_assert_str_eq(json_string_value(json_object_get(doc, "purpose")), purpose);
    else
        ck_assert_ptr_null(json_object_get(doc, "purpose"));
    json_decref(doc);
}

START_TEST(caps_count_outbound_touchpoints_posted_through_the_touchpoint_api)
{
    new_policy("{\"name\": \"two marketing mails\", \"channel\": \"email\", \"purpose\":"
               " \"marketing\", \"cap\": {\"max_contacts\": 2, \"period_hours\": 24}}");
    long long c = new_customer(true);
    post_touchpoint(c, "outbound", "marketing"); /* counts: 1 */
    post_touchpoint(c, "inbound", "marketing");  /* inbound: not a contact */
    post_touchpoint(c, "outbound", "service");   /* another purpose */
    post_touchpoint(c, "outbound", NULL);        /* no purpose */
    json_t *d;
    ck_assert_int_eq(email_contact(c, NULL, &d), 201); /* 1 < 2; now 2 */
    json_t *tp = NULL;
    char path[64];
    snprintf(path, sizeof path, "/v1/touchpoints/%lld",
             (long long)json_integer_value(json_object_get(d, "touchpoint_id")));
    tp = expect("GET", path, harness_admin_key.secret, NULL, 200);
    ck_assert_str_eq(json_string_value(json_object_get(tp, "type")), "contact");
    ck_assert_str_eq(json_string_value(json_object_get(tp, "direction")), "outbound");
    ck_assert_str_eq(json_string_value(json_object_get(tp, "purpose")), "marketing");
    ck_assert_str_eq(json_string_value(json_object_get(tp, "source")), "api-test");
    json_decref(tp);
    json_decref(d);
    ck_assert_int_eq(email_contact(c, NULL, &d), 409);
    ck_assert_str_eq(first_reason(d), "cap_reached");
    json_t *reason = json_array_get(json_object_get(d, "reasons"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(reason, "count")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(reason, "limit")), 2);
    ck_assert(json_is_null(json_object_get(d, "touchpoint_id")));
    json_decref(d);
    /* another customer is not counted with this one's touchpoints */
    long long other = new_customer(true);
    ck_assert_int_eq(email_contact(other, NULL, NULL), 201);
}
END_TEST

START_TEST(a_revoked_consent_refuses_the_next_decision)
{
    long long c = new_customer(true);
    ck_assert_int_eq(email_contact(c, NULL, NULL), 201);
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", c);
    json_decref(expect("POST", path, harness_admin_key.secret,
                       "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": "
                       "\"revoked\", \"source\": \"unsubscribe\"}",
                       201));
    long long consent = count_for("SELECT max(id) FROM customer_consents WHERE customer_id = "
                                  "$1::bigint",
                                  c);
    json_t *d;
    ck_assert_int_eq(email_contact(c, NULL, &d), 409);
    ck_assert_int_eq(json_array_size(json_object_get(d, "reasons")), 1);
    ck_assert_str_eq(first_reason(d), "consent_revoked");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_array_get(json_object_get(d, "reasons"), 0), "consent_id")),
                     consent);
    json_decref(d);
    /* a customer with no decision at all */
    long long never = new_customer(false);
    ck_assert_int_eq(email_contact(never, NULL, &d), 409);
    ck_assert_str_eq(first_reason(d), "no_consent");
    json_decref(d);
    /* a customer no longer active (its status read with its lock), its
     * consent still granted: not_active only */
    long long gone = new_customer(true);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE customers SET status = 'erased' WHERE id = %lld", gone);
    exec_sql(sql);
    ck_assert_int_eq(email_contact(gone, NULL, &d), 409);
    ck_assert_int_eq(json_array_size(json_object_get(d, "reasons")), 1);
    ck_assert_str_eq(first_reason(d), "not_active");
    json_decref(d);
}
END_TEST

/* A quiet-hours policy in Asia/Kolkata (UTC+05:30, no daylight saving)
 * from local now + from_off to now + until_off minutes. */
static void quiet_policy_around_now(const char *name, int from_off, int until_off)
{
    time_t t = time(NULL);
    struct tm utc;
    gmtime_r(&t, &utc);
    int local = (utc.tm_hour * 60 + utc.tm_min + 330) % 1440;
    int from = ((local + from_off) % 1440 + 1440) % 1440;
    int until = ((local + until_off) % 1440 + 1440) % 1440;
    char body[256];
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"quiet_hours\": {\"from\": \"%02d:%02d\", \"until\":"
             " \"%02d:%02d\", \"time_zone\": \"Asia/Kolkata\"}}",
             name, from / 60, from % 60, until / 60, until % 60);
    new_policy(body);
}

START_TEST(quiet_hours_that_hold_now_refuse_and_others_do_not)
{
    long long c = new_customer(true);
    quiet_policy_around_now("later", 120, 180); /* two hours from now: not quiet yet */
    ck_assert_int_eq(email_contact(c, NULL, NULL), 201);
    quiet_policy_around_now("now", -60, 60); /* an hour either side of now */
    json_t *d;
    ck_assert_int_eq(email_contact(c, NULL, &d), 409);
    ck_assert_int_eq(json_array_size(json_object_get(d, "reasons")), 1);
    json_t *reason = json_array_get(json_object_get(d, "reasons"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(reason, "code")), "quiet_hours");
    ck_assert_str_eq(json_string_value(json_object_get(reason, "time_zone")), "Asia/Kolkata");
    json_decref(d);
}
END_TEST

START_TEST(the_same_event_again_answers_the_first_decision)
{
    new_policy("{\"name\": \"once\", \"cap\": {\"max_contacts\": 1, \"period_hours\": 24}}");
    long long c = new_customer(true);
    char event[96], first[256], second[256];
    harness_unique(event, sizeof event, "first");
    snprintf(first, sizeof first,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"replay\","
             " \"event_id\": \"%s\", \"campaign_id\": \"winter\"}",
             event);
    harness_unique(event, sizeof event, "second");
    snprintf(second, sizeof second,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"replay\","
             " \"event_id\": \"%s\"}",
             event);
    http_response a = contact(c, first);
    ck_assert_msg(a.status == 201, "HTTP %ld: %s", a.status, a.body);
    ck_assert_ptr_null(http_response_header(&a, "Idempotent-Replayed"));
    json_t *da = http_response_json(&a);
    ck_assert(json_is_string(json_object_get(da, "campaign_id")));
    http_response again = contact(c, first);
    ck_assert_int_eq(again.status, 201);
    ck_assert_str_eq(http_response_header(&again, "Idempotent-Replayed"), "true");
    json_t *dagain = http_response_json(&again);
    ck_assert(json_equal(da, dagain));
    json_decref(dagain);
    /* the recorded touchpoint is a campaign contact */
    char path[64];
    snprintf(path, sizeof path, "/v1/touchpoints/%lld",
             (long long)json_integer_value(json_object_get(da, "touchpoint_id")));
    json_t *tp = expect("GET", path, harness_admin_key.secret, NULL, 200);
    ck_assert_str_eq(json_string_value(json_object_get(tp, "type")), "campaign_contact");
    ck_assert_str_eq(json_string_value(json_object_get(tp, "campaign_id")), "winter");
    json_decref(tp);
    json_decref(da);
    http_response_free(&a);
    http_response_free(&again);

    /* a refusal replays as a refusal, with the same decision */
    http_response b = contact(c, second);
    json_t *pb = assert_problem(&b, 409);
    http_response bagain = contact(c, second);
    json_t *pbagain = assert_problem(&bagain, 409);
    ck_assert_str_eq(http_response_header(&bagain, "Idempotent-Replayed"), "true");
    ck_assert(json_equal(json_object_get(pb, "decision"), json_object_get(pbagain, "decision")));
    json_decref(pb);
    json_decref(pbagain);
    http_response_free(&b);
    http_response_free(&bagain);
    ck_assert_int_eq(count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint", c),
                     2);
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM touchpoints WHERE customer_id = $1::bigint", c), 1);
    /* the same event for another customer is a conflict, not a replay */
    long long other = new_customer(true);
    http_response x = contact(other, first);
    json_t *px = assert_problem(&x, 409);
    ck_assert_ptr_null(json_object_get(px, "decision"));
    json_decref(px);
    http_response_free(&x);
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint", other), 0);
}
END_TEST

START_TEST(bad_contact_requests_are_refused_and_change_nothing)
{
    long long c = new_customer(true);
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"purpose\": \"marketing\", \"source\": \"s\", \"event_id\": \"e\"}", "/channel"},
        {"{\"channel\": \"fax\", \"purpose\": \"marketing\", \"source\": \"s\", \"event_id\": "
         "\"e\"}",
         "/channel"},
        {"{\"channel\": \"email\", \"purpose\": \"fun\", \"source\": \"s\", \"event_id\": \"e\"}",
         "/purpose"},
        {"{\"channel\": \"email\", \"purpose\": \"marketing\", \"event_id\": \"e\"}", "/source"},
        {"{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\"}", "/event_id"},
        {"{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\", \"event_id\": "
         "\"e\", \"rule_id\": 1, \"campaign_id\": \"c\"}",
         "/campaign_id"},
        {"{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\", \"event_id\": "
         "\"e\", \"rule_id\": 0}",
         "/rule_id"},
        {"{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\", \"event_id\": "
         "\"e\", \"occurred_at\": \"yesterday\"}",
         "/occurred_at"},
        {"{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\", \"event_id\": "
         "\"e\", \"priority\": 1}",
         "/priority"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_response r = contact(c, cases[i].body);
        json_t *problem = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(problem, cases[i].field), "case %zu: %s does not name %s",
                      i, r.body, cases[i].field);
        json_decref(problem);
        http_response_free(&r);
    }
    http_response r = contact(c, "[1, 2]");
    json_decref(assert_problem(&r, 422));
    http_response_free(&r);
    /* unknown customer, unknown rule: 404 */
    r = contact(999999999999LL, "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\":"
                                " \"s\", \"event_id\": \"e\"}");
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
    r = contact(c, "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\","
                   " \"event_id\": \"e\", \"rule_id\": 999999999}");
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
    ck_assert_int_eq(count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint", c),
                     0);
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM touchpoints WHERE customer_id = $1::bigint", c), 0);
}
END_TEST

/* A time seconds from now, as RFC 3339 UTC, into out. */
static void utc_from_now(char *out, size_t size, long seconds)
{
    time_t t = time(NULL) + seconds;
    struct tm utc;
    gmtime_r(&t, &utc);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &utc);
}

START_TEST(an_occurred_at_past_the_touchpoints_future_tolerance_is_refused)
{
    /* The fixture's crmd keeps the default tolerance, 300 s. */
    long long c = new_customer(true);
    char when[32], body[256];
    utc_from_now(when, sizeof when, 3600);
    snprintf(body, sizeof body,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\","
             " \"event_id\": \"future\", \"occurred_at\": \"%s\"}",
             when);
    http_response r = contact(c, body);
    json_t *problem = assert_problem(&r, 422);
    ck_assert_msg(problem_names_field(problem, "/occurred_at"), "%s", r.body);
    json_decref(problem);
    http_response_free(&r);
    ck_assert_int_eq(count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint", c),
                     0);
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM touchpoints WHERE customer_id = $1::bigint", c), 0);
    /* within the tolerance: allowed, and the touchpoint keeps the time */
    char extra[64];
    utc_from_now(when, sizeof when, 60);
    snprintf(extra, sizeof extra, ", \"occurred_at\": \"%s\"", when);
    ck_assert_int_eq(email_contact(c, extra, NULL), 201);
    ck_assert_int_eq(count_for("SELECT count(*) FROM touchpoints WHERE customer_id = $1::bigint"
                               " AND occurred_at > now()",
                               c),
                     1);
}
END_TEST

START_TEST(each_decision_records_the_rules_version_and_a_rule_cap_counts_its_contacts)
{
    char name[96], sql[512];
    harness_unique(name, sizeof name, "rule");
    snprintf(sql, sizeof sql,
             "INSERT INTO treatment_rules (name, condition, offer_code, purpose, position, version)"
             " VALUES ('%s', '{\"all\": []}', 'WINTER-10', 'marketing', 1, 3) RETURNING id",
             name);
    long long rule = harness_sql_number(db, sql, NULL);
    char body[256], extra[64];
    snprintf(body, sizeof body,
             "{\"name\": \"rule cap\", \"rule_id\": %lld, \"cap\": {\"max_contacts\": 2,"
             " \"period_hours\": 24}}",
             rule);
    long long policy = new_policy(body);
    snprintf(extra, sizeof extra, ", \"rule_id\": %lld", rule);
    long long c = new_customer(true);
    json_t *d;
    ck_assert_int_eq(email_contact(c, extra, &d), 201);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "rule_version")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "rule_id")), rule);
    char path[64];
    snprintf(path, sizeof path, "/v1/touchpoints/%lld",
             (long long)json_integer_value(json_object_get(d, "touchpoint_id")));
    json_t *tp = expect("GET", path, harness_admin_key.secret, NULL, 200);
    ck_assert_str_eq(json_string_value(json_object_get(tp, "offer_code")), "WINTER-10");
    json_decref(tp);
    json_decref(d);
    char id[24];
    snprintf(id, sizeof id, "%lld", rule);
    harness_sql_number(db,
                       "WITH u AS (UPDATE treatment_rules SET version = 4 WHERE id = $1::bigint"
                       " RETURNING 1) SELECT count(*) FROM u",
                       id);
    /* a touchpoint does not count for a rule's cap */
    post_touchpoint(c, "outbound", "marketing");
    ck_assert_int_eq(email_contact(c, extra, &d), 201);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "rule_version")), 4);
    json_decref(d);
    ck_assert_int_eq(email_contact(c, extra, &d), 409); /* 2 contacts of the rule = 2 */
    ck_assert_str_eq(first_reason(d), "cap_reached");
    ck_assert_int_eq(json_integer_value(json_object_get(d, "rule_version")), 4);
    json_decref(d);
    ck_assert_int_eq(email_contact(c, NULL, NULL), 201); /* without the rule: not its cap */
    ck_assert_int_eq(count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint"
                               " AND rule_version = 3",
                               c),
                     1);
    ck_assert_int_eq(count_for("SELECT count(*) FROM contacts WHERE customer_id = $1::bigint"
                               " AND rule_version = 4",
                               c),
                     2);
    /* a deleted rule is unknown to the decision */
    harness_sql_number(db,
                       "WITH u AS (UPDATE treatment_rules SET deleted_at = now() WHERE id ="
                       " $1::bigint RETURNING 1) SELECT count(*) FROM u",
                       id);
    char body2[256], event[96];
    harness_unique(event, sizeof event, "deleted-rule");
    snprintf(body2, sizeof body2,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\", \"event_id\":"
             " \"%s\", \"rule_id\": %lld}",
             event, rule);
    http_response r = contact(c, body2);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
    /* its policy can still be renamed, but not pointed at it anew */
    char ppath[64];
    snprintf(ppath, sizeof ppath, "/v1/contact-policies/%lld", policy);
    json_decref(expect("PATCH", ppath, rules.secret, "{\"name\": \"rule cap, renamed\"}", 200));
    snprintf(body2, sizeof body2, "{\"rule_id\": %lld}", rule);
    r = send_json("PATCH", ppath, rules.secret, body2, NULL);
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "/rule_id"));
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

/* The members' ids of segment seg (at most max, one page), once it is live
 * (fails after 20 s). */
static int segment_members(long long seg, long long *out, int max)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/segments/%lld", seg);
    for (int i = 0; i < 200; i++) {
        json_t *doc = expect("GET", path, harness_admin_key.secret, NULL, 200);
        bool live = strcmp(json_string_value(json_object_get(doc, "state")), "live") == 0;
        json_decref(doc);
        if (live)
            break;
        ck_assert_msg(i < 199, "segment %lld did not become live", seg);
        harness_sleep_ms(100);
    }
    snprintf(path, sizeof path, "/v1/segments/%lld/customers?limit=100", seg);
    json_t *page = expect("GET", path, harness_admin_key.secret, NULL, 200);
    int n = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(page, "data"), i, c)
    {
        ck_assert_int_lt(n, max);
        out[n++] = id_of(c);
    }
    json_decref(page);
    return n;
}

START_TEST(a_contact_enters_the_segments_that_count_its_offer_code)
{
    char offer[64], body[512], extra[64];
    harness_unique(offer, sizeof offer, "OFFER");
    long long rule = harness_sql_number(
        db,
        "INSERT INTO treatment_rules (name, condition, offer_code, purpose, position)"
        " VALUES ($1, '{\"all\": []}', $1, 'marketing', 1) RETURNING id",
        offer);
    snprintf(body, sizeof body,
             "{\"name\": \"contacted with %s\", \"rule\": {\"touchpoints\": {\"type\":"
             " \"contact\", \"offer_code\": \"%s\"}, \"agg\": \"count\", \"op\": \"gte\","
             " \"value\": 1}}",
             offer, offer);
    json_t *doc = expect("POST", "/v1/segments", harness_admin_key.secret, body, 201);
    long long seg = id_of(doc);
    json_decref(doc);
    long long got[4];
    ck_assert_int_eq(segment_members(seg, got, 4), 0);
    long long a = new_customer(true), b = new_customer(true);
    ck_assert_int_eq(email_contact(b, NULL, NULL), 201); /* no rule, no offer */
    ck_assert_int_eq(segment_members(seg, got, 4), 0);
    snprintf(extra, sizeof extra, ", \"rule_id\": %lld", rule);
    ck_assert_int_eq(email_contact(a, extra, NULL), 201);
    ck_assert_int_eq(segment_members(seg, got, 4), 1);
    ck_assert_int_eq(got[0], a);
    char path[64];
    snprintf(path, sizeof path, "/v1/segments/%lld", seg);
    json_decref(expect("DELETE", path, harness_admin_key.secret, NULL, 204));
}
END_TEST

/* ---- touchpoints with a purpose and an offer --------------------------------------- */

/* A batch of n offer reactions (purpose, offer_code) for customer; with n
 * of 16 or more it goes in by COPY, below by INSERT. */
static void post_reactions(long long customer, int n, const char *tag)
{
    size_t size = (size_t)n * 400 + 16;
    char *body = malloc(size), now[32], event[96];
    time_t t = time(NULL);
    struct tm utc;
    gmtime_r(&t, &utc);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &utc);
    size_t len = (size_t)snprintf(body, size, "[");
    for (int i = 0; i < n; i++) {
        harness_unique(event, sizeof event, tag);
        len += (size_t)snprintf(
            body + len, size - len,
            "%s{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"%s\", \"direction\":"
            " \"inbound\", \"occurred_at\": \"%s\", \"source\": \"offers\", \"event_id\": \"%s\","
            " \"purpose\": \"marketing\", \"offer_code\": \"%s-%d\"}",
            i ? "," : "", customer, i % 2 ? "offer_accepted" : "offer_ignored", now, event, tag, i);
    }
    snprintf(body + len, size - len, "]");
    json_t *doc = expect("POST", "/v1/touchpoints/batch", harness_admin_key.secret, body, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "created")), n);
    json_decref(doc);
    free(body);
}

START_TEST(touchpoints_carry_purpose_and_offer_code_by_insert_and_by_copy)
{
    long long c = new_customer(false);
    post_reactions(c, 3, "ins");  /* INSERT */
    post_reactions(c, 20, "cpy"); /* COPY */
    ck_assert_int_eq(count_for("SELECT count(*) FROM touchpoints WHERE customer_id = $1::bigint"
                               " AND purpose = 'marketing' AND offer_code LIKE 'ins-%'",
                               c),
                     3);
    ck_assert_int_eq(count_for("SELECT count(*) FROM touchpoints WHERE customer_id = $1::bigint"
                               " AND purpose = 'marketing' AND offer_code LIKE 'cpy-%'"
                               " AND type = 'offer_accepted'",
                               c),
                     10);
    /* shown on the timeline */
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/touchpoints?limit=1", c);
    json_t *page = expect("GET", path, harness_admin_key.secret, NULL, 200);
    json_t *tp = json_array_get(json_object_get(page, "data"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(tp, "purpose")), "marketing");
    ck_assert(json_is_string(json_object_get(tp, "offer_code")));
    json_decref(page);
    /* a purpose not in the list, an empty offer code: 422 naming each */
    char body[512], event[96];
    harness_unique(event, sizeof event, "badpurpose");
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"offer_rejected\","
             " \"direction\": \"inbound\", \"occurred_at\": \"2026-01-01T00:00:00Z\", \"source\":"
             " \"offers\", \"event_id\": \"%s\", \"purpose\": \"fun\", \"offer_code\": \"\"}",
             c, event);
    http_response r = http_post_json(&srv, "/v1/touchpoints", harness_admin_key.secret, body);
    json_t *problem = assert_problem(&r, 422);
    ck_assert(problem_names_field(problem, "/purpose"));
    ck_assert(problem_names_field(problem, "/offer_code"));
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

Suite *contacts_suite(void)
{
    Suite *s = suite_create("contacts");
    TCase *tc = tcase_create("contacts");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_policy_is_created_read_listed_patched_and_deleted);
    tcase_add_test(tc, bad_policies_are_refused_with_pointers_and_change_nothing);
    tcase_add_test(tc, two_concurrent_contacts_under_a_cap_of_one_allow_exactly_one);
    tcase_add_test(tc, twelve_racing_contacts_under_a_cap_of_one_allow_exactly_one);
    tcase_add_test(tc, caps_count_outbound_touchpoints_posted_through_the_touchpoint_api);
    tcase_add_test(tc, a_revoked_consent_refuses_the_next_decision);
    tcase_add_test(tc, quiet_hours_that_hold_now_refuse_and_others_do_not);
    tcase_add_test(tc, the_same_event_again_answers_the_first_decision);
    tcase_add_test(tc, bad_contact_requests_are_refused_and_change_nothing);
    tcase_add_test(tc, an_occurred_at_past_the_touchpoints_future_tolerance_is_refused);
    tcase_add_test(tc, each_decision_records_the_rules_version_and_a_rule_cap_counts_its_contacts);
    tcase_add_test(tc, touchpoints_carry_purpose_and_offer_code_by_insert_and_by_copy);
    tcase_add_test(tc, a_contact_enters_the_segments_that_count_its_offer_code);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_segments.c — segments over real HTTP (/v1/segments): their
 * definitions (create, read, list, patch with If-Match, delete), the build
 * job, and memberships kept exact by every kind of write (customer writes,
 * consent, one touchpoint, a batch, merge, erasure) with the log that
 * answers ?at= and /changes, the kept count and the history.
 *
 * Each test's rules name a tag of its own, so the customers of other tests
 * never enter its segments; its segments are deleted at the end.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static crmd_server srv;
static PGconn *db;
static api_key writer, reader;

static void setup(void)
{
    static const char *const env[] = {"CRMD_SEGMENTS_TICK_MS=200", NULL};
    crmd_fixture_start(&srv, env);
    if (writer.id == 0)
        ck_assert(api_key_create("segments:read,segments:write", &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("segments:read", &reader));
    db = harness_db_connect();
}

static void teardown(void)
{
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

static json_t *expect(const char *method, const char *path, const char *body, long status)
{
    http_response r = send_json(method, path, harness_admin_key.secret, body, NULL);
    ck_assert_msg(r.status == status, "%s %s answered %ld, not %ld: %.500s", method, path, r.status,
                  status, r.body);
    json_t *doc = r.body_len ? http_response_json(&r) : NULL;
    http_response_free(&r);
    return doc;
}

static long long id_of(const json_t *doc)
{
    return json_integer_value(json_object_get(doc, "id"));
}

/* A customer with tag and country, made through the API. */
static long long new_customer(const char *tag, const char *country)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"first_name\": \"Seg\", \"tags\": [\"%s\"], \"address\": {\"country\": \"%s\"}}",
             tag, country);
    json_t *doc = expect("POST", "/v1/customers", body, 201);
    long long id = id_of(doc);
    json_decref(doc);
    return id;
}

/* Creates a segment named after tag with rule (JSON text); waits until it is live. */
static long long new_segment(const char *name, const char *rule)
{
    size_t size = strlen(rule) + 256;
    char *body = malloc(size);
    snprintf(body, size, "{\"name\": \"%s\", \"description\": \"test\", \"rule\": %s}", name, rule);
    json_t *doc = expect("POST", "/v1/segments", body, 201);
    free(body);
    long long id = id_of(doc);
    json_decref(doc);
    return id;
}

static json_t *get_segment(long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/segments/%lld", id);
    return expect("GET", path, NULL, 200);
}

/* Waits until segment id is live; fails the test after 20 s. */
static void wait_live(long long id)
{
    for (int i = 0; i < 200; i++) {
        json_t *doc = get_segment(id);
        bool live = strcmp(json_string_value(json_object_get(doc, "state")), "live") == 0;
        json_decref(doc);
        if (live)
            return;
        harness_sleep_ms(100);
    }
    ck_abort_msg("segment %lld did not become live", id);
}

static void drop_segment(long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/segments/%lld", id);
    json_decref(expect("DELETE", path, NULL, 204));
}

/* The members' ids (now: at NULL), sorted, through every page of 2. */
static int members(long long seg, const char *at, long long *out, int max)
{
    char path[1024], cursor[512] = "";
    int n = 0;
    for (int pages = 0; pages < 100; pages++) {
        snprintf(path, sizeof path, "/v1/segments/%lld/customers?limit=2%s%s%s%s", seg,
                 at ? "&at=" : "", at ? at : "", cursor[0] ? "&after=" : "", cursor);
        json_t *doc = expect("GET", path, NULL, 200);
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(doc, "data"), i, c)
        {
            ck_assert_int_lt(n, max);
            out[n++] = id_of(c);
        }
        json_t *next = json_object_get(doc, "next_cursor");
        bool more = json_is_string(next);
        if (more)
            snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        json_decref(doc);
        if (!more)
            return n;
    }
    ck_abort_msg("too many pages");
    return n;
}

static long long count_of(long long seg, const char *at)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/segments/%lld/count%s%s", seg, at ? "?at=" : "", at ? at : "");
    json_t *doc = expect("GET", path, NULL, 200);
    long long n = json_integer_value(json_object_get(doc, "count"));
    json_decref(doc);
    return n;
}

/* Asserts the members of seg now are exactly ids (sorted ascending), and
 * that the kept count agrees. */
static void assert_members(long long seg, const long long *ids, int n)
{
    long long got[64];
    int m = members(seg, NULL, got, 64);
    ck_assert_msg(m == n, "segment %lld has %d members, expected %d", seg, m, n);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(got[i], ids[i]);
    ck_assert_int_eq(count_of(seg, NULL), n);
}

/* A batch of several touchpoints is judged by the upkeep soon after it
 * answers (CRMD_SEGMENTS_QUEUE_MS, 100 ms by default): seg's members become
 * ids[0..n) within 10 s. */
static void wait_members(long long seg, const long long *ids, int n)
{
    for (int i = 0; i < 100; i++) {
        long long got[64];
        int m = members(seg, NULL, got, 64);
        bool same = m == n;
        for (int k = 0; same && k < n; k++)
            same = got[k] == ids[k];
        if (same)
            break;
        harness_sleep_ms(100);
    }
    assert_members(seg, ids, n);
}

/* The last change of customer in seg's log: "entered"/"left" and its cause. */
static void assert_last_change(long long seg, long long customer, const char *change,
                               const char *cause)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/segments/%lld/changes?limit=1000", seg);
    json_t *doc = expect("GET", path, NULL, 200);
    json_t *last = NULL, *e;
    size_t i;
    json_array_foreach(json_object_get(doc, "data"), i,
                       e) if (json_integer_value(json_object_get(e, "customer_id")) == customer)
        last = e;
    ck_assert_msg(last != NULL, "no change of customer %lld in segment %lld", customer, seg);
    ck_assert_str_eq(json_string_value(json_object_get(last, "change")), change);
    ck_assert_str_eq(json_string_value(json_object_get(last, "cause")), cause);
    json_decref(doc);
}

/* The time ago_ms before now as RFC 3339 text to the millisecond. */
static void ago_text(char *out, size_t size, long long ago_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - ago_ms;
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03lldZ", base, ms % 1000);
}

static void now_text(char *out, size_t size)
{
    ago_text(out, size, 0);
}

static void post_purchase(long long customer, const char *source, const char *event)
{
    char body[512], when[40];
    now_text(when, sizeof when);
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"store\", \"type\": \"purchase\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
             " \"event_id\": \"%s\", \"amount\": 10, \"currency\": \"EUR\"}",
             customer, when, source, event);
    json_decref(expect("POST", "/v1/touchpoints", body, 201));
}

/* customer's reaction (offer_rejected, ...) to offer code, days_ago days ago,
 * through POST /v1/touchpoints. */
static void post_reaction(long long customer, const char *type, const char *code,
                          long long days_ago, const char *source, const char *event)
{
    char body[512], when[40];
    ago_text(when, sizeof when, days_ago * 86400000LL);
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"email\", \"type\": \"%s\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
             " \"event_id\": \"%s\", \"offer_code\": \"%s\"}",
             customer, type, when, source, event, code);
    json_decref(expect("POST", "/v1/touchpoints", body, 201));
}

/* The ids (sorted ascending) that POST /v1/customers/search finds for
 * {"rule": rule} in one page of 100. */
static int search_ids(const char *rule, long long *out, int max)
{
    size_t size = strlen(rule) + 16;
    char *body = malloc(size);
    snprintf(body, size, "{\"rule\": %s}", rule);
    json_t *doc = expect("POST", "/v1/customers/search?limit=100", body, 200);
    free(body);
    ck_assert(json_is_null(json_object_get(doc, "next_cursor")));
    int n = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(doc, "data"), i, c)
    {
        ck_assert_int_lt(n, max);
        long long id = id_of(c);
        int k = n++;
        for (; k > 0 && out[k - 1] > id; k--)
            out[k] = out[k - 1];
        out[k] = id;
    }
    json_decref(doc);
    return n;
}

/* ---- definitions --------------------------------------------------------------- */

START_TEST(a_segment_is_created_built_read_patched_and_deleted)
{
    char tag[48], name[64], rule[256];
    harness_unique(tag, sizeof tag, "segcrud");
    snprintf(name, sizeof name, "crud %s", tag);
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "FR");
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"IT\"}]}",
             tag);
    size_t size = strlen(rule) + 256;
    char *body = malloc(size);
    snprintf(body, size, "{\"name\": \"%s\", \"rule\": %s}", name, rule);
    http_response r = send_json("POST", "/v1/segments", writer.secret, body, NULL);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    json_t *doc = http_response_json(&r);
    long long seg = id_of(doc);
    char location[64];
    snprintf(location, sizeof location, "/v1/segments/%lld", seg);
    ck_assert_str_eq(http_response_header(&r, "Location"), location);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "rule_version")), 1);
    ck_assert(json_is_integer(json_object_get(doc, "build_job_id")));
    json_decref(doc);
    http_response_free(&r);

    /* The same name again: 409; a reader may not create. */
    r = send_json("POST", "/v1/segments", writer.secret, body, NULL);
    json_decref(assert_problem(&r, 409));
    http_response_free(&r);
    r = send_json("POST", "/v1/segments", reader.secret, body, NULL);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    free(body);

    wait_live(seg);
    long long only_a[] = {a};
    assert_members(seg, only_a, 1);
    assert_last_change(seg, a, "entered", "build");

    /* A new name under the right ETag: version 2, the same rule version. */
    r = send_json("PATCH", location, writer.secret, "{\"name\": \"renamed\"}", "\"7\"");
    json_decref(assert_problem(&r, 412));
    http_response_free(&r);
    char renamed[128];
    snprintf(renamed, sizeof renamed, "{\"name\": \"renamed %s\"}", tag);
    r = send_json("PATCH", location, writer.secret, renamed, "\"1\"");
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    doc = http_response_json(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "rule_version")), 1);
    json_decref(doc);
    http_response_free(&r);

    /* A new rule: rule version 2, rebuilt; a leaves, b enters. */
    snprintf(rule, sizeof rule,
             "{\"rule\": {\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"FR\"}]}}",
             tag);
    doc = expect("PATCH", location, rule, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "rule_version")), 2);
    json_decref(doc);
    wait_live(seg);
    long long only_b[] = {b};
    assert_members(seg, only_b, 1);
    assert_last_change(seg, a, "left", "rule");
    assert_last_change(seg, b, "entered", "rule");

    /* The history has the first build, the new rule and, once the upkeep
     * has ticked (every 200 ms here) while the segment was live, the day's
     * size. */
    char path[128];
    snprintf(path, sizeof path, "%s/history", location);
    bool saw_build = false, saw_rule = false, saw_daily = false;
    size_t i;
    json_t *e;
    for (int tries = 0; tries < 50 && !saw_daily; tries++) {
        if (tries > 0)
            harness_sleep_ms(100);
        doc = expect("GET", path, NULL, 200);
        json_t *h = json_object_get(doc, "data");
        ck_assert_int_ge(json_array_size(h), 2);
        saw_build = saw_rule = saw_daily = false;
        json_array_foreach(h, i, e)
        {
            const char *reason = json_string_value(json_object_get(e, "reason"));
            saw_build = saw_build || strcmp(reason, "build") == 0;
            saw_daily = saw_daily || strcmp(reason, "daily") == 0;
            saw_rule = saw_rule || (strcmp(reason, "rule") == 0 &&
                                    json_integer_value(json_object_get(e, "size")) == 1 &&
                                    json_integer_value(json_object_get(e, "rule_version")) == 2);
        }
        json_decref(doc);
    }
    ck_assert_msg(saw_build && saw_rule && saw_daily, "history: build %d, rule %d, daily %d",
                  saw_build, saw_rule, saw_daily);

    /* Listed; then deleted: 404 everywhere. */
    doc = expect("GET", "/v1/segments?limit=200", NULL, 200);
    bool listed = false;
    json_array_foreach(json_object_get(doc, "data"), i, e) listed = listed || id_of(e) == seg;
    ck_assert(listed);
    json_decref(doc);
    drop_segment(seg);
    json_decref(expect("GET", location, NULL, 404));
    snprintf(path, sizeof path, "%s/count", location);
    json_decref(expect("GET", path, NULL, 404));
    snprintf(path, sizeof path, "%s/customers", location);
    json_decref(expect("GET", path, NULL, 404));
}
END_TEST

START_TEST(bad_definitions_are_refused_with_the_pointer_of_the_bad_node)
{
    struct {
        const char *body;
        long status;
        const char *field;
    } cases[] = {
        {"{\"name\": \"x\", \"rule\": {\"all\": [{\"field\": \"email\", \"op\": \"lt\","
         " \"value\": 3}]}}",
         422, "/rule/all/0/op"},
        {"{\"name\": \"x\", \"rule\": {\"any\": [{\"field\": \"nope\", \"op\": \"eq\","
         " \"value\": 3}]}}",
         422, "/rule/any/0/field"},
        {"{\"name\": \"x\", \"rule\": {\"touchpoints\": {\"within_days\": 0}, \"agg\": \"count\","
         " \"op\": \"eq\", \"value\": 0}}",
         422, "/rule/touchpoints/within_days"},
        {"{\"name\": \"x\", \"rule\": {\"touchpoints\": {\"type\": \"offer_rejected\","
         " \"offer_code\": \"\"}, \"agg\": \"count\", \"op\": \"gte\", \"value\": 2}}",
         422, "/rule/touchpoints/offer_code"},
        {"{\"name\": \"x\", \"rule\": {\"touchpoints\": {\"offer_code\": 1}, \"agg\": \"count\","
         " \"op\": \"gte\", \"value\": 2}}",
         422, "/rule/touchpoints/offer_code"},
        {"{\"name\": \"x\"}", 422, "/rule"},
        {"{\"rule\": {\"all\": []}}", 422, "/name"},
        {"{\"name\": \"\", \"rule\": {\"all\": []}}", 422, "/name"},
        {"{\"name\": \"x\", \"rule\": {\"all\": []}, \"colour\": 1}", 422, "/colour"},
        {"{\"name\": \"x\", \"description\": 5, \"rule\": {\"all\": []}}", 422, "/description"},
        {"[1]", 422, NULL},
        {"{\"name\": \"x\", \"rule\": ", 400, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_response r = send_json("POST", "/v1/segments", writer.secret, cases[i].body, NULL);
        json_t *p = assert_problem(&r, cases[i].status);
        if (cases[i].field != NULL)
            ck_assert_msg(problem_names_field(p, cases[i].field), "case %zu: %s does not name %s",
                          i, r.body, cases[i].field);
        json_decref(p);
        http_response_free(&r);
    }
    ck_assert_int_eq(harness_sql_number(db, "SELECT count(*) FROM segments WHERE name = 'x'", NULL),
                     0);
    json_decref(expect("GET", "/v1/segments/999999999", NULL, 404));
    json_decref(expect("GET", "/v1/segments/abc", NULL, 404));
    json_decref(expect("GET", "/v1/segments/1/count?at=yesterday", NULL, 422));
    json_decref(expect("GET", "/v1/segments/1/customers?colour=1", NULL, 422));
}
END_TEST

/* ---- memberships kept by every write ------------------------------------------------ */

/* The rule "tagged tag and rejected offer code at least twice in the last
 * 30 days". */
static void rejected_twice(char *out, size_t size, const char *tag, const char *code)
{
    snprintf(out, size,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"touchpoints\": {\"type\": \"offer_rejected\", \"offer_code\": \"%s\","
             " \"within_days\": 30}, \"agg\": \"count\", \"op\": \"gte\", \"value\": 2}]}",
             tag, code);
}

START_TEST(who_rejected_an_offer_twice_in_thirty_days_is_found_by_its_offer_code)
{
    char tag[48], name[64], rule[512], off1[512], off2[512], source[48];
    harness_unique(tag, sizeof tag, "segoffer");
    harness_unique(source, sizeof source, "segoffer");
    /* a rejects OFF-1 twice (one at a time); b rejects OFF-2 twice; c
     * rejects OFF-1 40 days ago and today and accepts it today; d rejects
     * OFF-1 twice in one batch. */
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "IT"), c = new_customer(tag, "IT"),
              d = new_customer(tag, "IT");
    rejected_twice(off1, sizeof off1, tag, "OFF-1");
    rejected_twice(off2, sizeof off2, tag, "OFF-2");
    snprintf(name, sizeof name, "rejected OFF-1 %s", tag);
    long long seg = new_segment(name, off1);
    wait_live(seg);
    assert_members(seg, NULL, 0);

    post_reaction(a, "offer_rejected", "OFF-1", 3, source, "a-1");
    assert_members(seg, NULL, 0);
    post_reaction(a, "offer_rejected", "OFF-1", 0, source, "a-2");
    long long only_a[] = {a};
    assert_members(seg, only_a, 1);
    assert_last_change(seg, a, "entered", "touchpoint");
    post_reaction(b, "offer_rejected", "OFF-2", 2, source, "b-1");
    post_reaction(b, "offer_rejected", "OFF-2", 0, source, "b-2");
    post_reaction(c, "offer_rejected", "OFF-1", 40, source, "c-1");
    post_reaction(c, "offer_rejected", "OFF-1", 0, source, "c-2");
    post_reaction(c, "offer_accepted", "OFF-1", 0, source, "c-3");
    assert_members(seg, only_a, 1);

    char batch[1024], when[40];
    now_text(when, sizeof when);
    snprintf(batch, sizeof batch,
             "[{\"customer_id\": %lld, \"channel\": \"sms\", \"type\": \"offer_rejected\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
             " \"event_id\": \"d-1\", \"offer_code\": \"OFF-1\"},"
             " {\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"offer_rejected\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
             " \"event_id\": \"d-2\", \"offer_code\": \"OFF-1\"}]",
             d, when, source, d, when, source);
    json_decref(expect("POST", "/v1/touchpoints/batch", batch, 200));
    long long a_d[] = {a, d};
    wait_members(seg, a_d, 2);
    assert_last_change(seg, d, "entered", "touchpoints");

    long long got[8];
    int n = search_ids(off1, got, 8);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(got[0], a);
    ck_assert_int_eq(got[1], d);
    n = search_ids(off2, got, 8);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(got[0], b);
    /* Without the offer code b is in too; c still is not: its other
     * rejection is 40 days old. */
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"touchpoints\": {\"type\": \"offer_rejected\", \"within_days\": 30},"
             " \"agg\": \"count\", \"op\": \"gte\", \"value\": 2}]}",
             tag);
    n = search_ids(rule, got, 8);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(got[0], a);
    ck_assert_int_eq(got[1], b);
    ck_assert_int_eq(got[2], d);

    /* A bad offer_code is 422 naming it, for a search as for a segment. */
    static const char *const bad[] = {"\"\"", "7", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"rule\": {\"all\": [{\"touchpoints\": {\"offer_code\": %s}, \"agg\":"
                 " \"count\", \"op\": \"gte\", \"value\": 2}]}}",
                 bad[i]);
        http_response r =
            send_json("POST", "/v1/customers/search", harness_admin_key.secret, body, NULL);
        json_t *p = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(p, "/rule/all/0/touchpoints/offer_code"), "%s: %s", body,
                      r.body);
        json_decref(p);
        http_response_free(&r);
    }
    drop_segment(seg);
}
END_TEST

START_TEST(memberships_follow_customer_touchpoint_and_consent_writes)
{
    char tag[48], name[64], rule[512], source[48];
    harness_unique(tag, sizeof tag, "seglive");
    harness_unique(source, sizeof source, "segpos");
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "FR"), c = new_customer(tag, "IT");
    /* Buyers in Italy. */
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"IT\"},"
             " {\"touchpoints\": {\"type\": \"purchase\"}, \"agg\": \"count\", \"op\": \"gte\","
             " \"value\": 1}]}",
             tag);
    snprintf(name, sizeof name, "buyers %s", tag);
    long long buyers = new_segment(name, rule);
    /* Marketing e-mail granted. */
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"field\": \"consent.email.marketing\", \"op\": \"eq\", \"value\": \"granted\"}]}",
             tag);
    snprintf(name, sizeof name, "optin %s", tag);
    long long optin = new_segment(name, rule);
    wait_live(buyers);
    wait_live(optin);
    assert_members(buyers, NULL, 0);
    assert_members(optin, NULL, 0);

    /* One touchpoint: a enters. */
    post_purchase(a, source, "e-1");
    long long only_a[] = {a};
    assert_members(buyers, only_a, 1);
    assert_last_change(buyers, a, "entered", "touchpoint");

    /* A batch for b, a and c, judged by the upkeep: b stays out (France),
     * c enters; then b moves to Italy: enters. */
    char batch[1536], when[40];
    now_text(when, sizeof when);
    snprintf(batch, sizeof batch,
             "[{\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"purchase\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
             " \"event_id\": \"b-1\", \"amount\": 5, \"currency\": \"EUR\"},"
             " {\"customer_id\": %lld, \"channel\": \"web\", \"type\": \"visit\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
             " \"event_id\": \"b-2\"},"
             " {\"customer_id\": %lld, \"channel\": \"store\", \"type\": \"purchase\","
             " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
             " \"event_id\": \"b-3\", \"amount\": 7, \"currency\": \"EUR\"}]",
             b, when, source, a, when, source, c, when, source);
    json_decref(expect("POST", "/v1/touchpoints/batch", batch, 200));
    long long a_c[] = {a, c};
    wait_members(buyers, a_c, 2);
    assert_last_change(buyers, c, "entered", "touchpoints");
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld", b);
    json_decref(expect("PATCH", path, "{\"address\": {\"country\": \"IT\"}}", 200));
    long long all3[] = {a, b, c};
    assert_members(buyers, all3, 3);
    assert_last_change(buyers, b, "entered", "customer");

    /* Consent: a grants, then revokes. */
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", a);
    json_decref(
        expect("POST", path,
               "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": \"granted\","
               " \"source\": \"test\"}",
               201));
    assert_members(optin, only_a, 1);
    assert_last_change(optin, a, "entered", "consent");
    json_decref(
        expect("POST", path,
               "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": \"revoked\","
               " \"source\": \"test\"}",
               201));
    assert_members(optin, NULL, 0);
    assert_last_change(optin, a, "left", "consent");

    /* A deleted customer leaves. */
    snprintf(path, sizeof path, "/v1/customers/%lld", b);
    json_decref(expect("DELETE", path, NULL, 204));
    assert_members(buyers, a_c, 2);
    assert_last_change(buyers, b, "left", "customer");

    /* The membership table agrees with the log: every member's last
     * change is an entry. */
    char segtext[24];
    snprintf(segtext, sizeof segtext, "%lld", buyers);
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(*) FROM segment_memberships m WHERE"
                                        " segment_id = $1::bigint AND NOT (SELECT entered FROM"
                                        " segment_changes x WHERE x.segment_id = m.segment_id AND"
                                        " x.customer_id = m.customer_id ORDER BY id DESC LIMIT 1)",
                                        segtext),
                     0);
    drop_segment(buyers);
    drop_segment(optin);
}
END_TEST

START_TEST(a_merge_and_an_erasure_move_people_out_and_the_log_answers_at)
{
    char tag[48], name[64], rule[256];
    harness_unique(tag, sizeof tag, "segmerge");
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "IT"), c = new_customer(tag, "IT");
    snprintf(rule, sizeof rule, "{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"}",
             tag);
    snprintf(name, sizeof name, "tagged %s", tag);
    long long seg = new_segment(name, rule);
    wait_live(seg);
    long long all3[] = {a, b, c};
    assert_members(seg, all3, 3);
    harness_sleep_ms(20);
    char t1[40];
    now_text(t1, sizeof t1);
    harness_sleep_ms(20);

    /* b merged into a: b leaves, a stays. */
    char path[96], body[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/merge", a);
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", b);
    http_response r = send_json("POST", path, harness_admin_key.secret, body, NULL);
    ck_assert_msg(r.status == 200, "merge answered %ld: %s", r.status, r.body);
    http_response_free(&r);
    long long ac[] = {a, c};
    assert_members(seg, ac, 2);
    assert_last_change(seg, b, "left", "merge");

    harness_sleep_ms(20);
    char t2[40];
    now_text(t2, sizeof t2);
    harness_sleep_ms(20);

    /* c erased: leaves. */
    snprintf(path, sizeof path, "/v1/customers/%lld/erase", c);
    r = send_json("POST", path, harness_admin_key.secret, "{\"confirm\": true}", NULL);
    ck_assert_msg(r.status == 200, "erase answered %ld: %s", r.status, r.body);
    http_response_free(&r);
    long long only_a[] = {a};
    assert_members(seg, only_a, 1);
    assert_last_change(seg, c, "left", "erasure");

    /* Who was in at t1, at t2 and before the segment existed. */
    long long got[8];
    int n = members(seg, t1, got, 8);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(got[0], a);
    ck_assert_int_eq(got[1], b);
    ck_assert_int_eq(got[2], c);
    ck_assert_int_eq(count_of(seg, t1), 3);
    n = members(seg, t2, got, 8);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(got[0], a);
    ck_assert_int_eq(got[1], c);
    ck_assert_int_eq(count_of(seg, t2), 2);
    ck_assert_int_eq(members(seg, "2000-01-01T00:00:00Z", got, 8), 0);
    ck_assert_int_eq(count_of(seg, "2000-01-01T00:00:00Z"), 0);

    /* /changes?since=t2 holds only the erasure's exit. */
    snprintf(path, sizeof path, "/v1/segments/%lld/changes?since=%s", seg, t2);
    json_t *doc = expect("GET", path, NULL, 200);
    json_t *data = json_object_get(doc, "data");
    ck_assert_int_eq(json_array_size(data), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(data, 0), "customer_id")),
                     c);
    json_decref(doc);
    drop_segment(seg);
}
END_TEST

/* ---- segments of segments ------------------------------------------------------------ */

/* A segment a live treatment rule's condition names cannot be deleted
 * (409), until the rule is. */
START_TEST(a_segment_a_treatment_rule_names_is_kept)
{
    char tag[48], name[64], body[512], path[64];
    harness_unique(tag, sizeof tag, "segrule");
    snprintf(name, sizeof name, "named %s", tag);
    long long seg = new_segment(name, "{\"field\": \"address.country\", \"op\": \"eq\","
                                      " \"value\": \"IT\"}");
    snprintf(body, sizeof body,
             "{\"name\": \"rule %s\", \"condition\": {\"segment\": %lld},"
             " \"treatment\": {\"action\": {\"code\": \"a\"}}}",
             tag, seg);
    json_t *rule = expect("POST", "/v1/treatment-rules", body, 201);
    snprintf(path, sizeof path, "/v1/segments/%lld", seg);
    json_t *refused = expect("DELETE", path, NULL, 409);
    json_decref(refused);
    char rpath[64];
    snprintf(rpath, sizeof rpath, "/v1/treatment-rules/%lld", id_of(rule));
    json_decref(rule);
    json_decref(expect("DELETE", rpath, NULL, 204));
    json_decref(expect("DELETE", path, NULL, 204));
}
END_TEST

START_TEST(segments_of_segments_follow_in_order_and_cycles_are_refused)
{
    char tag[48], name[64], rule[512], source[48];
    harness_unique(tag, sizeof tag, "segdeps");
    harness_unique(source, sizeof source, "segdpos");
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "FR");
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"IT\"}]}",
             tag);
    snprintf(name, sizeof name, "italians %s", tag);
    long long italians = new_segment(name, rule);
    wait_live(italians);
    /* Italians who bought: names the first segment. */
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"segment\": %lld}, {\"touchpoints\": {\"type\": \"purchase\"},"
             " \"agg\": \"count\", \"op\": \"gte\", \"value\": 1}]}",
             italians);
    snprintf(name, sizeof name, "italian buyers %s", tag);
    long long buyers = new_segment(name, rule);
    wait_live(buyers);
    json_t *doc = get_segment(buyers);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(doc, "depends_on"), 0)),
                     italians);
    json_decref(doc);

    post_purchase(a, source, "a-1");
    post_purchase(b, source, "b-1");
    long long only_a[] = {a};
    assert_members(buyers, only_a, 1);
    /* b moves to Italy: enters the first segment and, in the same
     * transaction, the second. */
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld", b);
    json_decref(expect("PATCH", path, "{\"address\": {\"country\": \"IT\"}}", 200));
    long long both[] = {a, b};
    assert_members(italians, both, 2);
    assert_members(buyers, both, 2);

    /* The first segment's new rule (only a's tag... Italians named Seg
     * with country FR): rebuilt, and the second with it. */
    snprintf(rule, sizeof rule,
             "{\"rule\": {\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"FR\"}]}}",
             tag);
    snprintf(path, sizeof path, "/v1/segments/%lld", italians);
    json_decref(expect("PATCH", path, rule, 200));
    wait_live(italians);
    wait_live(buyers);
    assert_members(italians, NULL, 0);
    assert_members(buyers, NULL, 0);
    assert_last_change(buyers, a, "left", "segment");

    /* A cycle: the first naming the second. */
    snprintf(rule, sizeof rule, "{\"rule\": {\"all\": [{\"segment\": %lld}]}}", buyers);
    http_response r = send_json("PATCH", path, writer.secret, rule, NULL);
    json_t *p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/rule/all/0/segment"));
    json_decref(p);
    http_response_free(&r);
    /* A segment that names itself, and one that does not exist. */
    snprintf(rule, sizeof rule, "{\"rule\": {\"not\": {\"segment\": %lld}}}", italians);
    r = send_json("PATCH", path, writer.secret, rule, NULL);
    p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/rule/not/segment"));
    json_decref(p);
    http_response_free(&r);
    r = send_json("PATCH", path, writer.secret, "{\"rule\": {\"segment\": 999999999}}", NULL);
    p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/rule/segment"));
    json_decref(p);
    http_response_free(&r);

    /* Named by another: cannot be deleted. */
    r = send_json("DELETE", path, writer.secret, NULL, NULL);
    json_decref(assert_problem(&r, 409));
    http_response_free(&r);
    drop_segment(buyers);
    drop_segment(italians);
}
END_TEST

START_TEST(membership_changes_appear_in_the_sync_feed)
{
    char tag[48], name[64], rule[256];
    harness_unique(tag, sizeof tag, "segsync");
    snprintf(rule, sizeof rule, "{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"}",
             tag);
    snprintf(name, sizeof name, "sync %s", tag);
    long long seg = new_segment(name, rule);
    wait_live(seg);
    /* Read the feed to its end, then make a change. */
    char cursor[512] = "", path[700];
    for (int i = 0; i < 1000; i++) {
        snprintf(path, sizeof path, "/v1/sync/segment-memberships?limit=1000%s%s",
                 cursor[0] ? "&cursor=" : "", cursor);
        json_t *doc = expect("GET", path, NULL, 200);
        size_t n = json_array_size(json_object_get(doc, "data"));
        snprintf(cursor, sizeof cursor, "%s",
                 json_string_value(json_object_get(doc, "next_cursor")));
        json_decref(doc);
        if (n == 0)
            break;
    }
    long long a = new_customer(tag, "IT");
    snprintf(path, sizeof path, "/v1/customers/%lld", a);
    json_decref(expect("DELETE", path, NULL, 204));
    snprintf(path, sizeof path, "/v1/sync/segment-memberships?limit=1000&cursor=%s", cursor);
    json_t *doc = expect("GET", path, NULL, 200);
    json_t *e;
    size_t i;
    int seen = 0;
    json_array_foreach(json_object_get(doc, "data"), i, e)
    {
        if (json_integer_value(json_object_get(e, "segment_id")) != seg)
            continue;
        ck_assert_int_eq(json_integer_value(json_object_get(e, "customer_id")), a);
        ck_assert_str_eq(json_string_value(json_object_get(e, "change")),
                         seen == 0 ? "entered" : "left");
        ck_assert_str_eq(json_string_value(json_object_get(e, "cause")), "customer");
        seen++;
    }
    ck_assert_int_eq(seen, 2);
    json_decref(doc);
    drop_segment(seg);
}
END_TEST

/* ---- metrics ------------------------------------------------------------------------ */

/* The metrics' follower updates a buyer's metrics after a purchase; the
 * segments that read metrics follow right after (the queue). */
START_TEST(memberships_follow_the_metrics_follower)
{
    char tag[48], name[64], rule[512], source[48];
    harness_unique(tag, sizeof tag, "segmetrics");
    harness_unique(source, sizeof source, "segmpos");
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "IT");
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"field\": \"metrics.purchases\", \"op\": \"gte\", \"value\": 2}]}",
             tag);
    snprintf(name, sizeof name, "repeat buyers %s", tag);
    long long seg = new_segment(name, rule);
    wait_live(seg);
    assert_members(seg, NULL, 0);
    post_purchase(a, source, "m-1");
    post_purchase(a, source, "m-2");
    post_purchase(b, source, "m-3");
    bool in = false;
    long long got[4];
    for (int i = 0; i < 200 && !in; i++) {
        harness_sleep_ms(100);
        in = members(seg, NULL, got, 4) == 1;
    }
    ck_assert_msg(in, "the follower's metrics did not bring the repeat buyer in");
    long long only_a[] = {a};
    assert_members(seg, only_a, 1);
    assert_last_change(seg, a, "entered", "metrics");
    drop_segment(seg);
}
END_TEST

/* ---- time passing ---------------------------------------------------------------- */

/* A purchase dated 30 days less a few seconds ago is inside a 30-day window
 * now and leaves it in those seconds, with no write: the upkeep moves the
 * customer out at the stored flip time (CRMD_SEGMENTS_TICK_MS=200 here). */
START_TEST(a_rolling_window_moves_people_out_with_no_write)
{
    char tag[48], name[64], rule[512], source[48], body[512], when[40];
    harness_unique(tag, sizeof tag, "segtime");
    harness_unique(source, sizeof source, "segtpos");
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "IT");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* a's purchase leaves the window 4 s from now; b's in 10 days. */
    long long offsets_s[] = {30LL * 86400 - 4, 20LL * 86400};
    long long who[] = {a, b};
    for (int i = 0; i < 2; i++) {
        time_t t = ts.tv_sec - (time_t)offsets_s[i];
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(body, sizeof body,
                 "{\"customer_id\": %lld, \"channel\": \"store\", \"type\": \"purchase\","
                 " \"direction\": \"inbound\", \"occurred_at\": \"%s\", \"source\": \"%s\","
                 " \"event_id\": \"t-%d\", \"amount\": 10, \"currency\": \"EUR\"}",
                 who[i], when, source, i);
        json_decref(expect("POST", "/v1/touchpoints", body, 201));
    }
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
             " {\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30}, \"agg\": \"count\","
             " \"op\": \"gte\", \"value\": 1}]}",
             tag);
    snprintf(name, sizeof name, "recent buyers %s", tag);
    long long seg = new_segment(name, rule);
    wait_live(seg);
    long long both[] = {a, b};
    assert_members(seg, both, 2);
    char segtext[24];
    snprintf(segtext, sizeof segtext, "%lld", seg);
    /* Each member's next possible change is stored: a's in seconds. */
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(*) FROM segment_flips WHERE segment_id ="
                                        " $1::bigint AND flip_at < now() + interval '10 seconds'",
                                        segtext),
                     1);
    long long only_b[] = {b};
    bool moved = false;
    for (int i = 0; i < 150 && !moved; i++) {
        harness_sleep_ms(100);
        long long got[4];
        moved = members(seg, NULL, got, 4) == 1;
    }
    ck_assert_msg(moved, "the purchase left the window but its customer is still a member");
    assert_members(seg, only_b, 1);
    assert_last_change(seg, a, "left", "time");
    /* The move happened within the documented delay of the flip. */
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(*) FROM segment_changes x WHERE segment_id ="
                                        " $1::bigint AND cause = 'time' AND at < (SELECT min("
                                        "occurred_at) + interval '30 days' FROM touchpoints WHERE"
                                        " source IN (SELECT source FROM touchpoints WHERE"
                                        " customer_id = x.customer_id)) + interval '3 seconds'",
                                        segtext),
                     1);
    drop_segment(seg);
}
END_TEST

Suite *segments_suite(void)
{
    Suite *s = suite_create("segments");
    TCase *tc = tcase_create("segments");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_segment_is_created_built_read_patched_and_deleted);
    tcase_add_test(tc, bad_definitions_are_refused_with_the_pointer_of_the_bad_node);
    tcase_add_test(tc, memberships_follow_customer_touchpoint_and_consent_writes);
    tcase_add_test(tc, who_rejected_an_offer_twice_in_thirty_days_is_found_by_its_offer_code);
    tcase_add_test(tc, a_merge_and_an_erasure_move_people_out_and_the_log_answers_at);
    tcase_add_test(tc, segments_of_segments_follow_in_order_and_cycles_are_refused);
    tcase_add_test(tc, membership_changes_appear_in_the_sync_feed);
    tcase_add_test(tc, a_rolling_window_moves_people_out_with_no_write);
    tcase_add_test(tc, memberships_follow_the_metrics_follower);
    tcase_add_test(tc, a_segment_a_treatment_rule_names_is_kept);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_campaigns.c — campaign definitions over real HTTP (/v1/campaigns):
 * create, read, list, merge patch under a required If-Match, delete of a
 * draft; bad input refused with its pointer and nothing stored; the status
 * machine (every allowed move, and 409 with allowed_transitions for the
 * others); what a running or final campaign may not change; the versions.
 *
 * Each test's campaigns have codes of their own (harness_unique); the
 * list may hold other tests' campaigns: only this test's are checked.
 * running is entered by execution, which does not exist yet: the tests
 * set it in SQL.
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
    crmd_fixture_start(&srv, NULL);
    if (writer.id == 0)
        ck_assert(api_key_create("campaigns:read,campaigns:write,segments:read,segments:write,"
                                 "rules:read,rules:write",
                                 &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("campaigns:read", &reader));
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

/* method path with the writer's key (and If-Match when not NULL); asserts
 * the status; the body parsed. */
static json_t *expect_if(const char *method, const char *path, const char *body,
                         const char *if_match, long status)
{
    http_response r = send_json(method, path, writer.secret, body, if_match);
    ck_assert_msg(r.status == status, "%s %s %s answered %ld, not %ld: %.700s", method, path,
                  body ? body : "", r.status, status, r.body);
    json_t *doc = r.body_len ? http_response_json(&r) : NULL;
    http_response_free(&r);
    return doc;
}

static json_t *expect(const char *method, const char *path, const char *body, long status)
{
    return expect_if(method, path, body, NULL, status);
}

static long long int_member(const json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(doc, key));
}

static const char *str_member(const json_t *doc, const char *key)
{
    const char *s = json_string_value(json_object_get(doc, key));
    return s ? s : "";
}

/* An RFC 3339 instant days from now (negative: in the past). */
static void instant(char *out, size_t size, int days)
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A live segment of this test; its id. */
static long long new_segment(const char *tag)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"name\": \"camp %s\", \"rule\": {\"field\": \"tags\", \"op\": \"contains\","
             " \"value\": \"%s\"}}",
             tag, tag);
    json_t *doc = expect("POST", "/v1/segments", body, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    return id;
}

/* A live treatment rule of this test; its id. */
static long long new_rule(const char *tag)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"name\": \"camp %s\", \"condition\": {\"field\": \"tags\", \"op\": \"contains\","
             " \"value\": \"%s\"}, \"treatment\": {}}",
             tag, tag);
    json_t *doc = expect("POST", "/v1/treatment-rules", body, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    return id;
}

/* A minimal valid body for code, reaching segment seg. */
static void minimal_body(char *out, size_t size, const char *code, long long seg)
{
    snprintf(out, size,
             "{\"code\": \"%s\", \"name\": \"Campaign %s\", \"audience\": {\"segment_id\": %lld},"
             " \"channels\": [\"email\"], \"purpose\": \"marketing\", \"control_share\": 0.1,"
             " \"response_types\": [\"purchase\"]}",
             code, code, seg);
}

static long long new_campaign(const char *code, long long seg)
{
    char body[1024];
    minimal_body(body, sizeof body, code, seg);
    json_t *doc = expect("POST", "/v1/campaigns", body, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    return id;
}

static long long campaigns_with_code(const char *code)
{
    return harness_sql_number(db, "SELECT count(*) FROM campaigns WHERE code = $1", code);
}

static long long version_of(long long id)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    return harness_sql_number(db, "SELECT version FROM campaigns WHERE id = $1::bigint", idbuf);
}

/* The campaign's ETag as the server sends it. */
static void etag_of(long long id, char *out, size_t size)
{
    snprintf(out, size, "\"%lld\"", version_of(id));
}

/* PATCH path with the campaign's current ETag; asserts the status. */
static json_t *patch(long long id, const char *body, long status)
{
    char path[64], etag[32];
    snprintf(path, sizeof path, "/v1/campaigns/%lld", id);
    etag_of(id, etag, sizeof etag);
    return expect_if("PATCH", path, body, etag, status);
}

/* Moves the campaign to running as its execution would (in SQL). */
static void set_running(long long id)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    ck_assert_int_eq(
        harness_sql_number(db,
                           "UPDATE campaigns SET status = 'running' WHERE id = $1::bigint"
                           " AND starts_at IS NOT NULL RETURNING 1",
                           idbuf),
        1);
}

static const char *status_in_db(long long id, char *out, size_t size)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGresult *res = PQexecParams(db, "SELECT status FROM campaigns WHERE id = $1::bigint", 1, NULL,
                                 params, NULL, NULL, 0);
    ck_assert(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1);
    snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

/* The 409 of an invalid move lists exactly the statuses given (NULL-ended). */
static void assert_refused_move(long long id, const char *to, const char *const *allowed)
{
    char path[64], etag[32], body[64];
    snprintf(path, sizeof path, "/v1/campaigns/%lld", id);
    etag_of(id, etag, sizeof etag);
    snprintf(body, sizeof body, "{\"status\": \"%s\"}", to);
    long long before = version_of(id);
    http_response r = send_json("PATCH", path, writer.secret, body, etag);
    json_t *p = assert_problem(&r, 409);
    http_response_free(&r);
    json_t *list = json_object_get(p, "allowed_transitions");
    ck_assert_msg(json_is_array(list), "no allowed_transitions moving to %s", to);
    size_t n = 0;
    while (allowed[n] != NULL)
        n++;
    ck_assert_int_eq(json_array_size(list), n);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(json_string_value(json_array_get(list, i)), allowed[i]);
    json_decref(p);
    ck_assert_int_eq(version_of(id), before);
}

/* ---- definitions ------------------------------------------------------------------ */

START_TEST(a_campaign_is_created_read_listed_patched_and_deleted)
{
    char tag[48], code[64], body[2048], starts[32], ends[32];
    harness_unique(tag, sizeof tag, "campcrud");
    snprintf(code, sizeof code, "C-%s", tag);
    long long seg = new_segment(tag), rule = new_rule(tag);
    instant(starts, sizeof starts, 10);
    instant(ends, sizeof ends, 40);
    snprintf(body, sizeof body,
             "{\"code\": \"%s\", \"name\": \"Spring\", \"objective\": \"win back\","
             " \"audience\": {\"segment_id\": %lld}, \"channels\": [\"sms\", \"email\"],"
             " \"purpose\": \"marketing\", \"offer_code\": \"SPRING10\", \"starts_at\": \"%s\","
             " \"ends_at\": \"%s\", \"control_share\": 0.25, \"cost_per_contact\": \"0.0525\","
             " \"fixed_cost\": 1500, \"currency\": \"EUR\", \"response_types\": [\"purchase\","
             " \"offer_accepted\"], \"attribution_days\": 14, \"status\": \"draft\"}",
             code, seg, starts, ends);
    http_response r = send_json("POST", "/v1/campaigns", writer.secret, body, NULL);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    json_t *doc = http_response_json(&r);
    long long id = int_member(doc, "id");
    char location[64];
    snprintf(location, sizeof location, "/v1/campaigns/%lld", id);
    ck_assert_str_eq(http_response_header(&r, "Location"), location);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    http_response_free(&r);
    ck_assert_str_eq(str_member(doc, "code"), code);
    ck_assert_str_eq(str_member(doc, "name"), "Spring");
    ck_assert_str_eq(str_member(doc, "objective"), "win back");
    json_t *aud = json_object_get(doc, "audience");
    ck_assert_int_eq(int_member(aud, "segment_id"), seg);
    ck_assert(json_is_null(json_object_get(aud, "rule_id")));
    ck_assert_int_eq(json_array_size(json_object_get(doc, "channels")), 2);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(doc, "channels"), 0)), "sms");
    ck_assert_str_eq(str_member(doc, "offer_code"), "SPRING10");
    ck_assert(json_number_value(json_object_get(doc, "control_share")) == 0.25);
    ck_assert_str_eq(str_member(doc, "cost_per_contact"), "0.0525");
    ck_assert_str_eq(str_member(doc, "fixed_cost"), "1500.00");
    ck_assert_str_eq(str_member(doc, "currency"), "EUR");
    ck_assert_int_eq(json_array_size(json_object_get(doc, "response_types")), 2);
    ck_assert_int_eq(int_member(doc, "attribution_days"), 14);
    ck_assert_str_eq(str_member(doc, "status"), "draft");
    ck_assert_int_eq(strlen(str_member(doc, "salt")), 36);
    ck_assert_int_eq(int_member(doc, "version"), 1);
    /* the window reads back in UTC with milliseconds */
    ck_assert_int_eq(strlen(str_member(doc, "starts_at")), 24);
    ck_assert_int_eq(strncmp(str_member(doc, "starts_at"), starts, 19), 0);
    char salt[40];
    snprintf(salt, sizeof salt, "%s", str_member(doc, "salt"));
    json_decref(doc);

    /* The same code again: 409, one stored; a reader may read, not write. */
    r = send_json("POST", "/v1/campaigns", writer.secret, body, NULL);
    json_decref(assert_problem(&r, 409));
    http_response_free(&r);
    ck_assert_int_eq(campaigns_with_code(code), 1);
    r = send_json("POST", "/v1/campaigns", reader.secret, body, NULL);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    r = send_json("GET", location, reader.secret, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    doc = http_response_json(&r);
    ck_assert_str_eq(str_member(doc, "salt"), salt);
    json_decref(doc);
    http_response_free(&r);
    r = send_json("PATCH", location, reader.secret, "{\"name\": \"x\"}", "\"1\"");
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);

    /* PATCH without If-Match: 428; under a stale ETag: 412; nothing changed. */
    r = send_json("PATCH", location, writer.secret, "{\"name\": \"Summer\"}", NULL);
    json_decref(assert_problem(&r, 428));
    http_response_free(&r);
    r = send_json("PATCH", location, writer.secret, "{\"name\": \"Summer\"}", "\"7\"");
    json_decref(assert_problem(&r, 412));
    http_response_free(&r);
    ck_assert_int_eq(version_of(id), 1);

    /* Under the right one: the audience moves from the segment to the rule
     * (merge patch), the objective goes, the rest stays. */
    char patch_body[256];
    snprintf(patch_body, sizeof patch_body,
             "{\"name\": \"Summer\", \"objective\": null, \"audience\": {\"segment_id\": null,"
             " \"rule_id\": %lld}}",
             rule);
    r = send_json("PATCH", location, writer.secret, patch_body, "\"1\"");
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"2\"");
    doc = http_response_json(&r);
    http_response_free(&r);
    ck_assert_str_eq(str_member(doc, "name"), "Summer");
    ck_assert(json_is_null(json_object_get(doc, "objective")));
    aud = json_object_get(doc, "audience");
    ck_assert(json_is_null(json_object_get(aud, "segment_id")));
    ck_assert_int_eq(int_member(aud, "rule_id"), rule);
    ck_assert_str_eq(str_member(doc, "offer_code"), "SPRING10");
    ck_assert_str_eq(str_member(doc, "fixed_cost"), "1500.00");
    ck_assert_str_eq(str_member(doc, "salt"), salt);
    json_decref(doc);

    /* The list: this draft is among the drafts, not among the scheduled;
     * pages of one follow the cursor. */
    long long second = new_campaign(tag, seg);
    bool found = false;
    char path[320];
    snprintf(path, sizeof path, "/v1/campaigns?status=draft&limit=200");
    doc = expect("GET", path, NULL, 200);
    for (size_t i = 0; i < json_array_size(json_object_get(doc, "data")); i++)
        found = found || int_member(json_array_get(json_object_get(doc, "data"), i), "id") == id;
    ck_assert(found);
    json_decref(doc);
    doc = expect("GET", "/v1/campaigns?status=scheduled&limit=200", NULL, 200);
    for (size_t i = 0; i < json_array_size(json_object_get(doc, "data")); i++) {
        json_t *c = json_array_get(json_object_get(doc, "data"), i);
        ck_assert_int_ne(int_member(c, "id"), id);
        ck_assert_str_eq(str_member(c, "status"), "scheduled");
    }
    json_decref(doc);
    r = send_json("GET", "/v1/campaigns?status=paused", writer.secret, NULL, NULL);
    json_t *p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "status"));
    json_decref(p);
    http_response_free(&r);
    /* id and second are consecutive among live campaigns only if nothing
     * came between; walk pages of one from before id until both are seen */
    int seen = 0;
    char after[256] = "";
    for (int page = 0; page < 10000 && seen < 2; page++) {
        snprintf(path, sizeof path, "/v1/campaigns?limit=1%s%s", after[0] ? "&after=" : "", after);
        doc = expect("GET", path, NULL, 200);
        json_t *data = json_object_get(doc, "data");
        ck_assert_int_le(json_array_size(data), 1);
        if (json_array_size(data) == 1) {
            long long got = int_member(json_array_get(data, 0), "id");
            seen += got == id || got == second;
        }
        const char *next = json_string_value(json_object_get(doc, "next_cursor"));
        if (next == NULL) {
            json_decref(doc);
            break;
        }
        snprintf(after, sizeof after, "%s", next);
        json_decref(doc);
    }
    ck_assert_int_eq(seen, 2);

    /* Delete: a stale ETag is 412; then 204, and it is gone. */
    r = send_json("DELETE", location, writer.secret, NULL, "\"1\"");
    json_decref(assert_problem(&r, 412));
    http_response_free(&r);
    json_decref(expect_if("DELETE", location, NULL, "\"2\"", 204));
    r = send_json("GET", location, writer.secret, NULL, NULL);
    json_decref(assert_problem(&r, 404));
    http_response_free(&r);
    /* Its code is free again (a draft never carried it in a touchpoint). */
    json_decref(expect("POST", "/v1/campaigns", body, 201));
}
END_TEST

START_TEST(bad_campaigns_are_refused_with_the_pointer_and_nothing_is_stored)
{
    char tag[48], code[64], body[2048];
    harness_unique(tag, sizeof tag, "campbad");
    snprintf(code, sizeof code, "B-%s", tag);
    long long seg = new_segment(tag), rule = new_rule(tag);
    /* a deleted rule and a deleted segment */
    char rtag[64], path[64];
    snprintf(rtag, sizeof rtag, "%s-gone", tag);
    long long gone_rule = new_rule(rtag), gone_seg = new_segment(rtag);
    snprintf(path, sizeof path, "/v1/treatment-rules/%lld", gone_rule);
    json_decref(expect("DELETE", path, NULL, 204));
    snprintf(path, sizeof path, "/v1/segments/%lld", gone_seg);
    json_decref(expect("DELETE", path, NULL, 204));

    /* Each case: the members that replace the minimal body's, and the
     * pointer the 422 names. */
    char seg_audience[64], rule_audience[64], gone_rule_audience[64], gone_seg_audience[64],
        both_audience[96];
    snprintf(seg_audience, sizeof seg_audience, "\"audience\": {\"segment_id\": %lld}", seg);
    snprintf(rule_audience, sizeof rule_audience, "\"audience\": {\"rule_id\": %lld}", rule);
    snprintf(gone_rule_audience, sizeof gone_rule_audience, "\"audience\": {\"rule_id\": %lld}",
             gone_rule);
    snprintf(gone_seg_audience, sizeof gone_seg_audience, "\"audience\": {\"segment_id\": %lld}",
             gone_seg);
    snprintf(both_audience, sizeof both_audience,
             "\"audience\": {\"segment_id\": %lld, \"rule_id\": %lld}", seg, rule);
    const struct {
        const char *audience, *members, *pointer;
    } cases[] = {
        {seg_audience, "\"colour\": \"red\"", "/colour"},
        {"\"audience\": {\"segment_id\": 999999999}", "\"objective\": \"x\"",
         "/audience/segment_id"},
        {gone_seg_audience, "\"objective\": \"x\"", "/audience/segment_id"},
        {gone_rule_audience, "\"objective\": \"x\"", "/audience/rule_id"},
        {both_audience, "\"objective\": \"x\"", "/audience"},
        {"\"audience\": {}", "\"objective\": \"x\"", "/audience"},
        {"\"audience\": {\"segment_id\": 1, \"team\": 2}", "\"objective\": \"x\"",
         "/audience/team"},
        {seg_audience, "\"control_share\": 0.6", "/control_share"},
        {seg_audience, "\"control_share\": -0.01", "/control_share"},
        {seg_audience, "\"control_share\": \"0.1\"", "/control_share"},
        {seg_audience,
         "\"starts_at\": \"2030-02-01T00:00:00Z\", \"ends_at\": \"2030-01-01T00:00:00Z\"",
         "/ends_at"},
        {seg_audience,
         "\"starts_at\": \"2030-02-01T00:00:00Z\", \"ends_at\": \"2030-02-01T00:00:00Z\"",
         "/ends_at"},
        {seg_audience, "\"starts_at\": \"next week\"", "/starts_at"},
        {seg_audience, "\"purpose\": null", "/purpose"},
        {seg_audience, "\"purpose\": \"sales\"", "/purpose"},
        {seg_audience, "\"channels\": [\"email\", \"fax\"]", "/channels/1"},
        {seg_audience, "\"channels\": [\"email\", \"email\"]", "/channels/1"},
        {seg_audience, "\"channels\": []", "/channels"},
        {seg_audience, "\"response_types\": [\"purchase\", \"like\"]", "/response_types/1"},
        {seg_audience, "\"response_types\": [\"visit\", \"purchase\", \"visit\"]",
         "/response_types/2"},
        {seg_audience, "\"response_types\": []", "/response_types"},
        {seg_audience, "\"cost_per_contact\": \"-1\", \"currency\": \"EUR\"", "/cost_per_contact"},
        {seg_audience, "\"fixed_cost\": -5, \"currency\": \"EUR\"", "/fixed_cost"},
        {seg_audience, "\"cost_per_contact\": \"0.12345\", \"currency\": \"EUR\"",
         "/cost_per_contact"},
        {seg_audience, "\"fixed_cost\": 100.5, \"currency\": \"EUR\"", "/fixed_cost"},
        {seg_audience, "\"cost_per_contact\": \"0.05\"", "/currency"},
        {seg_audience, "\"fixed_cost\": \"10\", \"currency\": \"EURO\"", "/currency"},
        {seg_audience, "\"attribution_days\": 0", "/attribution_days"},
        {seg_audience, "\"attribution_days\": 366", "/attribution_days"},
        {seg_audience, "\"offer_code\": \"\"", "/offer_code"},
        {seg_audience, "\"status\": \"running\"", "/status"},
        {seg_audience, "\"name\": \"\"", "/name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* the case's members replace the base's */
        snprintf(body, sizeof body,
                 "{\"code\": \"%s\", \"name\": \"Bad\", \"channels\": [\"email\"],"
                 " \"purpose\": \"marketing\", \"control_share\": 0.1,"
                 " \"response_types\": [\"purchase\"], %s}",
                 code, cases[i].audience);
        json_t *base = json_loads(body, 0, NULL);
        snprintf(body, sizeof body, "{%s}", cases[i].members);
        json_t *extra = json_loads(body, 0, NULL);
        ck_assert(base != NULL && extra != NULL);
        json_object_update(base, extra);
        char *text = json_dumps(base, JSON_COMPACT);
        snprintf(body, sizeof body, "%s", text);
        free(text);
        json_decref(base);
        json_decref(extra);
        http_response r = send_json("POST", "/v1/campaigns", writer.secret, body, NULL);
        ck_assert_msg(r.status == 422, "case %zu (%s) answered %ld: %s", i, cases[i].pointer,
                      r.status, r.body);
        json_t *p = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(p, cases[i].pointer), "case %zu: %s not named in %s", i,
                      cases[i].pointer, r.body);
        json_decref(p);
        http_response_free(&r);
    }
    /* a code of 101 characters, and none */
    char long_code[128];
    memset(long_code, 'k', 101);
    long_code[101] = '\0';
    minimal_body(body, sizeof body, long_code, seg);
    http_response r = send_json("POST", "/v1/campaigns", writer.secret, body, NULL);
    json_t *p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/code"));
    json_decref(p);
    http_response_free(&r);
    ck_assert_int_eq(campaigns_with_code(code), 0);
    ck_assert_int_eq(campaigns_with_code(long_code), 0);

    /* The minimal body itself is good, with the rule as audience too. */
    minimal_body(body, sizeof body, code, seg);
    json_t *doc = expect("POST", "/v1/campaigns", body, 201);
    long long id = int_member(doc, "id");
    /* defaults */
    ck_assert_int_eq(int_member(doc, "attribution_days"), 30);
    ck_assert_str_eq(str_member(doc, "cost_per_contact"), "0.0000");
    ck_assert_str_eq(str_member(doc, "fixed_cost"), "0.00");
    ck_assert(json_is_null(json_object_get(doc, "currency")));
    ck_assert(json_is_null(json_object_get(doc, "starts_at")));
    json_decref(doc);

    /* Bad patches: 422 with the pointer, the version unchanged. */
    char gone_patch[96];
    snprintf(gone_patch, sizeof gone_patch,
             "{\"audience\": {\"segment_id\": null, \"rule_id\": %lld}}", gone_rule);
    const struct {
        const char *body, *pointer;
    } patches[] = {
        {"{\"control_share\": 0.51}", "/control_share"},
        {"{\"name\": null}", "/name"},
        {"{\"channels\": null}", "/channels"},
        {"{\"fixed_cost\": \"3\"}", "/currency"},
        {"{\"salt\": \"00000000-0000-0000-0000-000000000000\"}", "/salt"},
        {"{\"status\": \"paused\"}", "/status"},
        {"{\"audience\": {\"rule_id\": 1}}", "/audience"},
        {gone_patch, "/audience/rule_id"},
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        char loc[64], etag[32];
        snprintf(loc, sizeof loc, "/v1/campaigns/%lld", id);
        etag_of(id, etag, sizeof etag);
        r = send_json("PATCH", loc, writer.secret, patches[i].body, etag);
        ck_assert_msg(r.status == 422, "patch %zu answered %ld: %s", i, r.status, r.body);
        p = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(p, patches[i].pointer), "patch %zu: %s not in %s", i,
                      patches[i].pointer, r.body);
        json_decref(p);
        http_response_free(&r);
        ck_assert_int_eq(version_of(id), 1);
    }
    snprintf(rtag, sizeof rtag, "%lld", id);
    ck_assert_int_eq(
        harness_sql_number(
            db, "SELECT count(*) FROM campaign_versions WHERE campaign_id = $1::bigint", rtag),
        1);
}
END_TEST

/* ---- the status machine ---------------------------------------------------------- */

START_TEST(the_status_moves_only_as_the_machine_allows)
{
    char tag[48], code[64], body[256], starts[32], ends[32], past[32];
    harness_unique(tag, sizeof tag, "campstat");
    long long seg = new_segment(tag);
    instant(starts, sizeof starts, 5);
    instant(ends, sizeof ends, 20);
    instant(past, sizeof past, -1);
    char st[32];

    snprintf(code, sizeof code, "S1-%s", tag);
    long long a = new_campaign(code, seg);
    /* draft -> scheduled needs the window, its start in the future */
    json_t *p = patch(a, "{\"status\": \"scheduled\"}", 422);
    ck_assert(problem_names_field(p, "/starts_at"));
    ck_assert(problem_names_field(p, "/ends_at"));
    json_decref(p);
    snprintf(body, sizeof body,
             "{\"status\": \"scheduled\", \"starts_at\": \"%s\", \"ends_at\": \"%s\"}", past, ends);
    p = patch(a, body, 422);
    ck_assert(problem_names_field(p, "/starts_at"));
    ck_assert(!problem_names_field(p, "/ends_at"));
    json_decref(p);
    ck_assert_str_eq(status_in_db(a, st, sizeof st), "draft");
    ck_assert_int_eq(version_of(a), 1);
    /* a draft may go to running only by execution */
    assert_refused_move(a, "running", (const char *const[]){"scheduled", "cancelled", NULL});
    assert_refused_move(a, "completed", (const char *const[]){"scheduled", "cancelled", NULL});

    /* draft -> scheduled (window and status in one patch) */
    snprintf(body, sizeof body,
             "{\"status\": \"scheduled\", \"starts_at\": \"%s\", \"ends_at\": \"%s\"}", starts,
             ends);
    json_t *doc = patch(a, body, 200);
    ck_assert_str_eq(str_member(doc, "status"), "scheduled");
    json_decref(doc);
    assert_refused_move(a, "running", (const char *const[]){"draft", "cancelled", NULL});
    assert_refused_move(a, "completed", (const char *const[]){"draft", "cancelled", NULL});
    /* a scheduled campaign keeps a future start and both ends */
    p = patch(a, "{\"ends_at\": null}", 422);
    ck_assert(problem_names_field(p, "/ends_at"));
    json_decref(p);
    snprintf(body, sizeof body, "{\"starts_at\": \"%s\"}", past);
    json_decref(patch(a, body, 422));
    /* only a draft is deleted */
    char path[64], etag[32];
    snprintf(path, sizeof path, "/v1/campaigns/%lld", a);
    http_response r = send_json("DELETE", path, writer.secret, NULL, NULL);
    json_decref(assert_problem(&r, 409));
    http_response_free(&r);
    /* scheduled -> draft, draft -> scheduled again, scheduled -> cancelled */
    doc = patch(a, "{\"status\": \"draft\"}", 200);
    ck_assert_str_eq(str_member(doc, "status"), "draft");
    json_decref(doc);
    json_decref(patch(a, "{\"status\": \"scheduled\"}", 200));
    doc = patch(a, "{\"status\": \"cancelled\"}", 200);
    ck_assert_str_eq(str_member(doc, "status"), "cancelled");
    json_decref(doc);
    /* cancelled is final */
    assert_refused_move(a, "draft", (const char *const[]){NULL});
    assert_refused_move(a, "scheduled", (const char *const[]){NULL});
    assert_refused_move(a, "running", (const char *const[]){NULL});
    /* the same status again is no move */
    json_decref(patch(a, "{\"status\": \"cancelled\", \"name\": \"Done\"}", 200));
    r = send_json("DELETE", path, writer.secret, NULL, NULL);
    json_decref(assert_problem(&r, 409));
    http_response_free(&r);

    /* draft -> cancelled */
    snprintf(code, sizeof code, "S2-%s", tag);
    long long b = new_campaign(code, seg);
    json_decref(patch(b, "{\"status\": \"cancelled\"}", 200));
    ck_assert_str_eq(status_in_db(b, st, sizeof st), "cancelled");

    /* running -> completed (final), running -> cancelled */
    snprintf(code, sizeof code, "S3-%s", tag);
    long long c = new_campaign(code, seg);
    snprintf(body, sizeof body,
             "{\"status\": \"scheduled\", \"starts_at\": \"%s\", \"ends_at\": \"%s\"}", starts,
             ends);
    json_decref(patch(c, body, 200));
    set_running(c);
    assert_refused_move(c, "draft", (const char *const[]){"completed", "cancelled", NULL});
    assert_refused_move(c, "scheduled", (const char *const[]){"completed", "cancelled", NULL});
    doc = patch(c, "{\"status\": \"completed\"}", 200);
    ck_assert_str_eq(str_member(doc, "status"), "completed");
    json_decref(doc);
    assert_refused_move(c, "cancelled", (const char *const[]){NULL});
    assert_refused_move(c, "running", (const char *const[]){NULL});

    snprintf(code, sizeof code, "S4-%s", tag);
    long long d = new_campaign(code, seg);
    json_decref(patch(d, body, 200));
    set_running(d);
    json_decref(patch(d, "{\"status\": \"cancelled\"}", 200));
    ck_assert_str_eq(status_in_db(d, st, sizeof st), "cancelled");
    (void)etag;
}
END_TEST

START_TEST(a_running_campaign_keeps_its_audience_and_a_final_one_all_but_its_names)
{
    char tag[48], code[64], body[512], starts[32], ends[32], later[32];
    harness_unique(tag, sizeof tag, "camprun");
    long long seg = new_segment(tag), rule = new_rule(tag);
    instant(starts, sizeof starts, 3);
    instant(ends, sizeof ends, 30);
    instant(later, sizeof later, 60);
    snprintf(code, sizeof code, "R-%s", tag);
    long long id = new_campaign(code, seg);
    snprintf(body, sizeof body,
             "{\"status\": \"scheduled\", \"starts_at\": \"%s\", \"ends_at\": \"%s\","
             " \"offer_code\": \"O1\"}",
             starts, ends);
    json_decref(patch(id, body, 200));
    set_running(id);
    long long v = version_of(id);

    char rule_patch[128], starts_patch[96];
    snprintf(rule_patch, sizeof rule_patch,
             "{\"audience\": {\"segment_id\": null, \"rule_id\": %lld}}", rule);
    char moved[32];
    instant(moved, sizeof moved, 4);
    snprintf(starts_patch, sizeof starts_patch, "{\"starts_at\": \"%s\"}", moved);
    const struct {
        const char *body, *pointer;
    } locked[] = {
        {rule_patch, "/audience"},
        {"{\"channels\": [\"sms\"]}", "/channels"},
        {"{\"purpose\": \"service\"}", "/purpose"},
        {"{\"control_share\": 0.2}", "/control_share"},
        {"{\"offer_code\": \"O2\"}", "/offer_code"},
        {"{\"offer_code\": null}", "/offer_code"},
        {starts_patch, "/starts_at"},
        {"{\"code\": \"other\"}", "/code"},
    };
    for (size_t i = 0; i < sizeof locked / sizeof locked[0]; i++) {
        json_t *p = patch(id, locked[i].body, 409);
        ck_assert_msg(problem_names_field(p, locked[i].pointer), "%s not named", locked[i].pointer);
        ck_assert_msg(
            strstr(json_string_value(json_object_get(p, "detail")), locked[i].pointer + 1) != NULL,
            "the detail does not name %s", locked[i].pointer);
        json_decref(p);
        ck_assert_int_eq(version_of(id), v);
    }
    /* two at once: both named */
    json_t *p = patch(id, "{\"purpose\": \"service\", \"channels\": [\"sms\"]}", 409);
    ck_assert(problem_names_field(p, "/purpose") && problem_names_field(p, "/channels"));
    json_decref(p);
    /* a running campaign keeps an end */
    p = patch(id, "{\"ends_at\": null}", 422);
    ck_assert(problem_names_field(p, "/ends_at"));
    json_decref(p);
    ck_assert_int_eq(version_of(id), v);
    /* the same values again change nothing locked */
    json_decref(patch(id, "{\"control_share\": 0.1, \"channels\": [\"email\"]}", 200));
    /* what a running campaign may change */
    snprintf(body, sizeof body,
             "{\"name\": \"Renamed\", \"objective\": \"more\", \"ends_at\": \"%s\","
             " \"cost_per_contact\": \"0.5\", \"fixed_cost\": \"20\", \"currency\": \"GBP\","
             " \"response_types\": [\"visit\", \"purchase\"], \"attribution_days\": 7}",
             later);
    json_t *doc = patch(id, body, 200);
    ck_assert_str_eq(str_member(doc, "name"), "Renamed");
    ck_assert_str_eq(str_member(doc, "status"), "running");
    ck_assert_str_eq(str_member(doc, "cost_per_contact"), "0.5000");
    ck_assert_int_eq(int_member(doc, "attribution_days"), 7);
    json_decref(doc);

    /* completed: only the name and the objective */
    json_decref(patch(id, "{\"status\": \"completed\"}", 200));
    json_decref(patch(id, "{\"name\": \"Closed\", \"objective\": null}", 200));
    const char *final_locked[][2] = {
        {"{\"attribution_days\": 8}", "/attribution_days"},
        {"{\"fixed_cost\": \"21\"}", "/fixed_cost"},
        {"{\"response_types\": [\"visit\"]}", "/response_types"},
        {"{\"ends_at\": null}", "/ends_at"},
    };
    for (size_t i = 0; i < sizeof final_locked / sizeof final_locked[0]; i++) {
        p = patch(id, final_locked[i][0], 409);
        ck_assert(problem_names_field(p, final_locked[i][1]));
        ck_assert(json_object_get(p, "allowed_transitions") == NULL);
        json_decref(p);
    }
}
END_TEST

START_TEST(every_change_is_kept_as_a_version_with_its_status_and_key)
{
    char tag[48], code[64], body[256], starts[32], ends[32];
    harness_unique(tag, sizeof tag, "campver");
    long long seg = new_segment(tag);
    snprintf(code, sizeof code, "V-%s", tag);
    long long id = new_campaign(code, seg);
    json_decref(patch(id, "{\"name\": \"Second\"}", 200));
    instant(starts, sizeof starts, 2);
    instant(ends, sizeof ends, 4);
    snprintf(body, sizeof body,
             "{\"status\": \"scheduled\", \"starts_at\": \"%s\", \"ends_at\": \"%s\"}", starts,
             ends);
    json_decref(patch(id, body, 200));

    char path[96];
    snprintf(path, sizeof path, "/v1/campaigns/%lld/versions", id);
    json_t *doc = expect("GET", path, NULL, 200);
    json_t *data = json_object_get(doc, "data");
    ck_assert_int_eq(json_array_size(data), 3);
    const char *names[] = {"Campaign ", "Second", "Second"};
    const char *statuses[] = {"draft", "draft", "scheduled"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_array_get(data, i);
        ck_assert_int_eq(int_member(v, "version"), (long long)i + 1);
        ck_assert_str_eq(str_member(v, "status"), statuses[i]);
        ck_assert_int_eq(int_member(v, "api_key_id"), writer.id);
        json_t *def = json_object_get(v, "definition");
        ck_assert_int_eq(strncmp(str_member(def, "name"), names[i], strlen(names[i])), 0);
        ck_assert_str_eq(str_member(def, "code"), code);
        ck_assert(json_object_get(def, "status") == NULL);
    }
    json_t *first = json_object_get(json_array_get(data, 0), "definition");
    ck_assert(json_is_null(json_object_get(first, "starts_at")));
    json_t *last = json_object_get(json_array_get(data, 2), "definition");
    ck_assert(json_is_string(json_object_get(last, "starts_at")));
    ck_assert(json_is_null(json_object_get(doc, "next_cursor")));
    json_decref(doc);
    /* pages of one */
    snprintf(path, sizeof path, "/v1/campaigns/%lld/versions?limit=2", id);
    doc = expect("GET", path, NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "data")), 2);
    ck_assert(json_is_string(json_object_get(doc, "next_cursor")));
    json_decref(doc);
    json_decref(expect("GET", "/v1/campaigns/999999999/versions", NULL, 404));
}
END_TEST

Suite *campaigns_suite(void)
{
    Suite *s = suite_create("campaigns");
    TCase *tc = tcase_create("campaigns");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_campaign_is_created_read_listed_patched_and_deleted);
    tcase_add_test(tc, bad_campaigns_are_refused_with_the_pointer_and_nothing_is_stored);
    tcase_add_test(tc, the_status_moves_only_as_the_machine_allows);
    tcase_add_test(tc, a_running_campaign_keeps_its_audience_and_a_final_one_all_but_its_names);
    tcase_add_test(tc, every_change_is_kept_as_a_version_with_its_status_and_key);
    suite_add_tcase(s, tc);
    return s;
}

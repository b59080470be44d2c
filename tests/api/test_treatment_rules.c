/*
 * test_treatment_rules.c — treatment rules over real HTTP
 * (/v1/treatment-rules): their definitions (create, read, list in order of
 * evaluation, merge patch with If-Match, soft delete), the versions kept
 * whole, bad input refused with its pointer and nothing written, and the
 * simulation's counts against customers made here.
 *
 * Each test's conditions name a tag of its own, so the customers of other
 * tests never match; its rules are deleted at the end. The list and the
 * overlap may hold other tests' rules: only the order and the entries of
 * this test's own rules are checked.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static PGconn *db;
static api_key writer, reader;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (writer.id == 0)
        ck_assert(api_key_create("rules:read,rules:write,segments:read,segments:write", &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("rules:read", &reader));
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

/* method path with the writer's key; asserts the status; the body parsed. */
static json_t *expect(const char *method, const char *path, const char *body, long status)
{
    http_response r = send_json(method, path, writer.secret, body, NULL);
    ck_assert_msg(r.status == status, "%s %s answered %ld, not %ld: %.700s", method, path, r.status,
                  status, r.body);
    json_t *doc = r.body_len ? http_response_json(&r) : NULL;
    http_response_free(&r);
    return doc;
}

/* The same with the admin key (customers, consents). */
static json_t *admin(const char *method, const char *path, const char *body, long status)
{
    http_response r = send_json(method, path, harness_admin_key.secret, body, NULL);
    ck_assert_msg(r.status == status, "%s %s answered %ld, not %ld: %.500s", method, path, r.status,
                  status, r.body);
    json_t *doc = r.body_len ? http_response_json(&r) : NULL;
    http_response_free(&r);
    return doc;
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

static long long new_customer(const char *tag, const char *country)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"first_name\": \"Rule\", \"tags\": [\"%s\"], \"address\": {\"country\": \"%s\"}}",
             tag, country);
    json_t *doc = admin("POST", "/v1/customers", body, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    return id;
}

static void consent(long long customer, const char *channel, const char *purpose,
                    const char *status)
{
    char path[64], body[256];
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", customer);
    snprintf(body, sizeof body,
             "{\"channel\": \"%s\", \"purpose\": \"%s\", \"status\": \"%s\", \"source\": \"test\"}",
             channel, purpose, status);
    json_decref(admin("POST", path, body, 201));
}

/* A condition: the customer has tag (and, when country is not NULL, lives there). */
static void tag_condition(char *out, size_t size, const char *tag, const char *country)
{
    if (country == NULL)
        snprintf(out, size, "{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"}", tag);
    else
        snprintf(out, size,
                 "{\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"},"
                 " {\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"%s\"}]}",
                 tag, country);
}

/* Creates a rule from its body text; returns its id. */
static long long new_rule(const char *body)
{
    json_t *doc = expect("POST", "/v1/treatment-rules", body, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    return id;
}

static void drop_rule(long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/treatment-rules/%lld", id);
    json_decref(expect("DELETE", path, NULL, 204));
}

static long long stamp(void)
{
    return harness_sql_number(db, "SELECT stamp FROM treatment_config", NULL);
}

static long long live_rules_named(const char *name)
{
    return harness_sql_number(
        db, "SELECT count(*) FROM treatment_rules WHERE name = $1 AND deleted_at IS NULL", name);
}

/* ---- definitions --------------------------------------------------------------- */

START_TEST(a_rule_is_created_read_patched_under_its_etag_and_deleted)
{
    char tag[48], name[80], cond[256], body[1024];
    harness_unique(tag, sizeof tag, "trcrud");
    snprintf(name, sizeof name, "crud %s", tag);
    tag_condition(cond, sizeof cond, tag, "IT");
    snprintf(body, sizeof body,
             "{\"name\": \"%s\", \"condition\": %s, \"treatment\": {\"offer_code\": \"SPRING10\","
             " \"action\": {\"code\": \"call_back\", \"text\": \"Call them back\"},"
             " \"channels\": [\"sms\", \"email\"], \"value\": 12.5, \"priority\": 3},"
             " \"active\": {\"from\": \"2026-01-01T00:00:00Z\"}, \"position\": 7}",
             name, cond);
    long long before = stamp();
    http_response r = send_json("POST", "/v1/treatment-rules", writer.secret, body, NULL);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    json_t *doc = http_response_json(&r);
    long long id = int_member(doc, "id");
    char location[64];
    snprintf(location, sizeof location, "/v1/treatment-rules/%lld", id);
    ck_assert_str_eq(http_response_header(&r, "Location"), location);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    ck_assert_int_eq(int_member(doc, "version"), 1);
    ck_assert_int_eq(int_member(doc, "position"), 7);
    ck_assert_str_eq(str_member(doc, "name"), name);
    ck_assert(json_is_null(json_object_get(doc, "description")));
    json_t *cond_json = json_loads(cond, 0, NULL);
    ck_assert(json_equal(json_object_get(doc, "condition"), cond_json));
    json_decref(cond_json);
    json_t *t = json_object_get(doc, "treatment");
    ck_assert_str_eq(str_member(t, "offer_code"), "SPRING10");
    ck_assert(json_is_null(json_object_get(t, "entitlement_code")));
    ck_assert_str_eq(str_member(json_object_get(t, "action"), "code"), "call_back");
    ck_assert_str_eq(str_member(json_object_get(t, "action"), "text"), "Call them back");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(t, "channels"), 0)), "sms");
    ck_assert_int_eq(json_array_size(json_object_get(t, "channels")), 2);
    ck_assert_str_eq(str_member(t, "purpose"), "marketing");
    ck_assert(json_real_value(json_object_get(t, "value")) == 12.5);
    ck_assert_int_eq(int_member(t, "priority"), 3);
    json_t *active = json_object_get(doc, "active");
    ck_assert_str_eq(str_member(active, "from"), "2026-01-01T00:00:00.000Z");
    ck_assert(json_is_null(json_object_get(active, "until")));
    json_decref(doc);
    http_response_free(&r);
    ck_assert_int_gt(stamp(), before);

    /* The same name again: 409; a reader may not create, but may read. */
    r = send_json("POST", "/v1/treatment-rules", writer.secret, body, NULL);
    json_decref(assert_problem(&r, 409));
    http_response_free(&r);
    ck_assert_int_eq(live_rules_named(name), 1);
    r = send_json("POST", "/v1/treatment-rules", reader.secret, body, NULL);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    r = send_json("GET", location, reader.secret, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"1\"");
    http_response_free(&r);
    r = send_json("PATCH", location, reader.secret, "{\"position\": 1}", NULL);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);
    r = send_json("DELETE", location, reader.secret, NULL, NULL);
    json_decref(assert_problem(&r, 403));
    http_response_free(&r);

    /* A patch under a stale ETag: 412, nothing changed. */
    r = send_json("PATCH", location, writer.secret, "{\"position\": 1}", "\"9\"");
    json_decref(assert_problem(&r, 412));
    http_response_free(&r);
    /* Under the right one: treatment and active merge, the rest stays. */
    before = stamp();
    r = send_json("PATCH", location, writer.secret,
                  "{\"description\": \"spring\", \"treatment\": {\"priority\": 5, \"action\":"
                  " {\"text\": null}}, \"active\": {\"until\": \"2027-01-01T00:00:00Z\"}}",
                  "\"1\"");
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"2\"");
    doc = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(int_member(doc, "version"), 2);
    ck_assert_str_eq(str_member(doc, "description"), "spring");
    t = json_object_get(doc, "treatment");
    ck_assert_int_eq(int_member(t, "priority"), 5);
    ck_assert_str_eq(str_member(t, "offer_code"), "SPRING10");
    ck_assert_str_eq(str_member(json_object_get(t, "action"), "code"), "call_back");
    ck_assert(json_is_null(json_object_get(json_object_get(t, "action"), "text")));
    active = json_object_get(doc, "active");
    ck_assert_str_eq(str_member(active, "from"), "2026-01-01T00:00:00.000Z");
    ck_assert_str_eq(str_member(active, "until"), "2027-01-01T00:00:00.000Z");
    ck_assert_int_eq(int_member(doc, "position"), 7);
    json_decref(doc);
    ck_assert_int_gt(stamp(), before);

    /* Another rule may not take the name; this one may not lose it. */
    char other_body[512];
    snprintf(other_body, sizeof other_body,
             "{\"name\": \"other %s\", \"condition\": %s, \"treatment\": {}}", tag, cond);
    long long other = new_rule(other_body);
    char other_path[64], rename[160];
    snprintf(other_path, sizeof other_path, "/v1/treatment-rules/%lld", other);
    snprintf(rename, sizeof rename, "{\"name\": \"%s\"}", name);
    r = send_json("PATCH", other_path, writer.secret, rename, NULL);
    json_decref(assert_problem(&r, 409));
    http_response_free(&r);
    r = send_json("PATCH", location, writer.secret, "{\"name\": null}", NULL);
    json_t *p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/name"));
    json_decref(p);
    http_response_free(&r);

    /* Delete: a stale ETag is 412; then 204 and 404 everywhere after. */
    r = send_json("DELETE", location, writer.secret, NULL, "\"1\"");
    json_decref(assert_problem(&r, 412));
    http_response_free(&r);
    before = stamp();
    r = send_json("DELETE", location, writer.secret, NULL, "\"2\"");
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);
    ck_assert_int_gt(stamp(), before);
    json_decref(expect("GET", location, NULL, 404));
    json_decref(expect("PATCH", location, "{\"position\": 1}", 404));
    json_decref(expect("DELETE", location, NULL, 404));
    char path[512];
    snprintf(path, sizeof path, "%s/versions", location);
    json_decref(expect("GET", path, NULL, 404));
    snprintf(path, sizeof path, "%s/simulate", location);
    json_decref(expect("POST", path, NULL, 404));
    /* Its name is free again. */
    long long again = new_rule(body);
    ck_assert_int_ne(again, id);
    drop_rule(again);
    drop_rule(other);
}
END_TEST

START_TEST(every_change_is_kept_whole_as_a_version)
{
    char tag[48], cond[256], body[1024];
    harness_unique(tag, sizeof tag, "trver");
    tag_condition(cond, sizeof cond, tag, NULL);
    snprintf(body, sizeof body,
             "{\"name\": \"v %s\", \"condition\": %s, \"treatment\": {\"entitlement_code\":"
             " \"GOLD\", \"purpose\": \"service\"}}",
             tag, cond);
    long long id = new_rule(body);
    char location[64], path[512];
    snprintf(location, sizeof location, "/v1/treatment-rules/%lld", id);
    json_decref(expect("PATCH", location, "{\"treatment\": {\"value\": 4}}", 200));
    json_decref(expect("PATCH", location, "{\"position\": 0}", 200));

    /* Three versions, oldest first, one a page. */
    long long seen[3];
    json_t *bodies[3];
    int n = 0;
    char cursor[256] = "";
    for (int pages = 0; pages < 10; pages++) {
        snprintf(path, sizeof path, "%s/versions?limit=1%s%s", location, cursor[0] ? "&after=" : "",
                 cursor);
        json_t *doc = expect("GET", path, NULL, 200);
        json_t *data = json_object_get(doc, "data");
        ck_assert_int_eq(json_array_size(data), 1);
        json_t *v = json_array_get(data, 0);
        ck_assert_int_lt(n, 3);
        seen[n] = int_member(v, "version");
        ck_assert_int_eq(int_member(v, "api_key_id"), writer.id);
        ck_assert(json_is_string(json_object_get(v, "changed_at")));
        bodies[n++] = json_incref(json_object_get(v, "rule"));
        json_t *next = json_object_get(doc, "next_cursor");
        bool more = json_is_string(next);
        if (more)
            snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        json_decref(doc);
        if (!more)
            break;
    }
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(seen[i], i + 1);
        /* Whole: the rule as it stood, every member. */
        ck_assert_int_eq(int_member(bodies[i], "id"), id);
        ck_assert_int_eq(int_member(bodies[i], "version"), i + 1);
        json_t *t = json_object_get(bodies[i], "treatment");
        ck_assert_str_eq(str_member(t, "entitlement_code"), "GOLD");
        ck_assert_str_eq(str_member(t, "purpose"), "service");
        ck_assert_int_eq(int_member(t, "value"), i == 0 ? 0 : 4);
        ck_assert_int_eq(int_member(bodies[i], "position"),
                         i == 2 ? 0 : int_member(bodies[0], "position"));
        ck_assert(json_is_object(json_object_get(bodies[i], "condition")));
    }
    /* The last version is the rule as GET shows it. */
    json_t *now = expect("GET", location, NULL, 200);
    ck_assert(json_equal(now, bodies[2]));
    json_decref(now);
    for (int i = 0; i < 3; i++)
        json_decref(bodies[i]);
    drop_rule(id);
}
END_TEST

START_TEST(bad_rules_are_refused_with_the_pointer_and_change_nothing)
{
    char tag[48], name[80], cond[256];
    harness_unique(tag, sizeof tag, "trbad");
    snprintf(name, sizeof name, "bad %s", tag);
    tag_condition(cond, sizeof cond, tag, NULL);
    struct {
        const char *members; /* after "name" */
        const char *field;
    } cases[] = {
        {"\"condition\": {\"all\": [{\"field\": \"email\", \"op\": \"lt\", \"value\": 3}]},"
         " \"treatment\": {}",
         "/condition/all/0/op"},
        {"\"condition\": {\"any\": [{\"field\": \"nope\", \"op\": \"eq\", \"value\": 3}]},"
         " \"treatment\": {}",
         "/condition/any/0/field"},
        {"\"condition\": {\"all\": [{\"segment\": 999999999}]}, \"treatment\": {}",
         "/condition/all/0/segment"},
        {"\"treatment\": {}", "/condition"},
        {"\"condition\": {\"all\": []}, \"treatment\": {}, \"colour\": 1", "/colour"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"colour\": 1}", "/treatment/colour"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"action\": {\"code\": \"x\", \"y\": 1}}",
         "/treatment/action/y"},
        {"\"condition\": {\"all\": []}, \"treatment\": {}, \"active\": {\"since\": null}",
         "/active/since"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"channels\": [\"email\", \"fax\"]}",
         "/treatment/channels/1"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"channels\": [\"sms\", \"sms\"]}",
         "/treatment/channels/1"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"purpose\": \"spam\"}",
         "/treatment/purpose"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"value\": -1}", "/treatment/value"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"priority\": -2}", "/treatment/priority"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"priority\": 1.5}", "/treatment/priority"},
        {"\"condition\": {\"all\": []}, \"treatment\": {}, \"active\": {\"from\":"
         " \"2026-06-01T00:00:00Z\", \"until\": \"2026-05-01T00:00:00Z\"}",
         "/active/until"},
        {"\"condition\": {\"all\": []}, \"treatment\": {}, \"active\": {\"from\": \"soon\"}",
         "/active/from"},
        {"\"condition\": {\"all\": []}, \"treatment\": {\"action\": {\"text\": \"no code\"}}",
         "/treatment/action/code"},
        {"\"condition\": {\"all\": []}, \"treatment\": {}, \"position\": -1", "/position"},
        {"\"condition\": {\"all\": []}", "/treatment"},
    };
    long long before = stamp();
    char body[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, "{\"name\": \"%s\", %s}", name, cases[i].members);
        http_response r = send_json("POST", "/v1/treatment-rules", writer.secret, body, NULL);
        json_t *p = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(p, cases[i].field), "case %zu: %s does not name %s", i,
                      r.body, cases[i].field);
        json_decref(p);
        http_response_free(&r);
        /* The simulation checks the same way. */
        r = send_json("POST", "/v1/treatment-rules/simulate", writer.secret, body, NULL);
        p = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(p, cases[i].field), "simulate case %zu: %s", i, r.body);
        json_decref(p);
        http_response_free(&r);
    }
    ck_assert_int_eq(live_rules_named(name), 0);
    ck_assert_int_eq(stamp(), before);

    /* Malformed JSON is 400; a body that is no object 422. */
    http_response r = send_json("POST", "/v1/treatment-rules", writer.secret, "{\"name\": ", NULL);
    json_decref(assert_problem(&r, 400));
    http_response_free(&r);
    r = send_json("POST", "/v1/treatment-rules", writer.secret, "[1]", NULL);
    json_decref(assert_problem(&r, 422));
    http_response_free(&r);

    /* The same problems in a patch: 422, the rule as it was. */
    snprintf(body, sizeof body, "{\"name\": \"%s\", \"condition\": %s, \"treatment\": {}}", name,
             cond);
    long long id = new_rule(body);
    char location[64];
    snprintf(location, sizeof location, "/v1/treatment-rules/%lld", id);
    static const struct {
        const char *patch, *field;
    } patches[] = {
        {"{\"condition\": {\"not\": {}}}", "/condition/not"},
        {"{\"treatment\": {\"channels\": [\"pigeon\"]}}", "/treatment/channels/0"},
        {"{\"active\": {\"from\": \"2026-06-01T00:00:00Z\", \"until\": \"2026-06-01T00:00:00Z\"}}",
         "/active/until"},
        {"{\"colour\": 1}", "/colour"},
        {"{\"condition\": null}", "/condition"},
    };
    before = stamp();
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        r = send_json("PATCH", location, writer.secret, patches[i].patch, NULL);
        json_t *p = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(p, patches[i].field), "patch %zu: %s does not name %s", i,
                      r.body, patches[i].field);
        json_decref(p);
        http_response_free(&r);
    }
    json_t *doc = expect("GET", location, NULL, 200);
    ck_assert_int_eq(int_member(doc, "version"), 1);
    json_decref(doc);
    ck_assert_int_eq(stamp(), before);
    json_decref(expect("GET", "/v1/treatment-rules/999999999", NULL, 404));
    json_decref(expect("GET", "/v1/treatment-rules/abc", NULL, 404));
    json_decref(expect("GET", "/v1/treatment-rules?colour=1", NULL, 422));
    drop_rule(id);
}
END_TEST

START_TEST(the_list_follows_the_order_of_evaluation)
{
    char tag[48], cond[256], body[1024];
    harness_unique(tag, sizeof tag, "trlist");
    tag_condition(cond, sizeof cond, tag, NULL);
    /* Created in this order at positions 900000005, 900000002, 900000002 and
     * one after the last: listed b, c, a, d. */
    static const char *const positions[] = {
        ", \"position\": 900000005", ", \"position\": 900000002", ", \"position\": 900000002", ""};
    long long ids[4];
    for (int i = 0; i < 4; i++) {
        snprintf(body, sizeof body,
                 "{\"name\": \"list %d %s\", \"condition\": %s,"
                 " \"treatment\": {}%s}",
                 i, tag, cond, positions[i]);
        ids[i] = new_rule(body);
    }
    char path[512];
    snprintf(path, sizeof path, "/v1/treatment-rules/%lld", ids[3]);
    json_t *doc = expect("GET", path, NULL, 200);
    ck_assert_int_ge(int_member(doc, "position"), 900000006);
    json_decref(doc);

    long long want[] = {ids[1], ids[2], ids[0], ids[3]}, got[4];
    int n = 0, last_pos = -1;
    long long last_id = 0;
    char cursor[256] = "";
    for (int pages = 0; pages < 1000; pages++) {
        snprintf(path, sizeof path, "/v1/treatment-rules?limit=2%s%s", cursor[0] ? "&after=" : "",
                 cursor);
        doc = expect("GET", path, NULL, 200);
        size_t i;
        json_t *rule;
        json_array_foreach(json_object_get(doc, "data"), i, rule)
        {
            int pos = (int)int_member(rule, "position");
            long long id = int_member(rule, "id");
            /* The whole list is in (position, id) order. */
            ck_assert(pos > last_pos || (pos == last_pos && id > last_id));
            last_pos = pos;
            last_id = id;
            for (int k = 0; k < 4; k++)
                if (id == ids[k]) {
                    ck_assert_int_lt(n, 4);
                    got[n++] = id;
                }
        }
        json_t *next = json_object_get(doc, "next_cursor");
        bool more = json_is_string(next);
        if (more)
            snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        json_decref(doc);
        if (!more)
            break;
    }
    ck_assert_int_eq(n, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(got[i], want[i]);
    json_decref(expect("GET", "/v1/treatment-rules?after=bogus", NULL, 422));
    for (int i = 0; i < 4; i++)
        drop_rule(ids[i]);
}
END_TEST

START_TEST(the_number_of_live_rules_is_bounded)
{
    char tag[48], body[512];
    harness_unique(tag, sizeof tag, "trmax");
    /* Fill up to the limit with rows of this test's own (named after tag). */
    long long made = harness_sql_number(
        db,
        "WITH i AS (INSERT INTO treatment_rules (name, condition, position)"
        " SELECT $1 || ' ' || g, '{\"all\": []}', 0 FROM generate_series(1, 1000 -"
        " (SELECT count(*) FROM treatment_rules WHERE deleted_at IS NULL)) g RETURNING 1)"
        " SELECT count(*) FROM i",
        tag);
    ck_assert_int_ge(made, 1);
    snprintf(body, sizeof body,
             "{\"name\": \"one more %s\", \"condition\": {\"all\": []}, \"treatment\": {}}", tag);
    long long before = stamp();
    http_response r = send_json("POST", "/v1/treatment-rules", writer.secret, body, NULL);
    json_t *p = assert_problem(&r, 409);
    json_decref(p);
    http_response_free(&r);
    ck_assert_int_eq(stamp(), before);
    /* One fewer: the create goes through. */
    ck_assert_int_eq(harness_sql_number(db,
                                        "WITH d AS (DELETE FROM treatment_rules WHERE id = (SELECT"
                                        " max(id) FROM treatment_rules WHERE name LIKE $1 || ' %')"
                                        " RETURNING 1) SELECT count(*) FROM d",
                                        tag),
                     1);
    long long id = new_rule(body);
    drop_rule(id);
    harness_sql_number(db,
                       "WITH d AS (DELETE FROM treatment_rules WHERE name LIKE $1 || ' %'"
                       " AND deleted_at IS NULL RETURNING 1) SELECT count(*) FROM d",
                       tag);
}
END_TEST

/* ---- simulation ------------------------------------------------------------------ */

static long long overlap_with(const json_t *sim, long long rule, bool *found)
{
    size_t i;
    json_t *o;
    *found = false;
    json_array_foreach(json_object_get(sim, "overlap"), i, o)
    {
        if (int_member(o, "rule_id") == rule) {
            *found = true;
            return int_member(o, "both");
        }
    }
    return 0;
}

static long long contactable(const json_t *sim, size_t index, const char *channel)
{
    json_t *c = json_array_get(json_object_get(sim, "contactable"), index);
    ck_assert_msg(c != NULL, "no contactable entry %zu", index);
    ck_assert_str_eq(str_member(c, "channel"), channel);
    return int_member(c, "count");
}

START_TEST(the_simulation_counts_matches_overlaps_and_consents)
{
    char tag[48], cond_it[256], cond_all[256], cond_fr[256], body[1024];
    harness_unique(tag, sizeof tag, "trsim");
    /* a, b in Italy; c in France; e in Italy but deleted. */
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "IT"), c = new_customer(tag, "FR"),
              e = new_customer(tag, "IT");
    char path[512];
    consent(a, "email", "marketing", "granted");
    consent(b, "email", "marketing", "granted");
    consent(b, "email", "marketing", "revoked");
    consent(b, "sms", "marketing", "granted");
    consent(c, "email", "marketing", "granted");
    consent(c, "email", "service", "granted");
    consent(e, "email", "marketing", "granted");
    snprintf(path, sizeof path, "/v1/customers/%lld", e);
    json_decref(admin("DELETE", path, NULL, 204));

    tag_condition(cond_it, sizeof cond_it, tag, "IT");
    tag_condition(cond_all, sizeof cond_all, tag, NULL);
    tag_condition(cond_fr, sizeof cond_fr, tag, "FR");
    snprintf(body, sizeof body,
             "{\"name\": \"italy %s\", \"condition\": %s, \"treatment\": {\"channels\":"
             " [\"email\", \"sms\"]}}",
             tag, cond_it);
    long long italy = new_rule(body);
    snprintf(body, sizeof body, "{\"name\": \"all %s\", \"condition\": %s, \"treatment\": {}}", tag,
             cond_all);
    long long all = new_rule(body);
    /* Not active now (its window starts in 2999), and deleted: no overlap. */
    snprintf(body, sizeof body,
             "{\"name\": \"later %s\", \"condition\": %s, \"treatment\": {}, \"active\":"
             " {\"from\": \"2999-01-01T00:00:00Z\"}}",
             tag, cond_all);
    long long later = new_rule(body);
    snprintf(body, sizeof body, "{\"name\": \"gone %s\", \"condition\": %s, \"treatment\": {}}",
             tag, cond_all);
    long long gone = new_rule(body);
    drop_rule(gone);
    snprintf(body, sizeof body, "{\"name\": \"france %s\", \"condition\": %s, \"treatment\": {}}",
             tag, cond_fr);
    long long france = new_rule(body);

    /* The stored rule: a and b; both also in "all", none in "france". */
    snprintf(path, sizeof path, "/v1/treatment-rules/%lld/simulate", italy);
    http_response r = send_json("POST", path, reader.secret, NULL, NULL);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    json_t *sim = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(int_member(sim, "matched"), 2);
    json_t *sample = json_object_get(sim, "sample");
    ck_assert_int_eq(json_array_size(sample), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(sample, 0)), a);
    ck_assert_int_eq(json_integer_value(json_array_get(sample, 1)), b);
    bool found;
    ck_assert_int_eq(overlap_with(sim, all, &found), 2);
    ck_assert(found);
    ck_assert_int_eq(overlap_with(sim, france, &found), 0);
    ck_assert(found);
    overlap_with(sim, later, &found);
    ck_assert(!found);
    overlap_with(sim, gone, &found);
    ck_assert(!found);
    overlap_with(sim, italy, &found);
    ck_assert(!found);
    /* email: a (b revoked); sms: b. */
    ck_assert_int_eq(json_array_size(json_object_get(sim, "contactable")), 2);
    ck_assert_int_eq(contactable(sim, 0, "email"), 1);
    ck_assert_int_eq(contactable(sim, 1, "sms"), 1);
    json_decref(sim);

    /* An unsaved rule: a, b, c; e-mail for service, c only. */
    snprintf(body, sizeof body,
             "{\"name\": \"italy %s\", \"condition\": %s, \"treatment\": {\"channels\":"
             " [\"email\"], \"purpose\": \"service\"}}",
             tag, cond_all);
    r = send_json("POST", "/v1/treatment-rules/simulate", reader.secret, body, NULL);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    sim = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(int_member(sim, "matched"), 3);
    ck_assert_int_eq(json_array_size(json_object_get(sim, "sample")), 3);
    ck_assert_int_eq(overlap_with(sim, italy, &found), 2);
    ck_assert(found);
    ck_assert_int_eq(overlap_with(sim, all, &found), 3);
    ck_assert(found);
    ck_assert_int_eq(overlap_with(sim, france, &found), 1);
    ck_assert_int_eq(contactable(sim, 0, "email"), 1);
    ck_assert_int_eq(json_array_size(json_object_get(sim, "contactable")), 1);
    json_decref(sim);
    /* Nothing was saved (the name in use did not matter). */
    snprintf(body, sizeof body, "italy %s", tag);
    ck_assert_int_eq(live_rules_named(body), 1);

    /* A rule that names a segment: its members who are active. */
    char seg_body[512];
    snprintf(seg_body, sizeof seg_body, "{\"name\": \"trsim %s\", \"rule\": %s}", tag, cond_fr);
    json_t *seg = expect("POST", "/v1/segments", seg_body, 201);
    long long seg_id = int_member(seg, "id");
    json_decref(seg);
    snprintf(body, sizeof body,
             "{\"name\": \"seg %s\", \"condition\": {\"any\": [{\"segment\": %lld}]},"
             " \"treatment\": {}}",
             tag, seg_id);
    for (int i = 0; i < 200; i++) {
        snprintf(path, sizeof path, "/v1/segments/%lld", seg_id);
        seg = expect("GET", path, NULL, 200);
        bool live = strcmp(str_member(seg, "state"), "live") == 0;
        json_decref(seg);
        if (live)
            break;
        harness_sleep_ms(100);
    }
    r = send_json("POST", "/v1/treatment-rules/simulate", reader.secret, body, NULL);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    sim = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(int_member(sim, "matched"), 1);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(sim, "sample"), 0)), c);
    ck_assert_int_eq(json_array_size(json_object_get(sim, "contactable")), 0);
    json_decref(sim);
    snprintf(path, sizeof path, "/v1/segments/%lld", seg_id);
    json_decref(expect("DELETE", path, NULL, 204));

    drop_rule(italy);
    drop_rule(all);
    drop_rule(later);
    drop_rule(france);
}
END_TEST

Suite *treatment_rules_suite(void)
{
    Suite *s = suite_create("treatment_rules");
    TCase *tc = tcase_create("treatment_rules");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_rule_is_created_read_patched_under_its_etag_and_deleted);
    tcase_add_test(tc, every_change_is_kept_whole_as_a_version);
    tcase_add_test(tc, bad_rules_are_refused_with_the_pointer_and_change_nothing);
    tcase_add_test(tc, the_list_follows_the_order_of_evaluation);
    tcase_add_test(tc, the_number_of_live_rules_is_bounded);
    tcase_add_test(tc, the_simulation_counts_matches_overlaps_and_consents);
    suite_add_tcase(s, tc);
    return s;
}

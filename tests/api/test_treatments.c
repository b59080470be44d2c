/*
 * test_treatments.c — GET /v1/customers/{id}/treatments against cases
 * worked out by hand: which rules apply (conditions, active windows), the
 * entitlements, the arbitration (priority x value, ties by position, then
 * id), each channel's verdict (consent granted, revoked, absent; a cap
 * reached by an outbound touchpoint from another source), and the answer
 * moving as the customer's data and the rules change.
 *
 * The rules and policies are written with SQL (their own routes have their
 * own suites), each change moving treatment_config's stamp as the routes
 * do. Every live rule and policy left by earlier suites is retired first:
 * the evaluation reads all of them.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static PGconn *db;
static api_key reader, other;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (reader.id == 0)
        ck_assert(api_key_create("rules:read", &reader));
    if (other.id == 0)
        ck_assert(api_key_create("customers:read", &other));
    db = harness_db_connect();
}

static void teardown(void)
{
    PQfinish(db);
    crmd_fixture_stop(&srv);
}

static void sql(const char *text, int n, const char *const *params)
{
    PGresult *res = PQexecParams(db, text, n, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK,
                  "%s: %s", text, PQerrorMessage(db));
    PQclear(res);
}

static void moved(void)
{
    sql("UPDATE treatment_config SET stamp = stamp + 1", 0, NULL);
}

static json_t *expect(const char *method, const char *path, const char *key, const char *body,
                      long status)
{
    http_call call = {.method = method, .path = path, .api_key = key, .body = body};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == status, "%s %s answered %ld, not %ld: %.500s", method, path, r.status,
                  status, r.body);
    json_t *doc = r.body_len ? http_response_json(&r) : NULL;
    http_response_free(&r);
    return doc;
}

static long long new_customer(const char *tag, const char *country)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"first_name\": \"Tre\", \"tags\": [\"%s\"], \"address\": {\"country\": \"%s\"}}",
             tag, country);
    json_t *doc = expect("POST", "/v1/customers", harness_admin_key.secret, body, 201);
    long long id = json_integer_value(json_object_get(doc, "id"));
    json_decref(doc);
    return id;
}

static void consent(long long customer, const char *channel, const char *status)
{
    char path[96], body[256];
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", customer);
    snprintf(body, sizeof body,
             "{\"channel\": \"%s\", \"purpose\": \"marketing\", \"status\": \"%s\","
             " \"source\": \"test\"}",
             channel, status);
    json_decref(expect("POST", path, harness_admin_key.secret, body, 201));
}

/* A rule: name, condition (JSON), action code or NULL, entitlement or NULL,
 * channels (a text[] literal), priority, value, position, and an active
 * window relative to now in seconds (0: open). */
static void add_rule(const char *name, const char *condition, const char *action,
                     const char *entitlement, const char *channels, int priority,
                     const char *value, int position, int from_s, int until_s)
{
    char prio[16], pos[16], from[16], until[16];
    snprintf(prio, sizeof prio, "%d", priority);
    snprintf(pos, sizeof pos, "%d", position);
    snprintf(from, sizeof from, "%d", from_s);
    snprintf(until, sizeof until, "%d", until_s);
    const char *p[] = {name, condition, action, entitlement, channels, prio, value, pos, from, until};
    sql("INSERT INTO treatment_rules (name, condition, action_code, action_text, entitlement_code,"
        " channels, priority, value, position, active_from, active_until)"
        " VALUES ($1, $2::jsonb, $3::text, CASE WHEN $3::text IS NULL THEN NULL ELSE 'say ' || $3::text END, $4,"
        " $5::text[], $6::int, $7::numeric, $8::int,"
        " CASE WHEN $9::int = 0 THEN NULL ELSE now() + make_interval(secs => $9::int) END,"
        " CASE WHEN $10::int = 0 THEN NULL ELSE now() + make_interval(secs => $10::int) END)",
        10, p);
}

static json_t *treatments(long long customer, int limit)
{
    char path[96];
    if (limit > 0)
        snprintf(path, sizeof path, "/v1/customers/%lld/treatments?limit=%d", customer, limit);
    else
        snprintf(path, sizeof path, "/v1/customers/%lld/treatments", customer);
    return expect("GET", path, reader.secret, NULL, 200);
}

/* The names of the objects of array key of doc, comma-separated. */
static void names(const json_t *doc, const char *key, const char *member, char *out, size_t size)
{
    out[0] = '\0';
    size_t i, used = 0;
    json_t *v;
    json_array_foreach(json_object_get(doc, key), i, v)
    {
        const json_t *name = member ? json_object_get(v, member) : v;
        int n = snprintf(out + used, size - used, "%s%s", i ? "," : "", json_string_value(name));
        if (n < 0 || (size_t)n >= size - used)
            break;
        used += (size_t)n;
    }
}

/* The verdict of channel in doc's channels: allowed, and its first reason's code. */
static void verdict(const json_t *doc, const char *channel, bool allowed, const char *reason)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "channels"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "channel")), channel) != 0)
            continue;
        ck_assert_msg(json_is_true(json_object_get(v, "allowed")) == allowed,
                      "channel %s: allowed is not %d", channel, allowed);
        json_t *first = json_array_get(json_object_get(v, "reasons"), 0);
        if (reason == NULL)
            ck_assert_msg(first == NULL, "channel %s has a reason", channel);
        else
            ck_assert_msg(first != NULL && strcmp(json_string_value(json_object_get(first, "code")),
                                                  reason) == 0,
                          "channel %s: the first reason is not %s", channel, reason);
        return;
    }
    ck_abort_msg("no verdict for channel %s", channel);
}

START_TEST(treatments_follow_the_rules_the_arbitration_and_the_channels)
{
    sql("UPDATE treatment_rules SET deleted_at = now() WHERE deleted_at IS NULL", 0, NULL);
    sql("UPDATE contact_policies SET deleted_at = now() WHERE deleted_at IS NULL", 0, NULL);
    char tag[48], cond_it[256], cond_tag[160], name[96];
    harness_unique(tag, sizeof tag, "treat");
    snprintf(cond_tag, sizeof cond_tag,
             "{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"}", tag);
    snprintf(cond_it, sizeof cond_it,
             "{\"all\": [%s, {\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"IT\"}]}",
             cond_tag);
    long long a = new_customer(tag, "IT"), b = new_customer(tag, "FR");
    consent(a, "email", "granted");
    consent(a, "sms", "granted");
    consent(a, "sms", "revoked");

    /* By hand: for a (Italy) lounge, italians and tagged apply, in that
     * order (positions 0, 1, 2); later and expired do not (their windows).
     * italians scores 2 x 10 = 20, tagged 4 x 5 = 20: a tie, broken by
     * position (italians first); later would score 30 but is not active. */
    snprintf(name, sizeof name, "lounge %s", tag);
    add_rule(name, cond_it, NULL, "vip-lounge", "{}", 9, "100", 0, 0, 0);
    snprintf(name, sizeof name, "italians %s", tag);
    add_rule(name, cond_it, "call-it", "free-shipping", "{email,sms}", 2, "10", 1, 0, 0);
    snprintf(name, sizeof name, "tagged %s", tag);
    add_rule(name, cond_tag, "welcome", "free-shipping", "{phone}", 4, "5", 2, 0, 0);
    snprintf(name, sizeof name, "later %s", tag);
    add_rule(name, cond_tag, "upsell", NULL, "{email}", 1, "30", 3, 86400, 0);
    snprintf(name, sizeof name, "expired %s", tag);
    add_rule(name, cond_tag, "too-late", NULL, "{email}", 5, "30", 4, -7200, -3600);
    moved();

    json_t *doc = treatments(a, 3);
    char got[512];
    json_t *rules = json_object_get(doc, "rules");
    ck_assert_int_eq(json_array_size(rules), 3);
    char want[256];
    snprintf(want, sizeof want, "lounge %s,italians %s,tagged %s", tag, tag, tag);
    names(doc, "rules", "name", got, sizeof got);
    ck_assert_str_eq(got, want);
    names(doc, "entitlements", NULL, got, sizeof got);
    ck_assert_str_eq(got, "vip-lounge,free-shipping");
    json_t *actions = json_object_get(doc, "actions");
    ck_assert_int_eq(json_array_size(actions), 2);
    json_t *best = json_object_get(doc, "next_best_action");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(best, "action"), "code")),
                     "call-it");
    ck_assert(json_real_value(json_object_get(best, "score")) == 20.0);
    ck_assert_str_eq(json_string_value(json_object_get(best, "channel")), "email");
    json_t *second = json_array_get(actions, 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(second, "action"), "code")),
                     "welcome");
    ck_assert(json_real_value(json_object_get(second, "score")) == 20.0);
    ck_assert(json_is_null(json_object_get(second, "channel"))); /* no phone consent */
    verdict(doc, "email", true, NULL);
    verdict(doc, "sms", false, "consent_revoked");
    verdict(doc, "phone", false, "no_consent");
    json_decref(doc);

    /* The default limit is one action. */
    doc = treatments(a, 0);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "actions")), 1);
    json_decref(doc);

    /* b (France): only tagged applies. */
    doc = treatments(b, 3);
    snprintf(want, sizeof want, "tagged %s", tag);
    names(doc, "rules", "name", got, sizeof got);
    ck_assert_str_eq(got, want);
    names(doc, "entitlements", NULL, got, sizeof got);
    ck_assert_str_eq(got, "free-shipping");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(doc, "next_best_action"), "action"),
                         "code")),
                     "welcome");
    json_decref(doc);

    /* A cap of one marketing e-mail a day, reached by an outbound e-mail
     * posted as a plain touchpoint (another source): e-mail is refused,
     * and the best action has no channel left. */
    sql("INSERT INTO contact_policies (name, channel, max_contacts, period_hours)"
        " VALUES ('one email a day', 'email', 1, 24)",
        0, NULL);
    moved();
    char path[96], body[512], event[48];
    harness_unique(event, sizeof event, "sent");
    snprintf(body, sizeof body,
             "{\"customer_id\": %lld, \"channel\": \"email\", \"type\": \"email_sent\","
             " \"direction\": \"outbound\", \"occurred_at\": \"2026-12-04T00:00:00Z\","
             " \"source\": \"esp\", \"event_id\": \"%s\"}",
             a, event);
    /* Now, not a fixed date: the cap counts the last 24 hours. */
    json_decref(expect("POST", "/v1/touchpoints", harness_admin_key.secret, body, 201));
    sql("UPDATE touchpoints SET occurred_at = now() - interval '1 hour' WHERE event_id = $1", 1,
        (const char *const[]){event});
    doc = treatments(a, 1);
    verdict(doc, "email", false, "cap_reached");
    ck_assert(json_is_null(json_object_get(json_object_get(doc, "next_best_action"), "channel")));
    json_decref(doc);

    /* The rules change: tagged's priority to 10 (score 50) makes it best. */
    snprintf(name, sizeof name, "tagged %s", tag);
    sql("UPDATE treatment_rules SET priority = 10, version = version + 1 WHERE name = $1", 1,
        (const char *const[]){name});
    moved();
    doc = treatments(a, 1);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(doc, "next_best_action"), "action"),
                         "code")),
                     "welcome");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(doc, "next_best_action"), "version")),
                     2);
    json_decref(doc);

    /* The customer's data changes: a moves to France; lounge and italians
     * no longer apply. */
    snprintf(path, sizeof path, "/v1/customers/%lld", a);
    http_call patch = {.method = "PATCH",
                       .path = path,
                       .api_key = harness_admin_key.secret,
                       .body = "{\"address\": {\"country\": \"FR\"}}",
                       .content_type = "application/merge-patch+json"};
    http_response r = http_send(&srv, &patch);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    doc = treatments(a, 5);
    snprintf(want, sizeof want, "tagged %s", tag);
    names(doc, "rules", "name", got, sizeof got);
    ck_assert_str_eq(got, want);
    json_decref(doc);

    sql("UPDATE treatment_rules SET deleted_at = now() WHERE deleted_at IS NULL", 0, NULL);
    sql("UPDATE contact_policies SET deleted_at = now() WHERE deleted_at IS NULL", 0, NULL);
    moved();
}
END_TEST

START_TEST(treatments_refuse_bad_input)
{
    json_decref(expect("GET", "/v1/customers/999999999/treatments", reader.secret, NULL, 404));
    long long a = new_customer("bad-input", "IT");
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/treatments?limit=0", a);
    json_decref(expect("GET", path, reader.secret, NULL, 422));
    snprintf(path, sizeof path, "/v1/customers/%lld/treatments?limit=101", a);
    json_decref(expect("GET", path, reader.secret, NULL, 422));
    snprintf(path, sizeof path, "/v1/customers/%lld/treatments?limit=x", a);
    json_decref(expect("GET", path, reader.secret, NULL, 422));
    snprintf(path, sizeof path, "/v1/customers/%lld/treatments", a);
    json_decref(expect("GET", path, other.secret, NULL, 403));
}
END_TEST

/* A stored rule whose condition no longer parses (written around the API
 * here) is left out; the others still answer. */
START_TEST(a_rule_that_no_longer_parses_is_left_out)
{
    char tag[48], name[96], cond[160];
    harness_unique(tag, sizeof tag, "unparsed");
    long long a = new_customer(tag, "IT");
    snprintf(cond, sizeof cond, "{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"}",
             tag);
    snprintf(name, sizeof name, "good %s", tag);
    add_rule(name, cond, "fine", NULL, "{}", 1, "1", 0, 0, 0);
    snprintf(name, sizeof name, "broken %s", tag);
    add_rule(name, "{}", "broken", NULL, "{}", 9, "9", 0, 0, 0);
    moved();
    json_t *doc = treatments(a, 5);
    char got[512], want[128];
    names(doc, "rules", "name", got, sizeof got);
    snprintf(want, sizeof want, "good %s", tag);
    ck_assert_msg(strstr(got, want) != NULL, "the good rule is missing: %s", got);
    snprintf(want, sizeof want, "broken %s", tag);
    ck_assert_msg(strstr(got, want) == NULL, "the broken rule applies: %s", got);
    json_decref(doc);
    sql("UPDATE treatment_rules SET deleted_at = now() WHERE name LIKE '%' || $1", 1,
        (const char *const[]){tag});
    moved();
}
END_TEST

Suite *treatments_suite(void)
{
    Suite *s = suite_create("treatments");
    TCase *tc = tcase_create("treatments");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, treatments_follow_the_rules_the_arbitration_and_the_channels);
    tcase_add_test(tc, treatments_refuse_bad_input);
    tcase_add_test(tc, a_rule_that_no_longer_parses_is_left_out);
    suite_add_tcase(s, tc);
    return s;
}

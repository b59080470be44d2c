/*
 * test_consents.c — consent decisions (lib/consents.h): validation, history,
 * the current state by captured_at, merged customers, the audit row and
 * crm_consents_allows, on the migrated CRMD_TEST_DATABASE_URL. Every test
 * makes its own customers and looks only at them.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "consents.h"
#include "db.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"

static PGconn *probe;

static void setup(void)
{
    crm_db_config cfg = {.url = unit_env("CRMD_TEST_DATABASE_URL"),
                         .pool_size = 2,
                         .acquire_timeout_ms = 2000,
                         .connect_timeout_s = 2,
                         .statement_timeout_ms = 5000,
                         .retry_backoff_ms = 1000};
    crm_error err = CRM_ERROR_INIT;
    PGconn *conn = crm_db_connect_direct(&cfg, &err);
    ck_assert_msg(conn != NULL, "connect: %s", err.detail);
    bool ok = crm_migrate_apply(conn, crm_migration_files, crm_migration_files_count, NULL, &err);
    PQfinish(conn);
    ck_assert_msg(ok, "migrate: %s", err.detail);
    ck_assert_msg(crm_db_init(&cfg, &err), "crm_db_init: %s", err.detail);
    probe = unit_connect(cfg.url);
}

static void teardown(void)
{
    PQfinish(probe);
    crm_db_shutdown();
}

/* ---- helpers ------------------------------------------------------------ */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A new customer with the given status; returns its id. */
static long long customer_with_status(const char *status)
{
    const char *params[] = {status};
    return unit_sql_long(probe,
                         "INSERT INTO customers (first_name, status) VALUES ('unit', $1) "
                         "RETURNING id",
                         1, params);
}

static long long new_customer(void)
{
    return customer_with_status("active");
}

static long count_for(const char *table, long long customer_id)
{
    char sql[128], id[24];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE customer_id = $1", table);
    snprintf(id, sizeof id, "%lld", customer_id);
    const char *params[] = {id};
    return unit_sql_long(probe, sql, 1, params);
}

/* Parses text as JSON or fails the test. Caller decrefs. */
static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(v != NULL, "bad test JSON %s: %s", text, jerr.text);
    return v;
}

/* Expects text to be refused, naming field among the errors. */
static void assert_invalid(const char *text, const char *field)
{
    json_t *body = parse(text);
    crm_error err = CRM_ERROR_INIT;
    json_t *out = crm_consents_validate(body, now_ms(), &err);
    json_decref(body);
    ck_assert_msg(out == NULL, "%s was accepted", text);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_msg(unit_has_field_error(&err, field), "%s: no error for %s", text, field);
    crm_error_clear(&err);
}

/* Expects text to be accepted; returns the normalized decisions. */
static json_t *assert_valid(const char *text)
{
    json_t *body = parse(text);
    crm_error err = CRM_ERROR_INIT;
    json_t *out = crm_consents_validate(body, now_ms(), &err);
    json_decref(body);
    ck_assert_msg(out != NULL, "%s was refused: %s", text, err.detail);
    return out;
}

/* Records text for customer id or fails the test; returns the response. */
static json_t *record(long long id, const char *text)
{
    json_t *body = parse(text);
    crm_error err = CRM_ERROR_INIT;
    json_t *out = crm_consents_record(id, body, 0, &err);
    json_decref(body);
    ck_assert_msg(out != NULL, "record %s: %s", text, err.detail);
    return out;
}

/* The status of channel+purpose in a "current" array, or NULL. */
static const char *current_status(json_t *current, const char *channel, const char *purpose)
{
    size_t i;
    json_t *s;
    json_array_foreach(current, i, s)
    {
        if (strcmp(json_string_value(json_object_get(s, "channel")), channel) == 0 &&
            strcmp(json_string_value(json_object_get(s, "purpose")), purpose) == 0)
            return json_string_value(json_object_get(s, "status"));
    }
    return NULL;
}

static bool allows(long long id, const char *channel, const char *purpose)
{
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_msg(conn != NULL, "acquire: %s", err.detail);
    bool allowed = true;
    bool ok = crm_consents_allows(conn, id, channel, purpose, &allowed, &err);
    crm_db_release(conn);
    ck_assert_msg(ok, "allows: %s", err.detail);
    return allowed;
}

/* ---- timestamps ----------------------------------------------------------- */

START_TEST(parse_time_reads_utc_offsets_and_fractions)
{
    long long ms = 0;
    ck_assert(crm_consent_parse_time("1970-01-01T00:00:00Z", &ms));
    ck_assert_int_eq(ms, 0);
    ck_assert(crm_consent_parse_time("2026-11-23T10:15:00.123456Z", &ms));
    ck_assert_int_eq(ms, 1795428900123LL);
    ck_assert(crm_consent_parse_time("2026-11-23T12:15:00.5+02:00", &ms));
    ck_assert_int_eq(ms, 1795428900500LL);
    ck_assert(crm_consent_parse_time("2024-02-29t00:00:00z", &ms));
}
END_TEST

START_TEST(parse_time_rejects_what_is_not_rfc3339)
{
    static const char *const bad[] = {
        "",
        "2026-11-23",
        "2026-11-23 10:15:00Z",
        "2026-11-23T10:15:00",
        "2026-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T10:15:60Z",
        "2026-11-23T10:15:00.Z",
        "2026-11-23T10:15:00+0200",
        "1969-12-31T23:59:59Z",
        "2026-11-23T10:15:00Zx",
        "+2026-11-23T10:15:00Z",
    };
    long long ms;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!crm_consent_parse_time(bad[i], &ms), "%s was accepted", bad[i]);
}
END_TEST

/* ---- validation ----------------------------------------------------------- */

START_TEST(validate_accepts_one_decision_without_captured_at)
{
    json_t *out = assert_valid("{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":"
                               "\"granted\",\"source\":\"web\"}");
    ck_assert_int_eq(json_array_size(out), 1);
    ck_assert(json_is_null(json_object_get(json_array_get(out, 0), "captured_ms")));
    json_decref(out);
}
END_TEST

START_TEST(validate_accepts_a_batch_in_order)
{
    json_t *out = assert_valid(
        "{\"consents\":["
        "{\"channel\":\"sms\",\"purpose\":\"service\",\"status\":\"granted\",\"source\":\"app\","
        "\"captured_at\":\"2026-01-02T03:04:05Z\"},"
        "{\"channel\":\"in_app\",\"purpose\":\"third_party\",\"status\":\"revoked\","
        "\"source\":\"app\",\"captured_at\":null}]}");
    ck_assert_int_eq(json_array_size(out), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(out, 1), "channel")),
                     "in_app");
    json_decref(out);
}
END_TEST

START_TEST(validate_names_unknown_fields)
{
    assert_invalid("{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":\"granted\","
                   "\"source\":\"web\",\"note\":\"x\"}",
                   "/note");
    assert_invalid("{\"consents\":[{\"channel\":\"email\",\"purpose\":\"marketing\","
                   "\"status\":\"granted\",\"source\":\"web\",\"a/b\":1}]}",
                   "/consents/0/a~1b");
    assert_invalid("{\"consents\":[{\"channel\":\"email\",\"purpose\":\"marketing\","
                   "\"status\":\"granted\",\"source\":\"web\"}],\"channel\":\"sms\"}",
                   "/channel");
}
END_TEST

START_TEST(validate_names_values_outside_the_lists)
{
    static const char *const tail = ",\"source\":\"web\"}";
    char text[256];
    snprintf(text, sizeof text,
             "{\"channel\":\"fax\",\"purpose\":\"service\",\"status\":\"granted\"%s", tail);
    assert_invalid(text, "/channel");
    snprintf(text, sizeof text,
             "{\"channel\":\"email\",\"purpose\":\"fun\",\"status\":\"granted\"%s", tail);
    assert_invalid(text, "/purpose");
    snprintf(text, sizeof text,
             "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"yes\"%s", tail);
    assert_invalid(text, "/status");
    snprintf(text, sizeof text,
             "{\"channel\":\"Email\",\"purpose\":\"service\",\"status\":\"granted\"%s", tail);
    assert_invalid(text, "/channel");
}
END_TEST

START_TEST(validate_names_every_missing_or_mistyped_field)
{
    json_t *body = parse("{\"channel\":5,\"status\":true}");
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_consents_validate(body, now_ms(), &err));
    json_decref(body);
    ck_assert(unit_has_field_error(&err, "/channel"));
    ck_assert(unit_has_field_error(&err, "/purpose"));
    ck_assert(unit_has_field_error(&err, "/status"));
    ck_assert(unit_has_field_error(&err, "/source"));
    ck_assert_uint_eq(json_array_size(err.errors), 4);
    crm_error_clear(&err);
}
END_TEST

START_TEST(validate_refuses_nul_bytes)
{
    assert_invalid("{\"channel\":\"email\\u0000\",\"purpose\":\"service\",\"status\":\"granted\","
                   "\"source\":\"web\"}",
                   "/channel");
    assert_invalid("{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
                   "\"source\":\"w\\u0000b\"}",
                   "/source");
}
END_TEST

START_TEST(validate_source_is_1_to_100_characters)
{
    char text[1024], source[512] = "";
    assert_invalid("{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
                   "\"source\":\"\"}",
                   "/source");
    for (int i = 0; i < 100; i++)
        strcat(source, "\xc3\xa9"); /* 100 characters, 200 bytes */
    snprintf(text, sizeof text,
             "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
             "\"source\":\"%s\"}",
             source);
    json_decref(assert_valid(text));
    strcat(source, "x");
    snprintf(text, sizeof text,
             "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
             "\"source\":\"%s\"}",
             source);
    assert_invalid(text, "/source");
}
END_TEST

START_TEST(validate_captured_at_must_be_rfc3339_and_not_far_in_the_future)
{
    char text[256];
    assert_invalid("{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
                   "\"source\":\"web\",\"captured_at\":\"yesterday\"}",
                   "/captured_at");
    assert_invalid("{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
                   "\"source\":\"web\",\"captured_at\":1700000000}",
                   "/captured_at");
    time_t later = (time_t)(now_ms() / 1000) + 6 * 60;
    struct tm tm;
    gmtime_r(&later, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(text, sizeof text,
             "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
             "\"source\":\"web\",\"captured_at\":\"%s\"}",
             stamp);
    assert_invalid(text, "/captured_at");
    later -= 2 * 60; /* four minutes ahead: clock skew, accepted */
    gmtime_r(&later, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(text, sizeof text,
             "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
             "\"source\":\"web\",\"captured_at\":\"%s\"}",
             stamp);
    json_decref(assert_valid(text));
}
END_TEST

START_TEST(validate_batch_holds_1_to_100_objects)
{
    assert_invalid("{\"consents\":[]}", "/consents");
    assert_invalid("{\"consents\":{}}", "/consents");
    assert_invalid("{\"consents\":[{\"channel\":\"email\",\"purpose\":\"service\","
                   "\"status\":\"granted\",\"source\":\"web\"}, 7]}",
                   "/consents/1");
    char text[16384] = "{\"consents\":[";
    for (int i = 0; i < 101; i++)
        strcat(text, i ? ",{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
                         "\"source\":\"web\"}"
                       : "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
                         "\"source\":\"web\"}");
    strcat(text, "]}");
    assert_invalid(text, "/consents");
}
END_TEST

START_TEST(validate_refuses_a_body_that_is_not_an_object)
{
    json_t *body = parse("[1]");
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_consents_validate(body, now_ms(), &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    json_decref(body);
    crm_error_clear(&err);
}
END_TEST

/* ---- recording and reading -------------------------------------------------- */

START_TEST(record_keeps_every_decision_as_history)
{
    long long id = new_customer();
    json_decref(record(id, "{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":"
                           "\"granted\",\"source\":\"web\"}"));
    json_decref(record(id, "{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":"
                           "\"revoked\",\"source\":\"call-centre\"}"));
    ck_assert_int_eq(count_for("customer_consents", id), 2);
    long long next = -1;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_consents_get(id, 0, 50, &next, &err);
    ck_assert_msg(doc != NULL, "get: %s", err.detail);
    json_t *history = json_object_get(doc, "history");
    ck_assert_int_eq(json_array_size(history), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(history, 0), "status")),
                     "revoked"); /* newest first */
    ck_assert_int_eq(next, 0);
    json_decref(doc);
}
END_TEST

START_TEST(record_answers_with_the_current_state_and_the_recorded_entries)
{
    long long id = new_customer();
    json_t *out = record(id, "{\"consents\":["
                             "{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":"
                             "\"granted\",\"source\":\"web\",\"captured_at\":"
                             "\"2026-01-02T03:04:05.678+01:00\"},"
                             "{\"channel\":\"sms\",\"purpose\":\"service\",\"status\":"
                             "\"revoked\",\"source\":\"web\"}]}");
    ck_assert_int_eq(json_integer_value(json_object_get(out, "customer_id")), id);
    json_t *current = json_object_get(out, "current");
    ck_assert_int_eq(json_array_size(current), 2);
    json_t *first = json_array_get(current, 0); /* email < sms */
    ck_assert_str_eq(json_string_value(json_object_get(first, "captured_at")),
                     "2026-01-02T02:04:05.678Z");
    ck_assert_str_eq(json_string_value(json_object_get(first, "source")), "web");
    json_t *recorded = json_object_get(out, "recorded");
    ck_assert_int_eq(json_array_size(recorded), 2);
    ck_assert_int_lt(json_integer_value(json_object_get(json_array_get(recorded, 0), "id")),
                     json_integer_value(json_object_get(json_array_get(recorded, 1), "id")));
    ck_assert_ptr_nonnull(json_object_get(json_array_get(recorded, 0), "recorded_at"));
    json_decref(out);
}
END_TEST

START_TEST(revoked_after_granted_is_revoked)
{
    long long id = new_customer();
    json_decref(record(id, "{\"channel\":\"push\",\"purpose\":\"marketing\",\"status\":"
                           "\"granted\",\"source\":\"app\",\"captured_at\":"
                           "\"2026-01-01T00:00:00Z\"}"));
    json_t *out = record(id, "{\"channel\":\"push\",\"purpose\":\"marketing\",\"status\":"
                             "\"revoked\",\"source\":\"app\",\"captured_at\":"
                             "\"2026-01-01T00:00:01Z\"}");
    ck_assert_str_eq(current_status(json_object_get(out, "current"), "push", "marketing"),
                     "revoked");
    json_decref(out);
    ck_assert(!allows(id, "push", "marketing"));
}
END_TEST

START_TEST(a_decision_captured_earlier_but_recorded_later_does_not_override)
{
    long long id = new_customer();
    json_decref(record(id, "{\"channel\":\"email\",\"purpose\":\"profiling\",\"status\":"
                           "\"granted\",\"source\":\"web\",\"captured_at\":"
                           "\"2026-03-01T12:00:00Z\"}"));
    json_t *out = record(id, "{\"channel\":\"email\",\"purpose\":\"profiling\",\"status\":"
                             "\"revoked\",\"source\":\"offline-sync\",\"captured_at\":"
                             "\"2026-02-01T12:00:00Z\"}");
    ck_assert_str_eq(current_status(json_object_get(out, "current"), "email", "profiling"),
                     "granted");
    json_decref(out);
    ck_assert(allows(id, "email", "profiling"));
    ck_assert_int_eq(count_for("customer_consents", id), 2);
}
END_TEST

START_TEST(equal_captured_at_the_later_recorded_wins)
{
    long long id = new_customer();
    json_t *out =
        record(id, "{\"consents\":["
                   "{\"channel\":\"web\",\"purpose\":\"analytics\",\"status\":"
                   "\"revoked\",\"source\":\"a\",\"captured_at\":\"2026-01-01T00:00:00Z\"},"
                   "{\"channel\":\"web\",\"purpose\":\"analytics\",\"status\":"
                   "\"granted\",\"source\":\"b\",\"captured_at\":\"2026-01-01T00:00:00Z\"}"
                   "]}");
    ck_assert_str_eq(current_status(json_object_get(out, "current"), "web", "analytics"),
                     "granted");
    ck_assert_int_eq(json_array_size(json_object_get(out, "current")), 1);
    json_decref(out);
}
END_TEST

START_TEST(record_writes_one_audit_row_naming_the_key)
{
    long long id = new_customer();
    json_t *body = parse("{\"consents\":["
                         "{\"channel\":\"mail\",\"purpose\":\"service\",\"status\":\"granted\","
                         "\"source\":\"form\"},"
                         "{\"channel\":\"phone\",\"purpose\":\"service\",\"status\":\"granted\","
                         "\"source\":\"form\"}]}");
    crm_error err = CRM_ERROR_INIT;
    json_t *out = crm_consents_record(id, body, 4242, &err);
    json_decref(body);
    ck_assert_msg(out != NULL, "record: %s", err.detail);
    json_decref(out);
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGresult *res = unit_sql(probe,
                             "SELECT action, api_key_id, jsonb_array_length(changes->'consents') "
                             "FROM customer_audit WHERE customer_id = $1",
                             1, params);
    ck_assert_int_eq(PQntuples(res), 1);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "consent");
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "4242");
    ck_assert_str_eq(PQgetvalue(res, 0, 2), "2");
    PQclear(res);
    ck_assert_int_eq(unit_sql_long(probe,
                                   "SELECT count(*) FROM customer_consents "
                                   "WHERE customer_id = $1 AND api_key_id = 4242",
                                   1, params),
                     2);
}
END_TEST

START_TEST(an_invalid_batch_stores_nothing)
{
    long long id = new_customer();
    json_t *body = parse("{\"consents\":["
                         "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"granted\","
                         "\"source\":\"web\"},"
                         "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":\"maybe\","
                         "\"source\":\"web\"}]}");
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_consents_record(id, body, 0, &err));
    json_decref(body);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert(unit_has_field_error(&err, "/consents/1/status"));
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    crm_error_clear(&err);
    ck_assert_int_eq(count_for("customer_consents", id), 0);
    ck_assert_int_eq(count_for("customer_audit", id), 0);
}
END_TEST

START_TEST(customers_that_are_not_active_are_not_found)
{
    static const char *const statuses[] = {"deleted", "erased"};
    for (size_t i = 0; i < 2; i++) {
        long long id = customer_with_status(statuses[i]);
        json_t *body = parse("{\"channel\":\"email\",\"purpose\":\"service\",\"status\":"
                             "\"granted\",\"source\":\"web\"}");
        crm_error err = CRM_ERROR_INIT;
        ck_assert_ptr_null(crm_consents_record(id, body, 0, &err));
        json_decref(body);
        ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
        crm_error_clear(&err);
        long long next;
        ck_assert_ptr_null(crm_consents_get(id, 0, 10, &next, &err));
        ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
        crm_error_clear(&err);
        ck_assert_int_eq(count_for("customer_consents", id), 0);
        ck_assert(!allows(id, "email", "service"));
    }
    crm_error err = CRM_ERROR_INIT;
    long long next;
    ck_assert_ptr_null(crm_consents_get(9000000000000LL, 0, 10, &next, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
}
END_TEST

START_TEST(a_merged_customer_stands_for_its_survivor)
{
    long long survivor = new_customer();
    char sid[24];
    snprintf(sid, sizeof sid, "%lld", survivor);
    const char *params[] = {sid};
    long long merged = unit_sql_long(probe,
                                     "INSERT INTO customers (first_name, status, merged_into) "
                                     "VALUES ('unit', 'merged', $1) RETURNING id",
                                     1, params);
    json_t *out = record(merged, "{\"channel\":\"sms\",\"purpose\":\"marketing\",\"status\":"
                                 "\"granted\",\"source\":\"web\"}");
    ck_assert_int_eq(json_integer_value(json_object_get(out, "customer_id")), survivor);
    json_decref(out);
    ck_assert_int_eq(count_for("customer_consents", survivor), 1);
    ck_assert_int_eq(count_for("customer_consents", merged), 0);
    ck_assert(allows(merged, "sms", "marketing"));
    long long next;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_consents_get(merged, 0, 10, &next, &err);
    ck_assert_msg(doc != NULL, "get: %s", err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "customer_id")), survivor);
    json_decref(doc);
}
END_TEST

START_TEST(history_pages_newest_first)
{
    long long id = new_customer();
    for (int i = 0; i < 5; i++)
        json_decref(record(id, "{\"channel\":\"email\",\"purpose\":\"service\",\"status\":"
                               "\"granted\",\"source\":\"web\"}"));
    long long before = 0, last = 0;
    int seen = 0, pages = 0;
    do {
        crm_error err = CRM_ERROR_INIT;
        json_t *doc = crm_consents_get(id, before, 2, &before, &err);
        ck_assert_msg(doc != NULL, "get: %s", err.detail);
        pages++;
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(doc, "history"), i, e)
        {
            long long eid = json_integer_value(json_object_get(e, "id"));
            ck_assert(last == 0 || eid < last);
            last = eid;
            seen++;
        }
        ck_assert_int_eq(json_array_size(json_object_get(doc, "current")), 1);
        json_decref(doc);
    } while (before != 0 && pages < 10);
    ck_assert_int_eq(seen, 5);
    ck_assert_int_eq(pages, 3);
}
END_TEST

START_TEST(current_is_empty_without_decisions)
{
    long long id = new_customer();
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_ptr_nonnull(conn);
    json_t *current = crm_consents_current(conn, id, &err);
    crm_db_release(conn);
    ck_assert_msg(current != NULL, "current: %s", err.detail);
    ck_assert_int_eq(json_array_size(current), 0);
    json_decref(current);
}
END_TEST

/* ---- allows ------------------------------------------------------------------ */

START_TEST(allows_only_a_current_grant_for_that_channel_and_purpose)
{
    long long id = new_customer();
    ck_assert(!allows(id, "email", "marketing")); /* no record: not given */
    json_decref(record(id, "{\"channel\":\"email\",\"purpose\":\"marketing\",\"status\":"
                           "\"granted\",\"source\":\"web\"}"));
    ck_assert(allows(id, "email", "marketing"));
    ck_assert(!allows(id, "sms", "marketing"));
    ck_assert(!allows(id, "email", "profiling"));
}
END_TEST

START_TEST(allows_refuses_unknown_channels_and_purposes)
{
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_ptr_nonnull(conn);
    bool allowed = true;
    ck_assert(!crm_consents_allows(conn, 1, "fax", "marketing", &allowed, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert(!allowed);
    crm_error_clear(&err);
    ck_assert(!crm_consents_allows(conn, 1, "email", "spam", &allowed, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    crm_db_release(conn);
}
END_TEST

Suite *consents_suite(void)
{
    Suite *s = suite_create("consents");
    TCase *tc = tcase_create("validation");
    tcase_add_test(tc, parse_time_reads_utc_offsets_and_fractions);
    tcase_add_test(tc, parse_time_rejects_what_is_not_rfc3339);
    tcase_add_test(tc, validate_accepts_one_decision_without_captured_at);
    tcase_add_test(tc, validate_accepts_a_batch_in_order);
    tcase_add_test(tc, validate_names_unknown_fields);
    tcase_add_test(tc, validate_names_values_outside_the_lists);
    tcase_add_test(tc, validate_names_every_missing_or_mistyped_field);
    tcase_add_test(tc, validate_refuses_nul_bytes);
    tcase_add_test(tc, validate_source_is_1_to_100_characters);
    tcase_add_test(tc, validate_captured_at_must_be_rfc3339_and_not_far_in_the_future);
    tcase_add_test(tc, validate_batch_holds_1_to_100_objects);
    tcase_add_test(tc, validate_refuses_a_body_that_is_not_an_object);
    suite_add_tcase(s, tc);

    tc = tcase_create("database");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, record_keeps_every_decision_as_history);
    tcase_add_test(tc, record_answers_with_the_current_state_and_the_recorded_entries);
    tcase_add_test(tc, revoked_after_granted_is_revoked);
    tcase_add_test(tc, a_decision_captured_earlier_but_recorded_later_does_not_override);
    tcase_add_test(tc, equal_captured_at_the_later_recorded_wins);
    tcase_add_test(tc, record_writes_one_audit_row_naming_the_key);
    tcase_add_test(tc, an_invalid_batch_stores_nothing);
    tcase_add_test(tc, customers_that_are_not_active_are_not_found);
    tcase_add_test(tc, a_merged_customer_stands_for_its_survivor);
    tcase_add_test(tc, history_pages_newest_first);
    tcase_add_test(tc, current_is_empty_without_decisions);
    tcase_add_test(tc, allows_only_a_current_grant_for_that_channel_and_purpose);
    tcase_add_test(tc, allows_refuses_unknown_channels_and_purposes);
    suite_add_tcase(s, tc);
    return s;
}

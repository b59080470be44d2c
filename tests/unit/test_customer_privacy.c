/*
 * test_customer_privacy.c — lib/customer_privacy.h against the migrated
 * CRMD_TEST_DATABASE_URL: erasure leaves no personal data in any table of
 * the database (found by scanning every row of every table), is audited,
 * idempotent and refuses merged ids; export holds everything; the read with
 * ?expand=consents; and Idempotency-Key on recorded consents.
 */
#include <check.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consents.h"
#include "customer_privacy.h"
#include "customers.h"
#include "db.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"

static PGconn *direct;

static void setup_db(void)
{
    direct = unit_db_start(3);
}

static void teardown_db(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

/* ---- helpers ------------------------------------------------------------------ */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    ck_assert_msg(doc != NULL, "bad test JSON %s: %s", text, jerr.text);
    return doc;
}

/* A string no other test or run uses (letters and digits). */
static json_t *create_keyed(const char *text, const char *key)
{
    crm_error err = CRM_ERROR_INIT;
    crm_write_ctx ctx = {.api_key_id = 7, .idempotency_key = key};
    crm_customer_created out;
    json_t *body = parse(text);
    bool ok = crm_customer_create(body, &ctx, &out, &err);
    json_decref(body);
    ck_assert_msg(ok, "create %s: %s", text, err.detail);
    json_t *rep = parse(out.body);
    crm_customer_created_free(&out);
    return rep;
}

static json_t *create(const char *text)
{
    return create_keyed(text, NULL);
}

static long long id_of(json_t *rep)
{
    return json_integer_value(json_object_get(rep, "id"));
}

static void patch(long long id, const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_write_ctx ctx = {.api_key_id = 7, .idempotency_key = NULL};
    json_t *p = parse(text);
    json_t *rep = crm_customer_patch(id, p, NULL, &ctx, &err);
    ck_assert_msg(rep != NULL, "patch %s: %s", text, err.detail);
    json_decref(rep);
    json_decref(p);
}

/* Records consents (text) for id, with an Idempotency-Key when key is not
 * NULL; returns the response body (caller frees). */
static char *record(long long id, const char *text, const char *key, bool *replayed)
{
    crm_error err = CRM_ERROR_INIT;
    crm_idem_response out;
    bool r = false;
    json_t *body = parse(text);
    bool ok = crm_consents_record_keyed(id, body, 7, key, &out, &r, &err);
    json_decref(body);
    ck_assert_msg(ok, "consents %s: %s", text, err.detail);
    ck_assert_int_eq(out.status, 201);
    if (replayed != NULL)
        *replayed = r;
    char *b = out.body;
    out.body = NULL;
    crm_idem_response_free(&out);
    return b;
}

static json_t *erase(long long id, bool *already, crm_error *err)
{
    crm_write_ctx ctx = {.api_key_id = 7, .idempotency_key = NULL};
    return crm_customer_erase(id, &ctx, already, err);
}

static long sql_long1(const char *sql, long long id)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    return unit_sql_long(direct, sql, 1, params);
}

/* Every row of every table of the public schema whose text holds needle
 * (case-insensitively): "table:count, ..." in out, and the total. Table
 * names come from the catalog and are quoted with %I; the needle is a
 * literal quoted with %L. */
static long scan_database(const char *needle, char *out, size_t size)
{
    static const char *const sql =
        "SELECT t.tablename, h.n FROM pg_tables t, LATERAL (SELECT (xpath('/row/n/text()', "
        "query_to_xml(format('SELECT count(*) AS n FROM %I.%I x WHERE x::text ILIKE %L', "
        "t.schemaname, t.tablename, '%' || $1 || '%'), false, true, '')))[1]::text::bigint AS n) h "
        "WHERE t.schemaname = 'public' ORDER BY t.tablename";
    const char *params[] = {needle};
    PGresult *res = unit_sql(direct, sql, 1, params);
    long total = 0;
    size_t used = 0;
    out[0] = '\0';
    ck_assert_int_gt(PQntuples(res), 3); /* the scan saw the tables at all */
    for (int r = 0; r < PQntuples(res); r++) {
        long n = atol(PQgetvalue(res, r, 1));
        total += n;
        if (n > 0 && used < size)
            used += (size_t)snprintf(out + used, size - used, "%s:%ld ", PQgetvalue(res, r, 0), n);
    }
    PQclear(res);
    return total;
}

/* ---- erasure -------------------------------------------------------------------- */

START_TEST(erasure_leaves_no_personal_data_in_any_table)
{
    char last[64], local[64], attr[64], ext[64], source[64], key[64], digits[16], body[2048];
    unit_unique(last, sizeof last, "Zyxlast");
    unit_unique(local, sizeof local, "zyxmail");
    unit_unique(attr, sizeof attr, "zyxattr");
    unit_unique(ext, sizeof ext, "zyxext");
    unit_unique(source, sizeof source, "zyxsrc");
    unit_unique(key, sizeof key, "idem");
    snprintf(digits, sizeof digits, "%08u", randombytes_uniform(100000000));
    snprintf(body, sizeof body,
             "{\"first_name\": \"Ada\", \"last_name\": \"%s\", \"email\": \"%s@example.com\", "
             "\"phone\": \"+39 06 %s\", \"address\": {\"country\": \"IT\", \"city\": \"Roma\", "
             "\"street\": \"Via %s 1\"}, \"tags\": [\"%s\"], \"attributes\": {\"note\": \"%s\"}, "
             "\"birth_date\": \"1990-01-02\", \"external_ids\": [{\"source\": \"crm\", \"id\": "
             "\"%s\"}]}",
             last, local, digits, last, attr, attr, ext);
    json_t *c = create_keyed(body, key);
    long long id = id_of(c);
    /* The audit trail now holds old values, the consents a source. */
    snprintf(body, sizeof body, "{\"last_name\": \"%sX\", \"company\": \"%s Ltd\"}", last, last);
    patch(id, body);
    snprintf(body, sizeof body,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": \"granted\", "
             "\"source\": \"%s\"}",
             source);
    char key2[64];
    unit_unique(key2, sizeof key2, "idem");
    free(record(id, body, key2, NULL));

    const char *needles[] = {last, local, attr, ext, source, digits};
    char where[1024];
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        ck_assert_msg(scan_database(needles[i], where, sizeof where) > 0,
                      "the scan does not find %s before erasure", needles[i]);

    crm_error err = CRM_ERROR_INIT;
    bool already = true;
    json_t *stone = erase(id, &already, &err);
    ck_assert_msg(stone != NULL, "erase: %s", err.detail);
    ck_assert(!already);
    ck_assert_str_eq(json_string_value(json_object_get(stone, "status")), "erased");
    ck_assert_int_eq(json_integer_value(json_object_get(stone, "version")), 3);

    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++) {
        long hits = scan_database(needles[i], where, sizeof where);
        ck_assert_msg(hits == 0, "%s still found after erasure in %s", needles[i], where);
    }
    /* The tombstone and the anonymous facts remain. */
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM customers WHERE id = $1 AND status = "
                               "'erased' AND email IS NULL AND country IS NULL AND tags = '{}' "
                               "AND attributes = '{}'",
                               id),
                     1);
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM customer_consents WHERE customer_id = $1 "
                               "AND channel = 'email' AND status = 'granted' AND source = "
                               "'redacted'",
                               id),
                     1);
    ck_assert_int_eq(
        sql_long1("SELECT count(*) FROM customer_external_ids WHERE customer_id = $1", id), 0);
    json_decref(stone);
    json_decref(c);
}
END_TEST

START_TEST(erasure_is_audited_without_personal_data)
{
    json_t *c = create("{\"first_name\": \"Audited\", \"email\": \"audited@example.com\"}");
    long long id = id_of(c);
    crm_error err = CRM_ERROR_INIT;
    bool already;
    json_t *stone = erase(id, &already, &err);
    ck_assert_ptr_nonnull(stone);
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM customer_audit WHERE customer_id = $1 AND "
                               "action = 'erase' AND api_key_id = 7 AND changes->'status'->>'from' "
                               "= 'active'",
                               id),
                     1);
    /* Every other entry is redacted. */
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM customer_audit WHERE customer_id = $1 AND "
                               "action <> 'erase' AND changes <> '{\"redacted\": true}'",
                               id),
                     0);
    json_decref(stone);
    json_decref(c);
}
END_TEST

START_TEST(erasing_an_unknown_customer_is_not_found)
{
    crm_error err = CRM_ERROR_INIT;
    bool already;
    ck_assert_ptr_null(erase(9000000000000LL, &already, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
}
END_TEST

START_TEST(erasing_twice_returns_the_same_tombstone_and_writes_nothing)
{
    json_t *c = create("{\"first_name\": \"Twice\"}");
    long long id = id_of(c);
    crm_error err = CRM_ERROR_INIT;
    bool already;
    json_t *a = erase(id, &already, &err);
    ck_assert_ptr_nonnull(a);
    long audits = sql_long1("SELECT count(*) FROM customer_audit WHERE customer_id = $1", id);
    json_t *b = erase(id, &already, &err);
    ck_assert_ptr_nonnull(b);
    ck_assert(already);
    ck_assert(json_equal(a, b));
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM customer_audit WHERE customer_id = $1", id),
                     audits);
    json_decref(a);
    json_decref(b);
    json_decref(c);
}
END_TEST

START_TEST(an_erased_customer_is_gone_for_reads_and_writes)
{
    json_t *c = create("{\"first_name\": \"Gone\"}");
    long long id = id_of(c);
    crm_error err = CRM_ERROR_INIT;
    bool already;
    json_decref(erase(id, &already, &err));
    ck_assert_ptr_null(crm_customer_get(id, false, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    ck_assert_ptr_null(crm_customer_export(id, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    ck_assert_ptr_null(crm_customer_get_expanded(id, &(crm_customer_expand){.consents = true}, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    crm_write_ctx ctx = {0};
    json_t *p = parse("{\"first_name\": \"Back\"}");
    ck_assert_ptr_null(crm_customer_patch(id, p, NULL, &ctx, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    json_decref(p);
    json_t *d = parse("{\"channel\": \"sms\", \"purpose\": \"service\", \"status\": "
                      "\"granted\", \"source\": \"app\"}");
    ck_assert_ptr_null(crm_consents_record(id, d, 0, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    json_decref(d);
    json_decref(c);
}
END_TEST

START_TEST(a_merged_id_is_refused_and_the_survivor_erases_both)
{
    json_t *survivor = create("{\"first_name\": \"Keeper\", \"email\": \"keeper@example.com\"}");
    char merged_mail[64], body[256];
    unit_unique(merged_mail, sizeof merged_mail, "merged");
    snprintf(body, sizeof body, "{\"first_name\": \"Folded\", \"email\": \"%s@example.com\"}",
             merged_mail);
    json_t *merged = create(body);
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", id_of(merged));
    snprintf(b, sizeof b, "%lld", id_of(survivor));
    PQclear(unit_sql(direct,
                     "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1", 2,
                     (const char *[]){a, b}));
    crm_error err = CRM_ERROR_INIT;
    bool already;
    ck_assert_ptr_null(erase(id_of(merged), &already, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert(unit_has_field_error(&err, "id"));
    ck_assert_ptr_nonnull(strstr(err.detail, b));
    crm_error_clear(&err);

    json_t *stone = erase(id_of(survivor), &already, &err);
    ck_assert_ptr_nonnull(stone);
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM customers WHERE id = $1 AND status = "
                               "'erased' AND email IS NULL AND merged_into IS NOT NULL",
                               id_of(merged)),
                     1);
    char where[512];
    ck_assert_int_eq(scan_database(merged_mail, where, sizeof where), 0);
    json_decref(stone);
    json_decref(survivor);
    json_decref(merged);
}
END_TEST

START_TEST(a_deleted_customer_can_be_erased)
{
    json_t *c = create("{\"first_name\": \"Deleted\"}");
    crm_error err = CRM_ERROR_INIT;
    crm_write_ctx ctx = {0};
    ck_assert(crm_customer_delete(id_of(c), NULL, &ctx, &err));
    bool already;
    json_t *stone = erase(id_of(c), &already, &err);
    ck_assert_ptr_nonnull(stone);
    ck_assert(!already);
    json_decref(stone);
    json_decref(c);
}
END_TEST

START_TEST(the_erase_body_must_confirm)
{
    const char *bad[] = {"{}", "{\"confirm\": false}", "{\"confirm\": \"yes\"}",
                         "{\"confirm\": true, \"why\": 1}", "[]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        crm_error err = CRM_ERROR_INIT;
        json_t *b = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        ck_assert_msg(!crm_customer_erase_body_valid(b, &err), "%s accepted", bad[i]);
        ck_assert_int_eq(err.code, CRM_E_INVALID);
        crm_error_clear(&err);
        json_decref(b);
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *ok = parse("{\"confirm\": true}");
    ck_assert(crm_customer_erase_body_valid(ok, &err));
    json_decref(ok);
}
END_TEST

/* ---- export ----------------------------------------------------------------------- */

static json_t *find_by(json_t *arr, const char *key, const char *value)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        const char *s = json_string_value(json_object_get(e, key));
        if (s != NULL && strcmp(s, value) == 0)
            return e;
    }
    return NULL;
}

START_TEST(export_holds_everything_about_the_person)
{
    char ext[64], body[1024];
    unit_unique(ext, sizeof ext, "exp");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Export\", \"email\": \"export@example.com\", \"external_ids\": "
             "[{\"source\": \"crm\", \"id\": \"%s\"}, {\"source\": \"shop\", \"id\": \"%s\"}]}",
             ext, ext);
    json_t *c = create(body);
    long long id = id_of(c);
    patch(id, "{\"last_name\": \"Later\"}");
    free(record(id,
                "{\"consents\": [{\"channel\": \"email\", \"purpose\": \"marketing\", "
                "\"status\": \"granted\", \"source\": \"web\"}, {\"channel\": \"sms\", "
                "\"purpose\": \"marketing\", \"status\": \"revoked\", \"source\": \"web\"}]}",
                NULL, NULL));
    free(record(id,
                "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": \"revoked\", "
                "\"source\": \"call\"}",
                NULL, NULL));
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_customer_export(id, &err);
    ck_assert_msg(doc != NULL, "export: %s", err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "format_version")), 1);
    ck_assert(json_is_string(json_object_get(doc, "exported_at")));
    json_t *cust = json_object_get(doc, "customer");
    ck_assert_int_eq(id_of(cust), id);
    ck_assert_str_eq(json_string_value(json_object_get(cust, "email")), "export@example.com");
    ck_assert_str_eq(json_string_value(json_object_get(cust, "last_name")), "Later");
    ck_assert_str_eq(json_string_value(json_object_get(cust, "status")), "active");
    ck_assert_int_eq(json_array_size(json_object_get(cust, "external_ids")), 2);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "merged_customers")), 0);
    json_t *consents = json_object_get(doc, "consents");
    ck_assert_int_eq(json_array_size(json_object_get(consents, "history")), 3);
    json_t *current = json_object_get(consents, "current");
    ck_assert_int_eq(json_array_size(current), 2);
    json_t *email = find_by(current, "channel", "email");
    ck_assert_str_eq(json_string_value(json_object_get(email, "status")), "revoked");
    json_t *audit = json_object_get(doc, "audit");
    ck_assert_int_eq(json_array_size(audit), 4); /* create, update, consent, consent */
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(audit, 0), "action")),
                     "create");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(audit, 1), "action")),
                     "update");
    json_decref(doc);
    json_decref(c);
}
END_TEST

START_TEST(export_of_a_merged_id_is_the_survivors_with_the_merged_customer)
{
    json_t *survivor = create("{\"first_name\": \"Main\"}");
    json_t *merged = create("{\"first_name\": \"Old\", \"email\": \"old@example.com\"}");
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", id_of(merged));
    snprintf(b, sizeof b, "%lld", id_of(survivor));
    PQclear(unit_sql(direct,
                     "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1", 2,
                     (const char *[]){a, b}));
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_customer_export(id_of(merged), &err);
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(id_of(json_object_get(doc, "customer")), id_of(survivor));
    json_t *m = json_array_get(json_object_get(doc, "merged_customers"), 0);
    ck_assert_int_eq(id_of(m), id_of(merged));
    ck_assert_str_eq(json_string_value(json_object_get(m, "email")), "old@example.com");
    ck_assert_int_eq(json_array_size(json_object_get(doc, "audit")), 2); /* both creates */
    json_decref(doc);
    json_decref(survivor);
    json_decref(merged);
}
END_TEST

/* ---- expand and idempotent consents -------------------------------------------------- */

START_TEST(get_expanded_with_consents_has_the_current_state)
{
    char ext[64], body[256];
    unit_unique(ext, sizeof ext, "expand");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Expand\", \"external_ids\": [{\"source\": \"x\", \"id\": "
             "\"%s\"}]}",
             ext);
    json_t *c = create(body);
    long long id = id_of(c);
    crm_error err = CRM_ERROR_INIT;
    json_t *rep = crm_customer_get_expanded(id, &(crm_customer_expand){.consents = true}, &err);
    ck_assert_ptr_nonnull(rep);
    ck_assert_int_eq(json_array_size(json_object_get(rep, "consents")), 0);
    ck_assert_ptr_null(json_object_get(rep, "external_ids"));
    json_decref(rep);
    free(record(id,
                "{\"channel\": \"push\", \"purpose\": \"service\", \"status\": \"granted\", "
                "\"source\": \"app\"}",
                NULL, NULL));
    rep = crm_customer_get_expanded(id, &(crm_customer_expand){.external_ids = true, .consents = true}, &err);
    ck_assert_ptr_nonnull(rep);
    json_t *cur = json_object_get(rep, "consents");
    ck_assert_int_eq(json_array_size(cur), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(cur, 0), "channel")), "push");
    ck_assert_int_eq(json_array_size(json_object_get(rep, "external_ids")), 1);
    json_decref(rep);
    json_decref(c);
}
END_TEST

START_TEST(recorded_consents_replay_with_the_same_idempotency_key)
{
    json_t *c = create("{\"first_name\": \"Replay\"}");
    long long id = id_of(c);
    char key[64];
    unit_unique(key, sizeof key, "ckey");
    const char *body = "{\"channel\": \"email\", \"purpose\": \"service\", \"status\": "
                       "\"granted\", \"source\": \"app\"}";
    bool replayed = true;
    char *first = record(id, body, key, &replayed);
    ck_assert(!replayed);
    char *second = record(id,
                          "{\"source\": \"app\", \"status\": \"granted\", \"purpose\": "
                          "\"service\", \"channel\": \"email\"}",
                          key, &replayed);
    ck_assert(replayed);
    ck_assert_str_eq(first, second);
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM customer_consents WHERE customer_id = $1", id),
                     1);
    ck_assert_int_eq(sql_long1("SELECT count(*) FROM idempotency_keys WHERE customer_id = $1", id),
                     1);
    /* Another body, or another customer, with the same key is a conflict. */
    crm_error err = CRM_ERROR_INIT;
    crm_idem_response out;
    json_t *other = parse("{\"channel\": \"sms\", \"purpose\": \"service\", \"status\": "
                          "\"granted\", \"source\": \"app\"}");
    ck_assert(!crm_consents_record_keyed(id, other, 7, key, &out, &replayed, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    crm_error_clear(&err);
    json_t *same = parse(body);
    json_t *c2 = create("{\"first_name\": \"Other\"}");
    ck_assert(!crm_consents_record_keyed(id_of(c2), same, 7, key, &out, &replayed, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    crm_error_clear(&err);
    json_decref(other);
    json_decref(same);
    json_decref(c2);
    free(first);
    free(second);
    json_decref(c);
}
END_TEST

Suite *customer_privacy_suite(void)
{
    Suite *s = suite_create("customer_privacy");
    TCase *tc = tcase_create("privacy");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup_db, teardown_db);
    tcase_add_test(tc, erasure_leaves_no_personal_data_in_any_table);
    tcase_add_test(tc, erasure_is_audited_without_personal_data);
    tcase_add_test(tc, erasing_an_unknown_customer_is_not_found);
    tcase_add_test(tc, erasing_twice_returns_the_same_tombstone_and_writes_nothing);
    tcase_add_test(tc, an_erased_customer_is_gone_for_reads_and_writes);
    tcase_add_test(tc, a_merged_id_is_refused_and_the_survivor_erases_both);
    tcase_add_test(tc, a_deleted_customer_can_be_erased);
    tcase_add_test(tc, the_erase_body_must_confirm);
    tcase_add_test(tc, export_holds_everything_about_the_person);
    tcase_add_test(tc, export_of_a_merged_id_is_the_survivors_with_the_merged_customer);
    tcase_add_test(tc, get_expanded_with_consents_has_the_current_state);
    tcase_add_test(tc, recorded_consents_replay_with_the_same_idempotency_key);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_customer_merge.c — lib/customer_merge.h against the migrated
 * CRMD_TEST_DATABASE_URL: the reasons and order of duplicates, a merge that
 * loses nothing, the most restrictive consent standing, a dry run that
 * changes nothing, every refused merge storing nothing, merged ids
 * resolving (through chains) for reads and writes, and two overlapping
 * merges at once. The database is shared by the whole run, so every test
 * makes its own customers with unique e-mails, phones and postal codes.
 */
#include <check.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consents.h"
#include "customer_merge.h"
#include "customers.h"
#include "db.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"

static PGconn *direct;
static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};

static void setup_db(void)
{
    direct = unit_db_start(4);
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
/* A phone number no other test uses: "+39" and 11 random digits. */
static void unique_phone(char *buf, size_t size)
{
    snprintf(buf, size, "+39%05u%06u", randombytes_uniform(100000), randombytes_uniform(1000000));
}

/* A postal code no other test uses (at most 20 characters). */
static void unique_postal(char *buf, size_t size)
{
    snprintf(buf, size, "PC%08x%06u", randombytes_random(), randombytes_uniform(1000000));
}

static long long id_of(json_t *rep)
{
    return json_integer_value(json_object_get(rep, "id"));
}

/* Creates a customer from text; returns its id. */
static long long create(const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created out;
    json_t *body = parse(text);
    bool ok = crm_customer_create(body, &ctx, &out, &err);
    json_decref(body);
    ck_assert_msg(ok, "create %s: %s", text, err.detail);
    json_t *rep = parse(out.body);
    long long id = id_of(rep);
    json_decref(rep);
    crm_customer_created_free(&out);
    return id;
}

static void record_consent(long long id, const char *channel, const char *status,
                           const char *captured_at)
{
    char text[256];
    snprintf(text, sizeof text,
             "{\"channel\": \"%s\", \"purpose\": \"marketing\", \"status\": \"%s\", "
             "\"source\": \"test\", \"captured_at\": \"%s\"}",
             channel, status, captured_at);
    json_t *body = parse(text);
    crm_error err = CRM_ERROR_INIT;
    json_t *out = crm_consents_record(id, body, 0, &err);
    ck_assert_msg(out != NULL, "consent: %s", err.detail);
    json_decref(out);
    json_decref(body);
}

/* Merges ids (a JSON array text) into survivor; returns the result or NULL
 * with err set. */
static json_t *merge(long long survivor, const char *ids, bool dry_run, crm_error *err)
{
    char text[512];
    snprintf(text, sizeof text, "{\"merge_ids\": %s, \"dry_run\": %s}", ids,
             dry_run ? "true" : "false");
    json_t *body = parse(text);
    bool was_dry = !dry_run;
    json_t *rep = crm_customer_merge(survivor, body, &ctx, &was_dry, err);
    json_decref(body);
    ck_assert(was_dry == dry_run);
    return rep;
}

static long count_for(const char *sql, long long id)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    return unit_sql_long(direct, sql, 1, params);
}

static json_t *get(long long id)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *rep = crm_customer_get(id, true, &err);
    ck_assert_msg(rep != NULL, "get %lld: %s", id, err.detail);
    return rep;
}

/* Everything stored about a set of customers, as one comparable text: the
 * rows of customers, external ids, consents and audit of ids (a SQL array
 * text such as "{1,2}"). The caller frees it. */
static char *snapshot(const char *ids)
{
    const char *params[] = {ids};
    PGresult *res = unit_sql(
        direct,
        "SELECT concat_ws('|',"
        " (SELECT json_agg(c ORDER BY c.id)::text FROM customers c WHERE c.id = ANY($1::bigint[])),"
        " (SELECT json_agg(x ORDER BY x.source, x.external_id)::text FROM customer_external_ids x"
        "   WHERE x.customer_id = ANY($1::bigint[])),"
        " (SELECT json_agg(k ORDER BY k.id)::text FROM customer_consents k"
        "   WHERE k.customer_id = ANY($1::bigint[])),"
        " (SELECT json_agg(a ORDER BY a.id)::text FROM customer_audit a"
        "   WHERE a.customer_id = ANY($1::bigint[])))",
        1, params);
    char *s = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return s;
}

/* The current decision of id (already resolved) on email/marketing. */
static json_t *current_email_marketing(json_t *rep)
{
    json_t *consents = json_object_get(rep, "consents");
    size_t i;
    json_t *c;
    json_array_foreach(consents, i, c) {
        if (strcmp(json_string_value(json_object_get(c, "channel")), "email") == 0 &&
            strcmp(json_string_value(json_object_get(c, "purpose")), "marketing") == 0)
            return c;
    }
    return NULL;
}

/* ---- duplicates --------------------------------------------------------------------- */

START_TEST(duplicates_name_each_reason_strongest_first)
{
    char email[96], phone[24], other_phone[24], postal[24], other_postal[24], tag[64], text[1024];
    unit_unique(tag, sizeof tag, "dup");
    snprintf(email, sizeof email, "%s@example.com", tag);
    unique_phone(phone, sizeof phone);
    unique_phone(other_phone, sizeof other_phone);
    unique_postal(postal, sizeof postal);
    unique_postal(other_postal, sizeof other_postal);

    snprintf(text, sizeof text,
             "{\"first_name\": \"Giulia\", \"last_name\": \"Bianchi\", \"email\": \"%s\", "
             "\"phone\": \"%s\", \"address\": {\"postal_code\": \"%s\"}}",
             email, phone, postal);
    long long me = create(text);
    /* The same e-mail in other case and spaces: normalized, it matches. */
    snprintf(text, sizeof text, "{\"first_name\": \"Other\", \"email\": \"  %c%s\"}",
             email[0] - 32, email + 1);
    long long by_email = create(text);
    snprintf(text, sizeof text, "{\"first_name\": \"Third\", \"phone\": \"%s\"}", phone);
    long long by_phone = create(text);
    /* A close name at the same postal code, written with a space. */
    snprintf(text, sizeof text,
             "{\"first_name\": \"giulia\", \"last_name\": \"Bianchini\", "
             "\"address\": {\"postal_code\": \"%.4s %s\"}}",
             postal, postal + 4);
    long long by_name = create(text);
    snprintf(text, sizeof text, "{\"display_name\": \"X\", \"email\": \"%s\", \"phone\": \"%s\"}",
             email, phone);
    long long by_both = create(text);
    /* Not duplicates: the same name elsewhere, a far name here, a deleted one. */
    snprintf(text, sizeof text,
             "{\"first_name\": \"Giulia\", \"last_name\": \"Bianchi\", \"phone\": \"%s\", "
             "\"address\": {\"postal_code\": \"%s\"}}",
             other_phone, other_postal);
    create(text);
    snprintf(text, sizeof text,
             "{\"first_name\": \"Marco\", \"last_name\": \"Rossi\", "
             "\"address\": {\"postal_code\": \"%s\"}}",
             postal);
    create(text);
    snprintf(text, sizeof text, "{\"email\": \"%s\"}", email);
    long long deleted = create(text);
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_customer_delete(deleted, NULL, &ctx, &err));

    json_t *doc = crm_customer_duplicates(me, &err);
    ck_assert_msg(doc != NULL, "%s", err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "customer_id")), me);
    json_t *data = json_object_get(doc, "data");
    char *dump = json_dumps(data, JSON_COMPACT);
    ck_assert_msg(json_array_size(data) == 4, "%s", dump);
    const long long want_ids[] = {by_both, by_email, by_phone, by_name};
    const char *want_reasons[] = {"[\"email\",\"phone\"]", "[\"email\"]", "[\"phone\"]",
                                  "[\"name_and_postal_code\"]"};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(data, i);
        ck_assert_msg(id_of(json_object_get(e, "customer")) == want_ids[i], "entry %zu: %s", i,
                      dump);
        char *reasons = json_dumps(json_object_get(e, "reasons"), JSON_COMPACT);
        ck_assert_str_eq(reasons, want_reasons[i]);
        free(reasons);
    }
    free(dump);
    json_decref(doc);
}
END_TEST

START_TEST(duplicates_of_an_unknown_or_deleted_customer_are_not_found)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_customer_duplicates(999999999999LL, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    long long id = create("{\"first_name\": \"Gone\"}");
    ck_assert(crm_customer_delete(id, NULL, &ctx, &err));
    ck_assert_ptr_null(crm_customer_duplicates(id, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
}
END_TEST

START_TEST(duplicates_use_indexes_not_a_scan_of_all_customers)
{
    /* With sequential scans priced out, the plan still runs: every part
     * has an index to use. A part without one would show "Seq Scan on
     * customers" here. */
    PQclear(unit_sql(direct, "SET enable_seqscan = off", 0, NULL));
    PGresult *res = unit_sql(
        direct,
        "EXPLAIN SELECT o.id FROM customers o WHERE o.email_normalized = 'a@b.c' "
        "AND o.status = 'active' UNION ALL SELECT o.id FROM customers o "
        "WHERE o.phone_normalized = '+391234567' AND o.status = 'active' UNION ALL "
        "SELECT o.id FROM customers o WHERE upper(replace(o.postal_code, ' ', '')) = 'X1' "
        "AND o.postal_code IS NOT NULL AND o.status = 'active'",
        0, NULL);
    for (int r = 0; r < PQntuples(res); r++)
        ck_assert_msg(strstr(PQgetvalue(res, r, 0), "Seq Scan") == NULL, "%s",
                      PQgetvalue(res, r, 0));
    PQclear(res);
    PQclear(unit_sql(direct, "RESET enable_seqscan", 0, NULL));
}
END_TEST

/* ---- merge ------------------------------------------------------------------------------ */

START_TEST(a_merge_moves_and_fills_everything_and_loses_nothing)
{
    char s[64], e[96], text[1024];
    unit_unique(s, sizeof s, "src");
    snprintf(e, sizeof e, "%s@example.com", s);
    snprintf(text, sizeof text,
             "{\"first_name\": \"Ann\", \"tags\": [\"a\"], \"attributes\": {\"x\": 1}, "
             "\"external_ids\": [{\"source\": \"%s\", \"id\": \"s1\"}]}",
             s);
    long long a = create(text);
    snprintf(text, sizeof text,
             "{\"first_name\": \"Anna\", \"last_name\": \"Lee\", \"email\": \"%s\", "
             "\"tags\": [\"b\", \"a\"], \"attributes\": {\"x\": 2, \"y\": 3}, "
             "\"address\": {\"city\": \"Rome\", \"country\": \"IT\"}, "
             "\"external_ids\": [{\"source\": \"%s\", \"id\": \"s2\"}, "
             "{\"source\": \"%s\", \"id\": \"s3\"}]}",
             e, s, s);
    long long b = create(text);
    snprintf(text, sizeof text,
             "{\"last_name\": \"Ignored\", \"company\": \"ACME\", \"tags\": [\"c\"], "
             "\"attributes\": {\"y\": 9, \"z\": 4}, "
             "\"external_ids\": [{\"source\": \"%s\", \"id\": \"s4\"}]}",
             s);
    long long c = create(text);
    record_consent(a, "email", "granted", "2026-01-01T00:00:00Z");
    record_consent(b, "sms", "granted", "2026-01-02T00:00:00Z");
    record_consent(b, "sms", "revoked", "2026-01-03T00:00:00Z");
    record_consent(c, "push", "granted", "2026-01-04T00:00:00Z");
    char all[96];
    snprintf(all, sizeof all, "{%lld,%lld,%lld}", a, b, c);
    const char *params[] = {all};
    long consents_before = unit_sql_long(
        direct, "SELECT count(*) FROM customer_consents WHERE customer_id = ANY($1::bigint[])", 1,
        params);

    char ids[64];
    snprintf(ids, sizeof ids, "[%lld, %lld]", b, c);
    crm_error err = CRM_ERROR_INIT;
    json_t *rep = merge(a, ids, false, &err);
    ck_assert_msg(rep != NULL, "merge: %s", err.detail);

    ck_assert_int_eq(id_of(rep), a);
    ck_assert_int_eq(json_integer_value(json_object_get(rep, "version")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(rep, "first_name")), "Ann");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "last_name")), "Lee");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "email")), e);
    ck_assert_str_eq(json_string_value(json_object_get(rep, "company")), "ACME");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(rep, "address"), "city")), "Rome");
    char *tags = json_dumps(json_object_get(rep, "tags"), JSON_COMPACT);
    ck_assert_str_eq(tags, "[\"a\",\"b\",\"c\"]");
    free(tags);
    char *attrs = json_dumps(json_object_get(rep, "attributes"), JSON_COMPACT | JSON_SORT_KEYS);
    ck_assert_str_eq(attrs, "{\"x\":1,\"y\":3,\"z\":4}");
    free(attrs);
    ck_assert_int_eq(json_array_size(json_object_get(rep, "external_ids")), 4);
    ck_assert_int_eq(json_array_size(json_object_get(rep, "consents")), 3);

    /* In the database: every external id and consent row on the survivor. */
    ck_assert_int_eq(count_for("SELECT count(*) FROM customer_external_ids WHERE customer_id = $1",
                               a),
                     4);
    ck_assert_int_eq(count_for("SELECT count(*) FROM customer_consents WHERE customer_id = $1", a),
                     consents_before);
    ck_assert_int_eq(
        unit_sql_long(direct,
                      "SELECT count(*) FROM customer_consents WHERE customer_id = ANY($1::bigint[])",
                      1, params),
        consents_before);
    /* The merged customers are aliases now, with their version bumped. */
    long long merged[] = {b, c};
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(count_for("SELECT count(*) FROM customers WHERE id = $1 AND status = "
                                   "'merged' AND version = 2",
                                   merged[i]),
                         1);
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", merged[i]);
        ck_assert_int_eq(unit_sql_long(direct, "SELECT merged_into FROM customers WHERE id = $1",
                                       1, (const char *[]){idbuf}),
                         a);
        ck_assert_int_eq(count_for("SELECT count(*) FROM customer_audit WHERE customer_id = $1 "
                                   "AND action = 'merge' AND changes->'merged_into'->>'to' IS "
                                   "NOT NULL",
                                   merged[i]),
                         1);
        json_t *alias = get(merged[i]);
        ck_assert_int_eq(id_of(alias), a);
        json_decref(alias);
    }
    /* The survivor's audit row lists the merged ids and the filled fields. */
    char want_ids[64];
    snprintf(want_ids, sizeof want_ids, "[%lld, %lld]", b, c);
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", a);
    PGresult *res = unit_sql(direct,
                             "SELECT changes->'merged_ids'->>'to', changes ? 'last_name', "
                             "changes ? 'email', changes ? 'tags', "
                             "jsonb_array_length(changes->'external_ids'->'to') "
                             "FROM customer_audit WHERE customer_id = $1 AND action = 'merge'",
                             1, (const char *[]){idbuf});
    ck_assert_int_eq(PQntuples(res), 1);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), want_ids);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "t");
    ck_assert_str_eq(PQgetvalue(res, 0, 2), "t");
    ck_assert_str_eq(PQgetvalue(res, 0, 3), "t");
    ck_assert_str_eq(PQgetvalue(res, 0, 4), "3");
    PQclear(res);
    json_decref(rep);
}
END_TEST

START_TEST(a_later_grant_of_a_merged_customer_does_not_override_a_revocation)
{
    long long a = create("{\"first_name\": \"Revoked\"}");
    long long b = create("{\"first_name\": \"Granted later\"}");
    record_consent(a, "email", "revoked", "2026-01-01T00:00:00Z");
    record_consent(b, "email", "granted", "2026-02-01T00:00:00Z"); /* newer: it would win */
    char ids[32];
    snprintf(ids, sizeof ids, "[%lld]", b);
    crm_error err = CRM_ERROR_INIT;
    json_t *rep = merge(a, ids, false, &err);
    ck_assert_msg(rep != NULL, "merge: %s", err.detail);
    json_t *cur = current_email_marketing(rep);
    ck_assert_ptr_nonnull(cur);
    ck_assert_str_eq(json_string_value(json_object_get(cur, "status")), "revoked");
    ck_assert_str_eq(json_string_value(json_object_get(cur, "source")), "merge");
    json_decref(rep);

    crm_conn *c = crm_db_acquire(&err);
    ck_assert_ptr_nonnull(c);
    bool allowed = true;
    ck_assert(crm_consents_allows(c, b, "email", "marketing", &allowed, &err));
    crm_db_release(c);
    ck_assert(!allowed);
    /* Nothing lost: both decisions and the merge's are in the history. */
    ck_assert_int_eq(count_for("SELECT count(*) FROM customer_consents WHERE customer_id = $1", a),
                     3);
}
END_TEST

START_TEST(a_revocation_of_the_merged_customer_stands_over_the_survivors_grant)
{
    long long a = create("{\"first_name\": \"Granted\"}");
    long long b = create("{\"first_name\": \"Revoked\"}");
    record_consent(a, "email", "granted", "2026-03-01T00:00:00Z");
    record_consent(b, "email", "revoked", "2026-01-01T00:00:00Z"); /* older: it would lose */
    char ids[32];
    snprintf(ids, sizeof ids, "[%lld]", b);
    crm_error err = CRM_ERROR_INIT;
    json_t *rep = merge(a, ids, false, &err);
    ck_assert_msg(rep != NULL, "merge: %s", err.detail);
    json_t *cur = current_email_marketing(rep);
    ck_assert_ptr_nonnull(cur);
    ck_assert_str_eq(json_string_value(json_object_get(cur, "status")), "revoked");
    json_decref(rep);
}
END_TEST

START_TEST(a_dry_run_answers_the_merge_and_changes_nothing)
{
    char s[64], text[512];
    unit_unique(s, sizeof s, "dry");
    snprintf(text, sizeof text,
             "{\"first_name\": \"Dry\", \"external_ids\": [{\"source\": \"%s\", \"id\": \"1\"}]}",
             s);
    long long a = create(text);
    snprintf(text, sizeof text,
             "{\"last_name\": \"Run\", \"tags\": [\"t\"], "
             "\"external_ids\": [{\"source\": \"%s\", \"id\": \"2\"}]}",
             s);
    long long b = create(text);
    record_consent(a, "email", "revoked", "2026-01-01T00:00:00Z");
    record_consent(b, "email", "granted", "2026-02-01T00:00:00Z");
    char all[64], ids[32];
    snprintf(all, sizeof all, "{%lld,%lld}", a, b);
    snprintf(ids, sizeof ids, "[%lld]", b);
    char *before = snapshot(all);
    json_t *rep_a = get(a), *rep_b = get(b);

    crm_error err = CRM_ERROR_INIT;
    json_t *dry = merge(a, ids, true, &err);
    ck_assert_msg(dry != NULL, "dry run: %s", err.detail);
    char *after = snapshot(all);
    ck_assert_str_eq(before, after);
    json_t *again_a = get(a), *again_b = get(b);
    ck_assert(json_equal(rep_a, again_a));
    ck_assert(json_equal(rep_b, again_b));

    json_t *real = merge(a, ids, false, &err);
    ck_assert_msg(real != NULL, "merge: %s", err.detail);
    static const char *const same[] = {"id",   "version",      "first_name", "last_name",
                                       "tags", "external_ids", "attributes"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        ck_assert_msg(json_equal(json_object_get(dry, same[i]), json_object_get(real, same[i])),
                      "%s differs", same[i]);
    ck_assert_str_eq(json_string_value(json_object_get(current_email_marketing(dry), "status")),
                     "revoked");
    free(before);
    free(after);
    json_decref(dry);
    json_decref(real);
    json_decref(rep_a);
    json_decref(rep_b);
    json_decref(again_a);
    json_decref(again_b);
}
END_TEST

/* Asserts that merging body into survivor fails with code naming field and
 * that nothing about the parties changed. */
static void assert_refused(long long survivor, const char *body, const char *parties,
                           crm_errcode code, const char *field)
{
    char *before = snapshot(parties);
    json_t *doc = parse(body);
    crm_error err = CRM_ERROR_INIT;
    bool dry = false;
    json_t *rep = crm_customer_merge(survivor, doc, &ctx, &dry, &err);
    json_decref(doc);
    ck_assert_msg(rep == NULL, "%s was accepted", body);
    ck_assert_msg(err.code == code, "%s: code %d, want %d (%s)", body, err.code, code, err.detail);
    if (field != NULL)
        ck_assert_msg(unit_has_field_error(&err, field), "%s: no error for %s", body, field);
    crm_error_clear(&err);
    char *after = snapshot(parties);
    ck_assert_msg(strcmp(before, after) == 0, "%s changed something", body);
    free(before);
    free(after);
}

/* Creates a customer with n tags "<letter>0", "<letter>1", ...; returns its id. */
static long long create_with_tags(char letter, int n)
{
    char text[2048] = "{\"tags\": [";
    for (int i = 0; i < n; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s\"%c%d\"", i ? "," : "",
                 letter, i);
    strcat(text, "]}");
    return create(text);
}

START_TEST(every_refused_merge_names_the_fault_and_stores_nothing)
{
    long long a = create("{\"first_name\": \"A\"}");
    long long b = create("{\"first_name\": \"B\", \"tags\": [\"x\"]}");
    long long gone = create("{\"first_name\": \"Deleted\"}");
    long long m = create("{\"first_name\": \"Merged\"}");
    long long other = create("{\"first_name\": \"Other\"}");
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_customer_delete(gone, NULL, &ctx, &err));
    char ids[32];
    snprintf(ids, sizeof ids, "[%lld]", m);
    json_t *rep = merge(other, ids, false, &err);
    ck_assert_msg(rep != NULL, "%s", err.detail);
    json_decref(rep);

    char parties[128], body[256];
    snprintf(parties, sizeof parties, "{%lld,%lld,%lld,%lld,%lld}", a, b, gone, m, other);
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, %lld]}", b, a);
    assert_refused(a, body, parties, CRM_E_INVALID, "/merge_ids/1");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, %lld]}", b, b);
    assert_refused(a, body, parties, CRM_E_INVALID, "/merge_ids/1");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, 999999999999]}", b);
    assert_refused(a, body, parties, CRM_E_INVALID, "/merge_ids/1");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, \"7\", 0]}", b);
    assert_refused(a, body, parties, CRM_E_INVALID, "/merge_ids/2");
    assert_refused(a, "{\"merge_ids\": []}", parties, CRM_E_INVALID, "/merge_ids");
    assert_refused(a, "{}", parties, CRM_E_INVALID, "/merge_ids");
    assert_refused(a, "{\"merge_ids\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]}",
                   parties, CRM_E_INVALID, "/merge_ids");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld], \"dry_run\": 1, \"force\": true}", b);
    assert_refused(a, body, parties, CRM_E_INVALID, "/dry_run");
    assert_refused(a, body, parties, CRM_E_INVALID, "/force");
    assert_refused(a, "[1]", parties, CRM_E_INVALID, NULL);
    /* State: a deleted or merged customer on either side. */
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, %lld]}", b, gone);
    assert_refused(a, body, parties, CRM_E_CONFLICT, "/merge_ids/1");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld, %lld]}", m, b);
    assert_refused(a, body, parties, CRM_E_CONFLICT, "/merge_ids/0");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", m); /* again: idempotent by state */
    assert_refused(other, body, parties, CRM_E_CONFLICT, "/merge_ids/0");
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", b);
    assert_refused(gone, body, parties, CRM_E_CONFLICT, "id");
    assert_refused(m, body, parties, CRM_E_CONFLICT, "id");
    assert_refused(999999999999LL, body, parties, CRM_E_NOT_FOUND, NULL);
    /* A merged result that breaks a rule: more than 100 tags in all. */
    long long many1 = create_with_tags('t', 60);
    long long many2 = create_with_tags('u', 60);
    snprintf(parties, sizeof parties, "{%lld,%lld}", many1, many2);
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", many2);
    assert_refused(many1, body, parties, CRM_E_INVALID, "/tags");
}
END_TEST

START_TEST(merged_ids_resolve_through_chains_for_reads_and_writes)
{
    long long a = create("{\"first_name\": \"First\"}");
    long long b = create("{\"first_name\": \"Second\"}");
    long long c = create("{\"first_name\": \"Third\"}");
    char ids[32];
    crm_error err = CRM_ERROR_INIT;
    snprintf(ids, sizeof ids, "[%lld]", a);
    json_t *rep = merge(b, ids, false, &err); /* a -> b */
    ck_assert_msg(rep != NULL, "%s", err.detail);
    json_decref(rep);
    snprintf(ids, sizeof ids, "[%lld]", b);
    rep = merge(c, ids, false, &err); /* b -> c, so a -> b -> c */
    ck_assert_msg(rep != NULL, "%s", err.detail);
    json_decref(rep);

    json_t *got = get(a);
    ck_assert_int_eq(id_of(got), c);
    json_decref(got);
    json_t *patch = parse("{\"lifecycle_stage\": \"customer\"}");
    json_t *patched = crm_customer_patch(a, patch, NULL, &ctx, &err);
    json_decref(patch);
    ck_assert_msg(patched != NULL, "%s", err.detail);
    ck_assert_int_eq(id_of(patched), c);
    json_decref(patched);
    json_t *body = parse("{\"channel\": \"sms\", \"purpose\": \"service\", \"status\": "
                         "\"granted\", \"source\": \"test\"}");
    json_t *recorded = crm_consents_record(a, body, 0, &err);
    json_decref(body);
    ck_assert_msg(recorded != NULL, "%s", err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(recorded, "customer_id")), c);
    json_decref(recorded);
    json_t *dups = crm_customer_duplicates(a, &err);
    ck_assert_msg(dups != NULL, "%s", err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(dups, "customer_id")), c);
    json_decref(dups);
}
END_TEST

/* ---- concurrency --------------------------------------------------------------------------- */

typedef struct race {
    long long survivor;
    char ids[64];
    pthread_barrier_t *start;
    bool ok;
    crm_errcode code;
} race;

static void *race_merge(void *arg)
{
    race *r = arg;
    char text[128];
    snprintf(text, sizeof text, "{\"merge_ids\": %s}", r->ids);
    json_t *body = json_loads(text, 0, NULL);
    crm_error err = CRM_ERROR_INIT;
    bool dry = false;
    pthread_barrier_wait(r->start);
    json_t *rep = crm_customer_merge(r->survivor, body, &ctx, &dry, &err);
    r->ok = rep != NULL;
    r->code = err.code;
    json_decref(rep);
    json_decref(body);
    crm_error_clear(&err);
    return NULL;
}

START_TEST(overlapping_merges_at_once_neither_deadlock_nor_lose_data)
{
    for (int round = 0; round < 8; round++) {
        char s[64], text[256];
        unit_unique(s, sizeof s, "race");
        long long id[5];
        for (int i = 0; i < 5; i++) {
            snprintf(text, sizeof text,
                     "{\"first_name\": \"R%d\", \"external_ids\": [{\"source\": \"%s\", "
                     "\"id\": \"%d\"}]}",
                     i, s, i);
            id[i] = create(text);
            record_consent(id[i], "email", i % 2 ? "granted" : "revoked", "2026-01-01T00:00:00Z");
        }
        /* 0 <- {1, 2} and 4 <- {3, 2}, listed so that their ids go up and
         * down: both want 2, one of them must wait and then refuse. */
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        race r1 = {.survivor = id[0], .start = &start}, r2 = {.survivor = id[4], .start = &start};
        snprintf(r1.ids, sizeof r1.ids, "[%lld, %lld]", id[1], id[2]);
        snprintf(r2.ids, sizeof r2.ids, "[%lld, %lld]", id[2], id[3]);
        pthread_t t1, t2;
        pthread_create(&t1, NULL, race_merge, &r1);
        pthread_create(&t2, NULL, race_merge, &r2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        pthread_barrier_destroy(&start);
        ck_assert_msg(r1.ok != r2.ok, "round %d: exactly one merge wins (%d/%d, codes %d/%d)",
                      round, r1.ok, r2.ok, r1.code, r2.code);
        ck_assert_int_eq(r1.ok ? r2.code : r1.code, CRM_E_CONFLICT);
        /* Every external id and consent row is on an active customer. */
        const char *params[] = {s};
        ck_assert_int_eq(unit_sql_long(direct,
                                       "SELECT count(*) FROM customer_external_ids x JOIN "
                                       "customers c ON c.id = x.customer_id "
                                       "WHERE x.source = $1 AND c.status = 'active'",
                                       1, params),
                         5);
        char all[128];
        snprintf(all, sizeof all, "{%lld,%lld,%lld,%lld,%lld}", id[0], id[1], id[2], id[3], id[4]);
        const char *aparams[] = {all};
        ck_assert_int_eq(unit_sql_long(direct,
                                       "SELECT count(*) FROM customer_consents k JOIN customers c "
                                       "ON c.id = k.customer_id WHERE k.customer_id = "
                                       "ANY($1::bigint[]) AND c.status = 'active' AND "
                                       "k.source = 'test'",
                                       1, aparams),
                         5);
    }
}
END_TEST

Suite *customer_merge_suite(void)
{
    Suite *s = suite_create("customer_merge");
    TCase *tc = tcase_create("merge");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup_db, teardown_db);
    tcase_add_test(tc, duplicates_name_each_reason_strongest_first);
    tcase_add_test(tc, duplicates_of_an_unknown_or_deleted_customer_are_not_found);
    tcase_add_test(tc, duplicates_use_indexes_not_a_scan_of_all_customers);
    tcase_add_test(tc, a_merge_moves_and_fills_everything_and_loses_nothing);
    tcase_add_test(tc, a_later_grant_of_a_merged_customer_does_not_override_a_revocation);
    tcase_add_test(tc, a_revocation_of_the_merged_customer_stands_over_the_survivors_grant);
    tcase_add_test(tc, a_dry_run_answers_the_merge_and_changes_nothing);
    tcase_add_test(tc, every_refused_merge_names_the_fault_and_stores_nothing);
    tcase_add_test(tc, merged_ids_resolve_through_chains_for_reads_and_writes);
    tcase_add_test(tc, overlapping_merges_at_once_neither_deadlock_nor_lose_data);
    suite_add_tcase(s, tc);
    return s;
}

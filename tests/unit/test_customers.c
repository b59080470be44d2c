/*
 * test_customers.c — lib/customers.h: every validation rule on its own,
 * then create, read, patch, delete, list, upsert by external id,
 * idempotency and the audit trail against the migrated
 * CRMD_TEST_DATABASE_URL. The database is shared by the whole run, so each
 * test marks what it creates with a unique tag or e-mail and looks only at
 * those rows.
 */
#include <check.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "customers.h"
#include "db.h"
#include "idempotency.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"

/* ---- helpers ------------------------------------------------------------------ */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(doc != NULL, "bad test JSON %s: %s", text, jerr.text);
    return doc;
}

/* Validates text as a create body; returns the error (caller clears). */
static crm_error validate_text(const char *text, bool *ok)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_values v;
    json_t *doc = parse(text);
    bool clean = crm_json_check_no_nul(doc, "", &err);
    *ok = crm_customer_validate(doc, CRM_CUSTOMER_ALLOW_EXTERNAL_IDS, &v, &err) && clean;
    if (!clean && err.code == CRM_OK)
        crm_error_set(&err, CRM_E_INVALID, "the customer is not valid");
    crm_customer_values_free(&v);
    json_decref(doc);
    return err;
}

static void assert_valid(const char *text)
{
    bool ok;
    crm_error err = validate_text(text, &ok);
    ck_assert_msg(ok, "%s was refused: %s", text,
                  err.errors ? json_dumps(err.errors, JSON_COMPACT) : err.detail);
    crm_error_clear(&err);
}

/* Asserts text is refused with an error naming field. */
static void assert_invalid(const char *text, const char *field)
{
    bool ok;
    crm_error err = validate_text(text, &ok);
    ck_assert_msg(!ok, "%s was accepted", text);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_msg(unit_has_field_error(&err, field), "%s: no error for %s", text, field);
    crm_error_clear(&err);
}

static char *repeat(const char *unit, int n)
{
    size_t len = strlen(unit);
    char *s = malloc(len * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        memcpy(s + len * (size_t)i, unit, len);
    s[len * (size_t)n] = '\0';
    return s;
}

/* ---- validation ----------------------------------------------------------------- */

START_TEST(an_empty_body_is_a_valid_person)
{
    assert_valid("{}");
}
END_TEST

START_TEST(unknown_and_read_only_fields_are_named)
{
    assert_invalid("{\"nickname\": \"x\"}", "/nickname");
    assert_invalid("{\"id\": 3}", "/id");
    assert_invalid("{\"address\": {\"planet\": \"Mars\"}}", "/address/planet");
    assert_invalid("{\"a/b\": 1}", "/a~1b");
}
END_TEST

START_TEST(wrong_types_are_named)
{
    assert_invalid("{\"first_name\": 5}", "/first_name");
    assert_invalid("{\"address\": \"Rome\"}", "/address");
    assert_invalid("{\"tags\": \"vip\"}", "/tags");
    assert_invalid("{\"tags\": [1]}", "/tags/0");
    assert_invalid("{\"attributes\": [1]}", "/attributes");
    assert_invalid("{\"location\": {\"latitude\": \"1\", \"longitude\": 2}}",
                   "/location/latitude");
}
END_TEST

START_TEST(lengths_count_characters_not_bytes)
{
    char body[2048];
    char *s200 = repeat("\xc3\xa9", 200); /* é: 2 bytes, 1 character */
    snprintf(body, sizeof body, "{\"first_name\": \"%s\"}", s200);
    assert_valid(body);
    char *s201 = repeat("\xc3\xa9", 201);
    snprintf(body, sizeof body, "{\"first_name\": \"%s\"}", s201);
    assert_invalid(body, "/first_name");
    free(s200);
    free(s201);
    char *pc = repeat("1", 21);
    snprintf(body, sizeof body, "{\"address\": {\"postal_code\": \"%s\"}}", pc);
    assert_invalid(body, "/address/postal_code");
    free(pc);
    char *st = repeat("s", 501);
    snprintf(body, sizeof body, "{\"address\": {\"street\": \"%s\"}}", st);
    assert_invalid(body, "/address/street");
    free(st);
}
END_TEST

START_TEST(nul_characters_are_refused_anywhere)
{
    assert_invalid("{\"display_name\": \"a\\u0000b\"}", "/display_name");
    assert_invalid("{\"attributes\": {\"k\": [\"x\\u0000\"]}}", "/attributes/k/0");
    /* Jansson refuses NUL in member names at parse time (400); the check
     * above still covers documents built in code. */
    assert_invalid("{\"tags\": [\"\\u0000\"]}", "/tags/0");
}
END_TEST

START_TEST(email_rules)
{
    ck_assert(crm_email_valid("ada@example.com"));
    ck_assert(crm_email_valid("  Ada@Example.COM "));
    ck_assert(!crm_email_valid("ada.example.com"));
    ck_assert(!crm_email_valid("@example.com"));
    ck_assert(!crm_email_valid("a@b@example.com"));
    ck_assert(!crm_email_valid("ada@localhost"));
    ck_assert(!crm_email_valid("ada@example."));
    ck_assert(!crm_email_valid("a da@example.com"));
    ck_assert(!crm_email_valid("ada@exa\tmple.com"));
    char norm[64];
    crm_email_normalize("  Ada@Example.COM ", norm, sizeof norm);
    ck_assert_str_eq(norm, "ada@example.com");
    assert_invalid("{\"email\": \"nope\"}", "/email");
}
END_TEST

START_TEST(phone_rules)
{
    char out[20];
    ck_assert(crm_phone_normalize("+39 (02) 123-4567", out, sizeof out));
    ck_assert_str_eq(out, "+39021234567");
    ck_assert(crm_phone_normalize("02.1234", out, sizeof out));
    ck_assert_str_eq(out, "021234");
    ck_assert(!crm_phone_normalize("12345", out, sizeof out));
    ck_assert(!crm_phone_normalize("1234567890123456", out, sizeof out));
    ck_assert(!crm_phone_normalize("12+345678", out, sizeof out));
    ck_assert(!crm_phone_normalize("call 123456", out, sizeof out));
    assert_invalid("{\"phone\": \"123\"}", "/phone");
}
END_TEST

START_TEST(country_is_an_assigned_uppercase_code)
{
    ck_assert_uint_eq(crm_country_count(), 249);
    ck_assert(crm_country_valid("IT"));
    ck_assert(crm_country_valid("AX"));
    ck_assert(crm_country_valid("ZW"));
    ck_assert(!crm_country_valid("it"));
    ck_assert(!crm_country_valid("UK"));
    ck_assert(!crm_country_valid("XX"));
    ck_assert(!crm_country_valid("ITA"));
    assert_invalid("{\"address\": {\"country\": \"UK\"}}", "/address/country");
}
END_TEST

START_TEST(birth_date_is_a_real_past_date)
{
    ck_assert(crm_birth_date_valid("2024-02-29"));
    ck_assert(crm_birth_date_valid("1815-12-10"));
    ck_assert(!crm_birth_date_valid("2023-02-29"));
    ck_assert(!crm_birth_date_valid("2023-13-01"));
    ck_assert(!crm_birth_date_valid("2023-1-01"));
    ck_assert(!crm_birth_date_valid("2999-01-01"));
    assert_invalid("{\"birth_date\": \"1990-04-31\"}", "/birth_date");
}
END_TEST

START_TEST(coordinates_are_in_range_and_together)
{
    assert_valid("{\"location\": {\"latitude\": -90, \"longitude\": 180}}");
    assert_valid("{\"location\": null}");
    assert_invalid("{\"location\": {\"latitude\": 90.5, \"longitude\": 0}}", "/location/latitude");
    assert_invalid("{\"location\": {\"latitude\": 0, \"longitude\": -181}}",
                   "/location/longitude");
    assert_invalid("{\"location\": {\"latitude\": 10}}", "/location/longitude");
}
END_TEST

START_TEST(enums_languages_and_timestamps)
{
    assert_invalid("{\"kind\": \"robot\"}", "/kind");
    assert_invalid("{\"lifecycle_stage\": \"vip\"}", "/lifecycle_stage");
    assert_valid("{\"kind\": \"company\", \"lifecycle_stage\": \"at_risk\"}");
    ck_assert(crm_language_tag_valid("it"));
    ck_assert(crm_language_tag_valid("pt-BR"));
    ck_assert(crm_language_tag_valid("zh-Hant-TW"));
    ck_assert(!crm_language_tag_valid("i"));
    ck_assert(!crm_language_tag_valid("pt_BR"));
    ck_assert(!crm_language_tag_valid("pt-"));
    ck_assert(crm_rfc3339_valid("2026-11-23T10:15:00Z"));
    ck_assert(crm_rfc3339_valid("2026-11-23T10:15:00.123456+01:00"));
    ck_assert(!crm_rfc3339_valid("2026-11-23"));
    ck_assert(!crm_rfc3339_valid("2026-11-23T10:15:00"));
    ck_assert(!crm_rfc3339_valid("2026-11-23T25:15:00Z"));
}
END_TEST

START_TEST(tags_are_unique_short_and_few)
{
    assert_invalid("{\"tags\": [\"a\", \"b\", \"a\"]}", "/tags/2");
    assert_invalid("{\"tags\": [\"\"]}", "/tags/0");
    char *many = repeat("\"t\",", 101);
    char body[1024];
    many[strlen(many) - 1] = '\0';
    snprintf(body, sizeof body, "{\"tags\": [%s]}", many);
    assert_invalid(body, "/tags");
    free(many);
}
END_TEST

START_TEST(attributes_are_an_object_of_at_most_64_kib)
{
    char *big = repeat("x", 65536);
    size_t size = strlen(big) + 64;
    char *body = malloc(size);
    snprintf(body, size, "{\"attributes\": {\"k\": \"%s\"}}", big);
    assert_invalid(body, "/attributes");
    free(body);
    free(big);
    assert_valid("{\"attributes\": {\"nested\": {\"a\": [1, 2.5, null, true]}}}");
}
END_TEST

START_TEST(several_problems_are_reported_together)
{
    bool ok;
    crm_error err = validate_text(
        "{\"email\": \"x\", \"phone\": \"1\", \"kind\": \"z\", \"unknown\": 1}", &ok);
    ck_assert(!ok);
    ck_assert_uint_eq(json_array_size(err.errors), 4);
    crm_error_clear(&err);
}
END_TEST

START_TEST(if_match_compares_strong_etags)
{
    ck_assert(crm_etag_matches(NULL, 3));
    ck_assert(crm_etag_matches("\"3\"", 3));
    ck_assert(crm_etag_matches("*", 3));
    ck_assert(crm_etag_matches("\"1\", \"3\"", 3));
    ck_assert(!crm_etag_matches("\"2\"", 3));
    ck_assert(!crm_etag_matches("W/\"3\"", 3));
    ck_assert(!crm_etag_matches("3", 3));
}
END_TEST

START_TEST(if_match_must_be_star_or_quoted_entity_tags)
{
    const char *good[] = {NULL, "*", " * ", "\"3\"", "W/\"3\"", "\"1\", \"3\"", "\"1\",\"3\" ",
                          ", \"3\"", "\"\""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        crm_error err = CRM_ERROR_INIT;
        ck_assert_msg(crm_if_match_valid(good[i], &err), "%s", good[i] ? good[i] : "NULL");
    }
    const char *bad[] = {"3", "", " ", "\"3", "3\"", "\"3\" 4", "\"3\", 4", "*, \"3\"",
                         "w/\"3\"", "\"a b\"", "\"secret-zq9\"x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        crm_error err = CRM_ERROR_INIT;
        ck_assert_msg(!crm_if_match_valid(bad[i], &err), "%s", bad[i]);
        ck_assert_int_eq(err.code, CRM_E_MALFORMED);
        ck_assert_ptr_nonnull(strstr(err.detail, "quoted"));
        ck_assert_ptr_null(strstr(err.detail, "zq9"));
        crm_error_clear(&err);
    }
}
END_TEST

/* ---- against PostgreSQL ----------------------------------------------------------- */

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

static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};

/* Creates a customer from text; returns its representation (caller decrefs). */
static json_t *create(const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created out;
    json_t *body = parse(text);
    bool ok = crm_customer_create(body, &ctx, &out, &err);
    json_decref(body);
    ck_assert_msg(ok, "create %s: %s", text, err.detail);
    json_t *rep = parse(out.body);
    crm_customer_created_free(&out);
    return rep;
}

static long long id_of(json_t *rep)
{
    return json_integer_value(json_object_get(rep, "id"));
}

static long count_sql(const char *sql, const char *param)
{
    const char *params[] = {param};
    return unit_sql_long(direct, sql, param ? 1 : 0, params);
}

static long audit_rows(long long id)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    return count_sql("SELECT count(*) FROM customer_audit WHERE customer_id = $1", idbuf);
}

START_TEST(create_then_get_returns_what_was_stored)
{
    json_t *rep = create("{\"first_name\": \"Ada\", \"email\": \" Ada@Example.COM \", "
                         "\"address\": {\"country\": \"IT\"}, \"tags\": [\"x\"], "
                         "\"location\": {\"latitude\": 45.5, \"longitude\": 9.25}}");
    ck_assert_int_eq(json_integer_value(json_object_get(rep, "version")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(rep, "email")), " Ada@Example.COM ");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "kind")), "person");
    crm_error err = CRM_ERROR_INIT;
    json_t *got = crm_customer_get(id_of(rep), false, &err);
    ck_assert_msg(got != NULL, "get: %s", err.detail);
    ck_assert(json_equal(rep, got));
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id_of(rep));
    ck_assert_int_eq(count_sql("SELECT count(*) FROM customers WHERE id = $1 AND "
                               "email_normalized = 'ada@example.com'",
                               idbuf),
                     1);
    ck_assert_int_eq(audit_rows(id_of(rep)), 1);
    json_decref(got);
    json_decref(rep);
}
END_TEST

START_TEST(an_invalid_create_stores_nothing)
{
    long before = count_sql("SELECT count(*) FROM customers", NULL);
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created out;
    json_t *body = parse("{\"first_name\": \"Bob\", \"email\": \"bad\"}");
    ck_assert(!crm_customer_create(body, &ctx, &out, &err));
    json_decref(body);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    ck_assert_int_eq(count_sql("SELECT count(*) FROM customers", NULL), before);
}
END_TEST

START_TEST(patch_merges_bumps_version_and_audits_changes)
{
    json_t *rep = create("{\"first_name\": \"Ada\", \"address\": {\"city\": \"Rome\"}, "
                         "\"attributes\": {\"a\": 1, \"b\": 2}}");
    crm_error err = CRM_ERROR_INIT;
    json_t *patch = parse("{\"first_name\": \"Augusta\", \"address\": {\"region\": \"Lazio\"}, "
                          "\"attributes\": {\"a\": null}}");
    json_t *after = crm_customer_patch(id_of(rep), patch, "\"1\"", &ctx, &err);
    ck_assert_msg(after != NULL, "patch: %s", err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(after, "version")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(after, "first_name")), "Augusta");
    json_t *addr = json_object_get(after, "address");
    ck_assert_str_eq(json_string_value(json_object_get(addr, "city")), "Rome");
    ck_assert_str_eq(json_string_value(json_object_get(addr, "region")), "Lazio");
    json_t *attrs = json_object_get(after, "attributes");
    ck_assert_ptr_null(json_object_get(attrs, "a"));
    ck_assert_int_eq(json_integer_value(json_object_get(attrs, "b")), 2);

    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id_of(rep));
    PGresult *res = unit_sql(direct,
                             "SELECT changes->'first_name'->>'from', changes->'first_name'->>'to', "
                             "changes ? 'last_name' FROM customer_audit WHERE customer_id = $1 "
                             "AND action = 'update'",
                             1, (const char *[]){idbuf});
    ck_assert_int_eq(PQntuples(res), 1);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "Ada");
    ck_assert_str_eq(PQgetvalue(res, 0, 1), "Augusta");
    ck_assert_str_eq(PQgetvalue(res, 0, 2), "f");
    PQclear(res);
    json_decref(patch);
    json_decref(after);
    json_decref(rep);
}
END_TEST

START_TEST(a_patch_that_changes_nothing_keeps_the_version)
{
    json_t *rep = create("{\"first_name\": \"Ada\"}");
    crm_error err = CRM_ERROR_INIT;
    json_t *patch = parse("{\"first_name\": \"Ada\"}");
    json_t *after = crm_customer_patch(id_of(rep), patch, NULL, &ctx, &err);
    ck_assert_ptr_nonnull(after);
    ck_assert_int_eq(json_integer_value(json_object_get(after, "version")), 1);
    ck_assert_int_eq(audit_rows(id_of(rep)), 1);
    json_decref(patch);
    json_decref(after);
    json_decref(rep);
}
END_TEST

START_TEST(a_stale_if_match_is_a_precondition_failure)
{
    json_t *rep = create("{\"first_name\": \"Ada\"}");
    crm_error err = CRM_ERROR_INIT;
    json_t *patch = parse("{\"first_name\": \"Bea\"}");
    ck_assert_ptr_null(crm_customer_patch(id_of(rep), patch, "\"7\"", &ctx, &err));
    ck_assert_int_eq(err.code, CRM_E_PRECONDITION);
    crm_error_clear(&err);
    json_decref(patch);
    json_decref(rep);
}
END_TEST

START_TEST(an_invalid_patch_names_fields_and_changes_nothing)
{
    json_t *rep = create("{\"first_name\": \"Ada\"}");
    crm_error err = CRM_ERROR_INIT;
    json_t *patch = parse("{\"first_name\": \"x\\u0000\", \"email\": \"bad\"}");
    ck_assert_ptr_null(crm_customer_patch(id_of(rep), patch, NULL, &ctx, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert(unit_has_field_error(&err, "/first_name"));
    ck_assert(unit_has_field_error(&err, "/email"));
    crm_error_clear(&err);
    json_t *got = crm_customer_get(id_of(rep), false, &err);
    ck_assert(json_equal(got, rep));
    json_decref(got);
    json_decref(patch);
    json_decref(rep);
}
END_TEST


/* A list page parsed back from the text crm_customer_list writes. */
static json_t *list_page(const crm_customer_filter *f, crm_error *err)
{
    size_t len = 0;
    char *text = crm_customer_list(f, &len, err);
    if (text == NULL)
        return NULL;
    ck_assert_uint_eq(strlen(text), len);
    json_error_t jerr;
    json_t *page = json_loadb(text, len, 0, &jerr);
    ck_assert_msg(page != NULL, "the page is not JSON: %s", jerr.text);
    free(text);
    return page;
}

START_TEST(a_deleted_customer_is_not_found_nor_listed)
{
    char email[64], tag[40];
    unit_unique(tag, sizeof tag, "del");
    snprintf(email, sizeof email, "%s@example.com", tag);
    char body[256];
    snprintf(body, sizeof body, "{\"email\": \"%s\"}", email);
    json_t *rep = create(body);
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_customer_delete(id_of(rep), NULL, &ctx, &err));
    json_t *got = crm_customer_get(id_of(rep), false, &err);
    ck_assert_ptr_null(got);
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    ck_assert(!crm_customer_delete(id_of(rep), NULL, &ctx, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    crm_customer_filter f = {.email = email, .limit = 10};
    json_t *page = list_page(&f, &err);
    ck_assert_ptr_nonnull(page);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 0);
    ck_assert_int_eq(audit_rows(id_of(rep)), 2);
    json_decref(page);
    json_decref(rep);
}
END_TEST

START_TEST(a_merged_customer_reads_as_its_survivor)
{
    json_t *survivor = create("{\"first_name\": \"Survivor\"}");
    json_t *merged = create("{\"first_name\": \"Merged\"}");
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", id_of(merged));
    snprintf(b, sizeof b, "%lld", id_of(survivor));
    PQclear(unit_sql(direct, "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1",
                     2, (const char *[]){a, b}));
    crm_error err = CRM_ERROR_INIT;
    json_t *got = crm_customer_get(id_of(merged), false, &err);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(id_of(got), id_of(survivor));
    json_decref(got);
    json_decref(survivor);
    json_decref(merged);
}
END_TEST

START_TEST(list_filters_and_pages_with_cursors)
{
    char tag[40], body[256];
    unit_unique(tag, sizeof tag, "lst");
    long long ids[5];
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof body, "{\"display_name\": \"Name %d\", \"tags\": [\"%s\"]}", 4 - i,
                 tag);
        json_t *rep = create(body);
        ids[i] = id_of(rep);
        json_decref(rep);
    }
    const char *sorts[] = {"created_at", "-created_at", "updated_at", "-updated_at", "name"};
    for (int s = 0; s < 5; s++) {
        crm_customer_filter f = {.tag = tag, .limit = 2, .sort = sorts[s]};
        char *after = NULL;
        int seen = 0, pages = 0;
        long long got[8];
        for (;;) {
            f.after = after;
            crm_error err = CRM_ERROR_INIT;
            json_t *page = list_page(&f, &err);
            ck_assert_msg(page != NULL, "list: %s", err.detail);
            pages++;
            size_t i;
            json_t *item;
            json_array_foreach(json_object_get(page, "data"), i, item) got[seen++] = id_of(item);
            json_t *next = json_object_get(page, "next_cursor");
            free(after);
            after = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
            json_decref(page);
            if (after == NULL)
                break;
            ck_assert_int_lt(pages, 5);
        }
        ck_assert_int_eq(seen, 5);
        ck_assert_int_eq(pages, 3);
        for (int i = 0; i < 5; i++) {
            /* created/updated ascending: creation order; descending: reversed;
             * name: "Name 0" is the last one created. */
            long long want = s == 1 || s == 3 || s == 4 ? ids[4 - i] : ids[i];
            ck_assert_int_eq(got[i], want);
        }
    }
}
END_TEST

START_TEST(list_rejects_bad_parameters_by_name)
{
    crm_customer_filter f = {.q = "ab", .sort = "size", .country = "it",
                             .created_after = "yesterday", .limit = 10};
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(list_page(&f, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert(unit_has_field_error(&err, "q"));
    ck_assert(unit_has_field_error(&err, "sort"));
    ck_assert(unit_has_field_error(&err, "country"));
    ck_assert(unit_has_field_error(&err, "created_after"));
    crm_error_clear(&err);
    crm_customer_filter g = {.after = "bm90IGEgY3Vyc29y", .limit = 10};
    ck_assert_ptr_null(list_page(&g, &err));
    ck_assert(unit_has_field_error(&err, "after"));
    crm_error_clear(&err);
}
END_TEST

/* The ids of every customer that q (with sort and page size limit) finds,
 * following next_cursor to the end; asserts that no id comes twice. */
static size_t search_all(const char *q, const char *sort, int limit, long long *ids, size_t max)
{
    size_t n = 0;
    char *after = NULL;
    for (int pages = 0; pages < 100; pages++) {
        crm_customer_filter f = {.q = q, .sort = sort, .after = after, .limit = limit};
        crm_error err = CRM_ERROR_INIT;
        json_t *page = list_page(&f, &err);
        ck_assert_msg(page != NULL, "q=%s: %s", q, err.detail);
        json_t *data = json_object_get(page, "data"), *c;
        size_t k;
        ck_assert_int_le(json_array_size(data), limit);
        json_array_foreach(data, k, c) {
            for (size_t m = 0; m < n; m++)
                ck_assert_msg(ids[m] != id_of(c), "q=%s: id %lld twice", q, id_of(c));
            ck_assert_uint_lt(n, max);
            ids[n++] = id_of(c);
        }
        free(after);
        json_t *next = json_object_get(page, "next_cursor");
        after = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
        json_decref(page);
        if (after == NULL)
            return n;
    }
    ck_abort_msg("q=%s: more than 100 pages", q);
    return n;
}

START_TEST(tags_that_need_quoting_round_trip)
{
    /* Tags travel from PostgreSQL as an array literal: every character that
     * literal quotes or escapes must come back as it was. */
    const char *text = "{\"tags\": [\"a,b\", \"\\\"q\\\"\", \"back\\\\slash\", \"{}\", \"two words\", "
                       "\"NULL\", \"null\", \"ünï ✓\", \" lead\", \"tab\\there\"]}";
    json_t *made = create(text);
    json_t *doc = parse(text), *want = json_object_get(doc, "tags");
    crm_error err = CRM_ERROR_INIT;
    json_t *got = crm_customer_get(id_of(made), false, &err);
    ck_assert_msg(got != NULL, "get: %s", err.detail);
    ck_assert_msg(json_equal(json_object_get(got, "tags"), want), "tags: %s",
                  json_dumps(json_object_get(got, "tags"), 0));
    ck_assert(json_equal(json_object_get(made, "tags"), want));
    json_decref(doc);
    json_decref(got);
    json_decref(made);
}
END_TEST

START_TEST(list_search_matches_word_prefixes)
{
    char tag[40], body[512], q[96];
    unit_unique(tag, sizeof tag, "w");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Mario\", \"last_name\": \"Rossi-%s\", \"company\": \"Acme 100%% "
             "Ltd\", \"email\": \"m.rossi@%s.example\"}",
             tag, tag);
    json_t *c = create(body);
    long long ids[8];
    struct {
        const char *words; /* after the tag and a space ("" for the tag alone) */
        const char *sort;
        size_t found;
    } cases[] = {
        {"", NULL, 1},                /* a whole word */
        {" acm", NULL, 1},            /* and a prefix of another */
        {" cme", NULL, 0},            /* not a prefix: no */
        {".example rOSSi", NULL, 1},  /* punctuation separates, case does not matter */
        {" 100%", NULL, 1},           /* LIKE's % is only a separator */
        {" 1000", NULL, 0},
        {" mario", "-created_at", 1},
        {" mario", "name", 1},        /* other orders walk, with the same meaning */
        {" luigi", "updated_at", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(q, sizeof q, "%s%s", tag, cases[i].words);
        size_t n = search_all(q, cases[i].sort, 10, ids, 8);
        ck_assert_msg(n == cases[i].found, "q=%s sort=%s: %zu found", q,
                      cases[i].sort ? cases[i].sort : "-", n);
        if (n == 1)
            ck_assert_int_eq(ids[0], id_of(c));
    }
    json_decref(c);
}
END_TEST

START_TEST(list_search_follows_changes_to_the_words)
{
    char tag[40], body[256], q[96];
    unit_unique(tag, sizeof tag, "chg");
    snprintf(body, sizeof body, "{\"company\": \"Old%s\"}", tag);
    json_t *c = create(body);
    long long ids[4];
    snprintf(q, sizeof q, "old%s", tag);
    ck_assert_uint_eq(search_all(q, NULL, 10, ids, 4), 1);
    crm_error err = CRM_ERROR_INIT;
    snprintf(body, sizeof body, "{\"company\": \"New%s\"}", tag);
    json_t *patch = parse(body);
    json_t *after = crm_customer_patch(id_of(c), patch, NULL, &ctx, &err);
    ck_assert_msg(after != NULL, "patch: %s", err.detail);
    json_decref(patch);
    json_decref(after);
    ck_assert_uint_eq(search_all(q, NULL, 10, ids, 4), 0);
    snprintf(q, sizeof q, "new%s", tag);
    ck_assert_uint_eq(search_all(q, NULL, 10, ids, 4), 1);
    ck_assert(crm_customer_delete(id_of(c), NULL, &ctx, &err));
    ck_assert_uint_eq(search_all(q, NULL, 10, ids, 4), 0);
    char id[24];
    snprintf(id, sizeof id, "%lld", id_of(c));
    ck_assert_int_eq(count_sql("SELECT count(*) FROM customer_search_terms WHERE customer_id = $1", id), 0);
    json_decref(c);
}
END_TEST

START_TEST(list_search_pages_through_many_words_with_one_prefix)
{
    /* 20 customers whose words <tag>a1 .. <tag>a20 all begin "<tag>a": more
     * words than one range per word serves, so that search walks; "<tag>a1"
     * begins 11 of them (a1, a10..a19), merged from 11 ranges. One customer
     * holds two words of the prefix and must come once. */
    char tag[40], body[256], q[96];
    unit_unique(tag, sizeof tag, "many");
    for (int i = 1; i <= 20; i++) {
        if (i == 20)
            snprintf(body, sizeof body, "{\"first_name\": \"%sa20\", \"last_name\": \"%sa1x\"}",
                     tag, tag);
        else
            snprintf(body, sizeof body, "{\"last_name\": \"%sa%d\"}", tag, i);
        json_decref(create(body));
    }
    long long ids[32];
    const char *sorts[] = {NULL, "-created_at", "name"};
    for (size_t s = 0; s < 3; s++) {
        snprintf(q, sizeof q, "%sa", tag);
        ck_assert_uint_eq(search_all(q, sorts[s], 3, ids, 32), 20);
        snprintf(q, sizeof q, "%sa1", tag);
        ck_assert_uint_eq(search_all(q, sorts[s], 3, ids, 32), 12);
        snprintf(q, sizeof q, "%sA1 %sa20", tag, tag);
        ck_assert_uint_eq(search_all(q, sorts[s], 3, ids, 32), 1);
    }
}
END_TEST

/* Creates n customers whose last names are prefix1 .. prefix<n>, with the
 * fields the five filters of the T1 cases match. */
static void create_numbered(const char *prefix, int n)
{
    char body[512];
    for (int i = 1; i <= n; i++) {
        snprintf(body, sizeof body,
                 "{\"last_name\": \"%s%d\", \"address\": {\"country\": \"IT\", \"city\": \"x\"}, "
                 "\"lifecycle_stage\": \"lead\", \"tags\": [\"t\"]}",
                 prefix, i);
        json_decref(create(body));
    }
}

/* Pages through a filtered search with limit 1; the number of customers. */
static size_t search_filtered_all(crm_customer_filter f, long long *ids, size_t max)
{
    size_t n = 0;
    char *after = NULL;
    for (int pages = 0; pages < 100; pages++) {
        f.after = after;
        crm_error err = CRM_ERROR_INIT;
        json_t *page = list_page(&f, &err);
        ck_assert_msg(page != NULL, "q=%s: %s", f.q, err.detail);
        json_t *data = json_object_get(page, "data"), *c;
        size_t k;
        json_array_foreach(data, k, c) {
            ck_assert_uint_lt(n, max);
            ids[n++] = id_of(c);
        }
        free(after);
        json_t *next = json_object_get(page, "next_cursor");
        after = json_is_string(next) ? strdup(json_string_value(next)) : NULL;
        json_decref(page);
        if (after == NULL)
            return n;
    }
    ck_abort_msg("q=%s: more than 100 pages", f.q);
    return n;
}

START_TEST(audit_pages_are_index_bounded_under_generic_plans)
{
    /* C5: "$2 = 0 OR x.id < $2" was a filter under the generic plan: every
     * page read the trail from the newest row down to the cursor. */
    json_t *c = create("{\"first_name\": \"Audited\"}");
    crm_query q;
    crm_customer_audit_query(&q, id_of(c), 0, 10);
    unit_assert_index_condition(direct, &q, "< $2");
    crm_customer_audit_query(&q, id_of(c), 12345, 10);
    unit_assert_index_condition(direct, &q, "< $2");
    json_decref(c);
}
END_TEST

START_TEST(list_search_pages_through_sixteen_words_of_one_prefix)
{
    /* The reproduction: 16 customers Zqxw1 .. Zqxw16, then q=zqxw
     * with limit 1 and the next page. The second page merged 16 ranges with
     * a cursor: 19 parameters in a builder of 16 (a 503, then a crash). */
    char tag[40], prefix[64], q[64];
    unit_unique(tag, sizeof tag, "zqxw");
    snprintf(prefix, sizeof prefix, "%sZqxw", tag);
    create_numbered(prefix, 16);
    snprintf(q, sizeof q, "%szqxw", tag);
    long long ids[32];
    ck_assert_uint_eq(search_all(q, NULL, 1, ids, 32), 16);
    ck_assert_uint_eq(search_all(q, "-created_at", 1, ids, 32), 16);
}
END_TEST

START_TEST(list_search_at_the_parameter_limits_answers_every_page)
{
    /* Review T1: a driving word that begins 13, 14, 15 and 16 words of the
     * index, paged with limit 1 (every page after the first has a cursor),
     * with no filter and with five. */
    const int counts[] = {13, 14, 15, 16};
    for (size_t c = 0; c < 4; c++) {
        char tag[40], q[64];
        unit_unique(tag, sizeof tag, "tone");
        create_numbered(tag, counts[c]);
        snprintf(q, sizeof q, "%s", tag);
        long long ids[32];
        crm_customer_filter plain = {.q = q, .limit = 1};
        ck_assert_uint_eq(search_filtered_all(plain, ids, 32), (size_t)counts[c]);
        crm_customer_filter five = {.q = q, .limit = 1, .country = "IT", .city = "x",
                                    .lifecycle_stage = "lead", .tag = "t",
                                    .created_after = "2000-01-01T00:00:00Z"};
        ck_assert_uint_eq(search_filtered_all(five, ids, 32), (size_t)counts[c]);
        five.sort = "-created_at";
        ck_assert_uint_eq(search_filtered_all(five, ids, 32), (size_t)counts[c]);
    }
}
END_TEST

START_TEST(list_with_every_filter_eight_words_and_a_cursor_answers)
{
    /* All ten filters and eight q words, sorted by name, first without and
     * then with a cursor of that order: past 16 parameters and, with the
     * cursor, the 4096 bytes of the old builder. No data needs to match. */
    char tag[40];
    unit_unique(tag, sizeof tag, "walk");
    create_numbered(tag, 2);
    const char *sorts[] = {"name", "created_at", "-updated_at"};
    for (size_t i = 0; i < 3; i++) {
        crm_customer_filter one = {.sort = sorts[i], .limit = 1};
        crm_error err = CRM_ERROR_INIT;
        json_t *first = list_page(&one, &err);
        ck_assert_msg(first != NULL, "%s", err.detail);
        const char *cursor = json_string_value(json_object_get(first, "next_cursor"));
        ck_assert_ptr_nonnull(cursor);
        crm_customer_filter all = {.sort = sorts[i],
                                   .q = "aaa bbb ccc ddd eee fff ggg hhh",
                                   .email = "a@b.co",
                                   .phone = "+391234567",
                                   .country = "IT",
                                   .city = "x",
                                   .lifecycle_stage = "lead",
                                   .tag = "t",
                                   .created_after = "2000-01-01T00:00:00Z",
                                   .created_before = "2100-01-01T00:00:00Z",
                                   .updated_after = "2000-01-01T00:00:00Z",
                                   .updated_before = "2100-01-01T00:00:00Z",
                                   .limit = 200};
        for (int with_cursor = 0; with_cursor < 2; with_cursor++) {
            all.after = with_cursor ? cursor : NULL;
            json_t *page = list_page(&all, &err);
            ck_assert_msg(page != NULL, "sort %s, cursor %d: %s", sorts[i], with_cursor,
                          err.detail);
            ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 0);
            ck_assert(json_is_null(json_object_get(page, "next_cursor")));
            json_decref(page);
        }
        json_decref(first);
    }
}
END_TEST

START_TEST(list_search_with_every_part_at_its_maximum_pages_to_the_end)
{
    /* The most parameters one statement takes: 16 merged ranges, a cursor,
     * all ten filters, seven more q words and the limit (36), and text far
     * past 4096 bytes. Every customer matches every filter. */
    char tag[40], body[768], email[96], q[160];
    unit_unique(tag, sizeof tag, "max");
    snprintf(email, sizeof email, "%s@example.com", tag);
    for (int i = 1; i <= 16; i++) {
        snprintf(body, sizeof body,
                 "{\"first_name\": \"aa bb cc dd ee ff gg\", \"last_name\": \"%sw%d\", "
                 "\"email\": \"%s\", \"phone\": \"+391234567\", "
                 "\"address\": {\"country\": \"IT\", \"city\": \"x\"}, "
                 "\"lifecycle_stage\": \"lead\", \"tags\": [\"t\"]}",
                 tag, i, email);
        json_decref(create(body));
    }
    snprintf(q, sizeof q, "%sw aa bb cc dd ee ff gg", tag);
    crm_customer_filter f = {.q = q,
                             .email = email,
                             .phone = "+391234567",
                             .country = "IT",
                             .city = "x",
                             .lifecycle_stage = "lead",
                             .tag = "t",
                             .created_after = "2000-01-01T00:00:00Z",
                             .created_before = "2100-01-01T00:00:00Z",
                             .updated_after = "2000-01-01T00:00:00Z",
                             .updated_before = "2100-01-01T00:00:00Z",
                             .limit = 1};
    long long ids[32];
    ck_assert_uint_eq(search_filtered_all(f, ids, 32), 16);
    f.sort = "-created_at";
    ck_assert_uint_eq(search_filtered_all(f, ids, 32), 16);
    f.sort = "name"; /* a walk with all of it */
    ck_assert_uint_eq(search_filtered_all(f, ids, 32), 16);
}
END_TEST

START_TEST(list_search_for_naughty_strings_of_digits_answers)
{
    /* From the Big List of Naughty Strings: q=0.0.0 and q=0,0,0 (three
     * words "0", each beginning every word of the index that starts with a
     * digit) crashed crmd. Customers with such words make them many. */
    char tag[40];
    unit_unique(tag, sizeof tag, "");
    char prefix[64];
    snprintf(prefix, sizeof prefix, "0%s", tag);
    create_numbered(prefix, 17);
    const char *qs[] = {"0.0.0", "0,0,0", "0 0 0 0 0 0 0 0"};
    for (size_t i = 0; i < 3; i++) {
        for (int limit = 1; limit <= 50; limit += 49) {
            crm_customer_filter f = {.q = qs[i], .limit = limit};
            crm_error err = CRM_ERROR_INIT;
            json_t *page = list_page(&f, &err);
            ck_assert_msg(page != NULL, "q=%s: %s", qs[i], err.detail);
            ck_assert_uint_ge(json_array_size(json_object_get(page, "data")),
                              (size_t)(limit == 1 ? 1 : 17));
            const char *next = json_string_value(json_object_get(page, "next_cursor"));
            if (next != NULL) { /* and the page after */
                f.after = next;
                json_t *second = list_page(&f, &err);
                ck_assert_msg(second != NULL, "q=%s, page 2: %s", qs[i], err.detail);
                json_decref(second);
            }
            json_decref(page);
        }
    }
}
END_TEST

START_TEST(list_search_by_a_whole_word_reads_its_range_until_a_longer_word_appears)
{
    /* A word of the index that begins no other word is read from its own
     * range; once a longer word begins with it, its customers come too. */
    char tag[40], body[256], q[96];
    unit_unique(tag, sizeof tag, "solo");
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof body, "{\"last_name\": \"%sw\"}", tag);
        json_decref(create(body));
    }
    long long ids[16];
    snprintf(q, sizeof q, "%sw", tag);
    const char *sorts[] = {NULL, "-created_at"};
    for (size_t s = 0; s < 2; s++)
        ck_assert_uint_eq(search_all(q, sorts[s], 2, ids, 16), 5);
    snprintf(body, sizeof body, "{\"company\": \"%swx\"}", tag);
    json_t *longer = create(body);
    for (size_t s = 0; s < 2; s++) {
        ck_assert_uint_eq(search_all(q, sorts[s], 2, ids, 16), 6);
        bool seen = false;
        for (int i = 0; i < 6; i++)
            seen = seen || ids[i] == id_of(longer);
        ck_assert(seen);
    }
    snprintf(q, sizeof q, "%swx", tag);
    ck_assert_uint_eq(search_all(q, NULL, 2, ids, 16), 1);
    json_decref(longer);
}
END_TEST

START_TEST(upsert_creates_then_updates)
{
    char ext[40];
    unit_unique(ext, sizeof ext, "ext");
    crm_error err = CRM_ERROR_INIT;
    bool created = false;
    json_t *body = parse("{\"first_name\": \"Ada\"}");
    json_t *a = crm_customer_upsert_by_external_id("crm", ext, body, NULL, &ctx, &created, &err);
    ck_assert_msg(a != NULL, "upsert: %s", err.detail);
    ck_assert(created);
    json_decref(body);
    body = parse("{\"last_name\": \"Lovelace\"}");
    json_t *b = crm_customer_upsert_by_external_id("crm", ext, body, "\"1\"", &ctx, &created, &err);
    ck_assert_msg(b != NULL, "upsert: %s", err.detail);
    ck_assert(!created);
    ck_assert_int_eq(id_of(a), id_of(b));
    ck_assert_str_eq(json_string_value(json_object_get(b, "first_name")), "Ada");
    ck_assert_int_eq(json_integer_value(json_object_get(b, "version")), 2);
    json_t *got = crm_customer_get(id_of(a), true, &err);
    json_t *ids = json_object_get(got, "external_ids");
    ck_assert_uint_eq(json_array_size(ids), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ids, 0), "id")), ext);
    json_decref(got);
    json_decref(body);
    json_decref(a);
    json_decref(b);
}
END_TEST

START_TEST(an_external_id_held_by_another_customer_is_a_conflict_naming_it)
{
    char ext[40], body[256];
    unit_unique(ext, sizeof ext, "dup");
    snprintf(body, sizeof body, "{\"external_ids\": [{\"source\": \"s\", \"id\": \"%s\"}]}", ext);
    json_t *first = create(body);
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created out;
    json_t *doc = parse(body);
    long before = count_sql("SELECT count(*) FROM customers", NULL);
    ck_assert(!crm_customer_create(doc, &ctx, &out, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    json_t *e = json_array_get(err.errors, 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), "/external_ids/0");
    ck_assert_int_eq(json_integer_value(json_object_get(e, "customer_id")), id_of(first));
    ck_assert_int_eq(count_sql("SELECT count(*) FROM customers", NULL), before);
    crm_error_clear(&err);
    json_decref(doc);
    json_decref(first);
}
END_TEST

START_TEST(an_idempotency_key_replays_the_first_response)
{
    char key[40];
    unit_unique(key, sizeof key, "idem");
    crm_write_ctx ictx = {.api_key_id = 42, .idempotency_key = key};
    json_t *body = parse("{\"first_name\": \"Once\"}");
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created a, b;
    ck_assert(crm_customer_create(body, &ictx, &a, &err));
    ck_assert(!a.replayed);
    ck_assert(crm_customer_create(body, &ictx, &b, &err));
    ck_assert(b.replayed);
    ck_assert_str_eq(a.body, b.body);
    ck_assert_str_eq(a.location, b.location);
    json_t *other = parse("{\"first_name\": \"Twice\"}");
    crm_customer_created c;
    ck_assert(!crm_customer_create(other, &ictx, &c, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    crm_error_clear(&err);
    crm_customer_created_free(&a);
    crm_customer_created_free(&b);
    json_decref(body);
    json_decref(other);
}
END_TEST

START_TEST(the_audit_trail_lists_newest_first_in_pages)
{
    json_t *rep = create("{\"first_name\": \"A\"}");
    crm_error err = CRM_ERROR_INIT;
    for (int i = 0; i < 3; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"first_name\": \"A%d\"}", i);
        json_t *patch = parse(text);
        json_decref(crm_customer_patch(id_of(rep), patch, NULL, &ctx, &err));
        json_decref(patch);
    }
    crm_query q;
    crm_customer_audit_query(&q, id_of(rep), 0, 3);
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_ptr_nonnull(res);
    long long next = 0;
    json_t *page = crm_customer_audit_decode(res, id_of(rep), 3, &next, &err);
    PQclear(res);
    ck_assert_uint_eq(json_array_size(page), 3);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(page, 0), "action")),
                     "update");
    ck_assert(next != 0);
    crm_customer_audit_query(&q, id_of(rep), next, 3);
    res = crm_db_run_query(&q, &err);
    json_t *rest = crm_customer_audit_decode(res, id_of(rep), 3, &next, &err);
    PQclear(res);
    ck_assert_uint_eq(json_array_size(rest), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(rest, 0), "action")),
                     "create");
    ck_assert(next == 0);
    crm_customer_audit_query(&q, 0x7fffffffffffLL, 0, 3);
    res = crm_db_run_query(&q, &err);
    ck_assert_ptr_null(crm_customer_audit_decode(res, 1, 3, &next, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    PQclear(res);
    json_decref(page);
    json_decref(rest);
    json_decref(rep);
}
END_TEST

Suite *customers_suite(void)
{
    Suite *s = suite_create("customers");
    TCase *v = tcase_create("validation");
    tcase_add_test(v, an_empty_body_is_a_valid_person);
    tcase_add_test(v, unknown_and_read_only_fields_are_named);
    tcase_add_test(v, wrong_types_are_named);
    tcase_add_test(v, lengths_count_characters_not_bytes);
    tcase_add_test(v, nul_characters_are_refused_anywhere);
    tcase_add_test(v, email_rules);
    tcase_add_test(v, phone_rules);
    tcase_add_test(v, country_is_an_assigned_uppercase_code);
    tcase_add_test(v, birth_date_is_a_real_past_date);
    tcase_add_test(v, coordinates_are_in_range_and_together);
    tcase_add_test(v, enums_languages_and_timestamps);
    tcase_add_test(v, tags_are_unique_short_and_few);
    tcase_add_test(v, attributes_are_an_object_of_at_most_64_kib);
    tcase_add_test(v, several_problems_are_reported_together);
    tcase_add_test(v, if_match_compares_strong_etags);
    tcase_add_test(v, if_match_must_be_star_or_quoted_entity_tags);
    suite_add_tcase(s, v);

    TCase *db = tcase_create("store");
    tcase_set_timeout(db, 60);
    tcase_add_checked_fixture(db, setup_db, teardown_db);
    tcase_add_test(db, create_then_get_returns_what_was_stored);
    tcase_add_test(db, an_invalid_create_stores_nothing);
    tcase_add_test(db, patch_merges_bumps_version_and_audits_changes);
    tcase_add_test(db, a_patch_that_changes_nothing_keeps_the_version);
    tcase_add_test(db, a_stale_if_match_is_a_precondition_failure);
    tcase_add_test(db, an_invalid_patch_names_fields_and_changes_nothing);
    tcase_add_test(db, a_deleted_customer_is_not_found_nor_listed);
    tcase_add_test(db, a_merged_customer_reads_as_its_survivor);
    tcase_add_test(db, list_filters_and_pages_with_cursors);
    tcase_add_test(db, list_rejects_bad_parameters_by_name);
    tcase_add_test(db, tags_that_need_quoting_round_trip);
    tcase_add_test(db, list_search_matches_word_prefixes);
    tcase_add_test(db, list_search_follows_changes_to_the_words);
    tcase_add_test(db, list_search_pages_through_many_words_with_one_prefix);
    tcase_add_test(db, list_search_by_a_whole_word_reads_its_range_until_a_longer_word_appears);
    tcase_add_test(db, list_search_pages_through_sixteen_words_of_one_prefix);
    tcase_add_test(db, audit_pages_are_index_bounded_under_generic_plans);
    tcase_add_test(db, list_search_at_the_parameter_limits_answers_every_page);
    tcase_add_test(db, list_with_every_filter_eight_words_and_a_cursor_answers);
    tcase_add_test(db, list_search_with_every_part_at_its_maximum_pages_to_the_end);
    tcase_add_test(db, list_search_for_naughty_strings_of_digits_answers);
    tcase_add_test(db, upsert_creates_then_updates);
    tcase_add_test(db, an_external_id_held_by_another_customer_is_a_conflict_naming_it);
    tcase_add_test(db, an_idempotency_key_replays_the_first_response);
    tcase_add_test(db, the_audit_trail_lists_newest_first_in_pages);
    suite_add_tcase(s, db);
    return s;
}

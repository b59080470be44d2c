/*
 * test_customer_search.c — lib/customers/search.c and the search half of
 * list.c: the body is read with the rule's errors named under /rule, the
 * rule's hash ignores member order and white space but nothing else, and a
 * search page (the blocking path, which takes any number of parameters)
 * counts relative times from the now it is given and continues only with
 * its own cursors.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "customers.h"
#include "segments.h"
#include "suites.h"
#include "support.h"

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    ck_assert_msg(doc != NULL, "bad test JSON %s: %s", text, jerr.text);
    return doc;
}

/* Begins a search from body text; the rule (NULL: refused, err set). */
static crm_rule *begin(const char *text, long long now_ms, crm_customer_filter *f, crm_error *err)
{
    json_t *body = parse(text);
    *f = (crm_customer_filter){.limit = 10};
    crm_rule *r = crm_customer_search_begin(body, now_ms, f, err);
    json_decref(body);
    return r;
}

/* Expects text refused (CRM_E_INVALID) with an error naming field. */
static void assert_refused(const char *text, const char *field)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_filter f;
    crm_rule *r = begin(text, 0, &f, &err);
    ck_assert_msg(r == NULL, "%s was accepted", text);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    if (field != NULL)
        ck_assert_msg(unit_has_field_error(&err, field), "%s: no error for %s in %s", text, field,
                      err.errors ? json_dumps(err.errors, JSON_COMPACT) : err.detail);
    ck_assert(!f.search);
    crm_error_clear(&err);
}

/* The hash begin gives text's rule. */
static long long hash_of(const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_filter f;
    crm_rule *r = begin(text, 0, &f, &err);
    ck_assert_msg(r != NULL, "%s: %s", text, err.detail);
    ck_assert(f.search);
    ck_assert_ptr_eq(f.rule, r);
    crm_rule_free(r);
    return f.rule_hash;
}

START_TEST(the_rule_errors_are_named_under_rule)
{
    assert_refused("{\"rule\": {\"all\": [{\"field\": \"first_name\", \"op\": \"eq\", \"value\": "
                   "\"a\"}, {\"field\": \"first_name\", \"op\": \"gt\", \"value\": \"a\"}]}}",
                   "/rule/all/1/op");
    assert_refused("{\"rule\": {\"any\": [{\"field\": \"nope\", \"op\": \"eq\", \"value\": 1}]}}",
                   "/rule/any/0/field");
    assert_refused("{\"rule\": []}", "/rule");
    assert_refused("{}", "/rule");
    assert_refused("[]", NULL);
    assert_refused("{\"rule\": {\"all\": []}, \"limit\": 3}", "/limit");
    /* both problems at once */
    crm_error err = CRM_ERROR_INIT;
    crm_customer_filter f;
    ck_assert_ptr_null(begin("{\"sort\": 1, \"rule\": {\"not\": 1}}", 0, &f, &err));
    ck_assert(unit_has_field_error(&err, "/sort"));
    ck_assert(unit_has_field_error(&err, "/rule/not"));
    ck_assert(!unit_has_field_error(&err, "/rule/sort"));
    crm_error_clear(&err);
}
END_TEST

START_TEST(the_hash_ignores_member_order_and_spaces_only)
{
    long long a =
        hash_of("{\"rule\": {\"field\": \"first_name\", \"op\": \"eq\", \"value\": \"a\"}}");
    ck_assert_int_eq(
        a, hash_of("{\"rule\":{\"value\":\"a\",\"op\":\"eq\",\"field\":\"first_name\"}}"));
    ck_assert_int_ne(a, hash_of("{\"rule\": {\"field\": \"first_name\", \"op\": \"eq\", \"value\": "
                                "\"b\"}}"));
    ck_assert_int_ne(a, hash_of("{\"rule\": {\"field\": \"last_name\", \"op\": \"eq\", \"value\": "
                                "\"a\"}}"));
    ck_assert_int_ne(hash_of("{\"rule\": {\"all\": []}}"), hash_of("{\"rule\": {\"any\": []}}"));
}
END_TEST

static PGconn *direct;

static void setup_db(void)
{
    direct = unit_db_start(2);
}

static void teardown_db(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

/* A page of the search of body text at now_ms, after (may be NULL), as
 * JSON; NULL with err set. */
static json_t *search_page(const char *text, long long now_ms, const char *after, int limit,
                           crm_error *err)
{
    crm_customer_filter f;
    crm_rule *r = begin(text, now_ms, &f, err);
    ck_assert_msg(r != NULL, "%s: %s", text, err->detail);
    f.after = after;
    f.limit = limit;
    size_t len = 0;
    char *page = crm_customer_list(&f, &len, err);
    crm_rule_free(r);
    if (page == NULL)
        return NULL;
    json_t *doc = json_loadb(page, len, 0, NULL);
    free(page);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

static void make_customer(const char *tag, const char *name)
{
    static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};
    json_t *body = json_pack("{s:s, s:[s]}", "first_name", name, "tags", tag);
    crm_error err = CRM_ERROR_INIT;
    crm_customer_created out;
    ck_assert_msg(crm_customer_create(body, &ctx, &out, &err), "create: %s", err.detail);
    crm_customer_created_free(&out);
    json_decref(body);
}

START_TEST(relative_times_count_from_the_now_given)
{
    char tag[40], body[512];
    unit_unique(tag, sizeof tag, "srel");
    make_customer(tag, "Now");
    /* created at least a day before now */
    snprintf(
        body, sizeof body,
        "{\"rule\": {\"all\": [{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"}, "
        "{\"field\": \"created_at\", \"op\": \"lte\", \"value\": {\"days_ago\": 1}}]}}",
        tag);
    crm_error err = CRM_ERROR_INIT;
    json_t *page = search_page(body, crm_wall_ms(), NULL, 10, &err);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 0);
    json_decref(page);
    page = search_page(body, crm_wall_ms() + 2 * 86400000LL, NULL, 10, &err);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 1);
    json_decref(page);
}
END_TEST

START_TEST(a_page_continues_only_with_a_cursor_of_its_own_rule)
{
    char tag[40], body[512], other[512];
    unit_unique(tag, sizeof tag, "scur");
    make_customer(tag, "One");
    make_customer(tag, "Two");
    make_customer(tag, "Three");
    snprintf(body, sizeof body,
             "{\"rule\": {\"field\": \"tags\", \"op\": \"contains\", \"value\": \"%s\"}}", tag);
    snprintf(other, sizeof other,
             "{\"rule\": {\"field\": \"tags\", \"op\": \"in\", \"value\": [\"%s\"]}}", tag);
    crm_error err = CRM_ERROR_INIT;
    json_t *page = search_page(body, crm_wall_ms(), NULL, 2, &err);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 2);
    char *cursor = strdup(json_string_value(json_object_get(page, "next_cursor")));
    json_decref(page);
    page = search_page(body, crm_wall_ms(), cursor, 2, &err);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "data")), 1);
    ck_assert(json_is_null(json_object_get(page, "next_cursor")));
    json_decref(page);
    ck_assert_ptr_null(search_page(other, crm_wall_ms(), cursor, 2, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert(unit_has_field_error(&err, "after"));
    crm_error_clear(&err);
    /* the plain list refuses it too */
    crm_customer_filter f = {.tag = tag, .after = cursor, .limit = 2};
    size_t len;
    ck_assert_ptr_null(crm_customer_list(&f, &len, &err));
    ck_assert(unit_has_field_error(&err, "after"));
    crm_error_clear(&err);
    free(cursor);
}
END_TEST

Suite *customer_search_suite(void)
{
    Suite *s = suite_create("customer_search");
    TCase *body = tcase_create("body");
    tcase_add_test(body, the_rule_errors_are_named_under_rule);
    tcase_add_test(body, the_hash_ignores_member_order_and_spaces_only);
    suite_add_tcase(s, body);
    TCase *db = tcase_create("pages");
    tcase_set_timeout(db, 60);
    tcase_add_checked_fixture(db, setup_db, teardown_db);
    tcase_add_test(db, relative_times_count_from_the_now_given);
    tcase_add_test(db, a_page_continues_only_with_a_cursor_of_its_own_rule);
    suite_add_tcase(s, db);
    return s;
}

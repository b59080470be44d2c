/*
 * test_segment_rules.c — the rule language of segments (lib/segments.h):
 * what the parser refuses and the JSON pointer it names, the exact
 * decimals the evaluator compares with, hand-worked cases of the two-valued
 * semantics, what a rule reads, the segments it names and whether time
 * alone changes it, and the property that matters most: on a database of
 * its own with a few hundred random customers (and their memberships of a
 * few segments), for thousands of random rules, the customers the compiled
 * SQL selects are exactly those the in-process evaluator accepts.
 */
#include "db.h"
#include "jbuf.h"
#include "segments.h"
#include "segments/internal.h"
#include "suites.h"
#include "support.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2026-06-01T00:00:00Z, the "now" of every evaluation here. */
#define NOW_MS 1780272000000LL
#define DAY_MS 86400000LL

/* ---- parsing and its errors -------------------------------------------------- */

static crm_rule *parse_text(const char *text, crm_error *err)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(j != NULL, "test JSON: %s", jerr.text);
    crm_rule *r = crm_rule_parse(j, err);
    json_decref(j);
    return r;
}

/* Asserts that text is refused with CRM_E_INVALID naming pointer. */
static void assert_refused_at(const char *text, const char *pointer)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(text, &err);
    char *errors = json_dumps(err.errors, 0);
    ck_assert_msg(r == NULL, "accepted: %s", text);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_msg(unit_has_field_error(&err, pointer), "%s: expected %s in %s", text, pointer,
                  errors ? errors : "(none)");
    free(errors);
    crm_error_clear(&err);
}

static void assert_accepted(const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(text, &err);
    char *errors = json_dumps(err.errors, 0);
    ck_assert_msg(r != NULL, "%s refused: %s %s", text, err.detail, errors ? errors : "");
    free(errors);
    crm_rule_free(r);
}

START_TEST(the_issue_example_parses_into_its_nodes)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(
        "{\"all\": [{\"field\": \"address.country\", \"op\": \"eq\", \"value\": \"IT\"},"
        " {\"field\": \"metrics.churn_risk\", \"op\": \"gte\", \"value\": 0.6},"
        " {\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 90}, \"agg\": \"count\","
        "  \"op\": \"eq\", \"value\": 0}]}",
        &err);
    ck_assert_msg(r != NULL, "%s", err.detail);
    ck_assert_int_eq(crm_rule_nodes(r), 4);
    crm_rule_free(r);
}
END_TEST

START_TEST(each_kind_of_field_and_value_is_accepted)
{
    assert_accepted("{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"vip\"}");
    assert_accepted("{\"field\": \"tags\", \"op\": \"in\", \"value\": [\"vip\", \"b2b\"]}");
    assert_accepted("{\"field\": \"created_at\", \"op\": \"gte\", \"value\": {\"days_ago\": 30}}");
    assert_accepted("{\"field\": \"created_at\", \"op\": \"between\","
                    " \"value\": [\"2026-01-01T00:00:00Z\", {\"days_ago\": 0}]}");
    assert_accepted("{\"field\": \"birth_date\", \"op\": \"lt\", \"value\": \"2008-02-29\"}");
    assert_accepted(
        "{\"field\": \"consent.email.marketing\", \"op\": \"eq\", \"value\": \"none\"}");
    assert_accepted("{\"field\": \"attributes.plan.tier\", \"op\": \"in\", \"value\": [1, 2.5]}");
    assert_accepted("{\"field\": \"attributes.vip\", \"op\": \"eq\", \"value\": true}");
    assert_accepted("{\"field\": \"attributes.vip\", \"op\": \"exists\"}");
    assert_accepted("{\"field\": \"metrics.rfm_cell\", \"op\": \"starts_with\", \"value\": \"5\"}");
    assert_accepted("{\"touchpoints\": {}, \"agg\": \"last\", \"op\": \"exists\"}");
    assert_accepted("{\"touchpoints\": {\"sku\": \"X\", \"since\": \"2026-01-01T00:00:00Z\","
                    " \"until\": \"2026-02-01T00:00:00+01:00\"}, \"agg\": \"sum\", \"op\": \"gt\","
                    " \"value\": 100}");
    assert_accepted("{\"all\": []}");
    assert_accepted("{\"any\": []}");
}
END_TEST

START_TEST(an_unknown_operator_is_named_by_its_pointer)
{
    assert_refused_at("{\"all\": [{\"field\": \"email\", \"op\": \"exists\"},"
                      " {\"field\": \"email\", \"op\": \"exists\"},"
                      " {\"field\": \"email\", \"op\": \"like\", \"value\": \"x\"}]}",
                      "/all/2/op");
}
END_TEST

START_TEST(an_order_on_a_text_field_is_a_type_mismatch)
{
    assert_refused_at("{\"field\": \"first_name\", \"op\": \"lt\", \"value\": \"M\"}", "/op");
    assert_refused_at("{\"field\": \"kind\", \"op\": \"contains\", \"value\": \"per\"}", "/op");
    assert_refused_at("{\"field\": \"tags\", \"op\": \"eq\", \"value\": \"vip\"}", "/op");
    assert_refused_at("{\"field\": \"attributes.a\", \"op\": \"lt\", \"value\": \"x\"}", "/op");
    assert_refused_at("{\"field\": \"attributes.a\", \"op\": \"gt\", \"value\": true}", "/op");
}
END_TEST

START_TEST(a_string_for_a_number_field_is_refused_at_the_value)
{
    assert_refused_at("{\"field\": \"metrics.r_score\", \"op\": \"gt\", \"value\": \"3\"}",
                      "/value");
    assert_refused_at("{\"not\": {\"field\": \"metrics.p_alive\", \"op\": \"in\","
                      " \"value\": [0.5, \"x\"]}}",
                      "/not/value/1");
    assert_refused_at("{\"field\": \"created_at\", \"op\": \"gt\", \"value\": 5}", "/value");
    assert_refused_at("{\"field\": \"created_at\", \"op\": \"gt\", \"value\": \"yesterday\"}",
                      "/value");
    assert_refused_at("{\"field\": \"birth_date\", \"op\": \"eq\", \"value\": \"2025-02-29\"}",
                      "/value");
    assert_refused_at("{\"field\": \"email\", \"op\": \"eq\", \"value\": null}", "/value");
}
END_TEST

START_TEST(unknown_fields_members_and_enum_values_are_refused)
{
    assert_refused_at("{\"field\": \"shoe_size\", \"op\": \"exists\"}", "/field");
    assert_refused_at("{\"field\": \"metrics.nope\", \"op\": \"exists\"}", "/field");
    assert_refused_at("{\"field\": \"country\", \"op\": \"exists\"}", "/field");
    assert_refused_at("{\"any\": [{\"field\": \"email\", \"op\": \"exists\", \"foo\": 1}]}",
                      "/any/0/foo");
    assert_refused_at("{\"all\": [], \"any\": []}", "");
    assert_refused_at("{\"field\": \"kind\", \"op\": \"eq\", \"value\": \"robot\"}", "/value");
    assert_refused_at(
        "{\"field\": \"address.country\", \"op\": \"in\", \"value\": [\"IT\", \"it\"]}",
        "/value/1");
    assert_refused_at("{\"field\": \"consent.email.marketing\", \"op\": \"eq\","
                      " \"value\": \"yes\"}",
                      "/value");
    assert_refused_at("{\"field\": \"consent.fax.marketing\", \"op\": \"eq\","
                      " \"value\": \"none\"}",
                      "/field");
    assert_refused_at("{\"field\": \"attributes.1a\", \"op\": \"exists\"}", "/field");
    assert_refused_at("{\"field\": \"attributes.a..b\", \"op\": \"exists\"}", "/field");
    assert_refused_at("{\"field\": \"attributes.\", \"op\": \"exists\"}", "/field");
    assert_refused_at("{\"field\": \"attributes.a.b.c.d.e.f.g.h.i\", \"op\": \"exists\"}",
                      "/field");
    assert_refused_at("[1]", "");
    assert_refused_at("{\"all\": [3]}", "/all/0");
    assert_refused_at("{\"all\": {}}", "/all");
}
END_TEST

START_TEST(values_must_match_what_the_op_takes)
{
    assert_refused_at("{\"field\": \"email\", \"op\": \"exists\", \"value\": true}", "/value");
    assert_refused_at("{\"field\": \"email\", \"op\": \"eq\"}", "/value");
    assert_refused_at("{\"field\": \"email\", \"value\": \"x\"}", "/op");
    assert_refused_at("{\"field\": \"metrics.frequency\", \"op\": \"between\", \"value\": [1]}",
                      "/value");
    assert_refused_at("{\"field\": \"metrics.frequency\", \"op\": \"in\", \"value\": []}",
                      "/value");
    assert_refused_at("{\"field\": \"created_at\", \"op\": \"lt\","
                      " \"value\": {\"days_ago\": -1}}",
                      "/value/days_ago");
    assert_refused_at("{\"field\": \"created_at\", \"op\": \"lt\","
                      " \"value\": {\"days_ago\": 1, \"weeks\": 2}}",
                      "/value/weeks");
    assert_refused_at("{\"field\": \"email\", \"op\": \"eq\", \"value\": \"a\\u0000b\"}", "/value");
}
END_TEST

START_TEST(a_touchpoint_window_must_have_a_positive_length)
{
    assert_refused_at("{\"touchpoints\": {\"within_days\": 0}, \"agg\": \"count\", \"op\": \"gt\","
                      " \"value\": 0}",
                      "/touchpoints/within_days");
    assert_refused_at("{\"touchpoints\": {\"within_days\": -5}, \"agg\": \"count\", \"op\": \"gt\","
                      " \"value\": 0}",
                      "/touchpoints/within_days");
    assert_refused_at("{\"touchpoints\": {\"since\": \"2026-02-01T00:00:00Z\","
                      " \"until\": \"2026-02-01T00:00:00Z\"}, \"agg\": \"count\", \"op\": \"gt\","
                      " \"value\": 0}",
                      "/touchpoints/until");
    assert_refused_at("{\"touchpoints\": {\"since\": \"2026-02-01T00:00:00Z\", \"within_days\": 3},"
                      " \"agg\": \"count\", \"op\": \"gt\", \"value\": 0}",
                      "/touchpoints/since");
    assert_refused_at("{\"touchpoints\": {\"type\": \"purchased\"}, \"agg\": \"count\","
                      " \"op\": \"gt\", \"value\": 0}",
                      "/touchpoints/type");
    assert_refused_at("{\"touchpoints\": {\"colour\": \"red\"}, \"agg\": \"count\","
                      " \"op\": \"gt\", \"value\": 0}",
                      "/touchpoints/colour");
    assert_refused_at("{\"touchpoints\": {}, \"agg\": \"avg\", \"op\": \"gt\", \"value\": 0}",
                      "/agg");
    assert_refused_at("{\"touchpoints\": {}, \"agg\": \"count\", \"op\": \"exists\"}", "/op");
    assert_refused_at("{\"touchpoints\": {}, \"agg\": \"last\", \"op\": \"gt\", \"value\": 3}",
                      "/value");
}
END_TEST

/* A rule nesting n levels of "not" around one comparison. */
static char *nested_nots(int n)
{
    size_t size = (size_t)n * 10 + 64;
    char *text = malloc(size), *p = text;
    for (int i = 0; i < n; i++)
        p += sprintf(p, "{\"not\": ");
    p += sprintf(p, "{\"field\": \"email\", \"op\": \"exists\"}");
    for (int i = 0; i < n; i++)
        *p++ = '}';
    *p = '\0';
    return text;
}

START_TEST(an_offer_code_filter_is_a_string_of_one_to_a_hundred_characters)
{
    char code[CRM_RULE_ID_MAX + 2], rule[300];
    memset(code, 'o', CRM_RULE_ID_MAX);
    code[CRM_RULE_ID_MAX] = '\0';
    snprintf(rule, sizeof rule,
             "{\"touchpoints\": {\"type\": \"offer_rejected\", \"offer_code\": \"%s\"},"
             " \"agg\": \"count\", \"op\": \"gte\", \"value\": 2}",
             code);
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(rule, &err);
    ck_assert_msg(r != NULL, "%s", err.detail);
    crm_rule_free(r);
    r = parse_text("{\"touchpoints\": {\"type\": \"offer_rejected\", \"offer_code\": \"OFF-1\","
                   " \"within_days\": 30}, \"agg\": \"count\", \"op\": \"gte\", \"value\": 2}",
                   &err);
    ck_assert_msg(r != NULL, "%s", err.detail);
    ck_assert_uint_eq(crm_rule_reads(r), CRM_RULE_READS_TOUCHPOINTS);
    crm_rule_free(r);

    code[CRM_RULE_ID_MAX] = 'o';
    code[CRM_RULE_ID_MAX + 1] = '\0';
    snprintf(rule, sizeof rule,
             "{\"all\": [{\"touchpoints\": {\"offer_code\": \"%s\"}, \"agg\": \"count\","
             " \"op\": \"gte\", \"value\": 2}]}",
             code);
    assert_refused_at(rule, "/all/0/touchpoints/offer_code");
    assert_refused_at("{\"touchpoints\": {\"offer_code\": \"\"}, \"agg\": \"count\","
                      " \"op\": \"gte\", \"value\": 2}",
                      "/touchpoints/offer_code");
    assert_refused_at("{\"touchpoints\": {\"offer_code\": 7}, \"agg\": \"count\","
                      " \"op\": \"gte\", \"value\": 2}",
                      "/touchpoints/offer_code");
    assert_refused_at("{\"touchpoints\": {\"offer_code\": null}, \"agg\": \"count\","
                      " \"op\": \"gte\", \"value\": 2}",
                      "/touchpoints/offer_code");
    assert_refused_at("{\"touchpoints\": {\"offer_code\": [\"OFF-1\"]}, \"agg\": \"count\","
                      " \"op\": \"gte\", \"value\": 2}",
                      "/touchpoints/offer_code");
    assert_refused_at("{\"touchpoints\": {\"offer\": \"OFF-1\"}, \"agg\": \"count\","
                      " \"op\": \"gte\", \"value\": 2}",
                      "/touchpoints/offer");
}
END_TEST

START_TEST(depth_is_limited_to_eight_levels)
{
    char *ok = nested_nots(7); /* 7 nots and the comparison: 8 levels */
    assert_accepted(ok);
    free(ok);
    char *deep = nested_nots(8);
    assert_refused_at(deep, "/not/not/not/not/not/not/not/not");
    free(deep);
}
END_TEST

/* {"all": [n copies of leaf]} */
static char *wide_all_of(int n, const char *leaf)
{
    char *text = malloc((size_t)n * (strlen(leaf) + 2) + 32), *p = text;
    p += sprintf(p, "{\"all\": [");
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", leaf);
    sprintf(p, "]}");
    return text;
}

/* {"all": [n comparisons]} */
static char *wide_all(int n)
{
    return wide_all_of(n, "{\"field\": \"email\", \"op\": \"exists\"}");
}

START_TEST(a_rule_has_at_most_two_hundred_nodes)
{
    char *ok = wide_all(199);
    assert_accepted(ok);
    free(ok);
    char *over = wide_all(200); /* the root and 200 comparisons */
    assert_refused_at(over, "/all/199");
    free(over);
    char *far_over = wide_all(201);
    assert_refused_at(far_over, "/all");
    free(far_over);
}
END_TEST

START_TEST(lists_and_strings_have_limits)
{
    size_t size = 1001 * 2 + 128;
    char *text = malloc(size), *p = text;
    p += sprintf(p, "{\"field\": \"metrics.frequency\", \"op\": \"in\", \"value\": [");
    for (int i = 0; i < 1001; i++)
        p += sprintf(p, "%s1", i ? "," : "");
    sprintf(p, "]}");
    assert_refused_at(text, "/value");
    free(text);
    char long_value[600];
    memset(long_value, 'a', 501);
    long_value[501] = '\0';
    char rule[700];
    snprintf(rule, sizeof rule, "{\"field\": \"email\", \"op\": \"eq\", \"value\": \"%s\"}",
             long_value);
    assert_refused_at(rule, "/value");
}
END_TEST

START_TEST(every_problem_is_reported_with_its_own_pointer)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text("{\"all\": [{\"field\": \"shoe_size\", \"op\": \"eq\", \"value\": 1},"
                             " {\"field\": \"email\", \"op\": \"gt\", \"value\": \"a\"},"
                             " {\"any\": [{\"touchpoints\": {\"within_days\": 0},"
                             "   \"agg\": \"count\", \"op\": \"gt\", \"value\": 1}]}]}",
                             &err);
    ck_assert_ptr_null(r);
    ck_assert(unit_has_field_error(&err, "/all/0/field"));
    ck_assert(unit_has_field_error(&err, "/all/1/op"));
    ck_assert(unit_has_field_error(&err, "/all/2/any/0/touchpoints/within_days"));
    ck_assert_int_eq((int)json_array_size(err.errors), 3);
    crm_error_clear(&err);
}
END_TEST

START_TEST(a_segment_node_names_a_positive_integer_id)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text("{\"all\": [{\"segment\": 1}, {\"not\": {\"segment\": 42}}]}", &err);
    ck_assert_msg(r != NULL, "%s", err.detail);
    ck_assert_int_eq(crm_rule_nodes(r), 4);
    crm_rule_free(r);
    assert_accepted("{\"segment\": 9223372036854775807}");
    assert_accepted("{\"any\": [{\"segment\": 3}, {\"field\": \"email\", \"op\": \"exists\"}]}");
    assert_refused_at("{\"all\": [{\"field\": \"email\", \"op\": \"exists\"},"
                      " {\"segment\": \"3\"}]}",
                      "/all/1/segment");
    assert_refused_at("{\"segment\": 0}", "/segment");
    assert_refused_at("{\"not\": {\"segment\": -7}}", "/not/segment");
    assert_refused_at("{\"segment\": 2.5}", "/segment");
    assert_refused_at("{\"segment\": 2.0}", "/segment");
    assert_refused_at("{\"segment\": null}", "/segment");
    assert_refused_at("{\"segment\": [1]}", "/segment");
    assert_refused_at("{\"segment\": {\"id\": 1}}", "/segment");
    assert_refused_at("{\"segment\": true}", "/segment");
}
END_TEST

START_TEST(a_segment_node_takes_no_other_member)
{
    assert_refused_at("{\"segment\": 1, \"op\": \"eq\"}", "/op");
    assert_refused_at("{\"any\": [{\"segment\": 1, \"value\": true}]}", "/any/0/value");
    /* two kinds of node in one object */
    assert_refused_at("{\"segment\": 1, \"field\": \"email\", \"op\": \"exists\"}", "");
    assert_refused_at("{\"all\": [{\"segment\": 1, \"not\": {\"segment\": 2}}]}", "/all/0");
}
END_TEST

START_TEST(segment_nodes_count_towards_the_limits)
{
    char *ok = wide_all_of(199, "{\"segment\": 5}");
    assert_accepted(ok);
    free(ok);
    char *over = wide_all_of(200, "{\"segment\": 5}");
    assert_refused_at(over, "/all/199");
    free(over);
    /* 7 nots around a segment: 8 levels; 8 nots: too deep */
    assert_accepted("{\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\":"
                    " {\"segment\": 1}}}}}}}}");
    assert_refused_at("{\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\": {\"not\":"
                      " {\"not\": {\"segment\": 1}}}}}}}}}",
                      "/not/not/not/not/not/not/not/not");
}
END_TEST

/* ---- what a rule reads, names and depends on ------------------------------------ */

static unsigned reads_of(const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(text, &err);
    ck_assert_msg(r != NULL, "%s refused: %s", text, err.detail);
    unsigned bits = crm_rule_reads(r);
    crm_rule_free(r);
    return bits;
}

START_TEST(a_rule_reads_what_its_nodes_name)
{
    ck_assert_uint_eq(reads_of("{\"all\": []}"), 0);
    ck_assert_uint_eq(reads_of("{\"field\": \"email\", \"op\": \"exists\"}"),
                      CRM_RULE_READS_CUSTOMER);
    ck_assert_uint_eq(reads_of("{\"field\": \"tags\", \"op\": \"contains\", \"value\": \"vip\"}"),
                      CRM_RULE_READS_CUSTOMER);
    ck_assert_uint_eq(reads_of("{\"field\": \"attributes.plan\", \"op\": \"exists\"}"),
                      CRM_RULE_READS_CUSTOMER);
    ck_assert_uint_eq(reads_of("{\"field\": \"created_at\", \"op\": \"gt\","
                               " \"value\": {\"days_ago\": 3}}"),
                      CRM_RULE_READS_CUSTOMER);
    ck_assert_uint_eq(reads_of("{\"not\": {\"field\": \"consent.email.marketing\", \"op\": \"eq\","
                               " \"value\": \"granted\"}}"),
                      CRM_RULE_READS_CONSENT);
    ck_assert_uint_eq(
        reads_of("{\"field\": \"metrics.churn_risk\", \"op\": \"gte\", \"value\": 0.6}"),
        CRM_RULE_READS_METRICS);
    ck_assert_uint_eq(
        reads_of("{\"touchpoints\": {}, \"agg\": \"count\", \"op\": \"gt\", \"value\": 0}"),
        CRM_RULE_READS_TOUCHPOINTS);
    ck_assert_uint_eq(reads_of("{\"any\": [{\"segment\": 4}]}"), CRM_RULE_READS_SEGMENTS);
    ck_assert_uint_eq(
        reads_of("{\"any\": [{\"segment\": 4},"
                 " {\"all\": [{\"field\": \"metrics.frequency\", \"op\": \"exists\"},"
                 "  {\"not\": {\"field\": \"first_name\", \"op\": \"eq\", \"value\": \"A\"}}]}]}"),
        CRM_RULE_READS_SEGMENTS | CRM_RULE_READS_METRICS | CRM_RULE_READS_CUSTOMER);
    ck_assert_uint_eq(
        reads_of("{\"all\": [{\"segment\": 4},"
                 " {\"field\": \"consent.sms.service\", \"op\": \"ne\", \"value\": \"none\"},"
                 " {\"touchpoints\": {}, \"agg\": \"last\", \"op\": \"exists\"},"
                 " {\"field\": \"metrics.as_of\", \"op\": \"exists\"},"
                 " {\"field\": \"kind\", \"op\": \"eq\", \"value\": \"person\"}]}"),
        CRM_RULE_READS_CUSTOMER | CRM_RULE_READS_CONSENT | CRM_RULE_READS_TOUCHPOINTS |
            CRM_RULE_READS_METRICS | CRM_RULE_READS_SEGMENTS);
}
END_TEST

START_TEST(segment_refs_are_each_id_once_in_order_with_the_first_pointer)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text("{\"any\": [{\"segment\": 7},"
                             " {\"all\": [{\"field\": \"email\", \"op\": \"exists\"},"
                             "  {\"segment\": 3}, {\"not\": {\"segment\": 7}}]},"
                             " {\"not\": {\"segment\": 12}}, {\"segment\": 3}]}",
                             &err);
    ck_assert_msg(r != NULL, "%s", err.detail);
    long long ids[4] = {-1, -1, -1, -1};
    const char *pointers[4] = {NULL, NULL, NULL, NULL};
    ck_assert_int_eq(crm_rule_segment_refs(r, ids, pointers, 4), 3);
    ck_assert_int_eq(ids[0], 7);
    ck_assert_int_eq(ids[1], 3);
    ck_assert_int_eq(ids[2], 12);
    ck_assert_int_eq(ids[3], -1);
    ck_assert_str_eq(pointers[0], "/any/0");
    ck_assert_str_eq(pointers[1], "/any/1/all/1");
    ck_assert_str_eq(pointers[2], "/any/2/not");
    ck_assert_ptr_null(pointers[3]);
    /* fewer slots than ids: the first ones, and the whole count */
    long long two[3] = {-1, -1, -1};
    const char *two_pointers[3] = {NULL, NULL, NULL};
    ck_assert_int_eq(crm_rule_segment_refs(r, two, two_pointers, 2), 3);
    ck_assert_int_eq(two[0], 7);
    ck_assert_int_eq(two[1], 3);
    ck_assert_int_eq(two[2], -1);
    ck_assert_ptr_null(two_pointers[2]);
    ck_assert_int_eq(crm_rule_segment_refs(r, NULL, NULL, 0), 3);
    ck_assert_int_eq(crm_rule_segment_refs(r, ids, NULL, 4), 3);
    crm_rule_free(r);

    r = parse_text("{\"segment\": 9}", &err);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(crm_rule_segment_refs(r, ids, pointers, 4), 1);
    ck_assert_int_eq(ids[0], 9);
    ck_assert_str_eq(pointers[0], "");
    crm_rule_free(r);

    r = parse_text("{\"not\": {\"field\": \"email\", \"op\": \"exists\"}}", &err);
    ck_assert_ptr_nonnull(r);
    ids[0] = -1;
    ck_assert_int_eq(crm_rule_segment_refs(r, ids, pointers, 4), 0);
    ck_assert_int_eq(ids[0], -1);
    crm_rule_free(r);
}
END_TEST

START_TEST(every_distinct_segment_of_a_full_rule_is_named)
{
    /* 199 distinct ids under the root: all named, in order */
    const char *head = "{\"all\": [";
    char *text = malloc(199 * 24 + 32), *p = text;
    p += sprintf(p, "%s", head);
    for (int i = 0; i < 199; i++)
        p += sprintf(p, "%s{\"segment\": %d}", i ? "," : "", 1000 - i);
    sprintf(p, "]}");
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(text, &err);
    free(text);
    ck_assert_msg(r != NULL, "%s", err.detail);
    long long ids[CRM_RULE_MAX_NODES];
    const char *pointers[CRM_RULE_MAX_NODES];
    ck_assert_int_eq(crm_rule_segment_refs(r, ids, pointers, CRM_RULE_MAX_NODES), 199);
    ck_assert_int_eq(ids[0], 1000);
    ck_assert_int_eq(ids[198], 802);
    ck_assert_str_eq(pointers[198], "/all/198");
    crm_rule_free(r);
}
END_TEST

static bool has_time(const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(text, &err);
    ck_assert_msg(r != NULL, "%s refused: %s", text, err.detail);
    bool t = crm_rule_has_time(r);
    crm_rule_free(r);
    return t;
}

START_TEST(a_rule_has_time_when_a_value_or_a_window_is_relative)
{
    ck_assert(!has_time("{\"all\": []}"));
    ck_assert(!has_time("{\"segment\": 3}"));
    ck_assert(!has_time("{\"field\": \"email\", \"op\": \"exists\"}"));
    ck_assert(!has_time("{\"field\": \"created_at\", \"op\": \"gt\","
                        " \"value\": \"2026-01-01T00:00:00Z\"}"));
    ck_assert(!has_time("{\"field\": \"birth_date\", \"op\": \"between\","
                        " \"value\": [\"2000-01-01\", \"2001-01-01\"]}"));
    ck_assert(!has_time("{\"touchpoints\": {\"since\": \"2026-01-01T00:00:00Z\","
                        " \"until\": \"2026-02-01T00:00:00Z\"}, \"agg\": \"count\", \"op\": \"gt\","
                        " \"value\": 0}"));
    ck_assert(!has_time("{\"touchpoints\": {}, \"agg\": \"last\", \"op\": \"lt\","
                        " \"value\": \"2026-01-01T00:00:00Z\"}"));
    ck_assert(!has_time("{\"field\": \"metrics.recency_days\", \"op\": \"gt\", \"value\": 30}"));
    ck_assert(
        has_time("{\"field\": \"created_at\", \"op\": \"gt\", \"value\": {\"days_ago\": 0}}"));
    ck_assert(has_time("{\"field\": \"birth_date\", \"op\": \"between\","
                       " \"value\": [\"2000-01-01\", {\"days_ago\": 6570}]}"));
    ck_assert(has_time("{\"field\": \"metrics.last_purchase_at\", \"op\": \"lt\","
                       " \"value\": {\"days_ago\": 90}}"));
    ck_assert(
        has_time("{\"touchpoints\": {\"within_days\": 30}, \"agg\": \"count\", \"op\": \"eq\","
                 " \"value\": 0}"));
    ck_assert(has_time("{\"touchpoints\": {}, \"agg\": \"last\", \"op\": \"gte\","
                       " \"value\": {\"days_ago\": 7}}"));
    ck_assert(
        has_time("{\"any\": [{\"segment\": 3}, {\"not\": {\"all\": [{\"touchpoints\":"
                 " {\"type\": \"purchase\", \"within_days\": 1}, \"agg\": \"sum\", \"op\": \"gt\","
                 " \"value\": 5}]}}]}"));
}
END_TEST

/* ---- compiled SQL without a database ------------------------------------------ */

START_TEST(compiled_sql_carries_values_only_as_parameters)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(
        "{\"any\": [{\"field\": \"email\", \"op\": \"eq\", \"value\": \"x'); DROP TABLE t; --\"},"
        " {\"field\": \"attributes.a\", \"op\": \"contains\", \"value\": \"%s$1\"},"
        " {\"field\": \"metrics.monetary\", \"op\": \"gt\", \"value\": 0.1},"
        " {\"touchpoints\": {\"sku\": \"S'1\", \"within_days\": 2}, \"agg\": \"sum\","
        "  \"op\": \"lt\", \"value\": 5},"
        " {\"touchpoints\": {\"offer_code\": \"O'1; --\"}, \"agg\": \"count\","
        "  \"op\": \"gte\", \"value\": 2}]}",
        &err);
    ck_assert_msg(r != NULL, "%s", err.detail);
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    ck_assert(crm_rule_sql(r, &s, NOW_MS, &arena, &err));
    const char *sql = crm_sqlbuf_text(&s);
    ck_assert_ptr_null(strstr(sql, "DROP"));
    ck_assert_ptr_null(strstr(sql, "%s"));
    ck_assert_ptr_null(strstr(sql, "S'1"));
    ck_assert_ptr_null(strstr(sql, "O'1"));
    ck_assert_ptr_nonnull(strstr(sql, "t.offer_code = $"));
    bool exact = false, window = false, offer = false;
    for (int i = 0; i < s.nparams; i++) {
        offer |= s.params[i] != NULL && strcmp(s.params[i], "O'1; --") == 0;
        exact |= s.params[i] != NULL && strcmp(s.params[i], "0.1") == 0;
        window |= s.params[i] != NULL && strcmp(s.params[i], "2026-05-30T00:00:00.000Z") == 0;
    }
    ck_assert_msg(exact, "0.1 goes to SQL as its exact decimal text");
    ck_assert_msg(window, "within_days 2 starts two days before now");
    ck_assert_msg(offer, "the offer_code goes to SQL as a parameter");
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    crm_rule_free(r);
}
END_TEST

START_TEST(a_segment_id_goes_to_sql_as_a_parameter)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text("{\"not\": {\"segment\": 987654321}}", &err);
    ck_assert_msg(r != NULL, "%s", err.detail);
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    ck_assert(crm_rule_sql(r, &s, NOW_MS, &arena, &err));
    const char *sql = crm_sqlbuf_text(&s);
    ck_assert_ptr_nonnull(strstr(sql, "segment_memberships"));
    ck_assert_ptr_null(strstr(sql, "987654321"));
    ck_assert_int_eq(s.nparams, 1);
    ck_assert_str_eq(s.params[0], "987654321");
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    crm_rule_free(r);
}
END_TEST

/* ---- exact decimals --------------------------------------------------------------- */

START_TEST(decimals_compare_exactly_in_numeric_order)
{
    ck_assert_int_eq(rule_dec_cmp("1", "1.000"), 0);
    ck_assert_int_eq(rule_dec_cmp("-0", "0.0"), 0);
    ck_assert_int_eq(rule_dec_cmp("1e-07", "0.0000001"), 0);
    ck_assert_int_eq(rule_dec_cmp("1.5e+2", "150"), 0);
    ck_assert_int_eq(rule_dec_cmp("12.5", "12.51"), -1);
    ck_assert_int_eq(rule_dec_cmp("-3", "-2.5"), -1);
    ck_assert_int_eq(rule_dec_cmp("100", "99.999"), 1);
    ck_assert_int_eq(rule_dec_cmp("0.10000000000000001", "0.1"), 1);
    ck_assert_int_eq(rule_dec_cmp("-0.001", "0"), -1);
    ck_assert_int_eq(rule_dec_cmp("007", "7"), 0);
    ck_assert_int_eq(rule_dec_cmp("NaN", "Infinity"), 1);
    ck_assert_int_eq(rule_dec_cmp("NaN", "NaN"), 0);
    ck_assert_int_eq(rule_dec_cmp("Infinity", "1e308"), 1);
    ck_assert_int_eq(rule_dec_cmp("-Infinity", "-1e308"), -1);
}
END_TEST

static void assert_sum(const char *const *terms, int n, const char *expected)
{
    char *sum = rule_dec_sum(terms, n);
    ck_assert_ptr_nonnull(sum);
    ck_assert_msg(strcmp(sum, expected) == 0, "sum %s, expected %s", sum, expected);
    free(sum);
}

START_TEST(decimal_sums_are_exact)
{
    const char *a[] = {"10.5", "-3", "0.001", NULL};
    assert_sum(a, 4, "7.501");
    const char *b[] = {"0.1", "0.2"};
    assert_sum(b, 2, "0.3");
    const char *c[] = {"99.99", "0.01"};
    assert_sum(c, 2, "100");
    const char *d[] = {"-5", "2"};
    assert_sum(d, 2, "-3");
    const char *e[] = {"1", "-1.00"};
    assert_sum(e, 2, "0");
    assert_sum(NULL, 0, "0");
    const char *f[] = {"Infinity", "1"};
    assert_sum(f, 2, "Infinity");
    const char *g[] = {"Infinity", "-Infinity"};
    assert_sum(g, 2, "NaN");
    const char *h[] = {"999999999999999.999999", "0.000001"};
    assert_sum(h, 2, "1000000000000000");
}
END_TEST

START_TEST(doubles_order_nan_above_everything_as_postgresql_does)
{
    ck_assert_int_eq(rule_float_cmp(0.0 / 0.0, 0.0 / 0.0), 0);
    ck_assert_int_eq(rule_float_cmp(0.0 / 0.0, 1e308), 1);
    ck_assert_int_eq(rule_float_cmp(1.0, 0.0 / 0.0), -1);
    ck_assert_int_eq(rule_float_cmp(-0.0, 0.0), 0);
}
END_TEST

/* ---- against PostgreSQL ------------------------------------------------------------ */

static unit_own_db own;
static PGconn *db;

static void fresh_database(void)
{
    unit_own_db_start(&own, "unit_rules");
    db = own.db;
}

static void drop_database(void)
{
    unit_own_db_stop(&own);
    db = NULL;
}

/* A sorted list of customer ids. */
typedef struct id_set {
    long long *ids;
    int n;
} id_set;

/* The ids that SELECT c.id FROM customers c WHERE <rule> gives, in order,
 * on a pooled connection (the session crmd's own statements see). */
static id_set sql_ids(crm_conn *conn, const crm_rule *r, const char *rule_text)
{
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    crm_error err = CRM_ERROR_INIT;
    crm_sqlbuf_append(&s, "SELECT c.id FROM customers c WHERE ");
    ck_assert_msg(crm_rule_sql(r, &s, NOW_MS, &arena, &err), "%s", err.detail);
    crm_sqlbuf_append(&s, " ORDER BY c.id");
    PGresult *res = crm_db_exec_sql(conn, crm_sqlbuf_text(&s), s.nparams, s.params, &err);
    ck_assert_msg(res != NULL, "%s\nfor %s\nSQL %s", err.detail, rule_text, crm_sqlbuf_text(&s));
    id_set out = {malloc(sizeof(long long) * (size_t)(PQntuples(res) + 1)), PQntuples(res)};
    for (int i = 0; i < out.n; i++)
        out.ids[i] = atoll(PQgetvalue(res, i, 0));
    PQclear(res);
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    return out;
}

/* The ids of the states (in id order) that crm_rule_eval accepts. */
static id_set eval_ids(crm_rule_state **states, int n, const crm_rule *r)
{
    id_set out = {malloc(sizeof(long long) * (size_t)(n + 1)), 0};
    for (int i = 0; i < n; i++)
        if (crm_rule_eval(r, states[i], NOW_MS))
            out.ids[out.n++] = crm_rule_state_customer(states[i]);
    return out;
}

/* Fails the test, naming the first customer the two answers differ on. */
static void assert_same_ids(const id_set *sql, const id_set *eval, const char *rule_text)
{
    int i = 0, j = 0;
    while (i < sql->n && j < eval->n && sql->ids[i] == eval->ids[j])
        i++, j++;
    if (i == sql->n && j == eval->n)
        return;
    long long sql_only = i < sql->n ? sql->ids[i] : 0, eval_only = j < eval->n ? eval->ids[j] : 0;
    ck_abort_msg("SQL and evaluator disagree on %s\n(SQL %d customers, evaluator %d; first "
                 "difference: SQL next %lld, evaluator next %lld)",
                 rule_text, sql->n, eval->n, sql_only, eval_only);
}

/* Loads every customer's state, in id order, twice: states[0..n) by
 * crm_rule_state_load, states[n..2n) from the one statement of
 * crm_rule_state_union_sql (what the treatments read), so that every rule
 * checks both against the SQL. */
static crm_rule_state **load_states(crm_conn *conn, int *n)
{
    PGresult *res = unit_sql(db, "SELECT id FROM customers ORDER BY id", 0, NULL);
    *n = PQntuples(res);
    crm_rule_state **states = calloc(2 * (size_t)*n + 1, sizeof *states);
    char *sql = crm_rule_state_union_sql(crm_rule_state_union_width());
    ck_assert(sql != NULL);
    for (int i = 0; i < *n; i++) {
        crm_error err = CRM_ERROR_INIT;
        long long id = atoll(PQgetvalue(res, i, 0));
        states[i] = crm_rule_state_load(conn, id, &err);
        ck_assert_msg(states[i] != NULL, "load: %s", err.detail);
        const char *params[] = {PQgetvalue(res, i, 0)};
        PGresult *u = unit_sql(db, sql, 1, params);
        states[*n + i] = crm_rule_state_read(u, id, &err);
        ck_assert_msg(states[*n + i] != NULL, "read: %s", err.detail);
        PQclear(u);
    }
    free(sql);
    PQclear(res);
    return states;
}

static void free_states(crm_rule_state **states, int n)
{
    for (int i = 0; i < 2 * n; i++)
        crm_rule_state_free(states[i]);
    free(states);
}

/* Checks that the SQL and the evaluator agree on rule_text over states;
 * returns how many customers it selects. */
static int check_rule(crm_conn *conn, crm_rule_state **states, int n, const char *rule_text)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(rule_text, &err);
    char *errors = json_dumps(err.errors, 0);
    ck_assert_msg(r != NULL, "%s refused: %s", rule_text, errors ? errors : err.detail);
    free(errors);
    id_set a = sql_ids(conn, r, rule_text), b = eval_ids(states, n, r),
           c = eval_ids(states + n, n, r);
    assert_same_ids(&a, &b, rule_text);
    assert_same_ids(&a, &c, rule_text); /* the state read in one statement */
    int count = a.n;
    free(a.ids);
    free(b.ids);
    free(c.ids);
    crm_rule_free(r);
    return count;
}

/* Inserts a customer from its columns; its id. */
static long long insert_customer(const char *first_name, const char *attributes, const char *tags)
{
    const char *params[] = {first_name, attributes, tags};
    return unit_sql_long(db,
                         "INSERT INTO customers (first_name, attributes, tags) VALUES ($1,"
                         " $2::jsonb, ARRAY(SELECT jsonb_array_elements_text($3::jsonb))) "
                         "RETURNING id",
                         3, params);
}

static void insert_consent(long long id, const char *channel, const char *purpose,
                           const char *status, const char *captured_at)
{
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *params[] = {idtext, channel, purpose, status, captured_at};
    PQclear(unit_sql(db,
                     "INSERT INTO customer_consents (customer_id, channel, purpose, status,"
                     " source, captured_at) VALUES ($1, $2, $3, $4, 'unit', $5)",
                     5, params));
}

/* A touchpoint; offer_code NULL: none. */
static void insert_offer_touchpoint(long long id, const char *type, const char *channel,
                                    const char *occurred_at, const char *campaign_id,
                                    const char *offer_code, const char *amount, const char *items)
{
    static int serial;
    char idtext[24], event[32];
    snprintf(idtext, sizeof idtext, "%lld", id);
    snprintf(event, sizeof event, "tp%d", ++serial);
    const char *params[] = {idtext, type,        channel, occurred_at,
                            event,  campaign_id, amount,  amount ? "EUR" : NULL,
                            items,  offer_code};
    PQclear(unit_sql(db,
                     "INSERT INTO touchpoints (customer_id, type, channel, direction, occurred_at,"
                     " source, event_id, campaign_id, amount, currency, items, offer_code)"
                     " VALUES ($1, $2, $3, 'inbound', $4, 'unit', $5, $6, $7::numeric, $8,"
                     " $9::jsonb, $10)",
                     10, params));
}

static void insert_touchpoint(long long id, const char *type, const char *channel,
                              const char *occurred_at, const char *campaign_id, const char *amount,
                              const char *items)
{
    insert_offer_touchpoint(id, type, channel, occurred_at, campaign_id, NULL, amount, items);
}

/* A segments row (its rule is not read here); its id. */
static long long insert_segment(const char *name)
{
    const char *params[] = {name};
    return unit_sql_long(db,
                         "INSERT INTO segments (name, rule) VALUES ($1, '{\"all\": []}')"
                         " RETURNING id",
                         1, params);
}

static void insert_membership(long long segment, long long customer)
{
    char s[24], c[24];
    snprintf(s, sizeof s, "%lld", segment);
    snprintf(c, sizeof c, "%lld", customer);
    const char *params[] = {s, c};
    PQclear(
        unit_sql(db,
                 "INSERT INTO segment_memberships (segment_id, customer_id, entered_at, rule_version)"
                 " VALUES ($1, $2, now(), 1)",
                 2, params));
}

START_TEST(hand_worked_cases_give_the_same_customers_both_ways)
{
    /* a: no e-mail, consent granted then revoked later, two purchases of
     *    0.1 and 0.2 (sum exactly 0.3) 10 days ago and exactly 30 days ago;
     * b: e-mail, consent granted and revoked captured at the same instant
     *    (the later row wins), attributes of other JSON types. */
    long long a = insert_customer("Anna", "{\"score\": 10, \"plan\": \"gold\"}", "[\"vip\"]");
    long long b = insert_customer("Bob", "{\"score\": \"10\", \"plan\": [\"gold\"]}", "[]");
    PQclear(unit_sql(db, "UPDATE customers SET email = 'bob@example.com' WHERE first_name = 'Bob'",
                     0, NULL));
    insert_consent(a, "email", "marketing", "granted", "2026-01-01T00:00:00Z");
    insert_consent(a, "email", "marketing", "revoked", "2026-02-01T00:00:00Z");
    insert_consent(b, "email", "marketing", "granted", "2026-03-01T00:00:00Z");
    insert_consent(b, "email", "marketing", "revoked", "2026-03-01T00:00:00Z");
    insert_consent(b, "sms", "marketing", "granted", "2026-03-01T00:00:00Z");
    insert_touchpoint(a, "purchase", "store", "2026-05-22T00:00:00Z", "c1", "0.1",
                      "[{\"sku\": \"X\", \"quantity\": 1}]");
    insert_touchpoint(a, "purchase", "web", "2026-05-02T00:00:00Z", NULL, "0.2", NULL);
    /* a rejected offer OFF-1 twice within 30 days (once exactly 30 days
     * ago); b rejected OFF-2 twice and an offer without a code once. */
    insert_offer_touchpoint(a, "offer_rejected", "email", "2026-05-02T00:00:00Z", NULL, "OFF-1",
                            NULL, NULL);
    insert_offer_touchpoint(a, "offer_rejected", "web", "2026-05-30T12:00:00Z", "c1", "OFF-1", NULL,
                            NULL);
    insert_offer_touchpoint(b, "offer_rejected", "email", "2026-05-20T00:00:00Z", NULL, "OFF-2",
                            NULL, NULL);
    insert_offer_touchpoint(b, "offer_rejected", "email", "2026-05-21T00:00:00Z", NULL, "OFF-2",
                            NULL, NULL);
    insert_offer_touchpoint(b, "offer_rejected", "sms", "2026-05-22T00:00:00Z", NULL, NULL, NULL,
                            NULL);
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_msg(conn != NULL, "%s", err.detail);
    int n;
    crm_rule_state **states = load_states(conn, &n);
    ck_assert_int_eq(n, 2);
    struct {
        const char *rule;
        int count; /* customers selected: 1 means a only, 2 both, 3 b only */
    } cases[] = {
        /* ne on a missing e-mail is false, so its negation holds for a */
        {"{\"field\": \"email\", \"op\": \"ne\", \"value\": \"x@example.com\"}", 3},
        {"{\"not\": {\"field\": \"email\", \"op\": \"ne\", \"value\": \"x@example.com\"}}", 1},
        {"{\"field\": \"consent.email.marketing\", \"op\": \"eq\", \"value\": \"revoked\"}", 2},
        {"{\"field\": \"consent.sms.marketing\", \"op\": \"eq\", \"value\": \"none\"}", 1},
        {"{\"touchpoints\": {\"type\": \"purchase\"}, \"agg\": \"sum\", \"op\": \"eq\","
         " \"value\": 0.3}",
         1},
        {"{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 30}, \"agg\": \"count\","
         " \"op\": \"eq\", \"value\": 2}",
         1},
        {"{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": 29}, \"agg\": \"count\","
         " \"op\": \"eq\", \"value\": 1}",
         1},
        {"{\"touchpoints\": {\"sku\": \"X\"}, \"agg\": \"last\", \"op\": \"eq\","
         " \"value\": {\"days_ago\": 10}}",
         1},
        {"{\"touchpoints\": {}, \"agg\": \"count\", \"op\": \"eq\", \"value\": 3}", 3},
        {"{\"touchpoints\": {\"type\": \"purchase\"}, \"agg\": \"count\", \"op\": \"eq\","
         " \"value\": 0}",
         3},
        {"{\"touchpoints\": {\"type\": \"offer_rejected\", \"offer_code\": \"OFF-1\","
         " \"within_days\": 30}, \"agg\": \"count\", \"op\": \"gte\", \"value\": 2}",
         1},
        {"{\"touchpoints\": {\"type\": \"offer_rejected\", \"offer_code\": \"OFF-1\","
         " \"within_days\": 29}, \"agg\": \"count\", \"op\": \"eq\", \"value\": 1}",
         1},
        {"{\"touchpoints\": {\"offer_code\": \"OFF-2\"}, \"agg\": \"count\", \"op\": \"eq\","
         " \"value\": 2}",
         3},
        {"{\"touchpoints\": {\"type\": \"offer_rejected\"}, \"agg\": \"count\", \"op\": \"eq\","
         " \"value\": 3}",
         3},
        {"{\"touchpoints\": {\"offer_code\": \"OFF-1\", \"campaign_id\": \"c1\"},"
         " \"agg\": \"last\", \"op\": \"gt\", \"value\": {\"days_ago\": 2}}",
         1},
        {"{\"touchpoints\": {\"offer_code\": \"OFF-3\"}, \"agg\": \"count\", \"op\": \"eq\","
         " \"value\": 0}",
         2},
        {"{\"field\": \"attributes.score\", \"op\": \"eq\", \"value\": 10}", 1},
        {"{\"field\": \"attributes.score\", \"op\": \"eq\", \"value\": \"10\"}", 3},
        {"{\"field\": \"attributes.plan\", \"op\": \"contains\", \"value\": \"gold\"}", 2},
        {"{\"field\": \"attributes.plan\", \"op\": \"contains\", \"value\": \"ol\"}", 1},
        {"{\"not\": {\"field\": \"attributes.score\", \"op\": \"gt\", \"value\": 5}}", 3},
        {"{\"field\": \"tags\", \"op\": \"exists\"}", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int want = cases[i].count == 3 ? 1 : cases[i].count;
        ck_assert_msg(check_rule(conn, states, n, cases[i].rule) == want, "%s selects %d",
                      cases[i].rule, want);
        crm_rule *r = parse_text(cases[i].rule, &err);
        bool a_in = crm_rule_eval(r, states[0], NOW_MS), b_in = crm_rule_eval(r, states[1], NOW_MS);
        crm_rule_free(r);
        ck_assert_msg(a_in == (cases[i].count != 3) && b_in == (cases[i].count >= 2),
                      "%s: a %d, b %d", cases[i].rule, a_in, b_in);
    }
    free_states(states, n);
    crm_db_release(conn);
}
END_TEST

/* The ids (ascending) that rule_text selects both ways, as "1,3,..." */
static void selected(crm_conn *conn, crm_rule_state **states, int n, const char *rule_text,
                     char *out, size_t size)
{
    check_rule(conn, states, n, rule_text);
    crm_error err = CRM_ERROR_INIT;
    crm_rule *r = parse_text(rule_text, &err);
    id_set ids = eval_ids(states, n, r);
    out[0] = '\0';
    size_t len = 0;
    for (int i = 0; i < ids.n && len < size; i++)
        len += (size_t)snprintf(out + len, size - len, "%s%lld", i ? "," : "", ids.ids[i]);
    free(ids.ids);
    crm_rule_free(r);
}

START_TEST(a_segment_node_holds_for_the_segments_members_now)
{
    long long a = insert_customer("Anna", "{}", "[\"vip\"]");
    long long b = insert_customer("Bob", "{}", "[]");
    long long c = insert_customer("Cleo", "{}", "[\"vip\"]");
    long long s1 = insert_segment("one"), s2 = insert_segment("two"), s3 = insert_segment("none");
    insert_membership(s1, a);
    insert_membership(s1, c);
    insert_membership(s2, b);
    insert_membership(s2, c);
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_msg(conn != NULL, "%s", err.detail);
    int n;
    crm_rule_state **states = load_states(conn, &n);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(states[2]->nsegments, 2);
    ck_assert(states[2]->segments[0] == s1 && states[2]->segments[1] == s2);
    struct {
        char rule[160];
        char expected[80];
    } cases[8];
    int k = 0;
    snprintf(cases[k].rule, sizeof cases[k].rule, "{\"segment\": %lld}", s1);
    snprintf(cases[k++].expected, sizeof cases[0].expected, "%lld,%lld", a, c);
    snprintf(cases[k].rule, sizeof cases[k].rule, "{\"not\": {\"segment\": %lld}}", s1);
    snprintf(cases[k++].expected, sizeof cases[0].expected, "%lld", b);
    snprintf(cases[k].rule, sizeof cases[k].rule,
             "{\"all\": [{\"segment\": %lld}, {\"segment\": %lld}]}", s1, s2);
    snprintf(cases[k++].expected, sizeof cases[0].expected, "%lld", c);
    snprintf(cases[k].rule, sizeof cases[k].rule,
             "{\"any\": [{\"segment\": %lld}, {\"segment\": %lld}]}", s3, s2);
    snprintf(cases[k++].expected, sizeof cases[0].expected, "%lld,%lld", b, c);
    snprintf(cases[k].rule, sizeof cases[k].rule, "{\"segment\": %lld}", s3);
    snprintf(cases[k++].expected, sizeof cases[0].expected, "%s", "");
    /* an id no segment has */
    snprintf(cases[k].rule, sizeof cases[k].rule, "{\"segment\": %lld}", s3 + 1000);
    snprintf(cases[k++].expected, sizeof cases[0].expected, "%s", "");
    snprintf(cases[k].rule, sizeof cases[k].rule,
             "{\"all\": [{\"segment\": %lld}, {\"field\": \"tags\", \"op\": \"contains\","
             " \"value\": \"vip\"}]}",
             s2);
    snprintf(cases[k++].expected, sizeof cases[0].expected, "%lld", c);
    for (int i = 0; i < k; i++) {
        char got[80];
        selected(conn, states, n, cases[i].rule, got, sizeof got);
        ck_assert_msg(strcmp(got, cases[i].expected) == 0, "%s selects [%s], expected [%s]",
                      cases[i].rule, got, cases[i].expected);
    }
    free_states(states, n);
    /* membership is read when the state is loaded: b joins s1 */
    insert_membership(s1, b);
    states = load_states(conn, &n);
    char got[80], expected[80];
    snprintf(cases[0].rule, sizeof cases[0].rule, "{\"segment\": %lld}", s1);
    selected(conn, states, n, cases[0].rule, got, sizeof got);
    snprintf(expected, sizeof expected, "%lld,%lld,%lld", a, b, c);
    ck_assert_str_eq(got, expected);
    free_states(states, n);
    crm_db_release(conn);
}
END_TEST

START_TEST(loading_an_unknown_customer_is_not_found)
{
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_msg(conn != NULL, "%s", err.detail);
    long long id = insert_customer("Ada", "{}", "[]");
    crm_rule_state *st = crm_rule_state_load(conn, id + 1, &err);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    st = crm_rule_state_load(conn, id, &err);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(crm_rule_state_customer(st), id);
    crm_rule_state_free(st);
    crm_db_release(conn);
}
END_TEST

/* ---- the property test ---------------------------------------------------------- */

typedef struct rng {
    unsigned long long s;
} rng;

static unsigned long long next(rng *g)
{
    g->s ^= g->s >> 12;
    g->s ^= g->s << 25;
    g->s ^= g->s >> 27;
    return g->s * 2685821657736338717ULL;
}

static int pick(rng *g, int n)
{
    return (int)(next(g) % (unsigned long long)n);
}

static bool chance(rng *g, int percent)
{
    return pick(g, 100) < percent;
}

#define PICK(g, pool) ((pool)[pick((g), (int)(sizeof(pool) / sizeof((pool)[0])))])

static const char *const names[] = {"Anna", "Annabel", "anna",    "Émile", "Zoë", "東京",
                                    "Bob",  "bob ",    "O'Brien", "",      NULL,  NULL};
static const char *const companies[] = {"ACME", "Acme Inc", "acme", "Ünited", NULL};
static const char *const emails[] = {"a@example.com", "A@Example.com", "b@x.org", NULL};
static const char *const phones[] = {"+39 02 1234", "555-0100", NULL};
static const char *const countries[] = {"IT", "FR", "DE", "US", NULL};
static const char *const country_values[] = {"IT", "FR", "DE", "US", "ES"};
static const char *const places[] = {"Milano", "Milan", "Paris", "Zürich", "", NULL};
static const char *const postal[] = {"20100", "20121", "75001", NULL};
static const char *const languages[] = {"it", "en", "pt-BR", NULL};
static const char *const stages[] = {"subscriber", "lead", "customer", "loyal", "churned", NULL};
static const char *const kinds[] = {"person", "company"};
static const char *const tag_pool[] = {"vip", "newsletter", "b2b", "é", "VIP"};
static const char *const text_values[] = {
    "Anna", "Ann",           "anna", "A",   "a",  "",      "é",  "Zoë", "Milan", "Mil", "acme",
    "ACME", "a@example.com", "@",    "555", "20", "20100", "it", "東",  "O'",    "bob", "554",
    "5",    "champions",     "top"};
static const char *const decimals[] = {
    "0", "1", "2", "3", "5", "10", "12.5", "12.50", "0.1", "0.3", "100", "-3.25", "99.999", "0.25",
    "0.6", "0.0000001", "45.4642", "4", "-1",
    /* apart from 0.1 and 1e20 only beyond a double's precision */
    "0.10000000000000001", "100000000000000000001"};
static const char *const number_values[] = {
    "0",     "1",       "2",      "3",    "5",
    "10",    "12.5",    "0.1",    "0.3",  "0.30000000000000004",
    "100",   "-3.25",   "99.999", "0.25", "0.6",
    "1e-07", "45.4642", "4",      "-1",   "1e20",
    "0.7"};
static const char *const doubles[] = {
    "0",       "1",        "0.25", "0.4",  "0.6", "0.75", "0.1", "0.30000000000000004",
    "45.4642", "-33.8688", "3",    "12.5", "0.7"};
static const char *const amounts[] = {
    "10.5", "-3", "0.001", "0.1", "0.2", "100", "12.50", "0.10000000000000001", NULL};
static const char *const tp_types[] = {"purchase",  "refund",         "email_opened",
                                       "page_view", "offer_rejected", "offer_accepted"};
static const char *const tp_channels[] = {"web", "email", "store"};
static const char *const campaigns[] = {"c1", "c2", NULL};
static const char *const offers[] = {"OFF-1", "OFF-2", NULL};
static const char *const skus[] = {"A", "B", "C"};
static const char *const channels[] = {"email", "sms"};
static const char *const purposes[] = {"marketing", "service"};
static const char *const consent_states[] = {"granted", "revoked", "none"};
static const char *const attr_keys[] = {"score",       "plan",      "active",  "nested.level",
                                        "nested.name", "interests", "missing", "nested"};

/* The segments of the property test, each with its share of members (in
 * percent), and one more id that no segment has. */
#define PROPERTY_SEGMENTS 4
static const int segment_shares[PROPERTY_SEGMENTS] = {10, 35, 60, 90};
static long long segment_ids[PROPERTY_SEGMENTS + 1];

/* An instant near now as RFC 3339 text to the microsecond: some whole
 * days before now, on the millisecond, or a microsecond or a millisecond
 * off it, or anywhere in that day. */
static void random_time(rng *g, char *out, size_t size)
{
    long long us = (NOW_MS - pick(g, 400) * DAY_MS) * 1000;
    switch (pick(g, 5)) {
    case 0:
        us += 1;
        break;
    case 1:
        us -= 1;
        break;
    case 2:
        us += 1000 * (long long)pick(g, 3) - 1000;
        break;
    case 3:
        us += (long long)(next(g) % (unsigned long long)(DAY_MS * 1000));
        break;
    default:
        break;
    }
    long long ms = us / 1000, rest = us % 1000;
    if (rest < 0) {
        rest += 1000;
        ms--;
    }
    char text[32];
    size_t n = crm_format_timestamp(ms, text);
    text[n - 1] = '\0'; /* the Z */
    snprintf(out, size, "%s%03lldZ", text, rest);
}

/* A date as days before now (the day of a days_ago), or another. */
static void random_date(rng *g, char *out, size_t size)
{
    char text[32];
    crm_format_timestamp(NOW_MS - pick(g, 30) * DAY_MS * 365 - pick(g, 3) * DAY_MS, text);
    snprintf(out, size, "%.10s", text);
}

/* A random attributes object, some keys of changing JSON types. */
static char *random_attributes(rng *g)
{
    json_t *a = json_object();
    double reals[] = {0, 1, 2.5, 10, -3, 0.1, 1e-07, 100, 1e20, 0.30000000000000004};
    if (chance(g, 70))
        json_object_set_new(a, "score",
                            chance(g, 70)   ? json_real(PICK(g, reals))
                            : chance(g, 50) ? json_string("10")
                                            : json_integer(pick(g, 12)));
    const char *plans[] = {"gold", "silver", "golden", "Gold"};
    if (chance(g, 70))
        json_object_set_new(a, "plan",
                            chance(g, 80) ? json_string(PICK(g, plans)) : json_integer(1));
    if (chance(g, 60))
        json_object_set_new(a, "active", chance(g, 80) ? json_boolean(chance(g, 50)) : json_null());
    if (chance(g, 50)) {
        json_t *nested = json_object();
        json_object_set_new(nested, "level", json_integer(pick(g, 5)));
        if (chance(g, 50))
            json_object_set_new(nested, "name", json_string(PICK(g, plans)));
        json_object_set_new(a, "nested", nested);
    } else if (chance(g, 30)) {
        json_object_set_new(a, "nested", json_string("flat"));
    }
    if (chance(g, 50)) {
        const char *interests[] = {"golf", "tennis", "golf club", "gold"};
        json_t *list = json_array();
        for (int i = pick(g, 4); i > 0; i--)
            json_array_append_new(list, json_string(PICK(g, interests)));
        json_object_set_new(a, "interests", list);
    }
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

static char *random_tags(rng *g)
{
    json_t *a = json_array();
    for (size_t i = 0; i < sizeof tag_pool / sizeof tag_pool[0]; i++)
        if (chance(g, 30))
            json_array_append_new(a, json_string(tag_pool[i]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

static long long random_customer(rng *g)
{
    char created[40], updated[40], birth[16], lat[32], lon[32];
    random_time(g, created, sizeof created);
    random_time(g, updated, sizeof updated);
    random_date(g, birth, sizeof birth);
    snprintf(lat, sizeof lat, "%s", PICK(g, doubles));
    snprintf(lon, sizeof lon, "%.17g", (double)pick(g, 360000) / 1000.0 - 180.0);
    char *attributes = random_attributes(g), *tags = random_tags(g);
    const char *params[] = {
        PICK(g, kinds),
        PICK(g, names),
        PICK(g, names),
        PICK(g, names),
        PICK(g, companies),
        PICK(g, emails),
        PICK(g, phones),
        PICK(g, countries),
        PICK(g, places),
        PICK(g, places),
        PICK(g, postal),
        PICK(g, places),
        chance(g, 70) ? lat : NULL,
        chance(g, 70) ? lon : NULL,
        chance(g, 70) ? birth : NULL,
        PICK(g, languages),
        PICK(g, stages),
        tags,
        attributes,
        created,
        updated,
    };
    long long id = unit_sql_long(
        db,
        "INSERT INTO customers (kind, first_name, last_name, display_name, company, email, phone,"
        " country, region, city, postal_code, street, latitude, longitude, birth_date,"
        " preferred_language, lifecycle_stage, tags, attributes, created_at, updated_at) VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,"
        " ARRAY(SELECT jsonb_array_elements_text($18::jsonb)), $19::jsonb, $20, $21) RETURNING id",
        21, params);
    free(attributes);
    free(tags);
    return id;
}

/* The customer_metrics columns that are numeric (the other exact ones are
 * integers). */
static bool numeric_column(const char *sql)
{
    return strcmp(sql, "m.historic_value") == 0 || strcmp(sql, "m.average_order_value") == 0 ||
           strcmp(sql, "m.monetary") == 0 || strcmp(sql, "m.repeat_mean_value") == 0;
}

static bool required_column(const char *sql)
{
    const char *required[] = {"m.as_of",   "m.computed_at",    "m.purchases", "m.refunds",
                              "m.unrated", "m.historic_value", "m.frequency", "m.monetary"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (strcmp(sql, required[i]) == 0)
            return true;
    return false;
}

/* A customer_metrics row for id with random values of each column's type. */
static void random_metrics(rng *g, long long id)
{
    char sql[4096] = "INSERT INTO customer_metrics (customer_id", values[1024] = ") VALUES ($1";
    const char *params[RULE_N_METRICS_FIELDS + 1];
    char texts[RULE_N_METRICS_FIELDS + 1][48];
    snprintf(texts[0], sizeof texts[0], "%lld", id);
    params[0] = texts[0];
    int n = 1;
    for (int i = 0; i < RULE_N_METRICS_FIELDS; i++) {
        const rule_field *f = &rule_metrics_fields[i];
        if (strncmp(f->sql, "m.", 2) != 0) /* churn_risk: derived */
            continue;
        strcat(sql, ", ");
        strcat(sql, f->sql + 2);
        char *t = texts[n];
        size_t size = sizeof texts[n];
        if (f->type == RT_TIME)
            random_time(g, t, size);
        else if (f->type == RT_FLOAT)
            snprintf(t, size, "%s", chance(g, 80) ? PICK(g, doubles) : "NaN");
        else if (f->type == RT_EXACT && numeric_column(f->sql))
            snprintf(t, size, "%s", PICK(g, decimals));
        else if (f->type == RT_EXACT && strstr(f->sql, "_score") != NULL)
            snprintf(t, size, "%d", 1 + pick(g, 5));
        else if (f->type == RT_EXACT)
            snprintf(t, size, "%d", pick(g, 12));
        else if (f->type == RT_ENUM)
            snprintf(t, size, "%s", rule_metric_stages[pick(g, 6)]);
        else
            snprintf(t, size, "%s", chance(g, 50) ? "554" : chance(g, 50) ? "champions" : "top");
        params[n] = required_column(f->sql) || chance(g, 80) ? t : NULL;
        char placeholder[16];
        snprintf(placeholder, sizeof placeholder, ", $%d", ++n);
        strcat(values, placeholder);
    }
    strcat(sql, values);
    strcat(sql, ")");
    PQclear(unit_sql(db, sql, n, params));
}

static void random_consents(rng *g, long long id)
{
    const char *times[] = {"2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z"};
    for (int i = pick(g, 5); i > 0; i--)
        insert_consent(id, PICK(g, channels), PICK(g, purposes),
                       chance(g, 50) ? "granted" : "revoked", PICK(g, times));
}

static void random_touchpoints(rng *g, long long id)
{
    for (int i = pick(g, 11); i > 0; i--) {
        char when[40];
        random_time(g, when, sizeof when);
        json_t *items = NULL;
        if (chance(g, 50)) {
            items = json_array();
            for (size_t k = 0; k < 3; k++)
                if (chance(g, 50))
                    json_array_append_new(items,
                                          json_pack("{s:s, s:i}", "sku", skus[k], "quantity", 1));
        }
        char *items_text = items ? json_dumps(items, JSON_COMPACT) : NULL;
        insert_offer_touchpoint(id, PICK(g, tp_types), PICK(g, tp_channels), when,
                                PICK(g, campaigns), PICK(g, offers), PICK(g, amounts), items_text);
        free(items_text);
        json_decref(items);
    }
}

static void random_memberships(rng *g, long long id)
{
    for (int i = 0; i < PROPERTY_SEGMENTS; i++)
        if (chance(g, segment_shares[i]))
            insert_membership(segment_ids[i], id);
}

/* ---- random rules ---- */

static json_t *number_json(rng *g)
{
    const char *text = PICK(g, number_values);
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v;
}

static json_t *time_json(rng *g, bool date)
{
    if (chance(g, 50))
        return json_pack("{s:i}", "days_ago", pick(g, 400));
    char text[40];
    if (date) {
        random_date(g, text, sizeof text);
        return json_string(text);
    }
    long long ms = NOW_MS - pick(g, 400) * DAY_MS + (chance(g, 30) ? pick(g, 3) - 1 : 0);
    crm_format_timestamp(ms, text);
    return json_string(text);
}

/* A value of type t for a field named name. */
static json_t *value_json(rng *g, rule_type t, const char *name)
{
    switch (t) {
    case RT_EXACT:
    case RT_FLOAT:
        return number_json(g);
    case RT_TIME:
        return time_json(g, false);
    case RT_DATE:
        return time_json(g, true);
    case RT_TAGS:
        return json_string(PICK(g, tag_pool));
    case RT_CONSENT:
        return json_string(PICK(g, consent_states));
    case RT_BOOL:
        return json_boolean(chance(g, 50));
    case RT_ENUM:
        if (strcmp(name, "kind") == 0)
            return json_string(PICK(g, kinds));
        if (strcmp(name, "address.country") == 0)
            return json_string(PICK(g, country_values));
        if (strcmp(name, "lifecycle_stage") == 0)
            return json_string(stages[pick(g, 5)]);
        return json_string(rule_metric_stages[pick(g, 6)]);
    default:
        return json_string(PICK(g, text_values));
    }
}

/* The operators a type takes (segments.h). */
static const char *random_op(rng *g, rule_type t)
{
    static const char *const text_ops[] = {"eq", "ne", "in", "contains", "starts_with", "exists"};
    static const char *const enum_ops[] = {"eq", "ne", "in", "exists"};
    static const char *const number_ops[] = {"eq",  "ne",      "lt", "lte",   "gt",
                                             "gte", "between", "in", "exists"};
    static const char *const time_ops[] = {"eq", "ne",  "lt",      "lte",
                                           "gt", "gte", "between", "exists"};
    static const char *const tag_ops[] = {"contains", "in", "exists"};
    static const char *const consent_ops[] = {"eq", "ne", "in"};
    static const char *const bool_ops[] = {"eq", "ne"};
    switch (t) {
    case RT_TEXT:
        return PICK(g, text_ops);
    case RT_ENUM:
        return PICK(g, enum_ops);
    case RT_EXACT:
    case RT_FLOAT:
        return PICK(g, number_ops);
    case RT_TIME:
    case RT_DATE:
        return PICK(g, time_ops);
    case RT_TAGS:
        return PICK(g, tag_ops);
    case RT_CONSENT:
        return PICK(g, consent_ops);
    case RT_BOOL:
        return PICK(g, bool_ops);
    default:
        return "exists";
    }
}

/* Sets op and value of a comparison of type t. */
static void set_op_value(rng *g, json_t *node, rule_type t, const char *name, const char *op)
{
    json_object_set_new(node, "op", json_string(op));
    if (strcmp(op, "exists") == 0)
        return;
    if (strcmp(op, "in") == 0) {
        json_t *list = json_array();
        for (int i = 1 + pick(g, 4); i > 0; i--)
            json_array_append_new(list, value_json(g, t, name));
        json_object_set_new(node, "value", list);
    } else if (strcmp(op, "between") == 0) {
        json_object_set_new(node, "value",
                            json_pack("[o, o]", value_json(g, t, name), value_json(g, t, name)));
    } else {
        json_object_set_new(node, "value", value_json(g, t, name));
    }
}

static json_t *random_field_leaf(rng *g)
{
    const rule_field *f;
    if (chance(g, 60)) {
        f = &rule_customer_fields[pick(g, RULE_N_CUSTOMER_FIELDS)];
    } else {
        f = &rule_metrics_fields[pick(g, RULE_N_METRICS_FIELDS)];
    }
    json_t *node = json_pack("{s:s}", "field", f->name);
    set_op_value(g, node, f->type, f->name, random_op(g, f->type));
    return node;
}

static json_t *random_attribute_leaf(rng *g)
{
    char field[64];
    snprintf(field, sizeof field, "attributes.%s", PICK(g, attr_keys));
    json_t *node = json_pack("{s:s}", "field", field);
    rule_type types[] = {RT_TEXT, RT_FLOAT, RT_BOOL, RT_ATTR};
    rule_type t = PICK(g, types);
    const char *op = random_op(g, t);
    if (t == RT_TEXT && strcmp(op, "exists") == 0)
        op = "eq";
    set_op_value(g, node, t, field, op);
    return node;
}

static json_t *random_consent_leaf(rng *g)
{
    char field[64];
    snprintf(field, sizeof field, "consent.%s.%s", PICK(g, channels), PICK(g, purposes));
    json_t *node = json_pack("{s:s}", "field", field);
    set_op_value(g, node, RT_CONSENT, field, random_op(g, RT_CONSENT));
    return node;
}

static json_t *random_aggregate_leaf(rng *g)
{
    json_t *filter = json_object();
    if (chance(g, 50))
        json_object_set_new(filter, "type", json_string(PICK(g, tp_types)));
    if (chance(g, 30))
        json_object_set_new(filter, "channel", json_string(PICK(g, tp_channels)));
    if (chance(g, 20))
        json_object_set_new(filter, "campaign_id", json_string(chance(g, 50) ? "c1" : "c2"));
    if (chance(g, 25))
        json_object_set_new(filter, "offer_code", json_string(chance(g, 50) ? "OFF-1" : "OFF-2"));
    if (chance(g, 25))
        json_object_set_new(filter, "sku", json_string(PICK(g, skus)));
    int window = pick(g, 4);
    if (window == 1) {
        json_object_set_new(filter, "within_days", json_integer(1 + pick(g, 400)));
    } else if (window >= 2) {
        long long since = NOW_MS - (200 + pick(g, 200)) * DAY_MS;
        char text[32];
        crm_format_timestamp(since, text);
        json_object_set_new(filter, "since", json_string(text));
        if (window == 3) {
            crm_format_timestamp(since + (1 + pick(g, 300)) * DAY_MS, text);
            json_object_set_new(filter, "until", json_string(text));
        }
    }
    const char *aggs[] = {"count", "sum", "last"};
    const char *agg = PICK(g, aggs);
    json_t *node = json_pack("{s:o, s:s}", "touchpoints", filter, "agg", agg);
    if (strcmp(agg, "last") == 0) {
        set_op_value(g, node, RT_TIME, "last", random_op(g, RT_TIME));
    } else {
        const char *op = random_op(g, RT_EXACT);
        if (strcmp(op, "exists") == 0)
            op = "lte";
        json_object_set_new(node, "op", json_string(op));
        /* counts: small integers; sums: the amounts' neighbourhood */
        const char *counts[] = {"0", "1", "2", "3", "5"};
        const char *sums[] = {"0", "0.3", "10.5", "7.5", "100", "-3", "0.1", "110.6"};
        const char *const *pool = strcmp(agg, "count") == 0 ? counts : sums;
        int size = strcmp(agg, "count") == 0 ? 5 : 8;
        if (strcmp(op, "in") == 0 || strcmp(op, "between") == 0) {
            json_t *list = json_array();
            for (int i = strcmp(op, "between") == 0 ? 2 : 1 + pick(g, 3); i > 0; i--)
                json_array_append_new(list, json_loads(pool[pick(g, size)], JSON_DECODE_ANY, NULL));
            json_object_set_new(node, "value", list);
        } else {
            json_object_set_new(node, "value",
                                json_loads(pool[pick(g, size)], JSON_DECODE_ANY, NULL));
        }
    }
    return node;
}

static json_t *random_segment_leaf(rng *g)
{
    return json_pack("{s:I}", "segment", (json_int_t)PICK(g, segment_ids));
}

static json_t *random_rule(rng *g, int depth)
{
    int k = depth >= 3 ? 3 + pick(g, 7) : pick(g, 10);
    if (k <= 1) {
        json_t *children = json_array();
        for (int i = pick(g, 4); i > 0; i--)
            json_array_append_new(children, random_rule(g, depth + 1));
        return json_pack("{s:o}", k == 0 ? "all" : "any", children);
    }
    if (k == 2)
        return json_pack("{s:o}", "not", random_rule(g, depth + 1));
    int leaf = pick(g, 100);
    if (leaf < 40)
        return random_field_leaf(g);
    if (leaf < 55)
        return random_attribute_leaf(g);
    if (leaf < 65)
        return random_consent_leaf(g);
    if (leaf < 92)
        return random_aggregate_leaf(g);
    return random_segment_leaf(g);
}

#define PROPERTY_CUSTOMERS 400
#define PROPERTY_RULES 5000

START_TEST(sql_and_evaluator_select_the_same_customers_on_random_data)
{
    rng g = {0x9e3779b97f4a7c15ULL};
    PQclear(unit_sql(db, "BEGIN", 0, NULL));
    for (int i = 0; i < PROPERTY_SEGMENTS; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        segment_ids[i] = insert_segment(name);
    }
    segment_ids[PROPERTY_SEGMENTS] = segment_ids[PROPERTY_SEGMENTS - 1] + 1000;
    for (int i = 0; i < PROPERTY_CUSTOMERS; i++) {
        long long id = random_customer(&g);
        if (chance(&g, 75))
            random_metrics(&g, id);
        random_consents(&g, id);
        random_touchpoints(&g, id);
        random_memberships(&g, id);
    }
    PQclear(unit_sql(db, "COMMIT", 0, NULL));
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_msg(conn != NULL, "%s", err.detail);
    int n;
    crm_rule_state **states = load_states(conn, &n);
    ck_assert_int_eq(n, PROPERTY_CUSTOMERS);
    int some = 0, none = 0, all = 0;
    for (int i = 0; i < PROPERTY_RULES; i++) {
        json_t *rule = random_rule(&g, 1);
        char *text = json_dumps(rule, JSON_COMPACT);
        json_decref(rule);
        int count = check_rule(conn, states, n, text);
        free(text);
        some += count > 0 && count < n;
        none += count == 0;
        all += count == n;
    }
    /* The rules must split the base often, or agreeing would prove little. */
    ck_assert_msg(some > PROPERTY_RULES / 3, "only %d of %d rules split the base (%d none, %d all)",
                  some, PROPERTY_RULES, none, all);
    free_states(states, n);
    crm_db_release(conn);
}
END_TEST

Suite *segment_rules_suite(void)
{
    Suite *s = suite_create("segment_rules");
    TCase *parse = tcase_create("parse");
    tcase_add_test(parse, the_issue_example_parses_into_its_nodes);
    tcase_add_test(parse, each_kind_of_field_and_value_is_accepted);
    tcase_add_test(parse, an_unknown_operator_is_named_by_its_pointer);
    tcase_add_test(parse, an_order_on_a_text_field_is_a_type_mismatch);
    tcase_add_test(parse, a_string_for_a_number_field_is_refused_at_the_value);
    tcase_add_test(parse, unknown_fields_members_and_enum_values_are_refused);
    tcase_add_test(parse, values_must_match_what_the_op_takes);
    tcase_add_test(parse, a_touchpoint_window_must_have_a_positive_length);
    tcase_add_test(parse, an_offer_code_filter_is_a_string_of_one_to_a_hundred_characters);
    tcase_add_test(parse, depth_is_limited_to_eight_levels);
    tcase_add_test(parse, a_rule_has_at_most_two_hundred_nodes);
    tcase_add_test(parse, lists_and_strings_have_limits);
    tcase_add_test(parse, every_problem_is_reported_with_its_own_pointer);
    tcase_add_test(parse, a_segment_node_names_a_positive_integer_id);
    tcase_add_test(parse, a_segment_node_takes_no_other_member);
    tcase_add_test(parse, segment_nodes_count_towards_the_limits);
    tcase_add_test(parse, a_rule_reads_what_its_nodes_name);
    tcase_add_test(parse, segment_refs_are_each_id_once_in_order_with_the_first_pointer);
    tcase_add_test(parse, every_distinct_segment_of_a_full_rule_is_named);
    tcase_add_test(parse, a_rule_has_time_when_a_value_or_a_window_is_relative);
    tcase_add_test(parse, compiled_sql_carries_values_only_as_parameters);
    tcase_add_test(parse, a_segment_id_goes_to_sql_as_a_parameter);
    tcase_add_test(parse, decimals_compare_exactly_in_numeric_order);
    tcase_add_test(parse, decimal_sums_are_exact);
    tcase_add_test(parse, doubles_order_nan_above_everything_as_postgresql_does);
    suite_add_tcase(s, parse);
    TCase *agree = tcase_create("agreement");
    tcase_add_checked_fixture(agree, fresh_database, drop_database);
    tcase_set_timeout(agree, 120);
    tcase_add_test(agree, loading_an_unknown_customer_is_not_found);
    tcase_add_test(agree, hand_worked_cases_give_the_same_customers_both_ways);
    tcase_add_test(agree, a_segment_node_holds_for_the_segments_members_now);
    tcase_add_test(agree, sql_and_evaluator_select_the_same_customers_on_random_data);
    suite_add_tcase(s, agree);
    return s;
}

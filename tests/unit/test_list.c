/*
 * test_list.c — lib/list/: the SQL builder and the cursor codec, without a
 * database (the cursor secret is set directly).
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "list/cursor.h"
#include "list/page.h"
#include "list/sqlbuf.h"
#include "suites.h"

/* ---- the builder ------------------------------------------------------------ */

START_TEST(the_builder_numbers_placeholders_and_keeps_fragments_as_text)
{
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_sqlbuf_append(&s, "SELECT 1 WHERE a LIKE '%d%s%n' AND b = ");
    ck_assert_int_eq(crm_sqlbuf_bind(&s, "x"), 1);
    crm_sqlbuf_append(&s, " AND c = ");
    ck_assert_int_eq(crm_sqlbuf_bind(&s, NULL), 2);
    int reused = crm_sqlbuf_param(&s, "y");
    ck_assert_int_eq(reused, 3);
    crm_sqlbuf_append(&s, " AND d = ");
    crm_sqlbuf_placeholder(&s, reused);
    crm_sqlbuf_append(&s, " OR e = ");
    crm_sqlbuf_placeholder(&s, reused);
    ck_assert(crm_sqlbuf_ok(&s));
    ck_assert_str_eq(crm_sqlbuf_text(&s),
                     "SELECT 1 WHERE a LIKE '%d%s%n' AND b = $1 AND c = $2 AND d = $3 OR e = $3");
    ck_assert_int_eq(s.nparams, 3);
    ck_assert_str_eq(s.params[0], "x");
    ck_assert_ptr_null(s.params[1]);
    crm_sqlbuf_free(&s);
    ck_assert_str_eq(crm_sqlbuf_text(&s), "");
}
END_TEST

START_TEST(the_builder_grows_past_any_fixed_size)
{
    /* What overflowed text[4096] and params[16]: thousands of each. */
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_sqlbuf_append(&s, "SELECT 1 WHERE true");
    for (int i = 1; i <= 5000; i++) {
        crm_sqlbuf_append(&s, " AND x = ");
        ck_assert_int_eq(crm_sqlbuf_bind(&s, "v"), i);
    }
    ck_assert(crm_sqlbuf_ok(&s));
    ck_assert_int_eq(s.nparams, 5000);
    ck_assert_ptr_nonnull(strstr(crm_sqlbuf_text(&s), " AND x = $5000"));
    ck_assert_uint_eq(strlen(crm_sqlbuf_text(&s)), s.len);
    crm_sqlbuf_free(&s);
}
END_TEST

START_TEST(the_builder_reports_misuse_and_limits_instead_of_aborting)
{
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_sqlbuf_placeholder(&s, 1); /* a number it never gave */
    ck_assert(!crm_sqlbuf_ok(&s));
    ck_assert_int_eq(crm_sqlbuf_bind(&s, "v"), 0); /* and it stays failed */
    crm_sqlbuf_free(&s);

    crm_sqlbuf_init(&s);
    crm_sqlbuf_append(&s, NULL);
    ck_assert(!crm_sqlbuf_ok(&s));
    crm_sqlbuf_free(&s);

    crm_sqlbuf_init(&s);
    char *big = malloc(CRM_SQLBUF_MAX_TEXT / 2 + 1);
    memset(big, 'x', CRM_SQLBUF_MAX_TEXT / 2);
    big[CRM_SQLBUF_MAX_TEXT / 2] = '\0';
    crm_sqlbuf_append(&s, big);
    ck_assert(crm_sqlbuf_ok(&s));
    crm_sqlbuf_append(&s, big);
    crm_sqlbuf_append(&s, big);
    ck_assert(!crm_sqlbuf_ok(&s));
    free(big);
    crm_sqlbuf_free(&s);

    crm_sqlbuf_init(&s);
    for (int i = 0; i < CRM_SQLBUF_MAX_PARAMS; i++)
        crm_sqlbuf_param(&s, "v");
    ck_assert(crm_sqlbuf_ok(&s));
    ck_assert_int_eq(crm_sqlbuf_param(&s, "v"), 0);
    ck_assert(!crm_sqlbuf_ok(&s));
    crm_sqlbuf_free(&s);
}
END_TEST

/* ---- the cursor ------------------------------------------------------------- */

static void set_key(unsigned char fill)
{
    unsigned char key[CRM_CURSOR_SECRET_BYTES];
    memset(key, fill, sizeof key);
    crm_cursor_secret_set(key);
}

static char *encode(const crm_cursor *c)
{
    crm_error err = CRM_ERROR_INIT;
    char *text = crm_cursor_encode(c, &err);
    ck_assert_msg(text != NULL, "%s", err.detail);
    return text;
}

START_TEST(a_cursor_round_trips_its_fields_exactly)
{
    set_key(7);
    crm_cursor c, out;
    crm_cursor_init(&c, CRM_CURSOR_SYNC, 1);
    crm_cursor_add_int(&c, LLONG_MAX);
    crm_cursor_add_int(&c, LLONG_MIN);
    crm_cursor_add_int(&c, -1);
    char *text = encode(&c);
    ck_assert(crm_cursor_decode(text, CRM_CURSOR_SYNC, 1, 3, false, &out));
    ck_assert_int_eq(out.ints[0], LLONG_MAX);
    ck_assert_int_eq(out.ints[1], LLONG_MIN);
    ck_assert_int_eq(out.ints[2], -1);
    free(text);

    crm_cursor_init(&c, CRM_CURSOR_CUSTOMERS, 4);
    ck_assert(crm_cursor_set_text(&c, "o'brien % ünï", strlen("o'brien % ünï")));
    crm_cursor_add_int(&c, 42);
    text = encode(&c);
    ck_assert(crm_cursor_decode(text, CRM_CURSOR_CUSTOMERS, 4, 1, true, &out));
    ck_assert_str_eq(out.text, "o'brien % ünï");
    ck_assert_int_eq(out.ints[0], 42);
    free(text);
}
END_TEST

START_TEST(a_cursor_of_another_list_order_or_shape_is_refused)
{
    set_key(7);
    crm_cursor c, out;
    crm_cursor_init(&c, CRM_CURSOR_CUSTOMERS, 0);
    crm_cursor_add_int(&c, 1);
    crm_cursor_add_int(&c, 2);
    char *text = encode(&c);
    ck_assert(crm_cursor_decode(text, CRM_CURSOR_CUSTOMERS, 0, 2, false, &out));
    ck_assert(!crm_cursor_decode(text, CRM_CURSOR_TIMELINE, 0, 2, false, &out));
    ck_assert(!crm_cursor_decode(text, CRM_CURSOR_CUSTOMERS, 1, 2, false, &out));
    ck_assert(!crm_cursor_decode(text, CRM_CURSOR_CUSTOMERS, 0, 1, false, &out));
    ck_assert(!crm_cursor_decode(text, CRM_CURSOR_CUSTOMERS, 0, 2, true, &out));
    free(text);
}
END_TEST

START_TEST(a_forged_or_tampered_cursor_is_refused)
{
    set_key(7);
    crm_cursor c, out;
    crm_cursor_init(&c, CRM_CURSOR_TIMELINE, 0);
    crm_cursor_add_int(&c, 1764547200000000LL);
    crm_cursor_add_int(&c, 5);
    char *text = encode(&c);
    /* every single-character change of the text */
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; text[i] != '\0'; i++) {
        char saved = text[i];
        text[i] = alphabet[(strchr(alphabet, saved) - alphabet + 1) % 64];
        ck_assert_msg(!crm_cursor_decode(text, CRM_CURSOR_TIMELINE, 0, 2, false, &out),
                      "changed at %zu", i);
        text[i] = saved;
    }
    ck_assert(crm_cursor_decode(text, CRM_CURSOR_TIMELINE, 0, 2, false, &out));
    /* another deployment's secret */
    set_key(8);
    ck_assert(!crm_cursor_decode(text, CRM_CURSOR_TIMELINE, 0, 2, false, &out));
    set_key(7);
    free(text);
    /* the unsigned formats of old, and garbage */
    const char *forged[] = {"WyJjcmVhdGVkX2F0IiwgLTMwMDAwMDAwMDAwMDAwMDAwMCwgNV0", "azU",
                            "", "!!!!", "A", "AAAA", "WzEsMl0"};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        ck_assert(!crm_cursor_decode(forged[i], CRM_CURSOR_TIMELINE, 0, 2, false, &out));
    ck_assert(!crm_cursor_decode(NULL, CRM_CURSOR_TIMELINE, 0, 2, false, &out));
    char *huge = malloc(100000);
    memset(huge, 'A', 99999);
    huge[99999] = '\0';
    ck_assert(!crm_cursor_decode(huge, CRM_CURSOR_TIMELINE, 0, 2, false, &out));
    free(huge);
}
END_TEST

START_TEST(cursor_fields_are_bounded)
{
    crm_cursor c;
    crm_cursor_init(&c, CRM_CURSOR_SYNC, 0);
    for (int i = 0; i < CRM_CURSOR_MAX_INTS; i++)
        ck_assert(crm_cursor_add_int(&c, i));
    ck_assert(!crm_cursor_add_int(&c, 9));
    char text[CRM_CURSOR_MAX_TEXT + 2];
    memset(text, 'a', sizeof text);
    ck_assert(!crm_cursor_set_text(&c, text, CRM_CURSOR_MAX_TEXT + 1));
    ck_assert(crm_cursor_set_text(&c, text, CRM_CURSOR_MAX_TEXT));
    ck_assert(!crm_cursor_set_text(&c, "a\0b", 3)); /* a NUL cannot travel as text */
    set_key(7);
    char *out = encode(&c); /* the largest cursor fits the decoder's bound */
    ck_assert_uint_le(strlen(out), CRM_CURSOR_MAX_CHARS);
    crm_cursor back;
    ck_assert(crm_cursor_decode(out, CRM_CURSOR_SYNC, 0, CRM_CURSOR_MAX_INTS, true, &back));
    ck_assert_uint_eq(back.text_len, CRM_CURSOR_MAX_TEXT);
    free(out);
}
END_TEST

START_TEST(timestamp_keys_are_range_checked_and_formatted_exactly)
{
    ck_assert(!crm_cursor_us_valid(-300000000000000000LL)); /* the S2 reproduction */
    ck_assert(!crm_cursor_us_valid(CRM_CURSOR_US_MIN - 1));
    ck_assert(crm_cursor_us_valid(CRM_CURSOR_US_MIN));
    ck_assert(crm_cursor_us_valid(CRM_CURSOR_US_MAX - 1));
    ck_assert(!crm_cursor_us_valid(CRM_CURSOR_US_MAX));
    ck_assert(!crm_cursor_us_valid(LLONG_MAX));
    ck_assert(!crm_cursor_us_valid(LLONG_MIN));
    struct {
        long long us;
        const char *text;
    } cases[] = {
        {0, "1970-01-01 00:00:00.000000+00"},
        {-1, "1969-12-31 23:59:59.999999+00"},
        {1764547200000001LL, "2025-12-01 00:00:00.000001+00"},
        {CRM_CURSOR_US_MIN, "0001-01-01 00:00:00.000000+00"},
        {CRM_CURSOR_US_MAX - 1, "10000-12-31 23:59:59.999999+00"},
        {951782400000000LL, "2000-02-29 00:00:00.000000+00"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[48];
        crm_cursor_format_us(cases[i].us, out);
        ck_assert_str_eq(out, cases[i].text);
        long long back;
        ck_assert(crm_parse_pg_timestamp(out, &back));
        ck_assert_int_eq(back, cases[i].us);
    }
}
END_TEST

/* ---- pages ---------------------------------------------------------------- */

START_TEST(declared_filters_add_a_condition_for_each_value_present)
{
    static const crm_list_filter defs[] = {
        {"a", "x.a = ", ""}, {"b", "x.b @> ARRAY[", "::text]"}, {"c", "x.c > ", "::timestamptz"}};
    const char *values[] = {"1", NULL, "2026-01-01T00:00:00Z"};
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_sqlbuf_append(&s, "WHERE true");
    crm_list_add_filters(&s, defs, 3, values);
    ck_assert_str_eq(crm_sqlbuf_text(&s), "WHERE true AND x.a = $1 AND x.c > $2::timestamptz");
    ck_assert_int_eq(s.nparams, 2);
    ck_assert_str_eq(s.params[1], "2026-01-01T00:00:00Z");
    crm_sqlbuf_free(&s);
}
END_TEST

START_TEST(a_page_fetches_one_more_row_than_it_shows)
{
    ck_assert_int_eq(crm_page_fetch(10), 11);
    ck_assert_int_eq(crm_page_fetch(0), 2); /* a limit is at least 1 */
    ck_assert_int_eq(crm_page_shown(11, 10), 10);
    ck_assert(crm_page_has_next(11, 10));
    ck_assert_int_eq(crm_page_shown(10, 10), 10);
    ck_assert(!crm_page_has_next(10, 10));
    ck_assert_int_eq(crm_page_shown(0, 10), 0);
    set_key(7);
    crm_cursor next;
    crm_cursor_init(&next, CRM_CURSOR_BY_ID, 0);
    crm_cursor_add_int(&next, 9);
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_page_begin(&b);
    crm_jbuf_int(&b, 1);
    crm_page_end(&b, &next);
    char *text = crm_jbuf_take(&b, NULL);
    json_t *doc = json_loads(text, 0, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "data")), 1);
    crm_cursor back;
    ck_assert(crm_cursor_decode(json_string_value(json_object_get(doc, "next_cursor")),
                                CRM_CURSOR_BY_ID, 0, 1, false, &back));
    ck_assert_int_eq(back.ints[0], 9);
    json_decref(doc);
    free(text);
    crm_jbuf_init(&b);
    crm_page_begin(&b);
    crm_page_end(&b, NULL);
    text = crm_jbuf_take(&b, NULL);
    ck_assert_str_eq(text, "{\"data\":[],\"next_cursor\":null}");
    free(text);
}
END_TEST

Suite *list_suite(void)
{
    Suite *s = suite_create("list");
    TCase *b = tcase_create("sqlbuf");
    tcase_add_test(b, the_builder_numbers_placeholders_and_keeps_fragments_as_text);
    tcase_add_test(b, the_builder_grows_past_any_fixed_size);
    tcase_add_test(b, the_builder_reports_misuse_and_limits_instead_of_aborting);
    suite_add_tcase(s, b);
    TCase *c = tcase_create("cursor");
    tcase_add_test(c, a_cursor_round_trips_its_fields_exactly);
    tcase_add_test(c, a_cursor_of_another_list_order_or_shape_is_refused);
    tcase_add_test(c, a_forged_or_tampered_cursor_is_refused);
    tcase_add_test(c, cursor_fields_are_bounded);
    tcase_add_test(c, timestamp_keys_are_range_checked_and_formatted_exactly);
    suite_add_tcase(s, c);
    TCase *p = tcase_create("page");
    tcase_add_test(p, declared_filters_add_a_condition_for_each_value_present);
    tcase_add_test(p, a_page_fetches_one_more_row_than_it_shows);
    suite_add_tcase(s, p);
    return s;
}

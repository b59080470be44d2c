/*
 * test_copytext.c — lib/copytext.h: columns, rows, NULL and the escapes of
 * COPY's text format. (That PostgreSQL reads them back byte for byte is
 * checked in test_touchpoints.c, through a batch.)
 */
#include <check.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "copytext.h"
#include "suites.h"

/* What b holds, checked against want and freed. */
static void expect(crm_copybuf *b, const char *want, size_t want_len)
{
    size_t len = 0;
    char *got = crm_copy_take(b, &len);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(len, want_len);
    ck_assert_mem_eq(got, want, want_len);
    ck_assert_int_eq(got[len], '\0');
    free(got);
}

START_TEST(columns_are_separated_by_tabs_and_rows_end_with_a_newline)
{
    crm_copybuf b;
    crm_copy_init(&b);
    crm_copy_int(&b, 42);
    crm_copy_cstring(&b, "plain");
    crm_copy_cstring(&b, NULL);
    crm_copy_cstring(&b, "");
    crm_copy_end_row(&b);
    crm_copy_cstring(&b, "second");
    crm_copy_end_row(&b);
    static const char want[] = "42\tplain\t\\N\t\nsecond\n";
    expect(&b, want, sizeof want - 1);
}
END_TEST

START_TEST(backslash_tab_newline_and_return_are_escaped)
{
    crm_copybuf b;
    crm_copy_init(&b);
    crm_copy_cstring(&b, "a\\b\tc\nd\re");
    crm_copy_cstring(&b, "\\N"); /* the text, not NULL */
    crm_copy_cstring(&b, "\\."); /* not the end-of-data marker */
    crm_copy_end_row(&b);
    static const char want[] = "a\\\\b\\tc\\nd\\re\t\\\\N\t\\\\.\n";
    expect(&b, want, sizeof want - 1);
}
END_TEST

START_TEST(other_bytes_are_copied_as_they_are)
{
    crm_copybuf b;
    crm_copy_init(&b);
    static const char odd[] = "\x01\x1f\x7f \xc3\xa9 \xf0\x9f\x98\x80 \"quoted\" ,;|";
    crm_copy_text(&b, odd, sizeof odd - 1);
    crm_copy_text(&b, "abc", 2); /* a length shorter than the string */
    crm_copy_end_row(&b);
    char want[64];
    size_t n = 0;
    memcpy(want, odd, sizeof odd - 1);
    n += sizeof odd - 1;
    memcpy(want + n, "\tab\n", 4);
    n += 4;
    expect(&b, want, n);
}
END_TEST

START_TEST(integers_print_their_whole_range)
{
    crm_copybuf b;
    crm_copy_init(&b);
    crm_copy_int(&b, LLONG_MIN);
    crm_copy_int(&b, LLONG_MAX);
    crm_copy_int(&b, 0);
    crm_copy_int(&b, -7);
    crm_copy_end_row(&b);
    static const char want[] = "-9223372036854775808\t9223372036854775807\t0\t-7\n";
    expect(&b, want, sizeof want - 1);
}
END_TEST

START_TEST(a_long_value_grows_the_buffer)
{
    size_t n = 100000;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (i % 10 == 9) ? '\t' : 'x';
    crm_copybuf b;
    crm_copy_init(&b);
    crm_copy_text(&b, big, n);
    crm_copy_end_row(&b);
    size_t len;
    char *got = crm_copy_take(&b, &len);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(len, n + n / 10 + 1); /* each tab became two bytes; the newline */
    ck_assert_mem_eq(got, "xxxxxxxxx\\txxxx", 15);
    ck_assert_int_eq(got[len - 1], '\n');
    free(got);
    free(big);
}
END_TEST

START_TEST(nothing_written_takes_nothing)
{
    crm_copybuf b;
    crm_copy_init(&b);
    ck_assert_ptr_null(crm_copy_take(&b, NULL));
    crm_copy_cstring(&b, "dropped");
    crm_copy_free(&b);
    ck_assert_ptr_null(b.out.data);
    ck_assert_uint_eq(b.out.len, 0);
}
END_TEST

Suite *copytext_suite(void)
{
    Suite *s = suite_create("copytext");
    TCase *tc = tcase_create("rows");
    tcase_add_test(tc, columns_are_separated_by_tabs_and_rows_end_with_a_newline);
    tcase_add_test(tc, backslash_tab_newline_and_return_are_escaped);
    tcase_add_test(tc, other_bytes_are_copied_as_they_are);
    tcase_add_test(tc, integers_print_their_whole_range);
    tcase_add_test(tc, a_long_value_grows_the_buffer);
    tcase_add_test(tc, nothing_written_takes_nothing);
    suite_add_tcase(s, tc);
    return s;
}

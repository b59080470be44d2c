/*
 * test_csv.c — lib/csv.h: RFC 4180 quoting, records, and the formula guard
 * with its exemption for numbers and phone numbers. (A CSV read back
 * through the API is checked in tests/api/test_campaign_execution.c.)
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "suites.h"

/* One record of the fields (n of them, NULL for an empty one), each
 * guarded when guard is set, as written. The caller frees. */
static char *record(const char *const *fields, int n, bool guard)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(out);
    for (int i = 0; i < n; i++)
        crm_csv_field(out, fields[i], i == 0, guard);
    crm_csv_end_record(out);
    ck_assert_int_eq(fclose(out), 0);
    return text;
}

static void expect_field(const char *value, bool guard, const char *want)
{
    const char *fields[] = {value};
    char *got = record(fields, 1, guard);
    char wanted[256];
    snprintf(wanted, sizeof wanted, "%s\r\n", want);
    ck_assert_str_eq(got, wanted);
    free(got);
}

START_TEST(fields_are_separated_by_commas_and_records_end_with_crlf)
{
    const char *fields[] = {"42", "plain", NULL, "", "x y"};
    char *got = record(fields, 5, true);
    ck_assert_str_eq(got, "42,plain,,,x y\r\n");
    free(got);
}
END_TEST

START_TEST(a_comma_quote_cr_or_lf_is_quoted_and_quotes_doubled)
{
    expect_field("Rossi, Mario", false, "\"Rossi, Mario\"");
    expect_field("say \"hi\"", false, "\"say \"\"hi\"\"\"");
    expect_field("two\r\nlines", false, "\"two\r\nlines\"");
    expect_field("a\nb", false, "\"a\nb\"");
    expect_field("a\rb", false, "\"a\rb\"");
    expect_field("caf\xc3\xa9", false, "caf\xc3\xa9"); /* UTF-8 as it is */
}
END_TEST

START_TEST(a_field_that_a_spreadsheet_would_run_gets_a_leading_quote)
{
    expect_field("=1+1", true, "'=1+1");
    expect_field("+A1", true, "'+A1");
    expect_field("-2+3*cmd|' /C calc'!A0", true, "'-2+3*cmd|' /C calc'!A0");
    expect_field("@SUM(A1)", true, "'@SUM(A1)");
    expect_field("\tx", true, "'\tx");
    expect_field("\rx", true, "\"'\rx\""); /* guarded, then quoted for the CR */
    expect_field("=HYPERLINK(\"http://x\",\"a, b\")", true,
                 "\"'=HYPERLINK(\"\"http://x\"\",\"\"a, b\"\")\"");
    /* not at the start, or not asked: as it is */
    expect_field("a=1", true, "a=1");
    expect_field("=1+1", false, "=1+1");
    ck_assert(crm_csv_needs_guard("=x"));
    ck_assert(!crm_csv_needs_guard(NULL));
    ck_assert(!crm_csv_needs_guard(""));
}
END_TEST

START_TEST(numbers_and_phone_numbers_are_not_guarded)
{
    expect_field("+39 333 1234567", true, "+39 333 1234567");
    expect_field("+1 (555) 123-4567", true, "+1 (555) 123-4567");
    expect_field("-12.5", true, "-12.5");
    expect_field("-", true, "-");
    /* a letter makes it a possible formula again */
    expect_field("+1 (555) CALL-NOW", true, "'+1 (555) CALL-NOW");
    expect_field("-1e3", true, "'-1e3");
}
END_TEST

Suite *csv_suite(void)
{
    Suite *s = suite_create("csv");
    TCase *tc = tcase_create("csv");
    tcase_add_test(tc, fields_are_separated_by_commas_and_records_end_with_crlf);
    tcase_add_test(tc, a_comma_quote_cr_or_lf_is_quoted_and_quotes_doubled);
    tcase_add_test(tc, a_field_that_a_spreadsheet_would_run_gets_a_leading_quote);
    tcase_add_test(tc, numbers_and_phone_numbers_are_not_guarded);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_accept.c — http_accept_weight (server/params.c): the weight an
 * Accept header gives a media type, by the most specific range that
 * names it (RFC 9110, 12.5.1). GET /v1/campaigns/{id}/contacts answers CSV
 * when text/csv weighs more than application/json.
 */
#include <check.h>

#include "handlers.h"
#include "suites.h"

START_TEST(no_header_accepts_everything)
{
    ck_assert_int_eq(http_accept_weight(NULL, "text/csv"), 1000);
}
END_TEST

START_TEST(the_most_specific_range_gives_the_weight)
{
    ck_assert_int_eq(http_accept_weight("text/csv", "text/csv"), 1000);
    ck_assert_int_eq(http_accept_weight("text/csv", "application/json"), 0);
    ck_assert_int_eq(http_accept_weight("TEXT/CSV; charset=utf-8", "text/csv"), 1000);
    ck_assert_int_eq(http_accept_weight("*/*;q=0.2, text/*;q=0.4", "text/csv"), 400);
    ck_assert_int_eq(http_accept_weight("*/*;q=0.2, text/*;q=0.4", "application/json"), 200);
    ck_assert_int_eq(http_accept_weight("text/csv;q=0, */*", "text/csv"), 0);
    ck_assert_int_eq(http_accept_weight("application/json;q=0.125 , text/csv", "application/json"),
                     125);
    ck_assert_int_eq(http_accept_weight("text/html, application/xhtml+xml", "text/csv"), 0);
}
END_TEST

START_TEST(a_malformed_weight_or_range_is_ignored)
{
    ck_assert_int_eq(http_accept_weight("text/csv;q=2", "text/csv"), 0);
    ck_assert_int_eq(http_accept_weight("text/csv;q=0.1234", "text/csv"), 0);
    ck_assert_int_eq(http_accept_weight("text/csv;q=x, */*;q=0.5", "text/csv"), 500);
    ck_assert_int_eq(http_accept_weight("text/csv;q=1.000", "text/csv"), 1000);
    ck_assert_int_eq(http_accept_weight("text/csvx, text/cs, text*", "text/csv"), 0);
    ck_assert_int_eq(http_accept_weight(",,; ;,", "text/csv"), 0);
    ck_assert_int_eq(http_accept_weight("", "text/csv"), 0);
}
END_TEST

Suite *accept_suite(void)
{
    Suite *s = suite_create("accept");
    TCase *tc = tcase_create("accept");
    tcase_add_test(tc, no_header_accepts_everything);
    tcase_add_test(tc, the_most_specific_range_gives_the_weight);
    tcase_add_test(tc, a_malformed_weight_or_range_is_ignored);
    suite_add_tcase(s, tc);
    return s;
}

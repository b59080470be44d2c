/*
 * test_error.c — crm_error: setting, field errors, clearing, code names.
 */
#include <check.h>
#include <string.h>

#include "error.h"
#include "suites.h"

START_TEST(test_set_records_code_and_formatted_detail)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_set(&err, CRM_E_NOT_FOUND, "no customer with id %d", 42);
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    ck_assert_str_eq(err.detail, "no customer with id 42");
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_set_returns_false_for_tail_calls)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_error_set(&err, CRM_E_INVALID, "bad"));
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_set_accepts_null_error)
{
    ck_assert(!crm_error_set(NULL, CRM_E_INTERNAL, "ignored %s", "detail"));
}
END_TEST

START_TEST(test_set_truncates_long_detail_with_terminator)
{
    char longtext[CRM_ERROR_DETAIL_MAX * 2];
    memset(longtext, 'x', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = '\0';
    crm_error err = CRM_ERROR_INIT;
    crm_error_set(&err, CRM_E_INVALID, "%s", longtext);
    ck_assert_uint_eq(strlen(err.detail), CRM_ERROR_DETAIL_MAX - 1);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_set_replaces_previous_code_and_detail)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_set(&err, CRM_E_INVALID, "first");
    crm_error_set(&err, CRM_E_CONFLICT, "second");
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_str_eq(err.detail, "second");
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_add_field_appends_field_and_message)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "/name", "required");
    ck_assert(json_is_array(err.errors));
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    json_t *e = json_array_get(err.errors, 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), "/name");
    ck_assert_str_eq(json_string_value(json_object_get(e, "message")), "required");
    ck_assert_uint_eq(json_object_size(e), 2);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_add_field_keeps_entries_in_order)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "/a", "one");
    crm_error_add_field(&err, "/b", "two");
    crm_error_add_field(&err, "/c", "three");
    ck_assert_uint_eq(json_array_size(err.errors), 3);
    const char *want[] = {"/a", "/b", "/c"};
    for (size_t i = 0; i < 3; i++)
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(err.errors, i), "field")),
                         want[i]);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_add_field_does_not_change_code)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "/a", "bad");
    ck_assert_int_eq(err.code, CRM_OK);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_set_keeps_field_errors)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "/a", "bad");
    crm_error_set(&err, CRM_E_INVALID, "invalid");
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_add_field_accepts_null_error)
{
    crm_error_add_field(NULL, "/a", "ignored");
}
END_TEST

START_TEST(test_clear_resets_to_ok)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "/a", "bad");
    crm_error_set(&err, CRM_E_INVALID, "invalid");
    crm_error_clear(&err);
    ck_assert_int_eq(err.code, CRM_OK);
    ck_assert_str_eq(err.detail, "");
    ck_assert_ptr_null(err.errors);
}
END_TEST

START_TEST(test_clear_twice_is_harmless)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "/a", "bad");
    crm_error_clear(&err);
    crm_error_clear(&err);
    ck_assert_ptr_null(err.errors);
}
END_TEST

START_TEST(test_clear_accepts_null_error)
{
    crm_error_clear(NULL);
}
END_TEST

START_TEST(test_error_is_reusable_after_clear)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "/old", "bad");
    crm_error_clear(&err);
    crm_error_add_field(&err, "/new", "bad");
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(err.errors, 0), "field")),
                     "/new");
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_code_names_are_distinct)
{
    for (int a = CRM_OK; a <= CRM_E_INTERNAL; a++)
        for (int b = a + 1; b <= CRM_E_INTERNAL; b++)
            ck_assert_str_ne(crm_errcode_name((crm_errcode)a), crm_errcode_name((crm_errcode)b));
}
END_TEST

START_TEST(test_code_names_are_stable)
{
    ck_assert_str_eq(crm_errcode_name(CRM_E_MALFORMED), "malformed-request");
    ck_assert_str_eq(crm_errcode_name(CRM_E_INVALID), "validation-failed");
    ck_assert_str_eq(crm_errcode_name(CRM_E_NOT_FOUND), "not-found");
    ck_assert_str_eq(crm_errcode_name(CRM_E_UNAVAILABLE), "service-unavailable");
    ck_assert_str_eq(crm_errcode_name(CRM_E_INTERNAL), "internal-error");
}
END_TEST

START_TEST(test_unknown_code_is_named_internal_error)
{
    ck_assert_str_eq(crm_errcode_name((crm_errcode)999), "internal-error");
}
END_TEST

/* A moved error leaves its source CRM_OK, replaces the destination's own
 * (its field errors released, as ASan's leak check holds), and is dropped
 * when there is no destination. */
START_TEST(test_move_hands_the_error_over)
{
    crm_error src = CRM_ERROR_INIT, dst = CRM_ERROR_INIT;
    crm_error_add_field(&dst, "/old", "replaced");
    crm_error_set(&src, CRM_E_CONFLICT, "moved %d", 1);
    crm_error_add_field(&src, "/a", "kept");
    crm_error_move(&dst, &src);
    ck_assert_int_eq(dst.code, CRM_E_CONFLICT);
    ck_assert_str_eq(dst.detail, "moved 1");
    ck_assert_int_eq(json_array_size(dst.errors), 1);
    ck_assert_int_eq(src.code, CRM_OK);
    ck_assert_ptr_null(src.errors);
    crm_error_set(&src, CRM_E_INTERNAL, "dropped");
    crm_error_add_field(&src, "/b", "dropped");
    crm_error_move(NULL, &src);
    ck_assert_int_eq(src.code, CRM_OK);
    ck_assert_ptr_null(src.errors);
    crm_error_clear(&dst);
}
END_TEST

Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_create("set");
    tcase_add_test(tc, test_set_records_code_and_formatted_detail);
    tcase_add_test(tc, test_set_returns_false_for_tail_calls);
    tcase_add_test(tc, test_set_accepts_null_error);
    tcase_add_test(tc, test_set_truncates_long_detail_with_terminator);
    tcase_add_test(tc, test_set_replaces_previous_code_and_detail);
    suite_add_tcase(s, tc);

    tc = tcase_create("fields");
    tcase_add_test(tc, test_add_field_appends_field_and_message);
    tcase_add_test(tc, test_add_field_keeps_entries_in_order);
    tcase_add_test(tc, test_add_field_does_not_change_code);
    tcase_add_test(tc, test_set_keeps_field_errors);
    tcase_add_test(tc, test_add_field_accepts_null_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("clear");
    tcase_add_test(tc, test_clear_resets_to_ok);
    tcase_add_test(tc, test_clear_twice_is_harmless);
    tcase_add_test(tc, test_clear_accepts_null_error);
    tcase_add_test(tc, test_error_is_reusable_after_clear);
    suite_add_tcase(s, tc);

    tc = tcase_create("names");
    tcase_add_test(tc, test_code_names_are_distinct);
    tcase_add_test(tc, test_code_names_are_stable);
    tcase_add_test(tc, test_unknown_code_is_named_internal_error);
    tcase_add_test(tc, test_move_hands_the_error_over);
    suite_add_tcase(s, tc);
    return s;
}

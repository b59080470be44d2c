/*
 * test_utf8.c — text that is not (or no longer) UTF-8 on its way into JSON:
 * crm_utf8_sequence, _boundary and _sanitize; a log line cut inside a
 * character or carrying invalid bytes is still written, as valid JSON; a
 * field error named by non-UTF-8 bytes is kept; a long JSON pointer is cut
 * where a character ends.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "json.h"
#include "log.h"
#include "suites.h"

START_TEST(sequences_are_judged_as_jansson_judges_them)
{
    ck_assert_uint_eq(crm_utf8_sequence("a", 1), 1);
    ck_assert_uint_eq(crm_utf8_sequence("\xc3\xa9", 2), 2);
    ck_assert_uint_eq(crm_utf8_sequence("\xe2\x82\xac", 3), 3);
    ck_assert_uint_eq(crm_utf8_sequence("\xf0\x9f\x98\x80", 4), 4);
    ck_assert_uint_eq(crm_utf8_sequence("\xc3", 1), 0);            /* cut short */
    ck_assert_uint_eq(crm_utf8_sequence("\xc0\x80", 2), 0);        /* overlong NUL */
    ck_assert_uint_eq(crm_utf8_sequence("\xe0\x80\xaf", 3), 0);    /* overlong */
    ck_assert_uint_eq(crm_utf8_sequence("\xed\xa0\x80", 3), 0);    /* surrogate */
    ck_assert_uint_eq(crm_utf8_sequence("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    ck_assert_uint_eq(crm_utf8_sequence("\xff", 1), 0);
    ck_assert_uint_eq(crm_utf8_sequence("\x80", 1), 0);
    /* Whatever comes in, what comes out is accepted by Jansson. */
    const char *bad[] = {"\xff\xfe", "a\xc3", "\xc0\x80x", "\xed\xa0\x80", "ok\xe2\x82", "\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[64];
        size_t n = crm_utf8_sanitize(bad[i], strlen(bad[i]), out, sizeof out);
        json_t *s = json_stringn(out, n);
        ck_assert_msg(s != NULL, "case %zu not sanitized", i);
        json_decref(s);
    }
    char out[16];
    ck_assert_uint_eq(crm_utf8_sanitize("a\xffz", 3, out, sizeof out), 5);
    ck_assert_str_eq(out, "a\xef\xbf\xbdz");
    /* It stops before what does not fit, never inside a character. */
    ck_assert_uint_eq(crm_utf8_sanitize("ab\xe2\x82\xac", 5, out, 5), 2);
    ck_assert_str_eq(out, "ab");
}
END_TEST

START_TEST(a_cut_is_moved_to_where_a_character_ends)
{
    ck_assert_uint_eq(crm_utf8_boundary("abc", 3), 3);
    ck_assert_uint_eq(crm_utf8_boundary("a\xc3\xa9", 3), 3);
    ck_assert_uint_eq(crm_utf8_boundary("a\xc3", 2), 1);
    ck_assert_uint_eq(crm_utf8_boundary("a\xe2\x82", 3), 1);
    ck_assert_uint_eq(crm_utf8_boundary("a\xf0\x9f\x98", 4), 1);
    ck_assert_uint_eq(crm_utf8_boundary("a\xf0\x9f\x98\x80", 5), 5);
    ck_assert_uint_eq(crm_utf8_boundary("", 0), 0);
}
END_TEST

/* Runs crm_log at ERROR with "%s" of text and returns what it wrote to
 * stderr (caller frees). */
static char *log_output(const char *text)
{
    char path[] = "/tmp/crmd-log-test-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    dup2(fd, STDERR_FILENO);
    crm_log_set_level(CRM_LOG_ERROR);
    crm_log(CRM_LOG_ERROR, "%s", text);
    crm_log_set_level((crm_log_level)(CRM_LOG_ERROR + 1)); /* off again, as main.c has it */
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)size + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(pread(fd, buf, (size_t)size, 0), size);
    close(fd);
    return buf;
}

static json_t *logged_msg(const char *text, json_t **line)
{
    char *out = log_output(text);
    ck_assert_msg(out[0] != '\0', "the line was dropped");
    *line = json_loads(out, 0, NULL);
    ck_assert_msg(*line != NULL, "not one JSON line: %s", out);
    free(out);
    return json_object_get(*line, "msg");
}

START_TEST(a_log_line_cut_inside_a_character_or_with_invalid_bytes_is_written)
{
    /* 1022 ASCII bytes then a euro sign: the 1023-byte buffer cuts it. */
    char text[1100];
    memset(text, 'x', 1022);
    strcpy(text + 1022, "\xe2\x82\xac and more");
    json_t *line;
    json_t *msg = logged_msg(text, &line);
    ck_assert_uint_eq(json_string_length(msg), 1022);
    json_decref(line);

    msg = logged_msg("libpq said \xff\xfe at \xc3", &line);
    ck_assert_str_eq(json_string_value(msg),
                     "libpq said \xef\xbf\xbd\xef\xbf\xbd at \xef\xbf\xbd");
    json_decref(line);
}
END_TEST

START_TEST(a_field_error_named_by_invalid_bytes_is_kept)
{
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, "em\xffil", "unknown query parameter");
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    json_t *e = json_array_get(err.errors, 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), "em\xef\xbf\xbdil");
    crm_error_clear(&err);

    /* A long key cut to fit a pointer is cut where a character ends. */
    char key[400] = "";
    for (int i = 0; i < 130; i++)
        strcat(key, "\xc3\xa9");
    char pointer[CRM_JSON_POINTER_MAX];
    crm_json_pointer_append(pointer, sizeof pointer, "/attributes", key);
    json_t *s = json_string(pointer);
    ck_assert_msg(s != NULL, "the pointer is not UTF-8");
    json_decref(s);
    ck_assert_uint_gt(strlen(pointer), 200);
}
END_TEST

Suite *utf8_suite(void)
{
    Suite *s = suite_create("utf8");
    TCase *tc = tcase_create("utf8");
    tcase_add_test(tc, sequences_are_judged_as_jansson_judges_them);
    tcase_add_test(tc, a_cut_is_moved_to_where_a_character_ends);
    tcase_add_test(tc, a_log_line_cut_inside_a_character_or_with_invalid_bytes_is_written);
    tcase_add_test(tc, a_field_error_named_by_invalid_bytes_is_kept);
    suite_add_tcase(s, tc);
    return s;
}

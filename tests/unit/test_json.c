/*
 * test_json.c — request body parsing, field whitelists, base64url and
 * timestamps (lib/json.h, lib/jbuf.h).
 */
#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customers.h"
#include "jbuf.h"
#include "json.h"
#include "suites.h"
#include "support.h"

/* Parses a NUL-terminated text, expecting failure; returns the error. */
static crm_error parse_fails(const char *text)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *root = crm_json_parse(text, strlen(text), &err);
    ck_assert_msg(root == NULL, "'%s' parsed", text);
    return err;
}

/* ---- crm_json_parse -------------------------------------------------- */

START_TEST(test_parse_returns_object)
{
    crm_error err = CRM_ERROR_INIT;
    const char *text = "{\"name\": \"Ada\", \"n\": 3}";
    json_t *root = crm_json_parse(text, strlen(text), &err);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(err.code, CRM_OK);
    ck_assert_str_eq(json_string_value(json_object_get(root, "name")), "Ada");
    ck_assert_int_eq(json_integer_value(json_object_get(root, "n")), 3);
    json_decref(root);
}
END_TEST

START_TEST(test_parse_bad_token_is_malformed)
{
    crm_error err = parse_fails("{\"a\": }");
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_parse_error_detail_gives_line_and_column)
{
    crm_error err = parse_fails("{\n  \"a\": tru\n}");
    ck_assert_msg(strstr(err.detail, "line 2, column 10") != NULL, "detail: %s", err.detail);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_parse_rejects_duplicate_keys)
{
    crm_error err = parse_fails("{\"a\": 1,\n\"a\": 2}");
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    ck_assert_msg(strstr(err.detail, "line 2, column 3") != NULL, "detail: %s", err.detail);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_parse_rejects_duplicate_keys_in_nested_object)
{
    crm_error err = parse_fails("{\"outer\": {\"a\": 1, \"a\": 1}}");
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_parse_empty_body_is_malformed)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_json_parse(NULL, 0, &err));
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_parse_trailing_garbage_is_malformed)
{
    crm_error err = parse_fails("{} x");
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_parse_bare_scalar_is_well_formed)
{
    /* RFC 8259 allows any value at the top; the operation that wanted an
     * object refuses it with 422, not the parser with 400. */
    const char *texts[] = {"null", "1", "-2.5e3", "\"x\"", "true"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        crm_error err = CRM_ERROR_INIT;
        json_t *root = crm_json_parse(texts[i], strlen(texts[i]), &err);
        ck_assert_msg(root != NULL, "%s: %s", texts[i], err.detail);
        ck_assert(!json_is_object(root) && !json_is_array(root));
        json_decref(root);
    }
    crm_error err = parse_fails("nul");
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_parse_reads_only_len_bytes)
{
    crm_error err = CRM_ERROR_INIT;
    const char *text = "{}trailing bytes past the body";
    json_t *root = crm_json_parse(text, 2, &err);
    ck_assert_ptr_nonnull(root);
    json_decref(root);
}
END_TEST

START_TEST(test_parse_keeps_escaped_nul_inside_string)
{
    crm_error err = CRM_ERROR_INIT;
    const char *text = "{\"s\": \"a\\u0000b\"}";
    json_t *root = crm_json_parse(text, strlen(text), &err);
    ck_assert_ptr_nonnull(root);
    ck_assert_uint_eq(json_string_length(json_object_get(root, "s")), 3);
    json_decref(root);
}
END_TEST

START_TEST(test_parse_rejects_invalid_utf8)
{
    crm_error err = parse_fails("{\"s\": \"\xff\"}");
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    crm_error_clear(&err);
}
END_TEST

/* ---- crm_json_only_fields ------------------------------------------- */

static const char *const allowed[] = {"name", "email", NULL};

START_TEST(test_only_fields_accepts_allowed_keys)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *obj = json_pack("{s:s, s:s}", "name", "Ada", "email", "ada@example.com");
    ck_assert(crm_json_only_fields(obj, allowed, &err));
    ck_assert_int_eq(err.code, CRM_OK);
    ck_assert_ptr_null(err.errors);
    json_decref(obj);
}
END_TEST

START_TEST(test_only_fields_accepts_empty_object)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *obj = json_object();
    ck_assert(crm_json_only_fields(obj, allowed, &err));
    json_decref(obj);
}
END_TEST

START_TEST(test_only_fields_rejects_unknown_key_as_invalid)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *obj = json_pack("{s:s, s:i}", "name", "Ada", "age", 36);
    ck_assert(!crm_json_only_fields(obj, allowed, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    ck_assert_uint_eq(json_array_size(err.errors), 1);
    ck_assert(unit_has_field_error(&err, "/age"));
    crm_error_clear(&err);
    json_decref(obj);
}
END_TEST

START_TEST(test_only_fields_reports_every_unknown_key)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *obj = json_pack("{s:i, s:i, s:s}", "age", 1, "city", 2, "name", "Ada");
    ck_assert(!crm_json_only_fields(obj, allowed, &err));
    ck_assert_uint_eq(json_array_size(err.errors), 2);
    ck_assert(unit_has_field_error(&err, "/age"));
    ck_assert(unit_has_field_error(&err, "/city"));
    crm_error_clear(&err);
    json_decref(obj);
}
END_TEST

START_TEST(test_only_fields_matches_keys_exactly)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *obj = json_pack("{s:s}", "Name", "Ada");
    ck_assert(!crm_json_only_fields(obj, allowed, &err));
    ck_assert(unit_has_field_error(&err, "/Name"));
    crm_error_clear(&err);
    json_decref(obj);
}
END_TEST

/* The field is a JSON pointer (RFC 6901): '/' and '~' in a key are escaped
 * as ~1 and ~0, or the pointer names a different location. */
START_TEST(test_only_fields_escapes_key_as_json_pointer)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *obj = json_pack("{s:i, s:i}", "a/b", 1, "c~d", 2);
    bool ok = crm_json_only_fields(obj, allowed, &err);
    bool slash_escaped = unit_has_field_error(&err, "/a~1b");
    bool tilde_escaped = unit_has_field_error(&err, "/c~0d");
    char *fields = json_dumps(err.errors, JSON_COMPACT);
    char shown[256];
    snprintf(shown, sizeof shown, "%s", fields ? fields : "");
    free(fields);
    crm_error_clear(&err);
    json_decref(obj);
    ck_assert(!ok);
    ck_assert_msg(slash_escaped, "errors: %s", shown);
    ck_assert_msg(tilde_escaped, "errors: %s", shown);
}
END_TEST

/* Found by tests/fuzz/fuzz_customer_body: a member name cut inside a UTF-8
 * character made a field name Jansson refuses, and its error was lost (a
 * customer body with such an unknown member passed validation). */
START_TEST(test_only_fields_reports_a_long_key_cut_at_a_character)
{
    char key[300];
    memset(key, 'a', 251);
    strcpy(key + 251, "\xc3\xa8\xc3\xa8\xc3\xa8"); /* "èèè" where the pointer is cut */
    crm_error err = CRM_ERROR_INIT;
    json_t *obj = json_pack("{s:i}", key, 1);
    ck_assert_ptr_nonnull(obj);
    bool ok = crm_json_only_fields(obj, allowed, &err);
    size_t nerrors = json_array_size(err.errors);
    const char *field = json_string_value(json_object_get(json_array_get(err.errors, 0), "field"));
    char want[CRM_JSON_POINTER_MAX];
    snprintf(want, sizeof want, "/%.253s", key); /* the a's and one whole è */
    bool named = field != NULL && strcmp(field, want) == 0;
    crm_error_clear(&err);
    json_decref(obj);
    ck_assert(!ok);
    ck_assert_int_eq(nerrors, 1);
    ck_assert_msg(named, "the field is the pointer cut after the last whole character");
}
END_TEST

/* The same through the customer validator, which names members itself: on
 * the old code such a body passed, unknown member and all (201). */
START_TEST(test_customer_with_a_long_unknown_member_is_refused)
{
    char key[300];
    memset(key, 'a', 251);
    strcpy(key + 251, "\xc3\xa8\xc3\xa8\xc3\xa8");
    json_t *doc = json_pack("{s:s, s:i}", "first_name", "Ada", key, 1);
    ck_assert_ptr_nonnull(doc);
    crm_customer_values vals;
    crm_error err = CRM_ERROR_INIT;
    bool valid = crm_customer_validate(doc, 0, &vals, &err);
    if (valid)
        crm_customer_values_free(&vals);
    size_t nerrors = json_array_size(err.errors);
    crm_error_clear(&err);
    json_decref(doc);
    ck_assert_msg(!valid, "a body with an unknown member passed validation");
    ck_assert_int_eq(nerrors, 1);
}
END_TEST

START_TEST(test_json_pointer_cuts_whole_escapes_and_characters)
{
    char out[8];
    crm_json_pointer_append(out, sizeof out, "/a", "bc~d");
    ck_assert_str_eq(out, "/a/bc~0"); /* 7 bytes: fits */
    crm_json_pointer_append(out, sizeof out, "/a", "bcd~e");
    ck_assert_str_eq(out, "/a/bcd"); /* "~0" would not fit whole */
    crm_json_pointer_append(out, sizeof out, "/a", "bc\xe2\x82\xac");
    ck_assert_str_eq(out, "/a/bc"); /* nor the three bytes of the euro sign */
    crm_json_pointer_append(out, sizeof out, "", "x/y");
    ck_assert_str_eq(out, "/x~1y");
}
END_TEST

/* ---- base64url ------------------------------------------------------ */

START_TEST(test_base64url_uses_url_safe_alphabet_without_padding)
{
    const unsigned char bytes[] = {0xfb, 0xff};
    char out[8];
    crm_base64url_encode(bytes, sizeof bytes, out, sizeof out);
    ck_assert_str_eq(out, "-_8");
}
END_TEST

START_TEST(test_base64url_round_trips_every_length)
{
    unsigned char bytes[64], back[64];
    char text[128];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (unsigned char)(i * 37 + 11);
    for (size_t len = 0; len <= sizeof bytes; len++) {
        crm_base64url_encode(bytes, len, text, sizeof text);
        ck_assert_uint_eq(strlen(text), (len * 4 + 2) / 3);
        long n = crm_base64url_decode(text, back, sizeof back);
        ck_assert_int_eq(n, (long)len);
        ck_assert_int_eq(memcmp(bytes, back, len), 0);
    }
}
END_TEST

START_TEST(test_base64url_decodes_known_text)
{
    unsigned char out[16];
    long n = crm_base64url_decode("aGVsbG8", out, sizeof out);
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(memcmp(out, "hello", 5), 0);
}
END_TEST

START_TEST(test_base64url_rejects_standard_alphabet)
{
    unsigned char out[16];
    ck_assert_int_eq(crm_base64url_decode("ab+c", out, sizeof out), -1);
    ck_assert_int_eq(crm_base64url_decode("ab/c", out, sizeof out), -1);
}
END_TEST

START_TEST(test_base64url_rejects_padding)
{
    unsigned char out[16];
    ck_assert_int_eq(crm_base64url_decode("YQ==", out, sizeof out), -1);
}
END_TEST

START_TEST(test_base64url_rejects_impossible_length)
{
    unsigned char out[16];
    ck_assert_int_eq(crm_base64url_decode("aGVsb", out, sizeof out), -1);
}
END_TEST

START_TEST(test_base64url_rejects_nonzero_trailing_bits)
{
    unsigned char out[16];
    /* "YQ" is "a"; "YR" carries bits that no byte string encodes to. */
    ck_assert_int_eq(crm_base64url_decode("YQ", out, sizeof out), 1);
    ck_assert_int_eq(crm_base64url_decode("YR", out, sizeof out), -1);
}
END_TEST

START_TEST(test_base64url_rejects_whitespace_and_other_characters)
{
    unsigned char out[16];
    ck_assert_int_eq(crm_base64url_decode("aGVs bG8", out, sizeof out), -1);
    ck_assert_int_eq(crm_base64url_decode("aGVsbG8\n", out, sizeof out), -1);
    ck_assert_int_eq(crm_base64url_decode("aGV$bG8", out, sizeof out), -1);
}
END_TEST

START_TEST(test_base64url_rejects_output_too_small)
{
    unsigned char out[4];
    ck_assert_int_eq(crm_base64url_decode("aGVsbG8", out, sizeof out), -1);
}
END_TEST

START_TEST(test_base64url_decodes_empty_text_to_nothing)
{
    unsigned char out[4];
    ck_assert_int_eq(crm_base64url_decode("", out, sizeof out), 0);
}
END_TEST

/* ---- crm_json_timestamp --------------------------------------------- */

static void assert_timestamp(long long epoch_ms, const char *want)
{
    json_t *t = crm_json_timestamp(epoch_ms);
    ck_assert_msg(json_is_string(t), "%lld gave no string", epoch_ms);
    ck_assert_str_eq(json_string_value(t), want);
    json_decref(t);
}

START_TEST(test_timestamp_formats_epoch)
{
    assert_timestamp(0, "1970-01-01T00:00:00.000Z");
}
END_TEST

START_TEST(test_timestamp_keeps_milliseconds)
{
    assert_timestamp(1700000000123LL, "2023-11-14T22:13:20.123Z");
}
END_TEST

START_TEST(test_timestamp_before_epoch_rounds_down)
{
    assert_timestamp(-1, "1969-12-31T23:59:59.999Z");
    assert_timestamp(-1000, "1969-12-31T23:59:59.000Z");
    assert_timestamp(-1001, "1969-12-31T23:59:58.999Z");
}
END_TEST

/* ---- crm_parse_pg_timestamp ------------------------------------------ */

/* What PostgreSQL prints for timestamps in several zones (whole-hour,
 * half-hour, negative, and a local mean time offset in seconds), read back,
 * equals PostgreSQL's own exact count of microseconds since the epoch. */
START_TEST(test_pg_timestamp_reads_what_postgresql_prints_in_any_zone)
{
    static const char *const zones[] = {"UTC", "Asia/Kolkata", "America/St_Johns",
                                        "Europe/Amsterdam", "Pacific/Kiritimati"};
    static const char *const times[] = {"2026-11-24 14:48:34.123456+00", "1970-01-01 00:00:00+00",
                                        "1969-12-31 23:59:59.999999+00", "2000-02-29 12:00:00.5+00",
                                        "1900-06-01 08:00:00.000001+00", "9999-12-31 23:59:59+00",
                                        "2024-03-31 01:30:00+00"};
    PGconn *c = unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));
    for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
        const char *zp[] = {zones[z]};
        PQclear(unit_sql(c, "SELECT set_config('TimeZone', $1, false)", 1, zp));
        PQclear(unit_sql(c, "SET DateStyle = ISO, YMD", 0, NULL));
        for (size_t t = 0; t < sizeof times / sizeof times[0]; t++) {
            const char *tp[] = {times[t]};
            PGresult *res = unit_sql(c,
                                     "SELECT $1::timestamptz::text, "
                                     "(extract(epoch FROM $1::timestamptz) * 1000000)::bigint",
                                     1, tp);
            long long us = 0;
            ck_assert_msg(crm_parse_pg_timestamp(PQgetvalue(res, 0, 0), &us),
                          "'%s' (%s) did not parse", PQgetvalue(res, 0, 0), zones[z]);
            ck_assert_msg(us == atoll(PQgetvalue(res, 0, 1)), "'%s' (%s): %lld, want %s",
                          PQgetvalue(res, 0, 0), zones[z], us, PQgetvalue(res, 0, 1));
            PQclear(res);
        }
    }
    PQfinish(c);
}
END_TEST

START_TEST(test_pg_timestamp_rejects_what_is_not_one)
{
    static const char *const bad[] = {"",
                                      "infinity",
                                      "-infinity",
                                      "0044-03-15 12:00:00+00 BC",
                                      "2026-11-24T14:48:34+00",
                                      "2026-11-24 14:48:34",
                                      "2026-11-24 14:48:34.+00",
                                      "2026-13-24 14:48:34+00",
                                      "26-11-24 14:48:34+00",
                                      "2026-11-24 14:48:34+0",
                                      "2026-11-24 14:48:34+00 ",
                                      "2026-11-24 14:48:34+00:3",
                                      /* past a long long of microseconds (found by
                                         tests/fuzz/fuzz_pg_timestamp: UB before) */
                                      "294276-12-31 23:59:59.999999+00",
                                      "999999999-12-31 23:59:59+00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long long us = 42;
        ck_assert_msg(!crm_parse_pg_timestamp(bad[i], &us), "'%s' parsed", bad[i]);
        ck_assert_int_eq(us, 42);
    }
}
END_TEST

/* Written with milliseconds, rounded down (before the epoch too); null when
 * the text is not a timestamp. */
START_TEST(test_jbuf_pg_timestamp_writes_milliseconds_rounded_down)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"2026-11-24 14:48:34.123999+00", "\"2026-11-24T14:48:34.123Z\""},
        {"2026-11-24 16:48:34+02", "\"2026-11-24T14:48:34.000Z\""},
        {"1969-12-31 23:59:59.9995+00", "\"1969-12-31T23:59:59.999Z\""},
        {"infinity", "null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        crm_jbuf b;
        crm_jbuf_init(&b);
        crm_jbuf_pg_timestamp(&b, cases[i].in);
        size_t len = 0;
        char *text = crm_jbuf_take(&b, &len);
        ck_assert_ptr_nonnull(text);
        ck_assert_str_eq(text, cases[i].want);
        free(text);
    }
}
END_TEST

/* ---- the JSON writer (lib/jbuf.h) ---- */

/* Strings come back from a JSON parser exactly as written: plain runs,
 * every escape JSON names, other control bytes as \u00XX, and UTF-8. */
START_TEST(test_jbuf_strings_read_back_byte_for_byte)
{
    static const char *const samples[] = {
        "", "plain", "quote \" inside", "back\\slash", "\b\f\n\r\t", "\x01\x1f end",
        "\x7f del stays", "caf\xc3\xa9 \xf0\x9f\x98\x80", "\"", "a\\\"b\n\x02" "c"};
    size_t n = sizeof samples / sizeof samples[0];
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    for (size_t i = 0; i < n; i++)
        crm_jbuf_string(&b, samples[i], strlen(samples[i]));
    crm_jbuf_end_array(&b);
    size_t len;
    char *text = crm_jbuf_take(&b, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert(strstr(text, "\\u0001") != NULL);
    ck_assert(strstr(text, "\\n") != NULL);
    json_error_t jerr;
    json_t *back = json_loadb(text, len, 0, &jerr);
    ck_assert_msg(back != NULL, "%s: %s", text, jerr.text);
    ck_assert_uint_eq(json_array_size(back), n);
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(json_string_value(json_array_get(back, i)), samples[i]);
    json_decref(back);
    free(text);
}
END_TEST

START_TEST(test_jbuf_integers_at_the_limits)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    long long values[] = {0, 7, -1, 10, -10, 1234567890123LL, LLONG_MAX, LLONG_MIN};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        crm_jbuf_int(&b, values[i]);
    crm_jbuf_end_array(&b);
    char *text = crm_jbuf_take(&b, NULL);
    ck_assert_str_eq(text, "[0,7,-1,10,-10,1234567890123,9223372036854775807,"
                           "-9223372036854775808]");
    free(text);
}
END_TEST

Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_parse_returns_object);
    tcase_add_test(tc, test_parse_bad_token_is_malformed);
    tcase_add_test(tc, test_parse_error_detail_gives_line_and_column);
    tcase_add_test(tc, test_parse_rejects_duplicate_keys);
    tcase_add_test(tc, test_parse_rejects_duplicate_keys_in_nested_object);
    tcase_add_test(tc, test_parse_empty_body_is_malformed);
    tcase_add_test(tc, test_parse_trailing_garbage_is_malformed);
    tcase_add_test(tc, test_parse_bare_scalar_is_well_formed);
    tcase_add_test(tc, test_parse_reads_only_len_bytes);
    tcase_add_test(tc, test_parse_keeps_escaped_nul_inside_string);
    tcase_add_test(tc, test_parse_rejects_invalid_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("only_fields");
    tcase_add_test(tc, test_only_fields_accepts_allowed_keys);
    tcase_add_test(tc, test_only_fields_accepts_empty_object);
    tcase_add_test(tc, test_only_fields_rejects_unknown_key_as_invalid);
    tcase_add_test(tc, test_only_fields_reports_every_unknown_key);
    tcase_add_test(tc, test_only_fields_matches_keys_exactly);
    tcase_add_test(tc, test_only_fields_escapes_key_as_json_pointer);
    tcase_add_test(tc, test_only_fields_reports_a_long_key_cut_at_a_character);
    tcase_add_test(tc, test_json_pointer_cuts_whole_escapes_and_characters);
    tcase_add_test(tc, test_customer_with_a_long_unknown_member_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_add_test(tc, test_jbuf_strings_read_back_byte_for_byte);
    tcase_add_test(tc, test_jbuf_integers_at_the_limits);
    suite_add_tcase(s, tc);

    tc = tcase_create("base64url");
    tcase_add_test(tc, test_base64url_uses_url_safe_alphabet_without_padding);
    tcase_add_test(tc, test_base64url_round_trips_every_length);
    tcase_add_test(tc, test_base64url_decodes_known_text);
    tcase_add_test(tc, test_base64url_rejects_standard_alphabet);
    tcase_add_test(tc, test_base64url_rejects_padding);
    tcase_add_test(tc, test_base64url_rejects_impossible_length);
    tcase_add_test(tc, test_base64url_rejects_nonzero_trailing_bits);
    tcase_add_test(tc, test_base64url_rejects_whitespace_and_other_characters);
    tcase_add_test(tc, test_base64url_rejects_output_too_small);
    tcase_add_test(tc, test_base64url_decodes_empty_text_to_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("timestamp");
    tcase_add_test(tc, test_timestamp_formats_epoch);
    tcase_add_test(tc, test_timestamp_keeps_milliseconds);
    tcase_add_test(tc, test_timestamp_before_epoch_rounds_down);
    tcase_add_test(tc, test_pg_timestamp_reads_what_postgresql_prints_in_any_zone);
    tcase_add_test(tc, test_pg_timestamp_rejects_what_is_not_one);
    tcase_add_test(tc, test_jbuf_pg_timestamp_writes_milliseconds_rounded_down);
    suite_add_tcase(s, tc);
    return s;
}

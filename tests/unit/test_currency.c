/*
 * test_currency.c — the ISO 4217 allow-list (lib/currency.h) and the rate
 * table's functions (lib/metrics/rates.c) against real PostgreSQL.
 *
 * The rate tests use CHF, JPY, SEK and NOK only and remove those rows
 * before each test, so the rest of the shared test database is left alone.
 * EUR is the reporting currency (the metrics' default).
 */
#include "currency.h"
#include "customer_metrics.h"
#include "jbuf.h"
#include "list/cursor.h"
#include "support.h"
#include "suites.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the allow-list ---------------------------------------------------------------- */

START_TEST(the_list_is_sorted_three_uppercase_letters_each_without_repeats)
{
    ck_assert_uint_eq(crm_currency_count, 157);
    ck_assert_ptr_null(crm_currency_codes[crm_currency_count]);
    for (size_t i = 0; i < crm_currency_count; i++) {
        const char *c = crm_currency_codes[i];
        ck_assert_msg(strlen(c) == 3 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' &&
                          c[1] <= 'Z' && c[2] >= 'A' && c[2] <= 'Z',
                      "'%s' is not three uppercase letters", c);
        if (i > 0)
            ck_assert_msg(strcmp(crm_currency_codes[i - 1], c) < 0, "'%s' then '%s': not sorted",
                          crm_currency_codes[i - 1], c);
    }
}
END_TEST

START_TEST(every_listed_code_is_found)
{
    /* The search must reach every position, the first and the last too. */
    for (size_t i = 0; i < crm_currency_count; i++)
        ck_assert_msg(crm_currency_known(crm_currency_codes[i]), "'%s' not found",
                      crm_currency_codes[i]);
    ck_assert_str_eq(crm_currency_codes[0], "AED");
    ck_assert_str_eq(crm_currency_codes[crm_currency_count - 1], "ZWG");
}
END_TEST

START_TEST(the_currencies_in_circulation_are_known)
{
    static const char *const known[] = {"EUR", "USD", "GBP", "JPY", "CHF", "CNY", "INR", "BRL",
                                        "XAF", "XOF", "XPF", "XCD", "VES", "VED", "SLE", "ZWG",
                                        "XCG", "ANG", "MRU", "STN"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ck_assert_msg(crm_currency_known(known[i]), "'%s' should be known", known[i]);
}
END_TEST

START_TEST(funds_metals_test_codes_replaced_currencies_and_malformed_codes_are_not)
{
    static const char *const unknown[] = {
        /* funds, metals, units, tests */
        "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW", "XAG", "XAU", "XPD", "XPT",
        "XDR", "XSU", "XUA", "XBA", "XBD", "XTS", "XXX",
        /* replaced */
        "HRK", "CUC", "SLL", "ZWL", "DEM", "FRF", "MRO", "VEF",
        /* before the first, after the last, between neighbours */
        "AAA", "ZZZ", "EUQ", "EUS",
        /* malformed */
        "usd", "Usd", "US", "USDX", "", "EUR ", " EUR", "E\xc3\xa9R"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        ck_assert_msg(!crm_currency_known(unknown[i]), "'%s' should not be known", unknown[i]);
    ck_assert(!crm_currency_known(NULL));
}
END_TEST

/* The contract lists the same codes (CurrencyCode's enum in openapi.yaml). */
START_TEST(the_contract_lists_the_same_codes)
{
    char path[512];
    snprintf(path, sizeof path, "%s/openapi.yaml", CRMD_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *schema = strstr(text, "\n    CurrencyCode:\n");
    ck_assert_ptr_nonnull(schema);
    const char *open = strstr(schema, "enum: [");
    ck_assert_ptr_nonnull(open);
    const char *close = strchr(open, ']');
    ck_assert_ptr_nonnull(close);
    size_t listed = 0;
    for (const char *p = open + 7; p < close;) {
        p += strspn(p, ", \n");
        if (p >= close)
            break;
        size_t len = strcspn(p, ", \n]");
        ck_assert_msg(listed < crm_currency_count, "the contract lists more codes");
        ck_assert_msg(len == 3 && strncmp(p, crm_currency_codes[listed], 3) == 0,
                      "the contract's code %zu is '%.*s', lib's '%s'", listed, (int)len, p,
                      crm_currency_codes[listed]);
        listed++;
        p += len;
    }
    ck_assert_uint_eq(listed, crm_currency_count);
}
END_TEST

START_TEST(a_rate_is_written_with_the_fewest_digits_that_read_back)
{
    char text[CRM_REAL_TEXT_SIZE];
    crm_format_real(0.92, text);
    ck_assert_str_eq(text, "0.92");
    crm_format_real(1.0 / 3.0, text);
    ck_assert_str_eq(text, "0.3333333333333333"); /* 16 digits: 15 read back another double */
    ck_assert(strtod(text, NULL) == 1.0 / 3.0);
    crm_format_real(0.1 + 0.2, text);
    ck_assert_str_eq(text, "0.30000000000000004"); /* 17 */
    crm_format_real(1e-7, text);
    ck_assert_str_eq(text, "1e-07");
    crm_format_real(156.25, text);
    ck_assert_str_eq(text, "156.25");
    crm_format_real(2, text);
    ck_assert_str_eq(text, "2");
}
END_TEST

/* ---- the rate table ------------------------------------------------------------------ */

static PGconn *direct;

static void setup_db(void)
{
    direct = unit_db_start(2);
    crm_metrics_config m = crm_metrics_defaults(); /* EUR */
    crm_metrics_configure(&m);
    PQclear(unit_sql(direct,
                     "DELETE FROM currency_rates WHERE currency IN ('CHF', 'JPY', 'SEK', 'NOK')",
                     0, NULL));
}

static void teardown_db(void)
{
    unit_db_stop(direct);
}

static json_t *body(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    ck_assert_msg(v != NULL, "bad test body %s", text);
    return v;
}

/* Puts text as currency's body; asserts success, returns the document and
 * sets *version. */
static json_t *put_ok(const char *currency, const char *text, const char *if_match,
                      bool want_created, long long *version)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rate_doc doc = {0};
    bool created = !want_created;
    json_t *b = body(text);
    bool ok = crm_metrics_rate_put(currency, b, if_match, &doc, &created, &err);
    json_decref(b);
    ck_assert_msg(ok, "put %s %s: %s", currency, text, err.detail);
    ck_assert_int_eq(created, want_created);
    json_t *rep = json_loads(doc.text, 0, NULL);
    ck_assert_ptr_nonnull(rep);
    ck_assert_uint_eq(doc.len, strlen(doc.text));
    ck_assert_int_eq(json_integer_value(json_object_get(rep, "version")), doc.version);
    *version = doc.version;
    crm_rate_doc_free(&doc);
    return rep;
}

/* Puts text and asserts it fails with code (and names field when not NULL). */
static void put_fails(const char *currency, const char *text, const char *if_match,
                      crm_errcode code, const char *field)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rate_doc doc = {0};
    bool created = false;
    json_t *b = body(text);
    bool ok = crm_metrics_rate_put(currency, b, if_match, &doc, &created, &err);
    json_decref(b);
    ck_assert_msg(!ok, "put %s %s succeeded", currency, text);
    ck_assert_ptr_null(doc.text);
    ck_assert_msg(err.code == code, "put %s %s: code %d (%s), not %d", currency, text, err.code,
                  err.detail, code);
    if (field != NULL)
        ck_assert_msg(unit_has_field_error(&err, field), "put %s %s: no error for '%s'",
                      currency, text, field);
    crm_error_clear(&err);
}

static long rows_of(const char *currency)
{
    const char *params[] = {currency};
    return unit_sql_long(direct, "SELECT count(*) FROM currency_rates WHERE currency = $1", 1,
                         params);
}

START_TEST(a_put_creates_then_replaces_and_the_version_moves_forward)
{
    long long v1, v2;
    json_t *rep = put_ok("CHF", "{\"rate\": 0.92}", NULL, true, &v1);
    ck_assert_str_eq(json_string_value(json_object_get(rep, "currency")), "CHF");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "reporting_currency")), "EUR");
    ck_assert(json_real_value(json_object_get(rep, "rate")) == 0.92);
    ck_assert_int_gt(v1, 1700000000000000LL); /* µs since the epoch, after 2023 */
    /* updated_at is the version in milliseconds */
    char stamp[48];
    crm_format_timestamp(v1 / 1000, stamp);
    ck_assert_str_eq(json_string_value(json_object_get(rep, "updated_at")), stamp);
    json_decref(rep);
    /* Stored as the decimal sent, not as the binary number's long expansion. */
    PGresult *res = unit_sql(direct, "SELECT rate::text FROM currency_rates WHERE currency = 'CHF'",
                             0, NULL);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "0.92");
    PQclear(res);

    rep = put_ok("CHF", "{\"rate\": 1.05}", NULL, false, &v2);
    ck_assert(json_real_value(json_object_get(rep, "rate")) == 1.05);
    ck_assert_int_gt(v2, v1);
    json_decref(rep);
    ck_assert_int_eq(rows_of("CHF"), 1);

    crm_error err = CRM_ERROR_INIT;
    crm_rate_doc doc = {0};
    ck_assert(crm_metrics_rate_get("CHF", &doc, &err));
    ck_assert_int_eq(doc.version, v2);
    crm_rate_doc_free(&doc);

    /* An integer rate is a rate too. */
    long long v3;
    rep = put_ok("JPY", "{\"rate\": 2}", NULL, true, &v3);
    ck_assert(json_number_value(json_object_get(rep, "rate")) == 2);
    json_decref(rep);
}
END_TEST

START_TEST(the_version_moves_forward_even_when_the_clock_does_not)
{
    long long v;
    json_decref(put_ok("SEK", "{\"rate\": 0.09}", NULL, true, &v));
    /* As if the last write happened in 2100: the clock now lies behind it. */
    PQclear(unit_sql(direct,
                     "UPDATE currency_rates SET updated_at = '2100-01-01 00:00:00.000007+00'"
                     " WHERE currency = 'SEK'",
                     0, NULL));
    const long long year2100_us = 4102444800000000LL;
    json_t *rep = put_ok("SEK", "{\"rate\": 0.08}", NULL, false, &v);
    ck_assert_int_eq(v, year2100_us + 8); /* one microsecond after the last write */
    ck_assert_str_eq(json_string_value(json_object_get(rep, "updated_at")),
                     "2100-01-01T00:00:00.000Z");
    json_decref(rep);
    /* Writes in quick succession: every one a new version. */
    long long before = v;
    for (int i = 0; i < 5; i++) {
        json_decref(put_ok("SEK", "{\"rate\": 0.081}", NULL, false, &v));
        ck_assert_int_gt(v, before);
        before = v;
    }
}
END_TEST

START_TEST(a_put_refuses_bad_codes_the_reporting_currency_and_bad_rates_writing_nothing)
{
    put_fails("XAU", "{\"rate\": 1}", NULL, CRM_E_INVALID, "currency");
    put_fails("chf", "{\"rate\": 1}", NULL, CRM_E_INVALID, "currency");
    put_fails("CHFX", "{\"rate\": 1}", NULL, CRM_E_INVALID, "currency");
    put_fails("", "{\"rate\": 1}", NULL, CRM_E_INVALID, "currency");
    put_fails("EUR", "{\"rate\": 1}", NULL, CRM_E_INVALID, "currency");
    put_fails("CHF", "{\"rate\": 0}", NULL, CRM_E_INVALID, "/rate");
    put_fails("CHF", "{\"rate\": -0.5}", NULL, CRM_E_INVALID, "/rate");
    put_fails("CHF", "{\"rate\": 1e9}", NULL, CRM_E_INVALID, "/rate");
    put_fails("CHF", "{\"rate\": 1000000000}", NULL, CRM_E_INVALID, "/rate");
    put_fails("CHF", "{\"rate\": \"0.9\"}", NULL, CRM_E_INVALID, "/rate");
    put_fails("CHF", "{\"rate\": null}", NULL, CRM_E_INVALID, "/rate");
    put_fails("CHF", "{}", NULL, CRM_E_INVALID, "/rate");
    put_fails("CHF", "{\"rate\": 1, \"currency\": \"CHF\"}", NULL, CRM_E_INVALID, "/currency");
    put_fails("CHF", "[1]", NULL, CRM_E_INVALID, "");
    put_fails("CHF", "0.9", NULL, CRM_E_INVALID, "");
    /* Both at fault: both named. */
    put_fails("XXX", "{\"rate\": 0}", NULL, CRM_E_INVALID, "currency");
    put_fails("XXX", "{\"rate\": 0}", NULL, CRM_E_INVALID, "/rate");
    ck_assert_int_eq(rows_of("CHF"), 0);
    ck_assert_int_eq(rows_of("XAU"), 0);
    ck_assert_int_eq(rows_of("EUR"), 0);
    /* Just inside the bounds. */
    long long v;
    json_decref(put_ok("CHF", "{\"rate\": 999999999.99}", NULL, true, &v));
    json_decref(put_ok("CHF", "{\"rate\": 1e-12}", NULL, false, &v));
}
END_TEST

START_TEST(if_match_guards_a_put_and_a_delete)
{
    /* Nothing to match: 412, nothing created. */
    put_fails("NOK", "{\"rate\": 0.085}", "*", CRM_E_PRECONDITION, NULL);
    put_fails("NOK", "{\"rate\": 0.085}", "\"1\"", CRM_E_PRECONDITION, NULL);
    ck_assert_int_eq(rows_of("NOK"), 0);
    long long v1, v2;
    json_decref(put_ok("NOK", "{\"rate\": 0.085}", NULL, true, &v1));
    char tag[32], stale[32], list[80];
    snprintf(tag, sizeof tag, "\"%lld\"", v1);
    snprintf(stale, sizeof stale, "\"%lld\"", v1 - 1);
    snprintf(list, sizeof list, "\"1\", %s", tag);

    /* A stale tag: 412 naming the current one, the rate unchanged. */
    crm_error err = CRM_ERROR_INIT;
    crm_rate_doc doc = {0};
    bool created;
    json_t *b = body("{\"rate\": 0.5}");
    ck_assert(!crm_metrics_rate_put("NOK", b, stale, &doc, &created, &err));
    json_decref(b);
    ck_assert_int_eq(err.code, CRM_E_PRECONDITION);
    ck_assert_ptr_nonnull(strstr(err.detail, tag));
    crm_error_clear(&err);
    ck_assert(crm_metrics_rate_get("NOK", &doc, &err));
    ck_assert_int_eq(doc.version, v1);
    crm_rate_doc_free(&doc);

    /* Unquoted: malformed, before anything is read. */
    char bare[32];
    snprintf(bare, sizeof bare, "%lld", v1);
    put_fails("NOK", "{\"rate\": 0.5}", bare, CRM_E_MALFORMED, NULL);

    /* The current tag, in a list, or *: the write happens. */
    json_decref(put_ok("NOK", "{\"rate\": 0.086}", list, false, &v2));
    ck_assert_int_gt(v2, v1);
    json_decref(put_ok("NOK", "{\"rate\": 0.087}", "*", false, &v2));

    /* Delete: the stale tag is refused and the rate stays; the current one removes it. */
    ck_assert(!crm_metrics_rate_delete("NOK", tag, &err));
    ck_assert_int_eq(err.code, CRM_E_PRECONDITION);
    crm_error_clear(&err);
    ck_assert(!crm_metrics_rate_delete("NOK", "nonsense", &err));
    ck_assert_int_eq(err.code, CRM_E_MALFORMED);
    crm_error_clear(&err);
    ck_assert_int_eq(rows_of("NOK"), 1);
    snprintf(tag, sizeof tag, "\"%lld\"", v2);
    ck_assert_msg(crm_metrics_rate_delete("NOK", tag, &err), "delete: %s", err.detail);
    ck_assert_int_eq(rows_of("NOK"), 0);
}
END_TEST

START_TEST(get_and_delete_of_an_absent_rate_are_not_found)
{
    crm_error err = CRM_ERROR_INIT;
    crm_rate_doc doc = {0};
    ck_assert(!crm_metrics_rate_get("SEK", &doc, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    ck_assert(!crm_metrics_rate_get("not a code at all", &doc, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    ck_assert(!crm_metrics_rate_delete("SEK", NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    ck_assert(!crm_metrics_rate_delete("SEK", "*", &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    long long v;
    json_decref(put_ok("SEK", "{\"rate\": 0.09}", NULL, true, &v));
    ck_assert(crm_metrics_rate_delete("SEK", NULL, &err));
    ck_assert(!crm_metrics_rate_delete("SEK", NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
}
END_TEST

/* A page of the list as JSON. */
static json_t *list_page(const char *after, int limit)
{
    crm_error err = CRM_ERROR_INIT;
    size_t len = 0;
    char *text = crm_metrics_rates_list(after, limit, &len, &err);
    ck_assert_msg(text != NULL, "list: %s", err.detail);
    json_t *page = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(page);
    ck_assert_uint_eq(len, strlen(text));
    free(text);
    return page;
}

/* The currencies of page's items among ours (the shared database may hold
 * others), joined into out. */
static void ours_on(const json_t *page, char *out, size_t size)
{
    out[0] = '\0';
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(page, "data"), i, item) {
        const char *c = json_string_value(json_object_get(item, "currency"));
        ck_assert_str_eq(json_string_value(json_object_get(item, "reporting_currency")), "EUR");
        if (strcmp(c, "CHF") == 0 || strcmp(c, "JPY") == 0 || strcmp(c, "SEK") == 0) {
            strncat(out, c, size - strlen(out) - 1);
            strncat(out, " ", size - strlen(out) - 1);
        }
    }
}

START_TEST(the_list_pages_through_the_rates_in_currency_order)
{
    long long v;
    json_decref(put_ok("SEK", "{\"rate\": 0.09}", NULL, true, &v));
    json_decref(put_ok("CHF", "{\"rate\": 1.07}", NULL, true, &v));
    json_decref(put_ok("JPY", "{\"rate\": 0.0061}", NULL, true, &v));
    /* Page by page, one rate a page: every rate once, in order. */
    char seen[64] = "", ours[64], prev[4] = "";
    char *after = NULL;
    for (int pages = 0;; pages++) {
        ck_assert_int_lt(pages, 200);
        json_t *page = list_page(after, 1);
        free(after);
        after = NULL;
        json_t *data = json_object_get(page, "data");
        ck_assert_uint_le(json_array_size(data), 1);
        if (json_array_size(data) == 1) {
            const char *c = json_string_value(json_object_get(json_array_get(data, 0), "currency"));
            ck_assert_msg(strcmp(prev, c) < 0, "'%s' after '%s'", c, prev);
            snprintf(prev, sizeof prev, "%s", c);
        }
        ours_on(page, ours, sizeof ours);
        size_t used = strlen(seen);
        snprintf(seen + used, sizeof seen - used, "%s", ours);
        const json_t *next = json_object_get(page, "next_cursor");
        if (json_is_null(next)) {
            json_decref(page);
            break;
        }
        after = strdup(json_string_value(next));
        json_decref(page);
    }
    ck_assert_str_eq(seen, "CHF JPY SEK ");
    /* One page holds them all. */
    json_t *page = list_page(NULL, 200);
    ours_on(page, ours, sizeof ours);
    ck_assert_str_eq(ours, "CHF JPY SEK ");
    ck_assert(json_is_null(json_object_get(page, "next_cursor")));
    json_decref(page);
}
END_TEST

START_TEST(the_list_refuses_a_cursor_it_did_not_make)
{
    crm_cursor other;
    crm_cursor_init(&other, CRM_CURSOR_BY_ID, 0); /* another list's */
    crm_cursor_add_int(&other, 3);
    crm_error err = CRM_ERROR_INIT;
    char *foreign = crm_cursor_encode(&other, &err);
    ck_assert_ptr_nonnull(foreign);
    const char *bad[] = {foreign, "abc", "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = 0;
        ck_assert_ptr_null(crm_metrics_rates_list(bad[i], 10, &len, &err));
        ck_assert_int_eq(err.code, CRM_E_INVALID);
        ck_assert(unit_has_field_error(&err, "after"));
        crm_error_clear(&err);
    }
    free(foreign);
}
END_TEST

Suite *currency_suite(void)
{
    Suite *s = suite_create("currency");
    TCase *iso = tcase_create("iso4217");
    tcase_add_test(iso, the_list_is_sorted_three_uppercase_letters_each_without_repeats);
    tcase_add_test(iso, every_listed_code_is_found);
    tcase_add_test(iso, the_currencies_in_circulation_are_known);
    tcase_add_test(iso, funds_metals_test_codes_replaced_currencies_and_malformed_codes_are_not);
    tcase_add_test(iso, the_contract_lists_the_same_codes);
    tcase_add_test(iso, a_rate_is_written_with_the_fewest_digits_that_read_back);
    suite_add_tcase(s, iso);
    TCase *rates = tcase_create("rates");
    tcase_add_checked_fixture(rates, setup_db, teardown_db);
    tcase_add_test(rates, a_put_creates_then_replaces_and_the_version_moves_forward);
    tcase_add_test(rates, the_version_moves_forward_even_when_the_clock_does_not);
    tcase_add_test(rates, a_put_refuses_bad_codes_the_reporting_currency_and_bad_rates_writing_nothing);
    tcase_add_test(rates, if_match_guards_a_put_and_a_delete);
    tcase_add_test(rates, get_and_delete_of_an_absent_rate_are_not_found);
    tcase_add_test(rates, the_list_pages_through_the_rates_in_currency_order);
    tcase_add_test(rates, the_list_refuses_a_cursor_it_did_not_make);
    suite_add_tcase(s, rates);
    return s;
}

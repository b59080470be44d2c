/*
 * test_timestamps.c — a client's RFC 3339 date-time on its way to SQL
 * (crm_rfc3339_to_utc): what it becomes, that every value C accepts is one
 * PostgreSQL accepts with the same instant (many random strings, edge years,
 * leap seconds, offsets up to +-23:59, fractions of up to 9 digits), and
 * that touchpoints whose offset PostgreSQL would refuse are stored, one by
 * one and in batches, at the right instant.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customers.h"
#include "suites.h"
#include "support.h"
#include "touchpoints.h"

static const char *utc(const char *in)
{
    static char out[CRM_RFC3339_UTC_SIZE];
    return crm_rfc3339_to_utc(in, out, sizeof out) ? out : NULL;
}

START_TEST(offsets_fractions_and_leap_seconds_become_utc)
{
    ck_assert_str_eq(utc("2026-11-23T10:15:00Z"), "2026-11-23T10:15:00Z");
    ck_assert_str_eq(utc("2026-11-23t10:15:00z"), "2026-11-23T10:15:00Z");
    ck_assert_str_eq(utc("2026-11-01T00:30:00+23:59"), "2026-10-31T00:31:00Z");
    ck_assert_str_eq(utc("2026-12-31T20:00:00-18:00"), "2027-01-01T14:00:00Z");
    ck_assert_str_eq(utc("2024-03-01T00:00:00.5+01:00"), "2024-02-29T23:00:00.5Z");
    ck_assert_str_eq(utc("2026-11-23T10:15:00.123456789-00:00"), "2026-11-23T10:15:00.123456789Z");
    /* A leap second is the next minute's first second, as PostgreSQL reads it. */
    ck_assert_str_eq(utc("2016-12-31T23:59:60Z"), "2017-01-01T00:00:00Z");
    ck_assert_str_eq(utc("2016-12-31T23:59:60.25+00:30"), "2016-12-31T23:30:00.25Z");
    /* The years 0001 to 9999, in UTC. */
    ck_assert_str_eq(utc("0001-01-01T00:00:00Z"), "0001-01-01T00:00:00Z");
    ck_assert_str_eq(utc("0001-01-01T23:00:00+23:00"), "0001-01-01T00:00:00Z");
    ck_assert_ptr_null(utc("0001-01-01T00:00:00+00:01"));
    ck_assert_str_eq(utc("9999-12-31T23:59:59.999999999Z"), "9999-12-31T23:59:59.999999999Z");
    ck_assert_ptr_null(utc("9999-12-31T23:59:59-00:01"));
    ck_assert_ptr_null(utc("9999-12-31T23:59:60Z"));
    /* Not RFC 3339. */
    ck_assert_ptr_null(utc("2026-11-23T10:15:00+24:00"));
    ck_assert_ptr_null(utc("2026-11-23T10:15:00+01:60"));
    ck_assert_ptr_null(utc("2026-11-23T10:15:00.1234567890Z"));
    ck_assert_ptr_null(utc("2026-02-29T10:15:00Z"));
    ck_assert_ptr_null(utc("2026-11-23T10:15:00+0100"));
    ck_assert_ptr_null(utc(""));
    /* Too small a buffer: false and empty, never cut. */
    char small[20] = "x";
    ck_assert(!crm_rfc3339_to_utc("2026-11-23T10:15:00.5Z", small, sizeof small));
    ck_assert_str_eq(small, "");
    long long ms;
    ck_assert(crm_rfc3339_epoch_ms("1970-01-01T00:00:00.0019+23:59", &ms));
    ck_assert_int_eq(ms, -86340000LL + 1);
}
END_TEST

/* ---- C acceptance is within PostgreSQL acceptance --------------------------------- */

static uint64_t rng_state;

static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13; /* xorshift64: reproducible from the seed printed */
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

/* A random date-time near and beyond RFC 3339's rules: edge years, day 29
 * to 31, the first and last day of the years 0001 and 9999, hour 24, minute and second 60 and 61, offsets past 23:59, fractions
 * of 0 to 10 digits, lower-case separators. */
static void random_timestamp(char *out, size_t size)
{
    static const int years[] = {1, 2, 1969, 1970, 2000, 2026, 9998, 9999};
    int year = rnd(2) ? years[rnd(8)] : 1 + (int)rnd(9999);
    int month = 1 + (int)rnd(12), day = rnd(4) ? 1 + (int)rnd(28) : 29 + (int)rnd(3);
    unsigned edge = rnd(16); /* the first and the last day UTC can hold */
    if (edge == 0)
        year = month = day = 1;
    else if (edge == 1)
        year = 9999, month = 12, day = 31;
    int hour = rnd(10) ? (int)rnd(24) : 23 + (int)rnd(2);
    int minute = rnd(10) ? (int)rnd(60) : 59 + (int)rnd(2);
    int second = rnd(5) ? (int)rnd(60) : 59 + (int)rnd(3);
    char frac[16] = "";
    unsigned digits = rnd(3) ? 0 : 1 + rnd(10);
    if (digits > 0) {
        frac[0] = '.';
        for (unsigned i = 1; i <= digits; i++)
            frac[i] = (char)('0' + (rnd(3) ? 9 : rnd(10)));
        frac[digits + 1] = '\0';
    }
    char zone[16];
    if (rnd(4) == 0)
        snprintf(zone, sizeof zone, "%s", rnd(2) ? "Z" : "z");
    else
        snprintf(zone, sizeof zone, "%c%02d:%02d", rnd(2) ? '+' : '-',
                 rnd(3) ? (int)rnd(24) : 23 + (int)rnd(2),
                 rnd(3) ? (int)rnd(60) : 59 + (int)rnd(2));
    snprintf(out, size, "%04d-%02d-%02d%c%02d:%02d:%02d%s%s", year, month, day,
             rnd(8) ? 'T' : 't', hour, minute, second, frac, zone);
}

/* Appends s to a PostgreSQL array literal (values need no quoting). */
static void append(char **arr, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 3 > *cap) {
        *cap = (*cap + n + 3) * 2;
        *arr = realloc(*arr, *cap);
        ck_assert_ptr_nonnull(*arr);
    }
    char sep = *len == 0 ? '{' : ',';
    (*arr)[(*len)++] = sep;
    memcpy(*arr + *len, s, n);
    *len += n;
    (*arr)[*len] = '}';
    (*arr)[*len + 1] = '\0';
}

START_TEST(every_date_time_c_accepts_postgresql_reads_as_the_same_instant)
{
    PGconn *conn = unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));
    rng_state = 0x9e3779b97f4a7c15ULL;
    enum { N = 20000 };
    char *local = NULL, *offsets = NULL, *norms = NULL, *origs = NULL, *leaps = NULL;
    size_t ll = 0, lc = 0, ol = 0, oc = 0, nl = 0, nc = 0, gl = 0, gc = 0, pl = 0, pc = 0;
    int accepted = 0, big_offsets = 0, leap = 0, edge_years = 0, out_of_range = 0;
    for (int i = 0; i < N; i++) {
        char s[64], out[CRM_RFC3339_UTC_SIZE];
        random_timestamp(s, sizeof s);
        if (!crm_rfc3339_to_utc(s, out, sizeof out)) {
            out_of_range += crm_rfc3339_valid(s);
            continue;
        }
        accepted++;
        /* What PostgreSQL is asked: the local date-time as a timestamp (no
         * zone), minus the offset, against the normalized text. */
        const char *zone = s + 19 + strcspn(s + 19, "Zz+-");
        /* A leap second goes as :59 plus one second: PostgreSQL refuses
         * :60 with a fraction, and C reads :60 as PostgreSQL reads :60.0. */
        bool is_leap = strncmp(s + 17, "60", 2) == 0;
        char loc[48], off[16];
        snprintf(loc, sizeof loc, "%.10s %.6s%s%.*s", s, s + 11, is_leap ? "59" : "",
                 (int)(zone - s - 17 - (is_leap ? 2 : 0)), s + 17 + (is_leap ? 2 : 0));
        int minutes = 0;
        if (*zone == '+' || *zone == '-')
            minutes = (atoi(zone + 1) * 60 + atoi(zone + 4)) * (*zone == '-' ? -1 : 1);
        snprintf(off, sizeof off, "%d", minutes);
        big_offsets += minutes > 959 || minutes < -959;
        leap += is_leap;
        edge_years += strncmp(s, "0001", 4) == 0 || strncmp(s, "9999", 4) == 0;
        append(&local, &ll, &lc, loc);
        append(&offsets, &ol, &oc, off);
        append(&norms, &nl, &nc, out);
        append(&origs, &gl, &gc, s);
        append(&leaps, &pl, &pc, is_leap ? "t" : "f");
    }
    ck_assert_msg(accepted > N / 4 && big_offsets > 100 && leap > 50 && edge_years > 200 &&
                      out_of_range > 10,
                  "the generator missed cases: %d accepted, %d offsets past 15:59, %d leap, "
                  "%d edge years, %d out of range",
                  accepted, big_offsets, leap, edge_years, out_of_range);
    const char *params[] = {local, offsets, norms, origs, leaps};
    PGresult *res = PQexecParams(
        conn,
        "SELECT orig, norm FROM unnest($1::text[], $2::int[], $3::text[], $4::text[],"
        " $5::bool[]) AS u(local, off, norm, orig, leap)"
        " WHERE (norm::timestamptz AT TIME ZONE 'UTC') IS DISTINCT FROM local::timestamp"
        "       + make_interval(secs => CASE WHEN leap THEN 1 ELSE 0 END)"
        "       - make_interval(mins => off)"
        "    OR (abs(off) < 960 AND NOT leap"
        "        AND orig::timestamptz IS DISTINCT FROM norm::timestamptz)",
        5, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "PostgreSQL refused a value: %s",
                  PQresultErrorMessage(res));
    ck_assert_msg(PQntuples(res) == 0, "%d of %d differ, first %s -> %s", PQntuples(res),
                  accepted, PQntuples(res) ? PQgetvalue(res, 0, 0) : "",
                  PQntuples(res) ? PQgetvalue(res, 0, 1) : "");
    PQclear(res);
    free(local);
    free(offsets);
    free(norms);
    free(origs);
    free(leaps);
    PQfinish(conn);
}
END_TEST

/* ---- touchpoints ----------------------------------------------------------------- */

static PGconn *direct;
static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};

static void setup_db(void)
{
    direct = unit_db_start(4);
}

static void teardown_db(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

static long long new_customer(void)
{
    return unit_sql_long(direct, "INSERT INTO customers (first_name) VALUES ('Tim') RETURNING id",
                         0, NULL);
}

static json_t *visit(long long customer, const char *source, const char *event, const char *at)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "customer_id", (json_int_t)customer,
                     "channel", "web", "type", "page_view", "direction", "inbound", "occurred_at",
                     at, "source", source, "event_id", event);
}

/* True when the touchpoint (source, event) is stored at the instant utc_text. */
static bool stored_at(const char *source, const char *event, const char *utc_text)
{
    const char *p[] = {source, event, utc_text};
    return unit_sql_long(direct,
                         "SELECT count(*) FROM touchpoints WHERE source = $1 AND event_id = $2"
                         " AND occurred_at = $3::timestamptz",
                         3, p) == 1;
}

START_TEST(a_touchpoint_with_an_offset_of_23_59_is_stored_at_its_instant)
{
    char source[48];
    unit_unique(source, sizeof source, "tz1");
    json_t *body = visit(new_customer(), source, "e", "2026-11-01T00:30:00.123456+23:59");
    bool created = false;
    crm_error err = CRM_ERROR_INIT;
    json_t *rep = crm_touchpoint_record(body, &ctx, &created, &err);
    ck_assert_msg(rep != NULL, "%s", err.detail);
    ck_assert(created);
    ck_assert(stored_at(source, "e", "2026-10-31T00:31:00.123456Z"));
    json_decref(rep);
    json_decref(body);
}
END_TEST

static const char *item_status(json_t *report, size_t i, const char **field)
{
    json_t *item = json_array_get(json_object_get(report, "items"), i);
    *field = json_string_value(
        json_object_get(json_array_get(json_object_get(item, "errors"), 0), "field"));
    return json_string_value(json_object_get(item, "status"));
}

START_TEST(a_batch_stores_its_far_offsets_and_rejects_only_what_utc_cannot_hold)
{
    /* A few items go in by INSERT (_i = 0), many by COPY (_i = 1). */
    int extra = _i == 0 ? 0 : CRM_TOUCHPOINT_COPY_FROM_ITEMS;
    char source[48];
    unit_unique(source, sizeof source, "tz2");
    long long id = new_customer();
    json_t *items = json_array();
    json_array_append_new(items, visit(id, source, "good", "2026-11-01T10:00:00Z"));
    json_array_append_new(items, visit(id, source, "west", "2026-11-01T10:00:00-18:00"));
    json_array_append_new(items, visit(id, source, "year0", "0001-01-01T00:30:00+01:00"));
    json_array_append_new(items, visit(id, source, "east", "2026-11-01T10:00:00+23:59"));
    for (int i = 0; i < extra; i++) {
        char e[16];
        snprintf(e, sizeof e, "pad-%d", i);
        json_array_append_new(items, visit(id, source, e, "2026-11-01T11:00:00+20:00"));
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
    ck_assert_msg(report != NULL, "%s", err.detail);
    const char *field;
    ck_assert_str_eq(item_status(report, 0, &field), "created");
    ck_assert_str_eq(item_status(report, 1, &field), "created");
    ck_assert_str_eq(item_status(report, 2, &field), "rejected");
    ck_assert_str_eq(field, "/occurred_at");
    ck_assert_str_eq(item_status(report, 3, &field), "created");
    ck_assert_int_eq(json_integer_value(json_object_get(report, "created")), 3 + extra);
    ck_assert(stored_at(source, "good", "2026-11-01T10:00:00Z"));
    ck_assert(stored_at(source, "west", "2026-11-02T04:00:00Z"));
    ck_assert(stored_at(source, "east", "2026-10-31T10:01:00Z"));
    if (extra > 0)
        ck_assert(stored_at(source, "pad-3", "2026-10-31T15:00:00Z"));
    json_decref(report);
    json_decref(items);
}
END_TEST

Suite *timestamps_suite(void)
{
    Suite *s = suite_create("timestamps");
    TCase *pure = tcase_create("utc");
    tcase_add_test(pure, offsets_fractions_and_leap_seconds_become_utc);
    tcase_add_test(pure, every_date_time_c_accepts_postgresql_reads_as_the_same_instant);
    tcase_set_timeout(pure, 120);
    suite_add_tcase(s, pure);
    TCase *tc = tcase_create("touchpoints");
    tcase_add_unchecked_fixture(tc, setup_db, teardown_db);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_touchpoint_with_an_offset_of_23_59_is_stored_at_its_instant);
    tcase_add_loop_test(tc, a_batch_stores_its_far_offsets_and_rejects_only_what_utc_cannot_hold,
                        0, 2);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_touchpoint_drift.c — a touchpoint that breaks a rule of the database
 * that the C validator does not know (a CHECK added behind its back, here
 * test_drift on campaign_id) fails alone: in a batch of a few (INSERT) and
 * of many (COPY) the others are stored and it is rejected in its item
 * result; alone it is a 422 (CRM_E_INVALID), never a 500.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customers.h"
#include "suites.h"
#include "support.h"
#include "touchpoints.h"

static PGconn *direct;
static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};

static void drop_rule(void)
{
    PQclear(unit_sql(direct, "ALTER TABLE touchpoints DROP CONSTRAINT IF EXISTS test_drift", 0,
                     NULL));
}

static void setup_db(void)
{
    direct = unit_db_start(2);
}

static void teardown_db(void)
{
    drop_rule(); /* also when a test failed half-way */
    unit_db_stop(direct);
    direct = NULL;
}

static json_t *visit(long long customer, const char *source, const char *event,
                     const char *campaign)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "customer_id",
                     (json_int_t)customer, "channel", "web", "type", "visit", "direction",
                     "inbound", "occurred_at", "2026-11-01T10:00:00Z", "source", source,
                     "event_id", event, "campaign_id", campaign);
}

static long count_of(const char *sql, const char *param)
{
    const char *params[] = {param};
    return unit_sql_long(direct, sql, 1, params);
}

START_TEST(a_batch_rejects_only_the_item_that_breaks_an_unknown_check)
{
    /* _i = 0: three items (INSERT); _i = 1: with 20 more (COPY). The bad
     * items sit first, in the middle and last. */
    int extra = _i == 0 ? 0 : 20;
    char source[48];
    unit_unique(source, sizeof source, "drift");
    long long c = unit_sql_long(
        direct, "INSERT INTO customers (first_name) VALUES ('Drift') RETURNING id", 0, NULL);
    PQclear(unit_sql(direct,
                     "ALTER TABLE touchpoints ADD CONSTRAINT test_drift"
                     " CHECK (campaign_id IS DISTINCT FROM 'forbidden')",
                     0, NULL));
    json_t *items = json_array();
    int n = 3 + extra;
    for (int i = 0; i < n; i++) {
        char event[24];
        snprintf(event, sizeof event, "e-%d", i);
        bool bad = i == 0 || i == n / 2 || i == n - 1;
        json_array_append_new(items, visit(c, source, event, bad ? "forbidden" : "spring"));
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *report = crm_touchpoint_record_batch(items, &ctx, &err);
    ck_assert_msg(report != NULL, "the whole batch failed: %s", err.detail);
    for (int i = 0; i < n; i++) {
        bool bad = i == 0 || i == n / 2 || i == n - 1;
        json_t *item = json_array_get(json_object_get(report, "items"), (size_t)i);
        ck_assert_str_eq(json_string_value(json_object_get(item, "status")),
                         bad ? "rejected" : "created");
        if (bad)
            ck_assert_uint_eq(json_array_size(json_object_get(item, "errors")), 1);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(report, "rejected")), 3);
    ck_assert_int_eq(count_of("SELECT count(*) FROM touchpoints WHERE source = $1", source), n - 3);

    /* The same batch again: the stored ones are duplicates, the bad ones
     * still rejected, nothing fails. */
    json_t *again = crm_touchpoint_record_batch(items, &ctx, &err);
    ck_assert_msg(again != NULL, "the second batch failed: %s", err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(again, "duplicates")), n - 3);
    ck_assert_int_eq(json_integer_value(json_object_get(again, "rejected")), 3);

    /* One touchpoint alone: 422, not a 500. */
    json_t *one = visit(c, source, "single", "forbidden");
    bool created = false;
    json_t *rep = crm_touchpoint_record(one, &ctx, &created, &err);
    ck_assert_ptr_null(rep);
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    drop_rule();
    json_decref(one);
    json_decref(again);
    json_decref(report);
    json_decref(items);
}
END_TEST

Suite *touchpoint_drift_suite(void)
{
    Suite *s = suite_create("touchpoint_drift");
    TCase *tc = tcase_create("drift");
    tcase_add_unchecked_fixture(tc, setup_db, teardown_db);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, a_batch_rejects_only_the_item_that_breaks_an_unknown_check, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

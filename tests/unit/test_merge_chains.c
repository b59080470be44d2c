/*
 * test_merge_chains.c — merged ids stay one hop from their survivor: twenty
 * successive merges (each survivor merged into the next customer) leave
 * every old id naming the last survivor, readable as it (the readers follow
 * at most 16 hops, so the oldest ids answered 404 before), with an audit row
 * for each alias moved; and migration 0012 compresses chains stored before.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customer_merge.h"
#include "customers.h"
#include "embedded.h"
#include "suites.h"
#include "support.h"

#define CHAIN 20

static PGconn *direct;
static const crm_write_ctx ctx = {.api_key_id = 0, .idempotency_key = NULL};

static void setup_db(void)
{
    direct = unit_db_start(2);
}

static void teardown_db(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

static long long new_customer(void)
{
    return unit_sql_long(direct, "INSERT INTO customers (first_name) VALUES ('Link') RETURNING id",
                         0, NULL);
}

static long long merged_into(long long id)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", id);
    const char *p[] = {text};
    return unit_sql_long(direct, "SELECT merged_into FROM customers WHERE id = $1", 1, p);
}

/* crm_customer_get of id answers the customer want. */
static void assert_reads_as(long long id, long long want)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *rep = crm_customer_get(id, false, &err);
    ck_assert_msg(rep != NULL, "id %lld: %s", id, err.detail);
    ck_assert_int_eq(json_integer_value(json_object_get(rep, "id")), want);
    json_decref(rep);
}

START_TEST(twenty_successive_merges_leave_every_old_id_one_hop_from_the_survivor)
{
    long long ids[CHAIN + 1];
    for (int i = 0; i <= CHAIN; i++)
        ids[i] = new_customer();
    for (int i = 0; i < CHAIN; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"merge_ids\": [%lld]}", ids[i]);
        json_t *body = json_loads(text, 0, NULL);
        bool dry = true;
        crm_error err = CRM_ERROR_INIT;
        json_t *rep = crm_customer_merge(ids[i + 1], body, &ctx, &dry, &err);
        ck_assert_msg(rep != NULL, "merge %d: %s", i, err.detail);
        json_decref(rep);
        json_decref(body);
        for (int k = 0; k <= i; k++)
            ck_assert_msg(merged_into(ids[k]) == ids[i + 1],
                          "after merge %d, id %d names %lld, not the survivor %lld", i, k,
                          merged_into(ids[k]), ids[i + 1]);
    }
    for (int k = 0; k <= CHAIN; k++)
        assert_reads_as(ids[k], ids[CHAIN]);
    /* The oldest alias moved 19 times after its own merge, each with an
     * audit row saying from where to where. */
    char first[24];
    snprintf(first, sizeof first, "%lld", ids[0]);
    const char *p[] = {first};
    ck_assert_int_eq(unit_sql_long(direct,
                                   "SELECT count(*) FROM customer_audit WHERE customer_id = $1"
                                   " AND action = 'merge' AND changes ? 'merged_into'"
                                   " AND changes->'merged_into' ? 'from'"
                                   " AND changes->'merged_into'->>'from' IS NOT NULL",
                                   1, p),
                     CHAIN - 1);
}
END_TEST

static const char *migration(const char *name)
{
    for (size_t i = 0; i < crm_migration_files_count; i++)
        if (crm_migration_files[i].name != NULL && strcmp(crm_migration_files[i].name, name) == 0)
            return crm_migration_files[i].data;
    ck_abort_msg("no migration %s", name);
    return NULL;
}

START_TEST(migration_0012_compresses_chains_stored_before)
{
    /* A chain as merges left it before: each id merged into the next. */
    long long ids[CHAIN + 1];
    for (int i = 0; i <= CHAIN; i++)
        ids[i] = new_customer();
    for (int i = 0; i < CHAIN; i++) {
        char a[24], b[24];
        snprintf(a, sizeof a, "%lld", ids[i]);
        snprintf(b, sizeof b, "%lld", ids[i + 1]);
        const char *p[] = {a, b};
        PQclear(unit_sql(direct,
                         "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1",
                         2, p));
    }
    /* The readers give up after 16 hops: the oldest id is lost. */
    crm_error err = CRM_ERROR_INIT;
    json_t *lost = crm_customer_get(ids[0], false, &err);
    ck_assert_ptr_null(lost);
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);

    PQclear(unit_sql(direct, migration("0012_compress_merge_chains.sql"), 0, NULL));
    for (int k = 0; k < CHAIN; k++)
        ck_assert_int_eq(merged_into(ids[k]), ids[CHAIN]);
    for (int k = 0; k <= CHAIN; k++)
        assert_reads_as(ids[k], ids[CHAIN]);
    /* Run again, it changes nothing. */
    PGresult *res = unit_sql(direct, migration("0012_compress_merge_chains.sql"), 0, NULL);
    ck_assert_str_eq(PQcmdTuples(res), "0");
    PQclear(res);
}
END_TEST

Suite *merge_chains_suite(void)
{
    Suite *s = suite_create("merge_chains");
    TCase *tc = tcase_create("chains");
    tcase_add_unchecked_fixture(tc, setup_db, teardown_db);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, twenty_successive_merges_leave_every_old_id_one_hop_from_the_survivor);
    tcase_add_test(tc, migration_0012_compresses_chains_stored_before);
    suite_add_tcase(s, tc);
    return s;
}

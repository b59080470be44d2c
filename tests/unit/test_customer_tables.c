/*
 * test_customer_tables.c — the registry of customer-attached tables
 * (customer_tables.h) matches the schema: every table with a customer_id
 * column, or with a foreign key to customers, is registered with a decision
 * for merge, erasure and export; every registered table and column exists.
 * A table added by a migration without its registry entry fails here.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "customer_tables.h"
#include "suites.h"
#include "support.h"

static PGconn *direct;

static void setup_db(void)
{
    direct = unit_db_start(1);
}

static void teardown_db(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

START_TEST(every_table_holding_a_customer_id_is_registered)
{
    /* Columns named customer_id or customer_ids (arrays of them), and
     * columns with a foreign key to customers (whatever their name), of
     * every table but customers. */
    PGresult *res =
        unit_sql(direct,
                 "SELECT table_name::text, column_name::text FROM information_schema.columns"
                 " WHERE table_schema = current_schema()"
                 "   AND column_name IN ('customer_id', 'customer_ids')"
                 "   AND table_name IN (SELECT table_name FROM information_schema.tables"
                 "                      WHERE table_schema = current_schema()"
                 "                        AND table_type = 'BASE TABLE')"
                 " UNION "
                 "SELECT k.conrelid::regclass::text, a.attname::text FROM pg_constraint k"
                 " JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)"
                 " WHERE k.contype = 'f' AND k.confrelid = 'customers'::regclass"
                 "   AND k.conrelid <> 'customers'::regclass"
                 " ORDER BY 1, 2",
                 0, NULL);
    ck_assert_int_gt(PQntuples(res), 4);
    for (int r = 0; r < PQntuples(res); r++) {
        const char *table = PQgetvalue(res, r, 0), *column = PQgetvalue(res, r, 1);
        const crm_customer_table *t = crm_customer_table_find(table);
        ck_assert_msg(t != NULL,
                      "table %s holds a customer id (%s) but is not in crm_customer_tables: "
                      "decide what merge, erasure and export do with its rows",
                      table, column);
        ck_assert_msg(strcmp(t->column, column) == 0, "%s: registered column %s, schema has %s",
                      table, t->column, column);
    }
    PQclear(res);
}
END_TEST

START_TEST(every_registered_table_exists_with_a_decision_for_each_right)
{
    for (size_t i = 0; i < crm_customer_tables_count; i++) {
        const crm_customer_table *t = &crm_customer_tables[i];
        const char *params[] = {t->name, t->column};
        ck_assert_msg(unit_sql_long(direct,
                                    "SELECT count(*) FROM information_schema.columns"
                                    " WHERE table_schema = current_schema()"
                                    "   AND table_name = $1 AND column_name = $2",
                                    2, params) == 1,
                      "%s.%s is registered but not in the schema", t->name, t->column);
        ck_assert_msg(t->merge && *t->merge && t->erase && *t->erase && t->export && *t->export,
                      "%s lacks the words for merge, erase or export", t->name);
        ck_assert_ptr_eq(crm_customer_table_find(t->name), t); /* registered once */
    }
}
END_TEST

Suite *customer_tables_suite(void)
{
    Suite *s = suite_create("customer_tables");
    TCase *tc = tcase_create("registry");
    tcase_add_unchecked_fixture(tc, setup_db, teardown_db);
    tcase_add_test(tc, every_table_holding_a_customer_id_is_registered);
    tcase_add_test(tc, every_registered_table_exists_with_a_decision_for_each_right);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * test_allow_lists.c — every allow-list of the C validators equals the CHECK
 * constraint of its column, read from pg_constraint: the literals of an
 * IN-list constraint are exactly the C list, and every C value satisfies
 * the constraint (also where it is a pattern, as for currencies). A value C
 * accepts that the database refuses would fail a whole batch (23514); a
 * value the database allows that C refuses is a rule kept in one place only.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaigns/def.h"
#include "consents.h"
#include "customers.h"
#include "suites.h"
#include "support.h"
#include "segments/internal.h"
#include "touchpoints.h"

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

typedef struct allow_list {
    const char *table, *column;
    const char *const *values; /* NULL-terminated */
    bool in_list;              /* the constraint lists the values (else: a pattern) */
} allow_list;

/* The list as a PostgreSQL text[] literal (the values need no quoting). */
static char *array_literal(const char *const *values)
{
    size_t size = 3;
    for (const char *const *v = values; *v != NULL; v++)
        size += strlen(*v) + 3;
    char *out = malloc(size);
    ck_assert_ptr_nonnull(out);
    size_t n = (size_t)snprintf(out, size, "{");
    for (const char *const *v = values; *v != NULL; v++)
        n += (size_t)snprintf(out + n, size - n, "%s\"%s\"", v == values ? "" : ",", *v);
    snprintf(out + n, size - n, "}");
    return out;
}

/* The definition of the one CHECK constraint on table.column alone. */
static char *constraint_of(const char *table, const char *column)
{
    const char *params[] = {table, column};
    PGresult *res = unit_sql(direct,
                             "SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k"
                             " JOIN pg_attribute a ON a.attrelid = k.conrelid"
                             "  AND k.conkey = ARRAY[a.attnum]"
                             " WHERE k.contype = 'c' AND k.conrelid = $1::regclass"
                             "   AND a.attname = $2",
                             2, params);
    ck_assert_msg(PQntuples(res) == 1, "%s.%s has %d CHECK constraints of its own, not one",
                  table, column, PQntuples(res));
    char *def = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    /* A constraint added NOT VALID (it holds for new rows only; migration
     * 0024's touchpoint types) says so after its expression. */
    size_t len = strlen(def), tail = strlen(" NOT VALID");
    if (len > tail && strcmp(def + len - tail, " NOT VALID") == 0)
        def[len - tail] = '\0';
    return def;
}

static void assert_list_equals_check(const allow_list *l)
{
    char *def = constraint_of(l->table, l->column);
    char *values = array_literal(l->values);
    /* Every C value satisfies the constraint: evaluated by PostgreSQL on the
     * values, with the constraint's own expression (catalog text, in a
     * test: never a value from a request). */
    ck_assert(strncmp(def, "CHECK ", 6) == 0);
    size_t size = strlen(def) + 200;
    char *sql = malloc(size);
    ck_assert_ptr_nonnull(sql);
    snprintf(sql, size, "SELECT string_agg(%s, ', ') FROM unnest($1::text[]) AS v(%s) WHERE NOT %s",
             l->column, l->column, def + 6);
    const char *p1[] = {values};
    PGresult *res = unit_sql(direct, sql, 1, p1);
    ck_assert_msg(PQgetisnull(res, 0, 0), "%s.%s refuses what C accepts: %s", l->table,
                  l->column, PQgetvalue(res, 0, 0));
    PQclear(res);
    free(sql);
    if (l->in_list) {
        /* And the constraint lists nothing C does not: its quoted literals. */
        const char *p2[] = {def, values};
        res = unit_sql(direct,
                       "SELECT string_agg(m[1], ', ') FROM regexp_matches($1,"
                       " '''((?:[^'']|'''')*)''::text', 'g') AS m"
                       " WHERE m[1] <> ALL($2::text[])",
                       2, p2);
        ck_assert_msg(PQgetisnull(res, 0, 0), "%s.%s allows what C refuses: %s", l->table,
                      l->column, PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    free(values);
    free(def);
}

START_TEST(every_allow_list_equals_its_check_constraint)
{
    const allow_list lists[] = {
        {"customers", "kind", crm_customer_kinds, true},
        {"customers", "lifecycle_stage", crm_lifecycle_stages, true},
        {"customer_consents", "channel", crm_consent_channels, true},
        {"customer_consents", "purpose", crm_consent_purposes, true},
        {"customer_consents", "status", crm_consent_statuses, true},
        {"touchpoints", "channel", crm_touchpoint_channels, true},
        {"touchpoints", "type", crm_touchpoint_types, true},
        {"touchpoints", "direction", crm_touchpoint_directions, true},
        {"touchpoints", "currency", crm_touchpoint_currencies, false},
        {"touchpoints", "purpose", crm_consent_purposes, true},
        {"contacts", "channel", crm_consent_channels, true},
        {"contacts", "purpose", crm_consent_purposes, true},
        {"contact_policies", "channel", crm_consent_channels, true},
        {"contact_policies", "purpose", crm_consent_purposes, true},
        {"customer_metrics", "lifecycle_stage", rule_metric_stages, true},
        {"campaigns", "purpose", crm_consent_purposes, true},
        {"campaigns", "status", campaign_statuses, true},
        {"campaigns", "currency", crm_touchpoint_currencies, false},
    };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        assert_list_equals_check(&lists[i]);
}
END_TEST

START_TEST(a_list_that_drifted_from_its_constraint_is_caught)
{
    /* The check itself can fail: a C list with one value too many and one
     * too few against touchpoints.direction. */
    static const char *const too_many[] = {"inbound", "outbound", "sideways", NULL};
    char *def = constraint_of("touchpoints", "direction");
    char *values = array_literal(too_many);
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM unnest($1::text[]) AS v(direction) WHERE NOT %s",
             def + 6);
    const char *p[] = {values};
    ck_assert_int_eq(unit_sql_long(direct, sql, 1, p), 1);
    static const char *const too_few[] = {"inbound", NULL};
    free(values);
    values = array_literal(too_few);
    const char *p2[] = {def, values};
    ck_assert_int_eq(unit_sql_long(direct,
                                   "SELECT count(*) FROM regexp_matches($1,"
                                   " '''((?:[^'']|'''')*)''::text', 'g') AS m"
                                   " WHERE m[1] <> ALL($2::text[])",
                                   2, p2),
                     1);
    free(values);
    free(def);
}
END_TEST

Suite *allow_lists_suite(void)
{
    Suite *s = suite_create("allow_lists");
    TCase *tc = tcase_create("checks");
    tcase_add_unchecked_fixture(tc, setup_db, teardown_db);
    tcase_add_test(tc, every_allow_list_equals_its_check_constraint);
    tcase_add_test(tc, a_list_that_drifted_from_its_constraint_is_caught);
    suite_add_tcase(s, tc);
    return s;
}

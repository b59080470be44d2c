/*
 * test_migrate.c — schema migrations (lib/migrate.h), each test on a
 * throwaway database of its own made through CRMD_TEST_ADMIN_URL.
 */
#include <check.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"

#define FILE_OF(n, sql)                                                                            \
    {                                                                                              \
        (n), (sql), sizeof(sql) - 1                                                                \
    }
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static long run_pid; /* the runner's pid: names this run's databases */
static char dbname[64];
static char *conninfo; /* the throwaway database; malloc'd */
static PGconn *conn;   /* a connection to it, for the code under test */
static PGconn *probe;  /* a second one, for looking at the result */

/* Runs in the runner process, before the tests of a case are forked. */
static void remember_run_pid(void)
{
    run_pid = (long)getpid();
}

/* Also in the runner, after the case: a test that crashed (and so skipped
 * its teardown) must not leave its database behind. */
static void drop_leftover_databases(void)
{
    PGconn *admin = unit_connect(unit_env("CRMD_TEST_ADMIN_URL"));
    char pattern[64];
    snprintf(pattern, sizeof pattern, "unit\\_migrate\\_%ld\\_%%", run_pid);
    const char *params[] = {pattern};
    PGresult *res =
        unit_sql(admin, "SELECT datname FROM pg_database WHERE datname LIKE $1", 1, params);
    for (int i = 0; i < PQntuples(res); i++) {
        char *ident =
            PQescapeIdentifier(admin, PQgetvalue(res, i, 0), strlen(PQgetvalue(res, i, 0)));
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
        PQfreemem(ident);
        PQclear(unit_sql(admin, sql, 0, NULL));
    }
    PQclear(res);
    PQfinish(admin);
}

static void create_database(void)
{
    static unsigned serial;
    unsigned char r[4];
    randombytes_buf(r, sizeof r);
    snprintf(dbname, sizeof dbname, "unit_migrate_%ld_%u_%02x%02x%02x%02x", run_pid, serial++, r[0],
             r[1], r[2], r[3]);
    PGconn *admin = unit_connect(unit_env("CRMD_TEST_ADMIN_URL"));
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
    PQclear(unit_sql(admin, sql, 0, NULL));
    PQfinish(admin);
    conninfo = unit_conninfo_with_dbname(unit_env("CRMD_TEST_ADMIN_URL"), dbname);
    conn = unit_connect(conninfo);
    probe = unit_connect(conninfo);
}

static void drop_database(void)
{
    crm_db_shutdown();
    if (conn != NULL)
        PQfinish(conn);
    if (probe != NULL)
        PQfinish(probe);
    conn = probe = NULL;
    free(conninfo);
    conninfo = NULL;
    if (dbname[0] == '\0')
        return;
    PGconn *admin = unit_connect(unit_env("CRMD_TEST_ADMIN_URL"));
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    PQclear(unit_sql(admin, sql, 0, NULL));
    PQfinish(admin);
    dbname[0] = '\0';
}

/* Applies files on conn and fails the test unless that succeeds. */
static int apply_ok(const struct crm_embedded_file *files, size_t count)
{
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_migrate_apply(conn, files, count, &applied, &err), "apply: %s", err.detail);
    return applied;
}

static long recorded_count(void)
{
    return unit_sql_long(probe, "SELECT count(*) FROM crm_schema_migrations", 0, NULL);
}

static bool table_exists(const char *name)
{
    const char *params[] = {name};
    return unit_sql_long(probe, "SELECT count(*) FROM pg_tables WHERE tablename = $1", 1, params) ==
           1;
}

/* Advisory locks held in the throwaway database (pg_locks spans the cluster). */
static long advisory_locks_held(void)
{
    return unit_sql_long(probe,
                         "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                         "(SELECT oid FROM pg_database WHERE datname = current_database())",
                         0, NULL);
}

static void sha256_hex(const char *data, size_t size, char out[65])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)data, size);
    sodium_bin2hex(out, 65, digest, sizeof digest);
}

static const struct crm_embedded_file two_files[] = {
    FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x int);"),
    FILE_OF("0002_second.sql", "CREATE TABLE unit_second (y int);"),
};

/* ---- the embedded migrations ---------------------------------------- */

START_TEST(test_embedded_migrations_exist_and_are_ordered)
{
    ck_assert_uint_gt(crm_migration_files_count, 0);
    for (size_t i = 1; i < crm_migration_files_count; i++)
        ck_assert_int_lt(strcmp(crm_migration_files[i - 1].name, crm_migration_files[i].name), 0);
    ck_assert_ptr_null(crm_migration_files[crm_migration_files_count].name);
}
END_TEST

START_TEST(test_embedded_migrations_apply_to_empty_database)
{
    int applied = apply_ok(crm_migration_files, crm_migration_files_count);
    ck_assert_int_eq(applied, (int)crm_migration_files_count);
    ck_assert_int_eq(recorded_count(), (long)crm_migration_files_count);
}
END_TEST

/* 0028 turns the pending targets of an execution under way into chunks of
 * its audience (2,000 ids, ascending, to a chunk) and keeps the decided
 * ones; a target is never pending after it. */
START_TEST(test_0028_turns_pending_targets_into_chunks_of_the_audience)
{
    size_t before = 0;
    while (before < crm_migration_files_count &&
           strncmp(crm_migration_files[before].name, "0028_", 5) != 0)
        before++;
    ck_assert_uint_lt(before, crm_migration_files_count);
    apply_ok(crm_migration_files, before);
    PQclear(unit_sql(probe,
                     "INSERT INTO customers (first_name) SELECT 'm' || i"
                     " FROM generate_series(1, 4500) i",
                     0, NULL));
    PQclear(unit_sql(probe, "INSERT INTO segments (name, rule) VALUES ('m28', '{}')", 0, NULL));
    PQclear(unit_sql(probe,
                     "INSERT INTO campaigns (code, name, audience_segment_id, channels, purpose,"
                     " control_share, response_types) SELECT 'm28', 'm28', id, '{email}',"
                     " 'marketing', 0.1, '{purchase}' FROM segments WHERE name = 'm28'",
                     0, NULL));
    PQclear(unit_sql(probe,
                     "INSERT INTO campaign_targets (campaign_id, customer_id, grp)"
                     " SELECT (SELECT id FROM campaigns WHERE code = 'm28'), id, 'treatment'"
                     " FROM customers",
                     0, NULL));
    PQclear(unit_sql(probe,
                     "UPDATE campaign_targets SET state = 'excluded', reason = 'no_consent',"
                     " decided_at = now() WHERE customer_id IN (SELECT id FROM customers"
                     " ORDER BY id LIMIT 100)",
                     0, NULL));
    apply_ok(crm_migration_files, crm_migration_files_count);
    ck_assert_int_eq(unit_sql_long(probe, "SELECT count(*) FROM campaign_targets", 0, NULL), 100);
    ck_assert_int_eq(unit_sql_long(probe,
                                   "SELECT count(*) FROM campaign_targets WHERE state = 'excluded'",
                                   0, NULL),
                     100);
    /* chunks 0, 1, 2 of 2,000, 2,000 and 400 */
    ck_assert_int_eq(
        unit_sql_long(
            probe,
            "SELECT count(*) FROM campaign_audience WHERE (chunk, cardinality(customer_ids))"
            " IN ((0, 2000), (1, 2000), (2, 400))",
            0, NULL),
        3);
    ck_assert_int_eq(unit_sql_long(probe, "SELECT count(*) FROM campaign_audience", 0, NULL), 3);
    /* together, in chunk order, the 4,400 not decided, ascending */
    ck_assert_int_eq(unit_sql_long(probe,
                                   "SELECT count(*) FROM (SELECT array_agg(i ORDER BY chunk, o) AS"
                                   " got FROM campaign_audience, unnest(customer_ids)"
                                   " WITH ORDINALITY AS u (i, o)) a, (SELECT array_agg(id ORDER BY"
                                   " id) AS want FROM customers WHERE id > (SELECT id FROM"
                                   " customers ORDER BY id OFFSET 99 LIMIT 1)) b"
                                   " WHERE a.got = b.want",
                                   0, NULL),
                     1);
    /* a pending target can no longer be written */
    PGresult *res = PQexec(probe, "INSERT INTO campaign_targets (campaign_id, customer_id, grp)"
                                  " SELECT campaign_id, customer_ids[1], 'treatment'"
                                  " FROM campaign_audience WHERE chunk = 0");
    ck_assert_int_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
}
END_TEST

START_TEST(test_each_migration_is_recorded_with_its_sha256)
{
    apply_ok(crm_migration_files, crm_migration_files_count);
    for (size_t i = 0; i < crm_migration_files_count; i++) {
        const struct crm_embedded_file *f = &crm_migration_files[i];
        char want[65];
        sha256_hex(f->data, f->size, want);
        const char *params[] = {f->name};
        PGresult *res =
            unit_sql(probe, "SELECT checksum, version FROM crm_schema_migrations WHERE name = $1",
                     1, params);
        ck_assert_int_eq(PQntuples(res), 1);
        const char *sum = PQgetvalue(res, 0, 0);
        ck_assert_uint_eq(strlen(sum), 64);
        ck_assert_uint_eq(strspn(sum, "0123456789abcdef"), 64);
        ck_assert_str_eq(sum, want);
        ck_assert_int_eq(atoi(PQgetvalue(res, 0, 1)), atoi(f->name));
        PQclear(res);
    }
}
END_TEST

START_TEST(test_applying_again_applies_nothing)
{
    apply_ok(crm_migration_files, crm_migration_files_count);
    ck_assert_int_eq(apply_ok(crm_migration_files, crm_migration_files_count), 0);
    ck_assert_int_eq(recorded_count(), (long)crm_migration_files_count);
}
END_TEST

START_TEST(test_is_current_after_applying)
{
    apply_ok(crm_migration_files, crm_migration_files_count);
    crm_db_config cfg = {.url = conninfo,
                         .pool_size = 1,
                         .acquire_timeout_ms = 1000,
                         .connect_timeout_s = 2,
                         .retry_backoff_ms = 1000};
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_db_init(&cfg, &err));
    ck_assert_msg(crm_migrate_is_current(&err), "%s", err.detail);
}
END_TEST

START_TEST(test_is_not_current_when_a_migration_is_missing)
{
    apply_ok(crm_migration_files, crm_migration_files_count);
    PQclear(unit_sql(probe,
                     "DELETE FROM crm_schema_migrations WHERE version = "
                     "(SELECT max(version) FROM crm_schema_migrations)",
                     0, NULL));
    crm_db_config cfg = {.url = conninfo,
                         .pool_size = 1,
                         .acquire_timeout_ms = 1000,
                         .connect_timeout_s = 2,
                         .retry_backoff_ms = 1000};
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_db_init(&cfg, &err));
    ck_assert(!crm_migrate_is_current(&err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
}
END_TEST

/* ---- pending files -------------------------------------------------- */

START_TEST(test_only_new_files_are_applied)
{
    apply_ok(two_files, 1);
    ck_assert_int_eq(apply_ok(two_files, 2), 1);
    ck_assert(table_exists("unit_second"));
    ck_assert_int_eq(recorded_count(), 2);
}
END_TEST

START_TEST(test_applied_may_be_null)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_migrate_apply(conn, two_files, 2, NULL, &err));
    ck_assert(table_exists("unit_first"));
}
END_TEST

START_TEST(test_file_may_hold_several_statements)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0001_many.sql", "CREATE TABLE unit_a (x int);\n"
                                 "CREATE TABLE unit_b (x int);\n"
                                 "INSERT INTO unit_a VALUES (1), (2);\n"),
    };
    apply_ok(files, 1);
    ck_assert(table_exists("unit_b"));
    ck_assert_int_eq(unit_sql_long(probe, "SELECT count(*) FROM unit_a", 0, NULL), 2);
}
END_TEST

/* psql and the server treat a file of comments as nothing to do; so must we. */
START_TEST(test_file_of_only_comments_is_applied_and_recorded)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0001_reserved.sql", "-- This number is reserved; nothing to do.\n"),
    };
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    bool ok = crm_migrate_apply(conn, files, 1, &applied, &err);
    ck_assert_msg(ok, "refused with %s: %s", crm_errcode_name(err.code), err.detail);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(recorded_count(), 1);
}
END_TEST

/* ---- changed, badly named and failing files ------------------------- */

START_TEST(test_changed_recorded_file_fails_with_conflict)
{
    apply_ok(two_files, 1);
    static const struct crm_embedded_file changed[] = {
        FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x bigint);"),
        FILE_OF("0002_second.sql", "CREATE TABLE unit_second (y int);"),
    };
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply(conn, changed, 2, &applied, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_int_eq(applied, 0);
}
END_TEST

START_TEST(test_changed_recorded_file_changes_nothing)
{
    apply_ok(two_files, 1);
    char before[65];
    sha256_hex(two_files[0].data, two_files[0].size, before);
    static const struct crm_embedded_file changed[] = {
        FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x bigint);"),
        FILE_OF("0002_second.sql", "CREATE TABLE unit_second (y int);"),
    };
    crm_error err = CRM_ERROR_INIT;
    crm_migrate_apply(conn, changed, 2, NULL, &err);
    ck_assert(!table_exists("unit_second"));
    ck_assert_int_eq(recorded_count(), 1);
    PGresult *res = unit_sql(probe, "SELECT checksum FROM crm_schema_migrations", 0, NULL);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), before);
    PQclear(res);
}
END_TEST

START_TEST(test_badly_named_file_fails_with_invalid)
{
    static const char *const names[] = {
        "1_short.sql",       "00001_long.sql", "0001-dash.sql",
        "0001_name.txt",     "0001_name.SQL",  "abcd_name.sql",
        "0001.sql",          "init.sql",       "",
        "0001_name.sql.bak",
    };
    for (size_t i = 0; i < COUNT(names); i++) {
        struct crm_embedded_file f = {names[i], "SELECT 1;", 9};
        crm_error err = CRM_ERROR_INIT;
        ck_assert_msg(!crm_migrate_apply(conn, &f, 1, NULL, &err), "'%s' accepted", names[i]);
        ck_assert_msg(err.code == CRM_E_INVALID, "'%s' gave %s", names[i],
                      crm_errcode_name(err.code));
    }
    ck_assert_int_eq(recorded_count(), 0);
}
END_TEST

/* A long run of digits must be refused, not overflow an int on the way. */
START_TEST(test_name_with_long_digit_run_fails_with_invalid)
{
    struct crm_embedded_file f = {"99999999999999999999_x.sql", "SELECT 1;", 9};
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply(conn, &f, 1, NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
}
END_TEST

START_TEST(test_failing_migration_rolls_back_completely)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0001_fails.sql", "CREATE TABLE unit_partial (x int);\n"
                                  "INSERT INTO unit_partial VALUES (1);\n"
                                  "SELECT unit_no_such_function();\n"),
    };
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply(conn, files, 1, &applied, &err));
    ck_assert_int_eq(err.code, CRM_E_INTERNAL);
    ck_assert_int_eq(applied, 0);
    ck_assert(!table_exists("unit_partial"));
    ck_assert_int_eq(recorded_count(), 0);
}
END_TEST

START_TEST(test_failing_migration_keeps_earlier_ones)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0001_good.sql", "CREATE TABLE unit_good (x int);"),
        FILE_OF("0002_bad.sql", "CREATE TABLE unit_bad (x int); SELECT 1/0;"),
    };
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply(conn, files, 2, &applied, &err));
    ck_assert_int_eq(applied, 1);
    ck_assert(table_exists("unit_good"));
    ck_assert(!table_exists("unit_bad"));
    ck_assert_int_eq(recorded_count(), 1);
}
END_TEST

START_TEST(test_failing_migration_leaves_connection_idle_and_unlocked)
{
    static const struct crm_embedded_file bad[] = {
        FILE_OF("0001_bad.sql", "SELECT 1/0;"),
    };
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply(conn, bad, 1, NULL, &err));
    ck_assert_int_eq(PQtransactionStatus(conn), PQTRANS_IDLE);
    ck_assert_int_eq(advisory_locks_held(), 0);
}
END_TEST

START_TEST(test_migration_lock_is_released_after_success)
{
    apply_ok(two_files, 2);
    ck_assert_int_eq(advisory_locks_held(), 0);
}
END_TEST

/* ---- ordering, lock timeouts, files outside a transaction ----------- */

/* Someone "fills" 0002 after 0003 has landed: it would run after 0003, against
 * a schema its author never saw. Refused, and nothing else is applied. */
START_TEST(test_pending_file_below_latest_applied_is_refused)
{
    static const struct crm_embedded_file first[] = {
        FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x int);"),
        FILE_OF("0003_third.sql", "CREATE TABLE unit_third (x int);"),
    };
    apply_ok(first, COUNT(first));
    static const struct crm_embedded_file later[] = {
        FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x int);"),
        FILE_OF("0002_gap.sql", "CREATE TABLE unit_gap (x int);"),
        FILE_OF("0003_third.sql", "CREATE TABLE unit_third (x int);"),
        FILE_OF("0004_fourth.sql", "CREATE TABLE unit_fourth (x int);"),
    };
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply(conn, later, COUNT(later), &applied, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_msg(strstr(err.detail, "0002_gap.sql") != NULL, "%s", err.detail);
    ck_assert_int_eq(applied, 0);
    ck_assert(!table_exists("unit_gap"));
    ck_assert(!table_exists("unit_fourth"));
    ck_assert_int_eq(recorded_count(), 2);
}
END_TEST

static const crm_migrate_opts quick = {100, 3, 20};

static const struct crm_embedded_file alter_first[] = {
    FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x int);"),
    FILE_OF("0002_alter.sql", "ALTER TABLE unit_first ADD COLUMN y int;"),
};

/* A migration behind a long transaction gives up its lock request after the
 * lock timeout (rather than queueing every later query on the table behind
 * it), retries, and in the end fails cleanly with nothing half-applied. */
START_TEST(test_migration_behind_a_held_lock_times_out_and_changes_nothing)
{
    apply_ok(alter_first, 1);
    PQclear(unit_sql(probe, "BEGIN", 0, NULL));
    PQclear(unit_sql(probe, "LOCK TABLE unit_first IN ACCESS SHARE MODE", 0, NULL));
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply_with(conn, alter_first, 2, &quick, &applied, &err));
    ck_assert_int_eq(applied, 0);
    ck_assert_int_eq(PQtransactionStatus(conn), PQTRANS_IDLE);
    PQclear(unit_sql(probe, "COMMIT", 0, NULL));
    ck_assert_int_eq(recorded_count(), 1);
    ck_assert_int_eq(unit_sql_long(probe,
                                   "SELECT count(*) FROM information_schema.columns "
                                   "WHERE table_name = 'unit_first' AND column_name = 'y'",
                                   0, NULL),
                     0);
    ck_assert_int_eq(advisory_locks_held(), 0);
}
END_TEST

static void *commit_after_a_while(void *arg)
{
    PGconn *holder = arg;
    struct timespec ts = {0, 150 * 1000000L};
    nanosleep(&ts, NULL);
    PQclear(unit_sql(holder, "COMMIT", 0, NULL));
    return NULL;
}

/* The lock is released between attempts: a later attempt succeeds. */
START_TEST(test_migration_retries_until_the_lock_is_free)
{
    apply_ok(alter_first, 1);
    PQclear(unit_sql(probe, "BEGIN", 0, NULL));
    PQclear(unit_sql(probe, "LOCK TABLE unit_first IN ACCESS SHARE MODE", 0, NULL));
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, commit_after_a_while, probe), 0);
    static const crm_migrate_opts patient = {50, 20, 20};
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    bool ok = crm_migrate_apply_with(conn, alter_first, 2, &patient, &applied, &err);
    pthread_join(t, NULL);
    ck_assert_msg(ok, "%s", err.detail);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(recorded_count(), 2);
}
END_TEST

/* CREATE INDEX CONCURRENTLY cannot run in a transaction block: a file marked
 * "-- crmd:no-transaction" runs outside one, and is recorded. */
START_TEST(test_file_marked_no_transaction_runs_outside_a_transaction)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x int);"),
        FILE_OF("0002_index.sql", "-- crmd:no-transaction\n"
                                  "CREATE INDEX CONCURRENTLY IF NOT EXISTS unit_first_x "
                                  "ON unit_first (x);\n"),
    };
    ck_assert_int_eq(apply_ok(files, COUNT(files)), 2);
    ck_assert_int_eq(recorded_count(), 2);
    ck_assert_int_eq(
        unit_sql_long(probe, "SELECT count(*) FROM pg_indexes WHERE indexname = 'unit_first_x'", 0,
                      NULL),
        1);
    /* The session's timeouts are back to what they were. */
    PGresult *res = unit_sql(conn, "SHOW lock_timeout", 0, NULL);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
}
END_TEST

/* Without the mark the same statement is refused by PostgreSQL, and nothing is
 * recorded: the mark is what makes the difference. */
START_TEST(test_concurrent_index_without_the_mark_fails)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0001_first.sql", "CREATE TABLE unit_first (x int);"),
        FILE_OF("0002_index.sql", "CREATE INDEX CONCURRENTLY unit_first_x ON unit_first (x);\n"),
    };
    int applied = -1;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_migrate_apply(conn, files, COUNT(files), &applied, &err));
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(recorded_count(), 1);
}
END_TEST

/* ---- concurrency ---------------------------------------------------- */

static const struct crm_embedded_file slow_files[] = {
    /* The sleep keeps the first applier inside the lock while the second arrives. */
    FILE_OF("0001_slow.sql", "CREATE TABLE unit_slow (x int); SELECT pg_sleep(0.3);"),
    FILE_OF("0002_after.sql", "CREATE TABLE unit_after (x int);"),
    FILE_OF("0003_last.sql", "INSERT INTO unit_after VALUES (1);"),
};

struct applier {
    PGconn *conn;
    bool ok;
    int applied;
    crm_error err;
};

static void *apply_in_thread(void *arg)
{
    struct applier *a = arg;
    a->ok = crm_migrate_apply(a->conn, slow_files, COUNT(slow_files), &a->applied, &a->err);
    return NULL;
}

START_TEST(test_concurrent_appliers_apply_each_file_once)
{
    struct applier a = {conn, false, -1, CRM_ERROR_INIT};
    struct applier b = {probe, false, -1, CRM_ERROR_INIT};
    pthread_t ta, tb;
    ck_assert_int_eq(pthread_create(&ta, NULL, apply_in_thread, &a), 0);
    ck_assert_int_eq(pthread_create(&tb, NULL, apply_in_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_msg(a.ok, "first: %s", a.err.detail);
    ck_assert_msg(b.ok, "second: %s", b.err.detail);
    ck_assert_int_eq(a.applied + b.applied, (int)COUNT(slow_files));
    ck_assert_int_eq(recorded_count(), (long)COUNT(slow_files));
    ck_assert_int_eq(unit_sql_long(probe, "SELECT count(*) FROM unit_after", 0, NULL), 1);
}
END_TEST

/* ---- crm_migrate_latest_version ------------------------------------- */

START_TEST(test_latest_version_is_highest_number)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0001_a.sql", ""),
        FILE_OF("0012_b.sql", ""),
        FILE_OF("0003_c.sql", ""),
    };
    ck_assert_int_eq(crm_migrate_latest_version(files, COUNT(files)), 12);
}
END_TEST

START_TEST(test_latest_version_of_no_files_is_zero)
{
    ck_assert_int_eq(crm_migrate_latest_version(NULL, 0), 0);
}
END_TEST

START_TEST(test_latest_version_ignores_badly_named_files)
{
    static const struct crm_embedded_file files[] = {
        FILE_OF("0002_a.sql", ""),
        FILE_OF("9999.sql", ""),
        FILE_OF("README", ""),
    };
    ck_assert_int_eq(crm_migrate_latest_version(files, COUNT(files)), 2);
}
END_TEST

START_TEST(test_latest_version_of_embedded_files_is_last_file)
{
    const char *last = crm_migration_files[crm_migration_files_count - 1].name;
    ck_assert_int_eq(crm_migrate_latest_version(crm_migration_files, crm_migration_files_count),
                     atoi(last));
}
END_TEST

Suite *migrate_suite(void)
{
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("embedded");
    tcase_add_unchecked_fixture(tc, remember_run_pid, drop_leftover_databases);
    tcase_add_checked_fixture(tc, create_database, drop_database);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_embedded_migrations_apply_to_empty_database);
    tcase_add_test(tc, test_each_migration_is_recorded_with_its_sha256);
    tcase_add_test(tc, test_applying_again_applies_nothing);
    tcase_add_test(tc, test_is_current_after_applying);
    tcase_add_test(tc, test_is_not_current_when_a_migration_is_missing);
    tcase_add_test(tc, test_0028_turns_pending_targets_into_chunks_of_the_audience);
    suite_add_tcase(s, tc);

    tc = tcase_create("pending");
    tcase_add_unchecked_fixture(tc, remember_run_pid, drop_leftover_databases);
    tcase_add_checked_fixture(tc, create_database, drop_database);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_only_new_files_are_applied);
    tcase_add_test(tc, test_applied_may_be_null);
    tcase_add_test(tc, test_file_may_hold_several_statements);
    tcase_add_test(tc, test_file_of_only_comments_is_applied_and_recorded);
    suite_add_tcase(s, tc);

    tc = tcase_create("refused");
    tcase_add_unchecked_fixture(tc, remember_run_pid, drop_leftover_databases);
    tcase_add_checked_fixture(tc, create_database, drop_database);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_changed_recorded_file_fails_with_conflict);
    tcase_add_test(tc, test_changed_recorded_file_changes_nothing);
    tcase_add_test(tc, test_badly_named_file_fails_with_invalid);
    tcase_add_test(tc, test_name_with_long_digit_run_fails_with_invalid);
    tcase_add_test(tc, test_failing_migration_rolls_back_completely);
    tcase_add_test(tc, test_failing_migration_keeps_earlier_ones);
    tcase_add_test(tc, test_failing_migration_leaves_connection_idle_and_unlocked);
    tcase_add_test(tc, test_migration_lock_is_released_after_success);
    suite_add_tcase(s, tc);

    tc = tcase_create("online");
    tcase_add_unchecked_fixture(tc, remember_run_pid, drop_leftover_databases);
    tcase_add_checked_fixture(tc, create_database, drop_database);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_pending_file_below_latest_applied_is_refused);
    tcase_add_test(tc, test_migration_behind_a_held_lock_times_out_and_changes_nothing);
    tcase_add_test(tc, test_migration_retries_until_the_lock_is_free);
    tcase_add_test(tc, test_file_marked_no_transaction_runs_outside_a_transaction);
    tcase_add_test(tc, test_concurrent_index_without_the_mark_fails);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrent");
    tcase_add_unchecked_fixture(tc, remember_run_pid, drop_leftover_databases);
    tcase_add_checked_fixture(tc, create_database, drop_database);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_concurrent_appliers_apply_each_file_once);
    suite_add_tcase(s, tc);

    tc = tcase_create("latest_version");
    tcase_add_test(tc, test_embedded_migrations_exist_and_are_ordered);
    tcase_add_test(tc, test_latest_version_is_highest_number);
    tcase_add_test(tc, test_latest_version_of_no_files_is_zero);
    tcase_add_test(tc, test_latest_version_ignores_badly_named_files);
    tcase_add_test(tc, test_latest_version_of_embedded_files_is_last_file);
    suite_add_tcase(s, tc);
    return s;
}

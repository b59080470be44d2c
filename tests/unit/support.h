/*
 * support.h — small helpers shared by the unit suites: the environment,
 * direct SQL for setting up and inspecting state, clocks.
 *
 * The helpers that can fail fail the current test (ck_assert) rather than
 * returning an error, so a test reads as the behaviour it checks.
 */
#ifndef UNIT_SUPPORT_H
#define UNIT_SUPPORT_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"

/* The value of a required environment variable; fails the test when unset. */
const char *unit_env(const char *name);

/* A key=value conninfo equal to `conninfo` (key=value or URI) but naming
 * database dbname. The caller frees it with free(). */
char *unit_conninfo_with_dbname(const char *conninfo, const char *dbname);

/* Connects with libpq outside the pool, with server notices silenced; fails
 * the test when that fails. The caller closes it with PQfinish(). */
PGconn *unit_connect(const char *conninfo);

/* Runs one statement with text parameters and fails the test unless it
 * succeeds. The caller frees the result with PQclear(). */
PGresult *unit_sql(PGconn *conn, const char *sql, int nparams, const char *const *params);

/* Runs one statement and returns the first column of its first row as a
 * long (0 when NULL); fails the test when it fails or returns no row. */
long unit_sql_long(PGconn *conn, const char *sql, int nparams, const char *const *params);

/* Migrates CRMD_TEST_DATABASE_URL, starts lib/db.h's pool on it with
 * pool_size connections, and returns a direct connection for setting up and
 * checking state; fails the test when any of that fails. */
PGconn *unit_db_start(int pool_size);

/* Closes what unit_db_start opened. */
void unit_db_stop(PGconn *direct);

/* A database of a test's own, for suites whose fixture is the whole base
 * (the metrics): created under a name of prefix and random bits, migrated,
 * lib/db.h's pool started on it (2 connections, 60 s statements). */
typedef struct unit_own_db {
    char name[64];
    char *conninfo; /* owned */
    PGconn *db;     /* a direct connection for setting up and checking */
} unit_own_db;

void unit_own_db_start(unit_own_db *o, const char *prefix);

/* Stops the pool and drops the database. */
void unit_own_db_stop(unit_own_db *o);

/* Runs the job just queued (its representation, freed here) on a worker of
 * this process on conninfo, fails the test unless it was this job and it
 * succeeded, and returns the job as it ended (the caller frees it). */
json_t *unit_run_queued_job(json_t *queued, const char *conninfo);

/* Asserts that q's statement, planned as crmd's connections plan it (one
 * generic plan, plan_cache_mode=force_generic_plan) with sequential and
 * bitmap scans priced out, has an index scan whose Index Cond holds
 * needle, and that no Filter holds it: the condition bounds the index
 * range instead of being tested row by row. */
void unit_assert_index_condition(PGconn *conn, const crm_query *q, const char *needle);

/* True when err->errors holds an entry whose "field" is exactly field. */
bool unit_has_field_error(const crm_error *err, const char *field);

/* A string no other test or run uses: what, the pid, a serial and random
 * bits. */
void unit_unique(char *buf, size_t size, const char *what);

/* Monotonic milliseconds, and a sleep in milliseconds. */
long long unit_now_ms(void);
void unit_sleep_ms(int ms);

#endif

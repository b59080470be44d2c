/*
 * migrate.h — schema migrations compiled into the binary.
 *
 * migrations/NNNN_name.sql files are applied in order, each in its own
 * transaction, and recorded in crm_schema_migrations with a SHA-256 checksum.
 * A recorded migration whose file has since changed stops the process: the
 * schema would no longer be what the code believes. A session-level advisory
 * lock serialises crmd processes that start together.
 *
 * Every file is checked before any is applied: a pending file numbered below
 * the latest applied version is refused. A file runs with a lock timeout, and
 * an attempt whose lock is not granted in time is rolled back and retried
 * after a pause, so a migration never queues every query on a busy table
 * behind it for long. A file whose first line is "-- crmd:no-transaction"
 * runs outside a transaction (one statement: CREATE INDEX CONCURRENTLY).
 * migrations/README.md has the rules for migrations that run online.
 */
#ifndef CRM_MIGRATE_H
#define CRM_MIGRATE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "db.h"
#include "embedded.h"
#include "error.h"

typedef struct crm_migrate_opts {
    int lock_timeout_ms; /* per attempt, for a file run in a transaction */
    int attempts;        /* attempts per file while locks are not granted */
    int backoff_ms;      /* first pause between attempts; doubles, up to 8 times this */
} crm_migrate_opts;

/* About two minutes of attempts before giving up. */
#define CRM_MIGRATE_DEFAULTS {2000, 20, 500}

/* Applies every pending migration from files[0..count) on conn. Returns the
 * number applied through *applied (may be NULL). Fails with CRM_E_CONFLICT when
 * a recorded checksum differs from the file, CRM_E_INVALID for a badly named
 * file, or the database's error. */
bool crm_migrate_apply(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                       int *applied, crm_error *err);

/* The same with explicit lock timeout and retries. */
bool crm_migrate_apply_with(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                            const crm_migrate_opts *o, int *applied, crm_error *err);

/* The highest version among files (0 when none). */
int crm_migrate_latest_version(const struct crm_embedded_file *files, size_t count);

/* The readiness check split for the asynchronous path: the query, and whether
 * its result shows every built-in migration recorded (CRM_E_UNAVAILABLE if not). */
void crm_migrate_state_query(crm_query *q);
bool crm_migrate_state_decode(const PGresult *res, crm_error *err);

/* True when the database has recorded every built-in migration. Uses the pool. */
bool crm_migrate_is_current(crm_error *err);

#endif

/*
 * migrate.h — schema migrations compiled into the binary.
 *
 * migrations/NNNN_name.sql files are applied in order, each in its own
 * transaction, and recorded in crm_schema_migrations with a SHA-256 checksum.
 * A recorded migration whose file has since changed stops the process: the
 * schema would no longer be what the code believes. A session-level advisory
 * lock serialises crmd processes that start together.
 */
#ifndef CRM_MIGRATE_H
#define CRM_MIGRATE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "db.h"
#include "embedded.h"
#include "error.h"

/* Applies every pending migration from files[0..count) on conn. Returns the
 * number applied through *applied (may be NULL). Fails with CRM_E_CONFLICT when
 * a recorded checksum differs from the file, CRM_E_INVALID for a badly named
 * file, or the database's error. */
bool crm_migrate_apply(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                       int *applied, crm_error *err);

/* The highest version among files (0 when none). */
int crm_migrate_latest_version(const struct crm_embedded_file *files, size_t count);

/* The readiness check split for the asynchronous path: the query, and whether
 * its result shows every built-in migration recorded (CRM_E_UNAVAILABLE if not). */
void crm_migrate_state_query(crm_query *q);
bool crm_migrate_state_decode(const PGresult *res, crm_error *err);

/* True when the database has recorded every built-in migration. Uses the pool. */
bool crm_migrate_is_current(crm_error *err);

#endif

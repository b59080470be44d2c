/*
 * migrate.c — applying numbered SQL files in order, once each.
 */
#include "migrate.h"
#include "db.h"
#include "log.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 'crmd' in ASCII: the advisory lock key every crmd process agrees on. */
#define MIGRATE_LOCK_KEY "1668441444"

/* Parses the leading digits of "0001_init.sql"; -1 when the name is not NNNN_*.sql. */
static int version_of(const char *name)
{
    int v = 0, digits = 0;
    for (; isdigit((unsigned char)name[digits]); digits++)
        if (digits < 4)
            v = v * 10 + (name[digits] - '0');
    size_t len = strlen(name);
    if (digits != 4 || name[digits] != '_' || len < 9 || strcmp(name + len - 4, ".sql") != 0)
        return -1;
    return v;
}

int crm_migrate_latest_version(const struct crm_embedded_file *files, size_t count)
{
    int latest = 0;
    for (size_t i = 0; i < count; i++) {
        int v = version_of(files[i].name);
        if (v > latest)
            latest = v;
    }
    return latest;
}

static void checksum_hex(const struct crm_embedded_file *f, char out[65])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)f->data, f->size);
    sodium_bin2hex(out, 65, digest, sizeof digest);
}

static bool command_ok(PGconn *conn, PGresult *res, const char *what, crm_error *err)
{
    ExecStatusType st = PQresultStatus(res);
    /* A file of only comments is an empty query: nothing to do, not an error. */
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok)
        crm_db_result_error(conn, res, what, err);
    PQclear(res);
    return ok;
}

/* Returns the recorded checksum of version (malloc'd, caller frees), or NULL
 * when the version is not recorded (err untouched) or on error (err set). */
static char *recorded_checksum(PGconn *conn, int version, bool *failed, crm_error *err)
{
    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", version);
    const char *params[] = {vbuf};
    PGresult *res = PQexecParams(conn, "SELECT checksum FROM crm_schema_migrations WHERE version = $1",
                                 1, NULL, params, NULL, NULL, 0);
    *failed = false;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *failed = true;
        crm_db_result_error(conn, res, "reading migrations", err);
        PQclear(res);
        return NULL;
    }
    char *sum = PQntuples(res) > 0 ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    return sum;
}

/* Runs one migration file and records it, inside one transaction. */
static bool apply_one(PGconn *conn, const struct crm_embedded_file *f, int version,
                      const char *sum, crm_error *err)
{
    /* A migration may rewrite or index a large table: no statement timeout. */
    if (!command_ok(conn, PQexec(conn, "BEGIN; SET LOCAL statement_timeout = 0"), "BEGIN", err))
        return false;
    /* A migration file holds several statements, which only the simple query
     * protocol accepts. Its text is ours, compiled into the binary: no value
     * from outside ever reaches this call. */
    if (!command_ok(conn, PQexec(conn, f->data), f->name, err))
        goto fail;
    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", version);
    const char *params[] = {vbuf, f->name, sum};
    if (!command_ok(conn,
                    PQexecParams(conn,
                                 "INSERT INTO crm_schema_migrations (version, name, checksum) "
                                 "VALUES ($1, $2, $3)",
                                 3, NULL, params, NULL, NULL, 0),
                    "recording migration", err))
        goto fail;
    if (!command_ok(conn, PQexec(conn, "COMMIT"), "COMMIT", err))
        goto fail;
    crm_log(CRM_LOG_INFO, "applied migration %s", f->name);
    return true;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    return false;
}

static bool apply_all(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                      int *applied, crm_error *err)
{
    if (!command_ok(conn,
                    PQexec(conn, "CREATE TABLE IF NOT EXISTS crm_schema_migrations ("
                                 " version integer PRIMARY KEY,"
                                 " name text NOT NULL,"
                                 " checksum text NOT NULL,"
                                 " applied_at timestamptz NOT NULL DEFAULT now())"),
                    "creating crm_schema_migrations", err))
        return false;
    for (size_t i = 0; i < count; i++) {
        const struct crm_embedded_file *f = &files[i];
        int version = version_of(f->name);
        if (version < 0)
            return crm_error_set(err, CRM_E_INVALID,
                                 "migration file %s is not named NNNN_name.sql", f->name);
        char sum[65];
        checksum_hex(f, sum);
        bool failed;
        char *recorded = recorded_checksum(conn, version, &failed, err);
        if (failed)
            return false;
        if (recorded != NULL) {
            bool same = strcmp(recorded, sum) == 0;
            free(recorded);
            if (!same)
                return crm_error_set(err, CRM_E_CONFLICT,
                                     "migration %s has changed since it was applied "
                                     "(checksum differs); add a new migration instead",
                                     f->name);
            continue;
        }
        if (!apply_one(conn, f, version, sum, err))
            return false;
        if (applied != NULL)
            (*applied)++;
    }
    return true;
}

bool crm_migrate_apply(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                       int *applied, crm_error *err)
{
    if (applied != NULL)
        *applied = 0;
    if (!command_ok(conn, PQexec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")"),
                    "taking the migration lock", err))
        return false;
    bool ok = apply_all(conn, files, count, applied, err);
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return ok;
}

static crm_stmt migrations_state = CRM_STMT_RO(
    "migrate_state", "SELECT count(*), coalesce(max(version), 0) FROM crm_schema_migrations");

void crm_migrate_state_query(crm_query *q)
{
    crm_query_init(q, &migrations_state);
}

bool crm_migrate_state_decode(const PGresult *res, crm_error *err)
{
    long n = atol(PQgetvalue(res, 0, 0));
    int latest = atoi(PQgetvalue(res, 0, 1));
    int want = crm_migrate_latest_version(crm_migration_files, crm_migration_files_count);
    if (latest < want || n < (long)crm_migration_files_count)
        return crm_error_set(err, CRM_E_UNAVAILABLE, "database schema is at version %d, need %d",
                             latest, want);
    return true;
}

bool crm_migrate_is_current(crm_error *err)
{
    crm_query q;
    crm_migrate_state_query(&q);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return false;
    bool ok = crm_migrate_state_decode(res, err);
    PQclear(res);
    return ok;
}

/*
 * migrate.c — applying numbered SQL files in order, once each.
 */
#include "migrate.h"
#include "db.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* The SQLSTATE PostgreSQL gives a lock not granted within lock_timeout. */
#define SQLSTATE_LOCK_NOT_AVAILABLE "55P03"

/* The first line that marks a file to be run outside a transaction (for
 * CREATE INDEX CONCURRENTLY and the like). */
#define NO_TRANSACTION_MARK "-- crmd:no-transaction"

static bool command_ok_state(PGconn *conn, PGresult *res, const char *what, char sqlstate[6],
                             crm_error *err)
{
    ExecStatusType st = PQresultStatus(res);
    /* A file of only comments is an empty query: nothing to do, not an error. */
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (sqlstate != NULL) {
        const char *s = ok ? NULL : PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(sqlstate, 6, "%s", s != NULL ? s : "");
    }
    if (!ok)
        crm_db_result_error(conn, res, what, err);
    PQclear(res);
    return ok;
}

static bool command_ok(PGconn *conn, PGresult *res, const char *what, crm_error *err)
{
    return command_ok_state(conn, res, what, NULL, err);
}

/* Sets a run-time parameter through set_config, with the value as a parameter:
 * for the transaction (local) or for the session. */
static bool set_setting(PGconn *conn, const char *name, int ms, bool local, crm_error *err)
{
    char vbuf[24];
    snprintf(vbuf, sizeof vbuf, "%dms", ms);
    const char *params[] = {name, vbuf, local ? "true" : "false"};
    return command_ok(conn,
                      PQexecParams(conn, "SELECT set_config($1, $2, $3::boolean)", 3, NULL, params,
                                   NULL, NULL, 0),
                      name, err);
}

static bool record_migration(PGconn *conn, const struct crm_embedded_file *f, int version,
                             const char *sum, crm_error *err)
{
    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", version);
    const char *params[] = {vbuf, f->name, sum};
    return command_ok(conn,
                      PQexecParams(conn,
                                   "INSERT INTO crm_schema_migrations (version, name, checksum) "
                                   "VALUES ($1, $2, $3)",
                                   3, NULL, params, NULL, NULL, 0),
                      "recording migration", err);
}

static bool wants_no_transaction(const struct crm_embedded_file *f)
{
    size_t n = strlen(NO_TRANSACTION_MARK);
    return f->size >= n && memcmp(f->data, NO_TRANSACTION_MARK, n) == 0 &&
           (f->size == n || f->data[n] == '\n' || f->data[n] == '\r');
}

/* Runs one migration file and records it, inside one transaction. A lock not
 * granted within the lock timeout ends the attempt (sqlstate 55P03) and rolls
 * it back, so that a migration queued behind a long transaction never holds
 * every later query on its table waiting behind it. */
static bool apply_in_transaction(PGconn *conn, const struct crm_embedded_file *f, int version,
                                 const char *sum, const crm_migrate_opts *o, char sqlstate[6],
                                 crm_error *err)
{
    sqlstate[0] = '\0';
    /* A migration may rewrite or index a large table: no statement timeout. */
    if (!command_ok(conn, PQexec(conn, "BEGIN; SET LOCAL statement_timeout = 0"), "BEGIN", err))
        return false;
    if (!set_setting(conn, "lock_timeout", o->lock_timeout_ms, true, err))
        goto fail;
    /* A migration file holds several statements, which only the simple query
     * protocol accepts. Its text is ours, compiled into the binary: no value
     * from outside ever reaches this call. */
    if (!command_ok_state(conn, PQexec(conn, f->data), f->name, sqlstate, err))
        goto fail;
    if (!record_migration(conn, f, version, sum, err))
        goto fail;
    if (!command_ok(conn, PQexec(conn, "COMMIT"), "COMMIT", err))
        goto fail;
    return true;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    return false;
}

/* Runs a file marked NO_TRANSACTION_MARK: one statement (PostgreSQL runs a
 * string of several in one implicit transaction, which CONCURRENTLY refuses;
 * the extended protocol of PQexecParams takes exactly one, so a file of
 * several fails here rather than half-way), with no statement or lock timeout (CREATE INDEX CONCURRENTLY waits for
 * older transactions but blocks nobody), then records it. The file must be
 * safe to run again after a failure between the two (IF NOT EXISTS). */
static bool apply_outside_transaction(PGconn *conn, const struct crm_embedded_file *f, int version,
                                      const char *sum, crm_error *err)
{
    bool ok = set_setting(conn, "statement_timeout", 0, false, err) &&
              set_setting(conn, "lock_timeout", 0, false, err) &&
              command_ok(conn, PQexecParams(conn, f->data, 0, NULL, NULL, NULL, NULL, 0), f->name,
                         err) &&
              record_migration(conn, f, version, sum, err);
    PQclear(PQexec(conn, "RESET statement_timeout"));
    PQclear(PQexec(conn, "RESET lock_timeout"));
    return ok;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Applies one file, retrying with a growing pause while its locks are not
 * granted in time. */
static bool apply_one(PGconn *conn, const struct crm_embedded_file *f, int version,
                      const char *sum, const crm_migrate_opts *o, crm_error *err)
{
    if (wants_no_transaction(f)) {
        if (!apply_outside_transaction(conn, f, version, sum, err))
            return false;
        crm_log(CRM_LOG_INFO, "applied migration %s (outside a transaction)", f->name);
        return true;
    }
    int pause = o->backoff_ms;
    for (int attempt = 1;; attempt++) {
        char sqlstate[6];
        crm_error_clear(err);
        if (apply_in_transaction(conn, f, version, sum, o, sqlstate, err)) {
            crm_log(CRM_LOG_INFO, "applied migration %s", f->name);
            return true;
        }
        if (strcmp(sqlstate, SQLSTATE_LOCK_NOT_AVAILABLE) != 0 || attempt >= o->attempts)
            return false;
        crm_log(CRM_LOG_WARN,
                "migration %s: a lock was not granted within %d ms (attempt %d of %d); "
                "retrying in %d ms",
                f->name, o->lock_timeout_ms, attempt, o->attempts, pause);
        pause_ms(pause);
        if (pause < o->backoff_ms * 8)
            pause *= 2;
    }
}

/* What crm_schema_migrations records: versions and checksums, in order. */
typedef struct recorded {
    PGresult *res;
    int max_version;
} recorded;

static bool read_recorded(PGconn *conn, recorded *r, crm_error *err)
{
    r->res = PQexecParams(conn, "SELECT version, checksum FROM crm_schema_migrations",
                          0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(r->res) != PGRES_TUPLES_OK) {
        crm_db_result_error(conn, r->res, "reading migrations", err);
        PQclear(r->res);
        r->res = NULL;
        return false;
    }
    r->max_version = 0;
    for (int i = 0; i < PQntuples(r->res); i++) {
        int v = atoi(PQgetvalue(r->res, i, 0));
        if (v > r->max_version)
            r->max_version = v;
    }
    return true;
}

/* The recorded checksum of version, or NULL when it is not recorded. */
static const char *recorded_checksum(const recorded *r, int version)
{
    for (int i = 0; i < PQntuples(r->res); i++)
        if (atoi(PQgetvalue(r->res, i, 0)) == version)
            return PQgetvalue(r->res, i, 1);
    return NULL;
}

/* Every file is checked before any is applied: a badly named file, a recorded
 * file that has changed, or a pending file numbered below one already applied
 * (someone "filling a gap" after later files landed: it would run after them,
 * against a schema its author never saw) stops everything. */
static bool check_files(const struct crm_embedded_file *files, size_t count, const recorded *r,
                        crm_error *err)
{
    for (size_t i = 0; i < count; i++) {
        const struct crm_embedded_file *f = &files[i];
        int version = version_of(f->name);
        if (version < 0)
            return crm_error_set(err, CRM_E_INVALID,
                                 "migration file %s is not named NNNN_name.sql", f->name);
        const char *sum_then = recorded_checksum(r, version);
        if (sum_then == NULL) {
            if (version < r->max_version)
                return crm_error_set(err, CRM_E_CONFLICT,
                                     "migration %s is numbered below version %d, which is "
                                     "already applied; give it a number after %04d",
                                     f->name, r->max_version, r->max_version);
            continue;
        }
        char sum[65];
        checksum_hex(f, sum);
        if (strcmp(sum_then, sum) != 0)
            return crm_error_set(err, CRM_E_CONFLICT,
                                 "migration %s has changed since it was applied "
                                 "(checksum differs); add a new migration instead",
                                 f->name);
    }
    return true;
}

static bool apply_all(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                      const crm_migrate_opts *o, int *applied, crm_error *err)
{
    if (!command_ok(conn,
                    PQexec(conn, "CREATE TABLE IF NOT EXISTS crm_schema_migrations ("
                                 " version integer PRIMARY KEY,"
                                 " name text NOT NULL,"
                                 " checksum text NOT NULL,"
                                 " applied_at timestamptz NOT NULL DEFAULT now())"),
                    "creating crm_schema_migrations", err))
        return false;
    recorded r;
    if (!read_recorded(conn, &r, err))
        return false;
    bool ok = check_files(files, count, &r, err);
    for (size_t i = 0; ok && i < count; i++) {
        const struct crm_embedded_file *f = &files[i];
        int version = version_of(f->name);
        if (recorded_checksum(&r, version) != NULL)
            continue;
        char sum[65];
        checksum_hex(f, sum);
        ok = apply_one(conn, f, version, sum, o, err);
        if (ok && applied != NULL)
            (*applied)++;
    }
    PQclear(r.res);
    return ok;
}

bool crm_migrate_apply_with(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                            const crm_migrate_opts *o, int *applied, crm_error *err)
{
    if (applied != NULL)
        *applied = 0;
    if (!command_ok(conn, PQexec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")"),
                    "taking the migration lock", err))
        return false;
    bool ok = apply_all(conn, files, count, o, applied, err);
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return ok;
}

bool crm_migrate_apply(PGconn *conn, const struct crm_embedded_file *files, size_t count,
                       int *applied, crm_error *err)
{
    static const crm_migrate_opts defaults = CRM_MIGRATE_DEFAULTS;
    return crm_migrate_apply_with(conn, files, count, &defaults, applied, err);
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

/*
 * db.h — the PostgreSQL connection pool and prepared statements.
 *
 * A bounded pool of libpq connections shared by all threads. A caller takes a
 * connection with crm_db_acquire(), runs prepared statements on it and gives
 * it back with crm_db_release(). When the database cannot be reached, acquire
 * fails quickly with CRM_E_UNAVAILABLE instead of hanging, and the pool
 * reconnects by itself once the database is back.
 *
 * Statements are declared where they are used, as static crm_stmt values:
 *
 *     static crm_stmt find_key = CRM_STMT_RO("auth_find_key",
 *         "SELECT ... WHERE prefix = $1");
 *
 * Each connection prepares a statement the first time it runs it.
 */
#ifndef CRM_DB_H
#define CRM_DB_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define CRM_DB_MAX_STMTS 512

typedef struct crm_stmt {
    const char *name;
    const char *sql;
    bool read_only;  /* safe to run again on a fresh connection if the first one died */
    bool page;       /* reads a page of rows: heavy work for a backend (see dbloop.c) */
    atomic_int slot; /* assigned on first use; 0 means not yet */
} crm_stmt;

/* A crm_stmt whose name is NULL is not prepared: PostgreSQL plans it anew
 * for its values at every run (see crm_db_stmt_for_sql). */
#define CRM_STMT(n, s)                                                                             \
    {                                                                                              \
        .name = (n), .sql = (s), .read_only = false                                                \
    }
#define CRM_STMT_RO(n, s)                                                                          \
    {                                                                                              \
        .name = (n), .sql = (s), .read_only = true                                                 \
    }
/* A read-only statement that reads a page of rows (a list, a feed). */
#define CRM_STMT_PAGE(n, s)                                                                        \
    {                                                                                              \
        .name = (n), .sql = (s), .read_only = true, .page = true                                   \
    }
/* A read-only statement of one answer that costs a backend as much as a
 * page does (several tables, hundreds of µs): the database loop spreads
 * it over its connections as it does pages (lib/dbloop.c). */
#define CRM_STMT_HEAVY(n, s) CRM_STMT_PAGE(n, s)

/* The statement for SQL assembled at run time, created the first time its
 * text is seen and kept (the pool owns it) so that every connection prepares
 * it once. NULL when too many distinct texts were seen: then run the SQL
 * unprepared (a crm_stmt without a name). Only for SQL built from constant
 * fragments, never from values. page: it reads a page of rows (crm_stmt).
 *
 * Connections run with plan_cache_mode=force_generic_plan: a prepared
 * statement is planned once per connection, not at every run (planning a
 * join over customers cost a third of a search's time). A statement whose
 * best plan depends on its values must therefore run unprepared. */
crm_stmt *crm_db_stmt_for_sql(const char *sql, bool read_only, bool page);

/* A statement with its parameters, built by a lib/ function so that callers
 * can run it either on the blocking pool (crm_db_run_query) or on the event
 * loop (dbloop.h) without knowing its SQL. Short parameter values live in buf. */
#define CRM_QUERY_MAX_PARAMS 64

/* SQL that prints a timestamptz column as the API does (RFC 3339, UTC,
 * milliseconds), for documents built in SQL. */
#define CRM_SQL_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

typedef struct crm_query {
    crm_stmt *stmt;
    int nparams;
    bool failed; /* a parameter did not fit: running q fails (CRM_E_INTERNAL) */
    const char *values[CRM_QUERY_MAX_PARAMS];
    char buf[256];
    size_t buf_used;
} crm_query;

/* Starts q for stmt with no parameters. */
void crm_query_init(crm_query *q, crm_stmt *stmt);

/* Appends a text parameter (NULL for SQL NULL). The string must outlive q.
 * False (and q failed, logged) past CRM_QUERY_MAX_PARAMS: never an abort. */
bool crm_query_add(crm_query *q, const char *value);

/* Appends an integer parameter, formatted into q's own buffer; false (and q
 * failed) when it does not fit. */
bool crm_query_add_int(crm_query *q, long long value);

typedef struct crm_db_config {
    const char *url;        /* libpq URI or key=value string */
    int pool_size;          /* connections at most */
    int acquire_timeout_ms; /* how long a request waits for a free connection */
    int connect_timeout_s;  /* libpq connect_timeout unless the URL sets one */
    int statement_timeout_ms;
    int retry_backoff_ms; /* after a failed connect, fail fast for this long */
} crm_db_config;

typedef struct crm_conn crm_conn;

typedef struct crm_db_stats {
    int size;
    int in_use;
    int waiting;
    int connected;
    unsigned long connect_failures;
} crm_db_stats;

/* Creates the pool; does not connect yet. Copies cfg (and the URL string). */
bool crm_db_init(const crm_db_config *cfg, crm_error *err);

/* Closes every connection. No connection may be in use. */
void crm_db_shutdown(void);

/* Takes a healthy connection, connecting if needed. Fails with
 * CRM_E_UNAVAILABLE when the database is down or the pool stays exhausted for
 * acquire_timeout_ms. The caller returns it with crm_db_release(). */
crm_conn *crm_db_acquire(crm_error *err);

/* Returns a connection to the pool. A connection left inside a transaction or
 * broken is closed and replaced later. NULL is ignored. */
void crm_db_release(crm_conn *c);

/* Runs a prepared statement with text parameters (NULL entries are SQL NULL).
 * Returns a result the caller frees with PQclear(), or NULL with err set:
 * CRM_E_UNAVAILABLE for a lost connection, CRM_E_CONFLICT for a unique or
 * serialization failure, CRM_E_INTERNAL otherwise (logged as
 * crm_db_result_error says). crm_db_sqlstate() tells the exact code. */
PGresult *crm_db_exec(crm_conn *c, crm_stmt *stmt, int nparams, const char *const *values,
                      crm_error *err);

/* Called with each row of crm_db_each_row, a one-row result that the caller
 * frees; false (with err set) skips the rows still to come. */
typedef bool (*crm_db_row_fn)(const PGresult *row, void *ctx, crm_error *err);

/* Runs stmt as crm_db_exec does but hands its rows to fn one at a time, as
 * they arrive (libpq's single-row mode): a result of any size takes the
 * memory of one row. False with err set when the statement or fn failed;
 * rows already handed to fn stay handed. */
bool crm_db_each_row(crm_conn *c, crm_stmt *stmt, int nparams, const char *const *values,
                     crm_db_row_fn fn, void *ctx, crm_error *err);

/* Runs SQL text that is assembled only from constant fragments of the
 * caller's (for example a list query whose WHERE clause depends on which
 * filters are present) with every value passed as a $n parameter. Planned
 * for the actual values each time. Same result and error rules as
 * crm_db_exec. Never put a value from a request into sql. */
PGresult *crm_db_exec_sql(crm_conn *c, const char *sql, int nparams, const char *const *values,
                          crm_error *err);

/* Acquires, runs one statement, releases. A read-only statement whose
 * connection turns out to be dead is retried once on a fresh connection. */
PGresult *crm_db_run(crm_stmt *stmt, int nparams, const char *const *values, crm_error *err);

/* crm_db_run for a prepared query. */
PGresult *crm_db_run_query(const crm_query *q, crm_error *err);

/* Transaction control on an acquired connection. */
bool crm_db_begin(crm_conn *c, crm_error *err);
bool crm_db_commit(crm_conn *c, crm_error *err);
void crm_db_rollback(crm_conn *c);

/* Begins a REPEATABLE READ transaction that sees what the transaction that
 * ran pg_export_snapshot() and got snapshot_id sees (that one must still be
 * open): two connections then read one state of the database. The id is
 * PostgreSQL's own (hexadecimal digits and dashes, checked here: SET
 * TRANSACTION SNAPSHOT takes no parameter, so it is spelled in the command);
 * anything else is CRM_E_INTERNAL without a statement sent. */
bool crm_db_begin_snapshot(crm_conn *c, const char *snapshot_id, crm_error *err);

/* Runs a constant SQL command without parameters ("SAVEPOINT s", "ROLLBACK
 * TO SAVEPOINT s"). Same error rules as crm_db_exec. */
bool crm_db_command(crm_conn *c, const char *sql, crm_error *err);

/* Runs sql, a constant "COPY ... FROM STDIN", sending it the len bytes of
 * data (rows in the format the COPY names). Same error rules as
 * crm_db_exec: a unique or foreign-key violation leaves its SQLSTATE in
 * crm_db_sqlstate(). */
bool crm_db_copy_in(crm_conn *c, const char *sql, const char *data, size_t len, crm_error *err);

/* A COPY ... FROM STDIN in pieces, for data too large to hold at once:
 * begin, put as often as needed, end (abort_reason non-NULL: abandon it,
 * nothing is stored, and end returns false). */
bool crm_db_copy_begin(crm_conn *c, const char *sql, crm_error *err);
bool crm_db_copy_put(crm_conn *c, const char *data, size_t len, crm_error *err);
bool crm_db_copy_end(crm_conn *c, const char *abort_reason, crm_error *err);

/* Called with each line of a COPY ... TO STDOUT (its newline included);
 * false (err set) skips the lines still to come. */
typedef bool (*crm_db_line_fn)(const char *line, size_t len, void *ctx, crm_error *err);

/* Runs sql, a constant "COPY (...) TO STDOUT", handing fn its lines as they
 * arrive. A COPY takes no parameters: values reach it through settings of
 * the transaction (set_config(name, $1, true), current_setting(name)). */
bool crm_db_copy_out(crm_conn *c, const char *sql, crm_db_line_fn fn, void *ctx, crm_error *err);

/* The SQLSTATE of the last failed statement on c ("" when none). */
const char *crm_db_sqlstate(const crm_conn *c);

/* The libpq connection, for the few callers that need plain PQexec (migrations). */
PGconn *crm_db_pgconn(crm_conn *c);

/* Marks c as unusable so release closes it (after a protocol-level failure). */
void crm_db_mark_broken(crm_conn *c);

/* Opens a crm_conn of its own, outside the pool, with the session settings
 * of the pool's connections and cfg's statement_timeout_ms (0: none); only
 * url, connect_timeout_s and statement_timeout_ms of cfg are read. For work
 * that holds a connection for long (a job, lib/jobs.h) without taking one
 * from the requests: crm_db_exec, crm_db_each_row, crm_db_begin ... work on
 * it as on a pooled one. Nothing reconnects it: a broken one stays broken.
 * NULL with CRM_E_UNAVAILABLE when the database cannot be reached. The
 * caller closes it with crm_db_close_private (crm_db_release closes it too). */
crm_conn *crm_db_open_private(const crm_db_config *cfg, crm_error *err);

/* Closes a connection from crm_db_open_private (a transaction left open is
 * rolled back by the server). NULL is ignored. */
void crm_db_close_private(crm_conn *c);

/* Opens a connection outside the pool (migrations, CLI). PQfinish() it. */
PGconn *crm_db_connect_direct(const crm_db_config *cfg, crm_error *err);

/* Starts a connection with the same settings as crm_db_connect_direct
 * without waiting for it (PQconnectStartParams): the caller drives it with
 * PQconnectPoll on PQsocket and must enforce *timeout_s itself (libpq does
 * not in this mode; it gets the URL's connect_timeout, else the config's).
 * NULL (logged) when it fails at once. A host name still costs a blocking
 * DNS lookup inside libpq; hostaddr or an IP address avoids it. */
PGconn *crm_db_connect_start(const crm_db_config *cfg, int *timeout_s);

/* Logs why pg failed to connect (the first line of libpq's message). */
void crm_db_log_connect_failure(PGconn *pg);

/* True inside the fail-fast window that follows a failed connect. */
bool crm_db_in_backoff(void);

/* Records a connect attempt: a success ends the window, a failure starts one
 * of backoff_ms. Used by the pool and by the event loop alike. */
void crm_db_note_connect(bool ok, int backoff_ms);

/* Maps a failed result on conn to a crm_error and logs it by its SQLSTATE,
 * constraint, table, column and what (the statement's name), never by the
 * server's message text, which can quote personal data. Conflicts (23505,
 * 40001, 40P01) are logged at debug level only. */
bool crm_db_result_error(PGconn *conn, const PGresult *res, const char *what, crm_error *err);

crm_db_stats crm_db_get_stats(void);

/* The statement's small integer id (1..CRM_DB_MAX_STMTS-1), assigned on first
 * use; connections remember which ids they have prepared. */
int crm_db_stmt_slot(crm_stmt *stmt);

#endif

/*
 * dbloop.h — asynchronous single statements on an event loop.
 *
 * A request that needs exactly one statement does not have to hold an HTTP
 * thread while PostgreSQL works: it submits the statement here and gets a
 * callback with the result. One loop thread owns a few connections in
 * libpq's pipeline mode, sends statements in batches and waits for all
 * results with one epoll, so under load one wake-up and one write carry many
 * statements. Multi-statement work and transactions use the blocking pool in
 * db.h.
 */
#ifndef CRM_DBLOOP_H
#define CRM_DBLOOP_H

#include "db.h"

/* Called exactly once, on the loop thread, with the result (the callee owns
 * it and frees it with PQclear) or with res NULL and err set. */
typedef void (*crm_dbloop_done)(void *arg, PGresult *res, const crm_error *err);

/* Starts the loop thread with at most `connections` connections, using the
 * connection settings of cfg (url, timeouts). */
bool crm_dbloop_start(const crm_db_config *cfg, int connections, crm_error *err);

/* Fails what is still queued with CRM_E_UNAVAILABLE, waits for what is in
 * flight, closes the connections and joins the thread. */
void crm_dbloop_stop(void);

/* Queues stmt with text parameters. values (and the strings they point to)
 * must stay valid until done runs. Returns false (done will not run) only
 * when the loop is not running. */
bool crm_dbloop_submit(crm_stmt *stmt, int nparams, const char *const *values,
                       crm_dbloop_done done, void *arg, crm_error *err);

typedef struct crm_dbloop_stats {
    int connections; /* open */
    int busy;        /* running a statement */
    int queued;      /* waiting for a connection */
} crm_dbloop_stats;

crm_dbloop_stats crm_dbloop_get_stats(void);

#endif

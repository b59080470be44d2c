/*
 * dbloop.h — asynchronous single statements on an event loop.
 *
 * A request that needs exactly one statement does not hold a thread while
 * PostgreSQL works: each HTTP I/O thread owns a loop of a few connections in
 * libpq's pipeline mode, queues the statement, and goes on serving other
 * connections; results arrive on the same thread, so a request never changes
 * threads and a burst of requests costs one write and one read per
 * connection. Multi-statement work and transactions use the blocking pool in
 * db.h, on worker threads.
 */
#ifndef CRM_DBLOOP_H
#define CRM_DBLOOP_H

#include "db.h"

/* Called exactly once, on the loop's thread, with the result (the callee
 * owns it and frees it with PQclear) or with res NULL and err set. */
typedef void (*crm_dbloop_done)(void *arg, PGresult *res, const crm_error *err);

/* One loop: a few pipelined connections used by one thread only (nothing
 * here locks). The owner watches crm_dbloop_fd() for readability in its own
 * event loop and calls crm_dbloop_run() when it fires and after queueing. */
typedef struct crm_dbloop crm_dbloop;

/* A loop of at most `connections` connections with cfg's settings. */
crm_dbloop *crm_dbloop_new(const crm_db_config *cfg, int connections, crm_error *err);

/* Fails what is still queued or in flight with CRM_E_UNAVAILABLE (their
 * callbacks run) and closes the connections. */
void crm_dbloop_free(crm_dbloop *loop);

/* For a shutdown deadline: cancels the statements in flight, fails every
 * job with CRM_E_UNAVAILABLE (each callback runs exactly once, here) and
 * closes the connections. Afterwards crm_dbloop_free calls no callback for
 * those jobs. */
void crm_dbloop_abort_all(crm_dbloop *loop);

/* An epoll descriptor that turns readable when a connection has news. */
int crm_dbloop_fd(const crm_dbloop *loop);

/* Queues stmt with text parameters; values (and what they point to) must stay
 * valid until done runs. Nothing is sent until the next crm_dbloop_run(). */
bool crm_dbloop_submit(crm_dbloop *loop, crm_stmt *stmt, int nparams, const char *const *values,
                       crm_dbloop_done done, void *arg, crm_error *err);

/* Without blocking: completes every statement whose results are in (calling
 * their callbacks), then sends what is queued, one write per connection. */
void crm_dbloop_run(crm_dbloop *loop);

/* True when nothing is queued or in flight. */
bool crm_dbloop_idle(const crm_dbloop *loop);

typedef struct crm_dbloop_stats {
    int connections; /* open */
    int busy;        /* statements in flight */
    int queued;      /* waiting for a connection */
} crm_dbloop_stats;

/* Summed over every loop of the process. */
crm_dbloop_stats crm_dbloop_get_stats(void);

#endif

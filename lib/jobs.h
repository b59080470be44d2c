/*
 * jobs.h — long work as jobs in a table that every crmd process shares.
 *
 * A job is a row of `jobs` (migration 0016): its kind, parameters, state
 * (queued, running, succeeded, failed, cancelled), phase and progress, a
 * checkpoint, its result or error. Every crmd process runs a claimer that
 * takes queued jobs, and running jobs whose lease ran out (their process
 * died), with FOR UPDATE SKIP LOCKED; so several processes side by side
 * never run one job twice, and a job whose process was killed is taken over
 * and resumed from its last checkpoint (or failed once it has been tried
 * CRM_JOB_MAX_ATTEMPTS times), never left "running".
 *
 * A job runs on its own database connection (crm_db_open_private), outside
 * the request pool and with its own statement timeout, so it never starves
 * requests. Its executor reports progress with crm_job_progress, which also
 * renews the lease and saves the checkpoint; when that returns false the job
 * was cancelled or lost its lease, and the executor must stop at once.
 *
 *     static bool recompute(crm_job_ctx *job, crm_error *err)
 *     {
 *         json_t *at = crm_job_checkpoint(job);      (NULL on a first run)
 *         ... work ...
 *         if (!crm_job_progress(job, "fit", 3, 5, checkpoint))
 *             return crm_error_set(err, CRM_E_CONFLICT, "stopped");
 *         ...
 *         crm_job_set_result(job, result);
 *         return true;
 *     }
 *     static const crm_job_kind recompute_kind = {"metrics_recompute", recompute,
 *                                                 CRM_SCOPE_METRICS_READ};
 *     crm_jobs_register(&recompute_kind);            (at start; it must outlive the process)
 */
#ifndef CRM_JOBS_H
#define CRM_JOBS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"

#define CRM_JOB_MAX_ATTEMPTS 3

typedef struct crm_job_ctx crm_job_ctx;

/* Runs a job to its end: true when it succeeded (its result set), false
 * with err when it failed (the error is stored on the job). */
typedef bool (*crm_job_run_fn)(crm_job_ctx *job, crm_error *err);

typedef struct crm_job_kind {
    const char *name;    /* jobs.kind */
    crm_job_run_fn run;
    unsigned read_scope; /* what a key needs to read such a job (auth.h scopes) */
} crm_job_kind;

/* Registers a kind (kind must outlive the process); at most 16. Its name
 * is [a-z][a-z0-9_]*, at most 63 characters. Registering a name again
 * replaces the earlier kind. A bad kind, or a 17th, stops the process (a
 * programming error, found at start). */
void crm_jobs_register(const crm_job_kind *kind);
const crm_job_kind *crm_jobs_kind(const char *name);

/* Calls listener(arg) each time this process queues a job (the runner
 * wakes up at once instead of at its next poll); NULL clears it. Once this
 * returns, no call into the previous listener is still under way. The
 * listener runs inside crm_job_submit: it must be quick. */
void crm_jobs_set_submit_listener(void (*listener)(void *arg), void *arg);

/* ---- inside an executor ------------------------------------------------- */

crm_conn *crm_job_conn(crm_job_ctx *job);      /* the job's own connection */
/* Keeps the job's lease renewed from a thread of its own (every third of
 * the lease, through the pool) while the executor works for long without
 * reporting progress: a statement or a computation that outlasts the
 * lease is not taken for a dead process. The executor's own progress
 * still learns of a cancel or a takeover. NULL when no thread could be
 * started (the lease is then renewed only by progress). Stop it before the
 * executor returns. */
typedef struct crm_job_keeper crm_job_keeper;
crm_job_keeper *crm_job_keep_lease(crm_job_ctx *job);
void crm_job_keeper_stop(crm_job_keeper *k);

/* Another connection like the job's own, for work it runs side by side;
 * the caller closes it with crm_db_close_private. NULL with err. */
crm_conn *crm_job_open_conn(crm_job_ctx *job, crm_error *err);
long long crm_job_id(const crm_job_ctx *job);
const json_t *crm_job_params(const crm_job_ctx *job);     /* borrowed */
/* The checkpoint the job was claimed with (the last one an earlier attempt
 * saved); borrowed; NULL: a fresh start. */
const json_t *crm_job_checkpoint(const crm_job_ctx *job);

/* Records phase (NULL: keep the last one), done of total (total 0:
 * unknown) and checkpoint (borrowed, may be NULL: keep the last one), and
 * renews the lease. False when the job was cancelled, its lease was lost to
 * another process, or this process is stopping (cfg->stop; what was given
 * is saved first): stop, and return false. A progress that could not be
 * written because the database was unavailable returns true while the
 * lease surely lasts. Call it well within every lease_s seconds. */
bool crm_job_progress(crm_job_ctx *job, const char *phase, long long done, long long total,
                      const json_t *checkpoint);

/* The job's result (stolen), stored when the executor returns true. */
void crm_job_set_result(crm_job_ctx *job, json_t *result);

/* ---- submitting and reading ------------------------------------------- */

/* Queues a job of kind (registered here, else CRM_E_INVALID) with params
 * (borrowed; an object, NULL for {}) for api_key_id (0: none).
 * exclusive (may be NULL) names work of which only one job may be queued or
 * running at a time: when one is, fails with CRM_E_CONFLICT and *running
 * gets its id. Returns the job's representation (see crm_job_get), or NULL
 * with err. */
json_t *crm_job_submit(const char *kind, const json_t *params, const char *exclusive,
                       long long api_key_id, long long *running, crm_error *err);

/* Queues a job of kind inside the caller's transaction on c (no
 * exclusive name): it becomes visible, and runnable, when that transaction
 * commits. The caller then calls crm_jobs_wake() so that this process's
 * runner looks at once. Returns the job's representation, or NULL with err. */
json_t *crm_job_submit_on(crm_conn *c, const char *kind, const json_t *params,
                          long long api_key_id, crm_error *err);
void crm_jobs_wake(void);

/* A job's representation: {"id", "kind", "state", "phase", "progress":
 * {"done", "total"}, "params", "result", "error", "attempts", "created_at",
 * "started_at", "finished_at"} (null for a phase, result, error or time not
 * there yet, and for a total of 0; times RFC 3339 UTC with milliseconds);
 * the caller owns it. NULL with CRM_E_NOT_FOUND. *kind_scope gets the read
 * scope of its kind (0 when the kind is not registered here). */
json_t *crm_job_get(long long id, unsigned *kind_scope, crm_error *err);

/* Asks a queued or running job to stop (it ends "cancelled"); CRM_E_CONFLICT
 * when it has already ended. Returns its representation. */
json_t *crm_job_cancel(long long id, crm_error *err);

/* ---- running ----------------------------------------------------------- */

typedef struct crm_jobs_config {
    crm_db_config db;         /* the jobs' own connections: url, statement timeout */
    int lease_s;              /* a running job's lease, renewed by crm_job_progress */
    const char *worker;       /* this process's name in jobs.claimed_by */
    const atomic_bool *stop;  /* NULL, or set when the process stops: the next
                                 crm_job_progress saves what it is given and
                                 returns false, and the job goes back to the
                                 queue (its attempt not counted) */
} crm_jobs_config;

/* Claims one runnable job (queued, or running with its lease expired) of a
 * registered kind and runs it to its end on a private connection. True when
 * a job was run (*ran_id its id), false when there was none or the database
 * failed (err). For the runner thread and for tests.
 *
 * Before claiming it settles, set-based, the running jobs whose lease ran
 * out and that must not run again: cancelled ones end "cancelled", those
 * tried CRM_JOB_MAX_ATTEMPTS times end "failed" (error code "abandoned").
 *
 * How a run ends: the executor returned true: "succeeded" with its result;
 * it returned false: "cancelled" when a cancel was asked, else back to the
 * queue when the process is stopping (cfg->stop) or the database was
 * unavailable (CRM_E_UNAVAILABLE) with attempts left, else "failed" with
 * error {"code": crm_errcode_name, "detail"}. Each of these writes only
 * while the job is still this claim's (claimed_by and attempts); a job
 * whose lease was taken over is left to its new owner. Claiming, progress
 * and the ending run on the request pool (one short statement each); the
 * executor's own work on crm_job_conn. */
bool crm_jobs_run_one(const crm_jobs_config *cfg, long long *ran_id, crm_error *err);

#endif

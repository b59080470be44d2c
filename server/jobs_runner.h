/*
 * jobs_runner.h — the threads that run jobs (lib/jobs.h) in a crmd process.
 *
 * Each of CRMD_JOB_WORKERS threads claims and runs one job at a time with
 * crm_jobs_run_one; when there was none it sleeps CRMD_JOB_POLL_MS, or
 * until this process queues a job (the runner listens to crm_job_submit).
 * Every crmd process runs its own; they share the work through the jobs
 * table, so any number may run side by side.
 */
#ifndef HTTP_JOBS_RUNNER_H
#define HTTP_JOBS_RUNNER_H

#include <stddef.h>

#include "error.h"
#include "jobs.h"

typedef struct jobs_runner jobs_runner;

/* Starts workers threads (at least 1) that claim with cfg (copied, with
 * its strings; cfg->stop is ignored: the runner has its own) and poll
 * every poll_ms milliseconds. NULL with err when a thread could not be
 * started. */
jobs_runner *jobs_runner_start(const crm_jobs_config *cfg, int workers, int poll_ms,
                               crm_error *err);

/* Wakes the sleeping workers to look for a job now. */
void jobs_runner_wake(jobs_runner *r);

/* Stops the workers and frees r (NULL is ignored). A job that is running
 * learns it at its next crm_job_progress, which saves its checkpoint, and
 * goes back to the queue with its attempt not counted, for this process's
 * next start or another process to resume; the call returns once every
 * worker has finished its job that way. An executor that does not report
 * progress holds the stop up until it ends. */
void jobs_runner_stop(jobs_runner *r);

/* This process's name in jobs.claimed_by: "host:pid" (the host name cut
 * to fit size). */
void jobs_runner_worker_name(char *out, size_t size);

#endif

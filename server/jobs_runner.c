/*
 * jobs_runner.c — the worker threads that claim and run jobs, their sleep
 * between polls, and their stop (see jobs_runner.h).
 *
 * A worker notes the wake-up generation before it looks for a job and
 * sleeps only while it has not changed: a job queued while it was looking
 * is never slept through.
 */
#include "jobs_runner.h"
#include "clock.h"
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKER_NAME_MAX 128

struct jobs_runner {
    crm_jobs_config cfg; /* its url and worker point into the strings below */
    char *url;
    char worker[WORKER_NAME_MAX];
    int poll_ms;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* on the monotonic clock */
    unsigned long generation; /* bumped by each wake-up; under mu */
    int nthreads;             /* started */
    pthread_t *threads;
};

void jobs_runner_worker_name(char *out, size_t size)
{
    char host[64];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    snprintf(out, size, "%s:%ld", host, (long)getpid());
}

void jobs_runner_wake(jobs_runner *r)
{
    pthread_mutex_lock(&r->mu);
    r->generation++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void wake_on_submit(void *arg)
{
    jobs_runner_wake(arg);
}

static unsigned long generation_now(jobs_runner *r)
{
    pthread_mutex_lock(&r->mu);
    unsigned long g = r->generation;
    pthread_mutex_unlock(&r->mu);
    return g;
}

/* Sleeps poll_ms, or less when woken (generation moved past seen) or
 * stopped. */
static void sleep_until_woken(jobs_runner *r, unsigned long seen)
{
    struct timespec until = crm_monotonic_after_ms(r->poll_ms);
    pthread_mutex_lock(&r->mu);
    while (r->generation == seen && !atomic_load(&r->stop))
        if (pthread_cond_timedwait(&r->cv, &r->mu, &until) != 0)
            break; /* the poll interval is up */
    pthread_mutex_unlock(&r->mu);
}

/* A database that fails is logged once when it starts failing (and at
 * debug level while it goes on), not at every poll. */
static void *worker_main(void *arg)
{
    jobs_runner *r = arg;
    bool failing = false;
    while (!atomic_load(&r->stop)) {
        unsigned long seen = generation_now(r);
        crm_error err = CRM_ERROR_INIT;
        long long id = 0;
        bool ran = crm_jobs_run_one(&r->cfg, &id, &err);
        if (err.code != CRM_OK) {
            crm_log(failing ? CRM_LOG_DEBUG : CRM_LOG_WARN, "jobs: cannot claim a job: %s",
                    err.detail);
            failing = true;
        } else {
            failing = false;
        }
        crm_error_clear(&err);
        if (!ran)
            sleep_until_woken(r, seen);
    }
    return NULL;
}

/* Stops and joins the threads started so far, then frees r. */
static void runner_free(jobs_runner *r)
{
    atomic_store(&r->stop, true);
    jobs_runner_wake(r);
    for (int i = 0; i < r->nthreads; i++)
        pthread_join(r->threads[i], NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->threads);
    free(r->url);
    free(r);
}

jobs_runner *jobs_runner_start(const crm_jobs_config *cfg, int workers, int poll_ms, crm_error *err)
{
    jobs_runner *r = calloc(1, sizeof *r);
    if (r == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory starting the job runner");
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &attr);
    pthread_condattr_destroy(&attr);
    atomic_store(&r->stop, false);
    r->cfg = *cfg;
    r->url = strdup(cfg->db.url != NULL ? cfg->db.url : "");
    r->cfg.db.url = r->url;
    snprintf(r->worker, sizeof r->worker, "%s", cfg->worker != NULL ? cfg->worker : "crmd");
    r->cfg.worker = r->worker;
    r->cfg.stop = &r->stop;
    r->poll_ms = poll_ms > 0 ? poll_ms : 1000;
    int n = workers > 0 ? workers : 1;
    r->threads = calloc((size_t)n, sizeof *r->threads);
    if (r->url == NULL || r->threads == NULL) {
        runner_free(r);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory starting the job runner");
        return NULL;
    }
    for (; r->nthreads < n; r->nthreads++)
        if (pthread_create(&r->threads[r->nthreads], NULL, worker_main, r) != 0) {
            runner_free(r);
            crm_error_set(err, CRM_E_INTERNAL, "cannot start a job worker thread");
            return NULL;
        }
    crm_jobs_set_submit_listener(wake_on_submit, r);
    return r;
}

void jobs_runner_stop(jobs_runner *r)
{
    if (r == NULL)
        return;
    crm_jobs_set_submit_listener(NULL, NULL); /* no call into r is under way after this */
    runner_free(r);
}

/*
 * segments_worker.c — the segments' background thread (segments_worker.h).
 */
#include "segments_worker.h"
#include "clock.h"
#include "log.h"
#include "segment_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct segments_worker {
    int tick_ms, batch;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on the monotonic clock */
    pthread_t thread;
};

static void nap(segments_worker *w, int ms)
{
    struct timespec until = crm_monotonic_after_ms(ms);
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop))
        if (pthread_cond_timedwait(&w->cv, &w->mu, &until) != 0)
            break;
    pthread_mutex_unlock(&w->mu);
}

static void *run(void *arg)
{
    segments_worker *w = arg;
    bool failing = false;
    while (!atomic_load(&w->stop)) {
        crm_error err = CRM_ERROR_INIT;
        long did = 0;
        if (crm_segments_tick(w->batch, &did, &err)) {
            failing = false;
        } else {
            /* Logged when failing starts, at debug level while it lasts. */
            crm_log(failing ? CRM_LOG_DEBUG : CRM_LOG_WARN, "segments: upkeep: %s", err.detail);
            failing = true;
        }
        crm_error_clear(&err);
        if (did < w->batch)
            nap(w, w->tick_ms);
    }
    return NULL;
}

segments_worker *segments_worker_start(int tick_ms, int batch)
{
    if (tick_ms <= 0)
        return NULL;
    segments_worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->tick_ms = tick_ms;
    w->batch = batch;
    atomic_init(&w->stop, false);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        crm_log(CRM_LOG_ERROR, "segments: the upkeep thread could not start");
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void segments_worker_stop(segments_worker *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/*
 * segments_worker.c — the segments' background thread (segments_worker.h).
 */
#include "segments_worker.h"
#include "clock.h"
#include "log.h"
#include "campaigns.h"
#include "segment_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct segments_worker {
    segments_worker_config cfg;
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

/* One part of the upkeep; logged when it starts failing, at debug level
 * while it goes on. */
static void report(bool ok, crm_error *err, bool *failing, const char *what)
{
    if (!ok)
        crm_log(*failing ? CRM_LOG_DEBUG : CRM_LOG_WARN, "segments: %s: %s", what, err->detail);
    *failing = !ok;
    crm_error_clear(err);
}

/* The campaigns' upkeep: the responses' follower while it finds work in
 * numbers (a few sweeps at most), then the results that moved. */
static bool campaigns_upkeep(const segments_worker_config *cfg, crm_error *err)
{
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return false;
    int seen = 0, done = 0, started = 0;
    bool ok = crm_campaigns_start_scheduled(c, &started, err);
    for (int i = 0; ok && i < 10; i++) {
        ok = crm_campaigns_follow(c, cfg->currency, 5000, &seen, err);
        if (seen < 5000)
            break;
    }
    ok = ok && crm_campaigns_refresh_results(c, cfg->currency, 10, &done, err);
    crm_db_release(c);
    return ok;
}

static void *run(void *arg)
{
    segments_worker *w = arg;
    const segments_worker_config *cfg = &w->cfg;
    bool tick_failing = false, queue_failing = false, campaigns_failing = false;
    long long next_tick = 0, next_campaigns = 0;
    while (!atomic_load(&w->stop)) {
        crm_error err = CRM_ERROR_INIT;
        bool busy = false;
        if (cfg->queue_ms > 0) {
            long did = 0;
            report(crm_segments_drain(cfg->queue_batches, &did, &err), &err, &queue_failing,
                   "judging the queued batches");
            busy = did >= cfg->queue_batches;
        }
        long long now = crm_monotonic_ms();
        if (cfg->tick_ms > 0 && now >= next_tick) {
            long did = 0;
            report(crm_segments_tick(cfg->flip_batch, &did, &err), &err, &tick_failing, "upkeep");
            /* Again at once while customers were due in numbers. */
            next_tick = did >= cfg->flip_batch ? now : now + cfg->tick_ms;
        }
        if (cfg->campaigns_ms > 0 && crm_monotonic_ms() >= next_campaigns) {
            report(campaigns_upkeep(cfg, &err), &err, &campaigns_failing, "campaigns' upkeep");
            next_campaigns = crm_monotonic_ms() + cfg->campaigns_ms;
        }
        if (busy || atomic_load(&w->stop))
            continue;
        long long wait = cfg->tick_ms > 0 ? next_tick - crm_monotonic_ms() : 600000;
        if (cfg->campaigns_ms > 0 && wait > next_campaigns - crm_monotonic_ms())
            wait = next_campaigns - crm_monotonic_ms();
        if (cfg->queue_ms > 0 && wait > cfg->queue_ms)
            wait = cfg->queue_ms;
        if (wait > 0)
            nap(w, (int)wait);
    }
    return NULL;
}

segments_worker *segments_worker_start(const segments_worker_config *cfg)
{
    if (cfg->tick_ms <= 0 && cfg->queue_ms <= 0 && cfg->campaigns_ms <= 0)
        return NULL;
    segments_worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->cfg = *cfg;
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

/*
 * segments_worker.h — the thread that runs the segments' background upkeep
 * (lib/segment_store.h) in a crmd process: the queued batches of
 * touchpoints judged every CRMD_SEGMENTS_QUEUE_MS (crm_segments_drain), the
 * flips, folds and daily sizes every CRMD_SEGMENTS_TICK_MS
 * (crm_segments_tick); each again at once while it found work in numbers;
 * and the campaigns' upkeep every CRMD_CAMPAIGNS_TICK_MS.
 * Every process runs one; the work is claimed through PostgreSQL (FOR
 * UPDATE SKIP LOCKED), so side by side they never do it twice.
 */
#ifndef HTTP_SEGMENTS_WORKER_H
#define HTTP_SEGMENTS_WORKER_H

typedef struct segments_worker segments_worker;

typedef struct segments_worker_config {
    int tick_ms, flip_batch;      /* 0 ms: no flips, folds nor daily sizes here */
    int queue_ms, queue_batches; /* 0 ms: no queued batch judged here */
    /* The campaigns' upkeep rides on this thread (lib/campaigns.h): every
     * campaigns_ms, responses attributed and dirty results recomputed,
     * amounts valued in currency (the reporting one); 0 ms: none here. */
    int campaigns_ms;
    const char *currency;
} segments_worker_config;

/* NULL when the thread could not start (logged) or both intervals are 0. */
segments_worker *segments_worker_start(const segments_worker_config *cfg);

/* Stops the thread and frees w (NULL is ignored). */
void segments_worker_stop(segments_worker *w);

#endif

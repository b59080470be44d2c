/*
 * segments_worker.h — the thread that runs the segments' background upkeep
 * (crm_segments_tick, lib/segment_store.h) in a crmd process: every
 * CRMD_SEGMENTS_TICK_MS, and again at once while customers were due in
 * numbers. Every process runs one; the work is claimed through PostgreSQL
 * (FOR UPDATE SKIP LOCKED, single statements), so side by side they never
 * do it twice.
 */
#ifndef HTTP_SEGMENTS_WORKER_H
#define HTTP_SEGMENTS_WORKER_H

typedef struct segments_worker segments_worker;

/* NULL when the thread could not start (logged) or tick_ms is 0. */
segments_worker *segments_worker_start(int tick_ms, int batch);

/* Stops the thread and frees w (NULL is ignored). */
void segments_worker_stop(segments_worker *w);

#endif

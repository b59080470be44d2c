/*
 * metrics_follower.h — the thread that keeps customers' metrics current
 * (lib/customer_metrics.h, crm_metrics_follow) and queues the scheduled
 * full recomputes.
 *
 * Every crmd process runs one; the one whose connection holds the
 * follower's advisory lock follows and schedules, the others try again at
 * each poll and take over within a poll of its process ending. It works on
 * a connection of its own, outside the request pool.
 */
#ifndef HTTP_METRICS_FOLLOWER_H
#define HTTP_METRICS_FOLLOWER_H

#include "db.h"
#include "error.h"

typedef struct metrics_follower metrics_follower;

typedef struct metrics_follower_config {
    crm_db_config db;   /* its connection (copied, with its url) */
    int poll_ms;        /* between sweeps that found nothing more to do */
    int batch;          /* changes of each feed per sweep */
    int duty_percent;   /* with changes waiting, the share of time it works */
    int schedule_hours; /* 0: no scheduled recomputes */
} metrics_follower_config;

/* Starts the thread; NULL with err when it could not. */
metrics_follower *metrics_follower_start(const metrics_follower_config *cfg, crm_error *err);

/* Stops it (a sweep under way finishes or rolls back) and frees f (NULL
 * is ignored). */
void metrics_follower_stop(metrics_follower *f);

#endif

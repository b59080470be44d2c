/*
 * metrics.h — request counters and latency histograms for /metrics.
 *
 * Series are indexed by route table position (plus one slot for requests no
 * route matched) and by status code, so recording is a couple of relaxed
 * atomic additions with no locks and no allocation.
 */
#ifndef HTTP_METRICS_H
#define HTTP_METRICS_H

#include <stddef.h>

#include "router.h"

#include <stdbool.h>

/* Sizes the tables for the route table. Call once before serving; false
 * when out of memory. */
bool metrics_init(void);

/* Records one finished request. route_index is -1 when no route matched. */
void metrics_record(int route_index, int status, double seconds);

/* Renders the Prometheus text exposition. Caller frees the result. */
char *metrics_render(size_t *len, int open_connections, int in_flight);

#endif

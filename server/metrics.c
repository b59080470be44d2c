/*
 * metrics.c — lock-free counters rendered as Prometheus text.
 */
#include "metrics.h"
#include "db.h"
#include "dbloop.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int tracked_status[] = {200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409,
                                     410, 412, 413, 414, 415, 422, 428, 429, 431, 500, 503};
#define N_STATUS (sizeof tracked_status / sizeof tracked_status[0] + 1) /* + "other" */

static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS (sizeof bucket_le / sizeof bucket_le[0])

typedef struct route_series {
    atomic_ulong by_status[N_STATUS];
    atomic_ulong buckets[N_BUCKETS]; /* non-cumulative; summed when rendered */
    atomic_ulong count;
    atomic_ulong sum_us;
} route_series;

static route_series *series; /* n_routes + 1: the last is "no route matched" */
static size_t n_routes;

bool metrics_init(void)
{
    size_t n;
    router_table(&n);
    series = calloc(n + 1, sizeof *series);
    /* Without the table there are no per-route series to render. */
    n_routes = series != NULL ? n : 0;
    return series != NULL;
}

static size_t status_slot(int status)
{
    for (size_t i = 0; i < N_STATUS - 1; i++)
        if (tracked_status[i] == status)
            return i;
    return N_STATUS - 1;
}

void metrics_record(int route_index, int status, double seconds)
{
    if (series == NULL)
        return;
    route_series *s = &series[route_index < 0 ? n_routes : (size_t)route_index];
    atomic_fetch_add_explicit(&s->by_status[status_slot(status)], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < N_BUCKETS && seconds > bucket_le[b])
        b++;
    if (b < N_BUCKETS)
        atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, (unsigned long)(seconds * 1e6), memory_order_relaxed);
}

static void route_labels(size_t i, const http_route *table, char *buf, size_t size)
{
    if (i == n_routes)
        snprintf(buf, size, "method=\"\",route=\"unmatched\"");
    else
        snprintf(buf, size, "method=\"%s\",route=\"%s\"", table[i].method, table[i].pattern);
}

char *metrics_render(size_t *len, int open_connections, int in_flight)
{
    char *buf = NULL;
    FILE *out = open_memstream(&buf, len);
    if (out == NULL)
        return NULL;
    size_t count;
    const http_route *table = router_table(&count);
    char labels[256];

    fputs("# HELP crmd_http_requests_total HTTP requests answered, by route pattern and status.\n"
          "# TYPE crmd_http_requests_total counter\n", out);
    for (size_t i = 0; series != NULL && i <= n_routes; i++) {
        route_labels(i, table, labels, sizeof labels);
        for (size_t st = 0; st < N_STATUS; st++) {
            unsigned long n = atomic_load_explicit(&series[i].by_status[st], memory_order_relaxed);
            if (n == 0)
                continue;
            if (st == N_STATUS - 1)
                fprintf(out, "crmd_http_requests_total{%s,status=\"other\"} %lu\n", labels, n);
            else
                fprintf(out, "crmd_http_requests_total{%s,status=\"%d\"} %lu\n", labels,
                        tracked_status[st], n);
        }
    }

    fputs("# HELP crmd_http_request_duration_seconds Time from request start to response "
          "queued.\n# TYPE crmd_http_request_duration_seconds histogram\n", out);
    for (size_t i = 0; series != NULL && i <= n_routes; i++) {
        unsigned long total = atomic_load_explicit(&series[i].count, memory_order_relaxed);
        if (total == 0)
            continue;
        route_labels(i, table, labels, sizeof labels);
        unsigned long cumulative = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cumulative += atomic_load_explicit(&series[i].buckets[b], memory_order_relaxed);
            fprintf(out, "crmd_http_request_duration_seconds_bucket{%s,le=\"%g\"} %lu\n", labels,
                    bucket_le[b], cumulative);
        }
        fprintf(out, "crmd_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %lu\n", labels,
                total);
        fprintf(out, "crmd_http_request_duration_seconds_sum{%s} %.6f\n", labels,
                atomic_load_explicit(&series[i].sum_us, memory_order_relaxed) / 1e6);
        fprintf(out, "crmd_http_request_duration_seconds_count{%s} %lu\n", labels, total);
    }

    crm_db_stats db = crm_db_get_stats();
    crm_dbloop_stats loop = crm_dbloop_get_stats();
    fprintf(out,
            "# HELP crmd_db_pool_size Database connections the pool may hold.\n"
            "# TYPE crmd_db_pool_size gauge\ncrmd_db_pool_size %d\n"
            "# HELP crmd_db_pool_in_use Database connections taken by requests.\n"
            "# TYPE crmd_db_pool_in_use gauge\ncrmd_db_pool_in_use %d\n"
            "# HELP crmd_db_pool_waiting Requests waiting for a database connection.\n"
            "# TYPE crmd_db_pool_waiting gauge\ncrmd_db_pool_waiting %d\n"
            "# HELP crmd_db_pool_connected Open database connections.\n"
            "# TYPE crmd_db_pool_connected gauge\ncrmd_db_pool_connected %d\n"
            "# HELP crmd_db_connect_failures_total Failed attempts to connect to the database.\n"
            "# TYPE crmd_db_connect_failures_total counter\ncrmd_db_connect_failures_total %lu\n"
            "# HELP crmd_db_loop_connected Open connections of the event loop.\n"
            "# TYPE crmd_db_loop_connected gauge\ncrmd_db_loop_connected %d\n"
            "# HELP crmd_db_loop_busy Statements in flight on the event loop.\n"
            "# TYPE crmd_db_loop_busy gauge\ncrmd_db_loop_busy %d\n"
            "# HELP crmd_db_loop_queued Statements waiting for an event-loop connection.\n"
            "# TYPE crmd_db_loop_queued gauge\ncrmd_db_loop_queued %d\n"
            "# HELP crmd_http_connections Open client connections.\n"
            "# TYPE crmd_http_connections gauge\ncrmd_http_connections %d\n"
            "# HELP crmd_http_requests_in_flight Requests being processed.\n"
            "# TYPE crmd_http_requests_in_flight gauge\ncrmd_http_requests_in_flight %d\n",
            db.size, db.in_use, db.waiting, db.connected, db.connect_failures, loop.connections,
            loop.busy, loop.queued, open_connections, in_flight);
    fclose(out);
    return buf;
}

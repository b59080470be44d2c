/*
 * handlers_ops.c — operational endpoints: liveness, readiness, metrics and
 * the contract. None of them needs a key.
 */
#include "embedded.h"
#include "handlers.h"
#include "metrics.h"
#include "migrate.h"
#include "sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void handle_healthz(http_request *req)
{
    static const char body[] = "{\"status\":\"ok\"}";
    http_reply_bytes(req, 200, "application/json", body, sizeof body - 1, true);
}

static void readyz_done(http_request *req, const PGresult *res, const crm_error *err)
{
    crm_error state = CRM_ERROR_INIT;
    if (res == NULL || !crm_migrate_state_decode(res, &state)) {
        /* Whatever the cause, the answer for a load balancer is "not ready". */
        const char *why = res == NULL ? err->detail : state.detail;
        http_reply_problem(req, 503, why[0] ? why : "the database is not ready");
        crm_error_clear(&state);
        return;
    }
    static const char body[] = "{\"status\":\"ready\"}";
    http_reply_bytes(req, 200, "application/json", body, sizeof body - 1, true);
}

void handle_readyz(http_request *req)
{
    crm_query q;
    crm_migrate_state_query(&q);
    http_defer_query(req, &q, readyz_done);
}

#define SYNC_LAG_HELP                                                                              \
    "# HELP crmd_sync_lag_seconds Age of the oldest transaction in the cluster that holds a "     \
    "transaction id (running or prepared): the sync feeds stop before it until it ends.\n"      \
    "# TYPE crmd_sync_lag_seconds gauge\n"

#define SEGMENT_QUEUE_HELP                                                                         \
    "# HELP crmd_segments_queue_seconds Age of the oldest batch of touchpoints the segments' "    \
    "upkeep has yet to judge (0: none waits).\n"                                                 \
    "# TYPE crmd_segments_queue_seconds gauge\n"                                                  \
    "# HELP crmd_segments_queue_batches Batches of touchpoints the segments' upkeep has yet to "  \
    "judge.\n"                                                                                    \
    "# TYPE crmd_segments_queue_batches gauge\n"

/* What /metrics adds from the database (a format of constants). */
#define DB_FIGURES                                                                                 \
    SYNC_LAG_HELP "crmd_sync_lag_seconds %.3f\n" SEGMENT_QUEUE_HELP                                \
                  "crmd_segments_queue_seconds %.3f\ncrmd_segments_queue_batches %lld\n"

/* The process's own figures, then the sync lag and the segments' queue
 * when the database answered (without it, /metrics still serves everything
 * else). */
static void metrics_done(http_request *req, const PGresult *res, const crm_error *err)
{
    (void)err;
    int connections, in_flight;
    http_server_stats(&connections, &in_flight);
    size_t len = 0;
    char *text = metrics_render(&len, connections, in_flight);
    if (text == NULL) {
        http_reply_problem(req, 500, "could not render metrics");
        return;
    }
    double lag, queue_age;
    long long queued;
    if (res != NULL && crm_sync_lag_decode(res, &lag) &&
        crm_sync_segment_queue_decode(res, &queue_age, &queued)) {
        int n = snprintf(NULL, 0, DB_FIGURES, lag, queue_age, queued);
        char *all = n > 0 ? realloc(text, len + (size_t)n + 1) : NULL;
        if (all != NULL) {
            snprintf(all + len, (size_t)n + 1, DB_FIGURES, lag, queue_age, queued);
            text = all;
            len += (size_t)n;
        }
    }
    http_reply_bytes(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, false);
    free(text);
}

void handle_metrics(http_request *req)
{
    crm_query q;
    crm_sync_lag_query(&q);
    http_defer_query(req, &q, metrics_done);
}

void handle_openapi(http_request *req)
{
    const struct crm_embedded_file *f = &crm_openapi_files[0];
    http_reply_bytes(req, 200, "application/yaml", f->data, f->size, true);
}

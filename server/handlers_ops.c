/*
 * handlers_ops.c — operational endpoints: liveness, readiness, metrics and
 * the contract. None of them needs a key.
 */
#include "embedded.h"
#include "handlers.h"
#include "metrics.h"
#include "migrate.h"

#include <stdlib.h>

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

void handle_metrics(http_request *req)
{
    int connections, in_flight;
    http_server_stats(&connections, &in_flight);
    size_t len = 0;
    char *text = metrics_render(&len, connections, in_flight);
    if (text == NULL) {
        http_reply_problem(req, 500, "could not render metrics");
        return;
    }
    http_reply_bytes(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, false);
    free(text);
}

void handle_openapi(http_request *req)
{
    const struct crm_embedded_file *f = &crm_openapi_files[0];
    http_reply_bytes(req, 200, "application/yaml", f->data, f->size, true);
}

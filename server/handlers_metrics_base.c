/*
 * handlers_metrics_base.c — the whole base's metrics (customer_metrics.h),
 * each a read of what the job metrics_base stored:
 * GET /v1/metrics/summary       (metrics:read)  the base in one page;
 * GET /v1/metrics/distribution  (metrics:read)  a measure's distribution,
 *     and where one customer sits in it;
 * GET /v1/metrics/timeseries    (metrics:read)  a daily figure by day, week
 *     or month.
 * The query parameters are checked in lib/metrics/, which names each one
 * at fault (422).
 */
#include "customer_metrics.h"
#include "handlers.h"

/* Answers doc (200) or err. */
static void reply(http_request *req, json_t *doc, crm_error *err)
{
    if (doc == NULL)
        handler_reply_error(req, err);
    else
        http_reply_json(req, 200, doc);
}

void handle_metrics_summary(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_metrics_summary(http_query(req, "from"), http_query(req, "to"), &err);
    reply(req, doc, &err);
}

void handle_metrics_distribution(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_distribution_request r = {
        .measure = http_query(req, "measure"),
        .bins = http_query(req, "bins"),
        .edges = http_query(req, "edges"),
        .customer_id = http_query(req, "customer_id"),
    };
    reply(req, crm_metrics_distribution(&r, &err), &err);
}

void handle_metrics_timeseries(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_timeseries_request r = {
        .measure = http_query(req, "measure"),
        .interval = http_query(req, "interval"),
        .from = http_query(req, "from"),
        .to = http_query(req, "to"),
    };
    reply(req, crm_metrics_timeseries(&r, &err), &err);
}

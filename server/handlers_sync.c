/*
 * handlers_sync.c — /v1/sync/customers and /v1/sync/touchpoints (scope
 * sync:read): the change feeds of lib/sync.h. Each page is one statement,
 * so both routes run on the I/O threads.
 */
#include "handlers.h"
#include "sync.h"

/* Reads ?cursor= and ?limit= into r (borrowing from the request). */
static bool sync_request(http_request *req, crm_sync_feed feed, crm_sync_request *r, crm_error *err)
{
    r->feed = feed;
    r->cursor = http_query(req, "cursor");
    return http_query_limit(req, CRM_SYNC_LIMIT_DEFAULT, CRM_SYNC_LIMIT_MAX, &r->limit, err);
}

static void page_done(http_request *req, crm_sync_feed feed, const PGresult *res,
                      const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    crm_sync_request r;
    sync_request(req, feed, &r, &derr); /* checked before the query */
    size_t len = 0;
    char *page = crm_sync_render(res, &r, &len, &derr);
    if (page == NULL)
        http_reply_error(req, &derr);
    else
        http_reply_json_text(req, 200, page, len);
    crm_error_clear(&derr);
}

static void customers_done(http_request *req, const PGresult *res, const crm_error *err)
{
    page_done(req, CRM_SYNC_CUSTOMERS, res, err);
}

static void touchpoints_done(http_request *req, const PGresult *res, const crm_error *err)
{
    page_done(req, CRM_SYNC_TOUCHPOINTS, res, err);
}

static void handle_feed(http_request *req, crm_sync_feed feed, http_query_done done)
{
    crm_error err = CRM_ERROR_INIT;
    crm_sync_request r;
    crm_query q;
    if (!sync_request(req, feed, &r, &err) || !crm_sync_query(&r, &q, &err)) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    http_defer_query(req, &q, done);
}

void handle_sync_customers(http_request *req)
{
    handle_feed(req, CRM_SYNC_CUSTOMERS, customers_done);
}

void handle_sync_touchpoints(http_request *req)
{
    handle_feed(req, CRM_SYNC_TOUCHPOINTS, touchpoints_done);
}

/*
 * handlers_sync.c — /v1/sync/customers, /v1/sync/touchpoints and
 * /v1/sync/segment-memberships (scope
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

static void page_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    const crm_sync_request *r = http_context(req); /* parsed by the handler */
    size_t len = 0;
    char *page = crm_sync_render(res, r, &len, &derr);
    if (page == NULL)
        http_reply_error(req, &derr);
    else
        http_reply_json_text(req, 200, page, len);
    crm_error_clear(&derr);
}

static void handle_feed(http_request *req, crm_sync_feed feed)
{
    crm_error err = CRM_ERROR_INIT;
    crm_sync_request *r = crm_arena_alloc(http_arena(req), sizeof *r);
    crm_query q;
    if (r == NULL) {
        http_reply_problem(req, 500, "out of memory");
        return;
    }
    if (!sync_request(req, feed, r, &err) || !crm_sync_query(r, &q, &err)) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    http_set_context(req, r); /* parsed once: page_done renders with it */
    http_defer_query(req, &q, page_done);
}

void handle_sync_customers(http_request *req)
{
    handle_feed(req, CRM_SYNC_CUSTOMERS);
}

void handle_sync_touchpoints(http_request *req)
{
    handle_feed(req, CRM_SYNC_TOUCHPOINTS);
}

void handle_sync_segment_memberships(http_request *req)
{
    handle_feed(req, CRM_SYNC_SEGMENT_MEMBERSHIPS);
}

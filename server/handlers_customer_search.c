/*
 * handlers_customer_search.c — POST /v1/customers/search (customers:read):
 * the body's rule, the page's sort, limit and after from the query, as
 * GET /v1/customers takes them; lib/customers (search.c, list.c) does the
 * rest. Runs on the I/O thread with its one statement on the database
 * loop, like the list, unless the rule has more values than the loop's
 * query holds: then on a worker.
 */
#include "clock.h"
#include "customers.h"
#include "handlers.h"
#include "segments.h"

/* The page is done: render it with the filter the handler kept. */
static void search_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    size_t len = 0;
    char *page = crm_customer_list_render(res, http_context(req), &len, &derr);
    if (page == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    http_reply_json_text(req, 200, page, len);
}

/* Fills f from the query and the body; the rule (the caller frees it), or
 * NULL with err set. Relative times in the rule count from now. */
static crm_rule *search_filter(http_request *req, crm_customer_filter *f, crm_error *err)
{
    *f = (crm_customer_filter){
        .sort = http_query(req, "sort"),
        .after = http_query(req, "after"),
    };
    json_t *body = http_json_body(req, err);
    if (body == NULL || !http_query_limit(req, 50, 200, &f->limit, err))
        return NULL;
    return crm_customer_search_begin(body, crm_wall_ms(), f, err);
}

void handle_customer_search(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_filter *f = crm_arena_alloc(http_arena(req), sizeof *f);
    if (f == NULL) {
        crm_error_set(&err, CRM_E_INTERNAL, "out of memory");
        handler_reply_error(req, &err);
        return;
    }
    crm_rule *rule = search_filter(req, f, &err);
    if (rule == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    if (!http_on_io_thread()) {
        size_t len = 0;
        char *page = crm_customer_list(f, &len, &err);
        crm_rule_free(rule);
        if (page == NULL)
            handler_reply_error(req, &err);
        else
            http_reply_json_text(req, 200, page, len);
        return;
    }
    crm_query q;
    crm_list_step step = crm_customer_list_query(f, NULL, http_arena(req), &q, &err);
    http_set_context(req, f); /* search_done renders with it; f->rule is not read there */
    if (step == CRM_LIST_PAGE)
        http_defer_query(req, &q, search_done); /* copies the rule's values */
    f->rule = NULL;
    crm_rule_free(rule);
    if (step == CRM_LIST_WORKER) {
        http_continue_on_worker(req); /* it starts over there */
    } else if (step != CRM_LIST_PAGE) {
        if (err.code == CRM_OK) /* no other step without q */
            crm_error_set(&err, CRM_E_INTERNAL, "unexpected step of a search");
        handler_reply_error(req, &err);
    }
}

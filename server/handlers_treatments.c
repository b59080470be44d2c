/*
 * handlers_treatments.c — GET /v1/customers/{id}/treatments (lib/treatments.h).
 * Runs on the I/O thread with its one statement on the database loop, the
 * rules and policies as this process keeps them; on a worker when none are
 * kept yet or they moved since (the worker reads them first).
 */
#include "handlers.h"
#include "treatments.h"

static void treatments_done(http_request *req, const PGresult *res, const crm_error *err)
{
    crm_treatments_call *call = http_context(req);
    if (res == NULL) {
        crm_treatments_call_free(call);
        http_reply_error(req, err);
        return;
    }
    crm_error ferr = CRM_ERROR_INIT;
    bool need_worker = false;
    size_t len = 0;
    char *text = crm_treatments_finish(call, res, &len, &need_worker, &ferr);
    crm_treatments_call_free(call);
    http_set_context(req, NULL);
    if (need_worker) {
        http_continue_on_worker(req); /* it starts over there */
        return;
    }
    if (text == NULL) {
        handler_reply_error(req, &ferr);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

void handle_customer_treatments(http_request *req)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    int limit;
    crm_query q;
    crm_treatments_call *call = NULL;
    bool need_worker = false;
    if (!http_query_limit(req, 1, CRM_TREATMENTS_LIMIT_MAX, &limit, &err) ||
        !crm_treatments_begin(id, limit, !http_on_io_thread(), &q, &call, &need_worker, &err)) {
        if (need_worker)
            http_continue_on_worker(req); /* it starts over there */
        else
            handler_reply_error(req, &err);
        return;
    }
    http_set_context(req, call); /* treatments_done answers with it, and frees it */
    http_defer_query(req, &q, treatments_done);
}

/*
 * handlers_treatments.c — GET /v1/customers/{id}/treatments (lib/treatments.h).
 */
#include "handlers.h"
#include "treatments.h"

void handle_customer_treatments(http_request *req)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    int limit;
    json_t *doc = http_query_limit(req, 1, CRM_TREATMENTS_LIMIT_MAX, &limit, &err)
                      ? crm_customer_treatments(id, limit, &err)
                      : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_json(req, 200, doc);
}

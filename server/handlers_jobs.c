/*
 * handlers_jobs.c — GET /v1/jobs/{id} and POST /v1/jobs/{id}/cancel: read
 * a job (lib/jobs.h), or ask it to stop.
 *
 * The route takes any valid key (ROUTE_ANY_KEY); the job's kind decides who
 * may see it: a key with the kind's read scope, or admin. A job of a kind
 * this process does not know is admin's alone. Cancelling needs the same.
 * Every other key gets the 404 of a job that does not exist, so that job
 * ids are no oracle of what work others started.
 */
#include "handlers.h"
#include "jobs.h"

#define NO_SUCH_JOB "no job with this id"

static bool may_see(const http_request *req, unsigned kind_scope)
{
    const crm_principal *p = http_principal(req);
    if (p == NULL)
        return false;
    if ((p->scopes & CRM_SCOPE_ADMIN) != 0)
        return true;
    return kind_scope != 0 && crm_principal_allows(p, kind_scope);
}

/* The job the path names, if the key may see it; NULL with err (404 for
 * one it may not see, as for none). The caller owns the result. */
static json_t *visible_job(http_request *req, crm_error *err)
{
    long long id;
    if (!http_param_id(req, "id", &id)) {
        crm_error_set(err, CRM_E_NOT_FOUND, NO_SUCH_JOB);
        return NULL;
    }
    unsigned kind_scope = 0;
    json_t *job = crm_job_get(id, &kind_scope, err);
    if (job != NULL && !may_see(req, kind_scope)) {
        json_decref(job);
        crm_error_set(err, CRM_E_NOT_FOUND, NO_SUCH_JOB);
        return NULL;
    }
    return job;
}

void handle_job_get(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *job = visible_job(req, &err);
    if (job == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_json(req, 200, job);
}

/* 200 with the job: "cancelled" when it was queued, still "running" when
 * it runs (it stops at its next progress report); 409 when it has ended. */
void handle_job_cancel(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *job = visible_job(req, &err);
    if (job == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    long long id = (long long)json_integer_value(json_object_get(job, "id"));
    json_decref(job);
    job = crm_job_cancel(id, &err);
    if (job == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_json(req, 200, job);
}

/*
 * handlers_campaigns.c — campaign definitions (lib/campaigns.h):
 * POST   /v1/campaigns                 (campaigns:write) create, as a draft; 201
 * GET    /v1/campaigns                 (campaigns:read)  a page by id, ?status= filters
 * GET    /v1/campaigns/{id}            (campaigns:read)  one, with its ETag
 * PATCH  /v1/campaigns/{id}            (campaigns:write) merge patch and status; If-Match required
 * DELETE /v1/campaigns/{id}            (campaigns:write) a draft only; 204
 * GET    /v1/campaigns/{id}/versions   (campaigns:read)  every version, oldest first
 * POST   /v1/campaigns/{id}/execute    (campaigns:write) 202 with the job
 * GET    /v1/campaigns/{id}/contacts   (campaigns:read)  whom it contacted: JSON pages, or
 *                                                         the whole list as CSV (Accept)
 */
#include "campaigns.h"
#include "handlers.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bool campaign_id(http_request *req, long long *id)
{
    if (http_param_id(req, "id", id))
        return true;
    http_reply_problem(req, 404, "no campaign with this id");
    return false;
}

static void reply_campaign(http_request *req, int status, json_t *doc)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(doc, "version")));
    http_add_header(req, "ETag", etag);
    http_reply_json(req, status, doc);
}

/* A page's document with its next_cursor, or the error. */
static void reply_page(http_request *req, json_t *doc, long long next, crm_error *err)
{
    if (doc == NULL) {
        handler_reply_error(req, err);
        return;
    }
    json_object_set_new(doc, "next_cursor", next ? http_cursor_from_id(next) : json_null());
    http_reply_json(req, 200, doc);
}

void handle_campaign_create(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *doc = body ? crm_campaign_create(body, p ? p->key_id : 0, &err) : NULL;
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/campaigns/%lld",
             (long long)json_integer_value(json_object_get(doc, "id")));
    http_add_header(req, "Location", location);
    reply_campaign(req, 201, doc);
}

void handle_campaign_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    int limit;
    long long after, next = 0;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_campaigns_list(http_query(req, "status"), after, limit, &next, &err);
    reply_page(req, doc, next, &err);
}

void handle_campaign_get(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_campaign_get(id, &err);
    if (doc == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_campaign(req, 200, doc);
}

void handle_campaign_patch(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    /* A campaign's changes are conditional: the status machine must not
     * act on a version the client has not seen. */
    const char *if_match = http_header(req, "If-Match");
    if (if_match == NULL) {
        http_reply_problem(req, 428, "a change of a campaign needs If-Match with its ETag");
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *body = http_json_body(req, &err);
    const crm_principal *p = http_principal(req);
    json_t *allowed = NULL;
    json_t *doc =
        body ? crm_campaign_patch(id, body, if_match, p ? p->key_id : 0, &allowed, &err) : NULL;
    if (doc != NULL) {
        reply_campaign(req, 200, doc);
    } else if (allowed != NULL) {
        http_reply_problem_member(req, 409, err.detail, "allowed_transitions", allowed);
        crm_error_clear(&err);
    } else {
        handler_reply_error(req, &err);
    }
}

void handle_campaign_delete(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    if (!crm_campaign_delete(id, http_header(req, "If-Match"), &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_empty(req, 204);
}

void handle_campaign_versions(http_request *req)
{
    long long id, after, next = 0;
    int limit;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = NULL;
    if (http_query_limit(req, 50, 200, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_campaign_versions(id, after, limit, &next, &err);
    reply_page(req, doc, next, &err);
}

/* POST /v1/campaigns/{id}/execute: 202 with the job (Location: the job),
 * the campaign now running. */
void handle_campaign_execute(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    crm_error err = CRM_ERROR_INIT;
    const crm_principal *p = http_principal(req);
    json_t *job = crm_campaign_execute(id, p ? p->key_id : 0, &err);
    if (job == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/jobs/%lld",
             (long long)json_integer_value(json_object_get(job, "id")));
    http_add_header(req, "Location", location);
    http_reply_json(req, 202, job);
}

static void results_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error rerr = CRM_ERROR_INIT;
    size_t len = 0;
    bool need_compute = false;
    char *text = crm_campaign_results_render(res, &len, &need_compute, &rerr);
    if (need_compute) {
        http_continue_on_worker(req); /* it starts over there, and computes */
        return;
    }
    if (text == NULL) {
        handler_reply_error(req, &rerr);
        return;
    }
    http_reply_json_text(req, 200, text, len);
}

/* GET /v1/campaigns/{id}/results: the stored results (campaigns/results.c),
 * one statement on the I/O thread's database loop; on a worker when they
 * were never computed (computed there, once). */
void handle_campaign_results(http_request *req)
{
    long long id;
    if (!campaign_id(req, &id))
        return;
    if (!http_on_io_thread()) {
        crm_error err = CRM_ERROR_INIT;
        size_t len = 0;
        char *text = crm_campaign_results(id, crm_campaigns_currency(), &len, &err);
        if (text == NULL) {
            handler_reply_error(req, &err);
            return;
        }
        http_reply_json_text(req, 200, text, len);
        return;
    }
    crm_query q;
    crm_campaign_results_query(id, &q);
    http_defer_query(req, &q, results_done);
}

/* The whole list as CSV, written to an unnamed temporary file and sent
 * from there (as the privacy export is): memory holds one chunk of rows
 * at most, and the database connection is free again as soon as the file
 * is written, however slowly the client reads. The CSV has no pages: a
 * limit or a cursor would quietly cut it short, so they are refused. */
static void reply_contacts_csv(http_request *req, long long id)
{
    crm_error err = CRM_ERROR_INIT;
    const char *paging = http_query(req, "limit")   ? "limit"
                         : http_query(req, "after") ? "after"
                                                    : NULL;
    if (paging != NULL) {
        crm_error_add_field(&err, paging, "the CSV is the whole list: it has no pages");
        crm_error_set(&err, CRM_E_INVALID, "invalid query parameter '%s'", paging);
        handler_reply_error(req, &err);
        return;
    }
    FILE *out = tmpfile();
    if (out == NULL) {
        crm_log(CRM_LOG_ERROR, "campaign contacts: no temporary file (%s)", strerror(errno));
        http_reply_problem(req, 503, "the list cannot be written now: try again later");
        return;
    }
    bool ok = crm_campaign_contacts_csv(id, http_query(req, "channel"), out, &err);
    ok = ok && fflush(out) == 0;
    long size = ok ? ftell(out) : -1;
    int fd = size >= 0 ? dup(fileno(out)) : -1;
    fclose(out);
    if (!ok || fd < 0 || lseek(fd, 0, SEEK_SET) != 0) {
        if (err.code == CRM_OK) {
            crm_log(CRM_LOG_ERROR, "campaign contacts: temporary file (%s)", strerror(errno));
            crm_error_set(&err, CRM_E_INTERNAL, "internal error");
        }
        if (fd >= 0)
            close(fd);
        handler_reply_error(req, &err);
        return;
    }
    char disposition[80];
    snprintf(disposition, sizeof disposition, "attachment; filename=\"campaign-%lld-contacts.csv\"",
             id);
    http_add_header(req, "Content-Disposition", disposition);
    http_add_header(req, "Cache-Control", "no-store");
    http_reply_fd(req, 200, "text/csv; charset=utf-8", fd, (size_t)size);
}

/* GET /v1/campaigns/{id}/contacts: CSV when Accept prefers text/csv to
 * application/json, JSON pages otherwise. */
void handle_campaign_contacts(http_request *req)
{
    long long id, after, next = 0;
    int limit;
    if (!campaign_id(req, &id))
        return;
    if (http_accept_quality(req, "text/csv") > http_accept_quality(req, "application/json")) {
        reply_contacts_csv(req, id);
        return;
    }
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = NULL;
    if (http_query_limit(req, 100, 1000, &limit, &err) && http_query_after_id(req, &after, &err))
        doc = crm_campaign_contacts(id, http_query(req, "channel"), after, limit, &next, &err);
    reply_page(req, doc, next, &err);
}

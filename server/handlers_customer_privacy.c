/*
 * handlers_customer_privacy.c — the person's rights over their record:
 * GET  /v1/customers/{id}/export (customers:export) everything held about
 *      them, as one JSON document (right of access), recorded in their
 *      audit trail;
 * POST /v1/customers/{id}/erase  (customers:write, body {"confirm": true})
 *      their personal data removed for good (right to erasure).
 * Parse, call lib/customer_privacy.h, render.
 */
#include "customer_privacy.h"
#include "handlers.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The export is written to an unnamed temporary file (tmpfile(3), in
 * /tmp), a row at a time, and sent from there: its size costs disk for as long as it is
 * sent, never memory, and the database connection is free again as soon
 * as the file is written, however slowly the client reads. */
void handle_customer_export(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    FILE *out = tmpfile();
    if (out == NULL) {
        crm_log(CRM_LOG_ERROR, "export: no temporary file (%s)", strerror(errno));
        http_reply_problem(req, 503, "the export cannot be written now: try again later");
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    long long customer_id = 0;
    bool ok = crm_customer_export_write(id, &ctx, out, &customer_id, &err);
    long size = ok ? ftell(out) : -1;
    int fd = size >= 0 ? dup(fileno(out)) : -1;
    fclose(out);
    if (!ok || fd < 0 || lseek(fd, 0, SEEK_SET) != 0) {
        if (ok) {
            crm_log(CRM_LOG_ERROR, "export: temporary file (%s)", strerror(errno));
            crm_error_set(&err, CRM_E_INTERNAL, "internal error");
        }
        if (fd >= 0)
            close(fd);
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    char disposition[80];
    snprintf(disposition, sizeof disposition, "attachment; filename=\"customer-%lld.json\"",
             customer_id);
    http_add_header(req, "Content-Disposition", disposition);
    http_add_header(req, "Cache-Control", "no-store");
    http_reply_fd(req, 200, "application/json", fd, (size_t)size);
}

void handle_customer_erase(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    bool already = false;
    json_t *body = http_json_body(req, &err);
    json_t *stone = NULL;
    if (body != NULL && crm_customer_erase_body_valid(body, &err))
        stone = crm_customer_erase(id, &ctx, &already, &err);
    if (stone == NULL) {
        http_reply_error(req, &err);
        crm_error_clear(&err);
        return;
    }
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(stone, "version")));
    http_add_header(req, "ETag", etag);
    http_reply_json(req, 200, stone);
}

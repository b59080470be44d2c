/*
 * handlers_customers.c — /v1/customers (scopes customers:read and
 * customers:write): parse the request, call lib/customers.h, render.
 */
#include "customer_privacy.h"
#include "customers.h"
#include "handlers.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add_etag(http_request *req, long long version)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", version);
    http_add_header(req, "ETag", etag);
}

/* Answers a customer representation (taken) with its ETag. */
static void reply_customer(http_request *req, int status, json_t *rep)
{
    add_etag(req, json_integer_value(json_object_get(rep, "version")));
    http_reply_json(req, status, rep);
}

/* The expansions a read may accept besides external_ids. */
enum { EXPAND_CONSENTS = 1u << 0, EXPAND_METRICS = 1u << 1 };

/* Whether s[0..n) is the expansion name. */
static bool expansion_is(const char *s, size_t n, const char *name)
{
    return n == strlen(name) && strncmp(s, name, n) == 0;
}

/* Reads ?expand=, a comma-separated list of "external_ids" and the names
 * allowed admits ("consents", "metrics"), into x. */
static bool parse_expand(http_request *req, unsigned allowed, crm_customer_expand *x,
                         crm_error *err)
{
    *x = (crm_customer_expand){0};
    const char *s = http_query(req, "expand");
    if (s == NULL)
        return true;
    for (const char *p = s;;) {
        size_t n = strcspn(p, ",");
        if (expansion_is(p, n, "external_ids")) {
            x->external_ids = true;
        } else if ((allowed & EXPAND_CONSENTS) && expansion_is(p, n, "consents")) {
            x->consents = true;
        } else if ((allowed & EXPAND_METRICS) && expansion_is(p, n, "metrics")) {
            x->metrics = true;
        } else {
            char known[96];
            snprintf(known, sizeof known, "the known expansions are: external_ids%s%s",
                     allowed & EXPAND_CONSENTS ? ", consents" : "",
                     allowed & EXPAND_METRICS ? ", metrics" : "");
            crm_error_add_field(err, "expand", known);
            return crm_error_set(err, CRM_E_INVALID, "invalid query parameter 'expand'");
        }
        if (p[n] == '\0')
            return true;
        p += n + 1;
    }
}

/* An expansion embeds the document of another operation and needs that
 * operation's scope: consents those of GET /v1/customers/{id}/consents
 * (customers:read, the read's own), metrics those of
 * GET /v1/customers/{id}/metrics (metrics:read). */
static bool expand_permitted(http_request *req, const crm_customer_expand *x, crm_error *err)
{
    const crm_principal *p = http_principal(req);
    if (!x->metrics || (p != NULL && crm_principal_allows(p, CRM_SCOPE_METRICS_READ)))
        return true;
    crm_error_add_field(err, "expand", "metrics needs the 'metrics:read' scope");
    return crm_error_set(err, CRM_E_FORBIDDEN, "expand=metrics needs the 'metrics:read' scope");
}

/* Answers a customer read with expansions (rep taken, NULL: err). Its
 * ETag is the customer's version, which changes with the customer and with
 * nothing else: with metrics, which a recompute changes under the same
 * version, the answer carries none (the body's version still serves
 * If-Match). merged: the id named a merged customer, whose survivor the
 * body is (Content-Location says so). */
static void reply_expanded(http_request *req, json_t *rep, bool merged,
                           const crm_customer_expand *x, crm_error *err)
{
    if (rep == NULL) {
        handler_reply_error(req, err);
        return;
    }
    if (merged) {
        char location[48];
        snprintf(location, sizeof location, "/v1/customers/%lld",
                 (long long)json_integer_value(json_object_get(rep, "id")));
        http_add_header(req, "Content-Location", location);
    }
    if (x->metrics)
        http_reply_json(req, 200, rep);
    else
        reply_customer(req, 200, rep);
}

/* ---- POST /v1/customers --------------------------------------------------- */

void handle_customer_create(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_write_ctx ctx = handler_write_ctx(req);
    ctx.idempotency_key = http_header(req, "Idempotency-Key");
    json_t *body = http_json_body(req, &err);
    crm_customer_created created;
    if (body == NULL || !crm_customer_create(body, &ctx, &created, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_add_header(req, "Location", created.location);
    add_etag(req, created.version);
    if (created.replayed)
        http_add_header(req, "Idempotent-Replayed", "true");
    http_reply_bytes(req, 201, "application/json", created.body, strlen(created.body), false);
    crm_customer_created_free(&created);
}

/* ---- GET /v1/customers/{id} and /v1/customers/by-external-id/... ---------- */

/* Whether the read asked for external ids: parsed by the handler, kept for
 * get_done (http_context) in the request's arena. */
static bool remember_expand(http_request *req, bool ext)
{
    bool *kept = crm_arena_alloc(http_arena(req), sizeof *kept);
    if (kept == NULL) {
        http_reply_problem(req, 500, "out of memory");
        return false;
    }
    *kept = ext;
    http_set_context(req, kept);
    return true;
}

static void get_done(http_request *req, const PGresult *res, const crm_error *err)
{
    crm_error derr = CRM_ERROR_INIT;
    bool ext = *(const bool *)http_context(req);
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    long long merged_into = 0, version = 0;
    size_t len = 0;
    char *text = crm_customer_get_render(res, ext, &merged_into, &version, &len, &derr);
    if (text != NULL) {
        add_etag(req, version);
        http_reply_json_text(req, 200, text, len);
        return;
    }
    if (merged_into != 0 && http_on_io_thread()) {
        /* Rare: following the merge takes more reads; a worker starts over. */
        crm_error_clear(&derr);
        http_continue_on_worker(req);
        return;
    }
    json_t *rep = NULL;
    if (merged_into != 0) {
        /* Rare: the id was merged into another customer; answer the survivor. */
        rep = crm_customer_get(merged_into, ext, &derr);
        if (rep != NULL) {
            char location[48];
            snprintf(location, sizeof location, "/v1/customers/%lld",
                     (long long)json_integer_value(json_object_get(rep, "id")));
            http_add_header(req, "Content-Location", location);
        }
    }
    if (rep == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    reply_customer(req, 200, rep);
}

void handle_customer_get(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    crm_customer_expand x;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    if (!parse_expand(req, EXPAND_CONSENTS | EXPAND_METRICS, &x, &err) ||
        !expand_permitted(req, &x, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    if ((x.consents || x.metrics) && http_on_io_thread()) {
        /* Several reads in one snapshot need the blocking pool: not on this thread. */
        http_continue_on_worker(req);
        return;
    }
    if (x.consents || x.metrics) {
        /* Several reads in one snapshot: on the blocking pool, off the fast path. */
        json_t *rep = crm_customer_get_expanded(id, &x, &err);
        reply_expanded(req, rep, rep != NULL && json_integer_value(json_object_get(rep, "id")) != id,
                       &x, &err);
        return;
    }
    if (!remember_expand(req, x.external_ids))
        return;
    crm_query q;
    crm_customer_get_query(&q, id, x.external_ids);
    http_defer_query(req, &q, get_done);
}

void handle_customer_get_by_external_id(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_expand x;
    const char *source = http_param(req, "source"), *external_id = http_param(req, "external_id");
    if (!parse_expand(req, EXPAND_METRICS, &x, &err) ||
        !crm_external_id_valid(source, external_id, &err) || !expand_permitted(req, &x, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    if (x.metrics && http_on_io_thread()) {
        http_continue_on_worker(req);
        return;
    }
    if (x.metrics) {
        bool merged = false;
        json_t *rep =
            crm_customer_get_expanded_by_external_id(source, external_id, &x, &merged, &err);
        reply_expanded(req, rep, merged, &x, &err);
        return;
    }
    if (!remember_expand(req, x.external_ids))
        return;
    crm_query q;
    crm_customer_get_by_external_id_query(&q, source, external_id, x.external_ids);
    http_defer_query(req, &q, get_done);
}

/* ---- writes ----------------------------------------------------------------- */

void handle_customer_patch(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    json_t *patch = http_json_body(req, &err);
    json_t *rep =
        patch ? crm_customer_patch(id, patch, http_header(req, "If-Match"), &ctx, &err) : NULL;
    if (rep == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    reply_customer(req, 200, rep);
}

void handle_customer_delete(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    crm_write_ctx ctx = handler_write_ctx(req);
    if (!crm_customer_delete(id, http_header(req, "If-Match"), &ctx, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    http_reply_empty(req, 204);
}

void handle_customer_upsert_by_external_id(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_write_ctx ctx = handler_write_ctx(req);
    bool created = false;
    json_t *body = http_json_body(req, &err);
    json_t *rep = body ? crm_customer_upsert_by_external_id(
                             http_param(req, "source"), http_param(req, "external_id"), body,
                             http_header(req, "If-Match"), &ctx, &created, &err)
                       : NULL;
    if (rep == NULL) {
        handler_reply_error(req, &err);
        return;
    }
    char location[48];
    snprintf(location, sizeof location, "/v1/customers/%lld",
             (long long)json_integer_value(json_object_get(rep, "id")));
    http_add_header(req, created ? "Location" : "Content-Location", location);
    reply_customer(req, created ? 201 : 200, rep);
}

/* ---- GET /v1/customers -------------------------------------------------------- */

/* The list's parameters, borrowed from the request. */
static bool list_filter(http_request *req, crm_customer_filter *f, crm_error *err)
{
    *f = (crm_customer_filter){
        .email = http_query(req, "email"),
        .phone = http_query(req, "phone"),
        .country = http_query(req, "country"),
        .city = http_query(req, "city"),
        .lifecycle_stage = http_query(req, "lifecycle_stage"),
        .tag = http_query(req, "tag"),
        .created_after = http_query(req, "created_after"),
        .created_before = http_query(req, "created_before"),
        .updated_after = http_query(req, "updated_after"),
        .updated_before = http_query(req, "updated_before"),
        .q = http_query(req, "q"),
        .sort = http_query(req, "sort"),
        .after = http_query(req, "after"),
    };
    return http_query_limit(req, 50, 200, &f->limit, err);
}

/* The handler's parsed filter (http_context), for the deferred steps. */
static void list_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    const crm_customer_filter *f = http_context(req);
    crm_error derr = CRM_ERROR_INIT;
    size_t len = 0;
    char *page = crm_customer_list_render(res, f, &len, &derr);
    if (page == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    http_reply_json_text(req, 200, page, len);
}

/* A step of a q search is done: it held the page, or says which follows. */
static void terms_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    crm_error derr = CRM_ERROR_INIT;
    crm_query q;
    crm_list_step step = crm_customer_list_query(http_context(req), res, http_arena(req), &q, &derr);
    if (step == CRM_LIST_READY)
        list_done(req, res, NULL); /* the step held the whole page */
    else if (step == CRM_LIST_TERMS)
        http_defer_query(req, &q, terms_done);
    else if (step == CRM_LIST_PAGE)
        http_defer_query(req, &q, list_done);
    else
        handler_reply_error(req, &derr);
}

void handle_customer_list(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_customer_filter *f = crm_arena_alloc(http_arena(req), sizeof *f);
    crm_query q;
    crm_list_step step = CRM_LIST_ERROR;
    if (f == NULL)
        crm_error_set(&err, CRM_E_INTERNAL, "out of memory");
    else if (list_filter(req, f, &err))
        step = crm_customer_list_query(f, NULL, http_arena(req), &q, &err);
    http_set_context(req, f); /* parsed once: the deferred steps read it */
    if (step == CRM_LIST_ERROR) {
        handler_reply_error(req, &err);
        return;
    }
    http_defer_query(req, &q, step == CRM_LIST_TERMS ? terms_done : list_done);
}

/* ---- GET /v1/customers/{id}/audit ------------------------------------------- */

/* What the handler parsed, for audit_done (http_context). */
typedef struct audit_request {
    long long id;
    int limit;
} audit_request;

static void audit_done(http_request *req, const PGresult *res, const crm_error *err)
{
    if (res == NULL) {
        http_reply_error(req, err);
        return;
    }
    const audit_request *a = http_context(req);
    crm_error derr = CRM_ERROR_INIT;
    long long next = 0;
    json_t *entries = crm_customer_audit_decode(res, a->id, a->limit, &next, &derr);
    if (entries == NULL) {
        handler_reply_error(req, &derr);
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:o, s:o}", "data", entries, "next_cursor",
                              next ? http_cursor_from_id(next) : json_null()));
}

void handle_customer_audit(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    long long id, after;
    int limit;
    if (!http_param_id(req, "id", &id)) {
        http_reply_problem(req, 404, "no customer with this id");
        return;
    }
    if (!http_query_limit(req, 50, 200, &limit, &err) || !http_query_after_id(req, &after, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    audit_request *a = crm_arena_alloc(http_arena(req), sizeof *a);
    if (a == NULL) {
        crm_error_set(&err, CRM_E_INTERNAL, "out of memory");
        handler_reply_error(req, &err);
        return;
    }
    *a = (audit_request){.id = id, .limit = limit};
    http_set_context(req, a);
    crm_query q;
    crm_customer_audit_query(&q, id, after, limit);
    http_defer_query(req, &q, audit_done);
}

/*
 * segments/state.c — one customer's state as the rules read it: the row's
 * fields, attributes and tags with the segments it is a member of, the
 * current consents, the customer_metrics row and the touchpoints, loaded by
 * four parameterized statements into memory the state owns (one arena, and
 * the attributes' JSON).
 *
 * Values are kept in the forms the evaluator compares: text as stored,
 * numeric as PostgreSQL prints it (exact), double precision read back from
 * its shortest exact text, timestamps in epoch microseconds, dates as
 * "YYYY-MM-DD".
 */
#include "segments/internal.h"

#include "jbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD_COLUMN(name, type, sql, load, values) ", " load
#define METRICS_COLUMN(name, type, sql, values) ", " sql

/* $1 the customer's id: attributes, then the fields in their order, then
 * the ids of the segments it is a member of, ascending, as a JSON array. */
static crm_stmt load_customer = CRM_STMT_RO(
    "rule_state_customer",
    "SELECT c.attributes::text" RULE_CUSTOMER_FIELDS(
        LOAD_COLUMN) ", array_to_json(ARRAY(SELECT sm.segment_id FROM segment_memberships sm"
                     " WHERE sm.customer_id = c.id ORDER BY sm.segment_id))::text"
                     " FROM customers c WHERE c.id = $1");

/* $1 the customer's id: the metrics in their order, after the id. */
static crm_stmt load_metrics = CRM_STMT_RO(
    "rule_state_metrics", "SELECT m.customer_id" RULE_METRICS_FIELDS(
                              METRICS_COLUMN) " FROM customer_metrics m WHERE m.customer_id = $1");

/* $1 the customer's id: the latest decision of each channel and purpose. */
static crm_stmt load_consents = CRM_STMT_RO(
    "rule_state_consents",
    "SELECT DISTINCT ON (channel, purpose) channel, purpose, status FROM customer_consents"
    " WHERE customer_id = $1 ORDER BY channel, purpose, captured_at DESC, id DESC");

/* $1 the customer's id. */
static crm_stmt load_touchpoints = CRM_STMT_RO(
    "rule_state_touchpoints", "SELECT type, channel, campaign_id, amount, occurred_at, items::text,"
                              " offer_code FROM touchpoints WHERE customer_id = $1");

typedef struct loader {
    crm_rule_state *st;
    bool oom;
    bool bad; /* a value the evaluator cannot read (an infinite timestamp) */
} loader;

static const char *keep(loader *l, const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    const char *s = crm_arena_strndup(&l->st->arena, PQgetvalue(res, row, col),
                                      (size_t)PQgetlength(res, row, col));
    if (s == NULL)
        l->oom = true;
    return s;
}

static void *take(loader *l, size_t size)
{
    void *m = crm_arena_alloc(&l->st->arena, size ? size : 1);
    if (m == NULL)
        l->oom = true;
    else
        memset(m, 0, size ? size : 1);
    return m;
}

/* One cell of type t from res's column col. */
static void read_cell(loader *l, rule_cell *cell, rule_type t, const PGresult *res, int col)
{
    memset(cell, 0, sizeof *cell);
    cell->text = keep(l, res, 0, col);
    cell->present = cell->text != NULL;
    if (!cell->present)
        return;
    if (t == RT_FLOAT) {
        cell->f = strtod(cell->text, NULL); /* NaN and the infinities as PostgreSQL writes them */
    } else if (t == RT_TIME && !crm_parse_pg_timestamp(cell->text, &cell->us)) {
        l->bad = true;
    }
}

/* A copy of a JSON string; "" (and out of memory noted) when none could
 * be made. */
static const char *keep_string(loader *l, const json_t *j)
{
    const char *s = crm_arena_strndup(&l->st->arena, json_string_value(j), json_string_length(j));
    if (s == NULL)
        l->oom = true;
    return s != NULL ? s : "";
}

/* A JSON array of strings (array_to_json of text[]) into strings. */
static void read_strings(loader *l, const char *text, const char ***out, int *n)
{
    *out = NULL;
    *n = 0;
    json_t *a = text != NULL ? json_loads(text, 0, NULL) : NULL;
    size_t count = json_array_size(a);
    if (count > 0 && (*out = take(l, sizeof **out * count)) != NULL) {
        for (size_t i = 0; i < count; i++) {
            json_t *e = json_array_get(a, i);
            if (json_is_string(e))
                (*out)[(*n)++] = keep_string(l, e);
        }
    }
    json_decref(a);
}

/* The segment ids (a JSON array of integers, ascending) into
 * st->segments. */
static void read_segments(loader *l, const char *text)
{
    crm_rule_state *st = l->st;
    json_t *a = json_loads(text, 0, NULL);
    size_t count = json_array_size(a);
    if (!json_is_array(a))
        l->bad = true;
    if (count > 0 && (st->segments = take(l, sizeof *st->segments * count)) != NULL) {
        for (size_t i = 0; i < count; i++) {
            json_t *e = json_array_get(a, i);
            if (json_is_integer(e))
                st->segments[st->nsegments++] = (long long)json_integer_value(e);
            else
                l->bad = true;
        }
    }
    json_decref(a);
}

static bool read_customer(loader *l, crm_conn *conn, const char *id, crm_error *err)
{
    const char *params[] = {id};
    PGresult *res = crm_db_exec(conn, &load_customer, 1, params, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return crm_error_set(err, CRM_E_NOT_FOUND, "no such customer");
    }
    crm_rule_state *st = l->st;
    /* Numbers as doubles, as the SQL reads an attribute (::float8). */
    st->attributes = json_loads(PQgetvalue(res, 0, 0), JSON_DECODE_INT_AS_REAL, NULL);
    if (st->attributes == NULL)
        l->bad = true;
    for (int i = 0; i < RULE_N_CUSTOMER_FIELDS; i++)
        read_cell(l, &st->customer[i], rule_customer_fields[i].type, res, i + 1);
    for (int i = 0; i < RULE_N_CUSTOMER_FIELDS; i++)
        if (rule_customer_fields[i].type == RT_TAGS)
            read_strings(l, st->customer[i].text, &st->tags, &st->ntags);
    read_segments(l, PQgetvalue(res, 0, RULE_N_CUSTOMER_FIELDS + 1));
    PQclear(res);
    return true;
}

static bool read_metrics(loader *l, crm_conn *conn, const char *id, crm_error *err)
{
    const char *params[] = {id};
    PGresult *res = crm_db_exec(conn, &load_metrics, 1, params, err);
    if (res == NULL)
        return false;
    l->st->has_metrics = PQntuples(res) == 1;
    for (int i = 0; l->st->has_metrics && i < RULE_N_METRICS_FIELDS; i++)
        read_cell(l, &l->st->metrics[i], rule_metrics_fields[i].type, res, i + 1);
    PQclear(res);
    return true;
}

static bool read_consents(loader *l, crm_conn *conn, const char *id, crm_error *err)
{
    const char *params[] = {id};
    PGresult *res = crm_db_exec(conn, &load_consents, 1, params, err);
    if (res == NULL)
        return false;
    int n = PQntuples(res);
    l->st->consents = take(l, sizeof *l->st->consents * (size_t)n);
    for (int r = 0; l->st->consents != NULL && r < n; r++) {
        rule_consent *c = &l->st->consents[l->st->nconsents++];
        c->channel = keep(l, res, r, 0);
        c->purpose = keep(l, res, r, 1);
        c->status = keep(l, res, r, 2);
    }
    PQclear(res);
    return true;
}

/* The skus of a touchpoint's items: each element an object with a string
 * "sku" (what items @> [{"sku": s}] finds). */
static void read_skus(loader *l, rule_touchpoint *tp, const char *items)
{
    json_t *a = items != NULL ? json_loads(items, 0, NULL) : NULL;
    size_t count = json_array_size(a);
    if (count > 0 && (tp->skus = take(l, sizeof *tp->skus * count)) != NULL) {
        for (size_t i = 0; i < count; i++) {
            json_t *sku = json_object_get(json_array_get(a, i), "sku");
            if (json_is_string(sku))
                tp->skus[tp->nskus++] = keep_string(l, sku);
        }
    }
    json_decref(a);
}

static bool read_touchpoints(loader *l, crm_conn *conn, const char *id, crm_error *err)
{
    const char *params[] = {id};
    PGresult *res = crm_db_exec(conn, &load_touchpoints, 1, params, err);
    if (res == NULL)
        return false;
    int n = PQntuples(res);
    crm_rule_state *st = l->st;
    st->touchpoints = take(l, sizeof *st->touchpoints * (size_t)n);
    for (int r = 0; st->touchpoints != NULL && r < n; r++) {
        rule_touchpoint *tp = &st->touchpoints[st->ntouchpoints++];
        tp->type = keep(l, res, r, 0);
        tp->channel = keep(l, res, r, 1);
        tp->campaign_id = keep(l, res, r, 2);
        tp->offer_code = keep(l, res, r, 6);
        tp->amount = keep(l, res, r, 3);
        if (!crm_parse_pg_timestamp(PQgetvalue(res, r, 4), &tp->occurred_us))
            l->bad = true;
        read_skus(l, tp, PQgetisnull(res, r, 5) ? NULL : PQgetvalue(res, r, 5));
    }
    PQclear(res);
    return true;
}

crm_rule_state *crm_rule_state_load(crm_conn *conn, long long customer_id, crm_error *err)
{
    crm_rule_state *st = calloc(1, sizeof *st);
    if (st == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    crm_arena_init(&st->arena);
    st->customer_id = customer_id;
    char id[24];
    snprintf(id, sizeof id, "%lld", customer_id);
    loader l = {.st = st};
    bool ok = read_customer(&l, conn, id, err) && read_metrics(&l, conn, id, err) &&
              read_consents(&l, conn, id, err) && read_touchpoints(&l, conn, id, err);
    if (ok && l.oom)
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (ok && l.bad)
        ok = crm_error_set(err, CRM_E_INTERNAL, "customer %lld holds a value the rules cannot read",
                           customer_id);
    if (!ok) {
        crm_rule_state_free(st);
        return NULL;
    }
    return st;
}

void crm_rule_state_free(crm_rule_state *st)
{
    if (st == NULL)
        return;
    json_decref(st->attributes);
    crm_arena_free(&st->arena);
    free(st);
}

long long crm_rule_state_customer(const crm_rule_state *st)
{
    return st->customer_id;
}

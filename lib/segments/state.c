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

/* One cell of type t from res's row, column col. */
static void read_cell_at(loader *l, rule_cell *cell, rule_type t, const PGresult *res, int row,
                         int col)
{
    memset(cell, 0, sizeof *cell);
    cell->text = keep(l, res, row, col);
    cell->present = cell->text != NULL;
    if (!cell->present)
        return;
    if (t == RT_FLOAT) {
        cell->f = strtod(cell->text, NULL); /* NaN and the infinities as PostgreSQL writes them */
    } else if (t == RT_TIME && !crm_parse_pg_timestamp(cell->text, &cell->us)) {
        l->bad = true;
    }
}

static void read_cell(loader *l, rule_cell *cell, rule_type t, const PGresult *res, int col)
{
    read_cell_at(l, cell, t, res, 0, col);
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

/* The customer's row of res at row, its attributes in column base, the
 * fields after it, then the segments. */
static void customer_row(loader *l, const PGresult *res, int row, int base)
{
    crm_rule_state *st = l->st;
    /* Numbers as doubles, as the SQL reads an attribute (::float8). */
    st->attributes = json_loads(PQgetvalue(res, row, base), JSON_DECODE_INT_AS_REAL, NULL);
    if (st->attributes == NULL)
        l->bad = true;
    for (int i = 0; i < RULE_N_CUSTOMER_FIELDS; i++)
        read_cell_at(l, &st->customer[i], rule_customer_fields[i].type, res, row, base + 1 + i);
    for (int i = 0; i < RULE_N_CUSTOMER_FIELDS; i++)
        if (rule_customer_fields[i].type == RT_TAGS)
            read_strings(l, st->customer[i].text, &st->tags, &st->ntags);
    read_segments(l, PQgetvalue(res, row, base + 1 + RULE_N_CUSTOMER_FIELDS));
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
    customer_row(l, res, 0, 0);
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

/* A touchpoint from res's row: type, channel, campaign_id, amount,
 * occurred_at, items and offer_code from column base on. */
static void touchpoint_row(loader *l, rule_touchpoint *tp, const PGresult *res, int r, int base)
{
    tp->type = keep(l, res, r, base);
    tp->channel = keep(l, res, r, base + 1);
    tp->campaign_id = keep(l, res, r, base + 2);
    tp->offer_code = keep(l, res, r, base + 6);
    tp->amount = keep(l, res, r, base + 3);
    if (!crm_parse_pg_timestamp(PQgetvalue(res, r, base + 4), &tp->occurred_us))
        l->bad = true;
    read_skus(l, tp, PQgetisnull(res, r, base + 5) ? NULL : PQgetvalue(res, r, base + 5));
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
    for (int r = 0; st->touchpoints != NULL && r < n; r++)
        touchpoint_row(l, &st->touchpoints[st->ntouchpoints++], res, r, 0);
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

/* ---- the state in one statement, beside other reads (treatments) ----------------- */

#define TEXT_LOAD_COLUMN(name, type, sql, load, values) ", (" load ")::text"
#define TEXT_METRICS_COLUMN(name, type, sql, values) ", (" sql ")::text"

/* Columns of the kinds, after the kind (column 0): see segments.h. */
enum {
    C_ATTRIBUTES = 1,
    C_SEGMENTS = C_ATTRIBUTES + 1 + RULE_N_CUSTOMER_FIELDS,
    C_STATUS,
    C_HAS_METRICS,
    C_METRICS,
    C_END = C_METRICS + RULE_N_METRICS_FIELDS,
    T_COLUMNS = 10,
};

int crm_rule_state_union_width(void)
{
    return C_END - 1;
}

int crm_rule_state_status_column(void)
{
    return C_STATUS;
}

/* n NULL::text columns into b. */
static void pad(crm_jbuf *b, int n)
{
    for (int i = 0; i < n; i++)
        crm_jbuf_raw(b, ", NULL::text", 12);
}

static void part(crm_jbuf *b, const char *sql, int used, int width)
{
    crm_jbuf_raw(b, sql, strlen(sql));
    pad(b, width - used);
}

char *crm_rule_state_union_sql(int width)
{
    if (width < crm_rule_state_union_width())
        return NULL;
    crm_jbuf b;
    crm_jbuf_init(&b);
    /* The customer and its metrics. */
    part(&b,
         "SELECT 'c'::text, c.attributes::text" RULE_CUSTOMER_FIELDS(
             TEXT_LOAD_COLUMN) ", array_to_json(ARRAY(SELECT sm.segment_id FROM segment_memberships"
                               " sm WHERE sm.customer_id = c.id ORDER BY sm.segment_id))::text,"
                               " c.status::text, (m.customer_id IS NOT NULL)::text" RULE_METRICS_FIELDS(
                                   TEXT_METRICS_COLUMN),
         C_END - 1, width);
    static const char customer[] = " FROM customers c LEFT JOIN customer_metrics m ON"
                                   " m.customer_id = c.id WHERE c.id = $1::bigint";
    crm_jbuf_raw(&b, customer, sizeof customer - 1);
    /* The latest consent decision of each channel and purpose. */
    part(&b,
         " UNION ALL SELECT 'k', channel, purpose, status, id::text",
         4, width);
    static const char consents[] =
        " FROM (SELECT DISTINCT ON (channel, purpose) channel, purpose, status, id"
        " FROM customer_consents WHERE customer_id = $1::bigint";
    crm_jbuf_raw(&b, consents, sizeof consents - 1);
    static const char order[] = " ORDER BY channel, purpose, captured_at DESC, id DESC) k";
    crm_jbuf_raw(&b, order, sizeof order - 1);
    /* Every touchpoint. */
    part(&b,
         " UNION ALL SELECT 't', type, channel, campaign_id, amount::text, occurred_at::text,"
         " items::text, offer_code, direction, purpose,"
         " (extract(epoch FROM occurred_at) * 1000)::bigint::text",
         T_COLUMNS, width);
    static const char touchpoints[] = " FROM touchpoints WHERE customer_id = $1::bigint";
    crm_jbuf_raw(&b, touchpoints, sizeof touchpoints - 1);
    return crm_jbuf_take(&b, NULL);
}

crm_rule_state *crm_rule_state_read(const PGresult *res, long long customer_id, crm_error *err)
{
    crm_rule_state *st = calloc(1, sizeof *st);
    if (st == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    crm_arena_init(&st->arena);
    st->customer_id = customer_id;
    loader l = {.st = st};
    int rows = PQntuples(res), nk = 0, nt = 0, customer = -1;
    for (int r = 0; r < rows; r++) {
        char k = PQgetvalue(res, r, 0)[0];
        nk += k == 'k';
        nt += k == 't';
        if (k == 'c')
            customer = r;
    }
    if (customer < 0) {
        crm_rule_state_free(st);
        crm_error_set(err, CRM_E_NOT_FOUND, "no such customer");
        return NULL;
    }
    customer_row(&l, res, customer, C_ATTRIBUTES);
    st->has_metrics = strcmp(PQgetvalue(res, customer, C_HAS_METRICS), "true") == 0;
    for (int i = 0; st->has_metrics && i < RULE_N_METRICS_FIELDS; i++)
        read_cell_at(&l, &st->metrics[i], rule_metrics_fields[i].type, res, customer,
                     C_METRICS + i);
    st->consents = take(&l, sizeof *st->consents * (size_t)nk);
    st->touchpoints = take(&l, sizeof *st->touchpoints * (size_t)nt);
    for (int r = 0; st->consents != NULL && st->touchpoints != NULL && r < rows; r++) {
        char k = PQgetvalue(res, r, 0)[0];
        if (k == 'k' && st->nconsents < nk) {
            rule_consent *c = &st->consents[st->nconsents++];
            c->channel = keep(&l, res, r, 1);
            c->purpose = keep(&l, res, r, 2);
            c->status = keep(&l, res, r, 3);
        } else if (k == 't' && st->ntouchpoints < nt) {
            touchpoint_row(&l, &st->touchpoints[st->ntouchpoints++], res, r, 1);
        }
    }
    bool ok = true;
    if (l.oom)
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    else if (l.bad)
        ok = crm_error_set(err, CRM_E_INTERNAL, "customer %lld holds a value the rules cannot read",
                           customer_id);
    if (!ok) {
        crm_rule_state_free(st);
        return NULL;
    }
    return st;
}

/*
 * touchpoints/resolve.c — what the caller's key may do with customers, and
 * the customer each item names: found by id (following merges), external id
 * or e-mail, or made when the item asks for it.
 */
#include "touchpoints.h"
#include "auth.h"
#include "touchpoints/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- what the caller's key may do with customers (review S4) ---- */

/* Whether the batch's caller holds scope (internal callers hold all). */
bool tp_caller_may(const batch *B, unsigned scope)
{
    const crm_write_ctx *ctx = B->ctx;
    return ctx == NULL || !ctx->has_scopes || (ctx->scopes & CRM_SCOPE_ADMIN) != 0 ||
           (ctx->scopes & scope) == scope;
}

static void refuse(tp_item *it, const char *field, const char *message)
{
    tp_reject(it, field, message);
    it->code = CRM_E_FORBIDDEN;
}

/* Refuses, before anything is looked up, what the caller's scopes do not
 * allow: making a customer needs customers:write; without customers:read an
 * e-mail address names a customer only with create_customer (so that the
 * answer is the same whether or not the address was known: e-mail
 * addresses are personal data, an oracle over them is a leak). */
void tp_check_scopes(const batch *B, tp_item *it)
{
    if (it->create_customer && !tp_caller_may(B, CRM_SCOPE_CUSTOMERS_WRITE))
        refuse(it, "/create_customer", "creating customers needs the 'customers:write' scope");
    if (it->ref == REF_EMAIL && !it->create_customer && !tp_caller_may(B, CRM_SCOPE_CUSTOMERS_READ))
        refuse(it, "/customer_email",
               "without the 'customers:read' scope a customer is named by e-mail only with "
               "create_customer: true (and 'customers:write')");
}

static bool unresolved(const tp_item *it, ref_kind kind)
{
    return it->status == CRM_TP_CREATED && it->ref == kind && it->customer_id == 0;
}

/* ---- resolving customers ---- */

static crm_stmt resolve_ids = CRM_STMT(
    "touchpoint_resolve_ids",
    "WITH RECURSIVE chain (i, id, status, merged_into, depth) AS ("
    "  SELECT u.i, c.id, c.status, c.merged_into, 0"
    "  FROM json_to_recordset($1::json) AS u (i int, id bigint) JOIN customers c ON c.id = u.id"
    "  UNION ALL"
    "  SELECT chain.i, c.id, c.status, c.merged_into, chain.depth + 1"
    "  FROM chain JOIN customers c ON c.id = chain.merged_into"
    "  WHERE chain.status = 'merged' AND chain.depth < 16)"
    " SELECT i, id FROM chain WHERE status = 'active'");

static crm_stmt resolve_external_ids = CRM_STMT(
    "touchpoint_resolve_external_ids",
    "SELECT u.i, c.id FROM json_to_recordset($1::json) AS u (i int, source text, external_id text)"
    " JOIN customer_external_ids x ON x.source = u.source AND x.external_id = u.external_id"
    " JOIN customers c ON c.id = x.customer_id AND c.status = 'active'");

/* An e-mail that several live customers share names none of them. */
static crm_stmt resolve_emails = CRM_STMT(
    "touchpoint_resolve_emails",
    "SELECT u.i, min(c.id), count(*) FROM json_to_recordset($1::json) AS u (i int, email text)"
    " JOIN customers c ON c.email_normalized = u.email AND c.status = 'active' GROUP BY u.i");

/* Serializes the creation of the same customer by concurrent batches. */
static crm_stmt lock_references =
    CRM_STMT("touchpoint_lock_references",
             "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(u.key, "
             "1955) AS k"
             " FROM json_to_recordset($1::json) AS u (key text) ORDER BY 1) s");

/* Minimal customers for references nobody holds yet, with their external id
 * or e-mail, and their audit rows. One row per reference; $2 the API key. */
static crm_stmt create_customers = CRM_STMT(
    "touchpoint_create_customers",
    "WITH input AS (SELECT u.*, nextval(pg_get_serial_sequence('customers', 'id')) AS id"
    "  FROM json_to_recordset($1::json) AS u (r int, source text, external_id text, email text,"
    "  email_normalized text)),"
    " made AS (INSERT INTO customers (id, email, email_normalized) OVERRIDING SYSTEM VALUE"
    "  SELECT id, email, email_normalized FROM input),"
    " ids AS (INSERT INTO customer_external_ids (source, external_id, customer_id)"
    "  SELECT source, external_id, id FROM input WHERE source IS NOT NULL),"
    " audit AS (INSERT INTO customer_audit (customer_id, api_key_id, action, changes)"
    "  SELECT id, nullif($2::bigint, 0), 'create', jsonb_build_object('created_by',"
    "  'touchpoint', 'email', CASE WHEN email IS NOT NULL THEN jsonb_build_object('from', null,"
    "  'to', email) END, 'external_ids', CASE WHEN source IS NOT NULL THEN"
    "  jsonb_build_object('from', null, 'to', jsonb_build_array(jsonb_build_object('source',"
    "  source, 'id', external_id))) END) FROM input)"
    " SELECT r, id FROM input");

/* Runs stmt with the JSON text json (and extra, when not NULL) and hands
 * each row to apply. */
bool tp_run_rows(crm_conn *c, crm_stmt *stmt, const char *json, const char *extra, batch *B,
                 void (*apply)(batch *, const PGresult *, int), crm_error *err)
{
    const char *params[] = {json, extra};
    PGresult *res = crm_db_exec(c, stmt, extra ? 2 : 1, params, err);
    if (res == NULL)
        return false;
    for (int r = 0; r < PQntuples(res); r++)
        apply(B, res, r);
    PQclear(res);
    return true;
}

static void apply_resolved(batch *B, const PGresult *res, int r)
{
    long i = atol(PQgetvalue(res, r, 0));
    if (i >= 0 && (size_t)i < B->n)
        B->items[i].customer_id = atoll(PQgetvalue(res, r, 1));
}

static void apply_email(batch *B, const PGresult *res, int r)
{
    long i = atol(PQgetvalue(res, r, 0));
    if (i < 0 || (size_t)i >= B->n)
        return;
    if (atol(PQgetvalue(res, r, 2)) > 1)
        tp_reject(&B->items[i], "/customer_email",
                  tp_caller_may(B, CRM_SCOPE_CUSTOMERS_READ)
                      ? "several customers have this e-mail: name the customer by id or external id"
                      : REFERENCE_REFUSED);
    else
        B->items[i].customer_id = atoll(PQgetvalue(res, r, 1));
}

/* The array b holds, for json_to_recordset; NULL when it has no rows (or
 * memory ran out: then nothing is asked of the database either). */
char *tp_take_rows(crm_jbuf *b, size_t count)
{
    char *text = crm_jbuf_take(b, NULL);
    if (count == 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* The references of kind still unresolved, as a JSON array for
 * json_to_recordset; NULL when there are none. */
static char *references_json(batch *B, ref_kind kind)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (!unresolved(it, kind))
            continue;
        count++;
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "i");
        crm_jbuf_int(&b, (long long)i);
        if (kind == REF_ID) {
            crm_jbuf_key(&b, "id");
            crm_jbuf_int(&b, it->ref_id);
        } else if (kind == REF_EXTERNAL) {
            crm_jbuf_key(&b, "source");
            crm_jbuf_cstring(&b, it->ref_source);
            crm_jbuf_key(&b, "external_id");
            crm_jbuf_cstring(&b, it->ref_external_id);
        } else {
            crm_jbuf_key(&b, "email");
            crm_jbuf_cstring(&b, it->email_normalized);
        }
        crm_jbuf_end_object(&b);
    }
    crm_jbuf_end_array(&b);
    return tp_take_rows(&b, count);
}

bool tp_resolve(crm_conn *c, batch *B, ref_kind kind, crm_error *err)
{
    char *json = references_json(B, kind);
    if (json == NULL)
        return true;
    bool ok;
    if (kind == REF_ID)
        ok = tp_run_rows(c, &resolve_ids, json, NULL, B, apply_resolved, err);
    else if (kind == REF_EXTERNAL)
        ok = tp_run_rows(c, &resolve_external_ids, json, NULL, B, apply_resolved, err);
    else
        ok = tp_run_rows(c, &resolve_emails, json, NULL, B, apply_email, err);
    free(json);
    return ok;
}

/* The key that names a reference across batches (and its lock). */
static char *reference_key(const tp_item *it)
{
    char *key = NULL;
    if (it->ref == REF_EXTERNAL)
        return asprintf(&key, "x%zu:%s%s", strlen(it->ref_source), it->ref_source,
                        it->ref_external_id) < 0
                   ? NULL
                   : key;
    return asprintf(&key, "e:%s", it->email_normalized) < 0 ? NULL : key;
}

static int compare_slots(const void *a, const void *b)
{
    const ref_slot *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->item > y->item) - (x->item < y->item);
}

void tp_free_slots(batch *B)
{
    for (size_t i = 0; i < B->n_slots; i++)
        free(B->slots[i].key);
    free(B->slots);
    B->slots = NULL;
    B->n_slots = 0;
}

static bool wants_customer(const tp_item *it)
{
    return it->create_customer && (unresolved(it, REF_EXTERNAL) || unresolved(it, REF_EMAIL));
}

/* The references of items that want a customer made, sorted by key. */
static bool collect_slots(batch *B)
{
    tp_free_slots(B);
    B->slots = calloc(B->n ? B->n : 1, sizeof *B->slots);
    if (B->slots == NULL)
        return false;
    for (size_t i = 0; i < B->n; i++) {
        if (!wants_customer(&B->items[i]))
            continue;
        char *key = reference_key(&B->items[i]);
        if (key == NULL)
            return false;
        B->slots[B->n_slots++] = (ref_slot){.key = key, .item = i};
    }
    qsort(B->slots, B->n_slots, sizeof *B->slots, compare_slots);
    return true;
}

/* A made customer: r is the first slot of its key; every slot of the key gets it. */
static void apply_created(batch *B, const PGresult *res, int r)
{
    long first = atol(PQgetvalue(res, r, 0));
    long long id = atoll(PQgetvalue(res, r, 1));
    if (first < 0 || (size_t)first >= B->n_slots)
        return;
    const char *key = B->slots[first].key;
    for (size_t k = (size_t)first; k < B->n_slots && strcmp(B->slots[k].key, key) == 0; k++) {
        B->items[B->slots[k].item].customer_id = id;
        B->items[B->slots[k].item].made_customer = true;
    }
}

/* Creates a customer for each distinct reference that items with
 * create_customer name and nobody holds, after locking those references and
 * looking again (a concurrent batch may have just made it). */
bool tp_create_missing(crm_conn *c, batch *B, crm_error *err)
{
    if (!collect_slots(B))
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (B->n_slots == 0)
        return true;
    crm_jbuf keys, rows;
    crm_jbuf_init(&keys);
    crm_jbuf_begin_array(&keys);
    for (size_t k = 0; k < B->n_slots; k++) {
        if (k > 0 && strcmp(B->slots[k - 1].key, B->slots[k].key) == 0)
            continue;
        crm_jbuf_begin_object(&keys);
        crm_jbuf_key(&keys, "key");
        crm_jbuf_cstring(&keys, B->slots[k].key);
        crm_jbuf_end_object(&keys);
    }
    crm_jbuf_end_array(&keys);
    char *keys_json = crm_jbuf_take(&keys, NULL);
    if (keys_json == NULL) {
        tp_free_slots(B);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    const char *params[] = {keys_json};
    PGresult *res = crm_db_exec(c, &lock_references, 1, params, err);
    bool ok = res != NULL;
    PQclear(res);
    free(keys_json);
    if (!ok || !tp_resolve(c, B, REF_EXTERNAL, err) || !tp_resolve(c, B, REF_EMAIL, err)) {
        tp_free_slots(B);
        return false;
    }
    /* One row per key still missing, named by its first slot. */
    crm_jbuf_init(&rows);
    crm_jbuf_begin_array(&rows);
    size_t count = 0;
    for (size_t k = 0; k < B->n_slots; k++) {
        tp_item *it = &B->items[B->slots[k].item];
        if ((k > 0 && strcmp(B->slots[k - 1].key, B->slots[k].key) == 0) || it->customer_id != 0)
            continue;
        count++;
        crm_jbuf_begin_object(&rows);
        crm_jbuf_key(&rows, "r");
        crm_jbuf_int(&rows, (long long)k);
        crm_jbuf_key(&rows, "source");
        crm_jbuf_cstring(&rows, it->ref == REF_EXTERNAL ? it->ref_source : NULL);
        crm_jbuf_key(&rows, "external_id");
        crm_jbuf_cstring(&rows, it->ref == REF_EXTERNAL ? it->ref_external_id : NULL);
        crm_jbuf_key(&rows, "email");
        crm_jbuf_cstring(&rows, it->ref == REF_EMAIL ? it->ref_email : NULL);
        crm_jbuf_key(&rows, "email_normalized");
        crm_jbuf_cstring(&rows, it->ref == REF_EMAIL ? it->email_normalized : NULL);
        crm_jbuf_end_object(&rows);
    }
    crm_jbuf_end_array(&rows);
    char *rows_json = crm_jbuf_take(&rows, NULL);
    char key_id[24];
    snprintf(key_id, sizeof key_id, "%lld", B->ctx ? B->ctx->api_key_id : 0);
    ok = rows_json != NULL && (count == 0 || tp_run_rows(c, &create_customers, rows_json, key_id, B,
                                                         apply_created, err));
    if (rows_json == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    free(rows_json);
    tp_free_slots(B);
    return ok;
}

/*
 * customers/privacy.c — right of access (export), right to erasure, and the
 * customer read with what ?expand= adds (its current consents, its
 * metrics). See customer_privacy.h for what each one promises; the SQL of
 * all three lives here.
 */
#include "customer_privacy.h"
#include "customer_tables.h"
#include "clock.h"
#include "consents.h"
#include "customer_metrics.h"
#include "customers/internal.h"
#include "touchpoints.h"
#include "jbuf.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A merge chain longer than this is treated as broken data (as customers/customers.c). */

#define MS(col) "(extract(epoch FROM " col ") * 1000)::bigint"

/* Reads in one consistent snapshot; the first statement of a transaction. */
static crm_stmt read_snapshot = CRM_STMT_RO(
    "privacy_read_snapshot", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");

/* The customer $1 names at the end of its merge chain, with its status. */
static crm_stmt resolve_customer = CRM_STMT_RO(
    "privacy_resolve",
    "WITH RECURSIVE walk(id, status, merged_into, hops) AS ("
    "SELECT id, status, merged_into, 0 FROM customers WHERE id = $1 "
    "UNION ALL SELECT c.id, c.status, c.merged_into, w.hops + 1 FROM walk w "
    "JOIN customers c ON c.id = w.merged_into WHERE w.status = 'merged' AND w.hops < 16) "
    "SELECT id, status FROM walk ORDER BY hops DESC LIMIT 1");

/* The customers that make up the person $1: itself and every customer
 * merged into it, directly or through others (UNION stops on a cycle). */
#define PERSON_TREE                                                                                \
    "WITH RECURSIVE tree(id) AS (SELECT $1::bigint UNION SELECT c.id FROM customers c "            \
    "JOIN tree t ON c.merged_into = t.id WHERE c.status = 'merged') "

/* Their rows, $1's first; the last column is the external ids. */
static crm_stmt export_customers = CRM_STMT_RO(
    "privacy_export_customers", PERSON_TREE
    "SELECT " CRM_CUSTOMER_COLUMNS ", " CRM_CUSTOMER_EXTERNAL_IDS
    " FROM customers c WHERE c.id IN (SELECT id FROM tree) ORDER BY c.id = $1 DESC, c.id");

/* ---- erasure statements ------------------------------------------------------ */

static crm_stmt erase_lock = CRM_STMT(
    "privacy_erase_lock", "SELECT id, status, merged_into, version, " MS("created_at") ", " MS(
                              "updated_at") " FROM customers WHERE id = $1 FOR UPDATE");

/* Locks the person's rows; returns their ids as one bigint[] text. */
static crm_stmt erase_lock_tree = CRM_STMT(
    "privacy_erase_lock_tree",
    "SELECT array_agg(id ORDER BY id)::text FROM (" PERSON_TREE
    "SELECT c.id FROM customers c WHERE c.id IN (SELECT id FROM tree) ORDER BY c.id FOR UPDATE) l");

/* Every column that can describe the person; kind, status, merged_into,
 * version and the timestamps are not personal and stay (the tombstone). */
static crm_stmt erase_customers = CRM_STMT(
    "privacy_erase_customers",
    "UPDATE customers c SET first_name = NULL, last_name = NULL, display_name = NULL, "
    "company = NULL, email = NULL, email_normalized = NULL, phone = NULL, "
    "phone_normalized = NULL, country = NULL, region = NULL, city = NULL, postal_code = NULL, "
    "street = NULL, latitude = NULL, longitude = NULL, birth_date = NULL, "
    "preferred_language = NULL, lifecycle_stage = NULL, tags = '{}', attributes = '{}', "
    "status = 'erased', version = c.version + 1, updated_at = now() "
    "WHERE c.id = ANY($1::bigint[]) "
    "RETURNING c.id, c.version, " MS("c.created_at") ", " MS("c.updated_at"));

static crm_stmt export_audit_insert =
    CRM_STMT("privacy_export_audit_insert",
             "INSERT INTO customer_audit (customer_id, api_key_id, action, changes) "
             "VALUES ($1, $2, 'export', $3::jsonb)");

static crm_stmt erase_audit_insert =
    CRM_STMT("privacy_erase_audit_insert",
             "INSERT INTO customer_audit (customer_id, api_key_id, action, changes) "
             "VALUES ($1, $2, 'erase', $3::jsonb)");

/* ---- helpers ------------------------------------------------------------------ */

static json_t *int_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_integer(atoll(PQgetvalue(res, r, c)));
}

/* Runs stmt with one parameter on c. */
static PGresult *exec1(crm_conn *c, crm_stmt *stmt, const char *param, crm_error *err)
{
    const char *params[] = {param};
    return crm_db_exec(c, stmt, 1, params, err);
}

/* Acquires a connection inside a read-only repeatable-read transaction;
 * NULL with err set. The caller ends it with end_read. */
static crm_conn *begin_read(crm_error *err)
{
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    PGresult *res = NULL;
    if (crm_db_begin(c, err) && (res = crm_db_exec(c, &read_snapshot, 0, NULL, err)) != NULL) {
        PQclear(res);
        return c;
    }
    crm_db_rollback(c);
    crm_db_release(c);
    return NULL;
}

static void end_read(crm_conn *c)
{
    crm_db_rollback(c); /* nothing was written */
    crm_db_release(c);
}

/* ---- GET /v1/customers/{id}?expand=consents,metrics --------------------------- */

/* Sets rep's member name to value (taken); false when value is NULL. */
static bool add_member(json_t *rep, const char *name, json_t *value)
{
    return value != NULL && json_object_set_new(rep, name, value) == 0;
}

/* Adds to rep (taken; NULL passes through) the members x asks for besides
 * the external ids, read on c. NULL with err set when one cannot be read. */
static json_t *add_expansions(crm_conn *c, json_t *rep, const crm_customer_expand *x,
                              crm_error *err)
{
    if (rep == NULL)
        return NULL;
    long long id = json_integer_value(json_object_get(rep, "id"));
    if ((x->consents && !add_member(rep, "consents", crm_consents_current(c, id, err))) ||
        (x->metrics && !add_member(rep, "metrics", crm_metrics_customer_on(c, id, err)))) {
        if (err->code == CRM_OK)
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        json_decref(rep);
        return NULL;
    }
    return rep;
}

json_t *crm_customer_get_expanded(long long id, const crm_customer_expand *x, crm_error *err)
{
    crm_conn *c = begin_read(err);
    if (c == NULL)
        return NULL;
    json_t *rep = add_expansions(c, crm_customer_get_on(c, id, x->external_ids, err), x, err);
    end_read(c);
    return rep;
}

json_t *crm_customer_get_expanded_by_external_id(const char *source, const char *external_id,
                                                 const crm_customer_expand *x, bool *merged,
                                                 crm_error *err)
{
    *merged = false;
    crm_conn *c = begin_read(err);
    if (c == NULL)
        return NULL;
    crm_query q;
    crm_customer_get_by_external_id_query(&q, source, external_id, x->external_ids);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    json_t *rep = NULL;
    if (res != NULL) {
        long long survivor = 0;
        rep = crm_customer_get_decode(res, x->external_ids, &survivor, err);
        PQclear(res);
        if (survivor != 0) { /* a merged customer: read as its survivor */
            *merged = true;
            rep = crm_customer_get_on(c, survivor, x->external_ids, err);
        }
    }
    rep = add_expansions(c, rep, x, err);
    end_read(c);
    return rep;
}

/* ---- export ---------------------------------------------------------------------- */

/* The representation of an exported customer row: the usual one with its
 * external ids, plus status and merged_into. */
static json_t *exported_customer(const PGresult *res, int r)
{
    json_t *rep = crm_customer_from_row(res, r, true);
    json_object_set_new(rep, "status", json_string(PQgetvalue(res, r, CRM_COL_STATUS)));
    json_object_set_new(rep, "merged_into", int_or_null(res, r, CRM_COL_MERGED_INTO));
    return rep;
}

/* Resolves id to the person's customer on c: its id, or 0 with err set when
 * there is none that holds data (unknown, erased, a broken merge chain). */
static long long resolve_for_export(crm_conn *c, long long id, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    PGresult *res = exec1(c, &resolve_customer, idbuf, err);
    if (res == NULL)
        return 0;
    long long target = 0;
    if (PQntuples(res) == 1) {
        const char *status = PQgetvalue(res, 0, 1);
        if (strcmp(status, "active") == 0 || strcmp(status, "deleted") == 0)
            target = atoll(PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    if (target == 0)
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    return target;
}

/* Writes the export of the person target on c to out, from its opening
 * brace to its closing one; *ids gets the exported customers' ids as a
 * bigint[] literal (caller frees) for the audit entry. */
static bool export_on(crm_conn *c, long long target, FILE *out, char **ids_out, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", target);
    PGresult *res = exec1(c, &export_customers, idbuf, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    }
    /* The ids as a bigint[] literal: digits and commas only. */
    size_t cap = 2 + (size_t)PQntuples(res) * 21, len = 0;
    char *ids = malloc(cap);
    if (ids == NULL) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    char stamp[48];
    crm_format_timestamp(crm_wall_ms(), stamp);
    fprintf(out, "{\"format_version\":%d,\"exported_at\":\"%s\",\"customer\":",
            CRM_CUSTOMER_EXPORT_FORMAT_VERSION, stamp);
    json_t *rep = exported_customer(res, 0);
    bool written = crm_json_fwrite(out, rep);
    json_decref(rep);
    fputs(",\"merged_customers\":[", out);
    len += (size_t)snprintf(ids, cap, "{%s", PQgetvalue(res, 0, CRM_COL_ID));
    for (int r = 1; r < PQntuples(res); r++) {
        if (r > 1)
            fputc(',', out);
        rep = exported_customer(res, r);
        written = crm_json_fwrite(out, rep) && written;
        json_decref(rep);
        len += (size_t)snprintf(ids + len, cap - len, ",%s", PQgetvalue(res, r, CRM_COL_ID));
    }
    snprintf(ids + len, cap - len, "}");
    PQclear(res);
    fputc(']', out);

    /* Then each customer-attached table's part, as the registry says. */
    crm_export_step step = {.c = c, .target = target, .ids = ids, .out = out};
    bool ok = written || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    for (size_t i = 0; ok && i < crm_customer_tables_count; i++)
        if (crm_customer_tables[i].on_export != NULL)
            ok = crm_customer_tables[i].on_export(&step, err);
    fputc('}', out);
    if (ok && (fflush(out) != 0 || ferror(out)))
        ok = crm_error_set(err, CRM_E_INTERNAL, "the export could not be written");
    if (!ok) {
        free(ids);
        return false;
    }
    *ids_out = ids;
    return true;
}

/* crm_customer_export_write, with the exported ids for the audit entry. */
static bool export_write(long long id, FILE *out, char **ids, crm_error *err)
{
    crm_conn *c = begin_read(err);
    if (c == NULL)
        return false;
    long long target = resolve_for_export(c, id, err);
    bool ok = target != 0 && export_on(c, target, out, ids, err);
    end_read(c);
    return ok;
}

json_t *crm_customer_export(long long id, crm_error *err)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    char *ids = NULL;
    bool ok = export_write(id, out, &ids, err);
    fclose(out);
    free(ids);
    json_t *doc = ok ? crm_json_load_stored(text) : NULL;
    if (ok && doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "the export is not valid JSON");
    free(text);
    return doc;
}

/* Writes the audit entry of the export of ids to target (outside its
 * read-only snapshot: an insert there could fail on a concurrent change of
 * the customer, and the entry must not depend on that). */
static bool audit_export(long long target, const char *ids, const crm_write_ctx *ctx,
                         crm_error *err)
{
    /* {"customer_ids":[...]} from the literal {...}: digits and commas. */
    size_t n = strlen(ids);
    char *text = malloc(n + sizeof "{\"customer_ids\":}");
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    snprintf(text, n + sizeof "{\"customer_ids\":}", "{\"customer_ids\":[%.*s]}", (int)(n - 2),
             ids + 1);
    char idbuf[24], keybuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", target);
    snprintf(keybuf, sizeof keybuf, "%lld", ctx ? ctx->api_key_id : 0);
    const char *params[] = {idbuf, ctx && ctx->api_key_id > 0 ? keybuf : NULL, text};
    PGresult *res = crm_db_run(&export_audit_insert, 3, params, err);
    free(text);
    PQclear(res);
    return res != NULL;
}

bool crm_customer_export_write(long long id, const crm_write_ctx *ctx, FILE *out,
                               long long *customer_id, crm_error *err)
{
    char *ids = NULL;
    if (!export_write(id, out, &ids, err))
        return false;
    *customer_id = atoll(ids + 1);
    bool ok = audit_export(*customer_id, ids, ctx, err);
    free(ids);
    return ok;
}

/* ---- erasure ---------------------------------------------------------------------- */

bool crm_customer_erase_body_valid(json_t *body, crm_error *err)
{
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be {\"confirm\": true}");
    const char *key;
    json_t *value;
    json_object_foreach(body, key, value)
    {
        if (strcmp(key, "confirm") != 0) {
            char field[CRM_JSON_POINTER_MAX];
            crm_json_pointer_append(field, sizeof field, "", key);
            crm_error_add_field(err, field, "unknown field");
        }
    }
    if (!json_is_true(json_object_get(body, "confirm")))
        crm_error_add_field(err, "/confirm",
                            "required, true: erasure removes the personal data for good");
    if (err->errors != NULL)
        return crm_error_set(err, CRM_E_INVALID, "the erasure is not confirmed");
    return true;
}

static json_t *tombstone(long long id, long long version, long long created_ms,
                         long long updated_ms)
{
    return json_pack("{s:I, s:s, s:I, s:o, s:o}", "id", (json_int_t)id, "status", "erased",
                     "version", (json_int_t)version, "created_at", crm_json_timestamp(created_ms),
                     "updated_at", crm_json_timestamp(updated_ms));
}

/* Scrubs the person whose rows are ids (a bigint[] literal) on c; returns
 * the tombstone of target. */
static json_t *scrub(crm_conn *c, long long target, const char *ids, crm_error *err)
{
    PGresult *res = exec1(c, &erase_customers, ids, err);
    if (res == NULL)
        return NULL;
    json_t *stone = NULL;
    for (int r = 0; r < PQntuples(res); r++)
        if (atoll(PQgetvalue(res, r, 0)) == target)
            stone = tombstone(target, atoll(PQgetvalue(res, r, 1)), atoll(PQgetvalue(res, r, 2)),
                              atoll(PQgetvalue(res, r, 3)));
    PQclear(res);
    if (stone == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "the customer to erase was not updated");
        return NULL;
    }
    /* Then each customer-attached table, as the registry says. */
    for (size_t i = 0; i < crm_customer_tables_count; i++)
        if (crm_customer_tables[i].on_erase != NULL &&
            !crm_customer_tables[i].on_erase(c, ids, err)) {
            json_decref(stone);
            return NULL;
        }
    return stone;
}

/* Records the erasure: the former status and the customer ids erased. */
static bool audit_erase(crm_conn *c, long long target, const char *from, const char *ids,
                        const crm_write_ctx *ctx, crm_error *err)
{
    /* ids is "{1,2}": the same numbers as a JSON array. */
    size_t n = strlen(ids);
    char *array = strdup(ids);
    if (array == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    array[0] = '[';
    array[n - 1] = ']';
    json_t *list = crm_json_load_stored(array);
    free(array);
    json_t *changes = json_pack("{s:{s:s, s:s}, s:o}", "status", "from", from, "to", "erased",
                                "customer_ids", list ? list : json_array());
    char *text = json_dumps(changes, JSON_COMPACT);
    json_decref(changes);
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    char idbuf[24], keybuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", target);
    snprintf(keybuf, sizeof keybuf, "%lld", ctx ? ctx->api_key_id : 0);
    const char *params[] = {idbuf, ctx && ctx->api_key_id > 0 ? keybuf : NULL, text};
    PGresult *res = crm_db_exec(c, &erase_audit_insert, 3, params, err);
    free(text);
    PQclear(res);
    return res != NULL;
}

/* The erasure inside a transaction on c; see crm_customer_erase. */
static json_t *erase_in_tx(crm_conn *c, long long id, const crm_write_ctx *ctx, bool *already,
                           crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    PGresult *res = exec1(c, &erase_lock, idbuf, err);
    if (res == NULL)
        return NULL;
    if (PQntuples(res) != 1) {
        PQclear(res);
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    char status[16];
    snprintf(status, sizeof status, "%s", PQgetvalue(res, 0, 1));
    if (strcmp(status, "erased") == 0) {
        *already = true;
        json_t *stone = tombstone(id, atoll(PQgetvalue(res, 0, 3)), atoll(PQgetvalue(res, 0, 4)),
                                  atoll(PQgetvalue(res, 0, 5)));
        PQclear(res);
        return stone;
    }
    if (strcmp(status, "merged") == 0) {
        long long survivor = PQgetisnull(res, 0, 2) ? 0 : atoll(PQgetvalue(res, 0, 2));
        PQclear(res);
        if (err->errors == NULL)
            err->errors = json_array();
        json_array_append_new(err->errors, json_pack("{s:s, s:s, s:I}", "field", "id", "message",
                                                     "merged into another customer: erase that one",
                                                     "customer_id", (json_int_t)survivor));
        crm_error_set(err, CRM_E_CONFLICT,
                      "customer %lld was merged into customer %lld; erasing customer %lld erases "
                      "both",
                      id, survivor, survivor);
        return NULL;
    }
    PQclear(res);

    res = exec1(c, &erase_lock_tree, idbuf, err);
    if (res == NULL)
        return NULL;
    char *ids =
        PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    if (ids == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "could not list the customers to erase");
        return NULL;
    }
    json_t *stone = scrub(c, id, ids, err);
    if (stone != NULL && !audit_erase(c, id, status, ids, ctx, err)) {
        json_decref(stone);
        stone = NULL;
    }
    free(ids);
    return stone;
}

json_t *crm_customer_erase(long long id, const crm_write_ctx *ctx, bool *already, crm_error *err)
{
    *already = false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    json_t *stone = NULL;
    if (crm_db_begin(c, err)) {
        stone = erase_in_tx(c, id, ctx, already, err);
        if (stone != NULL && !crm_db_commit(c, err)) {
            json_decref(stone);
            stone = NULL;
        }
    }
    if (stone == NULL)
        crm_db_rollback(c);
    crm_db_release(c);
    return stone;
}

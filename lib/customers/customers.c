/*
 * customers/customers.c — the customer record in PostgreSQL: the statements, the
 * representation built from their columns, and the transactions of every
 * write (create, merge-patch update, delete, upsert by external id), each
 * with its audit row. Validation lives in customers/validate.c, lists in
 * customers/list.c.
 */
#include "customers.h"
#include "customers/internal.h"
#include "segment_store.h"
#include "idempotency.h"
#include "jbuf.h"
#include "json.h"
#include "list/page.h"
#include "log.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A merge chain longer than this is treated as broken data, not followed. */
#define MAX_MERGE_HOPS 16
/* Attempts of an upsert that loses the race to create the same external id. */
#define UPSERT_ATTEMPTS 3

static crm_stmt get_customer =
    CRM_STMT_RO("customer_get", "SELECT " CRM_CUSTOMER_COLUMNS " FROM customers c WHERE c.id = $1");
static crm_stmt get_customer_ext =
    CRM_STMT_RO("customer_get_ext", "SELECT " CRM_CUSTOMER_COLUMNS ", " CRM_CUSTOMER_EXTERNAL_IDS
                                    " FROM customers c WHERE c.id = $1");
static crm_stmt get_by_external_id =
    CRM_STMT_RO("customer_get_by_external_id",
                "SELECT " CRM_CUSTOMER_COLUMNS " FROM customer_external_ids e JOIN customers c "
                "ON c.id = e.customer_id WHERE e.source = $1 AND e.external_id = $2");
static crm_stmt get_by_external_id_ext =
    CRM_STMT_RO("customer_get_by_external_id_ext",
                "SELECT " CRM_CUSTOMER_COLUMNS ", " CRM_CUSTOMER_EXTERNAL_IDS
                " FROM customer_external_ids e JOIN customers c "
                "ON c.id = e.customer_id WHERE e.source = $1 AND e.external_id = $2");
/* FOR NO KEY UPDATE: a write never changes the id, so the lock lets the
 * key checks of rows that reference the customer through (a touchpoint, a
 * segment's membership) while excluding every other writer of it. FOR
 * UPDATE made those checks wait, and a segment's build holding its lock
 * then deadlocked with a patch waiting for that segment. */
static crm_stmt lock_customer =
    CRM_STMT("customer_lock",
             "SELECT " CRM_CUSTOMER_COLUMNS " FROM customers c WHERE c.id = $1 FOR NO KEY UPDATE");

#define VALUE_COLUMNS_C                                                                            \
    "c.kind, c.first_name, c.last_name, c.display_name, c.company, c.email, c.email_normalized, "  \
    "c.phone, c.phone_normalized, c.country, c.region, c.city, c.postal_code, c.street, "          \
    "c.latitude, c.longitude, c.birth_date, c.preferred_language, c.lifecycle_stage, c.tags, "     \
    "c.attributes"

static crm_stmt insert_customer = CRM_STMT(
    "customer_insert", "INSERT INTO customers AS c (" CRM_CUSTOMER_VALUE_COLUMNS
                       ") VALUES (" CRM_CUSTOMER_VALUE_PARAMS ") RETURNING " CRM_CUSTOMER_COLUMNS);
/* Writes only when something differs, so a patch that changes nothing
 * keeps the version (and returns no row). */
static crm_stmt update_customer =
    CRM_STMT("customer_update",
             "UPDATE customers c SET (" CRM_CUSTOMER_VALUE_COLUMNS ") = (" CRM_CUSTOMER_VALUE_PARAMS
             "), version = c.version + 1, "
             "updated_at = now() WHERE c.id = $22 AND (" VALUE_COLUMNS_C
             ") IS DISTINCT FROM (" CRM_CUSTOMER_VALUE_PARAMS ") RETURNING " CRM_CUSTOMER_COLUMNS);
static crm_stmt delete_customer = CRM_STMT(
    "customer_delete", "UPDATE customers c SET status = 'deleted', version = c.version + 1, "
                       "updated_at = now() WHERE c.id = $1");
static crm_stmt insert_audit =
    CRM_STMT("customer_audit_insert",
             "INSERT INTO customer_audit (customer_id, api_key_id, action, changes) "
             "VALUES ($1, $2, $3, $4::jsonb)");
static crm_stmt insert_external_id = CRM_STMT(
    "customer_external_id_insert",
    "INSERT INTO customer_external_ids (source, external_id, customer_id) VALUES ($1, $2, $3) "
    "ON CONFLICT (source, external_id) DO NOTHING RETURNING 1");
static crm_stmt find_external_id =
    CRM_STMT("customer_external_id_find", "SELECT customer_id FROM customer_external_ids "
                                          "WHERE source = $1 AND external_id = $2");

/* ---- the representation ------------------------------------------------------ */

json_t *crm_json_load_stored(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    /* jsonb prints 1e300 as 301 digits, which no int64 holds. */
    if (v == NULL)
        v = json_loads(text, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
    return v;
}

static void write_text(crm_jbuf *b, const PGresult *res, int r, int c)
{
    if (PQgetisnull(res, r, c))
        crm_jbuf_null(b);
    else
        crm_jbuf_string(b, PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
}

/* A column PostgreSQL printed as JSON (or as an integer): copied as it is. */
static void write_json_column(crm_jbuf *b, const PGresult *res, int r, int c, const char *empty)
{
    if (PQgetisnull(res, r, c))
        crm_jbuf_raw(b, empty, strlen(empty));
    else
        crm_jbuf_raw(b, PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
}

/* A text[] column as PostgreSQL prints it ({a,"b c","d\\"e"}), as a JSON
 * array of strings. An element is quoted when it holds a space, a comma, a
 * brace, a quote or a backslash (escaped with a backslash inside), or is
 * empty or NULL; an unquoted NULL is SQL NULL. */
static void write_text_array(crm_jbuf *b, const PGresult *res, int r, int c)
{
    crm_jbuf_begin_array(b);
    const char *p = PQgetisnull(res, r, c) ? "{}" : PQgetvalue(res, r, c);
    size_t cap = strlen(p) + 1;
    char *element = malloc(cap);
    if (element == NULL || *p++ != '{') {
        free(element);
        crm_jbuf_end_array(b);
        return;
    }
    while (*p != '\0' && *p != '}') {
        size_t n = 0;
        bool quoted = *p == '"';
        if (quoted) {
            for (p++; *p != '\0' && *p != '"'; p++) {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                element[n++] = *p;
            }
            if (*p == '"')
                p++;
        } else {
            while (*p != '\0' && *p != ',' && *p != '}')
                element[n++] = *p++;
        }
        if (!quoted && n == 4 && memcmp(element, "NULL", 4) == 0)
            crm_jbuf_null(b);
        else
            crm_jbuf_string(b, element, n);
        if (*p == ',')
            p++;
    }
    free(element);
    crm_jbuf_end_array(b);
}

void crm_customer_write_at(crm_jbuf *b, const PGresult *res, int r, int c0, bool external_ids)
{
    static const char *const names[] = {"first_name", "last_name", "display_name",
                                        "company",    "email",     "phone"};
    static const char *const address[] = {"country", "region", "city", "postal_code", "street"};
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "id");
    write_json_column(b, res, r, c0 + CRM_COL_ID, "null");
    crm_jbuf_key(b, "version");
    write_json_column(b, res, r, c0 + CRM_COL_VERSION, "null");
    crm_jbuf_key(b, "kind");
    write_text(b, res, r, c0 + CRM_COL_KIND);
    for (int i = 0; i < 6; i++) {
        crm_jbuf_key(b, names[i]);
        write_text(b, res, r, c0 + CRM_COL_FIRST_NAME + i);
    }
    crm_jbuf_key(b, "address");
    crm_jbuf_begin_object(b);
    for (int i = 0; i < 5; i++) {
        crm_jbuf_key(b, address[i]);
        write_text(b, res, r, c0 + CRM_COL_COUNTRY + i);
    }
    crm_jbuf_end_object(b);
    crm_jbuf_key(b, "location");
    if (PQgetisnull(res, r, c0 + CRM_COL_LATITUDE) || PQgetisnull(res, r, c0 + CRM_COL_LONGITUDE)) {
        crm_jbuf_null(b);
    } else {
        crm_jbuf_begin_object(b);
        crm_jbuf_key(b, "latitude");
        crm_jbuf_real(b, strtod(PQgetvalue(res, r, c0 + CRM_COL_LATITUDE), NULL));
        crm_jbuf_key(b, "longitude");
        crm_jbuf_real(b, strtod(PQgetvalue(res, r, c0 + CRM_COL_LONGITUDE), NULL));
        crm_jbuf_end_object(b);
    }
    crm_jbuf_key(b, "birth_date");
    write_text(b, res, r, c0 + CRM_COL_BIRTH_DATE);
    crm_jbuf_key(b, "preferred_language");
    write_text(b, res, r, c0 + CRM_COL_LANGUAGE);
    crm_jbuf_key(b, "lifecycle_stage");
    write_text(b, res, r, c0 + CRM_COL_LIFECYCLE_STAGE);
    crm_jbuf_key(b, "tags");
    write_text_array(b, res, r, c0 + CRM_COL_TAGS);
    crm_jbuf_key(b, "attributes");
    write_json_column(b, res, r, c0 + CRM_COL_ATTRIBUTES, "{}");
    if (external_ids) {
        crm_jbuf_key(b, "external_ids");
        write_json_column(b, res, r, c0 + CRM_COL_EXTRA, "[]");
    }
    crm_jbuf_key(b, "created_at");
    crm_jbuf_pg_timestamp(b, PQgetvalue(res, r, c0 + CRM_COL_CREATED_AT));
    crm_jbuf_key(b, "updated_at");
    crm_jbuf_pg_timestamp(b, PQgetvalue(res, r, c0 + CRM_COL_UPDATED_AT));
    crm_jbuf_end_object(b);
}

void crm_customer_write(crm_jbuf *b, const PGresult *res, int r, bool external_ids)
{
    crm_customer_write_at(b, res, r, 0, external_ids);
}

json_t *crm_customer_from_row(const PGresult *res, int r, bool external_ids)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_customer_write(&b, res, r, external_ids);
    char *text = crm_jbuf_take(&b, NULL);
    json_t *doc = text ? crm_json_load_stored(text) : NULL;
    free(text);
    if (doc != NULL) { /* exact even when a huge number made every integer a real */
        json_object_set_new(doc, "id", json_integer(atoll(PQgetvalue(res, r, CRM_COL_ID))));
        json_object_set_new(doc, "version",
                            json_integer(atoll(PQgetvalue(res, r, CRM_COL_VERSION))));
    }
    return doc;
}

/* The members a client may write: a deep copy of rep without the others. */
json_t *crm_customer_writable_part(json_t *rep)
{
    json_t *w = json_deep_copy(rep);
    static const char *const drop[] = {"id", "version", "created_at", "updated_at", "external_ids"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        json_object_del(w, drop[i]);
    return w;
}

static bool empty_value(json_t *v)
{
    if (json_is_null(v))
        return true;
    if (json_is_array(v))
        return json_array_size(v) == 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m) if (!json_is_null(m)) return false;
        return true;
    }
    return false;
}

/* {"field": {"from": old, "to": new}} for every member that differs; with
 * before NULL (a create), every member that is not empty. */
static json_t *changes_between(json_t *before, json_t *after)
{
    json_t *changes = json_object();
    const char *key;
    json_t *to;
    json_object_foreach(after, key, to)
    {
        json_t *from = before ? json_object_get(before, key) : NULL;
        if (before == NULL ? empty_value(to) : json_equal(from, to))
            continue;
        json_object_set_new(changes, key,
                            json_pack("{s:O, s:O}", "from", from ? from : json_null(), "to", to));
    }
    return changes;
}

/* ---- If-Match ------------------------------------------------------------------- */

bool crm_etag_matches(const char *if_match, long long version)
{
    if (if_match == NULL)
        return true;
    char want[24];
    int wlen = snprintf(want, sizeof want, "\"%lld\"", version);
    const char *p = if_match;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return false;
        size_t n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if ((n == 1 && *p == '*') || (n == (size_t)wlen && strncmp(p, want, n) == 0))
            return true;
        p += n;
        while (*p != '\0' && *p != ',')
            p++;
    }
}

/* True when s holds one entity tag (RFC 9110 8.8.3: [W/] DQUOTE *etagc
 * DQUOTE) at its start; *end is set past it. */
static bool entity_tag(const char *s, const char **end)
{
    const unsigned char *p = (const unsigned char *)s;
    if (p[0] == 'W' && p[1] == '/')
        p += 2;
    if (*p++ != '"')
        return false;
    while (*p == 0x21 || (*p >= 0x23 && *p != 0x7f))
        p++;
    if (*p++ != '"')
        return false;
    *end = (const char *)p;
    return true;
}

bool crm_if_match_valid(const char *if_match, crm_error *err)
{
    if (if_match == NULL)
        return true;
    const char *p = if_match + strspn(if_match, " \t");
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 1 && p[0] == '*')
        return true;
    int tags = 0;
    for (;;) {
        p += strspn(p, " \t,");
        if (*p == '\0')
            break;
        if (!entity_tag(p, &p))
            break;
        tags++;
        p += strspn(p, " \t");
        if (*p != ',' && *p != '\0')
            break;
    }
    if (*p == '\0' && tags > 0)
        return true;
    /* The value is not repeated: it is the client's bytes (review S9). */
    return crm_error_set(err, CRM_E_MALFORMED,
                         "If-Match must be * or entity tags, which are quoted: send the ETag "
                         "header's value as it came, e.g. If-Match: \"3\"");
}

/* ---- writes --------------------------------------------------------------------- */

void crm_customer_created_free(crm_customer_created *c)
{
    free(c->body);
    free(c->location);
    c->body = c->location = NULL;
}

static bool exec_ok(crm_conn *c, crm_stmt *stmt, int n, const char *const *params, crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, n, params, err);
    if (res == NULL)
        return false;
    PQclear(res);
    return true;
}

/* Records one write of customer id in the audit trail; consumes changes. */
static bool audit(crm_conn *c, long long id, const crm_write_ctx *ctx, const char *action,
                  json_t *changes, crm_error *err)
{
    char *text = json_dumps(changes, JSON_COMPACT);
    json_decref(changes);
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    char idbuf[24], keybuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(keybuf, sizeof keybuf, "%lld", ctx ? ctx->api_key_id : 0);
    const char *params[] = {idbuf, ctx && ctx->api_key_id > 0 ? keybuf : NULL, action, text};
    bool ok = exec_ok(c, &insert_audit, 4, params, err);
    free(text);
    return ok;
}

/* Adds a 409 field error that names the customer holding a unique value. */
static void add_holder_error(crm_error *err, const char *field, long long holder)
{
    char msg[96];
    snprintf(msg, sizeof msg, "already held by customer %lld", holder);
    if (err->errors == NULL)
        err->errors = json_array();
    json_array_append_new(err->errors, json_pack("{s:s, s:s, s:I}", "field", field, "message", msg,
                                                 "customer_id", (json_int_t)holder));
}

/* Attaches (source, external_id) to customer id. When another customer holds
 * it, fails with CRM_E_CONFLICT naming field and that customer; sets *lost
 * (when lost is not NULL) instead of failing if nobody visible holds it yet
 * (a concurrent transaction that since rolled back or is retrying). */
static bool attach_external_id(crm_conn *c, long long id, const char *source,
                               const char *external_id, const char *field, bool *lost,
                               crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {source, external_id, idbuf};
    PGresult *res = crm_db_exec(c, &insert_external_id, 3, params, err);
    if (res == NULL)
        return false;
    bool inserted = PQntuples(res) == 1;
    PQclear(res);
    if (inserted)
        return true;
    if (lost != NULL) {
        *lost = true;
        return false;
    }
    res = crm_db_exec(c, &find_external_id, 2, params, err);
    if (res == NULL)
        return false;
    long long holder = PQntuples(res) == 1 ? atoll(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    add_holder_error(err, field, holder);
    return crm_error_set(err, CRM_E_CONFLICT,
                         "an external id in the body already belongs to customer %lld", holder);
}

/* Inserts the customer of vals and its create audit row (with
 * extra_changes merged in, consumed). Returns the representation. */
static json_t *insert_in_tx(crm_conn *c, const crm_customer_values *vals, const crm_write_ctx *ctx,
                            json_t *extra_changes, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &insert_customer, CRM_CUSTOMER_NCOLS, vals->v, err);
    if (res == NULL) {
        json_decref(extra_changes);
        return NULL;
    }
    json_t *rep = crm_customer_from_row(res, 0, false);
    PQclear(res);
    long long id = json_integer_value(json_object_get(rep, "id"));
    json_t *w = crm_customer_writable_part(rep);
    json_t *changes = changes_between(NULL, w);
    json_decref(w);
    if (extra_changes != NULL)
        json_object_update(changes, extra_changes);
    json_decref(extra_changes);
    if (!audit(c, id, ctx, "create", changes, err)) {
        json_decref(rep);
        return NULL;
    }
    return rep;
}

/* Checks body as a whole document: NUL characters anywhere, then the rules. */
static bool validate_document(json_t *body, unsigned flags, crm_customer_values *vals,
                              crm_error *err)
{
    memset(vals, 0, sizeof *vals);
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    bool clean = crm_json_check_no_nul(body, "", err);
    bool valid = crm_customer_validate(body, flags, vals, err);
    if (valid && !clean) {
        crm_customer_values_free(vals);
        return crm_error_set(err, CRM_E_INVALID, "the customer is not valid");
    }
    return valid;
}

/* Every live segment that reads the customer's columns, for customer id,
 * in the write's transaction. */
static bool refresh_segments(crm_conn *c, long long id, crm_error *err)
{
    char ids[32];
    snprintf(ids, sizeof ids, "{%lld}", id);
    return crm_segments_refresh(c, ids, CRM_RULE_READS_CUSTOMER, "customer", NULL, err);
}

static bool create_in_tx(crm_conn *c, json_t *body, const crm_customer_values *vals,
                         const crm_write_ctx *ctx, crm_customer_created *out, crm_error *err)
{
    unsigned char hash[CRM_IDEMPOTENCY_HASH_BYTES];
    const char *idem = ctx ? ctx->idempotency_key : NULL;
    if (idem != NULL) {
        crm_idem_response stored;
        bool replay = false;
        char *canonical = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
        if (canonical == NULL)
            return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        crm_idempotency_hash("POST", "/v1/customers", canonical, strlen(canonical), hash);
        free(canonical);
        if (!crm_idempotency_claim(c, ctx->api_key_id, idem, hash, &stored, &replay, err))
            return false;
        if (replay) {
            json_t *doc = json_loads(stored.body ? stored.body : "", 0, NULL);
            out->version = (int)json_integer_value(json_object_get(doc, "version"));
            json_decref(doc);
            out->body = stored.body;
            out->location = stored.location;
            out->replayed = true;
            return true;
        }
    }
    json_t *ids = vals->external_ids;
    json_t *extra = json_array_size(ids) > 0
                        ? json_pack("{s:{s:n, s:O}}", "external_ids", "from", "to", ids)
                        : NULL;
    json_t *rep = insert_in_tx(c, vals, ctx, extra, err);
    if (rep == NULL)
        return false;
    long long id = json_integer_value(json_object_get(rep, "id"));
    size_t i;
    json_t *item;
    json_array_foreach(ids, i, item)
    {
        char field[48];
        snprintf(field, sizeof field, "/external_ids/%zu", i);
        if (!attach_external_id(c, id, json_string_value(json_object_get(item, "source")),
                                json_string_value(json_object_get(item, "id")), field, NULL, err)) {
            json_decref(rep);
            return false;
        }
    }
    if (!refresh_segments(c, id, err)) {
        json_decref(rep);
        return false;
    }
    out->version = (int)json_integer_value(json_object_get(rep, "version"));
    out->body = crm_json_text(rep, NULL);
    json_decref(rep);
    if (out->body == NULL || asprintf(&out->location, "/v1/customers/%lld", id) < 0) {
        out->location = NULL;
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    if (idem != NULL) {
        crm_idem_response resp = {201, out->location, out->body, id};
        if (!crm_idempotency_store(c, ctx->api_key_id, idem, &resp, err))
            return false;
    }
    return true;
}

bool crm_customer_create(json_t *body, const crm_write_ctx *ctx, crm_customer_created *out,
                         crm_error *err)
{
    memset(out, 0, sizeof *out);
    crm_customer_values vals;
    if (!validate_document(body, CRM_CUSTOMER_ALLOW_EXTERNAL_IDS, &vals, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    bool ok = c != NULL && crm_db_begin(c, err) && create_in_tx(c, body, &vals, ctx, out, err) &&
              crm_db_commit(c, err);
    if (!ok) {
        if (c != NULL)
            crm_db_rollback(c);
        crm_customer_created_free(out);
    }
    crm_db_release(c);
    crm_customer_values_free(&vals);
    return ok;
}

/* Locks the live customer id names (following merges) and returns its row
 * (the caller PQclears it); CRM_E_NOT_FOUND when there is none. */
static PGresult *lock_live(crm_conn *c, long long id, crm_error *err)
{
    for (int hop = 0; hop <= MAX_MERGE_HOPS; hop++) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        const char *params[] = {idbuf};
        PGresult *res = crm_db_exec(c, &lock_customer, 1, params, err);
        if (res == NULL)
            return NULL;
        if (PQntuples(res) != 1) {
            PQclear(res);
            break;
        }
        const char *status = PQgetvalue(res, 0, CRM_COL_STATUS);
        if (strcmp(status, "active") == 0)
            return res;
        bool merged = strcmp(status, "merged") == 0 && !PQgetisnull(res, 0, CRM_COL_MERGED_INTO);
        long long next = merged ? atoll(PQgetvalue(res, 0, CRM_COL_MERGED_INTO)) : 0;
        PQclear(res);
        if (!merged)
            break;
        id = next;
    }
    crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    return NULL;
}

static bool check_version(const char *if_match, int version, crm_error *err)
{
    if (crm_etag_matches(if_match, version))
        return true;
    return crm_error_set(err, CRM_E_PRECONDITION,
                         "the customer has changed: its ETag is now \"%d\"", version);
}

/* Applies RFC 7396 patch to target (consumed); returns the result. */
static json_t *merge_patch(json_t *target, json_t *patch)
{
    if (!json_is_object(patch)) {
        json_decref(target);
        return json_deep_copy(patch);
    }
    if (!json_is_object(target)) {
        json_decref(target);
        target = json_object();
    }
    const char *key;
    json_t *value;
    json_object_foreach(patch, key, value)
    {
        if (json_is_null(value)) {
            json_object_del(target, key);
            continue;
        }
        json_t *current = json_object_get(target, key);
        json_object_set_new(target, key, merge_patch(json_incref(current), value));
    }
    return target;
}

/* Checks a merge patch before it is applied: it must be an object (false
 * otherwise); *clean tells whether it is free of NUL characters (each one
 * is reported, and validation then goes on to report the rest). */
static bool check_patch(json_t *patch, bool *clean, crm_error *err)
{
    if (!json_is_object(patch))
        return crm_error_set(err, CRM_E_INVALID,
                             "a merge patch of a customer must be a JSON "
                             "object");
    *clean = crm_json_check_no_nul(patch, "", err);
    return true;
}

/* The patch of customer id inside a transaction; see crm_customer_patch. */
static json_t *patch_in_tx(crm_conn *c, long long id, json_t *patch, bool clean,
                           const char *if_match, const crm_write_ctx *ctx, crm_error *err)
{
    PGresult *res = lock_live(c, id, err);
    if (res == NULL)
        return NULL;
    json_t *old = crm_customer_from_row(res, 0, false);
    PQclear(res);
    int version = (int)json_integer_value(json_object_get(old, "version"));
    if (!check_version(if_match, version, err)) {
        json_decref(old);
        return NULL;
    }
    json_t *old_w = crm_customer_writable_part(old);
    json_t *merged = merge_patch(json_deep_copy(old_w), patch);
    crm_customer_values vals;
    json_t *rep = NULL;
    bool valid = crm_customer_validate(merged, 0, &vals, err);
    if (valid && !clean) {
        crm_customer_values_free(&vals);
        valid = crm_error_set(err, CRM_E_INVALID, "the customer is not valid");
    }
    if (valid) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", json_integer_value(json_object_get(old, "id")));
        const char *params[CRM_CUSTOMER_NCOLS + 1];
        memcpy(params, vals.v, sizeof vals.v);
        params[CRM_CUSTOMER_NCOLS] = idbuf;
        res = crm_db_exec(c, &update_customer, CRM_CUSTOMER_NCOLS + 1, params, err);
        crm_customer_values_free(&vals);
        if (res != NULL && PQntuples(res) == 0) {
            rep = json_incref(old); /* nothing changed */
        } else if (res != NULL) {
            rep = crm_customer_from_row(res, 0, false);
            json_t *new_w = crm_customer_writable_part(rep);
            json_t *changes = changes_between(old_w, new_w);
            json_decref(new_w);
            if (!audit(c, json_integer_value(json_object_get(rep, "id")), ctx, "update", changes,
                       err)) {
                json_decref(rep);
                rep = NULL;
            }
        }
        PQclear(res);
    }
    json_decref(merged);
    json_decref(old_w);
    json_decref(old);
    return rep;
}

json_t *crm_customer_patch(long long id, json_t *patch, const char *if_match,
                           const crm_write_ctx *ctx, crm_error *err)
{
    bool clean = false;
    if (!crm_if_match_valid(if_match, err) || !check_patch(patch, &clean, err))
        return NULL;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    json_t *rep = NULL;
    if (crm_db_begin(c, err)) {
        rep = patch_in_tx(c, id, patch, clean, if_match, ctx, err);
        if (rep != NULL &&
            (!refresh_segments(c, json_integer_value(json_object_get(rep, "id")), err) ||
             !crm_db_commit(c, err))) {
            json_decref(rep);
            rep = NULL;
        }
    }
    if (rep == NULL)
        crm_db_rollback(c);
    crm_db_release(c);
    return rep;
}

static bool delete_in_tx(crm_conn *c, long long id, const char *if_match, const crm_write_ctx *ctx,
                         crm_error *err)
{
    PGresult *res = lock_live(c, id, err);
    if (res == NULL)
        return false;
    int version = atoi(PQgetvalue(res, 0, CRM_COL_VERSION));
    long long live_id = atoll(PQgetvalue(res, 0, CRM_COL_ID));
    PQclear(res);
    if (!check_version(if_match, version, err))
        return false;
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", live_id);
    const char *params[] = {idbuf};
    if (!exec_ok(c, &delete_customer, 1, params, err))
        return false;
    json_t *changes = json_pack("{s:{s:s, s:s}}", "status", "from", "active", "to", "deleted");
    return audit(c, live_id, ctx, "delete", changes, err);
}

bool crm_customer_delete(long long id, const char *if_match, const crm_write_ctx *ctx,
                         crm_error *err)
{
    if (!crm_if_match_valid(if_match, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return false;
    bool ok = crm_db_begin(c, err) && delete_in_tx(c, id, if_match, ctx, err) &&
              refresh_segments(c, id, err) && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    crm_db_release(c);
    return ok;
}

/* ---- upsert by external id --------------------------------------------------------- */

bool crm_external_id_valid(const char *source, const char *external_id, crm_error *err)
{
    size_t s = source ? crm_utf8_chars(source, strlen(source)) : 0;
    size_t e = external_id ? crm_utf8_chars(external_id, strlen(external_id)) : 0;
    if (s < 1 || s > CRM_EXTERNAL_SOURCE_MAX)
        crm_error_add_field(err, "source", "must be 1 to 100 characters");
    if (e < 1 || e > CRM_EXTERNAL_ID_MAX)
        crm_error_add_field(err, "external_id", "must be 1 to 500 characters");
    if (err->errors != NULL)
        return crm_error_set(err, CRM_E_INVALID, "invalid external id");
    return true;
}

/* One attempt of the upsert. Sets *retry when another request created the
 * same external id first (the caller starts over and finds it). */
static json_t *upsert_in_tx(crm_conn *c, const char *source, const char *external_id, json_t *body,
                            const char *if_match, const crm_write_ctx *ctx, bool *created,
                            bool *retry, crm_error *err)
{
    const char *params[] = {source, external_id};
    PGresult *res = crm_db_exec(c, &find_external_id, 2, params, err);
    if (res == NULL)
        return NULL;
    long long holder = PQntuples(res) == 1 ? atoll(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);

    if (holder != 0) {
        *created = false;
        bool clean = false;
        if (!check_patch(body, &clean, err))
            return NULL;
        json_t *rep = patch_in_tx(c, holder, body, clean, if_match, ctx, err);
        if (rep == NULL && err->code == CRM_E_NOT_FOUND) {
            crm_error_clear(err);
            add_holder_error(err, "external_id", holder);
            crm_error_set(err, CRM_E_CONFLICT,
                          "this external id belongs to customer %lld, which was deleted", holder);
        }
        return rep;
    }
    *created = true;
    if (if_match != NULL) {
        crm_error_set(err, CRM_E_PRECONDITION,
                      "If-Match was sent but no customer has this external id");
        return NULL;
    }
    crm_customer_values vals;
    if (!validate_document(body, 0, &vals, err))
        return NULL;
    json_t *extra = json_pack("{s:{s:n, s:[{s:s, s:s}]}}", "external_ids", "from", "to", "source",
                              source, "id", external_id);
    json_t *rep = insert_in_tx(c, &vals, ctx, extra, err);
    crm_customer_values_free(&vals);
    if (rep == NULL)
        return NULL;
    if (!attach_external_id(c, json_integer_value(json_object_get(rep, "id")), source, external_id,
                            "external_id", retry, err)) {
        json_decref(rep);
        return NULL;
    }
    return rep;
}

json_t *crm_customer_upsert_by_external_id(const char *source, const char *external_id,
                                           json_t *body, const char *if_match,
                                           const crm_write_ctx *ctx, bool *created, crm_error *err)
{
    if (!crm_external_id_valid(source, external_id, err) || !crm_if_match_valid(if_match, err))
        return NULL;
    for (int attempt = 0; attempt < UPSERT_ATTEMPTS; attempt++) {
        crm_conn *c = crm_db_acquire(err);
        if (c == NULL)
            return NULL;
        bool retry = false;
        json_t *rep = NULL;
        if (crm_db_begin(c, err)) {
            rep = upsert_in_tx(c, source, external_id, body, if_match, ctx, created, &retry, err);
            if (rep != NULL &&
                (!refresh_segments(c, json_integer_value(json_object_get(rep, "id")), err) ||
                 !crm_db_commit(c, err))) {
                json_decref(rep);
                rep = NULL;
            }
        }
        if (rep == NULL)
            crm_db_rollback(c);
        crm_db_release(c);
        if (!retry)
            return rep;
    }
    crm_error_set(err, CRM_E_CONFLICT, "this external id is being changed concurrently; retry");
    return NULL;
}

/* ---- reads ---------------------------------------------------------------------------- */

void crm_customer_get_query(crm_query *q, long long id, bool external_ids)
{
    crm_query_init(q, external_ids ? &get_customer_ext : &get_customer);
    crm_query_add_int(q, id);
}

void crm_customer_get_by_external_id_query(crm_query *q, const char *source,
                                           const char *external_id, bool external_ids)
{
    crm_query_init(q, external_ids ? &get_by_external_id_ext : &get_by_external_id);
    crm_query_add(q, source);
    crm_query_add(q, external_id);
}

json_t *crm_customer_get_decode(const PGresult *res, bool external_ids, long long *merged_into,
                                crm_error *err)
{
    *merged_into = 0;
    if (PQntuples(res) == 1) {
        const char *status = PQgetvalue(res, 0, CRM_COL_STATUS);
        if (strcmp(status, "active") == 0)
            return crm_customer_from_row(res, 0, external_ids);
        if (strcmp(status, "merged") == 0 && !PQgetisnull(res, 0, CRM_COL_MERGED_INTO)) {
            *merged_into = atoll(PQgetvalue(res, 0, CRM_COL_MERGED_INTO));
            return NULL;
        }
    }
    crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    return NULL;
}

char *crm_customer_get_render(const PGresult *res, bool external_ids, long long *merged_into,
                              long long *version, size_t *len, crm_error *err)
{
    *merged_into = 0;
    if (PQntuples(res) == 1) {
        const char *status = PQgetvalue(res, 0, CRM_COL_STATUS);
        if (strcmp(status, "active") == 0) {
            crm_jbuf b;
            crm_jbuf_init(&b);
            crm_customer_write(&b, res, 0, external_ids);
            *version = atoll(PQgetvalue(res, 0, CRM_COL_VERSION));
            char *text = crm_jbuf_take(&b, len);
            if (text == NULL)
                crm_error_set(err, CRM_E_INTERNAL, "out of memory");
            return text;
        }
        if (strcmp(status, "merged") == 0 && !PQgetisnull(res, 0, CRM_COL_MERGED_INTO)) {
            *merged_into = atoll(PQgetvalue(res, 0, CRM_COL_MERGED_INTO));
            return NULL;
        }
    }
    crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    return NULL;
}

json_t *crm_customer_get_on(crm_conn *c, long long id, bool external_ids, crm_error *err)
{
    for (int hop = 0; hop <= MAX_MERGE_HOPS; hop++) {
        crm_query q;
        crm_customer_get_query(&q, id, external_ids);
        PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
        if (res == NULL)
            return NULL;
        long long next = 0;
        json_t *rep = crm_customer_get_decode(res, external_ids, &next, err);
        PQclear(res);
        if (next == 0)
            return rep;
        id = next;
    }
    crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
    return NULL;
}

json_t *crm_customer_get(long long id, bool external_ids, crm_error *err)
{
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    json_t *rep = crm_customer_get_on(c, id, external_ids, err);
    crm_db_release(c);
    return rep;
}

/* ---- audit ------------------------------------------------------------------------------ */

/* The first page binds the largest id rather than testing for none: under
 * a generic plan "$2 = 0 OR ..." is a filter, and every page would read the
 * trail from its newest row down to the cursor; "x.id < $2" is an index
 * condition, so any page costs the same. */
static crm_stmt list_audit = CRM_STMT_PAGE(
    "customer_audit_list",
    "SELECT a.id, (extract(epoch FROM a.at) * 1000)::bigint, a.api_key_id, a.action, "
    "a.changes::text FROM customers c LEFT JOIN LATERAL (SELECT * FROM customer_audit x "
    "WHERE x.customer_id = c.id AND x.id < $2::bigint "
    "ORDER BY x.id DESC LIMIT $3) a ON true WHERE c.id = $1 ORDER BY a.id DESC");

void crm_customer_audit_query(crm_query *q, long long id, long long after_id, int limit)
{
    crm_query_init(q, &list_audit);
    crm_query_add_int(q, id);
    crm_query_add_int(q, after_id > 0 ? after_id : LLONG_MAX);
    crm_query_add_int(q, crm_page_fetch(limit)); /* one more: is there a next page? */
}

json_t *crm_customer_audit_decode(const PGresult *res, long long id, int limit,
                                  long long *next_after, crm_error *err)
{
    *next_after = 0;
    int n = PQntuples(res);
    if (n == 0) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with id %lld", id);
        return NULL;
    }
    if (limit < 1)
        limit = 1;
    json_t *arr = json_array();
    for (int r = 0; r < n && r < limit; r++) {
        if (PQgetisnull(res, r, 0))
            break; /* the customer has no (more) audit rows */
        json_t *changes = crm_json_load_stored(PQgetvalue(res, r, 4));
        json_array_append_new(
            arr,
            json_pack(
                "{s:I, s:o, s:o, s:s, s:o}", "id", (json_int_t)atoll(PQgetvalue(res, r, 0)), "at",
                crm_json_timestamp(atoll(PQgetvalue(res, r, 1))), "api_key_id",
                PQgetisnull(res, r, 2) ? json_null() : json_integer(atoll(PQgetvalue(res, r, 2))),
                "action", PQgetvalue(res, r, 3), "changes", changes ? changes : json_object()));
    }
    if (n > limit && !PQgetisnull(res, limit, 0))
        *next_after = atoll(PQgetvalue(res, limit - 1, 0));
    return arr;
}

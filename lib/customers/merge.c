/*
 * customers/merge.c — likely duplicates of a customer (one indexed
 * statement) and the merge of duplicates into a survivor (one
 * transaction). The rules are in customer_merge.h.
 */
#include "customer_merge.h"
#include "segment_store.h"
#include "customer_tables.h"
#include "consents.h"
#include "customers/internal.h"
#include "touchpoints.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- duplicates ------------------------------------------------------------------ */

/* The name and postal code keys of customer alias t (see customer_merge.h);
 * the postal key is the expression of the index of migration 0005. */
#define NAME_KEY(t)                                                                               \
    "lower(coalesce(nullif(btrim(concat_ws(' ', " t ".first_name, " t ".last_name)), ''), "       \
    t ".display_name, ''))"
#define POSTAL_KEY(t) "upper(replace(" t ".postal_code, ' ', ''))"


/* Row 0 is the resolved customer itself (grp 0; no row: none), then its
 * duplicates (grp 1) strongest first. Each match kind is found through an
 * index: e-mail and phone through those of 0002, names only among the
 * customers at the same postal code (index of 0005). Columns: the customer
 * columns, reasons (JSON array text), grp, strength, name similarity. */
static crm_stmt
    select_duplicates =
        CRM_STMT_PAGE(
            "customer_duplicates", CRM_SQL_RESOLVE_CUSTOMER
            ", "
            "me AS (SELECT c.id, c.email_normalized AS email, c.phone_normalized AS "
            "phone, " NAME_KEY("c") " AS name, " POSTAL_KEY(
                "c") " AS postal FROM customers c "
                     "  WHERE c.id = (SELECT id FROM target)), "
                     "cand AS ("
                     "  SELECT o.id, 1 AS kind, 4 AS weight, NULL::real AS sim FROM me JOIN "
                     "customers o"
                     "    ON o.email_normalized = me.email WHERE o.id <> me.id AND o.status = "
                     "'active'"
                     "  UNION ALL"
                     "  SELECT o.id, 2, 2, NULL::real FROM me JOIN customers o"
                     "    ON o.phone_normalized = me.phone WHERE o.id <> me.id AND o.status = "
                     "'active'"
                     "  UNION ALL"
                     "  SELECT o.id, 3, 1, similarity(" NAME_KEY(
                         "o") ", me.name) FROM me JOIN customers o"
                              "    ON " POSTAL_KEY(
                                  "o") " = me.postal AND o.postal_code IS NOT NULL"
                                       "    WHERE o.id <> me.id AND o.status = 'active' AND "
                                       "me.name <> ''"
                                       "    AND similarity(" NAME_KEY(
                                           "o") ", me.name) >= " CRM_DUPLICATE_NAME_SIMILARITY "), "
                                                "found AS ("
                                                "  SELECT id, json_agg(CASE kind WHEN 1 THEN "
                                                "'email' WHEN 2 THEN 'phone'"
                                                "    ELSE 'name_and_postal_code' END ORDER BY "
                                                "kind)::text AS reasons,"
                                                "    sum(weight) AS strength, max(sim) AS sim"
                                                "  FROM cand GROUP BY id ORDER BY strength DESC, "
                                                "sim DESC NULLS LAST, id LIMIT $2) "
                                                "SELECT " CRM_CUSTOMER_COLUMNS
                                                ", NULL::text, 0 AS grp, 0::bigint AS strength, "
                                                "NULL::real AS sim"
                                                " FROM customers c WHERE c.id = (SELECT id FROM "
                                                "me) "
                                                "UNION ALL "
                                                "SELECT " CRM_CUSTOMER_COLUMNS
                                                ", f.reasons, 1, f.strength, f.sim"
                                                " FROM found f JOIN customers c ON c.id = f.id "
                                                "ORDER BY 27, 28 DESC, 29 DESC NULLS LAST, 1");

void crm_customer_duplicates_query(crm_query *q, long long id)
{
    crm_query_init(q, &select_duplicates);
    crm_query_add_int(q, id);
    crm_query_add_int(q, CRM_DUPLICATES_MAX);
}

json_t *crm_customer_duplicates_decode(const PGresult *res, long long id, crm_error *err)
{
    int n = PQntuples(res);
    if (n == 0) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with id %lld", id);
        return NULL;
    }
    json_t *data = json_array();
    for (int r = 1; r < n; r++) {
        json_t *reasons = crm_json_load_stored(PQgetvalue(res, r, CRM_COL_EXTRA));
        json_array_append_new(data, json_pack("{s:o, s:o}", "customer",
                                              crm_customer_from_row(res, r, false), "reasons",
                                              reasons ? reasons : json_array()));
    }
    return json_pack("{s:I, s:o}", "customer_id",
                     (json_int_t)atoll(PQgetvalue(res, 0, CRM_COL_ID)), "data", data);
}

json_t *crm_customer_duplicates(long long id, crm_error *err)
{
    crm_query q;
    crm_customer_duplicates_query(&q, id);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    json_t *out = crm_customer_duplicates_decode(res, id, err);
    PQclear(res);
    return out;
}

/* ---- merge: statements -------------------------------------------------------------- */


/* Every party of a merge ($1: all their ids), locked in id order: the
 * LockRows step runs above the sort, so two merges of overlapping sets take
 * their locks in the same order and the second waits for the first. */
static crm_stmt lock_parties =
    CRM_STMT("customer_merge_lock", "SELECT " CRM_CUSTOMER_COLUMNS " FROM customers c "
                                    "WHERE c.id = ANY($1::bigint[]) ORDER BY c.id FOR UPDATE");

/* The survivor's new values; a merge always counts as a change. */
static crm_stmt update_survivor = CRM_STMT(
    "customer_merge_update_survivor",
    "UPDATE customers c SET (" CRM_CUSTOMER_VALUE_COLUMNS ") = (" CRM_CUSTOMER_VALUE_PARAMS
    "), version = c.version + 1, "
    "updated_at = now() WHERE c.id = $22");

/* $1 survivor, $2 merged ids, $3 api key id: each merged customer becomes an
 * alias of the survivor, with its audit row. */
static crm_stmt mark_merged = CRM_STMT(
    "customer_merge_mark_merged",
    "WITH m AS (UPDATE customers SET status = 'merged', merged_into = $1, version = version + 1,"
    "  updated_at = now() WHERE id = ANY($2::bigint[]) RETURNING id) "
    "INSERT INTO customer_audit (customer_id, api_key_id, action, changes) "
    "SELECT m.id, $3, 'merge', jsonb_build_object("
    "  'status', jsonb_build_object('from', 'active', 'to', 'merged'),"
    "  'merged_into', jsonb_build_object('from', NULL, 'to', $1::bigint)) FROM m");

/* $1 survivor, $2 merged ids, $3 api key id: every customer that was merged
 * into one of the merged customers before (an older alias) now names the
 * survivor itself, with an audit row. So every id is at most one hop from
 * its survivor, however many merges follow one another (readers follow a
 * bounded number of hops). */
static crm_stmt compress_aliases = CRM_STMT(
    "customer_merge_compress_aliases",
    "WITH moved AS (UPDATE customers c SET merged_into = $1 FROM customers old"
    "  WHERE old.id = c.id AND c.merged_into = ANY($2::bigint[])"
    "  RETURNING c.id, old.merged_into AS was) "
    "INSERT INTO customer_audit (customer_id, api_key_id, action, changes) "
    "SELECT id, $3, 'merge', jsonb_build_object("
    "  'merged_into', jsonb_build_object('from', was, 'to', $1::bigint)) FROM moved");

static crm_stmt insert_audit = CRM_STMT(
    "customer_merge_audit", "INSERT INTO customer_audit (customer_id, api_key_id, action, changes) "
                            "VALUES ($1, $2, 'merge', $3::jsonb)");

static crm_stmt select_result = CRM_STMT(
    "customer_merge_result", "SELECT " CRM_CUSTOMER_COLUMNS ", " CRM_CUSTOMER_EXTERNAL_IDS
                             " FROM customers c WHERE c.id = $1");

/* ---- merge: the request ---------------------------------------------------------------- */

typedef struct merge_request {
    long long survivor;
    long long ids[CRM_MERGE_MAX_IDS];
    size_t n;
    bool dry_run;
    char survivor_text[24];
    char merged_array[CRM_MERGE_MAX_IDS * 21 + 3]; /* "{1,2,...}" */
    char all_array[(CRM_MERGE_MAX_IDS + 1) * 21 + 3];
    char key_text[24];
    const char *key; /* key_text, or NULL (SQL NULL) when there is no API key */
} merge_request;

static void field_error_at(crm_error *err, size_t i, const char *message)
{
    char field[48];
    snprintf(field, sizeof field, "/merge_ids/%zu", i);
    crm_error_add_field(err, field, message);
}

/* Checks the body's shape and fills m; CRM_E_INVALID naming every fault. */
static bool parse_body(json_t *body, merge_request *m, crm_error *err)
{
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    const char *key;
    json_t *value;
    json_object_foreach(body, key, value) {
        if (strcmp(key, "merge_ids") != 0 && strcmp(key, "dry_run") != 0) {
            char field[CRM_JSON_POINTER_MAX];
            crm_json_pointer_append(field, sizeof field, "", key);
            crm_error_add_field(err, field, "unknown field");
        }
    }
    json_t *dry = json_object_get(body, "dry_run");
    if (dry != NULL && !json_is_boolean(dry))
        crm_error_add_field(err, "/dry_run", "must be true or false");
    m->dry_run = json_is_true(dry);
    json_t *ids = json_object_get(body, "merge_ids");
    if (!json_is_array(ids) || json_array_size(ids) < 1 ||
        json_array_size(ids) > CRM_MERGE_MAX_IDS) {
        crm_error_add_field(err, "/merge_ids", "required, an array of 1 to 20 customer ids");
    } else {
        size_t i;
        json_array_foreach(ids, i, value) {
            long long id = json_is_integer(value) ? (long long)json_integer_value(value) : 0;
            if (id < 1) {
                field_error_at(err, i, "must be a customer id (a positive integer)");
                continue;
            }
            if (id == m->survivor) {
                field_error_at(err, i, "is the survivor itself: a customer cannot be merged "
                                       "into itself");
                continue;
            }
            for (size_t j = 0; j < i; j++) {
                if (json_integer_value(json_array_get(ids, j)) == id) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "is listed twice (also at /merge_ids/%zu)", j);
                    field_error_at(err, i, msg);
                    break;
                }
            }
            m->ids[m->n++] = id;
        }
    }
    if (err->errors != NULL)
        return crm_error_set(err, CRM_E_INVALID, "invalid merge request");
    return true;
}

/* Formats the id arrays and key of m as SQL parameters. */
static void format_params(merge_request *m, const crm_write_ctx *ctx)
{
    snprintf(m->survivor_text, sizeof m->survivor_text, "%lld", m->survivor);
    size_t used = (size_t)snprintf(m->all_array, sizeof m->all_array, "{%lld", m->survivor);
    size_t mused = (size_t)snprintf(m->merged_array, sizeof m->merged_array, "{");
    for (size_t i = 0; i < m->n; i++) {
        used += (size_t)snprintf(m->all_array + used, sizeof m->all_array - used, ",%lld",
                                 m->ids[i]);
        mused += (size_t)snprintf(m->merged_array + mused, sizeof m->merged_array - mused,
                                  "%s%lld", i ? "," : "", m->ids[i]);
    }
    snprintf(m->all_array + used, sizeof m->all_array - used, "}");
    snprintf(m->merged_array + mused, sizeof m->merged_array - mused, "}");
    long long key = ctx ? ctx->api_key_id : 0;
    snprintf(m->key_text, sizeof m->key_text, "%lld", key);
    m->key = key > 0 ? m->key_text : NULL;
}

/* ---- merge: checking the parties ------------------------------------------------------- */

/* The row of id in the locked parties, or -1. */
static int row_of(const PGresult *res, long long id)
{
    for (int r = 0; r < PQntuples(res); r++)
        if (atoll(PQgetvalue(res, r, CRM_COL_ID)) == id)
            return r;
    return -1;
}

/* Why a locked row cannot take part, or NULL when it is active. */
static const char *inactive_reason(const PGresult *res, int r, char *buf, size_t size)
{
    const char *status = PQgetvalue(res, r, CRM_COL_STATUS);
    if (strcmp(status, "active") == 0)
        return NULL;
    if (strcmp(status, "merged") == 0 && !PQgetisnull(res, r, CRM_COL_MERGED_INTO))
        snprintf(buf, size, "was already merged into customer %s",
                 PQgetvalue(res, r, CRM_COL_MERGED_INTO));
    else
        snprintf(buf, size, "is %s, not active", status);
    return buf;
}

/* Checks that every party exists and is active (err names each one that is
 * not): CRM_E_NOT_FOUND for an unknown survivor, CRM_E_INVALID when a listed
 * id is unknown, else CRM_E_CONFLICT when a party is not active. */
static bool check_parties(const PGresult *res, const merge_request *m, crm_error *err)
{
    char why[96];
    int s = row_of(res, m->survivor);
    if (s < 0)
        return crm_error_set(err, CRM_E_NOT_FOUND, "no customer with id %lld", m->survivor);
    bool unknown = false;
    for (size_t i = 0; i < m->n; i++) {
        if (row_of(res, m->ids[i]) < 0) {
            field_error_at(err, i, "no customer with this id");
            unknown = true;
        }
    }
    if (unknown)
        return crm_error_set(err, CRM_E_INVALID, "a customer to merge does not exist");
    if (inactive_reason(res, s, why, sizeof why) != NULL)
        crm_error_add_field(err, "id", why);
    for (size_t i = 0; i < m->n; i++)
        if (inactive_reason(res, row_of(res, m->ids[i]), why, sizeof why) != NULL)
            field_error_at(err, i, why);
    if (err->errors != NULL)
        return crm_error_set(err, CRM_E_CONFLICT,
                             "only active customers can be merged; nothing was changed");
    return true;
}

/* ---- merge: the survivor's values ---------------------------------------------------------- */

/* Null, an empty array, or an object whose members are all null. */
static bool empty_value(json_t *v)
{
    if (v == NULL || json_is_null(v))
        return true;
    if (json_is_array(v))
        return json_array_size(v) == 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m) {
            if (!json_is_null(m))
                return false;
        }
        return true;
    }
    return false;
}

/* Fills the gaps of w (the survivor's writable members) from donor's. */
static void fill_gaps(json_t *w, json_t *donor)
{
    const char *key;
    json_t *dv;
    json_object_foreach(donor, key, dv) {
        json_t *sv = json_object_get(w, key);
        if (strcmp(key, "kind") == 0)
            continue; /* never empty; the survivor's stands */
        if (strcmp(key, "tags") == 0) {
            size_t i;
            json_t *tag;
            json_array_foreach(dv, i, tag) {
                bool have = false;
                for (size_t j = 0; j < json_array_size(sv) && !have; j++)
                    have = json_equal(json_array_get(sv, j), tag);
                if (!have)
                    json_array_append(sv, tag);
            }
        } else if (strcmp(key, "attributes") == 0) {
            const char *ak;
            json_t *av;
            json_object_foreach(dv, ak, av) {
                json_t *cur = json_object_get(sv, ak);
                if ((cur == NULL || json_is_null(cur)) && !json_is_null(av))
                    json_object_set(sv, ak, av);
            }
        } else if (empty_value(sv) && !empty_value(dv)) {
            json_object_set(w, key, dv); /* address and location as a whole */
        }
    }
}

/* {"field": {"from", "to"}} for every member of after that differs in
 * before; added to changes. */
static void add_changes(json_t *changes, json_t *before, json_t *after)
{
    const char *key;
    json_t *to;
    json_object_foreach(after, key, to) {
        json_t *from = json_object_get(before, key);
        if (!json_equal(from, to))
            json_object_set_new(changes, key, json_pack("{s:O, s:O}", "from",
                                                        from ? from : json_null(), "to", to));
    }
}

/* Computes the survivor's merged values from the locked rows and writes
 * them; adds the changed fields to changes. */
static bool update_values(crm_conn *c, const PGresult *res, const merge_request *m,
                          json_t *changes, crm_error *err)
{
    json_t *rep = crm_customer_from_row(res, row_of(res, m->survivor), false);
    json_t *before = crm_customer_writable_part(rep);
    json_decref(rep);
    json_t *after = json_deep_copy(before);
    for (size_t i = 0; i < m->n; i++) {
        json_t *donor_rep = crm_customer_from_row(res, row_of(res, m->ids[i]), false);
        json_t *donor = crm_customer_writable_part(donor_rep);
        fill_gaps(after, donor);
        json_decref(donor);
        json_decref(donor_rep);
    }
    crm_customer_values vals;
    bool ok = crm_customer_validate(after, 0, &vals, err);
    if (!ok) {
        crm_error_set(err, CRM_E_INVALID,
                      "the merged customer would break a rule (named in errors); nothing was "
                      "changed");
    } else {
        const char *params[CRM_CUSTOMER_NCOLS + 1];
        memcpy(params, vals.v, sizeof vals.v);
        params[CRM_CUSTOMER_NCOLS] = m->survivor_text;
        PGresult *up = crm_db_exec(c, &update_survivor, CRM_CUSTOMER_NCOLS + 1, params, err);
        ok = up != NULL;
        PQclear(up);
        crm_customer_values_free(&vals);
        if (ok)
            add_changes(changes, before, after);
    }
    json_decref(after);
    json_decref(before);
    return ok;
}

/* ---- merge: what is attached to a customer ----------------------------------------------- */

/* Runs stmt and collects its one JSON text column into an array (owned by
 * the caller), or NULL with err set. */
/* Moves or keeps every record attached to the merged customers, in the
 * merge's transaction, table by table as the registry of customer-attached
 * tables says (customer_tables.h), and lists what moved in changes. */
static bool move_attached_records(crm_conn *c, const merge_request *m, json_t *changes,
                                  crm_error *err)
{
    crm_merge_step step = {.c = c, .survivor = m->survivor_text, .merged = m->merged_array,
                           .parties = m->all_array, .api_key = m->key, .changes = changes};
    for (size_t i = 0; i < crm_customer_tables_count; i++)
        if (crm_customer_tables[i].on_merge != NULL && !crm_customer_tables[i].on_merge(&step, err))
            return false;
    return true;
}

/* ---- merge: the transaction ---------------------------------------------------------------- */

/* The survivor as it now stands, with external_ids and consents. */
static json_t *read_result(crm_conn *c, const merge_request *m, crm_error *err)
{
    const char *params[] = {m->survivor_text};
    PGresult *res = crm_db_exec(c, &select_result, 1, params, err);
    if (res == NULL)
        return NULL;
    json_t *rep = crm_customer_from_row(res, 0, true);
    PQclear(res);
    json_t *consents = crm_consents_current(c, m->survivor, err);
    if (consents == NULL) {
        json_decref(rep);
        return NULL;
    }
    json_object_set_new(rep, "consents", consents);
    return rep;
}

static json_t *merge_in_tx(crm_conn *c, const merge_request *m, crm_error *err)
{
    const char *lock_params[] = {m->all_array};
    PGresult *parties = crm_db_exec(c, &lock_parties, 1, lock_params, err);
    if (parties == NULL)
        return NULL;
    json_t *changes = json_object();
    json_t *merged_ids = json_array();
    for (size_t i = 0; i < m->n; i++)
        json_array_append_new(merged_ids, json_integer(m->ids[i]));
    json_object_set_new(changes, "merged_ids", json_pack("{s:n, s:o}", "from", "to", merged_ids));
    bool ok = check_parties(parties, m, err) && update_values(c, parties, m, changes, err) &&
              move_attached_records(c, m, changes, err);
    PQclear(parties);
    if (ok) {
        const char *mark_params[] = {m->survivor_text, m->merged_array, m->key};
        PGresult *res = crm_db_exec(c, &mark_merged, 3, mark_params, err);
        ok = res != NULL;
        PQclear(res);
        res = ok ? crm_db_exec(c, &compress_aliases, 3, mark_params, err) : NULL;
        ok = res != NULL;
        PQclear(res);
        /* The merged customers leave their segments, the survivor is
         * evaluated on its merged data (segment_memberships' registry row). */
        ok = ok && crm_segments_refresh(c, m->all_array, CRM_SEGMENTS_ALL, "merge", NULL, err);
    }
    char *text = ok ? json_dumps(changes, JSON_COMPACT) : NULL;
    json_decref(changes);
    if (ok && text == NULL)
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (ok) {
        const char *audit_params[] = {m->survivor_text, m->key, text};
        PGresult *res = crm_db_exec(c, &insert_audit, 3, audit_params, err);
        ok = res != NULL;
        PQclear(res);
    }
    free(text);
    return ok ? read_result(c, m, err) : NULL;
}

json_t *crm_customer_merge(long long survivor_id, json_t *body, const crm_write_ctx *ctx,
                           bool *dry_run, crm_error *err)
{
    merge_request m;
    memset(&m, 0, sizeof m);
    m.survivor = survivor_id;
    *dry_run = false;
    if (!parse_body(body, &m, err))
        return NULL;
    *dry_run = m.dry_run;
    format_params(&m, ctx);
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    json_t *rep = NULL;
    if (crm_db_begin(c, err)) {
        rep = merge_in_tx(c, &m, err);
        /* A dry run is the real transaction, rolled back: exactly what a
         * merge would do, and nothing stays. */
        if (rep != NULL && !m.dry_run && !crm_db_commit(c, err)) {
            json_decref(rep);
            rep = NULL;
        }
        if (rep == NULL || m.dry_run)
            crm_db_rollback(c);
    }
    crm_db_release(c);
    return rep;
}

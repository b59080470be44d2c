/*
 * treatments/rules.c — treatment rule definitions (treatments.h): create,
 * read, list in order of evaluation, merge-patch, soft delete and the kept
 * versions. Every write runs in one transaction that first moves
 * treatment_config's stamp (which also makes rule writes take turns: the
 * limit, the default position and the name check see one another), then
 * writes the rule and, for a create or patch, the new version whole.
 */
#include "treatments.h"
#include "treatments/rule_def.h"
#include "customers.h"
#include "json.h"
#include "list/page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RULE_TIMES                                                                                 \
    CRM_SQL_TS("r.active_from")                                                                    \
    ", " CRM_SQL_TS("r.active_until") ", r.position, r.version, " CRM_SQL_TS(                      \
        "r.created_at") ", " CRM_SQL_TS("r.updated_at")

#define RULE_COLUMNS                                                                               \
    "r.id, r.name, r.description, r.condition::text, r.offer_code, r.entitlement_code,"            \
    " r.action_code, r.action_text, array_to_json(r.channels)::text, r.purpose, r.value::text,"    \
    " r.priority, " RULE_TIMES

enum {
    COL_ID,
    COL_NAME,
    COL_DESCRIPTION,
    COL_CONDITION,
    COL_OFFER,
    COL_ENTITLEMENT,
    COL_ACTION_CODE,
    COL_ACTION_TEXT,
    COL_CHANNELS,
    COL_PURPOSE,
    COL_VALUE,
    COL_PRIORITY,
    COL_FROM,
    COL_UNTIL,
    COL_POSITION,
    COL_VERSION,
    COL_CREATED,
    COL_UPDATED
};

static crm_stmt rule_get_stmt =
    CRM_STMT_RO("treatment_rule_get", "SELECT " RULE_COLUMNS " FROM treatment_rules r"
                                      " WHERE r.id = $1 AND r.deleted_at IS NULL");

static crm_stmt rule_lock_stmt =
    CRM_STMT("treatment_rule_lock", "SELECT " RULE_COLUMNS " FROM treatment_rules r"
                                    " WHERE r.id = $1 AND r.deleted_at IS NULL FOR UPDATE");

/* The cursor is the id of the last rule shown: the page goes on after
 * that rule's place in (position, id), so that rules created meanwhile
 * neither repeat nor shift what follows. */
static crm_stmt rule_page_stmt =
    CRM_STMT_PAGE("treatment_rule_page",
                  "SELECT " RULE_COLUMNS " FROM treatment_rules r WHERE r.deleted_at IS NULL"
                  " AND ($1::bigint = 0 OR (r.position, r.id) >"
                  " (SELECT a.position, a.id FROM treatment_rules a WHERE a.id = $1::bigint))"
                  " ORDER BY r.position, r.id LIMIT $2");

static crm_stmt stamp_stmt =
    CRM_STMT("treatment_config_stamp", "UPDATE treatment_config SET stamp = stamp + 1");

static crm_stmt live_count_stmt = CRM_STMT(
    "treatment_rule_live_count", "SELECT count(*) FROM treatment_rules WHERE deleted_at IS NULL");

/* The columns every write sets, $2..$16 (see bind_def). */
#define RULE_VALUES                                                                                \
    "$2, $3, $4::jsonb, $5::int, $6::bigint[], $7, $8, $9, $10,"                                   \
    " ARRAY(SELECT json_array_elements_text($11::json)), $12, $13::numeric, $14::int,"             \
    " $15::timestamptz, $16::timestamptz"

static crm_stmt rule_insert_stmt = CRM_STMT(
    "treatment_rule_insert",
    "INSERT INTO treatment_rules (name, description, condition, reads, depends_on, offer_code,"
    " entitlement_code, action_code, action_text, channels, purpose, value, priority,"
    " active_from, active_until, position) SELECT " RULE_VALUES ", coalesce($17::int,"
    " (SELECT coalesce(max(position) + 1, 0) FROM treatment_rules WHERE deleted_at IS NULL))"
    " WHERE $1::int = 0 RETURNING id");

static crm_stmt rule_update_stmt = CRM_STMT(
    "treatment_rule_update",
    "UPDATE treatment_rules SET (name, description, condition, reads, depends_on, offer_code,"
    " entitlement_code, action_code, action_text, channels, purpose, value, priority,"
    " active_from, active_until, position, version, updated_at) = (" RULE_VALUES
    ", $17::int, version + 1, now()) WHERE id = $1");

static crm_stmt version_insert_stmt =
    CRM_STMT("treatment_rule_version_insert",
             "INSERT INTO treatment_rule_versions (rule_id, version, body, api_key_id)"
             " VALUES ($1, $2, $3::jsonb, nullif($4::bigint, 0))");

static crm_stmt rule_mark_deleted_stmt = CRM_STMT(
    "treatment_rule_mark_deleted", "UPDATE treatment_rules SET deleted_at = now() WHERE id = $1");

static crm_stmt versions_page_stmt = CRM_STMT_PAGE(
    "treatment_rule_versions_page",
    "SELECT version, body::text, " CRM_SQL_TS(
        "changed_at") ", api_key_id FROM treatment_rule_versions"
                      " WHERE rule_id = $1 AND version > $2::int ORDER BY version LIMIT $3");

/* ---- the representation ------------------------------------------------------- */

static json_t *text_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_string(PQgetvalue(res, r, c));
}

/* Stored JSON (or a numeric's text) as a value; null should it not parse. */
static json_t *stored_json(const PGresult *res, int r, int c)
{
    json_t *v = json_loads(PQgetvalue(res, r, c), JSON_DECODE_ANY, NULL);
    return v ? v : json_null();
}

static json_t *rule_from_row(const PGresult *res, int r)
{
    json_t *action = PQgetisnull(res, r, COL_ACTION_CODE)
                         ? json_null()
                         : json_pack("{s:s, s:o}", "code", PQgetvalue(res, r, COL_ACTION_CODE),
                                     "text", text_or_null(res, r, COL_ACTION_TEXT));
    json_t *treatment = json_pack(
        "{s:o, s:o, s:o, s:o, s:s, s:o, s:I}", "offer_code", text_or_null(res, r, COL_OFFER),
        "entitlement_code", text_or_null(res, r, COL_ENTITLEMENT), "action", action, "channels",
        stored_json(res, r, COL_CHANNELS), "purpose", PQgetvalue(res, r, COL_PURPOSE), "value",
        stored_json(res, r, COL_VALUE), "priority",
        (json_int_t)atoll(PQgetvalue(res, r, COL_PRIORITY)));
    return json_pack(
        "{s:I, s:s, s:o, s:o, s:o, s:{s:o, s:o}, s:I, s:I, s:s, s:s}", "id",
        (json_int_t)atoll(PQgetvalue(res, r, COL_ID)), "name", PQgetvalue(res, r, COL_NAME),
        "description", text_or_null(res, r, COL_DESCRIPTION), "condition",
        stored_json(res, r, COL_CONDITION), "treatment", treatment, "active", "from",
        text_or_null(res, r, COL_FROM), "until", text_or_null(res, r, COL_UNTIL), "position",
        (json_int_t)atoll(PQgetvalue(res, r, COL_POSITION)), "version",
        (json_int_t)atoll(PQgetvalue(res, r, COL_VERSION)), "created_at",
        PQgetvalue(res, r, COL_CREATED), "updated_at", PQgetvalue(res, r, COL_UPDATED));
}

/* The rule id (live) on c, or with c NULL on a connection of its own;
 * lock: FOR UPDATE (c only). */
static json_t *rule_read(crm_conn *c, long long id, bool lock, crm_error *err)
{
    return crm_row_by_id(c, c != NULL && lock ? &rule_lock_stmt : &rule_get_stmt, id, rule_from_row,
                         "no treatment rule with this id", err);
}

json_t *crm_treatment_rule_get(long long id, crm_error *err)
{
    return rule_read(NULL, id, false, err);
}

json_t *crm_treatment_rules_list(long long after, int limit, long long *next_after, crm_error *err)
{
    *next_after = 0;
    char afterbuf[24], fetch[16];
    snprintf(afterbuf, sizeof afterbuf, "%lld", after);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    const char *params[] = {afterbuf, fetch};
    PGresult *res = crm_db_run(&rule_page_stmt, 2, params, err);
    return res != NULL ? crm_page_of_rows(res, limit, rule_from_row, COL_ID, next_after) : NULL;
}

/* ---- writing -------------------------------------------------------------------- */

static bool exec_ok(crm_conn *c, crm_stmt *st, int n, const char *const *params, crm_error *err)
{
    PGresult *res = crm_db_exec(c, st, n, params, err);
    PQclear(res);
    return res != NULL;
}

/* The values of a checked definition as the parameters $2..$17 of
 * rule_insert_stmt and rule_update_stmt; texts are kept in bufs (owned by
 * the caller, freed with free_bufs). */
typedef struct def_params {
    const char *v[17];
    char reads[16], priority[24], position[24];
    char *condition, *channels, *value;
} def_params;

static const char *member_text(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static bool bind_def(const rule_def *d, def_params *p)
{
    const json_t *doc = d->doc, *t = json_object_get(doc, "treatment");
    const json_t *action = json_object_get(t, "action"), *pos = json_object_get(doc, "position");
    memset(p, 0, sizeof *p);
    p->condition = json_dumps(json_object_get(doc, "condition"), JSON_COMPACT);
    p->channels = json_dumps(json_object_get(t, "channels"), JSON_COMPACT);
    p->value = json_dumps(json_object_get(t, "value"), JSON_ENCODE_ANY);
    snprintf(p->reads, sizeof p->reads, "%u", d->reads);
    snprintf(p->priority, sizeof p->priority, "%lld",
             (long long)json_integer_value(json_object_get(t, "priority")));
    snprintf(p->position, sizeof p->position, "%lld", (long long)json_integer_value(pos));
    const char *v[17] = {member_text(doc, "name"),
                         member_text(doc, "description"),
                         p->condition,
                         p->reads,
                         d->depends,
                         member_text(t, "offer_code"),
                         member_text(t, "entitlement_code"),
                         member_text(action, "code"),
                         member_text(action, "text"),
                         p->channels,
                         member_text(t, "purpose"),
                         p->value,
                         p->priority,
                         d->from[0] ? d->from : NULL,
                         d->until[0] ? d->until : NULL,
                         json_is_integer(pos) ? p->position : NULL};
    memcpy(p->v + 1, v, 16 * sizeof v[0]);
    return p->condition && p->channels && p->value;
}

static void free_bufs(def_params *p)
{
    free(p->condition);
    free(p->channels);
    free(p->value);
}

/* Keeps the rule id as it now stands as its version, whole, and returns
 * it (owned by the caller). */
static json_t *keep_version(crm_conn *c, long long id, long long api_key_id, crm_error *err)
{
    json_t *doc = rule_read(c, id, false, err);
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (doc != NULL && body == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = body != NULL;
    if (ok) {
        char idbuf[24], version[24], key[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        snprintf(version, sizeof version, "%lld",
                 (long long)json_integer_value(json_object_get(doc, "version")));
        snprintf(key, sizeof key, "%lld", api_key_id);
        const char *params[] = {idbuf, version, body, key};
        ok = exec_ok(c, &version_insert_stmt, 4, params, err);
    }
    free(body);
    if (!ok) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static void name_conflict(crm_error *err)
{
    if (err->code == CRM_E_CONFLICT) {
        crm_error_clear(err);
        crm_error_set(err, CRM_E_CONFLICT, "a treatment rule with this name exists");
    }
}

static bool below_the_limit(crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &live_count_stmt, 0, NULL, err);
    if (res == NULL)
        return false;
    long long n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (n >= CRM_TREATMENT_RULES_MAX)
        return crm_error_set(
            err, CRM_E_CONFLICT,
            "there are %lld treatment rules, the most crmd keeps: delete one first", n);
    return true;
}

json_t *crm_treatment_rule_create(const json_t *body, long long api_key_id, crm_error *err)
{
    rule_def d;
    if (!rule_def_check(body, &d, err)) {
        rule_def_free(&d);
        return NULL;
    }
    def_params p;
    bool bound = bind_def(&d, &p);
    crm_conn *c = bound ? crm_db_acquire(err) : NULL;
    if (!bound)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    json_t *doc = NULL;
    if (c != NULL && crm_db_begin(c, err)) {
        p.v[0] = "0";
        bool ok = exec_ok(c, &stamp_stmt, 0, NULL, err) && below_the_limit(c, err) &&
                  rule_def_check_refs(c, &d, err);
        long long id = 0;
        if (ok) {
            PGresult *res = crm_db_exec(c, &rule_insert_stmt, 17, p.v, err);
            name_conflict(err);
            ok = res != NULL;
            if (ok)
                id = atoll(PQgetvalue(res, 0, 0));
            PQclear(res);
        }
        if (ok)
            doc = keep_version(c, id, api_key_id, err);
        if (doc != NULL && !crm_db_commit(c, err)) {
            json_decref(doc);
            doc = NULL;
        } else if (doc == NULL) {
            crm_db_rollback(c);
        }
    }
    crm_db_release(c);
    free_bufs(&p);
    rule_def_free(&d);
    return doc;
}

/* The definition of a representation: what a patch merges into. */
static json_t *definition_of(const json_t *doc)
{
    json_t *def = json_deep_copy(doc);
    json_object_del(def, "id");
    json_object_del(def, "version");
    json_object_del(def, "created_at");
    json_object_del(def, "updated_at");
    return def;
}

/* RFC 7396 of patch into target (owned; returned). */
static json_t *merge(json_t *target, const json_t *patch)
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
    json_object_foreach((json_t *)patch, key, value)
    {
        if (json_is_null(value))
            json_object_del(target, key);
        else
            json_object_set_new(target, key,
                                merge(json_incref(json_object_get(target, key)), value));
    }
    return target;
}

/* The patched definition: the condition is replaced whole, treatment and
 * active merge as objects (RFC 7396), the rest are replaced. */
static json_t *patched(const json_t *current, const json_t *patch)
{
    json_t *def = definition_of(current);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)patch, key, value)
    {
        if (json_is_null(value))
            json_object_del(def, key);
        else if (strcmp(key, "treatment") == 0 || strcmp(key, "active") == 0)
            json_object_set_new(def, key, merge(json_incref(json_object_get(def, key)), value));
        else
            json_object_set(def, key, value);
    }
    return def;
}

/* A member the patch removes that a rule cannot be without. */
static bool removes_required(const json_t *patch, crm_error *err)
{
    static const char *const required[] = {"name", "condition", "treatment", "position", NULL};
    bool bad = false;
    for (int i = 0; required[i] != NULL; i++) {
        if (json_is_null(json_object_get(patch, required[i]))) {
            char ptr[32];
            snprintf(ptr, sizeof ptr, "/%s", required[i]);
            crm_error_add_field(err, ptr, "cannot be removed");
            bad = true;
        }
    }
    if (bad)
        crm_error_set(err, CRM_E_INVALID, "the treatment rule is invalid");
    return bad;
}

json_t *crm_treatment_rule_patch(long long id, const json_t *patch, const char *if_match,
                                 long long api_key_id, crm_error *err)
{
    if (!crm_if_match_valid(if_match, err))
        return NULL;
    if (!json_is_object(patch)) {
        crm_error_set(err, CRM_E_INVALID, "a merge patch of a treatment rule must be an object");
        return NULL;
    }
    if (removes_required(patch, err))
        return NULL;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL || !crm_db_begin(c, err)) {
        crm_db_release(c);
        return NULL;
    }
    json_t *doc = NULL, *current = NULL, *def = NULL;
    rule_def d = {0};
    def_params p = {0};
    bool ok =
        exec_ok(c, &stamp_stmt, 0, NULL, err) && (current = rule_read(c, id, true, err)) != NULL;
    if (ok && !crm_etag_matches(if_match, json_integer_value(json_object_get(current, "version"))))
        ok = crm_error_set(err, CRM_E_PRECONDITION,
                           "the treatment rule has changed since that version");
    if (ok) {
        def = patched(current, patch);
        ok = def != NULL ? rule_def_check(def, &d, err)
                         : crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    ok = ok && rule_def_check_refs(c, &d, err);
    if (ok && !bind_def(&d, &p))
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (ok) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        p.v[0] = idbuf;
        ok = exec_ok(c, &rule_update_stmt, 17, p.v, err);
        name_conflict(err);
    }
    if (ok)
        doc = keep_version(c, id, api_key_id, err);
    if (doc != NULL && !crm_db_commit(c, err)) {
        json_decref(doc);
        doc = NULL;
    } else if (doc == NULL) {
        crm_db_rollback(c);
    }
    crm_db_release(c);
    free_bufs(&p);
    rule_def_free(&d);
    json_decref(def);
    json_decref(current);
    return doc;
}

bool crm_treatment_rule_delete(long long id, const char *if_match, crm_error *err)
{
    if (!crm_if_match_valid(if_match, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL || !crm_db_begin(c, err)) {
        crm_db_release(c);
        return false;
    }
    json_t *current = NULL;
    bool ok =
        exec_ok(c, &stamp_stmt, 0, NULL, err) && (current = rule_read(c, id, true, err)) != NULL;
    if (ok && !crm_etag_matches(if_match, json_integer_value(json_object_get(current, "version"))))
        ok = crm_error_set(err, CRM_E_PRECONDITION,
                           "the treatment rule has changed since that version");
    if (ok) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        const char *params[] = {idbuf};
        ok = exec_ok(c, &rule_mark_deleted_stmt, 1, params, err);
    }
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    crm_db_release(c);
    json_decref(current);
    return ok;
}

json_t *crm_treatment_rule_versions(long long id, long long after, int limit, long long *next_after,
                                    crm_error *err)
{
    *next_after = 0;
    json_t *current = rule_read(NULL, id, false, err);
    if (current == NULL)
        return NULL;
    json_decref(current);
    char idbuf[24], afterbuf[24], fetch[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(afterbuf, sizeof afterbuf, "%lld", after > 2147483647 ? 2147483647 : after);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    const char *params[] = {idbuf, afterbuf, fetch};
    PGresult *res = crm_db_run(&versions_page_stmt, 3, params, err);
    if (res == NULL)
        return NULL;
    int n = PQntuples(res), shown = crm_page_shown(n, limit);
    json_t *data = json_array();
    for (int r = 0; r < shown; r++)
        json_array_append_new(data, json_pack("{s:I, s:s, s:o, s:o}", "version",
                                              (json_int_t)atoll(PQgetvalue(res, r, 0)),
                                              "changed_at", PQgetvalue(res, r, 2), "api_key_id",
                                              PQgetisnull(res, r, 3)
                                                  ? json_null()
                                                  : json_integer(atoll(PQgetvalue(res, r, 3))),
                                              "rule", stored_json(res, r, 1)));
    if (crm_page_has_next(n, limit))
        *next_after = atoll(PQgetvalue(res, shown - 1, 0));
    PQclear(res);
    return json_pack("{s:o}", "data", data);
}

/*
 * treatments/policies.c — contact policies (treatments.h): create, read,
 * list, patch and soft delete, each change moving treatment_config's stamp
 * in its own transaction; and the live policies in memory (internal.h).
 */
#include "treatments.h"
#include "treatments/internal.h"
#include "consents.h"
#include "customers.h"
#include "customers/internal.h"
#include "json.h"
#include "list/page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_COLUMNS                                                                             \
    "p.id, p.name, p.channel, p.purpose, p.rule_id, p.max_contacts, p.period_hours,"               \
    " to_char(p.quiet_from, 'HH24:MI'), to_char(p.quiet_until, 'HH24:MI'), p.time_zone,"           \
    " p.version, " CRM_SQL_TS("p.created_at") ", " CRM_SQL_TS("p.updated_at")

enum {
    COL_ID,
    COL_NAME,
    COL_CHANNEL,
    COL_PURPOSE,
    COL_RULE,
    COL_MAX,
    COL_PERIOD,
    COL_FROM,
    COL_UNTIL,
    COL_ZONE,
    COL_VERSION,
    COL_CREATED,
    COL_UPDATED
};

static crm_stmt policy_get_stmt = CRM_STMT_RO(
    "contact_policy_get",
    "SELECT " POLICY_COLUMNS " FROM contact_policies p WHERE p.id = $1 AND p.deleted_at IS NULL");

static crm_stmt policy_page_stmt = CRM_STMT_PAGE(
    "contact_policy_page", "SELECT " POLICY_COLUMNS " FROM contact_policies p"
                           " WHERE p.deleted_at IS NULL AND p.id > $1 ORDER BY p.id LIMIT $2");

static json_t *text_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_string(PQgetvalue(res, r, c));
}

static json_t *int_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_integer(atoll(PQgetvalue(res, r, c)));
}

/* The representation of row r (caller owns it; NULL when memory ran out). */
static json_t *policy_from_row(const PGresult *res, int r)
{
    json_t *cap = json_null(), *quiet = json_null();
    if (!PQgetisnull(res, r, COL_MAX))
        cap =
            json_pack("{s:I, s:I}", "max_contacts", (json_int_t)atoll(PQgetvalue(res, r, COL_MAX)),
                      "period_hours", (json_int_t)atoll(PQgetvalue(res, r, COL_PERIOD)));
    if (!PQgetisnull(res, r, COL_FROM))
        quiet = json_pack("{s:s, s:s, s:s}", "from", PQgetvalue(res, r, COL_FROM), "until",
                          PQgetvalue(res, r, COL_UNTIL), "time_zone", PQgetvalue(res, r, COL_ZONE));
    return json_pack(
        "{s:I, s:s, s:o, s:o, s:o, s:o*, s:o*, s:I, s:s, s:s}", "id",
        (json_int_t)atoll(PQgetvalue(res, r, COL_ID)), "name", PQgetvalue(res, r, COL_NAME),
        "channel", text_or_null(res, r, COL_CHANNEL), "purpose", text_or_null(res, r, COL_PURPOSE),
        "rule_id", int_or_null(res, r, COL_RULE), "cap", cap, "quiet_hours", quiet, "version",
        (json_int_t)atoll(PQgetvalue(res, r, COL_VERSION)), "created_at",
        PQgetvalue(res, r, COL_CREATED), "updated_at", PQgetvalue(res, r, COL_UPDATED));
}

static json_t *policy_get_on(crm_conn *c, long long id, crm_error *err)
{
    return crm_row_by_id(c, &policy_get_stmt, id, policy_from_row, "no contact policy with this id",
                         err);
}

json_t *crm_contact_policy_get(long long id, crm_error *err)
{
    return policy_get_on(NULL, id, err);
}

json_t *crm_contact_policies_list(long long after_id, int limit, long long *next_after,
                                  crm_error *err)
{
    *next_after = 0;
    char after[24], fetch[16];
    snprintf(after, sizeof after, "%lld", after_id);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    const char *params[] = {after, fetch};
    PGresult *res = crm_db_run(&policy_page_stmt, 2, params, err);
    return res != NULL ? crm_page_of_rows(res, limit, policy_from_row, COL_ID, next_after) : NULL;
}

/* ---- checking a definition ------------------------------------------------------ */

/* "HH:MM", 00:00 to 23:59: minutes after midnight, or -1. */
static int parse_hhmm(const char *s)
{
    if (s == NULL || strlen(s) != 5 || s[2] != ':')
        return -1;
    for (int i = 0; i < 5; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9'))
            return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    return h <= 23 && m <= 59 ? h * 60 + m : -1;
}

static void check_listed(const json_t *doc, const char *name, const char *const *list,
                         const char **out, crm_error *err)
{
    json_t *v = json_object_get(doc, name);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return;
    char field[32], msg[96];
    snprintf(field, sizeof field, "/%s", name);
    if (!json_is_string(v) || !crm_one_of(json_string_value(v), list)) {
        snprintf(msg, sizeof msg, "must be null or a known %s (see the API documentation)", name);
        crm_error_add_field(err, field, msg);
        return;
    }
    *out = json_string_value(v);
}

/* Each member of obj (under the pointer base) not in allowed is an error. */
static void only_fields_under(const json_t *obj, const char *const *allowed, const char *base,
                              crm_error *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (crm_one_of(key, allowed))
            continue;
        char field[CRM_JSON_POINTER_MAX];
        crm_json_pointer_append(field, sizeof field, base, key);
        crm_error_add_field(err, field, "unknown field");
    }
}

static void check_cap(const json_t *cap, policy_values *v, crm_error *err)
{
    static const char *const allowed[] = {"max_contacts", "period_hours", NULL};
    if (!json_is_object(cap)) {
        crm_error_add_field(err, "/cap", "must be null or {\"max_contacts\", \"period_hours\"}");
        return;
    }
    only_fields_under(cap, allowed, "/cap", err);
    json_t *max = json_object_get(cap, "max_contacts"),
           *period = json_object_get(cap, "period_hours");
    if (!json_is_integer(max) || json_integer_value(max) < 1 || json_integer_value(max) > 1000000)
        crm_error_add_field(err, "/cap/max_contacts", "must be a whole number from 1 to 1000000");
    else
        snprintf(v->max_buf, sizeof v->max_buf, "%lld", (long long)json_integer_value(max));
    if (!json_is_integer(period) || json_integer_value(period) < 1 ||
        json_integer_value(period) > 87840)
        crm_error_add_field(err, "/cap/period_hours",
                            "must be a whole number of hours from 1 to 87840 (ten years)");
    else
        snprintf(v->period_buf, sizeof v->period_buf, "%lld",
                 (long long)json_integer_value(period));
    v->max_contacts = v->max_buf;
    v->period_hours = v->period_buf;
}

static void check_quiet(const json_t *q, policy_values *v, crm_error *err)
{
    static const char *const allowed[] = {"from", "until", "time_zone", NULL};
    if (!json_is_object(q)) {
        crm_error_add_field(err, "/quiet_hours",
                            "must be null or {\"from\", \"until\", \"time_zone\"}");
        return;
    }
    only_fields_under(q, allowed, "/quiet_hours", err);
    const char *from = json_string_value(json_object_get(q, "from"));
    const char *until = json_string_value(json_object_get(q, "until"));
    json_t *zone = json_object_get(q, "time_zone");
    int f = parse_hhmm(from), u = parse_hhmm(until);
    if (f < 0)
        crm_error_add_field(err, "/quiet_hours/from",
                            "must be a local time HH:MM (00:00 to 23:59)");
    if (u < 0)
        crm_error_add_field(err, "/quiet_hours/until",
                            "must be a local time HH:MM (00:00 to 23:59)");
    else if (f == u)
        crm_error_add_field(err, "/quiet_hours/until", "must differ from from");
    if (!json_is_string(zone) || json_string_length(zone) < 1 || json_string_length(zone) > 64 ||
        strlen(json_string_value(zone)) != json_string_length(zone))
        crm_error_add_field(err, "/quiet_hours/time_zone",
                            "must be an IANA time zone name such as Europe/Rome");
    v->quiet_from = from;
    v->quiet_until = until;
    v->time_zone = json_string_value(zone);
}

/* The definition's members, for the create body and for a merge patch. */
static const char *const definition_members[] = {"name", "channel",     "purpose", "rule_id",
                                                 "cap",  "quiet_hours", NULL};

bool policy_check(const json_t *doc, policy_values *v, crm_error *err)
{
    memset(v, 0, sizeof *v);
    if (!json_is_object(doc))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    crm_json_only_fields((json_t *)doc, definition_members, err);
    crm_json_check_no_nul((json_t *)doc, "", err);
    json_t *name = json_object_get(doc, "name");
    const char *s = json_string_value(name);
    size_t chars = s ? crm_utf8_chars(s, json_string_length(name)) : 0;
    if (s == NULL || chars < 1 || chars > 200 || strlen(s) != json_string_length(name))
        crm_error_add_field(err, "/name", "must be a string of 1 to 200 characters");
    v->name = s;
    check_listed(doc, "channel", crm_consent_channels, &v->channel, err);
    check_listed(doc, "purpose", crm_consent_purposes, &v->purpose, err);
    json_t *rule = json_object_get(doc, "rule_id");
    if (rule != NULL && !json_is_null(rule)) {
        if (!json_is_integer(rule) || json_integer_value(rule) < 1)
            crm_error_add_field(err, "/rule_id", "must be null or a treatment rule's id");
        else {
            snprintf(v->rule_buf, sizeof v->rule_buf, "%lld", (long long)json_integer_value(rule));
            v->rule_id = v->rule_buf;
        }
    }
    json_t *cap = json_object_get(doc, "cap"), *quiet = json_object_get(doc, "quiet_hours");
    bool has_cap = cap != NULL && !json_is_null(cap);
    bool has_quiet = quiet != NULL && !json_is_null(quiet);
    if (has_cap)
        check_cap(cap, v, err);
    if (has_quiet)
        check_quiet(quiet, v, err);
    if (!has_cap && !has_quiet)
        crm_error_add_field(err, "/cap", "a policy needs a cap, quiet hours or both");
    if (err->errors != NULL && json_array_size(err->errors) > 0)
        return crm_error_set(err, CRM_E_INVALID, "the contact policy is invalid");
    return err->code == CRM_OK ||
           crm_error_set(err, CRM_E_INVALID, "the contact policy is invalid");
}

/* What only the database knows: the rule is live, the time zone known. */
static crm_stmt references_check =
    CRM_STMT("contact_policy_references",
             "SELECT $1::bigint IS NULL OR EXISTS (SELECT 1 FROM treatment_rules"
             "  WHERE id = $1::bigint AND deleted_at IS NULL FOR KEY SHARE),"
             " $2::text IS NULL OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $2::text)");

static bool check_references(crm_conn *c, const policy_values *v, crm_error *err)
{
    if (v->rule_id == NULL && v->time_zone == NULL)
        return true;
    const char *params[] = {v->rule_id, v->time_zone};
    PGresult *res = crm_db_exec(c, &references_check, 2, params, err);
    if (res == NULL)
        return false;
    if (PQgetvalue(res, 0, 0)[0] != 't')
        crm_error_add_field(err, "/rule_id", "names no live treatment rule");
    if (PQgetvalue(res, 0, 1)[0] != 't')
        crm_error_add_field(err, "/quiet_hours/time_zone", "is not a time zone PostgreSQL knows");
    PQclear(res);
    if (err->errors != NULL)
        return crm_error_set(err, CRM_E_INVALID, "the contact policy is invalid");
    return true;
}

static crm_stmt stamp_stmt =
    CRM_STMT("contact_policies_stamp", "UPDATE treatment_config SET stamp = stamp + 1");

/* Moves the stamp processes reload their rules and policies by; in the
 * change's transaction (it also orders the changes: one at a time). */
static bool move_stamp(crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &stamp_stmt, 0, NULL, err);
    PQclear(res);
    return res != NULL;
}

static crm_stmt live_count = CRM_STMT(
    "contact_policy_live_count", "SELECT count(*) FROM contact_policies WHERE deleted_at IS NULL");

static bool below_the_limit(crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &live_count, 0, NULL, err);
    if (res == NULL)
        return false;
    long long n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (n >= CRM_CONTACT_POLICIES_MAX)
        return crm_error_set(err, CRM_E_CONFLICT,
                             "there are %lld contact policies, the most crmd keeps: delete one "
                             "first",
                             n);
    return true;
}

static void name_conflict(crm_error *err)
{
    if (err->code == CRM_E_CONFLICT) {
        crm_error_clear(err);
        crm_error_set(err, CRM_E_CONFLICT, "a contact policy with this name exists");
    }
}

static crm_stmt policy_insert = CRM_STMT(
    "contact_policy_insert",
    "INSERT INTO contact_policies (name, channel, purpose, rule_id, max_contacts, period_hours,"
    " quiet_from, quiet_until, time_zone) VALUES ($1, $2, $3, $4::bigint, $5::int, $6::int,"
    " $7::time, $8::time, $9) RETURNING id");

json_t *crm_contact_policy_create(const json_t *body, long long api_key_id, crm_error *err)
{
    (void)api_key_id;
    policy_values v;
    if (!policy_check(body, &v, err))
        return NULL;
    crm_conn *c = crm_db_acquire(err);
    json_t *doc = NULL;
    if (c != NULL && crm_db_begin(c, err)) {
        bool ok = move_stamp(c, err) && below_the_limit(c, err) && check_references(c, &v, err);
        long long id = 0;
        if (ok) {
            const char *params[] = {v.name,       v.channel,      v.purpose,
                                    v.rule_id,    v.max_contacts, v.period_hours,
                                    v.quiet_from, v.quiet_until,  v.time_zone};
            PGresult *res = crm_db_exec(c, &policy_insert, 9, params, err);
            name_conflict(err);
            ok = res != NULL;
            if (ok)
                id = atoll(PQgetvalue(res, 0, 0));
            PQclear(res);
        }
        if (ok && (doc = policy_get_on(c, id, err)) != NULL && crm_db_commit(c, err)) {
            /* committed */
        } else {
            json_decref(doc);
            doc = NULL;
            crm_db_rollback(c);
        }
    }
    crm_db_release(c);
    return doc;
}

/* ---- patch and delete ------------------------------------------------------------ */

void policy_merge_patch(json_t *target, const json_t *patch)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)patch, key, value)
    {
        json_t *cur = json_object_get(target, key);
        if (json_is_null(value))
            json_object_del(target, key);
        else if (json_is_object(value) && json_is_object(cur))
            policy_merge_patch(cur, value);
        else if (json_is_object(value)) {
            json_t *fresh = json_object();
            policy_merge_patch(fresh, value);
            json_object_set_new(target, key, fresh);
        } else
            json_object_set_new(target, key, json_deep_copy(value));
    }
}

static crm_stmt policy_lock =
    CRM_STMT("contact_policy_lock", "SELECT " POLICY_COLUMNS " FROM contact_policies p"
                                    " WHERE p.id = $1 AND p.deleted_at IS NULL FOR UPDATE");

/* Locks policy id on c and checks if_match; its representation (caller
 * owns it) or NULL with err. */
static json_t *lock_for_write(crm_conn *c, long long id, const char *if_match, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGresult *res = crm_db_exec(c, &policy_lock, 1, params, err);
    if (res == NULL)
        return NULL;
    json_t *doc = NULL;
    if (PQntuples(res) != 1)
        crm_error_set(err, CRM_E_NOT_FOUND, "no contact policy with this id");
    else if (if_match != NULL &&
             !crm_etag_matches(if_match, atoll(PQgetvalue(res, 0, COL_VERSION))))
        crm_error_set(err, CRM_E_PRECONDITION, "the contact policy has changed since that version");
    else if ((doc = policy_from_row(res, 0)) == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    PQclear(res);
    return doc;
}

static crm_stmt policy_update = CRM_STMT(
    "contact_policy_update",
    "UPDATE contact_policies SET name = $2, channel = $3, purpose = $4, rule_id = $5::bigint,"
    " max_contacts = $6::int, period_hours = $7::int, quiet_from = $8::time,"
    " quiet_until = $9::time, time_zone = $10, version = version + 1, updated_at = now()"
    " WHERE id = $1");

json_t *policy_definition_of(const json_t *doc)
{
    json_t *def = json_object();
    for (size_t i = 0; definition_members[i] != NULL; i++) {
        json_t *v = json_object_get(doc, definition_members[i]);
        if (v != NULL && !json_is_null(v))
            json_object_set_new(def, definition_members[i], json_deep_copy(v));
    }
    return def;
}

bool policy_patch_check(const json_t *patch, crm_error *err)
{
    if (!json_is_object(patch))
        return crm_error_set(err, CRM_E_INVALID,
                             "a merge patch of a contact policy must be a JSON object");
    return crm_json_only_fields((json_t *)patch, definition_members, err);
}

json_t *crm_contact_policy_patch(long long id, const json_t *patch, const char *if_match,
                                 long long api_key_id, crm_error *err)
{
    (void)api_key_id;
    if (!crm_if_match_valid(if_match, err))
        return NULL;
    if (!policy_patch_check(patch, err))
        return NULL;
    crm_conn *c = crm_db_acquire(err);
    json_t *doc = NULL, *current = NULL, *def = NULL;
    if (c != NULL && crm_db_begin(c, err)) {
        bool ok = (current = lock_for_write(c, id, if_match, err)) != NULL;
        policy_values v;
        if (ok) {
            def = policy_definition_of(current);
            policy_merge_patch(def, patch);
            ok = policy_check(def, &v, err) && move_stamp(c, err);
            /* Only what the patch names is looked up again: a policy whose
             * rule was deleted since can still be renamed. */
            policy_values refs = v;
            if (json_object_get(patch, "rule_id") == NULL)
                refs.rule_id = NULL;
            if (json_object_get(patch, "quiet_hours") == NULL)
                refs.time_zone = NULL;
            ok = ok && check_references(c, &refs, err);
        }
        if (ok) {
            char idbuf[24];
            snprintf(idbuf, sizeof idbuf, "%lld", id);
            const char *params[] = {idbuf,         v.name,         v.channel,      v.purpose,
                                    v.rule_id,     v.max_contacts, v.period_hours, v.quiet_from,
                                    v.quiet_until, v.time_zone};
            PGresult *res = crm_db_exec(c, &policy_update, 10, params, err);
            name_conflict(err);
            ok = res != NULL;
            PQclear(res);
        }
        if (ok && (doc = policy_get_on(c, id, err)) != NULL && crm_db_commit(c, err)) {
            /* committed */
        } else {
            json_decref(doc);
            doc = NULL;
            crm_db_rollback(c);
        }
    }
    json_decref(def);
    json_decref(current);
    crm_db_release(c);
    return doc;
}

static crm_stmt policy_mark_deleted =
    CRM_STMT("contact_policy_mark_deleted",
             "UPDATE contact_policies SET deleted_at = now(), version = version + 1 WHERE id = $1");

bool crm_contact_policy_delete(long long id, const char *if_match, crm_error *err)
{
    if (!crm_if_match_valid(if_match, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL || !crm_db_begin(c, err)) {
        crm_db_release(c);
        return false;
    }
    json_t *current = lock_for_write(c, id, if_match, err);
    bool ok = current != NULL && move_stamp(c, err);
    json_decref(current);
    if (ok) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        const char *params[] = {idbuf};
        PGresult *res = crm_db_exec(c, &policy_mark_deleted, 1, params, err);
        ok = res != NULL;
        PQclear(res);
    }
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    crm_db_release(c);
    return ok;
}

/* ---- the live policies in memory --------------------------------------------------- */

static crm_stmt policy_set_stmt = CRM_STMT_RO(
    "contact_policy_set",
    "SELECT id, name, coalesce(channel, ''), coalesce(purpose, ''), coalesce(rule_id, 0),"
    " coalesce(max_contacts, 0), coalesce(period_hours, 0),"
    " coalesce((extract(epoch FROM quiet_from) / 60)::int, -1),"
    " coalesce((extract(epoch FROM quiet_until) / 60)::int, -1), coalesce(time_zone, '')"
    " FROM contact_policies WHERE deleted_at IS NULL ORDER BY id");

static void copy_text(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

bool policy_set_load(crm_conn *c, policy_set *ps, crm_error *err)
{
    memset(ps, 0, sizeof *ps);
    PGresult *res = c ? crm_db_exec(c, &policy_set_stmt, 0, NULL, err)
                      : crm_db_run(&policy_set_stmt, 0, NULL, err);
    if (res == NULL)
        return false;
    int n = PQntuples(res);
    ps->p = calloc((size_t)(n ? n : 1), sizeof *ps->p);
    if (ps->p == NULL) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (int r = 0; r < n; r++) {
        contact_policy *p = &ps->p[r];
        p->id = atoll(PQgetvalue(res, r, 0));
        copy_text(p->name, sizeof p->name, PQgetvalue(res, r, 1));
        copy_text(p->channel, sizeof p->channel, PQgetvalue(res, r, 2));
        copy_text(p->purpose, sizeof p->purpose, PQgetvalue(res, r, 3));
        p->rule_id = atoll(PQgetvalue(res, r, 4));
        p->max_contacts = atoi(PQgetvalue(res, r, 5));
        p->period_hours = atoi(PQgetvalue(res, r, 6));
        p->quiet_from_min = atoi(PQgetvalue(res, r, 7));
        p->quiet_until_min = atoi(PQgetvalue(res, r, 8));
        copy_text(p->time_zone, sizeof p->time_zone, PQgetvalue(res, r, 9));
        if (p->max_contacts > 0 && p->period_hours > ps->max_period_hours)
            ps->max_period_hours = p->period_hours;
    }
    ps->n = n;
    PQclear(res);
    return true;
}

void policy_set_free(policy_set *ps)
{
    free(ps->p);
    ps->p = NULL;
    ps->n = 0;
    ps->max_period_hours = 0;
}

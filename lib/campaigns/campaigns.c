/*
 * campaigns/campaigns.c — campaign definitions (campaigns.h): create, read,
 * list, merge-patch (with the status machine of def.c), soft delete of a
 * draft and the kept versions. Every write runs in one transaction that
 * holds the campaign's row (FOR UPDATE) while it checks the version, the
 * status and the audience, then writes the campaign and its new version.
 */
#include "campaigns.h"
#include "campaigns/def.h"
#include "campaigns/internal.h"
#include "clock.h"
#include "customers.h"
#include "db.h"
#include "json.h"
#include "list/page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAMPAIGN_TIMES CRM_SQL_TS("c.starts_at") ", " CRM_SQL_TS("c.ends_at")

#define CAMPAIGN_STAMPS "c.version, " CRM_SQL_TS("c.created_at") ", " CRM_SQL_TS("c.updated_at")

#define CAMPAIGN_COLUMNS                                                                           \
    "c.id, c.code, c.name, c.objective, c.audience_segment_id, c.audience_rule_id,"                \
    " array_to_json(c.channels)::text, c.purpose, c.offer_code, " CAMPAIGN_TIMES                   \
    ", c.control_share::text, c.cost_per_contact::text, c.fixed_cost::text, c.currency,"           \
    " array_to_json(c.response_types)::text, c.attribution_days, c.status, "                       \
    "c.salt::text, " CAMPAIGN_STAMPS

enum {
    COL_ID,
    COL_CODE,
    COL_NAME,
    COL_OBJECTIVE,
    COL_SEGMENT,
    COL_RULE,
    COL_CHANNELS,
    COL_PURPOSE,
    COL_OFFER,
    COL_STARTS,
    COL_ENDS,
    COL_CONTROL,
    COL_PER_CONTACT,
    COL_FIXED,
    COL_CURRENCY,
    COL_RESPONSES,
    COL_ATTRIBUTION,
    COL_STATUS,
    COL_SALT,
    COL_VERSION,
    COL_CREATED,
    COL_UPDATED
};

static crm_stmt campaign_get_stmt =
    CRM_STMT_RO("campaign_get", "SELECT " CAMPAIGN_COLUMNS " FROM campaigns c"
                                " WHERE c.id = $1 AND c.deleted_at IS NULL");

static crm_stmt campaign_lock_stmt =
    CRM_STMT("campaign_lock", "SELECT " CAMPAIGN_COLUMNS " FROM campaigns c"
                              " WHERE c.id = $1 AND c.deleted_at IS NULL FOR UPDATE");

/* The cursor is the id of the last campaign shown; $2 a status or NULL. */
static crm_stmt campaign_page_stmt =
    CRM_STMT_PAGE("campaign_page", "SELECT " CAMPAIGN_COLUMNS " FROM campaigns c"
                                   " WHERE c.deleted_at IS NULL AND c.id > $1::bigint"
                                   " AND ($2::text IS NULL OR c.status = $2::text)"
                                   " ORDER BY c.id LIMIT $3");

/* The audience's segment ($1) or rule ($2) when live: 1 for each found. */
static crm_stmt audience_stmt = CRM_STMT(
    "campaign_audience_live",
    "SELECT (SELECT count(*) FROM segments WHERE id = $1::bigint AND deleted_at IS NULL),"
    " (SELECT count(*) FROM treatment_rules WHERE id = $2::bigint AND deleted_at IS NULL)");

/* The definition's columns as $1..$16 (see bind_def). */
static crm_stmt campaign_insert_stmt = CRM_STMT(
    "campaign_insert",
    "INSERT INTO campaigns (code, name, objective, audience_segment_id, audience_rule_id,"
    " channels, purpose, offer_code, starts_at, ends_at, control_share, cost_per_contact,"
    " fixed_cost, currency, response_types, attribution_days) VALUES ($1, $2, $3, $4::bigint,"
    " $5::bigint, ARRAY(SELECT json_array_elements_text($6::json)), $7, $8, $9::timestamptz,"
    " $10::timestamptz, $11::numeric, $12::numeric, $13::numeric, $14,"
    " ARRAY(SELECT json_array_elements_text($15::json)), $16::int) RETURNING id");

/* The same as $2..$17 of the campaign $1, and the status $18. */
static crm_stmt campaign_update_stmt = CRM_STMT(
    "campaign_update",
    "UPDATE campaigns SET (code, name, objective, audience_segment_id, audience_rule_id,"
    " channels, purpose, offer_code, starts_at, ends_at, control_share, cost_per_contact,"
    " fixed_cost, currency, response_types, attribution_days, status, version, updated_at) ="
    " ($2, $3, $4, $5::bigint, $6::bigint, ARRAY(SELECT json_array_elements_text($7::json)),"
    " $8, $9, $10::timestamptz, $11::timestamptz, $12::numeric, $13::numeric, $14::numeric,"
    " $15, ARRAY(SELECT json_array_elements_text($16::json)), $17::int, $18, version + 1,"
    " now()) WHERE id = $1");

static crm_stmt version_insert_stmt =
    CRM_STMT("campaign_version_insert",
             "INSERT INTO campaign_versions (campaign_id, version, definition, status, api_key_id)"
             " VALUES ($1, $2, $3::jsonb, $4, nullif($5::bigint, 0))");

static crm_stmt campaign_mark_deleted_stmt =
    CRM_STMT("campaign_mark_deleted", "UPDATE campaigns SET deleted_at = now() WHERE id = $1");

static crm_stmt versions_page_stmt = CRM_STMT_PAGE(
    "campaign_versions_page",
    "SELECT version, definition::text, status, " CRM_SQL_TS(
        "changed_at") ", api_key_id FROM campaign_versions"
                      " WHERE campaign_id = $1 AND version > $2::int ORDER BY version LIMIT $3");

/* ---- the representation ------------------------------------------------------- */

static json_t *text_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_string(PQgetvalue(res, r, c));
}

static json_t *id_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_integer(atoll(PQgetvalue(res, r, c)));
}

/* Stored JSON (or a numeric's text) as a value; null should it not parse. */
static json_t *stored_json(const PGresult *res, int r, int c)
{
    json_t *v = json_loads(PQgetvalue(res, r, c), JSON_DECODE_ANY, NULL);
    return v ? v : json_null();
}

static json_t *campaign_from_row(const PGresult *res, int r)
{
    json_t *doc = json_pack(
        "{s:I, s:s, s:s, s:o, s:{s:o, s:o}, s:o, s:s, s:o, s:o, s:o, s:o, s:s, s:s, s:o}", "id",
        (json_int_t)atoll(PQgetvalue(res, r, COL_ID)), "code", PQgetvalue(res, r, COL_CODE), "name",
        PQgetvalue(res, r, COL_NAME), "objective", text_or_null(res, r, COL_OBJECTIVE), "audience",
        "segment_id", id_or_null(res, r, COL_SEGMENT), "rule_id", id_or_null(res, r, COL_RULE),
        "channels", stored_json(res, r, COL_CHANNELS), "purpose", PQgetvalue(res, r, COL_PURPOSE),
        "offer_code", text_or_null(res, r, COL_OFFER), "starts_at",
        text_or_null(res, r, COL_STARTS), "ends_at", text_or_null(res, r, COL_ENDS),
        "control_share", stored_json(res, r, COL_CONTROL), "cost_per_contact",
        PQgetvalue(res, r, COL_PER_CONTACT), "fixed_cost", PQgetvalue(res, r, COL_FIXED),
        "currency", text_or_null(res, r, COL_CURRENCY));
    if (doc == NULL)
        return NULL;
    json_t *rest = json_pack(
        "{s:o, s:I, s:s, s:s, s:I, s:s, s:s}", "response_types", stored_json(res, r, COL_RESPONSES),
        "attribution_days", (json_int_t)atoll(PQgetvalue(res, r, COL_ATTRIBUTION)), "status",
        PQgetvalue(res, r, COL_STATUS), "salt", PQgetvalue(res, r, COL_SALT), "version",
        (json_int_t)atoll(PQgetvalue(res, r, COL_VERSION)), "created_at",
        PQgetvalue(res, r, COL_CREATED), "updated_at", PQgetvalue(res, r, COL_UPDATED));
    if (rest == NULL || json_object_update(doc, rest) != 0) {
        json_decref(rest);
        json_decref(doc);
        return NULL;
    }
    json_decref(rest);
    return doc;
}

/* The campaign id (live) on c, or with c NULL on a connection of its own;
 * lock: FOR UPDATE (c only). */
static json_t *campaign_read(crm_conn *c, long long id, bool lock, crm_error *err)
{
    return crm_row_by_id(c, c != NULL && lock ? &campaign_lock_stmt : &campaign_get_stmt, id,
                         campaign_from_row, "no campaign with this id", err);
}

json_t *crm_campaign_get(long long id, crm_error *err)
{
    return campaign_read(NULL, id, false, err);
}

json_t *crm_campaigns_list(const char *status, long long after, int limit, long long *next_after,
                           crm_error *err)
{
    *next_after = 0;
    if (status != NULL && !crm_one_of(status, campaign_statuses)) {
        crm_error_add_field(err, "status",
                            "must be one of draft, scheduled, running, completed, cancelled");
        crm_error_set(err, CRM_E_INVALID, "invalid query parameter 'status'");
        return NULL;
    }
    char afterbuf[24], fetch[16];
    snprintf(afterbuf, sizeof afterbuf, "%lld", after);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    const char *params[] = {afterbuf, status, fetch};
    PGresult *res = crm_db_run(&campaign_page_stmt, 3, params, err);
    return res != NULL ? crm_page_of_rows(res, limit, campaign_from_row, COL_ID, next_after) : NULL;
}

/* ---- writing -------------------------------------------------------------------- */

static bool exec_ok(crm_conn *c, crm_stmt *st, int n, const char *const *params, crm_error *err)
{
    PGresult *res = crm_db_exec(c, st, n, params, err);
    PQclear(res);
    return res != NULL;
}

/* The values of a checked definition: v[0] the id (update), v[1..16] the
 * definition's columns, v[17] the status (update); texts kept here, freed
 * with free_bufs. */
typedef struct def_params {
    const char *v[18];
    char segment[24], rule[24], days[16];
    char *channels, *responses, *control;
} def_params;

static const char *member_text(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static bool bind_def(const campaign_def *d, def_params *p)
{
    const json_t *doc = d->doc, *a = json_object_get(doc, "audience");
    memset(p, 0, sizeof *p);
    p->channels = json_dumps(json_object_get(doc, "channels"), JSON_COMPACT);
    p->responses = json_dumps(json_object_get(doc, "response_types"), JSON_COMPACT);
    p->control = json_dumps(json_object_get(doc, "control_share"),
                            JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    const json_t *seg = json_object_get(a, "segment_id"), *rule = json_object_get(a, "rule_id");
    snprintf(p->segment, sizeof p->segment, "%lld", (long long)json_integer_value(seg));
    snprintf(p->rule, sizeof p->rule, "%lld", (long long)json_integer_value(rule));
    snprintf(p->days, sizeof p->days, "%lld",
             (long long)json_integer_value(json_object_get(doc, "attribution_days")));
    const char *v[16] = {member_text(doc, "code"),
                         member_text(doc, "name"),
                         member_text(doc, "objective"),
                         json_is_integer(seg) ? p->segment : NULL,
                         json_is_integer(rule) ? p->rule : NULL,
                         p->channels,
                         member_text(doc, "purpose"),
                         member_text(doc, "offer_code"),
                         d->starts[0] ? d->starts : NULL,
                         d->ends[0] ? d->ends : NULL,
                         p->control,
                         member_text(doc, "cost_per_contact"),
                         member_text(doc, "fixed_cost"),
                         member_text(doc, "currency"),
                         p->responses,
                         p->days};
    memcpy(p->v + 1, v, sizeof v);
    return p->channels && p->responses && p->control;
}

static void free_bufs(def_params *p)
{
    free(p->channels);
    free(p->responses);
    free(p->control);
}

/* The definition of a representation: what a patch merges into. */
static json_t *definition_of(const json_t *doc)
{
    static const char *const not_definition[] = {"id",         "status",     "salt", "version",
                                                 "created_at", "updated_at", NULL};
    json_t *def = json_deep_copy(doc);
    for (int i = 0; not_definition[i] != NULL; i++)
        json_object_del(def, not_definition[i]);
    return def;
}

/* Keeps the campaign id as it now stands as its version and returns it
 * (owned by the caller). */
json_t *campaign_keep_version(crm_conn *c, long long id, long long api_key_id, crm_error *err)
{
    json_t *doc = campaign_read(c, id, false, err);
    json_t *def = doc ? definition_of(doc) : NULL;
    char *text = def ? json_dumps(def, JSON_COMPACT) : NULL;
    json_decref(def);
    if (doc != NULL && text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = text != NULL;
    if (ok) {
        char idbuf[24], version[24], key[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        snprintf(version, sizeof version, "%lld",
                 (long long)json_integer_value(json_object_get(doc, "version")));
        snprintf(key, sizeof key, "%lld", api_key_id);
        const char *params[] = {idbuf, version, text, member_text(doc, "status"), key};
        ok = exec_ok(c, &version_insert_stmt, 5, params, err);
    }
    free(text);
    if (!ok) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static void code_conflict(crm_error *err)
{
    if (err->code == CRM_E_CONFLICT) {
        crm_error_clear(err);
        crm_error_set(err, CRM_E_CONFLICT, "a campaign with this code exists");
    }
}

/* The audience's segment or rule exists and is not deleted. */
static bool audience_live(crm_conn *c, const campaign_def *d, const def_params *p, crm_error *err)
{
    const char *params[] = {p->v[4], p->v[5]};
    PGresult *res = crm_db_exec(c, &audience_stmt, 2, params, err);
    if (res == NULL)
        return false;
    bool seg_ok = atoll(PQgetvalue(res, 0, 0)) == 1, rule_ok = atoll(PQgetvalue(res, 0, 1)) == 1;
    PQclear(res);
    (void)d;
    if (p->v[4] != NULL && !seg_ok)
        crm_error_add_field(err, "/audience/segment_id", "names no segment");
    else if (p->v[5] != NULL && !rule_ok)
        crm_error_add_field(err, "/audience/rule_id", "names no treatment rule");
    else
        return true;
    return crm_error_set(err, CRM_E_INVALID, "the campaign is invalid");
}

/* Commits doc's transaction on c, or rolls it back when doc is NULL or the
 * commit fails; returns doc or NULL, and releases c. */
static json_t *finish(crm_conn *c, json_t *doc, crm_error *err)
{
    if (doc != NULL && !crm_db_commit(c, err)) {
        json_decref(doc);
        doc = NULL;
    } else if (doc == NULL && c != NULL) {
        crm_db_rollback(c);
    }
    crm_db_release(c);
    return doc;
}

json_t *crm_campaign_create(const json_t *body, long long api_key_id, crm_error *err)
{
    /* status may be given, as the only one a campaign starts in */
    json_t *def_body =
        json_is_object(body) ? json_copy((json_t *)body) : json_incref((json_t *)body);
    json_t *status = json_object_get(def_body, "status");
    if (status != NULL) {
        const char *s = json_string_value(status);
        if (s == NULL || strcmp(s, "draft") != 0)
            crm_error_add_field(err, "/status",
                                "a campaign is created as a draft; PATCH its status to move it");
        json_object_del(def_body, "status");
    }
    campaign_def d;
    bool ok = campaign_def_check(def_body, &d, err);
    json_decref(def_body);
    if (ok && err->errors != NULL)
        ok = crm_error_set(err, CRM_E_INVALID, "the campaign is invalid");
    if (!ok) {
        campaign_def_free(&d);
        return NULL;
    }
    def_params p;
    bool bound = bind_def(&d, &p);
    crm_conn *c = bound ? crm_db_acquire(err) : NULL;
    if (!bound)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    json_t *doc = NULL;
    if (c != NULL && crm_db_begin(c, err)) {
        long long id = 0;
        if (audience_live(c, &d, &p, err)) {
            PGresult *res = crm_db_exec(c, &campaign_insert_stmt, 16, p.v + 1, err);
            code_conflict(err);
            if (res != NULL)
                id = atoll(PQgetvalue(res, 0, 0));
            PQclear(res);
        }
        if (id > 0)
            doc = campaign_keep_version(c, id, api_key_id, err);
        doc = finish(c, doc, err);
    } else {
        crm_db_release(c);
    }
    free_bufs(&p);
    campaign_def_free(&d);
    return doc;
}

/* ---- the patch ------------------------------------------------------------------ */

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

/* Whether a canonical member has the same value in a and b: instants as
 * instants, amounts and shares as numbers (the stored "1.5000" is "1.5"). */
static bool same_member(const char *key, const json_t *a, const json_t *b)
{
    const json_t *x = json_object_get(a, key), *y = json_object_get(b, key);
    if (json_is_string(x) && json_is_string(y) &&
        (strcmp(key, "starts_at") == 0 || strcmp(key, "ends_at") == 0)) {
        long long mx, my;
        return crm_rfc3339_epoch_ms(json_string_value(x), &mx) &&
               crm_rfc3339_epoch_ms(json_string_value(y), &my) && mx == my;
    }
    if (json_is_string(x) && json_is_string(y) &&
        (strcmp(key, "cost_per_contact") == 0 || strcmp(key, "fixed_cost") == 0))
        return strtod(json_string_value(x), NULL) == strtod(json_string_value(y), NULL);
    if (json_is_number(x) && json_is_number(y))
        return json_number_value(x) == json_number_value(y);
    return json_equal(x, y);
}

/* The members locked in the campaign's status that next changes from now:
 * CRM_E_CONFLICT naming each. */
static bool locked_unchanged(const char *status, const json_t *now, const json_t *next,
                             crm_error *err)
{
    const char *const *locked = campaign_locked_members(status);
    char names[512];
    size_t len = 0;
    names[0] = '\0';
    for (size_t i = 0; locked != NULL && locked[i] != NULL; i++) {
        if (same_member(locked[i], now, next))
            continue;
        char ptr[48];
        snprintf(ptr, sizeof ptr, "/%s", locked[i]);
        crm_error_add_field(err, ptr, "cannot change in this status");
        if (len < sizeof names)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "",
                                    locked[i]);
    }
    if (names[0] == '\0')
        return true;
    return crm_error_set(err, CRM_E_CONFLICT, "a %s campaign's %s cannot change", status, names);
}

/* What a scheduled or running campaign asks of its window: both ends,
 * and, when it is being scheduled or its start moves, the start in the
 * future. */
static bool window_fits(const campaign_def *d, bool future_start, crm_error *err)
{
    if (d->starts[0] == '\0')
        crm_error_add_field(err, "/starts_at", "is required once the campaign is scheduled");
    else if (future_start && d->starts_ms <= crm_wall_ms())
        crm_error_add_field(err, "/starts_at", "must be in the future to schedule the campaign");
    if (d->ends[0] == '\0')
        crm_error_add_field(err, "/ends_at", "is required once the campaign is scheduled");
    if (err->errors == NULL)
        return true;
    return crm_error_set(err, CRM_E_INVALID, "the campaign's window does not fit its status");
}

/* The status the patch asks for (NULL: none), checked. */
static bool patch_status(const json_t *patch, const char **out, crm_error *err)
{
    json_t *s = json_object_get(patch, "status");
    *out = NULL;
    if (s == NULL)
        return true;
    if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s) ||
        !crm_one_of(json_string_value(s), campaign_statuses)) {
        crm_error_add_field(err, "/status",
                            "must be one of draft, scheduled, running, completed, cancelled");
        return crm_error_set(err, CRM_E_INVALID, "the campaign is invalid");
    }
    *out = json_string_value(s);
    return true;
}

/* The patched campaign checked against the current one (cur, its
 * representation): definition, locks, status move and audience. */
static bool check_patch(crm_conn *c, const json_t *cur, const json_t *patch, const char *target,
                        campaign_def *next, def_params *p, json_t **allowed, crm_error *err)
{
    const char *status = member_text(cur, "status");
    json_t *def_patch = json_copy((json_t *)patch);
    json_object_del(def_patch, "status");
    json_t *def = merge(definition_of(cur), def_patch);
    json_decref(def_patch);
    bool ok = campaign_def_check(def, next, err);
    json_decref(def);
    if (!ok)
        return false;
    campaign_def now;
    json_t *cur_def = definition_of(cur);
    ok = campaign_def_check(cur_def, &now, err);
    json_decref(cur_def);
    if (!ok) {
        campaign_def_free(&now);
        crm_error_clear(err);
        return crm_error_set(err, CRM_E_INTERNAL, "a stored campaign does not check");
    }
    bool moves = target != NULL && strcmp(target, status) != 0;
    const char *after = moves ? target : status;
    bool windowed = strcmp(after, "scheduled") == 0 || strcmp(after, "running") == 0;
    bool start_moves = !same_member("starts_at", now.doc, next->doc);
    if (!locked_unchanged(status, now.doc, next->doc, err)) {
        ok = false;
    } else if (moves && !campaign_transition_allowed(status, target)) {
        *allowed = campaign_allowed_transitions(status);
        ok = crm_error_set(err, CRM_E_CONFLICT,
                           "a %s campaign cannot move to %s%s; see allowed_transitions", status,
                           target,
                           strcmp(target, "running") == 0 ? " (only its execution starts it)" : "");
    } else if (windowed) {
        /* scheduling, or a scheduled campaign's start moving, needs a
         * start in the future; running, the start cannot move */
        ok = window_fits(next, strcmp(after, "scheduled") == 0 && (moves || start_moves), err);
    }
    if (ok && !bind_def(next, p))
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (ok &&
        !json_equal(json_object_get(now.doc, "audience"), json_object_get(next->doc, "audience")))
        ok = audience_live(c, next, p, err);
    campaign_def_free(&now);
    return ok;
}

json_t *crm_campaign_patch(long long id, const json_t *patch, const char *if_match,
                           long long api_key_id, json_t **allowed, crm_error *err)
{
    *allowed = NULL;
    if (!crm_if_match_valid(if_match, err))
        return NULL;
    if (!json_is_object(patch)) {
        crm_error_set(err, CRM_E_INVALID, "a merge patch of a campaign must be an object");
        return NULL;
    }
    const char *target;
    if (!patch_status(patch, &target, err))
        return NULL;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL || !crm_db_begin(c, err)) {
        crm_db_release(c);
        return NULL;
    }
    json_t *doc = NULL, *current = campaign_read(c, id, true, err);
    campaign_def d = {0};
    def_params p = {0};
    bool ok = current != NULL;
    if (ok && !crm_etag_matches(if_match, json_integer_value(json_object_get(current, "version"))))
        ok = crm_error_set(err, CRM_E_PRECONDITION, "the campaign has changed since that version");
    ok = ok && check_patch(c, current, patch, target, &d, &p, allowed, err);
    if (ok) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        p.v[0] = idbuf;
        p.v[17] = target != NULL ? target : member_text(current, "status");
        ok = exec_ok(c, &campaign_update_stmt, 18, p.v, err);
        code_conflict(err);
    }
    if (ok)
        doc = campaign_keep_version(c, id, api_key_id, err);
    doc = finish(c, doc, err);
    free_bufs(&p);
    campaign_def_free(&d);
    json_decref(current);
    return doc;
}

bool crm_campaign_delete(long long id, const char *if_match, crm_error *err)
{
    if (!crm_if_match_valid(if_match, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL || !crm_db_begin(c, err)) {
        crm_db_release(c);
        return false;
    }
    json_t *current = campaign_read(c, id, true, err);
    bool ok = current != NULL;
    if (ok && !crm_etag_matches(if_match, json_integer_value(json_object_get(current, "version"))))
        ok = crm_error_set(err, CRM_E_PRECONDITION, "the campaign has changed since that version");
    if (ok && strcmp(member_text(current, "status"), "draft") != 0)
        ok = crm_error_set(err, CRM_E_CONFLICT,
                           "a %s campaign cannot be deleted, only a draft (cancel it instead)",
                           member_text(current, "status"));
    if (ok) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        const char *params[] = {idbuf};
        ok = exec_ok(c, &campaign_mark_deleted_stmt, 1, params, err);
    }
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    crm_db_release(c);
    json_decref(current);
    return ok;
}

json_t *crm_campaign_versions(long long id, long long after, int limit, long long *next_after,
                              crm_error *err)
{
    *next_after = 0;
    json_t *current = campaign_read(NULL, id, false, err);
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
        json_array_append_new(data,
                              json_pack("{s:I, s:s, s:s, s:o, s:o}", "version",
                                        (json_int_t)atoll(PQgetvalue(res, r, 0)), "status",
                                        PQgetvalue(res, r, 2), "changed_at", PQgetvalue(res, r, 3),
                                        "api_key_id", id_or_null(res, r, 4), "definition",
                                        stored_json(res, r, 1)));
    if (crm_page_has_next(n, limit))
        *next_after = atoll(PQgetvalue(res, shown - 1, 0));
    PQclear(res);
    return json_pack("{s:o}", "data", data);
}

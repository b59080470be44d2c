/*
 * treatments/rule_def.c — one treatment rule's definition checked member by
 * member and made canonical (rule_def.h): every problem is a field error
 * named by its JSON pointer, the condition's under /condition.
 */
#include "treatments/rule_def.h"
#include "customers.h"
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const top_members[] = {"name",   "description", "condition", "treatment",
                                          "active", "position",    NULL};
static const char *const treatment_members[] = {
    "offer_code", "entitlement_code", "action", "channels", "purpose", "value", "priority", NULL};
static const char *const action_members[] = {"code", "text", NULL};
static const char *const active_members[] = {"from", "until", NULL};

static const char *const channels[] = {"email", "sms", "phone",  "mail",
                                       "push",  "web", "in_app", NULL};
static const char *const purposes[] = {"marketing", "service",     "profiling",
                                       "analytics", "third_party", NULL};

/* crm_json_only_fields names unknown members from the root ("/x"); these
 * are one level down, so their names are re-made under base. */
static bool only_members(json_t *obj, const char *const *allowed, const char *base, crm_error *err)
{
    bool ok = true;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (crm_one_of(key, allowed))
            continue;
        char ptr[CRM_JSON_POINTER_MAX];
        crm_json_pointer_append(ptr, sizeof ptr, base, key);
        crm_error_add_field(err, ptr, "unknown field");
        ok = false;
    }
    return ok;
}

/* A string (no NUL inside) that is one of list. */
static bool one_of_list(const json_t *v, const char *const *list)
{
    const char *s = json_string_value(v);
    return s != NULL && strlen(s) == json_string_length(v) && crm_one_of(s, list);
}

/* A string of min..max characters (code points), no NUL inside. */
static bool text_ok(const json_t *v, size_t min, size_t max)
{
    const char *s = json_string_value(v);
    if (s == NULL || strlen(s) != json_string_length(v))
        return false;
    size_t n = crm_utf8_chars(s, json_string_length(v));
    return n >= min && n <= max;
}

/* An optional text member: absent or null gives null. */
static json_t *optional_text(const json_t *obj, const char *key, const char *ptr, size_t max,
                             crm_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return json_null();
    if (!text_ok(v, 1, max)) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be null or a string of 1 to %zu characters", max);
        crm_error_add_field(err, ptr, msg);
        return json_null();
    }
    return json_incref(v);
}

/* An integer in lo..hi, or def when absent or null (a member a merge
 * patch removes takes its default). */
static json_t *bounded_int(const json_t *obj, const char *key, const char *ptr, long long lo,
                           long long hi, json_t *def, crm_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return def;
    json_decref(def);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be an integer from %lld to %lld", lo, hi);
        crm_error_add_field(err, ptr, msg);
        return json_null();
    }
    return json_incref(v);
}

static json_t *check_action(const json_t *v, crm_error *err)
{
    if (v == NULL || json_is_null(v))
        return json_null();
    if (!json_is_object(v)) {
        crm_error_add_field(err, "/treatment/action", "must be null or an object {code, text?}");
        return json_null();
    }
    only_members((json_t *)v, action_members, "/treatment/action", err);
    json_t *code = json_object_get(v, "code");
    if (!text_ok(code, 1, 100)) {
        crm_error_add_field(err, "/treatment/action/code",
                            "is required: a string of 1 to 100 characters");
        code = NULL;
    }
    json_t *text = optional_text(v, "text", "/treatment/action/text", 2000, err);
    return json_pack("{s:O?, s:o}", "code", code, "text", text);
}

static json_t *check_channels(const json_t *v, crm_error *err)
{
    if (v == NULL || json_is_null(v))
        return json_array();
    if (!json_is_array(v)) {
        crm_error_add_field(err, "/treatment/channels", "must be an array of consent channels");
        return json_array();
    }
    json_t *out = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(v, i, c)
    {
        char ptr[48];
        snprintf(ptr, sizeof ptr, "/treatment/channels/%zu", i);
        const char *s = json_string_value(c);
        if (!one_of_list(c, channels)) {
            crm_error_add_field(err, ptr,
                                "must be one of email, sms, phone, mail, push, web, in_app");
            continue;
        }
        bool seen = false;
        size_t k;
        json_t *o;
        json_array_foreach(out, k, o) seen = seen || strcmp(json_string_value(o), s) == 0;
        if (seen)
            crm_error_add_field(err, ptr, "is given twice");
        else
            json_array_append(out, c);
    }
    return out;
}

static json_t *check_value(const json_t *t, crm_error *err)
{
    json_t *v = json_object_get(t, "value");
    if (v == NULL || json_is_null(v))
        return json_integer(0);
    double d = json_number_value(v);
    if (!json_is_number(v) || !isfinite(d) || d < 0 || d > RULE_DEF_VALUE_MAX) {
        crm_error_add_field(err, "/treatment/value", "must be a number from 0 to 1e15");
        return json_null();
    }
    return json_incref(v);
}

static json_t *check_treatment(const json_t *t, crm_error *err)
{
    if (!json_is_object(t)) {
        crm_error_add_field(err, "/treatment", "is required: an object");
        return json_null();
    }
    only_members((json_t *)t, treatment_members, "/treatment", err);
    json_t *purpose = json_object_get(t, "purpose");
    if (json_is_null(purpose))
        purpose = NULL;
    if (purpose != NULL && !one_of_list(purpose, purposes)) {
        crm_error_add_field(err, "/treatment/purpose",
                            "must be one of marketing, service, profiling, analytics, third_party");
        purpose = NULL;
    }
    return json_pack(
        "{s:o, s:o, s:o, s:o, s:s, s:o, s:o}", "offer_code",
        optional_text(t, "offer_code", "/treatment/offer_code", 100, err), "entitlement_code",
        optional_text(t, "entitlement_code", "/treatment/entitlement_code", 100, err), "action",
        check_action(json_object_get(t, "action"), err), "channels",
        check_channels(json_object_get(t, "channels"), err), "purpose",
        purpose ? json_string_value(purpose) : "marketing", "value", check_value(t, err),
        "priority",
        bounded_int(t, "priority", "/treatment/priority", 0, 2147483647, json_integer(0), err));
}

/* One end of the window: null, or an RFC 3339 date-time (sql gets it in UTC). */
static json_t *check_instant(const json_t *a, const char *key, char sql[40], long long *ms,
                             crm_error *err)
{
    json_t *v = json_object_get(a, key);
    sql[0] = '\0';
    if (v == NULL || json_is_null(v))
        return json_null();
    const char *s = json_string_value(v);
    char ptr[24];
    snprintf(ptr, sizeof ptr, "/active/%s", key);
    if (s == NULL || strlen(s) != json_string_length(v) || !crm_rfc3339_epoch_ms(s, ms) ||
        !crm_rfc3339_to_utc(s, sql, 40)) {
        sql[0] = '\0';
        crm_error_add_field(err, ptr, "must be null or an RFC 3339 date-time");
        return json_null();
    }
    return json_incref(v);
}

static json_t *check_active(const json_t *a, rule_def *d, crm_error *err)
{
    if (a == NULL || json_is_null(a))
        a = NULL;
    else if (!json_is_object(a)) {
        crm_error_add_field(err, "/active", "must be null or an object {from?, until?}");
        a = NULL;
    } else {
        only_members((json_t *)a, active_members, "/active", err);
    }
    long long from_ms = 0, until_ms = 0;
    json_t *from = check_instant(a, "from", d->from, &from_ms, err);
    json_t *until = check_instant(a, "until", d->until, &until_ms, err);
    if (d->from[0] != '\0' && d->until[0] != '\0' && until_ms <= from_ms)
        crm_error_add_field(err, "/active/until", "must be after from");
    return json_pack("{s:o, s:o}", "from", from, "until", until);
}

/* Parses the condition, its errors named under /condition. */
static crm_rule *check_condition(const json_t *cond, crm_error *err)
{
    if (cond == NULL || json_is_null(cond)) {
        crm_error_add_field(err, "/condition", "is required: a rule (SegmentRule)");
        return NULL;
    }
    crm_error rerr = CRM_ERROR_INIT;
    crm_rule *r = crm_rule_parse(cond, &rerr);
    if (r == NULL && rerr.code == CRM_E_INVALID && rerr.errors != NULL) {
        size_t i;
        json_t *e;
        json_array_foreach(rerr.errors, i, e)
        {
            const char *f = json_string_value(json_object_get(e, "field"));
            char ptr[CRM_RULE_MAX_FIELD + 64];
            snprintf(ptr, sizeof ptr, "/condition%s", f ? f : "");
            crm_error_add_field(err, ptr, json_string_value(json_object_get(e, "message")));
        }
    } else if (r == NULL && rerr.code == CRM_E_INVALID) {
        crm_error_add_field(err, "/condition", rerr.detail);
    } else if (r == NULL) {
        crm_error_move(err, &rerr);
    }
    crm_error_clear(&rerr);
    return r;
}

static void collect_refs(rule_def *d, crm_error *err)
{
    int n = crm_rule_segment_refs(d->condition, d->refs, d->ref_pointers, RULE_DEF_MAX_REFS);
    if (n > RULE_DEF_MAX_REFS) {
        crm_error_add_field(err, "/condition", "names too many segments");
        n = RULE_DEF_MAX_REFS;
    }
    d->nrefs = n;
    size_t len = 0;
    d->depends[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(d->depends + len, sizeof d->depends - len, "%s%lld", i ? "," : "",
                                d->refs[i]);
    snprintf(d->depends + len, sizeof d->depends - len, "}");
}

bool rule_def_check(const json_t *body, rule_def *d, crm_error *err)
{
    memset(d, 0, sizeof *d);
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    only_members((json_t *)body, top_members, "", err);
    json_t *name = json_object_get(body, "name");
    if (!text_ok(name, 1, 200)) {
        crm_error_add_field(err, "/name", "is required: a string of 1 to 200 characters");
        name = NULL;
    }
    d->condition = check_condition(json_object_get(body, "condition"), err);
    if (d->condition == NULL && err->code != CRM_OK && err->code != CRM_E_INVALID)
        return false;
    if (d->condition != NULL) {
        d->reads = crm_rule_reads(d->condition);
        collect_refs(d, err);
    }
    d->doc = json_pack(
        "{s:O?, s:o, s:O?, s:o, s:o, s:o}", "name", name, "description",
        optional_text(body, "description", "/description", 2000, err), "condition",
        d->condition ? json_object_get(body, "condition") : NULL, "treatment",
        check_treatment(json_object_get(body, "treatment"), err), "active",
        check_active(json_object_get(body, "active"), d, err), "position",
        bounded_int(body, "position", "/position", 0, RULE_DEF_POSITION_MAX, json_null(), err));
    if (d->doc == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (err->errors != NULL || d->condition == NULL)
        return crm_error_set(err, CRM_E_INVALID, "the treatment rule is invalid");
    return true;
}

void rule_def_free(rule_def *d)
{
    json_decref(d->doc);
    crm_rule_free(d->condition);
    d->doc = NULL;
    d->condition = NULL;
}

/* The named segments ($1) that are missing or deleted. */
static crm_stmt refs_missing = CRM_STMT(
    "treatment_rule_refs_missing",
    "SELECT coalesce(array_agg(x ORDER BY x), '{}')::text FROM unnest($1::bigint[]) x"
    " WHERE NOT EXISTS (SELECT 1 FROM segments s WHERE s.id = x AND s.deleted_at IS NULL)");

bool rule_def_check_refs(crm_conn *c, const rule_def *d, crm_error *err)
{
    if (d->nrefs == 0)
        return true;
    const char *params[] = {d->depends};
    PGresult *res = crm_db_exec(c, &refs_missing, 1, params, err);
    if (res == NULL)
        return false;
    const char *missing = PQgetvalue(res, 0, 0);
    bool ok = true;
    for (int i = 0; i < d->nrefs; i++) {
        /* missing is "{3,7}": look for the id between delimiters */
        char id[24];
        snprintf(id, sizeof id, "%lld", d->refs[i]);
        size_t n = strlen(id);
        for (const char *p = strstr(missing, id); p != NULL; p = strstr(p + 1, id)) {
            if ((p[-1] == '{' || p[-1] == ',') && (p[n] == '}' || p[n] == ',')) {
                char ptr[CRM_RULE_MAX_FIELD + 64];
                snprintf(ptr, sizeof ptr, "/condition%s/segment", d->ref_pointers[i]);
                crm_error_add_field(err, ptr, "names no segment");
                ok = false;
                break;
            }
        }
    }
    PQclear(res);
    return ok || crm_error_set(err, CRM_E_INVALID, "the treatment rule is invalid");
}

/*
 * campaigns/def.c — one campaign's definition checked member by member and
 * made canonical (def.h): every problem is a field error named by its JSON
 * pointer; and the status machine.
 */
#include "campaigns/def.h"
#include "consents.h"
#include "currency.h"
#include "customers.h"
#include "json.h"
#include "touchpoints.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const top_members[] = {
    "code",     "name",           "objective",        "audience",
    "channels", "purpose",        "offer_code",       "starts_at",
    "ends_at",  "control_share",  "cost_per_contact", "fixed_cost",
    "currency", "response_types", "attribution_days", NULL};
static const char *const audience_members[] = {"segment_id", "rule_id", NULL};

const char *const campaign_statuses[] = {"draft",     "scheduled", "running",
                                         "completed", "cancelled", NULL};

/* ---- helpers ------------------------------------------------------------------ */

static bool only_members(const json_t *obj, const char *const *allowed, const char *base,
                         crm_error *err)
{
    bool ok = true;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
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

/* A string (no NUL inside) of min..max characters (code points). */
static bool text_ok(const json_t *v, size_t min, size_t max)
{
    const char *s = json_string_value(v);
    if (s == NULL || strlen(s) != json_string_length(v))
        return false;
    size_t n = crm_utf8_chars(s, json_string_length(v));
    return n >= min && n <= max;
}

static json_t *required_text(const json_t *obj, const char *key, size_t max, crm_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (text_ok(v, 1, max))
        return json_incref(v);
    char ptr[48], msg[96];
    snprintf(ptr, sizeof ptr, "/%s", key);
    snprintf(msg, sizeof msg, "is required: a string of 1 to %zu characters", max);
    crm_error_add_field(err, ptr, msg);
    return json_null();
}

/* Absent or null gives null. */
static json_t *optional_text(const json_t *obj, const char *key, size_t min, size_t max,
                             crm_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return json_null();
    if (text_ok(v, min, max))
        return json_incref(v);
    char ptr[48], msg[96];
    snprintf(ptr, sizeof ptr, "/%s", key);
    snprintf(msg, sizeof msg, "must be null or a string of %zu to %zu characters", min, max);
    crm_error_add_field(err, ptr, msg);
    return json_null();
}

/* A string (no NUL inside) that is one of list. */
static bool one_of_list(const json_t *v, const char *const *list)
{
    const char *s = json_string_value(v);
    return s != NULL && strlen(s) == json_string_length(v) && crm_one_of(s, list);
}

/* An array of min..max distinct members of list; each bad element is named
 * by its index. */
static json_t *distinct_list(const json_t *obj, const char *key, size_t min, size_t max,
                             const char *const *list, const char *what, crm_error *err)
{
    json_t *v = json_object_get(obj, key);
    char base[32], msg[128];
    snprintf(base, sizeof base, "/%s", key);
    json_t *out = json_array();
    if (!json_is_array(v) || json_array_size(v) < min || json_array_size(v) > max) {
        snprintf(msg, sizeof msg, "is required: an array of %zu to %zu distinct %s", min, max,
                 what);
        crm_error_add_field(err, base, msg);
        return out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        char ptr[64];
        snprintf(ptr, sizeof ptr, "%s/%zu", base, i);
        if (!one_of_list(e, list)) {
            snprintf(msg, sizeof msg, "is not one of the %s crmd knows", what);
            crm_error_add_field(err, ptr, msg);
            continue;
        }
        bool seen = false;
        size_t k;
        json_t *o;
        json_array_foreach(out, k, o) seen =
            seen || strcmp(json_string_value(o), json_string_value(e)) == 0;
        if (seen)
            crm_error_add_field(err, ptr, "is given twice");
        else
            json_array_append(out, e);
    }
    return out;
}

static json_t *check_audience(const json_t *a, crm_error *err)
{
    json_t *seg = NULL, *rule = NULL;
    if (!json_is_object(a)) {
        crm_error_add_field(err, "/audience",
                            "is required: an object with one of segment_id and rule_id");
    } else {
        only_members(a, audience_members, "/audience", err);
        seg = json_object_get(a, "segment_id");
        rule = json_object_get(a, "rule_id");
        if (json_is_null(seg))
            seg = NULL;
        if (json_is_null(rule))
            rule = NULL;
        bool bad = false;
        if (seg != NULL && (!json_is_integer(seg) || json_integer_value(seg) < 1)) {
            crm_error_add_field(err, "/audience/segment_id", "must be null or a segment's id");
            seg = NULL;
            bad = true;
        }
        if (rule != NULL && (!json_is_integer(rule) || json_integer_value(rule) < 1)) {
            crm_error_add_field(err, "/audience/rule_id", "must be null or a treatment rule's id");
            rule = NULL;
            bad = true;
        }
        if ((seg == NULL) == (rule == NULL) && !bad)
            crm_error_add_field(err, "/audience",
                                "must name exactly one of segment_id and rule_id");
    }
    return json_pack("{s:O?, s:O?}", "segment_id", seg, "rule_id", rule);
}

/* null, or an RFC 3339 date-time (sql gets it in UTC, *ms its instant). */
static json_t *check_instant(const json_t *obj, const char *key, char sql[40], long long *ms,
                             crm_error *err)
{
    json_t *v = json_object_get(obj, key);
    sql[0] = '\0';
    *ms = 0;
    if (v == NULL || json_is_null(v))
        return json_null();
    const char *s = json_string_value(v);
    if (s == NULL || strlen(s) != json_string_length(v) || !crm_rfc3339_epoch_ms(s, ms) ||
        !crm_rfc3339_to_utc(s, sql, 40)) {
        sql[0] = '\0';
        char ptr[32];
        snprintf(ptr, sizeof ptr, "/%s", key);
        crm_error_add_field(err, ptr, "must be null or an RFC 3339 date-time");
        return json_null();
    }
    return json_incref(v);
}

/* A decimal amount >= 0 with at most int_digits digits before the point
 * and frac_digits after it: a string ("12.50") or an integer. The
 * canonical form is the string; *positive when it is above 0. */
static json_t *check_money(const json_t *obj, const char *key, int int_digits, int frac_digits,
                           bool *positive, crm_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return json_string("0");
    char buf[48];
    const char *s = NULL;
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        s = buf;
    } else if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v)) {
        s = json_string_value(v);
    }
    bool ok = s != NULL;
    int ints = 0, fracs = 0;
    const char *p = s;
    bool nonzero = false;
    while (ok && *p >= '0' && *p <= '9') {
        nonzero = nonzero || *p != '0';
        ints++;
        p++;
    }
    if (ok && *p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            nonzero = nonzero || *p != '0';
            fracs++;
            p++;
        }
        ok = fracs > 0;
    }
    /* leading zeros do not count against the digits before the point */
    int lead = 0;
    while (ok && s[lead] == '0' && lead + 1 < ints)
        lead++;
    ok = ok && *p == '\0' && ints >= 1 && ints - lead <= int_digits && fracs <= frac_digits;
    if (!ok) {
        char ptr[32], msg[128];
        snprintf(ptr, sizeof ptr, "/%s", key);
        snprintf(msg, sizeof msg,
                 "must be an amount of 0 or more: a decimal string with at most %d digits"
                 " before the point and %d after it",
                 int_digits, frac_digits);
        crm_error_add_field(err, ptr, msg);
        return json_string("0");
    }
    *positive = *positive || nonzero;
    return json_string(s);
}

static json_t *check_control_share(const json_t *obj, crm_error *err)
{
    json_t *v = json_object_get(obj, "control_share");
    double x = json_number_value(v);
    if (!json_is_number(v) || !isfinite(x) || x < 0 || x > CAMPAIGN_CONTROL_SHARE_MAX) {
        crm_error_add_field(err, "/control_share", "is required: a number from 0 to 0.5");
        return json_integer(0);
    }
    return json_incref(v);
}

static json_t *check_attribution_days(const json_t *obj, crm_error *err)
{
    json_t *v = json_object_get(obj, "attribution_days");
    if (v == NULL || json_is_null(v))
        return json_integer(30);
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 365) {
        crm_error_add_field(err, "/attribution_days", "must be an integer from 1 to 365");
        return json_integer(30);
    }
    return json_incref(v);
}

/* ---- the definition -------------------------------------------------------------- */

bool campaign_def_check(const json_t *body, campaign_def *d, crm_error *err)
{
    memset(d, 0, sizeof *d);
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    only_members(body, top_members, "", err);

    json_t *purpose = json_object_get(body, "purpose");
    if (!one_of_list(purpose, crm_consent_purposes)) {
        crm_error_add_field(err, "/purpose",
                            "is required (the channels' contacts serve it): one of marketing,"
                            " service, profiling, analytics, third_party");
        purpose = NULL;
    }
    json_t *starts = check_instant(body, "starts_at", d->starts, &d->starts_ms, err);
    json_t *ends = check_instant(body, "ends_at", d->ends, &d->ends_ms, err);
    if (d->starts[0] != '\0' && d->ends[0] != '\0' && d->ends_ms <= d->starts_ms)
        crm_error_add_field(err, "/ends_at", "must be after starts_at");
    bool cost = false;
    json_t *per_contact = check_money(body, "cost_per_contact", 10, 4, &cost, err);
    json_t *fixed = check_money(body, "fixed_cost", 12, 2, &cost, err);
    json_t *currency = json_object_get(body, "currency");
    if (json_is_null(currency))
        currency = NULL;
    if (currency != NULL && (!json_is_string(currency) ||
                             strlen(json_string_value(currency)) != json_string_length(currency) ||
                             !crm_currency_known(json_string_value(currency)))) {
        crm_error_add_field(err, "/currency", "must be null or an ISO 4217 currency code");
        currency = json_null();
    } else if (currency == NULL && cost) {
        crm_error_add_field(err, "/currency", "is required when a cost is above 0");
    }
    d->has_cost = cost;

    d->doc = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:O?, s:o, s:o, s:o, s:o, s:o, s:o, s:O?, s:o, s:o}", "code",
        required_text(body, "code", 100, err), "name", required_text(body, "name", 200, err),
        "objective", optional_text(body, "objective", 0, 2000, err), "audience",
        check_audience(json_object_get(body, "audience"), err), "channels",
        distinct_list(body, "channels", 1, CAMPAIGN_CHANNELS_MAX, crm_consent_channels,
                      "consent channels", err),
        "purpose", purpose, "offer_code", optional_text(body, "offer_code", 1, 100, err),
        "starts_at", starts, "ends_at", ends, "control_share", check_control_share(body, err),
        "cost_per_contact", per_contact, "fixed_cost", fixed, "currency",
        json_is_null(currency) ? NULL : currency, "response_types",
        distinct_list(body, "response_types", 1, CAMPAIGN_RESPONSE_TYPES_MAX, crm_touchpoint_types,
                      "touchpoint types", err),
        "attribution_days", check_attribution_days(body, err));
    if (d->doc == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (err->errors != NULL)
        return crm_error_set(err, CRM_E_INVALID, "the campaign is invalid");
    return true;
}

void campaign_def_free(campaign_def *d)
{
    json_decref(d->doc);
    d->doc = NULL;
}

/* ---- the status machine ------------------------------------------------------------ */

/* from -> the statuses a PATCH may move it to. */
static const struct {
    const char *from;
    const char *const to[3];
} transitions[] = {
    {"draft", {"scheduled", "cancelled", NULL}},
    {"scheduled", {"draft", "cancelled", NULL}},
    {"running", {"completed", "cancelled", NULL}},
    {"completed", {NULL}},
    {"cancelled", {NULL}},
};

static const char *const *targets_of(const char *from)
{
    for (size_t i = 0; from != NULL && i < sizeof transitions / sizeof transitions[0]; i++)
        if (strcmp(transitions[i].from, from) == 0)
            return transitions[i].to;
    return NULL;
}

bool campaign_transition_allowed(const char *from, const char *to)
{
    const char *const *t = targets_of(from);
    return t != NULL && to != NULL && crm_one_of(to, t);
}

json_t *campaign_allowed_transitions(const char *from)
{
    json_t *out = json_array();
    const char *const *t = targets_of(from);
    for (size_t i = 0; t != NULL && t[i] != NULL; i++)
        json_array_append_new(out, json_string(t[i]));
    return out;
}

const char *const *campaign_locked_members(const char *status)
{
    /* code too: it is what the touchpoints of a running campaign carry */
    static const char *const running[] = {"code",          "audience",   "channels",  "purpose",
                                          "control_share", "offer_code", "starts_at", NULL};
    static const char *const final[] = {"code",
                                        "audience",
                                        "channels",
                                        "purpose",
                                        "offer_code",
                                        "starts_at",
                                        "ends_at",
                                        "control_share",
                                        "cost_per_contact",
                                        "fixed_cost",
                                        "currency",
                                        "response_types",
                                        "attribution_days",
                                        NULL};
    if (status != NULL && strcmp(status, "running") == 0)
        return running;
    if (status != NULL && (strcmp(status, "completed") == 0 || strcmp(status, "cancelled") == 0))
        return final;
    return NULL;
}

/*
 * segments/rule.c — the rule language's fields and its parser: a JSON tree
 * checked node by node into a crm_rule (segments/internal.h) whose values
 * are already in the forms both the SQL compiler and the evaluator use
 * (exact decimal text of numbers, epoch milliseconds and UTC text of
 * times). Every problem found is reported with the JSON pointer of the
 * node or member at fault, up to CRM_RULE_MAX_ERRORS of them.
 */
#include "segments/internal.h"

#include "civil.h"
#include "consents.h"
#include "customers.h"
#include "jbuf.h"
#include "json.h"
#include "touchpoints.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUSTOMER_FIELD(name, type, sql, load, values) {name, type, SRC_CUSTOMER, sql, values},
const rule_field rule_customer_fields[RULE_N_CUSTOMER_FIELDS] = {
    RULE_CUSTOMER_FIELDS(CUSTOMER_FIELD)};

#define METRICS_FIELD(name, type, sql, values) {name, type, SRC_METRICS, sql, values},
const rule_field rule_metrics_fields[RULE_N_METRICS_FIELDS] = {RULE_METRICS_FIELDS(METRICS_FIELD)};

const rule_field rule_attribute_field = {"attributes", RT_ATTR, SRC_ATTRIBUTES, "c.attributes",
                                         ENUM_NONE};
const rule_field rule_consent_field = {"consent", RT_CONSENT, SRC_CONSENT, NULL, ENUM_CONSENT};

const char *const rule_metric_stages[] = {"prospect", "new",      "active", "at_risk",
                                          "lapsed",   "won_back", NULL};

static const char *const op_names[] = {
    [OP_EQ] = "eq",
    [OP_NE] = "ne",
    [OP_LT] = "lt",
    [OP_LTE] = "lte",
    [OP_GT] = "gt",
    [OP_GTE] = "gte",
    [OP_IN] = "in",
    [OP_CONTAINS] = "contains",
    [OP_EXISTS] = "exists",
    [OP_BETWEEN] = "between",
    [OP_STARTS_WITH] = "starts_with",
};
#define N_OPS ((int)(sizeof op_names / sizeof op_names[0]))

static const char *const agg_names[] = {
    [AGG_COUNT] = "count", [AGG_SUM] = "sum", [AGG_LAST] = "last"};

#define BIT(op) (1u << (op))
#define ORDER_OPS                                                                                  \
    (BIT(OP_EQ) | BIT(OP_NE) | BIT(OP_LT) | BIT(OP_LTE) | BIT(OP_GT) | BIT(OP_GTE) |               \
     BIT(OP_BETWEEN))

/* The operators each type accepts (segments.h). */
static unsigned type_ops(rule_type t)
{
    switch (t) {
    case RT_TEXT:
        return BIT(OP_EQ) | BIT(OP_NE) | BIT(OP_IN) | BIT(OP_CONTAINS) | BIT(OP_STARTS_WITH) |
               BIT(OP_EXISTS);
    case RT_ENUM:
        return BIT(OP_EQ) | BIT(OP_NE) | BIT(OP_IN) | BIT(OP_EXISTS);
    case RT_EXACT:
    case RT_FLOAT:
        return ORDER_OPS | BIT(OP_IN) | BIT(OP_EXISTS);
    case RT_TIME:
    case RT_DATE:
        return ORDER_OPS | BIT(OP_EXISTS);
    case RT_TAGS:
        return BIT(OP_CONTAINS) | BIT(OP_IN) | BIT(OP_EXISTS);
    case RT_CONSENT:
        return BIT(OP_EQ) | BIT(OP_NE) | BIT(OP_IN);
    case RT_BOOL:
        return BIT(OP_EQ) | BIT(OP_NE);
    case RT_ATTR:
        return BIT(OP_EXISTS);
    }
    return 0;
}

static const char *type_name(rule_type t)
{
    switch (t) {
    case RT_TEXT:
        return "text";
    case RT_ENUM:
        return "enumerated";
    case RT_EXACT:
    case RT_FLOAT:
        return "number";
    case RT_TIME:
        return "timestamp";
    case RT_DATE:
        return "date";
    case RT_TAGS:
        return "tags";
    case RT_CONSENT:
        return "consent";
    case RT_BOOL:
        return "boolean";
    case RT_ATTR:
        return "attribute";
    }
    return "";
}

/* ---- the parser's state and its reports ---------------------------------- */

typedef struct parser {
    crm_rule *rule;
    crm_error *err;
    int nerrors;
    bool stop; /* past the node limit, or out of memory: no more nodes */
    bool oom;
} parser;

static void fail(parser *p, const char *pointer, const char *message)
{
    if (p->nerrors < CRM_RULE_MAX_ERRORS)
        crm_error_add_field(p->err, pointer, message);
    p->nerrors++;
}

static void *alloc(parser *p, size_t size)
{
    void *m = crm_arena_alloc(&p->rule->arena, size);
    if (m == NULL) {
        p->oom = p->stop = true;
        return NULL;
    }
    memset(m, 0, size);
    return m;
}

static const char *copy(parser *p, const char *s, size_t len)
{
    char *c = crm_arena_strndup(&p->rule->arena, s, len);
    if (c == NULL)
        p->oom = p->stop = true;
    return c;
}

static void member_pointer(char *out, const char *base, const char *key)
{
    crm_json_pointer_append(out, CRM_JSON_POINTER_MAX, base, key);
}

static void index_pointer(char *out, const char *base, size_t i)
{
    char key[24];
    snprintf(key, sizeof key, "%zu", i);
    crm_json_pointer_append(out, CRM_JSON_POINTER_MAX, base, key);
}

/* Reports every member of obj not in allowed (NULL-terminated). */
static void only_members(parser *p, const json_t *obj, const char *const *allowed, const char *base)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (!crm_one_of(key, allowed)) {
            char ptr[CRM_JSON_POINTER_MAX];
            member_pointer(ptr, base, key);
            fail(p, ptr, "unknown member");
        }
    }
}

/* ---- scalar values --------------------------------------------------------- */

/* A string of at most max characters without a NUL; false (reported at
 * ptr) otherwise. */
static bool string_ok(parser *p, const json_t *j, size_t max, const char *ptr)
{
    if (!json_is_string(j)) {
        fail(p, ptr, "must be a string");
        return false;
    }
    const char *s = json_string_value(j);
    size_t len = json_string_length(j);
    if (strlen(s) != len) {
        fail(p, ptr, "must not hold a NUL character");
        return false;
    }
    if (crm_utf8_chars(s, len) > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be at most %zu characters", max);
        fail(p, ptr, msg);
        return false;
    }
    return true;
}

/* The earliest and latest instants a time of a rule may name. */
#define TIME_MIN_MS (-62135596800000LL) /* 0001-01-01T00:00:00Z */
#define TIME_MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

static bool time_text(parser *p, long long ms, rule_value *v)
{
    char text[32];
    size_t n = crm_format_timestamp(ms, text);
    v->kind = VAL_TIME;
    v->ms = ms;
    v->text = copy(p, text, n);
    return v->text != NULL;
}

/* An RFC 3339 date-time of the years 0001 to 9999 (UTC), to the
 * millisecond. */
static bool parse_time(parser *p, const json_t *j, const char *ptr, rule_value *v)
{
    long long ms;
    if (!json_is_string(j) || !crm_rfc3339_epoch_ms(json_string_value(j), &ms)) {
        fail(p, ptr, "must be an RFC 3339 date-time such as 2026-11-23T10:15:00Z");
        return false;
    }
    if (ms < TIME_MIN_MS || ms > TIME_MAX_MS) {
        fail(p, ptr, "must lie in the years 0001 to 9999 once moved to UTC");
        return false;
    }
    return time_text(p, ms, v);
}

/* "YYYY-MM-DD", a calendar date of the years 0001 to 9999. */
static bool date_valid(const char *s, size_t len)
{
    if (len != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    long long y = atoi(s);
    int m = atoi(s + 5), d = atoi(s + 8);
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > 31)
        return false;
    long long yy;
    int mm, dd;
    crm_civil_from_days(crm_days_from_civil(y, m, d), &yy, &mm, &dd);
    return yy == y && mm == m && dd == d;
}

/* {"days_ago": N}, N from 0 to CRM_RULE_MAX_DAYS. */
static bool parse_days_ago(parser *p, const json_t *j, const char *ptr, rule_value *v)
{
    static const char *const allowed[] = {"days_ago", NULL};
    char at[CRM_JSON_POINTER_MAX];
    only_members(p, j, allowed, ptr);
    member_pointer(at, ptr, "days_ago");
    json_t *n = json_object_get(j, "days_ago");
    if (!json_is_integer(n) || json_integer_value(n) < 0 ||
        json_integer_value(n) > CRM_RULE_MAX_DAYS) {
        fail(p, at, "must be an integer from 0 to 36500");
        return false;
    }
    v->kind = VAL_DAYS_AGO;
    v->days = (int)json_integer_value(n);
    return json_object_size(j) == 1;
}

static bool parse_number(parser *p, const json_t *j, const char *ptr, rule_value *v)
{
    char text[CRM_REAL_TEXT_SIZE > 24 ? CRM_REAL_TEXT_SIZE : 24];
    if (json_is_integer(j)) {
        snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    } else if (json_is_real(j)) {
        crm_format_real(json_real_value(j), text);
    } else {
        fail(p, ptr, "must be a number");
        return false;
    }
    v->kind = VAL_NUMBER;
    v->text = copy(p, text, strlen(text));
    v->f = strtod(text, NULL); /* as PostgreSQL reads the same text as float8 */
    return v->text != NULL;
}

static bool enum_known(rule_enum e, const char *s)
{
    switch (e) {
    case ENUM_KIND:
        return crm_one_of(s, crm_customer_kinds);
    case ENUM_STAGE:
        return crm_lifecycle_stage_valid(s);
    case ENUM_COUNTRY:
        return crm_country_valid(s);
    case ENUM_METRIC_STAGE:
        return crm_one_of(s, rule_metric_stages);
    case ENUM_CONSENT:
        /* a decision's status, or none when there is no decision */
        return crm_one_of(s, crm_consent_statuses) || strcmp(s, "none") == 0;
    case ENUM_NONE:
        return true;
    }
    return false;
}

/* One value of type t (an element of "in" or "between" included). */
static bool parse_scalar(parser *p, const rule_node *n, const json_t *j, const char *ptr,
                         rule_value *v)
{
    switch (n->type) {
    case RT_TEXT:
    case RT_ENUM:
    case RT_CONSENT:
    case RT_TAGS:
        if (!string_ok(p, j, CRM_RULE_MAX_STRING, ptr))
            return false;
        if (!enum_known(n->field->values, json_string_value(j))) {
            fail(p, ptr,
                 n->type == RT_CONSENT ? "must be granted, revoked or none"
                                       : "is not one of the field's values");
            return false;
        }
        v->kind = VAL_TEXT;
        v->text = copy(p, json_string_value(j), json_string_length(j));
        return v->text != NULL;
    case RT_EXACT:
    case RT_FLOAT:
        return parse_number(p, j, ptr, v);
    case RT_BOOL:
        if (!json_is_boolean(j)) {
            fail(p, ptr, "must be true or false");
            return false;
        }
        v->kind = VAL_BOOL;
        v->b = json_is_true(j);
        v->text = v->b ? "true" : "false";
        return true;
    case RT_TIME:
        if (json_is_object(j))
            return parse_days_ago(p, j, ptr, v);
        return parse_time(p, j, ptr, v);
    case RT_DATE:
        if (json_is_object(j))
            return parse_days_ago(p, j, ptr, v);
        if (!json_is_string(j) || !date_valid(json_string_value(j), json_string_length(j))) {
            fail(p, ptr, "must be a date (YYYY-MM-DD) or {\"days_ago\": N}");
            return false;
        }
        v->kind = VAL_DATE;
        v->text = copy(p, json_string_value(j), 10);
        return v->text != NULL;
    case RT_ATTR:
        break;
    }
    fail(p, ptr, "takes no value");
    return false;
}

/* The type an attribute takes from the value it is compared with. */
static rule_type attribute_type(const json_t *v)
{
    return json_is_string(v)    ? RT_TEXT
           : json_is_number(v)  ? RT_FLOAT
           : json_is_boolean(v) ? RT_BOOL
                                : RT_ATTR;
}

/* in's values as one JSON array, the form SQL reads them in: strings as
 * Jansson writes them, numbers as their exact decimal text. */
static const char *list_json(parser *p, const rule_node *n)
{
    if (n->values[0].kind == VAL_NUMBER) {
        size_t len = 3;
        for (int i = 0; i < n->nvalues; i++)
            len += strlen(n->values[i].text) + 1;
        char *out = alloc(p, len);
        if (out == NULL)
            return NULL;
        char *w = out;
        *w++ = '[';
        for (int i = 0; i < n->nvalues; i++) {
            if (i > 0)
                *w++ = ',';
            size_t l = strlen(n->values[i].text);
            memcpy(w, n->values[i].text, l);
            w += l;
        }
        *w++ = ']';
        *w = '\0';
        return out;
    }
    json_t *a = json_array();
    for (int i = 0; a != NULL && i < n->nvalues; i++)
        if (json_array_append_new(a, json_string(n->values[i].text)) != 0) {
            json_decref(a);
            a = NULL;
        }
    char *text = a != NULL ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    const char *out = text != NULL ? copy(p, text, strlen(text)) : NULL;
    if (text == NULL)
        p->oom = p->stop = true;
    free(text);
    return out;
}

/* "in": 1 to CRM_RULE_MAX_LIST values. */
static bool parse_list(parser *p, rule_node *n, const json_t *j, const char *ptr)
{
    size_t count = json_array_size(j);
    if (!json_is_array(j) || count == 0 || count > CRM_RULE_MAX_LIST) {
        fail(p, ptr, "must be an array of 1 to 1000 values");
        return false;
    }
    n->values = alloc(p, sizeof *n->values * count);
    if (n->values == NULL)
        return false;
    n->nvalues = (int)count;
    bool ok = true;
    for (size_t i = 0; i < count && !p->stop; i++) {
        char at[CRM_JSON_POINTER_MAX];
        index_pointer(at, ptr, i);
        ok = parse_scalar(p, n, json_array_get(j, i), at, &n->values[i]) && ok;
    }
    if (ok && !p->stop)
        n->list_json = list_json(p, n);
    return ok && !p->stop;
}

/* The value member of a comparison, as its op and type want it. */
static bool parse_value(parser *p, rule_node *n, const json_t *node, const char *base)
{
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, "value");
    json_t *j = json_object_get(node, "value");
    if (n->op == OP_EXISTS) {
        if (j != NULL) {
            fail(p, ptr, "exists takes no value");
            return false;
        }
        return true;
    }
    if (j == NULL) {
        fail(p, ptr, "is required");
        return false;
    }
    if (n->op == OP_IN)
        return parse_list(p, n, j, ptr);
    if (n->op == OP_BETWEEN) {
        if (!json_is_array(j) || json_array_size(j) != 2) {
            fail(p, ptr, "must be an array of two values, the lowest and the highest");
            return false;
        }
        n->values = alloc(p, sizeof *n->values * 2);
        if (n->values == NULL)
            return false;
        n->nvalues = 2;
        char at0[CRM_JSON_POINTER_MAX], at1[CRM_JSON_POINTER_MAX];
        index_pointer(at0, ptr, 0);
        index_pointer(at1, ptr, 1);
        bool ok0 = parse_scalar(p, n, json_array_get(j, 0), at0, &n->values[0]);
        bool ok1 = parse_scalar(p, n, json_array_get(j, 1), at1, &n->values[1]);
        return ok0 && ok1;
    }
    n->values = alloc(p, sizeof *n->values);
    if (n->values == NULL)
        return false;
    n->nvalues = 1;
    return parse_scalar(p, n, j, ptr, &n->values[0]);
}

/* The op member: one of op_names; -1 (reported) otherwise. */
static int parse_op(parser *p, const json_t *node, const char *base)
{
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, "op");
    json_t *j = json_object_get(node, "op");
    if (j == NULL) {
        fail(p, ptr, "is required");
        return -1;
    }
    for (int i = 0; json_is_string(j) && i < N_OPS; i++)
        if (strcmp(json_string_value(j), op_names[i]) == 0)
            return i;
    fail(p, ptr,
         "must be one of eq, ne, lt, lte, gt, gte, in, contains, exists, between, starts_with");
    return -1;
}

/* Checks that n's op applies to n's type (reported at base/op). */
static bool op_applies(parser *p, const rule_node *n, const char *base)
{
    unsigned ops = type_ops(n->type);
    if (n->kind == NODE_TOUCHPOINTS && n->agg != AGG_LAST)
        ops &= ~BIT(OP_EXISTS); /* a count or a sum is never missing */
    if (ops & BIT(n->op))
        return true;
    char ptr[CRM_JSON_POINTER_MAX], msg[96];
    member_pointer(ptr, base, "op");
    snprintf(msg, sizeof msg, "%s does not apply to %s values", op_names[n->op],
             type_name(n->type));
    fail(p, ptr, msg);
    return false;
}

/* ---- fields ------------------------------------------------------------------ */

/* The key of an attribute path: a letter or "_", then letters, digits, "_"
 * and "-" (so that no key reads as an array index in jsonb_extract_path). */
static bool attribute_key_valid(const char *s, size_t len)
{
    if (len == 0 || len > CRM_RULE_MAX_KEY)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!letter && (i == 0 || !((c >= '0' && c <= '9') || c == '-')))
            return false;
    }
    return true;
}

/* Splits rest at each '.' into n->keys; false when a key is not valid or
 * there are too many. */
static bool split_keys(parser *p, rule_node *n, const char *rest)
{
    n->nkeys = 0;
    for (;;) {
        const char *dot = strchr(rest, '.');
        size_t len = dot ? (size_t)(dot - rest) : strlen(rest);
        if (n->nkeys == CRM_RULE_MAX_KEYS || !attribute_key_valid(rest, len))
            return false;
        n->keys[n->nkeys] = copy(p, rest, len);
        if (n->keys[n->nkeys++] == NULL)
            return false;
        if (dot == NULL)
            return true;
        rest = dot + 1;
    }
}

/* "consent.<channel>.<purpose>" past its prefix. */
static bool consent_keys(parser *p, rule_node *n, const char *rest)
{
    const char *dot = strchr(rest, '.');
    if (dot == NULL)
        return false;
    char channel[32];
    size_t len = (size_t)(dot - rest);
    if (len >= sizeof channel)
        return false;
    memcpy(channel, rest, len);
    channel[len] = '\0';
    if (!crm_consent_channel_known(channel) || !crm_consent_purpose_known(dot + 1))
        return false;
    n->keys[0] = copy(p, channel, len);
    n->keys[1] = copy(p, dot + 1, strlen(dot + 1));
    n->nkeys = 2;
    return n->keys[0] != NULL && n->keys[1] != NULL;
}

static const rule_field *find_field(const rule_field *fields, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

/* The field member: sets n->field (and its keys); reported at base/field. */
static bool parse_field(parser *p, rule_node *n, const json_t *node, const char *base)
{
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, "field");
    json_t *j = json_object_get(node, "field");
    if (!json_is_string(j) || json_string_length(j) > CRM_RULE_MAX_FIELD ||
        strlen(json_string_value(j)) != json_string_length(j)) {
        fail(p, ptr, "must be the name of a field");
        return false;
    }
    const char *name = json_string_value(j);
    if (strncmp(name, "attributes.", 11) == 0) {
        n->field = &rule_attribute_field;
        if (split_keys(p, n, name + 11))
            return true;
        fail(p, ptr,
             "must be attributes. and 1 to 8 keys of up to 64 letters, digits, _ or -, "
             "each beginning with a letter or _");
        return false;
    }
    if (strncmp(name, "consent.", 8) == 0) {
        n->field = &rule_consent_field;
        if (consent_keys(p, n, name + 8))
            return true;
        fail(p, ptr, "must be consent.<channel>.<purpose> with a known channel and purpose");
        return false;
    }
    n->field = find_field(rule_customer_fields, RULE_N_CUSTOMER_FIELDS, name);
    if (n->field == NULL)
        n->field = find_field(rule_metrics_fields, RULE_N_METRICS_FIELDS, name);
    if (n->field == NULL) {
        fail(p, ptr, "unknown field");
        return false;
    }
    return true;
}

/* An attribute's type, from its op and value (in and between: the first
 * element), and every element of the same JSON type. */
static bool attribute_typed(parser *p, rule_node *n, const json_t *node, const char *base)
{
    json_t *v = json_object_get(node, "value");
    if (n->op == OP_EXISTS || v == NULL) {
        n->type = RT_ATTR;
        return true;
    }
    bool list = n->op == OP_IN || n->op == OP_BETWEEN;
    n->type = attribute_type(list ? json_array_get(v, 0) : v);
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, "value");
    if (n->type == RT_ATTR) {
        fail(p, ptr,
             list ? "must be an array of strings or of numbers"
                  : "must be a string, a number or a boolean");
        return false;
    }
    if (list && n->type == RT_BOOL) {
        fail(p, ptr, "must be an array of strings or of numbers");
        return false;
    }
    return true;
}

/* {"field", "op", "value"} */
static bool parse_comparison(parser *p, rule_node *n, const json_t *node, const char *base)
{
    static const char *const allowed[] = {"field", "op", "value", NULL};
    only_members(p, node, allowed, base);
    bool field_ok = parse_field(p, n, node, base);
    int op = parse_op(p, node, base);
    if (!field_ok || op < 0)
        return false;
    n->op = (rule_op)op;
    n->type = n->field->type;
    if (n->field->source == SRC_ATTRIBUTES && !attribute_typed(p, n, node, base))
        return false;
    if (!op_applies(p, n, base))
        return false;
    return parse_value(p, n, node, base);
}

/* ---- touchpoint aggregates ----------------------------------------------- */

/* A string member of the touchpoints filter: NULL when absent, else the
 * copy when it passes (reported otherwise). */
static bool filter_string(parser *p, const json_t *tp, const char *key, const char *base,
                          const char *const *list, const char *what, const char **out)
{
    json_t *j = json_object_get(tp, key);
    if (j == NULL)
        return true;
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, key);
    if (list != NULL) {
        if (!json_is_string(j) || !crm_one_of(json_string_value(j), list)) {
            fail(p, ptr, what);
            return false;
        }
    } else if (!string_ok(p, j, CRM_RULE_ID_MAX, ptr)) {
        return false;
    } else if (json_string_length(j) == 0) {
        fail(p, ptr, "must not be empty");
        return false;
    }
    *out = copy(p, json_string_value(j), json_string_length(j));
    return *out != NULL;
}

/* The window: within_days, or since and/or until. */
static bool parse_window(parser *p, rule_node *n, const json_t *tp, const char *base)
{
    json_t *within = json_object_get(tp, "within_days"), *since = json_object_get(tp, "since"),
           *until = json_object_get(tp, "until");
    char ptr[CRM_JSON_POINTER_MAX];
    bool ok = true;
    if (within != NULL) {
        member_pointer(ptr, base, "within_days");
        if (!json_is_integer(within) || json_integer_value(within) < 1 ||
            json_integer_value(within) > CRM_RULE_MAX_DAYS) {
            fail(p, ptr, "must be an integer from 1 to 36500");
            ok = false;
        } else {
            n->within_days = (int)json_integer_value(within);
        }
    }
    rule_value v;
    if (since != NULL) {
        member_pointer(ptr, base, "since");
        if (within != NULL) {
            fail(p, ptr, "since and within_days cannot both be given");
            ok = false;
        } else if (parse_time(p, since, ptr, &v)) {
            n->since_text = v.text;
            n->since_ms = v.ms;
        } else {
            ok = false;
        }
    }
    if (until != NULL) {
        member_pointer(ptr, base, "until");
        if (!parse_time(p, until, ptr, &v)) {
            ok = false;
        } else if (n->since_text != NULL && v.ms <= n->since_ms) {
            fail(p, ptr, "must be later than since");
            ok = false;
        } else {
            n->until_text = v.text;
            n->until_ms = v.ms;
        }
    }
    return ok;
}

/* {"touchpoints": {...}, "agg", "op", "value"} */
static bool parse_aggregate(parser *p, rule_node *n, const json_t *node, const char *base)
{
    static const char *const allowed[] = {"touchpoints", "agg", "op", "value", NULL};
    static const char *const filter[] = {"type",       "channel", "campaign_id",
                                         "offer_code", "sku",     "within_days",
                                         "since",      "until",   NULL};
    only_members(p, node, allowed, base);
    char tbase[CRM_JSON_POINTER_MAX], ptr[CRM_JSON_POINTER_MAX];
    member_pointer(tbase, base, "touchpoints");
    json_t *tp = json_object_get(node, "touchpoints");
    bool ok = true;
    if (!json_is_object(tp)) {
        fail(p, tbase,
             "must be an object: type, channel, campaign_id, offer_code, sku and the window");
        ok = false;
    } else {
        only_members(p, tp, filter, tbase);
        ok = filter_string(p, tp, "type", tbase, crm_touchpoint_types, "must be a touchpoint type",
                           &n->tp_type) &&
             ok;
        ok = filter_string(p, tp, "channel", tbase, crm_touchpoint_channels,
                           "must be a touchpoint channel", &n->tp_channel) &&
             ok;
        ok = filter_string(p, tp, "campaign_id", tbase, NULL, NULL, &n->tp_campaign) && ok;
        ok = filter_string(p, tp, "offer_code", tbase, NULL, NULL, &n->tp_offer) && ok;
        ok = filter_string(p, tp, "sku", tbase, NULL, NULL, &n->tp_sku) && ok;
        ok = parse_window(p, n, tp, tbase) && ok;
    }
    member_pointer(ptr, base, "agg");
    json_t *agg = json_object_get(node, "agg");
    int a = -1;
    for (int i = 0; json_is_string(agg) && i < 3; i++)
        if (strcmp(json_string_value(agg), agg_names[i]) == 0)
            a = i;
    if (a < 0) {
        fail(p, ptr, agg == NULL ? "is required" : "must be count, sum or last");
        ok = false;
    }
    int op = parse_op(p, node, base);
    if (a < 0 || op < 0)
        return false;
    n->agg = (rule_agg)a;
    n->type = n->agg == AGG_LAST ? RT_TIME : RT_EXACT;
    n->op = (rule_op)op;
    if (!op_applies(p, n, base))
        return false;
    return parse_value(p, n, node, base) && ok;
}

/* ---- segment membership ---------------------------------------------------- */

/* {"segment": id}: id a positive integer. The node keeps its pointer, which
 * crm_rule_segment_refs hands out. */
static bool parse_segment(parser *p, rule_node *n, const json_t *node, const char *base)
{
    static const char *const allowed[] = {"segment", NULL};
    only_members(p, node, allowed, base);
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, "segment");
    json_t *j = json_object_get(node, "segment");
    if (!json_is_integer(j) || json_integer_value(j) < 1) {
        fail(p, ptr, "must be a segment's id, a positive integer");
        return false;
    }
    n->segment_id = (long long)json_integer_value(j);
    char text[24];
    int len = snprintf(text, sizeof text, "%lld", n->segment_id);
    n->segment_text = copy(p, text, (size_t)len);
    n->pointer = copy(p, base, strlen(base));
    return n->segment_text != NULL && n->pointer != NULL;
}

/* ---- nodes --------------------------------------------------------------------- */

static rule_node *parse_node(parser *p, const json_t *j, const char *ptr, int depth);

/* all / any: an array of nodes. */
static bool parse_children(parser *p, rule_node *n, const json_t *node, const char *key,
                           const char *base, int depth)
{
    static const char *const only_all[] = {"all", NULL}, *const only_any[] = {"any", NULL};
    only_members(p, node, n->kind == NODE_ALL ? only_all : only_any, base);
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, key);
    json_t *a = json_object_get(node, key);
    if (!json_is_array(a)) {
        fail(p, ptr, "must be an array of rule nodes");
        return false;
    }
    size_t count = json_array_size(a);
    if (count > CRM_RULE_MAX_NODES) {
        fail(p, ptr, "has more than 200 nodes");
        p->stop = true;
        return false;
    }
    n->children = alloc(p, sizeof *n->children * (count ? count : 1));
    if (n->children == NULL)
        return false;
    bool ok = true;
    for (size_t i = 0; i < count && !p->stop; i++) {
        char at[CRM_JSON_POINTER_MAX];
        index_pointer(at, ptr, i);
        n->children[i] = parse_node(p, json_array_get(a, i), at, depth + 1);
        ok = n->children[i] != NULL && ok;
    }
    n->nchildren = (int)count;
    return ok && !p->stop;
}

static bool parse_not(parser *p, rule_node *n, const json_t *node, const char *base, int depth)
{
    static const char *const allowed[] = {"not", NULL};
    only_members(p, node, allowed, base);
    char ptr[CRM_JSON_POINTER_MAX];
    member_pointer(ptr, base, "not");
    n->children = alloc(p, sizeof *n->children);
    if (n->children == NULL)
        return false;
    n->children[0] = parse_node(p, json_object_get(node, "not"), ptr, depth + 1);
    n->nchildren = 1;
    return n->children[0] != NULL;
}

static const char *const node_keys[] = {"all", "any", "not", "field", "touchpoints", "segment"};
static const rule_kind node_kinds[] = {NODE_ALL,   NODE_ANY,         NODE_NOT,
                                       NODE_FIELD, NODE_TOUCHPOINTS, NODE_SEGMENT};
#define N_NODE_KEYS ((int)(sizeof node_keys / sizeof node_keys[0]))

/* One node at ptr, depth levels down (the root is 1). NULL when it or a
 * node under it is not valid (reported). */
static rule_node *parse_node(parser *p, const json_t *j, const char *ptr, int depth)
{
    if (p->stop)
        return NULL;
    if (++p->rule->nnodes > CRM_RULE_MAX_NODES) {
        fail(p, ptr, "the rule has more than 200 nodes");
        p->stop = true;
        return NULL;
    }
    if (depth > CRM_RULE_MAX_DEPTH) {
        fail(p, ptr, "nests deeper than 8 levels");
        return NULL;
    }
    if (!json_is_object(j)) {
        fail(p, ptr,
             "must be an object: all, any, not, a field comparison, touchpoints or segment");
        return NULL;
    }
    int found = -1, count = 0;
    for (int i = 0; i < N_NODE_KEYS; i++)
        if (json_object_get(j, node_keys[i]) != NULL) {
            found = i;
            count++;
        }
    if (count != 1) {
        fail(p, ptr,
             count == 0 ? "must have one of all, any, not, field, touchpoints or segment"
                        : "must have only one of all, any, not, field, touchpoints and segment");
        return NULL;
    }
    rule_node *n = alloc(p, sizeof *n);
    if (n == NULL)
        return NULL;
    n->kind = node_kinds[found];
    bool ok = false;
    switch (n->kind) {
    case NODE_ALL:
    case NODE_ANY:
        ok = parse_children(p, n, j, node_keys[found], ptr, depth);
        break;
    case NODE_NOT:
        ok = parse_not(p, n, j, ptr, depth);
        break;
    case NODE_FIELD:
        ok = parse_comparison(p, n, j, ptr);
        break;
    case NODE_TOUCHPOINTS:
        ok = parse_aggregate(p, n, j, ptr);
        break;
    case NODE_SEGMENT:
        ok = parse_segment(p, n, j, ptr);
        break;
    }
    return ok ? n : NULL;
}

crm_rule *crm_rule_parse(const json_t *json, crm_error *err)
{
    crm_rule *r = malloc(sizeof *r);
    if (r == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    crm_arena_init(&r->arena);
    r->nnodes = 0;
    parser p = {.rule = r, .err = err};
    r->root = parse_node(&p, json, "", 1);
    if (p.oom) {
        crm_rule_free(r);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    if (r->root == NULL || p.nerrors > 0) {
        crm_rule_free(r);
        crm_error_set(err, CRM_E_INVALID, "the rule is not valid");
        return NULL;
    }
    return r;
}

void crm_rule_free(crm_rule *r)
{
    if (r == NULL)
        return;
    crm_arena_free(&r->arena);
    free(r);
}

int crm_rule_nodes(const crm_rule *r)
{
    return r->nnodes;
}

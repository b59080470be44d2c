/*
 * segments/eval.c — a rule evaluated against one customer's loaded state
 * (state.c), agreeing with the compiled SQL (sql.c) on every customer: the
 * same two-valued logic (a missing value makes a comparison false), text
 * compared byte for byte, numeric exactly (decimal.c), double precision as
 * PostgreSQL orders it, times in microseconds against values kept to the
 * millisecond.
 */
#include "segments/internal.h"

#include "jbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a comparison compares, once found in the state. */
typedef struct subject {
    bool present; /* false: missing, and the comparison is false */
    const char *text;
    double f;
    long long us;
    bool b;
} subject;

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

/* The microseconds of a time value at now_ms. */
static long long value_us(const rule_value *v, long long now_ms)
{
    long long ms = v->kind == VAL_DAYS_AGO ? rule_days_ago_ms(now_ms, v->days) : v->ms;
    return ms * 1000;
}

/* -1, 0 or 1 as the subject is below, equal to or above the value. */
static int compare(const rule_node *n, const subject *s, const rule_value *v, long long now_ms)
{
    switch (n->type) {
    case RT_EXACT:
        return rule_dec_cmp(s->text, v->text);
    case RT_FLOAT:
        return rule_float_cmp(s->f, v->f);
    case RT_TIME: {
        long long us = value_us(v, now_ms);
        return s->us < us ? -1 : s->us > us;
    }
    case RT_DATE: {
        char date[32];
        const char *d = v->text;
        if (v->kind == VAL_DAYS_AGO) {
            crm_format_timestamp(rule_days_ago_ms(now_ms, v->days), date);
            date[10] = '\0'; /* the UTC day */
            d = date;
        }
        return sign(strcmp(s->text, d));
    }
    case RT_BOOL:
        return (s->b > v->b) - (s->b < v->b);
    default:
        return sign(strcmp(s->text, v->text));
    }
}

static bool test(const rule_node *n, const subject *s, long long now_ms)
{
    if (!s->present)
        return false;
    switch (n->op) {
    case OP_EXISTS:
        return true;
    case OP_EQ:
        return compare(n, s, &n->values[0], now_ms) == 0;
    case OP_NE:
        return compare(n, s, &n->values[0], now_ms) != 0;
    case OP_LT:
        return compare(n, s, &n->values[0], now_ms) < 0;
    case OP_LTE:
        return compare(n, s, &n->values[0], now_ms) <= 0;
    case OP_GT:
        return compare(n, s, &n->values[0], now_ms) > 0;
    case OP_GTE:
        return compare(n, s, &n->values[0], now_ms) >= 0;
    case OP_BETWEEN:
        return compare(n, s, &n->values[0], now_ms) >= 0 &&
               compare(n, s, &n->values[1], now_ms) <= 0;
    case OP_IN:
        for (int i = 0; i < n->nvalues; i++)
            if (compare(n, s, &n->values[i], now_ms) == 0)
                return true;
        return false;
    case OP_CONTAINS:
        return strstr(s->text, n->values[0].text) != NULL;
    case OP_STARTS_WITH:
        return strncmp(s->text, n->values[0].text, strlen(n->values[0].text)) == 0;
    }
    return false;
}

static subject from_cell(const rule_cell *cell)
{
    return (subject){cell->present, cell->text, cell->f, cell->us, false};
}

/* ---- fields ----------------------------------------------------------------- */

static bool has_tag(const crm_rule_state *st, const char *tag)
{
    for (int i = 0; i < st->ntags; i++)
        if (strcmp(st->tags[i], tag) == 0)
            return true;
    return false;
}

static bool test_tags(const rule_node *n, const crm_rule_state *st)
{
    if (n->op == OP_EXISTS)
        return st->ntags > 0;
    for (int i = 0; i < n->nvalues; i++) /* contains: one value; in: any of them */
        if (has_tag(st, n->values[i].text))
            return true;
    return false;
}

/* The attribute at n's path; NULL when a step is missing or not an object. */
static const json_t *attribute_at(const rule_node *n, const crm_rule_state *st)
{
    const json_t *v = st->attributes;
    for (int i = 0; i < n->nkeys && v != NULL; i++)
        v = json_is_object(v) ? json_object_get(v, n->keys[i]) : NULL;
    return v;
}

/* contains: a string holding the text, or an array holding it. */
static bool attribute_contains(const json_t *v, const char *text)
{
    if (json_is_string(v))
        return strstr(json_string_value(v), text) != NULL;
    size_t i;
    json_t *e;
    json_array_foreach((json_t *)v, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), text) == 0)
            return true;
    }
    return false;
}

static bool test_attribute(const rule_node *n, const crm_rule_state *st, long long now_ms)
{
    const json_t *v = attribute_at(n, st);
    if (n->op == OP_EXISTS)
        return v != NULL && !json_is_null(v);
    if (n->op == OP_CONTAINS)
        return attribute_contains(v, n->values[0].text);
    subject s = {false, NULL, 0, 0, false};
    if (n->type == RT_TEXT && json_is_string(v))
        s = (subject){true, json_string_value(v), 0, 0, false};
    else if (n->type == RT_FLOAT && json_is_number(v))
        s = (subject){true, NULL, json_number_value(v), 0, false};
    else if (n->type == RT_BOOL && json_is_boolean(v))
        s = (subject){true, NULL, 0, 0, json_is_true(v)};
    return test(n, &s, now_ms);
}

static const char *consent_state(const rule_node *n, const crm_rule_state *st)
{
    for (int i = 0; i < st->nconsents; i++)
        if (strcmp(st->consents[i].channel, n->keys[0]) == 0 &&
            strcmp(st->consents[i].purpose, n->keys[1]) == 0)
            return st->consents[i].status;
    return "none";
}

static bool test_field(const rule_node *n, const crm_rule_state *st, long long now_ms)
{
    const rule_field *f = n->field;
    subject s = {false, NULL, 0, 0, false};
    switch (f->source) {
    case SRC_CUSTOMER:
        if (f->type == RT_TAGS)
            return test_tags(n, st);
        s = from_cell(&st->customer[f - rule_customer_fields]);
        break;
    case SRC_METRICS:
        if (st->has_metrics)
            s = from_cell(&st->metrics[f - rule_metrics_fields]);
        break;
    case SRC_ATTRIBUTES:
        return test_attribute(n, st, now_ms);
    case SRC_CONSENT:
        s = (subject){true, consent_state(n, st), 0, 0, false};
        break;
    }
    return test(n, &s, now_ms);
}

/* ---- touchpoint aggregates -------------------------------------------------- */

static bool has_sku(const rule_touchpoint *tp, const char *sku)
{
    for (int i = 0; i < tp->nskus; i++)
        if (strcmp(tp->skus[i], sku) == 0)
            return true;
    return false;
}

bool rule_touchpoint_matches(const rule_node *n, const rule_touchpoint *tp, long long now_ms)
{
    if (n->tp_type != NULL && strcmp(tp->type, n->tp_type) != 0)
        return false;
    if (n->tp_channel != NULL && strcmp(tp->channel, n->tp_channel) != 0)
        return false;
    if (n->tp_campaign != NULL &&
        (tp->campaign_id == NULL || strcmp(tp->campaign_id, n->tp_campaign) != 0))
        return false;
    if (n->tp_offer != NULL && (tp->offer_code == NULL || strcmp(tp->offer_code, n->tp_offer) != 0))
        return false;
    if (n->tp_sku != NULL && !has_sku(tp, n->tp_sku))
        return false;
    if (n->within_days > 0 && tp->occurred_us < rule_days_ago_ms(now_ms, n->within_days) * 1000)
        return false;
    if (n->since_text != NULL && tp->occurred_us < n->since_ms * 1000)
        return false;
    if (n->until_text != NULL && tp->occurred_us >= n->until_ms * 1000)
        return false;
    return true;
}

static bool test_aggregate(const rule_node *n, const crm_rule_state *st, long long now_ms)
{
    long long count = 0, last = 0;
    const char **amounts = NULL;
    if (n->agg == AGG_SUM && st->ntouchpoints > 0 &&
        (amounts = malloc(sizeof *amounts * (size_t)st->ntouchpoints)) == NULL)
        return false;
    for (int i = 0; i < st->ntouchpoints; i++) {
        const rule_touchpoint *tp = &st->touchpoints[i];
        if (!rule_touchpoint_matches(n, tp, now_ms))
            continue;
        if (count == 0 || tp->occurred_us > last)
            last = tp->occurred_us;
        if (amounts != NULL)
            amounts[count] = tp->amount;
        count++;
    }
    char text[24];
    subject s = {true, text, 0, last, false};
    char *sum = NULL;
    if (n->agg == AGG_COUNT) {
        snprintf(text, sizeof text, "%lld", count);
    } else if (n->agg == AGG_SUM) {
        sum = rule_dec_sum(amounts, (int)count);
        s.text = sum;
        s.present = sum != NULL;
    } else {
        s.present = count > 0;
    }
    bool holds = test(n, &s, now_ms);
    free(sum);
    free(amounts);
    return holds;
}

/* ---- segment membership ---------------------------------------------------- */

/* Whether st's customer is a member of segment id (st->segments ascends). */
static bool in_segment(const crm_rule_state *st, long long id)
{
    int lo = 0, hi = st->nsegments;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (st->segments[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->nsegments && st->segments[lo] == id;
}

/* ---- the tree -------------------------------------------------------------- */

static bool eval_node(const rule_node *n, const crm_rule_state *st, long long now_ms);

bool rule_eval_node(const rule_node *n, const crm_rule_state *st, long long now_ms)
{
    return eval_node(n, st, now_ms);
}

static bool eval_node(const rule_node *n, const crm_rule_state *st, long long now_ms)
{
    switch (n->kind) {
    case NODE_ALL:
        for (int i = 0; i < n->nchildren; i++)
            if (!eval_node(n->children[i], st, now_ms))
                return false;
        return true;
    case NODE_ANY:
        for (int i = 0; i < n->nchildren; i++)
            if (eval_node(n->children[i], st, now_ms))
                return true;
        return false;
    case NODE_NOT:
        return !eval_node(n->children[0], st, now_ms);
    case NODE_FIELD:
        return test_field(n, st, now_ms);
    case NODE_TOUCHPOINTS:
        return test_aggregate(n, st, now_ms);
    case NODE_SEGMENT:
        return in_segment(st, n->segment_id);
    }
    return false;
}

bool crm_rule_eval(const crm_rule *r, const crm_rule_state *st, long long now_ms)
{
    return eval_node(r->root, st, now_ms);
}

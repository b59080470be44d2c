/*
 * segments/sql.c — a rule compiled to one boolean SQL expression over the
 * customers row c, on the list module's builder (list/sqlbuf.h): constant
 * fragments and parameters only.
 *
 * Each comparison is wrapped in coalesce(..., false), so that a missing
 * value makes it false rather than NULL and all/any/not work on two values,
 * as the evaluator (eval.c) does. Metrics and touchpoint aggregates are
 * correlated subqueries with the comparison inside their select list, so
 * that a value used twice (between) is computed once and no row (no
 * metrics) gives NULL, hence false. Values are cast to the column's type
 * in SQL; numbers travel as their exact decimal text, times as UTC text to
 * the millisecond, which both sides read identically. A segment node is
 * an EXISTS over segment_memberships, which is never NULL.
 */
#include "segments/internal.h"

#include "jbuf.h"

#include <string.h>

typedef struct compiler {
    crm_sqlbuf *s;
    crm_arena *arena;
    long long now_ms;
    bool oom;
    /* the current comparison's parameters that are written more than once */
    int keys[CRM_RULE_MAX_KEYS]; /* an attribute's path */
    int channel, purpose;        /* a consent's */
} compiler;

static void put(compiler *x, const char *fragment)
{
    crm_sqlbuf_append(x->s, fragment);
}

static void placeholder(compiler *x, int n)
{
    crm_sqlbuf_placeholder(x->s, n);
}

/* The type a value is cast to; text for the others. */
static const char *cast(rule_type t)
{
    switch (t) {
    case RT_EXACT:
        return "::numeric";
    case RT_FLOAT:
        return "::float8";
    case RT_TIME:
        return "::timestamptz";
    case RT_DATE:
        return "::date";
    case RT_BOOL:
        return "::boolean";
    default:
        return "::text";
    }
}

/* The text a value is bound as: its own, or for days_ago the time (or the
 * UTC date) that many days before now, allocated in the arena. */
static const char *value_text(compiler *x, const rule_node *n, const rule_value *v)
{
    if (v->kind != VAL_DAYS_AGO)
        return v->text;
    char text[32];
    size_t len = crm_format_timestamp(rule_days_ago_ms(x->now_ms, v->days), text);
    if (n->type == RT_DATE)
        len = 10; /* "YYYY-MM-DD" */
    const char *out = crm_arena_strndup(x->arena, text, len);
    if (out == NULL)
        x->oom = true;
    return out;
}

static void write_value(compiler *x, const rule_node *n, const rule_value *v)
{
    crm_sqlbuf_bind(x->s, value_text(x, n, v));
    put(x, cast(n->type));
}

/* jsonb_extract_path(c.attributes, $k1::text, ...) with the path's
 * parameters bound already. */
static void write_attribute(compiler *x, const rule_node *n)
{
    put(x, "jsonb_extract_path(c.attributes");
    for (int i = 0; i < n->nkeys; i++) {
        put(x, ", ");
        placeholder(x, x->keys[i]);
        put(x, "::text");
    }
    put(x, ")");
}

/* The attribute as a value of the comparison's type, NULL when it holds
 * another JSON type. */
static void write_typed_attribute(compiler *x, const rule_node *n)
{
    const char *json_type = n->type == RT_TEXT    ? "'string'"
                            : n->type == RT_FLOAT ? "'number'"
                                                  : "'boolean'";
    put(x, "(CASE WHEN jsonb_typeof(");
    write_attribute(x, n);
    put(x, ") = ");
    put(x, json_type);
    put(x, " THEN ");
    if (n->type == RT_TEXT) {
        write_attribute(x, n);
        put(x, " #>> '{}'");
    } else {
        put(x, "(");
        write_attribute(x, n);
        put(x, n->type == RT_FLOAT ? ")::float8" : ")::boolean");
    }
    put(x, " END)");
}

/* What a comparison compares. */
static void write_operand(compiler *x, const rule_node *n)
{
    if (n->kind == NODE_TOUCHPOINTS) {
        put(x, n->agg == AGG_COUNT ? "count(*)"
               : n->agg == AGG_SUM ? "coalesce(sum(t.amount), 0)"
                                   : "max(t.occurred_at)");
        return;
    }
    switch (n->field->source) {
    case SRC_CUSTOMER:
    case SRC_METRICS:
        put(x, "(");
        put(x, n->field->sql);
        put(x, ")");
        return;
    case SRC_ATTRIBUTES:
        write_typed_attribute(x, n);
        return;
    case SRC_CONSENT:
        /* The current decision: the latest captured, then the latest id
         * (consents.h); none without a decision. */
        put(x, "coalesce((SELECT cc.status FROM customer_consents cc"
               " WHERE cc.customer_id = c.id AND cc.channel = ");
        placeholder(x, x->channel);
        put(x, " AND cc.purpose = ");
        placeholder(x, x->purpose);
        put(x, " ORDER BY cc.captured_at DESC, cc.id DESC LIMIT 1), 'none')");
        return;
    }
}

static const char *const comparators[] = {
    [OP_EQ] = " = ",   [OP_NE] = " <> ", [OP_LT] = " < ",
    [OP_LTE] = " <= ", [OP_GT] = " > ",  [OP_GTE] = " >= ",
};

static void write_in_list(compiler *x, const rule_node *n)
{
    put(x, "ARRAY(SELECT jsonb_array_elements_text(");
    crm_sqlbuf_bind(x->s, n->list_json);
    put(x, "::jsonb)");
    put(x, cast(n->type));
    put(x, ")");
}

/* Tags: contains one, in (has any of), exists (has one at all). */
static void write_tags(compiler *x, const rule_node *n)
{
    if (n->op == OP_EXISTS) {
        put(x, "(cardinality(c.tags) > 0)");
    } else if (n->op == OP_CONTAINS) {
        put(x, "(c.tags @> ARRAY[");
        write_value(x, n, &n->values[0]);
        put(x, "])");
    } else {
        put(x, "(c.tags && ");
        write_in_list(x, n);
        put(x, ")");
    }
}

/* An attribute's exists (any JSON value but null) and contains (a string
 * holding the text, or an array holding it as an element). */
static void write_attribute_special(compiler *x, const rule_node *n)
{
    if (n->op == OP_EXISTS) {
        put(x, "(jsonb_typeof(");
        write_attribute(x, n);
        put(x, ") <> 'null')");
        return;
    }
    int v = crm_sqlbuf_param(x->s, n->values[0].text);
    put(x, "(CASE jsonb_typeof(");
    write_attribute(x, n);
    put(x, ") WHEN 'string' THEN strpos(");
    write_attribute(x, n);
    put(x, " #>> '{}', ");
    placeholder(x, v);
    put(x, "::text) > 0 WHEN 'array' THEN ");
    write_attribute(x, n);
    put(x, " @> jsonb_build_array(");
    placeholder(x, v);
    put(x, "::text) ELSE false END)");
}

/* The comparison itself, NULL when its operand is. */
static void write_compare(compiler *x, const rule_node *n)
{
    if (n->type == RT_TAGS) {
        write_tags(x, n);
        return;
    }
    if (n->kind == NODE_FIELD && n->field->source == SRC_ATTRIBUTES &&
        (n->op == OP_EXISTS || n->op == OP_CONTAINS)) {
        write_attribute_special(x, n);
        return;
    }
    put(x, "(");
    switch (n->op) {
    case OP_EQ:
    case OP_NE:
    case OP_LT:
    case OP_LTE:
    case OP_GT:
    case OP_GTE:
        write_operand(x, n);
        put(x, comparators[n->op]);
        write_value(x, n, &n->values[0]);
        break;
    case OP_BETWEEN:
        write_operand(x, n);
        put(x, " >= ");
        write_value(x, n, &n->values[0]);
        put(x, " AND ");
        write_operand(x, n);
        put(x, " <= ");
        write_value(x, n, &n->values[1]);
        break;
    case OP_IN:
        write_operand(x, n);
        put(x, " = ANY (");
        write_in_list(x, n);
        put(x, ")");
        break;
    case OP_EXISTS:
        write_operand(x, n);
        put(x, " IS NOT NULL");
        break;
    case OP_CONTAINS:
        put(x, "strpos(");
        write_operand(x, n);
        put(x, ", ");
        write_value(x, n, &n->values[0]);
        put(x, ") > 0");
        break;
    case OP_STARTS_WITH:
        put(x, "starts_with(");
        write_operand(x, n);
        put(x, ", ");
        write_value(x, n, &n->values[0]);
        put(x, ")");
        break;
    }
    put(x, ")");
}

/* {"field", "op", "value"} */
static void write_field(compiler *x, const rule_node *n)
{
    if (n->field->source == SRC_ATTRIBUTES)
        for (int i = 0; i < n->nkeys; i++)
            x->keys[i] = crm_sqlbuf_param(x->s, n->keys[i]);
    if (n->field->source == SRC_CONSENT) {
        x->channel = crm_sqlbuf_param(x->s, n->keys[0]);
        x->purpose = crm_sqlbuf_param(x->s, n->keys[1]);
    }
    if (n->field->source == SRC_METRICS) {
        put(x, "coalesce((SELECT ");
        write_compare(x, n);
        put(x, " FROM customer_metrics m WHERE m.customer_id = c.id), false)");
        return;
    }
    put(x, "coalesce(");
    write_compare(x, n);
    put(x, ", false)");
}

/* A condition of the touchpoints' WHERE: " AND <before>$n" + cast. */
static void write_filter(compiler *x, const char *before, const char *value, const char *after)
{
    if (value == NULL)
        return;
    put(x, " AND ");
    put(x, before);
    crm_sqlbuf_bind(x->s, value);
    put(x, after);
}

/* The conditions of an aggregate's touchpoints t beyond the customer's:
 * its filter and its window, each " AND ...". */
static void write_touchpoint_filter(compiler *x, const rule_node *n)
{
    write_filter(x, "t.type = ", n->tp_type, "::text");
    write_filter(x, "t.channel = ", n->tp_channel, "::text");
    write_filter(x, "t.campaign_id = ", n->tp_campaign, "::text");
    write_filter(x, "t.offer_code = ", n->tp_offer, "::text");
    write_filter(x, "t.items @> jsonb_build_array(jsonb_build_object('sku', ", n->tp_sku,
                 "::text))");
    if (n->within_days > 0) {
        rule_value since = {.kind = VAL_DAYS_AGO, .days = n->within_days};
        rule_node as_time = {.type = RT_TIME};
        write_filter(x, "t.occurred_at >= ", value_text(x, &as_time, &since), "::timestamptz");
    }
    write_filter(x, "t.occurred_at >= ", n->since_text, "::timestamptz");
    write_filter(x, "t.occurred_at < ", n->until_text, "::timestamptz");
}

/* {"touchpoints": {...}, "agg", "op", "value"} */
static void write_aggregate(compiler *x, const rule_node *n)
{
    put(x, "coalesce((SELECT ");
    write_compare(x, n);
    put(x, " FROM touchpoints t WHERE t.customer_id = c.id");
    write_touchpoint_filter(x, n);
    put(x, "), false)");
}

bool rule_sql_touchpoint_filter(crm_sqlbuf *s, const rule_node *n, long long now_ms,
                                crm_arena *arena)
{
    compiler x = {.s = s, .arena = arena, .now_ms = now_ms};
    write_touchpoint_filter(&x, n);
    return !x.oom;
}

static void write_node(compiler *x, const rule_node *n);

bool rule_sql_node(crm_sqlbuf *s, const rule_node *n, long long now_ms, crm_arena *arena)
{
    compiler x = {.s = s, .arena = arena, .now_ms = now_ms};
    write_node(&x, n);
    return !x.oom;
}

static void write_node(compiler *x, const rule_node *n)
{
    switch (n->kind) {
    case NODE_ALL:
    case NODE_ANY:
        if (n->nchildren == 0) {
            put(x, n->kind == NODE_ALL ? "true" : "false");
            return;
        }
        put(x, "(");
        for (int i = 0; i < n->nchildren; i++) {
            if (i > 0)
                put(x, n->kind == NODE_ALL ? " AND " : " OR ");
            write_node(x, n->children[i]);
        }
        put(x, ")");
        return;
    case NODE_NOT:
        put(x, "(NOT ");
        write_node(x, n->children[0]);
        put(x, ")");
        return;
    case NODE_FIELD:
        write_field(x, n);
        return;
    case NODE_TOUCHPOINTS:
        write_aggregate(x, n);
        return;
    case NODE_SEGMENT:
        /* never NULL: no coalesce */
        put(x, "EXISTS (SELECT 1 FROM segment_memberships sm WHERE sm.segment_id = ");
        crm_sqlbuf_bind(x->s, n->segment_text);
        put(x, "::bigint AND sm.customer_id = c.id)");
        return;
    }
}

bool crm_rule_sql(const crm_rule *r, crm_sqlbuf *s, long long now_ms, crm_arena *arena,
                  crm_error *err)
{
    compiler x = {.s = s, .arena = arena, .now_ms = now_ms};
    write_node(&x, r->root);
    if (x.oom || !crm_sqlbuf_ok(s))
        return crm_error_set(err, CRM_E_INTERNAL, "the rule's SQL could not be built");
    return true;
}

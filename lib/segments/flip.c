/*
 * segments/flip.c — when a rule's value for a customer may next change as
 * time passes with no write at all, so that a live segment moves the
 * customer then instead of rescanning the base: one SQL expression over
 * the whole base (crm_rule_flip_sql) and the same answer for one loaded
 * state (crm_rule_next_flip). The unit suite segment_flips holds the two
 * equal on random rules and customers, and the value constant before it.
 *
 * Time enters a rule at two places only, and each gives instants at which
 * one comparison can change:
 *
 *   a days_ago value, which moves with now. A subject s (a timestamp, or
 *   the time of the latest matching touchpoint for "last") compared with
 *   now - N days is above the value until now reaches s + N days, equal to
 *   it at that microsecond, below it from the next. Whether each of those
 *   two instants changes the comparison depends on the operator (gt and
 *   lte change at the first, gte and lt at the second, eq and ne at both,
 *   between at the second for its lower end and the first for its upper).
 *   A date compared with the UTC day N days before now is the same with
 *   days for microseconds: the value reaches the date at the midnight
 *   starting date + N days and passes it one day later.
 *
 *   a within_days window, occurred_at >= now - D days: a touchpoint at t
 *   leaves it at t + D days + 1 microsecond, and none ever enters it (the
 *   lower end only moves forward; a touchpoint dated in the future is
 *   inside already). A count or a sum may change when the earliest
 *   matching touchpoint leaves; "last" only when the latest one does, and
 *   then it becomes missing.
 *
 * Everything else (absolute times, since and until included, consents,
 * tags, plain fields) changes only with a write. all, any and not take the
 * earliest instant of the comparisons under them: their value cannot
 * change before one of those does, though it may not change then (the
 * caller re-evaluates and asks again). Instants are microseconds while
 * rules are evaluated at milliseconds; an instant inside a millisecond is
 * early, never late. An instant past what a long long holds (a time
 * near the year 294247, which no API write can store) is never.
 */
#include "segments/internal.h"

#include "civil.h"
#include "jbuf.h"

#include <stdio.h>

#define DAY_US 86400000000LL

/* The two instants of a days_ago value (see above): the value reaches the
 * subject, then passes it. */
enum { REACHES = 1, PASSES = 2 };

/* Which of value index's two instants can change a comparison by op. */
static unsigned instants(rule_op op, int index)
{
    switch (op) {
    case OP_GT:
    case OP_LTE:
        return REACHES;
    case OP_GTE:
    case OP_LT:
        return PASSES;
    case OP_BETWEEN:
        return index == 0 ? PASSES : REACHES;
    case OP_EQ:
    case OP_NE:
    case OP_IN:
        return REACHES | PASSES;
    default:
        return 0;
    }
}

/* Whether value i of n moves with time and can change n. */
static bool value_moves(const rule_node *n, int i)
{
    return n->values[i].kind == VAL_DAYS_AGO && instants(n->op, i) != 0;
}

static int moving_values(const rule_node *n)
{
    int count = 0;
    for (int i = 0; i < n->nvalues; i++)
        count += value_moves(n, i);
    return count;
}

/* Whether comparison n can change as time passes: the test of both the
 * SQL and the in-process answer, which must agree on it. */
static bool comparison_moves(const rule_node *n)
{
    switch (n->kind) {
    case NODE_FIELD:
        return (n->type == RT_TIME || n->type == RT_DATE) &&
               (n->field->source == SRC_CUSTOMER || n->field->source == SRC_METRICS) &&
               moving_values(n) > 0;
    case NODE_TOUCHPOINTS:
        return n->within_days > 0 || (n->agg == AGG_LAST && moving_values(n) > 0);
    default:
        return false;
    }
}

/* Whether anything under n can change as time passes. */
static bool subtree_moves(const rule_node *n)
{
    switch (n->kind) {
    case NODE_ALL:
    case NODE_ANY:
    case NODE_NOT:
        for (int i = 0; i < n->nchildren; i++)
            if (subtree_moves(n->children[i]))
                return true;
        return false;
    default:
        return comparison_moves(n);
    }
}

/* ---- for one loaded state ------------------------------------------------ */

/* at + days * DAY_US + extra_us, or 0 (never) when it overflows: 0 as an
 * instant is the epoch, long past. */
static long long later_by(long long at_us, long long days, long long extra_us)
{
    long long span, out;
    if (__builtin_mul_overflow(days, DAY_US, &span) || __builtin_add_overflow(at_us, span, &out) ||
        __builtin_add_overflow(out, extra_us, &out))
        return 0;
    return out;
}

/* The earlier of two instants, 0 meaning never. */
static long long sooner(long long a, long long b)
{
    return a == 0 || (b != 0 && b < a) ? b : a;
}

/* The first instant of value i of n strictly after now_us, for a subject
 * at at_us (a date: its midnight) and values width_us apart: 0 for none. */
static long long value_flip(const rule_node *n, int i, long long at_us, long long width_us,
                            long long now_us)
{
    unsigned which = instants(n->op, i);
    long long reaches = later_by(at_us, n->values[i].days, 0),
              passes = later_by(at_us, n->values[i].days, width_us);
    if ((which & REACHES) && reaches > now_us)
        return reaches;
    if ((which & PASSES) && passes > now_us)
        return passes;
    return 0;
}

static long long values_flip(const rule_node *n, long long at_us, long long width_us,
                             long long now_us)
{
    long long flip = 0;
    for (int i = 0; i < n->nvalues; i++)
        if (value_moves(n, i))
            flip = sooner(flip, value_flip(n, i, at_us, width_us, now_us));
    return flip;
}

/* "YYYY-MM-DD" (four or more digits of year) into days since 1970-01-01. */
static bool date_days(const char *text, long long *days)
{
    long long y = 0;
    int digits = 0;
    for (; *text >= '0' && *text <= '9' && digits < 9; text++, digits++)
        y = y * 10 + (*text - '0');
    int m, d;
    char end;
    if (digits < 4 || sscanf(text, "-%2d-%2d%c", &m, &d, &end) != 2 || m < 1 || m > 12 || d < 1 ||
        d > 31)
        return false;
    *days = crm_days_from_civil(y, m, d);
    return true;
}

static long long field_flip(const rule_node *n, const crm_rule_state *st, long long now_us)
{
    const rule_cell *cell = NULL;
    if (n->field->source == SRC_CUSTOMER)
        cell = &st->customer[n->field - rule_customer_fields];
    else if (st->has_metrics)
        cell = &st->metrics[n->field - rule_metrics_fields];
    if (cell == NULL || !cell->present)
        return 0; /* false whatever the time */
    if (n->type == RT_TIME)
        return values_flip(n, cell->us, 1, now_us);
    long long days, midnight;
    if (!date_days(cell->text, &days) || __builtin_mul_overflow(days, DAY_US, &midnight))
        return 0;
    return values_flip(n, midnight, DAY_US, now_us);
}

static long long aggregate_flip(const rule_node *n, const crm_rule_state *st, long long now_ms)
{
    long long first = 0, last = 0;
    int count = 0;
    for (int i = 0; i < st->ntouchpoints; i++) {
        const rule_touchpoint *tp = &st->touchpoints[i];
        if (!rule_touchpoint_matches(n, tp, now_ms))
            continue;
        if (count == 0 || tp->occurred_us < first)
            first = tp->occurred_us;
        if (count == 0 || tp->occurred_us > last)
            last = tp->occurred_us;
        count++;
    }
    if (count == 0)
        return 0; /* nothing can leave the window, and "last" stays missing */
    long long flip = 0;
    if (n->within_days > 0) /* after now: the touchpoint is inside the window */
        flip = later_by(n->agg == AGG_LAST ? last : first, n->within_days, 1);
    if (n->agg == AGG_LAST)
        flip = sooner(flip, values_flip(n, last, 1, now_ms * 1000));
    return flip;
}

static long long node_flip(const rule_node *n, const crm_rule_state *st, long long now_ms)
{
    switch (n->kind) {
    case NODE_ALL:
    case NODE_ANY: {
        /* A child that time does not move decides the node until a write
         * changes it: all with one false, any with one true. */
        for (int i = 0; i < n->nchildren; i++)
            if (!subtree_moves(n->children[i]) &&
                rule_eval_node(n->children[i], st, now_ms) == (n->kind == NODE_ANY))
                return 0;
        long long flip = 0;
        for (int i = 0; i < n->nchildren; i++)
            flip = sooner(flip, node_flip(n->children[i], st, now_ms));
        return flip;
    }
    case NODE_NOT:
        return node_flip(n->children[0], st, now_ms);
    case NODE_FIELD:
        return comparison_moves(n) ? field_flip(n, st, now_ms * 1000) : 0;
    case NODE_TOUCHPOINTS:
        return comparison_moves(n) ? aggregate_flip(n, st, now_ms) : 0;
    default:
        return 0; /* a kind that no time passing changes by itself */
    }
}

long long crm_rule_next_flip(const crm_rule *r, const crm_rule_state *st, long long now_ms)
{
    return node_flip(r->root, st, now_ms);
}

/* ---- in SQL ----------------------------------------------------------------
 *
 * One term per comparison that moves, the whole LEAST(term, ...), which
 * PostgreSQL computes ignoring NULLs (NULL when every term is). A term is
 * NULL for a customer whose comparison will not change: a missing subject,
 * instants all past. Days are added as 24 hours, never as an interval's
 * days, which would follow the session's time zone across a change of
 * daylight saving time. */

typedef struct writer {
    crm_sqlbuf *s;
    crm_arena *arena;
    long long now_ms;
    int now;   /* the parameter holding now, once bound */
    int terms; /* written so far */
    bool oom;
} writer;

static void put(writer *w, const char *fragment)
{
    crm_sqlbuf_append(w->s, fragment);
}

/* A parameter whose text is the integer v, kept in the arena. */
static int integer_param(writer *w, long long v)
{
    char text[24];
    int len = snprintf(text, sizeof text, "%lld", v);
    const char *kept = crm_arena_strndup(w->arena, text, (size_t)len);
    if (kept == NULL)
        w->oom = true;
    return crm_sqlbuf_param(w->s, kept);
}

static void put_now(writer *w)
{
    if (w->now == 0) {
        char text[32];
        size_t len = crm_format_timestamp(w->now_ms, text);
        const char *kept = crm_arena_strndup(w->arena, text, len);
        if (kept == NULL)
            w->oom = true;
        w->now = crm_sqlbuf_param(w->s, kept);
    }
    crm_sqlbuf_placeholder(w->s, w->now);
    put(w, "::timestamptz");
}

/* The instant a days_ago value reaches the subject: subject + N days for
 * a time, the midnight of subject + N days for a date; param holds N * 24
 * (hours) for a time, N for a date. */
static void put_reaches(writer *w, const rule_node *n, const char *subject, int param)
{
    if (n->type == RT_DATE) {
        put(w, "((");
        put(w, subject);
        put(w, " + ");
        crm_sqlbuf_placeholder(w->s, param);
        put(w, "::integer)::timestamp AT TIME ZONE 'UTC')");
    } else {
        put(w, "(");
        put(w, subject);
        put(w, " + make_interval(hours => ");
        crm_sqlbuf_placeholder(w->s, param);
        put(w, "::integer))");
    }
}

/* The instant it passes the subject. */
static void put_passes(writer *w, const rule_node *n, const char *subject, int param)
{
    put_reaches(w, n, subject, param);
    put(w, n->type == RT_DATE ? " + interval '24 hours'" : " + interval '1 microsecond'");
}

/* CASE WHEN reaches > now THEN reaches WHEN passes > now THEN passes END,
 * each WHEN only where it can change n (value_flip). */
static void put_value_term(writer *w, const rule_node *n, int i, const char *subject)
{
    long long days = n->values[i].days;
    int p = integer_param(w, n->type == RT_DATE ? days : days * 24);
    unsigned which = instants(n->op, i);
    put(w, "CASE");
    if (which & REACHES) {
        put(w, " WHEN ");
        put_reaches(w, n, subject, p);
        put(w, " > ");
        put_now(w);
        put(w, " THEN ");
        put_reaches(w, n, subject, p);
    }
    if (which & PASSES) {
        put(w, " WHEN ");
        put_passes(w, n, subject, p);
        put(w, " > ");
        put_now(w);
        put(w, " THEN ");
        put_passes(w, n, subject, p);
    }
    put(w, " END");
}

/* The earliest instant of n's moving values for subject, an expression. */
static void put_values_term(writer *w, const rule_node *n, const char *subject)
{
    bool many = moving_values(n) > 1;
    put(w, many ? "LEAST(" : "(");
    bool first = true;
    for (int i = 0; i < n->nvalues; i++) {
        if (!value_moves(n, i))
            continue;
        if (!first)
            put(w, ", ");
        first = false;
        put_value_term(w, n, i, subject);
    }
    put(w, ")");
}

static void put_field_term(writer *w, const rule_node *n)
{
    if (n->field->source == SRC_METRICS) {
        /* no metrics row: no row, NULL */
        put(w, "(SELECT ");
        put_values_term(w, n, n->field->sql);
        put(w, " FROM customer_metrics m WHERE m.customer_id = c.id)");
        return;
    }
    put_values_term(w, n, n->field->sql);
}

/* Over the touchpoints that match now: the window's exit and the moving
 * values of "last"; no match gives NULL aggregates, hence NULL. */
static void put_aggregate_term(writer *w, const rule_node *n)
{
    const char *latest = "max(t.occurred_at)";
    put(w, "(SELECT LEAST(");
    if (n->within_days > 0) {
        put(w, n->agg == AGG_LAST ? latest : "min(t.occurred_at)");
        put(w, " + make_interval(hours => ");
        crm_sqlbuf_placeholder(w->s, integer_param(w, (long long)n->within_days * 24));
        put(w, "::integer) + interval '1 microsecond'");
        if (n->agg == AGG_LAST && moving_values(n) > 0)
            put(w, ", ");
    }
    if (n->agg == AGG_LAST && moving_values(n) > 0)
        put_values_term(w, n, latest);
    put(w, ") FROM touchpoints t WHERE t.customer_id = c.id");
    if (!rule_sql_touchpoint_filter(w->s, n, w->now_ms, w->arena))
        w->oom = true;
    put(w, ")");
}

/* The flip of n, a subtree that moves, as one timestamptz term. Under all
 * or any, the children that time does not move gate the rest, as in
 * node_flip: CASE WHEN they leave the node open THEN LEAST(the moving
 * children's terms) END. So a customer whom a plain condition already
 * decides costs no touchpoint scan. */
static void put_flip(writer *w, const rule_node *n)
{
    switch (n->kind) {
    case NODE_NOT:
        put_flip(w, n->children[0]);
        return;
    case NODE_ALL:
    case NODE_ANY: {
        int fixed = 0;
        for (int i = 0; i < n->nchildren; i++) {
            const rule_node *c = n->children[i];
            if (subtree_moves(c))
                continue;
            put(w, fixed++ == 0 ? (n->kind == NODE_ALL ? "CASE WHEN (" : "CASE WHEN NOT (")
                                : (n->kind == NODE_ALL ? " AND " : " OR "));
            if (!rule_sql_node(w->s, c, w->now_ms, w->arena))
                w->oom = true;
        }
        if (fixed > 0)
            put(w, ") THEN ");
        put(w, "LEAST(");
        int terms = 0;
        for (int i = 0; i < n->nchildren; i++) {
            if (!subtree_moves(n->children[i]))
                continue;
            if (terms++ > 0)
                put(w, ", ");
            put_flip(w, n->children[i]);
        }
        put(w, ")");
        if (fixed > 0)
            put(w, " END");
        return;
    }
    case NODE_FIELD:
        put_field_term(w, n);
        return;
    case NODE_TOUCHPOINTS:
        put_aggregate_term(w, n);
        return;
    default:
        put(w, "NULL::timestamptz"); /* as node_flip */
        return;
    }
}

bool crm_rule_flip_sql(const crm_rule *r, crm_sqlbuf *s, long long now_ms, crm_arena *arena,
                       crm_error *err)
{
    writer w = {.s = s, .arena = arena, .now_ms = now_ms};
    if (subtree_moves(r->root))
        put_flip(&w, r->root);
    else
        put(&w, "NULL::timestamptz");
    if (w.oom || !crm_sqlbuf_ok(s))
        return crm_error_set(err, CRM_E_INTERNAL, "the rule's flip SQL could not be built");
    return true;
}

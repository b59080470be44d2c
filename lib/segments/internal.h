/*
 * segments/internal.h — what the parser (rule.c), the SQL compiler (sql.c),
 * the state loader (state.c), the evaluator (eval.c) and the flips
 * (flip.c) share: the fields a rule may name, the parsed tree and one
 * customer's loaded state.
 */
#ifndef CRM_SEGMENTS_INTERNAL_H
#define CRM_SEGMENTS_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "arena.h"
#include "segments.h"

/* What a comparison compares, and so which operators and values it takes. */
typedef enum rule_type {
    RT_TEXT,    /* bytes */
    RT_ENUM,    /* text from a fixed list */
    RT_EXACT,   /* numeric, integer: compared exactly */
    RT_FLOAT,   /* double precision */
    RT_TIME,    /* timestamptz, to the microsecond */
    RT_DATE,    /* date, as "YYYY-MM-DD" */
    RT_TAGS,    /* text[] */
    RT_CONSENT, /* granted, revoked, none */
    RT_BOOL,    /* an attribute compared with true or false */
    RT_ATTR,    /* an attribute before its value gives it a type */
} rule_type;

/* Which list an enum's values come from. */
typedef enum rule_enum {
    ENUM_NONE,
    ENUM_KIND,         /* crm_customer_kinds */
    ENUM_STAGE,        /* crm_lifecycle_stages */
    ENUM_COUNTRY,      /* crm_country_valid */
    ENUM_METRIC_STAGE, /* customer_metrics.lifecycle_stage (migration 0018) */
    ENUM_CONSENT,      /* granted, revoked, none */
} rule_enum;

typedef enum rule_source {
    SRC_CUSTOMER,   /* a column of the customers row c */
    SRC_METRICS,    /* a column of customer_metrics m */
    SRC_ATTRIBUTES, /* a path in c.attributes */
    SRC_CONSENT,    /* the latest decision of customer_consents */
} rule_source;

typedef struct rule_field {
    const char *name; /* as a rule spells it ("metrics." included) */
    rule_type type;
    rule_source source;
    const char *sql; /* its value over c or m */
    rule_enum values;
} rule_field;

/* The customers columns, in the order of the state's cells:
 * X(name, type, SQL over c, what the loader selects, enum). */
#define RULE_CUSTOMER_FIELDS(X)                                                                    \
    X("kind", RT_ENUM, "c.kind", "c.kind", ENUM_KIND)                                              \
    X("first_name", RT_TEXT, "c.first_name", "c.first_name", ENUM_NONE)                            \
    X("last_name", RT_TEXT, "c.last_name", "c.last_name", ENUM_NONE)                               \
    X("display_name", RT_TEXT, "c.display_name", "c.display_name", ENUM_NONE)                      \
    X("company", RT_TEXT, "c.company", "c.company", ENUM_NONE)                                     \
    X("email", RT_TEXT, "c.email", "c.email", ENUM_NONE)                                           \
    X("phone", RT_TEXT, "c.phone", "c.phone", ENUM_NONE)                                           \
    X("address.country", RT_ENUM, "c.country", "c.country", ENUM_COUNTRY)                          \
    X("address.region", RT_TEXT, "c.region", "c.region", ENUM_NONE)                                \
    X("address.city", RT_TEXT, "c.city", "c.city", ENUM_NONE)                                      \
    X("address.postal_code", RT_TEXT, "c.postal_code", "c.postal_code", ENUM_NONE)                 \
    X("address.street", RT_TEXT, "c.street", "c.street", ENUM_NONE)                                \
    X("location.latitude", RT_FLOAT, "c.latitude", "c.latitude", ENUM_NONE)                        \
    X("location.longitude", RT_FLOAT, "c.longitude", "c.longitude", ENUM_NONE)                     \
    X("birth_date", RT_DATE, "c.birth_date", "to_char(c.birth_date, 'YYYY-MM-DD')", ENUM_NONE)     \
    X("preferred_language", RT_TEXT, "c.preferred_language", "c.preferred_language", ENUM_NONE)    \
    X("lifecycle_stage", RT_ENUM, "c.lifecycle_stage", "c.lifecycle_stage", ENUM_STAGE)            \
    X("tags", RT_TAGS, "c.tags", "array_to_json(c.tags)::text", ENUM_NONE)                         \
    X("created_at", RT_TIME, "c.created_at", "c.created_at", ENUM_NONE)                            \
    X("updated_at", RT_TIME, "c.updated_at", "c.updated_at", ENUM_NONE)

/* The customer_metrics columns (migrations 0017, 0018), in the order of
 * the state's cells: X(name, type, SQL over m, enum). */
#define RULE_METRICS_FIELDS(X)                                                                     \
    X("metrics.as_of", RT_TIME, "m.as_of", ENUM_NONE)                                              \
    X("metrics.computed_at", RT_TIME, "m.computed_at", ENUM_NONE)                                  \
    X("metrics.purchases", RT_EXACT, "m.purchases", ENUM_NONE)                                     \
    X("metrics.refunds", RT_EXACT, "m.refunds", ENUM_NONE)                                         \
    X("metrics.unrated", RT_EXACT, "m.unrated", ENUM_NONE)                                         \
    X("metrics.first_purchase_at", RT_TIME, "m.first_purchase_at", ENUM_NONE)                      \
    X("metrics.last_purchase_at", RT_TIME, "m.last_purchase_at", ENUM_NONE)                        \
    X("metrics.historic_value", RT_EXACT, "m.historic_value", ENUM_NONE)                           \
    X("metrics.average_order_value", RT_EXACT, "m.average_order_value", ENUM_NONE)                 \
    X("metrics.recency_days", RT_FLOAT, "m.recency_days", ENUM_NONE)                               \
    X("metrics.frequency", RT_EXACT, "m.frequency", ENUM_NONE)                                     \
    X("metrics.monetary", RT_EXACT, "m.monetary", ENUM_NONE)                                       \
    X("metrics.r_score", RT_EXACT, "m.r_score", ENUM_NONE)                                         \
    X("metrics.f_score", RT_EXACT, "m.f_score", ENUM_NONE)                                         \
    X("metrics.m_score", RT_EXACT, "m.m_score", ENUM_NONE)                                         \
    X("metrics.rfm_cell", RT_TEXT, "m.rfm_cell", ENUM_NONE)                                        \
    X("metrics.rfm_group", RT_TEXT, "m.rfm_group", ENUM_NONE)                                      \
    X("metrics.x", RT_EXACT, "m.x", ENUM_NONE)                                                     \
    X("metrics.t_x", RT_EXACT, "m.t_x", ENUM_NONE)                                                 \
    X("metrics.t_age", RT_EXACT, "m.t_age", ENUM_NONE)                                             \
    X("metrics.repeat_mean_value", RT_EXACT, "m.repeat_mean_value", ENUM_NONE)                     \
    X("metrics.p_alive", RT_FLOAT, "m.p_alive", ENUM_NONE)                                         \
    X("metrics.churn_risk", RT_FLOAT, "1 - m.p_alive", ENUM_NONE)                                  \
    X("metrics.predicted_purchases", RT_FLOAT, "m.predicted_purchases", ENUM_NONE)                 \
    X("metrics.predicted_value", RT_FLOAT, "m.predicted_value", ENUM_NONE)                         \
    X("metrics.value_tier", RT_TEXT, "m.value_tier", ENUM_NONE)                                    \
    X("metrics.interval_mean", RT_FLOAT, "m.interval_mean", ENUM_NONE)                             \
    X("metrics.interval_cv", RT_FLOAT, "m.interval_cv", ENUM_NONE)                                 \
    X("metrics.interval_trend", RT_FLOAT, "m.interval_trend", ENUM_NONE)                           \
    X("metrics.spend_cv", RT_FLOAT, "m.spend_cv", ENUM_NONE)                                       \
    X("metrics.spend_trend", RT_FLOAT, "m.spend_trend", ENUM_NONE)                                 \
    X("metrics.lifecycle_stage", RT_ENUM, "m.lifecycle_stage", ENUM_METRIC_STAGE)                  \
    X("metrics.last_gap_days", RT_EXACT, "m.last_gap_days", ENUM_NONE)                             \
    X("metrics.overdue_days", RT_FLOAT, "m.overdue_days", ENUM_NONE)                               \
    X("metrics.touchpoints_90d", RT_EXACT, "m.touchpoints_90d", ENUM_NONE)                         \
    X("metrics.last_inbound_at", RT_TIME, "m.last_inbound_at", ENUM_NONE)                          \
    X("metrics.nps_latest", RT_EXACT, "m.nps_latest", ENUM_NONE)                                   \
    X("metrics.nps_mean", RT_FLOAT, "m.nps_mean", ENUM_NONE)                                       \
    X("metrics.nps_responses", RT_EXACT, "m.nps_responses", ENUM_NONE)                             \
    X("metrics.csat_latest", RT_EXACT, "m.csat_latest", ENUM_NONE)                                 \
    X("metrics.csat_mean", RT_FLOAT, "m.csat_mean", ENUM_NONE)                                     \
    X("metrics.csat_responses", RT_EXACT, "m.csat_responses", ENUM_NONE)

#define RULE_COUNT_ONE(...) +1
enum {
    RULE_N_CUSTOMER_FIELDS = 0 RULE_CUSTOMER_FIELDS(RULE_COUNT_ONE),
    RULE_N_METRICS_FIELDS = 0 RULE_METRICS_FIELDS(RULE_COUNT_ONE),
};

extern const rule_field rule_customer_fields[RULE_N_CUSTOMER_FIELDS];
extern const rule_field rule_metrics_fields[RULE_N_METRICS_FIELDS];
extern const rule_field rule_attribute_field; /* "attributes.<path>" */
extern const rule_field rule_consent_field;   /* "consent.<channel>.<purpose>" */

/* customer_metrics.lifecycle_stage's values (NULL-terminated; the unit
 * suite allow_lists holds them equal to the column's CHECK constraint). */
extern const char *const rule_metric_stages[];

typedef enum rule_op {
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LTE,
    OP_GT,
    OP_GTE,
    OP_IN,
    OP_CONTAINS,
    OP_EXISTS,
    OP_BETWEEN,
    OP_STARTS_WITH,
} rule_op;

typedef enum rule_agg { AGG_COUNT, AGG_SUM, AGG_LAST } rule_agg;

/* The kinds of node. A new kind adds a member here, its parse in rule.c,
 * its SQL in sql.c, its test in eval.c and its place in the walks of
 * reads.c (and of flip.c). */
typedef enum rule_kind {
    NODE_ALL,
    NODE_ANY,
    NODE_NOT,
    NODE_FIELD,       /* {"field", "op", "value"} */
    NODE_TOUCHPOINTS, /* {"touchpoints", "agg", "op", "value"} */
    NODE_SEGMENT,     /* {"segment": id}: a member of that segment now */
} rule_kind;

typedef enum rule_value_kind {
    VAL_TEXT,     /* text: the string */
    VAL_NUMBER,   /* text: its exact decimal; f: as a double */
    VAL_BOOL,     /* b; text "true" or "false" */
    VAL_TIME,     /* ms; text "YYYY-MM-DDTHH:MM:SS.mmmZ" */
    VAL_DATE,     /* text "YYYY-MM-DD" */
    VAL_DAYS_AGO, /* days: a time or date that depends on now */
} rule_value_kind;

typedef struct rule_value {
    rule_value_kind kind;
    const char *text;
    double f;
    long long ms;
    int days;
    bool b;
} rule_value;

typedef struct rule_node {
    rule_kind kind;
    /* all, any, not */
    struct rule_node **children;
    int nchildren;
    /* comparisons (field and touchpoints) */
    const rule_field *field;             /* NODE_FIELD */
    const char *keys[CRM_RULE_MAX_KEYS]; /* attribute path; consent channel, purpose */
    int nkeys;
    rule_type type; /* what is compared: the field's, an attribute's by its value, an agg's */
    rule_op op;
    rule_value *values; /* 1 (a scalar), 2 (between), 1..CRM_RULE_MAX_LIST (in), 0 (exists) */
    int nvalues;
    const char *list_json; /* in: the values as one JSON array, for SQL */
    /* touchpoints */
    rule_agg agg;
    const char *tp_type, *tp_channel, *tp_campaign, *tp_offer, *tp_sku; /* NULL: any */
    int within_days;                                                    /* 0: none */
    const char *since_text, *until_text;                                /* NULL: none */
    long long since_ms, until_ms;
    /* segment */
    long long segment_id;     /* >= 1 */
    const char *segment_text; /* its decimal text, for SQL */
    const char *pointer;      /* the node's JSON pointer ("" the root) */
} rule_node;

struct crm_rule {
    crm_arena arena; /* every node and string of the rule */
    rule_node *root;
    int nnodes;
};

/* The time days before now_ms, in epoch milliseconds. */
static inline long long rule_days_ago_ms(long long now_ms, int days)
{
    return now_ms - (long long)days * 86400000LL;
}

/* ---- one customer's state (state.c) ------------------------------------ */

typedef struct rule_cell {
    bool present;     /* false: SQL NULL */
    const char *text; /* as PostgreSQL prints it (date: "YYYY-MM-DD") */
    double f;         /* RT_FLOAT */
    long long us;     /* RT_TIME: epoch microseconds */
} rule_cell;

typedef struct rule_consent {
    const char *channel, *purpose, *status;
} rule_consent;

typedef struct rule_touchpoint {
    const char *type, *channel;
    const char *campaign_id, *offer_code; /* NULL: none */
    const char *amount;                   /* numeric text; NULL: none */
    const char **skus;                    /* of items[].sku */
    int nskus;
    long long occurred_us;
} rule_touchpoint;

struct crm_rule_state {
    crm_arena arena; /* every string and array below */
    long long customer_id;
    rule_cell customer[RULE_N_CUSTOMER_FIELDS];
    const char **tags;
    int ntags;
    json_t *attributes; /* owned; numbers read as doubles */
    bool has_metrics;
    rule_cell metrics[RULE_N_METRICS_FIELDS];
    rule_consent *consents; /* the current one per channel and purpose */
    int nconsents;
    rule_touchpoint *touchpoints;
    int ntouchpoints;
    long long *segments; /* the segments it is a member of, ascending */
    int nsegments;
};

/* ---- the evaluator (eval.c) -------------------------------------------- */

/* Whether touchpoint tp passes aggregate n's filter and window at now_ms:
 * the touchpoints rule_sql_touchpoint_filter selects. */
bool rule_touchpoint_matches(const rule_node *n, const rule_touchpoint *tp, long long now_ms);

/* Node n's value for st at now_ms (crm_rule_eval of a subtree). */
bool rule_eval_node(const rule_node *n, const crm_rule_state *st, long long now_ms);

/* ---- compiled SQL (sql.c) ---------------------------------------------- */

/* Appends the boolean expression of node n (crm_rule_sql of a subtree).
 * False when the arena ran out of memory. */
bool rule_sql_node(crm_sqlbuf *s, const rule_node *n, long long now_ms, crm_arena *arena);


/* Appends to s the conditions of aggregate n's touchpoints (aliased t)
 * beyond the customer's, its filter and its window at now_ms, each one
 * " AND ..." with its values as parameters (as crm_rule_sql binds them).
 * False when the arena ran out of memory. */
bool rule_sql_touchpoint_filter(crm_sqlbuf *s, const rule_node *n, long long now_ms,
                                crm_arena *arena);

/* ---- exact decimals (decimal.c) ---------------------------------------- */

/* Compares two numbers written as PostgreSQL's numeric reads them
 * ("-12.50", "1e-07", "NaN", "Infinity", "-Infinity") exactly, in
 * numeric's order (-Infinity < finites < Infinity < NaN, NaN = NaN):
 * -1, 0 or 1. Text that is not a number compares as NaN. */
int rule_dec_cmp(const char *a, const char *b);

/* The exact sum of n numeric texts (NULL entries left out) as a new
 * string (the caller frees it); "0" for none. NULL when memory ran out. */
char *rule_dec_sum(const char *const *terms, int n);

/* Compares two doubles as PostgreSQL orders float8: NaN equal to itself and
 * above everything. */
int rule_float_cmp(double a, double b);

#endif

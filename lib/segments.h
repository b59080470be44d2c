/*
 * segments.h — the rule language of segments and searches (issue 14): a
 * JSON tree parsed and checked once, then either compiled to one SQL
 * expression over the whole base or evaluated against one customer's
 * loaded state. The two must always agree; the unit suite segment_rules
 * checks it on random rules and random customers.
 *
 * Grammar (openapi.yaml, components/schemas/SegmentRule):
 *   {"all": [node, ...]}   every node holds ([] holds for everyone)
 *   {"any": [node, ...]}   some node holds ([] holds for no one)
 *   {"not": node}
 *   {"field": PATH, "op": OP, "value": V}
 *   {"touchpoints": {"type"?, "channel"?, "campaign_id"?, "offer_code"?,
 *                    "sku"?, "within_days"? | "since"?, "until"?},
 *    "agg": "count" | "sum" | "last", "op": OP, "value": V}
 *   {"segment": ID}        a member of segment ID (a positive integer) now
 * PATH is a customer field ("first_name", "address.country", "tags",
 * "created_at", ...), "attributes.<key>[.<key>...]" (a custom attribute,
 * keys of letters, digits, "_" and "-" that do not begin with a digit or
 * "-"), "consent.<channel>.<purpose>" (granted, revoked or none: the
 * latest decision, none when there is no decision) or "metrics.<name>"
 * (customer_metrics; churn_risk is 1 - p_alive). Each field has a type
 * and the operators it accepts:
 *   text        eq ne in contains starts_with exists
 *   enum        eq ne in exists (values checked against the list)
 *   number      eq ne lt lte gt gte between in exists
 *   timestamp   eq ne lt lte gt gte between exists; a value is an RFC 3339
 *               date-time (kept to the millisecond) or {"days_ago": N}
 *   date        the same; "YYYY-MM-DD" or {"days_ago": N} (that UTC day)
 *   tags        contains (has the tag), in (has any of them), exists
 *   consent     eq ne in
 * An attribute takes the type of the value it is compared with: a string
 * (text operators), a number (number operators, compared as double
 * precision) or a boolean (eq, ne); exists needs no value; contains also
 * holds for an array attribute that has the string as an element.
 * A touchpoint aggregate counts the matching touchpoints (count), adds
 * their amounts (sum, 0 when none has an amount) or takes the time of the
 * latest (last, a timestamp; none when there is no match), over all time,
 * the last within_days days (occurred_at >= now - within_days days), or
 * from since (inclusive) to until (exclusive).
 * A segment node holds when the customer has a row of segment_memberships
 * for that segment at the time of reading (whether the segment exists is
 * not the parser's concern: an unknown one has no members).
 *
 * Semantics: two-valued. A comparison with a missing value (SQL NULL, no
 * metrics row, no match for "last", an attribute absent or of another JSON
 * type) is false, whatever the operator: "ne" included, and so "not" of
 * such a comparison is true. Numbers compare exactly (numeric) but for
 * columns of double precision and attributes, which compare as doubles
 * (NaN equal to itself and above everything, as PostgreSQL orders it).
 * Text compares byte for byte. between is inclusive at both ends.
 *
 * Limits: CRM_RULE_MAX_* below. A rule that breaks the grammar or a limit
 * is CRM_E_INVALID with one field error per problem, named by the JSON
 * pointer of the bad node or member ("/all/2/op").
 */
#ifndef CRM_SEGMENTS_H
#define CRM_SEGMENTS_H

#include <jansson.h>
#include <stdbool.h>

#include "arena.h"
#include "db.h"
#include "error.h"
#include "list/sqlbuf.h"

#define CRM_RULE_MAX_DEPTH 8    /* levels of nodes, the root being level 1 */
#define CRM_RULE_MAX_NODES 200  /* nodes in a rule */
#define CRM_RULE_MAX_LIST 1000  /* values of an "in" */
#define CRM_RULE_MAX_STRING 500 /* characters of a string value */
#define CRM_RULE_MAX_KEYS 8     /* keys of an attribute's path */
#define CRM_RULE_MAX_KEY 64     /* bytes of one key */
#define CRM_RULE_MAX_FIELD 600  /* bytes of a field's path */
#define CRM_RULE_MAX_DAYS 36500 /* days_ago and within_days */
#define CRM_RULE_MAX_ERRORS 20  /* field errors reported at most */
#define CRM_RULE_ID_MAX 100     /* characters of a campaign_id, offer_code or sku */

typedef struct crm_rule crm_rule;
typedef struct crm_rule_state crm_rule_state;

/* Parses and checks a rule. Returns it (free with crm_rule_free), or NULL
 * with CRM_E_INVALID and the field errors, or CRM_E_INTERNAL when memory
 * ran out. The rule keeps no reference to json. */
crm_rule *crm_rule_parse(const json_t *json, crm_error *err);

void crm_rule_free(crm_rule *r);

/* The number of nodes of r. */
int crm_rule_nodes(const crm_rule *r);

/* Appends to s one boolean SQL expression, never NULL, that holds for the
 * row of customers aliased c exactly when crm_rule_eval holds for that
 * customer's state at now_ms (epoch milliseconds: what days_ago and
 * within_days count from). The text is made of constant fragments only;
 * every value is a parameter of s, borrowed from r or allocated in arena:
 * both must outlive s's use. The expression reads customers, customer_metrics,
 * customer_consents, touchpoints and segment_memberships. It does not look
 * at c.status: the caller chooses which customers are considered. False
 * with CRM_E_INTERNAL when s has failed (memory, its limits) or the arena
 * is out of memory. */
bool crm_rule_sql(const crm_rule *r, crm_sqlbuf *s, long long now_ms, crm_arena *arena,
                  crm_error *err);

/* Loads what the rules can read of customer customer_id (not following
 * merges, whatever its status): its row, its current consents, its
 * customer_metrics row, its touchpoints and the segments it is a member of
 * (segment_memberships), on conn (inside the caller's transaction, if any:
 * run it in a REPEATABLE READ one to read a single snapshot). Free with crm_rule_state_free. NULL
 * with CRM_E_NOT_FOUND when there is no such customer, or the database's error. */
crm_rule_state *crm_rule_state_load(crm_conn *conn, long long customer_id, crm_error *err);

void crm_rule_state_free(crm_rule_state *st);

/* The state in one statement beside other reads (GET
 * /v1/customers/{id}/treatments): crm_rule_state_union_sql gives SQL text
 * (the caller frees it; NULL when width is below crm_rule_state_union_width
 * or memory ran out) of a UNION ALL whose rows have a kind in column 0 and
 * width text columns after it (NULL where unused), over the customer whose
 * id is the statement's first parameter ($1):
 *   'c'  the customer: attributes, the fields, the segments, its status
 *        (column crm_rule_state_status_column()), whether it has metrics,
 *        the metrics;
 *   'k'  a consent, the latest of its channel and purpose: channel,
 *        purpose, status, id;
 *   't'  a touchpoint: type, channel, campaign_id, amount, occurred_at,
 *        items, offer_code, direction, purpose, occurred_at in epoch ms.
 * The caller may add parts of its own kinds, of the same width.
 * crm_rule_state_read builds the state from such a result (other kinds
 * are ignored); CRM_E_NOT_FOUND without a 'c' row. */
int crm_rule_state_union_width(void);
int crm_rule_state_status_column(void);
char *crm_rule_state_union_sql(int width);
crm_rule_state *crm_rule_state_read(const PGresult *res, long long customer_id, crm_error *err);

/* The customer id a state was loaded for. */
long long crm_rule_state_customer(const crm_rule_state *st);

/* Whether the customer of st satisfies r at now_ms (see crm_rule_sql). A
 * sum over amounts needs memory; should it run out the comparison is false. */
bool crm_rule_eval(const crm_rule *r, const crm_rule_state *st, long long now_ms);

/* ---- for segments (lib/segments/store.c) ------------------------------- */

/* What a rule reads, so that a write refreshes only the segments whose
 * standing it can change. */
#define CRM_RULE_READS_CUSTOMER 1u    /* a customers column or attribute */
#define CRM_RULE_READS_CONSENT 2u     /* consent.<channel>.<purpose> */
#define CRM_RULE_READS_TOUCHPOINTS 4u /* a touchpoint aggregate */
#define CRM_RULE_READS_METRICS 8u     /* metrics.<name> */
#define CRM_RULE_READS_SEGMENTS 16u   /* {"segment": id} */

/* The CRM_RULE_READS_* bits of what r reads. */
unsigned crm_rule_reads(const crm_rule *r);

/* The segments r names ({"segment": id}): up to max of them, each once, in
 * the order they appear, with the JSON pointer of the node that names each
 * (owned by r; "" for the root). Returns how many r names (which may exceed
 * max). pointers may be NULL when they are not wanted. */
int crm_rule_segment_refs(const crm_rule *r, long long *ids, const char **pointers, int max);

/* A touchpoint as a write stores it, for crm_rule_touchpoint_counts. */
typedef struct crm_rule_touchpoint_facts {
    const char *type, *channel;
    const char *campaign_id, *offer_code; /* NULL: none */
    const char **skus;                    /* of items[].sku */
    int nskus;
    long long occurred_us; /* epoch microseconds */
} crm_rule_touchpoint_facts;

/* Whether a touchpoint like t, added to a customer's, can change r's value
 * for that customer at now_ms: some touchpoint aggregate of r would count it
 * (its filter and window). When none would, a write that only adds such
 * touchpoints leaves every customer's standing in r as it was. */
bool crm_rule_touchpoint_counts(const crm_rule *r, const crm_rule_touchpoint_facts *t,
                                long long now_ms);

/* Whether r's value for some customer can change as time passes with no
 * write at all (a relative window or a days_ago value). */
bool crm_rule_has_time(const crm_rule *r);

/* Appends to s one timestamptz SQL expression over customers c: the
 * earliest time strictly after now_ms at which r's value for c may change
 * with no write, or NULL when it never will. It may be earlier than the
 * change (the caller re-evaluates at the first millisecond not before it
 * and asks again), never later: r's value is the same at every millisecond
 * from now_ms until it. The instants are, for each comparison that moves
 * with time (lib/segments/flip.c has the details):
 *   a days_ago value compared with a timestamp s (a column, a metric, the
 *   time of the latest matching touchpoint for "last"): s + N days (the
 *   value reaches s) where gt, lte, eq, ne and between's upper end change,
 *   one microsecond later (it passes s) where gte, lt, eq, ne and
 *   between's lower end change; with a date d, the UTC midnights starting
 *   d + N days and the day after, likewise;
 *   a within_days D window: t + D days + 1 microsecond for the earliest
 *   matching touchpoint t inside it (count, sum) or the latest ("last"),
 *   when it leaves; none enters a window as time passes.
 * all, any and not take the earliest of their comparisons' (their value
 * may then stay as it was). Absolute times (since and until included),
 * consents, tags, attributes and every other field never move; nor, here,
 * does any other kind of node (a segment named by a rule has flips of its
 * own). Parameters and lifetimes as crm_rule_sql; CRM_E_INTERNAL as it. */
bool crm_rule_flip_sql(const crm_rule *r, crm_sqlbuf *s, long long now_ms, crm_arena *arena,
                       crm_error *err);

/* The same time for a loaded state, in epoch microseconds; 0 when never.
 * Equal to what crm_rule_flip_sql gives for that customer at the same
 * now_ms with the same data. */
long long crm_rule_next_flip(const crm_rule *r, const crm_rule_state *st, long long now_ms);

#endif

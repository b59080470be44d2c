/*
 * treatments/rule_def.h — what rules.c (the stored rules) and simulate.c
 * (a rule tried on the base) share: one rule definition checked and put in
 * its canonical form, with its parsed condition, and the check that the
 * segments its condition names exist.
 */
#ifndef CRM_TREATMENTS_RULE_DEF_H
#define CRM_TREATMENTS_RULE_DEF_H

#include <jansson.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"
#include "segments.h"

#define RULE_DEF_MAX_REFS 200 /* segments a condition may name */
#define RULE_DEF_POSITION_MAX 1000000000
#define RULE_DEF_VALUE_MAX 1e15 /* kept exact as a double */

/* A checked definition. doc is canonical and owned: {"name", "description",
 * "condition", "treatment": {"offer_code", "entitlement_code", "action",
 * "channels", "purpose", "value", "priority"}, "active": {"from", "until"},
 * "position"} with every optional member present (null, or its default;
 * "position" null when the caller gave none). */
typedef struct rule_def {
    json_t *doc;
    crm_rule *condition;
    unsigned reads;
    long long refs[RULE_DEF_MAX_REFS];
    const char *ref_pointers[RULE_DEF_MAX_REFS]; /* owned by condition */
    int nrefs;
    char depends[RULE_DEF_MAX_REFS * 21 + 3]; /* refs as a bigint[] literal */
    char from[40], until[40];                 /* active window in UTC for SQL, "" when open */
} rule_def;

/* Checks body as a whole rule definition and fills d (free with
 * rule_def_free, also after a failure). False with CRM_E_INVALID and one
 * field error per problem (the condition's under /condition), or
 * CRM_E_INTERNAL. */
bool rule_def_check(const json_t *body, rule_def *d, crm_error *err);

void rule_def_free(rule_def *d);

/* On c: every segment the condition names exists and is not deleted; else
 * CRM_E_INVALID naming /condition/.../segment. */
bool rule_def_check_refs(crm_conn *c, const rule_def *d, crm_error *err);

#endif

/*
 * treatment_simulate.h — a treatment rule tried on the whole base without
 * being applied (POST /v1/treatment-rules/simulate and
 * POST /v1/treatment-rules/{id}/simulate; treatments/simulate.c).
 *
 * The rule's condition is compiled to SQL (crm_rule_sql) and counted over
 * the active customers in one statement, beside the condition of every
 * other live rule whose active window holds now, and the latest consent
 * decision of each matched customer for each of the rule's channels and
 * its purpose. The rule's own active window is not applied: the
 * simulation says whom the condition holds for now.
 */
#ifndef CRM_TREATMENT_SIMULATE_H
#define CRM_TREATMENT_SIMULATE_H

#include <jansson.h>

#include "error.h"

#define CRM_TREATMENT_SAMPLE 10 /* customer ids in "sample" */

/* Simulates the stored rule id (body NULL), or the unsaved rule body (id
 * 0; checked as a create is). Returns {"matched", "sample": [the lowest
 * matched customer ids], "overlap": [{"rule_id", "name", "both"}, ...in
 * order of evaluation], "contactable": [{"channel", "count"}, ...in the
 * rule's order]} (caller frees); CRM_E_NOT_FOUND, CRM_E_INVALID. */
json_t *crm_treatment_rule_simulate(long long id, const json_t *body, crm_error *err);

#endif

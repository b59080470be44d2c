/*
 * treatments.h — treatment rules, contact policies and the contact decision
 * (issue 15; migration 0024).
 *
 * A treatment rule says how a kind of customer is treated: a condition in
 * the rule language of segments (segments.h: evaluated in process against
 * one customer's loaded state) and a treatment: an offer code, an
 * entitlement code, a next best action (code and text), the channels it
 * prefers (consent channels, in order), the purpose its contacts serve, a
 * value (>= 0) and a priority (>= 0); an active window [from, until) and a
 * position in the order of evaluation. Every change is a new version (the
 * ETag), kept whole in treatment_rule_versions with the key that made it.
 *
 * A contact policy limits contacts of a customer: at most max_contacts in
 * any period_hours (counted back from now), and/or none between quiet_from
 * and quiet_until (local time of time_zone; from > until spans midnight).
 * It applies to one channel or all (channel NULL), one purpose or all, and
 * to one rule's contacts or to every contact (rule_id NULL). A contact must
 * be allowed by every policy that applies: the most restrictive wins. What a
 * cap counts:
 *   - without rule_id: the customer's outbound touchpoints in the period,
 *     from any source, on the policy's channel (the consent channel's
 *     touchpoint channel: push and in_app are mobile_app) and, when the
 *     policy has a purpose, of that purpose;
 *   - with rule_id: the contacts that rule was allowed in the period
 *     (the log of decisions, contacts).
 *
 * The decision (crm_contact_decide): a customer may be contacted now on a
 * channel for a purpose when the customer is active, the latest consent
 * decision for (channel, purpose) is "granted", and no policy that applies
 * refuses. Each refusal has a reason: {"code": "not_active" | "no_consent" |
 * "consent_revoked" | "cap_reached" | "quiet_hours", "detail", and the
 * policy ("policy_id", with "limit", "period_hours", "count") or the consent
 * decision ("consent_id")}.
 *
 * Arbitration (GET /v1/customers/{id}/treatments): every active rule whose
 * condition holds applies; its score is priority x value; the actions (the
 * applicable rules with an action code) rank by score descending, then by
 * position, then by id ascending: the first is the next best action.
 *
 * Config cache: each process keeps the live rules (parsed) and policies in
 * memory, reloaded when treatment_config.stamp, read with the customer's
 * state, has moved; every change of a rule or policy moves it in its own
 * transaction.
 */
#ifndef CRM_TREATMENTS_H
#define CRM_TREATMENTS_H

#include <jansson.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"

#define CRM_TREATMENT_RULES_MAX 1000   /* live rules at most */
#define CRM_CONTACT_POLICIES_MAX 1000  /* live policies at most */
#define CRM_TREATMENTS_LIMIT_MAX 100   /* ?limit= of ranked actions */

/* ---- treatment rules (treatments/rules.c) ---------------------------------- */

/* POST /v1/treatment-rules: {"name", "description"?, "condition",
 * "treatment": {"offer_code"?, "entitlement_code"?, "action"?: {"code",
 * "text"?}, "channels"?: [...], "purpose"?, "value"?, "priority"?},
 * "active"?: {"from"?, "until"?}, "position"?}. The position defaults to
 * after the last rule. CRM_E_INVALID with field errors (the condition's
 * under /condition), CRM_E_CONFLICT for a name in use or too many rules. */
json_t *crm_treatment_rule_create(const json_t *body, long long api_key_id, crm_error *err);

/* The rule as created, with "id", "version", "created_at", "updated_at". */
json_t *crm_treatment_rule_get(long long id, crm_error *err);

/* PATCH (JSON merge patch), conditional on if_match when not NULL. */
json_t *crm_treatment_rule_patch(long long id, const json_t *patch, const char *if_match,
                                 long long api_key_id, crm_error *err);

/* DELETE: soft; its versions and the contacts that name it stay. */
bool crm_treatment_rule_delete(long long id, const char *if_match, crm_error *err);

/* A page in order of evaluation (position, id): {"data"}; the cursor is the
 * position in that order. */
json_t *crm_treatment_rules_list(long long after, int limit, long long *next_after,
                                 crm_error *err);

/* A page of a rule's versions, oldest first. */
json_t *crm_treatment_rule_versions(long long id, long long after, int limit,
                                    long long *next_after, crm_error *err);

/* ---- contact policies (treatments/policies.c) -------------------------------- */

/* POST /v1/contact-policies: {"name", "channel"?, "purpose"?, "rule_id"?,
 * "cap"?: {"max_contacts", "period_hours"}, "quiet_hours"?: {"from":
 * "HH:MM", "until": "HH:MM", "time_zone"}} (at least one of cap and
 * quiet_hours). */
json_t *crm_contact_policy_create(const json_t *body, long long api_key_id, crm_error *err);
json_t *crm_contact_policy_get(long long id, crm_error *err);
json_t *crm_contact_policy_patch(long long id, const json_t *patch, const char *if_match,
                                 long long api_key_id, crm_error *err);
bool crm_contact_policy_delete(long long id, const char *if_match, crm_error *err);
json_t *crm_contact_policies_list(long long after_id, int limit, long long *next_after,
                                  crm_error *err);

/* ---- the decision (treatments/contacts.c) ------------------------------------ */

/* POST /v1/customers/{id}/contacts: {"channel", "purpose", "rule_id"? |
 * "campaign_id"?, "source", "event_id", "occurred_at"?}. In one transaction,
 * under the customer's row lock (FOR NO KEY UPDATE, as the segments take
 * it): the decision; when allowed, an outbound touchpoint of type "contact"
 * (campaign_contact with a campaign) on the channel's touchpoint channel,
 * with the purpose and the rule's offer code, and the log row. The same
 * (source, event_id) again answers the first decision (*replayed true).
 * Returns {"id", "customer_id", "channel", "purpose", "allowed", "reasons",
 * "rule_id", "rule_version", "touchpoint_id", "decided_at"}: *allowed false
 * is a refusal the handler answers with 409 (the body names the reasons).
 * CRM_E_NOT_FOUND for an unknown customer or rule; CRM_E_INVALID for bad
 * input (an unknown channel or purpose). */
json_t *crm_contact_decide(long long customer_id, const json_t *body, long long api_key_id,
                           bool *allowed, bool *replayed, crm_error *err);

/* ---- evaluation (treatments/evaluate.c) ---------------------------------------- */

/* GET /v1/customers/{id}/treatments?limit=N: {"customer_id", "evaluated_at",
 * "rules": [{"id", "version", "name", ...applicable rules in order}],
 * "entitlements": [codes], "next_best_action": {...} | null, "actions":
 * [top N with "score", "priority", "value", "position"], "channels":
 * [{"channel", "purpose", "allowed", "reasons"}], "timing"}, in two steps
 * around one statement: crm_treatments_begin fills q (the customer's
 * state and facts and the rules' stamp) and *call; crm_treatments_finish
 * answers from q's result (JSON text, *len bytes; the caller frees it).
 * may_block (a worker) reads the rules and
 * policies from the database first; otherwise the process's cached ones
 * are used, and when none is cached yet (begin) or the stamp read with the
 * customer shows they moved (finish), *need_worker asks the caller to start
 * over on a worker. Free *call with crm_treatments_call_free after finish.
 * CRM_E_INVALID for a limit out of 1..CRM_TREATMENTS_LIMIT_MAX,
 * CRM_E_NOT_FOUND for an unknown customer. */
typedef struct crm_treatments_call crm_treatments_call;
bool crm_treatments_begin(long long customer_id, int limit, bool may_block, crm_query *q,
                          crm_treatments_call **call, bool *need_worker, crm_error *err);
char *crm_treatments_finish(crm_treatments_call *call, const PGresult *res, size_t *len,
                            bool *need_worker, crm_error *err);
void crm_treatments_call_free(crm_treatments_call *call);

#endif

/*
 * campaigns.h — campaign definitions and their status (issue 16, part 1;
 * migration 0025). Execution, results and attribution come later.
 *
 * A campaign reaches an audience (one segment or one treatment rule) on 1
 * to 7 consent channels for one consent purpose, optionally with an offer
 * code, in a window [starts_at, ends_at); control_share (0 to 0.5) of the
 * audience is held out, assigned later from the campaign's salt. code
 * (unique among live campaigns) is what delivery systems put in
 * touchpoints.campaign_id. Costs: per contact (4 decimals) and fixed (2),
 * decimal strings in currency (ISO 4217; required when a cost is above 0).
 * response_types (1 to 20 touchpoint types) count as responses within
 * attribution_days (1 to 365, default 30) of a contact.
 *
 * Status (campaigns/def.h holds the machine): a campaign is created as a
 * draft; a PATCH of "status" moves draft -> scheduled (starts_at and
 * ends_at set, starts_at in the future), scheduled -> draft, draft |
 * scheduled | running -> cancelled, running -> completed. running is
 * entered by execution only; completed and cancelled are final. While
 * running, code, audience, channels, purpose, control_share, offer_code
 * and starts_at stay; once final, all but name and objective.
 *
 * Every change is a new version (the ETag), kept in campaign_versions with
 * its status and the key that made it.
 */
#ifndef CRM_CAMPAIGNS_H
#define CRM_CAMPAIGNS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "db.h"
#include "error.h"

/* POST /v1/campaigns: {"code", "name", "objective"?, "audience":
 * {"segment_id"} | {"rule_id"}, "channels", "purpose", "offer_code"?,
 * "starts_at"?, "ends_at"?, "control_share", "cost_per_contact"?,
 * "fixed_cost"?, "currency"?, "response_types", "attribution_days"?,
 * "status"?: "draft"}. CRM_E_INVALID with field errors (an audience that
 * names no live segment or rule under /audience/...), CRM_E_CONFLICT for a
 * code in use. Returns the campaign: the definition with "id", "status",
 * "salt", "version", "created_at", "updated_at". */
json_t *crm_campaign_create(const json_t *body, long long api_key_id, crm_error *err);

json_t *crm_campaign_get(long long id, crm_error *err);

/* PATCH (JSON merge patch of the definition, and "status"), conditional on
 * if_match. An invalid move of status is CRM_E_CONFLICT with *allowed set
 * (a new array of the statuses the campaign may move to; the caller owns
 * it); a member that may not change in the campaign's status is
 * CRM_E_CONFLICT naming it as a field error. */
json_t *crm_campaign_patch(long long id, const json_t *patch, const char *if_match,
                           long long api_key_id, json_t **allowed, crm_error *err);

/* DELETE: soft, and only a draft (else CRM_E_CONFLICT). */
bool crm_campaign_delete(long long id, const char *if_match, crm_error *err);

/* A page by id, only the campaigns in status when it is not NULL
 * (CRM_E_INVALID naming "status" for an unknown one): {"data"}. */
json_t *crm_campaigns_list(const char *status, long long after, int limit, long long *next_after,
                           crm_error *err);

/* A page of a campaign's versions, oldest first: {"data": [{"version",
 * "status", "changed_at", "api_key_id", "definition"}]}. */
json_t *crm_campaign_versions(long long id, long long after, int limit, long long *next_after,
                              crm_error *err);

/* POST /v1/campaigns/{id}/execute: queues the execution job (kind
 * campaign_execute, campaigns/execute.c) and moves the campaign to running
 * (starts_at now unless it has passed), in one transaction; returns the
 * job's representation. A running campaign whose last job ended (failed)
 * may be executed again: the new job goes on with the targets still
 * pending. CRM_E_NOT_FOUND; CRM_E_CONFLICT for a completed or cancelled
 * campaign, one being executed, or an audience that is not there (a
 * deleted segment or rule, a segment still building); CRM_E_INVALID naming
 * /ends_at for a campaign without an end. */
json_t *crm_campaign_execute(long long id, long long api_key_id, crm_error *err);

/* ---- responses and results (campaigns/results.c, migration 0027) ---------- */

/* The reporting currency revenue is valued in (CRMD_REPORTING_CURRENCY),
 * set once at start; "EUR" until then. */
void crm_campaigns_set_currency(const char *code);
const char *crm_campaigns_currency(void);

/* One sweep of the responses' follower on c: at most limit touchpoints
 * after its place attributed (see migration 0027), amounts valued in the
 * reporting currency currency; *seen how many it read (0 also when
 * another process follows). */
bool crm_campaigns_follow(crm_conn *c, const char *currency, int limit, int *seen,
                          crm_error *err);

/* Recomputes the results of up to max campaigns marked dirty, each in its
 * own transaction (FOR UPDATE SKIP LOCKED: processes side by side take
 * others); *done how many. */
bool crm_campaigns_refresh_results(crm_conn *c, const char *currency, int max, int *done,
                                   crm_error *err);

/* Marks campaign id's results to be recomputed (in the caller's
 * transaction on c). */
bool crm_campaign_results_moved(crm_conn *c, long long id, crm_error *err);

/* GET /v1/campaigns/{id}/results: the stored results as JSON text (the
 * caller frees it; *len bytes), with "computed_at" and "current" (false
 * while a recompute is due); computed at once the first time. */
char *crm_campaign_results(long long id, const char *currency, size_t *len, crm_error *err);

/* The same in two steps around one statement, for the I/O thread: q reads
 * the stored results; render gives the text from q's result, or NULL with
 * *need_compute when none was computed yet (then crm_campaign_results, on
 * a worker). */
void crm_campaign_results_query(long long id, crm_query *q);
char *crm_campaign_results_render(const PGresult *res, size_t *len, bool *need_compute,
                                  crm_error *err);

/* The scheduler (every process's campaigns' upkeep): the scheduled
 * campaigns whose starts_at has come are executed as POST .../execute
 * would (FOR UPDATE SKIP LOCKED: one process starts each); one that cannot
 * start (its segment still building) stays scheduled, logged. *started
 * how many started. And the running campaigns whose ends_at has come and
 * whose execution is done (nothing pending) are completed (a version
 * each). */
bool crm_campaigns_start_scheduled(crm_conn *c, int *started, crm_error *err);

/* GET /v1/campaigns/{id}/contacts (campaigns/contacts.c): the campaign's
 * targets in state contacted, by customer id, on channel when it is not
 * NULL (CRM_E_INVALID naming "channel" for one that is no consent
 * channel). Each: customer_id, channel, address (for email the customer's
 * email, for sms and phone their phone, for mail {street, postal_code,
 * city, region, country}, else null; as the customer's row holds it now),
 * first_name, last_name, preferred_language, the campaign's offer_code,
 * touchpoint_id (the contact's touchpoint) and decided_at. A page after
 * customer id after: {"data"} (the caller owns it), *next_after the last
 * id shown when a next page exists, else 0. CRM_E_NOT_FOUND for no live
 * campaign; one never executed has none. */
json_t *crm_campaign_contacts(long long id, const char *channel, long long after, int limit,
                              long long *next_after, crm_error *err);

/* The same, the whole list, as CSV (lib/csv.h: a header row, then one
 * record per contact; the address column holds an email or phone, the
 * postal columns a mail address) written to out, from one snapshot. False
 * with err (then out holds a part). */
bool crm_campaign_contacts_csv(long long id, const char *channel, FILE *out, crm_error *err);

/* The job kind of an execution (register it with crm_jobs_register). */
struct crm_job_kind;
extern const struct crm_job_kind crm_campaign_execute_kind;

#endif

/*
 * handlers.h — every handler the route table names, and the small helpers
 * they share for query parameters.
 */
#ifndef HTTP_HANDLERS_H
#define HTTP_HANDLERS_H

#include "customers.h"
#include "http.h"

/* handlers_ops.c */
void handle_healthz(http_request *req);
void handle_readyz(http_request *req);
void handle_metrics(http_request *req);
void handle_openapi(http_request *req);

/* handlers_apikeys.c */
void handle_apikey_create(http_request *req);
void handle_apikey_list(http_request *req);
void handle_apikey_get(http_request *req);
void handle_apikey_revoke(http_request *req);

/* handlers_customers.c */
void handle_customer_create(http_request *req);
void handle_customer_list(http_request *req);
void handle_customer_get(http_request *req);
void handle_customer_patch(http_request *req);
void handle_customer_delete(http_request *req);
void handle_customer_audit(http_request *req);
void handle_customer_get_by_external_id(http_request *req);
void handle_customer_upsert_by_external_id(http_request *req);

/* handlers_customer_search.c */
void handle_customer_search(http_request *req);

/* handlers_customer_privacy.c */
void handle_customer_export(http_request *req);
void handle_customer_erase(http_request *req);

/* handlers_consents.c */
void handle_consents_record(http_request *req);
void handle_consents_get(http_request *req);

/* handlers_customer_merge.c */
void handle_customer_duplicates(http_request *req);
void handle_customer_merge(http_request *req);

/* handlers_touchpoints.c */
void handle_touchpoint_record(http_request *req);
void handle_touchpoint_batch(http_request *req);
void handle_touchpoint_get(http_request *req);
void handle_customer_timeline(http_request *req);

/* handlers_sync.c */
void handle_sync_customers(http_request *req);
void handle_sync_touchpoints(http_request *req);
void handle_sync_segment_memberships(http_request *req);

/* handlers_metrics.c */
void handle_customer_metrics(http_request *req);
void handle_customer_treatments(http_request *req);
void handle_customer_lifecycle(http_request *req);
void handle_metrics_model(http_request *req);
void handle_metrics_recompute(http_request *req);
void handle_currency_rates_list(http_request *req);
void handle_currency_rate_get(http_request *req);
void handle_currency_rate_put(http_request *req);
void handle_currency_rate_delete(http_request *req);

/* handlers_metrics_patterns.c */
void handle_metrics_cohorts(http_request *req);
void handle_metrics_market_basket(http_request *req);
/* handlers_metrics_base.c */
void handle_metrics_summary(http_request *req);
void handle_metrics_distribution(http_request *req);
void handle_metrics_timeseries(http_request *req);

/* handlers_segments.c */
void handle_segment_create(http_request *req);
void handle_segment_list(http_request *req);
void handle_segment_get(http_request *req);
void handle_segment_patch(http_request *req);
void handle_segment_delete(http_request *req);
void handle_segment_count(http_request *req);
void handle_segment_customers(http_request *req);
void handle_segment_changes(http_request *req);
void handle_segment_history(http_request *req);

/* handlers_campaigns.c */
void handle_campaign_create(http_request *req);
void handle_campaign_list(http_request *req);
void handle_campaign_get(http_request *req);
void handle_campaign_patch(http_request *req);
void handle_campaign_delete(http_request *req);
void handle_campaign_versions(http_request *req);
void handle_campaign_execute(http_request *req);
void handle_campaign_results(http_request *req);
void handle_campaign_contacts(http_request *req);

/* handlers_treatment_rules.c */
void handle_treatment_rule_create(http_request *req);
void handle_treatment_rule_list(http_request *req);
void handle_treatment_rule_get(http_request *req);
void handle_treatment_rule_patch(http_request *req);
void handle_treatment_rule_delete(http_request *req);
void handle_treatment_rule_versions(http_request *req);
void handle_treatment_rule_simulate(http_request *req);
void handle_treatment_rule_simulate_stored(http_request *req);
/* contact policies and contacts (handlers_contacts.c) */
void handle_contact_policy_create(http_request *req);
void handle_contact_policy_list(http_request *req);
void handle_contact_policy_get(http_request *req);
void handle_contact_policy_patch(http_request *req);
void handle_contact_policy_delete(http_request *req);
void handle_customer_contact(http_request *req);

/* handlers_jobs.c */
void handle_job_get(http_request *req);
void handle_job_cancel(http_request *req);

/* params.c */

/* Answers err (problem+json) and releases it. */
void handler_reply_error(http_request *req, crm_error *err);

/* Who writes, for the audit trail: the request's API key (no
 * Idempotency-Key; the handlers that honour one set it). */
crm_write_ctx handler_write_ctx(http_request *req);

/* Reads ?limit= (default def, 1..max). On a bad value fills err (422). */
bool http_query_limit(http_request *req, int def, int max, int *out, crm_error *err);

/* Reads ?after= as a cursor made by http_cursor_from_id (0 when absent). */
bool http_query_after_id(http_request *req, long long *out, crm_error *err);

/* Makes an opaque cursor for a keyset position; returns it as a JSON string. */
json_t *http_cursor_from_id(long long id);

/* The weight (thousandths, 0..1000) the request's Accept header gives the
 * media type type ("text/csv"): that of the most specific range naming it
 * (the type itself, then its major type with any subtype, then any type),
 * 0 when none does, 1000 without Accept.
 * A range with a malformed q is ignored. */
int http_accept_quality(http_request *req, const char *type);

/* The same for an Accept header's value (NULL: absent). Reads any bytes
 * safely (tests/fuzz/fuzz_accept.c). */
int http_accept_weight(const char *accept, const char *type);

/* Parses a positive integer path parameter; false when it is not one. */
bool http_param_id(http_request *req, const char *name, long long *out);

#endif

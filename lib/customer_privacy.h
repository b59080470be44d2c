/*
 * customer_privacy.h — the rights of the person behind a customer record:
 * access (everything crmd holds about them as one document), erasure (their
 * personal data removed for good, a tombstone left), and the customer read
 * with what ?expand= adds (its current consents, its metrics).
 *
 * "The person" is a customer and every customer merged into it (the chain of
 * merged_into, followed backwards): their rows describe the same human
 * being, so export shows them all and erasure erases them all.
 */
#ifndef CRM_CUSTOMER_PRIVACY_H
#define CRM_CUSTOMER_PRIVACY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "customers.h"
#include "error.h"

/* The "format_version" of an export document; raised when a member changes
 * meaning or disappears (adding members, e.g. touchpoints, keeps it). */
#define CRM_CUSTOMER_EXPORT_FORMAT_VERSION 1

/* What the audit rows of an erased customer say instead of their changes. */
#define CRM_CUSTOMER_REDACTED_CHANGES "{\"redacted\": true}"
/* What the consent decisions of an erased customer say as their source. */
#define CRM_CONSENT_SOURCE_REDACTED "redacted"

/* What ?expand= adds to a customer read. */
typedef struct crm_customer_expand {
    bool external_ids; /* "external_ids" */
    bool consents;     /* "consents": the current state, an array of ConsentState (consents.h) */
    bool metrics;      /* "metrics": crm_metrics_customer's document (customer_metrics.h) */
} crm_customer_expand;

/* Reads a customer like crm_customer_get (following merges), in one
 * snapshot, with the members x asks for. Caller json_decref's it; NULL with
 * CRM_E_NOT_FOUND when there is no live customer, or the database's error. */
json_t *crm_customer_get_expanded(long long id, const crm_customer_expand *x, crm_error *err);

/* The same for the customer (source, external_id) names (checked by the
 * caller, crm_external_id_valid); *merged tells whether it named a merged
 * customer, whose survivor is returned. */
json_t *crm_customer_get_expanded_by_external_id(const char *source, const char *external_id,
                                                 const crm_customer_expand *x, bool *merged,
                                                 crm_error *err);

/* Everything held about the customer id names (following merges to the
 * survivor; a deleted customer too, its data is still held), read in one
 * snapshot:
 *   {"format_version", "exported_at", "customer": Customer + "status" +
 *    "external_ids", "merged_customers": [the same, for each customer merged
 *    into it], "consents": {"current": [...], "history": [every decision,
 *    oldest first, with customer_id]}, "audit": [every audit entry of those
 *    customers, oldest first, with customer_id]}.
 * Caller json_decref's it; NULL with CRM_E_NOT_FOUND for an unknown or
 * erased customer, or the database's error. */
json_t *crm_customer_export(long long id, crm_error *err);

/* The export of crm_customer_export for a request, written to out as JSON
 * text and then recorded in the audit trail of the person's customer
 * (action "export", the caller's key, changes {"customer_ids": [every
 * customer exported]}); *customer_id gets that customer's id. The rows are
 * read one at a time, so memory stays small whatever the person's history;
 * out (a temporary file) takes the size. No audit entry, no export: false
 * with the database's error when it cannot be written, and what out holds
 * is then not to be sent. */
bool crm_customer_export_write(long long id, const crm_write_ctx *ctx, FILE *out,
                               long long *customer_id, crm_error *err);

/* Checks the body of an erase request: exactly {"confirm": true}. False with
 * CRM_E_INVALID naming the field otherwise. */
bool crm_customer_erase_body_valid(json_t *body, crm_error *err);

/* Erases the customer id names and every customer merged into it, in one
 * transaction: every personal column NULL (tags and attributes empty),
 * status 'erased', version + 1; external ids deleted; consent decisions kept
 * as anonymous facts (channel, purpose, status, times) with their source
 * replaced by CRM_CONSENT_SOURCE_REDACTED; audit changes replaced by
 * CRM_CUSTOMER_REDACTED_CHANGES; stored Idempotency-Key responses about them
 * deleted; then one 'erase' audit row without personal data.
 *
 * Returns the tombstone {"id", "status": "erased", "version", "created_at",
 * "updated_at"} (caller json_decref's it). Erasing an erased customer changes
 * nothing and returns its tombstone with *already set. Fails with
 * CRM_E_NOT_FOUND for an unknown id, CRM_E_CONFLICT (naming the survivor)
 * for a merged customer's id: erasure is asked of the survivor. */
json_t *crm_customer_erase(long long id, const crm_write_ctx *ctx, bool *already, crm_error *err);

#endif

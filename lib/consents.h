/*
 * consents.h — consent (opt-in) per channel and purpose, with full history.
 *
 * Every decision a customer makes ("granted" or "revoked", for one channel
 * and one purpose, captured by some system at some moment) is kept as a row
 * of customer_consents and never changed. The current state of a channel and
 * purpose is what the latest decision says: latest captured_at, then latest
 * id, so a decision recorded late but captured earlier does not override a
 * newer one. No decision means consent was not given.
 *
 * Customers are addressed by id. A merged customer (status 'merged') stands
 * for its survivor: merged_into is followed until an active customer is
 * reached. Deleted, erased or unknown customers are CRM_E_NOT_FOUND.
 */
#ifndef CRM_CONSENTS_H
#define CRM_CONSENTS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"
#include "idempotency.h"

#define CRM_CONSENTS_MAX_BATCH 100
#define CRM_CONSENT_SOURCE_MAX 100                /* characters (code points) */
#define CRM_CONSENT_MAX_FUTURE_MS (5 * 60 * 1000) /* captured_at tolerance for clock skew */

/* The fixed lists of channels, purposes and statuses, NULL-terminated. */
extern const char *const crm_consent_channels[];
extern const char *const crm_consent_purposes[];
extern const char *const crm_consent_statuses[];

bool crm_consent_channel_known(const char *channel);
bool crm_consent_purpose_known(const char *purpose);

/* Parses an RFC 3339 date-time ("2026-11-23T10:15:00Z", with optional
 * fraction and a Z or ±hh:mm offset) into epoch milliseconds (a fraction
 * beyond milliseconds is truncated) with crm_rfc3339_epoch_ms. Only times
 * from 1970 on are accepted. False when s is not such a timestamp. */
bool crm_consent_parse_time(const char *s, long long *epoch_ms);

/* Checks a POST body: one decision {"channel","purpose","status","source",
 * "captured_at"?} or {"consents": [1..CRM_CONSENTS_MAX_BATCH decisions]}.
 * now_ms (epoch milliseconds) bounds captured_at. Returns the decisions as a
 * new array of {"channel","purpose","status","source","captured_ms"} with
 * captured_ms null when not given (the caller json_decref's it), or NULL with
 * CRM_E_INVALID and one field error per fault, named by JSON pointer. */
json_t *crm_consents_validate(json_t *body, long long now_ms, crm_error *err);

/* Validates body (see above) and stores its decisions for the customer in one
 * transaction, with one customer_audit row (action 'consent') naming
 * api_key_id (0: none). Nothing is stored on any error. Returns
 * {"customer_id": <the active customer the decisions went to>,
 *  "current": [ConsentState...], "recorded": [ConsentHistoryEntry...]}
 * (caller json_decref's it), or NULL with err set: CRM_E_INVALID,
 * CRM_E_NOT_FOUND, CRM_E_UNAVAILABLE, CRM_E_INTERNAL. */
json_t *crm_consents_record(long long customer_id, json_t *body, long long api_key_id,
                            crm_error *err);

/* crm_consents_record for an HTTP POST that may carry an Idempotency-Key
 * (idempotency_key NULL: none). The response is rendered here so that a
 * replay answers the same bytes: out gets status 201, the Location
 * "/v1/customers/<id>/consents" of the customer the decisions went to and
 * the JSON body (free with crm_idem_response_free). The request the key
 * stands for is the path's customer id and the body as canonical JSON
 * (member order and whitespace do not matter). *replayed tells that out is
 * the stored first response. Besides crm_consents_record's errors: the key
 * used with another request is CRM_E_CONFLICT, a malformed key
 * CRM_E_INVALID. */
bool crm_consents_record_keyed(long long customer_id, json_t *body, long long api_key_id,
                               const char *idempotency_key, crm_idem_response *out,
                               bool *replayed, crm_error *err);

/* The read of GET /v1/customers/{id}/consents as one statement, split for the
 * event loop: history entries with id < before_id (0: from the newest), at
 * most limit of them, newest recorded first. decode returns
 * {"customer_id", "current", "history"} (caller json_decref's it) and sets
 * *next_before to the id to pass as before_id for the next page, or 0 when
 * this is the last one; NULL with CRM_E_NOT_FOUND when there is no active
 * customer for customer_id. */
void crm_consents_get_query(crm_query *q, long long customer_id, long long before_id, int limit);
json_t *crm_consents_get_decode(const PGresult *res, long long customer_id, int limit,
                                long long *next_before, crm_error *err);

/* The same on the blocking pool. */
json_t *crm_consents_get(long long customer_id, long long before_id, int limit,
                         long long *next_before, crm_error *err);

/* The current state of every channel and purpose that has a decision, for a
 * customer id the caller has already resolved (no merge following here), on
 * the caller's connection (inside its transaction, if any): an array of
 * {"channel","purpose","status","source","captured_at"} ordered by channel,
 * then purpose; empty when there is none. Caller json_decref's it; NULL with
 * err set on a database failure. */
json_t *crm_consents_current(crm_conn *conn, long long customer_id, crm_error *err);

/* Sets *allowed to whether the customer may be contacted on channel for
 * purpose: true only when the current decision is 'granted'. A merged
 * customer answers for its survivor; an unknown, deleted or erased customer
 * is never allowed (and that is not an error). Fails with CRM_E_INVALID for a
 * channel or purpose not in the lists, or with the database's error. */
bool crm_consents_allows(crm_conn *conn, long long customer_id, const char *channel,
                         const char *purpose, bool *allowed, crm_error *err);

#endif

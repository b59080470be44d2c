/*
 * customer_merge.h — likely duplicates of a customer, and merging
 * duplicates into one survivor.
 *
 * Duplicates: other active customers with the same normalized e-mail, the
 * same normalized phone, or a close name at the same postal code. A
 * customer's name, for this purpose, is its first and last name joined by a
 * space, or its display name when it has neither, lower-cased; two names
 * are close when pg_trgm's similarity() of them is at least
 * CRM_DUPLICATE_NAME_SIMILARITY. Postal codes compare upper-cased with
 * spaces removed.
 *
 * Merge: one transaction moves everything attached to the merged customers
 * to the survivor (external ids, every consent history row), fills the
 * survivor's gaps from them, and marks them 'merged' with merged_into set,
 * so that their ids become aliases of the survivor. See crm_customer_merge.
 */
#ifndef CRM_CUSTOMER_MERGE_H
#define CRM_CUSTOMER_MERGE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "customers.h"
#include "db.h"
#include "error.h"

#define CRM_MERGE_MAX_IDS 20           /* merge_ids per request */
#define CRM_DUPLICATES_MAX 50          /* results of one duplicates read */
#define CRM_DUPLICATE_NAME_SIMILARITY "0.6"

/* The duplicates read as one statement, split for the event loop. decode
 * returns {"customer_id": <the active customer id resolves to, following
 * merges>, "data": [{"customer": Customer, "reasons": ["email", "phone",
 * "name_and_postal_code"]}, ...]} strongest first (an e-mail match weighs 4,
 * a phone match 2, a close name 1; then the closer name, then the lower id),
 * at most CRM_DUPLICATES_MAX entries. The caller json_decref's it. NULL with
 * CRM_E_NOT_FOUND when id names no active customer. */
void crm_customer_duplicates_query(crm_query *q, long long id);
json_t *crm_customer_duplicates_decode(const PGresult *res, long long id, crm_error *err);

/* The same on the blocking pool. */
json_t *crm_customer_duplicates(long long id, crm_error *err);

/* Merges the customers body lists into survivor_id. body is
 * {"merge_ids": [1..CRM_MERGE_MAX_IDS ids], "dry_run": false}.
 *
 * In one transaction, with every involved row locked FOR UPDATE in id
 * order (so that overlapping merges wait for each other, never deadlock):
 *   - external ids and all consent history rows move to the survivor; for
 *     each channel and purpose where the parties' current decisions
 *     disagree (one 'granted', another 'revoked'), a 'revoked' decision
 *     with source 'merge' is recorded for the survivor, captured at now()
 *     (or at the latest captured_at of that channel and purpose, when that
 *     is later), so a merge never turns a "no" into a "yes";
 *   - the survivor's values win; null fields are filled from the merged
 *     customers in the order given (address and location as a whole, when
 *     all of the survivor's are empty), missing attribute keys likewise;
 *     tags are the union; the result must still be a valid customer;
 *   - the survivor's version increments, each merged customer becomes
 *     status 'merged' with merged_into = survivor, version + 1;
 *   - audit rows 'merge': on the survivor (merged_ids, each changed field
 *     as {"from", "to"}, the moved external ids, the recorded consent
 *     decisions) and on each merged customer (status and merged_into).
 *
 * With "dry_run": true the same transaction runs and is rolled back. Returns
 * the survivor's representation with "external_ids" and "consents" (its
 * current decisions, as crm_consents_current) as it is (or would be) after
 * the merge; *dry_run tells which. The caller json_decref's it.
 *
 * Errors, with nothing changed: CRM_E_INVALID for a malformed body, an id
 * listed twice, the survivor listed, or an unknown id (each named
 * "/merge_ids/N"), or a merged result that breaks a customer rule (named by
 * its field); CRM_E_NOT_FOUND when survivor_id is unknown; CRM_E_CONFLICT
 * when the survivor (field "id") or a listed customer ("/merge_ids/N") is
 * not active (merged, deleted or erased); the database's errors. */
json_t *crm_customer_merge(long long survivor_id, json_t *body, const crm_write_ctx *ctx,
                           bool *dry_run, crm_error *err);

#endif

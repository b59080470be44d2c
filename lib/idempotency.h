/*
 * idempotency.h — Idempotency-Key for creating POSTs.
 *
 * The first successful response to a POST that carries an Idempotency-Key is
 * stored (table idempotency_keys) in the same transaction as the write it
 * describes, keyed by the API key and the Idempotency-Key. Within 24 hours
 * the same key with the same request (method, path and body bytes) gets that
 * response again, byte for byte; with a different request it is a conflict.
 * A request that fails stores nothing, so it may be retried with the same
 * key. Two concurrent requests with the same key serialize on the row: the
 * second waits for the first to commit and then replays its response.
 *
 * Use, inside a transaction on c:
 *
 *     crm_idempotency_claim(c, key_id, key, hash, &stored, &replay, err)
 *       replay: answer `stored` and commit nothing else
 *       else:   do the write, then crm_idempotency_store(c, ..., &response)
 */
#ifndef CRM_IDEMPOTENCY_H
#define CRM_IDEMPOTENCY_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "error.h"

#define CRM_IDEMPOTENCY_KEY_MAX 255
#define CRM_IDEMPOTENCY_HASH_BYTES 32

/* A stored response; the strings are owned (free with crm_idem_response_free). */
typedef struct crm_idem_response {
    int status;
    char *location; /* NULL when the response had none */
    char *body;
    long long customer_id; /* the customer the response is about (erasure
                            * removes it with the customer); 0: none */
} crm_idem_response;

void crm_idem_response_free(crm_idem_response *r);

/* True for an acceptable key: 1 to 255 printable ASCII characters. */
bool crm_idempotency_key_valid(const char *key);

/* SHA-256 over the method, the path and the body bytes. */
void crm_idempotency_hash(const char *method, const char *path, const char *body, size_t len,
                          unsigned char out[CRM_IDEMPOTENCY_HASH_BYTES]);

/* Claims key for this request on c (in a transaction). Sets *replay and
 * fills *stored when an earlier request with the same hash completed within
 * 24 hours. Fails with CRM_E_CONFLICT when the key was used for another
 * request, CRM_E_INVALID for a malformed key. */
bool crm_idempotency_claim(crm_conn *c, long long api_key_id, const char *key,
                           const unsigned char hash[CRM_IDEMPOTENCY_HASH_BYTES],
                           crm_idem_response *stored, bool *replay, crm_error *err);

/* Records the response of a claimed key, in the caller's transaction. */
bool crm_idempotency_store(crm_conn *c, long long api_key_id, const char *key,
                           const crm_idem_response *response, crm_error *err);

/* Deletes stored responses older than 24 hours; returns how many (or -1). */
long crm_idempotency_purge(crm_error *err);

#endif

/*
 * idempotency.c — stored first responses for Idempotency-Key (see
 * idempotency.h for the protocol).
 */
#include "idempotency.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new key, or one whose stored response has expired, is (re)claimed; a
 * live one is left alone and returns no row. */
static crm_stmt claim_key = CRM_STMT(
    "idempotency_claim",
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash) VALUES ($1, $2, $3::bytea) "
    "ON CONFLICT (api_key_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
    "status = NULL, location = NULL, body = NULL, created_at = now() "
    "WHERE idempotency_keys.created_at < now() - interval '24 hours' RETURNING 1");
static crm_stmt read_key = CRM_STMT(
    "idempotency_read", "SELECT request_hash = $3::bytea, status, location, body "
                        "FROM idempotency_keys WHERE api_key_id = $1 AND key = $2");
static crm_stmt store_key = CRM_STMT(
    "idempotency_store", "UPDATE idempotency_keys SET status = $3, location = $4, body = $5, "
                         "customer_id = $6 WHERE api_key_id = $1 AND key = $2");
/* One batch of the purge: the oldest expired rows, skipping any that a
 * request (or another crmd's housekeeping) holds. */
static crm_stmt purge_keys = CRM_STMT(
    "idempotency_purge",
    "DELETE FROM idempotency_keys i USING ("
    " SELECT api_key_id, key FROM idempotency_keys"
    " WHERE created_at < now() - interval '24 hours'"
    " ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED) d "
    "WHERE i.api_key_id = d.api_key_id AND i.key = d.key");

/* Rows a purge batch deletes, and batches a purge runs at most: a backlog is
 * worked off over several housekeeping rounds, each statement short, so that
 * the main thread that runs housekeeping answers SIGTERM promptly. */
#define PURGE_BATCH_ROWS 1000
#define PURGE_MAX_BATCHES 100

void crm_idem_response_free(crm_idem_response *r)
{
    free(r->location);
    free(r->body);
    r->location = r->body = NULL;
}

bool crm_idempotency_key_valid(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > CRM_IDEMPOTENCY_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return false;
    return true;
}

void crm_idempotency_hash(const char *method, const char *path, const char *body, size_t len,
                          unsigned char out[CRM_IDEMPOTENCY_HASH_BYTES])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    /* NUL separators: "POST" + "/a" can never collide with "POS" + "T/a". */
    crypto_hash_sha256_update(&st, (const unsigned char *)method, strlen(method) + 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)path, strlen(path) + 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)(body ? body : ""), len);
    crypto_hash_sha256_final(&st, out);
}

static char *dup_or_null(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? NULL : strdup(PQgetvalue(res, 0, col));
}

bool crm_idempotency_claim(crm_conn *c, long long api_key_id, const char *key,
                           const unsigned char hash[CRM_IDEMPOTENCY_HASH_BYTES],
                           crm_idem_response *stored, bool *replay, crm_error *err)
{
    *replay = false;
    memset(stored, 0, sizeof *stored);
    if (!crm_idempotency_key_valid(key)) {
        crm_error_add_field(err, "Idempotency-Key", "must be 1 to 255 printable ASCII characters");
        return crm_error_set(err, CRM_E_INVALID, "invalid Idempotency-Key header");
    }
    char idbuf[24], hex[2 + 2 * CRM_IDEMPOTENCY_HASH_BYTES + 1] = "\\x";
    snprintf(idbuf, sizeof idbuf, "%lld", api_key_id);
    sodium_bin2hex(hex + 2, sizeof hex - 2, hash, CRM_IDEMPOTENCY_HASH_BYTES);
    const char *params[] = {idbuf, key, hex};

    PGresult *res = crm_db_exec(c, &claim_key, 3, params, err);
    if (res == NULL)
        return false;
    bool claimed = PQntuples(res) == 1;
    PQclear(res);
    if (claimed)
        return true;

    res = crm_db_exec(c, &read_key, 3, params, err);
    if (res == NULL)
        return false;
    bool ok = false;
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 1)) {
        /* Not yet completed: only possible for a row of this transaction. */
        crm_error_set(err, CRM_E_CONFLICT, "a request with this Idempotency-Key is in progress");
    } else if (PQgetvalue(res, 0, 0)[0] != 't') {
        crm_error_add_field(err, "Idempotency-Key", "already used for a different request");
        crm_error_set(err, CRM_E_CONFLICT,
                      "this Idempotency-Key was used with a different request in the last "
                      "24 hours");
    } else {
        stored->status = atoi(PQgetvalue(res, 0, 1));
        stored->location = dup_or_null(res, 2);
        stored->body = dup_or_null(res, 3);
        *replay = true;
        ok = true;
    }
    PQclear(res);
    return ok;
}

bool crm_idempotency_store(crm_conn *c, long long api_key_id, const char *key,
                           const crm_idem_response *response, crm_error *err)
{
    char idbuf[24], status[16], customer[24];
    snprintf(idbuf, sizeof idbuf, "%lld", api_key_id);
    snprintf(status, sizeof status, "%d", response->status);
    snprintf(customer, sizeof customer, "%lld", response->customer_id);
    const char *params[] = {idbuf, key, status, response->location, response->body,
                            response->customer_id > 0 ? customer : NULL};
    PGresult *res = crm_db_exec(c, &store_key, 6, params, err);
    if (res == NULL)
        return false;
    PQclear(res);
    return true;
}

long crm_idempotency_purge(crm_error *err)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", PURGE_BATCH_ROWS);
    const char *params[] = {limit};
    long total = 0;
    for (int batch = 0; batch < PURGE_MAX_BATCHES; batch++) {
        PGresult *res = crm_db_run(&purge_keys, 1, params, err);
        if (res == NULL)
            return total > 0 ? total : -1;
        long n = atol(PQcmdTuples(res));
        PQclear(res);
        total += n;
        if (n < PURGE_BATCH_ROWS)
            break;
    }
    return total;
}

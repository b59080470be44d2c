/*
 * auth.h — API keys, scopes and request authentication.
 *
 * A key looks like crm_<10 hex>_<43 base64url>. The first part (the prefix) is
 * a public random identifier, shown in lists and logs; the second part is the
 * 256-bit secret. Only SHA-256(key) is stored. Authenticating a request looks
 * the prefix up in an in-process cache (entries live cache_ttl_ms, so a key
 * revoked by any crmd process stops working within that time everywhere; the
 * process that revokes forgets at once) and compares hashes in constant time.
 *
 * The cache keeps existing keys and unknown prefixes apart, each in a
 * bounded set-associative table over a keyed hash: requests with made-up
 * keys cannot push a real key out, and a made-up key asked again is refused
 * from the cache without reading the database.
 */
#ifndef CRM_AUTH_H
#define CRM_AUTH_H

#include <jansson.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"

/* Scopes are bits; a route requires one, a key holds a set. `admin` holds all. */
enum {
    CRM_SCOPE_ADMIN = 1u << 0,
    CRM_SCOPE_CUSTOMERS_READ = 1u << 1,
    CRM_SCOPE_CUSTOMERS_WRITE = 1u << 2,
    CRM_SCOPE_TOUCHPOINTS_READ = 1u << 3,
    CRM_SCOPE_TOUCHPOINTS_WRITE = 1u << 4,
    CRM_SCOPE_SEGMENTS_READ = 1u << 5,
    CRM_SCOPE_SEGMENTS_WRITE = 1u << 6,
    CRM_SCOPE_RULES_READ = 1u << 7,
    CRM_SCOPE_RULES_WRITE = 1u << 8,
    CRM_SCOPE_CAMPAIGNS_READ = 1u << 9,
    CRM_SCOPE_CAMPAIGNS_WRITE = 1u << 10,
    CRM_SCOPE_METRICS_READ = 1u << 11,
    CRM_SCOPE_SYNC_READ = 1u << 12,
    /* The right of access: GET /v1/customers/{id}/export hands over all
     * that is held about a person (touchpoints, consents, audit included),
     * more than customers:read shows. */
    CRM_SCOPE_CUSTOMERS_EXPORT = 1u << 13,
    /* Starting a recompute of every customer's metrics: work for minutes. */
    CRM_SCOPE_METRICS_WRITE = 1u << 14,
};

/* The highest scope bit (tests walk them all). */
#define CRM_SCOPE_LAST CRM_SCOPE_METRICS_WRITE

#define CRM_KEY_PREFIX_LEN 14 /* "crm_" + 10 hex */
#define CRM_KEY_LEN 58        /* prefix + "_" + 43 base64url */
#define CRM_API_KEY_NAME_MAX 200 /* characters (code points) in a key's name */

typedef struct crm_principal {
    long long key_id;
    char prefix[CRM_KEY_PREFIX_LEN + 1];
    unsigned scopes;
} crm_principal;

/* Returns the bit for a scope name, or 0 when the name is unknown. */
unsigned crm_scope_from_name(const char *name);

/* Returns the name of a single scope bit, or NULL. */
const char *crm_scope_name(unsigned bit);

/* True when p may do what `required` allows (admin may do everything). */
bool crm_principal_allows(const crm_principal *p, unsigned required);

/* Sets how long a looked-up key stays cached (milliseconds). */
void crm_auth_set_cache_ttl(int ttl_ms);

/* Empties the key cache (tests, and after this process revokes a key). */
void crm_auth_cache_clear(void);

/* Checks an "Authorization" header value ("Bearer <key>"). On success fills
 * *out. Fails with CRM_E_UNAUTHORIZED for a missing, malformed, unknown or
 * revoked key, or CRM_E_UNAVAILABLE when the key must be read and the
 * database is down. */
bool crm_auth_authenticate(const char *authorization, crm_principal *out, crm_error *err);

typedef enum { CRM_AUTH_OK, CRM_AUTH_REFUSED, CRM_AUTH_UNKNOWN } crm_auth_result;

/* The same check without ever reading the database: CRM_AUTH_UNKNOWN when the
 * key is well formed but not in the cache (a thread that must not block then
 * hands the request to one that may, which calls crm_auth_authenticate). */
crm_auth_result crm_auth_authenticate_cached(const char *authorization, crm_principal *out,
                                             crm_error *err);

/* The asynchronous form of a lookup, for a thread that must not block (an
 * I/O thread with its dbloop), after crm_auth_authenticate_cached answered
 * CRM_AUTH_UNKNOWN: crm_auth_fill_query builds the query that reads the key
 * the header names (q keeps pointing into *fill, which must outlive it); run
 * it anywhere, hand its result to crm_auth_fill_done, then ask
 * crm_auth_authenticate_cached again. It answers OK or REFUSED, or UNKNOWN
 * once more when the cache was cleared meanwhile (a revoke: the row read
 * may be stale and is not kept), and then a worker must decide.
 * crm_auth_fill_query is false when the header carries no well-formed key. */
typedef struct crm_auth_fill {
    char prefix[CRM_KEY_PREFIX_LEN + 1];
    unsigned long generation; /* of the cache when the query was built */
} crm_auth_fill;
bool crm_auth_fill_query(const char *authorization, crm_query *q, crm_auth_fill *fill);
void crm_auth_fill_done(const crm_auth_fill *fill, const PGresult *res);

/* For tests and metrics: whether a live entry for the existing key prefix
 * is cached, and how many times this process has read a key from the
 * database. */
bool crm_auth_cache_holds(const char *prefix);
unsigned long crm_auth_database_lookups(void);

/* For tests only: hook(arg) runs in crm_auth_authenticate between reading a
 * key from the database and caching it (NULL: nothing runs). Set it while no
 * other thread authenticates. */
void crm_auth_set_fill_hook(void (*hook)(void *arg), void *arg);

/* Validates {"name", "scopes"} and creates a key. Returns the key's
 * representation with an extra "secret" member (shown only this once); the
 * caller owns it. Fails with CRM_E_INVALID naming the bad fields. */
json_t *crm_apikey_create(json_t *body, crm_error *err);

/* Returns one key's representation (without secret), or CRM_E_NOT_FOUND. */
json_t *crm_apikey_get(long long id, crm_error *err);

/* Returns up to limit keys with id > after_id, ordered by id. *next_after is
 * set to the last id when more may follow, else 0. */
json_t *crm_apikey_list(long long after_id, int limit, long long *next_after, crm_error *err);

/* The same two reads split for the asynchronous path (dbloop.h): build the
 * query, run it anywhere, decode its result. */
void crm_apikey_get_query(crm_query *q, long long id);
json_t *crm_apikey_get_decode(const PGresult *res, long long id, crm_error *err);
void crm_apikey_list_query(crm_query *q, long long after_id, int limit);
json_t *crm_apikey_list_decode(const PGresult *res, int limit, long long *next_after);

/* Sets *any to whether at least one key that is not revoked exists. */
bool crm_apikey_any_active(bool *any, crm_error *err);

/* Revokes a key (idempotent); CRM_E_NOT_FOUND when there is no such key. */
bool crm_apikey_revoke(long long id, crm_error *err);

#endif

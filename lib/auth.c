/*
 * auth.c — API keys: creation, listing, revocation, and the cached check
 * that every authenticated request goes through.
 */
#include "auth.h"
#include "clock.h"
#include "customers.h"
#include "db.h"
#include "json.h"
#include "log.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct {
    const char *name;
    unsigned bit;
} scope_table[] = {
    {"admin", CRM_SCOPE_ADMIN},
    {"customers:read", CRM_SCOPE_CUSTOMERS_READ},
    {"customers:write", CRM_SCOPE_CUSTOMERS_WRITE},
    {"touchpoints:read", CRM_SCOPE_TOUCHPOINTS_READ},
    {"touchpoints:write", CRM_SCOPE_TOUCHPOINTS_WRITE},
    {"segments:read", CRM_SCOPE_SEGMENTS_READ},
    {"segments:write", CRM_SCOPE_SEGMENTS_WRITE},
    {"rules:read", CRM_SCOPE_RULES_READ},
    {"rules:write", CRM_SCOPE_RULES_WRITE},
    {"campaigns:read", CRM_SCOPE_CAMPAIGNS_READ},
    {"campaigns:write", CRM_SCOPE_CAMPAIGNS_WRITE},
    {"metrics:read", CRM_SCOPE_METRICS_READ},
    {"sync:read", CRM_SCOPE_SYNC_READ},
};
#define N_SCOPES (sizeof scope_table / sizeof scope_table[0])

unsigned crm_scope_from_name(const char *name)
{
    for (size_t i = 0; i < N_SCOPES; i++)
        if (strcmp(scope_table[i].name, name) == 0)
            return scope_table[i].bit;
    return 0;
}

const char *crm_scope_name(unsigned bit)
{
    for (size_t i = 0; i < N_SCOPES; i++)
        if (scope_table[i].bit == bit)
            return scope_table[i].name;
    return NULL;
}

bool crm_principal_allows(const crm_principal *p, unsigned required)
{
    return (p->scopes & CRM_SCOPE_ADMIN) != 0 || (p->scopes & required) == required;
}

/* ---- the key cache ---------------------------------------------------- */

/* Direct-mapped: a prefix hashes to one entry, a newcomer replaces the old
 * one. Bounded memory whatever prefixes clients send. */
#define CACHE_SLOTS 4096
#define CACHE_LOCKS 64

typedef struct cache_entry {
    char prefix[CRM_KEY_PREFIX_LEN + 1];
    bool exists; /* false: a cached "no such active key" */
    long long key_id;
    unsigned scopes;
    unsigned char hash[crypto_hash_sha256_BYTES];
    long long expires_ms;
} cache_entry;

static cache_entry cache[CACHE_SLOTS];
static pthread_mutex_t cache_locks[CACHE_LOCKS];
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_ttl_ms = 5000;

static void cache_init(void)
{
    for (int i = 0; i < CACHE_LOCKS; i++)
        pthread_mutex_init(&cache_locks[i], NULL);
}

static unsigned cache_slot(const char *prefix)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (const char *p = prefix; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % CACHE_SLOTS;
}

void crm_auth_set_cache_ttl(int ttl_ms)
{
    cache_ttl_ms = ttl_ms;
}

void crm_auth_cache_clear(void)
{
    pthread_once(&cache_once, cache_init);
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        pthread_mutex_t *mu = &cache_locks[i % CACHE_LOCKS];
        pthread_mutex_lock(mu);
        cache[i].prefix[0] = '\0';
        pthread_mutex_unlock(mu);
    }
}

static bool cache_lookup(const char *prefix, cache_entry *out)
{
    unsigned i = cache_slot(prefix);
    pthread_mutex_t *mu = &cache_locks[i % CACHE_LOCKS];
    bool hit = false;
    pthread_mutex_lock(mu);
    if (strcmp(cache[i].prefix, prefix) == 0 && cache[i].expires_ms > crm_monotonic_ms()) {
        *out = cache[i];
        hit = true;
    }
    pthread_mutex_unlock(mu);
    return hit;
}

static void cache_store(const cache_entry *e)
{
    unsigned i = cache_slot(e->prefix);
    pthread_mutex_t *mu = &cache_locks[i % CACHE_LOCKS];
    pthread_mutex_lock(mu);
    cache[i] = *e;
    cache[i].expires_ms = crm_monotonic_ms() + cache_ttl_ms;
    pthread_mutex_unlock(mu);
}

static crm_stmt find_active_key = CRM_STMT_RO(
    "auth_find_active_key",
    "SELECT id, scopes, secret_hash FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL");

static unsigned scopes_from_pg_array(const char *text)
{
    /* text[] of our own scope names: {admin,"customers:read"} */
    unsigned bits = 0;
    char name[64];
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '{' || *p == '"')
            continue;
        if (*p == ',' || *p == '}') {
            name[n] = '\0';
            bits |= crm_scope_from_name(name);
            n = 0;
        } else if (n + 1 < sizeof name) {
            name[n++] = *p;
        }
    }
    return bits;
}

static bool load_key(const char *prefix, cache_entry *e, crm_error *err)
{
    const char *params[] = {prefix};
    PGresult *res = crm_db_run(&find_active_key, 1, params, err);
    if (res == NULL)
        return false;
    memset(e, 0, sizeof *e);
    memcpy(e->prefix, prefix, CRM_KEY_PREFIX_LEN + 1);
    if (PQntuples(res) == 1) {
        size_t len = 0;
        unsigned char *hash =
            PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 2), &len);
        if (hash != NULL && len == sizeof e->hash) {
            e->exists = true;
            e->key_id = atoll(PQgetvalue(res, 0, 0));
            e->scopes = scopes_from_pg_array(PQgetvalue(res, 0, 1));
            memcpy(e->hash, hash, sizeof e->hash);
        }
        PQfreemem(hash);
    }
    PQclear(res);
    return true;
}

static bool key_well_formed(const char *key)
{
    if (strlen(key) != CRM_KEY_LEN || strncmp(key, "crm_", 4) != 0 ||
        key[CRM_KEY_PREFIX_LEN] != '_')
        return false;
    for (int i = 4; i < CRM_KEY_PREFIX_LEN; i++)
        if (!strchr("0123456789abcdef", key[i]))
            return false;
    return true;
}

/* Checks the header; with may_read false a key missing from the cache is
 * not read from the database and the answer is CRM_AUTH_UNKNOWN. */
static crm_auth_result authenticate(const char *authorization, bool may_read, crm_principal *out,
                                    crm_error *err)
{
    pthread_once(&cache_once, cache_init);
    if (authorization == NULL) {
        crm_error_set(err, CRM_E_UNAUTHORIZED, "an API key is required: send "
                                               "'Authorization: Bearer <key>'");
        return CRM_AUTH_REFUSED;
    }
    if (strncasecmp(authorization, "Bearer ", 7) != 0) {
        crm_error_set(err, CRM_E_UNAUTHORIZED, "the Authorization header must use the "
                                               "Bearer scheme");
        return CRM_AUTH_REFUSED;
    }
    const char *key = authorization + 7;
    while (*key == ' ')
        key++;
    if (!key_well_formed(key)) {
        crm_error_set(err, CRM_E_UNAUTHORIZED, "the API key is not valid");
        return CRM_AUTH_REFUSED;
    }

    char prefix[CRM_KEY_PREFIX_LEN + 1];
    memcpy(prefix, key, CRM_KEY_PREFIX_LEN);
    prefix[CRM_KEY_PREFIX_LEN] = '\0';

    cache_entry e;
    if (!cache_lookup(prefix, &e)) {
        if (!may_read)
            return CRM_AUTH_UNKNOWN;
        if (!load_key(prefix, &e, err))
            return CRM_AUTH_REFUSED;
        cache_store(&e);
    }
    unsigned char hash[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(hash, (const unsigned char *)key, CRM_KEY_LEN);
    /* Compare even when the key is unknown, so timing says nothing. */
    bool match = sodium_memcmp(hash, e.hash, sizeof hash) == 0;
    if (!e.exists || !match) {
        crm_error_set(err, CRM_E_UNAUTHORIZED, "the API key is not valid");
        return CRM_AUTH_REFUSED;
    }
    out->key_id = e.key_id;
    memcpy(out->prefix, prefix, sizeof out->prefix);
    out->scopes = e.scopes;
    return CRM_AUTH_OK;
}

bool crm_auth_authenticate(const char *authorization, crm_principal *out, crm_error *err)
{
    return authenticate(authorization, true, out, err) == CRM_AUTH_OK;
}

crm_auth_result crm_auth_authenticate_cached(const char *authorization, crm_principal *out,
                                             crm_error *err)
{
    return authenticate(authorization, false, out, err);
}

/* ---- key administration ----------------------------------------------- */

/* Timestamps travel as epoch milliseconds and are formatted in C. */
#define KEY_COLUMNS                                                                               \
    "id, name, prefix, array_to_json(scopes)::text, "                                              \
    "(extract(epoch FROM created_at) * 1000)::bigint, "                                            \
    "(extract(epoch FROM revoked_at) * 1000)::bigint"

static crm_stmt insert_key = CRM_STMT(
    "apikey_insert", "INSERT INTO api_keys (name, prefix, secret_hash, scopes) "
                     "VALUES ($1, $2, $3::bytea, $4::text[]) RETURNING " KEY_COLUMNS);
static crm_stmt select_key =
    CRM_STMT_RO("apikey_select", "SELECT " KEY_COLUMNS " FROM api_keys WHERE id = $1");
static crm_stmt list_keys = CRM_STMT_PAGE(
    "apikey_list", "SELECT " KEY_COLUMNS " FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2");
static crm_stmt revoke_key =
    CRM_STMT("apikey_revoke", "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
                              "WHERE id = $1 RETURNING prefix");

/* Builds the representation of row r of a KEY_COLUMNS result. */
static json_t *key_from_row(const PGresult *res, int r)
{
    json_t *scopes = json_loads(PQgetvalue(res, r, 3), 0, NULL);
    return json_pack("{s:I, s:s, s:s, s:o, s:o, s:o}", "id",
                     (json_int_t)atoll(PQgetvalue(res, r, 0)), "name", PQgetvalue(res, r, 1),
                     "prefix", PQgetvalue(res, r, 2), "scopes", scopes ? scopes : json_array(),
                     "created_at", crm_json_timestamp(atoll(PQgetvalue(res, r, 4))), "revoked_at",
                     PQgetisnull(res, r, 5) ? json_null()
                                            : crm_json_timestamp(atoll(PQgetvalue(res, r, 5))));
}

/* A key's name: 1 to CRM_API_KEY_NAME_MAX characters (code points, as the
 * contract's maxLength and the table's char_length check count them), no
 * NUL. */
static bool name_acceptable(json_t *jname)
{
    const char *name = json_string_value(jname);
    size_t bytes = json_string_length(jname);
    size_t chars = crm_utf8_chars(name, bytes);
    return strlen(name) == bytes && chars >= 1 && chars <= CRM_API_KEY_NAME_MAX;
}

/* Checks the create body; on success *name and *scopes_literal (a text[]
 * literal the caller frees) are set. */
static bool validate_new_key(json_t *body, const char **name, char **scopes_literal,
                             crm_error *err)
{
    static const char *const allowed[] = {"name", "scopes", NULL};
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    if (!crm_json_only_fields(body, allowed, err))
        return false;

    json_t *jname = json_object_get(body, "name");
    json_t *jscopes = json_object_get(body, "scopes");
    if (!json_is_string(jname))
        crm_error_add_field(err, "/name", "required, a string");
    else if (!name_acceptable(jname))
        crm_error_add_field(err, "/name", "must be 1 to 200 characters, without NUL characters");

    unsigned seen = 0;
    if (!json_is_array(jscopes) || json_array_size(jscopes) == 0) {
        crm_error_add_field(err, "/scopes", "required, a non-empty array of scope names");
    } else {
        size_t i;
        json_t *s;
        json_array_foreach(jscopes, i, s) {
            char field[32];
            snprintf(field, sizeof field, "/scopes/%zu", i);
            unsigned bit = json_is_string(s) ? crm_scope_from_name(json_string_value(s)) : 0;
            if (bit == 0)
                crm_error_add_field(err, field, "unknown scope");
            else if (seen & bit)
                crm_error_add_field(err, field, "duplicate scope");
            seen |= bit;
        }
    }
    if (err->errors != NULL)
        return crm_error_set(err, CRM_E_INVALID, "the API key is not valid");

    /* Scope names come from our table, so the literal needs no quoting. */
    char lit[512] = "{";
    for (size_t i = 0; i < N_SCOPES; i++) {
        if (!(seen & scope_table[i].bit))
            continue;
        if (lit[1] != '\0')
            strcat(lit, ",");
        strcat(lit, scope_table[i].name);
    }
    strcat(lit, "}");
    *name = json_string_value(jname);
    *scopes_literal = strdup(lit);
    return true;
}

json_t *crm_apikey_create(json_t *body, crm_error *err)
{
    const char *name = NULL;
    char *scopes = NULL;
    crm_error local = CRM_ERROR_INIT; /* validation needs somewhere to collect fields */
    bool valid = validate_new_key(body, &name, &scopes, err ? err : &local);
    crm_error_clear(&local);
    if (!valid)
        return NULL;

    unsigned char id_bytes[5], secret_bytes[32];
    randombytes_buf(id_bytes, sizeof id_bytes);
    randombytes_buf(secret_bytes, sizeof secret_bytes);
    char prefix[CRM_KEY_PREFIX_LEN + 1] = "crm_";
    sodium_bin2hex(prefix + 4, sizeof prefix - 4, id_bytes, sizeof id_bytes);
    char secret_part[48]; /* 43 characters and a NUL */
    crm_base64url_encode(secret_bytes, sizeof secret_bytes, secret_part, sizeof secret_part);
    sodium_memzero(secret_bytes, sizeof secret_bytes);

    char key[CRM_KEY_LEN + 8];
    snprintf(key, sizeof key, "%s_%s", prefix, secret_part);
    unsigned char hash[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(hash, (const unsigned char *)key, CRM_KEY_LEN);
    char hash_hex[2 + 2 * sizeof hash + 1] = "\\x";
    sodium_bin2hex(hash_hex + 2, sizeof hash_hex - 2, hash, sizeof hash);

    const char *params[] = {name, prefix, hash_hex, scopes};
    PGresult *res = crm_db_run(&insert_key, 4, params, err);
    free(scopes);
    json_t *out = NULL;
    if (res != NULL) {
        out = key_from_row(res, 0);
        json_object_set_new(out, "secret", json_string(key));
        PQclear(res);
    }
    sodium_memzero(key, sizeof key);
    return out;
}

void crm_apikey_get_query(crm_query *q, long long id)
{
    crm_query_init(q, &select_key);
    crm_query_add_int(q, id);
}

json_t *crm_apikey_get_decode(const PGresult *res, long long id, crm_error *err)
{
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no API key with id %lld", id);
        return NULL;
    }
    return key_from_row(res, 0);
}

json_t *crm_apikey_get(long long id, crm_error *err)
{
    crm_query q;
    crm_apikey_get_query(&q, id);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    json_t *out = crm_apikey_get_decode(res, id, err);
    PQclear(res);
    return out;
}

void crm_apikey_list_query(crm_query *q, long long after_id, int limit)
{
    if (limit < 1)
        limit = 1;
    crm_query_init(q, &list_keys);
    crm_query_add_int(q, after_id);
    crm_query_add_int(q, limit + 1); /* one more tells whether a next page exists */
}

json_t *crm_apikey_list_decode(const PGresult *res, int limit, long long *next_after)
{
    if (limit < 1)
        limit = 1;
    int n = PQntuples(res);
    int shown = n > limit ? limit : n;
    json_t *arr = json_array();
    for (int r = 0; r < shown; r++)
        json_array_append_new(arr, key_from_row(res, r));
    *next_after = n > limit ? atoll(PQgetvalue(res, shown - 1, 0)) : 0;
    return arr;
}

json_t *crm_apikey_list(long long after_id, int limit, long long *next_after, crm_error *err)
{
    crm_query q;
    crm_apikey_list_query(&q, after_id, limit);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    json_t *out = crm_apikey_list_decode(res, limit, next_after);
    PQclear(res);
    return out;
}

static crm_stmt any_active_key = CRM_STMT_RO(
    "apikey_any_active", "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)");

bool crm_apikey_any_active(bool *any, crm_error *err)
{
    PGresult *res = crm_db_run(&any_active_key, 0, NULL, err);
    if (res == NULL)
        return false;
    *any = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return true;
}

bool crm_apikey_revoke(long long id, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGresult *res = crm_db_run(&revoke_key, 1, params, err);
    if (res == NULL)
        return false;
    bool found = PQntuples(res) == 1;
    PQclear(res);
    if (!found)
        return crm_error_set(err, CRM_E_NOT_FOUND, "no API key with id %lld", id);
    /* This process forgets at once; the others within their cache TTL. */
    crm_auth_cache_clear();
    return true;
}

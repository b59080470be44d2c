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
#include <stdatomic.h>
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
    {"customers:export", CRM_SCOPE_CUSTOMERS_EXPORT},
    {"metrics:write", CRM_SCOPE_METRICS_WRITE},
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

/* Two bounded tables, both set-associative over a keyed hash of the prefix
 * (SipHash-2-4 under a key drawn at start: prefixes are public, so with an
 * unkeyed hash a client could choose prefixes that share a set with someone
 * else's key):
 *   - keys that exist (positive entries, CACHE_WAYS to a set): only another
 *     existing key can take a way from one, so no stream of made-up
 *     prefixes can push a real key out of the cache;
 *   - prefixes that name no active key (negative entries) in a table of
 *     their own, where a newcomer replaces the oldest entry of its set.
 * Entries live cache_ttl_ms. A generation counter, raised by every clear,
 * keeps a lookup that began before a clear (a revoke) from storing the row
 * it read: see cache_store. */
#define CACHE_SETS 1024
#define CACHE_WAYS 4
#define CACHE_LOCKS 64

typedef struct cache_entry {
    char prefix[CRM_KEY_PREFIX_LEN + 1]; /* "" for a free way */
    bool exists;                         /* false: a cached "no such active key" */
    long long key_id;
    unsigned scopes;
    unsigned char hash[crypto_hash_sha256_BYTES];
    long long expires_ms;
} cache_entry;

typedef struct cache_table {
    cache_entry sets[CACHE_SETS][CACHE_WAYS];
    pthread_mutex_t locks[CACHE_LOCKS]; /* set s is guarded by locks[s % CACHE_LOCKS] */
} cache_table;

static cache_table known_keys;   /* positive entries */
static cache_table unknown_keys; /* negative entries */
static unsigned char cache_hash_key[crypto_shorthash_KEYBYTES];
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static atomic_int cache_ttl_ms = 5000;
static atomic_ulong cache_generation;
static atomic_ulong database_lookups;
static void (*fill_hook)(void *arg);
static void *fill_hook_arg;

static void cache_init(void)
{
    if (sodium_init() < 0) /* idempotent; the server has called it already */
        abort();
    crypto_shorthash_keygen(cache_hash_key);
    for (int i = 0; i < CACHE_LOCKS; i++) {
        pthread_mutex_init(&known_keys.locks[i], NULL);
        pthread_mutex_init(&unknown_keys.locks[i], NULL);
    }
}

static unsigned cache_set(const char *prefix)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)prefix, CRM_KEY_PREFIX_LEN, cache_hash_key);
    unsigned v = (unsigned)h[0] | (unsigned)h[1] << 8 | (unsigned)h[2] << 16;
    return v % CACHE_SETS;
}

void crm_auth_set_cache_ttl(int ttl_ms)
{
    cache_ttl_ms = ttl_ms;
}

static void table_clear(cache_table *t)
{
    for (unsigned s = 0; s < CACHE_SETS; s++) {
        pthread_mutex_t *mu = &t->locks[s % CACHE_LOCKS];
        pthread_mutex_lock(mu);
        for (int w = 0; w < CACHE_WAYS; w++)
            t->sets[s][w].prefix[0] = '\0';
        pthread_mutex_unlock(mu);
    }
}

void crm_auth_cache_clear(void)
{
    pthread_once(&cache_once, cache_init);
    /* Raised before the tables are emptied: a store that takes a set's lock
     * after the clear has passed that set sees the new generation. */
    atomic_fetch_add(&cache_generation, 1);
    table_clear(&known_keys);
    table_clear(&unknown_keys);
}

/* Copies prefix's live entry of table t into *out. */
static bool table_lookup(cache_table *t, const char *prefix, cache_entry *out)
{
    unsigned s = cache_set(prefix);
    pthread_mutex_t *mu = &t->locks[s % CACHE_LOCKS];
    bool hit = false;
    long long now = crm_monotonic_ms();
    pthread_mutex_lock(mu);
    for (int w = 0; w < CACHE_WAYS && !hit; w++) {
        const cache_entry *e = &t->sets[s][w];
        if (strcmp(e->prefix, prefix) == 0 && e->expires_ms > now) {
            *out = *e;
            hit = true;
        }
    }
    pthread_mutex_unlock(mu);
    return hit;
}

static bool cache_lookup(const char *prefix, cache_entry *out)
{
    return table_lookup(&known_keys, prefix, out) || table_lookup(&unknown_keys, prefix, out);
}

/* The way of set for prefix: its own entry, else a free or expired way,
 * else the one that expires first. */
static cache_entry *choose_way(cache_entry *set, const char *prefix, long long now)
{
    cache_entry *victim = &set[0];
    for (int w = 0; w < CACHE_WAYS; w++)
        if (strcmp(set[w].prefix, prefix) == 0)
            return &set[w];
    for (int w = 0; w < CACHE_WAYS; w++) {
        if (set[w].prefix[0] == '\0' || set[w].expires_ms <= now)
            return &set[w];
        if (set[w].expires_ms < victim->expires_ms)
            victim = &set[w];
    }
    return victim;
}

/* Stores e (positive or negative in its own table) unless the cache was
 * cleared since generation, when its load began: the row may predate a
 * revoke that cleared the cache, and must not outlive it. */
static void cache_store(const cache_entry *e, unsigned long generation)
{
    cache_table *t = e->exists ? &known_keys : &unknown_keys;
    unsigned s = cache_set(e->prefix);
    pthread_mutex_t *mu = &t->locks[s % CACHE_LOCKS];
    long long now = crm_monotonic_ms();
    pthread_mutex_lock(mu);
    if (atomic_load(&cache_generation) == generation) {
        cache_entry *way = choose_way(t->sets[s], e->prefix, now);
        *way = *e;
        way->expires_ms = now + cache_ttl_ms;
    }
    pthread_mutex_unlock(mu);
}

/* Drops prefix's negative entry (a key was just made with it). */
static void forget_unknown(const char *prefix)
{
    pthread_once(&cache_once, cache_init);
    unsigned s = cache_set(prefix);
    pthread_mutex_t *mu = &unknown_keys.locks[s % CACHE_LOCKS];
    pthread_mutex_lock(mu);
    for (int w = 0; w < CACHE_WAYS; w++)
        if (strcmp(unknown_keys.sets[s][w].prefix, prefix) == 0)
            unknown_keys.sets[s][w].prefix[0] = '\0';
    pthread_mutex_unlock(mu);
}

bool crm_auth_cache_holds(const char *prefix)
{
    pthread_once(&cache_once, cache_init);
    cache_entry e;
    return strlen(prefix) == CRM_KEY_PREFIX_LEN && table_lookup(&known_keys, prefix, &e);
}

unsigned long crm_auth_database_lookups(void)
{
    return atomic_load(&database_lookups);
}

void crm_auth_set_fill_hook(void (*hook)(void *arg), void *arg)
{
    fill_hook = hook;
    fill_hook_arg = arg;
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

/* The cache entry for prefix from a find_active_key result. */
static void entry_from_result(const char *prefix, const PGresult *res, cache_entry *e)
{
    memset(e, 0, sizeof *e);
    memcpy(e->prefix, prefix, CRM_KEY_PREFIX_LEN + 1);
    if (PQntuples(res) != 1)
        return;
    size_t len = 0;
    unsigned char *hash = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 2), &len);
    if (hash != NULL && len == sizeof e->hash) {
        e->exists = true;
        e->key_id = atoll(PQgetvalue(res, 0, 0));
        e->scopes = scopes_from_pg_array(PQgetvalue(res, 0, 1));
        memcpy(e->hash, hash, sizeof e->hash);
    }
    PQfreemem(hash);
}

static bool load_key(const char *prefix, cache_entry *e, crm_error *err)
{
    const char *params[] = {prefix};
    atomic_fetch_add(&database_lookups, 1);
    PGresult *res = crm_db_run(&find_active_key, 1, params, err);
    if (res == NULL)
        return false;
    entry_from_result(prefix, res, e);
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

/* The key an "Authorization" value carries, or NULL with err set. */
static const char *key_from_header(const char *authorization, crm_error *err)
{
    if (authorization == NULL) {
        crm_error_set(err, CRM_E_UNAUTHORIZED, "an API key is required: send "
                                               "'Authorization: Bearer <key>'");
        return NULL;
    }
    if (strncasecmp(authorization, "Bearer ", 7) != 0) {
        crm_error_set(err, CRM_E_UNAUTHORIZED, "the Authorization header must use the "
                                               "Bearer scheme");
        return NULL;
    }
    const char *key = authorization + 7;
    while (*key == ' ')
        key++;
    if (!key_well_formed(key)) {
        crm_error_set(err, CRM_E_UNAUTHORIZED, "the API key is not valid");
        return NULL;
    }
    return key;
}

/* Checks the header; with may_read false a key missing from the cache is
 * not read from the database and the answer is CRM_AUTH_UNKNOWN. */
static crm_auth_result authenticate(const char *authorization, bool may_read, crm_principal *out,
                                    crm_error *err)
{
    pthread_once(&cache_once, cache_init);
    const char *key = key_from_header(authorization, err);
    if (key == NULL)
        return CRM_AUTH_REFUSED;

    char prefix[CRM_KEY_PREFIX_LEN + 1];
    memcpy(prefix, key, CRM_KEY_PREFIX_LEN);
    prefix[CRM_KEY_PREFIX_LEN] = '\0';

    cache_entry e;
    if (!cache_lookup(prefix, &e)) {
        if (!may_read)
            return CRM_AUTH_UNKNOWN;
        unsigned long generation = atomic_load(&cache_generation); /* before the read */
        if (!load_key(prefix, &e, err))
            return CRM_AUTH_REFUSED;
        if (fill_hook != NULL)
            fill_hook(fill_hook_arg);
        cache_store(&e, generation);
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

bool crm_auth_fill_query(const char *authorization, crm_query *q, crm_auth_fill *fill)
{
    pthread_once(&cache_once, cache_init);
    crm_error err = CRM_ERROR_INIT;
    const char *key = key_from_header(authorization, &err);
    crm_error_clear(&err);
    if (key == NULL)
        return false;
    memcpy(fill->prefix, key, CRM_KEY_PREFIX_LEN);
    fill->prefix[CRM_KEY_PREFIX_LEN] = '\0';
    fill->generation = atomic_load(&cache_generation); /* before the query runs */
    atomic_fetch_add(&database_lookups, 1);
    crm_query_init(q, &find_active_key);
    crm_query_add(q, fill->prefix);
    return true;
}

void crm_auth_fill_done(const crm_auth_fill *fill, const PGresult *res)
{
    cache_entry e;
    entry_from_result(fill->prefix, res, &e);
    cache_store(&e, fill->generation);
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

/* The text[] literal of the scopes in bits ("{admin,customers:read}"), in
 * memory the caller frees; NULL when memory runs out. Scope names come from
 * our table, so the literal needs no quoting. */
static char *scopes_literal_of(unsigned bits)
{
    size_t cap = 3; /* braces and NUL */
    for (size_t i = 0; i < N_SCOPES; i++)
        cap += strlen(scope_table[i].name) + 1;
    char *lit = malloc(cap);
    if (lit == NULL)
        return NULL;
    size_t len = 0;
    lit[len++] = '{';
    for (size_t i = 0; i < N_SCOPES; i++) {
        if (!(bits & scope_table[i].bit))
            continue;
        if (len > 1)
            lit[len++] = ',';
        size_t n = strlen(scope_table[i].name);
        memcpy(lit + len, scope_table[i].name, n);
        len += n;
    }
    lit[len++] = '}';
    lit[len] = '\0';
    return lit;
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

    *name = json_string_value(jname);
    *scopes_literal = scopes_literal_of(seen);
    if (*scopes_literal == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
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
        forget_unknown(prefix); /* in case a client asked for it before it existed */
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

/*
 * test_auth.c — API keys and request authentication (lib/auth.h) on the
 * migrated CRMD_TEST_DATABASE_URL. The database is shared by the whole run,
 * so every test creates the keys it looks at and assumes nothing else.
 */
#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "db.h"
#include "migrate.h"
#include "suites.h"
#include "support.h"

#define DEFAULT_TTL_MS 5000
#define UNREACHABLE_URL "host=/nonexistent dbname=x"

static void start_pool(const char *url)
{
    crm_db_config cfg = {
        .url = url,
        .pool_size = 2,
        .acquire_timeout_ms = 2000,
        .connect_timeout_s = 2,
        .statement_timeout_ms = 5000,
        .retry_backoff_ms = 1000,
    };
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_db_init(&cfg, &err), "crm_db_init: %s", err.detail);
}

static void setup(void)
{
    crm_db_config cfg = {.url = unit_env("CRMD_TEST_DATABASE_URL"), .connect_timeout_s = 2};
    crm_error err = CRM_ERROR_INIT;
    PGconn *conn = crm_db_connect_direct(&cfg, &err);
    ck_assert_msg(conn != NULL, "connect: %s", err.detail);
    bool ok = crm_migrate_apply(conn, crm_migration_files, crm_migration_files_count, NULL, &err);
    PQfinish(conn);
    ck_assert_msg(ok, "migrate: %s", err.detail);
    start_pool(cfg.url);
    crm_auth_set_cache_ttl(DEFAULT_TTL_MS);
    crm_auth_cache_clear();
}

static void teardown(void)
{
    crm_auth_set_fill_hook(NULL, NULL);
    crm_db_shutdown();
    crm_auth_set_cache_ttl(DEFAULT_TTL_MS);
    crm_auth_cache_clear();
}

/* Replaces the pool with one that cannot reach any database. */
static void take_database_away(void)
{
    crm_db_shutdown();
    start_pool(UNREACHABLE_URL);
}

/* A name no other test (or run) uses. */
static void unique_name(char *buf, size_t size)
{
    static unsigned serial;
    unsigned char r[4];
    randombytes_buf(r, sizeof r);
    snprintf(buf, size, "unit-auth-%ld-%u-%02x%02x%02x%02x", (long)getpid(), serial++, r[0], r[1],
             r[2], r[3]);
}

/* Builds {"name": <unique>, "scopes": [...]} from a NULL-terminated list. */
static json_t *key_body(const char *scope, ...)
{
    char name[64];
    unique_name(name, sizeof name);
    json_t *scopes = json_array();
    va_list ap;
    va_start(ap, scope);
    for (const char *s = scope; s != NULL; s = va_arg(ap, const char *))
        json_array_append_new(scopes, json_string(s));
    va_end(ap);
    return json_pack("{s:s, s:o}", "name", name, "scopes", scopes);
}

/* Creates a key from body (consumed) or fails the test. Caller decrefs. */
static json_t *create_from(json_t *body)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *key = crm_apikey_create(body, &err);
    json_decref(body);
    ck_assert_msg(key != NULL, "create: %s", err.detail);
    return key;
}

#define create_key(...) create_from(key_body(__VA_ARGS__, NULL))

/* Expects body (consumed) to be refused as invalid; returns the error. */
static crm_error create_fails(json_t *body)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *key = crm_apikey_create(body, &err);
    json_decref(body);
    ck_assert_msg(key == NULL, "the key was created");
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    return err;
}

/* Asserts err lists exactly one field error, for field. */
static void assert_only_field(crm_error *err, const char *field)
{
    ck_assert_msg(unit_has_field_error(err, field), "no error for %s", field);
    ck_assert_uint_eq(json_array_size(err->errors), 1);
    crm_error_clear(err);
}

static long long key_id(const json_t *key)
{
    return (long long)json_integer_value(json_object_get(key, "id"));
}

static const char *key_secret(const json_t *key)
{
    return json_string_value(json_object_get(key, "secret"));
}

/* Authenticates "Bearer <secret>"; returns whether it was accepted. */
static bool authenticate_secret(const char *secret, crm_principal *p, crm_error *err)
{
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", secret);
    return crm_auth_authenticate(header, p, err);
}

/* Expects header to be refused with CRM_E_UNAUTHORIZED. */
static void assert_unauthorized(const char *header)
{
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(!crm_auth_authenticate(header, &p, &err), "'%s' accepted",
                  header ? header : "(null)");
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
}

static PGconn *direct_sql(void)
{
    return unit_connect(unit_env("CRMD_TEST_DATABASE_URL"));
}

/* ---- validation ----------------------------------------------------- */

START_TEST(test_create_rejects_missing_name)
{
    crm_error err = create_fails(json_pack("{s:[s]}", "scopes", "admin"));
    assert_only_field(&err, "/name");
}
END_TEST

START_TEST(test_create_rejects_non_string_name)
{
    crm_error err = create_fails(json_pack("{s:i, s:[s]}", "name", 7, "scopes", "admin"));
    assert_only_field(&err, "/name");
}
END_TEST

START_TEST(test_create_rejects_empty_name)
{
    crm_error err = create_fails(json_pack("{s:s, s:[s]}", "name", "", "scopes", "admin"));
    assert_only_field(&err, "/name");
}
END_TEST

START_TEST(test_create_rejects_name_over_200_bytes)
{
    char name[202];
    memset(name, 'n', 201);
    name[201] = '\0';
    crm_error err = create_fails(json_pack("{s:s, s:[s]}", "name", name, "scopes", "admin"));
    assert_only_field(&err, "/name");
}
END_TEST

START_TEST(test_create_accepts_name_of_200_bytes)
{
    char name[201];
    unique_name(name, sizeof name);
    size_t used = strlen(name);
    memset(name + used, 'n', 200 - used);
    name[200] = '\0';
    json_t *key = create_from(json_pack("{s:s, s:[s]}", "name", name, "scopes", "admin"));
    ck_assert_str_eq(json_string_value(json_object_get(key, "name")), name);
    json_decref(key);
}
END_TEST

START_TEST(test_create_rejects_name_with_embedded_nul)
{
    json_t *body = json_pack("{s:o, s:[s]}", "name", json_stringn("a\0b", 3), "scopes", "admin");
    crm_error err = create_fails(body);
    assert_only_field(&err, "/name");
}
END_TEST

START_TEST(test_create_rejects_unknown_scope)
{
    crm_error err = create_fails(key_body("admin", "customers:delete", NULL));
    assert_only_field(&err, "/scopes/1");
}
END_TEST

START_TEST(test_create_rejects_duplicate_scope)
{
    crm_error err = create_fails(key_body("customers:read", "admin", "customers:read", NULL));
    assert_only_field(&err, "/scopes/2");
}
END_TEST

START_TEST(test_create_rejects_non_string_scope)
{
    json_t *body = key_body("admin", NULL);
    json_array_append_new(json_object_get(body, "scopes"), json_integer(1));
    crm_error err = create_fails(body);
    assert_only_field(&err, "/scopes/1");
}
END_TEST

START_TEST(test_create_rejects_empty_scopes)
{
    crm_error err = create_fails(json_pack("{s:s, s:[]}", "name", "x", "scopes"));
    assert_only_field(&err, "/scopes");
}
END_TEST

START_TEST(test_create_rejects_missing_scopes)
{
    crm_error err = create_fails(json_pack("{s:s}", "name", "x"));
    assert_only_field(&err, "/scopes");
}
END_TEST

START_TEST(test_create_rejects_unknown_field)
{
    json_t *body = key_body("admin", NULL);
    json_object_set_new(body, "expires", json_string("never"));
    crm_error err = create_fails(body);
    assert_only_field(&err, "/expires");
}
END_TEST

START_TEST(test_create_reports_every_bad_field_at_once)
{
    crm_error err = create_fails(json_pack("{s:s, s:[s, s]}", "name", "", "scopes", "admin", "x"));
    ck_assert(unit_has_field_error(&err, "/name"));
    ck_assert(unit_has_field_error(&err, "/scopes/1"));
    ck_assert_uint_eq(json_array_size(err.errors), 2);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_create_rejects_body_that_is_not_an_object)
{
    crm_error err = create_fails(json_pack("[s]", "admin"));
    crm_error_clear(&err);
}
END_TEST

/* ---- created keys --------------------------------------------------- */

START_TEST(test_created_secret_has_the_documented_format)
{
    json_t *key = create_key("admin");
    const char *secret = key_secret(key);
    ck_assert_ptr_nonnull(secret);
    ck_assert_uint_eq(strlen(secret), CRM_KEY_LEN);
    ck_assert_uint_eq(strlen(secret), 58);
    ck_assert_int_eq(strncmp(secret, "crm_", 4), 0);
    ck_assert_uint_eq(strspn(secret + 4, "0123456789abcdef"), 10);
    ck_assert_int_eq(secret[14], '_');
    ck_assert_uint_eq(strspn(secret + 15, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                          "0123456789-_"),
                      43);
    json_decref(key);
}
END_TEST

START_TEST(test_created_prefix_is_start_of_secret)
{
    json_t *key = create_key("admin");
    const char *prefix = json_string_value(json_object_get(key, "prefix"));
    ck_assert_uint_eq(strlen(prefix), CRM_KEY_PREFIX_LEN);
    ck_assert_int_eq(strncmp(prefix, key_secret(key), 14), 0);
    json_decref(key);
}
END_TEST

START_TEST(test_created_key_describes_itself)
{
    json_t *body = key_body("customers:write", "customers:read", NULL);
    char name[64];
    snprintf(name, sizeof name, "%s", json_string_value(json_object_get(body, "name")));
    json_t *key = create_from(body);
    ck_assert_int_gt(key_id(key), 0);
    ck_assert_str_eq(json_string_value(json_object_get(key, "name")), name);
    json_t *scopes = json_object_get(key, "scopes");
    ck_assert_uint_eq(json_array_size(scopes), 2);
    bool read = false, write = false;
    size_t i;
    json_t *s;
    json_array_foreach(scopes, i, s)
    {
        read |= strcmp(json_string_value(s), "customers:read") == 0;
        write |= strcmp(json_string_value(s), "customers:write") == 0;
    }
    ck_assert(read && write);
    ck_assert(json_is_null(json_object_get(key, "revoked_at")));
    const char *created = json_string_value(json_object_get(key, "created_at"));
    ck_assert_ptr_nonnull(created);
    ck_assert_uint_eq(strlen(created), 24); /* 2026-01-02T03:04:05.678Z */
    ck_assert_int_eq(created[10], 'T');
    ck_assert_int_eq(created[23], 'Z');
    json_decref(key);
}
END_TEST

START_TEST(test_create_with_every_scope_keeps_them_all)
{
    /* The longest scopes literal there is: every name, in one key. */
    char name[64];
    unique_name(name, sizeof name);
    json_t *scopes = json_array();
    unsigned all = 0;
    for (unsigned bit = 1; bit != 0; bit <<= 1)
        if (crm_scope_name(bit) != NULL) {
            json_array_append_new(scopes, json_string(crm_scope_name(bit)));
            all |= bit;
        }
    size_t count = json_array_size(scopes);
    json_t *key = create_from(json_pack("{s:s, s:o}", "name", name, "scopes", scopes));
    ck_assert_uint_eq(json_array_size(json_object_get(key, "scopes")), count);
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p, &err));
    ck_assert_uint_eq(p.scopes, all);
    json_decref(key);
}
END_TEST

START_TEST(test_two_keys_differ)
{
    json_t *a = create_key("admin");
    json_t *b = create_key("admin");
    ck_assert_str_ne(key_secret(a), key_secret(b));
    ck_assert_str_ne(json_string_value(json_object_get(a, "prefix")),
                     json_string_value(json_object_get(b, "prefix")));
    ck_assert_int_ne(key_id(a), key_id(b));
    json_decref(a);
    json_decref(b);
}
END_TEST

START_TEST(test_stored_hash_is_sha256_of_secret_not_secret)
{
    json_t *key = create_key("admin");
    const char *secret = key_secret(key);
    PGconn *pg = direct_sql();
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", key_id(key));
    const char *params[] = {idbuf};
    PGresult *res = unit_sql(
        pg,
        "SELECT octet_length(secret_hash), encode(secret_hash, 'hex') FROM api_keys WHERE id = $1",
        1, params);
    ck_assert_int_eq(PQntuples(res), 1);
    ck_assert_str_eq(PQgetvalue(res, 0, 0), "32");

    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)secret, strlen(secret));
    char want[65], plain[65];
    sodium_bin2hex(want, sizeof want, digest, sizeof digest);
    sodium_bin2hex(plain, sizeof plain, (const unsigned char *)secret, 32);
    ck_assert_str_eq(PQgetvalue(res, 0, 1), want);
    ck_assert_str_ne(PQgetvalue(res, 0, 1), plain);
    PQclear(res);
    PQfinish(pg);
    json_decref(key);
}
END_TEST

START_TEST(test_create_fails_unavailable_without_database)
{
    take_database_away();
    crm_error err = CRM_ERROR_INIT;
    json_t *body = key_body("admin", NULL);
    ck_assert_ptr_null(crm_apikey_create(body, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
    json_decref(body);
}
END_TEST

START_TEST(test_any_active_is_true_with_a_live_key)
{
    json_t *key = create_key("admin");
    bool any = false;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_apikey_any_active(&any, &err));
    ck_assert(any);
    json_decref(key);
}
END_TEST

/* ---- authentication ------------------------------------------------- */

START_TEST(test_bearer_secret_authenticates_with_its_scopes)
{
    json_t *key = create_key("customers:read", "touchpoints:write");
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(authenticate_secret(key_secret(key), &p, &err), "%s", err.detail);
    ck_assert_int_eq(p.key_id, key_id(key));
    ck_assert_str_eq(p.prefix, json_string_value(json_object_get(key, "prefix")));
    ck_assert_uint_eq(p.scopes, CRM_SCOPE_CUSTOMERS_READ | CRM_SCOPE_TOUCHPOINTS_WRITE);
    json_decref(key);
}
END_TEST

START_TEST(test_cached_check_never_reads_the_database)
{
    /* What an I/O thread may ask: a key the cache has not seen yet is
     * "unknown" (a worker will read it), then accepted once it is cached. */
    json_t *key = create_key("customers:read");
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", key_secret(key));
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    crm_auth_cache_clear();
    ck_assert_int_eq(crm_auth_authenticate_cached(header, &p, &err), CRM_AUTH_UNKNOWN);
    ck_assert_int_eq(err.code, CRM_OK);
    ck_assert(crm_auth_authenticate(header, &p, &err));
    ck_assert_int_eq(crm_auth_authenticate_cached(header, &p, &err), CRM_AUTH_OK);
    ck_assert_int_eq(p.key_id, key_id(key));
    ck_assert_int_eq(crm_auth_authenticate_cached("Bearer nonsense", &p, &err), CRM_AUTH_REFUSED);
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
    crm_error_clear(&err);
    json_decref(key);
}
END_TEST

START_TEST(test_authentication_works_again_from_cache)
{
    json_t *key = create_key("admin");
    crm_principal p1, p2;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p1, &err));
    ck_assert(authenticate_secret(key_secret(key), &p2, &err));
    ck_assert_int_eq(p1.key_id, p2.key_id);
    ck_assert_uint_eq(p1.scopes, p2.scopes);
    json_decref(key);
}
END_TEST

START_TEST(test_scheme_name_is_case_insensitive)
{
    json_t *key = create_key("admin");
    char header[128];
    snprintf(header, sizeof header, "bearer %s", key_secret(key));
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_auth_authenticate(header, &p, &err));
    json_decref(key);
}
END_TEST

START_TEST(test_missing_header_is_unauthorized)
{
    assert_unauthorized(NULL);
}
END_TEST

START_TEST(test_empty_header_is_unauthorized)
{
    assert_unauthorized("");
    assert_unauthorized("Bearer");
    assert_unauthorized("Bearer ");
}
END_TEST

START_TEST(test_other_scheme_is_unauthorized)
{
    json_t *key = create_key("admin");
    char header[128];
    snprintf(header, sizeof header, "Basic %s", key_secret(key));
    assert_unauthorized(header);
    snprintf(header, sizeof header, "%s", key_secret(key));
    assert_unauthorized(header);
    json_decref(key);
}
END_TEST

START_TEST(test_garbage_is_unauthorized)
{
    assert_unauthorized("Bearer garbage");
    assert_unauthorized("Bearer crm_zzzzzzzzzz_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_unauthorized("Bearer \xff\xfe");
}
END_TEST

START_TEST(test_unknown_prefix_is_unauthorized)
{
    /* Well formed, but no key has this prefix (hex digits only go to f). */
    assert_unauthorized("Bearer crm_0000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
}
END_TEST

/* Changes the last character of the secret part of secret (in place). */
static void corrupt_secret(char *secret)
{
    size_t last = strlen(secret) - 1;
    secret[last] = secret[last] == 'A' ? 'B' : 'A';
}

START_TEST(test_wrong_secret_with_valid_prefix_is_unauthorized)
{
    json_t *key = create_key("admin");
    char wrong[CRM_KEY_LEN + 1];
    snprintf(wrong, sizeof wrong, "%s", key_secret(key));
    corrupt_secret(wrong);
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!authenticate_secret(wrong, &p, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
    json_decref(key);
}
END_TEST

START_TEST(test_wrong_secret_is_unauthorized_while_key_is_cached)
{
    json_t *key = create_key("admin");
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p, &err));
    char wrong[CRM_KEY_LEN + 1];
    snprintf(wrong, sizeof wrong, "%s", key_secret(key));
    corrupt_secret(wrong);
    ck_assert(!authenticate_secret(wrong, &p, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
    json_decref(key);
}
END_TEST

START_TEST(test_secret_with_trailing_characters_is_unauthorized)
{
    json_t *key = create_key("admin");
    char header[128];
    snprintf(header, sizeof header, "Bearer %sx", key_secret(key));
    assert_unauthorized(header);
    json_decref(key);
}
END_TEST

START_TEST(test_truncated_secret_is_unauthorized)
{
    json_t *key = create_key("admin");
    char header[128];
    snprintf(header, sizeof header, "Bearer %.57s", key_secret(key));
    assert_unauthorized(header);
    json_decref(key);
}
END_TEST

START_TEST(test_uncached_lookup_fails_unavailable_without_database)
{
    take_database_away();
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_auth_authenticate(
        "Bearer crm_0123456789_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &p, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAVAILABLE);
}
END_TEST

START_TEST(test_cached_key_still_authenticates_without_database)
{
    json_t *key = create_key("admin");
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p, &err));
    take_database_away();
    ck_assert_msg(authenticate_secret(key_secret(key), &p, &err), "%s", err.detail);
    json_decref(key);
}
END_TEST

enum { AUTH_THREADS = 4, AUTH_EACH = 50 };

struct auth_runner {
    const char *secret;
    long long want_id;
    int failures;
};

static void *authenticate_many(void *arg)
{
    struct auth_runner *r = arg;
    for (int i = 0; i < AUTH_EACH; i++) {
        crm_principal p;
        crm_error err = CRM_ERROR_INIT;
        if (!authenticate_secret(r->secret, &p, &err) || p.key_id != r->want_id)
            r->failures++;
        if (i % 10 == 0)
            crm_auth_cache_clear(); /* force lookups alongside cache hits */
    }
    return NULL;
}

START_TEST(test_concurrent_authentications_all_succeed)
{
    json_t *key = create_key("admin");
    pthread_t t[AUTH_THREADS];
    struct auth_runner r[AUTH_THREADS];
    for (int i = 0; i < AUTH_THREADS; i++) {
        r[i] = (struct auth_runner){key_secret(key), key_id(key), 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, authenticate_many, &r[i]), 0);
    }
    for (int i = 0; i < AUTH_THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < AUTH_THREADS; i++)
        ck_assert_int_eq(r[i].failures, 0);
    json_decref(key);
}
END_TEST

/* ---- the cache under made-up keys (review S3) ------------------------- */

/* A well-formed key that names no key: "crm_" + 10 random hex + "_" + 43. */
static void made_up_key(char *key, const char *prefix)
{
    unsigned char r[5];
    randombytes_buf(r, sizeof r);
    if (prefix != NULL)
        memcpy(key, prefix, CRM_KEY_PREFIX_LEN);
    else
        snprintf(key, CRM_KEY_PREFIX_LEN + 1, "crm_%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
                 r[4]);
    key[CRM_KEY_PREFIX_LEN] = '_';
    memset(key + CRM_KEY_PREFIX_LEN + 1, 'A', CRM_KEY_LEN - CRM_KEY_PREFIX_LEN - 1);
    key[CRM_KEY_LEN] = '\0';
}

/* The slot the old cache chose: FNV-1a of the prefix, modulo 4096 slots. */
static unsigned fnv1a_slot(const char *prefix)
{
    unsigned h = 2166136261u;
    for (const char *p = prefix; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % 4096;
}

/* A made-up key whose prefix the old, unkeyed hash put in victim's slot:
 * what an attacker who knows the victim's (public) prefix would send. */
static void colliding_key(char *key, const char *victim_prefix)
{
    char prefix[CRM_KEY_PREFIX_LEN + 1];
    do {
        made_up_key(key, NULL);
        memcpy(prefix, key, CRM_KEY_PREFIX_LEN);
        prefix[CRM_KEY_PREFIX_LEN] = '\0';
    } while (fnv1a_slot(prefix) != fnv1a_slot(victim_prefix) ||
             strcmp(prefix, victim_prefix) == 0);
}

static bool authenticate_key(const char *key)
{
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", key);
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    bool ok = crm_auth_authenticate(header, &p, &err);
    crm_error_clear(&err);
    return ok;
}

START_TEST(test_made_up_keys_do_not_evict_a_cached_key)
{
    json_t *key = create_key("customers:read");
    const char *prefix = json_string_value(json_object_get(key, "prefix"));
    ck_assert(authenticate_key(key_secret(key)));
    ck_assert(crm_auth_cache_holds(prefix));

    char made[CRM_KEY_LEN + 1];
    for (int i = 0; i < 16; i++) { /* aimed at the victim's slot in the old cache */
        colliding_key(made, prefix);
        ck_assert(!authenticate_key(made));
    }
    for (int i = 0; i < 1200; i++) { /* and a spray of random ones */
        made_up_key(made, NULL);
        ck_assert(!authenticate_key(made));
    }
    ck_assert_msg(crm_auth_cache_holds(prefix), "a made-up key evicted a valid one");
    unsigned long before = crm_auth_database_lookups();
    ck_assert(authenticate_key(key_secret(key)));
    ck_assert_uint_eq(crm_auth_database_lookups(), before); /* served from the cache */
    json_decref(key);
}
END_TEST

START_TEST(test_made_up_key_asked_again_is_refused_from_the_cache)
{
    char made[CRM_KEY_LEN + 1], header[128];
    made_up_key(made, NULL);
    snprintf(header, sizeof header, "Bearer %s", made);
    unsigned long before = crm_auth_database_lookups();
    ck_assert(!authenticate_key(made));
    ck_assert_uint_eq(crm_auth_database_lookups(), before + 1);
    for (int i = 0; i < 5; i++)
        ck_assert(!authenticate_key(made));
    ck_assert_uint_eq(crm_auth_database_lookups(), before + 1);

    /* An I/O thread is told "refused", not "unknown: ask a worker". */
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert_int_eq(crm_auth_authenticate_cached(header, &p, &err), CRM_AUTH_REFUSED);
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
    crm_error_clear(&err);
}
END_TEST

START_TEST(test_wrong_secret_of_a_real_prefix_reads_the_database_once)
{
    json_t *key = create_key("customers:read");
    char wrong[CRM_KEY_LEN + 1];
    made_up_key(wrong, json_string_value(json_object_get(key, "prefix")));
    unsigned long before = crm_auth_database_lookups();
    for (int i = 0; i < 5; i++)
        ck_assert(!authenticate_key(wrong));
    ck_assert_uint_eq(crm_auth_database_lookups(), before + 1);
    ck_assert(authenticate_key(key_secret(key)));
    ck_assert_uint_eq(crm_auth_database_lookups(), before + 1);
    json_decref(key);
}
END_TEST

START_TEST(test_fill_query_caches_what_the_query_read)
{
    json_t *key = create_key("touchpoints:write");
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", key_secret(key));
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert_int_eq(crm_auth_authenticate_cached(header, &p, &err), CRM_AUTH_UNKNOWN);

    crm_auth_fill fill;
    crm_query q;
    ck_assert(crm_auth_fill_query(header, &q, &fill));
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    crm_auth_fill_done(&fill, res);
    PQclear(res);
    ck_assert_int_eq(crm_auth_authenticate_cached(header, &p, &err), CRM_AUTH_OK);
    ck_assert_int_eq(p.key_id, key_id(key));
    ck_assert_uint_eq(p.scopes, CRM_SCOPE_TOUCHPOINTS_WRITE);

    ck_assert(!crm_auth_fill_query("Bearer crm_nonsense", &q, &fill));
    ck_assert(!crm_auth_fill_query(NULL, &q, &fill));
    json_decref(key);
}
END_TEST

START_TEST(test_fill_query_of_a_made_up_key_caches_the_refusal)
{
    char made[CRM_KEY_LEN + 1], header[128];
    made_up_key(made, NULL);
    snprintf(header, sizeof header, "Bearer %s", made);
    crm_auth_fill fill;
    crm_query q;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_auth_fill_query(header, &q, &fill));
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_ptr_nonnull(res);
    crm_auth_fill_done(&fill, res);
    PQclear(res);
    crm_principal p;
    ck_assert_int_eq(crm_auth_authenticate_cached(header, &p, &err), CRM_AUTH_REFUSED);
    crm_error_clear(&err);
}
END_TEST

/* ---- scopes --------------------------------------------------------- */

START_TEST(test_admin_allows_every_scope)
{
    json_t *key = create_key("admin");
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p, &err));
    for (unsigned bit = CRM_SCOPE_ADMIN; bit <= CRM_SCOPE_LAST; bit <<= 1)
        ck_assert_msg(crm_principal_allows(&p, bit), "admin refused %s", crm_scope_name(bit));
    json_decref(key);
}
END_TEST

START_TEST(test_read_scope_does_not_allow_write)
{
    json_t *key = create_key("customers:read");
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p, &err));
    ck_assert(crm_principal_allows(&p, CRM_SCOPE_CUSTOMERS_READ));
    ck_assert(!crm_principal_allows(&p, CRM_SCOPE_CUSTOMERS_WRITE));
    ck_assert(!crm_principal_allows(&p, CRM_SCOPE_ADMIN));
    json_decref(key);
}
END_TEST

START_TEST(test_combined_requirement_needs_every_scope)
{
    crm_principal p = {.key_id = 1, .scopes = CRM_SCOPE_CUSTOMERS_READ};
    ck_assert(!crm_principal_allows(&p, CRM_SCOPE_CUSTOMERS_READ | CRM_SCOPE_CUSTOMERS_WRITE));
    p.scopes |= CRM_SCOPE_CUSTOMERS_WRITE;
    ck_assert(crm_principal_allows(&p, CRM_SCOPE_CUSTOMERS_READ | CRM_SCOPE_CUSTOMERS_WRITE));
}
END_TEST

START_TEST(test_scope_names_round_trip)
{
    for (unsigned bit = CRM_SCOPE_ADMIN; bit <= CRM_SCOPE_LAST; bit <<= 1) {
        const char *name = crm_scope_name(bit);
        ck_assert_msg(name != NULL, "bit %u has no name", bit);
        ck_assert_uint_eq(crm_scope_from_name(name), bit);
    }
}
END_TEST

START_TEST(test_unknown_scope_name_is_zero)
{
    ck_assert_uint_eq(crm_scope_from_name("customers:delete"), 0);
    ck_assert_uint_eq(crm_scope_from_name(""), 0);
    ck_assert_uint_eq(crm_scope_from_name("ADMIN"), 0);
    ck_assert_ptr_null(crm_scope_name(0));
    ck_assert_ptr_null(crm_scope_name(CRM_SCOPE_ADMIN | CRM_SCOPE_CUSTOMERS_READ));
}
END_TEST

/* ---- revocation ----------------------------------------------------- */

START_TEST(test_revoked_key_is_rejected_at_once)
{
    json_t *key = create_key("admin");
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p, &err)); /* now cached */
    ck_assert(crm_apikey_revoke(key_id(key), &err));
    ck_assert(!authenticate_secret(key_secret(key), &p, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
    json_decref(key);
}
END_TEST

/* The interleaving of review S5, in one thread: the fill hook runs while
 * this lookup holds the row it read (not revoked) and has not cached it
 * yet; it revokes the key, which clears the cache. */
static void revoke_during_fill(void *arg)
{
    crm_auth_set_fill_hook(NULL, NULL); /* once */
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_apikey_revoke(*(long long *)arg, &err), "revoke: %s", err.detail);
}

START_TEST(test_revoke_during_a_cache_fill_is_not_undone)
{
    json_t *key = create_key("admin");
    long long id = key_id(key);
    crm_auth_cache_clear();
    crm_auth_set_fill_hook(revoke_during_fill, &id);
    /* This request read the key before the revoke committed: it may pass. */
    ck_assert(authenticate_key(key_secret(key)));
    crm_auth_set_fill_hook(NULL, NULL);
    /* But what it read must not be cached past the revoke. */
    ck_assert_msg(!crm_auth_cache_holds(json_string_value(json_object_get(key, "prefix"))),
                  "the stale row was cached after the revoke");
    ck_assert_msg(!authenticate_key(key_secret(key)), "a revoked key came back");
    json_decref(key);
}
END_TEST

START_TEST(test_fill_query_built_before_a_clear_is_not_cached)
{
    json_t *key = create_key("admin");
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", key_secret(key));
    crm_auth_fill fill;
    crm_query q;
    crm_error err = CRM_ERROR_INIT;
    crm_auth_cache_clear();
    ck_assert(crm_auth_fill_query(header, &q, &fill));
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_ptr_nonnull(res);
    ck_assert(crm_apikey_revoke(key_id(key), &err)); /* clears the cache */
    crm_auth_fill_done(&fill, res);
    PQclear(res);
    crm_principal p;
    ck_assert_int_eq(crm_auth_authenticate_cached(header, &p, &err), CRM_AUTH_UNKNOWN);
    ck_assert(!crm_auth_authenticate(header, &p, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
    crm_error_clear(&err);
    json_decref(key);
}
END_TEST

START_TEST(test_key_revoked_elsewhere_works_until_cache_expires)
{
    crm_auth_set_cache_ttl(200);
    json_t *key = create_key("admin");
    PGconn *other = direct_sql(); /* stands for another crmd process */
    crm_principal p;
    crm_error err = CRM_ERROR_INIT;
    ck_assert(authenticate_secret(key_secret(key), &p, &err));

    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", key_id(key));
    const char *params[] = {idbuf};
    PQclear(unit_sql(other, "UPDATE api_keys SET revoked_at = now() WHERE id = $1", 1, params));
    PQfinish(other);
    ck_assert_msg(authenticate_secret(key_secret(key), &p, &err), "not served from the cache");

    unit_sleep_ms(300);
    ck_assert(!authenticate_secret(key_secret(key), &p, &err));
    ck_assert_int_eq(err.code, CRM_E_UNAUTHORIZED);
    json_decref(key);
}
END_TEST

START_TEST(test_revoked_key_shows_revocation_time)
{
    json_t *key = create_key("admin");
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_apikey_revoke(key_id(key), &err));
    json_t *got = crm_apikey_get(key_id(key), &err);
    ck_assert_ptr_nonnull(got);
    ck_assert(json_is_string(json_object_get(got, "revoked_at")));
    json_decref(got);
    json_decref(key);
}
END_TEST

START_TEST(test_revoking_twice_keeps_first_revocation_time)
{
    json_t *key = create_key("admin");
    crm_error err = CRM_ERROR_INIT;
    ck_assert(crm_apikey_revoke(key_id(key), &err));
    json_t *first = crm_apikey_get(key_id(key), &err);
    unit_sleep_ms(5);
    ck_assert(crm_apikey_revoke(key_id(key), &err));
    json_t *second = crm_apikey_get(key_id(key), &err);
    ck_assert_str_eq(json_string_value(json_object_get(first, "revoked_at")),
                     json_string_value(json_object_get(second, "revoked_at")));
    json_decref(first);
    json_decref(second);
    json_decref(key);
}
END_TEST

START_TEST(test_revoking_unknown_key_is_not_found)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert(!crm_apikey_revoke(LLONG_MAX, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
}
END_TEST

/* ---- get and list --------------------------------------------------- */

START_TEST(test_get_returns_key_without_secret)
{
    json_t *key = create_key("metrics:read");
    crm_error err = CRM_ERROR_INIT;
    json_t *got = crm_apikey_get(key_id(key), &err);
    ck_assert_msg(got != NULL, "%s", err.detail);
    ck_assert_int_eq(key_id(got), key_id(key));
    ck_assert_str_eq(json_string_value(json_object_get(got, "prefix")),
                     json_string_value(json_object_get(key, "prefix")));
    ck_assert_str_eq(json_string_value(json_object_get(got, "name")),
                     json_string_value(json_object_get(key, "name")));
    ck_assert_ptr_null(json_object_get(got, "secret"));
    json_decref(got);
    json_decref(key);
}
END_TEST

START_TEST(test_get_unknown_key_is_not_found)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_apikey_get(LLONG_MAX, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
}
END_TEST

START_TEST(test_list_limit_one_gives_next_after)
{
    json_t *a = create_key("admin");
    json_t *b = create_key("admin");
    long long next = -1;
    crm_error err = CRM_ERROR_INIT;
    json_t *page = crm_apikey_list(key_id(a) - 1, 1, &next, &err);
    ck_assert_msg(page != NULL, "%s", err.detail);
    ck_assert_uint_eq(json_array_size(page), 1);
    ck_assert_int_eq(key_id(json_array_get(page, 0)), key_id(a));
    ck_assert_int_eq(next, key_id(a));
    json_decref(page);
    json_decref(a);
    json_decref(b);
}
END_TEST

START_TEST(test_list_following_next_after_gives_next_key)
{
    json_t *a = create_key("admin");
    json_t *b = create_key("admin");
    long long next = -1;
    crm_error err = CRM_ERROR_INIT;
    json_t *first = crm_apikey_list(key_id(a) - 1, 1, &next, &err);
    json_t *second = crm_apikey_list(next, 1, &next, &err);
    ck_assert_ptr_nonnull(second);
    ck_assert_uint_eq(json_array_size(second), 1);
    ck_assert_int_eq(key_id(json_array_get(second, 0)), key_id(b));
    json_decref(first);
    json_decref(second);
    json_decref(a);
    json_decref(b);
}
END_TEST

START_TEST(test_list_past_the_end_is_empty_without_next)
{
    long long next = -1;
    crm_error err = CRM_ERROR_INIT;
    json_t *page = crm_apikey_list(LLONG_MAX - 1, 10, &next, &err);
    ck_assert_ptr_nonnull(page);
    ck_assert_uint_eq(json_array_size(page), 0);
    ck_assert_int_eq(next, 0);
    json_decref(page);
}
END_TEST

START_TEST(test_list_last_page_has_no_next)
{
    json_t *a = create_key("admin");
    long long next = -1;
    crm_error err = CRM_ERROR_INIT;
    /* a is the newest key, so a page of up to 1000 from it is the last one. */
    json_t *page = crm_apikey_list(key_id(a) - 1, 1000, &next, &err);
    ck_assert_ptr_nonnull(page);
    ck_assert_int_eq(key_id(json_array_get(page, 0)), key_id(a));
    ck_assert_int_eq(next, 0);
    json_decref(page);
    json_decref(a);
}
END_TEST

START_TEST(test_list_omits_secrets)
{
    json_t *a = create_key("admin");
    long long next;
    crm_error err = CRM_ERROR_INIT;
    json_t *page = crm_apikey_list(key_id(a) - 1, 1, &next, &err);
    ck_assert_ptr_null(json_object_get(json_array_get(page, 0), "secret"));
    json_decref(page);
    json_decref(a);
}
END_TEST

Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("validation");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_create_rejects_missing_name);
    tcase_add_test(tc, test_create_rejects_non_string_name);
    tcase_add_test(tc, test_create_rejects_empty_name);
    tcase_add_test(tc, test_create_rejects_name_over_200_bytes);
    tcase_add_test(tc, test_create_accepts_name_of_200_bytes);
    tcase_add_test(tc, test_create_rejects_name_with_embedded_nul);
    tcase_add_test(tc, test_create_rejects_unknown_scope);
    tcase_add_test(tc, test_create_rejects_duplicate_scope);
    tcase_add_test(tc, test_create_rejects_non_string_scope);
    tcase_add_test(tc, test_create_rejects_empty_scopes);
    tcase_add_test(tc, test_create_rejects_missing_scopes);
    tcase_add_test(tc, test_create_rejects_unknown_field);
    tcase_add_test(tc, test_create_reports_every_bad_field_at_once);
    tcase_add_test(tc, test_create_rejects_body_that_is_not_an_object);
    suite_add_tcase(s, tc);

    tc = tcase_create("create");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_created_secret_has_the_documented_format);
    tcase_add_test(tc, test_created_prefix_is_start_of_secret);
    tcase_add_test(tc, test_created_key_describes_itself);
    tcase_add_test(tc, test_two_keys_differ);
    tcase_add_test(tc, test_create_with_every_scope_keeps_them_all);
    tcase_add_test(tc, test_stored_hash_is_sha256_of_secret_not_secret);
    tcase_add_test(tc, test_create_fails_unavailable_without_database);
    tcase_add_test(tc, test_any_active_is_true_with_a_live_key);
    suite_add_tcase(s, tc);

    tc = tcase_create("authenticate");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_bearer_secret_authenticates_with_its_scopes);
    tcase_add_test(tc, test_cached_check_never_reads_the_database);
    tcase_add_test(tc, test_authentication_works_again_from_cache);
    tcase_add_test(tc, test_scheme_name_is_case_insensitive);
    tcase_add_test(tc, test_missing_header_is_unauthorized);
    tcase_add_test(tc, test_empty_header_is_unauthorized);
    tcase_add_test(tc, test_other_scheme_is_unauthorized);
    tcase_add_test(tc, test_garbage_is_unauthorized);
    tcase_add_test(tc, test_unknown_prefix_is_unauthorized);
    tcase_add_test(tc, test_wrong_secret_with_valid_prefix_is_unauthorized);
    tcase_add_test(tc, test_wrong_secret_is_unauthorized_while_key_is_cached);
    tcase_add_test(tc, test_secret_with_trailing_characters_is_unauthorized);
    tcase_add_test(tc, test_truncated_secret_is_unauthorized);
    tcase_add_test(tc, test_uncached_lookup_fails_unavailable_without_database);
    tcase_add_test(tc, test_cached_key_still_authenticates_without_database);
    tcase_add_test(tc, test_concurrent_authentications_all_succeed);
    suite_add_tcase(s, tc);

    tc = tcase_create("cache");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_made_up_keys_do_not_evict_a_cached_key);
    tcase_add_test(tc, test_made_up_key_asked_again_is_refused_from_the_cache);
    tcase_add_test(tc, test_wrong_secret_of_a_real_prefix_reads_the_database_once);
    tcase_add_test(tc, test_fill_query_caches_what_the_query_read);
    tcase_add_test(tc, test_fill_query_of_a_made_up_key_caches_the_refusal);
    suite_add_tcase(s, tc);

    tc = tcase_create("scopes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_admin_allows_every_scope);
    tcase_add_test(tc, test_read_scope_does_not_allow_write);
    tcase_add_test(tc, test_combined_requirement_needs_every_scope);
    tcase_add_test(tc, test_scope_names_round_trip);
    tcase_add_test(tc, test_unknown_scope_name_is_zero);
    suite_add_tcase(s, tc);

    tc = tcase_create("revoke");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_revoked_key_is_rejected_at_once);
    tcase_add_test(tc, test_revoke_during_a_cache_fill_is_not_undone);
    tcase_add_test(tc, test_fill_query_built_before_a_clear_is_not_cached);
    tcase_add_test(tc, test_key_revoked_elsewhere_works_until_cache_expires);
    tcase_add_test(tc, test_revoked_key_shows_revocation_time);
    tcase_add_test(tc, test_revoking_twice_keeps_first_revocation_time);
    tcase_add_test(tc, test_revoking_unknown_key_is_not_found);
    suite_add_tcase(s, tc);

    tc = tcase_create("get_list");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_get_returns_key_without_secret);
    tcase_add_test(tc, test_get_unknown_key_is_not_found);
    tcase_add_test(tc, test_list_limit_one_gives_next_after);
    tcase_add_test(tc, test_list_following_next_after_gives_next_key);
    tcase_add_test(tc, test_list_past_the_end_is_empty_without_next);
    tcase_add_test(tc, test_list_last_page_has_no_next);
    tcase_add_test(tc, test_list_omits_secrets);
    suite_add_tcase(s, tc);
    return s;
}

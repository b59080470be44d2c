/*
 * cursor.c — the signed cursor codec (see cursor.h).
 */
#include "list/cursor.h"
#include "civil.h"
#include "db.h"
#include "json.h"
#include "log.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAC_BYTES crypto_auth_BYTES /* 32: HMAC-SHA512-256 */
#define MAX_RAW (4 + 8 * CRM_CURSOR_MAX_INTS + 2 + CRM_CURSOR_MAX_TEXT + MAC_BYTES)

_Static_assert(crypto_auth_KEYBYTES == CRM_CURSOR_SECRET_BYTES, "the secret is an HMAC key");
_Static_assert(crypto_auth_BYTES == 32, "HMAC-SHA512-256");

/* ---- the secret ----------------------------------------------------------------- */

static unsigned char secret[CRM_CURSOR_SECRET_BYTES];
static atomic_bool secret_loaded;
static pthread_mutex_t secret_lock = PTHREAD_MUTEX_INITIALIZER;

/* The first crmd to start stores 32 random bytes; every one then reads the
 * same row, so every process signs with the same key. */
static crm_stmt create_secret = CRM_STMT(
    "cursor_secret_create", "INSERT INTO cursor_secret (id, secret) VALUES (1, decode($1, 'hex')) "
                            "ON CONFLICT (id) DO NOTHING");
static crm_stmt read_secret =
    CRM_STMT_RO("cursor_secret_read", "SELECT encode(secret, 'hex') FROM cursor_secret WHERE id = 1");

void crm_cursor_secret_set(const unsigned char key[CRM_CURSOR_SECRET_BYTES])
{
    pthread_mutex_lock(&secret_lock);
    memcpy(secret, key, sizeof secret);
    atomic_store(&secret_loaded, true);
    pthread_mutex_unlock(&secret_lock);
}

/* The key from the database row, made first when there is none. */
static bool secret_from_database(unsigned char key[CRM_CURSOR_SECRET_BYTES], crm_error *err)
{
    unsigned char fresh[CRM_CURSOR_SECRET_BYTES];
    char hex[2 * CRM_CURSOR_SECRET_BYTES + 1];
    randombytes_buf(fresh, sizeof fresh);
    sodium_bin2hex(hex, sizeof hex, fresh, sizeof fresh);
    sodium_memzero(fresh, sizeof fresh);
    const char *params[] = {hex};
    PGresult *res = crm_db_run(&create_secret, 1, params, err);
    sodium_memzero(hex, sizeof hex);
    if (res == NULL)
        return false;
    PQclear(res);
    res = crm_db_run(&read_secret, 0, NULL, err);
    if (res == NULL)
        return false;
    size_t len = 0;
    bool ok = PQntuples(res) == 1 &&
              sodium_hex2bin(key, CRM_CURSOR_SECRET_BYTES, PQgetvalue(res, 0, 0),
                             (size_t)PQgetlength(res, 0, 0), NULL, &len, NULL) == 0 &&
              len == CRM_CURSOR_SECRET_BYTES;
    PQclear(res);
    if (!ok)
        return crm_error_set(err, CRM_E_INTERNAL, "the cursor secret row is not 32 bytes");
    return true;
}

bool crm_cursor_secret_load(crm_error *err)
{
    if (sodium_init() < 0)
        return crm_error_set(err, CRM_E_INTERNAL, "libsodium failed to initialise");
    unsigned char key[CRM_CURSOR_SECRET_BYTES];
    const char *env = getenv("CRMD_CURSOR_SECRET");
    if (env != NULL && env[0] != '\0') {
        if (strlen(env) < CRM_CURSOR_SECRET_BYTES)
            return crm_error_set(err, CRM_E_INVALID,
                                 "CRMD_CURSOR_SECRET must be at least 32 characters");
        /* Any string of enough entropy: its hash is the key. */
        crypto_generichash(key, sizeof key, (const unsigned char *)env, strlen(env), NULL, 0);
    } else if (!secret_from_database(key, err)) {
        return false;
    }
    crm_cursor_secret_set(key);
    sodium_memzero(key, sizeof key);
    return true;
}

/* The key, loaded on first use when crm_cursor_secret_load was not called. */
static bool secret_ready(crm_error *err)
{
    if (atomic_load(&secret_loaded))
        return true;
    crm_error local = CRM_ERROR_INIT;
    bool ok = crm_cursor_secret_load(err ? err : &local);
    if (!ok)
        crm_log(CRM_LOG_ERROR, "cursor secret: %s", err ? err->detail : local.detail);
    crm_error_clear(&local);
    return ok;
}

/* ---- building ------------------------------------------------------------------- */

void crm_cursor_init(crm_cursor *c, crm_cursor_kind kind, unsigned order)
{
    c->kind = kind;
    c->order = order;
    c->nints = 0;
    c->has_text = false;
    c->text_len = 0;
    c->text[0] = '\0';
}

bool crm_cursor_add_int(crm_cursor *c, long long v)
{
    if (c->nints >= CRM_CURSOR_MAX_INTS)
        return false;
    c->ints[c->nints++] = v;
    return true;
}

bool crm_cursor_set_text(crm_cursor *c, const char *text, size_t len)
{
    if (len > CRM_CURSOR_MAX_TEXT || memchr(text, '\0', len) != NULL)
        return false;
    memcpy(c->text, text, len);
    c->text[len] = '\0';
    c->text_len = len;
    c->has_text = true;
    return true;
}

/* The payload (everything the MAC covers) into raw; its length, 0 when c
 * cannot be a cursor. */
static size_t payload(const crm_cursor *c, unsigned char *raw)
{
    if (c->kind < 1 || c->kind > 255 || c->order > 255 || c->nints < 0 ||
        c->nints > CRM_CURSOR_MAX_INTS || c->text_len > CRM_CURSOR_MAX_TEXT)
        return 0;
    size_t n = 0;
    raw[n++] = CRM_CURSOR_VERSION;
    raw[n++] = (unsigned char)c->kind;
    raw[n++] = (unsigned char)c->order;
    raw[n++] = (unsigned char)(c->nints | (c->has_text ? 0x80 : 0));
    for (int i = 0; i < c->nints; i++) {
        uint64_t v = (uint64_t)c->ints[i];
        for (int b = 7; b >= 0; b--)
            raw[n++] = (unsigned char)(v >> (8 * b));
    }
    if (c->has_text) {
        raw[n++] = (unsigned char)(c->text_len >> 8);
        raw[n++] = (unsigned char)(c->text_len & 0xff);
        memcpy(raw + n, c->text, c->text_len);
        n += c->text_len;
    }
    return n;
}

char *crm_cursor_encode(const crm_cursor *c, crm_error *err)
{
    unsigned char raw[MAX_RAW];
    size_t n = payload(c, raw);
    if (n == 0) {
        crm_error_set(err, CRM_E_INTERNAL, "not a cursor");
        return NULL;
    }
    if (!secret_ready(err))
        return NULL;
    crypto_auth(raw + n, raw, n, secret);
    n += MAC_BYTES;
    size_t size = n * 4 / 3 + 4;
    char *out = malloc(size);
    if (out == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    crm_base64url_encode(raw, n, out, size);
    return out;
}

void crm_cursor_write(crm_jbuf *b, const crm_cursor *c)
{
    crm_error err = CRM_ERROR_INIT;
    char *text = crm_cursor_encode(c, &err);
    if (text != NULL)
        crm_jbuf_cstring(b, text);
    else
        b->out.failed = true;
    free(text);
    crm_error_clear(&err);
}

/* ---- reading -------------------------------------------------------------------- */

static long long read_int64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int b = 0; b < 8; b++)
        v = v << 8 | p[b];
    return (long long)v; /* two's complement, as written */
}

/* Parses the authenticated payload raw[0..n) into out; false when its shape
 * is not the one expected. */
static bool parse_payload(const unsigned char *raw, size_t n, crm_cursor_kind kind,
                          unsigned order, int nints, bool with_text, crm_cursor *out)
{
    if (n < 4 || raw[0] != CRM_CURSOR_VERSION || raw[1] != kind || raw[2] != order ||
        (raw[3] & 0x7f) != nints || ((raw[3] & 0x80) != 0) != with_text)
        return false;
    crm_cursor_init(out, kind, order);
    size_t at = 4;
    if (n < at + 8 * (size_t)nints)
        return false;
    for (int i = 0; i < nints; i++, at += 8)
        crm_cursor_add_int(out, read_int64(raw + at));
    if (with_text) {
        if (n < at + 2)
            return false;
        size_t len = (size_t)raw[at] << 8 | raw[at + 1];
        at += 2;
        if (n != at + len || !crm_cursor_set_text(out, (const char *)raw + at, len))
            return false;
        at += len;
    }
    return at == n;
}

bool crm_cursor_decode(const char *text, crm_cursor_kind kind, unsigned order, int nints,
                       bool with_text, crm_cursor *out)
{
    size_t len = text ? strnlen(text, CRM_CURSOR_MAX_CHARS + 1) : 0;
    if (len == 0 || len > CRM_CURSOR_MAX_CHARS || nints < 0 || nints > CRM_CURSOR_MAX_INTS)
        return false;
    unsigned char raw[MAX_RAW + 4];
    long n = crm_base64url_decode(text, raw, sizeof raw);
    if (n < 4 + MAC_BYTES || !secret_ready(NULL))
        return false;
    size_t body = (size_t)n - MAC_BYTES;
    if (crypto_auth_verify(raw + body, raw, body, secret) != 0)
        return false;
    return parse_payload(raw, body, kind, order, nints, with_text, out);
}

/* ---- timestamps ----------------------------------------------------------------- */

bool crm_cursor_us_valid(long long us)
{
    return us >= CRM_CURSOR_US_MIN && us < CRM_CURSOR_US_MAX;
}

size_t crm_cursor_format_us(long long us, char *out)
{
    const long long day_us = 86400000000LL;
    long long days = us / day_us, rest = us % day_us;
    if (rest < 0) {
        rest += day_us;
        days--;
    }
    long long year;
    int month, day;
    crm_civil_from_days(days, &year, &month, &day);
    long long secs = rest / 1000000;
    int frac = (int)(rest % 1000000);
    int n = snprintf(out, 40, "%04lld-%02d-%02d %02lld:%02lld:%02lld.%06d+00", year, month, day,
                     secs / 3600, secs / 60 % 60, secs % 60, frac);
    return n > 0 ? (size_t)n : 0;
}

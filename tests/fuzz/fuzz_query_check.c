/*
 * fuzz_query_check.c — the query checker (server/query_check.h) that every
 * request's query string goes through before a handler runs.
 *
 * Input: the first byte picks a route of the table, the rest is a query
 * string, split on '&' and '=' as libmicrohttpd splits it (a key without
 * '=' has no value). Properties: the checker accepts exactly when a
 * reference written here does (every key declared by the route, written
 * as declared, at most once; every value decoding to UTF-8 without NUL);
 * a refusal is CRM_E_INVALID with at most 16 errors[] entries, each naming
 * a declared parameter or an unknown key that is short, UTF-8 and free of
 * control characters (never other client bytes).
 */
#include "fuzz.h"

#include "query_check.h"
#include "router.h"

#include <stdbool.h>

#define MAX_PAIRS 64

typedef struct pair {
    char *key, *value; /* value NULL: no '=' */
} pair;

/* Splits s (modified) into pairs; returns how many (at most MAX_PAIRS). */
static int split_query(char *s, pair *pairs)
{
    int n = 0;
    for (char *p = s; n < MAX_PAIRS;) {
        char *amp = strchr(p, '&');
        if (amp != NULL)
            *amp = '\0';
        if (*p != '\0') {
            char *eq = strchr(p, '=');
            if (eq != NULL)
                *eq = '\0';
            pairs[n++] = (pair){p, eq != NULL ? eq + 1 : NULL};
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    return n;
}

static int hexdigit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* True when s decodes (query rules) to UTF-8 without NUL. */
static bool reference_value_ok(const char *s)
{
    size_t len = strlen(s), o = 0;
    unsigned char *out = malloc(len + 1);
    FUZZ_CHECK(out != NULL);
    bool ok = true;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && len - i >= 3 && hexdigit(s[i + 1]) >= 0 && hexdigit(s[i + 2]) >= 0) {
            out[o] = (unsigned char)(hexdigit(s[i + 1]) * 16 + hexdigit(s[i + 2]));
            ok = ok && out[o] != 0;
            o++;
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : (unsigned char)s[i];
        }
    }
    ok = ok && fuzz_utf8_valid(out, o);
    free(out);
    return ok;
}

static int declared_index(const http_route *route, const char *key)
{
    for (int i = 0; route->query != NULL && route->query[i] != NULL; i++)
        if (strcmp(route->query[i], key) == 0)
            return i;
    return -1;
}

/* The reference verdict. */
static bool reference_accepts(const http_route *route, const pair *pairs, int n)
{
    int seen[ROUTE_MAX_QUERY] = {0};
    for (int i = 0; i < n; i++) {
        int k = declared_index(route, pairs[i].key);
        if (k < 0 || ++seen[k] > 1)
            return false;
        if (pairs[i].value != NULL && !reference_value_ok(pairs[i].value))
            return false;
    }
    return true;
}

static bool field_acceptable(const http_route *route, const char *field)
{
    if (declared_index(route, field) >= 0)
        return true;
    size_t n = strlen(field);
    if (n == 0 || n > 64 || !fuzz_utf8_valid((const unsigned char *)field, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)field[i] < 0x20 || field[i] == 0x7f)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        router_init();
        ready = true;
    }
    if (size == 0)
        return 0;
    size_t count;
    const http_route *table = router_table(&count);
    const http_route *route = &table[data[0] % count];
    char *query = fuzz_string(data + 1, size - 1);
    pair pairs[MAX_PAIRS];
    int n = split_query(query, pairs);

    crm_arena arena;
    crm_arena_init(&arena);
    crm_error err = CRM_ERROR_INIT;
    query_checker qc;
    query_checker_init(&qc, route, &arena, &err);
    for (int i = 0; i < n; i++)
        query_checker_add(&qc, pairs[i].key, pairs[i].value);
    bool accepted = query_checker_finish(&qc);

    FUZZ_CHECK(accepted == reference_accepts(route, pairs, n));
    if (accepted) {
        FUZZ_CHECK(err.code == CRM_OK && err.errors == NULL);
    } else {
        FUZZ_CHECK(err.code == CRM_E_INVALID);
        FUZZ_CHECK(json_array_size(err.errors) <= 16);
        size_t i;
        json_t *e;
        json_array_foreach(err.errors, i, e)
        {
            const char *field = json_string_value(json_object_get(e, "field"));
            FUZZ_CHECK(field != NULL && field_acceptable(route, field));
        }
    }
    crm_error_clear(&err);
    crm_arena_free(&arena);
    free(query);
    return 0;
}

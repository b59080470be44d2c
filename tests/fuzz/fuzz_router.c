/*
 * fuzz_router.c — router_match with any method and any raw path a client
 * can send (MHD hands over the path before the '?' undecoded).
 *
 * Input: the first byte picks the method (one of crmd's, or an odd one),
 * the rest is the path. Properties: a found route has the requested method
 * (GET for HEAD), a pattern with as many segments as the path, one decoded
 * value per {parameter} (never NULL, never empty, never holding a NUL), at
 * most HTTP_MAX_PARAMS; a wrong method comes with a non-empty Allow list;
 * and matching the same input twice gives the same answer.
 */
#include "fuzz.h"

#include "router.h"

#include <stdbool.h>

static const char *const methods[] = {"GET",     "HEAD",  "POST", "PUT", "PATCH",  "DELETE",
                                      "OPTIONS", "TRACE", "get",  "",    "CONNECT"};

static int count_segments(const char *path)
{
    int n = 0;
    for (const char *p = path; *p != '\0'; p++)
        n += *p == '/';
    return n;
}

static int count_params(const char *pattern)
{
    int n = 0;
    for (const char *p = pattern; *p != '\0'; p++)
        n += *p == '{';
    return n;
}

static void check_found(const char *method, const char *path, const route_match *m)
{
    const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;
    size_t count;
    const http_route *table = router_table(&count);
    FUZZ_CHECK(m->route != NULL);
    FUZZ_CHECK(m->index >= 0 && (size_t)m->index < count && &table[m->index] == m->route);
    FUZZ_CHECK(strcmp(m->route->method, want) == 0);
    FUZZ_CHECK(count_segments(m->route->pattern) == count_segments(path));
    FUZZ_CHECK(m->nparams == count_params(m->route->pattern));
    FUZZ_CHECK(m->nparams <= HTTP_MAX_PARAMS);
    for (int i = 0; i < m->nparams; i++) {
        FUZZ_CHECK(m->params[i].value != NULL && m->params[i].value[0] != '\0');
        FUZZ_CHECK(m->params[i].name_len > 0);
    }
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
    const char *method = methods[data[0] % (sizeof methods / sizeof methods[0])];
    char *path = fuzz_string(data + 1, size - 1);

    crm_arena arena;
    crm_arena_init(&arena);
    route_match m, again;
    route_status st = router_match(method, path, &arena, &m);
    FUZZ_CHECK(router_match(method, path, &arena, &again) == st);
    switch (st) {
    case ROUTE_FOUND:
        check_found(method, path, &m);
        FUZZ_CHECK(again.route == m.route);
        break;
    case ROUTE_BAD_METHOD:
        FUZZ_CHECK(m.route == NULL && m.allow[0] != '\0');
        FUZZ_CHECK(strlen(m.allow) < sizeof m.allow);
        break;
    case ROUTE_BAD_PARAM:
        /* A parameter that is not UTF-8 is named by the pattern, never by
         * the client's bytes. */
        FUZZ_CHECK(m.bad_param != NULL && m.bad_param_len > 0);
        break;
    case ROUTE_NOT_FOUND:
    case ROUTE_BAD_PATH:
        break;
    default:
        FUZZ_CHECK(!"an unknown route_status");
    }
    crm_arena_free(&arena);
    free(path);
    return 0;
}

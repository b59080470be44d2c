/*
 * router.h — the route table: method + path pattern -> handler + scope.
 *
 * The table in router.c is the single description of the API surface. 404
 * and 405 (with Allow), authentication, metrics labels and the contract test
 * (`crmd routes` against openapi.yaml) all read it.
 */
#ifndef HTTP_ROUTER_H
#define HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"

typedef struct http_request http_request;
typedef void (*http_handler)(http_request *req);

typedef struct http_route {
    const char *method;
    const char *pattern; /* "/v1/api-keys/{id}": {name} matches one segment */
    http_handler handler;
    unsigned scope;      /* required scope bit; 0 means no key needed;
                            ROUTE_ANY_KEY: a valid key, the handler decides */
    bool json_body;      /* the request carries a JSON body */
    bool nonblocking;    /* never blocks: runs on the I/O thread (at most one
                            http_defer_query); otherwise a worker runs it */
    size_t max_body;     /* largest body accepted (within CRMD_MAX_BODY_BYTES);
                            0, the default: no body at all */
    const char *const *query; /* the query parameters it accepts, NULL-terminated
                                 (NULL: none); any other gets 422 before the
                                 handler runs (server/query_check.c) */
} http_route;

/* The scope of a route that any valid key may call, whose handler decides
 * from what it finds whether the key may see it (a job: by the read scope
 * of its kind, 404 otherwise). No key can hold it: it is no scope of
 * auth.h, whose bits stay far below. */
#define ROUTE_ANY_KEY (1u << 31)

/* The scope column as `crmd routes` prints it and openapi.yaml's
 * x-required-scope names it: "-" (no key), "any-key", or the scope. */
const char *router_scope_name(unsigned scope);

/* No route declares more query parameters than this. */
#define ROUTE_MAX_QUERY 32

/* The position of name[0..len) in route's query list, or -1. */
int router_query_index(const http_route *route, const char *name, size_t len);

#define HTTP_MAX_PARAMS 4

typedef struct http_path_param {
    const char *name;  /* points into the pattern */
    size_t name_len;
    const char *value; /* percent-decoded, in the request arena */
} http_path_param;

typedef enum {
    ROUTE_FOUND,
    ROUTE_NOT_FOUND,     /* no pattern matches the path */
    ROUTE_BAD_METHOD,    /* a pattern matches, but not with this method */
    ROUTE_BAD_PATH,      /* the path cannot be decoded (e.g. %00) */
    ROUTE_BAD_PARAM,     /* a path parameter decodes to bytes that are not
                            UTF-8: m->bad_param names it (422) */
} route_status;

typedef struct route_match {
    const http_route *route;
    int index;            /* position in the table, for metrics */
    http_path_param params[HTTP_MAX_PARAMS];
    int nparams;
    char allow[128];      /* for ROUTE_BAD_METHOD: "GET, HEAD, POST" */
    const char *bad_param; /* for ROUTE_BAD_PARAM: the parameter's name in the
                              pattern (ours, never the client's bytes) */
    size_t bad_param_len;
} route_match;

/* Prepares the table (splits patterns once). Call before serving. */
void router_init(void);

/* Matches method and a raw (still percent-encoded) path. HEAD matches GET
 * routes. Decoded parameter values are allocated in arena. */
route_status router_match(const char *method, const char *raw_path, crm_arena *arena,
                          route_match *m);

const http_route *router_table(size_t *count);

/* How decoding a path segment or a query key or value went. */
typedef enum {
    DECODE_OK,
    DECODE_NUL,       /* it decodes to a NUL byte (%00) */
    DECODE_NOT_UTF8,  /* it decodes to bytes that are not strict UTF-8 */
    DECODE_NO_MEMORY,
} decode_status;

/* Percent-decodes src[0..len) into a NUL-terminated arena string (*out, NULL
 * unless DECODE_OK). The result must be strict UTF-8 (crm_utf8_valid):
 * PostgreSQL refuses anything else, so no value that reaches a handler may
 * hold it. With plus_is_space, '+' becomes ' ' (query strings). */
decode_status router_decode(crm_arena *arena, const char *src, size_t len, bool plus_is_space,
                            char **out);

/* router_decode's result, or NULL when it is not DECODE_OK. */
char *router_percent_decode(crm_arena *arena, const char *src, size_t len, bool plus_is_space);

#endif

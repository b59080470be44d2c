/*
 * query_check.h — every route's query string checked in one place, before
 * its handler runs: each key is one the route declares (router.c), given
 * once, and each key and value decodes to strict UTF-8 without NUL.
 *
 * The core (query_checker_*) sees raw key/value pairs, so it can be tested
 * without a connection; http_query_acceptable() feeds it a request's query
 * string and answers 422 when it is refused.
 */
#ifndef HTTP_QUERY_CHECK_H
#define HTTP_QUERY_CHECK_H

#include <stdbool.h>

#include "arena.h"
#include "error.h"
#include "router.h"

struct MHD_Connection;
typedef struct http_request http_request;

typedef struct query_checker {
    const http_route *route;
    crm_arena *arena; /* decoded keys and values live here */
    crm_error *err;   /* collects errors[] entries */
    int reported;     /* entries added (some may have been left out) */
    bool unnamed;     /* a key that cannot be named (not UTF-8, NUL, control
                         characters, too long) was seen */
    unsigned char seen[ROUTE_MAX_QUERY]; /* times each declared key came */
    char accepted[384]; /* "this operation accepts: ...", made when needed */
} query_checker;

void query_checker_init(query_checker *qc, const http_route *route, crm_arena *arena,
                        crm_error *err);

/* One parameter as it came (still percent-encoded); raw_value is NULL for a
 * key without '='. */
void query_checker_add(query_checker *qc, const char *raw_key, const char *raw_value);

/* True when every parameter was acceptable; otherwise false with err set to
 * CRM_E_INVALID (422) naming the parameters at fault. */
bool query_checker_finish(query_checker *qc);

/* Checks the request's query string against route; when it is refused,
 * answers 422 problem+json and returns false. */
bool http_query_acceptable(http_request *req, struct MHD_Connection *conn,
                           const http_route *route);

/* Answers 422 naming the path parameter of a ROUTE_BAD_PARAM match. */
void http_refuse_path_param(http_request *req, const route_match *m);

#endif

/*
 * query_check.c — the one place where a request's query string is checked
 * before any handler runs.
 *
 * Handlers read parameters with http_query() and take what they get: they
 * cannot tell a misspelt parameter (`?emial=x`, which would silently widen a
 * list to everyone) from an absent one, a repeated one from a single one,
 * or a value PostgreSQL would refuse (a NUL byte, bytes that are not UTF-8)
 * from an ordinary one. So every key and value is decoded here once, for
 * every route, against the parameters its row of the route table declares,
 * and a request whose query cannot be used is answered 422 naming the
 * parameter at fault. The name in `errors[].field` is the route's
 * own identifier whenever we have one, never the client's bytes (review S9).
 */
#include "query_check.h"
#include "http.h"

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

/* At most this many entries in errors[]: enough to fix a request, bounded
 * whatever the client sends. */
#define MAX_REPORTED 16

static void report(query_checker *qc, const char *field, const char *message)
{
    if (qc->reported++ < MAX_REPORTED)
        crm_error_add_field(qc->err, field, message);
}

void query_checker_init(query_checker *qc, const http_route *route, crm_arena *arena,
                        crm_error *err)
{
    *qc = (query_checker){.route = route, .arena = arena, .err = err};
}

/* The longest unknown key we repeat back as a field name; longer ones are
 * reported without their bytes. */
#define MAX_ECHOED_KEY 64

/* True when an unknown key may be named in errors[]: it is already UTF-8
 * (checked by the decoder), short, and holds no control characters. */
static bool echoable(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > MAX_ECHOED_KEY)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
            return false;
    return true;
}

/* The message of an unknown key's errors[] entry: UNKNOWN_PREFIX, then
 * "this operation accepts a, b" or "this operation takes no query
 * parameters"; made once per request. */
#define UNKNOWN_PREFIX "unknown: "

static const char *accepted_message(query_checker *qc)
{
    if (qc->accepted[0] != '\0')
        return qc->accepted;
    const char *const *q = qc->route != NULL ? qc->route->query : NULL;
    if (q == NULL || q[0] == NULL) {
        snprintf(qc->accepted, sizeof qc->accepted,
                 UNKNOWN_PREFIX "this operation takes no query parameters");
        return qc->accepted;
    }
    size_t len = (size_t)snprintf(qc->accepted, sizeof qc->accepted,
                                  UNKNOWN_PREFIX "this operation accepts ");
    for (int i = 0; q[i] != NULL && len < sizeof qc->accepted; i++)
        len += (size_t)snprintf(qc->accepted + len, sizeof qc->accepted - len, "%s%s",
                                i > 0 ? ", " : "", q[i]);
    return qc->accepted;
}

void query_checker_add(query_checker *qc, const char *raw_key, const char *raw_value)
{
    char *key;
    if (router_decode(qc->arena, raw_key, strlen(raw_key), true, &key) != DECODE_OK) {
        /* Its bytes are not something we may write into a JSON document or
         * a log line; the detail says what is wrong without repeating them. */
        qc->unnamed = true;
        return;
    }
    int index = qc->route != NULL ? router_query_index(qc->route, key, strlen(key)) : -1;
    if (index < 0) {
        if (echoable(key))
            report(qc, key, accepted_message(qc));
        else
            qc->unnamed = true;
        return;
    }
    /* From here on the parameter is named by the route table's string. */
    const char *name = qc->route->query[index];
    if (strcmp(raw_key, name) != 0) {
        /* Handlers look keys up as sent; an encoded spelling of a known
         * name (`%65mail`) would be silently missed, so it is refused. */
        report(qc, name, "write the parameter's name without percent-encoding");
        return;
    }
    if (index < ROUTE_MAX_QUERY && ++qc->seen[index] == 2)
        report(qc, name, "given more than once; this parameter takes one value");
    if (raw_value == NULL)
        return;
    char *value;
    switch (router_decode(qc->arena, raw_value, strlen(raw_value), true, &value)) {
    case DECODE_OK:
        break;
    case DECODE_NUL:
        report(qc, name, "contains an encoded NUL byte");
        break;
    case DECODE_NOT_UTF8:
        report(qc, name, "is not valid UTF-8 once percent-decoded");
        break;
    case DECODE_NO_MEMORY:
        report(qc, name, "could not be decoded");
        break;
    }
}

bool query_checker_finish(query_checker *qc)
{
    if (qc->reported == 0 && !qc->unnamed)
        return true;
    if (qc->reported == 0)
        return crm_error_set(qc->err, CRM_E_INVALID,
                             "a query parameter's name is unknown, or not valid UTF-8 once "
                             "percent-decoded; %s",
                             accepted_message(qc) + strlen(UNKNOWN_PREFIX));
    return crm_error_set(qc->err, CRM_E_INVALID, "invalid query parameter");
}

static enum MHD_Result add_argument(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    query_checker_add(cls, key, value);
    return MHD_YES;
}

bool http_query_acceptable(http_request *req, struct MHD_Connection *conn,
                           const http_route *route)
{
    crm_error err = CRM_ERROR_INIT;
    query_checker qc;
    query_checker_init(&qc, route, http_arena(req), &err);
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_argument, &qc);
    bool ok = query_checker_finish(&qc);
    if (!ok)
        http_reply_error(req, &err);
    crm_error_clear(&err);
    return ok;
}

void http_refuse_path_param(http_request *req, const route_match *m)
{
    char field[64];
    snprintf(field, sizeof field, "%.*s", (int)m->bad_param_len, m->bad_param);
    crm_error err = CRM_ERROR_INIT;
    crm_error_add_field(&err, field, "is not valid UTF-8 once percent-decoded");
    crm_error_set(&err, CRM_E_INVALID, "invalid path parameter '%s'", field);
    http_reply_error(req, &err);
    crm_error_clear(&err);
}

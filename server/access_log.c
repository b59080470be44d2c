/*
 * access_log.c — one JSON line per request: identifiers only, never
 * personal data.
 */
#include "http_internal.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

static const char *loggable_method(const char *m)
{
    static const char *const known[] = {"GET",     "HEAD",    "POST",  "PUT",    "PATCH",
                                        "DELETE",  "OPTIONS", "TRACE", "CONNECT"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "OTHER";
}

/* The route is the pattern, not the path, which may contain e-mail
 * addresses. */
void access_log_write(const http_request *req, double seconds)
{
    char ts[40], line[512];
    crm_log_timestamp(ts, sizeof ts);
    const http_route *route = req->match.route;
    int n = snprintf(line, sizeof line,
                     "{\"ts\":\"%s\",\"level\":\"info\",\"msg\":\"request\",\"request_id\":\"%s\","
                     "\"method\":\"%s\",\"route\":%s%s%s,\"status\":%d,\"duration_ms\":%.3f,"
                     "\"key_prefix\":%s%s%s,\"bytes_in\":%zu}",
                     ts, req->request_id, loggable_method(req->method), route ? "\"" : "",
                     route ? route->pattern : "null", route ? "\"" : "", req->status,
                     seconds * 1000.0, req->has_principal ? "\"" : "",
                     req->has_principal ? req->principal.prefix : "null",
                     req->has_principal ? "\"" : "", req->body_len);
    if (n > 0 && (size_t)n < sizeof line)
        crm_log_write_line(line, (size_t)n);
}

/*
 * cors.c — the CORS allow-list, preflight answers and the headers that let a
 * browser page read crmd's answers (see cors.h).
 */
#include "cors.h"
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_ORIGINS 32
#define MAX_ORIGIN_LEN 255

/* How long a browser may cache a preflight's answer (seconds). Browsers cap
 * it themselves (Chromium at 7200). */
#define PREFLIGHT_MAX_AGE "600"

/* What a page may send besides the CORS-safelisted headers. */
#define ALLOW_HEADERS "Authorization, Content-Type, If-Match, Idempotency-Key, X-Request-Id"

/* What a page may read besides the CORS-safelisted response headers. */
#define EXPOSE_HEADERS                                                                          \
    "ETag, Location, Content-Location, X-Request-Id, Idempotent-Replayed, RateLimit-Limit, "    \
    "RateLimit-Remaining, RateLimit-Reset, Retry-After"

/* Written once by cors_configure before any thread serves, then only read. */
static struct {
    bool enabled;
    bool any; /* "*" */
    int n;
    char origins[MAX_ORIGINS][MAX_ORIGIN_LEN + 1];
} cors;

/* True when s[0..n) is a serialized origin: http or https, a host of
 * letters, digits, '-' and '.' (or an IPv6 literal in brackets), an optional
 * port, and nothing after it (no path, no trailing slash). */
static bool origin_well_formed(const char *s, size_t n)
{
    size_t scheme;
    if (n > 8 && strncasecmp(s, "https://", 8) == 0)
        scheme = 8;
    else if (n > 7 && strncasecmp(s, "http://", 7) == 0)
        scheme = 7;
    else
        return false;
    size_t i = scheme;
    if (s[i] == '[') {
        while (i < n && s[i] != ']')
            i++;
        if (i == n)
            return false;
        i++;
    } else {
        while (i < n && (isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '.'))
            i++;
    }
    if (i == scheme)
        return false;
    if (i < n && s[i] == ':') {
        size_t digits = 0;
        for (i++; i < n && isdigit((unsigned char)s[i]); i++)
            digits++;
        if (digits == 0 || digits > 5)
            return false;
    }
    return i == n;
}

bool cors_configure(const char *origins, char *errbuf, size_t errsize)
{
    memset(&cors, 0, sizeof cors);
    if (origins == NULL)
        return true;
    for (const char *p = origins;;) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, ",");
        size_t t = n;
        while (t > 0 && (p[t - 1] == ' ' || p[t - 1] == '\t'))
            t--;
        if (t == 1 && p[0] == '*') {
            cors.any = true;
        } else if (t > 0) {
            if (t > MAX_ORIGIN_LEN || !origin_well_formed(p, t)) {
                snprintf(errbuf, errsize,
                         "CRMD_CORS_ORIGINS: '%.*s' is not an origin such as "
                         "https://app.example.com (scheme, host, optional port; no path)",
                         (int)(t > 80 ? 80 : t), p);
                return false;
            }
            if (cors.n == MAX_ORIGINS) {
                snprintf(errbuf, errsize, "CRMD_CORS_ORIGINS: at most %d origins", MAX_ORIGINS);
                return false;
            }
            memcpy(cors.origins[cors.n], p, t);
            cors.origins[cors.n][t] = '\0';
            cors.n++;
        }
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    if (cors.any && cors.n > 0) {
        snprintf(errbuf, errsize, "CRMD_CORS_ORIGINS: '*' means any origin and cannot be "
                                  "combined with a list");
        return false;
    }
    cors.enabled = cors.any || cors.n > 0;
    return true;
}

bool cors_origin_allowed(const char *origin)
{
    if (!cors.enabled || origin == NULL)
        return false;
    if (cors.any)
        return true;
    /* Schemes and hosts are case-insensitive; browsers send them lowercase. */
    for (int i = 0; i < cors.n; i++)
        if (strcasecmp(cors.origins[i], origin) == 0)
            return true;
    return false;
}

void http_cors_annotate(http_request *req)
{
    if (!cors.enabled)
        return;
    /* With a list, the answer depends on Origin: shared caches must know. */
    if (!cors.any)
        http_add_header(req, "Vary", "Origin");
    const char *origin = http_header(req, "Origin");
    if (!cors_origin_allowed(origin))
        return;
    http_add_header(req, "Access-Control-Allow-Origin", cors.any ? "*" : origin);
    http_add_header(req, "Access-Control-Expose-Headers", EXPOSE_HEADERS);
}

bool http_cors_preflight(http_request *req, const char *method, const char *allow)
{
    if (!cors.enabled || strcmp(method, "OPTIONS") != 0)
        return false;
    const char *origin = http_header(req, "Origin");
    if (origin == NULL || http_header(req, "Access-Control-Request-Method") == NULL)
        return false;
    if (!cors_origin_allowed(origin)) {
        http_reply_problem(req, 403, "this origin may not call the API from a browser "
                                     "(CRMD_CORS_ORIGINS)");
        return true;
    }
    http_add_header(req, "Access-Control-Allow-Methods", allow);
    http_add_header(req, "Access-Control-Allow-Headers", ALLOW_HEADERS);
    http_add_header(req, "Access-Control-Max-Age", PREFLIGHT_MAX_AGE);
    http_reply_empty(req, 204);
    return true;
}

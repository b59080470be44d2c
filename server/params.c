/*
 * params.c — query and path parameter parsing shared by handlers.
 */
#include "handlers.h"
#include "json.h"
#include "list/cursor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool parse_positive(const char *s, long long *out)
{
    if (s == NULL || *s < '1' || *s > '9')
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0)
        return false;
    *out = v;
    return true;
}

bool http_query_limit(http_request *req, int def, int max, int *out, crm_error *err)
{
    const char *s = http_query(req, "limit");
    long long v;
    if (s == NULL) {
        *out = def;
        return true;
    }
    if (!parse_positive(s, &v) || v > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be an integer from 1 to %d", max);
        crm_error_add_field(err, "limit", msg);
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameter 'limit'");
    }
    *out = (int)v;
    return true;
}

/* Lists paged by id alone (API keys, audit trails, consent histories) use
 * a signed cursor holding the last id shown (lib/list/cursor.h). */
json_t *http_cursor_from_id(long long id)
{
    crm_cursor c;
    crm_cursor_init(&c, CRM_CURSOR_BY_ID, 0);
    crm_cursor_add_int(&c, id);
    crm_error err = CRM_ERROR_INIT;
    char *text = crm_cursor_encode(&c, &err);
    crm_error_clear(&err);
    json_t *out = text ? json_string(text) : NULL; /* NULL: the caller answers 500 */
    free(text);
    return out;
}

bool http_query_after_id(http_request *req, long long *out, crm_error *err)
{
    const char *s = http_query(req, "after");
    *out = 0;
    if (s == NULL)
        return true;
    crm_cursor c;
    if (crm_cursor_decode(s, CRM_CURSOR_BY_ID, 0, 1, false, &c) && c.ints[0] > 0) {
        *out = c.ints[0];
        return true;
    }
    crm_error_add_field(err, "after", "not a cursor this list returned");
    return crm_error_set(err, CRM_E_INVALID, "invalid query parameter 'after'");
}

bool http_param_id(http_request *req, const char *name, long long *out)
{
    return parse_positive(http_param(req, name), out);
}

void handler_reply_error(http_request *req, crm_error *err)
{
    http_reply_error(req, err);
    crm_error_clear(err);
}

crm_write_ctx handler_write_ctx(http_request *req)
{
    const crm_principal *p = http_principal(req);
    crm_write_ctx ctx = {.api_key_id = p ? p->key_id : 0,
                         .idempotency_key = NULL,
                         .has_scopes = p != NULL,
                         .scopes = p ? p->scopes : 0};
    return ctx;
}

/* ---- Accept (RFC 9110, 12.5.1) ------------------------------------------------- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The weight "q=..." as thousandths (0..1000), or -1 when it is not one. */
static int parse_qvalue(const char *s, size_t len)
{
    if (len == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int q = (s[0] - '0') * 1000, scale = 100;
    if (len > 1 && (s[1] != '.' || len > 5))
        return -1;
    for (size_t i = 2; i < len; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q <= 1000 ? q : -1;
}

/* How specifically the range [r, r + len) names type ("text/csv"): 3 for
 * the type itself, 2 for its major type with any subtype, 1 for any type,
 * 0 when it does not name it. */
static int range_match(const char *r, size_t len, const char *type)
{
    const char *slash = strchr(type, '/');
    size_t major = (size_t)(slash - type);
    if (len == strlen(type) && strncasecmp(r, type, len) == 0)
        return 3;
    if (len == major + 2 && strncasecmp(r, type, major + 1) == 0 && r[major + 1] == '*')
        return 2;
    return len == 3 && memcmp(r, "*/*", 3) == 0 ? 1 : 0;
}

int http_accept_weight(const char *accept, const char *type)
{
    const char *p = accept;
    if (p == NULL)
        return 1000;
    int best = 0, quality = 0;
    while (*p != '\0') {
        while (is_ows(*p) || *p == ',')
            p++;
        const char *range = p;
        while (*p != '\0' && *p != ',' && *p != ';' && !is_ows(*p))
            p++;
        size_t range_len = (size_t)(p - range);
        int q = 1000;
        while (*p != '\0' && *p != ',') { /* parameters: only q is read */
            while (is_ows(*p) || *p == ';')
                p++;
            const char *param = p;
            while (*p != '\0' && *p != ',' && *p != ';')
                p++;
            size_t plen = (size_t)(p - param);
            while (plen > 0 && is_ows(param[plen - 1]))
                plen--;
            if (plen >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=')
                q = parse_qvalue(param + 2, plen - 2);
        }
        int match = range_len > 0 && q >= 0 ? range_match(range, range_len, type) : 0;
        if (match > best) {
            best = match;
            quality = q;
        }
    }
    return quality;
}

int http_accept_quality(http_request *req, const char *type)
{
    return http_accept_weight(http_header(req, "Accept"), type);
}

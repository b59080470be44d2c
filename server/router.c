/*
 * router.c — the route table and path matching.
 *
 * To add an operation: add one row here, its handler in
 * handlers_<resource>.c, and the operation in openapi.yaml (a test checks
 * that the table and the contract list the same operations).
 */
#include "router.h"
#include "auth.h"
#include "handlers.h"
#include "json.h"

#include <string.h>

/* Body limits (max_body, the seventh column; 0: none): small documents,
 * one customer or touchpoint (attributes alone may take 64 KiB compact) or
 * a search's rule, and the batch. CRMD_MAX_BODY_BYTES caps them all. */
#define SMALL_BODY (64u * 1024)
#define RECORD_BODY (256u * 1024)
#define BATCH_BODY (8u * 1024 * 1024)

/* The query parameters of each kind of read, as the handlers take them
 * (http_query) and openapi.yaml lists them; the contract test compares the
 * two. None is repeatable: a second value is refused, not ignored. */
static const char *const Q_PAGE[] = {"limit", "after", NULL};
static const char *const Q_EXPAND[] = {"expand", NULL};
static const char *const Q_CUSTOMER_LIST[] = {
    "email",         "phone",          "country",       "city",           "lifecycle_stage",
    "tag",           "created_after",  "created_before", "updated_after", "updated_before",
    "q",             "sort",           "limit",          "after",         NULL};
static const char *const Q_CUSTOMER_SEARCH[] = {"sort", "limit", "after", NULL};
static const char *const Q_TIMELINE[] = {"channel",         "type",  "occurred_after",
                                         "occurred_before", "limit", "after", NULL};
static const char *const Q_SEGMENT_MEMBERS[] = {"limit", "after", "at", NULL};
static const char *const Q_SEGMENT_COUNT[] = {"at", NULL};
static const char *const Q_SEGMENT_CHANGES[] = {"limit", "after", "since", NULL};
static const char *const Q_LIMIT[] = {"limit", NULL};
static const char *const Q_CAMPAIGN_LIST[] = {"status", "limit", "after", NULL};
static const char *const Q_CAMPAIGN_CONTACTS[] = {"channel", "limit", "after", NULL};
static const char *const Q_SYNC[] = {"cursor", "limit", NULL};
static const char *const Q_COHORTS[] = {"from", "to", "months", NULL};
static const char *const Q_BASKET[] = {"min_support", "min_confidence", "min_lift", "limit",
                                       "sku", NULL};
static const char *const Q_SUMMARY[] = {"from", "to", NULL};
static const char *const Q_DISTRIBUTION[] = {"measure", "bins", "edges", "customer_id", NULL};
static const char *const Q_TIMESERIES[] = {"measure", "interval", "from", "to", NULL};

static const http_route routes[] = {
    /* operations */
    {"GET", "/healthz", handle_healthz, 0, false, true, 0, NULL},
    {"GET", "/readyz", handle_readyz, 0, false, true, 0, NULL},
    {"GET", "/metrics", handle_metrics, 0, false, true, 0, NULL},
    {"GET", "/openapi.yaml", handle_openapi, 0, false, true, 0, NULL},
    /* api keys */
    {"POST", "/v1/api-keys", handle_apikey_create, CRM_SCOPE_ADMIN, true, false, SMALL_BODY, NULL},
    {"GET", "/v1/api-keys", handle_apikey_list, CRM_SCOPE_ADMIN, false, true, 0, Q_PAGE},
    {"GET", "/v1/api-keys/{id}", handle_apikey_get, CRM_SCOPE_ADMIN, false, true, 0, NULL},
    {"DELETE", "/v1/api-keys/{id}", handle_apikey_revoke, CRM_SCOPE_ADMIN, false, false, 0, NULL},
    /* customers */
    {"POST", "/v1/customers", handle_customer_create, CRM_SCOPE_CUSTOMERS_WRITE, true, false,
     RECORD_BODY, NULL},
    {"GET", "/v1/customers", handle_customer_list, CRM_SCOPE_CUSTOMERS_READ, false, true, 0,
     Q_CUSTOMER_LIST},
    {"POST", "/v1/customers/search", handle_customer_search, CRM_SCOPE_CUSTOMERS_READ, true, true,
     RECORD_BODY, Q_CUSTOMER_SEARCH},
    {"GET", "/v1/customers/{id}", handle_customer_get, CRM_SCOPE_CUSTOMERS_READ, false, true, 0,
     Q_EXPAND},
    {"PATCH", "/v1/customers/{id}", handle_customer_patch, CRM_SCOPE_CUSTOMERS_WRITE, true, false,
     RECORD_BODY, NULL},
    {"DELETE", "/v1/customers/{id}", handle_customer_delete, CRM_SCOPE_CUSTOMERS_WRITE, false,
     false, 0, NULL},
    {"GET", "/v1/customers/{id}/audit", handle_customer_audit, CRM_SCOPE_CUSTOMERS_READ, false,
     false, 0, Q_PAGE},
    {"GET", "/v1/customers/{id}/export", handle_customer_export, CRM_SCOPE_CUSTOMERS_EXPORT, false,
     false, 0, NULL},
    {"POST", "/v1/customers/{id}/erase", handle_customer_erase, CRM_SCOPE_CUSTOMERS_WRITE, true,
     false, SMALL_BODY, NULL},
    {"GET", "/v1/customers/by-external-id/{source}/{external_id}",
     handle_customer_get_by_external_id, CRM_SCOPE_CUSTOMERS_READ, false, false, 0, Q_EXPAND},
    {"PUT", "/v1/customers/by-external-id/{source}/{external_id}",
     handle_customer_upsert_by_external_id, CRM_SCOPE_CUSTOMERS_WRITE, true, false, RECORD_BODY,
     NULL},
    /* consents */
    {"POST", "/v1/customers/{id}/consents", handle_consents_record, CRM_SCOPE_CUSTOMERS_WRITE, true,
     false, SMALL_BODY, NULL},
    {"GET", "/v1/customers/{id}/consents", handle_consents_get, CRM_SCOPE_CUSTOMERS_READ, false,
     false, 0, Q_PAGE},
    /* touchpoints */
    {"POST", "/v1/touchpoints", handle_touchpoint_record, CRM_SCOPE_TOUCHPOINTS_WRITE, true, false,
     RECORD_BODY, NULL},
    {"POST", "/v1/touchpoints/batch", handle_touchpoint_batch, CRM_SCOPE_TOUCHPOINTS_WRITE, true,
     false, BATCH_BODY, NULL},
    {"GET", "/v1/touchpoints/{id}", handle_touchpoint_get, CRM_SCOPE_TOUCHPOINTS_READ, false, true,
     0, NULL},
    {"GET", "/v1/customers/{id}/touchpoints", handle_customer_timeline, CRM_SCOPE_TOUCHPOINTS_READ,
     false, true, 0, Q_TIMELINE},
    /* duplicates and merge */
    {"GET", "/v1/customers/{id}/duplicates", handle_customer_duplicates, CRM_SCOPE_CUSTOMERS_READ,
     false, false, 0, NULL},
    {"POST", "/v1/customers/{id}/merge", handle_customer_merge, CRM_SCOPE_CUSTOMERS_WRITE, true,
     false, SMALL_BODY, NULL},
    /* jobs: a job is read and cancelled with the read scope of its kind
     * (handlers_jobs.c) */
    {"GET", "/v1/jobs/{id}", handle_job_get, ROUTE_ANY_KEY, false, false, 0, NULL},
    {"POST", "/v1/jobs/{id}/cancel", handle_job_cancel, ROUTE_ANY_KEY, false, false, 0, NULL},
    /* sync feeds */
    {"GET", "/v1/sync/customers", handle_sync_customers, CRM_SCOPE_SYNC_READ, false, true, 0,
     Q_SYNC},
    {"GET", "/v1/sync/touchpoints", handle_sync_touchpoints, CRM_SCOPE_SYNC_READ, false, true, 0,
     Q_SYNC},
    {"GET", "/v1/sync/segment-memberships", handle_sync_segment_memberships, CRM_SCOPE_SYNC_READ,
     false, true, 0, Q_SYNC},
    /* segments */
    {"POST", "/v1/segments", handle_segment_create, CRM_SCOPE_SEGMENTS_WRITE, true, false,
     SMALL_BODY, NULL},
    {"GET", "/v1/segments", handle_segment_list, CRM_SCOPE_SEGMENTS_READ, false, false, 0, Q_PAGE},
    {"GET", "/v1/segments/{id}", handle_segment_get, CRM_SCOPE_SEGMENTS_READ, false, false, 0,
     NULL},
    {"PATCH", "/v1/segments/{id}", handle_segment_patch, CRM_SCOPE_SEGMENTS_WRITE, true, false,
     SMALL_BODY, NULL},
    {"DELETE", "/v1/segments/{id}", handle_segment_delete, CRM_SCOPE_SEGMENTS_WRITE, false, false,
     0, NULL},
    {"GET", "/v1/segments/{id}/count", handle_segment_count, CRM_SCOPE_SEGMENTS_READ, false, true,
     0, Q_SEGMENT_COUNT},
    {"GET", "/v1/segments/{id}/customers", handle_segment_customers, CRM_SCOPE_SEGMENTS_READ,
     false, false, 0, Q_SEGMENT_MEMBERS},
    {"GET", "/v1/segments/{id}/changes", handle_segment_changes, CRM_SCOPE_SEGMENTS_READ, false,
     false, 0, Q_SEGMENT_CHANGES},
    {"GET", "/v1/segments/{id}/history", handle_segment_history, CRM_SCOPE_SEGMENTS_READ, false,
     false, 0, Q_PAGE},
    /* treatments */
    {"GET", "/v1/customers/{id}/treatments", handle_customer_treatments, CRM_SCOPE_RULES_READ,
     false, true, 0, Q_LIMIT},
    /* treatment rules */
    {"POST", "/v1/treatment-rules", handle_treatment_rule_create, CRM_SCOPE_RULES_WRITE, true,
     false, SMALL_BODY, NULL},
    {"GET", "/v1/treatment-rules", handle_treatment_rule_list, CRM_SCOPE_RULES_READ, false, false,
     0, Q_PAGE},
    {"POST", "/v1/treatment-rules/simulate", handle_treatment_rule_simulate, CRM_SCOPE_RULES_READ,
     true, false, SMALL_BODY, NULL},
    {"GET", "/v1/treatment-rules/{id}", handle_treatment_rule_get, CRM_SCOPE_RULES_READ, false,
     false, 0, NULL},
    {"PATCH", "/v1/treatment-rules/{id}", handle_treatment_rule_patch, CRM_SCOPE_RULES_WRITE, true,
     false, SMALL_BODY, NULL},
    {"DELETE", "/v1/treatment-rules/{id}", handle_treatment_rule_delete, CRM_SCOPE_RULES_WRITE,
     false, false, 0, NULL},
    {"GET", "/v1/treatment-rules/{id}/versions", handle_treatment_rule_versions,
     CRM_SCOPE_RULES_READ, false, false, 0, Q_PAGE},
    {"POST", "/v1/treatment-rules/{id}/simulate", handle_treatment_rule_simulate_stored,
     CRM_SCOPE_RULES_READ, false, false, 0, NULL},
    /* campaigns */
    {"POST", "/v1/campaigns", handle_campaign_create, CRM_SCOPE_CAMPAIGNS_WRITE, true, false,
     SMALL_BODY, NULL},
    {"GET", "/v1/campaigns", handle_campaign_list, CRM_SCOPE_CAMPAIGNS_READ, false, false, 0,
     Q_CAMPAIGN_LIST},
    {"GET", "/v1/campaigns/{id}", handle_campaign_get, CRM_SCOPE_CAMPAIGNS_READ, false, false, 0,
     NULL},
    {"PATCH", "/v1/campaigns/{id}", handle_campaign_patch, CRM_SCOPE_CAMPAIGNS_WRITE, true, false,
     SMALL_BODY, NULL},
    {"DELETE", "/v1/campaigns/{id}", handle_campaign_delete, CRM_SCOPE_CAMPAIGNS_WRITE, false,
     false, 0, NULL},
    {"GET", "/v1/campaigns/{id}/versions", handle_campaign_versions, CRM_SCOPE_CAMPAIGNS_READ,
     false, false, 0, Q_PAGE},
    {"POST", "/v1/campaigns/{id}/execute", handle_campaign_execute, CRM_SCOPE_CAMPAIGNS_WRITE,
     false, false, 0, NULL},
    {"GET", "/v1/campaigns/{id}/results", handle_campaign_results, CRM_SCOPE_CAMPAIGNS_READ,
     false, true, 0, NULL},
    {"GET", "/v1/campaigns/{id}/contacts", handle_campaign_contacts, CRM_SCOPE_CAMPAIGNS_READ,
     false, false, 0, Q_CAMPAIGN_CONTACTS},
    /* contact policies and contacts */
    {"POST", "/v1/contact-policies", handle_contact_policy_create, CRM_SCOPE_RULES_WRITE, true,
     false, SMALL_BODY, NULL},
    {"GET", "/v1/contact-policies", handle_contact_policy_list, CRM_SCOPE_RULES_READ, false, false,
     0, Q_PAGE},
    {"GET", "/v1/contact-policies/{id}", handle_contact_policy_get, CRM_SCOPE_RULES_READ, false,
     false, 0, NULL},
    {"PATCH", "/v1/contact-policies/{id}", handle_contact_policy_patch, CRM_SCOPE_RULES_WRITE, true,
     false, SMALL_BODY, NULL},
    {"DELETE", "/v1/contact-policies/{id}", handle_contact_policy_delete, CRM_SCOPE_RULES_WRITE,
     false, false, 0, NULL},
    {"POST", "/v1/customers/{id}/contacts", handle_customer_contact, CRM_SCOPE_TOUCHPOINTS_WRITE,
     true, false, SMALL_BODY, NULL},
    /* metrics */
    {"GET", "/v1/customers/{id}/metrics", handle_customer_metrics, CRM_SCOPE_METRICS_READ, false,
     true, 0, NULL},
    {"GET", "/v1/customers/{id}/lifecycle", handle_customer_lifecycle, CRM_SCOPE_METRICS_READ,
     false, false, 0, Q_PAGE},
    {"GET", "/v1/metrics/model", handle_metrics_model, CRM_SCOPE_METRICS_READ, false, false, 0,
     NULL},
    {"POST", "/v1/metrics/recompute", handle_metrics_recompute, CRM_SCOPE_METRICS_WRITE, true,
     false, SMALL_BODY, NULL},
    {"GET", "/v1/metrics/currency-rates", handle_currency_rates_list, CRM_SCOPE_METRICS_READ,
     false, false, 0, Q_PAGE},
    {"GET", "/v1/metrics/currency-rates/{currency}", handle_currency_rate_get,
     CRM_SCOPE_METRICS_READ, false, false, 0, NULL},
    {"PUT", "/v1/metrics/currency-rates/{currency}", handle_currency_rate_put,
     CRM_SCOPE_METRICS_WRITE, true, false, SMALL_BODY, NULL},
    {"DELETE", "/v1/metrics/currency-rates/{currency}", handle_currency_rate_delete,
     CRM_SCOPE_METRICS_WRITE, false, false, 0, NULL},
    {"GET", "/v1/metrics/cohorts", handle_metrics_cohorts, CRM_SCOPE_METRICS_READ, false, false,
     0, Q_COHORTS},
    {"GET", "/v1/metrics/market-basket", handle_metrics_market_basket, CRM_SCOPE_METRICS_READ,
     false, false, 0, Q_BASKET},
    {"GET", "/v1/metrics/summary", handle_metrics_summary, CRM_SCOPE_METRICS_READ, false, false, 0,
     Q_SUMMARY},
    {"GET", "/v1/metrics/distribution", handle_metrics_distribution, CRM_SCOPE_METRICS_READ, false,
     false, 0, Q_DISTRIBUTION},
    {"GET", "/v1/metrics/timeseries", handle_metrics_timeseries, CRM_SCOPE_METRICS_READ, false,
     false, 0, Q_TIMESERIES},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])
#define MAX_SEGMENTS 16

/* A pattern split into segments once, at start. */
typedef struct compiled_route {
    int nseg;
    struct {
        const char *text;
        size_t len;
        bool is_param;
    } seg[MAX_SEGMENTS];
} compiled_route;

static compiled_route compiled[N_ROUTES];

const char *router_scope_name(unsigned scope)
{
    if (scope == 0)
        return "-";
    if (scope == ROUTE_ANY_KEY)
        return "any-key";
    const char *name = crm_scope_name(scope);
    return name != NULL ? name : "?";
}

const http_route *router_table(size_t *count)
{
    *count = N_ROUTES;
    return routes;
}

void router_init(void)
{
    for (size_t i = 0; i < N_ROUTES; i++) {
        compiled_route *c = &compiled[i];
        c->nseg = 0;
        const char *p = routes[i].pattern;
        while (*p == '/' && c->nseg < MAX_SEGMENTS) {
            p++;
            size_t len = strcspn(p, "/");
            bool param = len >= 2 && p[0] == '{' && p[len - 1] == '}';
            c->seg[c->nseg].text = param ? p + 1 : p;
            c->seg[c->nseg].len = param ? len - 2 : len;
            c->seg[c->nseg].is_param = param;
            c->nseg++;
            p += len;
        }
    }
}

int router_query_index(const http_route *route, const char *name, size_t len)
{
    for (int i = 0; route->query != NULL && route->query[i] != NULL; i++)
        if (strlen(route->query[i]) == len && memcmp(route->query[i], name, len) == 0)
            return i;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

decode_status router_decode(crm_arena *arena, const char *src, size_t len, bool plus_is_space,
                            char **out)
{
    *out = NULL;
    char *buf = crm_arena_alloc(arena, len + 1);
    if (buf == NULL)
        return DECODE_NO_MEMORY;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (src[i] == '%' && i + 2 < len && (hi = hexval(src[i + 1])) >= 0 && (lo = hexval(src[i + 2])) >= 0) {
            char c = (char)(hi * 16 + lo);
            if (c == '\0')
                return DECODE_NUL;
            buf[o++] = c;
            i += 2;
        } else if (plus_is_space && src[i] == '+') {
            buf[o++] = ' ';
        } else {
            buf[o++] = src[i];
        }
    }
    buf[o] = '\0';
    if (!crm_utf8_valid(buf, o))
        return DECODE_NOT_UTF8;
    *out = buf;
    return DECODE_OK;
}

char *router_percent_decode(crm_arena *arena, const char *src, size_t len, bool plus_is_space)
{
    char *out;
    return router_decode(arena, src, len, plus_is_space, &out) == DECODE_OK ? out : NULL;
}

/* Splits raw_path into segments (pointers into raw_path). */
static int split_path(const char *raw_path, const char **seg, size_t *len)
{
    int n = 0;
    const char *p = raw_path;
    while (*p == '/') {
        if (n == MAX_SEGMENTS)
            return -1;
        p++;
        size_t l = strcspn(p, "/");
        seg[n] = p;
        len[n] = l;
        n++;
        p += l;
    }
    return *p == '\0' ? n : -1;
}

static bool segments_match(const compiled_route *c, int nseg, const char **seg, const size_t *len)
{
    if (c->nseg != nseg)
        return false;
    for (int i = 0; i < nseg; i++) {
        if (c->seg[i].is_param) {
            if (len[i] == 0)
                return false;
        } else if (c->seg[i].len != len[i] || memcmp(c->seg[i].text, seg[i], len[i]) != 0) {
            return false;
        }
    }
    return true;
}

static void add_allow(char *allow, size_t size, const char *method)
{
    if (strstr(allow, method) != NULL)
        return;
    if (allow[0] != '\0')
        strncat(allow, ", ", size - strlen(allow) - 1);
    strncat(allow, method, size - strlen(allow) - 1);
}

route_status router_match(const char *method, const char *raw_path, crm_arena *arena,
                          route_match *m)
{
    const char *seg[MAX_SEGMENTS];
    size_t len[MAX_SEGMENTS];
    memset(m, 0, sizeof *m);
    m->index = -1;
    int nseg = split_path(raw_path, seg, len);
    if (nseg < 0)
        return ROUTE_NOT_FOUND;
    const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;

    bool path_matched = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        const compiled_route *c = &compiled[i];
        if (!segments_match(c, nseg, seg, len))
            continue;
        path_matched = true;
        add_allow(m->allow, sizeof m->allow, routes[i].method);
        if (strcmp(routes[i].method, "GET") == 0)
            add_allow(m->allow, sizeof m->allow, "HEAD");
        if (m->route != NULL || strcmp(routes[i].method, want) != 0)
            continue;
        m->route = &routes[i];
        m->index = (int)i;
        for (int s = 0; s < nseg; s++) {
            if (!c->seg[s].is_param)
                continue;
            http_path_param *p = &m->params[m->nparams++];
            p->name = c->seg[s].text;
            p->name_len = c->seg[s].len;
            char *value;
            decode_status ds = router_decode(arena, seg[s], len[s], false, &value);
            if (ds == DECODE_NOT_UTF8) {
                m->bad_param = p->name;
                m->bad_param_len = p->name_len;
                return ROUTE_BAD_PARAM;
            }
            if (ds != DECODE_OK)
                return ROUTE_BAD_PATH;
            p->value = value;
        }
    }
    if (m->route != NULL)
        return ROUTE_FOUND;
    return path_matched ? ROUTE_BAD_METHOD : ROUTE_NOT_FOUND;
}

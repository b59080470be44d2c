/*
 * handlers_metrics_patterns.c — the base's purchase patterns, as the job
 * metrics_patterns last computed them (customer_metrics.h):
 * GET /v1/metrics/cohorts        (metrics:read)  retention and revenue by
 *     first-purchase month: ?from=YYYY-MM&to=YYYY-MM&months=N;
 * GET /v1/metrics/market-basket  (metrics:read)  items bought together:
 *     ?min_support=&min_confidence=&min_lift=&limit=&sku=.
 * The query's text is parsed here; its ranges are lib's to check.
 */
#include "customer_metrics.h"
#include "handlers.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define COHORT_MONTHS_DEFAULT 12
#define BASKET_LIMIT_DEFAULT 50

/* ?name=YYYY-MM as a month count (year * 12 + month - 1); -1 when absent.
 * False (err: 422 naming it) when it is not such a month. */
static bool query_month(http_request *req, const char *name, int *out, crm_error *err)
{
    const char *s = http_query(req, name);
    *out = -1;
    if (s == NULL || crm_metrics_parse_month(s, out))
        return true;
    crm_error_add_field(err, name, "must be a month as YYYY-MM, from 0001-01 to 9999-12");
    return crm_error_set(err, CRM_E_INVALID, "invalid query parameter '%s'", name);
}

/* ?name= as a plain decimal number (digits, a point, an exponent: no sign,
 * no spaces); def when absent, NAN when it is not one (lib refuses it,
 * naming the parameter with its range). */
static double query_number(http_request *req, const char *name, double def)
{
    const char *s = http_query(req, name);
    return s == NULL ? def : crm_metrics_parse_decimal(s);
}

/* ?months=: def when absent, 0 (out of range for lib) when not an integer. */
static int query_months(http_request *req, int def)
{
    const char *s = http_query(req, "months");
    return s == NULL ? def : crm_metrics_parse_count(s, CRM_COHORT_MONTHS_MAX);
}

static void reply_text(http_request *req, char *text, crm_error *err)
{
    if (text == NULL)
        handler_reply_error(req, err);
    else
        http_reply_json_text(req, 200, text, strlen(text));
}

void handle_metrics_cohorts(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_cohorts_query q = {.months = query_months(req, COHORT_MONTHS_DEFAULT)};
    if (!query_month(req, "from", &q.from, &err) || !query_month(req, "to", &q.to, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    reply_text(req, crm_metrics_cohorts(&q, &err), &err);
}

void handle_metrics_market_basket(http_request *req)
{
    crm_error err = CRM_ERROR_INIT;
    crm_basket_query q = {.min_support = query_number(req, "min_support", 0),
                          .min_confidence = query_number(req, "min_confidence", 0),
                          .min_lift = query_number(req, "min_lift", 0),
                          .sku = http_query(req, "sku")};
    if (!http_query_limit(req, BASKET_LIMIT_DEFAULT, CRM_BASKET_LIMIT_MAX, &q.limit, &err)) {
        handler_reply_error(req, &err);
        return;
    }
    reply_text(req, crm_metrics_market_basket(&q, &err), &err);
}

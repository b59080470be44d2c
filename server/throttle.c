/*
 * throttle.c — the per-key rate limit's one process-wide table and the
 * headers and 429 it produces (see throttle.h).
 */
#include "throttle.h"
#include "clock.h"
#include "http.h"
#include "ratelimit.h"

#include <stdio.h>

/* Buckets kept at once; more keys than this active together only means some
 * buckets are forgotten while full (lib/ratelimit.h). */
#define THROTTLE_MAX_KEYS 8192

/* Made by http_throttle_configure before any thread serves, freed after. */
static crm_ratelimit *limiter;

bool http_throttle_configure(int rps, int burst)
{
    crm_ratelimit_free(limiter);
    limiter = NULL;
    if (rps <= 0)
        return true;
    limiter = crm_ratelimit_new(rps, burst, THROTTLE_MAX_KEYS);
    return limiter != NULL;
}

void http_throttle_shutdown(void)
{
    crm_ratelimit_free(limiter);
    limiter = NULL;
}

static void add_number_header(http_request *req, const char *name, long long value)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", value);
    http_add_header(req, name, text);
}

bool http_throttle_admit(http_request *req, long long key_id)
{
    if (limiter == NULL)
        return true;
    crm_ratelimit_state st;
    bool allowed = crm_ratelimit_take(limiter, key_id, crm_monotonic_ms(), &st);
    add_number_header(req, "RateLimit-Limit", st.limit);
    add_number_header(req, "RateLimit-Remaining", st.remaining);
    add_number_header(req, "RateLimit-Reset", st.reset_s);
    if (allowed)
        return true;
    add_number_header(req, "Retry-After", st.retry_after_s);
    char detail[160];
    snprintf(detail, sizeof detail,
             "this key has used its %lld requests; one more is allowed in %lld s",
             st.limit, st.retry_after_s);
    http_reply_problem(req, 429, detail);
    return false;
}

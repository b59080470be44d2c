/*
 * campaigns/def.h — one campaign definition checked and put in its
 * canonical form, and the status machine; neither needs the database (the
 * audience's segment or rule is looked up by campaigns.c), so the fuzz
 * target tests/fuzz/fuzz_campaign.c runs them alone.
 */
#ifndef CRM_CAMPAIGNS_DEF_H
#define CRM_CAMPAIGNS_DEF_H

#include <jansson.h>
#include <stdbool.h>

#include "error.h"

#define CAMPAIGN_CHANNELS_MAX 7
#define CAMPAIGN_RESPONSE_TYPES_MAX 20
#define CAMPAIGN_CONTROL_SHARE_MAX 0.5

/* A checked definition. doc is canonical and owned: {"code", "name",
 * "objective", "audience": {"segment_id", "rule_id"} (one of them null),
 * "channels", "purpose", "offer_code", "starts_at", "ends_at",
 * "control_share", "cost_per_contact" and "fixed_cost" (decimal strings),
 * "currency", "response_types", "attribution_days"}, every optional member
 * present (null or its default). */
typedef struct campaign_def {
    json_t *doc;
    char starts[40], ends[40]; /* the window in UTC for SQL, "" when open */
    long long starts_ms, ends_ms;
    bool has_cost; /* a cost above 0 */
} campaign_def;

/* Checks body as a whole campaign definition and fills d (free with
 * campaign_def_free, also after a failure). False with CRM_E_INVALID and
 * one field error per problem (JSON pointers from the root), or
 * CRM_E_INTERNAL. */
bool campaign_def_check(const json_t *body, campaign_def *d, crm_error *err);

void campaign_def_free(campaign_def *d);

/* The statuses, NULL-terminated. */
extern const char *const campaign_statuses[];

/* True when a campaign in status from may be moved to to by a PATCH (the
 * move to running belongs to execution, never to a PATCH). */
bool campaign_transition_allowed(const char *from, const char *to);

/* The statuses a PATCH may move a campaign in status from to, as a new
 * JSON array (empty for the final ones). */
json_t *campaign_allowed_transitions(const char *from);

/* The members (top-level definition keys) that may not change while a
 * campaign is in status; NULL-terminated, or NULL when all may (draft,
 * scheduled). For running: code, audience, channels, purpose,
 * control_share, offer_code and starts_at; for completed and cancelled:
 * all but name and objective. */
const char *const *campaign_locked_members(const char *status);

#endif

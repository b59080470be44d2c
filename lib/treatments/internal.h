/*
 * treatments/internal.h — what the parts of lib/treatments share: the
 * contact policies in memory, what the contact check reads of a customer,
 * and the check itself, one function for GET /v1/customers/{id}/treatments
 * (read as it stands) and POST /v1/customers/{id}/contacts (read under the
 * customer's row lock), so that the two always agree.
 */
#ifndef CRM_TREATMENTS_INTERNAL_H
#define CRM_TREATMENTS_INTERNAL_H

#include "treatments.h"

#include <jansson.h>
#include <stdbool.h>

/* One live contact policy (see treatments.h). */
typedef struct contact_policy {
    long long id;
    char name[201];
    char channel[16]; /* "" : every channel */
    char purpose[16]; /* "" : every purpose */
    long long rule_id; /* 0: every contact */
    int max_contacts;  /* 0: no cap */
    int period_hours;
    int quiet_from_min, quiet_until_min; /* minutes after local midnight; -1: none */
    char time_zone[65];
} contact_policy;

typedef struct policy_set {
    contact_policy *p; /* owned */
    int n;
    int max_period_hours; /* the longest cap's period (0: no cap) */
} policy_set;

/* Every live policy, in id order. */
bool policy_set_load(crm_conn *c, policy_set *ps, crm_error *err);
void policy_set_free(policy_set *ps);

/* What the check reads of one customer at now_ms. */
typedef struct contact_consent {
    char channel[16], purpose[16], status[16];
    long long id; /* the decision's id */
} contact_consent;

typedef struct contact_event {
    long long at_ms;
    char channel[16];   /* touchpoints.channel */
    char purpose[16];   /* "" when the touchpoint has none */
    long long rule_id;  /* an allowed contact of the log; 0 for a touchpoint */
} contact_event;

typedef struct contact_facts {
    long long customer_id;
    bool exists, active;
    contact_consent *consents; /* the latest decision per (channel, purpose) */
    int nconsents;
    contact_event *events; /* outbound touchpoints and allowed rule contacts in the longest period */
    int nevents;
    /* The local time now (minutes after midnight) of each policy's time
     * zone, by policy index; -1 when the time zone is unknown. */
    int *local_min;
} contact_facts;

/* The policies' time zones in order ("" for none) as a text[] literal,
 * the parameter the facts' local minutes are computed from (caller frees;
 * NULL when memory ran out). */
char *policy_zones_literal(const policy_set *ps);

/* Loads the facts of customer_id for the policies of ps at now_ms, in one
 * statement on c (inside the caller's transaction when it has one). */
bool contact_facts_load(crm_conn *c, const policy_set *ps, long long customer_id,
                        long long now_ms, contact_facts *f, crm_error *err);
void contact_facts_free(contact_facts *f);

/* The touchpoint channel a consent channel's contacts are recorded on
 * ("push" and "in_app": "mobile_app"). NULL for an unknown channel. */
const char *contact_touchpoint_channel(const char *channel);

/* Whether the customer of f may be contacted on channel for purpose (for
 * rule_id; 0: no rule) at now_ms under ps. Appends one reason object per
 * refusal to reasons (see treatments.h). */
bool contact_allowed(const policy_set *ps, const contact_facts *f, const char *channel,
                     const char *purpose, long long rule_id, long long now_ms, json_t *reasons);

#endif

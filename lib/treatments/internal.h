/*
 * treatments/internal.h — what the parts of lib/treatments share: the
 * contact policies in memory, what the contact check reads of a customer,
 * and the check itself, one function for GET /v1/customers/{id}/treatments
 * (read as it stands) and POST /v1/customers/{id}/contacts (read under the
 * customer's row lock), so that the two always agree. And the checks of the
 * client's bodies that need no database (a contact policy, a contact
 * request), for their fuzz targets (tests/fuzz) as much as for their files.
 */
#ifndef CRM_TREATMENTS_INTERNAL_H
#define CRM_TREATMENTS_INTERNAL_H

#include "treatments.h"
#include "customers.h"

#include <jansson.h>
#include <stdbool.h>

/* One live contact policy (see treatments.h). */
typedef struct contact_policy {
    long long id;
    char name[201];
    char channel[16];  /* "" : every channel */
    char purpose[16];  /* "" : every purpose */
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
    char channel[16];  /* touchpoints.channel */
    char purpose[16];  /* "" when the touchpoint has none */
    long long rule_id; /* an allowed contact of the log; 0 for a touchpoint */
} contact_event;

typedef struct contact_facts {
    long long customer_id;
    bool exists, active;
    contact_consent *consents; /* the latest decision per (channel, purpose) */
    int nconsents;
    contact_event
        *events; /* outbound touchpoints and allowed rule contacts in the longest period */
    int nevents;
    /* The local time now (minutes after midnight) of each policy's time
     * zone, by policy index; -1 when the time zone is unknown. */
    int *local_min;
} contact_facts;

/* The policies' time zones in order ("" for none) as a text[] literal,
 * the parameter the facts' local minutes are computed from (caller frees;
 * NULL when memory ran out). */
char *policy_zones_literal(const policy_set *ps);

/* What the decision reads beside the facts, in the same statement. */
typedef struct contact_extras {
    const char *source, *event_id; /* in: the request's event */
    long long rule_id;             /* in: its rule (0: none) */
    long long stamp;               /* out: treatment_config's stamp (-1: none) */
    long long decided_id;          /* out: the decision stored for the event (0: none) */
    long long decided_customer;    /*      and its customer */
    bool rule_found;               /* out: rule_id names a live rule */
    int rule_version;
    bool has_offer;
    char offer_code[104];
} contact_extras;

/* Loads the facts of customer_id for the policies of ps at now_ms, in one
 * statement on c (inside the caller's transaction when it has one), and
 * with x (may be NULL) what the decision reads beside them; with x, the
 * customer's status is not read (f->exists and f->active are the caller's
 * to set: the decision reads them with the customer's lock). */
bool contact_facts_load(crm_conn *c, const policy_set *ps, long long customer_id, long long now_ms,
                        contact_extras *x, contact_facts *f, crm_error *err);

/* The live rules and policies as this process keeps them
 * (treatments/evaluate.c), one config per treatment_config.stamp, reference
 * counted: treatments_config_of gives the config of stamp (read first when
 * stamp is -1), loading it on c when the kept one is of another stamp;
 * NULL with err when it could not. Release each with
 * treatments_config_release. */
typedef struct treatments_config treatments_config;
treatments_config *treatments_config_of(crm_conn *c, long long stamp, crm_error *err);
/* The kept config whatever its stamp, or NULL when none is kept yet. */
treatments_config *treatments_config_cached(void);
void treatments_config_release(treatments_config *k);
long long treatments_config_stamp(const treatments_config *k);
const policy_set *treatments_config_policies(const treatments_config *k);
void contact_facts_free(contact_facts *f);

/* The index of id in the n ascending ids, or -1 (a binary search). */
int contact_ids_index(const long long *ids, int n, long long id);

/* What a caller of contact_facts_load_many decides on: consents of these
 * channels (a text[] literal; NULL: every channel) and of this purpose
 * (NULL: every purpose) are the only ones read. */
typedef struct contact_facts_scope {
    const char *channels, *purpose;
} contact_facts_scope;

/* The facts of the n customers of ids (ascending; idlist the same ids as a
 * bigint array literal, which the caller builds for its own statements
 * too) for a contact that names no rule, within scope (NULL: all of them),
 * in one statement on c: out[i] for ids[i], all but exists and active,
 * which the caller sets from the statuses it read with its locks; free
 * each with contact_facts_free, also after a failure. A campaign's
 * decisions, set-based (campaigns/execute.c). */
bool contact_facts_load_many(crm_conn *c, const policy_set *ps, const long long *ids, int n,
                             const char *idlist, const contact_facts_scope *scope, long long now_ms,
                             contact_facts *out, crm_error *err);

/* The touchpoint channel a consent channel's contacts are recorded on
 * ("push" and "in_app": "mobile_app"). NULL for an unknown channel. */
const char *contact_touchpoint_channel(const char *channel);

/* Whether the customer of f may be contacted on channel for purpose (for
 * rule_id; 0: no rule) at now_ms under ps. Appends one reason object per
 * refusal to reasons (see treatments.h); with reasons NULL it only tells,
 * and stops at the first refusal. */
bool contact_allowed(const policy_set *ps, const contact_facts *f, const char *channel,
                     const char *purpose, long long rule_id, long long now_ms, json_t *reasons);

/* ---- the client's bodies, checked without the database ---------------------------- */

/* A checked contact policy definition, as the statements take it (NULL:
 * SQL NULL). The strings are borrowed from the document checked, or point
 * into the bufs. */
typedef struct policy_values {
    const char *name, *channel, *purpose, *rule_id, *max_contacts, *period_hours;
    const char *quiet_from, *quiet_until, *time_zone;
    char rule_buf[24], max_buf[16], period_buf[16];
} policy_values;

/* Checks a whole definition (a create body, or a policy after a merge
 * patch) into v; whether rule_id names a live rule and time_zone a zone
 * PostgreSQL knows is left to the database. False with CRM_E_INVALID and
 * the field errors. */
bool policy_check(const json_t *doc, policy_values *v, crm_error *err);

/* What a merge patch of a policy must be before the policy is read: an
 * object naming only members of a definition. False with CRM_E_INVALID. */
bool policy_patch_check(const json_t *patch, crm_error *err);

/* The definition a patch applies to: the members of a policy's
 * representation doc that a patch may change, without the null ones.
 * Caller owns it (json_decref). */
json_t *policy_definition_of(const json_t *doc);

/* RFC 7396: patch applied to target in place. */
void policy_merge_patch(json_t *target, const json_t *patch);

/* A checked contact request (POST /v1/customers/{id}/contacts). The
 * strings are borrowed from the body. */
typedef struct contact_request {
    const char *channel, *purpose, *campaign_id, *source, *event_id;
    long long rule_id;                      /* 0: none */
    char occurred_at[CRM_RFC3339_UTC_SIZE]; /* "" : now */
} contact_request;

/* Checks a contact request's body into r; occurred_at may lie up to the
 * touchpoints' future tolerance (crm_touchpoint_future_tolerance) after
 * now_ms, as the touchpoint it records must. False with CRM_E_INVALID and
 * the field errors. */
bool contact_request_check(const json_t *body, long long now_ms, contact_request *r,
                           crm_error *err);

#endif

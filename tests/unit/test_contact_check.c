/*
 * test_contact_check.c — contact_allowed (lib/treatments/check.c) over
 * facts made by hand: consent, caps at their edges and period boundary,
 * which policies apply (channel, purpose, rule), quiet hours with and
 * without midnight inside, and every refusal listed. Each expected value
 * is worked out in the comment beside it; no database. Then
 * contact_facts_load against PostgreSQL: what its one statement reads.
 * And a contact request's occurred_at at the future tolerance's edge.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "suites.h"
#include "support.h"
#include "touchpoints.h"
#include "treatments/internal.h"

#define H 3600000LL
/* 2017-01-15T08:00:00Z; only differences from it matter here. */
#define NOW 1484467200000LL

static contact_policy policies[8];
static contact_consent consents[8];
static contact_event events[16];
static int local_min[8];
static policy_set ps;
static contact_facts f;
static json_t *reasons;

static void reset(void)
{
    memset(policies, 0, sizeof policies);
    memset(consents, 0, sizeof consents);
    memset(events, 0, sizeof events);
    for (int i = 0; i < 8; i++)
        local_min[i] = -1;
    ps = (policy_set){.p = policies, .n = 0};
    f = (contact_facts){.customer_id = 1,
                        .exists = true,
                        .active = true,
                        .consents = consents,
                        .events = events,
                        .local_min = local_min};
    json_decref(reasons);
    reasons = json_array();
}

static void teardown(void)
{
    json_decref(reasons);
    reasons = NULL;
}

static void consent(const char *channel, const char *purpose, const char *status, long long id)
{
    contact_consent *c = &consents[f.nconsents++];
    snprintf(c->channel, sizeof c->channel, "%s", channel);
    snprintf(c->purpose, sizeof c->purpose, "%s", purpose);
    snprintf(c->status, sizeof c->status, "%s", status);
    c->id = id;
}

/* A touchpoint (rule 0) or an allowed contact of rule, ago_ms before NOW. */
static void event(long long ago_ms, const char *tp_channel, const char *purpose, long long rule)
{
    contact_event *e = &events[f.nevents++];
    e->at_ms = NOW - ago_ms;
    snprintf(e->channel, sizeof e->channel, "%s", tp_channel);
    snprintf(e->purpose, sizeof e->purpose, "%s", purpose);
    e->rule_id = rule;
}

static contact_policy *cap_policy(long long id, const char *channel, const char *purpose,
                                  long long rule, int max, int hours)
{
    contact_policy *p = &policies[ps.n++];
    p->id = id;
    snprintf(p->name, sizeof p->name, "policy %lld", id);
    snprintf(p->channel, sizeof p->channel, "%s", channel);
    snprintf(p->purpose, sizeof p->purpose, "%s", purpose);
    p->rule_id = rule;
    p->max_contacts = max;
    p->period_hours = hours;
    p->quiet_from_min = p->quiet_until_min = -1;
    if (max > 0 && hours > ps.max_period_hours)
        ps.max_period_hours = hours;
    return p;
}

/* A quiet-hours policy for every contact; local is the local minute now. */
static void quiet_policy(long long id, int from, int until, int local)
{
    contact_policy *p = cap_policy(id, "", "", 0, 0, 0);
    p->quiet_from_min = from;
    p->quiet_until_min = until;
    snprintf(p->time_zone, sizeof p->time_zone, "Europe/Rome");
    local_min[ps.n - 1] = local;
}

static const char *reason_code(size_t i)
{
    return json_string_value(json_object_get(json_array_get(reasons, i), "code"));
}

static long long reason_int(size_t i, const char *member)
{
    return json_integer_value(json_object_get(json_array_get(reasons, i), member));
}

static bool allowed(const char *channel, const char *purpose, long long rule)
{
    json_array_clear(reasons);
    return contact_allowed(&ps, &f, channel, purpose, rule, NOW, reasons);
}

START_TEST(granted_consent_and_no_policy_allows)
{
    reset();
    consent("email", "marketing", "granted", 1);
    ck_assert(allowed("email", "marketing", 0));
    ck_assert_int_eq(json_array_size(reasons), 0);
}
END_TEST

START_TEST(inactive_customer_is_refused_with_not_active)
{
    reset();
    consent("email", "marketing", "granted", 1);
    f.active = false;
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_int_eq(json_array_size(reasons), 1);
    ck_assert_str_eq(reason_code(0), "not_active");
}
END_TEST

START_TEST(no_decision_is_no_consent)
{
    reset();
    consent("email", "marketing", "granted", 1); /* another channel's consent counts not */
    ck_assert(!allowed("sms", "marketing", 0));
    ck_assert_int_eq(json_array_size(reasons), 1);
    ck_assert_str_eq(reason_code(0), "no_consent");
    ck_assert(json_is_null(json_object_get(json_array_get(reasons, 0), "consent_id")));
    /* the same channel for another purpose: no decision either */
    ck_assert(!allowed("email", "service", 0));
    ck_assert_str_eq(reason_code(0), "no_consent");
}
END_TEST

START_TEST(revoked_latest_decision_is_consent_revoked_naming_it)
{
    reset();
    consent("email", "marketing", "revoked", 42);
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_int_eq(json_array_size(reasons), 1);
    ck_assert_str_eq(reason_code(0), "consent_revoked");
    ck_assert_int_eq(reason_int(0, "consent_id"), 42);
}
END_TEST

START_TEST(cap_refuses_when_count_equals_max_and_allows_at_max_minus_one)
{
    reset();
    consent("email", "marketing", "granted", 1);
    cap_policy(7, "email", "", 0, 2, 24);
    event(1 * H, "email", "marketing", 0);
    ck_assert(allowed("email", "marketing", 0));  /* 1 contact < 2 */
    event(2 * H, "email", "", 0);                 /* no purpose: counts for a policy without one */
    ck_assert(!allowed("email", "marketing", 0)); /* 2 contacts = 2 */
    ck_assert_int_eq(json_array_size(reasons), 1);
    ck_assert_str_eq(reason_code(0), "cap_reached");
    ck_assert_int_eq(reason_int(0, "policy_id"), 7);
    ck_assert_int_eq(reason_int(0, "limit"), 2);
    ck_assert_int_eq(reason_int(0, "period_hours"), 24);
    ck_assert_int_eq(reason_int(0, "count"), 2);
}
END_TEST

START_TEST(an_event_exactly_one_period_old_no_longer_counts)
{
    reset();
    consent("email", "marketing", "granted", 1);
    cap_policy(1, "", "", 0, 1, 24);
    event(24 * H, "email", "marketing", 0); /* at NOW - 24 h: outside (NOW - 24 h, NOW] */
    ck_assert(allowed("email", "marketing", 0));
    events[0].at_ms = NOW - 24 * H + 1; /* one millisecond younger: inside */
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_int_eq(reason_int(0, "count"), 1);
}
END_TEST

START_TEST(a_channel_cap_counts_its_touchpoint_channel_only)
{
    reset();
    consent("email", "marketing", "granted", 1);
    consent("sms", "marketing", "granted", 2);
    consent("push", "marketing", "granted", 3);
    consent("in_app", "marketing", "granted", 4);
    cap_policy(1, "email", "", 0, 1, 24);
    cap_policy(2, "push", "", 0, 1, 24);
    event(1 * H, "sms", "marketing", 0);
    ck_assert(allowed("email", "marketing", 0)); /* the sms touchpoint: not email's */
    ck_assert(allowed("sms", "marketing", 0));   /* no policy for sms */
    event(1 * H, "mobile_app", "marketing", 0);
    /* push contacts are recorded on mobile_app: 1 = 1 for policy 2 */
    ck_assert(!allowed("push", "marketing", 0));
    ck_assert_int_eq(reason_int(0, "policy_id"), 2);
    /* policy 2 is for push alone: an in_app contact is not its business */
    ck_assert(allowed("in_app", "marketing", 0));
}
END_TEST

START_TEST(a_purpose_cap_counts_that_purpose_only)
{
    reset();
    consent("email", "marketing", "granted", 1);
    consent("email", "service", "granted", 2);
    cap_policy(3, "", "marketing", 0, 1, 24);
    event(1 * H, "email", "service", 0);
    event(2 * H, "email", "", 0);                /* no purpose: not marketing */
    ck_assert(allowed("email", "marketing", 0)); /* 0 marketing contacts < 1 */
    event(3 * H, "web", "marketing", 0);         /* any channel, marketing */
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_int_eq(reason_int(0, "count"), 1);
    ck_assert(allowed("email", "service", 0)); /* policy 3 does not apply to service */
}
END_TEST

START_TEST(a_rule_cap_counts_that_rules_allowed_contacts_only)
{
    reset();
    consent("email", "marketing", "granted", 1);
    cap_policy(4, "", "", 5, 1, 24);
    event(1 * H, "email", "marketing", 0); /* a touchpoint: a rule cap counts it not */
    event(1 * H, "email", "marketing", 6); /* rule 6's contact */
    ck_assert(allowed("email", "marketing", 5));
    event(2 * H, "email", "marketing", 5);
    ck_assert(!allowed("email", "marketing", 5)); /* 1 contact of rule 5 = 1 */
    ck_assert_int_eq(reason_int(0, "count"), 1);
    ck_assert(allowed("email", "marketing", 6)); /* the policy is rule 5's alone */
    ck_assert(allowed("email", "marketing", 0)); /* nor does it apply without a rule */
}
END_TEST

START_TEST(a_global_cap_counts_touchpoints_not_rule_contacts)
{
    reset();
    consent("email", "marketing", "granted", 1);
    cap_policy(1, "", "", 0, 2, 24);
    event(1 * H, "email", "marketing", 5); /* the log's row; its touchpoint follows */
    event(1 * H, "email", "marketing", 0);
    ck_assert(allowed("email", "marketing", 5)); /* one touchpoint < 2 */
    event(5 * H, "phone", "service", 0);
    ck_assert(!allowed("email", "marketing", 5)); /* two touchpoints = 2 */
    ck_assert_int_eq(reason_int(0, "count"), 2);
}
END_TEST

START_TEST(quiet_hours_within_a_day)
{
    reset();
    consent("email", "marketing", "granted", 1);
    quiet_policy(9, 12 * 60, 14 * 60, 12 * 60); /* [12:00, 14:00) at 12:00 */
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_str_eq(reason_code(0), "quiet_hours");
    ck_assert_int_eq(reason_int(0, "policy_id"), 9);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(reasons, 0), "from")),
                     "12:00");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(reasons, 0), "until")),
                     "14:00");
    local_min[0] = 13 * 60 + 59;
    ck_assert(!allowed("email", "marketing", 0));
    local_min[0] = 14 * 60; /* until is not quiet */
    ck_assert(allowed("email", "marketing", 0));
    local_min[0] = 11 * 60 + 59;
    ck_assert(allowed("email", "marketing", 0));
}
END_TEST

START_TEST(quiet_hours_across_midnight)
{
    reset();
    consent("email", "marketing", "granted", 1);
    quiet_policy(9, 22 * 60, 7 * 60, 23 * 60); /* [22:00, 24:00) and [00:00, 07:00) */
    ck_assert(!allowed("email", "marketing", 0));
    local_min[0] = 0;
    ck_assert(!allowed("email", "marketing", 0));
    local_min[0] = 6 * 60 + 59;
    ck_assert(!allowed("email", "marketing", 0));
    local_min[0] = 7 * 60;
    ck_assert(allowed("email", "marketing", 0));
    local_min[0] = 21 * 60 + 59;
    ck_assert(allowed("email", "marketing", 0));
    local_min[0] = 22 * 60;
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(reasons, 0), "time_zone")),
                     "Europe/Rome");
}
END_TEST

START_TEST(an_unknown_local_time_is_quiet)
{
    reset();
    consent("email", "marketing", "granted", 1);
    quiet_policy(9, 1 * 60, 2 * 60, -1);
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_str_eq(reason_code(0), "quiet_hours");
}
END_TEST

START_TEST(most_restrictive_wins_and_every_refusal_is_listed)
{
    reset();
    consent("email", "marketing", "revoked", 11);
    cap_policy(1, "", "", 0, 10, 24);               /* 3 touchpoints < 10: allows */
    cap_policy(2, "email", "", 0, 3, 168);          /* 3 email touchpoints in a week = 3: refuses */
    quiet_policy(3, 22 * 60, 7 * 60, 23 * 60 + 30); /* 23:30 is quiet: refuses */
    cap_policy(4, "sms", "", 0, 1, 24);             /* sms only: does not apply */
    event(1 * H, "email", "marketing", 0);
    event(30 * H, "email", "marketing", 0); /* older than 24 h: policy 1 counts it not */
    event(100 * H, "email", "marketing", 0);
    event(2 * H, "sms", "marketing", 0);
    event(3 * H, "sms", "marketing", 0);
    /* policy 1 counts 1 email + 2 sms = 3 within 24 h; policy 2 counts the 3 email */
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_int_eq(json_array_size(reasons), 3);
    ck_assert_str_eq(reason_code(0), "consent_revoked");
    ck_assert_int_eq(reason_int(0, "consent_id"), 11);
    ck_assert_str_eq(reason_code(1), "cap_reached");
    ck_assert_int_eq(reason_int(1, "policy_id"), 2);
    ck_assert_int_eq(reason_int(1, "count"), 3);
    ck_assert_str_eq(reason_code(2), "quiet_hours");
    ck_assert_int_eq(reason_int(2, "policy_id"), 3);
    /* with consent granted and at 08:00 local, policy 2 alone still refuses */
    snprintf(consents[0].status, sizeof consents[0].status, "granted");
    local_min[2] = 8 * 60;
    ck_assert(!allowed("email", "marketing", 0));
    ck_assert_int_eq(json_array_size(reasons), 1);
    ck_assert_int_eq(reason_int(0, "policy_id"), 2);
}
END_TEST

START_TEST(touchpoint_channels_of_consent_channels)
{
    ck_assert_str_eq(contact_touchpoint_channel("email"), "email");
    ck_assert_str_eq(contact_touchpoint_channel("sms"), "sms");
    ck_assert_str_eq(contact_touchpoint_channel("phone"), "phone");
    ck_assert_str_eq(contact_touchpoint_channel("mail"), "mail");
    ck_assert_str_eq(contact_touchpoint_channel("web"), "web");
    ck_assert_str_eq(contact_touchpoint_channel("push"), "mobile_app");
    ck_assert_str_eq(contact_touchpoint_channel("in_app"), "mobile_app");
    ck_assert_ptr_null(contact_touchpoint_channel("fax"));
    ck_assert_ptr_null(contact_touchpoint_channel(NULL));
}
END_TEST

/* ---- loading the facts --------------------------------------------------------- */

static PGconn *direct;

static void setup_db(void)
{
    direct = unit_db_start(1);
}

static void teardown_db(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

/* Runs sql with the customer id ($1) and now ($2, epoch ms) as parameters. */
static void sql_at(const char *sql, long long customer, long long now_ms)
{
    char id[24], now[24];
    snprintf(id, sizeof id, "%lld", customer);
    snprintf(now, sizeof now, "%lld", now_ms);
    const char *params[] = {id, now};
    PQclear(unit_sql(direct, sql, 2, params));
}

#define AT(hours_ago)                                                                              \
    "'epoch'::timestamptz + $2::bigint * interval '1 ms' - interval '" hours_ago "'"

START_TEST(one_statement_loads_status_latest_consents_outbound_events_and_local_times)
{
    long long now = crm_wall_ms();
    long long c = unit_sql_long(direct,
                                "INSERT INTO customers (first_name) VALUES ('Facts')"
                                " RETURNING id",
                                0, NULL);
    char src[64];
    unit_unique(src, sizeof src, "facts");
    /* email/marketing: granted, then revoked (the latest); sms/marketing granted */
    sql_at(
        "INSERT INTO customer_consents (customer_id, channel, purpose, status, source,"
        " captured_at) VALUES ($1, 'email', 'marketing', 'granted', 't', " AT(
            "2 hours") "),"
                       " ($1, 'email', 'marketing', 'revoked', 't', " AT(
                           "1 hour") "),"
                                     " ($1, 'sms', 'marketing', 'granted', 't', " AT("5 hours") ")",
        c, now);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
             " event_id, purpose) VALUES"
             " ($1, 'email', 'email_sent', 'outbound', " AT(
                 "1 hour") ", '%s', 'a', 'marketing'),"
                           " ($1, 'web', 'other', 'outbound', " AT(
                               "2 hours") ", '%s', 'b', NULL),"
                                          " ($1, 'email', 'email_opened', 'inbound', " AT(
                                              "1 hour") ", '%s', 'c', NULL),"
                                                        " ($1, 'sms', 'sms_sent', 'outbound', " AT(
                                                            "30 hours") ", '%s', 'd', NULL)",
             src, src, src, src);
    sql_at(sql, c, now);
    long long rule = unit_sql_long(direct,
                                   "INSERT INTO treatment_rules (name, condition, position)"
                                   " VALUES ('facts ' || gen_random_uuid(), '{}', 1)"
                                   " RETURNING id",
                                   0, NULL);
    snprintf(sql, sizeof sql,
             "WITH t AS (INSERT INTO touchpoints (customer_id, channel, type, direction,"
             " occurred_at, source, event_id, purpose) VALUES ($1, 'mobile_app', 'contact',"
             " 'outbound', " AT("3 hours") ", '%s', 'e', 'service') RETURNING id)"
                                           " INSERT INTO contacts (customer_id, channel, purpose, "
                                           "rule_id, rule_version, source,"
                                           " event_id, decided_at, allowed, touchpoint_id) SELECT "
                                           "$1, 'push', 'service', %lld, 1,"
                                           " '%s', 'e', " AT("3 hours") ", true, id FROM t",
             src, rule, src);
    sql_at(sql, c, now);

    contact_policy p[3];
    memset(p, 0, sizeof p);
    for (int i = 0; i < 3; i++)
        p[i].quiet_from_min = p[i].quiet_until_min = -1;
    p[0].max_contacts = 1;
    p[0].period_hours = 24;
    snprintf(p[1].time_zone, sizeof p[1].time_zone, "UTC");
    snprintf(p[2].time_zone, sizeof p[2].time_zone, "Asia/Kolkata"); /* UTC+05:30, no DST */
    policy_set set = {.p = p, .n = 3, .max_period_hours = 24};
    contact_facts lf;
    crm_error err = CRM_ERROR_INIT;
    crm_conn *conn = crm_db_acquire(&err);
    ck_assert_ptr_nonnull(conn);
    ck_assert_msg(contact_facts_load(conn, &set, c, now, NULL, &lf, &err), "%s", err.detail);
    ck_assert(lf.exists && lf.active);
    ck_assert_int_eq(lf.nconsents, 2); /* the latest per (channel, purpose) */
    for (int i = 0; i < lf.nconsents; i++)
        ck_assert_str_eq(lf.consents[i].status,
                         strcmp(lf.consents[i].channel, "email") == 0 ? "revoked" : "granted");
    /* outbound within 24 h: the email (1 h), the web (2 h), the contact's
     * touchpoint (3 h); and the log's allowed contact of the rule. Not the
     * inbound one, nor the sms of 30 h ago. */
    ck_assert_int_eq(lf.nevents, 4);
    int rule_events = 0, marketing = 0, no_purpose = 0;
    for (int i = 0; i < lf.nevents; i++) {
        const contact_event *e = &lf.events[i];
        ck_assert(e->at_ms > now - 24 * H && e->at_ms <= now);
        if (e->rule_id != 0) {
            rule_events++;
            ck_assert_int_eq(e->rule_id, rule);
            ck_assert_str_eq(e->channel, "mobile_app"); /* its touchpoint's */
            ck_assert_str_eq(e->purpose, "service");
            ck_assert_int_eq(e->at_ms, now - 3 * H);
        }
        marketing += strcmp(e->purpose, "marketing") == 0;
        no_purpose += e->purpose[0] == '\0';
    }
    ck_assert_int_eq(rule_events, 1);
    ck_assert_int_eq(marketing, 1);
    ck_assert_int_eq(no_purpose, 1);
    int utc = (int)((now / 60000) % 1440);
    ck_assert_int_eq(lf.local_min[0], -1);
    ck_assert_int_eq(lf.local_min[1], utc);
    ck_assert_int_eq(lf.local_min[2], (utc + 330) % 1440);
    contact_facts_free(&lf);

    /* what the decision reads beside: the decision stored for the event,
     * the live rule and the stamp */
    char rule_text[24];
    snprintf(rule_text, sizeof rule_text, "%lld", rule);
    contact_extras x = {.source = src, .event_id = "e", .rule_id = rule};
    ck_assert_msg(contact_facts_load(conn, &set, c, now, &x, &lf, &err), "%s", err.detail);
    ck_assert(x.decided_id > 0);
    ck_assert_int_eq(x.decided_customer, c);
    ck_assert(x.rule_found && !x.has_offer);
    ck_assert_int_eq(x.rule_version, 1);
    ck_assert_int_eq(x.stamp, unit_sql_long(direct, "SELECT stamp FROM treatment_config", 0, NULL));
    contact_facts_free(&lf);
    unit_sql_long(
        direct,
        "UPDATE treatment_rules SET offer_code = 'OFF-9', version = 2 WHERE id = $1 RETURNING id",
        1, (const char *[]){rule_text});
    x = (contact_extras){.source = src, .event_id = "e", .rule_id = rule};
    ck_assert(contact_facts_load(conn, &set, c, now, &x, &lf, &err));
    ck_assert(x.rule_found && x.has_offer);
    ck_assert_str_eq(x.offer_code, "OFF-9");
    ck_assert_int_eq(x.rule_version, 2);
    contact_facts_free(&lf);
    unit_sql_long(direct,
                  "UPDATE treatment_rules SET deleted_at = now() WHERE id = $1 RETURNING id", 1,
                  (const char *[]){rule_text});
    x = (contact_extras){.source = src, .event_id = "another", .rule_id = rule};
    ck_assert(contact_facts_load(conn, &set, c, now, &x, &lf, &err));
    ck_assert(x.decided_id == 0 && !x.rule_found); /* no such event; a deleted rule */
    contact_facts_free(&lf);

    /* an unknown customer: no status row */
    ck_assert(contact_facts_load(conn, &set, 999999999999LL, now, NULL, &lf, &err));
    ck_assert(!lf.exists && !lf.active);
    ck_assert_int_eq(lf.nconsents + lf.nevents, 0);
    contact_facts_free(&lf);
    crm_db_release(conn);
}
END_TEST

/* A contact request whose occurred_at is "at", checked at NOW: the error
 * fields named, as one string ("" when accepted). */
static void check_occurred_at(const char *at, char *fields, size_t size)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"source\": \"s\","
             " \"event_id\": \"e\", \"occurred_at\": \"%s\"}",
             at);
    json_t *doc = json_loads(body, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    contact_request r;
    crm_error err = CRM_ERROR_INIT;
    bool ok = contact_request_check(doc, NOW, &r, &err);
    fields[0] = '\0';
    size_t i;
    json_t *e;
    json_array_foreach(err.errors, i, e)
    {
        strncat(fields, json_string_value(json_object_get(e, "field")), size - strlen(fields) - 1);
    }
    ck_assert(ok == (fields[0] == '\0'));
    ck_assert_int_eq(err.code, ok ? CRM_OK : CRM_E_INVALID);
    crm_error_clear(&err);
    json_decref(doc);
}

START_TEST(a_request_may_lie_up_to_the_touchpoints_future_tolerance_ahead)
{
    char fields[128];
    crm_touchpoint_set_future_tolerance(60);
    /* NOW is 2017-01-15T08:00:00Z: 60 s ahead is the last instant accepted */
    check_occurred_at("2017-01-15T08:01:00Z", fields, sizeof fields);
    ck_assert_str_eq(fields, "");
    check_occurred_at("2017-01-15T08:01:00.001Z", fields, sizeof fields);
    ck_assert_str_eq(fields, "/occurred_at");
    /* the same instant in another offset: 09:01:00.001+01:00 */
    check_occurred_at("2017-01-15T09:01:00.001+01:00", fields, sizeof fields);
    ck_assert_str_eq(fields, "/occurred_at");
    check_occurred_at("1999-12-31T23:59:59Z", fields, sizeof fields);
    ck_assert_str_eq(fields, "");
    crm_touchpoint_set_future_tolerance(0);
    check_occurred_at("2017-01-15T08:00:00Z", fields, sizeof fields);
    ck_assert_str_eq(fields, "");
    check_occurred_at("2017-01-15T08:00:00.001Z", fields, sizeof fields);
    ck_assert_str_eq(fields, "/occurred_at");
    crm_touchpoint_set_future_tolerance(300);
    ck_assert_int_eq(crm_touchpoint_future_tolerance(), 300);
}
END_TEST

/* The treatments' one statement (lib/treatments/evaluate.c) is a statement
 * of its own: not one of the dynamic ones, whose table a long-lived
 * process fills with the shapes of its lists and searches (when it was,
 * a crmd that had served many searches answered 500), and a heavy one. An
 * unknown customer is a 404. */
START_TEST(the_treatments_read_has_a_statement_of_its_own)
{
    crm_query q;
    crm_treatments_call *call = NULL;
    bool need_worker = false;
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(crm_treatments_begin(999999999, 1, true, &q, &call, &need_worker, &err), "%s",
                  err.detail);
    ck_assert_str_eq(q.stmt->name, "treatments_everything");
    /* it costs a backend about ten point reads: spread over the database
     * loop's connections as a page is, not queued behind point reads */
    ck_assert(q.stmt->page && q.stmt->read_only);
    PGresult *res = crm_db_run_query(&q, &err);
    ck_assert_msg(res != NULL, "%s", err.detail);
    size_t len = 0;
    char *text = crm_treatments_finish(call, res, &len, &need_worker, &err);
    ck_assert(text == NULL && !need_worker);
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    crm_error_clear(&err);
    PQclear(res);
    crm_treatments_call_free(call);
}
END_TEST

Suite *contact_check_suite(void)
{
    Suite *s = suite_create("contact_check");
    TCase *tc = tcase_create("decide");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, granted_consent_and_no_policy_allows);
    tcase_add_test(tc, inactive_customer_is_refused_with_not_active);
    tcase_add_test(tc, no_decision_is_no_consent);
    tcase_add_test(tc, revoked_latest_decision_is_consent_revoked_naming_it);
    tcase_add_test(tc, cap_refuses_when_count_equals_max_and_allows_at_max_minus_one);
    tcase_add_test(tc, an_event_exactly_one_period_old_no_longer_counts);
    tcase_add_test(tc, a_channel_cap_counts_its_touchpoint_channel_only);
    tcase_add_test(tc, a_purpose_cap_counts_that_purpose_only);
    tcase_add_test(tc, a_rule_cap_counts_that_rules_allowed_contacts_only);
    tcase_add_test(tc, a_global_cap_counts_touchpoints_not_rule_contacts);
    tcase_add_test(tc, quiet_hours_within_a_day);
    tcase_add_test(tc, quiet_hours_across_midnight);
    tcase_add_test(tc, an_unknown_local_time_is_quiet);
    tcase_add_test(tc, most_restrictive_wins_and_every_refusal_is_listed);
    tcase_add_test(tc, touchpoint_channels_of_consent_channels);
    tcase_add_test(tc, a_request_may_lie_up_to_the_touchpoints_future_tolerance_ahead);
    suite_add_tcase(s, tc);
    TCase *load = tcase_create("load");
    tcase_add_unchecked_fixture(load, setup_db, teardown_db);
    tcase_add_test(load,
                   one_statement_loads_status_latest_consents_outbound_events_and_local_times);
    tcase_add_test(load, the_treatments_read_has_a_statement_of_its_own);
    suite_add_tcase(s, load);
    return s;
}

/*
 * treatments/contacts.c — the contact decision (POST
 * /v1/customers/{id}/contacts, treatments.h): in one transaction under the
 * customer's row lock, the live policies and the customer's facts are read,
 * contact_allowed decides, an allowed contact is recorded as an outbound
 * touchpoint (the segments refreshed for it, as for any single touchpoint)
 * and every decision is logged in contacts. The sender's (source, event_id)
 * makes it idempotent: the same event again answers the first decision.
 *
 * Two decisions for one customer at once wait for each other on the row
 * lock, and the second reads what the first committed: a cap of one lets
 * exactly one of them through.
 */
#include "treatments.h"
#include "treatments/internal.h"
#include "clock.h"
#include "consents.h"
#include "customers.h"
#include "customers/internal.h"
#include "json.h"
#include "segment_store.h"
#include "touchpoints.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *text_member(const json_t *body, const char *name, size_t max, bool required,
                               crm_error *err)
{
    json_t *v = json_object_get(body, name);
    char field[32], msg[64];
    snprintf(field, sizeof field, "/%s", name);
    if (v == NULL || json_is_null(v)) {
        if (required)
            crm_error_add_field(err, field, "is required");
        return NULL;
    }
    size_t chars =
        json_is_string(v) ? crm_utf8_chars(json_string_value(v), json_string_length(v)) : 0;
    if (!json_is_string(v) || chars < 1 || chars > max) {
        snprintf(msg, sizeof msg, "must be a string of 1 to %zu characters", max);
        crm_error_add_field(err, field, msg);
        return NULL;
    }
    return json_string_value(v);
}

bool contact_request_check(const json_t *body, long long now_ms, contact_request *r, crm_error *err)
{
    static const char *const allowed[] = {"channel", "purpose",  "rule_id",     "campaign_id",
                                          "source",  "event_id", "occurred_at", NULL};
    memset(r, 0, sizeof *r);
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    crm_json_only_fields((json_t *)body, allowed, err);
    crm_json_check_no_nul((json_t *)body, "", err);
    r->channel = text_member(body, "channel", 16, true, err);
    if (r->channel != NULL && !crm_consent_channel_known(r->channel)) {
        crm_error_add_field(err, "/channel", "not a known channel (see the API documentation)");
        r->channel = NULL;
    }
    r->purpose = text_member(body, "purpose", 16, true, err);
    if (r->purpose != NULL && !crm_consent_purpose_known(r->purpose)) {
        crm_error_add_field(err, "/purpose", "not a known purpose (see the API documentation)");
        r->purpose = NULL;
    }
    json_t *rule = json_object_get(body, "rule_id");
    if (rule != NULL && !json_is_null(rule)) {
        if (!json_is_integer(rule) || json_integer_value(rule) < 1)
            crm_error_add_field(err, "/rule_id", "must be a treatment rule's id");
        else
            r->rule_id = json_integer_value(rule);
    }
    r->campaign_id = text_member(body, "campaign_id", 100, false, err);
    if (rule != NULL && !json_is_null(rule) && json_object_get(body, "campaign_id") != NULL &&
        !json_is_null(json_object_get(body, "campaign_id")))
        crm_error_add_field(err, "/campaign_id", "a contact names a rule or a campaign, not both");
    r->source = text_member(body, "source", 100, true, err);
    if (crm_touchpoint_source_reserved(r->source)) {
        crm_error_add_field(err, "/source", "sources beginning \"crmd:\" are crmd's own");
        r->source = NULL;
    }
    r->event_id = text_member(body, "event_id", 200, true, err);
    const char *when = text_member(body, "occurred_at", 64, false, err);
    long long ms;
    if (when != NULL && !crm_rfc3339_epoch_ms(when, &ms))
        crm_error_add_field(err, "/occurred_at",
                            "must be an RFC 3339 date-time such as 2026-11-23T10:15:00Z");
    else if (when != NULL && !crm_rfc3339_to_utc(when, r->occurred_at, sizeof r->occurred_at))
        crm_error_add_field(err, "/occurred_at",
                            "must lie in the years 0001 to 9999 once moved to UTC");
    else if (when != NULL && ms > now_ms + crm_touchpoint_future_tolerance() * 1000LL)
        crm_error_add_field(err, "/occurred_at", "lies too far in the future");
    if (err->errors != NULL || err->code != CRM_OK)
        return crm_error_set(err, CRM_E_INVALID, "the contact request is invalid");
    return true;
}

/* ---- the log --------------------------------------------------------------------- */

#define CONTACT_COLUMNS                                                                            \
    "k.id, k.customer_id, k.channel, k.purpose, k.allowed, k.reasons::text, k.rule_id,"            \
    " k.rule_version, k.touchpoint_id, " CRM_SQL_TS("k.decided_at") ", k.campaign_id, k.source,"   \
                                                                    " k.event_id"

static json_t *int_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_integer(atoll(PQgetvalue(res, r, c)));
}

static json_t *text_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_string(PQgetvalue(res, r, c));
}

/* The decision of row r; *allowed from it. Caller owns the result. */
static json_t *contact_from_row(const PGresult *res, int r, bool *allowed)
{
    *allowed = PQgetvalue(res, r, 4)[0] == 't';
    json_t *reasons = crm_json_load_stored(PQgetvalue(res, r, 5));
    return json_pack("{s:I, s:I, s:s, s:s, s:b, s:o, s:o, s:o, s:o, s:s, s:o, s:s, s:s}", "id",
                     (json_int_t)atoll(PQgetvalue(res, r, 0)), "customer_id",
                     (json_int_t)atoll(PQgetvalue(res, r, 1)), "channel", PQgetvalue(res, r, 2),
                     "purpose", PQgetvalue(res, r, 3), "allowed", *allowed, "reasons",
                     reasons ? reasons : json_array(), "rule_id", int_or_null(res, r, 6),
                     "rule_version", int_or_null(res, r, 7), "touchpoint_id",
                     int_or_null(res, r, 8), "decided_at", PQgetvalue(res, r, 9), "campaign_id",
                     text_or_null(res, r, 10), "source", PQgetvalue(res, r, 11), "event_id",
                     PQgetvalue(res, r, 12));
}

static crm_stmt find_decision =
    CRM_STMT("contact_find_decision",
             "SELECT " CONTACT_COLUMNS " FROM contacts k WHERE k.source = $1 AND k.event_id = $2");

/* The decision stored for the request's event: 1 found (*doc), 0 none, -1
 * failed (err). The event decided for another customer is a conflict. */
static int stored_decision(crm_conn *c, long long customer_id, const contact_request *r,
                           json_t **doc, bool *allowed, crm_error *err)
{
    const char *params[] = {r->source, r->event_id};
    PGresult *res = crm_db_exec(c, &find_decision, 2, params, err);
    if (res == NULL)
        return -1;
    int found = PQntuples(res) == 1;
    if (found && atoll(PQgetvalue(res, 0, 1)) != customer_id) {
        PQclear(res);
        crm_error_set(err, CRM_E_CONFLICT,
                      "this source and event_id were decided for another customer");
        return -1;
    }
    if (found && (*doc = contact_from_row(res, 0, allowed)) == NULL) {
        PQclear(res);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return -1;
    }
    PQclear(res);
    return found;
}

/* ---- the decision ---------------------------------------------------------------- */

static crm_stmt lock_customer = CRM_STMT(
    "contact_lock_customer", "SELECT status FROM customers WHERE id = $1 FOR NO KEY UPDATE");

/* An allowed contact: its outbound touchpoint and its row of the log, in
 * one statement; nothing when the event is stored as a touchpoint already
 * (the caller says so). The touchpoint's occurred_at (epoch us) last. */
static crm_stmt insert_allowed = CRM_STMT(
    "contact_insert_allowed",
    "WITH t AS (INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at,"
    "  source, event_id, campaign_id, purpose, offer_code)"
    " VALUES ($1, $2, $3, 'outbound', coalesce($4::timestamptz,"
    "  'epoch'::timestamptz + $5::bigint * interval '1 millisecond'), $6, $7, $8, $9, $10)"
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, occurred_at),"
    " k AS (INSERT INTO contacts (customer_id, channel, purpose, rule_id, rule_version,"
    "  campaign_id, source, event_id, decided_at, allowed, reasons, touchpoint_id)"
    " SELECT $1, $11, $9, $12::bigint, $13::int, $8, $6, $7,"
    "  'epoch'::timestamptz + $5::bigint * interval '1 millisecond', true, '[]', t.id FROM t"
    " RETURNING *)"
    " SELECT " CONTACT_COLUMNS ", (extract(epoch FROM t.occurred_at) * 1000000)::bigint"
    " FROM k JOIN t ON t.id = k.touchpoint_id");

static crm_stmt insert_decision = CRM_STMT(
    "contact_insert_decision",
    "INSERT INTO contacts AS k (customer_id, channel, purpose, rule_id, rule_version, campaign_id,"
    " source, event_id, decided_at, allowed, reasons, touchpoint_id)"
    " VALUES ($1, $2, $3, $4::bigint, $5::int, $6, $7, $8,"
    "  'epoch'::timestamptz + $9::bigint * interval '1 millisecond', $10::bool, $11::jsonb,"
    "  $12::bigint) RETURNING " CONTACT_COLUMNS);

typedef struct decision {
    long long customer_id, now_ms;
    const contact_request *r;
    contact_extras x; /* read with the facts: the stored decision, the rule, the stamp */
} decision;

/* Locks the customer; *active from its status. */
static bool lock_the_customer(crm_conn *c, long long customer_id, bool *active, crm_error *err)
{
    crm_query q;
    crm_query_init(&q, &lock_customer);
    crm_query_add_int(&q, customer_id);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    if (res == NULL)
        return false;
    bool found = PQntuples(res) == 1;
    *active = found && strcmp(PQgetvalue(res, 0, 0), "active") == 0;
    PQclear(res);
    return found || crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
}

/* The facts under the lock, judged by the policies this process keeps
 * (*k, a reference): the stamp read with them tells whether those are
 * current; when they are not, the config of that stamp is taken and the
 * facts read again (its time zones are parameters). */
static bool read_facts(crm_conn *c, decision *d, treatments_config **k, contact_facts *f,
                       crm_error *err)
{
    d->x = (contact_extras){
        .source = d->r->source, .event_id = d->r->event_id, .rule_id = d->r->rule_id};
    *k = treatments_config_cached();
    if (*k == NULL && (*k = treatments_config_of(c, -1, err)) == NULL)
        return false;
    for (int attempt = 0;; attempt++) {
        if (!contact_facts_load(c, treatments_config_policies(*k), d->customer_id, d->now_ms, &d->x,
                                f, err))
            return false;
        if (d->x.stamp == treatments_config_stamp(*k) || attempt == 1)
            break;
        contact_facts_free(f);
        treatments_config_release(*k);
        if ((*k = treatments_config_of(c, d->x.stamp, err)) == NULL)
            return false;
    }
    if (d->r->rule_id != 0 && !d->x.rule_found)
        return crm_error_set(err, CRM_E_NOT_FOUND, "no treatment rule with this id");
    return true;
}

/* Records the allowed contact (its touchpoint and its row of the log) and
 * refreshes the segments for the touchpoint, as a single touchpoint does
 * (touchpoints/batch.c). The stored decision; NULL with err. */
static json_t *record_allowed(crm_conn *c, const decision *d, bool *stored_allowed, crm_error *err)
{
    const contact_request *r = d->r;
    const char *type = r->campaign_id ? "campaign_contact" : "contact";
    const char *channel = contact_touchpoint_channel(r->channel);
    const char *offer = d->x.has_offer ? d->x.offer_code : NULL;
    crm_query q;
    crm_query_init(&q, &insert_allowed);
    crm_query_add_int(&q, d->customer_id);
    crm_query_add(&q, channel);
    crm_query_add(&q, type);
    crm_query_add(&q, r->occurred_at[0] ? r->occurred_at : NULL);
    crm_query_add_int(&q, d->now_ms);
    crm_query_add(&q, r->source);
    crm_query_add(&q, r->event_id);
    crm_query_add(&q, r->campaign_id);
    crm_query_add(&q, r->purpose);
    crm_query_add(&q, offer);
    crm_query_add(&q, r->channel);
    if (r->rule_id) {
        crm_query_add_int(&q, r->rule_id);
        crm_query_add_int(&q, d->x.rule_version);
    } else {
        crm_query_add(&q, NULL);
        crm_query_add(&q, NULL);
    }
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    if (res == NULL)
        return NULL;
    if (PQntuples(res) != 1) {
        PQclear(res);
        crm_error_set(err, CRM_E_CONFLICT,
                      "a touchpoint with this source and event_id is stored already");
        return NULL;
    }
    long long touchpoint_id = atoll(PQgetvalue(res, 0, 8));
    long long occurred_us = atoll(PQgetvalue(res, 0, 13));
    json_t *doc = contact_from_row(res, 0, stored_allowed);
    PQclear(res);
    if (doc == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    crm_segment_touchpoint t = {.customer_id = d->customer_id,
                                .facts = {.type = type,
                                          .channel = channel,
                                          .campaign_id = r->campaign_id,
                                          .offer_code = offer,
                                          .skus = NULL,
                                          .nskus = 0,
                                          .occurred_us = occurred_us}};
    char ref[24];
    snprintf(ref, sizeof ref, "%lld", touchpoint_id);
    if (!crm_segments_refresh_touchpoints(c, &t, 1, NULL, 0, "touchpoint", ref, err)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Logs a refused contact with its reasons. The stored decision; NULL with
 * err. */
static json_t *log_refusal(crm_conn *c, const decision *d, const json_t *reasons,
                           bool *stored_allowed, crm_error *err)
{
    char *reasons_text = json_dumps(reasons, JSON_COMPACT);
    if (reasons_text == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    const contact_request *r = d->r;
    crm_query q;
    crm_query_init(&q, &insert_decision);
    crm_query_add_int(&q, d->customer_id);
    crm_query_add(&q, r->channel);
    crm_query_add(&q, r->purpose);
    if (r->rule_id) {
        crm_query_add_int(&q, r->rule_id);
        crm_query_add_int(&q, d->x.rule_version);
    } else {
        crm_query_add(&q, NULL);
        crm_query_add(&q, NULL);
    }
    crm_query_add(&q, r->campaign_id);
    crm_query_add(&q, r->source);
    crm_query_add(&q, r->event_id);
    crm_query_add_int(&q, d->now_ms);
    crm_query_add(&q, "false");
    crm_query_add(&q, reasons_text);
    crm_query_add(&q, NULL);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    free(reasons_text);
    if (res == NULL)
        return NULL;
    json_t *doc = contact_from_row(res, 0, stored_allowed);
    PQclear(res);
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return doc;
}

/* One attempt in one transaction on c: the lock, the facts (with the
 * stored decision, the rule and the stamp), then the decision's one
 * insert (and the segments' refresh for an allowed contact's touchpoint). */
static json_t *decide_on(crm_conn *c, long long customer_id, const contact_request *r,
                         bool *allowed, bool *replayed, bool *raced, crm_error *err)
{
    if (!crm_db_begin(c, err))
        return NULL;
    json_t *doc = NULL, *reasons = NULL;
    treatments_config *k = NULL;
    contact_facts f = {0};
    decision d = {.customer_id = customer_id, .r = r};
    bool active = false;
    bool ok = lock_the_customer(c, customer_id, &active, err);
    d.now_ms = crm_wall_ms(); /* after the lock: decisions in the order they lock */
    ok = ok && read_facts(c, &d, &k, &f, err);
    f.exists = ok; /* the lock found it */
    f.active = active;
    if (ok && d.x.decided_id != 0) {
        int found = stored_decision(c, customer_id, r, &doc, allowed, err);
        *replayed = found == 1;
        ok = found == 1;
        if (found == 0) /* it was there a moment ago, in this transaction */
            crm_error_set(err, CRM_E_INTERNAL, "the stored decision could not be read");
    } else if (ok) {
        reasons = json_array();
        ok = reasons != NULL || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        bool yes = ok && contact_allowed(treatments_config_policies(k), &f, r->channel, r->purpose,
                                         r->rule_id, d.now_ms, reasons);
        if (ok)
            doc = yes ? record_allowed(c, &d, allowed, err)
                      : log_refusal(c, &d, reasons, allowed, err);
        ok = ok && doc != NULL;
    }
    if (ok && !crm_db_commit(c, err))
        ok = false;
    if (!ok) {
        *raced = err->code == CRM_E_CONFLICT && strcmp(crm_db_sqlstate(c), "23505") == 0;
        crm_db_rollback(c);
        json_decref(doc);
        doc = NULL;
    }
    json_decref(reasons);
    contact_facts_free(&f);
    treatments_config_release(k);
    return doc;
}

json_t *crm_contact_decide(long long customer_id, const json_t *body, long long api_key_id,
                           bool *allowed, bool *replayed, crm_error *err)
{
    (void)api_key_id;
    *allowed = false;
    *replayed = false;
    contact_request r;
    if (!contact_request_check(body, crm_wall_ms(), &r, err))
        return NULL;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    bool raced = false;
    json_t *doc = decide_on(c, customer_id, &r, allowed, replayed, &raced, err);
    /* The same event for another customer at the same time: the second
     * insert failed on (source, event_id); once more, it finds the first. */
    if (doc == NULL && raced) {
        crm_error_clear(err);
        doc = decide_on(c, customer_id, &r, allowed, replayed, &raced, err);
    }
    crm_db_release(c);
    return doc;
}

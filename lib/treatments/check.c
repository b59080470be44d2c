/*
 * treatments/check.c — the contact check (treatments/internal.h): what it
 * reads of one customer, in one statement, and the decision over it in
 * plain C, shared by the contact decision and the customer's treatments.
 *
 * The rules (treatments.h): the customer is active; the latest consent
 * decision for (channel, purpose) is "granted"; and every policy that
 * applies allows the contact. A policy applies when its channel, purpose
 * and rule are each unset or the contact's. Its cap counts the events of
 * the last period_hours (one exactly period_hours old no longer counts):
 *   - without rule_id: outbound touchpoints (any source) on the policy's
 *     channel's touchpoint channel and of its purpose, when it has them;
 *   - with rule_id: the allowed contacts of that rule (the log), with the
 *     same channel and purpose filters (on their touchpoints);
 * and refuses when the count has reached max_contacts. Its quiet hours
 * refuse when the local time of its time zone lies in [from, until) (from
 * > until: the window spans midnight), or when the time zone is unknown.
 * Every refusal adds its reason: all of them are listed, not the first.
 *
 * The time zones were checked against pg_timezone_names when each policy
 * was written (that view costs some 40 ms to read): one PostgreSQL no
 * longer knows makes the load fail rather than read as -1.
 */
#include "bytebuf.h"
#include "treatments.h"
#include "treatments/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- loading the facts ------------------------------------------------------------ */

#define AT_MS(col) "(extract(epoch FROM " col ") * 1000)::bigint"
#define NOW_TS "('epoch'::timestamptz + $2::bigint * interval '1 millisecond')"
#define SINCE_TS "(" NOW_TS " - make_interval(hours => $3::int))"

/* $1 the customer, $2 now in epoch ms, $3 the longest cap's period in
 * hours (0: no cap), $4 the policies' time zones in order ('' for none);
 * for the decision, $5 and $6 the request's source and event_id, $7 its
 * rule (0: none). One row per fact: (kind, n1, n2, t1, t2, t3):
 *   s: the customer's status in t1 (not read for the decision, $5 given: it
 *      has read the status with the customer's lock)
 *   c: a consent decision: id n1, channel t1, purpose t2, status t3
 *   t: an outbound touchpoint: at n1, channel t1, purpose t2
 *   k: an allowed contact of a rule: at n1, rule n2, channel t1, purpose t2
 *   z: the local minute n2 of the time zone of policy n1 (1-based); -1 none
 *   d: the decision stored for the event: id n1, customer n2
 *   u: the live rule $7: version n1, offer code t1 (t2 'y' when it has one)
 *   v: treatment_config's stamp n1 (the policies' version) */
static crm_stmt facts_stmt = CRM_STMT(
    "contact_facts",
    "SELECT 's', 0::bigint, 0::bigint, status, NULL::text, NULL::text FROM customers"
    " WHERE id = $1::bigint AND $5::text IS NULL"
    " UNION ALL SELECT 'c', id, 0, channel, purpose, status FROM ("
    "  SELECT DISTINCT ON (channel, purpose) id, channel, purpose, status FROM customer_consents"
    "  WHERE customer_id = $1::bigint ORDER BY channel, purpose, captured_at DESC, id DESC) d"
    " UNION ALL SELECT 't', " AT_MS(
        "t.occurred_at") ", 0, t.channel, t.purpose, NULL"
                         "  FROM touchpoints t WHERE t.customer_id = $1::bigint AND t.direction = "
                         "'outbound'"
                         "  AND $3::int > 0 AND t.occurred_at > " SINCE_TS
                         " UNION ALL SELECT 'k', " AT_MS(
                             "k.decided_at") ", k.rule_id, t.channel, t.purpose, NULL"
                                             "  FROM contacts k JOIN touchpoints t ON t.id = "
                                             "k.touchpoint_id"
                                             "  WHERE k.customer_id = $1::bigint AND k.allowed AND "
                                             "k.rule_id IS NOT NULL"
                                             "  AND $3::int > 0 AND k.decided_at > " SINCE_TS
                                             " UNION ALL SELECT 'z', z.i, CASE WHEN z.tz = '' THEN "
                                             "-1 ELSE"
                                             "  (extract(hour FROM " NOW_TS
                                             " AT TIME ZONE z.tz) * 60"
                                             "  + extract(minute FROM " NOW_TS
                                             " AT TIME ZONE z.tz))::bigint END, NULL, NULL, NULL"
                                             "  FROM unnest($4::text[]) WITH ORDINALITY AS z (tz, "
                                             "i)"
                                             " UNION ALL SELECT 'd', k.id, k.customer_id, NULL, "
                                             "NULL, NULL FROM contacts k"
                                             "  WHERE k.source = $5::text AND k.event_id = $6::text"
                                             " UNION ALL SELECT 'u', r.version, 0, r.offer_code,"
                                             "  CASE WHEN r.offer_code IS NULL THEN NULL ELSE 'y' "
                                             "END, NULL FROM treatment_rules r"
                                             "  WHERE r.id = $7::bigint AND r.deleted_at IS NULL"
                                             " UNION ALL SELECT 'v', stamp, 0, NULL, NULL, NULL "
                                             "FROM treatment_config WHERE id = 1");

static void copy_text(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

char *policy_zones_literal(const policy_set *ps)
{
    crm_bytebuf b;
    crm_bytebuf_init(&b);
    crm_bytebuf_put_char(&b, '{');
    for (int i = 0; i < ps->n; i++)
        crm_bytebuf_put_array_item(&b, ps->p[i].time_zone, i == 0);
    crm_bytebuf_put_char(&b, '}');
    return crm_bytebuf_take(&b, NULL);
}

bool contact_facts_load(crm_conn *c, const policy_set *ps, long long customer_id, long long now_ms,
                        contact_extras *x, contact_facts *f, crm_error *err)
{
    memset(f, 0, sizeof *f);
    if (x != NULL) {
        x->stamp = -1;
        x->decided_id = x->decided_customer = 0;
        x->rule_found = x->has_offer = false;
        x->rule_version = 0;
        x->offer_code[0] = '\0';
    }
    f->customer_id = customer_id;
    char *zones = policy_zones_literal(ps);
    if (zones == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_query q;
    crm_query_init(&q, &facts_stmt);
    crm_query_add_int(&q, customer_id);
    crm_query_add_int(&q, now_ms);
    crm_query_add_int(&q, ps->max_period_hours);
    crm_query_add(&q, zones);
    crm_query_add(&q, x != NULL ? x->source : NULL);
    crm_query_add(&q, x != NULL ? x->event_id : NULL);
    crm_query_add_int(&q, x != NULL ? x->rule_id : 0);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    free(zones);
    if (res == NULL)
        return false;
    int n = PQntuples(res), nc = 0, ne = 0;
    for (int r = 0; r < n; r++) {
        char k = PQgetvalue(res, r, 0)[0];
        nc += k == 'c';
        ne += k == 't' || k == 'k';
    }
    f->consents = calloc((size_t)(nc ? nc : 1), sizeof *f->consents);
    f->events = calloc((size_t)(ne ? ne : 1), sizeof *f->events);
    f->local_min = malloc(sizeof *f->local_min * (size_t)(ps->n ? ps->n : 1));
    if (f->consents == NULL || f->events == NULL || f->local_min == NULL) {
        PQclear(res);
        contact_facts_free(f);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (int i = 0; i < ps->n; i++)
        f->local_min[i] = -1;
    for (int r = 0; r < n; r++) {
        char k = PQgetvalue(res, r, 0)[0];
        long long n1 = atoll(PQgetvalue(res, r, 1)), n2 = atoll(PQgetvalue(res, r, 2));
        const char *t1 = PQgetvalue(res, r, 3), *t2 = PQgetvalue(res, r, 4),
                   *t3 = PQgetvalue(res, r, 5);
        if (k == 's') {
            f->exists = true;
            f->active = strcmp(t1, "active") == 0;
        } else if (k == 'c' && f->nconsents < nc) {
            contact_consent *cs = &f->consents[f->nconsents++];
            cs->id = n1;
            copy_text(cs->channel, sizeof cs->channel, t1);
            copy_text(cs->purpose, sizeof cs->purpose, t2);
            copy_text(cs->status, sizeof cs->status, t3);
        } else if ((k == 't' || k == 'k') && f->nevents < ne) {
            contact_event *e = &f->events[f->nevents++];
            e->at_ms = n1;
            e->rule_id = k == 'k' ? n2 : 0;
            copy_text(e->channel, sizeof e->channel, t1);
            copy_text(e->purpose, sizeof e->purpose, t2); /* NULL reads as "" */
        } else if (k == 'z' && n1 >= 1 && n1 <= ps->n) {
            f->local_min[n1 - 1] = (int)n2;
        } else if (k == 'd' && x != NULL) {
            x->decided_id = n1;
            x->decided_customer = n2;
        } else if (k == 'u' && x != NULL) {
            x->rule_found = true;
            x->rule_version = (int)n1;
            x->has_offer = t2[0] == 'y';
            copy_text(x->offer_code, sizeof x->offer_code, t1);
        } else if (k == 'v' && x != NULL) {
            x->stamp = n1;
        }
    }
    PQclear(res);
    return true;
}

/* The facts of many customers ($1, an array) for contacts without a rule
 * (a rule's policies never apply to them, so its log is not read); $2, $3
 * and $4 as in facts_stmt; the scope: $5 the consents' channels (NULL:
 * all), $6 their purpose (NULL: all). Rows (kind, customer, n1, t1, t2,
 * t3): c, t as there (with the customer), and z with customer 0. The
 * statuses are not read: the caller has them from its locks. */
static crm_stmt facts_many_stmt = CRM_STMT(
    "contact_facts_many",
    "SELECT 'c'::text, customer_id, id, channel, purpose, status FROM ("
    "  SELECT DISTINCT ON (customer_id, channel, purpose) customer_id, id, channel, purpose,"
    "  status FROM customer_consents WHERE customer_id = ANY($1::bigint[])"
    "  AND ($5::text[] IS NULL OR channel = ANY($5::text[]))"
    "  AND ($6::text IS NULL OR purpose = $6::text)"
    "  ORDER BY customer_id, channel, purpose, captured_at DESC, id DESC) d"
    " UNION ALL SELECT 't', t.customer_id, " AT_MS(
        "t.occurred_at") ", t.channel, t.purpose, NULL"
                         "  FROM touchpoints t WHERE t.customer_id = ANY($1::bigint[]) AND "
                         "t.direction = 'outbound'"
                         "  AND t.occurred_at > " SINCE_TS " AND $3::int > 0"
                         " UNION ALL SELECT 'z', 0, z.i, CASE WHEN z.tz = '' THEN '-1' ELSE"
                         "  ((extract(hour FROM " NOW_TS " AT TIME ZONE z.tz) * 60"
                         "  + extract(minute FROM " NOW_TS
                         " AT TIME ZONE z.tz))::bigint)::text END, NULL, NULL"
                         "  FROM unnest($4::text[]) WITH ORDINALITY AS z (tz, i)");

int contact_ids_index(const long long *ids, int n, long long id)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (ids[mid] == id)
            return mid;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

bool contact_facts_load_many(crm_conn *c, const policy_set *ps, const long long *ids, int n,
                             const char *idlist, const contact_facts_scope *scope, long long now_ms,
                             contact_facts *out, crm_error *err)
{
    memset(out, 0, sizeof *out * (size_t)n);
    for (int i = 1; i < n; i++)
        if (ids[i] <= ids[i - 1])
            return crm_error_set(err, CRM_E_INTERNAL, "the customers' ids must ascend");
    char *zones = policy_zones_literal(ps);
    if (zones == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_query q;
    crm_query_init(&q, &facts_many_stmt);
    crm_query_add(&q, idlist);
    crm_query_add_int(&q, now_ms);
    crm_query_add_int(&q, ps->max_period_hours);
    crm_query_add(&q, zones);
    crm_query_add(&q, scope != NULL ? scope->channels : NULL);
    crm_query_add(&q, scope != NULL ? scope->purpose : NULL);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    free(zones);
    if (res == NULL)
        return false;
    int rows = PQntuples(res);
    /* Count each customer's rows, then fill. */
    for (int r = 0; r < rows; r++) {
        int i = contact_ids_index(ids, n, atoll(PQgetvalue(res, r, 1)));
        char k = PQgetvalue(res, r, 0)[0];
        if (i < 0)
            continue;
        out[i].nconsents += k == 'c';
        out[i].nevents += k == 't';
    }
    int *local = malloc(sizeof *local * (size_t)(ps->n ? ps->n : 1));
    bool ok = local != NULL;
    for (int i = 0; i < ps->n && ok; i++)
        local[i] = -1;
    for (int i = 0; i < n && ok; i++) {
        contact_facts *f = &out[i];
        f->customer_id = ids[i];
        f->consents = calloc((size_t)(f->nconsents ? f->nconsents : 1), sizeof *f->consents);
        f->events = calloc((size_t)(f->nevents ? f->nevents : 1), sizeof *f->events);
        f->local_min = malloc(sizeof *f->local_min * (size_t)(ps->n ? ps->n : 1));
        ok = f->consents != NULL && f->events != NULL && f->local_min != NULL;
        f->nconsents = f->nevents = 0; /* counted again as they are filled */
    }
    for (int r = 0; r < rows && ok; r++) {
        char k = PQgetvalue(res, r, 0)[0];
        long long n1 = atoll(PQgetvalue(res, r, 2));
        const char *t1 = PQgetvalue(res, r, 3), *t2 = PQgetvalue(res, r, 4),
                   *t3 = PQgetvalue(res, r, 5);
        if (k == 'z') {
            if (n1 >= 1 && n1 <= ps->n)
                local[n1 - 1] = atoi(t1);
            continue;
        }
        int i = contact_ids_index(ids, n, atoll(PQgetvalue(res, r, 1)));
        if (i < 0)
            continue;
        contact_facts *f = &out[i];
        if (k == 'c') {
            contact_consent *cs = &f->consents[f->nconsents++];
            cs->id = n1;
            copy_text(cs->channel, sizeof cs->channel, t1);
            copy_text(cs->purpose, sizeof cs->purpose, t2);
            copy_text(cs->status, sizeof cs->status, t3);
        } else if (k == 't') {
            contact_event *e = &f->events[f->nevents++];
            e->at_ms = n1;
            copy_text(e->channel, sizeof e->channel, t1);
            copy_text(e->purpose, sizeof e->purpose, t2);
        }
    }
    for (int i = 0; i < n && ok; i++)
        memcpy(out[i].local_min, local, sizeof *local * (size_t)ps->n);
    free(local);
    PQclear(res);
    if (!ok) {
        for (int i = 0; i < n; i++)
            contact_facts_free(&out[i]);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    return true;
}

void contact_facts_free(contact_facts *f)
{
    free(f->consents);
    free(f->events);
    free(f->local_min);
    f->consents = NULL;
    f->events = NULL;
    f->local_min = NULL;
    f->nconsents = f->nevents = 0;
}

const char *contact_touchpoint_channel(const char *channel)
{
    static const char *const map[][2] = {
        {"email", "email"},     {"sms", "sms"}, {"phone", "phone"},      {"mail", "mail"},
        {"push", "mobile_app"}, {"web", "web"}, {"in_app", "mobile_app"}};
    if (channel == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], channel) == 0)
            return map[i][1];
    return NULL;
}

/* ---- the decision ------------------------------------------------------------------- */

static bool policy_applies(const contact_policy *p, const char *channel, const char *purpose,
                           long long rule_id)
{
    return (p->channel[0] == '\0' || strcmp(p->channel, channel) == 0) &&
           (p->purpose[0] == '\0' || strcmp(p->purpose, purpose) == 0) &&
           (p->rule_id == 0 || p->rule_id == rule_id);
}

/* The events policy p's cap counts at now_ms. */
static int cap_count(const contact_policy *p, const contact_facts *f, long long now_ms)
{
    long long since = now_ms - (long long)p->period_hours * 3600000LL;
    const char *tp_channel = p->channel[0] ? contact_touchpoint_channel(p->channel) : NULL;
    int count = 0;
    for (int i = 0; i < f->nevents; i++) {
        const contact_event *e = &f->events[i];
        if (e->at_ms <= since || e->rule_id != p->rule_id)
            continue;
        if (p->channel[0] && (tp_channel == NULL || strcmp(e->channel, tp_channel) != 0))
            continue;
        if (p->purpose[0] && strcmp(e->purpose, p->purpose) != 0)
            continue;
        count++;
    }
    return count;
}

static bool in_quiet_hours(const contact_policy *p, int local_min)
{
    if (local_min < 0)
        return true; /* an unknown time zone: the quiet hours cannot be ruled out */
    if (p->quiet_from_min < p->quiet_until_min)
        return local_min >= p->quiet_from_min && local_min < p->quiet_until_min;
    return local_min >= p->quiet_from_min || local_min < p->quiet_until_min;
}

static void hhmm(int min, char out[8])
{
    unsigned m = (unsigned)min % 1440u;
    snprintf(out, 8, "%02u:%02u", m / 60u, m % 60u);
}

static void add_reason(json_t *reasons, json_t *reason)
{
    if (reasons != NULL && reason != NULL)
        json_array_append_new(reasons, reason);
    else
        json_decref(reason);
}

static bool check_consent(const contact_facts *f, const char *channel, const char *purpose,
                          json_t *reasons)
{
    for (int i = 0; i < f->nconsents; i++) {
        const contact_consent *cs = &f->consents[i];
        if (strcmp(cs->channel, channel) != 0 || strcmp(cs->purpose, purpose) != 0)
            continue;
        if (strcmp(cs->status, "granted") == 0)
            return true;
        if (reasons == NULL)
            return false;
        add_reason(reasons, json_pack("{s:s, s:s, s:I}", "code", "consent_revoked", "detail",
                                      "the latest consent decision for this channel and "
                                      "purpose revoked it",
                                      "consent_id", (json_int_t)cs->id));
        return false;
    }
    if (reasons == NULL)
        return false;
    add_reason(reasons,
               json_pack("{s:s, s:s, s:n}", "code", "no_consent", "detail",
                         "no consent was given for this channel and purpose", "consent_id"));
    return false;
}

bool contact_allowed(const policy_set *ps, const contact_facts *f, const char *channel,
                     const char *purpose, long long rule_id, long long now_ms, json_t *reasons)
{
    bool allowed = true;
    if (!f->exists || !f->active) {
        if (reasons == NULL)
            return false;
        add_reason(reasons, json_pack("{s:s, s:s}", "code", "not_active", "detail",
                                      "the customer is not active"));
        allowed = false;
    }
    if (!check_consent(f, channel, purpose, reasons))
        allowed = false;
    if (!allowed && reasons == NULL)
        return false;
    for (int i = 0; i < ps->n; i++) {
        const contact_policy *p = &ps->p[i];
        if (!policy_applies(p, channel, purpose, rule_id))
            continue;
        if (p->max_contacts > 0) {
            int count = cap_count(p, f, now_ms);
            if (count >= p->max_contacts) {
                if (reasons == NULL)
                    return false;
                char detail[300];
                snprintf(detail, sizeof detail,
                         "policy \"%s\" allows at most %d contacts in %d hours", p->name,
                         p->max_contacts, p->period_hours);
                add_reason(reasons, json_pack("{s:s, s:s, s:I, s:i, s:i, s:i}", "code",
                                              "cap_reached", "detail", detail, "policy_id",
                                              (json_int_t)p->id, "limit", p->max_contacts,
                                              "period_hours", p->period_hours, "count", count));
                allowed = false;
            }
        }
        if (p->quiet_from_min >= 0) {
            int local = f->local_min != NULL ? f->local_min[i] : -1;
            if (in_quiet_hours(p, local)) {
                if (reasons == NULL)
                    return false;
                char from[8], until[8], detail[400];
                hhmm(p->quiet_from_min, from);
                hhmm(p->quiet_until_min, until);
                snprintf(detail, sizeof detail,
                         "policy \"%s\" allows no contacts from %s until %s (%s)", p->name, from,
                         until, p->time_zone);
                add_reason(reasons,
                           json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "code", "quiet_hours",
                                     "detail", detail, "policy_id", (json_int_t)p->id, "from", from,
                                     "until", until, "time_zone", p->time_zone));
                allowed = false;
            }
        }
    }
    return allowed;
}

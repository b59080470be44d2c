/*
 * treatments/evaluate.c — GET /v1/customers/{id}/treatments: every live
 * rule evaluated in process against the customer's loaded state, the
 * entitlements, the actions ranked by the arbitration of treatments.h, and
 * for each channel the rules prefer whether the customer may be contacted
 * now (contact_allowed, the check POST .../contacts makes).
 *
 * The rules (parsed) and the policies are kept in memory, one config per
 * treatment_config.stamp: a request reads the stamp, and the first that
 * finds it moved loads the config again; requests under way keep the one
 * they took (reference counted).
 */
#include "treatments/internal.h"
#include "clock.h"
#include "jbuf.h"
#include "log.h"
#include "segments.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANNELS_MAX 7 /* the consent channels */

typedef struct live_rule {
    long long id;
    int version, position, priority;
    double value;
    long long from_ms, until_ms; /* 0: open */
    const char *name, *offer, *entitlement, *action, *action_text, *purpose, *value_text;
    const char *channels[CHANNELS_MAX];
    int nchannels;
    crm_rule *cond;
    char *summary; /* the rule's summary as JSON text (owned) */
    size_t summary_len;
} live_rule;

typedef struct treatments_config {
    long long stamp;
    live_rule *r;
    int n;
    policy_set ps;
    PGresult *res; /* the rules' row strings point into it */
    int refs;
} config;

static pthread_mutex_t config_mu = PTHREAD_MUTEX_INITIALIZER;
static config *current;

static void config_free(config *k)
{
    for (int i = 0; i < k->n; i++) {
        crm_rule_free(k->r[i].cond);
        free(k->r[i].summary);
    }
    free(k->r);
    policy_set_free(&k->ps);
    PQclear(k->res);
    free(k);
}

static void config_release(config *k)
{
    if (k == NULL)
        return;
    pthread_mutex_lock(&config_mu);
    bool last = --k->refs == 0;
    pthread_mutex_unlock(&config_mu);
    if (last)
        config_free(k);
}

static crm_stmt read_stamp =
    CRM_STMT_RO("treatments_stamp", "SELECT stamp FROM treatment_config WHERE id = 1");

/* The live rules in order of evaluation; times as epoch milliseconds. */
static crm_stmt load_rules = CRM_STMT_RO(
    "treatments_load_rules",
    "SELECT id, version, position, name, condition::text, offer_code, entitlement_code,"
    " action_code, action_text, purpose, value::text, value::float8, priority,"
    " coalesce((extract(epoch FROM active_from) * 1000)::bigint, 0),"
    " coalesce((extract(epoch FROM active_until) * 1000)::bigint, 0), array_to_json(channels)::text"
    " FROM treatment_rules WHERE deleted_at IS NULL ORDER BY position, id");

static const char *opt(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* Fills r from row i of res (strings point into res); false when the
 * stored condition does not parse (it was checked when written). */
static bool read_rule(const PGresult *res, int i, live_rule *r, crm_error *err)
{
    *r = (live_rule){.id = atoll(PQgetvalue(res, i, 0)),
                     .version = atoi(PQgetvalue(res, i, 1)),
                     .position = atoi(PQgetvalue(res, i, 2)),
                     .name = PQgetvalue(res, i, 3),
                     .offer = opt(res, i, 5),
                     .entitlement = opt(res, i, 6),
                     .action = opt(res, i, 7),
                     .action_text = opt(res, i, 8),
                     .purpose = PQgetvalue(res, i, 9),
                     .value_text = PQgetvalue(res, i, 10),
                     .value = strtod(PQgetvalue(res, i, 11), NULL),
                     .priority = atoi(PQgetvalue(res, i, 12)),
                     .from_ms = atoll(PQgetvalue(res, i, 13)),
                     .until_ms = atoll(PQgetvalue(res, i, 14))};
    json_t *chans = json_loads(PQgetvalue(res, i, 15), 0, NULL);
    size_t k;
    json_t *v;
    json_array_foreach(chans, k, v)
    {
        /* The stored array holds consent channels (a check of the table). */
        static const char *const known[CHANNELS_MAX] = {"email", "sms", "phone", "mail",
                                                        "push",  "web", "in_app"};
        for (int c = 0; c < CHANNELS_MAX && r->nchannels < CHANNELS_MAX; c++)
            if (json_is_string(v) && strcmp(json_string_value(v), known[c]) == 0)
                r->channels[r->nchannels++] = known[c];
    }
    json_decref(chans);
    json_t *cond = json_loads(PQgetvalue(res, i, 4), 0, NULL);
    r->cond = cond != NULL ? crm_rule_parse(cond, err) : NULL;
    json_decref(cond);
    if (r->cond == NULL)
        return crm_error_set(err, CRM_E_INTERNAL,
                             "treatment rule %lld: its condition no longer parses", r->id);
    return true;
}

static char *summary_text(const live_rule *r, size_t *len);

static config *config_load(crm_conn *c, long long stamp, crm_error *err)
{
    config *k = calloc(1, sizeof *k);
    if (k == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    k->stamp = stamp;
    k->refs = 1;
    k->res = crm_db_exec(c, &load_rules, 0, NULL, err);
    bool ok = k->res != NULL;
    int n = ok ? PQntuples(k->res) : 0;
    if (ok && n > 0 && (k->r = calloc((size_t)n, sizeof *k->r)) == NULL)
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    /* A stored condition that no longer parses (it did when it was
     * written: a later version of the language refused it, or the row was
     * written around the API) leaves its rule out, logged, rather than
     * failing every customer's treatments. */
    for (int i = 0; ok && i < n; i++) {
        crm_error rerr = CRM_ERROR_INIT;
        live_rule *r = &k->r[k->n];
        if (!read_rule(k->res, i, r, &rerr)) {
            crm_log(CRM_LOG_WARN, "treatments: %s; the rule is left out", rerr.detail);
        } else {
            k->n++; /* config_free frees what it holds */
            if ((r->summary = summary_text(r, &r->summary_len)) == NULL)
                ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        }
        crm_error_clear(&rerr);
    }
    ok = ok && policy_set_load(c, &k->ps, err);
    if (!ok) {
        config_free(k);
        return NULL;
    }
    return k;
}

/* The config of stamp (the stored one when stamp is -1: read first), with
 * a reference for the caller: the cached one when it is of that stamp. */
static config *config_take(crm_conn *c, long long stamp, crm_error *err)
{
    if (stamp < 0) {
        PGresult *res = crm_db_exec(c, &read_stamp, 0, NULL, err);
        if (res == NULL)
            return NULL;
        stamp = PQntuples(res) == 1 ? atoll(PQgetvalue(res, 0, 0)) : -1;
        PQclear(res);
    }
    pthread_mutex_lock(&config_mu);
    config *k = current;
    if (k != NULL && k->stamp == stamp)
        k->refs++;
    else
        k = NULL;
    pthread_mutex_unlock(&config_mu);
    if (k != NULL)
        return k;
    k = config_load(c, stamp, err);
    if (k == NULL)
        return NULL;
    pthread_mutex_lock(&config_mu);
    config *old = NULL;
    if (current == NULL || current->stamp < stamp) {
        old = current;
        current = k;
        k->refs++; /* the cache's */
    }
    pthread_mutex_unlock(&config_mu);
    config_release(old);
    return k;
}

/* The cached config, whatever its stamp, with a reference; NULL when
 * none is cached yet. */
static config *config_cached(void)
{
    pthread_mutex_lock(&config_mu);
    config *k = current;
    if (k != NULL)
        k->refs++;
    pthread_mutex_unlock(&config_mu);
    return k;
}

treatments_config *treatments_config_of(crm_conn *c, long long stamp, crm_error *err)
{
    return config_take(c, stamp, err);
}

treatments_config *treatments_config_cached(void)
{
    return config_cached();
}

void treatments_config_release(treatments_config *k)
{
    config_release(k);
}

long long treatments_config_stamp(const treatments_config *k)
{
    return k->stamp;
}

const policy_set *treatments_config_policies(const treatments_config *k)
{
    return &k->ps;
}

/* ---- everything the evaluation reads, in one statement ---------------------------------- */

/* The customer's state (crm_rule_state_union_sql, $1 the customer), and:
 *   'r'  an allowed contact of a rule in the longest cap's period ($2 now
 *        in epoch ms, $3 that period in hours): at (epoch ms), rule, the
 *        channel and purpose of its touchpoint;
 *   'z'  the local minute now of policy i's time zone ($4, in order);
 *   'v'  the stamp of the rules and policies.
 * Built at the first use. The parameters first appear in the text in
 * order: bench/pgbench/customer_treatments.sql holds this text, with
 * pgbench's variables numbered as they first appear. */
#define NOW_TS "('epoch'::timestamptz + $2::bigint * interval '1 millisecond')"
static char everything_sql[16384];
static crm_stmt everything_stmt = CRM_STMT_HEAVY("treatments_everything", everything_sql);
static crm_stmt *everything; /* &everything_stmt once built; NULL when it could not be */
static int everything_width;
static pthread_once_t everything_once = PTHREAD_ONCE_INIT;

static void add_part(crm_jbuf *b, const char *sql, int used)
{
    crm_jbuf_raw(b, sql, strlen(sql));
    for (int i = used; i < everything_width; i++)
        crm_jbuf_raw(b, ", NULL::text", 12);
}

static void build_everything(void)
{
    everything_width = crm_rule_state_union_width();
    char *state = crm_rule_state_union_sql(everything_width);
    if (state == NULL)
        return;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_raw(&b, state, strlen(state));
    free(state);
    add_part(&b,
             " UNION ALL SELECT 'r', (extract(epoch FROM k.decided_at) * 1000)::bigint::text,"
             " k.rule_id::text, t.channel, t.purpose",
             4);
    static const char contacts[] =
        " FROM contacts k JOIN touchpoints t ON t.id = k.touchpoint_id"
        " WHERE k.customer_id = $1::bigint AND k.allowed AND k.rule_id IS NOT NULL"
        " AND k.decided_at > " NOW_TS " - make_interval(hours => $3::int) AND $3::int > 0";
    crm_jbuf_raw(&b, contacts, sizeof contacts - 1);
    add_part(&b,
             " UNION ALL SELECT 'z', z.i::text, CASE WHEN z.tz = '' THEN '-1' ELSE"
             " ((extract(hour FROM " NOW_TS " AT TIME ZONE z.tz) * 60"
             " + extract(minute FROM " NOW_TS " AT TIME ZONE z.tz))::bigint)::text END",
             2);
    static const char zones[] = " FROM unnest($4::text[]) WITH ORDINALITY AS z (tz, i)";
    crm_jbuf_raw(&b, zones, sizeof zones - 1);
    add_part(&b, " UNION ALL SELECT 'v', stamp::text", 1);
    static const char stamp[] = " FROM treatment_config WHERE id = 1";
    crm_jbuf_raw(&b, stamp, sizeof stamp - 1);
    /* A statement of its own, not one of the dynamic ones: their table is
     * bounded, and shared with every shape of list and search. */
    size_t len = 0;
    char *sql = crm_jbuf_take(&b, &len);
    if (sql != NULL && len < sizeof everything_sql) {
        memcpy(everything_sql, sql, len + 1);
        everything = &everything_stmt;
    }
    free(sql);
}

/* The stamp of a result of the statement (-1: none). */
static long long result_stamp(const PGresult *res)
{
    for (int r = PQntuples(res) - 1; r >= 0; r--)
        if (PQgetvalue(res, r, 0)[0] == 'v')
            return atoll(PQgetvalue(res, r, 1));
    return -1;
}

static void copy_text(char *dst, size_t size, const PGresult *res, int r, int col)
{
    snprintf(dst, size, "%s", PQgetvalue(res, r, col)); /* NULL reads as "" */
}

/* The contact check's facts from a result of the statement: what
 * contact_facts_load reads, the same rows. */
static bool facts_read(const PGresult *res, const policy_set *ps, long long customer_id,
                       long long now_ms, contact_facts *f, crm_error *err)
{
    memset(f, 0, sizeof *f);
    f->customer_id = customer_id;
    int rows = PQntuples(res), nc = 0, ne = 0;
    for (int r = 0; r < rows; r++) {
        char k = PQgetvalue(res, r, 0)[0];
        nc += k == 'k';
        ne += k == 't' || k == 'r';
    }
    f->consents = calloc((size_t)(nc ? nc : 1), sizeof *f->consents);
    f->events = calloc((size_t)(ne ? ne : 1), sizeof *f->events);
    f->local_min = malloc(sizeof *f->local_min * (size_t)(ps->n ? ps->n : 1));
    if (f->consents == NULL || f->events == NULL || f->local_min == NULL) {
        contact_facts_free(f);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (int i = 0; i < ps->n; i++)
        f->local_min[i] = -1;
    long long since = now_ms - (long long)ps->max_period_hours * 3600000;
    int status = crm_rule_state_status_column();
    for (int r = 0; r < rows; r++) {
        char k = PQgetvalue(res, r, 0)[0];
        if (k == 'c') {
            f->exists = true;
            f->active = strcmp(PQgetvalue(res, r, status), "active") == 0;
        } else if (k == 'k' && f->nconsents < nc) {
            contact_consent *cs = &f->consents[f->nconsents++];
            copy_text(cs->channel, sizeof cs->channel, res, r, 1);
            copy_text(cs->purpose, sizeof cs->purpose, res, r, 2);
            copy_text(cs->status, sizeof cs->status, res, r, 3);
            cs->id = atoll(PQgetvalue(res, r, 4));
        } else if (k == 't' && f->nevents < ne) {
            long long at = atoll(PQgetvalue(res, r, 10));
            if (ps->max_period_hours <= 0 || strcmp(PQgetvalue(res, r, 8), "outbound") != 0 ||
                at <= since)
                continue;
            contact_event *e = &f->events[f->nevents++];
            e->at_ms = at;
            copy_text(e->channel, sizeof e->channel, res, r, 2);
            copy_text(e->purpose, sizeof e->purpose, res, r, 9);
        } else if (k == 'r' && f->nevents < ne) {
            contact_event *e = &f->events[f->nevents++];
            e->at_ms = atoll(PQgetvalue(res, r, 1));
            e->rule_id = atoll(PQgetvalue(res, r, 2));
            copy_text(e->channel, sizeof e->channel, res, r, 3);
            copy_text(e->purpose, sizeof e->purpose, res, r, 4);
        } else if (k == 'z') {
            long long i = atoll(PQgetvalue(res, r, 1));
            if (i >= 1 && i <= ps->n)
                f->local_min[i - 1] = atoi(PQgetvalue(res, r, 2));
        }
    }
    return true;
}

/* ---- the answer ------------------------------------------------------------- */

/* The members of a rule's summary, written into the open object of b. */
static void summary_members(crm_jbuf *b, const live_rule *r)
{
    crm_jbuf_key(b, "id");
    crm_jbuf_int(b, r->id);
    crm_jbuf_key(b, "version");
    crm_jbuf_int(b, r->version);
    crm_jbuf_key(b, "name");
    crm_jbuf_cstring(b, r->name);
    crm_jbuf_key(b, "position");
    crm_jbuf_int(b, r->position);
    crm_jbuf_key(b, "offer_code");
    crm_jbuf_cstring(b, r->offer);
    crm_jbuf_key(b, "entitlement_code");
    crm_jbuf_cstring(b, r->entitlement);
    crm_jbuf_key(b, "action");
    if (r->action != NULL) {
        crm_jbuf_begin_object(b);
        crm_jbuf_key(b, "code");
        crm_jbuf_cstring(b, r->action);
        crm_jbuf_key(b, "text");
        crm_jbuf_cstring(b, r->action_text);
        crm_jbuf_end_object(b);
    } else {
        crm_jbuf_null(b);
    }
    crm_jbuf_key(b, "channels");
    crm_jbuf_begin_array(b);
    for (int i = 0; i < r->nchannels; i++)
        crm_jbuf_cstring(b, r->channels[i]);
    crm_jbuf_end_array(b);
    crm_jbuf_key(b, "purpose");
    crm_jbuf_cstring(b, r->purpose);
    crm_jbuf_key(b, "value");
    crm_jbuf_real(b, r->value);
    crm_jbuf_key(b, "priority");
    crm_jbuf_int(b, r->priority);
}

/* The rule's summary as JSON text, written once per config (NULL when
 * memory ran out). */
static char *summary_text(const live_rule *r, size_t *len)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_object(&b);
    summary_members(&b, r);
    crm_jbuf_end_object(&b);
    return crm_jbuf_take(&b, len);
}

typedef struct ranked {
    const live_rule *r;
    double score;
} ranked;

/* Score descending, then position, then id. */
static int by_rank(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->r->position != y->r->position)
        return x->r->position < y->r->position ? -1 : 1;
    return (x->r->id > y->r->id) - (x->r->id < y->r->id);
}

/* One channel's verdict for a purpose, with the reasons of each refusal;
 * false when memory ran out. */
static bool write_verdict(crm_jbuf *b, const config *k, const contact_facts *f, const char *channel,
                          const char *purpose, long long now_ms)
{
    json_t *reasons = json_array();
    if (reasons == NULL)
        return false;
    bool allowed = contact_allowed(&k->ps, f, channel, purpose, 0, now_ms, reasons);
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "channel");
    crm_jbuf_cstring(b, channel);
    crm_jbuf_key(b, "purpose");
    crm_jbuf_cstring(b, purpose);
    crm_jbuf_key(b, "allowed");
    crm_jbuf_bool(b, allowed);
    crm_jbuf_key(b, "reasons");
    crm_jbuf_json(b, reasons);
    crm_jbuf_end_object(b);
    json_decref(reasons);
    return true;
}

/* An action: the rule's summary, the figures of the arbitration, and the
 * first of its channels the rule may use now (null: none). */
static void write_action(crm_jbuf *b, const config *k, const contact_facts *f, const ranked *x,
                         long long now_ms)
{
    const live_rule *r = x->r;
    const char *use = NULL;
    for (int i = 0; i < r->nchannels && use == NULL; i++)
        if (contact_allowed(&k->ps, f, r->channels[i], r->purpose, r->id, now_ms, NULL))
            use = r->channels[i];
    crm_jbuf_begin_object(b);
    summary_members(b, r);
    crm_jbuf_key(b, "score");
    crm_jbuf_real(b, x->score);
    crm_jbuf_key(b, "channel");
    crm_jbuf_cstring(b, use);
    crm_jbuf_end_object(b);
}

/* The (channel, purpose) pairs already judged: the rules' channels are
 * consent channels, their purposes consent purposes. */
#define PAIRS_MAX 64

typedef struct pair {
    const char *channel, *purpose;
} pair;

static bool pair_seen(const pair *seen, int n, const char *channel, const char *purpose)
{
    for (int i = 0; i < n; i++)
        if (strcmp(seen[i].channel, channel) == 0 && strcmp(seen[i].purpose, purpose) == 0)
            return true;
    return false;
}

/* Writes the answer's members after "customer_id" into the open object
 * of b: "evaluated_at", "rules", "entitlements", "next_best_action",
 * "actions" and "channels". False when memory ran out. */
static bool evaluate(crm_jbuf *b, const config *k, const crm_rule_state *st, const contact_facts *f,
                     int limit, long long now_ms)
{
    /* One allocation: the rules that apply, their entitlements, their
     * ranks. */
    size_t n = (size_t)(k->n > 0 ? k->n : 1);
    void *mem = malloc(n * (sizeof(const live_rule *) + sizeof(const char *) + sizeof(ranked)));
    if (mem == NULL)
        return false;
    ranked *ranks = mem;
    const live_rule **applies = (const live_rule **)(ranks + n);
    const char **entitled = (const char **)(applies + n);
    int napplies = 0, nranked = 0, nentitled = 0;
    crm_jbuf_key(b, "evaluated_at");
    crm_jbuf_timestamp(b, now_ms);
    crm_jbuf_key(b, "rules");
    crm_jbuf_begin_array(b);
    for (int i = 0; i < k->n && f->active; i++) {
        const live_rule *r = &k->r[i];
        if ((r->from_ms != 0 && now_ms < r->from_ms) || (r->until_ms != 0 && now_ms >= r->until_ms))
            continue;
        if (!crm_rule_eval(r->cond, st, now_ms))
            continue;
        applies[napplies++] = r;
        crm_jbuf_raw(b, r->summary, r->summary_len);
        if (r->action != NULL)
            ranks[nranked++] = (ranked){.r = r, .score = (double)r->priority * r->value};
    }
    crm_jbuf_end_array(b);
    crm_jbuf_key(b, "entitlements");
    crm_jbuf_begin_array(b);
    for (int i = 0; i < napplies; i++) {
        const char *e = applies[i]->entitlement;
        bool dup = e == NULL;
        for (int j = 0; j < nentitled && !dup; j++)
            dup = strcmp(entitled[j], e) == 0;
        if (!dup) {
            entitled[nentitled++] = e;
            crm_jbuf_cstring(b, e);
        }
    }
    crm_jbuf_end_array(b);
    if (nranked > 1)
        qsort(ranks, (size_t)nranked, sizeof *ranks, by_rank);
    crm_jbuf_key(b, "next_best_action");
    if (nranked > 0)
        write_action(b, k, f, &ranks[0], now_ms);
    else
        crm_jbuf_null(b);
    crm_jbuf_key(b, "actions");
    crm_jbuf_begin_array(b);
    for (int i = 0; i < nranked && i < limit; i++)
        write_action(b, k, f, &ranks[i], now_ms);
    crm_jbuf_end_array(b);
    crm_jbuf_key(b, "channels");
    crm_jbuf_begin_array(b);
    pair seen[PAIRS_MAX];
    int nseen = 0;
    bool ok = true;
    for (int i = 0; i < napplies && ok; i++) {
        const live_rule *r = applies[i];
        for (int c = 0; c < r->nchannels && ok; c++) {
            if (pair_seen(seen, nseen, r->channels[c], r->purpose))
                continue;
            if (nseen < PAIRS_MAX)
                seen[nseen++] = (pair){r->channels[c], r->purpose};
            ok = write_verdict(b, k, f, r->channels[c], r->purpose, now_ms);
        }
    }
    crm_jbuf_end_array(b);
    free(mem);
    return ok;
}

/* ---- one call: the statement, then the answer ------------------------------------------ */

struct crm_treatments_call {
    config *k; /* a reference */
    long long customer_id, now_ms, started_us;
    int limit;
    bool blocking; /* on a worker: the config was read fresh */
    char *zones;
};

void crm_treatments_call_free(crm_treatments_call *t)
{
    if (t == NULL)
        return;
    config_release(t->k);
    free(t->zones);
    free(t);
}

bool crm_treatments_begin(long long customer_id, int limit, bool may_block, crm_query *q,
                          crm_treatments_call **out, bool *need_worker, crm_error *err)
{
    *out = NULL;
    *need_worker = false;
    if (limit < 1 || limit > CRM_TREATMENTS_LIMIT_MAX) {
        crm_error_set(err, CRM_E_INVALID, "limit must be 1 to %d", CRM_TREATMENTS_LIMIT_MAX);
        crm_error_add_field(err, "/limit", "must be an integer from 1 to 100");
        return false;
    }
    pthread_once(&everything_once, build_everything);
    if (everything == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_treatments_call *t = calloc(1, sizeof *t);
    if (t == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    t->customer_id = customer_id;
    t->limit = limit;
    t->blocking = may_block;
    t->started_us = crm_monotonic_us();
    /* On a worker, the rules and policies as stored now; otherwise the
     * cached ones (the stamp read with the customer tells whether they
     * still are). */
    if (may_block) {
        crm_conn *c = crm_db_acquire(err);
        t->k = c != NULL ? config_take(c, -1, err) : NULL;
        crm_db_release(c);
        if (t->k == NULL) {
            crm_treatments_call_free(t);
            return false;
        }
    } else if ((t->k = config_cached()) == NULL) {
        crm_treatments_call_free(t);
        *need_worker = true;
        return false;
    }
    t->now_ms = crm_wall_ms();
    t->zones = policy_zones_literal(&t->k->ps);
    if (t->zones == NULL) {
        crm_treatments_call_free(t);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    crm_query_init(q, everything);
    crm_query_add_int(q, customer_id);
    crm_query_add_int(q, t->now_ms);
    crm_query_add_int(q, t->k->ps.max_period_hours);
    crm_query_add(q, t->zones);
    *out = t;
    return true;
}

char *crm_treatments_finish(crm_treatments_call *t, const PGresult *res, size_t *len,
                            bool *need_worker, crm_error *err)
{
    *need_worker = false;
    /* The rules or policies moved since the cache was read: a worker reads
     * them again. (On a worker they were read a moment ago: used as they
     * are.) */
    if (!t->blocking && result_stamp(res) != t->k->stamp) {
        *need_worker = true;
        return NULL;
    }
    crm_rule_state *st = crm_rule_state_read(res, t->customer_id, err);
    contact_facts f = {0};
    bool ok = st != NULL && facts_read(res, &t->k->ps, t->customer_id, t->now_ms, &f, err);
    char *out = NULL;
    if (ok) {
        long long t1 = crm_monotonic_us();
        crm_jbuf b;
        crm_jbuf_init(&b);
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "customer_id");
        crm_jbuf_int(&b, t->customer_id);
        ok = evaluate(&b, t->k, st, &f, t->limit, t->now_ms);
        long long t2 = crm_monotonic_us();
        crm_jbuf_key(&b, "timing");
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "load_us");
        crm_jbuf_int(&b, t1 - t->started_us);
        crm_jbuf_key(&b, "evaluate_us");
        crm_jbuf_int(&b, t2 - t1);
        crm_jbuf_end_object(&b);
        crm_jbuf_end_object(&b);
        out = ok ? crm_jbuf_take(&b, len) : NULL;
        crm_jbuf_free(&b);
        if (out == NULL)
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    contact_facts_free(&f);
    crm_rule_state_free(st);
    return out;
}

/*
 * campaigns/execute.c — executing a campaign (campaigns.h, migration 0026):
 * POST /v1/campaigns/{id}/execute queues a job of kind campaign_execute and
 * moves the campaign to running in one transaction; the job
 *
 *   1. takes the audience as it is at that moment into campaign_targets,
 *      once (the campaign's row locked; executed_at says it is done), each
 *      customer in the treatment or the control group: control when the
 *      first 60 bits of md5(salt:customer_id), as a fraction of 2^60, fall
 *      below control_share, so the same customer always lands in the same
 *      group for a campaign;
 *   2. decides the targets in batches of BATCH, each in one transaction:
 *      the next pending targets in customer order, their customers locked
 *      FOR NO KEY UPDATE in id order (the lock of the contact
 *      decision and of the segments' upkeep), their facts read in one
 *      statement, and each judged by contact_allowed, the check of POST
 *      /v1/customers/{id}/contacts, on the campaign's channels in order:
 *      the first that allows is used. A treatment target is contacted (its
 *      campaign_contact touchpoint written in the same statement that
 *      records the decision), a control target held out; one that no
 *      channel allows is excluded with the first channel's first reason.
 *      The new touchpoints go to the segments' queue, as a batch's do.
 *
 * A target is decided once: only pending rows move, in the transaction
 * that writes the touchpoint, whose (source, event_id) is the campaign's
 * and the customer's ("crmd:campaign", "<campaign id>-<customer id>"; the
 * touchpoint APIs refuse sources beginning "crmd:"). A job killed midway
 * is taken over by the jobs' runner and goes on with what is still
 * pending; nobody is contacted twice or skipped.
 */
#include "campaigns.h"
#include "campaigns/internal.h"
#include "arena.h"
#include "auth.h"
#include "bytebuf.h"
#include "clock.h"
#include "list/sqlbuf.h"
#include "log.h"
#include "jobs.h"
#include "segment_store.h"
#include "segments.h"
#include "treatments/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 2000
#define CAMPAIGN_SOURCE "crmd:campaign"

/* ---- POST /v1/campaigns/{id}/execute ----------------------------------------------- */

/* The campaign, locked: status, whether it has an end, the state of its
 * last execution's job, its segment's state (NULL for a rule audience). */
static crm_stmt execute_lock = CRM_STMT(
    "campaign_execute_lock",
    "SELECT c.status, c.ends_at IS NOT NULL, (SELECT j.state FROM jobs j WHERE j.id ="
    " c.execute_job_id), (SELECT s.state FROM segments s WHERE s.id = c.audience_segment_id"
    " AND s.deleted_at IS NULL), c.audience_segment_id IS NOT NULL,"
    " (SELECT count(*) FROM treatment_rules r WHERE r.id = c.audience_rule_id"
    " AND r.deleted_at IS NULL)"
    " FROM campaigns c WHERE c.id = $1 AND c.deleted_at IS NULL FOR UPDATE");

static crm_stmt execute_start = CRM_STMT(
    "campaign_execute_start",
    "UPDATE campaigns SET status = 'running', execute_job_id = $2,"
    " starts_at = CASE WHEN starts_at IS NULL OR starts_at > now() THEN now() ELSE starts_at END,"
    " version = version + CASE WHEN status = 'running' THEN 0 ELSE 1 END, updated_at = now()"
    " WHERE id = $1 RETURNING status");

/* Why the campaign cannot be executed now (err), or true. */
static bool may_execute(const PGresult *res, crm_error *err)
{
    const char *status = PQgetvalue(res, 0, 0), *job = PQgetvalue(res, 0, 2),
               *segment = PQgetvalue(res, 0, 3);
    bool has_end = PQgetvalue(res, 0, 1)[0] == 't', by_segment = PQgetvalue(res, 0, 4)[0] == 't';
    if (strcmp(status, "completed") == 0 || strcmp(status, "cancelled") == 0)
        return crm_error_set(err, CRM_E_CONFLICT, "a %s campaign cannot be executed", status);
    if (strcmp(status, "running") == 0 && !PQgetisnull(res, 0, 2) &&
        (strcmp(job, "queued") == 0 || strcmp(job, "running") == 0))
        return crm_error_set(err, CRM_E_CONFLICT,
                             "the campaign is being executed (see its execute_job_id)");
    if (strcmp(status, "running") != 0 && !has_end) {
        crm_error_add_field(err, "/ends_at", "a campaign runs until its end: set ends_at first");
        return crm_error_set(err, CRM_E_INVALID, "the campaign has no end");
    }
    if (by_segment && PQgetisnull(res, 0, 3))
        return crm_error_set(err, CRM_E_CONFLICT, "the campaign's segment was deleted");
    if (by_segment && strcmp(segment, "live") != 0)
        return crm_error_set(err, CRM_E_CONFLICT,
                             "the campaign's segment is %s: its members are not known yet",
                             segment);
    if (!by_segment && atoll(PQgetvalue(res, 0, 5)) != 1)
        return crm_error_set(err, CRM_E_CONFLICT, "the campaign's treatment rule was deleted");
    return true;
}

/* Queues the execution of campaign id inside the caller's transaction on
 * c (the campaign's row locked here) and moves the campaign to running;
 * the job's representation, or NULL with err. */
static json_t *execute_on(crm_conn *c, long long id, long long api_key_id, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf, NULL};
    json_t *job = NULL;
    PGresult *res = crm_db_exec(c, &execute_lock, 1, params, err);
    bool ok = res != NULL;
    if (ok && PQntuples(res) != 1)
        ok = crm_error_set(err, CRM_E_NOT_FOUND, "no campaign with this id");
    ok = ok && may_execute(res, err);
    bool was_running = ok && strcmp(PQgetvalue(res, 0, 0), "running") == 0;
    PQclear(res);
    json_t *jp = ok ? json_pack("{s:I}", "campaign_id", (json_int_t)id) : NULL;
    if (ok && jp == NULL)
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    ok = ok && (job = crm_job_submit_on(c, "campaign_execute", jp, api_key_id, err)) != NULL;
    json_decref(jp);
    char jobbuf[24];
    if (ok) {
        snprintf(jobbuf, sizeof jobbuf, "%lld",
                 (long long)json_integer_value(json_object_get(job, "id")));
        params[1] = jobbuf;
        PGresult *u = crm_db_exec(c, &execute_start, 2, params, err);
        ok = u != NULL;
        PQclear(u);
    }
    json_t *doc = NULL;
    if (ok && !was_running) /* a resumed execution is not a new version */
        ok = (doc = campaign_keep_version(c, id, api_key_id, err)) != NULL;
    json_decref(doc);
    if (!ok) {
        json_decref(job);
        job = NULL;
    }
    return job;
}

json_t *crm_campaign_execute(long long id, long long api_key_id, crm_error *err)
{
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    json_t *job = crm_db_begin(c, err) ? execute_on(c, id, api_key_id, err) : NULL;
    if (job != NULL && !crm_db_commit(c, err)) {
        json_decref(job);
        job = NULL;
    }
    if (job == NULL)
        crm_db_rollback(c);
    crm_db_release(c);
    if (job != NULL)
        crm_jobs_wake();
    return job;
}

/* The scheduled campaigns whose start has come, claimed (another process
 * takes others, or none). */
static crm_stmt due_campaigns =
    CRM_STMT("campaign_due",
             "SELECT id FROM campaigns WHERE status = 'scheduled' AND starts_at <= now()"
             " AND deleted_at IS NULL ORDER BY starts_at, id LIMIT 10 FOR UPDATE SKIP LOCKED");

static crm_stmt ended_campaigns = CRM_STMT(
    "campaign_ended",
    "UPDATE campaigns k SET status = 'completed', version = version + 1, updated_at = now()"
    " WHERE k.id IN (SELECT id FROM campaigns WHERE status = 'running' AND ends_at <= now()"
    " AND deleted_at IS NULL AND executed_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM"
    " campaign_targets g WHERE g.campaign_id = campaigns.id AND g.state = 'pending')"
    " ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING k.id");

bool crm_campaigns_start_scheduled(crm_conn *c, int *started, crm_error *err)
{
    *started = 0;
    if (!crm_db_begin(c, err))
        return false;
    PGresult *due = crm_db_exec(c, &due_campaigns, 0, NULL, err);
    bool ok = due != NULL;
    for (int i = 0; ok && i < PQntuples(due); i++) {
        long long id = atoll(PQgetvalue(due, i, 0));
        /* Each in a savepoint: one that cannot start now (its segment is
         * still building) stays scheduled and is tried again. */
        PGresult *sp = crm_db_exec_sql(c, "SAVEPOINT start_one", 0, NULL, err);
        ok = sp != NULL;
        PQclear(sp);
        crm_error one = CRM_ERROR_INIT;
        json_t *job = ok ? execute_on(c, id, 0, &one) : NULL;
        if (job != NULL) {
            ++*started;
            crm_log(CRM_LOG_INFO, "campaign %lld: started at its start time (job %lld)", id,
                    (long long)json_integer_value(json_object_get(job, "id")));
        } else if (ok) {
            crm_log(CRM_LOG_WARN, "campaign %lld: its start has come but it cannot start: %s", id,
                    one.detail);
            PGresult *rb = crm_db_exec_sql(c, "ROLLBACK TO SAVEPOINT start_one", 0, NULL, err);
            ok = rb != NULL;
            PQclear(rb);
        }
        json_decref(job);
        crm_error_clear(&one);
    }
    PQclear(due);
    /* The running campaigns whose end has come, their execution done
     * (nothing pending), complete; their responses go on being attributed
     * within each contact's window. */
    PGresult *ended = ok ? crm_db_exec(c, &ended_campaigns, 0, NULL, err) : NULL;
    ok = ended != NULL;
    for (int i = 0; ok && i < PQntuples(ended); i++) {
        long long id = atoll(PQgetvalue(ended, i, 0));
        json_t *doc = campaign_keep_version(c, id, 0, err);
        ok = doc != NULL;
        json_decref(doc);
        if (ok)
            crm_log(CRM_LOG_INFO, "campaign %lld: completed at its end", id);
    }
    PQclear(ended);
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    if (ok && *started > 0)
        crm_jobs_wake();
    return ok;
}

/* ---- the job ------------------------------------------------------------------------ */

/* What the job needs of its campaign. */
typedef struct campaign_run {
    long long id;
    char status[16], code[104], purpose[16], offer[104];
    bool has_offer, executed;
    char *channels[7];
    int nchannels;
    long long total;
} campaign_run;

static crm_stmt run_read = CRM_STMT(
    "campaign_run_read",
    "SELECT status, code, purpose, offer_code, executed_at IS NOT NULL,"
    " array_to_json(channels)::text, coalesce(audience_size, 0) FROM campaigns WHERE id = $1");

static void run_free(campaign_run *r)
{
    for (int i = 0; i < r->nchannels; i++)
        free(r->channels[i]);
    r->nchannels = 0;
}

static bool run_load(crm_conn *c, long long id, campaign_run *r, crm_error *err)
{
    run_free(r);
    memset(r, 0, sizeof *r);
    r->id = id;
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGresult *res = crm_db_exec(c, &run_read, 1, params, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return crm_error_set(err, CRM_E_NOT_FOUND, "the campaign is gone");
    }
    snprintf(r->status, sizeof r->status, "%s", PQgetvalue(res, 0, 0));
    snprintf(r->code, sizeof r->code, "%s", PQgetvalue(res, 0, 1));
    snprintf(r->purpose, sizeof r->purpose, "%s", PQgetvalue(res, 0, 2));
    r->has_offer = !PQgetisnull(res, 0, 3);
    snprintf(r->offer, sizeof r->offer, "%s", PQgetvalue(res, 0, 3));
    r->executed = PQgetvalue(res, 0, 4)[0] == 't';
    r->total = atoll(PQgetvalue(res, 0, 6));
    json_t *chans = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    PQclear(res);
    size_t i;
    json_t *v;
    bool ok = json_is_array(chans);
    json_array_foreach(chans, i, v)
    {
        if (r->nchannels < 7 && json_is_string(v) &&
            (r->channels[r->nchannels] = strdup(json_string_value(v))) != NULL)
            r->nchannels++;
        else
            ok = false;
    }
    json_decref(chans);
    return ok || crm_error_set(err, CRM_E_INTERNAL, "the campaign's channels could not be read");
}

/* Step 1: the audience into campaign_targets, once. */
static crm_stmt audience_lock =
    CRM_STMT("campaign_audience_lock",
             "SELECT executed_at IS NOT NULL, audience_segment_id, audience_rule_id,"
             " control_share::float8 FROM campaigns WHERE id = $1 FOR UPDATE");

/* The group of customer c.id of the campaign $1 (control_share $2). */
#define CAMPAIGN_GROUP                                                                             \
    "CASE WHEN ('x' || substr(md5(k.salt::text || ':' || c.id::text), 1, 15))::bit(60)::bigint"    \
    " < ($2::float8 * 1152921504606846976::float8)::bigint THEN 'control' ELSE 'treatment' END"

static crm_stmt audience_from_segment =
    CRM_STMT("campaign_audience_from_segment",
             "INSERT INTO campaign_targets (campaign_id, customer_id, grp)"
             " SELECT $1, c.id, " CAMPAIGN_GROUP " FROM campaigns k"
             " JOIN segment_memberships m ON m.segment_id = k.audience_segment_id"
             " JOIN customers c ON c.id = m.customer_id AND c.status = 'active' WHERE k.id = $1");

static crm_stmt audience_taken =
    CRM_STMT("campaign_audience_taken",
             "UPDATE campaigns SET executed_at = now(), audience_size ="
             " (SELECT count(*) FROM campaign_targets WHERE campaign_id = $1) WHERE id = $1");

static crm_stmt rule_condition = CRM_STMT(
    "campaign_rule_condition", "SELECT condition::text FROM treatment_rules WHERE id = $1");

/* The audience of a rule: its condition compiled to SQL, as a search is. */
static bool take_rule_audience(crm_conn *c, long long campaign, const char *rule_id,
                               const char *share, crm_error *err)
{
    const char *p[] = {rule_id};
    PGresult *res = crm_db_exec(c, &rule_condition, 1, p, err);
    if (res == NULL)
        return false;
    json_t *cond = PQntuples(res) == 1 ? json_loads(PQgetvalue(res, 0, 0), 0, NULL) : NULL;
    PQclear(res);
    crm_rule *rule = cond != NULL ? crm_rule_parse(cond, err) : NULL;
    json_decref(cond);
    if (rule == NULL)
        return err->code != CRM_OK ||
               crm_error_set(err, CRM_E_INTERNAL, "the audience's rule could not be read");
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    char cbuf[24];
    snprintf(cbuf, sizeof cbuf, "%lld", campaign);
    int pc = crm_sqlbuf_param(&s, cbuf), ps = crm_sqlbuf_param(&s, share);
    crm_sqlbuf_append(&s, "INSERT INTO campaign_targets (campaign_id, customer_id, grp) SELECT ");
    crm_sqlbuf_placeholder(&s, pc);
    crm_sqlbuf_append(&s, "::bigint, c.id, CASE WHEN ('x' || substr(md5(k.salt::text || ':' ||"
                          " c.id::text), 1, 15))::bit(60)::bigint < (");
    crm_sqlbuf_placeholder(&s, ps);
    crm_sqlbuf_append(&s, "::float8 * 1152921504606846976::float8)::bigint THEN 'control' ELSE"
                          " 'treatment' END FROM campaigns k, customers c WHERE k.id = ");
    crm_sqlbuf_placeholder(&s, pc);
    crm_sqlbuf_append(&s, "::bigint AND c.status = 'active' AND (");
    bool ok = crm_rule_sql(rule, &s, crm_wall_ms(), &arena, err);
    crm_sqlbuf_append(&s, ")");
    crm_rule_free(rule);
    if (ok && !crm_sqlbuf_ok(&s))
        ok = crm_error_set(err, CRM_E_INTERNAL, "the audience's statement could not be built");
    if (ok) { /* planned for its values, as a search is */
        PGresult *r = crm_db_exec_sql(c, crm_sqlbuf_text(&s), s.nparams, s.params, err);
        ok = r != NULL;
        PQclear(r);
    }
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    return ok;
}

static bool take_audience(crm_conn *c, long long id, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf, NULL};
    bool ok = crm_db_begin(c, err);
    PGresult *res = ok ? crm_db_exec(c, &audience_lock, 1, params, err) : NULL;
    ok = res != NULL && PQntuples(res) == 1;
    if (ok && PQgetvalue(res, 0, 0)[0] != 't') { /* not taken yet */
        char share[40];
        snprintf(share, sizeof share, "%s", PQgetvalue(res, 0, 3));
        params[1] = share;
        PGresult *r = NULL;
        if (!PQgetisnull(res, 0, 1)) {
            r = crm_db_exec(c, &audience_from_segment, 2, params, err);
            ok = r != NULL;
        } else {
            ok = take_rule_audience(c, id, PQgetvalue(res, 0, 2), share, err);
        }
        PQclear(r);
        PGresult *u = ok ? crm_db_exec(c, &audience_taken, 1, params, err) : NULL;
        ok = u != NULL && crm_campaign_results_moved(c, id, err);
        PQclear(u);
    }
    PQclear(res);
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    return ok;
}

/* Step 2: one batch. Its targets are not locked: one job at a time
 * executes a campaign (POST .../execute refuses while one is queued or
 * running; the jobs' runner gives a job to one process), and were two to
 * meet, a target still moves from pending once (the update's condition)
 * and is contacted once (the touchpoint's event id): the second's batch
 * would fail on the count, and roll back. */
static crm_stmt claim_batch = CRM_STMT(
    "campaign_claim_batch", "SELECT customer_id, grp FROM campaign_targets WHERE campaign_id = $1"
                            " AND customer_id > $3::bigint AND state = 'pending'"
                            " ORDER BY customer_id LIMIT $2");

static crm_stmt lock_customers =
    CRM_STMT("campaign_lock_customers", "SELECT id FROM customers WHERE id = ANY($1::bigint[])"
                                        " ORDER BY id FOR NO KEY UPDATE");

/* The contacted customers' touchpoints ($2 customers, $3 their consent
 * channels) of campaign $1 (code $4, purpose $5, offer $6) at $7 (epoch
 * ms); (customer, touchpoint) of each come back. Then every decision ($2
 * customers, $3 states, $4 reasons, $5 channels, $6 touchpoints) moves its
 * target from pending. Two statements: the update reads the touchpoints'
 * ids as a parameter, not by joining the insert's rows (a generic plan
 * joined them by a nested loop, n^2 comparisons a batch). */
static crm_stmt insert_contacts =
    CRM_STMT("campaign_insert_contacts",
             "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
             " event_id, campaign_id, purpose, offer_code)"
             " SELECT d.customer_id, CASE WHEN d.channel IN ('push', 'in_app') THEN 'mobile_app'"
             " ELSE d.channel END, 'campaign_contact', 'outbound',"
             " 'epoch'::timestamptz + $7::bigint * interval '1 millisecond', '" CAMPAIGN_SOURCE "',"
             " $1::bigint::text || '-' || d.customer_id::text, $4, $5, $6"
             " FROM unnest($2::bigint[], $3::text[]) AS d (customer_id, channel)"
             " ON CONFLICT (source, event_id) DO NOTHING RETURNING customer_id, id");

static crm_stmt update_targets = CRM_STMT(
    "campaign_update_targets",
    "UPDATE campaign_targets g SET state = d.state, reason = d.reason, channel = d.channel,"
    " touchpoint_id = d.touchpoint_id,"
    " decided_at = 'epoch'::timestamptz + $7::bigint * interval '1 millisecond'"
    " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[])"
    " AS d (customer_id, state, reason, channel, touchpoint_id)"
    " WHERE g.campaign_id = $1 AND g.customer_id = d.customer_id AND g.state = 'pending'");

/* Appends v to the array literal b ("{" ... "}"): NULL as NULL, text
 * quoted. */
static void literal_item(crm_bytebuf *b, const char *v, bool first)
{
    if (!first)
        crm_bytebuf_put_char(b, ',');
    if (v == NULL) {
        crm_bytebuf_put(b, "NULL", 4);
        return;
    }
    crm_bytebuf_put_char(b, '"');
    for (const char *s = v; *s; s++) {
        if (*s == '"' || *s == '\\')
            crm_bytebuf_put_char(b, '\\');
        crm_bytebuf_put_char(b, *s);
    }
    crm_bytebuf_put_char(b, '"');
}

/* The code of the first refusal of channel for f: what an excluded target
 * records. */
static const char *first_reason(const policy_set *ps, const contact_facts *f, const char *channel,
                                const char *purpose, long long now_ms)
{
    static const char *const codes[] = {"not_active", "no_consent", "consent_revoked",
                                        "cap_reached", "quiet_hours"};
    json_t *reasons = json_array();
    contact_allowed(ps, f, channel, purpose, 0, now_ms, reasons);
    const char *code = json_string_value(json_object_get(json_array_get(reasons, 0), "code"));
    const char *out = "no_consent";
    for (size_t i = 0; code != NULL && i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(codes[i], code) == 0)
            out = codes[i];
    json_decref(reasons);
    return out;
}

typedef struct batch_counts {
    long long after; /* in: the batch takes customers after this id; out: its last */
    long long decided, contacted;
} batch_counts;

/* One batch in one transaction: false with err; *n the targets decided
 * (0: none was pending after n->after). */
static bool decide_batch(crm_conn *c, const campaign_run *run, batch_counts *n, crm_error *err)
{
    n->decided = n->contacted = 0;
    char idbuf[24], limit[16], after[24];
    snprintf(idbuf, sizeof idbuf, "%lld", run->id);
    snprintf(limit, sizeof limit, "%d", BATCH);
    snprintf(after, sizeof after, "%lld", n->after);
    const char *cp[] = {idbuf, limit, after};
    if (!crm_db_begin(c, err))
        return false;
    PGresult *claimed = crm_db_exec(c, &claim_batch, 3, cp, err);
    int rows = claimed != NULL ? PQntuples(claimed) : 0;
    bool ok = claimed != NULL;
    long long *ids = NULL;
    bool *control = NULL;
    contact_facts *facts = NULL;
    treatments_config *k = NULL;
    char *idlist = NULL;
    if (ok && rows > 0) {
        ids = malloc(sizeof *ids * (size_t)rows);
        control = malloc(sizeof *control * (size_t)rows);
        facts = calloc((size_t)rows, sizeof *facts);
        ok = ids != NULL && control != NULL && facts != NULL;
        crm_bytebuf list;
        crm_bytebuf_init(&list);
        crm_bytebuf_put_char(&list, '{');
        for (int i = 0; ok && i < rows; i++) {
            ids[i] = atoll(PQgetvalue(claimed, i, 0));
            n->after = ids[i];
            control[i] = strcmp(PQgetvalue(claimed, i, 1), "control") == 0;
            char one[32];
            int len = snprintf(one, sizeof one, "%s%lld", i ? "," : "", ids[i]);
            crm_bytebuf_put(&list, one, (size_t)len);
        }
        crm_bytebuf_put_char(&list, '}');
        idlist = crm_bytebuf_take(&list, NULL);
        if (ok && idlist == NULL)
            ok = false;
        if (!ok)
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    if (ok && rows > 0) {
        const char *lp[] = {idlist};
        PGresult *locked = crm_db_exec(c, &lock_customers, 1, lp, err);
        ok = locked != NULL;
        PQclear(locked);
    }
    long long now_ms = crm_wall_ms(); /* after the locks, as a single decision */
    if (ok && rows > 0)
        ok = (k = treatments_config_of(c, -1, err)) != NULL &&
             contact_facts_load_many(c, treatments_config_policies(k), ids, rows, idlist, now_ms,
                                     facts, err);
    /* The decisions, as array literals: every target's state, reason and
     * channel; the contacted ones' customers and channels apart. */
    const char **use = rows > 0 ? calloc((size_t)rows, sizeof *use) : NULL;
    long long *tps = rows > 0 ? calloc((size_t)rows, sizeof *tps) : NULL;
    if (ok && rows > 0 && (use == NULL || tps == NULL))
        ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_bytebuf states, reasons, channels, cids, cchs;
    crm_bytebuf *lists[] = {&states, &reasons, &channels, &cids, &cchs};
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
        crm_bytebuf_init(lists[l]);
        crm_bytebuf_put_char(lists[l], '{');
    }
    for (int i = 0; ok && i < rows; i++) {
        const policy_set *ps = treatments_config_policies(k);
        for (int ch = 0; ch < run->nchannels && use[i] == NULL; ch++)
            if (contact_allowed(ps, &facts[i], run->channels[ch], run->purpose, 0, now_ms, NULL))
                use[i] = run->channels[ch];
        const char *state = use[i] == NULL ? "excluded" : control[i] ? "control" : "contacted";
        const char *reason =
            use[i] == NULL ? first_reason(ps, &facts[i], run->channels[0], run->purpose, now_ms)
                           : NULL;
        literal_item(&states, state, i == 0);
        literal_item(&reasons, reason, i == 0);
        literal_item(&channels, use[i], i == 0);
        if (use[i] != NULL && !control[i]) {
            char one[24];
            snprintf(one, sizeof one, "%lld", ids[i]);
            literal_item(&cids, one, n->contacted == 0);
            literal_item(&cchs, use[i], n->contacted == 0);
            n->contacted++;
        }
    }
    char *text[5];
    for (size_t l = 0; l < 5; l++) {
        crm_bytebuf_put_char(lists[l], '}');
        text[l] = crm_bytebuf_take(lists[l], NULL);
        if (ok && rows > 0 && text[l] == NULL)
            ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    char at[24];
    snprintf(at, sizeof at, "%lld", now_ms);
    PGresult *made = NULL;
    if (ok && n->contacted > 0) {
        const char *ip[] = {idbuf,     text[3],      text[4],
                            run->code, run->purpose, run->has_offer ? run->offer : NULL,
                            at};
        made = crm_db_exec(c, &insert_contacts, 7, ip, err);
        ok = made != NULL;
        if (ok && PQntuples(made) != n->contacted)
            ok = crm_error_set(err, CRM_E_INTERNAL,
                               "the campaign's batch recorded %d contacts of %lld", PQntuples(made),
                               n->contacted);
        for (int r = 0; ok && r < PQntuples(made); r++) {
            int i = contact_ids_index(ids, rows, atoll(PQgetvalue(made, r, 0)));
            if (i >= 0)
                tps[i] = atoll(PQgetvalue(made, r, 1));
        }
    }
    char *tplist = NULL;
    if (ok && rows > 0) {
        crm_bytebuf tl;
        crm_bytebuf_init(&tl);
        crm_bytebuf_put_char(&tl, '{');
        for (int i = 0; i < rows; i++) {
            char one[24];
            snprintf(one, sizeof one, "%lld", tps[i]);
            literal_item(&tl, tps[i] != 0 ? one : NULL, i == 0);
        }
        crm_bytebuf_put_char(&tl, '}');
        if ((tplist = crm_bytebuf_take(&tl, NULL)) == NULL)
            ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    if (ok && rows > 0) {
        const char *up[] = {idbuf, idlist, text[0], text[1], text[2], tplist, at};
        PGresult *res = crm_db_exec(c, &update_targets, 7, up, err);
        ok = res != NULL;
        if (ok && atoll(PQcmdTuples(res)) != rows)
            ok = crm_error_set(err, CRM_E_INTERNAL, "the campaign's batch moved %s targets of %d",
                               PQcmdTuples(res), rows);
        PQclear(res);
        /* The touchpoints' ids, in order, for the segments' queue. */
        int m = 0;
        for (int i = 0; i < rows; i++)
            if (tps[i] != 0)
                tps[m++] = tps[i];
        ok = ok && crm_segments_queue_touchpoints(c, tps, (size_t)m, err) &&
             crm_campaign_results_moved(c, run->id, err);
        n->decided = rows;
    }
    PQclear(made);
    free(tplist);
    for (size_t l = 0; l < 5; l++)
        free(text[l]);
    free(use);
    free(tps);

    for (int i = 0; facts != NULL && i < rows; i++)
        contact_facts_free(&facts[i]);
    free(facts);
    free(ids);
    free(control);
    free(idlist);
    treatments_config_release(k);
    PQclear(claimed);
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    return ok;
}

static crm_stmt run_counts = CRM_STMT(
    "campaign_run_counts",
    "SELECT count(*) FILTER (WHERE state = 'contacted'), count(*) FILTER (WHERE state ="
    " 'control'), count(*) FILTER (WHERE state = 'excluded'), count(*) FILTER (WHERE state ="
    " 'pending'), count(*) FROM campaign_targets WHERE campaign_id = $1");

static json_t *run_result(crm_conn *c, long long id, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGresult *res = crm_db_exec(c, &run_counts, 1, params, err);
    if (res == NULL)
        return NULL;
    json_t *doc = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "campaign_id", (json_int_t)id,
                            "audience", (json_int_t)atoll(PQgetvalue(res, 0, 4)), "contacted",
                            (json_int_t)atoll(PQgetvalue(res, 0, 0)), "control",
                            (json_int_t)atoll(PQgetvalue(res, 0, 1)), "excluded",
                            (json_int_t)atoll(PQgetvalue(res, 0, 2)), "pending",
                            (json_int_t)atoll(PQgetvalue(res, 0, 3)));
    PQclear(res);
    if (doc == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return doc;
}

static bool run_execute(crm_job_ctx *job, crm_error *err)
{
    crm_conn *c = crm_job_conn(job);
    long long id = json_integer_value(json_object_get(crm_job_params(job), "campaign_id"));
    campaign_run run = {0};
    bool ok = run_load(c, id, &run, err);
    /* A campaign cancelled (or completed) since stops being executed; what
     * was decided stays. */
    bool stop = ok && strcmp(run.status, "running") != 0;
    if (ok && !stop && !run.executed) {
        ok = crm_job_progress(job, "audience", 0, 0, NULL) ||
             crm_error_set(err, CRM_E_CONFLICT, "stopped");
        ok = ok && take_audience(c, id, err) && run_load(c, id, &run, err);
    }
    /* In customer order; when the end is reached, once more from the start
     * for any target a batch of another job skipped (and left pending). */
    long long done = 0, after = 0;
    bool again = false;
    while (ok && !stop) {
        batch_counts n = {.after = after};
        ok = decide_batch(c, &run, &n, err);
        if (ok && n.decided == 0 && after != 0 && !again) {
            after = 0;
            again = true;
            continue;
        }
        if (!ok || n.decided == 0)
            break;
        after = n.after;
        done += n.decided;
        if (!crm_job_progress(job, "decide", done, run.total, NULL))
            ok = crm_error_set(err, CRM_E_CONFLICT, "stopped");
        else if (!(ok = run_load(c, id, &run, err)))
            break;
        stop = strcmp(run.status, "running") != 0;
    }
    json_t *result = ok ? run_result(c, id, err) : NULL;
    if (result != NULL)
        crm_job_set_result(job, result);
    run_free(&run);
    return result != NULL;
}

const crm_job_kind crm_campaign_execute_kind = {"campaign_execute", run_execute,
                                                CRM_SCOPE_CAMPAIGNS_READ};

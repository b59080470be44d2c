/*
 * campaigns/execute.c — executing a campaign (campaigns.h, migration 0026):
 * POST /v1/campaigns/{id}/execute queues a job of kind campaign_execute and
 * moves the campaign to running in one transaction; the job
 *
 *   1. takes the audience as it is at that moment into campaign_audience,
 *      once (the campaign's row locked; executed_at says it is done): the
 *      customers' ids in ascending order, CHUNK to a row (migration 0028);
 *   2. decides the chunks, each in one transaction: the first chunk not
 *      taken by another executor (FOR UPDATE SKIP LOCKED), each customer
 *      in the treatment or the control group (control when the first 60
 *      bits of md5(salt:customer_id), as a fraction of 2^60, fall below
 *      control_share: the same customer always lands in the same group for
 *      a campaign), the customers locked FOR NO KEY UPDATE in id order
 *      (the lock of the contact decision and of the segments' upkeep),
 *      their facts read in one statement, and each judged by
 *      contact_allowed, the check of POST /v1/customers/{id}/contacts, on
 *      the campaign's channels in order: the first that allows is used. A
 *      treatment target is contacted (its campaign_contact touchpoint
 *      written), a control target held out; one that no channel allows is
 *      excluded with the first channel's first reason. The targets are
 *      then written, decided, by the statement that deletes the chunk. The
 *      new touchpoints go to the segments' queue, as a batch's do.
 *
 * A target is decided once: its chunk is deleted in the transaction that
 * writes it and its touchpoint, by the one executor holding the chunk's
 * lock; (campaign, customer) is the targets' key, and the touchpoint's
 * (source, event_id) is the campaign's and the customer's
 * ("crmd:campaign", "<campaign id>-<customer id>"; the touchpoint APIs
 * refuse sources beginning "crmd:"), so a second write of either fails the
 * chunk rather than contact anyone twice. A job killed midway leaves its
 * chunk in place; the jobs' runner gives the job to another process when
 * its lease runs out, and it goes on with the chunks left: nobody is
 * contacted twice or skipped.
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

#define CHUNK 2000
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
    " campaign_audience a WHERE a.campaign_id = campaigns.id)"
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
    char channels_literal[128]; /* the channels as a text[] literal */
    long long total;
} campaign_run;

static crm_stmt run_read =
    CRM_STMT("campaign_run_read",
             "SELECT status, code, purpose, offer_code, executed_at IS NOT NULL,"
             " array_to_json(channels)::text, coalesce(audience_size, 0), channels::text"
             " FROM campaigns WHERE id = $1");

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
    bool fits = strlen(PQgetvalue(res, 0, 7)) < sizeof r->channels_literal;
    snprintf(r->channels_literal, sizeof r->channels_literal, "%s", PQgetvalue(res, 0, 7));
    json_t *chans = json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    PQclear(res);
    size_t i;
    json_t *v;
    bool ok = json_is_array(chans) && fits;
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

/* Step 1: the audience into campaign_audience, once. */
static crm_stmt audience_lock =
    CRM_STMT("campaign_audience_lock",
             "SELECT executed_at IS NOT NULL, audience_segment_id, audience_rule_id"
             " FROM campaigns WHERE id = $1 FOR UPDATE");

/* Chunks of $2 ids of the audience (rows "c.id" of the FROM that follows),
 * in ascending order, as campaign $1's. */
#define CHUNKS_OF                                                                                  \
    "INSERT INTO campaign_audience (campaign_id, chunk, customer_ids)"                             \
    " SELECT $1::bigint, (n - 1) / $2::int, array_agg(id ORDER BY id)"                             \
    " FROM (SELECT c.id, row_number() OVER (ORDER BY c.id) AS n"

/* A segment's audience is its members ($3 the segment): only active
 * customers are members, and one who is no longer active when its chunk
 * is decided (it is read then, under its lock) is excluded as not active.
 * Run once per campaign, so planned for its values: a prepared
 * statement's generic plan would guess a few thousand members. */
static const char audience_from_segment[] =
    CHUNKS_OF " FROM (SELECT customer_id AS id FROM segment_memberships"
              " WHERE segment_id = $3::bigint) c) a GROUP BY 2";

/* The memory the audience's sorts and hash may take (a million ids sort
 * in some 80 MB): on disk, they take twice as long. */
static const char audience_memory[] = "SET LOCAL work_mem = '128MB'";

static crm_stmt audience_taken = CRM_STMT(
    "campaign_audience_taken",
    "UPDATE campaigns SET executed_at = now(), audience_size = (SELECT"
    " coalesce(sum(cardinality(customer_ids)), 0) FROM campaign_audience WHERE campaign_id = $1)"
    " WHERE id = $1");

static crm_stmt rule_condition = CRM_STMT(
    "campaign_rule_condition", "SELECT condition::text FROM treatment_rules WHERE id = $1");

/* The audience of a rule: its condition compiled to SQL, as a search is. */
static bool take_rule_audience(crm_conn *c, const char *campaign, const char *rule_id,
                               crm_error *err)
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
    char chunk[16];
    snprintf(chunk, sizeof chunk, "%d", CHUNK);
    /* CHUNKS_OF numbers its parameters $1 and $2: they are the first two */
    crm_sqlbuf_param(&s, campaign);
    crm_sqlbuf_param(&s, chunk);
    crm_sqlbuf_append(&s, CHUNKS_OF " FROM customers c WHERE c.status = 'active' AND (");
    bool ok = crm_rule_sql(rule, &s, crm_wall_ms(), &arena, err);
    crm_sqlbuf_append(&s, ")) a GROUP BY 2");
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
    char idbuf[24], chunk[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(chunk, sizeof chunk, "%d", CHUNK);
    const char *params[] = {idbuf, chunk};
    bool ok = crm_db_begin(c, err);
    PGresult *res = ok ? crm_db_exec(c, &audience_lock, 1, params, err) : NULL;
    ok = res != NULL && PQntuples(res) == 1;
    if (ok && PQgetvalue(res, 0, 0)[0] != 't') { /* not taken yet */
        PGresult *r = crm_db_exec_sql(c, audience_memory, 0, NULL, err);
        ok = r != NULL;
        PQclear(r);
        if (ok && !PQgetisnull(res, 0, 1)) {
            const char *sp[] = {idbuf, chunk, PQgetvalue(res, 0, 1)};
            r = crm_db_exec_sql(c, audience_from_segment, 3, sp, err);
            ok = r != NULL;
            PQclear(r);
        } else if (ok) {
            ok = take_rule_audience(c, idbuf, PQgetvalue(res, 0, 2), err);
        }
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

/* Step 2: one chunk. It is taken with its customers' groups and the
 * policies' stamp (chunk, id, control, stamp), its row locked (another
 * executor skips it); none while the campaign is not running (cancelled
 * meanwhile: it stops being executed). Customers not found (none is ever
 * deleted) are judged as not active. */
static crm_stmt claim_chunk =
    CRM_STMT("campaign_claim_chunk",
             "WITH a AS (SELECT chunk, customer_ids FROM campaign_audience WHERE campaign_id = $1"
             " ORDER BY chunk LIMIT 1 FOR UPDATE SKIP LOCKED)"
             " SELECT a.chunk, u.id, ('x' || substr(md5(k.salt::text || ':' || u.id::text), 1, 15))"
             "::bit(60)::bigint < (k.control_share::float8 * 1152921504606846976::float8)::bigint,"
             " (SELECT stamp FROM treatment_config WHERE id = 1)"
             " FROM a CROSS JOIN LATERAL unnest(a.customer_ids) WITH ORDINALITY AS u (id, i)"
             " JOIN campaigns k ON k.id = $1 AND k.status = 'running' ORDER BY u.i");

static crm_stmt lock_customers = CRM_STMT(
    "campaign_lock_customers", "SELECT id, status FROM customers WHERE id = ANY($1::bigint[])"
                               " ORDER BY id FOR NO KEY UPDATE");

/* The contacted customers' touchpoints ($2 customers, $3 their consent
 * channels) of campaign $1 (code $4, purpose $5, offer $6) at $7 (epoch
 * ms); (customer, touchpoint) of each come back. A touchpoint already
 * there for the event fails the chunk. */
static crm_stmt insert_contacts =
    CRM_STMT("campaign_insert_contacts",
             "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
             " event_id, campaign_id, purpose, offer_code)"
             " SELECT d.customer_id, CASE WHEN d.channel IN ('push', 'in_app') THEN 'mobile_app'"
             " ELSE d.channel END, 'campaign_contact', 'outbound',"
             " 'epoch'::timestamptz + $7::bigint * interval '1 millisecond', '" CAMPAIGN_SOURCE "',"
             " $1::bigint::text || '-' || d.customer_id::text, $4, $5, $6"
             " FROM unnest($2::bigint[], $3::text[]) AS d (customer_id, channel)"
             " RETURNING customer_id, id");

/* Chunk $8 of campaign $1 deleted and its targets written, decided ($2
 * customers, $3 groups, $4 states, $5 reasons, $6 channels, $7
 * touchpoints; decided at $9, epoch ms): none when the chunk is no longer
 * there. Two statements with the touchpoints': this one reads their ids
 * as a parameter, not by joining the insert's rows (a generic plan joined
 * them by a nested loop, n^2 comparisons a chunk). */
static crm_stmt write_targets = CRM_STMT(
    "campaign_write_targets",
    "WITH gone AS (DELETE FROM campaign_audience WHERE campaign_id = $1 AND chunk = $8::int"
    " RETURNING chunk)"
    " INSERT INTO campaign_targets (campaign_id, customer_id, grp, state, reason, channel,"
    " touchpoint_id, decided_at)"
    " SELECT $1, d.customer_id, d.grp, d.state, d.reason, d.channel, d.touchpoint_id,"
    " 'epoch'::timestamptz + $9::bigint * interval '1 millisecond'"
    " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])"
    " AS d (customer_id, grp, state, reason, channel, touchpoint_id)"
    " WHERE EXISTS (SELECT FROM gone)");

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

/* A chunk being decided: its customers (ascending) and their groups, the
 * facts read of them, and the decisions as array literals. */
typedef struct chunk {
    int rows;
    long long *ids, *tps;
    bool *control;
    char *idlist;
    contact_facts *facts;
    long long contacted;
} chunk;

static void chunk_free(chunk *ch)
{
    for (int i = 0; ch->facts != NULL && i < ch->rows; i++)
        contact_facts_free(&ch->facts[i]);
    free(ch->facts);
    free(ch->ids);
    free(ch->tps);
    free(ch->control);
    free(ch->idlist);
    memset(ch, 0, sizeof *ch);
}

/* ch from the claim's rows (chunk, id, control); the chunk's number in
 * *number. */
static bool chunk_read(const PGresult *claimed, chunk *ch, char *number, size_t size,
                       crm_error *err)
{
    int rows = PQntuples(claimed);
    ch->rows = rows;
    ch->ids = malloc(sizeof *ch->ids * (size_t)rows);
    ch->tps = calloc((size_t)rows, sizeof *ch->tps);
    ch->control = malloc(sizeof *ch->control * (size_t)rows);
    ch->facts = calloc((size_t)rows, sizeof *ch->facts);
    if (ch->ids == NULL || ch->tps == NULL || ch->control == NULL || ch->facts == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    snprintf(number, size, "%s", PQgetvalue(claimed, 0, 0));
    crm_bytebuf list;
    crm_bytebuf_init(&list);
    crm_bytebuf_put_char(&list, '{');
    for (int i = 0; i < rows; i++) {
        ch->ids[i] = atoll(PQgetvalue(claimed, i, 1));
        ch->control[i] = PQgetvalue(claimed, i, 2)[0] == 't';
        char one[32];
        int len = snprintf(one, sizeof one, "%s%lld", i ? "," : "", ch->ids[i]);
        crm_bytebuf_put(&list, one, (size_t)len);
    }
    crm_bytebuf_put_char(&list, '}');
    if ((ch->idlist = crm_bytebuf_take(&list, NULL)) == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return true;
}

/* Each target judged on the campaign's channels in order (the first that
 * allows is used): the decisions as array literals text[0..3]: groups,
 * states, reasons, channels; text[4..5] the contacted ones' customers and
 * channels. */
static bool chunk_judge(const campaign_run *run, const policy_set *ps, long long now_ms, chunk *ch,
                        char *text[6], crm_error *err)
{
    crm_bytebuf lists[6];
    for (size_t l = 0; l < 6; l++) {
        crm_bytebuf_init(&lists[l]);
        crm_bytebuf_put_char(&lists[l], '{');
    }
    ch->contacted = 0;
    for (int i = 0; i < ch->rows; i++) {
        const contact_facts *f = &ch->facts[i];
        const char *use = NULL;
        for (int c = 0; c < run->nchannels && use == NULL; c++)
            if (contact_allowed(ps, f, run->channels[c], run->purpose, 0, now_ms, NULL))
                use = run->channels[c];
        crm_bytebuf_put_array_item(&lists[0], ch->control[i] ? "control" : "treatment", i == 0);
        crm_bytebuf_put_array_item(&lists[1],
                                   use == NULL      ? "excluded"
                                   : ch->control[i] ? "control"
                                                    : "contacted",
                                   i == 0);
        crm_bytebuf_put_array_item(
            &lists[2],
            use == NULL ? first_reason(ps, f, run->channels[0], run->purpose, now_ms) : NULL,
            i == 0);
        crm_bytebuf_put_array_item(&lists[3], use, i == 0);
        if (use != NULL && !ch->control[i]) {
            char one[24];
            snprintf(one, sizeof one, "%lld", ch->ids[i]);
            crm_bytebuf_put_array_item(&lists[4], one, ch->contacted == 0);
            crm_bytebuf_put_array_item(&lists[5], use, ch->contacted == 0);
            ch->contacted++;
        }
    }
    bool ok = true;
    for (size_t l = 0; l < 6; l++) {
        crm_bytebuf_put_char(&lists[l], '}');
        if ((text[l] = crm_bytebuf_take(&lists[l], NULL)) == NULL)
            ok = false;
    }
    return ok || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
}

/* The contacted targets' touchpoints written; their ids into ch->tps. */
static bool chunk_contact(crm_conn *c, const campaign_run *run, const char *idbuf, const char *at,
                          chunk *ch, char *text[6], crm_error *err)
{
    if (ch->contacted == 0)
        return true;
    const char *ip[] = {
        idbuf, text[4], text[5], run->code, run->purpose, run->has_offer ? run->offer : NULL, at};
    PGresult *made = crm_db_exec(c, &insert_contacts, 7, ip, err);
    bool ok = made != NULL;
    if (ok && PQntuples(made) != ch->contacted)
        ok = crm_error_set(err, CRM_E_INTERNAL, "the campaign's chunk recorded %d contacts of %lld",
                           PQntuples(made), ch->contacted);
    for (int r = 0; ok && r < PQntuples(made); r++) {
        int i = contact_ids_index(ch->ids, ch->rows, atoll(PQgetvalue(made, r, 0)));
        if (i >= 0)
            ch->tps[i] = atoll(PQgetvalue(made, r, 1));
    }
    PQclear(made);
    return ok;
}

/* The targets written and the chunk deleted. */
static bool chunk_write(crm_conn *c, const char *idbuf, const char *number, const char *at,
                        chunk *ch, char *text[6], crm_error *err)
{
    crm_bytebuf tl;
    crm_bytebuf_init(&tl);
    crm_bytebuf_put_char(&tl, '{');
    for (int i = 0; i < ch->rows; i++) {
        char one[24];
        snprintf(one, sizeof one, "%lld", ch->tps[i]);
        crm_bytebuf_put_array_item(&tl, ch->tps[i] != 0 ? one : NULL, i == 0);
    }
    crm_bytebuf_put_char(&tl, '}');
    char *tplist = crm_bytebuf_take(&tl, NULL);
    if (tplist == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    const char *wp[] = {idbuf, ch->idlist, text[0], text[1], text[2], text[3], tplist, number, at};
    PGresult *res = crm_db_exec(c, &write_targets, 9, wp, err);
    free(tplist);
    bool ok = res != NULL;
    if (ok && atoll(PQcmdTuples(res)) != ch->rows)
        ok = crm_error_set(err, CRM_E_INTERNAL, "the campaign's chunk wrote %s targets of %d",
                           PQcmdTuples(res), ch->rows);
    PQclear(res);
    return ok;
}

/* One chunk in one transaction: false with err; *decided its targets, 0
 * when no chunk was left to take. */
static bool decide_chunk(crm_conn *c, const campaign_run *run, long long *decided, crm_error *err)
{
    *decided = 0;
    char idbuf[24], number[16], at[24];
    snprintf(idbuf, sizeof idbuf, "%lld", run->id);
    const char *cp[] = {idbuf};
    if (!crm_db_begin(c, err))
        return false;
    PGresult *claimed = crm_db_exec(c, &claim_chunk, 1, cp, err);
    bool ok = claimed != NULL;
    chunk ch = {0};
    treatments_config *k = NULL;
    char *text[6] = {0};
    if (ok && PQntuples(claimed) > 0) {
        ok = chunk_read(claimed, &ch, number, sizeof number, err);
        /* The customers' statuses come with their locks. */
        PGresult *locked = NULL;
        if (ok) {
            const char *lp[] = {ch.idlist};
            locked = crm_db_exec(c, &lock_customers, 1, lp, err);
            ok = locked != NULL;
        }
        long long now_ms = crm_wall_ms(); /* after the locks, as a single decision */
        snprintf(at, sizeof at, "%lld", now_ms);
        contact_facts_scope scope = {run->channels_literal, run->purpose};
        ok = ok && (k = treatments_config_of(c, atoll(PQgetvalue(claimed, 0, 3)), err)) != NULL &&
             contact_facts_load_many(c, treatments_config_policies(k), ch.ids, ch.rows, ch.idlist,
                                     &scope, now_ms, ch.facts, err);
        for (int r = 0; ok && r < PQntuples(locked); r++) {
            int i = contact_ids_index(ch.ids, ch.rows, atoll(PQgetvalue(locked, r, 0)));
            if (i >= 0) {
                ch.facts[i].exists = true;
                ch.facts[i].active = strcmp(PQgetvalue(locked, r, 1), "active") == 0;
            }
        }
        PQclear(locked);
        ok = ok && chunk_judge(run, treatments_config_policies(k), now_ms, &ch, text, err) &&
             chunk_contact(c, run, idbuf, at, &ch, text, err) &&
             chunk_write(c, idbuf, number, at, &ch, text, err);
        /* The touchpoints' ids, in order, for the segments' queue. */
        int m = 0;
        for (int i = 0; ok && i < ch.rows; i++)
            if (ch.tps[i] != 0)
                ch.tps[m++] = ch.tps[i];
        ok = ok && crm_segments_queue_touchpoints(c, ch.tps, (size_t)m, err) &&
             crm_campaign_results_moved(c, run->id, err);
        *decided = ch.rows;
    }
    for (size_t l = 0; l < 6; l++)
        free(text[l]);
    chunk_free(&ch);
    treatments_config_release(k);
    PQclear(claimed);
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    return ok;
}

/* What is left to decide of campaign $1's audience. */
#define PENDING_OF                                                                                 \
    "(SELECT coalesce(sum(cardinality(customer_ids)), 0) FROM campaign_audience"                   \
    " WHERE campaign_id = $1)"

static crm_stmt run_counts =
    CRM_STMT("campaign_run_counts",
             "SELECT count(*) FILTER (WHERE state = 'contacted'), count(*) FILTER (WHERE state ="
             " 'control'), count(*) FILTER (WHERE state = 'excluded'), " PENDING_OF
             ", count(*) + " PENDING_OF " FROM campaign_targets WHERE campaign_id = $1");

static crm_stmt run_pending = CRM_STMT("campaign_run_pending", "SELECT " PENDING_OF);

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
    /* Chunk after chunk, until none is left that another executor does
     * not hold. */
    long long done = 0;
    if (ok && !stop) {
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        const char *params[] = {idbuf};
        PGresult *res = crm_db_exec(c, &run_pending, 1, params, err);
        ok = res != NULL;
        if (ok)
            done = run.total - atoll(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    /* Progress is reported (and the lease renewed) about once a second. */
    long long reported = crm_monotonic_ms();
    while (ok && !stop) {
        long long decided = 0;
        ok = decide_chunk(c, &run, &decided, err);
        if (!ok || decided == 0)
            break;
        done += decided;
        if (crm_monotonic_ms() - reported < 1000)
            continue;
        reported = crm_monotonic_ms();
        if (!crm_job_progress(job, "decide", done, run.total, NULL))
            ok = crm_error_set(err, CRM_E_CONFLICT, "stopped");
    }
    if (ok && !stop && !crm_job_progress(job, "decide", done, run.total, NULL))
        ok = crm_error_set(err, CRM_E_CONFLICT, "stopped");
    json_t *result = ok ? run_result(c, id, err) : NULL;
    if (result != NULL)
        crm_job_set_result(job, result);
    run_free(&run);
    return result != NULL;
}

const crm_job_kind crm_campaign_execute_kind = {"campaign_execute", run_execute,
                                                CRM_SCOPE_CAMPAIGNS_READ};

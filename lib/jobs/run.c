/*
 * jobs/run.c — claiming a job, running it, and recording how it went.
 *
 * A claim is one UPDATE of the oldest runnable row, picked with FOR UPDATE
 * SKIP LOCKED, so processes side by side never take the same job. The claim
 * bumps attempts; claimed_by and attempts together are the claim's token,
 * and every later write of the run (progress, the ending) names both: a job
 * whose lease ran out and was taken over, even by another thread of the
 * same process, no longer answers to the old run, which learns so at its
 * next crm_job_progress.
 *
 * The executor does its work on a connection of its own (crm_job_conn),
 * often inside a long transaction there; progress and the ending therefore
 * go through the request pool, each one short autocommit statement, so that
 * they are seen at once and never wait for the work's transaction.
 */
#include "clock.h"
#include "internal.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Running jobs past their lease that must not run again end here: cancelled
 * ones "cancelled", those tried often enough "failed". Rows another
 * statement holds are left for the next round. */
static crm_stmt settle_expired = CRM_STMT(
    "jobs_settle_expired",
    "UPDATE jobs SET "
    "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, "
    "error = CASE WHEN cancel_requested THEN NULL ELSE jsonb_build_object('code', 'abandoned', "
    "'detail', 'abandoned after ' || attempts || ' attempts') END, "
    "lease_until = NULL, finished_at = now(), updated_at = now() "
    "WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < now() "
    "AND (cancel_requested OR attempts >= $1::int) FOR UPDATE SKIP LOCKED)");
/* The oldest queued job, or running one whose lease ran out, of the kinds
 * this process knows ($1, a text[]). */
static crm_stmt claim_job =
    CRM_STMT("jobs_claim",
             "UPDATE jobs SET state = 'running', claimed_by = $2, attempts = attempts + 1, "
             "lease_until = now() + make_interval(secs => $3::int), "
             "started_at = coalesce(started_at, now()), updated_at = now() "
             "WHERE id = (SELECT id FROM jobs WHERE kind = ANY ($1::text[]) "
             "AND state IN ('queued', 'running') AND (state = 'queued' OR (lease_until < now() "
             "AND attempts < $4::int AND NOT cancel_requested)) "
             "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
             "RETURNING id, kind, params::text, checkpoint::text, attempts");

/* The claim's token: $1 id, $2 claimed_by, $3 attempts. */
#define OWNED "id = $1::bigint AND claimed_by = $2 AND attempts = $3::int AND state = 'running'"

static crm_stmt record_progress =
    CRM_STMT("jobs_progress",
             "UPDATE jobs SET phase = coalesce($4, phase), done = $5::bigint, total = $6::bigint, "
             "checkpoint = coalesce($7::jsonb, checkpoint), "
             "lease_until = now() + make_interval(secs => $8::int), updated_at = now() "
             "WHERE " OWNED " AND NOT cancel_requested RETURNING 1");
static crm_stmt end_succeeded =
    CRM_STMT("jobs_end_succeeded", "UPDATE jobs SET state = 'succeeded', result = $4::jsonb, "
                                   "lease_until = NULL, finished_at = now(), updated_at = now() "
                                   "WHERE " OWNED " RETURNING state");
static crm_stmt end_failed = CRM_STMT(
    "jobs_end_failed",
    "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, "
    "error = CASE WHEN cancel_requested THEN NULL ELSE $4::jsonb END, "
    "lease_until = NULL, finished_at = now(), updated_at = now() "
    "WHERE " OWNED " RETURNING state");
/* Back to the queue, the checkpoint kept; $4 is 1 when this attempt does
 * not count (the process stopped it), 0 when it does. */
static crm_stmt end_requeued = CRM_STMT(
    "jobs_end_requeued",
    "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, "
    "attempts = CASE WHEN cancel_requested THEN attempts ELSE attempts - $4::int END, "
    "finished_at = CASE WHEN cancel_requested THEN now() END, "
    "claimed_by = NULL, lease_until = NULL, updated_at = now() "
    "WHERE " OWNED " RETURNING state");

struct crm_job_ctx {
    const crm_jobs_config *cfg;
    const crm_job_kind *kind;
    crm_conn *conn;
    long long id;
    int attempts; /* this claim's, the token with cfg->worker */
    char id_text[24], attempts_text[16];
    json_t *params;         /* owned */
    json_t *checkpoint;     /* owned; NULL on a fresh start */
    json_t *result;         /* owned; set by the executor */
    long long lease_end_ms; /* monotonic: until when the lease is surely ours */
};

crm_conn *crm_job_conn(crm_job_ctx *job)
{
    return job->conn;
}

crm_conn *crm_job_open_conn(crm_job_ctx *job, crm_error *err)
{
    return crm_db_open_private(&job->cfg->db, err);
}

long long crm_job_id(const crm_job_ctx *job)
{
    return job->id;
}

const json_t *crm_job_params(const crm_job_ctx *job)
{
    return job->params;
}

const json_t *crm_job_checkpoint(const crm_job_ctx *job)
{
    return job->checkpoint;
}

void crm_job_set_result(crm_job_ctx *job, json_t *result)
{
    json_decref(job->result);
    job->result = result;
}

static bool stopping(const crm_jobs_config *cfg)
{
    return cfg->stop != NULL && atomic_load(cfg->stop);
}

static const char *worker_of(const crm_jobs_config *cfg)
{
    return cfg->worker != NULL ? cfg->worker : "crmd";
}

/* ---- progress -------------------------------------------------------------- */

/* Whether a job whose progress could not be written goes on: only when the
 * database was unreachable for a moment and the lease has time left (past
 * it another process may have taken the job over). Anything else is a bug
 * of the executor's (a checkpoint PostgreSQL refuses) and stops it. */
static bool continue_unrecorded(const crm_job_ctx *job, const crm_error *err)
{
    bool go_on = err->code == CRM_E_UNAVAILABLE && crm_monotonic_ms() < job->lease_end_ms;
    crm_log(CRM_LOG_WARN, "job %lld: progress not recorded (%s)%s", job->id,
            crm_errcode_name(err->code), go_on ? "" : "; stopping it");
    return go_on;
}

bool crm_job_progress(crm_job_ctx *job, const char *phase, long long done, long long total,
                      const json_t *checkpoint)
{
    char *saved = NULL;
    if (checkpoint != NULL &&
        (saved = json_dumps(checkpoint, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
        crm_log(CRM_LOG_ERROR, "job %lld: out of memory writing its checkpoint", job->id);
        return false;
    }
    char done_text[24], total_text[24], lease[16];
    snprintf(done_text, sizeof done_text, "%lld", done > 0 ? done : 0);
    snprintf(total_text, sizeof total_text, "%lld", total > 0 ? total : 0);
    snprintf(lease, sizeof lease, "%d", job->cfg->lease_s);
    const char *values[] = {
        job->id_text, worker_of(job->cfg), job->attempts_text, phase, done_text, total_text, saved,
        lease};
    long long sent_ms = crm_monotonic_ms();
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_run(&record_progress, 8, values, &err);
    free(saved);
    if (res == NULL) {
        bool go_on = continue_unrecorded(job, &err);
        crm_error_clear(&err);
        return go_on && !stopping(job->cfg);
    }
    bool owned = PQntuples(res) == 1;
    PQclear(res);
    if (!owned) {
        crm_log(CRM_LOG_INFO, "job %lld: cancelled or taken over; its run stops", job->id);
        return false;
    }
    /* The server's now() came after sent_ms: the lease lasts at least this. */
    job->lease_end_ms = sent_ms + job->cfg->lease_s * 1000LL;
    return !stopping(job->cfg);
}

/* ---- the lease kept while the executor works ---------------------------- */

static crm_stmt renew_lease =
    CRM_STMT("jobs_renew_lease",
             "UPDATE jobs SET lease_until = now() + make_interval(secs => $4::int) "
             "WHERE " OWNED " AND NOT cancel_requested RETURNING 1");

struct crm_job_keeper {
    crm_job_ctx *job;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on the monotonic clock */
    bool stop;
};

/* Renews the lease every third of it until stopped, or until the job is no
 * longer this claim's (then the executor's next progress learns it). Reads
 * only what does not change while the job runs. */
static void *keep_lease(void *arg)
{
    crm_job_keeper *k = arg;
    crm_job_ctx *job = k->job;
    char lease[16];
    snprintf(lease, sizeof lease, "%d", job->cfg->lease_s);
    int every_ms = job->cfg->lease_s * 1000 / 3;
    pthread_mutex_lock(&k->mu);
    while (!k->stop) {
        struct timespec until = crm_monotonic_after_ms(every_ms);
        while (!k->stop && pthread_cond_timedwait(&k->cv, &k->mu, &until) == 0)
            ;
        if (k->stop)
            break;
        pthread_mutex_unlock(&k->mu);
        const char *values[] = {job->id_text, worker_of(job->cfg), job->attempts_text, lease};
        crm_error err = CRM_ERROR_INIT;
        PGresult *res = crm_db_run(&renew_lease, 4, values, &err);
        bool owned = res == NULL || PQntuples(res) == 1; /* unavailable: try again */
        PQclear(res);
        crm_error_clear(&err);
        pthread_mutex_lock(&k->mu);
        if (!owned)
            break;
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

crm_job_keeper *crm_job_keep_lease(crm_job_ctx *job)
{
    crm_job_keeper *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    k->job = job;
    pthread_mutex_init(&k->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cv, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&k->thread, NULL, keep_lease, k) != 0) {
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return NULL;
    }
    return k;
}

void crm_job_keeper_stop(crm_job_keeper *k)
{
    if (k == NULL)
        return;
    pthread_mutex_lock(&k->mu);
    k->stop = true;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

/* ---- claiming -------------------------------------------------------------- */

static bool settle(crm_error *err)
{
    char max[16];
    snprintf(max, sizeof max, "%d", CRM_JOB_MAX_ATTEMPTS);
    const char *values[] = {max};
    PGresult *res = crm_db_run(&settle_expired, 1, values, err);
    if (res == NULL)
        return false;
    long n = atol(PQcmdTuples(res));
    PQclear(res);
    if (n > 0)
        crm_log(CRM_LOG_WARN,
                "jobs: %ld running jobs past their lease ended (cancelled, or tried "
                "%d times)",
                n, CRM_JOB_MAX_ATTEMPTS);
    return true;
}

/* Claims a job into *job (cfg, ids, kind, params, checkpoint); false with
 * err when the database failed, false without when there was none. */
static bool claim(const crm_jobs_config *cfg, const char *kinds, crm_job_ctx *job, crm_error *err)
{
    char lease[16], max[16];
    snprintf(lease, sizeof lease, "%d", cfg->lease_s);
    snprintf(max, sizeof max, "%d", CRM_JOB_MAX_ATTEMPTS);
    const char *values[] = {kinds, worker_of(cfg), lease, max};
    long long sent_ms = crm_monotonic_ms();
    PGresult *res = crm_db_run(&claim_job, 4, values, err);
    if (res == NULL || PQntuples(res) == 0) {
        PQclear(res);
        return false;
    }
    job->cfg = cfg;
    job->id = atoll(PQgetvalue(res, 0, 0));
    job->kind = crm_jobs_kind(PQgetvalue(res, 0, 1));
    job->params = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
    job->checkpoint =
        PQgetisnull(res, 0, 3) ? NULL : json_loads(PQgetvalue(res, 0, 3), JSON_DECODE_ANY, NULL);
    job->attempts = atoi(PQgetvalue(res, 0, 4));
    job->lease_end_ms = sent_ms + cfg->lease_s * 1000LL;
    snprintf(job->id_text, sizeof job->id_text, "%lld", job->id);
    snprintf(job->attempts_text, sizeof job->attempts_text, "%d", job->attempts);
    PQclear(res);
    return true;
}

/* ---- ending ------------------------------------------------------------------ */

/* Runs one of the ending statements for the claim with extra ($4); logs how
 * the job ended, or that it was no longer this run's. */
static void end_run(crm_job_ctx *job, crm_stmt *stmt, const char *extra)
{
    const char *values[] = {job->id_text, worker_of(job->cfg), job->attempts_text, extra};
    crm_error err = CRM_ERROR_INIT;
    PGresult *res = crm_db_run(stmt, 4, values, &err);
    if (res == NULL) {
        /* It stays "running" until its lease runs out; then it is claimed
         * again (or settled) like the job of a process that died. */
        crm_log(CRM_LOG_WARN, "job %lld: its end was not recorded (%s)", job->id,
                crm_errcode_name(err.code));
        crm_error_clear(&err);
        return;
    }
    if (PQntuples(res) == 1)
        crm_log(CRM_LOG_INFO, "job %lld (%s): %s after attempt %d", job->id,
                job->kind != NULL ? job->kind->name : "?", PQgetvalue(res, 0, 0), job->attempts);
    else
        crm_log(CRM_LOG_INFO, "job %lld: no longer this run's; its end is not recorded", job->id);
    PQclear(res);
}

static void end_succeeded_with(crm_job_ctx *job)
{
    char *result = NULL;
    if (job->result != NULL &&
        (result = json_dumps(job->result, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
        end_run(job, &end_failed,
                "{\"code\": \"internal-error\", \"detail\": \"out of memory storing the result\"}");
        return;
    }
    end_run(job, &end_succeeded, result);
    free(result);
}

/* The stored error: the executor's code by name and its detail. */
static void end_failed_with(crm_job_ctx *job, const crm_error *err)
{
    json_t *doc = json_pack("{s:s, s:s}", "code",
                            crm_errcode_name(err->code != CRM_OK ? err->code : CRM_E_INTERNAL),
                            "detail", err->detail[0] != '\0' ? err->detail : "the job failed");
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    end_run(job, &end_failed,
            text != NULL ? text : "{\"code\": \"internal-error\", \"detail\": \"the job failed\"}");
    free(text);
}

/* Records how the run went (see crm_jobs_run_one in jobs.h). */
static void end_job(crm_job_ctx *job, bool ok, const crm_error *err)
{
    if (ok)
        end_succeeded_with(job);
    else if (stopping(job->cfg))
        end_run(job, &end_requeued, "1");
    else if (err->code == CRM_E_UNAVAILABLE && job->attempts < CRM_JOB_MAX_ATTEMPTS)
        end_run(job, &end_requeued, "0");
    else
        end_failed_with(job, err);
}

static void job_release(crm_job_ctx *job)
{
    crm_db_close_private(job->conn);
    json_decref(job->params);
    json_decref(job->checkpoint);
    json_decref(job->result);
}

/* ---- the one entry point ------------------------------------------------------ */

bool crm_jobs_run_one(const crm_jobs_config *cfg, long long *ran_id, crm_error *err)
{
    if (ran_id != NULL)
        *ran_id = 0;
    char kinds[JOBS_KINDS_LITERAL_MAX];
    if (!jobs_kinds_literal(kinds, sizeof kinds))
        return crm_error_set(err, CRM_E_INTERNAL, "the kinds of job do not fit their list");
    if (strcmp(kinds, "{}") == 0)
        return false; /* nothing this process could run */
    crm_job_ctx job = {0};
    if (!settle(err) || !claim(cfg, kinds, &job, err))
        return false;
    crm_log(CRM_LOG_INFO, "job %lld (%s): claimed by %s, attempt %d", job.id,
            job.kind != NULL ? job.kind->name : "?", worker_of(cfg), job.attempts);

    crm_error run_err = CRM_ERROR_INIT;
    bool ok = false;
    if (job.kind == NULL || job.params == NULL)
        crm_error_set(&run_err, CRM_E_INTERNAL, "the job's kind or params could not be read");
    else if ((job.conn = crm_db_open_private(&cfg->db, &run_err)) != NULL)
        ok = job.kind->run(&job, &run_err);
    end_job(&job, ok, &run_err);
    crm_error_clear(&run_err);
    job_release(&job);
    if (ran_id != NULL)
        *ran_id = job.id;
    return true;
}

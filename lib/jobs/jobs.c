/*
 * jobs/jobs.c — queueing, reading and cancelling jobs, and a job's
 * representation. These run on the request pool: each is one or two short
 * statements. Claiming and running are in run.c.
 */
#include "internal.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crm_stmt insert_job =
    CRM_STMT("jobs_insert", "INSERT INTO jobs (kind, params, exclusive, api_key_id) "
                            "VALUES ($1, $2::jsonb, $3, $4::bigint) RETURNING " JOB_COLUMNS);
static crm_stmt find_exclusive =
    CRM_STMT_RO("jobs_find_exclusive",
                "SELECT id FROM jobs WHERE exclusive = $1 AND state IN ('queued', 'running')");
static crm_stmt select_job =
    CRM_STMT_RO("jobs_select", "SELECT " JOB_COLUMNS " FROM jobs WHERE id = $1::bigint");
/* A queued job ends here and now; a running one is asked to stop, which
 * its executor learns at its next crm_job_progress (run.c). The SET
 * expressions read the row as it was. */
static crm_stmt cancel_job =
    CRM_STMT("jobs_cancel",
             "UPDATE jobs SET cancel_requested = true, updated_at = now(), "
             "state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, "
             "finished_at = CASE WHEN state = 'queued' THEN now() END "
             "WHERE id = $1::bigint AND state IN ('queued', 'running') RETURNING " JOB_COLUMNS);

/* Tries to queue a job this many times when the exclusive name's holder
 * ended between the refused insert and the look-up of its id. */
#define SUBMIT_TRIES 3

/* ---- the representation ------------------------------------------------ */

static json_t *text_column(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_string(PQgetvalue(res, r, c));
}

/* A jsonb column (as text) parsed back; null when SQL NULL. */
static json_t *json_column(const PGresult *res, int r, int c)
{
    if (PQgetisnull(res, r, c))
        return json_null();
    return json_loads(PQgetvalue(res, r, c), JSON_DECODE_ANY, NULL);
}

static json_t *time_column(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : crm_json_timestamp(atoll(PQgetvalue(res, r, c)));
}

/* total 0 is stored for "not known yet" and shown as null. */
static json_t *progress_of(const PGresult *res, int r)
{
    long long total = atoll(PQgetvalue(res, r, 5));
    return json_pack("{s:I, s:o}", "done", (json_int_t)atoll(PQgetvalue(res, r, 4)), "total",
                     total > 0 ? json_integer(total) : json_null());
}

json_t *job_from_row(const PGresult *res, int r)
{
    /* json_pack takes every "o" value, also when it fails on a NULL one. */
    return json_pack("{s:I, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:i, s:o, s:o, s:o}", "id",
                     (json_int_t)atoll(PQgetvalue(res, r, 0)), "kind", PQgetvalue(res, r, 1),
                     "state", PQgetvalue(res, r, 2), "phase", text_column(res, r, 3), "progress",
                     progress_of(res, r), "params", json_column(res, r, 6), "result",
                     json_column(res, r, 7), "error", json_column(res, r, 8), "attempts",
                     atoi(PQgetvalue(res, r, 9)), "created_at", time_column(res, r, 10),
                     "started_at", time_column(res, r, 11), "finished_at", time_column(res, r, 12));
}

/* The representation of the one row of res, which it frees; NULL with err
 * when out of memory. */
static json_t *job_from_result(PGresult *res, crm_error *err)
{
    json_t *job = job_from_row(res, 0);
    PQclear(res);
    if (job == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory writing a job");
    return job;
}

/* ---- submitting ---------------------------------------------------------- */

/* A job's kind checked and its params as text (the caller frees it); NULL
 * with err. */
static char *submission_text(const char *kind, const json_t *params, crm_error *err)
{
    if (kind == NULL || crm_jobs_kind(kind) == NULL) {
        crm_error_set(err, CRM_E_INVALID, "no such kind of job");
        return NULL;
    }
    if (params != NULL && !json_is_object(params)) {
        crm_error_set(err, CRM_E_INVALID, "a job's params must be an object");
        return NULL;
    }
    char *text = params != NULL ? json_dumps(params, JSON_COMPACT) : strdup("{}");
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory queueing a job");
    return text;
}

json_t *crm_job_submit_on(crm_conn *c, const char *kind, const json_t *params, long long api_key_id,
                          crm_error *err)
{
    char *text = submission_text(kind, params, err);
    if (text == NULL)
        return NULL;
    char key[24];
    snprintf(key, sizeof key, "%lld", api_key_id);
    const char *values[] = {kind, text, NULL, api_key_id > 0 ? key : NULL};
    PGresult *res = crm_db_exec(c, &insert_job, 4, values, err);
    free(text);
    return res != NULL ? job_from_result(res, err) : NULL;
}

void crm_jobs_wake(void)
{
    jobs_notify_submitted();
}

/* Moves what src holds into dst (which may be NULL: then it is dropped). */
static void error_move(crm_error *dst, crm_error *src)
{
    if (dst != NULL)
        *dst = *src;
    else
        crm_error_clear(src);
    *src = (crm_error)CRM_ERROR_INIT;
}

typedef enum { INSERTED, TAKEN, FAILED } insert_outcome;

/* Runs the insert on one connection; TAKEN when exclusive is held by a job
 * that is queued or running, whose id then goes to *holder (0 when it
 * ended meanwhile: try again). */
static insert_outcome insert_or_find_holder(const char *const *values, const char *exclusive,
                                            json_t **job, long long *holder, crm_error *err)
{
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return FAILED;
    PGresult *res = crm_db_exec(c, &insert_job, 4, values, err);
    if (res != NULL) {
        crm_db_release(c);
        *job = job_from_result(res, err);
        return *job != NULL ? INSERTED : FAILED;
    }
    if (exclusive == NULL || strcmp(crm_db_sqlstate(c), "23505") != 0) {
        crm_db_release(c);
        return FAILED;
    }
    crm_error_clear(err);
    res = crm_db_exec(c, &find_exclusive, 1, &exclusive, err);
    crm_db_release(c);
    if (res == NULL)
        return FAILED;
    *holder = PQntuples(res) == 1 ? atoll(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return TAKEN;
}

json_t *crm_job_submit(const char *kind, const json_t *params, const char *exclusive,
                       long long api_key_id, long long *running, crm_error *err)
{
    crm_error e = CRM_ERROR_INIT;
    if (running != NULL)
        *running = 0;
    char *text = submission_text(kind, params, err);
    if (text == NULL)
        return NULL;
    char key[24];
    snprintf(key, sizeof key, "%lld", api_key_id);
    const char *values[] = {kind, text, exclusive, api_key_id > 0 ? key : NULL};

    json_t *job = NULL;
    long long holder = 0;
    for (int tries = 0; tries < SUBMIT_TRIES; tries++) {
        insert_outcome out = insert_or_find_holder(values, exclusive, &job, &holder, &e);
        if (out != TAKEN || holder != 0)
            break;
    }
    free(text);
    if (job != NULL) {
        jobs_notify_submitted();
        return job;
    }
    if (holder != 0) {
        crm_error_set(&e, CRM_E_CONFLICT,
                      "a job of this kind is already queued or running: job %lld", holder);
        if (running != NULL)
            *running = holder;
    } else if (e.code == CRM_OK) { /* each holder ended before it could be named */
        crm_error_set(&e, CRM_E_CONFLICT, "a job of this kind is already queued or running");
    }
    error_move(err, &e);
    return NULL;
}

/* ---- reading and cancelling ------------------------------------------------ */

/* The job with id, read on the pool: its result (one row), or NULL with
 * CRM_E_NOT_FOUND or the database's error. */
static PGresult *read_job(long long id, crm_error *err)
{
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *values[] = {idtext};
    PGresult *res = crm_db_run(&select_job, 1, values, err);
    if (res != NULL && PQntuples(res) == 0) {
        PQclear(res);
        crm_error_set(err, CRM_E_NOT_FOUND, "no job with this id");
        return NULL;
    }
    return res;
}

json_t *crm_job_get(long long id, unsigned *kind_scope, crm_error *err)
{
    if (kind_scope != NULL)
        *kind_scope = 0;
    PGresult *res = read_job(id, err);
    if (res == NULL)
        return NULL;
    const crm_job_kind *kind = crm_jobs_kind(PQgetvalue(res, 0, 1));
    if (kind_scope != NULL && kind != NULL)
        *kind_scope = kind->read_scope;
    return job_from_result(res, err);
}

json_t *crm_job_cancel(long long id, crm_error *err)
{
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *values[] = {idtext};
    PGresult *res = crm_db_run(&cancel_job, 1, values, err);
    if (res == NULL)
        return NULL;
    if (PQntuples(res) == 1)
        return job_from_result(res, err);
    PQclear(res);
    /* Nothing to cancel: there is no such job, or it has ended. */
    res = read_job(id, err);
    if (res == NULL)
        return NULL;
    crm_error_set(err, CRM_E_CONFLICT, "the job has already ended (%s)", PQgetvalue(res, 0, 2));
    PQclear(res);
    return NULL;
}

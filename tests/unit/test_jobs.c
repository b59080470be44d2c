/*
 * test_jobs.c — lib/jobs.h against the migrated CRMD_TEST_DATABASE_URL:
 * queueing (one at a time per exclusive name), the representation, cancel,
 * and the claimer: two workers never run one job, a job whose process died
 * is taken over from its last checkpoint and ends "failed" after
 * CRM_JOB_MAX_ATTEMPTS, never stuck "running"; progress stops a cancelled,
 * taken-over or stopping run; how each ending is stored.
 *
 * The kinds below exist only in this test process. A process claims only
 * kinds it registered, so jobs of other runs' kinds are never touched, and
 * each test starts without jobs of these kinds (setup deletes them).
 * Executors record what they saw in the variables below and never assert
 * themselves: some run on threads of their own.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "db.h"
#include "jobs.h"
#include "jobs_runner.h"
#include "suites.h"
#include "support.h"

static PGconn *direct;

/* ---- what the executors saw ----------------------------------------------------- */

static int progress_after_cancel = -1; /* unit_job_cancel_self: 1 true, 0 false */
static char state_cancel_answered[16]; /* unit_job_cancel_self: crm_job_cancel's state */
static atomic_int tally_runs[64];      /* unit_job_tally: runs per job, by id - tally_base */
static atomic_llong tally_base;
static struct {
    atomic_int ready, go, first_progress, second_progress;
} linger;

/* ---- the kinds ------------------------------------------------------------------ */

static crm_stmt add_on_job_conn = CRM_STMT_RO(
    "unit_jobs_add", "SELECT $1::bigint + $2::bigint, current_setting('statement_timeout')");

static long long param_int(const crm_job_ctx *job, const char *name)
{
    return (long long)json_integer_value(json_object_get(crm_job_params(job), name));
}

static long long checkpoint_int(const crm_job_ctx *job, const char *name)
{
    return (long long)json_integer_value(json_object_get(crm_job_checkpoint(job), name));
}

/* Adds params a and b on the job's own connection, in two reported steps;
 * the result says which checkpoint it resumed from and the job connection's
 * statement_timeout. */
static bool run_add(crm_job_ctx *job, crm_error *err)
{
    const json_t *resumed = crm_job_checkpoint(job);
    json_t *step = json_pack("{s:i}", "step", 1);
    bool go_on = crm_job_progress(job, "adding", 1, 2, step);
    json_decref(step);
    if (!go_on || !crm_job_progress(job, NULL, 2, 2, NULL))
        return crm_error_set(err, CRM_E_CONFLICT, "stopped");
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", param_int(job, "a"));
    snprintf(b, sizeof b, "%lld", param_int(job, "b"));
    const char *values[] = {a, b};
    PGresult *res = crm_db_exec(crm_job_conn(job), &add_on_job_conn, 2, values, err);
    if (res == NULL)
        return false;
    crm_job_set_result(
        job, json_pack("{s:I, s:o, s:s}", "sum", (json_int_t)atoll(PQgetvalue(res, 0, 0)),
                       "resumed_from",
                       resumed != NULL ? json_integer(checkpoint_int(job, "step")) : json_null(),
                       "statement_timeout", PQgetvalue(res, 0, 1)));
    PQclear(res);
    return true;
}

static bool run_fail(crm_job_ctx *job, crm_error *err)
{
    (void)job;
    return crm_error_set(err, CRM_E_INVALID, "the input is bad: %d", 42);
}

static bool run_unavailable(crm_job_ctx *job, crm_error *err)
{
    (void)job;
    return crm_error_set(err, CRM_E_UNAVAILABLE, "database unavailable");
}

/* Cancels itself, then reports progress. */
static bool run_cancel_self(crm_job_ctx *job, crm_error *err)
{
    crm_error e = CRM_ERROR_INIT;
    json_t *rep = crm_job_cancel(crm_job_id(job), &e);
    snprintf(state_cancel_answered, sizeof state_cancel_answered, "%s",
             rep != NULL ? json_string_value(json_object_get(rep, "state")) : "(error)");
    json_decref(rep);
    crm_error_clear(&e);
    progress_after_cancel = crm_job_progress(job, "after cancel", 1, 0, NULL) ? 1 : 0;
    return progress_after_cancel ? true : crm_error_set(err, CRM_E_CONFLICT, "stopped");
}

/* What the death of the job's process leaves behind: the row still
 * "running", owned by a claim nobody holds any more, its lease run out. */
static void vanish(const crm_job_ctx *job)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", crm_job_id(job));
    const char *values[] = {id};
    PQclear(unit_sql(direct,
                     "UPDATE jobs SET claimed_by = 'ghost', lease_until = now() - interval '1 s' "
                     "WHERE id = $1::bigint",
                     1, values));
}

/* Saves checkpoint step + 1 and "dies" while fewer than params.crashes
 * steps were saved; then succeeds, saying where it resumed. */
static bool run_crashy(crm_job_ctx *job, crm_error *err)
{
    long long step = crm_job_checkpoint(job) != NULL ? checkpoint_int(job, "step") : 0;
    if (step >= param_int(job, "crashes")) {
        crm_job_set_result(job, json_pack("{s:I}", "resumed_from", (json_int_t)step));
        return true;
    }
    json_t *next = json_pack("{s:I}", "step", (json_int_t)step + 1);
    bool go_on = crm_job_progress(job, "crashing", step + 1, 0, next);
    json_decref(next);
    if (go_on)
        vanish(job);
    return crm_error_set(err, CRM_E_INTERNAL, "the process died");
}

/* Counts its runs; slow enough that two workers overlap. */
static bool run_tally(crm_job_ctx *job, crm_error *err)
{
    long long slot = crm_job_id(job) - atomic_load(&tally_base);
    if (slot >= 0 && slot < 64)
        atomic_fetch_add(&tally_runs[slot], 1);
    unit_sleep_ms(15);
    if (!crm_job_progress(job, "counted", 1, 1, NULL))
        return crm_error_set(err, CRM_E_CONFLICT, "stopped");
    return true;
}

/* A first run reports once, waits for the go and reports again. A run
 * that finds a checkpoint (a takeover) gives the first run its go, waits
 * until that one has reported (the takeover still running meanwhile), and
 * succeeds. */
static bool run_linger(crm_job_ctx *job, crm_error *err)
{
    if (crm_job_checkpoint(job) != NULL) {
        atomic_store(&linger.go, 1);
        for (int waited = 0; atomic_load(&linger.second_progress) == -1 && waited < 10000;
             waited += 5)
            unit_sleep_ms(5);
        crm_job_set_result(job, json_pack("{s:s, s:I}", "by", "second", "n",
                                          (json_int_t)checkpoint_int(job, "n")));
        return true;
    }
    json_t *n = json_pack("{s:i}", "n", 1);
    atomic_store(&linger.first_progress, crm_job_progress(job, "waiting", 1, 2, n) ? 1 : 0);
    json_decref(n);
    atomic_store(&linger.ready, 1);
    for (int waited = 0; !atomic_load(&linger.go) && waited < 10000; waited += 5)
        unit_sleep_ms(5);
    bool second = crm_job_progress(job, "waiting", 2, 2, NULL);
    atomic_store(&linger.second_progress, second ? 1 : 0);
    if (!second)
        return crm_error_set(err, CRM_E_CONFLICT, "stopped");
    crm_job_set_result(job, json_pack("{s:s}", "by", "first"));
    return true;
}

/* Reports every 10 ms (checkpoint {"i": n}) until told to stop, for at
 * most 10 s. */
static bool run_patient(crm_job_ctx *job, crm_error *err)
{
    for (int i = 1; i <= 1000; i++) {
        json_t *at = json_pack("{s:i}", "i", i);
        bool go_on = crm_job_progress(job, "waiting", i, 0, at);
        json_decref(at);
        if (!go_on)
            return crm_error_set(err, CRM_E_CONFLICT, "stopped");
        unit_sleep_ms(10);
    }
    return true;
}

/* Works 4.5 s without a progress, its lease kept by crm_job_keep_lease. */
static bool run_quiet(crm_job_ctx *job, crm_error *err)
{
    (void)err;
    crm_job_keeper *k = crm_job_keep_lease(job);
    unit_sleep_ms(4500);
    crm_job_keeper_stop(k);
    crm_job_set_result(job, json_pack("{s:s}", "by", "quiet"));
    return k != NULL;
}

static const crm_job_kind kind_add = {"unit_job_add", run_add, CRM_SCOPE_METRICS_READ};
static const crm_job_kind kind_quiet = {"unit_job_quiet", run_quiet, CRM_SCOPE_METRICS_READ};
static const crm_job_kind kind_fail = {"unit_job_fail", run_fail, CRM_SCOPE_SEGMENTS_READ};
static const crm_job_kind kind_unavailable = {"unit_job_unavailable", run_unavailable,
                                              CRM_SCOPE_METRICS_READ};
static const crm_job_kind kind_cancel_self = {"unit_job_cancel_self", run_cancel_self,
                                              CRM_SCOPE_METRICS_READ};
static const crm_job_kind kind_crashy = {"unit_job_crashy", run_crashy, CRM_SCOPE_METRICS_READ};
static const crm_job_kind kind_tally = {"unit_job_tally", run_tally, CRM_SCOPE_METRICS_READ};
static const crm_job_kind kind_linger = {"unit_job_linger", run_linger, CRM_SCOPE_METRICS_READ};
static const crm_job_kind kind_patient = {"unit_job_patient", run_patient, CRM_SCOPE_METRICS_READ};

/* ---- fixture and helpers --------------------------------------------------------- */

static void setup(void)
{
    direct = unit_db_start(4);
    const crm_job_kind *kinds[] = {&kind_add,    &kind_fail,  &kind_unavailable, &kind_cancel_self,
                                   &kind_crashy, &kind_tally, &kind_linger,      &kind_patient,
                                   &kind_quiet};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        crm_jobs_register(kinds[i]);
    PQclear(unit_sql(direct, "DELETE FROM jobs WHERE kind LIKE 'unit\\_%'", 0, NULL));
    progress_after_cancel = -1;
    state_cancel_answered[0] = '\0';
    for (int i = 0; i < 64; i++)
        atomic_store(&tally_runs[i], 0);
    atomic_store(&linger.ready, 0);
    atomic_store(&linger.go, 0);
    atomic_store(&linger.first_progress, -1);
    atomic_store(&linger.second_progress, -1);
}

static void teardown(void)
{
    unit_db_stop(direct);
    direct = NULL;
}

/* A worker's configuration: its name, a lease of lease_s, the jobs'
 * connections with a statement timeout of 4321 ms (a value no other
 * connection has). */
static crm_jobs_config worker(const char *name, int lease_s)
{
    crm_jobs_config cfg = {
        .db = {.url = unit_env("CRMD_TEST_DATABASE_URL"),
               .connect_timeout_s = 2,
               .statement_timeout_ms = 4321},
        .lease_s = lease_s,
        .worker = name,
        .stop = NULL,
    };
    return cfg;
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    ck_assert_msg(v != NULL, "bad test JSON %s: %s", text, jerr.text);
    return v;
}

/* Queues a job or fails the test; returns its id. */
static long long submit(const char *kind, const char *params, const char *exclusive)
{
    json_t *p = params != NULL ? parse(params) : NULL;
    crm_error err = CRM_ERROR_INIT;
    long long running = -1;
    json_t *job = crm_job_submit(kind, p, exclusive, 0, &running, &err);
    json_decref(p);
    ck_assert_msg(job != NULL, "submit %s: %s", kind, err.detail);
    ck_assert_int_eq(running, 0);
    long long id = (long long)json_integer_value(json_object_get(job, "id"));
    ck_assert_int_gt(id, 0);
    json_decref(job);
    return id;
}

/* A job's representation or a failed test; the caller frees it. */
static json_t *get(long long id)
{
    crm_error err = CRM_ERROR_INIT;
    unsigned scope;
    json_t *job = crm_job_get(id, &scope, &err);
    ck_assert_msg(job != NULL, "get %lld: %s", id, err.detail);
    return job;
}

static const char *member_string(json_t *obj, const char *path)
{
    return json_string_value(json_object_get(obj, path));
}

static long long member_int(json_t *obj, const char *name)
{
    return (long long)json_integer_value(json_object_get(obj, name));
}

/* Asserts the job's state (and frees what it read). */
static void assert_state(long long id, const char *state)
{
    json_t *job = get(id);
    ck_assert_msg(strcmp(member_string(job, "state"), state) == 0, "job %lld is %s, not %s", id,
                  member_string(job, "state"), state);
    json_decref(job);
}

/* One crm_jobs_run_one that must not fail; the id it ran, 0 for none. */
static long long run_one(const crm_jobs_config *cfg)
{
    crm_error err = CRM_ERROR_INIT;
    long long id = -1;
    bool ran = crm_jobs_run_one(cfg, &id, &err);
    ck_assert_msg(err.code == CRM_OK, "run_one: %s", err.detail);
    ck_assert_int_eq(ran, id > 0);
    return id;
}

/* A column of the job's row, as text ("" for NULL); the caller frees it. */
static char *column(long long id, const char *expression)
{
    char sql[256], idtext[24];
    snprintf(sql, sizeof sql, "SELECT %s FROM jobs WHERE id = $1::bigint", expression);
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *values[] = {idtext};
    PGresult *res = unit_sql(direct, sql, 1, values);
    ck_assert_int_eq(PQntuples(res), 1);
    char *out = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

static void assert_column(long long id, const char *expression, const char *want)
{
    char *got = column(id, expression);
    ck_assert_msg(strcmp(got, want) == 0, "job %lld: %s is '%s', not '%s'", id, expression, got,
                  want);
    free(got);
}

/* Sets the job's lease to have run out a second ago. */
static void expire_lease(long long id)
{
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *values[] = {idtext};
    PQclear(unit_sql(direct,
                     "UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = $1::bigint",
                     1, values));
}

/* ---- submitting and reading -------------------------------------------------------- */

START_TEST(a_submitted_job_is_queued_with_its_params_and_no_progress)
{
    long long id = submit("unit_job_add", "{\"a\": 2, \"b\": 3}", NULL);
    json_t *job = get(id);
    ck_assert_int_eq(member_int(job, "id"), id);
    ck_assert_str_eq(member_string(job, "kind"), "unit_job_add");
    ck_assert_str_eq(member_string(job, "state"), "queued");
    ck_assert(json_is_null(json_object_get(job, "phase")));
    json_t *progress = json_object_get(job, "progress");
    ck_assert_int_eq(member_int(progress, "done"), 0);
    ck_assert(json_is_null(json_object_get(progress, "total")));
    ck_assert_int_eq(member_int(json_object_get(job, "params"), "b"), 3);
    ck_assert(json_is_null(json_object_get(job, "result")));
    ck_assert(json_is_null(json_object_get(job, "error")));
    ck_assert_int_eq(member_int(job, "attempts"), 0);
    ck_assert(json_is_string(json_object_get(job, "created_at")));
    ck_assert(json_is_null(json_object_get(job, "started_at")));
    ck_assert(json_is_null(json_object_get(job, "finished_at")));
    ck_assert_int_eq(json_object_size(job), 12);
    json_decref(job);
}
END_TEST

START_TEST(a_job_without_params_gets_an_empty_object)
{
    long long id = submit("unit_job_add", NULL, NULL);
    json_t *job = get(id);
    ck_assert(json_is_object(json_object_get(job, "params")));
    ck_assert_int_eq(json_object_size(json_object_get(job, "params")), 0);
    json_decref(job);
}
END_TEST

START_TEST(an_unknown_kind_or_params_that_are_no_object_are_refused)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert_ptr_null(crm_job_submit("unit_job_nobody_registered", NULL, NULL, 0, NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    crm_error_clear(&err);
    json_t *list = parse("[1, 2]");
    ck_assert_ptr_null(crm_job_submit("unit_job_add", list, NULL, 0, NULL, &err));
    ck_assert_int_eq(err.code, CRM_E_INVALID);
    json_decref(list);
    crm_error_clear(&err);
    ck_assert_int_eq(
        unit_sql_long(direct, "SELECT count(*) FROM jobs WHERE kind LIKE 'unit\\_%'", 0, NULL), 0);
}
END_TEST

START_TEST(a_second_exclusive_job_is_a_conflict_naming_the_first)
{
    char name[64];
    unit_unique(name, sizeof name, "unit-exclusive-");
    long long first = submit("unit_job_add", "{}", name);

    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    ck_assert_ptr_null(crm_job_submit("unit_job_add", NULL, name, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_int_eq(running, first);
    char want[64];
    snprintf(want, sizeof want, "job %lld", first);
    ck_assert_ptr_nonnull(strstr(err.detail, want));
    crm_error_clear(&err);

    /* Another name is other work; the first one's end frees the name. */
    char other[64];
    unit_unique(other, sizeof other, "unit-exclusive-");
    submit("unit_job_add", NULL, other);
    json_decref(crm_job_cancel(first, &err));
    ck_assert_int_eq(err.code, CRM_OK);
    long long again = submit("unit_job_add", NULL, name);
    ck_assert_int_gt(again, first);
}
END_TEST

START_TEST(an_exclusive_job_that_runs_still_holds_its_name)
{
    char name[64];
    unit_unique(name, sizeof name, "unit-exclusive-");
    long long first = submit("unit_job_linger", NULL, name);
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", first);
    const char *values[] = {idtext};
    PQclear(unit_sql(direct,
                     "UPDATE jobs SET state = 'running', claimed_by = 'elsewhere', attempts = 1, "
                     "lease_until = now() + interval '1 minute' WHERE id = $1::bigint",
                     1, values));
    crm_error err = CRM_ERROR_INIT;
    long long running = 0;
    ck_assert_ptr_null(crm_job_submit("unit_job_add", NULL, name, 0, &running, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_int_eq(running, first);
}
END_TEST

START_TEST(the_representation_writes_timestamps_in_utc_with_milliseconds)
{
    long long id = submit("unit_job_add", NULL, NULL);
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *values[] = {idtext};
    PQclear(unit_sql(direct,
                     "UPDATE jobs SET state = 'succeeded', done = 7, total = 0, "
                     "created_at = '2026-01-02 03:04:05.678+00', "
                     "started_at = '2026-01-02 05:04:06.5+02', "
                     "finished_at = '2026-01-02 04:00:00+00' WHERE id = $1::bigint",
                     1, values));
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "created_at"), "2026-01-02T03:04:05.678Z");
    ck_assert_str_eq(member_string(job, "started_at"), "2026-01-02T03:04:06.500Z");
    ck_assert_str_eq(member_string(job, "finished_at"), "2026-01-02T04:00:00.000Z");
    ck_assert_int_eq(member_int(json_object_get(job, "progress"), "done"), 7);
    ck_assert(json_is_null(json_object_get(json_object_get(job, "progress"), "total")));
    json_decref(job);
}
END_TEST

START_TEST(get_tells_the_read_scope_of_the_jobs_kind)
{
    unsigned scope = 99;
    crm_error err = CRM_ERROR_INIT;
    long long id = submit("unit_job_fail", NULL, NULL);
    json_t *job = crm_job_get(id, &scope, &err);
    ck_assert_ptr_nonnull(job);
    ck_assert_uint_eq(scope, CRM_SCOPE_SEGMENTS_READ);
    json_decref(job);

    /* A kind this process does not know: no scope. */
    long long unknown = unit_sql_long(
        direct, "INSERT INTO jobs (kind) VALUES ('unit_unregistered') RETURNING id", 0, NULL);
    job = crm_job_get(unknown, &scope, &err);
    ck_assert_ptr_nonnull(job);
    ck_assert_uint_eq(scope, 0);
    ck_assert_str_eq(member_string(job, "kind"), "unit_unregistered");
    json_decref(job);
}
END_TEST

START_TEST(an_unknown_job_is_not_found)
{
    crm_error err = CRM_ERROR_INIT;
    unsigned scope = 99;
    ck_assert_ptr_null(crm_job_get(9000000000000LL, &scope, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
    ck_assert_uint_eq(scope, 0);
    crm_error_clear(&err);
    ck_assert_ptr_null(crm_job_cancel(9000000000000LL, &err));
    ck_assert_int_eq(err.code, CRM_E_NOT_FOUND);
}
END_TEST

/* ---- cancelling ------------------------------------------------------------------------ */

START_TEST(a_queued_job_is_cancelled_at_once_and_then_not_again)
{
    long long id = submit("unit_job_add", NULL, NULL);
    crm_error err = CRM_ERROR_INIT;
    json_t *job = crm_job_cancel(id, &err);
    ck_assert_msg(job != NULL, "%s", err.detail);
    ck_assert_str_eq(member_string(job, "state"), "cancelled");
    ck_assert(json_is_string(json_object_get(job, "finished_at")));
    json_decref(job);

    ck_assert_ptr_null(crm_job_cancel(id, &err));
    ck_assert_int_eq(err.code, CRM_E_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err.detail, "cancelled"));
    crm_error_clear(&err);

    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), 0); /* nothing left to run */
}
END_TEST

START_TEST(a_running_job_is_asked_to_stop_and_its_progress_says_so)
{
    long long id = submit("unit_job_cancel_self", NULL, NULL);
    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), id);
    ck_assert_str_eq(state_cancel_answered, "running"); /* still running when asked */
    ck_assert_int_eq(progress_after_cancel, 0);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "cancelled");
    ck_assert(json_is_null(json_object_get(job, "error")));
    ck_assert(json_is_string(json_object_get(job, "finished_at")));
    json_decref(job);
}
END_TEST

START_TEST(a_cancelled_job_whose_process_died_ends_cancelled_not_run_again)
{
    long long id = submit("unit_job_add", "{\"a\": 1, \"b\": 1}", NULL);
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *values[] = {idtext};
    PQclear(unit_sql(direct,
                     "UPDATE jobs SET state = 'running', claimed_by = 'ghost', attempts = 1, "
                     "cancel_requested = true, lease_until = now() - interval '1 s' "
                     "WHERE id = $1::bigint",
                     1, values));
    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), 0);
    assert_state(id, "cancelled");
    assert_column(id, "attempts", "1");
}
END_TEST

/* ---- running and its endings ---------------------------------------------------------- */

START_TEST(a_job_that_succeeds_stores_its_result_and_progress)
{
    long long id = submit("unit_job_add", "{\"a\": 40, \"b\": 2}", NULL);
    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), id);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "succeeded");
    ck_assert_str_eq(member_string(job, "phase"), "adding"); /* a NULL phase kept it */
    json_t *progress = json_object_get(job, "progress");
    ck_assert_int_eq(member_int(progress, "done"), 2);
    ck_assert_int_eq(member_int(progress, "total"), 2);
    json_t *result = json_object_get(job, "result");
    ck_assert_int_eq(member_int(result, "sum"), 42); /* computed on the job's connection */
    ck_assert(json_is_null(json_object_get(result, "resumed_from")));
    ck_assert_str_eq(member_string(result, "statement_timeout"), "4321ms");
    ck_assert(json_is_null(json_object_get(job, "error")));
    ck_assert_int_eq(member_int(job, "attempts"), 1);
    ck_assert(json_is_string(json_object_get(job, "started_at")));
    ck_assert(json_is_string(json_object_get(job, "finished_at")));
    json_decref(job);
    assert_column(id, "claimed_by", "unit-a");
    assert_column(id, "lease_until IS NULL", "t");
    ck_assert_int_eq(run_one(&cfg), 0);
}
END_TEST

START_TEST(an_executors_failure_is_stored_as_the_jobs_error)
{
    long long id = submit("unit_job_fail", NULL, NULL);
    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), id);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "failed");
    json_t *error = json_object_get(job, "error");
    ck_assert_str_eq(member_string(error, "code"), "validation-failed");
    ck_assert_str_eq(member_string(error, "detail"), "the input is bad: 42");
    ck_assert(json_is_null(json_object_get(job, "result")));
    ck_assert_int_eq(member_int(job, "attempts"), 1);
    json_decref(job);
    ck_assert_int_eq(run_one(&cfg), 0); /* a failed job is not run again */
}
END_TEST

START_TEST(a_job_that_found_the_database_unavailable_is_retried_until_its_attempts_run_out)
{
    long long id = submit("unit_job_unavailable", NULL, NULL);
    crm_jobs_config cfg = worker("unit-a", 30);
    for (int attempt = 1; attempt < CRM_JOB_MAX_ATTEMPTS; attempt++) {
        ck_assert_int_eq(run_one(&cfg), id);
        assert_state(id, "queued");
        char want[16];
        snprintf(want, sizeof want, "%d", attempt);
        assert_column(id, "attempts", want);
    }
    ck_assert_int_eq(run_one(&cfg), id);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "failed");
    ck_assert_int_eq(member_int(job, "attempts"), CRM_JOB_MAX_ATTEMPTS);
    ck_assert_str_eq(member_string(json_object_get(job, "error"), "code"), "service-unavailable");
    json_decref(job);
    ck_assert_int_eq(run_one(&cfg), 0);
}
END_TEST

START_TEST(a_job_of_a_kind_this_process_does_not_know_is_left_queued)
{
    long long id = unit_sql_long(
        direct, "INSERT INTO jobs (kind) VALUES ('unit_unregistered') RETURNING id", 0, NULL);
    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), 0);
    assert_state(id, "queued");
    assert_column(id, "attempts", "0");
}
END_TEST

START_TEST(jobs_are_claimed_oldest_first)
{
    long long first = submit("unit_job_add", "{\"a\": 1, \"b\": 1}", NULL);
    long long second = submit("unit_job_add", "{\"a\": 1, \"b\": 1}", NULL);
    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), first);
    ck_assert_int_eq(run_one(&cfg), second);
}
END_TEST

/* ---- processes that die, leases that run out ---------------------------------------------- */

START_TEST(a_job_whose_process_died_is_taken_over_from_its_last_checkpoint)
{
    long long id = submit("unit_job_crashy", "{\"crashes\": 1}", NULL);
    crm_jobs_config a = worker("unit-a", 30), b = worker("unit-b", 30);
    ck_assert_int_eq(run_one(&a), id); /* saves step 1, then "dies" */
    assert_state(id, "running");
    assert_column(id, "checkpoint->>'step'", "1");
    ck_assert_int_eq(run_one(&b), id);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "succeeded");
    ck_assert_int_eq(member_int(json_object_get(job, "result"), "resumed_from"), 1);
    ck_assert_int_eq(member_int(job, "attempts"), 2);
    json_decref(job);
    assert_column(id, "claimed_by", "unit-b");
}
END_TEST

START_TEST(a_job_that_keeps_dying_ends_failed_after_the_last_attempt)
{
    long long id = submit("unit_job_crashy", "{\"crashes\": 99}", NULL);
    crm_jobs_config cfg = worker("unit-a", 30);
    for (int attempt = 1; attempt <= CRM_JOB_MAX_ATTEMPTS; attempt++) {
        ck_assert_int_eq(run_one(&cfg), id);
        assert_state(id, "running");
        char want[16];
        snprintf(want, sizeof want, "%d", attempt);
        assert_column(id, "checkpoint->>'step'", want); /* each resumed from the last */
    }
    ck_assert_int_eq(run_one(&cfg), 0); /* settled, not run a fourth time */
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "failed");
    ck_assert_int_eq(member_int(job, "attempts"), CRM_JOB_MAX_ATTEMPTS);
    json_t *error = json_object_get(job, "error");
    ck_assert_str_eq(member_string(error, "code"), "abandoned");
    char want[64];
    snprintf(want, sizeof want, "abandoned after %d attempts", CRM_JOB_MAX_ATTEMPTS);
    ck_assert_str_eq(member_string(error, "detail"), want);
    ck_assert(json_is_string(json_object_get(job, "finished_at")));
    json_decref(job);
}
END_TEST

START_TEST(a_running_job_whose_lease_lasts_is_not_taken)
{
    long long id = submit("unit_job_add", "{\"a\": 1, \"b\": 1}", NULL);
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *values[] = {idtext};
    PQclear(unit_sql(direct,
                     "UPDATE jobs SET state = 'running', claimed_by = 'elsewhere', attempts = 1, "
                     "lease_until = now() + interval '1 minute' WHERE id = $1::bigint",
                     1, values));
    crm_jobs_config cfg = worker("unit-a", 30);
    ck_assert_int_eq(run_one(&cfg), 0);
    assert_column(id, "claimed_by", "elsewhere");
    expire_lease(id);
    ck_assert_int_eq(run_one(&cfg), id);
    assert_state(id, "succeeded");
}
END_TEST

typedef struct run_thread {
    pthread_t thread;
    crm_jobs_config cfg;
    long long ran_id;
    int ran, failures;
    bool until_empty; /* loop until nothing is left, else run one */
} run_thread;

static void *run_in_thread(void *arg)
{
    run_thread *t = arg;
    for (;;) {
        crm_error err = CRM_ERROR_INIT;
        long long id = 0;
        bool ran = crm_jobs_run_one(&t->cfg, &id, &err);
        if (err.code != CRM_OK)
            t->failures++;
        crm_error_clear(&err);
        if (!ran)
            break;
        t->ran++;
        t->ran_id = id;
        if (!t->until_empty)
            break;
    }
    return NULL;
}

/* Runs a unit_job_linger job on a thread as worker name_a; once it has
 * reported, its lease is made to run out and worker name_b takes it over.
 * The first run must learn at its next progress that the job is no longer
 * its own, and the job must end as the second run ended it. */
static void check_takeover_while_running(const char *name_a, const char *name_b)
{
    long long id = submit("unit_job_linger", NULL, NULL);
    run_thread a = {.cfg = worker(name_a, 30)};
    ck_assert_int_eq(pthread_create(&a.thread, NULL, run_in_thread, &a), 0);
    for (int waited = 0; !atomic_load(&linger.ready) && waited < 10000; waited += 5)
        unit_sleep_ms(5);
    ck_assert_int_eq(atomic_load(&linger.ready), 1);
    ck_assert_int_eq(atomic_load(&linger.first_progress), 1);

    expire_lease(id); /* as if the first run had not reported for longer than its lease */
    crm_jobs_config b = worker(name_b, 30);
    ck_assert_int_eq(run_one(&b), id);
    atomic_store(&linger.go, 1);
    pthread_join(a.thread, NULL);

    ck_assert_int_eq(a.failures, 0);
    ck_assert_int_eq(a.ran_id, id);
    ck_assert_int_eq(atomic_load(&linger.second_progress), 0);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "succeeded");
    ck_assert_str_eq(member_string(json_object_get(job, "result"), "by"), "second");
    ck_assert_int_eq(member_int(json_object_get(job, "result"), "n"), 1);
    ck_assert_int_eq(member_int(job, "attempts"), 2);
    ck_assert_str_eq(member_string(job, "phase"), "waiting");
    json_decref(job);
    assert_column(id, "claimed_by", name_b);
}

/* A run that works longer than its 2 s lease without a progress, its lease
 * kept by crm_job_keep_lease, is not taken over: another worker that looks
 * at 3 s and at 4 s finds nothing to claim. */
START_TEST(a_kept_lease_outlasts_a_long_silence)
{
    long long id = submit("unit_job_quiet", NULL, NULL);
    run_thread a = {.cfg = worker("unit-a", 2)};
    ck_assert_int_eq(pthread_create(&a.thread, NULL, run_in_thread, &a), 0);
    crm_jobs_config b = worker("unit-b", 2);
    unit_sleep_ms(3000);
    ck_assert_int_eq(run_one(&b), 0);
    unit_sleep_ms(1000);
    ck_assert_int_eq(run_one(&b), 0);
    pthread_join(a.thread, NULL);
    ck_assert_int_eq(a.ran_id, id);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "succeeded");
    ck_assert_int_eq(member_int(job, "attempts"), 1);
    json_decref(job);
}
END_TEST

START_TEST(a_job_whose_lease_was_taken_over_stops_at_its_next_progress)
{
    check_takeover_while_running("unit-a", "unit-b");
}
END_TEST

/* Two threads of one process share its name: the claim's attempt number
 * tells the runs apart. */
START_TEST(a_takeover_by_a_thread_of_the_same_process_stops_the_first_run_too)
{
    check_takeover_while_running("unit-a", "unit-a");
}
END_TEST

/* Another claimer's claim not yet committed holds its row locked: this
 * one takes the next job instead of waiting, or taking the same one. */
START_TEST(a_job_another_claimer_holds_is_skipped_not_waited_for)
{
    long long held = submit("unit_job_add", "{\"a\": 1, \"b\": 2}", NULL);
    long long next = submit("unit_job_add", "{\"a\": 3, \"b\": 4}", NULL);
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", held);
    const char *values[] = {idtext};
    PQclear(unit_sql(direct, "BEGIN", 0, NULL));
    PQclear(unit_sql(direct, "SELECT 1 FROM jobs WHERE id = $1::bigint FOR UPDATE", 1, values));

    crm_jobs_config cfg = worker("unit-a", 30);
    long long started = unit_now_ms();
    ck_assert_int_eq(run_one(&cfg), next);
    ck_assert_int_lt(unit_now_ms() - started, 5000);
    PQclear(unit_sql(direct, "ROLLBACK", 0, NULL));
    assert_state(held, "queued");
    ck_assert_int_eq(run_one(&cfg), held);
    assert_state(held, "succeeded");
}
END_TEST

START_TEST(two_workers_never_run_the_same_job)
{
    enum { JOBS = 12 };
    long long ids[JOBS];
    for (int i = 0; i < JOBS; i++)
        ids[i] = submit("unit_job_tally", NULL, NULL);
    atomic_store(&tally_base, ids[0]);
    ck_assert_int_lt(ids[JOBS - 1] - ids[0], 64);

    run_thread t[2] = {{.cfg = worker("unit-a", 30), .until_empty = true},
                       {.cfg = worker("unit-b", 30), .until_empty = true}};
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i].thread, NULL, run_in_thread, &t[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i].thread, NULL);

    ck_assert_int_eq(t[0].failures + t[1].failures, 0);
    ck_assert_int_eq(t[0].ran + t[1].ran, JOBS);
    for (int i = 0; i < JOBS; i++) {
        ck_assert_msg(atomic_load(&tally_runs[ids[i] - ids[0]]) == 1, "job %lld ran %d times",
                      ids[i], atomic_load(&tally_runs[ids[i] - ids[0]]));
        assert_state(ids[i], "succeeded");
        assert_column(ids[i], "attempts", "1");
    }
    char first[24];
    snprintf(first, sizeof first, "%lld", ids[0]);
    const char *values[] = {first};
    long by_both = unit_sql_long(
        direct,
        "SELECT count(*) FROM jobs WHERE kind = 'unit_job_tally' AND id >= $1::bigint "
        "AND claimed_by IN ('unit-a', 'unit-b')",
        1, values);
    ck_assert_int_eq(by_both, JOBS);
}
END_TEST

/* ---- stopping the process -------------------------------------------------------------- */

START_TEST(a_job_stopped_with_its_process_goes_back_to_the_queue_with_its_checkpoint)
{
    long long id = submit("unit_job_add", "{\"a\": 5, \"b\": 6}", NULL);
    atomic_bool stop = true;
    crm_jobs_config cfg = worker("unit-a", 30);
    cfg.stop = &stop;
    ck_assert_int_eq(run_one(&cfg), id);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "queued");
    ck_assert_int_eq(member_int(job, "attempts"), 0); /* a stop is no attempt */
    ck_assert_str_eq(member_string(job, "phase"), "adding");
    ck_assert_int_eq(member_int(json_object_get(job, "progress"), "done"), 1);
    json_decref(job);
    assert_column(id, "checkpoint->>'step'", "1");
    assert_column(id, "claimed_by IS NULL AND lease_until IS NULL", "t");

    atomic_store(&stop, false);
    ck_assert_int_eq(run_one(&cfg), id);
    job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "succeeded");
    ck_assert_int_eq(member_int(json_object_get(job, "result"), "sum"), 11);
    ck_assert_int_eq(member_int(json_object_get(job, "result"), "resumed_from"), 1);
    ck_assert_int_eq(member_int(job, "attempts"), 1);
    json_decref(job);
}
END_TEST

/* ---- the runner (server/jobs_runner.c) ---------------------------------------------------- */

/* Waits up to timeout_ms for the job to reach state; false if it does not. */
static bool wait_for_state(long long id, const char *state, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        json_t *job = get(id);
        bool there = strcmp(member_string(job, "state"), state) == 0;
        json_decref(job);
        if (there)
            return true;
        unit_sleep_ms(20);
    }
    return false;
}

START_TEST(the_runner_runs_a_job_this_process_queues_without_waiting_for_its_poll)
{
    crm_jobs_config cfg = worker("unit-runner", 30);
    crm_error err = CRM_ERROR_INIT;
    jobs_runner *runner = jobs_runner_start(&cfg, 2, 60000, &err); /* a poll a minute */
    ck_assert_msg(runner != NULL, "%s", err.detail);
    unit_sleep_ms(100); /* both workers have looked once and sleep */
    long long id = submit("unit_job_add", "{\"a\": 20, \"b\": 22}", NULL);
    ck_assert_msg(wait_for_state(id, "succeeded", 5000), "the job did not run");
    jobs_runner_stop(runner);
    json_t *job = get(id);
    ck_assert_int_eq(member_int(json_object_get(job, "result"), "sum"), 42);
    json_decref(job);
    assert_column(id, "claimed_by", "unit-runner");
}
END_TEST

START_TEST(stopping_the_runner_puts_its_running_job_back_in_the_queue)
{
    crm_jobs_config cfg = worker("unit-runner", 30);
    crm_error err = CRM_ERROR_INIT;
    jobs_runner *runner = jobs_runner_start(&cfg, 1, 50, &err);
    ck_assert_msg(runner != NULL, "%s", err.detail);
    long long id = submit("unit_job_patient", NULL, NULL);
    ck_assert(wait_for_state(id, "running", 5000));
    unit_sleep_ms(100); /* a few reports */
    long long started = unit_now_ms();
    jobs_runner_stop(runner);
    ck_assert_int_lt(unit_now_ms() - started, 2000);
    json_t *job = get(id);
    ck_assert_str_eq(member_string(job, "state"), "queued");
    ck_assert_int_eq(member_int(job, "attempts"), 0);
    json_decref(job);
    char *at = column(id, "checkpoint->>'i'");
    ck_assert_int_ge(atoi(at), 2);
    free(at);
    assert_column(id, "claimed_by IS NULL AND lease_until IS NULL", "t");
}
END_TEST

START_TEST(a_runner_with_nothing_to_do_stops_at_once)
{
    crm_jobs_config cfg = worker("unit-runner", 30);
    crm_error err = CRM_ERROR_INIT;
    jobs_runner *runner = jobs_runner_start(&cfg, 3, 60000, &err);
    ck_assert_msg(runner != NULL, "%s", err.detail);
    unit_sleep_ms(50);
    long long started = unit_now_ms();
    jobs_runner_stop(runner);
    ck_assert_int_lt(unit_now_ms() - started, 1000);
    jobs_runner_stop(NULL);
}
END_TEST

START_TEST(a_worker_name_is_the_host_and_the_pid)
{
    char name[128], want[32];
    jobs_runner_worker_name(name, sizeof name);
    snprintf(want, sizeof want, ":%ld", (long)getpid());
    size_t n = strlen(name), w = strlen(want);
    ck_assert_uint_gt(n, w);
    ck_assert_str_eq(name + n - w, want);
}
END_TEST

Suite *jobs_suite(void)
{
    Suite *s = suite_create("jobs");
    TCase *tc = tcase_create("submit");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_submitted_job_is_queued_with_its_params_and_no_progress);
    tcase_add_test(tc, a_job_without_params_gets_an_empty_object);
    tcase_add_test(tc, an_unknown_kind_or_params_that_are_no_object_are_refused);
    tcase_add_test(tc, a_second_exclusive_job_is_a_conflict_naming_the_first);
    tcase_add_test(tc, an_exclusive_job_that_runs_still_holds_its_name);
    tcase_add_test(tc, the_representation_writes_timestamps_in_utc_with_milliseconds);
    tcase_add_test(tc, get_tells_the_read_scope_of_the_jobs_kind);
    tcase_add_test(tc, an_unknown_job_is_not_found);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_queued_job_is_cancelled_at_once_and_then_not_again);
    tcase_add_test(tc, a_running_job_is_asked_to_stop_and_its_progress_says_so);
    tcase_add_test(tc, a_cancelled_job_whose_process_died_ends_cancelled_not_run_again);
    suite_add_tcase(s, tc);

    tc = tcase_create("run");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_job_that_succeeds_stores_its_result_and_progress);
    tcase_add_test(tc, an_executors_failure_is_stored_as_the_jobs_error);
    tcase_add_test(tc,
                   a_job_that_found_the_database_unavailable_is_retried_until_its_attempts_run_out);
    tcase_add_test(tc, a_job_of_a_kind_this_process_does_not_know_is_left_queued);
    tcase_add_test(tc, jobs_are_claimed_oldest_first);
    tcase_add_test(tc, a_job_stopped_with_its_process_goes_back_to_the_queue_with_its_checkpoint);
    suite_add_tcase(s, tc);

    tc = tcase_create("takeover");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_job_whose_process_died_is_taken_over_from_its_last_checkpoint);
    tcase_add_test(tc, a_job_that_keeps_dying_ends_failed_after_the_last_attempt);
    tcase_add_test(tc, a_running_job_whose_lease_lasts_is_not_taken);
    tcase_add_test(tc, a_job_whose_lease_was_taken_over_stops_at_its_next_progress);
    tcase_add_test(tc, a_kept_lease_outlasts_a_long_silence);
    tcase_add_test(tc, a_takeover_by_a_thread_of_the_same_process_stops_the_first_run_too);
    tcase_add_test(tc, a_job_another_claimer_holds_is_skipped_not_waited_for);
    tcase_add_test(tc, two_workers_never_run_the_same_job);
    suite_add_tcase(s, tc);

    tc = tcase_create("runner");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_runner_runs_a_job_this_process_queues_without_waiting_for_its_poll);
    tcase_add_test(tc, stopping_the_runner_puts_its_running_job_back_in_the_queue);
    tcase_add_test(tc, a_runner_with_nothing_to_do_stops_at_once);
    tcase_add_test(tc, a_worker_name_is_the_host_and_the_pid);
    suite_add_tcase(s, tc);
    return s;
}

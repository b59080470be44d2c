/*
 * metrics/patterns.c — the job that precomputes the base's purchase
 * patterns (customer_metrics.h): its two phases, cohorts (metrics/cohorts.c)
 * and basket (metrics/basket.c), each one set-based statement whose result
 * replaces the previous one in one transaction; the wait on such a
 * statement, which keeps the job's lease; and the job's submission.
 *
 * Checkpoint: once the cohorts are stored (committed), the job's checkpoint
 * says so, and a job taken over after that computes only the basket.
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "auth.h"
#include "clock.h"
#include "customers.h"
#include "jbuf.h"
#include "json.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

enum { PHASE_COHORTS, PHASE_BASKET, PHASES };

static const char *const phase_names[PHASES] = {"cohorts", "basket"};

/* How often a statement that runs long renews the job's lease: well within
 * the shortest lease there is (CRMD_JOB_LEASE_S is at least 5 s). */
#define HEARTBEAT_MS 2000

/* $1 as_of, $2 the reporting currency, $3 the pairs' minimum orders: the
 * values the phases' statements read with current_setting, local to the
 * transaction. work_mem: the cohorts sort a row per customer and month, the
 * basket hashes every pair of SKUs; in memory that is several times faster
 * than spilled to disk, and one such job runs at a time. Memoize would
 * cache each order's basket for nothing (each is seen once). */
static crm_stmt settings =
    CRM_STMT("metrics_patterns_settings",
             "SELECT set_config('crmd.as_of', $1, true), set_config('crmd.currency', $2, true),"
             " set_config('crmd.min_pair_orders', $3, true), set_config('work_mem', '256MB', true),"
             " set_config('enable_memoize', 'off', true)");

bool metrics_patterns_begin(metrics_patterns_run *run, crm_error *err)
{
    char min_orders[16];
    snprintf(min_orders, sizeof min_orders, "%d", run->min_pair_orders);
    const char *values[] = {run->as_of, run->currency, min_orders};
    if (!crm_db_begin(run->c, err))
        return false;
    PGresult *res = crm_db_exec(run->c, &settings, 3, values, err);
    PQclear(res);
    return res != NULL;
}

/* ---- a long statement ---------------------------------------------------------- */

/* Asks the server to cancel what pg runs; its result then comes as an
 * error (57014). */
static void cancel_statement(PGconn *pg)
{
    PGcancel *cancel = PQgetCancel(pg);
    char why[256];
    if (cancel == NULL || !PQcancel(cancel, why, sizeof why))
        crm_log(CRM_LOG_WARN, "metrics: a pattern statement could not be cancelled");
    PQfreeCancel(cancel);
}

/* Waits until pg's statement has its result, renewing the lease every
 * HEARTBEAT_MS; false when the job must stop (the statement is cancelled:
 * its result still comes, as an error). */
static bool wait_renewing(metrics_patterns_run *run, PGconn *pg)
{
    bool go_on = true;
    long long next = crm_monotonic_ms() + HEARTBEAT_MS;
    while (PQisBusy(pg)) {
        long long left = next - crm_monotonic_ms();
        struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
        int rc = poll(&p, 1, left > 0 ? (int)left : 0);
        if (rc < 0 && errno != EINTR)
            break; /* PQgetResult reports the broken connection */
        if (rc > 0 && !PQconsumeInput(pg))
            break;
        if (go_on && crm_monotonic_ms() >= next) {
            go_on = crm_job_progress(run->job, run->phase, run->done, run->total, NULL);
            if (!go_on)
                cancel_statement(pg);
            next = crm_monotonic_ms() + HEARTBEAT_MS;
        }
    }
    return go_on;
}

bool metrics_patterns_run_long(metrics_patterns_run *run, const char *sql, crm_error *err)
{
    PGconn *pg = crm_db_pgconn(run->c);
    if (!PQsendQuery(pg, sql)) {
        crm_db_mark_broken(run->c);
        return crm_db_result_error(pg, NULL, run->phase, err);
    }
    bool go_on = wait_renewing(run, pg);
    /* Every result is read, so that the connection can run the next
     * statement (or the rollback). */
    bool ok = true;
    PGresult *res;
    while ((res = PQgetResult(pg)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (ok && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            ok = go_on ? crm_db_result_error(pg, res, run->phase, err) : false;
        PQclear(res);
    }
    if (PQstatus(pg) != CONNECTION_OK)
        crm_db_mark_broken(run->c);
    if (!go_on)
        return crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
    return ok;
}

/* ---- the job -------------------------------------------------------------------- */

/* as_of and the pairs' minimum from the job's parameters (set at
 * submission), the currency from this process's configuration. */
static bool read_params(metrics_patterns_run *run, crm_error *err)
{
    const json_t *params = crm_job_params(run->job);
    const char *as_of = json_string_value(json_object_get(params, "as_of"));
    long long as_ms;
    if (as_of == NULL || strlen(as_of) >= sizeof run->as_of || !crm_rfc3339_epoch_ms(as_of, &as_ms))
        return crm_error_set(err, CRM_E_INVALID, "the job has no valid as_of");
    snprintf(run->as_of, sizeof run->as_of, "%s", as_of);
    crm_metrics_config cfg = metrics_config();
    snprintf(run->currency, sizeof run->currency, "%s", cfg.currency);
    json_t *min = json_object_get(params, "min_pair_orders");
    run->min_pair_orders =
        json_is_integer(min) && json_integer_value(min) >= 1 && json_integer_value(min) <= 1000000
            ? (int)json_integer_value(min)
            : cfg.basket_min_orders;
    return true;
}

/* Runs one phase in its transaction; records its time in seconds. */
static bool run_phase(metrics_patterns_run *run, int phase, json_t *result, crm_error *err)
{
    static bool (*const compute[PHASES])(metrics_patterns_run *, json_t *, crm_error *) = {
        metrics_cohorts_compute, metrics_basket_compute};
    run->phase = phase_names[phase];
    run->done = phase;
    run->total = PHASES;
    if (!crm_job_progress(run->job, run->phase, run->done, run->total, NULL))
        return crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
    long long started = crm_monotonic_ms();
    if (!metrics_patterns_begin(run, err) || !compute[phase](run, result, err) ||
        !crm_db_commit(run->c, err)) {
        crm_db_rollback(run->c);
        return false;
    }
    double took = (double)(crm_monotonic_ms() - started) / 1000.0;
    json_object_set_new(json_object_get(result, "phase_seconds"), run->phase, json_real(took));
    crm_log(CRM_LOG_INFO, "metrics: patterns %s took %.3f s", run->phase, took);
    return true;
}

/* The cohorts' figures from an earlier attempt's checkpoint, into result. */
static void restore_cohorts(const json_t *checkpoint, json_t *result)
{
    const char *keys[] = {"cohorts", "customers"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(checkpoint, keys[i]);
        if (v != NULL)
            json_object_set(result, keys[i], v);
    }
}

static bool run_patterns(crm_job_ctx *job, crm_error *err)
{
    metrics_patterns_run run = {.job = job, .c = crm_job_conn(job)};
    if (!read_params(&run, err))
        return false;
    json_t *result =
        json_pack("{s:s, s:s, s:i, s:{}}", "as_of", run.as_of, "currency", run.currency,
                  "min_pair_orders", run.min_pair_orders, "phase_seconds");
    if (result == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    const json_t *at = crm_job_checkpoint(job);
    int first = json_is_true(json_object_get(at, "cohorts_stored")) ? PHASE_BASKET : PHASE_COHORTS;
    if (first == PHASE_BASKET)
        restore_cohorts(at, result);
    for (int phase = first; phase < PHASES; phase++) {
        if (!run_phase(&run, phase, result, err)) {
            json_decref(result);
            return false;
        }
        if (phase != PHASE_COHORTS)
            continue;
        json_t *mark = json_pack("{s:b, s:O, s:O}", "cohorts_stored", 1, "cohorts",
                                 json_object_get(result, "cohorts"), "customers",
                                 json_object_get(result, "customers"));
        bool go_on = mark != NULL && crm_job_progress(job, run.phase, phase + 1, PHASES, mark);
        json_decref(mark);
        if (!go_on) {
            json_decref(result);
            return crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
        }
    }
    crm_job_set_result(job, result);
    return true;
}

const crm_job_kind crm_metrics_patterns_kind = {"metrics_patterns", run_patterns,
                                                CRM_SCOPE_METRICS_READ};

json_t *crm_metrics_patterns_submit(long long as_ms, long long api_key_id, long long *running,
                                    crm_error *err)
{
    return metrics_job_submit(&crm_metrics_patterns_kind, "the patterns", as_ms,
                              json_pack("{s:i}", "min_pair_orders",
                                        metrics_config().basket_min_orders),
                              api_key_id, running, err);
}

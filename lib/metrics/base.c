/*
 * metrics/base.c — the job "metrics_base": the whole base's distributions
 * and daily figures (customer_metrics.h), in two phases.
 *
 *   distributions  each measure's distribution over customer_metrics as it
 *                  stands (metrics/distribution.c), one read-only
 *                  transaction per measure, then all of them and the
 *                  base's counts by stage stored in one transaction;
 *   snapshot       metrics_daily's rows for the days complete at as_of
 *                  that are not written yet (metrics/daily.c), one
 *                  statement.
 *
 * All the work is set-based SQL on the job's own connection; C only
 * derives a histogram's edges between two statements. Checkpoint: once the
 * distributions are stored, a job taken over goes on with the snapshot
 * (which is idempotent anyway: it writes only days not written).
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "auth.h"
#include "clock.h"
#include "customers.h"
#include "jbuf.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

typedef struct base_run {
    crm_job_ctx *job;
    crm_conn *c;
    long long as_of_ms;
    char as_of[48];
    long long steps; /* the measures, storing them, the snapshot's two passes */
    json_t *seconds;
} base_run;

static bool stopped(crm_error *err)
{
    return crm_error_set(err, CRM_E_CONFLICT, "the job was cancelled or taken over");
}

static void record_seconds(base_run *B, const char *phase, long long started)
{
    double took = (double)(crm_monotonic_ms() - started) / 1000.0;
    json_object_set_new(B->seconds, phase, json_real(took));
    crm_log(CRM_LOG_INFO, "metrics: base %s took %.3f s", phase, took);
}

static bool phase_distributions(base_run *B, crm_error *err)
{
    long long started = crm_monotonic_ms();
    size_t n = metrics_measure_count();
    json_t *rows = json_array();
    if (rows == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        ok =
            crm_job_progress(B->job, "distributions", (long long)i, B->steps, NULL) || stopped(err);
        ok = ok && metrics_distribution_compute(B->c, i, rows, err);
    }
    char now[48];
    crm_format_timestamp(crm_wall_ms(), now);
    ok = ok && metrics_distributions_store(B->c, rows, now, crm_job_id(B->job), err);
    json_decref(rows);
    if (!ok)
        return false;
    record_seconds(B, "distributions", started);
    json_t *mark = json_pack("{s:b}", "distributions", 1);
    ok =
        crm_job_progress(B->job, "distributions", (long long)n + 1, B->steps, mark) || stopped(err);
    json_decref(mark);
    return ok;
}

static bool phase_snapshot(base_run *B, json_t **days, crm_error *err)
{
    long long started = crm_monotonic_ms();
    if (!crm_job_progress(B->job, "snapshot", B->steps - 2, B->steps, NULL))
        return stopped(err);
    const long long second_pass[2] = {B->steps - 1, B->steps};
    if (!metrics_daily_snapshot(B->job, B->c, B->as_of_ms, second_pass, days, err))
        return false;
    record_seconds(B, "snapshot", started);
    return true;
}

static bool run_base(crm_job_ctx *job, crm_error *err)
{
    base_run B = {
        .job = job, .c = crm_job_conn(job), .steps = (long long)metrics_measure_count() + 3};
    const char *as_of = json_string_value(json_object_get(crm_job_params(job), "as_of"));
    if (as_of == NULL || strlen(as_of) >= sizeof B.as_of ||
        !crm_rfc3339_epoch_ms(as_of, &B.as_of_ms))
        return crm_error_set(err, CRM_E_INVALID, "the job has no valid as_of");
    snprintf(B.as_of, sizeof B.as_of, "%s", as_of);
    B.seconds = json_object();
    bool done = json_is_true(json_object_get(crm_job_checkpoint(job), "distributions"));
    json_t *days = NULL;
    bool ok = B.seconds != NULL && (done || phase_distributions(&B, err)) &&
              phase_snapshot(&B, &days, err);
    if (!ok) {
        json_decref(B.seconds);
        json_decref(days);
        return false;
    }
    crm_job_set_result(job, json_pack("{s:s, s:I, s:o, s:o}", "as_of", B.as_of, "measures",
                                      (json_int_t)(done ? 0 : metrics_measure_count()), "days",
                                      days, "phase_seconds", B.seconds));
    return true;
}

const crm_job_kind crm_metrics_base_kind = {"metrics_base", run_base, CRM_SCOPE_METRICS_READ};

json_t *crm_metrics_base_submit(long long as_ms, long long api_key_id, long long *running,
                                crm_error *err)
{
    return metrics_job_submit(&crm_metrics_base_kind, "the base's metrics", as_ms, json_object(),
                              api_key_id, running, err);
}

/*
 * metrics_follower.c — the follower's thread (see metrics_follower.h).
 */
#include "metrics_follower.h"
#include "customer_metrics.h"
#include "clock.h"
#include "log.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How often the leader looks whether a scheduled recompute is due. */
#define SCHEDULE_CHECK_MS 60000

struct metrics_follower {
    metrics_follower_config cfg; /* cfg.db.url points to url */
    char *url;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on the monotonic clock */
    pthread_t thread;
    char head[96]; /* where the change feeds ended after the last sweep */
};

/* Sleeps ms, or less when stopped. */
static void nap(metrics_follower *f, int ms)
{
    struct timespec until = crm_monotonic_after_ms(ms);
    pthread_mutex_lock(&f->mu);
    while (!atomic_load(&f->stop))
        if (pthread_cond_timedwait(&f->cv, &f->mu, &until) != 0)
            break;
    pthread_mutex_unlock(&f->mu);
}

static bool connection_lost(crm_conn *c)
{
    return PQstatus(crm_db_pgconn(c)) != CONNECTION_OK;
}

/* A failure is logged when failing starts, at debug level while it lasts. */
static void note_failure(bool *failing, const char *what, const crm_error *err)
{
    crm_log(*failing ? CRM_LOG_DEBUG : CRM_LOG_WARN, "metrics follower: %s: %s", what,
            err->detail);
    *failing = true;
}

/* After a sweep that left changes waiting: whether the feeds grew since
 * the last such look (an ingest goes on beside the follower), or it cannot
 * tell. */
static bool feeds_growing(metrics_follower *f, crm_conn *c)
{
    crm_error err = CRM_ERROR_INIT;
    char head[sizeof f->head];
    bool known = crm_metrics_follow_head(c, head, sizeof head, &err);
    crm_error_clear(&err);
    if (!known) {
        f->head[0] = '\0';
        return true;
    }
    bool grew = strcmp(head, f->head) != 0;
    memcpy(f->head, head, sizeof head);
    return grew;
}

/* One round: connect and claim when needed, sweep, schedule. True when
 * there is more to do; *swept_ms is how long the sweep took, and *growing
 * whether the feeds grew while it went on. */
static bool round_once(metrics_follower *f, crm_conn **c, bool *leader, long long *next_check,
                       bool *failing, long long *swept_ms, bool *growing)
{
    crm_error err = CRM_ERROR_INIT;
    bool more = false;
    if (*c == NULL) {
        *c = crm_db_open_private(&f->cfg.db, &err);
        *leader = false;
        if (*c == NULL) {
            note_failure(failing, "cannot connect", &err);
            crm_error_clear(&err);
            return false;
        }
    }
    if (!*leader && !crm_metrics_follow_claim(*c, leader, &err)) {
        note_failure(failing, "cannot claim", &err);
    } else if (*leader) {
        long long customers = 0, started = crm_monotonic_ms();
        bool swept = crm_metrics_follow(*c, f->cfg.batch, &customers, &more, &err);
        *swept_ms = crm_monotonic_ms() - started;
        if (!swept) {
            /* A recompute published under the sweep (its place moved): the
             * sweep is done again at once, from the new place. */
            if (err.code == CRM_E_CONFLICT)
                more = true;
            else
                note_failure(failing, "a sweep failed", &err);
        } else {
            *failing = false;
            if (customers > 0)
                crm_log(CRM_LOG_DEBUG, "metrics follower: %lld customers updated", customers);
            *growing = more && f->cfg.duty_percent < 100 && feeds_growing(f, *c);
        }
        crm_error_clear(&err);
        long long now = crm_monotonic_ms();
        if (f->cfg.schedule_hours > 0 && now >= *next_check) {
            bool queued = false;
            if (!crm_metrics_schedule(f->cfg.schedule_hours, &queued, &err))
                note_failure(failing, "cannot schedule the recompute", &err);
            else if (queued)
                crm_log(CRM_LOG_INFO, "metrics: a scheduled full recompute is queued");
            *next_check = now + SCHEDULE_CHECK_MS;
        }
    }
    crm_error_clear(&err);
    if (connection_lost(*c)) { /* the lock went with it */
        crm_db_close_private(*c);
        *c = NULL;
        *leader = false;
        more = false;
    }
    return more;
}

/* With changes waiting while the feeds still grow (an ingest goes on), the
 * follower works at most duty_percent of the time: after a sweep of t ms
 * it rests t (100 - duty) / duty ms, so a bulk ingest keeps most of the
 * machine. Once they stop growing, it catches up at full speed. With no
 * change waiting, it looks again after poll_ms. */
static void *follower_main(void *arg)
{
    metrics_follower *f = arg;
    crm_conn *c = NULL;
    bool leader = false, failing = false;
    long long next_check = 0;
    while (!atomic_load(&f->stop)) {
        long long swept_ms = 0;
        bool growing = false;
        if (!round_once(f, &c, &leader, &next_check, &failing, &swept_ms, &growing))
            nap(f, f->cfg.poll_ms);
        else if (growing)
            nap(f, (int)(swept_ms * (100 - f->cfg.duty_percent) / f->cfg.duty_percent));
    }
    crm_db_close_private(c);
    return NULL;
}

static void follower_free(metrics_follower *f)
{
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f->url);
    free(f);
}

metrics_follower *metrics_follower_start(const metrics_follower_config *cfg, crm_error *err)
{
    metrics_follower *f = calloc(1, sizeof *f);
    if (f == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory starting the metrics follower");
        return NULL;
    }
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &attr);
    pthread_condattr_destroy(&attr);
    atomic_store(&f->stop, false);
    f->cfg = *cfg;
    f->url = strdup(cfg->db.url != NULL ? cfg->db.url : "");
    f->cfg.db.url = f->url;
    if (f->cfg.poll_ms <= 0)
        f->cfg.poll_ms = 500;
    if (f->cfg.duty_percent <= 0 || f->cfg.duty_percent > 100)
        f->cfg.duty_percent = 100;
    if (f->url == NULL || pthread_create(&f->thread, NULL, follower_main, f) != 0) {
        follower_free(f);
        crm_error_set(err, CRM_E_INTERNAL, "cannot start the metrics follower");
        return NULL;
    }
    return f;
}

void metrics_follower_stop(metrics_follower *f)
{
    if (f == NULL)
        return;
    atomic_store(&f->stop, true);
    pthread_mutex_lock(&f->mu);
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    follower_free(f);
}

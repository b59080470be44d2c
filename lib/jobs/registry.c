/*
 * jobs/registry.c — the kinds of job this process knows how to run, and
 * who wants to hear that a job was queued.
 *
 * Kinds are registered at start, before any job is claimed; a process only
 * ever claims jobs of kinds it has registered, so processes of different
 * versions side by side each take only the work they can do.
 */
#include "internal.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KINDS 16
#define KIND_NAME_MAX 63 /* the CHECK on jobs.kind (migration 0016) */

static struct {
    pthread_mutex_t lock;
    const crm_job_kind *kinds[MAX_KINDS];
    int count;
    void (*listener)(void *arg);
    void *listener_arg;
} registry = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* A kind's name as jobs.kind allows it: [a-z][a-z0-9_]*, at most 63 long.
 * Such a name also needs no quoting inside a text[] literal. */
static bool kind_name_valid(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > KIND_NAME_MAX || name[0] < 'a' || name[0] > 'z')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* A bad registration is a programming error found at start: it stops the
 * process rather than leaving a kind silently never run. */
void crm_jobs_register(const crm_job_kind *kind)
{
    if (kind == NULL || !kind_name_valid(kind->name) || kind->run == NULL) {
        crm_log(CRM_LOG_ERROR, "crm_jobs_register: a kind needs a name of [a-z0-9_] and a run");
        abort();
    }
    pthread_mutex_lock(&registry.lock);
    for (int i = 0; i < registry.count; i++)
        if (strcmp(registry.kinds[i]->name, kind->name) == 0) { /* again: the latest wins */
            registry.kinds[i] = kind;
            pthread_mutex_unlock(&registry.lock);
            return;
        }
    if (registry.count == MAX_KINDS) {
        pthread_mutex_unlock(&registry.lock);
        crm_log(CRM_LOG_ERROR, "crm_jobs_register: more than %d kinds of job", MAX_KINDS);
        abort();
    }
    registry.kinds[registry.count++] = kind;
    pthread_mutex_unlock(&registry.lock);
}

const crm_job_kind *crm_jobs_kind(const char *name)
{
    const crm_job_kind *found = NULL;
    pthread_mutex_lock(&registry.lock);
    for (int i = 0; i < registry.count && found == NULL && name != NULL; i++)
        if (strcmp(registry.kinds[i]->name, name) == 0)
            found = registry.kinds[i];
    pthread_mutex_unlock(&registry.lock);
    return found;
}

bool jobs_kinds_literal(char *out, size_t size)
{
    size_t used = 0;
    bool fits = size >= 3;
    pthread_mutex_lock(&registry.lock);
    if (fits)
        out[used++] = '{';
    for (int i = 0; i < registry.count && fits; i++) {
        size_t n = strlen(registry.kinds[i]->name);
        fits = used + n + 3 <= size; /* the name, a comma or '}', and the NUL */
        if (!fits)
            break;
        if (i > 0)
            out[used++] = ',';
        memcpy(out + used, registry.kinds[i]->name, n);
        used += n;
    }
    pthread_mutex_unlock(&registry.lock);
    if (!fits)
        return false;
    out[used++] = '}';
    out[used] = '\0';
    return true;
}

void crm_jobs_set_submit_listener(void (*listener)(void *arg), void *arg)
{
    pthread_mutex_lock(&registry.lock);
    registry.listener = listener;
    registry.listener_arg = arg;
    pthread_mutex_unlock(&registry.lock);
}

/* Called under the lock, so that once crm_jobs_set_submit_listener has
 * cleared a listener no call into it is still under way and its owner may
 * go. The listener must therefore be quick and must not call back into the
 * registry (the runner's only signals a condition variable). */
void jobs_notify_submitted(void)
{
    pthread_mutex_lock(&registry.lock);
    if (registry.listener != NULL)
        registry.listener(registry.listener_arg);
    pthread_mutex_unlock(&registry.lock);
}

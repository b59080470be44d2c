/*
 * metrics/load.c — what a computation of customers' metrics reads, and the
 * customers summarised from it: the rates to the reporting currency, the
 * purchases, refunds and scored feedback of each customer (any order), and
 * their engagement counts. The full recompute fills it from COPY streams of
 * the whole base, the follower from queries over a few customers; both hand
 * it the same fields, so both summarise alike.
 */
#include "metrics/internal.h"
#include "jbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crm_stmt rates = CRM_STMT_RO("metrics_rates",
                                    "SELECT currency, rate::float8 FROM currency_rates");

bool metrics_exec(crm_conn *c, crm_stmt *stmt, int n, const char *const *params, crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, n, params, err);
    if (res == NULL)
        return false;
    PQclear(res);
    return true;
}

bool metrics_grow(void **items, size_t *cap, size_t used, size_t size, crm_error *err)
{
    if (used < *cap)
        return true;
    size_t more = *cap ? *cap * 2 : 1024;
    void *grown = realloc(*items, more * size);
    if (grown == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    *items = grown;
    *cap = more;
    return true;
}

bool metrics_load_rates(metrics_load *L, crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &rates, 0, NULL, err);
    if (res == NULL)
        return false;
    size_t n = (size_t)PQntuples(res);
    free(L->rates);
    L->rates = calloc(n ? n : 1, sizeof *L->rates);
    if (L->rates == NULL) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    L->nrates = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(L->rates[i].currency, sizeof L->rates[i].currency, "%s",
                 PQgetvalue(res, (int)i, 0));
        L->rates[i].rate = strtod(PQgetvalue(res, (int)i, 1), NULL);
    }
    PQclear(res);
    return true;
}

bool metrics_load_customer(metrics_load *L, long long id, crm_error *err)
{
    if (!metrics_grow((void **)&L->customers, &L->cap, L->n, sizeof *L->customers, err))
        return false;
    L->customers[L->n++] = (metrics_customer){.id = id};
    return true;
}

/* value in currency, converted: false when there is no rate for it. */
static bool convert(const metrics_load *L, const char *currency, double *value)
{
    if (strcmp(currency, L->cfg.currency) == 0)
        return true;
    for (size_t i = 0; i < L->nrates; i++)
        if (strcmp(L->rates[i].currency, currency) == 0) {
            *value *= L->rates[i].rate;
            return true;
        }
    return false;
}

static bool is_null(const char *field)
{
    return strcmp(field, "\\N") == 0;
}

/* PostgreSQL's timestamp text as epoch ms (floored). */
static bool read_time(const char *text, long long *ms)
{
    long long us;
    if (!crm_parse_pg_timestamp(text, &us))
        return false;
    *ms = us >= 0 ? us / 1000 : -((-us + 999) / 1000);
    return true;
}

bool metrics_load_event(metrics_load *L, char *const f[METRICS_EVENT_FIELDS], crm_error *err)
{
    long long at_ms;
    if (!read_time(f[2], &at_ms))
        return crm_error_set(err, CRM_E_INTERNAL, "a touchpoint's time cannot be read");
    if (at_ms > L->as_of_ms)
        return true; /* after the observation's end */
    metrics_event e = {.at_ms = at_ms, .kind = f[3][0], .rated = true};
    if (e.kind == 'f') {
        if (is_null(f[6]) || is_null(f[7]))
            return true; /* feedback without a score */
        e.scale = f[6][0] == 'n' ? 'n' : 'c';
        e.score = atoi(f[7]);
    } else if (!is_null(f[4])) {
        e.has_value = true;
        e.value = strtod(f[4], NULL);
        e.rated = convert(L, f[5], &e.value);
    }
    if (!metrics_grow((void **)&L->events, &L->events_cap, L->nevents, sizeof *L->events, err))
        return false;
    L->events[L->nevents++] =
        (metrics_loaded_event){strtoll(f[0], NULL, 10), strtoll(f[1], NULL, 10), e};
    return true;
}

bool metrics_load_engagement(metrics_load *L, char *const f[3], crm_error *err)
{
    metrics_engagement g = {.customer_id = strtoll(f[0], NULL, 10), .touchpoints_90d = atoi(f[1])};
    if (!is_null(f[2])) {
        if (!read_time(f[2], &g.last_inbound_ms))
            return crm_error_set(err, CRM_E_INTERNAL, "a touchpoint's time cannot be read");
        g.has_inbound = true;
    }
    if (!metrics_grow((void **)&L->eng, &L->eng_cap, L->neng, sizeof *L->eng, err))
        return false;
    L->eng[L->neng++] = g;
    return true;
}

bool metrics_split_line(const char *line, size_t len, char *buf, size_t size, char **f, int n)
{
    if (len >= size)
        return false;
    memcpy(buf, line, len);
    buf[len] = '\0';
    char *p = buf;
    for (int i = 0; i < n; i++) {
        f[i] = p;
        p = strpbrk(p, "\t\n");
        if (p == NULL && i < n - 1)
            return false;
        if (p != NULL)
            *p++ = '\0';
    }
    return true;
}

static int by_customer_and_time(const void *a, const void *b)
{
    const metrics_loaded_event *x = a, *y = b;
    if (x->customer_id != y->customer_id)
        return (x->customer_id > y->customer_id) - (x->customer_id < y->customer_id);
    if (x->e.at_ms != y->e.at_ms)
        return (x->e.at_ms > y->e.at_ms) - (x->e.at_ms < y->e.at_ms);
    return (x->id > y->id) - (x->id < y->id);
}

static int engagement_by_customer(const void *a, const void *b)
{
    long long x = ((const metrics_engagement *)a)->customer_id;
    long long y = ((const metrics_engagement *)b)->customer_id;
    return (x > y) - (x < y);
}

void metrics_load_summarise(metrics_load *L)
{
    if (L->nevents > 0)
        qsort(L->events, L->nevents, sizeof *L->events, by_customer_and_time);
    size_t e = 0;
    for (size_t i = 0; i < L->n; i++) {
        metrics_customer *c = &L->customers[i];
        while (e < L->nevents && L->events[e].customer_id < c->id)
            e++; /* a customer not live (merged away, erased) */
        metrics_acc acc;
        metrics_acc_begin(&acc, c->id, L->as_of_ms, L->cfg.window_days);
        for (; e < L->nevents && L->events[e].customer_id == c->id; e++)
            metrics_acc_add(&acc, &L->events[e].e);
        metrics_acc_end(&acc);
        *c = acc.c;
    }
    free(L->events);
    L->events = NULL;
    L->nevents = L->events_cap = 0;
}

void metrics_load_add_engagement(metrics_load *L)
{
    if (L->neng > 0)
        qsort(L->eng, L->neng, sizeof *L->eng, engagement_by_customer);
    size_t g = 0;
    for (size_t i = 0; i < L->n; i++) {
        metrics_customer *c = &L->customers[i];
        while (g < L->neng && L->eng[g].customer_id < c->id)
            g++;
        if (g < L->neng && L->eng[g].customer_id == c->id) {
            c->touchpoints_90d = L->eng[g].touchpoints_90d;
            c->has_inbound = L->eng[g].has_inbound;
            c->last_inbound_ms = L->eng[g].last_inbound_ms;
        }
    }
    free(L->eng);
    L->eng = NULL;
    L->neng = L->eng_cap = 0;
}

void metrics_load_free(metrics_load *L)
{
    free(L->customers);
    free(L->events);
    free(L->eng);
    free(L->rates);
    memset(L, 0, sizeof *L);
}

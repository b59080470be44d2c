/*
 * metrics/scales.c — the base's scales: the bounds of the RFM scores and
 * of the value tiers as the last full recompute ranked them, kept in
 * metrics_scales, so that a customer updated between recomputes is scored
 * against the same base without ranking it again.
 *
 * A score's bound is the highest value among the customers scored at most
 * that score. Scores rise with the value and equal values share one, so a
 * value scored by the recompute gets the same score from its bounds: the
 * lowest score whose bound it does not pass (metrics_scale_score).
 *
 * Recency is scaled by the time of the last purchase (ms since the epoch),
 * which orders customers as recency does (reversed) but does not move as
 * time passes: a customer scored hours after the recompute is placed among
 * the same customers, not shifted by the hours.
 */
#include "metrics/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crm_stmt scales_latest = CRM_STMT_RO(
    "metrics_scales_latest",
    "SELECT recency[1], recency[2], recency[3], recency[4], frequency[1], frequency[2],"
    " frequency[3], frequency[4], monetary[1], monetary[2], monetary[3], monetary[4],"
    " tier_top, tier_high FROM metrics_scales ORDER BY id DESC LIMIT 1");

static crm_stmt scales_insert = CRM_STMT(
    "metrics_scales_insert",
    "INSERT INTO metrics_scales (as_of, recency, frequency, monetary, tier_top, tier_high,"
    " customers, job_id) VALUES ($1::timestamptz, $2::float8[], $3::float8[], $4::float8[],"
    " $5::float8, $6::float8, $7::bigint, nullif($8::bigint, 0))");

bool metrics_scales_latest(crm_conn *c, metrics_scales *s, crm_error *err)
{
    memset(s, 0, sizeof *s);
    PGresult *res = crm_db_exec(c, &scales_latest, 0, NULL, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) == 1) {
        s->have = true;
        for (int i = 0; i < 4; i++) {
            s->recency[i] = strtod(PQgetvalue(res, 0, i), NULL);
            s->frequency[i] = strtod(PQgetvalue(res, 0, 4 + i), NULL);
            s->monetary[i] = strtod(PQgetvalue(res, 0, 8 + i), NULL);
        }
        s->have_top = !PQgetisnull(res, 0, 12);
        s->tier_top = s->have_top ? strtod(PQgetvalue(res, 0, 12), NULL) : 0;
        s->have_high = !PQgetisnull(res, 0, 13);
        s->tier_high = s->have_high ? strtod(PQgetvalue(res, 0, 13), NULL) : 0;
    }
    PQclear(res);
    return true;
}

void metrics_scales_apply(const metrics_scales *s, metrics_customer *c)
{
    if (!s->have || c->purchases == 0)
        return;
    c->r = metrics_scale_score(s->recency, (double)c->last_ms);
    c->f = metrics_scale_score(s->frequency, c->frequency);
    c->mscore = metrics_scale_score(s->monetary, c->monetary);
    if (!c->scored)
        return;
    if (s->have_top && c->predicted_value >= s->tier_top)
        c->tier = 't';
    else if (s->have_high && c->predicted_value >= s->tier_high)
        c->tier = 'h';
    else
        c->tier = 's';
}

/* Raises the bounds of score and above to v. */
static void raise_bounds(double bounds[4], short score, double v)
{
    for (int s = score - 1; s < 4; s++)
        if (s >= 0 && v > bounds[s])
            bounds[s] = v;
}

void metrics_scales_from(const metrics_customer *customers, size_t n, metrics_scales *s)
{
    memset(s, 0, sizeof *s);
    s->have = true;
    for (int i = 0; i < 4; i++)
        s->recency[i] = s->frequency[i] = s->monetary[i] = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        const metrics_customer *c = &customers[i];
        if (c->purchases == 0 || c->r == 0)
            continue;
        raise_bounds(s->recency, c->r, (double)c->last_ms);
        raise_bounds(s->frequency, c->f, c->frequency);
        raise_bounds(s->monetary, c->mscore, c->monetary);
        if (!c->scored || c->tier == 's' || c->tier == 0)
            continue;
        if (c->tier == 't' && (!s->have_top || c->predicted_value < s->tier_top)) {
            s->have_top = true;
            s->tier_top = c->predicted_value;
        }
        if (!s->have_high || c->predicted_value < s->tier_high) {
            s->have_high = true;
            s->tier_high = c->predicted_value;
        }
    }
}

/* {a,b,c,d} with PostgreSQL's spelling of infinities. */
static void array_text(const double v[4], char *out, size_t size)
{
    size_t used = 0;
    for (int i = 0; i < 4 && used < size; i++) {
        char one[40];
        if (isinf(v[i]))
            snprintf(one, sizeof one, "%s", v[i] < 0 ? "-Infinity" : "Infinity");
        else
            snprintf(one, sizeof one, "%.17g", v[i]);
        int n = snprintf(out + used, size - used, "%s%s%s", i == 0 ? "{" : ",", one,
                         i == 3 ? "}" : "");
        used += n > 0 ? (size_t)n : 0;
    }
}

bool metrics_scales_store(crm_conn *c, const metrics_scales *s, const char *as_of, size_t customers,
                          long long job_id, crm_error *err)
{
    char recency[200], frequency[200], monetary[200], top[40], high[40], count[24], job[24];
    array_text(s->recency, recency, sizeof recency);
    array_text(s->frequency, frequency, sizeof frequency);
    array_text(s->monetary, monetary, sizeof monetary);
    snprintf(top, sizeof top, "%.17g", s->tier_top);
    snprintf(high, sizeof high, "%.17g", s->tier_high);
    snprintf(count, sizeof count, "%zu", customers);
    snprintf(job, sizeof job, "%lld", job_id);
    const char *params[] = {as_of,         recency, frequency, monetary, s->have_top ? top : NULL,
                            s->have_high ? high : NULL, count,   job};
    PGresult *res = crm_db_exec(c, &scales_insert, 8, params, err);
    if (res == NULL)
        return false;
    PQclear(res);
    return true;
}

/*
 * jobs/internal.h — what the files of lib/jobs/ share and nothing outside
 * them uses: the select list of a job's representation, and the registry's
 * list of kinds as the claimer passes it to SQL. The public interface is
 * lib/jobs.h.
 */
#ifndef CRM_JOBS_INTERNAL_H
#define CRM_JOBS_INTERNAL_H

#include "jobs.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>

/* The columns of a job's representation, in the order job_from_row reads
 * them. Timestamps travel as epoch milliseconds and are formatted in C. */
#define JOB_COLUMNS                                                                                \
    "id, kind, state, phase, done, total, params::text, result::text, error::text, attempts, "     \
    "(extract(epoch FROM created_at) * 1000)::bigint, "                                            \
    "(extract(epoch FROM started_at) * 1000)::bigint, "                                            \
    "(extract(epoch FROM finished_at) * 1000)::bigint"

/* A job's representation from row r of a JOB_COLUMNS result (jobs.c);
 * the caller owns it. NULL when out of memory. */
json_t *job_from_row(const PGresult *res, int r);

/* The names of the registered kinds as a PostgreSQL text[] literal
 * ("{a,b}", "{}" when none) into out (registry.c). Kind names are checked
 * at registration to need no quoting. False when it does not fit. */
bool jobs_kinds_literal(char *out, size_t size);

/* Tells the submit listener, if any, that a job was queued (registry.c). */
void jobs_notify_submitted(void);

/* The largest text[] literal of every kind name (16 names of up to 63
 * characters, their commas and braces). */
#define JOBS_KINDS_LITERAL_MAX (16 * 64 + 3)

#endif

/*
 * segments/live.h — what the definitions (store.c) share with the upkeep
 * (live.c): the advisory lock class and the queueing of a build.
 */
#ifndef CRM_SEGMENTS_LIVE_H
#define CRM_SEGMENTS_LIVE_H

#include <stdbool.h>

#include "db.h"
#include "error.h"

/* The class of the segments' advisory locks (pg_advisory_*(class, key)):
 * key 0 the writes' gate, -1 the definitions, a segment's id its own. */
#define CRM_SEGMENTS_LOCK_CLASS "1229"

/* Queues the build of segment id inside the caller's transaction on c
 * (the job exists, and runs, once it commits; call crm_jobs_wake() then)
 * and records the job on the segment. */
bool segments_queue_build(crm_conn *c, long long id, long long api_key_id, crm_error *err);

#endif

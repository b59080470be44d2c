/*
 * segment_store.h — segments: a named, versioned rule (segments.h) and its
 * live membership, kept exact by every write that can change it, with the
 * log of every entry and exit (migration 0022).
 *
 * Definitions (segments/store.c). A segment is created "building": a job
 * (kind segment_build, GET /v1/jobs/{id}) computes its membership from
 * nothing, and it is "live" from then on. A changed rule is a new
 * rule_version and a rebuild by the same job, which moves only the
 * customers whose standing changed. A rule may name other segments
 * ({"segment": id}); a cycle is refused, and memberships are kept in the
 * order of dependence (rank: 0 for a rule that names none, else one more
 * than the highest rank it names).
 *
 * Upkeep (segments/live.c). Every write that can change a customer's
 * standing calls crm_segments_refresh in its own transaction, with the ids it
 * touched and what it changed: each live segment whose rule reads that is
 * evaluated for those customers (the segments of one rank, which name none
 * of each other, together) in one set-based statement, which moves
 * them in or out, logs each move, records the change of size and stores
 * when each customer's standing may next change with no write (flip_at). A
 * background tick (crm_segments_tick, every crmd process, claimed through
 * PostgreSQL) re-evaluates the customers whose flip_at has passed, folds the
 * size deltas, records each segment's size once a day and queues builds that
 * are due.
 *
 * Locks. A build and the writes beside it must neither miss nor undo one
 * another. With K the segments' advisory lock class: a write takes (K, 0)
 * shared, then (K, id) shared of every segment in id order, then reads the
 * segments' rules and refreshes them, all in its transaction. A build
 * first takes (K, 0) exclusive and lets it go at once (every write that
 * began before the build's segment or rule was committed has then ended),
 * then in its own transaction (K, id) exclusive of the segment and those
 * that depend on it, and (K, id) shared of the segments these name (a build
 * of theirs under way is waited for), all in id order, and evaluates them
 * over the whole base. A write that comes later waits for the build and
 * then sees its result. Definitions change one at a time under (K, -1),
 * which no build holds: creating or changing a segment never waits for a
 * build.
 */
#ifndef CRM_SEGMENT_STORE_H
#define CRM_SEGMENT_STORE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"
#include "segments.h"

#define CRM_SEGMENTS_MAX 200 /* live segments at most */
#define CRM_SEGMENT_REFRESH_MAX_IDS 100000

/* What a write changed, for crm_segments_refresh (the bits of
 * CRM_RULE_READS_* in segments.h). */
#define CRM_SEGMENTS_ALL 0xffu

/* ---- definitions --------------------------------------------------------- */

/* POST /v1/segments: {"name", "description"?, "rule"}. Returns the segment
 * (see crm_segment_get) and queues its build; CRM_E_INVALID with field
 * errors (the rule's named under /rule), CRM_E_CONFLICT for a name in use. */
json_t *crm_segment_create(const json_t *body, long long api_key_id, crm_error *err);

/* The segment: {"id", "name", "description", "rule", "version",
 * "rule_version", "state", "size", "build_job_id", "depends_on",
 * "created_at", "updated_at"}; CRM_E_NOT_FOUND. */
json_t *crm_segment_get(long long id, crm_error *err);

/* PATCH /v1/segments/{id} (JSON merge patch of name, description, rule),
 * under if_match when not NULL (CRM_E_PRECONDITION on mismatch). A rule
 * that differs is a new rule_version and a rebuild. */
json_t *crm_segment_patch(long long id, const json_t *patch, const char *if_match,
                          long long api_key_id, crm_error *err);

/* DELETE: CRM_E_CONFLICT while another segment's rule names it. */
bool crm_segment_delete(long long id, const char *if_match, crm_error *err);

/* A page of the segments by id: {"data", "next_cursor" (an id)}. */
json_t *crm_segments_list(long long after_id, int limit, long long *next_after, crm_error *err);

/* ---- reading a membership ------------------------------------------------- */

/* The number of members now (at_ms 0: the kept count) or at at_ms (from
 * the log), as one statement for the event loop; render gives
 * {"segment_id", "count", "state", "at"} ("building" while the membership
 * is not exact yet) or CRM_E_NOT_FOUND. */
void crm_segment_count_query(crm_query *q, long long id, long long at_ms);
char *crm_segment_count_render(const PGresult *res, long long id, long long at_ms, size_t *len,
                               crm_error *err);

/* A page of the members (customer documents) in customer id order, after
 * after_id; now (at_ms 0) or at at_ms, from the log. Returns the JSON text
 * of {"data": [...]} without next_cursor; *next_after gets the last id shown
 * when there is a next page, else 0. */
json_t *crm_segment_customers(long long id, long long at_ms, long long after_id, int limit,
                              long long *next_after, crm_error *err);

/* A page of the log, oldest first, after change after_id and at or after
 * since_ms (0: from the beginning): {"data": [{"id", "customer_id",
 * "change": "entered"|"left", "at", "rule_version", "cause", "cause_ref"}]}. */
json_t *crm_segment_changes(long long id, long long since_ms, long long after_id, int limit,
                            long long *next_after, crm_error *err);

/* A page of the size over time, oldest first: {"data": [{"at", "size",
 * "rule_version", "reason"}]}; the cursor is the position in that order. */
json_t *crm_segment_history(long long id, long long after, int limit, long long *next_after,
                            crm_error *err);

/* ---- upkeep ----------------------------------------------------------- */

/* Inside the caller's transaction on c: re-evaluates, for the customers
 * ids (a bigint array literal, "{1,2}"), every live or building segment
 * whose rule reads something in what (CRM_RULE_READS_*), and every segment
 * that names another, in order of dependence. cause is one of segment_changes'
 * causes; ref (may be NULL) what the change log names as its source.
 * False with err: the caller rolls back. */
bool crm_segments_refresh(crm_conn *c, const char *ids, unsigned what, const char *cause,
                          const char *ref, crm_error *err);

/* One touchpoint a write stored, for crm_segments_refresh_touchpoints. */
typedef struct crm_segment_touchpoint {
    long long customer_id;
    crm_rule_touchpoint_facts facts;
} crm_segment_touchpoint;

/* crm_segments_refresh for a write that stored the touchpoints t[0..n) and
 * made the customers made[0..nmade),
 * in the caller's transaction: a segment is re-evaluated only for the
 * customers whose new touchpoints one of its rule's touchpoint aggregates
 * would count (crm_rule_touchpoint_counts), and for the customers the write
 * made; a segment that names segments, for all of them. */
bool crm_segments_refresh_touchpoints(crm_conn *c, const crm_segment_touchpoint *t, size_t n,
                                      const long long *made, size_t nmade, const char *cause,
                                      const char *ref, crm_error *err);

/* Inside the caller's transaction on c (a batch of touchpoints): queues
 * the touchpoints ids[0..n) for the segments' upkeep, which judges their
 * customers as crm_segments_refresh_touchpoints would, soon after the
 * caller commits (crm_segments_drain). */
bool crm_segments_queue_touchpoints(crm_conn *c, const long long *ids, size_t n, crm_error *err);

/* Inside the caller's transaction on c: queues the customers ids (a bigint
 * array literal) for the upkeep, which judges them by every segment whose
 * rule reads something in what, logged with cause, soon after the caller
 * commits (crm_segments_drain). For a writer whose snapshot may be older
 * than a build it would wait for (the metrics' follower: REPEATABLE READ). */
bool crm_segments_queue_customers(crm_conn *c, const char *ids, unsigned what, const char *cause,
                                  crm_error *err);

/* Judges the customers of at most batches queued batches, oldest first, in
 * one transaction of its own that also takes them off the queue (rows
 * another process holds are skipped). *did: how many were taken. */
bool crm_segments_drain(int batches, long *did, crm_error *err);

/* Registers the job kind segment_build (once, at start). */
void crm_segments_register_jobs(void);

/* One round of the background upkeep: customers whose standing is due to
 * flip (at most batch of them), size deltas folded, the daily size,
 * builds that are due. *did gets how many customers were re-evaluated. */
bool crm_segments_tick(int batch, long *did, crm_error *err);

/* Queues a rebuild of every segment whose rule reads what (a full
 * recompute of the metrics, say), with cause. */
bool crm_segments_rebuild_reading(unsigned what, const char *cause, crm_error *err);

#endif

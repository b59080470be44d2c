/*
 * sync.h — the change feeds of customers, touchpoints and segment
 * memberships, for apps that keep their own copy (GET /v1/sync/customers,
 * GET /v1/sync/touchpoints, GET /v1/sync/segment-memberships).
 *
 * A feed lists every row whose latest change lies after the cursor, in the
 * order of the changes, one entry per row: a live customer or a touchpoint
 * in full, a customer that was deleted, erased or merged as a tombstone.
 * Each page gives the cursor of the next one; a page with no entries means
 * the reader has caught up.
 *
 * A page never passes over a change: it holds only rows written by
 * transactions older than every transaction still running (the xmin of the
 * reader's snapshot), so a transaction that took its place in the order
 * early but commits late is still ahead of every cursor handed out. See
 * migrations/0009_touchpoints_and_changes.sql.
 */
#ifndef CRM_SYNC_H
#define CRM_SYNC_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "error.h"

#define CRM_SYNC_LIMIT_DEFAULT 100
#define CRM_SYNC_LIMIT_MAX 1000
#define CRM_SYNC_RETENTION_DAYS_DEFAULT 90

/* The membership feed lists every entry into and exit from a segment
 * (segment_changes, migration 0022) once, in commit order. */
typedef enum { CRM_SYNC_CUSTOMERS, CRM_SYNC_TOUCHPOINTS, CRM_SYNC_SEGMENT_MEMBERSHIPS } crm_sync_feed;

/* How long a cursor stays good, in days, counted from the last time its
 * reader caught up with the feed (a page that was not full); tombstones are
 * kept at least this long plus a day. An older one is CRM_E_GONE, and its
 * reader must resync in full. */
void crm_sync_set_retention_days(int days);
int crm_sync_retention_days(void);

/* Purges the customer feed's tombstones older than the retention plus a
 * day, at most max_batches batches of batch rows (each its own statement
 * and transaction, so none holds locks for long): no page returns them
 * again. Returns how many, or -1 with err set. Safe to run in several
 * processes at once. */
long crm_sync_purge_tombstones(int batch, int max_batches, crm_error *err);

/* How far the feeds are held back: the age in seconds of the oldest
 * transaction of the whole cluster that holds a transaction id, running or
 * prepared (0 when there is none). Every page stops before such a
 * transaction until it ends. Seeing other roles' sessions needs superuser or
 * pg_read_all_stats; without it they count as absent. */
void crm_sync_lag_query(crm_query *q);
bool crm_sync_lag_decode(const PGresult *res, double *seconds);
/* From the same answer: the age in seconds of the oldest batch of
 * touchpoints the segments' upkeep has yet to judge (0: none waits) and
 * how many wait. */
bool crm_sync_segment_queue_decode(const PGresult *res, double *seconds, long long *batches);

/* One page of a feed. cursor is borrowed. */
typedef struct crm_sync_request {
    crm_sync_feed feed;
    const char *cursor; /* a next_cursor this feed gave; NULL starts from the beginning */
    int limit;          /* entries at most, 1..CRM_SYNC_LIMIT_MAX */
} crm_sync_request;

/* The page's single statement, for the event loop or the pool. A cursor
 * that is not one of this feed's (or not crmd's: cursors are signed) is
 * CRM_E_INVALID naming "cursor"; one whose reader last caught up longer ago
 * than the retention is CRM_E_GONE. */
bool crm_sync_query(const crm_sync_request *r, crm_query *q, crm_error *err);

/* The page as JSON text (the caller frees it): {"data": [...],
 * "next_cursor": "..."}. next_cursor is always there: after the last entry,
 * or on an empty page the request's own position, issued anew. r must be
 * the request crm_sync_query accepted. */
char *crm_sync_render(const PGresult *res, const crm_sync_request *r, size_t *len, crm_error *err);

/* Both on a pooled connection (workers, tests). */
char *crm_sync_page(const crm_sync_request *r, size_t *len, crm_error *err);

#endif

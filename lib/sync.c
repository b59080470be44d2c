/*
 * sync.c — the change feeds (see sync.h): the statement of a page, the
 * entries it becomes, and the cursor.
 *
 * Every row of customers and touchpoints carries the place of its latest
 * change, (change_xid, change_seq). A page is the rows after the cursor's
 * place in that order, bounded by the xmin of the statement's own snapshot:
 * every transaction below it has ended, and every transaction still running
 * (or yet to start) has an xid at or above it, so whatever those write lands
 * after every place a page has returned. The bound holds rows back only
 * while an older transaction runs; a session left idle inside a transaction
 * that wrote something stalls the feeds until it ends.
 *
 * A cursor (lib/list/cursor.h, signed, so a reader cannot edit it) holds the
 * feed it belongs to, the place of the last entry returned (xid, seq) and
 * when its reader last caught up with the feed (epoch milliseconds): the
 * first page's time, or that of the latest page that was not full. The
 * retention is measured from that moment: a reader that keeps polling keeps
 * catching up and never holds an old cursor, while one that has not caught
 * up for longer than the retention may hold a customer whose tombstone was
 * purged since (crm_sync_purge_tombstones), and gets 410.
 */
#include "sync.h"
#include "clock.h"
#include "customers/internal.h"
#include "jbuf.h"
#include "json.h"
#include "list/cursor.h"
#include "touchpoints.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS_PER_DAY (24LL * 60 * 60 * 1000)

static atomic_int retention_days = CRM_SYNC_RETENTION_DAYS_DEFAULT;

void crm_sync_set_retention_days(int days)
{
    atomic_store(&retention_days, days < 1 ? 1 : days);
}

int crm_sync_retention_days(void)
{
    return atomic_load(&retention_days);
}

/* ---- the statements ------------------------------------------------------------ */

/* The place of a row, after its representation's columns. */
#define PLACE_COLUMNS(t) t ".change_xid::text, " t ".change_seq"

/* Rows after the place ($1, $2), written by transactions that have all
 * ended, in change order, $3 at most: a range of the table's
 * (change_xid, change_seq) index, read from its start. */
#define PAGE_OF(t)                                                                                 \
    " WHERE (" t ".change_xid, " t ".change_seq) > ($1::xid8, $2::bigint)"                         \
    " AND " t ".change_xid < pg_snapshot_xmin(pg_current_snapshot())"                              \
    " ORDER BY " t ".change_xid, " t ".change_seq LIMIT $3::int"

/* A customer comes with its external ids, so that an app learns where an id
 * of its own went after a merge ("point what referred to N at M"). */
static crm_stmt customers_page = CRM_STMT_PAGE(
    "sync_customers_page", "SELECT " CRM_CUSTOMER_COLUMNS ", " CRM_CUSTOMER_EXTERNAL_IDS
                           ", " PLACE_COLUMNS("c") " FROM customers c" PAGE_OF("c"));

/* The touchpoints' select list is touchpoints/represent.c's, so this statement is put
 * together once, at its first use. */
static char touchpoints_page_sql[2048];
static crm_stmt touchpoints_page = CRM_STMT_PAGE("sync_touchpoints_page", touchpoints_page_sql);
static int touchpoint_ncolumns;
static pthread_once_t touchpoints_page_once = PTHREAD_ONCE_INIT;

static void build_touchpoints_page(void)
{
    const char *columns = crm_touchpoint_columns(&touchpoint_ncolumns);
    snprintf(touchpoints_page_sql, sizeof touchpoints_page_sql,
             "SELECT %s, " PLACE_COLUMNS("t") " FROM touchpoints t" PAGE_OF("t"), columns);
}

/* Entries and exits, as segments/store.c's change log shows them. */
static crm_stmt memberships_page = CRM_STMT_PAGE(
    "sync_memberships_page",
    "SELECT x.id, x.segment_id, x.customer_id, x.entered, " CRM_SQL_TS("x.at") ", x.rule_version,"
    " x.cause, x.cause_ref, " PLACE_COLUMNS("x") " FROM segment_changes x" PAGE_OF("x"));
#define MEMBERSHIP_PLACE 8

static crm_stmt *page_statement(crm_sync_feed feed)
{
    if (feed == CRM_SYNC_CUSTOMERS)
        return &customers_page;
    if (feed == CRM_SYNC_SEGMENT_MEMBERSHIPS)
        return &memberships_page;
    pthread_once(&touchpoints_page_once, build_touchpoints_page);
    return &touchpoints_page;
}

/* The column of a page's rows where their place (xid, then seq) begins. */
static int place_column(crm_sync_feed feed)
{
    if (feed == CRM_SYNC_CUSTOMERS)
        return CRM_COL_EXTRA + 1; /* after the external ids */
    if (feed == CRM_SYNC_SEGMENT_MEMBERSHIPS)
        return MEMBERSHIP_PLACE;
    pthread_once(&touchpoints_page_once, build_touchpoints_page);
    return touchpoint_ncolumns;
}

/* The sync lag, then the segments' queue (migration 0023): the age of its
 * oldest batch (0 when empty) and how many batches wait. */
static crm_stmt lag = CRM_STMT_RO(
    "sync_lag",
    "SELECT coalesce(extract(epoch FROM now() - least("
    "(SELECT min(xact_start) FROM pg_stat_activity WHERE backend_xid IS NOT NULL), "
    "(SELECT min(prepared) FROM pg_prepared_xacts))), 0)::float8,"
    " coalesce(extract(epoch FROM now() - (SELECT min(queued_at) FROM segment_pending)), 0)::float8,"
    " (SELECT count(*) FROM segment_pending)");

void crm_sync_lag_query(crm_query *q)
{
    crm_query_init(q, &lag);
}

bool crm_sync_lag_decode(const PGresult *res, double *seconds)
{
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
        return false;
    char *end;
    double v = strtod(PQgetvalue(res, 0, 0), &end);
    if (*end != '\0')
        return false;
    *seconds = v < 0 ? 0 : v; /* a clock step can make now() - start negative */
    return true;
}

bool crm_sync_segment_queue_decode(const PGresult *res, double *seconds, long long *batches)
{
    if (PQntuples(res) != 1 || PQnfields(res) < 3 || PQgetisnull(res, 0, 1) ||
        PQgetisnull(res, 0, 2))
        return false;
    char *end;
    double v = strtod(PQgetvalue(res, 0, 1), &end);
    if (*end != '\0')
        return false;
    *seconds = v < 0 ? 0 : v;
    *batches = atoll(PQgetvalue(res, 0, 2));
    return true;
}

/* ---- the cursor ------------------------------------------------------------------ */

typedef struct sync_place {
    long long xid; /* the transaction's xid8 */
    long long seq;
} sync_place;

/* Writes the cursor of feed at place p for a reader last caught up at
 * caught_up_ms, as a JSON string. */
static void write_cursor(crm_jbuf *b, crm_sync_feed feed, sync_place p, long long caught_up_ms)
{
    crm_cursor c;
    crm_cursor_init(&c, CRM_CURSOR_SYNC, (unsigned)feed);
    crm_cursor_add_int(&c, p.xid);
    crm_cursor_add_int(&c, p.seq);
    crm_cursor_add_int(&c, caught_up_ms);
    crm_cursor_write(b, &c);
}

/* Reads a cursor of feed into *p and *caught_up_ms; false when text is not
 * one (forged, malformed, another feed's, or values no page gives). */
static bool read_cursor(crm_sync_feed feed, const char *text, sync_place *p,
                        long long *caught_up_ms)
{
    crm_cursor c;
    if (!crm_cursor_decode(text, CRM_CURSOR_SYNC, (unsigned)feed, 3, false, &c) ||
        c.ints[0] < 0 || c.ints[1] < 0 || c.ints[2] <= 0)
        return false;
    p->xid = c.ints[0];
    p->seq = c.ints[1];
    *caught_up_ms = c.ints[2];
    return true;
}

/* ---- the page ------------------------------------------------------------------- */

bool crm_sync_query(const crm_sync_request *r, crm_query *q, crm_error *err)
{
    sync_place from = {0, 0}; /* before every change */
    long long caught_up_ms = 0;
    if (r->cursor != NULL && !read_cursor(r->feed, r->cursor, &from, &caught_up_ms)) {
        crm_error_add_field(err, "cursor",
                            "not a cursor of this feed: pass the next_cursor of its latest page, "
                            "or none to start from the beginning");
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameter 'cursor'");
    }
    int days = crm_sync_retention_days();
    if (r->cursor != NULL && caught_up_ms < crm_wall_ms() - days * MS_PER_DAY)
        return crm_error_set(err, CRM_E_GONE,
                             "this cursor's reader last caught up with the feed more than %d days "
                             "ago, and deletions are kept in the feed only that long: a full "
                             "resync is needed (read the feed again from the beginning, without "
                             "a cursor)",
                             days);
    crm_query_init(q, page_statement(r->feed));
    crm_query_add_int(q, from.xid);
    crm_query_add_int(q, from.seq);
    crm_query_add_int(q, r->limit < 1 ? 1 : r->limit);
    return true;
}

/* A customer's entry: in full while it is live; otherwise a tombstone with
 * its id alone (a deleted customer's row still holds personal data, which
 * must not travel; an erased one's holds none). */
static void write_customer_change(crm_jbuf *b, const PGresult *res, int r)
{
    const char *status = PQgetvalue(res, r, CRM_COL_STATUS);
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "change");
    if (strcmp(status, "active") == 0) {
        crm_jbuf_cstring(b, "upsert");
        crm_jbuf_key(b, "customer");
        crm_customer_write(b, res, r, true);
    } else {
        crm_jbuf_cstring(b, status); /* deleted, erased or merged */
        crm_jbuf_key(b, "id");
        crm_jbuf_int(b, atoll(PQgetvalue(res, r, CRM_COL_ID)));
        if (strcmp(status, "merged") == 0 && !PQgetisnull(res, r, CRM_COL_MERGED_INTO)) {
            crm_jbuf_key(b, "merged_into");
            crm_jbuf_int(b, atoll(PQgetvalue(res, r, CRM_COL_MERGED_INTO)));
        }
    }
    crm_jbuf_end_object(b);
}

/* A touchpoint's entry: always in full (an erased customer's touchpoints
 * come again, without their free text and properties). */
static void write_touchpoint_change(crm_jbuf *b, const PGresult *res, int r)
{
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "change");
    crm_jbuf_cstring(b, "upsert");
    crm_jbuf_key(b, "touchpoint");
    crm_touchpoint_write(b, res, r, 0);
    crm_jbuf_end_object(b);
}

/* A membership's entry: {"change": "entered"|"left", "id", "segment_id",
 * "customer_id", "at", "rule_version", "cause", "cause_ref"}. */
static void write_membership_change(crm_jbuf *b, const PGresult *res, int r)
{
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "change");
    crm_jbuf_cstring(b, PQgetvalue(res, r, 3)[0] == 't' ? "entered" : "left");
    static const char *const ints[] = {"id", "segment_id", "customer_id"};
    for (int i = 0; i < 3; i++) {
        crm_jbuf_key(b, ints[i]);
        crm_jbuf_int(b, atoll(PQgetvalue(res, r, i)));
    }
    crm_jbuf_key(b, "at");
    crm_jbuf_cstring(b, PQgetvalue(res, r, 4));
    crm_jbuf_key(b, "rule_version");
    crm_jbuf_int(b, atoll(PQgetvalue(res, r, 5)));
    crm_jbuf_key(b, "cause");
    crm_jbuf_cstring(b, PQgetvalue(res, r, 6));
    crm_jbuf_key(b, "cause_ref");
    crm_jbuf_cstring(b, PQgetisnull(res, r, 7) ? NULL : PQgetvalue(res, r, 7));
    crm_jbuf_end_object(b);
}

char *crm_sync_render(const PGresult *res, const crm_sync_request *r, size_t *len, crm_error *err)
{
    sync_place last = {0, 0};
    long long caught_up_ms = 0;
    if (r->cursor != NULL)
        read_cursor(r->feed, r->cursor, &last, &caught_up_ms); /* accepted by crm_sync_query */
    int n = PQntuples(res), place = place_column(r->feed);
    /* A reader without a cursor holds nothing yet; one whose page is not
     * full has caught up: either way, it holds no row whose tombstone came
     * before now. A full page carries the reader's last catch-up along. */
    if (r->cursor == NULL || n < (r->limit < 1 ? 1 : r->limit))
        caught_up_ms = crm_wall_ms();
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_object(&b);
    crm_jbuf_key(&b, "data");
    crm_jbuf_begin_array(&b);
    for (int i = 0; i < n; i++) {
        if (r->feed == CRM_SYNC_CUSTOMERS)
            write_customer_change(&b, res, i);
        else if (r->feed == CRM_SYNC_SEGMENT_MEMBERSHIPS)
            write_membership_change(&b, res, i);
        else
            write_touchpoint_change(&b, res, i);
    }
    crm_jbuf_end_array(&b);
    if (n > 0) {
        last.xid = atoll(PQgetvalue(res, n - 1, place));
        last.seq = atoll(PQgetvalue(res, n - 1, place + 1));
    }
    crm_jbuf_key(&b, "next_cursor");
    write_cursor(&b, r->feed, last, caught_up_ms);
    crm_jbuf_end_object(&b);
    char *page = crm_jbuf_take(&b, len);
    if (page == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return page;
}

char *crm_sync_page(const crm_sync_request *r, size_t *len, crm_error *err)
{
    crm_query q;
    if (!crm_sync_query(r, &q, err))
        return NULL;
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    char *page = crm_sync_render(res, r, len, err);
    PQclear(res);
    return page;
}

/* ---- purging old tombstones ----------------------------------------------------- */

/* One batch: the oldest tombstones (customers deleted, erased or merged)
 * changed more than the retention and a day ago, moved to the place (0, 0)
 * that no page returns (migration 0011 lets only this move a row there).
 * The extra day covers transactions that were still running when a reader
 * caught up. SKIP LOCKED: processes purging at once take different rows,
 * and a customer a request is writing waits for the next round. */
static crm_stmt purge_tombstones = CRM_STMT(
    "sync_purge_tombstones",
    "WITH batch AS (SELECT id FROM customers WHERE status <> 'active' "
    "AND change_xid <> '0'::xid8 AND updated_at < now() - ($1::int + 1) * interval '1 day' "
    "ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
    "UPDATE customers c SET change_xid = '0'::xid8, change_seq = 0 FROM batch "
    "WHERE c.id = batch.id");

long crm_sync_purge_tombstones(int batch, int max_batches, crm_error *err)
{
    char days[16], size[16];
    snprintf(days, sizeof days, "%d", crm_sync_retention_days());
    snprintf(size, sizeof size, "%d", batch < 1 ? 1 : batch);
    const char *params[] = {days, size};
    long total = 0;
    for (int i = 0; i < max_batches; i++) {
        PGresult *res = crm_db_run(&purge_tombstones, 2, params, err);
        if (res == NULL)
            return -1;
        long n = atol(PQcmdTuples(res));
        PQclear(res);
        total += n;
        if (n < batch)
            break;
    }
    return total;
}

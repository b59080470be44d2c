/*
 * metrics/follow.c — the metrics kept current between full recomputes.
 *
 * The follower reads the change feeds of touchpoints and customers
 * (migration 0009: every insert and update gives its row a place
 * (change_xid, change_seq)) from where it last stood (metrics_follow):
 * purchases, refunds and scored feedback, new or moved by a merge or erased,
 * and customers created, changed, merged or erased. It recomputes those
 * customers' rows whole, with the code the full recompute runs
 * (metrics/load.c, summary.c), the models in force and the base's scales
 * of the last full recompute, and replaces them in one transaction that
 * also moves its places on: a sweep is done completely or not at all, and
 * doing it twice gives the same rows.
 *
 * Ingest never waits for it: nothing is written on the ingest path, the
 * follower finds the changes by their places. It reads only changes older
 * than every transaction still running (pg_snapshot_xmin), as the sync
 * feed does, so a transaction that commits late is never passed over.
 *
 * One process at a time follows (server/metrics_follower.c holds an
 * advisory lock); a full recompute's publication rewinds the places to
 * what its load may have missed (recompute.c).
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "segment_store.h"
#include "jbuf.h"
#include "customers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where the follower stands; the sweep's time (its as_of). Locked: one
 * sweep at a time, and a publication's rewind waits for it or fails it. */
static crm_stmt follow_place = CRM_STMT(
    "metrics_follow_place",
    "SELECT tp_xid::text, tp_seq, cu_xid::text, cu_seq,"
    " pg_snapshot_xmin(pg_current_snapshot())::text, " TS("now()")
    " FROM metrics_follow FOR UPDATE");

/* The changes of a feed after a place, in the order of its index and with
 * nothing but the index's own bounds, so that the LIMIT stops an index
 * scan (a condition on another column would let the planner prefer reading
 * the whole table); the last column says whether the change concerns the
 * metrics. (The xid's text has a name of its own: ORDER BY change_xid would
 * otherwise sort by that text, not by the xid.) */
#define CHANGES(table, id, concerns)                                                               \
    "SELECT " id ", change_xid::text AS place_xid, change_seq, " concerns " FROM " table         \
    " WHERE (change_xid, change_seq) > ($1::xid8, $2::bigint)"                                      \
    " AND change_xid < pg_snapshot_xmin(pg_current_snapshot())"                                    \
    " ORDER BY change_xid, change_seq LIMIT $3::int"

static crm_stmt touchpoint_changes = CRM_STMT(
    "metrics_follow_touchpoints",
    CHANGES("touchpoints", "customer_id", "type IN ('purchase', 'refund', 'feedback')"));

static crm_stmt customer_changes =
    CRM_STMT("metrics_follow_customers", CHANGES("customers", "id", "true"));

static crm_stmt live_customers =
    CRM_STMT("metrics_follow_live",
             "SELECT id FROM customers WHERE id = ANY($1::bigint[]) AND status = 'active'"
             " ORDER BY id");

/* Every touchpoint of the customers up to as_of ($2), in one read: the
 * event's fields (METRICS_EVENT_COLUMNS), then whether it is inbound and
 * whether it lies in the 90 days to as_of, for the engagement that the
 * full recompute counts in SQL (ENGAGEMENT_SQL there, the same conditions). */
static crm_stmt customer_touchpoints = CRM_STMT(
    "metrics_follow_touchpoints_of",
    "SELECT " METRICS_EVENT_COLUMNS ", direction = 'inbound',"
    " occurred_at > $2::timestamptz - interval '90 days'"
    " FROM touchpoints WHERE customer_id = ANY($1::bigint[]) AND occurred_at <= $2::timestamptz"
    " ORDER BY customer_id");

#define INCOMING_SQL "COPY metrics_incoming (" METRICS_ROW_COLUMNS ") FROM STDIN (FORMAT binary)"

static crm_stmt record_transitions = CRM_STMT(
    "metrics_follow_transitions",
    "INSERT INTO customer_lifecycle (customer_id, stage, previous, changed_at)"
    " SELECT i.customer_id, i.lifecycle_stage, m.lifecycle_stage, i.as_of"
    " FROM metrics_incoming i LEFT JOIN customer_metrics m ON m.customer_id = i.customer_id"
    " WHERE i.lifecycle_stage IS DISTINCT FROM m.lifecycle_stage");

/* The changed customers that are no longer live lose their row; the live
 * ones' rows are replaced in place: an update that leaves the indexed
 * columns as they were (nearly always) is a heap-only one, in the room the
 * tables' fillfactor keeps on each page (migration 0018). */
static crm_stmt drop_rows = CRM_STMT(
    "metrics_follow_drop",
    "DELETE FROM customer_metrics m WHERE m.customer_id = ANY($1::bigint[])"
    " AND NOT EXISTS (SELECT 1 FROM metrics_incoming i WHERE i.customer_id = m.customer_id)");

static crm_stmt upsert_rows = CRM_STMT(
    "metrics_follow_upsert",
    "INSERT INTO customer_metrics (" METRICS_ROW_COLUMNS ") SELECT " METRICS_ROW_COLUMNS
    " FROM metrics_incoming ON CONFLICT (customer_id) DO UPDATE SET (" METRICS_ROW_COLUMNS
    ") = (SELECT " METRICS_ROW_COLUMNS " FROM metrics_incoming i"
    " WHERE i.customer_id = EXCLUDED.customer_id)");

static crm_stmt move_place = CRM_STMT(
    "metrics_follow_move",
    "UPDATE metrics_follow SET tp_xid = $1::xid8, tp_seq = $2::bigint, cu_xid = $3::xid8,"
    " cu_seq = $4::bigint, updated_at = now()");

typedef struct place {
    char xid[32];
    char seq[24];
} place;

typedef struct sweep {
    crm_conn *c;
    int batch;
    place tp, cu;
    char xmin[32];
    char as_of[40];
    long long *ids; /* changed customers, sorted, distinct */
    size_t nids, ids_cap;
    metrics_load L;
    bool more; /* a feed had more changes than the batch */
} sweep;

static bool read_place(sweep *S, crm_error *err)
{
    PGresult *res = crm_db_exec(S->c, &follow_place, 0, NULL, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "metrics_follow has no row");
    }
    snprintf(S->tp.xid, sizeof S->tp.xid, "%s", PQgetvalue(res, 0, 0));
    snprintf(S->tp.seq, sizeof S->tp.seq, "%s", PQgetvalue(res, 0, 1));
    snprintf(S->cu.xid, sizeof S->cu.xid, "%s", PQgetvalue(res, 0, 2));
    snprintf(S->cu.seq, sizeof S->cu.seq, "%s", PQgetvalue(res, 0, 3));
    snprintf(S->xmin, sizeof S->xmin, "%s", PQgetvalue(res, 0, 4));
    snprintf(S->as_of, sizeof S->as_of, "%s", PQgetvalue(res, 0, 5));
    PQclear(res);
    if (!crm_rfc3339_epoch_ms(S->as_of, &S->L.as_of_ms))
        return crm_error_set(err, CRM_E_INTERNAL, "the sweep's time cannot be read");
    return true;
}

/* The customers of one feed's changes after p, into S->ids; p moves to the
 * last change read, or past every change settled (xmin) when it read them
 * all. */
static bool read_changes(sweep *S, crm_stmt *stmt, place *p, crm_error *err)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", S->batch);
    const char *params[] = {p->xid, p->seq, limit};
    PGresult *res = crm_db_exec(S->c, stmt, 3, params, err);
    if (res == NULL)
        return false;
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        if (PQgetvalue(res, i, 3)[0] != 't')
            continue; /* a page view, an e-mail sent, ...: not the metrics' */
        if (!metrics_grow((void **)&S->ids, &S->ids_cap, S->nids, sizeof *S->ids, err)) {
            PQclear(res);
            return false;
        }
        S->ids[S->nids++] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
    }
    if (n == S->batch) {
        snprintf(p->xid, sizeof p->xid, "%s", PQgetvalue(res, n - 1, 1));
        snprintf(p->seq, sizeof p->seq, "%s", PQgetvalue(res, n - 1, 2));
        S->more = true;
    } else {
        snprintf(p->xid, sizeof p->xid, "%s", S->xmin);
        snprintf(p->seq, sizeof p->seq, "0");
    }
    PQclear(res);
    return true;
}

static int by_id(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void distinct_ids(sweep *S)
{
    if (S->nids == 0)
        return;
    qsort(S->ids, S->nids, sizeof *S->ids, by_id);
    size_t n = 0;
    for (size_t i = 0; i < S->nids; i++)
        if (n == 0 || S->ids[n - 1] != S->ids[i])
            S->ids[n++] = S->ids[i];
    S->nids = n;
}

/* The ids as a PostgreSQL array literal; NULL when out of memory. */
static char *ids_literal(const sweep *S)
{
    crm_bytebuf b;
    crm_bytebuf_init(&b);
    crm_bytebuf_put(&b, "{", 1);
    for (size_t i = 0; i < S->nids; i++) {
        char one[24];
        int n = snprintf(one, sizeof one, "%s%lld", i ? "," : "", S->ids[i]);
        crm_bytebuf_put(&b, one, (size_t)n);
    }
    crm_bytebuf_put(&b, "}", 2); /* with its terminating NUL */
    if (b.failed) {
        crm_bytebuf_free(&b);
        return NULL;
    }
    return b.data;
}

/* A result's row as COPY text fields: NULL as \N. */
static void row_fields(const PGresult *res, int row, char **f, int n)
{
    for (int i = 0; i < n; i++)
        f[i] = PQgetisnull(res, row, i) ? "\\N" : PQgetvalue(res, row, i);
}

/* One touchpoint in g's counts: PQ's booleans are "t" and "f". */
static void count_engagement(metrics_engagement *g, const PGresult *res, int row,
                             const char *occurred_at)
{
    if (PQgetvalue(res, row, METRICS_EVENT_FIELDS + 1)[0] == 't')
        g->touchpoints_90d++;
    long long us;
    if (PQgetvalue(res, row, METRICS_EVENT_FIELDS)[0] == 't' &&
        crm_parse_pg_timestamp(occurred_at, &us)) {
        long long ms = us >= 0 ? us / 1000 : -((-us + 999) / 1000);
        if (!g->has_inbound || ms > g->last_inbound_ms)
            g->last_inbound_ms = ms;
        g->has_inbound = true;
    }
}

static bool add_engagement(metrics_load *L, const metrics_engagement *g, crm_error *err)
{
    if (!metrics_grow((void **)&L->eng, &L->eng_cap, L->neng, sizeof *L->eng, err))
        return false;
    L->eng[L->neng++] = *g;
    return true;
}

static bool load_customers(sweep *S, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    PGresult *res = crm_db_exec(S->c, &live_customers, 1, params, err);
    if (res == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(res); i++)
        ok = metrics_load_customer(&S->L, strtoll(PQgetvalue(res, i, 0), NULL, 10), err);
    PQclear(res);
    if (!ok)
        return false;
    const char *read[] = {ids, S->as_of};
    res = crm_db_exec(S->c, &customer_touchpoints, 2, read, err);
    if (res == NULL)
        return false;
    metrics_engagement g = {0};
    for (int i = 0; ok && i < PQntuples(res); i++) {
        char *f[METRICS_EVENT_FIELDS];
        row_fields(res, i, f, METRICS_EVENT_FIELDS);
        long long customer = strtoll(f[0], NULL, 10);
        if (customer != g.customer_id) { /* the rows come by customer */
            ok = g.customer_id == 0 || add_engagement(&S->L, &g, err);
            g = (metrics_engagement){.customer_id = customer};
        }
        if (ok && (strcmp(f[3], "purchase") == 0 || strcmp(f[3], "refund") == 0 ||
                   strcmp(f[3], "feedback") == 0))
            ok = metrics_load_event(&S->L, f, err); /* passes feedback without a score */
        count_engagement(&g, res, i, f[2]);
    }
    if (ok && g.customer_id != 0)
        ok = add_engagement(&S->L, &g, err);
    PQclear(res);
    return ok;
}

/* Predictions with the models in force, scores and tiers by the base's
 * scales, and the stages: as the full recompute would give them with the
 * same models and scales. */
static bool score(sweep *S, crm_error *err)
{
    crm_bgnbd bg;
    crm_gg gg;
    bool have_bg, have_gg;
    metrics_scales scales;
    if (!metrics_models_in_force(S->c, &bg, &have_bg, &gg, &have_gg, err) ||
        !metrics_scales_latest(S->c, &scales, err))
        return false;
    metrics_customer **p = malloc((S->L.n ? S->L.n : 1) * sizeof *p);
    if (p == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < S->L.n; i++)
        if (S->L.customers[i].purchases > 0)
            p[n++] = &S->L.customers[i];
    if (have_bg) {
        metrics_sort_by_summary(p, n);
        metrics_predict(p, n, &bg, &gg, have_gg, &S->L.cfg);
    }
    free(p);
    for (size_t i = 0; i < S->L.n; i++) {
        metrics_scales_apply(&scales, &S->L.customers[i]);
        S->L.customers[i].stage = metrics_stage_of(&S->L.customers[i], &S->L.cfg);
    }
    return true;
}

static bool write_incoming(sweep *S, crm_error *err)
{
    if (!crm_db_command(S->c, "SET LOCAL client_min_messages = warning", err) ||
        !crm_db_command(S->c,
                        "CREATE TEMP TABLE IF NOT EXISTS metrics_incoming"
                        " (LIKE customer_metrics INCLUDING INDEXES) ON COMMIT DELETE ROWS",
                        err) ||
        !metrics_copy_rows(S->c, INCOMING_SQL, S->L.customers, S->L.n, S->L.as_of_ms,
                           S->L.as_of_ms, err))
        return false;
    return true;
}

static bool replace_rows(sweep *S, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    const char *places[] = {S->tp.xid, S->tp.seq, S->cu.xid, S->cu.seq};
    return write_incoming(S, err) && metrics_exec(S->c, &record_transitions, 0, NULL, err) &&
           metrics_exec(S->c, &drop_rows, 1, params, err) &&
           metrics_exec(S->c, &upsert_rows, 0, NULL, err) &&
           metrics_exec(S->c, &move_place, 4, places, err);
}

static bool same_place(const place *a, const place *b)
{
    return strcmp(a->xid, b->xid) == 0 && strcmp(a->seq, b->seq) == 0;
}

/* Nothing to recompute: the places move past the changes read (other kinds
 * of touchpoints), and nothing is written when they did not move. */
static bool move_only(sweep *S, const place *tp, const place *cu, crm_error *err)
{
    const char *places[] = {S->tp.xid, S->tp.seq, S->cu.xid, S->cu.seq};
    if (same_place(tp, &S->tp) && same_place(cu, &S->cu))
        return crm_db_commit(S->c, err);
    return metrics_exec(S->c, &move_place, 4, places, err) && crm_db_commit(S->c, err);
}

static bool run_sweep(sweep *S, crm_error *err)
{
    if (!crm_db_command(S->c, "BEGIN ISOLATION LEVEL REPEATABLE READ", err) ||
        !read_place(S, err))
        return false;
    place tp = S->tp, cu = S->cu;
    if (!read_changes(S, &touchpoint_changes, &S->tp, err) ||
        !read_changes(S, &customer_changes, &S->cu, err))
        return false;
    if (S->nids == 0)
        return move_only(S, &tp, &cu, err);
    distinct_ids(S);
    char *ids = ids_literal(S);
    if (ids == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = metrics_load_rates(&S->L, S->c, err) && load_customers(S, ids, err);
    if (ok) {
        metrics_load_summarise(&S->L);
        metrics_load_add_engagement(&S->L);
        ok = score(S, err) && replace_rows(S, ids, err) &&
             crm_segments_queue_customers(S->c, ids, CRM_RULE_READS_METRICS, "metrics", err) &&
             crm_db_commit(S->c, err);
    }
    free(ids);
    return ok;
}

bool crm_metrics_follow(crm_conn *c, int batch, long long *customers, bool *more, crm_error *err)
{
    sweep S = {.c = c, .batch = batch > 0 ? batch : 1};
    S.L.cfg = metrics_config();
    bool ok = run_sweep(&S, err);
    if (!ok)
        crm_db_rollback(c);
    *customers = ok ? (long long)S.nids : 0;
    *more = ok && S.more;
    metrics_load_free(&S.L);
    free(S.ids);
    return ok;
}

/* The last change of each feed, by its index read backwards (ordered by
 * the columns themselves, not the text the query gives). */
#define FEED_HEAD(table)                                                                           \
    "coalesce((SELECT f.change_xid::text || '.' || f.change_seq FROM " table " f"                 \
    " ORDER BY f.change_xid DESC, f.change_seq DESC LIMIT 1), '-')"

static crm_stmt follow_head = CRM_STMT(
    "metrics_follow_head", "SELECT " FEED_HEAD("touchpoints") " || '/' || " FEED_HEAD("customers"));

bool crm_metrics_follow_head(crm_conn *c, char *head, size_t size, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &follow_head, 0, NULL, err);
    if (res == NULL)
        return false;
    snprintf(head, size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return true;
}

/* One follower at a time: held by its connection's session, and let go when
 * the connection closes, however the process ends. */
static crm_stmt follow_claim =
    CRM_STMT("metrics_follow_claim", "SELECT pg_try_advisory_lock(" METRICS_FOLLOW_LOCK ")");

bool crm_metrics_follow_claim(crm_conn *c, bool *claimed, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &follow_claim, 0, NULL, err);
    if (res == NULL)
        return false;
    *claimed = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return true;
}

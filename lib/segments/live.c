/*
 * segments/live.c — keeping memberships exact (segment_store.h): the
 * refresh that every write runs in its transaction, the build job, and the
 * background tick (flips that are due, size deltas, the daily size, builds
 * that are due, deleted segments).
 */
#include "segment_store.h"
#include "segments.h"
#include "segments/live.h"
#include "clock.h"
#include "jbuf.h"
#include "jobs.h"
#include "auth.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_KEY(col) "(" col " & 2147483647)::int"

/* ---- parsed rules, shared by every thread ------------------------------------ */

/* A parsed rule is immutable: threads share it, counted. */
typedef struct cached_rule {
    long long id;
    int version;
    char *text; /* as stored: a database made anew may give (id, version) another rule */
    crm_rule *rule;
    int users; /* the cache's own reference counts as one */
} cached_rule;

#define RULE_CACHE 256
static cached_rule *rule_cache[RULE_CACHE];
static pthread_mutex_t rule_cache_mu = PTHREAD_MUTEX_INITIALIZER;

static void rule_release(cached_rule *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&rule_cache_mu);
    bool last = --e->users == 0;
    pthread_mutex_unlock(&rule_cache_mu);
    if (last) {
        crm_rule_free(e->rule);
        free(e->text);
        free(e);
    }
}

/* The parsed rule of (id, version), whose stored text is text. NULL with
 * err when it does not parse (it did when it was stored) or memory ran out. */
static cached_rule *rule_get(long long id, int version, const char *text, crm_error *err)
{
    pthread_mutex_lock(&rule_cache_mu);
    for (int i = 0; i < RULE_CACHE; i++) {
        cached_rule *e = rule_cache[i];
        if (e != NULL && e->id == id && e->version == version && strcmp(e->text, text) == 0) {
            e->users++;
            pthread_mutex_unlock(&rule_cache_mu);
            return e;
        }
    }
    pthread_mutex_unlock(&rule_cache_mu);
    json_error_t jerr;
    json_t *json = json_loads(text, 0, &jerr);
    crm_rule *r = json ? crm_rule_parse(json, err) : NULL;
    json_decref(json);
    if (r == NULL) {
        crm_error_clear(err);
        crm_error_set(err, CRM_E_INTERNAL, "the stored rule of segment %lld does not parse", id);
        return NULL;
    }
    cached_rule *e = malloc(sizeof *e);
    char *copy = strdup(text);
    if (e == NULL || copy == NULL) {
        free(e);
        free(copy);
        crm_rule_free(r);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    *e = (cached_rule){.id = id, .version = version, .text = copy, .rule = r, .users = 2};
    cached_rule *evicted = NULL;
    pthread_mutex_lock(&rule_cache_mu);
    int slot = (int)((unsigned long long)id % RULE_CACHE);
    evicted = rule_cache[slot];
    rule_cache[slot] = e;
    pthread_mutex_unlock(&rule_cache_mu);
    rule_release(evicted);
    return e;
}

/* ---- the segments a write keeps ---------------------------------------------- */

typedef struct live_segment {
    long long id;
    int version;
    int rank;
    unsigned reads;
    cached_rule *rule;
} live_segment;

typedef struct live_set {
    live_segment *s;
    int n;
} live_set;

static void live_set_free(live_set *L)
{
    for (int i = 0; i < L->n; i++)
        rule_release(L->s[i].rule);
    free(L->s);
    L->s = NULL;
    L->n = 0;
}

static crm_stmt gate_shared = CRM_STMT(
    "segments_gate_shared", "SELECT pg_advisory_xact_lock_shared(" CRM_SEGMENTS_LOCK_CLASS ", 0)");

/* Every segment's lock, shared, in id order (the inner ORDER BY, kept by
 * OFFSET 0), then the rules in order of dependence. */
static crm_stmt load_live = CRM_STMT(
    "segments_load_live",
    "SELECT id, rule_version, rule::text, reads, rank FROM ("
    " SELECT s.id, s.rule_version, s.rule, s.reads, s.rank,"
    " pg_advisory_xact_lock_shared(" CRM_SEGMENTS_LOCK_CLASS ", " LOCK_KEY(
        "s.id") ") FROM ("
                "  SELECT id, rule_version, rule, reads, rank FROM segments WHERE deleted_at IS "
                "NULL"
                "  AND state <> 'failed' ORDER BY id OFFSET 0) s OFFSET 0) t ORDER BY rank, id");

static bool lock_and_load(crm_conn *c, live_set *L, crm_error *err)
{
    L->s = NULL;
    L->n = 0;
    PGresult *res = crm_db_exec(c, &gate_shared, 0, NULL, err);
    if (res == NULL)
        return false;
    PQclear(res);
    res = crm_db_exec(c, &load_live, 0, NULL, err);
    if (res == NULL)
        return false;
    int n = PQntuples(res);
    if (n > 0 && (L->s = calloc((size_t)n, sizeof *L->s)) == NULL) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        live_segment *g = &L->s[L->n];
        g->id = atoll(PQgetvalue(res, i, 0));
        g->version = atoi(PQgetvalue(res, i, 1));
        g->reads = (unsigned)atoi(PQgetvalue(res, i, 3));
        g->rank = atoi(PQgetvalue(res, i, 4));
        g->rule = rule_get(g->id, g->version, PQgetvalue(res, i, 2), err);
        if (g->rule == NULL) {
            PQclear(res);
            live_set_free(L);
            return false;
        }
        L->n++;
    }
    PQclear(res);
    return true;
}

/* ---- one segment over some customers ------------------------------------------ */

static void format_at(long long now_ms, char out[40])
{
    char iso[40];
    crm_format_timestamp(now_ms, iso);
    snprintf(out, 40, "%s", iso);
}

/* "INSERT INTO segment_changes ... SELECT" of segment seg's moves, up to
 * the FROM the caller writes: its rows hold customer_id and entered. */
static void write_log_insert(crm_sqlbuf *s, int seg, int ver, int at, int cause, int ref)
{
    crm_sqlbuf_append(s, "INSERT INTO segment_changes (segment_id, customer_id, entered, at,"
                         " rule_version, cause, cause_ref) SELECT ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint, customer_id, entered, ");
    crm_sqlbuf_placeholder(s, at);
    crm_sqlbuf_append(s, "::timestamptz, ");
    crm_sqlbuf_placeholder(s, ver);
    crm_sqlbuf_append(s, "::int, ");
    crm_sqlbuf_placeholder(s, cause);
    crm_sqlbuf_append(s, "::text, ");
    crm_sqlbuf_placeholder(s, ref);
    crm_sqlbuf_append(s, "::text FROM ");
}

/* The build's moves: cand (id, inside) holds the active customers (those
 * the rule holds for, or all of them with inside and flip when the rule
 * moves with time); a member not inside leaves, an insider not yet in
 * enters, each move logged. The kept size is set after (build_settle). */
static void write_moves(crm_sqlbuf *s, int seg, int ver, int at, int cause, int ref)
{
    crm_sqlbuf_append(s, "gone AS (DELETE FROM segment_memberships sm WHERE sm.segment_id = ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint AND NOT EXISTS (SELECT 1 FROM cand"
                         " WHERE cand.id = sm.customer_id AND cand.inside)");
    crm_sqlbuf_append(s, " RETURNING sm.customer_id), came AS (INSERT INTO segment_memberships"
                         " (segment_id, customer_id, entered_at, rule_version) SELECT ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint, id, ");
    crm_sqlbuf_placeholder(s, at);
    crm_sqlbuf_append(s, "::timestamptz, ");
    crm_sqlbuf_placeholder(s, ver);
    crm_sqlbuf_append(s,
                      "::int FROM cand WHERE inside ON CONFLICT DO NOTHING RETURNING customer_id),"
                      " moved AS (SELECT customer_id, false AS entered FROM gone"
                      " UNION ALL SELECT customer_id, true FROM came), logged AS (");
    write_log_insert(s, seg, ver, at, cause, ref);
    crm_sqlbuf_append(s, "moved ORDER BY customer_id)");
}

/* Parameters every statement of one segment shares. */
typedef struct seg_params {
    int seg, ver, at, cause, ref;
} seg_params;

static void bind_common(crm_sqlbuf *s, seg_params *p, const char *seg, const char *ver,
                        const char *at, const char *cause, const char *ref)
{
    p->seg = crm_sqlbuf_param(s, seg);
    p->ver = crm_sqlbuf_param(s, ver);
    p->at = crm_sqlbuf_param(s, at);
    p->cause = crm_sqlbuf_param(s, cause);
    p->ref = crm_sqlbuf_param(s, ref);
}

/* Runs s (text built from constant fragments only) on c, prepared when
 * the connection may keep it. */
static PGresult *run_built(crm_conn *c, crm_sqlbuf *s, bool prepare, crm_error *err)
{
    if (!crm_sqlbuf_ok(s)) {
        crm_error_set(err, CRM_E_INTERNAL, "a segment's statement could not be built");
        return NULL;
    }
    crm_stmt *st = prepare ? crm_db_stmt_for_sql(crm_sqlbuf_text(s), false, false) : NULL;
    if (st != NULL)
        return crm_db_exec(c, st, s->nparams, s->params, err);
    return crm_db_exec_sql(c, crm_sqlbuf_text(s), s->nparams, s->params, err);
}

/* Segments of one rank (none names another) share one statement: the
 * customers are read once, each segment's rule evaluated for the
 * customers it must consider (a bit of u.m each), and each segment's moves
 * written by CTEs of its own, named by its slot. */
#define GROUP_MAX 63
static const char *const slot[GROUP_MAX] = {
    "0",  "1",  "2",  "3",  "4",  "5",  "6",  "7",  "8",  "9",  "10", "11", "12", "13", "14", "15",
    "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
    "32", "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47",
    "48", "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62"};

static void put_slot(crm_sqlbuf *s, const char *name, int k)
{
    crm_sqlbuf_append(s, name);
    crm_sqlbuf_append(s, slot[k]);
}

/* The moves of segment slot k (its parameters seg, ver; at, cause, ref
 * shared): cand's column i<k> is null for a customer it does not consider. */
static void write_group_moves(crm_sqlbuf *s, int k, int seg, int ver, int at, int cause, int ref,
                              bool timed)
{
    crm_sqlbuf_append(s, ", ");
    put_slot(s, "g", k);
    crm_sqlbuf_append(s,
                      " AS (DELETE FROM segment_memberships sm USING cand WHERE sm.segment_id = ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint AND sm.customer_id = cand.id AND NOT cand.");
    put_slot(s, "i", k);
    crm_sqlbuf_append(s, " RETURNING sm.customer_id), ");
    put_slot(s, "c", k);
    crm_sqlbuf_append(s,
                      " AS (INSERT INTO segment_memberships (segment_id, customer_id, entered_at,"
                      " rule_version) SELECT ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint, id, ");
    crm_sqlbuf_placeholder(s, at);
    crm_sqlbuf_append(s, "::timestamptz, ");
    crm_sqlbuf_placeholder(s, ver);
    crm_sqlbuf_append(s, "::int FROM cand WHERE cand.");
    put_slot(s, "i", k);
    crm_sqlbuf_append(s, " ON CONFLICT DO NOTHING RETURNING customer_id), ");
    put_slot(s, "l", k);
    crm_sqlbuf_append(s, " AS (");
    write_log_insert(s, seg, ver, at, cause, ref);
    crm_sqlbuf_append(s, "(SELECT customer_id, false AS entered FROM ");
    put_slot(s, "g", k);
    crm_sqlbuf_append(s, " UNION ALL SELECT customer_id, true FROM ");
    put_slot(s, "c", k);
    crm_sqlbuf_append(s, ") mv ORDER BY customer_id), ");
    put_slot(s, "z", k);
    crm_sqlbuf_append(s, " AS (INSERT INTO segment_size_deltas (segment_id, delta) SELECT ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint, d.n FROM (SELECT (SELECT count(*) FROM ");
    put_slot(s, "c", k);
    crm_sqlbuf_append(s, ") - (SELECT count(*) FROM ");
    put_slot(s, "g", k);
    crm_sqlbuf_append(s, ") AS n) d WHERE d.n <> 0)");
    if (!timed)
        return;
    crm_sqlbuf_append(s, ", ");
    put_slot(s, "p", k);
    crm_sqlbuf_append(s,
                      " AS (INSERT INTO segment_flips (segment_id, customer_id, flip_at) SELECT ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint, id, ");
    put_slot(s, "f", k);
    crm_sqlbuf_append(s, " FROM cand WHERE ");
    put_slot(s, "f", k);
    crm_sqlbuf_append(s, " IS NOT NULL ON CONFLICT (segment_id, customer_id) DO UPDATE"
                         " SET flip_at = EXCLUDED.flip_at"
                         " WHERE segment_flips.flip_at <> EXCLUDED.flip_at), ");
    put_slot(s, "q", k);
    crm_sqlbuf_append(s, " AS (DELETE FROM segment_flips fl USING cand WHERE fl.segment_id = ");
    crm_sqlbuf_placeholder(s, seg);
    crm_sqlbuf_append(s, "::bigint AND fl.customer_id = cand.id AND cand.");
    put_slot(s, "i", k);
    crm_sqlbuf_append(s, " IS NOT NULL AND cand.");
    put_slot(s, "f", k);
    crm_sqlbuf_append(s, " IS NULL)");
}

/* Segments segs[0..n) (one rank), over the customers of ids (a bigint
 * array literal) each for the segments whose bits the matching entry of
 * masks (likewise) has. */
static bool refresh_group(crm_conn *c, const live_segment *const *segs, int n, const char *ids,
                          const char *masks, long long now_ms, const char *cause, const char *ref,
                          crm_error *err)
{
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    char at[40], segtext[GROUP_MAX][24], vertext[GROUP_MAX][16];
    format_at(now_ms, at);
    int pat = crm_sqlbuf_param(&s, at), pcause = crm_sqlbuf_param(&s, cause),
        pref = crm_sqlbuf_param(&s, ref), pids = crm_sqlbuf_param(&s, ids),
        pmasks = crm_sqlbuf_param(&s, masks);
    int pseg[GROUP_MAX], pver[GROUP_MAX];
    bool timed[GROUP_MAX], ok = true;
    crm_sqlbuf_append(&s, "WITH cand AS MATERIALIZED (SELECT c.id");
    for (int k = 0; ok && k < n; k++) {
        const crm_rule *r = segs[k]->rule->rule;
        snprintf(segtext[k], sizeof segtext[k], "%lld", segs[k]->id);
        snprintf(vertext[k], sizeof vertext[k], "%d", segs[k]->version);
        pseg[k] = crm_sqlbuf_param(&s, segtext[k]);
        pver[k] = crm_sqlbuf_param(&s, vertext[k]);
        timed[k] = crm_rule_has_time(r);
        crm_sqlbuf_append(&s, ", CASE WHEN (u.m >> ");
        crm_sqlbuf_append(&s, slot[k]);
        crm_sqlbuf_append(&s, ") & 1 = 1 THEN (c.status = 'active' AND (");
        ok = crm_rule_sql(r, &s, now_ms, &arena, err);
        crm_sqlbuf_append(&s, ")) END AS ");
        put_slot(&s, "i", k);
        if (timed[k]) {
            crm_sqlbuf_append(&s, ", CASE WHEN (u.m >> ");
            crm_sqlbuf_append(&s, slot[k]);
            crm_sqlbuf_append(&s, ") & 1 = 1 AND c.status = 'active' THEN (");
            ok = ok && crm_rule_flip_sql(r, &s, now_ms, &arena, err);
            crm_sqlbuf_append(&s, ") END AS ");
            put_slot(&s, "f", k);
        }
    }
    crm_sqlbuf_append(&s, " FROM unnest(");
    crm_sqlbuf_placeholder(&s, pids);
    crm_sqlbuf_append(&s, "::bigint[], ");
    crm_sqlbuf_placeholder(&s, pmasks);
    crm_sqlbuf_append(&s, "::bigint[]) AS u(id, m) JOIN customers c ON c.id = u.id)");
    for (int k = 0; k < n; k++)
        write_group_moves(&s, k, pseg[k], pver[k], pat, pcause, pref, timed[k]);
    crm_sqlbuf_append(&s, " SELECT 1");
    PGresult *res = ok ? run_built(c, &s, true, err) : NULL;
    ok = res != NULL;
    PQclear(res);
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    return ok;
}

/* Which of the candidates segment g considers. */
typedef bool (*consider_fn)(const live_segment *g, size_t i, void *ctx);

typedef struct cand_entry {
    long long id;
    unsigned long long mask;
} cand_entry;

static int by_entry(const void *a, const void *b)
{
    long long x = ((const cand_entry *)a)->id, y = ((const cand_entry *)b)->id;
    return (x > y) - (x < y);
}

/* Writes the distinct ids of e[0..n) with the union of their masks as two
 * array literals. False when memory ran out. */
static bool group_literals(cand_entry *e, size_t n, char **ids, char **masks)
{
    qsort(e, n, sizeof *e, by_entry);
    crm_jbuf a, b;
    crm_jbuf_init(&a);
    crm_jbuf_init(&b);
    crm_jbuf_raw(&a, "{", 1);
    crm_jbuf_raw(&b, "{", 1);
    size_t shown = 0;
    for (size_t i = 0; i < n;) {
        unsigned long long m = 0;
        size_t j = i;
        for (; j < n && e[j].id == e[i].id; j++)
            m |= e[j].mask;
        if (m != 0) {
            char one[48];
            int len = snprintf(one, sizeof one, "%s%lld", shown ? "," : "", e[i].id);
            crm_jbuf_raw(&a, one, (size_t)len);
            len = snprintf(one, sizeof one, "%s%llu", shown ? "," : "", m);
            crm_jbuf_raw(&b, one, (size_t)len);
            shown++;
        }
        i = j;
    }
    crm_jbuf_raw(&a, "}", 1);
    crm_jbuf_raw(&b, "}", 1);
    *ids = crm_jbuf_take(&a, NULL);
    *masks = crm_jbuf_take(&b, NULL);
    return *ids != NULL && *masks != NULL;
}

/* The customers about to be judged, locked in id order until the write
 * commits: two writes that touch one customer at once (two batches with
 * its touchpoints, a batch and a flip) judge it one after the other, the
 * second with what the first wrote, instead of each without the other's
 * (which could leave, say, "two purchases" unmet by two transactions that
 * each added one). The statements that judge them come after, so they read
 * what the first wrote. */
static crm_stmt lock_customers =
    CRM_STMT("segments_lock_customers",
             "SELECT count(*) FROM (SELECT 1 FROM customers WHERE id = ANY($1::bigint[])"
             " ORDER BY id FOR NO KEY UPDATE) x");

/* Every live segment in order of dependence, a group of one rank (at most
 * GROUP_MAX) per statement, each over the candidates[0..n) it considers. */
static bool refresh_by_rank(crm_conn *c, const live_set *L, const long long *cands, size_t n,
                            consider_fn consider, void *ctx, long long now_ms, const char *cause,
                            const char *ref, crm_error *err)
{
    if (n == 0)
        return true;
    cand_entry *e = malloc(sizeof *e * n);
    if (e == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = true;
    if (L->n > 0) {
        /* Only the customers some segment will judge. */
        for (size_t i = 0; i < n; i++) {
            e[i] = (cand_entry){.id = cands[i], .mask = 0};
            for (int g = 0; g < L->n && e[i].mask == 0; g++)
                e[i].mask = consider(&L->s[g], i, ctx);
        }
        char *ids = NULL, *masks = NULL;
        if (!group_literals(e, n, &ids, &masks)) {
            ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        } else if (strcmp(ids, "{}") != 0) {
            const char *params[] = {ids};
            PGresult *res = crm_db_exec(c, &lock_customers, 1, params, err);
            ok = res != NULL;
            PQclear(res);
        }
        free(ids);
        free(masks);
    }
    for (int start = 0; ok && start < L->n;) {
        const live_segment *segs[GROUP_MAX];
        int k = 0, end = start;
        for (size_t i = 0; i < n; i++)
            e[i] = (cand_entry){.id = cands[i], .mask = 0};
        for (; end < L->n && L->s[end].rank == L->s[start].rank && k < GROUP_MAX; end++) {
            bool any = false;
            for (size_t i = 0; i < n; i++)
                if (consider(&L->s[end], i, ctx)) {
                    e[i].mask |= 1ull << k;
                    any = true;
                }
            if (any)
                segs[k++] = &L->s[end];
        }
        if (k > 0) {
            char *ids = NULL, *masks = NULL;
            ok = group_literals(e, n, &ids, &masks)
                     ? refresh_group(c, segs, k, ids, masks, now_ms, cause, ref, err)
                     : crm_error_set(err, CRM_E_INTERNAL, "out of memory");
            free(ids);
            free(masks);
        }
        start = end;
    }
    free(e);
    return ok;
}

/* The ids of a bigint array literal ("{1,2}"); *n how many. NULL when
 * memory ran out (or there are none: *n is 0 then). */
static long long *parse_ids(const char *text, size_t *n)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    long long *ids = malloc(sizeof *ids * cap);
    *n = 0;
    if (ids == NULL)
        return NULL;
    for (const char *p = text; *p;) {
        if (*p >= '0' && *p <= '9') {
            char *end;
            long long v = strtoll(p, &end, 10);
            if (*n < cap)
                ids[(*n)++] = v;
            p = end;
        } else {
            p++;
        }
    }
    return ids;
}

static bool consider_by_reads(const live_segment *g, size_t i, void *ctx)
{
    (void)i;
    unsigned what = *(const unsigned *)ctx;
    return (g->reads & what) != 0 || (g->reads & CRM_RULE_READS_SEGMENTS) != 0;
}

static bool refresh_loaded(crm_conn *c, const live_set *L, const long long *ids, size_t n,
                           unsigned what, const char *cause, const char *ref, crm_error *err)
{
    return refresh_by_rank(c, L, ids, n, consider_by_reads, &what, crm_wall_ms(), cause, ref, err);
}

bool crm_segments_refresh(crm_conn *c, const char *ids, unsigned what, const char *cause,
                          const char *ref, crm_error *err)
{
    if (ids == NULL || strcmp(ids, "{}") == 0)
        return true;
    size_t n = 0;
    long long *cands = parse_ids(ids, &n);
    if (cands == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    live_set L;
    bool ok = lock_and_load(c, &L, err);
    if (ok) {
        ok = refresh_loaded(c, &L, cands, n, what, cause, ref, err);
        live_set_free(&L);
    }
    free(cands);
    return ok;
}

/* What consider_touchpoint needs: the write's touchpoints, then the
 * customers it made (candidates from nt on). */
typedef struct touchpoint_write {
    const crm_segment_touchpoint *t;
    size_t nt;
    long long now_ms;
} touchpoint_write;

/* A segment considers a customer the write made, and one whose new
 * touchpoint one of its aggregates would count; one that names segments,
 * everyone. The time is known to the millisecond: a window's edge within
 * it is taken as counting. */
static bool consider_touchpoint(const live_segment *g, size_t i, void *ctx)
{
    const touchpoint_write *w = ctx;
    if (i >= w->nt || (g->reads & CRM_RULE_READS_SEGMENTS) != 0)
        return true;
    if ((g->reads & CRM_RULE_READS_TOUCHPOINTS) == 0)
        return false;
    crm_rule_touchpoint_facts f = w->t[i].facts;
    const crm_rule *r = g->rule->rule;
    if (crm_rule_touchpoint_counts(r, &f, w->now_ms))
        return true;
    f.occurred_us += 1000;
    if (crm_rule_touchpoint_counts(r, &f, w->now_ms))
        return true;
    f.occurred_us -= 2000;
    return crm_rule_touchpoint_counts(r, &f, w->now_ms);
}

bool crm_segments_refresh_touchpoints(crm_conn *c, const crm_segment_touchpoint *t, size_t n,
                                      const long long *made, size_t nmade, const char *cause,
                                      const char *ref, crm_error *err)
{
    if (n + nmade == 0)
        return true;
    long long *cands = malloc(sizeof *cands * (n + nmade));
    if (cands == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    for (size_t i = 0; i < n; i++)
        cands[i] = t[i].customer_id;
    for (size_t i = 0; i < nmade; i++)
        cands[n + i] = made[i];
    live_set L;
    bool ok = lock_and_load(c, &L, err);
    if (ok) {
        touchpoint_write w = {.t = t, .nt = n, .now_ms = crm_wall_ms()};
        ok = refresh_by_rank(c, &L, cands, n + nmade, consider_touchpoint, &w, w.now_ms, cause, ref,
                             err);
        live_set_free(&L);
    }
    free(cands);
    return ok;
}

/* ---- the queue of batches (migration 0023) ------------------------------------- */

static crm_stmt pending_insert = CRM_STMT(
    "segments_pending_insert", "INSERT INTO segment_pending (touchpoints) VALUES ($1::bigint[])");

bool crm_segments_queue_touchpoints(crm_conn *c, const long long *ids, size_t n, crm_error *err)
{
    if (n == 0)
        return true;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_raw(&b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        char one[32];
        int len = snprintf(one, sizeof one, "%s%lld", i ? "," : "", ids[i]);
        crm_jbuf_raw(&b, one, (size_t)len);
    }
    crm_jbuf_raw(&b, "}", 1);
    char *text = crm_jbuf_take(&b, NULL);
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    const char *p[] = {text};
    PGresult *res = crm_db_exec(c, &pending_insert, 1, p, err);
    free(text);
    PQclear(res);
    return res != NULL;
}

/* The oldest queued batches, claimed (another process takes others) and
 * deleted: how many, then one row per touchpoint of theirs that is still
 * stored, with what consider_touchpoint needs (its skus a JSON array). */
static crm_stmt pending_claim = CRM_STMT(
    "segments_pending_claim",
    "WITH q AS (DELETE FROM segment_pending WHERE id IN (SELECT id FROM segment_pending"
    " ORDER BY id LIMIT $1::int FOR UPDATE SKIP LOCKED)"
    " RETURNING touchpoints, customers, reads, cause),"
    " n AS (SELECT count(*) AS batches FROM q) "
    "SELECT n.batches, f.customer_id, f.type, f.channel, f.campaign_id, f.us, f.skus,"
    " f.offer_code, NULL::int AS reads, NULL::text AS cause FROM n"
    " LEFT JOIN (SELECT t.customer_id, t.type, t.channel, t.campaign_id,"
    "  t.offer_code, (extract(epoch FROM t.occurred_at) * 1000000)::bigint AS us,"
    "  jsonb_path_query_array(coalesce(t.items, '[]'), '$[*].sku')::text AS skus"
    "  FROM touchpoints t WHERE t.id IN (SELECT unnest(q.touchpoints) FROM q)) f ON true "
    "UNION ALL SELECT NULL, x.id, NULL, NULL, NULL, NULL, NULL, NULL, q.reads, q.cause"
    " FROM q, unnest(q.customers) AS x (id)");

/* The facts of claimed touchpoints: t and skus point into res and docs. */
typedef struct claimed {
    crm_segment_touchpoint *t;
    size_t n;
    json_t **docs;
    const char **skus;
} claimed;

static void claimed_free(claimed *k)
{
    for (size_t i = 0; k->docs != NULL && i < k->n; i++)
        json_decref(k->docs[i]);
    free(k->docs);
    free(k->skus);
    free(k->t);
}

/* Rows with a touchpoint (column 1 not null, column 8 null) of res into k. */
static bool claimed_read(const PGresult *res, claimed *k, crm_error *err)
{
    int rows = PQntuples(res);
    size_t cap = rows > 0 ? (size_t)rows : 1, nskus = 0;
    k->t = calloc(cap, sizeof *k->t);
    k->docs = calloc(cap, sizeof *k->docs);
    for (int i = 0; k->t != NULL && k->docs != NULL && i < rows; i++) {
        if (PQgetisnull(res, i, 1) || !PQgetisnull(res, i, 8))
            continue;
        json_t *doc = json_loads(PQgetvalue(res, i, 6), 0, NULL);
        k->docs[k->n] = doc;
        nskus += json_array_size(doc);
        k->t[k->n].customer_id = atoll(PQgetvalue(res, i, 1));
        k->t[k->n].facts = (crm_rule_touchpoint_facts){
            .type = PQgetvalue(res, i, 2),
            .channel = PQgetvalue(res, i, 3),
            .campaign_id = PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4),
            .offer_code = PQgetisnull(res, i, 7) ? NULL : PQgetvalue(res, i, 7),
            .occurred_us = atoll(PQgetvalue(res, i, 5))};
        k->n++;
    }
    if (k->t == NULL || k->docs == NULL ||
        (k->skus = malloc(sizeof *k->skus * (nskus ? nskus : 1))) == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < k->n; i++) {
        k->t[i].facts.skus = k->skus + at;
        size_t j;
        json_t *v;
        json_array_foreach(k->docs[i], j, v)
        {
            if (json_is_string(v) && at < nskus) {
                k->skus[at++] = json_string_value(v);
                k->t[i].facts.nskus++;
            }
        }
    }
    return true;
}

/* The queued customers of res (column 8 not null) whose reads and cause
 * are those of row first, judged by every segment that reads what they
 * changed; *done marks the rows taken. */
static bool refresh_queued_customers(crm_conn *c, const live_set *L, const PGresult *res,
                                     int first, bool *done, crm_error *err)
{
    int rows = PQntuples(res), n = 0;
    long long *ids = malloc(sizeof *ids * (size_t)(rows ? rows : 1));
    if (ids == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    const char *reads = PQgetvalue(res, first, 8), *cause = PQgetvalue(res, first, 9);
    for (int i = first; i < rows; i++)
        if (!done[i] && !PQgetisnull(res, i, 8) && strcmp(PQgetvalue(res, i, 8), reads) == 0 &&
            strcmp(PQgetvalue(res, i, 9), cause) == 0) {
            ids[n++] = atoll(PQgetvalue(res, i, 1));
            done[i] = true;
        }
    unsigned what = (unsigned)atoi(reads);
    bool ok = refresh_by_rank(c, L, ids, (size_t)n, consider_by_reads, &what, crm_wall_ms(), cause,
                              NULL, err);
    free(ids);
    return ok;
}

static crm_stmt pending_customers = CRM_STMT(
    "segments_pending_customers",
    "INSERT INTO segment_pending (customers, reads, cause) VALUES ($1::bigint[], $2::int, $3)");

bool crm_segments_queue_customers(crm_conn *c, const char *ids, unsigned what, const char *cause,
                                  crm_error *err)
{
    if (ids == NULL || strcmp(ids, "{}") == 0)
        return true;
    char w[16];
    snprintf(w, sizeof w, "%u", what);
    const char *p[] = {ids, w, cause};
    PGresult *res = crm_db_exec(c, &pending_customers, 3, p, err);
    PQclear(res);
    return res != NULL;
}

bool crm_segments_drain(int batches, long *did, crm_error *err)
{
    *did = 0;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return false;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", batches);
    const char *p[] = {lim};
    bool ok = crm_db_begin(c, err);
    PGresult *res = ok ? crm_db_exec(c, &pending_claim, 1, p, err) : NULL;
    ok = res != NULL;
    long n = 0;
    int rows = ok ? PQntuples(res) : 0, ncustomers = 0;
    for (int i = 0; i < rows; i++) {
        if (!PQgetisnull(res, i, 0))
            n = atol(PQgetvalue(res, i, 0));
        ncustomers += !PQgetisnull(res, i, 8);
    }
    claimed k = {0};
    if (ok && n > 0)
        ok = claimed_read(res, &k, err);
    live_set L = {0};
    if (ok && k.n + (size_t)ncustomers > 0)
        ok = lock_and_load(c, &L, err);
    /* Every customer about to be judged, locked at once in id order (the
     * two kinds are judged one after the other, each locking its own). */
    if (ok && ncustomers > 0 && k.n > 0 && L.n > 0) {
        cand_entry *e = malloc(sizeof *e * (k.n + (size_t)ncustomers));
        size_t m = 0;
        for (size_t i = 0; e != NULL && i < k.n; i++)
            e[m++] = (cand_entry){.id = k.t[i].customer_id, .mask = 1};
        for (int i = 0; e != NULL && i < rows; i++)
            if (!PQgetisnull(res, i, 8))
                e[m++] = (cand_entry){.id = atoll(PQgetvalue(res, i, 1)), .mask = 1};
        char *ids = NULL, *masks = NULL;
        if (e == NULL || !group_literals(e, m, &ids, &masks)) {
            ok = crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        } else {
            const char *params[] = {ids};
            PGresult *locked = crm_db_exec(c, &lock_customers, 1, params, err);
            ok = locked != NULL;
            PQclear(locked);
        }
        free(ids);
        free(masks);
        free(e);
    }
    if (ok && ncustomers > 0 && L.n > 0) {
        bool *done = calloc((size_t)rows, sizeof *done);
        ok = done != NULL || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        for (int i = 0; ok && i < rows; i++)
            if (!PQgetisnull(res, i, 8) && !done[i])
                ok = refresh_queued_customers(c, &L, res, i, done, err);
        free(done);
    }
    if (ok && k.n > 0 && L.n > 0) {
        long long *cands = malloc(sizeof *cands * k.n);
        for (size_t i = 0; cands != NULL && i < k.n; i++)
            cands[i] = k.t[i].customer_id;
        touchpoint_write w = {.t = k.t, .nt = k.n, .now_ms = crm_wall_ms()};
        ok = cands != NULL ? refresh_by_rank(c, &L, cands, k.n, consider_touchpoint, &w, w.now_ms,
                                             "touchpoints", NULL, err)
                           : crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        free(cands);
    }
    live_set_free(&L);
    claimed_free(&k);
    PQclear(res);
    if (ok)
        ok = crm_db_commit(c, err);
    else
        crm_db_rollback(c);
    crm_db_release(c);
    if (ok)
        *did = n;
    return ok;
}

/* ---- the build ---------------------------------------------------------------- */

static crm_stmt queue_note =
    CRM_STMT("segments_note_build", "UPDATE segments SET build_job_id = $2 WHERE id = $1");

bool segments_queue_build(crm_conn *c, long long id, long long api_key_id, crm_error *err)
{
    json_t *params = json_pack("{s:I}", "segment_id", (json_int_t)id);
    json_t *job = params ? crm_job_submit_on(c, "segment_build", params, api_key_id, err) : NULL;
    json_decref(params);
    if (job == NULL) {
        if (err->code == CRM_OK)
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return false;
    }
    char idbuf[24], jobbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(jobbuf, sizeof jobbuf, "%lld",
             (long long)json_integer_value(json_object_get(job, "id")));
    json_decref(job);
    const char *p[] = {idbuf, jobbuf};
    PGresult *res = crm_db_exec(c, &queue_note, 2, p, err);
    PQclear(res);
    return res != NULL;
}

static crm_stmt gate_pass =
    CRM_STMT("segments_gate_pass", "SELECT pg_advisory_lock(" CRM_SEGMENTS_LOCK_CLASS ", 0),"
                                   " pg_advisory_unlock(" CRM_SEGMENTS_LOCK_CLASS ", 0)");

/* The segment and every live one that depends on it, in order of
 * dependence; each one's lock exclusive, and shared the lock of each
 * segment they name that is not one of them (its own build, running, is
 * waited for: they read its members). All in id order, in one pass, so
 * that two builds never wait on each other in a cycle. Definitions may
 * change beside a build: one that comes to depend on the segment has a
 * build of its own, which waits for this one. */
static crm_stmt build_targets = CRM_STMT(
    "segments_build_targets",
    "WITH RECURSIVE d (id, depth) AS (SELECT $1::bigint, 0"
    " UNION SELECT s.id, d.depth + 1 FROM segments s JOIN d ON d.id = ANY(s.depends_on)"
    " WHERE s.deleted_at IS NULL AND d.depth < 64),"
    " t AS (SELECT DISTINCT s.id, s.rule_version, s.rule, s.rank, s.state, s.depends_on"
    "  FROM segments s JOIN d ON d.id = s.id WHERE s.deleted_at IS NULL),"
    " r AS (SELECT DISTINCT x AS id FROM t, unnest(t.depends_on) x"
    "  WHERE x NOT IN (SELECT id FROM t)),"
    " locked AS (SELECT count(CASE WHEN k.mine THEN pg_advisory_xact_lock(" CRM_SEGMENTS_LOCK_CLASS
    ", " LOCK_KEY("k.id") ") ELSE pg_advisory_xact_lock_shared(" CRM_SEGMENTS_LOCK_CLASS
    ", " LOCK_KEY("k.id") ") END) AS n FROM (SELECT id, true AS mine FROM t UNION ALL"
    "  SELECT id, false FROM r ORDER BY id OFFSET 0) k) "
    "SELECT t.id, t.rule_version, t.rule::text, t.state FROM t, locked ORDER BY t.rank, t.id");

static crm_stmt flips_clear =
    CRM_STMT("segments_flips_clear", "DELETE FROM segment_flips WHERE segment_id = $1");

/* The kept size from the members; live, with a row of history, when the
 * rule built ($4) is still the segment's (a new one, committed during the
 * build, has a build of its own queued, which settles it). */
static crm_stmt build_settle = CRM_STMT(
    "segments_build_settle",
    "WITH gone AS (DELETE FROM segment_size_deltas WHERE segment_id = $1),"
    " n AS (SELECT count(*) AS total FROM segment_memberships WHERE segment_id = $1),"
    " s AS (UPDATE segments SET size = n.total,"
    "  state = CASE WHEN rule_version = $4::int THEN 'live' ELSE state END FROM n WHERE id = $1"
    "  RETURNING id, rule_version, size) "
    "INSERT INTO segment_sizes (segment_id, at, size, rule_version, reason)"
    " SELECT id, $2::timestamptz, size, rule_version, $3 FROM s WHERE rule_version = $4::int"
    " ON CONFLICT DO NOTHING");

/* Segment id (its rule text, version) over the whole base. */
static bool build_one(crm_conn *c, long long id, int version, const char *rule_text,
                      const char *cause, long long now_ms, crm_error *err)
{
    cached_rule *cr = rule_get(id, version, rule_text, err);
    if (cr == NULL)
        return false;
    char seg[24], ver[16], at[40];
    snprintf(seg, sizeof seg, "%lld", id);
    snprintf(ver, sizeof ver, "%d", version);
    format_at(now_ms, at);
    const char *p1[] = {seg};
    PGresult *res = crm_db_exec(c, &flips_clear, 1, p1, err);
    bool ok = res != NULL;
    PQclear(res);
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    seg_params p;
    bind_common(&s, &p, seg, ver, at, cause, NULL);
    bool timed = crm_rule_has_time(cr->rule);
    if (timed) {
        crm_sqlbuf_append(&s, "WITH cand AS MATERIALIZED (SELECT c.id, (");
        ok = ok && crm_rule_sql(cr->rule, &s, now_ms, &arena, err);
        crm_sqlbuf_append(&s, ") AS inside, (");
        ok = ok && crm_rule_flip_sql(cr->rule, &s, now_ms, &arena, err);
        crm_sqlbuf_append(&s, ") AS flip FROM customers c WHERE c.status = 'active'), ");
    } else {
        crm_sqlbuf_append(&s, "WITH cand AS MATERIALIZED (SELECT c.id, true AS inside"
                              " FROM customers c WHERE c.status = 'active' AND (");
        ok = ok && crm_rule_sql(cr->rule, &s, now_ms, &arena, err);
        crm_sqlbuf_append(&s, ")), ");
    }
    write_moves(&s, p.seg, p.ver, p.at, p.cause, p.ref);
    if (timed) {
        crm_sqlbuf_append(&s, ", flips AS (INSERT INTO segment_flips (segment_id, customer_id,"
                              " flip_at) SELECT ");
        crm_sqlbuf_placeholder(&s, p.seg);
        crm_sqlbuf_append(&s, "::bigint, id, flip FROM cand WHERE flip IS NOT NULL)");
    }
    crm_sqlbuf_append(&s, " SELECT (SELECT count(*) FROM came), (SELECT count(*) FROM gone)");
    res = ok ? run_built(c, &s, false, err) : NULL;
    ok = res != NULL;
    PQclear(res);
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    rule_release(cr);
    if (ok) {
        const char *p4[] = {seg, at, cause, ver};
        res = crm_db_exec(c, &build_settle, 4, p4, err);
        ok = res != NULL;
        PQclear(res);
    }
    return ok;
}

static bool run_build(crm_job_ctx *job, crm_error *err)
{
    crm_conn *c = crm_job_conn(job);
    long long id =
        (long long)json_integer_value(json_object_get(crm_job_params(job), "segment_id"));
    /* A rebuild because what the rule reads changed everywhere says so
     * ("metrics"); otherwise a first build, a new rule or a dependence. */
    const char *given = json_string_value(json_object_get(crm_job_params(job), "cause"));
    if (given != NULL && strcmp(given, "metrics") != 0)
        given = NULL;
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    crm_job_progress(job, "waiting for writes under way", 0, 0, NULL);
    PGresult *res = crm_db_exec(c, &gate_pass, 0, NULL, err);
    if (res == NULL)
        return false;
    PQclear(res);
    if (!crm_db_begin(c, err))
        return false;
    const char *p[] = {idbuf};
    res = crm_db_exec(c, &build_targets, 1, p, err);
    bool ok = res != NULL;
    crm_job_keeper *keeper = ok ? crm_job_keep_lease(job) : NULL;
    int n = ok ? PQntuples(res) : 0;
    long long now_ms = crm_wall_ms();
    for (int i = 0; ok && i < n; i++) {
        long long sid = atoll(PQgetvalue(res, i, 0));
        const char *cause =
            given != NULL && sid == id ? given
            : sid != id                ? "segment"
            : atoi(PQgetvalue(res, i, 1)) == 1 && strcmp(PQgetvalue(res, i, 3), "building") == 0
                ? "build"
                : "rule";
        crm_job_progress(job, "evaluating", i, n, NULL);
        ok = build_one(c, sid, atoi(PQgetvalue(res, i, 1)), PQgetvalue(res, i, 2), cause, now_ms,
                       err);
    }
    PQclear(res);
    crm_job_keeper_stop(keeper);
    if (ok)
        ok = crm_db_commit(c, err);
    else
        crm_db_rollback(c);
    if (ok) {
        json_t *result = json_pack("{s:I, s:i}", "segment_id", (json_int_t)id, "segments", n);
        crm_job_set_result(job, result);
    }
    return ok;
}

static const crm_job_kind build_kind = {"segment_build", run_build, CRM_SCOPE_SEGMENTS_READ};

void crm_segments_register_jobs(void)
{
    crm_jobs_register(&build_kind);
}

/* ---- rebuilds when everything changed (a full recompute of the metrics) ----------------- */

static crm_stmt reading = CRM_STMT(
    "segments_reading", "SELECT id FROM segments WHERE deleted_at IS NULL AND reads & $1::int <> 0"
                        " ORDER BY id");

bool crm_segments_rebuild_reading(unsigned what, const char *cause, crm_error *err)
{
    char w[16];
    snprintf(w, sizeof w, "%u", what);
    const char *p[] = {w};
    PGresult *res = crm_db_run(&reading, 1, p, err);
    if (res == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(res); i++) {
        json_t *params = json_pack("{s:I, s:s}", "segment_id",
                                   (json_int_t)atoll(PQgetvalue(res, i, 0)), "cause", cause);
        long long running = 0;
        json_t *job = crm_job_submit("segment_build", params, NULL, 0, &running, err);
        json_decref(params);
        ok = job != NULL;
        json_decref(job);
    }
    PQclear(res);
    return ok;
}

/* ---- the background tick ---------------------------------------------------------- */

/* The customers due to flip, locked (another process takes others). */
static crm_stmt flips_due = CRM_STMT(
    "segments_flips_due", "SELECT customer_id FROM segment_flips WHERE flip_at <= $1::timestamptz"
                          " ORDER BY flip_at LIMIT $2 FOR UPDATE SKIP LOCKED");

static bool flip_due(int batch, long *did, crm_error *err)
{
    *did = 0;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return false;
    bool ok = crm_db_begin(c, err);
    live_set L = {0};
    ok = ok && lock_and_load(c, &L, err);
    char at[40], lim[16];
    format_at(crm_wall_ms(), at);
    snprintf(lim, sizeof lim, "%d", batch);
    const char *p[] = {at, lim};
    PGresult *res = ok ? crm_db_exec(c, &flips_due, 2, p, err) : NULL;
    ok = res != NULL;
    int n = ok ? PQntuples(res) : 0;
    long long *ids = n > 0 ? malloc(sizeof *ids * (size_t)n) : NULL;
    for (int i = 0; ids != NULL && i < n; i++)
        ids[i] = atoll(PQgetvalue(res, i, 0));
    PQclear(res);
    if (ok && n > 0)
        ok = ids != NULL
                 ? refresh_loaded(c, &L, ids, (size_t)n, CRM_SEGMENTS_ALL, "time", NULL, err)
                 : crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    free(ids);
    live_set_free(&L);
    if (ok)
        ok = crm_db_commit(c, err);
    else
        crm_db_rollback(c);
    crm_db_release(c);
    if (ok)
        *did = n;
    return ok;
}

static crm_stmt fold_sizes = CRM_STMT(
    "segments_fold_sizes",
    "WITH d AS (DELETE FROM segment_size_deltas RETURNING segment_id, delta) "
    "UPDATE segments s SET size = s.size + x.n FROM (SELECT segment_id, sum(delta) AS n FROM d"
    " GROUP BY segment_id) x WHERE s.id = x.segment_id");

static crm_stmt daily_sizes = CRM_STMT(
    "segments_daily_sizes",
    "INSERT INTO segment_sizes (segment_id, at, size, rule_version, reason)"
    " SELECT s.id, now(),"
    " s.size + coalesce((SELECT sum(d.delta) FROM segment_size_deltas d WHERE d.segment_id = "
    "s.id), 0),"
    " s.rule_version, 'daily' FROM segments s WHERE s.deleted_at IS NULL AND s.state = 'live'"
    " AND NOT EXISTS (SELECT 1 FROM segment_sizes z WHERE z.segment_id = s.id AND z.reason = "
    "'daily'"
    " AND z.at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
    " ON CONFLICT DO NOTHING");

/* Builds whose job ended without making the segment live: failed for
 * good after its attempts. */
static crm_stmt builds_failed = CRM_STMT(
    "segments_builds_failed",
    "UPDATE segments s SET state = 'failed' FROM jobs j WHERE s.state = 'building'"
    " AND s.deleted_at IS NULL AND j.id = s.build_job_id AND j.state IN ('failed', 'cancelled')");

static crm_stmt purge_deleted =
    CRM_STMT("segments_purge_deleted",
             "DELETE FROM segments WHERE id = (SELECT id FROM segments WHERE deleted_at IS NOT NULL"
             " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)");

static bool run_plain(crm_stmt *st, crm_error *err)
{
    PGresult *res = crm_db_run(st, 0, NULL, err);
    PQclear(res);
    return res != NULL;
}

bool crm_segments_tick(int batch, long *did, crm_error *err)
{
    return flip_due(batch, did, err) && run_plain(&fold_sizes, err) &&
           run_plain(&daily_sizes, err) && run_plain(&builds_failed, err) &&
           run_plain(&purge_deleted, err);
}

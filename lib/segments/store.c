/*
 * segments/store.c — segment definitions (create, read, list, patch,
 * delete) and the reads of a membership: its count, its members, its log
 * and its size over time, now or at a past time (segment_store.h).
 */
#include "segment_store.h"
#include "segments.h"
#include "segments/live.h"
#include "customers.h"
#include "customers/internal.h"
#include "jobs.h"
#include "json.h"
#include "jbuf.h"
#include "list/page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEGMENT_COLUMNS                                                                            \
    "s.id, s.name, s.description, s.rule::text, s.version, s.rule_version, s.state,"               \
    " s.size + coalesce((SELECT sum(d.delta) FROM segment_size_deltas d"                           \
    "  WHERE d.segment_id = s.id), 0), s.build_job_id, s.depends_on::text, " CRM_SQL_TS(           \
        "s.created_at") ", " CRM_SQL_TS("s.updated_at")

enum {
    COL_ID,
    COL_NAME,
    COL_DESCRIPTION,
    COL_RULE,
    COL_VERSION,
    COL_RULE_VERSION,
    COL_STATE,
    COL_SIZE,
    COL_JOB,
    COL_DEPENDS,
    COL_CREATED,
    COL_UPDATED
};

static crm_stmt segment_get_stmt =
    CRM_STMT_RO("segment_get", "SELECT " SEGMENT_COLUMNS
                               " FROM segments s WHERE s.id = $1 AND s.deleted_at IS NULL");

static crm_stmt segment_page_stmt = CRM_STMT_PAGE(
    "segment_page", "SELECT " SEGMENT_COLUMNS " FROM segments s"
                    " WHERE s.deleted_at IS NULL AND s.id > $1 ORDER BY s.id LIMIT $2");

static json_t *text_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_string(PQgetvalue(res, r, c));
}

static json_t *int_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_integer(atoll(PQgetvalue(res, r, c)));
}

/* "{1,2}" as a JSON array of integers. */
static json_t *id_array(const char *text)
{
    json_t *a = json_array();
    const char *p = text;
    while (*p != '\0') {
        if (*p >= '0' && *p <= '9') {
            char *end;
            long long v = strtoll(p, &end, 10);
            json_array_append_new(a, json_integer(v));
            p = end;
        } else {
            p++;
        }
    }
    return a;
}

static json_t *segment_from_row(const PGresult *res, int r)
{
    json_t *rule = crm_json_load_stored(PQgetvalue(res, r, COL_RULE));
    return json_pack(
        "{s:I, s:s, s:o, s:o, s:I, s:I, s:s, s:I, s:o, s:o, s:s, s:s}", "id",
        (json_int_t)atoll(PQgetvalue(res, r, COL_ID)), "name", PQgetvalue(res, r, COL_NAME),
        "description", text_or_null(res, r, COL_DESCRIPTION), "rule", rule ? rule : json_null(),
        "version", (json_int_t)atoll(PQgetvalue(res, r, COL_VERSION)), "rule_version",
        (json_int_t)atoll(PQgetvalue(res, r, COL_RULE_VERSION)), "state",
        PQgetvalue(res, r, COL_STATE), "size", (json_int_t)atoll(PQgetvalue(res, r, COL_SIZE)),
        "build_job_id", int_or_null(res, r, COL_JOB), "depends_on",
        id_array(PQgetvalue(res, r, COL_DEPENDS)), "created_at", PQgetvalue(res, r, COL_CREATED),
        "updated_at", PQgetvalue(res, r, COL_UPDATED));
}

static json_t *segment_get_on(crm_conn *c, long long id, crm_error *err)
{
    return crm_row_by_id(c, &segment_get_stmt, id, segment_from_row, "no segment with this id",
                         err);
}

json_t *crm_segment_get(long long id, crm_error *err)
{
    return segment_get_on(NULL, id, err);
}

json_t *crm_segments_list(long long after_id, int limit, long long *next_after, crm_error *err)
{
    *next_after = 0;
    char after[24], fetch[16];
    snprintf(after, sizeof after, "%lld", after_id);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    const char *params[] = {after, fetch};
    PGresult *res = crm_db_run(&segment_page_stmt, 2, params, err);
    return res != NULL ? crm_page_of_rows(res, limit, segment_from_row, COL_ID, next_after) : NULL;
}

/* ---- checking a definition -------------------------------------------------- */

/* Moves the rule's field errors under /rule. */
static void prefix_rule_errors(crm_error *err)
{
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e)
    {
        const char *f = json_string_value(json_object_get(e, "field"));
        char buf[CRM_RULE_MAX_FIELD + 64];
        snprintf(buf, sizeof buf, "/rule%s", f ? f : "");
        json_object_set_new(e, "field", json_string(buf));
    }
}

static bool check_name(const json_t *v, crm_error *err)
{
    const char *s = json_string_value(v);
    size_t chars = s ? crm_utf8_chars(s, json_string_length(v)) : 0;
    if (s == NULL || chars < 1 || chars > 200 || strlen(s) != json_string_length(v)) {
        crm_error_add_field(err, "/name", "must be a string of 1 to 200 characters");
        return false;
    }
    return true;
}

static bool check_description(const json_t *v, crm_error *err)
{
    if (json_is_null(v))
        return true;
    const char *s = json_string_value(v);
    if (s == NULL || crm_utf8_chars(s, json_string_length(v)) > 2000 ||
        strlen(s) != json_string_length(v)) {
        crm_error_add_field(err, "/description",
                            "must be null or a string of at most 2000 characters");
        return false;
    }
    return true;
}

/* What a rule names and reads, checked against the stored segments on c
 * (inside the definition lock): every named segment exists, and self (0
 * for a new segment) is not reachable from them. */
typedef struct rule_facts {
    crm_rule *rule;
    unsigned reads;
    long long refs[CRM_SEGMENTS_MAX];
    int nrefs;
    char depends[CRM_SEGMENTS_MAX * 21 + 3];
} rule_facts;

static crm_rule *parse_rule(const json_t *rule, crm_error *err)
{
    if (rule == NULL) {
        crm_error_add_field(err, "/rule", "is required");
        return NULL;
    }
    crm_error rerr = CRM_ERROR_INIT;
    crm_rule *r = crm_rule_parse(rule, &rerr);
    if (r == NULL) {
        if (rerr.code == CRM_E_INVALID && rerr.errors != NULL) {
            prefix_rule_errors(&rerr);
            size_t i;
            json_t *e;
            json_array_foreach(rerr.errors, i, e)
                crm_error_add_field(err, json_string_value(json_object_get(e, "field")),
                                    json_string_value(json_object_get(e, "message")));
        } else if (rerr.code == CRM_E_INVALID) {
            crm_error_add_field(err, "/rule", rerr.detail);
        } else {
            crm_error_move(err, &rerr);
        }
        crm_error_clear(&rerr);
    }
    return r;
}

/* $1 the named segments, $2 the segment itself (0: new). Each named one
 * that is missing (or deleted), and whether self is reachable. */
static crm_stmt refs_check = CRM_STMT(
    "segment_refs_check",
    "WITH RECURSIVE reach (id, depth) AS ("
    "  SELECT unnest($1::bigint[]), 0"
    "  UNION SELECT unnest(s.depends_on), r.depth + 1 FROM reach r JOIN segments s ON s.id = r.id"
    "  WHERE r.depth < 64) "
    "SELECT (SELECT coalesce(array_agg(x), '{}')::text FROM unnest($1::bigint[]) x"
    "  WHERE NOT EXISTS (SELECT 1 FROM segments s WHERE s.id = x AND s.deleted_at IS NULL)),"
    " EXISTS (SELECT 1 FROM reach WHERE id = $2::bigint),"
    " coalesce((SELECT max(rank) + 1 FROM segments WHERE id = ANY($1::bigint[])), 0)");

static bool check_refs(crm_conn *c, rule_facts *f, long long self, int *rank, crm_error *err)
{
    const char *ptrs[CRM_SEGMENTS_MAX];
    int n = crm_rule_segment_refs(f->rule, f->refs, ptrs, CRM_SEGMENTS_MAX);
    if (n > CRM_SEGMENTS_MAX) {
        crm_error_add_field(err, "/rule", "names too many segments");
        return crm_error_set(err, CRM_E_INVALID, "the segment is invalid");
    }
    f->nrefs = n;
    size_t len = 0;
    f->depends[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(f->depends + len, sizeof f->depends - len, "%s%lld", i ? "," : "",
                                f->refs[i]);
    snprintf(f->depends + len, sizeof f->depends - len, "}");
    char selfbuf[24];
    snprintf(selfbuf, sizeof selfbuf, "%lld", self);
    const char *params[] = {f->depends, selfbuf};
    PGresult *res = crm_db_exec(c, &refs_check, 2, params, err);
    if (res == NULL)
        return false;
    json_t *missing = id_array(PQgetvalue(res, 0, 0));
    bool cycle = PQgetvalue(res, 0, 1)[0] == 't';
    *rank = atoi(PQgetvalue(res, 0, 2));
    PQclear(res);
    bool ok = true;
    for (int i = 0; i < n; i++) {
        size_t k;
        json_t *m;
        json_array_foreach(missing, k, m)
        {
            if (json_integer_value(m) == f->refs[i]) {
                char buf[CRM_RULE_MAX_FIELD + 64];
                snprintf(buf, sizeof buf, "/rule%s/segment", ptrs[i]);
                crm_error_add_field(err, buf, "names no segment");
                ok = false;
            }
        }
        if (f->refs[i] == self || (cycle && i == 0)) {
            char buf[CRM_RULE_MAX_FIELD + 64];
            snprintf(buf, sizeof buf, "/rule%s/segment", ptrs[i]);
            crm_error_add_field(err, buf, "the segments' rules would name each other in a cycle");
            ok = false;
        }
    }
    json_decref(missing);
    if (!ok)
        return crm_error_set(err, CRM_E_INVALID, "the segment is invalid");
    return true;
}

/* Segment definitions change one at a time (a cycle cannot be made by two
 * changes side by side), under this lock. */
static crm_stmt definition_lock = CRM_STMT(
    "segment_definition_lock", "SELECT pg_advisory_xact_lock(" CRM_SEGMENTS_LOCK_CLASS ", -1)");

static bool lock_definitions(crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &definition_lock, 0, NULL, err);
    PQclear(res);
    return res != NULL;
}

/* The ranks of every segment again after a change of dependence: one more
 * than the highest of those it names. Each pass settles one more level. */
static crm_stmt rerank = CRM_STMT(
    "segment_rerank",
    "WITH RECURSIVE lvl (id, rank, depth) AS ("
    "  SELECT id, 0, 0 FROM segments WHERE deleted_at IS NULL"
    "  UNION ALL SELECT s.id, l.rank + 1, l.depth + 1 FROM lvl l"
    "  JOIN segments s ON l.id = ANY(s.depends_on) AND s.deleted_at IS NULL WHERE l.depth < 64) "
    "UPDATE segments s SET rank = m.rank FROM (SELECT id, max(rank) AS rank FROM lvl GROUP BY id) m"
    " WHERE s.id = m.id AND s.rank <> m.rank");

static bool rank_all(crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &rerank, 0, NULL, err);
    PQclear(res);
    return res != NULL;
}

/* ---- create ----------------------------------------------------------------- */

static crm_stmt live_count =
    CRM_STMT("segment_live_count", "SELECT count(*) FROM segments WHERE deleted_at IS NULL");

/* Every write refreshes the live segments: their number is bounded. */
static bool below_the_limit(crm_conn *c, crm_error *err)
{
    PGresult *res = crm_db_exec(c, &live_count, 0, NULL, err);
    if (res == NULL)
        return false;
    long long n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (n >= CRM_SEGMENTS_MAX)
        return crm_error_set(err, CRM_E_CONFLICT,
                             "there are %lld segments, the most crmd keeps: delete one first", n);
    return true;
}

static crm_stmt segment_insert = CRM_STMT(
    "segment_insert",
    "WITH s AS (INSERT INTO segments (name, description, rule, reads, depends_on, rank)"
    " VALUES ($1, $2, $3::jsonb, $4::int, $5::bigint[], $6::int) RETURNING id, rule) "
    "INSERT INTO segment_versions (segment_id, rule_version, rule) SELECT id, 1, rule FROM s"
    " RETURNING segment_id");

static bool definition_fields(const json_t *body, bool patch, crm_error *err)
{
    static const char *const allowed[] = {"name", "description", "rule", NULL};
    if (!json_is_object(body))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    if (!crm_json_only_fields((json_t *)body, allowed, err))
        return false;
    json_t *name = json_object_get(body, "name"), *desc = json_object_get(body, "description");
    if (name != NULL || !patch)
        check_name(name, err);
    if (desc != NULL)
        check_description(desc, err);
    return true;
}

json_t *crm_segment_create(const json_t *body, long long api_key_id, crm_error *err)
{
    if (!definition_fields(body, false, err))
        return NULL;
    rule_facts f = {0};
    f.rule = parse_rule(json_object_get(body, "rule"), err);
    if (err->errors != NULL || f.rule == NULL) {
        crm_rule_free(f.rule);
        if (err->code == CRM_OK || err->code == CRM_E_INVALID)
            crm_error_set(err, CRM_E_INVALID, "the segment is invalid");
        return NULL;
    }
    f.reads = crm_rule_reads(f.rule);
    char *rule_text = json_dumps(json_object_get(body, "rule"), JSON_COMPACT);
    json_t *desc = json_object_get(body, "description");
    crm_conn *c = crm_db_acquire(err);
    json_t *doc = NULL;
    long long id = 0;
    if (c != NULL && rule_text != NULL && crm_db_begin(c, err)) {
        int rank = 0;
        char reads[16], rankbuf[16];
        bool ok =
            lock_definitions(c, err) && below_the_limit(c, err) && check_refs(c, &f, 0, &rank, err);
        if (ok) {
            snprintf(reads, sizeof reads, "%u", f.reads);
            snprintf(rankbuf, sizeof rankbuf, "%d", rank);
            const char *params[] = {json_string_value(json_object_get(body, "name")),
                                    json_is_string(desc) ? json_string_value(desc) : NULL,
                                    rule_text,
                                    reads,
                                    f.depends,
                                    rankbuf};
            PGresult *res = crm_db_exec(c, &segment_insert, 6, params, err);
            if (res == NULL && err->code == CRM_E_CONFLICT) {
                crm_error_clear(err);
                crm_error_set(err, CRM_E_CONFLICT, "a segment with this name exists");
            }
            ok = res != NULL;
            if (ok)
                id = atoll(PQgetvalue(res, 0, 0));
            PQclear(res);
        }
        if (ok && segments_queue_build(c, id, api_key_id, err) && crm_db_commit(c, err)) {
            crm_jobs_wake();
            doc = segment_get_on(c, id, err);
        } else {
            crm_db_rollback(c);
        }
    }
    if (c != NULL && rule_text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_db_release(c);
    free(rule_text);
    crm_rule_free(f.rule);
    return doc;
}

/* ---- patch and delete ---------------------------------------------------------- */

static crm_stmt segment_lock =
    CRM_STMT("segment_lock", "SELECT version, rule::text, rule = $2::jsonb FROM segments"
                             " WHERE id = $1 AND deleted_at IS NULL FOR UPDATE");

static crm_stmt segment_update =
    CRM_STMT("segment_update", "UPDATE segments SET name = coalesce($2, name),"
                               " description = CASE WHEN $3::bool THEN $4 ELSE description END,"
                               " version = version + 1, updated_at = now() WHERE id = $1");

static crm_stmt segment_new_rule =
    CRM_STMT("segment_new_rule",
             "WITH s AS (UPDATE segments SET rule = $2::jsonb, rule_version = rule_version + 1,"
             " reads = $3::int, depends_on = $4::bigint[], state = 'building' WHERE id = $1"
             " RETURNING id, rule_version, rule) "
             "INSERT INTO segment_versions (segment_id, rule_version, rule)"
             " SELECT id, rule_version, rule FROM s");

static bool lock_for_write(crm_conn *c, long long id, const char *rule_text, const char *if_match,
                           bool *same_rule, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf, rule_text ? rule_text : "null"};
    PGresult *res = crm_db_exec(c, &segment_lock, 2, params, err);
    if (res == NULL)
        return false;
    bool ok = true;
    if (PQntuples(res) != 1)
        ok = crm_error_set(err, CRM_E_NOT_FOUND, "no segment with this id");
    else if (if_match != NULL && !crm_etag_matches(if_match, atoll(PQgetvalue(res, 0, 0))))
        ok = crm_error_set(err, CRM_E_PRECONDITION, "the segment has changed since that version");
    else
        *same_rule = PQgetvalue(res, 0, 2)[0] == 't';
    PQclear(res);
    return ok;
}

json_t *crm_segment_patch(long long id, const json_t *patch, const char *if_match,
                          long long api_key_id, crm_error *err)
{
    if (!crm_if_match_valid(if_match, err) || !definition_fields(patch, true, err))
        return NULL;
    json_t *rule_json = json_object_get(patch, "rule");
    rule_facts f = {0};
    if (rule_json != NULL && json_is_null(rule_json))
        crm_error_add_field(err, "/rule", "cannot be removed");
    else if (rule_json != NULL)
        f.rule = parse_rule(rule_json, err);
    if (err->errors != NULL || (rule_json != NULL && f.rule == NULL)) {
        crm_rule_free(f.rule);
        if (err->code == CRM_OK || err->code == CRM_E_INVALID)
            crm_error_set(err, CRM_E_INVALID, "the segment is invalid");
        return NULL;
    }
    char *rule_text = f.rule ? json_dumps(rule_json, JSON_COMPACT) : NULL;
    json_t *name = json_object_get(patch, "name"), *desc = json_object_get(patch, "description");
    crm_conn *c = crm_db_acquire(err);
    json_t *doc = NULL;
    if (c != NULL && crm_db_begin(c, err)) {
        bool same_rule = true;
        bool ok =
            lock_definitions(c, err) && lock_for_write(c, id, rule_text, if_match, &same_rule, err);
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        if (ok) {
            const char *params[] = {idbuf, json_string_value(name), desc ? "true" : "false",
                                    json_string_value(desc)};
            PGresult *res = crm_db_exec(c, &segment_update, 4, params, err);
            if (res == NULL && err->code == CRM_E_CONFLICT) {
                crm_error_clear(err);
                crm_error_set(err, CRM_E_CONFLICT, "a segment with this name exists");
            }
            ok = res != NULL;
            PQclear(res);
        }
        if (ok && f.rule != NULL && !same_rule) {
            int rank = 0;
            char reads[16];
            f.reads = crm_rule_reads(f.rule);
            snprintf(reads, sizeof reads, "%u", f.reads);
            ok = check_refs(c, &f, id, &rank, err);
            if (ok) {
                const char *params[] = {idbuf, rule_text, reads, f.depends};
                PGresult *res = crm_db_exec(c, &segment_new_rule, 4, params, err);
                ok = res != NULL;
                PQclear(res);
            }
            ok = ok && rank_all(c, err) && segments_queue_build(c, id, api_key_id, err);
        }
        if (ok && crm_db_commit(c, err)) {
            crm_jobs_wake();
            doc = segment_get_on(c, id, err);
        } else {
            crm_db_rollback(c);
        }
    }
    crm_db_release(c);
    free(rule_text);
    crm_rule_free(f.rule);
    return doc;
}

static crm_stmt segment_dependents = CRM_STMT(
    "segment_dependents", "SELECT coalesce(array_agg(id ORDER BY id), '{}')::text FROM segments"
                          " WHERE $1::bigint = ANY(depends_on) AND deleted_at IS NULL");

/* The treatment rules (migration 0024) that name the segment; their writes
 * take treatment_config's row first, as this delete does before it looks,
 * so that a rule naming the segment and its deletion cannot pass each
 * other. */
static crm_stmt treatments_lock =
    CRM_STMT("segment_treatments_lock", "SELECT 1 FROM treatment_config FOR UPDATE");
static crm_stmt rule_dependents = CRM_STMT(
    "segment_rule_dependents",
    "SELECT coalesce(array_agg(id ORDER BY id), '{}')::text FROM treatment_rules"
    " WHERE $1::bigint = ANY(depends_on) AND deleted_at IS NULL");

/* The rows go with the background work (crm_segments_tick): a big
 * segment's membership is not removed inside a request. */
static crm_stmt segment_mark_deleted = CRM_STMT(
    "segment_mark_deleted",
    "UPDATE segments SET deleted_at = now(), state = 'live', version = version + 1 WHERE id = $1");

bool crm_segment_delete(long long id, const char *if_match, crm_error *err)
{
    if (!crm_if_match_valid(if_match, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL || !crm_db_begin(c, err)) {
        crm_db_release(c);
        return false;
    }
    bool same = true;
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    bool ok = lock_definitions(c, err) && lock_for_write(c, id, NULL, if_match, &same, err);
    if (ok) {
        PGresult *res = crm_db_exec(c, &segment_dependents, 1, params, err);
        ok = res != NULL;
        if (ok && strcmp(PQgetvalue(res, 0, 0), "{}") != 0)
            ok = crm_error_set(err, CRM_E_CONFLICT, "the rules of segments %s name this segment",
                               PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    if (ok) {
        PGresult *res = crm_db_exec(c, &treatments_lock, 0, NULL, err);
        ok = res != NULL;
        PQclear(res);
        res = ok ? crm_db_exec(c, &rule_dependents, 1, params, err) : NULL;
        ok = res != NULL;
        if (ok && strcmp(PQgetvalue(res, 0, 0), "{}") != 0)
            ok = crm_error_set(err, CRM_E_CONFLICT,
                               "the conditions of treatment rules %s name this segment",
                               PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    if (ok) {
        PGresult *res = crm_db_exec(c, &segment_mark_deleted, 1, params, err);
        ok = res != NULL;
        PQclear(res);
    }
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    crm_db_release(c);
    return ok;
}

/* ---- reading a membership --------------------------------------------------------- */

static crm_stmt count_now = CRM_STMT_RO(
    "segment_count", "SELECT s.size + coalesce((SELECT sum(d.delta) FROM segment_size_deltas d"
                     " WHERE d.segment_id = s.id), 0), s.state FROM segments s WHERE s.id = $1 AND "
                     "s.deleted_at IS NULL");

/* Who was in at $2: those whose last entry or exit at or before $2 was an
 * entry. */
#define MEMBERS_AT                                                                                 \
    "SELECT DISTINCT ON (x.customer_id) x.customer_id, x.entered FROM segment_changes x"           \
    " WHERE x.segment_id = $1 AND x.at <= $2::timestamptz"

/* $2 in epoch milliseconds (an integer: the event loop's query keeps it). */
#define MEMBERS_AT_MS                                                                              \
    "SELECT DISTINCT ON (x.customer_id) x.customer_id, x.entered FROM segment_changes x"           \
    " WHERE x.segment_id = $1 AND x.at <= 'epoch'::timestamptz + $2::bigint * interval '1 "        \
    "millisecond'"

static crm_stmt count_at = CRM_STMT_RO(
    "segment_count_at", "SELECT (SELECT count(*) FROM (" MEMBERS_AT_MS
                        " ORDER BY x.customer_id, x.at DESC, x.id DESC) m WHERE m.entered), s.state"
                        " FROM segments s WHERE s.id = $1 AND s.deleted_at IS NULL");

static void format_ms(long long ms, char out[40])
{
    char iso[40];
    crm_format_timestamp(ms, iso);
    snprintf(out, 40, "%s", iso);
}

void crm_segment_count_query(crm_query *q, long long id, long long at_ms)
{
    crm_query_init(q, at_ms ? &count_at : &count_now);
    crm_query_add_int(q, id);
    if (at_ms != 0)
        crm_query_add_int(q, at_ms);
}

char *crm_segment_count_render(const PGresult *res, long long id, long long at_ms, size_t *len,
                               crm_error *err)
{
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no segment with this id");
        return NULL;
    }
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_object(&b);
    crm_jbuf_key(&b, "segment_id");
    crm_jbuf_int(&b, id);
    crm_jbuf_key(&b, "count");
    crm_jbuf_int(&b, atoll(PQgetvalue(res, 0, 0)));
    crm_jbuf_key(&b, "state");
    crm_jbuf_cstring(&b, PQgetvalue(res, 0, 1));
    crm_jbuf_key(&b, "at");
    if (at_ms != 0)
        crm_jbuf_timestamp(&b, at_ms);
    else
        crm_jbuf_null(&b);
    crm_jbuf_end_object(&b);
    char *text = crm_jbuf_take(&b, len);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}

static crm_stmt segment_exists =
    CRM_STMT_RO("segment_exists", "SELECT 1 FROM segments WHERE id = $1 AND deleted_at IS NULL");

static bool require_segment(const char *idbuf, crm_error *err)
{
    const char *params[] = {idbuf};
    PGresult *res = crm_db_run(&segment_exists, 1, params, err);
    if (res == NULL)
        return false;
    bool ok = PQntuples(res) == 1;
    PQclear(res);
    return ok || crm_error_set(err, CRM_E_NOT_FOUND, "no segment with this id");
}

static crm_stmt members_now =
    CRM_STMT_PAGE("segment_members", "SELECT " CRM_CUSTOMER_COLUMNS " FROM segment_memberships m"
                                     " JOIN customers c ON c.id = m.customer_id"
                                     " WHERE m.segment_id = $1 AND m.customer_id > $2::bigint"
                                     " ORDER BY m.customer_id LIMIT $3");

static crm_stmt members_at = CRM_STMT_PAGE(
    "segment_members_at",
    "SELECT " CRM_CUSTOMER_COLUMNS " FROM (" MEMBERS_AT " AND x.customer_id > $3::bigint"
    " ORDER BY x.customer_id, x.at DESC, x.id DESC) m JOIN customers c ON c.id = m.customer_id"
    " WHERE m.entered ORDER BY m.customer_id LIMIT $4");

json_t *crm_segment_customers(long long id, long long at_ms, long long after_id, int limit,
                              long long *next_after, crm_error *err)
{
    *next_after = 0;
    char idbuf[24], at[40] = "", after[24], fetch[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(after, sizeof after, "%lld", after_id);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    if (at_ms != 0)
        format_ms(at_ms, at);
    if (!require_segment(idbuf, err))
        return NULL;
    const char *at_params[] = {idbuf, at, after, fetch};
    const char *now_params[] = {idbuf, after, fetch};
    PGresult *res = at_ms ? crm_db_run(&members_at, 4, at_params, err)
                          : crm_db_run(&members_now, 3, now_params, err);
    if (res == NULL)
        return NULL;
    int n = PQntuples(res), shown = crm_page_shown(n, limit);
    json_t *data = json_array();
    for (int r = 0; r < shown; r++)
        json_array_append_new(data, crm_customer_from_row(res, r, false));
    if (crm_page_has_next(n, limit))
        *next_after = atoll(PQgetvalue(res, shown - 1, CRM_COL_ID));
    PQclear(res);
    return json_pack("{s:o}", "data", data);
}

static crm_stmt changes_page = CRM_STMT_PAGE(
    "segment_changes_page",
    "SELECT id, customer_id, entered, " CRM_SQL_TS(
        "at") ", rule_version, cause, cause_ref"
              " FROM segment_changes WHERE segment_id = $1 AND id > $2::bigint"
              " AND at >= coalesce($3::timestamptz, '-infinity') ORDER BY id LIMIT $4");

json_t *crm_segment_changes(long long id, long long since_ms, long long after_id, int limit,
                            long long *next_after, crm_error *err)
{
    *next_after = 0;
    char idbuf[24], since[40], after[24], fetch[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(after, sizeof after, "%lld", after_id);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    if (since_ms != 0)
        format_ms(since_ms, since);
    if (!require_segment(idbuf, err))
        return NULL;
    const char *params[] = {idbuf, after, since_ms ? since : NULL, fetch};
    PGresult *res = crm_db_run(&changes_page, 4, params, err);
    if (res == NULL)
        return NULL;
    int n = PQntuples(res), shown = crm_page_shown(n, limit);
    json_t *data = json_array();
    for (int r = 0; r < shown; r++)
        json_array_append_new(
            data, json_pack("{s:I, s:I, s:s, s:s, s:I, s:s, s:o}", "id",
                            (json_int_t)atoll(PQgetvalue(res, r, 0)), "customer_id",
                            (json_int_t)atoll(PQgetvalue(res, r, 1)), "change",
                            PQgetvalue(res, r, 2)[0] == 't' ? "entered" : "left", "at",
                            PQgetvalue(res, r, 3), "rule_version",
                            (json_int_t)atoll(PQgetvalue(res, r, 4)), "cause",
                            PQgetvalue(res, r, 5), "cause_ref", text_or_null(res, r, 6)));
    if (crm_page_has_next(n, limit))
        *next_after = atoll(PQgetvalue(res, shown - 1, 0));
    PQclear(res);
    return json_pack("{s:o}", "data", data);
}

/* The history in time order; the cursor is the row's place in it. */
static crm_stmt history_page = CRM_STMT_PAGE(
    "segment_history_page",
    "SELECT n, " CRM_SQL_TS(
        "at") ", size, rule_version, reason FROM ("
              " SELECT row_number() OVER (ORDER BY at, reason) AS n, at, size, rule_version, reason"
              " FROM segment_sizes WHERE segment_id = $1) h WHERE n > $2::bigint ORDER BY n LIMIT "
              "$3");

json_t *crm_segment_history(long long id, long long after, int limit, long long *next_after,
                            crm_error *err)
{
    *next_after = 0;
    char idbuf[24], afterbuf[24], fetch[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(afterbuf, sizeof afterbuf, "%lld", after);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    if (!require_segment(idbuf, err))
        return NULL;
    const char *params[] = {idbuf, afterbuf, fetch};
    PGresult *res = crm_db_run(&history_page, 3, params, err);
    if (res == NULL)
        return NULL;
    int n = PQntuples(res), shown = crm_page_shown(n, limit);
    json_t *data = json_array();
    for (int r = 0; r < shown; r++)
        json_array_append_new(data,
                              json_pack("{s:s, s:I, s:I, s:s}", "at", PQgetvalue(res, r, 1), "size",
                                        (json_int_t)atoll(PQgetvalue(res, r, 2)), "rule_version",
                                        (json_int_t)atoll(PQgetvalue(res, r, 3)), "reason",
                                        PQgetvalue(res, r, 4)));
    if (crm_page_has_next(n, limit))
        *next_after = atoll(PQgetvalue(res, shown - 1, 0));
    PQclear(res);
    return json_pack("{s:o}", "data", data);
}

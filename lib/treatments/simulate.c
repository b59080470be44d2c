/*
 * treatments/simulate.c — a treatment rule tried on the base
 * (treatment_simulate.h): one statement counts the active customers its
 * condition holds for, takes a sample, counts those the other live active
 * rules also hold for, and those whose consent for each of its channels
 * and its purpose is granted. No customer is looked at one by one here.
 */
#include "treatment_simulate.h"
#include "treatments.h"
#include "treatments/rule_def.h"
#include "arena.h"
#include "clock.h"
#include "list/sqlbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The live rules other than $1 whose window holds now, in order of
 * evaluation. */
static crm_stmt others_stmt =
    CRM_STMT_RO("treatment_rule_simulate_others",
                "SELECT id, name, condition::text FROM treatment_rules WHERE deleted_at IS NULL"
                " AND id <> $1::bigint AND (active_from IS NULL OR active_from <= now())"
                " AND (active_until IS NULL OR active_until > now()) ORDER BY position, id");

typedef struct other_rule {
    long long id;
    const char *name; /* in the others' result */
    crm_rule *condition;
} other_rule;

/* What is simulated, borrowed from its definition. */
typedef struct sim_input {
    long long self;
    const crm_rule *condition;
    char *channels; /* the rule's channels as a JSON array (owned) */
    const char *purpose;
} sim_input;

/* The statement (see the file's comment); $1 channels, $2 purpose. */
static bool build(crm_sqlbuf *s, const sim_input *in, const other_rule *o, int n, long long now_ms,
                  crm_arena *arena, crm_error *err)
{
    int pch = crm_sqlbuf_param(s, in->channels), ppur = crm_sqlbuf_param(s, in->purpose);
    char sample[16];
    snprintf(sample, sizeof sample, "%d", CRM_TREATMENT_SAMPLE);
    crm_sqlbuf_append(s, "WITH m AS MATERIALIZED (SELECT c.id FROM customers c"
                         " WHERE c.status = 'active' AND (");
    bool ok = crm_rule_sql(in->condition, s, now_ms, arena, err);
    crm_sqlbuf_append(s, ")) SELECT (SELECT count(*) FROM m),"
                         " (SELECT coalesce(json_agg(x.id ORDER BY x.id), '[]')::text"
                         " FROM (SELECT id FROM m ORDER BY id LIMIT ");
    crm_sqlbuf_append(s, sample);
    crm_sqlbuf_append(s, ") x), (SELECT coalesce(json_agg(json_build_object('channel', ch.name,"
                         " 'count', (SELECT count(*) FROM m WHERE (SELECT cc.status"
                         " FROM customer_consents cc WHERE cc.customer_id = m.id"
                         " AND cc.channel = ch.name AND cc.purpose = ");
    crm_sqlbuf_placeholder(s, ppur);
    crm_sqlbuf_append(s, " ORDER BY cc.captured_at DESC, cc.id DESC LIMIT 1) = 'granted'))"
                         " ORDER BY ch.n), '[]')::text FROM json_array_elements_text(");
    crm_sqlbuf_placeholder(s, pch);
    /* The array leads with count(*): an aggregate, so that the subquery is
     * one row even when there are no other rules. */
    crm_sqlbuf_append(s, "::json) WITH ORDINALITY AS ch(name, n)), (SELECT ARRAY[count(*)");
    for (int i = 0; ok && i < n; i++) {
        crm_sqlbuf_append(s, ", count(*) FILTER (WHERE ");
        ok = crm_rule_sql(o[i].condition, s, now_ms, arena, err);
        crm_sqlbuf_append(s, ")");
    }
    crm_sqlbuf_append(s, "]::bigint[] FROM m JOIN customers c ON c.id = m.id)::text");
    if (ok && !crm_sqlbuf_ok(s))
        ok = crm_error_set(err, CRM_E_INTERNAL, "the simulation's statement could not be built");
    return ok;
}

/* "{3,0,7}" into out[0..n). */
static void parse_counts(const char *text, long long *out, int n)
{
    const char *p = text;
    for (int i = 0; i < n; i++) {
        while (*p != '\0' && (*p < '0' || *p > '9'))
            p++;
        char *end;
        out[i] = strtoll(p, &end, 10);
        p = end;
    }
}

static json_t *render(const PGresult *res, const other_rule *o, int n, crm_error *err)
{
    long long *both = calloc((size_t)n + 1, sizeof *both);
    if (both == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    parse_counts(PQgetvalue(res, 0, 3), both, n + 1); /* both[0]: matched again */
    json_t *overlap = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(overlap,
                              json_pack("{s:I, s:s, s:I}", "rule_id", (json_int_t)o[i].id, "name",
                                        o[i].name, "both", (json_int_t)both[i + 1]));
    free(both);
    json_t *sample = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
    json_t *contactable = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
    json_t *doc =
        json_pack("{s:I, s:o*, s:o, s:o*}", "matched", (json_int_t)atoll(PQgetvalue(res, 0, 0)),
                  "sample", sample, "overlap", overlap, "contactable", contactable);
    if (doc == NULL || sample == NULL || contactable == NULL) {
        json_decref(doc);
        crm_error_set(err, CRM_E_INTERNAL, "the simulation's result could not be read");
        return NULL;
    }
    return doc;
}

/* Runs the simulation of in on c. */
static json_t *simulate_on(crm_conn *c, const sim_input *in, crm_error *err)
{
    char self[24];
    snprintf(self, sizeof self, "%lld", in->self);
    const char *params[] = {self};
    PGresult *others = crm_db_exec(c, &others_stmt, 1, params, err);
    if (others == NULL)
        return NULL;
    int n = PQntuples(others), used = 0;
    other_rule *o = calloc((size_t)n + 1, sizeof *o);
    json_t *doc = NULL;
    if (o == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        PQclear(others);
        return NULL;
    }
    /* A stored condition was checked when written; one the grammar no
     * longer takes is left out rather than failing the simulation. */
    for (int r = 0; r < n; r++) {
        json_t *cond = json_loads(PQgetvalue(others, r, 2), JSON_DECODE_ANY, NULL);
        crm_error perr = CRM_ERROR_INIT;
        crm_rule *rule = cond ? crm_rule_parse(cond, &perr) : NULL;
        crm_error_clear(&perr);
        json_decref(cond);
        if (rule == NULL)
            continue;
        o[used++] = (other_rule){atoll(PQgetvalue(others, r, 0)), PQgetvalue(others, r, 1), rule};
    }
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    if (build(&s, in, o, used, crm_wall_ms(), &arena, err)) {
        PGresult *res = crm_db_exec_sql(c, crm_sqlbuf_text(&s), s.nparams, s.params, err);
        if (res != NULL)
            doc = render(res, o, used, err);
        PQclear(res);
    }
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    for (int i = 0; i < used; i++)
        crm_rule_free(o[i].condition);
    free(o);
    PQclear(others);
    return doc;
}

/* The unsaved rule body, checked as a create is (its name need not be free). */
static json_t *simulate_body(const json_t *body, crm_error *err)
{
    rule_def d;
    json_t *doc = NULL;
    crm_conn *c = NULL;
    if (rule_def_check(body, &d, err) && (c = crm_db_acquire(err)) != NULL &&
        rule_def_check_refs(c, &d, err)) {
        const json_t *t = json_object_get(d.doc, "treatment");
        sim_input in = {0, d.condition, json_dumps(json_object_get(t, "channels"), JSON_COMPACT),
                        json_string_value(json_object_get(t, "purpose"))};
        doc = in.channels ? simulate_on(c, &in, err) : NULL;
        if (in.channels == NULL)
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        free(in.channels);
    }
    crm_db_release(c);
    rule_def_free(&d);
    return doc;
}

static json_t *simulate_stored(long long id, crm_error *err)
{
    json_t *rule = crm_treatment_rule_get(id, err);
    if (rule == NULL)
        return NULL;
    const json_t *t = json_object_get(rule, "treatment");
    crm_rule *cond = crm_rule_parse(json_object_get(rule, "condition"), err);
    sim_input in = {id, cond, json_dumps(json_object_get(t, "channels"), JSON_COMPACT),
                    json_string_value(json_object_get(t, "purpose"))};
    json_t *doc = NULL;
    crm_conn *c = NULL;
    if (cond != NULL && in.channels != NULL && (c = crm_db_acquire(err)) != NULL)
        doc = simulate_on(c, &in, err);
    else if (cond != NULL && in.channels == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_db_release(c);
    free(in.channels);
    crm_rule_free(cond);
    json_decref(rule);
    return doc;
}

json_t *crm_treatment_rule_simulate(long long id, const json_t *body, crm_error *err)
{
    return body != NULL ? simulate_body(body, err) : simulate_stored(id, err);
}

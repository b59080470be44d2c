/*
 * customers/tables.c — the registry of customer-attached tables (see
 * customer_tables.h) and the SQL of each one's merge, erase and export step.
 */
#include "customer_tables.h"
#include "consents.h"
#include "customer_privacy.h"
#include "customers/internal.h"
#include "jbuf.h"
#include "json.h"
#include "touchpoints.h"
#include "segment_store.h"

#include <stdlib.h>
#include <string.h>

#define MS(col) "(extract(epoch FROM " col ") * 1000)::bigint"

/* Runs stmt and collects its first column, JSON text per row, as an array. */
static json_t *exec_json_rows(crm_conn *c, crm_stmt *stmt, int n, const char *const *params,
                              crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, n, params, err);
    if (res == NULL)
        return NULL;
    json_t *rows = json_array();
    for (int r = 0; r < PQntuples(res); r++) {
        json_t *v = crm_json_load_stored(PQgetvalue(res, r, 0));
        if (v != NULL)
            json_array_append_new(rows, v);
    }
    PQclear(res);
    return rows;
}

static bool exec_ok(crm_conn *c, crm_stmt *stmt, int n, const char *const *params, crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, n, params, err);
    PQclear(res);
    return res != NULL;
}

/* Records rows (an array) under name in changes when there are any. */
static void note_moved(json_t *changes, const char *name, json_t *rows)
{
    if (json_array_size(rows) > 0)
        json_object_set_new(changes, name, json_pack("{s:n, s:o}", "from", "to", rows));
    else
        json_decref(rows);
}

static json_t *int_or_null(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? json_null() : json_integer(atoll(PQgetvalue(res, r, c)));
}

/* ---- customer_consents ------------------------------------------------------------ */

/* $1 survivor, $2 every party's id, $3 api key id. Where the parties'
 * current decisions disagree, the survivor gets a 'revoked' one that is
 * newer than all of them. Runs before the history moves, so "current" is
 * still per party. */
static crm_stmt revoke_disagreeing = CRM_STMT(
    "customer_merge_revoke_consents",
    "WITH cur AS ("
    "  SELECT DISTINCT ON (customer_id, channel, purpose) customer_id, channel, purpose, status,"
    "    captured_at FROM customer_consents WHERE customer_id = ANY($2::bigint[])"
    "  ORDER BY customer_id, channel, purpose, captured_at DESC, id DESC), "
    "disagree AS ("
    "  SELECT channel, purpose, max(captured_at) AS latest FROM cur GROUP BY channel, purpose"
    "  HAVING bool_or(status = 'revoked') AND bool_or(status = 'granted')) "
    "INSERT INTO customer_consents"
    "  (customer_id, channel, purpose, status, source, captured_at, api_key_id) "
    "SELECT $1, channel, purpose, 'revoked', 'merge', greatest(now(), latest), $3"
    "  FROM disagree ORDER BY channel, purpose "
    "RETURNING json_build_object('id', id, 'channel', channel, 'purpose', purpose,"
    "  'status', status)::text");

static crm_stmt move_consents =
    CRM_STMT("customer_merge_move_consents",
             "UPDATE customer_consents SET customer_id = $1 WHERE customer_id = ANY($2::bigint[])");

/* The decision stays an anonymous fact; its free-text source could name
 * the person (an agent's note, a form with their address) and goes. */
static crm_stmt erase_consents = CRM_STMT(
    "privacy_erase_consents",
    "UPDATE customer_consents SET source = '" CRM_CONSENT_SOURCE_REDACTED "' "
    "WHERE customer_id = ANY($1::bigint[]) AND source <> '" CRM_CONSENT_SOURCE_REDACTED "'");

static crm_stmt export_consents = CRM_STMT_RO(
    "privacy_export_consents",
    "SELECT id, customer_id, channel, purpose, status, source, " MS("captured_at") ", " MS(
        "recorded_at") " FROM customer_consents WHERE customer_id = ANY($1::bigint[]) ORDER BY id");

static bool merge_consents(const crm_merge_step *m, crm_error *err)
{
    const char *revoke_params[] = {m->survivor, m->parties, m->api_key};
    json_t *revoked = exec_json_rows(m->c, &revoke_disagreeing, 3, revoke_params, err);
    if (revoked == NULL)
        return false;
    note_moved(m->changes, "consents", revoked);
    const char *move_params[] = {m->survivor, m->merged};
    return exec_ok(m->c, &move_consents, 2, move_params, err);
}

static bool erase_consents_step(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    return exec_ok(c, &erase_consents, 1, params, err);
}

/* Where rows are written: out, with a comma before every one but the first. */
typedef struct row_sink {
    FILE *out;
    bool any;
} row_sink;

/* Writes v (stolen); false with err when it could not be written. */
static bool sink_json(row_sink *sink, json_t *v, crm_error *err)
{
    if (sink->any)
        fputc(',', sink->out);
    sink->any = true;
    bool ok = crm_json_fwrite(sink->out, v);
    json_decref(v);
    return ok || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
}

static bool consent_row(const PGresult *res, void *ctx, crm_error *err)
{
    return sink_json(ctx,
                     json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:o, s:o}", "id",
                               (json_int_t)atoll(PQgetvalue(res, 0, 0)), "customer_id",
                               (json_int_t)atoll(PQgetvalue(res, 0, 1)), "channel",
                               PQgetvalue(res, 0, 2), "purpose", PQgetvalue(res, 0, 3), "status",
                               PQgetvalue(res, 0, 4), "source", PQgetvalue(res, 0, 5),
                               "captured_at", crm_json_timestamp(atoll(PQgetvalue(res, 0, 6))),
                               "recorded_at", crm_json_timestamp(atoll(PQgetvalue(res, 0, 7)))),
                     err);
}

static bool export_consents_step(const crm_export_step *x, crm_error *err)
{
    json_t *current = crm_consents_current(x->c, x->target, err);
    if (current == NULL)
        return false;
    fputs(",\"consents\":{\"current\":", x->out);
    row_sink whole = {x->out, false};
    if (!sink_json(&whole, current, err))
        return false;
    fputs(",\"history\":[", x->out);
    row_sink sink = {x->out, false};
    const char *params[] = {x->ids};
    bool ok = crm_db_each_row(x->c, &export_consents, 1, params, consent_row, &sink, err);
    fputs("]}", x->out);
    return ok;
}

/* ---- customer_audit --------------------------------------------------------------- */

static crm_stmt erase_audit = CRM_STMT(
    "privacy_erase_audit", "UPDATE customer_audit SET changes = '" CRM_CUSTOMER_REDACTED_CHANGES
                           "' WHERE customer_id = ANY($1::bigint[])");

static crm_stmt export_audit =
    CRM_STMT_RO("privacy_export_audit",
                "SELECT id, customer_id, " MS(
                    "at") ", api_key_id, action, changes::text "
                          "FROM customer_audit WHERE customer_id = ANY($1::bigint[]) ORDER BY id");

static bool erase_audit_step(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    return exec_ok(c, &erase_audit, 1, params, err);
}

static bool audit_row(const PGresult *res, void *ctx, crm_error *err)
{
    json_t *changes = crm_json_load_stored(PQgetvalue(res, 0, 5));
    return sink_json(ctx,
                     json_pack("{s:I, s:I, s:o, s:o, s:s, s:o}", "id",
                               (json_int_t)atoll(PQgetvalue(res, 0, 0)), "customer_id",
                               (json_int_t)atoll(PQgetvalue(res, 0, 1)), "at",
                               crm_json_timestamp(atoll(PQgetvalue(res, 0, 2))), "api_key_id",
                               int_or_null(res, 0, 3), "action", PQgetvalue(res, 0, 4), "changes",
                               changes ? changes : json_object()),
                     err);
}

static bool export_audit_step(const crm_export_step *x, crm_error *err)
{
    fputs(",\"audit\":[", x->out);
    row_sink sink = {x->out, false};
    const char *params[] = {x->ids};
    bool ok = crm_db_each_row(x->c, &export_audit, 1, params, audit_row, &sink, err);
    fputc(']', x->out);
    return ok;
}

/* ---- touchpoints ------------------------------------------------------------------ */

static bool merge_touchpoints(const crm_merge_step *m, crm_error *err)
{
    return crm_touchpoints_move(m->c, m->survivor, m->merged, err);
}

static bool export_touchpoints_step(const crm_export_step *x, crm_error *err)
{
    fputs(",\"touchpoints\":", x->out);
    return crm_touchpoints_export_write(x->c, x->ids, x->out, err);
}

/* ---- customer_external_ids -------------------------------------------------------- */

static crm_stmt move_external_ids = CRM_STMT(
    "customer_merge_move_external_ids",
    "UPDATE customer_external_ids SET customer_id = $1 WHERE customer_id = ANY($2::bigint[]) "
    "RETURNING json_build_object('source', source, 'id', external_id)::text");

static crm_stmt erase_external_ids =
    CRM_STMT("privacy_erase_external_ids",
             "DELETE FROM customer_external_ids WHERE customer_id = ANY($1::bigint[])");

static bool merge_external_ids(const crm_merge_step *m, crm_error *err)
{
    const char *params[] = {m->survivor, m->merged};
    json_t *moved = exec_json_rows(m->c, &move_external_ids, 2, params, err);
    if (moved == NULL)
        return false;
    note_moved(m->changes, "external_ids", moved);
    return true;
}

static bool erase_external_ids_step(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    return exec_ok(c, &erase_external_ids, 1, params, err);
}

/* ---- idempotency_keys ------------------------------------------------------------- */

/* Responses stored for Idempotency-Key that are about these customers: named
 * by customer_id (0006), or, for responses stored without it, by a Location
 * under /v1/customers/<id>. */
static crm_stmt erase_idempotency = CRM_STMT(
    "privacy_erase_idempotency",
    "DELETE FROM idempotency_keys WHERE customer_id = ANY($1::bigint[]) OR "
    "substring(location FROM '^/v1/customers/([0-9]{1,18})(?:/|$)')::bigint = ANY($1::bigint[])");

static bool erase_idempotency_step(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    return exec_ok(c, &erase_idempotency, 1, params, err);
}

/* ---- customer_metrics, metrics_staging ------------------------------------------- */

/* Derived from the touchpoints: a merged customer's row goes (its history is
 * the survivor's now, and the next recompute counts it there); an erased
 * customer's goes (the models' fits and the base's aggregates keep only
 * anonymous figures). */
static crm_stmt drop_merged_metrics =
    CRM_STMT("customer_merge_drop_metrics",
             "DELETE FROM customer_metrics WHERE customer_id = ANY($1::bigint[])");

static crm_stmt erase_metrics = CRM_STMT(
    "privacy_erase_metrics", "DELETE FROM customer_metrics WHERE customer_id = ANY($1::bigint[])");

static crm_stmt erase_staged_metrics =
    CRM_STMT("privacy_erase_staged_metrics",
             "DELETE FROM metrics_staging WHERE customer_id = ANY($1::bigint[])");

static crm_stmt export_metrics =
    CRM_STMT_RO("privacy_export_metrics",
                "SELECT coalesce(json_agg(row_to_json(m) ORDER BY m.customer_id), '[]')::text"
                " FROM customer_metrics m WHERE m.customer_id = ANY($1::bigint[])");

static bool merge_metrics(const crm_merge_step *m, crm_error *err)
{
    const char *params[] = {m->merged};
    return exec_ok(m->c, &drop_merged_metrics, 1, params, err);
}

static bool erase_metrics_step(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    return exec_ok(c, &erase_metrics, 1, params, err);
}

static bool erase_staged_metrics_step(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    return exec_ok(c, &erase_staged_metrics, 1, params, err);
}

/* Writes ,"member": and the JSON document stmt ($1 the ids) builds. */
static bool export_member(const crm_export_step *x, crm_stmt *stmt, const char *member,
                          crm_error *err)
{
    const char *params[] = {x->ids};
    PGresult *res = crm_db_exec(x->c, stmt, 1, params, err);
    if (res == NULL)
        return false;
    fprintf(x->out, ",\"%s\":%s", member, PQgetvalue(res, 0, 0));
    PQclear(res);
    return true;
}

static bool export_metrics_step(const crm_export_step *x, crm_error *err)
{
    return export_member(x, &export_metrics, "metrics", err);
}

/* ---- customer_lifecycle ----------------------------------------------------------- */

static crm_stmt erase_lifecycle =
    CRM_STMT("privacy_erase_lifecycle",
             "DELETE FROM customer_lifecycle WHERE customer_id = ANY($1::bigint[])");

static crm_stmt export_lifecycle = CRM_STMT_RO(
    "privacy_export_lifecycle",
    "SELECT coalesce(json_agg(json_build_object('customer_id', customer_id, 'stage', stage,"
    " 'previous', previous, 'changed_at', " CRM_SQL_TS(
        "changed_at") ") ORDER BY customer_id, id),"
                      " '[]')::text FROM customer_lifecycle WHERE customer_id = ANY($1::bigint[])");

static bool erase_lifecycle_step(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    return exec_ok(c, &erase_lifecycle, 1, params, err);
}

static bool export_lifecycle_step(const crm_export_step *x, crm_error *err)
{
    return export_member(x, &export_lifecycle, "lifecycle", err);
}

/* ---- the registry ----------------------------------------------------------------- */

/* ---- segment_memberships, segment_flips, segment_changes ----------------------------- */

/* The erased customers are no longer active: refreshing every segment for
 * them moves them out (logged, cause erasure) and drops their flips. */
static bool erase_memberships_step(crm_conn *c, const char *ids, crm_error *err)
{
    return crm_segments_refresh(c, ids, CRM_SEGMENTS_ALL, "erasure", NULL, err);
}

static crm_stmt export_segments = CRM_STMT_RO(
    "privacy_export_segments",
    "SELECT json_build_object('current', (SELECT coalesce(json_agg(json_build_object("
    "'segment_id', segment_id, 'customer_id', customer_id, 'entered_at', " CRM_SQL_TS(
        "entered_at") ") ORDER BY segment_id, customer_id), '[]') FROM segment_memberships"
                      " WHERE customer_id = ANY($1::bigint[])), 'changes', (SELECT "
                      "coalesce(json_agg("
                      "json_build_object('segment_id', segment_id, 'customer_id', customer_id, "
                      "'change',"
                      " CASE WHEN entered THEN 'entered' ELSE 'left' END, 'at', " CRM_SQL_TS(
                          "at") ", 'cause', cause)"
                                " ORDER BY id), '[]') FROM segment_changes WHERE customer_id = "
                                "ANY($1::bigint[])))::text");

static bool export_segments_step(const crm_export_step *x, crm_error *err)
{
    return export_member(x, &export_segments, "segments", err);
}

/* ---- contacts (the log of contact decisions, treatments/contacts.c) ------------------ */

static crm_stmt move_contacts =
    CRM_STMT("customer_merge_move_contacts",
             "UPDATE contacts SET customer_id = $1 WHERE customer_id = ANY($2::bigint[])");

static crm_stmt export_contacts = CRM_STMT_RO(
    "privacy_export_contacts",
    "SELECT coalesce(json_agg(json_build_object('id', id, 'customer_id', customer_id, 'channel',"
    " channel, 'purpose', purpose, 'allowed', allowed, 'reasons', reasons, 'rule_id', rule_id,"
    " 'rule_version', rule_version, 'campaign_id', campaign_id, 'touchpoint_id', touchpoint_id,"
    " 'decided_at', " CRM_SQL_TS(
        "decided_at") ") ORDER BY id), '[]')::text"
                      " FROM contacts WHERE customer_id = ANY($1::bigint[])");

/* The survivor's caps count the merged customers' contacts, as they count
 * their touchpoints (which move too). */
static bool merge_contacts(const crm_merge_step *m, crm_error *err)
{
    const char *params[] = {m->survivor, m->merged};
    return exec_ok(m->c, &move_contacts, 2, params, err);
}

static bool export_contacts_step(const crm_export_step *x, crm_error *err)
{
    return export_member(x, &export_contacts, "contacts", err);
}

/* ---- campaign targets (campaigns/execute.c) ------------------------------------------ */

static crm_stmt export_campaign_targets = CRM_STMT_RO(
    "privacy_export_campaign_targets",
    "SELECT coalesce(json_agg(json_build_object('campaign_id', campaign_id, 'customer_id',"
    " customer_id, 'group', grp, 'state', state, 'reason', reason, 'channel', channel,"
    " 'touchpoint_id', touchpoint_id, 'decided_at', " CRM_SQL_TS(
        "decided_at") ")"
                      " ORDER BY campaign_id, customer_id), '[]')::text"
                      " FROM campaign_targets WHERE customer_id = ANY($1::bigint[])");

static bool export_campaign_targets_step(const crm_export_step *x, crm_error *err)
{
    return export_member(x, &export_campaign_targets, "campaign_targets", err);
}

static crm_stmt export_campaign_responses = CRM_STMT_RO(
    "privacy_export_campaign_responses",
    "SELECT coalesce(json_agg(json_build_object('touchpoint_id', touchpoint_id, 'campaign_id',"
    " campaign_id, 'customer_id', customer_id, 'group', grp, 'type', type, 'revenue', revenue,"
    " 'occurred_at', " CRM_SQL_TS(
        "occurred_at") ") ORDER BY touchpoint_id), '[]')::text"
                       " FROM campaign_responses WHERE customer_id = ANY($1::bigint[])");

static bool export_campaign_responses_step(const crm_export_step *x, crm_error *err)
{
    return export_member(x, &export_campaign_responses, "campaign_responses", err);
}

const crm_customer_table crm_customer_tables[] = {
    {"customer_consents", "customer_id",
     "where the parties' current decisions disagree the survivor gets a newer revocation; "
     "then every decision moves to the survivor",
     "each decision stays as an anonymous fact; its free-text source is redacted",
     "consents.current (the person's state) and consents.history (every decision)", merge_consents,
     erase_consents_step, export_consents_step},
    {"customer_audit", "customer_id",
     "stays with the customer it describes; the merge is audited on the survivor and on each "
     "merged customer",
     "the changes of every row are redacted; the rows stay (who did what, when)",
     "audit: every row of the person's customers", NULL, erase_audit_step, export_audit_step},
    {"touchpoints", "customer_id", "move to the survivor",
     "free text (feedback text, properties) removed; the anonymous rest stays",
     "touchpoints: every touchpoint of the person's customers", merge_touchpoints,
     crm_touchpoints_erase, export_touchpoints_step},
    {"customer_external_ids", "customer_id", "move to the survivor (listed in its audit row)",
     "deleted: an external id names the person",
     "external_ids inside each exported customer (read with the customer rows)", merge_external_ids,
     erase_external_ids_step, NULL},
    {"idempotency_keys", "customer_id", "stay: a stored response replays as it was first answered",
     "deleted, with every stored response whose Location names the customer: they are "
     "copies of its data",
     "not exported: copies of responses whose data the other members already hold", NULL,
     erase_idempotency_step, NULL},
    {"customer_metrics", "customer_id",
     "the merged customers' rows are deleted; the next recompute counts their history for "
     "the survivor",
     "deleted: the fits and the base's aggregates keep only anonymous figures",
     "metrics: the stored rows of the person's customers", merge_metrics, erase_metrics_step,
     export_metrics_step},
    {"metrics_staging", "customer_id",
     "stay: a recompute's working rows, rebuilt by the next one (publication reads the "
     "customers' status)",
     "deleted", "not exported: working rows of a recompute", NULL, erase_staged_metrics_step, NULL},
    {"customer_lifecycle", "customer_id",
     "stay with the customer whose stage they record; the survivor's next computed stage "
     "continues its own history",
     "deleted: a person's stages over time describe the person",
     "lifecycle: every stage change of the person's customers", NULL, erase_lifecycle_step,
     export_lifecycle_step},
    {"customer_search_terms", "customer_id",
     "stay: triggers on customers keep them in step with each customer's columns",
     "removed by the triggers on customers when erasure sets the status to erased",
     "not exported: derived from the customer's own columns", NULL, NULL, NULL},
    {"segment_memberships", "customer_id",
     "after the parties are marked merged, every segment is refreshed for all of them "
     "(customers/merge.c): the merged ones leave (logged, cause merge) and the survivor is "
     "evaluated on its merged data",
     "the erased customers leave every segment (logged, cause erasure)",
     "segments.current: the segments the person's customers are in", NULL, erase_memberships_step,
     export_segments_step},
    {"segment_flips", "customer_id",
     "dropped with the memberships' refresh of the merged customers (no longer active)",
     "dropped with the memberships' refresh (no longer active)",
     "not exported: when a standing may next change, derived from the rules", NULL, NULL, NULL},
    {"segment_changes", "customer_id",
     "stay with the customer they describe: the log is the exact history of who was in a "
     "segment when",
     "stay as anonymous facts (an id whose customer is scrubbed, a segment, a time): the "
     "segments' past sizes stay exact",
     "segments.changes (read with segment_memberships)", NULL, NULL, NULL},
    {"contacts", "customer_id", "move to the survivor: its caps count them, as its touchpoints",
     "stay as anonymous facts (a channel, a purpose, a rule, a time, the decision): they hold "
     "no free text of the person, and the policies' past counts stay exact",
     "contacts: every contact decision about the person's customers", merge_contacts, NULL,
     export_contacts_step},
    {"campaign_targets", "customer_id",
     "stay with the customer each names: who a campaign targeted, in which group, and what "
     "it decided, is a fact of that campaign (its results count each target once)",
     "stay as anonymous facts (a campaign, a group, a decision, a time): a campaign's "
     "results stay exact",
     "campaign_targets: every campaign that targeted the person's customers", NULL, NULL,
     export_campaign_targets_step},
    {"campaign_audience", "customer_ids",
     "stay as taken: the ids of an audience still to be decided; a customer merged since is "
     "decided as it is then (no longer active: excluded), the survivor not in its place",
     "stay as bare ids until decided (they hold nothing of the person); the decision then "
     "excludes the erased customer as not active",
     "not exported: the ids leave when their chunk is decided, and the targets then written "
     "are",
     NULL, NULL, NULL},
    {"campaign_responses", "customer_id",
     "stay with the customer each names: a response is attributed once, to the target that "
     "made it, and a campaign's results count it there",
     "stay as anonymous facts (a touchpoint, a campaign, a group, an amount, a time): a "
     "campaign's results stay exact",
     "campaign_responses: every response of the person's customers attributed to a campaign", NULL,
     NULL, export_campaign_responses_step},
};

const size_t crm_customer_tables_count = sizeof crm_customer_tables / sizeof crm_customer_tables[0];

const crm_customer_table *crm_customer_table_find(const char *table)
{
    for (size_t i = 0; i < crm_customer_tables_count; i++)
        if (strcmp(crm_customer_tables[i].name, table) == 0)
            return &crm_customer_tables[i];
    return NULL;
}

/*
 * consents.c — consent decisions per channel and purpose: validating them,
 * recording them (set-based, with an audit row) and reading the current
 * state and the history. See consents.h for the rules.
 */
#include "consents.h"
#include "segment_store.h"
#include "segments.h"
#include "clock.h"
#include "customers.h"
#include "customers/internal.h"
#include "jbuf.h"
#include "json.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const crm_consent_channels[] = {"email", "sms", "phone",  "mail",
                                            "push",  "web", "in_app", NULL};
const char *const crm_consent_purposes[] = {"marketing", "service",     "profiling",
                                            "analytics", "third_party", NULL};
const char *const crm_consent_statuses[] = {"granted", "revoked", NULL};

bool crm_consent_channel_known(const char *channel)
{
    return crm_one_of(channel, crm_consent_channels);
}

bool crm_consent_purpose_known(const char *purpose)
{
    return crm_one_of(purpose, crm_consent_purposes);
}

/* ---- timestamps ------------------------------------------------------- */

bool crm_consent_parse_time(const char *s, long long *epoch_ms)
{
    /* Consent captured before 1970 is a typing mistake, not history; a leap
     * second is refused rather than moved (when a decision was made must be
     * exact). The seconds are at s[17..18] of any valid date-time. */
    return crm_rfc3339_epoch_ms(s, epoch_ms) && *epoch_ms >= 0 && strncmp(s + 17, "60", 2) != 0;
}

/* ---- validation ------------------------------------------------------- */

/* Code points in valid UTF-8 (Jansson only hands out valid UTF-8). */
static size_t utf8_length(const char *s, size_t bytes)
{
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* Adds the error for member `key` of the decision at base. */
static void field_error(crm_error *err, const char *base, const char *key, const char *message)
{
    char field[CRM_JSON_POINTER_MAX];
    crm_json_pointer_append(field, sizeof field, base, key);
    crm_error_add_field(err, field, message);
}

/* A string member that must be one of list; returns it or NULL (error added). */
static const char *enum_member(json_t *d, const char *base, const char *key,
                               const char *const *list, const char *message, crm_error *err)
{
    json_t *v = json_object_get(d, key);
    const char *s = json_string_value(v);
    if (s != NULL && strlen(s) == json_string_length(v) && crm_one_of(s, list))
        return s;
    field_error(err, base, key, message);
    return NULL;
}

/* Checks one decision at JSON pointer base; on success appends its
 * normalized form to out. Errors are added to err. */
static void validate_decision(json_t *d, const char *base, long long now_ms, json_t *out,
                              crm_error *err)
{
    static const char *const allowed[] = {"channel", "purpose",     "status",
                                          "source",  "captured_at", NULL};
    if (!json_is_object(d)) {
        crm_error_add_field(err, base[0] ? base : "/", "must be an object");
        return;
    }
    size_t errors_before = json_array_size(err->errors);
    const char *key;
    json_t *value;
    json_object_foreach(d, key, value)
    {
        if (!crm_one_of(key, allowed))
            field_error(err, base, key, "unknown field");
    }
    const char *channel = enum_member(d, base, "channel", crm_consent_channels,
                                      "required, one of email, sms, phone, mail, push, web, "
                                      "in_app",
                                      err);
    const char *purpose = enum_member(d, base, "purpose", crm_consent_purposes,
                                      "required, one of marketing, service, profiling, "
                                      "analytics, third_party",
                                      err);
    const char *status = enum_member(d, base, "status", crm_consent_statuses,
                                     "required, 'granted' or 'revoked'", err);

    json_t *jsource = json_object_get(d, "source");
    const char *source = json_string_value(jsource);
    if (source == NULL) {
        field_error(err, base, "source", "required, a string");
    } else {
        size_t bytes = json_string_length(jsource);
        size_t chars = utf8_length(source, bytes);
        if (strlen(source) != bytes || chars < 1 || chars > CRM_CONSENT_SOURCE_MAX) {
            field_error(err, base, "source", "must be 1 to 100 characters, without NUL characters");
            source = NULL;
        }
    }

    json_t *jcaptured = json_object_get(d, "captured_at");
    json_t *captured_ms = json_null();
    if (jcaptured != NULL && !json_is_null(jcaptured)) {
        const char *text = json_string_value(jcaptured);
        long long ms = 0;
        if (text == NULL || strlen(text) != json_string_length(jcaptured) ||
            !crm_consent_parse_time(text, &ms))
            field_error(err, base, "captured_at",
                        "must be an RFC 3339 date-time from 1970 on, e.g. 2026-11-23T10:15:00Z");
        else if (ms > now_ms + CRM_CONSENT_MAX_FUTURE_MS)
            field_error(err, base, "captured_at", "must not be more than 5 minutes in the future");
        else
            captured_ms = json_integer(ms);
    }
    if (json_array_size(err->errors) != errors_before || !channel || !purpose || !status ||
        !source) {
        json_decref(captured_ms);
        return;
    }
    json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:o}", "channel", channel, "purpose",
                                         purpose, "status", status, "source", source, "captured_ms",
                                         captured_ms));
}

json_t *crm_consents_validate(json_t *body, long long now_ms, crm_error *err)
{
    crm_error local = CRM_ERROR_INIT; /* validation needs somewhere to collect fields */
    crm_error *e = err ? err : &local;
    if (!json_is_object(body)) {
        crm_error_set(e, CRM_E_INVALID, "the body must be a JSON object");
        crm_error_clear(&local);
        return NULL;
    }
    json_t *out = json_array();
    json_t *batch = json_object_get(body, "consents");
    if (batch == NULL) {
        validate_decision(body, "", now_ms, out, e);
    } else {
        const char *key;
        json_t *value;
        json_object_foreach(body, key, value)
        {
            if (strcmp(key, "consents") != 0)
                field_error(e, "", key, "unknown field");
        }
        if (!json_is_array(batch) || json_array_size(batch) == 0 ||
            json_array_size(batch) > CRM_CONSENTS_MAX_BATCH) {
            crm_error_add_field(e, "/consents", "must be an array of 1 to 100 decisions");
        } else {
            size_t i;
            json_t *d;
            json_array_foreach(batch, i, d)
            {
                char base[32];
                snprintf(base, sizeof base, "/consents/%zu", i);
                validate_decision(d, base, now_ms, out, e);
            }
        }
    }
    if (e->errors != NULL) {
        json_decref(out);
        crm_error_set(e, CRM_E_INVALID, "the consent decisions are not valid");
        crm_error_clear(&local);
        return NULL;
    }
    return out;
}

/* ---- statements ------------------------------------------------------- */

/* Epoch milliseconds of the timestamps; they are formatted in C. */
#define CAPTURED_MS " (extract(epoch FROM captured_at) * 1000)::bigint "
#define RECORDED_MS " (extract(epoch FROM recorded_at) * 1000)::bigint "


/* Resolves and share-locks the customer, so that a concurrent merge, delete
 * or erase waits for the decisions (or they see its outcome and get 404). */
static crm_stmt lock_customer =
    CRM_STMT("consents_lock_customer",
             CRM_SQL_RESOLVE_CUSTOMER " " "SELECT c.id FROM customers c "
                              "WHERE c.id = (SELECT id FROM target) AND c.status = 'active' "
                              "FOR SHARE OF c");

/* $1 customer, $2 jsonb array of validated decisions, $3 api key id. Rows
 * get ids in the order of the array; one audit row lists them all. */
static crm_stmt insert_decisions = CRM_STMT(
    "consents_insert",
    "WITH ins AS ("
    "  INSERT INTO customer_consents"
    "    (customer_id, channel, purpose, status, source, captured_at, api_key_id)"
    "  SELECT $1, e.d->>'channel', e.d->>'purpose', e.d->>'status', e.d->>'source',"
    "    coalesce(timestamptz 'epoch' + (e.d->>'captured_ms')::bigint * interval '1 millisecond',"
    "             now()), $3"
    "  FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS e(d, ord)"
    "  ORDER BY e.ord"
    "  RETURNING id, channel, purpose, status, source, captured_at, recorded_at), "
    "audit AS ("
    "  INSERT INTO customer_audit (customer_id, api_key_id, action, changes)"
    "  SELECT $1, $3, 'consent', jsonb_build_object('consents', jsonb_agg(jsonb_build_object("
    "    'id', id, 'channel', channel, 'purpose', purpose, 'status', status,"
    "    'source', source, 'captured_at', captured_at) ORDER BY id))"
    "  FROM ins) "
    "SELECT id, channel, purpose, status, source, " CAPTURED_MS ", " RECORDED_MS
    " FROM ins ORDER BY id");

static crm_stmt select_current = CRM_STMT_RO(
    "consents_current",
    "SELECT DISTINCT ON (channel, purpose) channel, purpose, status, source, " CAPTURED_MS
    " FROM customer_consents WHERE customer_id = $1"
    " ORDER BY channel, purpose, captured_at DESC, id DESC");

/* One snapshot, one round trip: part 0 is the resolved customer (no row:
 * none), part 1 the current state, part 2 a page of history. Columns: part,
 * id, channel, purpose, status, source, captured_ms, recorded_ms, sort_key. */
static crm_stmt select_consents =
    CRM_STMT_RO("consents_get", CRM_SQL_RESOLVE_CUSTOMER " "
                "SELECT 0 AS part, id, NULL::text AS channel, NULL::text AS purpose,"
                "  NULL::text AS status, NULL::text AS source,"
                "  NULL::bigint AS captured_ms, NULL::bigint AS recorded_ms, 0::bigint AS sort_key"
                " FROM target "
                "UNION ALL "
                "SELECT 1, cur.*, 0 FROM ("
                "  SELECT DISTINCT ON (channel, purpose)"
                "    id, channel, purpose, status, source," CAPTURED_MS "," RECORDED_MS
                "  FROM customer_consents WHERE customer_id = (SELECT id FROM target)"
                "  ORDER BY channel, purpose, captured_at DESC, id DESC) cur "
                "UNION ALL "
                "SELECT 2, hist.*, -hist.id FROM ("
                "  SELECT id, channel, purpose, status, source," CAPTURED_MS "," RECORDED_MS
                "  FROM customer_consents WHERE customer_id = (SELECT id FROM target) AND id < $2"
                "  ORDER BY id DESC LIMIT $3) hist "
                "ORDER BY part, sort_key, channel, purpose");

static crm_stmt select_allows =
    CRM_STMT_RO("consents_allows",
                CRM_SQL_RESOLVE_CUSTOMER " " "SELECT status FROM customer_consents"
                                 " WHERE customer_id = (SELECT id FROM target) AND channel = $2"
                                 " AND purpose = $3 ORDER BY captured_at DESC, id DESC LIMIT 1");

/* ---- rows to JSON ----------------------------------------------------- */

/* {"channel","purpose","status","source","captured_at"} from columns c.. of row r. */
static json_t *state_from_row(const PGresult *res, int r, int c)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:o}", "channel", PQgetvalue(res, r, c), "purpose",
                     PQgetvalue(res, r, c + 1), "status", PQgetvalue(res, r, c + 2), "source",
                     PQgetvalue(res, r, c + 3), "captured_at",
                     crm_json_timestamp(atoll(PQgetvalue(res, r, c + 4))));
}

/* A history entry from columns c.. (id, channel, ..., captured_ms, recorded_ms). */
static json_t *entry_from_row(const PGresult *res, int r, int c)
{
    json_t *e = state_from_row(res, r, c + 1);
    json_object_set_new(e, "id", json_integer(atoll(PQgetvalue(res, r, c))));
    json_object_set_new(e, "recorded_at", crm_json_timestamp(atoll(PQgetvalue(res, r, c + 6))));
    return e;
}

/* ---- reading ---------------------------------------------------------- */

json_t *crm_consents_current(crm_conn *conn, long long customer_id, crm_error *err)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", customer_id);
    const char *params[] = {idbuf};
    PGresult *res = crm_db_exec(conn, &select_current, 1, params, err);
    if (res == NULL)
        return NULL;
    json_t *out = json_array();
    for (int r = 0; r < PQntuples(res); r++)
        json_array_append_new(out, state_from_row(res, r, 0));
    PQclear(res);
    return out;
}

void crm_consents_get_query(crm_query *q, long long customer_id, long long before_id, int limit)
{
    if (limit < 1)
        limit = 1;
    crm_query_init(q, &select_consents);
    crm_query_add_int(q, customer_id);
    crm_query_add_int(q, before_id > 0 ? before_id : LLONG_MAX);
    crm_query_add_int(q, (long long)limit + 1); /* one more tells whether a next page exists */
}

json_t *crm_consents_get_decode(const PGresult *res, long long customer_id, int limit,
                                long long *next_before, crm_error *err)
{
    if (limit < 1)
        limit = 1;
    *next_before = 0;
    int n = PQntuples(res);
    if (n == 0 || atoi(PQgetvalue(res, 0, 0)) != 0) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with id %lld", customer_id);
        return NULL;
    }
    json_t *current = json_array();
    json_t *history = json_array();
    int shown = 0;
    for (int r = 1; r < n; r++) {
        if (atoi(PQgetvalue(res, r, 0)) == 1) {
            json_array_append_new(current, state_from_row(res, r, 2));
        } else if (shown < limit) {
            json_array_append_new(history, entry_from_row(res, r, 1));
            shown++;
        } else {
            *next_before = json_integer_value(
                json_object_get(json_array_get(history, (size_t)shown - 1), "id"));
            break;
        }
    }
    return json_pack("{s:I, s:o, s:o}", "customer_id", (json_int_t)atoll(PQgetvalue(res, 0, 1)),
                     "current", current, "history", history);
}

json_t *crm_consents_get(long long customer_id, long long before_id, int limit,
                         long long *next_before, crm_error *err)
{
    crm_query q;
    crm_consents_get_query(&q, customer_id, before_id, limit);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    json_t *out = crm_consents_get_decode(res, customer_id, limit, next_before, err);
    PQclear(res);
    return out;
}

bool crm_consents_allows(crm_conn *conn, long long customer_id, const char *channel,
                         const char *purpose, bool *allowed, crm_error *err)
{
    *allowed = false;
    if (!crm_consent_channel_known(channel) || !crm_consent_purpose_known(purpose))
        return crm_error_set(err, CRM_E_INVALID, "unknown consent channel or purpose");
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", customer_id);
    const char *params[] = {idbuf, channel, purpose};
    PGresult *res = crm_db_exec(conn, &select_allows, 3, params, err);
    if (res == NULL)
        return false;
    *allowed = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "granted") == 0;
    PQclear(res);
    return true;
}

/* ---- recording -------------------------------------------------------- */

/* Inside a transaction on conn: locks the customer, stores decisions (a JSON
 * array text) and builds the response. NULL with err set on failure. */
static json_t *record_locked(crm_conn *conn, long long customer_id, const char *decisions,
                             long long api_key_id, crm_error *err)
{
    char idbuf[24], keybuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", customer_id);
    snprintf(keybuf, sizeof keybuf, "%lld", api_key_id);
    const char *lock_params[] = {idbuf};
    PGresult *res = crm_db_exec(conn, &lock_customer, 1, lock_params, err);
    if (res == NULL)
        return NULL;
    bool found = PQntuples(res) == 1;
    long long target = found ? atoll(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    if (!found) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with id %lld", customer_id);
        return NULL;
    }

    snprintf(idbuf, sizeof idbuf, "%lld", target);
    const char *params[] = {idbuf, decisions, api_key_id > 0 ? keybuf : NULL};
    res = crm_db_exec(conn, &insert_decisions, 3, params, err);
    if (res == NULL)
        return NULL;
    json_t *recorded = json_array();
    for (int r = 0; r < PQntuples(res); r++)
        json_array_append_new(recorded, entry_from_row(res, r, 0));
    PQclear(res);

    char ids[32];
    snprintf(ids, sizeof ids, "{%lld}", target);
    json_t *current = crm_segments_refresh(conn, ids, CRM_RULE_READS_CONSENT, "consent", NULL, err)
                          ? crm_consents_current(conn, target, err)
                          : NULL;
    if (current == NULL) {
        json_decref(recorded);
        return NULL;
    }
    return json_pack("{s:I, s:o, s:o}", "customer_id", (json_int_t)target, "current", current,
                     "recorded", recorded);
}

json_t *crm_consents_record(long long customer_id, json_t *body, long long api_key_id,
                            crm_error *err)
{
    json_t *decisions = crm_consents_validate(body, crm_wall_ms(), err);
    if (decisions == NULL)
        return NULL;
    char *text = json_dumps(decisions, JSON_COMPACT);
    json_decref(decisions);
    if (text == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    json_t *out = NULL;
    crm_conn *conn = crm_db_acquire(err);
    if (conn != NULL && crm_db_begin(conn, err)) {
        out = record_locked(conn, customer_id, text, api_key_id, err);
        if (out != NULL && !crm_db_commit(conn, err)) {
            json_decref(out);
            out = NULL;
        }
        if (out == NULL)
            crm_db_rollback(conn);
    }
    crm_db_release(conn);
    free(text);
    return out;
}

/* Claims key for the request (customer_id, canonical body) on conn; see
 * crm_idempotency_claim. */
static bool claim_key(crm_conn *conn, long long customer_id, json_t *body, long long api_key_id,
                      const char *key, crm_idem_response *stored, bool *replay, crm_error *err)
{
    char *canonical = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    if (canonical == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    char path[64];
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", customer_id);
    unsigned char hash[CRM_IDEMPOTENCY_HASH_BYTES];
    crm_idempotency_hash("POST", path, canonical, strlen(canonical), hash);
    free(canonical);
    return crm_idempotency_claim(conn, api_key_id, key, hash, stored, replay, err);
}

/* Records and renders into out inside the transaction on conn. */
static bool record_rendered(crm_conn *conn, long long customer_id, const char *decisions,
                            long long api_key_id, crm_idem_response *out, crm_error *err)
{
    json_t *doc = record_locked(conn, customer_id, decisions, api_key_id, err);
    if (doc == NULL)
        return false;
    out->status = 201;
    out->customer_id = json_integer_value(json_object_get(doc, "customer_id"));
    out->body = crm_json_text(doc, NULL);
    json_decref(doc);
    if (out->body == NULL ||
        asprintf(&out->location, "/v1/customers/%lld/consents", out->customer_id) < 0) {
        out->location = NULL;
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    return true;
}

static bool record_keyed_in_tx(crm_conn *conn, long long customer_id, json_t *body,
                               const char *decisions, long long api_key_id, const char *key,
                               crm_idem_response *out, bool *replayed, crm_error *err)
{
    if (key != NULL) {
        if (!claim_key(conn, customer_id, body, api_key_id, key, out, replayed, err))
            return false;
        if (*replayed)
            return true;
    }
    if (!record_rendered(conn, customer_id, decisions, api_key_id, out, err))
        return false;
    return key == NULL || crm_idempotency_store(conn, api_key_id, key, out, err);
}

bool crm_consents_record_keyed(long long customer_id, json_t *body, long long api_key_id,
                               const char *idempotency_key, crm_idem_response *out,
                               bool *replayed, crm_error *err)
{
    memset(out, 0, sizeof *out);
    *replayed = false;
    json_t *decisions = crm_consents_validate(body, crm_wall_ms(), err);
    if (decisions == NULL)
        return false;
    char *text = json_dumps(decisions, JSON_COMPACT);
    json_decref(decisions);
    if (text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = false;
    crm_conn *conn = crm_db_acquire(err);
    if (conn != NULL && crm_db_begin(conn, err)) {
        ok = record_keyed_in_tx(conn, customer_id, body, text, api_key_id, idempotency_key, out,
                                replayed, err) &&
             crm_db_commit(conn, err);
        if (!ok)
            crm_db_rollback(conn);
    }
    crm_db_release(conn);
    free(text);
    if (!ok)
        crm_idem_response_free(out);
    return ok;
}

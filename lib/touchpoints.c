/*
 * touchpoints.c — recording touchpoints (one or a batch), reading one, and a
 * customer's timeline.
 *
 * A batch is one transaction of a fixed number of statements, whatever its
 * size: the customer references are resolved three at a time (ids,
 * external ids, e-mails: one statement each), the customers that items may
 * create are made by one statement, the ids that name a customer no longer
 * active are found by one, and the touchpoints go in by one COPY, as fast
 * as PostgreSQL takes rows. Rows are copied in (source, event_id) order, so
 * two batches that share events wait for each other instead of
 * deadlocking. When an event was stored before (a batch sent again) or a
 * customer id names nobody, the COPY fails; it is undone to a savepoint and
 * the rows go in by INSERT ... SELECT FROM json_to_recordset ... ON
 * CONFLICT DO NOTHING, which skips them. A crmd that dies mid-batch leaves
 * nothing: the transaction never committed, and sending the batch again
 * stores it.
 */
#include "touchpoints.h"
#include "auth.h"
#include "clock.h"
#include "copytext.h"
#include "customers/internal.h"
#include "jbuf.h"
#include "json.h"
#include "list/cursor.h"
#include "list/page.h"
#include "log.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const crm_touchpoint_channels[] = {"web",   "mobile_app",  "email",  "sms",
                                               "phone", "call_centre", "store",  "sales_visit",
                                               "mail",  "partner",     "social", NULL};

const char *const crm_touchpoint_types[] = {"purchase",
                                            "refund",
                                            "visit",
                                            "page_view",
                                            "call",
                                            "email_sent",
                                            "email_opened",
                                            "email_clicked",
                                            "sms_sent",
                                            "push_sent",
                                            "campaign_contact",
                                            "campaign_response",
                                            "feedback",
                                            "service_case",
                                            "meeting",
                                            "note",
                                            "signup",
                                            "other",
                                            NULL};

static const char *const directions[] = {"inbound", "outbound", NULL};
static const char *const feedback_kinds[] = {"idea", "complaint", "praise", "question", NULL};

/* ISO 4217 codes in use (2024), for amounts. */
static const char *const currencies[] = {
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG", NULL};

/* For the test that the allow-lists equal the schema's CHECK constraints. */
const char *const *const crm_touchpoint_directions = directions;
const char *const *const crm_touchpoint_currencies = currencies;

static atomic_int future_tolerance_s = 300;

void crm_touchpoint_set_future_tolerance(int seconds)
{
    atomic_store(&future_tolerance_s, seconds < 0 ? 0 : seconds);
}

/* ---- the representation ------------------------------------------------------ */

#define TP_COLUMNS                                                                                 \
    "t.id, t.customer_id, t.channel, t.type, t.direction, "                                        \
    "(date_part('epoch', t.occurred_at) * 1000)::bigint, "                                         \
    "(date_part('epoch', t.received_at) * 1000)::bigint, t.source, t.event_id, t.campaign_id, "    \
    "t.amount::text, t.currency, t.items::text, t.feedback::text, t.properties::text, t.erased"
#define TP_NCOLUMNS 16

static void write_column(crm_jbuf *b, const PGresult *res, int r, int c, bool json)
{
    if (PQgetisnull(res, r, c))
        crm_jbuf_null(b);
    else if (json)
        crm_jbuf_raw(b, PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
    else
        crm_jbuf_string(b, PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
}

/* Writes the touchpoint whose TP_COLUMNS start at column c0 of row r. */
static void write_touchpoint(crm_jbuf *b, const PGresult *res, int r, int c0)
{
    static const struct {
        const char *name;
        char kind; /* j: JSON or a number as PostgreSQL prints it, s: string, t: time, b: bool */
    } cols[TP_NCOLUMNS] = {
        {"id", 'j'},        {"customer_id", 'j'}, {"channel", 's'},     {"type", 's'},
        {"direction", 's'}, {"occurred_at", 't'}, {"received_at", 't'}, {"source", 's'},
        {"event_id", 's'},  {"campaign_id", 's'}, {"amount", 'j'},      {"currency", 's'},
        {"items", 'j'},     {"feedback", 'j'},    {"properties", 'j'},  {"erased", 'b'},
    };
    crm_jbuf_begin_object(b);
    for (int i = 0; i < TP_NCOLUMNS; i++) {
        crm_jbuf_key(b, cols[i].name);
        int c = c0 + i;
        if (cols[i].kind == 't' && !PQgetisnull(res, r, c))
            crm_jbuf_timestamp(b, atoll(PQgetvalue(res, r, c)));
        else if (cols[i].kind == 'b')
            crm_jbuf_bool(b, PQgetvalue(res, r, c)[0] == 't');
        else
            write_column(b, res, r, c, cols[i].kind == 'j');
    }
    crm_jbuf_end_object(b);
}

const char *crm_touchpoint_columns(int *ncolumns)
{
    *ncolumns = TP_NCOLUMNS;
    return TP_COLUMNS;
}

void crm_touchpoint_write(crm_jbuf *b, const PGresult *res, int r, int c0)
{
    write_touchpoint(b, res, r, c0);
}

/* ---- validating an item ------------------------------------------------------ */

typedef enum { REF_NONE, REF_ID, REF_EXTERNAL, REF_EMAIL } ref_kind;

typedef struct tp_item {
    json_t *doc; /* borrowed from the request */
    crm_tp_status status;
    crm_error errors; /* why it was rejected (field errors) */
    ref_kind ref;
    long long ref_id;
    const char *ref_source, *ref_external_id, *ref_email;
    char email_normalized[CRM_CUSTOMER_EMAIL_MAX * 4 + 8];
    bool create_customer;
    long long customer_id; /* resolved */
    const char *source, *event_id;
    char occurred_at[CRM_RFC3339_UTC_SIZE]; /* in UTC: what goes to SQL */
    int first;    /* for an in-batch duplicate: the index of the first */
    long long id; /* the touchpoint stored, or the one already there */
    long long copy_id; /* the id copy_pending took for it */
} tp_item;

static bool text_ok(json_t *doc, const char *name, size_t max, bool required, tp_item *it)
{
    json_t *v = json_object_get(doc, name);
    char field[64];
    snprintf(field, sizeof field, "/%s", name);
    if (v == NULL || json_is_null(v)) {
        if (required)
            crm_error_add_field(&it->errors, field, "is required");
        return !required;
    }
    size_t chars =
        json_is_string(v) ? crm_utf8_chars(json_string_value(v), json_string_length(v)) : 0;
    if (!json_is_string(v) || chars == 0 || chars > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be a string of 1 to %zu characters", max);
        crm_error_add_field(&it->errors, field, msg);
        return false;
    }
    return true;
}

static void check_listed(json_t *doc, const char *name, const char *const *list, tp_item *it)
{
    if (!text_ok(doc, name, 100, true, it))
        return;
    if (!crm_one_of(json_string_value(json_object_get(doc, name)), list)) {
        char field[64], msg[96];
        snprintf(field, sizeof field, "/%s", name);
        snprintf(msg, sizeof msg, "not a known %s (see the API documentation for the list)", name);
        crm_error_add_field(&it->errors, field, msg);
    }
}

static void check_reference(json_t *doc, tp_item *it)
{
    json_t *id = json_object_get(doc, "customer_id"),
           *ext = json_object_get(doc, "customer_external_id"),
           *email = json_object_get(doc, "customer_email"),
           *create = json_object_get(doc, "create_customer");
    int named = (id != NULL) + (ext != NULL) + (email != NULL);
    if (named != 1) {
        crm_error_add_field(&it->errors, "/customer_id",
                            "name the customer by exactly one of customer_id, customer_external_id "
                            "and customer_email");
        return;
    }
    if (create != NULL && !json_is_boolean(create))
        crm_error_add_field(&it->errors, "/create_customer", "must be true or false");
    it->create_customer = json_is_true(create);
    if (id != NULL) {
        it->ref = REF_ID;
        if (!json_is_integer(id) || json_integer_value(id) < 1)
            crm_error_add_field(&it->errors, "/customer_id", "must be a customer id");
        if (it->create_customer)
            crm_error_add_field(&it->errors, "/create_customer",
                                "only with customer_external_id or customer_email");
        it->ref_id = json_integer_value(id);
    } else if (ext != NULL) {
        it->ref = REF_EXTERNAL;
        json_t *s = json_object_get(ext, "source"), *x = json_object_get(ext, "id");
        crm_error e = CRM_ERROR_INIT;
        if (!json_is_object(ext) || json_object_size(ext) != 2 || !json_is_string(s) ||
            !json_is_string(x) ||
            !crm_external_id_valid(json_string_value(s), json_string_value(x), &e))
            crm_error_add_field(
                &it->errors, "/customer_external_id",
                "must be {\"source\": ..., \"id\": ...}: a source of 1 to 100 and an "
                "id of 1 to 500 characters");
        crm_error_clear(&e);
        it->ref_source = json_string_value(s);
        it->ref_external_id = json_string_value(x);
    } else {
        it->ref = REF_EMAIL;
        if (!json_is_string(email) || json_string_length(email) > CRM_CUSTOMER_EMAIL_MAX * 4 ||
            !crm_email_valid(json_string_value(email))) {
            crm_error_add_field(&it->errors, "/customer_email", "must be an e-mail address");
        } else {
            it->ref_email = json_string_value(email);
            crm_email_normalize(it->ref_email, it->email_normalized, sizeof it->email_normalized);
        }
    }
}

static bool number_ok(json_t *v, double min, double max)
{
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    return isfinite(d) && d >= min && d <= max;
}

static void check_items(json_t *items, const char *type, tp_item *it)
{
    if (items == NULL || json_is_null(items))
        return;
    if (strcmp(type, "purchase") != 0 && strcmp(type, "refund") != 0) {
        crm_error_add_field(&it->errors, "/items", "only a purchase or a refund has items");
        return;
    }
    if (!json_is_array(items) || json_array_size(items) > CRM_TOUCHPOINT_ITEMS_MAX) {
        crm_error_add_field(&it->errors, "/items", "must be an array of at most 200 items");
        return;
    }
    size_t i;
    json_t *line;
    json_array_foreach(items, i, line)
    {
        static const char *const allowed[] = {"sku", "name", "quantity", "unit_price", NULL};
        char field[64];
        snprintf(field, sizeof field, "/items/%zu", i);
        json_t *sku = json_object_get(line, "sku"), *name = json_object_get(line, "name"),
               *qty = json_object_get(line, "quantity"),
               *price = json_object_get(line, "unit_price");
        crm_error e = CRM_ERROR_INIT;
        bool ok = json_is_object(line) && crm_json_only_fields(line, allowed, &e) &&
                  json_is_string(sku) && json_string_length(sku) >= 1 &&
                  crm_utf8_chars(json_string_value(sku), json_string_length(sku)) <= 100 &&
                  (name == NULL ||
                   (json_is_string(name) &&
                    crm_utf8_chars(json_string_value(name), json_string_length(name)) <= 200)) &&
                  json_is_integer(qty) && json_integer_value(qty) >= 1 &&
                  json_integer_value(qty) <= 1000000 &&
                  (price == NULL || number_ok(price, 0, 1e12));
        crm_error_clear(&e);
        if (!ok)
            crm_error_add_field(&it->errors, field,
                                "must be {\"sku\", \"name\"?, \"quantity\" (1 or more), "
                                "\"unit_price\"? (0 or more)} and nothing else");
    }
}

static void check_feedback(json_t *fb, const char *type, tp_item *it)
{
    bool is_feedback = strcmp(type, "feedback") == 0;
    if (fb == NULL || json_is_null(fb)) {
        if (is_feedback)
            crm_error_add_field(&it->errors, "/feedback", "a feedback touchpoint needs it");
        return;
    }
    if (!is_feedback) {
        crm_error_add_field(&it->errors, "/feedback", "only a feedback touchpoint has it");
        return;
    }
    static const char *const allowed[] = {"score", "scale", "kind", "text", NULL};
    crm_error e = CRM_ERROR_INIT;
    if (!json_is_object(fb) || !crm_json_only_fields(fb, allowed, &e)) {
        crm_error_clear(&e);
        crm_error_add_field(&it->errors, "/feedback",
                            "must be an object of score, scale, kind and text");
        return;
    }
    json_t *score = json_object_get(fb, "score"), *scale = json_object_get(fb, "scale"),
           *kind = json_object_get(fb, "kind"), *text = json_object_get(fb, "text");
    if (score != NULL) {
        const char *sc = json_string_value(scale);
        if (sc == NULL || (strcmp(sc, "nps") != 0 && strcmp(sc, "csat") != 0))
            crm_error_add_field(&it->errors, "/feedback/scale", "must be nps or csat with a score");
        else if (!json_is_integer(score) ||
                 json_integer_value(score) < (strcmp(sc, "nps") == 0 ? 0 : 1) ||
                 json_integer_value(score) > (strcmp(sc, "nps") == 0 ? 10 : 5))
            crm_error_add_field(&it->errors, "/feedback/score",
                                "must be a whole number: 0 to 10 for nps, 1 to 5 for csat");
    } else if (scale != NULL) {
        crm_error_add_field(&it->errors, "/feedback/score", "a scale needs a score");
    }
    if (kind != NULL && !crm_one_of(json_string_value(kind), feedback_kinds))
        crm_error_add_field(&it->errors, "/feedback/kind",
                            "must be one of idea, complaint, praise, question");
    if (text != NULL && (!json_is_string(text) ||
                         crm_utf8_chars(json_string_value(text), json_string_length(text)) >
                             CRM_TOUCHPOINT_TEXT_MAX))
        crm_error_add_field(&it->errors, "/feedback/text",
                            "must be a string of at most 5000 characters");
    if (score == NULL && text == NULL)
        crm_error_add_field(&it->errors, "/feedback", "needs a score or a text");
}

/* Checks one item; afterwards it->status is CRM_TP_REJECTED with reasons, or
 * CRM_TP_CREATED (for now: valid). */
static void check_item(json_t *doc, tp_item *it, long long now_ms)
{
    static const char *const allowed[] = {"customer_id",
                                          "customer_external_id",
                                          "customer_email",
                                          "create_customer",
                                          "channel",
                                          "type",
                                          "direction",
                                          "occurred_at",
                                          "source",
                                          "event_id",
                                          "campaign_id",
                                          "amount",
                                          "currency",
                                          "items",
                                          "feedback",
                                          "properties",
                                          NULL};
    it->doc = doc;
    it->status = CRM_TP_CREATED;
    if (!json_is_object(doc)) {
        crm_error_add_field(&it->errors, "", "must be an object");
        crm_error_set(&it->errors, CRM_E_INVALID, "the touchpoint must be a JSON object");
        it->status = CRM_TP_REJECTED;
        return;
    }
    crm_json_only_fields(doc, allowed, &it->errors);
    crm_json_check_no_nul(doc, "", &it->errors);
    check_reference(doc, it);
    check_listed(doc, "channel", crm_touchpoint_channels, it);
    check_listed(doc, "type", crm_touchpoint_types, it);
    check_listed(doc, "direction", directions, it);
    if (text_ok(doc, "occurred_at", 64, true, it)) {
        const char *when = json_string_value(json_object_get(doc, "occurred_at"));
        long long at;
        if (!crm_rfc3339_epoch_ms(when, &at))
            crm_error_add_field(&it->errors, "/occurred_at",
                                "must be an RFC 3339 date-time such as 2026-11-23T10:15:00Z");
        else if (!crm_rfc3339_to_utc(when, it->occurred_at, sizeof it->occurred_at))
            crm_error_add_field(&it->errors, "/occurred_at",
                                "must lie in the years 0001 to 9999 once moved to UTC");
        else if (at > now_ms + atomic_load(&future_tolerance_s) * 1000LL)
            crm_error_add_field(&it->errors, "/occurred_at", "lies too far in the future");
    }
    if (text_ok(doc, "source", 100, true, it))
        it->source = json_string_value(json_object_get(doc, "source"));
    if (text_ok(doc, "event_id", 200, true, it))
        it->event_id = json_string_value(json_object_get(doc, "event_id"));
    text_ok(doc, "campaign_id", 100, false, it);
    json_t *amount = json_object_get(doc, "amount"), *currency = json_object_get(doc, "currency");
    if (amount != NULL && !json_is_null(amount) && !number_ok(amount, -1e15, 1e15))
        crm_error_add_field(&it->errors, "/amount", "must be a number");
    if (currency != NULL && !json_is_null(currency) &&
        !crm_one_of(json_string_value(currency), currencies))
        crm_error_add_field(&it->errors, "/currency", "must be an ISO 4217 code such as EUR");
    if ((amount != NULL && !json_is_null(amount)) != (currency != NULL && !json_is_null(currency)))
        crm_error_add_field(&it->errors, amount ? "/currency" : "/amount",
                            "an amount needs a currency, and a currency an amount");
    const char *type = json_string_value(json_object_get(doc, "type"));
    check_items(json_object_get(doc, "items"), type ? type : "", it);
    check_feedback(json_object_get(doc, "feedback"), type ? type : "", it);
    json_t *props = json_object_get(doc, "properties");
    if (props != NULL && !json_is_null(props) &&
        !crm_json_depth_within(props, CRM_JSON_STORED_DEPTH_MAX)) {
        crm_error_add_field(&it->errors, "/properties",
                            "must nest at most 32 levels of objects and arrays");
    } else if (props != NULL && !json_is_null(props)) {
        char *text = json_is_object(props) ? crm_json_text(props, NULL) : NULL;
        if (text == NULL || strlen(text) > CRM_TOUCHPOINT_PROPERTIES_MAX_BYTES)
            crm_error_add_field(&it->errors, "/properties",
                                "must be an object of at most 16384 bytes as compact JSON");
        free(text);
    }
    if (json_array_size(it->errors.errors) > 0) {
        it->status = CRM_TP_REJECTED;
        crm_error_set(&it->errors, CRM_E_INVALID, "the touchpoint breaks the rules named below");
    }
}

bool crm_touchpoint_check(json_t *doc, crm_error *err)
{
    tp_item it;
    memset(&it, 0, sizeof it);
    check_item(doc, &it, crm_wall_ms());
    if (it.status == CRM_TP_REJECTED) {
        crm_error_clear(err);
        *err = it.errors; /* the item's reasons become the caller's */
        return false;
    }
    crm_error_clear(&it.errors);
    return true;
}

/* ---- the batch ------------------------------------------------------------------ */

/* A reference that items ask to create a customer for, by its key. */
typedef struct ref_slot {
    char *key;
    size_t item;
} ref_slot;

typedef struct batch {
    tp_item *items;
    size_t n;
    const crm_write_ctx *ctx;
    tp_item **by_event; /* the valid items that come first with their event, sorted */
    size_t n_by_event;
    ref_slot *slots; /* while customers are made: sorted by key, then item */
    size_t n_slots;
    /* A bulk statement broke a database rule the validator does not know
     * (drift): the attempt is given up and the next one is careful, storing
     * by halves behind savepoints so that only the offending items fail. */
    bool drift, careful;
} batch;

static int compare_events(const void *a, const void *b)
{
    const tp_item *x = *(tp_item *const *)a, *y = *(tp_item *const *)b;
    int c = strcmp(x->source, y->source);
    if (c == 0)
        c = strcmp(x->event_id, y->event_id);
    if (c == 0)
        c = (x > y) - (x < y); /* the earlier item first */
    return c;
}

/* A later item with the (source, event_id) of an earlier valid one is a
 * duplicate of it: only the first is stored. */
static bool mark_duplicates_within(batch *B)
{
    free(B->by_event);
    B->n_by_event = 0;
    tp_item **order = B->by_event = malloc(sizeof *order * (B->n ? B->n : 1));
    if (order == NULL)
        return false;
    size_t m = 0;
    for (size_t i = 0; i < B->n; i++)
        if (B->items[i].status == CRM_TP_CREATED)
            order[m++] = &B->items[i];
    qsort(order, m, sizeof *order, compare_events);
    size_t kept = 0;
    for (size_t k = 0; k < m; k++) {
        tp_item *cur = order[k], *prev = kept ? order[kept - 1] : NULL;
        if (prev != NULL && strcmp(prev->source, cur->source) == 0 &&
            strcmp(prev->event_id, cur->event_id) == 0) {
            cur->status = CRM_TP_DUPLICATE;
            cur->first = (int)(prev - B->items);
        } else {
            order[kept++] = cur; /* the first of its event, in event order */
        }
    }
    B->n_by_event = kept;
    return true;
}

static void reject(tp_item *it, const char *field, const char *message)
{
    it->status = CRM_TP_REJECTED;
    crm_error_add_field(&it->errors, field, message);
    crm_error_set(&it->errors, CRM_E_INVALID, "the touchpoint breaks the rules named below");
}

/* ---- what the caller's key may do with customers (review S4) ---- */

/* Whether the batch's caller holds scope (internal callers hold all). */
static bool caller_may(const batch *B, unsigned scope)
{
    const crm_write_ctx *ctx = B->ctx;
    return ctx == NULL || !ctx->has_scopes || (ctx->scopes & CRM_SCOPE_ADMIN) != 0 ||
           (ctx->scopes & scope) == scope;
}

/* What a caller that cannot read customers is told when a reference does
 * not name exactly one live customer, whatever the reason: nothing that
 * tells an unknown reference from one several customers share. */
#define REFERENCE_REFUSED "does not name exactly one live customer"

static void refuse(tp_item *it, const char *field, const char *message)
{
    reject(it, field, message);
    crm_error_set(&it->errors, CRM_E_FORBIDDEN, "the key's scopes do not allow this touchpoint");
}

/* Refuses, before anything is looked up, what the caller's scopes do not
 * allow: making a customer needs customers:write; without customers:read an
 * e-mail address names a customer only with create_customer (so that the
 * answer is the same whether or not the address was known: e-mail
 * addresses are personal data, an oracle over them is a leak). */
static void check_scopes(const batch *B, tp_item *it)
{
    if (it->create_customer && !caller_may(B, CRM_SCOPE_CUSTOMERS_WRITE))
        refuse(it, "/create_customer", "creating customers needs the 'customers:write' scope");
    if (it->ref == REF_EMAIL && !it->create_customer && !caller_may(B, CRM_SCOPE_CUSTOMERS_READ))
        refuse(it, "/customer_email",
               "without the 'customers:read' scope a customer is named by e-mail only with "
               "create_customer: true (and 'customers:write')");
}

static bool unresolved(const tp_item *it, ref_kind kind)
{
    return it->status == CRM_TP_CREATED && it->ref == kind && it->customer_id == 0;
}

/* ---- resolving customers ---- */

static crm_stmt resolve_ids = CRM_STMT(
    "touchpoint_resolve_ids",
    "WITH RECURSIVE chain (i, id, status, merged_into, depth) AS ("
    "  SELECT u.i, c.id, c.status, c.merged_into, 0"
    "  FROM json_to_recordset($1::json) AS u (i int, id bigint) JOIN customers c ON c.id = u.id"
    "  UNION ALL"
    "  SELECT chain.i, c.id, c.status, c.merged_into, chain.depth + 1"
    "  FROM chain JOIN customers c ON c.id = chain.merged_into"
    "  WHERE chain.status = 'merged' AND chain.depth < 16)"
    " SELECT i, id FROM chain WHERE status = 'active'");

static crm_stmt resolve_external_ids = CRM_STMT(
    "touchpoint_resolve_external_ids",
    "SELECT u.i, c.id FROM json_to_recordset($1::json) AS u (i int, source text, external_id text)"
    " JOIN customer_external_ids x ON x.source = u.source AND x.external_id = u.external_id"
    " JOIN customers c ON c.id = x.customer_id AND c.status = 'active'");

/* An e-mail that several live customers share names none of them. */
static crm_stmt resolve_emails = CRM_STMT(
    "touchpoint_resolve_emails",
    "SELECT u.i, min(c.id), count(*) FROM json_to_recordset($1::json) AS u (i int, email text)"
    " JOIN customers c ON c.email_normalized = u.email AND c.status = 'active' GROUP BY u.i");

/* Serializes the creation of the same customer by concurrent batches. */
static crm_stmt lock_references =
    CRM_STMT("touchpoint_lock_references",
             "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(u.key, "
             "1955) AS k"
             " FROM json_to_recordset($1::json) AS u (key text) ORDER BY 1) s");

/* Minimal customers for references nobody holds yet, with their external id
 * or e-mail, and their audit rows. One row per reference; $2 the API key. */
static crm_stmt create_customers = CRM_STMT(
    "touchpoint_create_customers",
    "WITH input AS (SELECT u.*, nextval(pg_get_serial_sequence('customers', 'id')) AS id"
    "  FROM json_to_recordset($1::json) AS u (r int, source text, external_id text, email text,"
    "  email_normalized text)),"
    " made AS (INSERT INTO customers (id, email, email_normalized) OVERRIDING SYSTEM VALUE"
    "  SELECT id, email, email_normalized FROM input),"
    " ids AS (INSERT INTO customer_external_ids (source, external_id, customer_id)"
    "  SELECT source, external_id, id FROM input WHERE source IS NOT NULL),"
    " audit AS (INSERT INTO customer_audit (customer_id, api_key_id, action, changes)"
    "  SELECT id, nullif($2::bigint, 0), 'create', jsonb_build_object('created_by',"
    "  'touchpoint', 'email', CASE WHEN email IS NOT NULL THEN jsonb_build_object('from', null,"
    "  'to', email) END, 'external_ids', CASE WHEN source IS NOT NULL THEN"
    "  jsonb_build_object('from', null, 'to', jsonb_build_array(jsonb_build_object('source',"
    "  source, 'id', external_id))) END) FROM input)"
    " SELECT r, id FROM input");

/* Runs stmt with the JSON text json (and extra, when not NULL) and hands
 * each row to apply. */
static bool run_rows(crm_conn *c, crm_stmt *stmt, const char *json, const char *extra, batch *B,
                     void (*apply)(batch *, const PGresult *, int), crm_error *err)
{
    const char *params[] = {json, extra};
    PGresult *res = crm_db_exec(c, stmt, extra ? 2 : 1, params, err);
    if (res == NULL)
        return false;
    for (int r = 0; r < PQntuples(res); r++)
        apply(B, res, r);
    PQclear(res);
    return true;
}

static void apply_resolved(batch *B, const PGresult *res, int r)
{
    long i = atol(PQgetvalue(res, r, 0));
    if (i >= 0 && (size_t)i < B->n)
        B->items[i].customer_id = atoll(PQgetvalue(res, r, 1));
}

static void apply_email(batch *B, const PGresult *res, int r)
{
    long i = atol(PQgetvalue(res, r, 0));
    if (i < 0 || (size_t)i >= B->n)
        return;
    if (atol(PQgetvalue(res, r, 2)) > 1)
        reject(&B->items[i], "/customer_email",
               caller_may(B, CRM_SCOPE_CUSTOMERS_READ)
                   ? "several customers have this e-mail: name the customer by id or external id"
                   : REFERENCE_REFUSED);
    else
        B->items[i].customer_id = atoll(PQgetvalue(res, r, 1));
}

/* The array b holds, for json_to_recordset; NULL when it has no rows (or
 * memory ran out: then nothing is asked of the database either). */
static char *take_rows(crm_jbuf *b, size_t count)
{
    char *text = crm_jbuf_take(b, NULL);
    if (count == 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* The references of kind still unresolved, as a JSON array for
 * json_to_recordset; NULL when there are none. */
static char *references_json(batch *B, ref_kind kind)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (!unresolved(it, kind))
            continue;
        count++;
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "i");
        crm_jbuf_int(&b, (long long)i);
        if (kind == REF_ID) {
            crm_jbuf_key(&b, "id");
            crm_jbuf_int(&b, it->ref_id);
        } else if (kind == REF_EXTERNAL) {
            crm_jbuf_key(&b, "source");
            crm_jbuf_cstring(&b, it->ref_source);
            crm_jbuf_key(&b, "external_id");
            crm_jbuf_cstring(&b, it->ref_external_id);
        } else {
            crm_jbuf_key(&b, "email");
            crm_jbuf_cstring(&b, it->email_normalized);
        }
        crm_jbuf_end_object(&b);
    }
    crm_jbuf_end_array(&b);
    return take_rows(&b, count);
}

static bool resolve(crm_conn *c, batch *B, ref_kind kind, crm_error *err)
{
    char *json = references_json(B, kind);
    if (json == NULL)
        return true;
    bool ok;
    if (kind == REF_ID)
        ok = run_rows(c, &resolve_ids, json, NULL, B, apply_resolved, err);
    else if (kind == REF_EXTERNAL)
        ok = run_rows(c, &resolve_external_ids, json, NULL, B, apply_resolved, err);
    else
        ok = run_rows(c, &resolve_emails, json, NULL, B, apply_email, err);
    free(json);
    return ok;
}

/* The key that names a reference across batches (and its lock). */
static char *reference_key(const tp_item *it)
{
    char *key = NULL;
    if (it->ref == REF_EXTERNAL)
        return asprintf(&key, "x%zu:%s%s", strlen(it->ref_source), it->ref_source,
                        it->ref_external_id) < 0
                   ? NULL
                   : key;
    return asprintf(&key, "e:%s", it->email_normalized) < 0 ? NULL : key;
}

static int compare_slots(const void *a, const void *b)
{
    const ref_slot *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->item > y->item) - (x->item < y->item);
}

static void free_slots(batch *B)
{
    for (size_t i = 0; i < B->n_slots; i++)
        free(B->slots[i].key);
    free(B->slots);
    B->slots = NULL;
    B->n_slots = 0;
}

static bool wants_customer(const tp_item *it)
{
    return it->create_customer && (unresolved(it, REF_EXTERNAL) || unresolved(it, REF_EMAIL));
}

/* The references of items that want a customer made, sorted by key. */
static bool collect_slots(batch *B)
{
    free_slots(B);
    B->slots = calloc(B->n ? B->n : 1, sizeof *B->slots);
    if (B->slots == NULL)
        return false;
    for (size_t i = 0; i < B->n; i++) {
        if (!wants_customer(&B->items[i]))
            continue;
        char *key = reference_key(&B->items[i]);
        if (key == NULL)
            return false;
        B->slots[B->n_slots++] = (ref_slot){.key = key, .item = i};
    }
    qsort(B->slots, B->n_slots, sizeof *B->slots, compare_slots);
    return true;
}

/* A made customer: r is the first slot of its key; every slot of the key gets it. */
static void apply_created(batch *B, const PGresult *res, int r)
{
    long first = atol(PQgetvalue(res, r, 0));
    long long id = atoll(PQgetvalue(res, r, 1));
    if (first < 0 || (size_t)first >= B->n_slots)
        return;
    const char *key = B->slots[first].key;
    for (size_t k = (size_t)first; k < B->n_slots && strcmp(B->slots[k].key, key) == 0; k++)
        B->items[B->slots[k].item].customer_id = id;
}

/* Creates a customer for each distinct reference that items with
 * create_customer name and nobody holds, after locking those references and
 * looking again (a concurrent batch may have just made it). */
static bool create_missing(crm_conn *c, batch *B, crm_error *err)
{
    if (!collect_slots(B))
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    if (B->n_slots == 0)
        return true;
    crm_jbuf keys, rows;
    crm_jbuf_init(&keys);
    crm_jbuf_begin_array(&keys);
    for (size_t k = 0; k < B->n_slots; k++) {
        if (k > 0 && strcmp(B->slots[k - 1].key, B->slots[k].key) == 0)
            continue;
        crm_jbuf_begin_object(&keys);
        crm_jbuf_key(&keys, "key");
        crm_jbuf_cstring(&keys, B->slots[k].key);
        crm_jbuf_end_object(&keys);
    }
    crm_jbuf_end_array(&keys);
    char *keys_json = crm_jbuf_take(&keys, NULL);
    if (keys_json == NULL) {
        free_slots(B);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    const char *params[] = {keys_json};
    PGresult *res = crm_db_exec(c, &lock_references, 1, params, err);
    bool ok = res != NULL;
    PQclear(res);
    free(keys_json);
    if (!ok || !resolve(c, B, REF_EXTERNAL, err) || !resolve(c, B, REF_EMAIL, err)) {
        free_slots(B);
        return false;
    }
    /* One row per key still missing, named by its first slot. */
    crm_jbuf_init(&rows);
    crm_jbuf_begin_array(&rows);
    size_t count = 0;
    for (size_t k = 0; k < B->n_slots; k++) {
        tp_item *it = &B->items[B->slots[k].item];
        if ((k > 0 && strcmp(B->slots[k - 1].key, B->slots[k].key) == 0) || it->customer_id != 0)
            continue;
        count++;
        crm_jbuf_begin_object(&rows);
        crm_jbuf_key(&rows, "r");
        crm_jbuf_int(&rows, (long long)k);
        crm_jbuf_key(&rows, "source");
        crm_jbuf_cstring(&rows, it->ref == REF_EXTERNAL ? it->ref_source : NULL);
        crm_jbuf_key(&rows, "external_id");
        crm_jbuf_cstring(&rows, it->ref == REF_EXTERNAL ? it->ref_external_id : NULL);
        crm_jbuf_key(&rows, "email");
        crm_jbuf_cstring(&rows, it->ref == REF_EMAIL ? it->ref_email : NULL);
        crm_jbuf_key(&rows, "email_normalized");
        crm_jbuf_cstring(&rows, it->ref == REF_EMAIL ? it->email_normalized : NULL);
        crm_jbuf_end_object(&rows);
    }
    crm_jbuf_end_array(&rows);
    char *rows_json = crm_jbuf_take(&rows, NULL);
    char key_id[24];
    snprintf(key_id, sizeof key_id, "%lld", B->ctx ? B->ctx->api_key_id : 0);
    ok = rows_json != NULL &&
         (count == 0 || run_rows(c, &create_customers, rows_json, key_id, B, apply_created, err));
    if (rows_json == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    free(rows_json);
    free_slots(B);
    return ok;
}

/* ---- storing ---- */

static crm_stmt insert_touchpoints = CRM_STMT(
    "touchpoint_insert",
    "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
    " event_id, campaign_id, amount, currency, items, feedback, properties)"
    " SELECT customer_id, channel, type, direction, occurred_at, source, event_id, campaign_id,"
    " amount, currency, items, feedback, coalesce(properties, '{}')"
    " FROM json_to_recordset($1::json) AS r (customer_id bigint, channel text, type text,"
    " direction text, occurred_at timestamptz, source text, event_id text, campaign_id text,"
    " amount numeric, currency text, items jsonb, feedback jsonb, properties jsonb)"
    " WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = r.customer_id AND c.status = 'active'"
    "  FOR KEY SHARE)"
    " ORDER BY source, event_id"
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id");

static crm_stmt find_stored = CRM_STMT(
    "touchpoint_find_stored",
    "SELECT t.id, t.source, t.event_id FROM json_to_recordset($1::json) AS u (source text,"
    " event_id text) JOIN touchpoints t ON t.source = u.source AND t.event_id = u.event_id");

/* A member the item has; json_to_recordset reads a missing one as NULL, so
 * absent and null members are left out (less JSON to parse). */
static void write_member(crm_jbuf *b, json_t *doc, const char *name)
{
    json_t *v = json_object_get(doc, name);
    if (v == NULL || json_is_null(v))
        return;
    crm_jbuf_key(b, name);
    crm_jbuf_json(b, v);
}

/* One item as a json_to_recordset row of insert_touchpoints. */
static void write_insert_row(crm_jbuf *b, const tp_item *it)
{
    static const char *const members[] = {"channel",  "type",     "direction", "source",
                                          "event_id", "campaign_id", "amount", "currency",
                                          "items",    "feedback",    "properties"};
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "customer_id");
    crm_jbuf_int(b, it->customer_id);
    for (size_t m = 0; m < sizeof members / sizeof members[0]; m++)
        write_member(b, it->doc, members[m]);
    crm_jbuf_key(b, "occurred_at"); /* in UTC, which PostgreSQL always reads */
    crm_jbuf_cstring(b, it->occurred_at);
    crm_jbuf_end_object(b);
}

/* An item insert_pending stores: valid, first of its event, not stored yet,
 * customer known. */
static bool to_insert(const tp_item *it)
{
    return it->status == CRM_TP_CREATED && it->id == 0 && it->customer_id != 0;
}

/* The items to insert as json_to_recordset rows. */
static char *rows_to_insert(batch *B, size_t *count)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    *count = 0;
    for (size_t i = 0; i < B->n; i++)
        if (to_insert(&B->items[i])) {
            (*count)++;
            write_insert_row(&b, &B->items[i]);
        }
    crm_jbuf_end_array(&b);
    return crm_jbuf_take(&b, NULL);
}

/* The item (valid, first of its event) for (source, event_id). */
static tp_item *item_for_event(batch *B, const char *source, const char *event_id)
{
    size_t lo = 0, hi = B->n_by_event;
    while (lo < hi) { /* binary search of the items in event order */
        size_t mid = lo + (hi - lo) / 2;
        tp_item *it = B->by_event[mid];
        int c = strcmp(it->source, source);
        if (c == 0)
            c = strcmp(it->event_id, event_id);
        if (c == 0)
            return it->status == CRM_TP_CREATED && it->id == 0 ? it : NULL;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void apply_inserted(batch *B, const PGresult *res, int r)
{
    tp_item *it = item_for_event(B, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2));
    if (it != NULL)
        it->id = atoll(PQgetvalue(res, r, 0));
}

static void apply_stored(batch *B, const PGresult *res, int r)
{
    tp_item *it = item_for_event(B, PQgetvalue(res, r, 1), PQgetvalue(res, r, 2));
    if (it != NULL) {
        it->id = atoll(PQgetvalue(res, r, 0));
        it->status = CRM_TP_DUPLICATE;
        it->first = -1;
    }
}

/* Valid items that the insert did not store: already there. */
static char *events_not_inserted(batch *B)
{
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status != CRM_TP_CREATED || it->id != 0)
            continue;
        count++;
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "source");
        crm_jbuf_cstring(&b, it->source);
        crm_jbuf_key(&b, "event_id");
        crm_jbuf_cstring(&b, it->event_id);
        crm_jbuf_end_object(&b);
    }
    crm_jbuf_end_array(&b);
    return take_rows(&b, count);
}

/* The whole batch on c, in its transaction. */
static void reject_unresolved(batch *B)
{
    bool reader = caller_may(B, CRM_SCOPE_CUSTOMERS_READ);
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status == CRM_TP_CREATED && it->id == 0 && it->customer_id == 0)
            reject(it,
                   it->ref == REF_ID         ? "/customer_id"
                   : it->ref == REF_EXTERNAL ? "/customer_external_id"
                                             : "/customer_email",
                   !reader ? REFERENCE_REFUSED
                   : it->create_customer || it->ref == REF_ID
                       ? "no live customer with this reference"
                       : "no live customer with this reference (create_customer: true makes one)");
    }
}

/* True for a SQLSTATE that says one row broke a rule of the database that
 * the validator let through (a CHECK, NOT NULL, or a data error such as a
 * value out of range): C and the schema have drifted apart. The item is at
 * fault, not the batch. (23505 and 23503 are handled where they arise.) */
static bool item_breaks_db_rule(const char *sqlstate)
{
    return strcmp(sqlstate, "23514") == 0 || strcmp(sqlstate, "23502") == 0 ||
           strncmp(sqlstate, "22", 2) == 0;
}

/* Inserts items[0..n) behind a savepoint; when the database refuses them
 * for a rule an item breaks, undoes that and tries each half, down to the
 * single items, which are rejected (422 in their item result). A bisection:
 * k offending items among n cost about 2k log n statements, and none when
 * all are fine. */
static bool insert_careful(crm_conn *c, batch *B, tp_item **items, size_t n, crm_error *err)
{
    if (n == 0)
        return true;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    for (size_t i = 0; i < n; i++)
        write_insert_row(&b, items[i]);
    crm_jbuf_end_array(&b);
    char *rows = crm_jbuf_take(&b, NULL);
    if (rows == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    bool ok = crm_db_command(c, "SAVEPOINT touchpoint_part", err);
    bool stored = ok && run_rows(c, &insert_touchpoints, rows, NULL, B, apply_inserted, err);
    free(rows);
    if (stored)
        return crm_db_command(c, "RELEASE SAVEPOINT touchpoint_part", err);
    if (!ok || !item_breaks_db_rule(crm_db_sqlstate(c)))
        return false;
    crm_error_clear(err);
    if (!crm_db_command(c, "ROLLBACK TO SAVEPOINT touchpoint_part", err) ||
        !crm_db_command(c, "RELEASE SAVEPOINT touchpoint_part", err))
        return false;
    for (size_t i = 0; i < n; i++)
        items[i]->id = 0; /* apply_inserted saw none of them: undone */
    if (n == 1) {
        reject(items[0], "", "the database refused this touchpoint (a rule of its schema)");
        return true;
    }
    return insert_careful(c, B, items, n / 2, err) &&
           insert_careful(c, B, items + n / 2, n - n / 2, err);
}

/* insert_careful over every item to insert. */
static bool insert_pending_careful(crm_conn *c, batch *B, crm_error *err)
{
    tp_item **list = malloc(sizeof *list * (B->n ? B->n : 1));
    if (list == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < B->n; i++)
        if (to_insert(&B->items[i]))
            list[n++] = &B->items[i];
    bool ok = insert_careful(c, B, list, n, err);
    free(list);
    return ok;
}

/* Inserts the valid items not stored yet whose customer is known, then
 * marks those whose event was stored before as duplicates. */
static bool insert_pending(crm_conn *c, batch *B, crm_error *err)
{
    bool ok;
    if (B->careful) {
        ok = insert_pending_careful(c, B, err);
    } else {
        size_t count;
        char *rows = rows_to_insert(B, &count);
        if (rows == NULL)
            return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        ok = count == 0 || run_rows(c, &insert_touchpoints, rows, NULL, B, apply_inserted, err);
        free(rows);
        if (!ok && item_breaks_db_rule(crm_db_sqlstate(c)))
            B->drift = true;
    }
    char *rest = ok ? events_not_inserted(B) : NULL;
    if (rest != NULL)
        ok = run_rows(c, &find_stored, rest, NULL, B, apply_stored, err);
    free(rest);
    return ok;
}

/* The way insert_pending stores: INSERT ... ON CONFLICT DO NOTHING, which
 * skips events stored before and customers not active, then a second round
 * for the items whose customer id named a merged or unknown customer. The
 * INSERT locks each customer it finds active (KEY SHARE) until this
 * transaction ends; a merge or erase holding the customer FOR UPDATE makes
 * it wait and look again, so it never stores a touchpoint on a customer
 * that has just been merged away. */
static bool insert_with_conflicts(crm_conn *c, batch *B, crm_error *err)
{
    if (!insert_pending(c, B, err))
        return false;
    bool leftover = false;
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status == CRM_TP_CREATED && it->id == 0 && it->ref == REF_ID) {
            it->customer_id = 0;
            leftover = true;
        }
    }
    if (!leftover)
        return true;
    if (!resolve(c, B, REF_ID, err))
        return false;
    reject_unresolved(B);
    return insert_pending(c, B, err);
}

/* The items copy_pending stores: valid, first of their event, customer known. */
static bool pending(const tp_item *it)
{
    return it->status == CRM_TP_CREATED && it->id == 0 && it->customer_id != 0;
}

static size_t count_pending(const batch *B)
{
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++)
        count += pending(&B->items[i]);
    return count;
}

/* Which of the customer ids ($1) name a customer that is not active; the
 * partial index of migration 0010 answers without reading the customers. */
static crm_stmt find_inactive =
    CRM_STMT("touchpoint_find_inactive",
             "SELECT id FROM customers WHERE id = ANY($1::bigint[]) AND status <> 'active'");

static crm_stmt take_ids =
    CRM_STMT("touchpoint_take_ids",
             "SELECT nextval(s) FROM pg_get_serial_sequence('touchpoints', 'id') AS s,"
             " generate_series(1, $1::int)");

#define COPY_TOUCHPOINTS                                                                           \
    "COPY touchpoints (id, customer_id, channel, type, direction, occurred_at, source, event_id,"  \
    " campaign_id, amount, currency, items, feedback, properties) FROM STDIN"

static int compare_ids(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Forgets the customer of every pending item whose customer is not active
 * (deleted, erased, or merged: resolve() then follows the merge), and
 * counts them in *forgotten. */
static bool forget_inactive(crm_conn *c, batch *B, size_t *forgotten, crm_error *err)
{
    *forgotten = 0;
    crm_jbuf ids;
    crm_jbuf_init(&ids);
    crm_jbuf_begin_array(&ids);
    size_t count = 0;
    for (size_t i = 0; i < B->n; i++)
        if (pending(&B->items[i])) {
            crm_jbuf_int(&ids, B->items[i].customer_id);
            count++;
        }
    crm_jbuf_end_array(&ids);
    char *text = take_rows(&ids, count);
    if (text == NULL)
        return count == 0 || crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    text[0] = '{'; /* the JSON array as a PostgreSQL array: [1,2] is {1,2} */
    text[strlen(text) - 1] = '}';
    const char *params[] = {text};
    PGresult *res = crm_db_exec(c, &find_inactive, 1, params, err);
    free(text);
    if (res == NULL)
        return false;
    int rows = PQntuples(res);
    long long *inactive = malloc(sizeof *inactive * (size_t)(rows ? rows : 1));
    if (inactive == NULL) {
        PQclear(res);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    for (int r = 0; r < rows; r++)
        inactive[r] = atoll(PQgetvalue(res, r, 0));
    PQclear(res);
    qsort(inactive, (size_t)rows, sizeof *inactive, compare_ids);
    for (size_t i = 0; i < B->n && rows > 0; i++) {
        tp_item *it = &B->items[i];
        if (pending(it) && bsearch(&it->customer_id, inactive, (size_t)rows, sizeof *inactive,
                                   compare_ids) != NULL) {
            it->customer_id = 0;
            (*forgotten)++;
        }
    }
    free(inactive);
    return true;
}

/* A member of the item as a COPY column: a string as it is, a number or
 * an object as JSON text, absent or null as NULL (or dflt when given). */
static void copy_member(crm_copybuf *rows, crm_jbuf *scratch, json_t *doc, const char *name,
                        const char *dflt)
{
    json_t *v = json_object_get(doc, name);
    if (v == NULL || json_is_null(v)) {
        crm_copy_cstring(rows, dflt);
    } else if (json_is_string(v)) {
        crm_copy_text(rows, json_string_value(v), json_string_length(v));
    } else {
        crm_jbuf_json(scratch, v);
        size_t len;
        char *text = crm_jbuf_take(scratch, &len);
        if (text == NULL)
            rows->out.failed = true;
        else
            crm_copy_text(rows, text, len);
        free(text);
        crm_jbuf_init(scratch);
    }
}

/* The pending items as COPY_TOUCHPOINTS rows, in event order (so that two
 * batches sharing events wait for each other instead of deadlocking). */
static char *copy_rows(batch *B, size_t *len)
{
    crm_copybuf rows;
    crm_copy_init(&rows);
    crm_jbuf scratch;
    crm_jbuf_init(&scratch);
    for (size_t k = 0; k < B->n_by_event; k++) {
        tp_item *it = B->by_event[k];
        if (!pending(it))
            continue;
        json_t *doc = it->doc;
        crm_copy_int(&rows, it->copy_id);
        crm_copy_int(&rows, it->customer_id);
        static const char *const members[] = {"channel", "type", "direction"};
        for (size_t m = 0; m < sizeof members / sizeof members[0]; m++)
            copy_member(&rows, &scratch, doc, members[m], NULL);
        crm_copy_cstring(&rows, it->occurred_at); /* in UTC, which PostgreSQL always reads */
        static const char *const more[] = {"source", "event_id", "campaign_id", "amount",
                                           "currency", "items", "feedback"};
        for (size_t m = 0; m < sizeof more / sizeof more[0]; m++)
            copy_member(&rows, &scratch, doc, more[m], NULL);
        copy_member(&rows, &scratch, doc, "properties", "{}");
        crm_copy_end_row(&rows);
    }
    crm_jbuf_free(&scratch);
    return crm_copy_take(&rows, len);
}

/* Takes an id for each pending item, in item order. */
static bool take_pending_ids(crm_conn *c, batch *B, size_t count, crm_error *err)
{
    crm_query q;
    crm_query_init(&q, &take_ids);
    crm_query_add_int(&q, (long long)count);
    PGresult *res = crm_db_exec(c, q.stmt, q.nparams, q.values, err);
    if (res == NULL)
        return false;
    bool ok = (size_t)PQntuples(res) == count;
    for (size_t i = 0, r = 0; ok && i < B->n; i++)
        if (pending(&B->items[i]))
            B->items[i].copy_id = atoll(PQgetvalue(res, (int)r++, 0));
    PQclear(res);
    return ok || crm_error_set(err, CRM_E_INTERNAL, "the database gave too few touchpoint ids");
}

typedef enum { COPY_FAILED, COPY_DONE, COPY_REFUSED, COPY_RACED } copy_outcome;

/* Stores the pending items with one COPY, behind a savepoint. The COPY's
 * foreign-key check locks each customer (KEY SHARE) until this transaction
 * ends, and merging or erasing a customer locks it FOR UPDATE first: so a
 * merge or erase that the check before missed has committed by now, and
 * the look after the COPY sees it (COPY_RACED: undone, the caller resolves
 * those customers again). An event stored meanwhile or a customer id that
 * names nobody fails the COPY (COPY_REFUSED: undone). */
static copy_outcome copy_pending(crm_conn *c, batch *B, crm_error *err)
{
    size_t count = count_pending(B);
    if (count == 0)
        return COPY_DONE;
    if (!take_pending_ids(c, B, count, err))
        return COPY_FAILED;
    size_t len;
    char *rows = copy_rows(B, &len);
    if (rows == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return COPY_FAILED;
    }
    bool ok = crm_db_command(c, "SAVEPOINT touchpoint_copy", err) &&
              crm_db_copy_in(c, COPY_TOUCHPOINTS, rows, len, err);
    free(rows);
    if (!ok) {
        const char *state = crm_db_sqlstate(c);
        if (item_breaks_db_rule(state))
            B->drift = true; /* the caller starts over, carefully */
        if (strcmp(state, "23505") != 0 && strcmp(state, "23503") != 0)
            return COPY_FAILED;
        crm_error_clear(err);
        return crm_db_command(c, "ROLLBACK TO SAVEPOINT touchpoint_copy", err) ? COPY_REFUSED
                                                                               : COPY_FAILED;
    }
    size_t forgotten;
    if (!forget_inactive(c, B, &forgotten, err))
        return COPY_FAILED;
    if (forgotten > 0)
        return crm_db_command(c, "ROLLBACK TO SAVEPOINT touchpoint_copy", err) ? COPY_RACED
                                                                               : COPY_FAILED;
    for (size_t i = 0; i < B->n; i++)
        if (pending(&B->items[i]))
            B->items[i].id = B->items[i].copy_id;
    return COPY_DONE;
}

/* Resolves the references, makes the customers items ask for, and stores
 * the items: a few by insert_with_conflicts; many by COPY, unless an event
 * was stored before or a customer id names nobody, and then by
 * insert_with_conflicts too. */
static bool store_batch(crm_conn *c, batch *B, crm_error *err)
{
    for (size_t i = 0; i < B->n; i++)
        if (B->items[i].status == CRM_TP_CREATED && B->items[i].ref == REF_ID)
            B->items[i].customer_id = B->items[i].ref_id;
    if (!resolve(c, B, REF_EXTERNAL, err) || !resolve(c, B, REF_EMAIL, err) ||
        !create_missing(c, B, err))
        return false;
    reject_unresolved(B);
    if (B->careful || count_pending(B) < CRM_TOUCHPOINT_COPY_FROM_ITEMS)
        return insert_with_conflicts(c, B, err);
    for (int round = 0; round < 3; round++) {
        size_t forgotten; /* resolved again below (each resolve asks only when it has some) */
        if (!forget_inactive(c, B, &forgotten, err) || !resolve(c, B, REF_ID, err) ||
            !resolve(c, B, REF_EXTERNAL, err) || !resolve(c, B, REF_EMAIL, err))
            return false;
        reject_unresolved(B);
        switch (copy_pending(c, B, err)) {
        case COPY_DONE:
            return true;
        case COPY_FAILED:
            return false;
        case COPY_REFUSED:
            return insert_with_conflicts(c, B, err);
        case COPY_RACED:
            break;
        }
    }
    return crm_error_set(err, CRM_E_CONFLICT, "the batch's customers kept changing; send it again");
}

static json_t *batch_report(batch *B)
{
    json_t *items = json_array();
    int counts[3] = {0, 0, 0};
    for (size_t i = 0; i < B->n; i++) {
        tp_item *it = &B->items[i];
        if (it->status == CRM_TP_DUPLICATE && it->first >= 0) {
            tp_item *first = &B->items[it->first];
            it->id = first->id;
            if (first->status == CRM_TP_REJECTED) { /* its first copy's fate */
                it->status = CRM_TP_REJECTED;
                crm_error_clear(&it->errors);
                it->errors.code = first->errors.code;
                it->errors.errors = json_incref(first->errors.errors);
            }
        }
        counts[it->status]++;
        static const char *const names[] = {"created", "duplicate", "rejected"};
        json_t *o = json_pack("{s:I, s:s}", "index", (json_int_t)i, "status", names[it->status]);
        if (it->status == CRM_TP_REJECTED)
            json_object_set_new(o, "errors",
                                it->errors.errors ? json_incref(it->errors.errors) : json_array());
        else
            json_object_set_new(o, "id", json_integer(it->id));
        json_array_append_new(items, o);
    }
    return json_pack("{s:i, s:i, s:i, s:o}", "created", counts[CRM_TP_CREATED], "duplicates",
                     counts[CRM_TP_DUPLICATE], "rejected", counts[CRM_TP_REJECTED], "items", items);
}

/* Checks and stores the items of B; a failure of the database (not of an
 * item) is err. Retried once when the transaction lost a race, and once,
 * carefully, when an item broke a rule of the database (drift). */
static bool record(batch *B, crm_error *err)
{
    bool raced = false;
    B->careful = false;
    for (;;) {
        B->drift = false;
        long long now = crm_wall_ms();
        for (size_t i = 0; i < B->n; i++) {
            tp_item *it = &B->items[i];
            json_t *doc = it->doc;
            crm_error_clear(&it->errors);
            memset(it, 0, sizeof *it);
            check_item(doc, it, now);
            check_scopes(B, it);
        }
        if (!mark_duplicates_within(B))
            return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        crm_conn *c = crm_db_acquire(err);
        if (c == NULL)
            return false;
        bool ok = crm_db_begin(c, err) && store_batch(c, B, err) && crm_db_commit(c, err);
        if (!ok)
            crm_db_rollback(c);
        bool retry_race = !ok && !B->drift && err->code == CRM_E_CONFLICT && !raced;
        bool retry_careful = !ok && B->drift && !B->careful;
        crm_db_release(c);
        if (ok || !(retry_race || retry_careful))
            return ok;
        raced = raced || retry_race;
        B->careful = B->careful || retry_careful;
        crm_error_clear(err); /* start over: the failed attempt left nothing */
    }
}

static void free_batch(batch *B)
{
    for (size_t i = 0; i < B->n; i++)
        crm_error_clear(&B->items[i].errors);
    free(B->items);
    free(B->by_event);
    free_slots(B);
}

json_t *crm_touchpoint_record_batch(json_t *items, const crm_write_ctx *ctx, crm_error *err)
{
    batch B = {.n = json_array_size(items), .ctx = ctx};
    B.items = calloc(B.n ? B.n : 1, sizeof *B.items);
    if (B.items == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < B.n; i++)
        B.items[i].doc = json_array_get(items, i);
    json_t *report = record(&B, err) ? batch_report(&B) : NULL;
    free_batch(&B);
    return report;
}

static crm_stmt get_touchpoint =
    CRM_STMT_RO("touchpoint_get", "SELECT " TP_COLUMNS " FROM touchpoints t WHERE t.id = $1");

json_t *crm_touchpoint_record(json_t *body, const crm_write_ctx *ctx, bool *created, crm_error *err)
{
    tp_item item;
    memset(&item, 0, sizeof item);
    batch B = {.items = &item, .n = 1, .ctx = ctx};
    item.doc = body;
    bool ok = record(&B, err);
    free(B.by_event);
    free_slots(&B);
    if (!ok) {
        crm_error_clear(&item.errors);
        return NULL;
    }
    if (item.status == CRM_TP_REJECTED) {
        *err = item.errors; /* the item's reasons are the request's */
        return NULL;
    }
    crm_error_clear(&item.errors);
    *created = item.status == CRM_TP_CREATED;
    /* A key that may not read both customers and touchpoints gets a
     * receipt: the stored touchpoint names its customer (an oracle over
     * e-mail addresses and external ids), and a duplicate is whoever sent
     * that event first. */
    if (!caller_may(&B, CRM_SCOPE_CUSTOMERS_READ | CRM_SCOPE_TOUCHPOINTS_READ))
        return json_pack("{s:I, s:s}", "id", (json_int_t)item.id, "status",
                         *created ? "created" : "duplicate");
    crm_query q;
    crm_touchpoint_get_query(&q, item.id);
    PGresult *res = crm_db_run_query(&q, err);
    if (res == NULL)
        return NULL;
    size_t len;
    char *text = crm_touchpoint_get_render(res, &len, err);
    PQclear(res);
    json_t *rep = text ? crm_json_load_stored(text) : NULL;
    free(text);
    return rep;
}

void crm_touchpoint_get_query(crm_query *q, long long id)
{
    crm_query_init(q, &get_touchpoint);
    crm_query_add_int(q, id);
}

char *crm_touchpoint_get_render(const PGresult *res, size_t *len, crm_error *err)
{
    if (PQntuples(res) != 1) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no touchpoint with this id");
        return NULL;
    }
    crm_jbuf b;
    crm_jbuf_init(&b);
    write_touchpoint(&b, res, 0, 0);
    char *text = crm_jbuf_take(&b, len);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}

/* ---- a person's touchpoints (export, erasure, merge) ------------------------------ */

static crm_stmt export_touchpoints = CRM_STMT_RO(
    "touchpoint_export", "SELECT " TP_COLUMNS " FROM touchpoints t"
                         " WHERE t.customer_id = ANY($1::bigint[]) ORDER BY t.occurred_at, t.id");

/* Free text and properties may say anything about the person: they go. The
 * scores, kinds, amounts and items stay, for anonymous aggregates. */
static crm_stmt erase_touchpoints =
    CRM_STMT("touchpoint_erase",
             "UPDATE touchpoints SET feedback = feedback - 'text', properties = '{}', erased = true"
             " WHERE customer_id = ANY($1::bigint[])");

static crm_stmt move_touchpoints =
    CRM_STMT("touchpoint_move",
             "UPDATE touchpoints SET customer_id = $1 WHERE customer_id = ANY($2::bigint[])");

json_t *crm_touchpoints_export(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    PGresult *res = crm_db_exec(c, &export_touchpoints, 1, params, err);
    if (res == NULL)
        return NULL;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_array(&b);
    for (int r = 0; r < PQntuples(res); r++)
        write_touchpoint(&b, res, r, 0);
    crm_jbuf_end_array(&b);
    PQclear(res);
    char *text = crm_jbuf_take(&b, NULL);
    json_t *list = text ? crm_json_load_stored(text) : NULL;
    free(text);
    if (list == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return list;
}

bool crm_touchpoints_erase(crm_conn *c, const char *ids, crm_error *err)
{
    const char *params[] = {ids};
    PGresult *res = crm_db_exec(c, &erase_touchpoints, 1, params, err);
    PQclear(res);
    return res != NULL;
}

bool crm_touchpoints_move(crm_conn *c, const char *survivor, const char *ids, crm_error *err)
{
    const char *params[] = {survivor, ids};
    PGresult *res = crm_db_exec(c, &move_touchpoints, 2, params, err);
    PQclear(res);
    return res != NULL;
}

/* ---- the timeline ------------------------------------------------------------------ */

/* Column 0 is the live customer (NULL: none); a customer without touchpoints
 * is one row of NULLs after it. The last column is occurred_at as
 * PostgreSQL prints it (UTC sessions), exact to the microsecond, for the
 * cursor.
 *
 * Every bound is always bound, with sentinels when the request has none
 * ('-infinity', 'infinity', the largest id): under the generic plans the
 * connections use, "$n IS NULL OR ..." would be a filter, and every page
 * would read the timeline from its newest row down to the cursor. Bound,
 * the range and the row comparison are index conditions, so any page
 * costs the same. */
static crm_stmt timeline =
    CRM_STMT_PAGE("touchpoint_timeline", CRM_SQL_RESOLVE_CUSTOMER
                  " SELECT (SELECT id FROM target), " TP_COLUMNS ", t.occurred_at"
                  " FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT * FROM touchpoints t"
                  "  WHERE t.customer_id = (SELECT id FROM target)"
                  "  AND ($2::text IS NULL OR t.channel = $2) AND ($3::text IS NULL OR t.type = $3)"
                  "  AND t.occurred_at >= $4::timestamptz AND t.occurred_at < $5::timestamptz"
                  "  AND (t.occurred_at, t.id) < ($6::timestamptz, $7::bigint)"
                  "  ORDER BY t.occurred_at DESC, t.id DESC LIMIT $8) t ON true");

#define TIMELINE_KEY (1 + TP_NCOLUMNS)

static char *arena_int(crm_arena *arena, long long v)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", v);
    return crm_arena_strndup(arena, text, strlen(text));
}

/* A date-time query parameter as UTC text in the arena (NULL when absent),
 * or a field error naming it. */
static char *utc_param(const char *value, const char *name, crm_arena *arena, crm_error *err)
{
    char utc[CRM_RFC3339_UTC_SIZE];
    if (value == NULL)
        return NULL;
    if (!crm_rfc3339_valid(value))
        crm_error_add_field(err, name, "must be an RFC 3339 date-time");
    else if (!crm_rfc3339_to_utc(value, utc, sizeof utc))
        crm_error_add_field(err, name, "must lie in the years 0001 to 9999 once moved to UTC");
    else
        return crm_arena_strndup(arena, utc, strlen(utc));
    return NULL;
}

/* Decodes a timeline cursor (signed: {occurred_at µs, id}) into the
 * parameters that start the next page: the instant as PostgreSQL reads it
 * exactly, and the id, both in arena. False when it is not one of ours or
 * its values could not come from a row. */
static bool read_timeline_cursor(const char *after, crm_arena *arena, const char **key,
                                 const char **id)
{
    crm_cursor c;
    if (!crm_cursor_decode(after, CRM_CURSOR_TIMELINE, 0, 2, false, &c) ||
        !crm_cursor_us_valid(c.ints[0]) || c.ints[1] <= 0)
        return false;
    char text[48];
    crm_cursor_format_us(c.ints[0], text);
    *key = crm_arena_strndup(arena, text, strlen(text));
    *id = arena_int(arena, c.ints[1]);
    return *key != NULL && *id != NULL;
}

bool crm_timeline_query(const crm_timeline_filter *f, crm_arena *arena, crm_query *q,
                        crm_error *err)
{
    if (f->channel != NULL && !crm_one_of(f->channel, crm_touchpoint_channels))
        crm_error_add_field(err, "channel", "not a known channel");
    if (f->type != NULL && !crm_one_of(f->type, crm_touchpoint_types))
        crm_error_add_field(err, "type", "not a known touchpoint type");
    char *after = utc_param(f->occurred_after, "occurred_after", arena, err);
    char *before = utc_param(f->occurred_before, "occurred_before", arena, err);
    const char *key = "infinity", *id = "9223372036854775807"; /* before every row */
    if (f->after != NULL && !read_timeline_cursor(f->after, arena, &key, &id))
        crm_error_add_field(err, "after", "not a cursor of this timeline");
    if (json_array_size(err->errors) > 0)
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    if ((f->occurred_after != NULL && after == NULL) ||
        (f->occurred_before != NULL && before == NULL))
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    crm_query_init(q, &timeline);
    crm_query_add(q, arena_int(arena, f->customer_id));
    crm_query_add(q, f->channel);
    crm_query_add(q, f->type);
    /* in UTC: PostgreSQL refuses offsets past +-15:59 */
    crm_query_add(q, after ? after : "-infinity");
    crm_query_add(q, before ? before : "infinity");
    crm_query_add(q, key);
    crm_query_add(q, id);
    crm_query_add(q, arena_int(arena, crm_page_fetch(f->limit)));
    return true;
}

char *crm_timeline_render(const PGresult *res, const crm_timeline_filter *f, size_t *len,
                          crm_error *err)
{
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0)) {
        crm_error_set(err, CRM_E_NOT_FOUND, "no customer with this id");
        return NULL;
    }
    int n = PQgetisnull(res, 0, 1) ? 0 : PQntuples(res), limit = f->limit < 1 ? 1 : f->limit;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_page_begin(&b);
    for (int r = 0; r < crm_page_shown(n, limit); r++)
        write_touchpoint(&b, res, r, 1);
    bool more = crm_page_has_next(n, limit);
    crm_cursor next; /* after the last row shown: its occurred_at (exact µs) and id */
    crm_cursor_init(&next, CRM_CURSOR_TIMELINE, 0);
    long long us;
    if (more && !(crm_parse_pg_timestamp(PQgetvalue(res, limit - 1, TIMELINE_KEY), &us) &&
                  crm_cursor_add_int(&next, us) &&
                  crm_cursor_add_int(&next, atoll(PQgetvalue(res, limit - 1, 1)))))
        b.out.failed = true;
    crm_page_end(&b, more ? &next : NULL);
    char *text = crm_jbuf_take(&b, len);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}

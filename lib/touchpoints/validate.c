/*
 * touchpoints/validate.c — the allow-lists of a touchpoint (channels, types,
 * directions, currencies) and every rule one item must follow, checked
 * before anything is looked up or stored.
 */
#include "touchpoints.h"
#include "clock.h"
#include "consents.h"
#include "currency.h"
#include "json.h"
#include "touchpoints/internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                                            "contact",
                                            "offer_accepted",
                                            "offer_rejected",
                                            "offer_ignored",
                                            NULL};

static const char *const directions[] = {"inbound", "outbound", NULL};
static const char *const feedback_kinds[] = {"idea", "complaint", "praise", "question", NULL};

/* For the test that the allow-lists equal the schema's CHECK constraints. */
const char *const *const crm_touchpoint_directions = directions;
const char *const *const crm_touchpoint_currencies = crm_currency_codes;

static atomic_int future_tolerance_s = 300;

void crm_touchpoint_set_future_tolerance(int seconds)
{
    atomic_store(&future_tolerance_s, seconds < 0 ? 0 : seconds);
}

int crm_touchpoint_future_tolerance(void)
{
    return atomic_load(&future_tolerance_s);
}

/* ---- validating an item ------------------------------------------------------ */

static bool text_ok(json_t *doc, const char *name, size_t max, bool required, tp_item *it)
{
    json_t *v = json_object_get(doc, name);
    char field[64];
    snprintf(field, sizeof field, "/%s", name);
    if (v == NULL || json_is_null(v)) {
        if (required)
            tp_field_error(it, field, "is required");
        return !required;
    }
    size_t chars =
        json_is_string(v) ? crm_utf8_chars(json_string_value(v), json_string_length(v)) : 0;
    if (!json_is_string(v) || chars == 0 || chars > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be a string of 1 to %zu characters", max);
        tp_field_error(it, field, msg);
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
        tp_field_error(it, field, msg);
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
        tp_field_error(it, "/customer_id",
                       "name the customer by exactly one of customer_id, customer_external_id "
                       "and customer_email");
        return;
    }
    if (create != NULL && !json_is_boolean(create))
        tp_field_error(it, "/create_customer", "must be true or false");
    it->create_customer = json_is_true(create);
    if (id != NULL) {
        it->ref = REF_ID;
        if (!json_is_integer(id) || json_integer_value(id) < 1)
            tp_field_error(it, "/customer_id", "must be a customer id");
        if (it->create_customer)
            tp_field_error(it, "/create_customer",
                           "only with customer_external_id or customer_email");
        it->ref_id = json_integer_value(id);
    } else if (ext != NULL) {
        it->ref = REF_EXTERNAL;
        json_t *s = json_object_get(ext, "source"), *x = json_object_get(ext, "id");
        crm_error e = CRM_ERROR_INIT;
        if (!json_is_object(ext) || json_object_size(ext) != 2 || !json_is_string(s) ||
            !json_is_string(x) ||
            !crm_external_id_valid(json_string_value(s), json_string_value(x), &e))
            tp_field_error(it, "/customer_external_id",
                           "must be {\"source\": ..., \"id\": ...}: a source of 1 to 100 and an "
                           "id of 1 to 500 characters");
        crm_error_clear(&e);
        it->ref_source = json_string_value(s);
        it->ref_external_id = json_string_value(x);
    } else {
        it->ref = REF_EMAIL;
        if (!json_is_string(email) || json_string_length(email) > CRM_CUSTOMER_EMAIL_MAX * 4 ||
            !crm_email_valid(json_string_value(email))) {
            tp_field_error(it, "/customer_email", "must be an e-mail address");
        } else {
            it->ref_email = json_string_value(email);
            char normalized[CRM_CUSTOMER_EMAIL_MAX * 4 + 8];
            crm_email_normalize(it->ref_email, normalized, sizeof normalized);
            it->email_normalized = strdup(normalized);
            if (it->email_normalized == NULL)
                tp_field_error(it, "/customer_email", "could not be read: out of memory");
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
        tp_field_error(it, "/items", "only a purchase or a refund has items");
        return;
    }
    if (!json_is_array(items) || json_array_size(items) > CRM_TOUCHPOINT_ITEMS_MAX) {
        tp_field_error(it, "/items", "must be an array of at most 200 items");
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
            tp_field_error(it, field,
                           "must be {\"sku\", \"name\"?, \"quantity\" (1 or more), "
                           "\"unit_price\"? (0 or more)} and nothing else");
    }
}

static void check_feedback(json_t *fb, const char *type, tp_item *it)
{
    bool is_feedback = strcmp(type, "feedback") == 0;
    if (fb == NULL || json_is_null(fb)) {
        if (is_feedback)
            tp_field_error(it, "/feedback", "a feedback touchpoint needs it");
        return;
    }
    if (!is_feedback) {
        tp_field_error(it, "/feedback", "only a feedback touchpoint has it");
        return;
    }
    static const char *const allowed[] = {"score", "scale", "kind", "text", NULL};
    crm_error e = CRM_ERROR_INIT;
    if (!json_is_object(fb) || !crm_json_only_fields(fb, allowed, &e)) {
        crm_error_clear(&e);
        tp_field_error(it, "/feedback", "must be an object of score, scale, kind and text");
        return;
    }
    json_t *score = json_object_get(fb, "score"), *scale = json_object_get(fb, "scale"),
           *kind = json_object_get(fb, "kind"), *text = json_object_get(fb, "text");
    if (score != NULL) {
        const char *sc = json_string_value(scale);
        if (sc == NULL || (strcmp(sc, "nps") != 0 && strcmp(sc, "csat") != 0))
            tp_field_error(it, "/feedback/scale", "must be nps or csat with a score");
        else if (!json_is_integer(score) ||
                 json_integer_value(score) < (strcmp(sc, "nps") == 0 ? 0 : 1) ||
                 json_integer_value(score) > (strcmp(sc, "nps") == 0 ? 10 : 5))
            tp_field_error(it, "/feedback/score",
                           "must be a whole number: 0 to 10 for nps, 1 to 5 for csat");
    } else if (scale != NULL) {
        tp_field_error(it, "/feedback/score", "a scale needs a score");
    }
    if (kind != NULL && !crm_one_of(json_string_value(kind), feedback_kinds))
        tp_field_error(it, "/feedback/kind", "must be one of idea, complaint, praise, question");
    if (text != NULL && (!json_is_string(text) ||
                         crm_utf8_chars(json_string_value(text), json_string_length(text)) >
                             CRM_TOUCHPOINT_TEXT_MAX))
        tp_field_error(it, "/feedback/text", "must be a string of at most 5000 characters");
    if (score == NULL && text == NULL)
        tp_field_error(it, "/feedback", "needs a score or a text");
}

/* Checks one item; afterwards it->status is CRM_TP_REJECTED with reasons, or
 * CRM_TP_CREATED (for now: valid). */
void tp_check_item(json_t *doc, tp_item *it, long long now_ms)
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
                                          "purpose",
                                          "offer_code",
                                          NULL};
    it->doc = doc;
    it->status = CRM_TP_CREATED;
    if (!json_is_object(doc)) {
        tp_reject(it, "", "must be an object");
        return;
    }
    crm_error shape = {.errors = it->field_errors};
    crm_json_only_fields(doc, allowed, &shape);
    crm_json_check_no_nul(doc, "", &shape);
    it->field_errors = shape.errors;
    check_reference(doc, it);
    check_listed(doc, "channel", crm_touchpoint_channels, it);
    check_listed(doc, "type", crm_touchpoint_types, it);
    check_listed(doc, "direction", directions, it);
    if (text_ok(doc, "occurred_at", 64, true, it)) {
        const char *when = json_string_value(json_object_get(doc, "occurred_at"));
        long long at;
        if (!crm_rfc3339_epoch_ms(when, &at))
            tp_field_error(it, "/occurred_at",
                           "must be an RFC 3339 date-time such as 2026-11-23T10:15:00Z");
        else if (!crm_rfc3339_to_utc(when, it->occurred_at, sizeof it->occurred_at))
            tp_field_error(it, "/occurred_at",
                           "must lie in the years 0001 to 9999 once moved to UTC");
        else if (at > now_ms + atomic_load(&future_tolerance_s) * 1000LL)
            tp_field_error(it, "/occurred_at", "lies too far in the future");
    }
    if (text_ok(doc, "source", 100, true, it)) {
        it->source = json_string_value(json_object_get(doc, "source"));
        if (crm_touchpoint_source_reserved(it->source))
            tp_field_error(it, "/source", "sources beginning \"crmd:\" are crmd's own");
    }
    if (text_ok(doc, "event_id", 200, true, it))
        it->event_id = json_string_value(json_object_get(doc, "event_id"));
    text_ok(doc, "campaign_id", 100, false, it);
    text_ok(doc, "offer_code", 100, false, it);
    json_t *purpose = json_object_get(doc, "purpose");
    if (purpose != NULL && !json_is_null(purpose) &&
        !crm_consent_purpose_known(json_string_value(purpose)))
        tp_field_error(it, "/purpose",
                       "must be one of marketing, service, profiling, analytics, third_party");
    json_t *amount = json_object_get(doc, "amount"), *currency = json_object_get(doc, "currency");
    if (amount != NULL && !json_is_null(amount) && !number_ok(amount, -1e15, 1e15))
        tp_field_error(it, "/amount", "must be a number");
    if (currency != NULL && !json_is_null(currency) &&
        !crm_currency_known(json_string_value(currency)))
        tp_field_error(it, "/currency", "must be an ISO 4217 code such as EUR");
    if ((amount != NULL && !json_is_null(amount)) != (currency != NULL && !json_is_null(currency)))
        tp_field_error(it, amount ? "/currency" : "/amount",
                       "an amount needs a currency, and a currency an amount");
    const char *type = json_string_value(json_object_get(doc, "type"));
    check_items(json_object_get(doc, "items"), type ? type : "", it);
    check_feedback(json_object_get(doc, "feedback"), type ? type : "", it);
    json_t *props = json_object_get(doc, "properties");
    if (props != NULL && !json_is_null(props) &&
        !crm_json_depth_within(props, CRM_JSON_STORED_DEPTH_MAX)) {
        tp_field_error(it, "/properties", "must nest at most 32 levels of objects and arrays");
    } else if (props != NULL && !json_is_null(props)) {
        char *text = json_is_object(props) ? crm_json_text(props, NULL) : NULL;
        if (text == NULL || strlen(text) > CRM_TOUCHPOINT_PROPERTIES_MAX_BYTES)
            tp_field_error(it, "/properties",
                           "must be an object of at most 16384 bytes as compact JSON");
        free(text);
    }
    if (json_array_size(it->field_errors) > 0) {
        it->status = CRM_TP_REJECTED;
        it->code = CRM_E_INVALID;
    }
}

bool crm_touchpoint_check(json_t *doc, crm_error *err)
{
    tp_item it;
    memset(&it, 0, sizeof it);
    tp_check_item(doc, &it, crm_wall_ms());
    bool ok = it.status != CRM_TP_REJECTED;
    if (!ok)
        tp_item_error(&it, err); /* the item's reasons become the caller's */
    tp_item_reset(&it);
    return ok;
}

bool crm_touchpoint_source_reserved(const char *source)
{
    return source != NULL && strncmp(source, CRM_TOUCHPOINT_SOURCE_PREFIX,
                                     sizeof CRM_TOUCHPOINT_SOURCE_PREFIX - 1) == 0;
}

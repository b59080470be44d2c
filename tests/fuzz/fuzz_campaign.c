/*
 * fuzz_campaign.c — a campaign as a client sends it (lib/campaigns/def.h):
 * the bytes parsed as crmd parses a body (crm_json_parse), then checked as
 * a create checks them (without the database: the audience's segment or
 * rule is not looked up); and the status machine asked about the statuses
 * the body's "status" and "to" members name.
 *
 * Properties: a refusal is CRM_E_INVALID, and when it names members each
 * is a JSON pointer with a message. An accepted campaign's canonical
 * document has every member, each within its limits: a code and a name;
 * exactly one of the audience's ids; 1 to 7 channels from the consent
 * list and 1 to 20 response types from the touchpoint types, each once; a
 * purpose from the list; a control share in 0..0.5; amounts as decimal
 * strings, with a currency when one is above 0; a window whose SQL ends
 * are given exactly when its ends are, its end after its start; 1 to 365
 * attribution days. Checking the canonical document again accepts it and
 * gives the same document (what is stored reads back). The machine never
 * allows a move to running or out of a final status, and allows exactly
 * the moves it lists.
 */
#include "fuzz.h"

#include "campaigns/def.h"
#include "consents.h"
#include "customers.h"
#include "json.h"
#include "touchpoints.h"

static void check_refusal(const crm_error *err)
{
    FUZZ_CHECK(err->code == CRM_E_INVALID);
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e)
    {
        const char *field = json_string_value(json_object_get(e, "field"));
        FUZZ_CHECK(field != NULL && field[0] == '/');
        FUZZ_CHECK(json_string_value(json_object_get(e, "message")) != NULL);
    }
}

/* An array of min..max distinct members of list. */
static void check_list(const json_t *a, size_t min, size_t max, const char *const *list)
{
    FUZZ_CHECK(json_is_array(a) && json_array_size(a) >= min && json_array_size(a) <= max);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *c = json_string_value(json_array_get(a, i));
        FUZZ_CHECK(c != NULL && crm_one_of(c, list));
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(strcmp(c, json_string_value(json_array_get(a, k))) != 0);
    }
}

/* A decimal string >= 0; true when above 0. */
static bool check_amount(const json_t *v)
{
    const char *s = json_string_value(v);
    FUZZ_CHECK(s != NULL && s[0] >= '0' && s[0] <= '9');
    bool nonzero = false, point = false;
    for (const char *p = s; *p; p++) {
        FUZZ_CHECK((*p >= '0' && *p <= '9') || (*p == '.' && !point));
        point = point || *p == '.';
        nonzero = nonzero || (*p >= '1' && *p <= '9');
    }
    return nonzero;
}

static void check_accepted(const campaign_def *d)
{
    const json_t *doc = d->doc;
    FUZZ_CHECK(json_is_string(json_object_get(doc, "code")));
    FUZZ_CHECK(json_is_string(json_object_get(doc, "name")));
    const json_t *a = json_object_get(doc, "audience");
    bool seg = json_is_integer(json_object_get(a, "segment_id"));
    bool rule = json_is_integer(json_object_get(a, "rule_id"));
    FUZZ_CHECK(seg != rule);
    FUZZ_CHECK(json_is_null(json_object_get(a, seg ? "rule_id" : "segment_id")));
    check_list(json_object_get(doc, "channels"), 1, CAMPAIGN_CHANNELS_MAX, crm_consent_channels);
    check_list(json_object_get(doc, "response_types"), 1, CAMPAIGN_RESPONSE_TYPES_MAX,
               crm_touchpoint_types);
    const char *purpose = json_string_value(json_object_get(doc, "purpose"));
    FUZZ_CHECK(purpose != NULL && crm_one_of(purpose, crm_consent_purposes));
    double share = json_number_value(json_object_get(doc, "control_share"));
    FUZZ_CHECK(json_is_number(json_object_get(doc, "control_share")) && share >= 0 &&
               share <= CAMPAIGN_CONTROL_SHARE_MAX);
    bool cost = check_amount(json_object_get(doc, "cost_per_contact"));
    cost = check_amount(json_object_get(doc, "fixed_cost")) || cost;
    FUZZ_CHECK(cost == d->has_cost);
    FUZZ_CHECK(!cost || json_is_string(json_object_get(doc, "currency")));
    json_int_t days = json_integer_value(json_object_get(doc, "attribution_days"));
    FUZZ_CHECK(days >= 1 && days <= 365);
    const json_t *starts = json_object_get(doc, "starts_at"), *ends = json_object_get(doc, "ends_at");
    FUZZ_CHECK(json_is_null(starts) == (d->starts[0] == '\0'));
    FUZZ_CHECK(json_is_null(ends) == (d->ends[0] == '\0'));
    if (!json_is_null(starts) && !json_is_null(ends))
        FUZZ_CHECK(d->ends_ms > d->starts_ms);
    /* The canonical document is a fixed point. */
    campaign_def again;
    crm_error err = CRM_ERROR_INIT;
    FUZZ_CHECK(campaign_def_check(d->doc, &again, &err));
    FUZZ_CHECK(json_equal(again.doc, d->doc));
    campaign_def_free(&again);
    crm_error_clear(&err);
}

static void check_machine(const json_t *body)
{
    const char *from = json_string_value(json_object_get(body, "status"));
    const char *to = json_string_value(json_object_get(body, "to"));
    if (from == NULL)
        return;
    json_t *allowed = campaign_allowed_transitions(from);
    FUZZ_CHECK(json_is_array(allowed));
    bool listed = false;
    for (size_t i = 0; i < json_array_size(allowed); i++) {
        const char *t = json_string_value(json_array_get(allowed, i));
        FUZZ_CHECK(t != NULL && strcmp(t, "running") != 0 && strcmp(t, from) != 0);
        FUZZ_CHECK(campaign_transition_allowed(from, t));
        listed = listed || (to != NULL && strcmp(t, to) == 0);
    }
    json_decref(allowed);
    if (to != NULL)
        FUZZ_CHECK(campaign_transition_allowed(from, to) == listed);
    if (strcmp(from, "completed") == 0 || strcmp(from, "cancelled") == 0)
        FUZZ_CHECK(to == NULL || !campaign_transition_allowed(from, to));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = crm_json_parse((const char *)data, size, &err);
    if (body == NULL) {
        crm_error_clear(&err);
        return 0;
    }
    check_machine(body);
    campaign_def d;
    if (campaign_def_check(body, &d, &err)) {
        FUZZ_CHECK(err.code == CRM_OK && json_array_size(err.errors) == 0);
        check_accepted(&d);
    } else if (err.code != CRM_E_INTERNAL) {
        check_refusal(&err);
    }
    campaign_def_free(&d);
    crm_error_clear(&err);
    json_decref(body);
    return 0;
}

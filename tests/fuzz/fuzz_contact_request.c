/*
 * fuzz_contact_request.c — the body of POST /v1/customers/{id}/contacts
 * as a client sends it (lib/treatments/contacts.c): the bytes parsed as
 * crmd parses a body (crm_json_parse), then checked as the contact
 * decision checks them before it touches the database
 * (contact_request_check).
 *
 * Properties: a refusal is CRM_E_INVALID, and for an object it names at
 * least one member, each as a JSON pointer with a message. An accepted
 * request names a known channel and purpose; source (1 to 100 characters)
 * and event_id (1 to 200) are the body's, without NUL; campaign_id is
 * absent or 1 to 100 characters; rule_id is 0 when absent and the body's,
 * at least 1, when given, and never alongside a campaign_id (the same
 * request with a campaign_id added is refused at /campaign_id); and
 * occurred_at is empty when absent, else the body's instant in UTC, at
 * most the touchpoints' future tolerance after now: checked at an earlier
 * now, the same body is accepted while the instant is within the
 * tolerance and refused at /occurred_at from the first millisecond past.
 */
#include "fuzz.h"

#include "customers.h"
#include "json.h"
#include "touchpoints.h"
#include "treatments/internal.h"

/* The time the checks run at: fixed, so that a finding replays. */
#define NOW_MS 1796342400000LL /* 2026-12-04T00:00:00Z */

static const char *const channels[] = {"email", "sms", "phone",  "mail",
                                       "push",  "web", "in_app", NULL};
static const char *const purposes[] = {"marketing", "service",     "profiling",
                                       "analytics", "third_party", NULL};

static bool present(const json_t *doc, const char *name)
{
    const json_t *v = json_object_get(doc, name);
    return v != NULL && !json_is_null(v);
}

/* Characters of a UTF-8 string (Jansson's strings are well formed). */
static size_t chars_of(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static void check_refusal(const json_t *body, const crm_error *err)
{
    FUZZ_CHECK(err->code == CRM_E_INVALID);
    if (json_is_object(body))
        FUZZ_CHECK(json_array_size(err->errors) > 0);
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e)
    {
        const char *field = json_string_value(json_object_get(e, "field"));
        FUZZ_CHECK(field != NULL && field[0] == '/');
        const char *message = json_string_value(json_object_get(e, "message"));
        FUZZ_CHECK(message != NULL && message[0] != '\0');
    }
}

static bool names_field(const crm_error *err, const char *pointer)
{
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "field")), pointer) == 0)
            return true;
    }
    return false;
}

/* value is the body's member name: a string of min to max characters. */
static void check_text(const json_t *body, const char *name, const char *value, size_t max)
{
    const json_t *v = json_object_get(body, name);
    FUZZ_CHECK(json_is_string(v) && value == json_string_value(v));
    size_t bytes = json_string_length(v), chars = chars_of(value, bytes);
    FUZZ_CHECK(strlen(value) == bytes && chars >= 1 && chars <= max);
}

/* Checks body at now_ms: accepted when refused_at is NULL, else refused
 * naming refused_at. */
static void check_at(const json_t *body, long long now_ms, const char *refused_at)
{
    contact_request r;
    crm_error err = CRM_ERROR_INIT;
    bool ok = contact_request_check(body, now_ms, &r, &err);
    FUZZ_CHECK(ok == (refused_at == NULL));
    if (!ok) {
        check_refusal(body, &err);
        FUZZ_CHECK(names_field(&err, refused_at));
    }
    crm_error_clear(&err);
}

static void check_occurred_at(const json_t *body, const contact_request *r)
{
    if (!present(body, "occurred_at")) {
        FUZZ_CHECK(r->occurred_at[0] == '\0');
        return;
    }
    const char *when = json_string_value(json_object_get(body, "occurred_at"));
    long long given, utc;
    FUZZ_CHECK(when != NULL && crm_rfc3339_epoch_ms(when, &given));
    size_t len = strnlen(r->occurred_at, sizeof r->occurred_at);
    FUZZ_CHECK(len > 0 && len < sizeof r->occurred_at && r->occurred_at[len - 1] == 'Z');
    FUZZ_CHECK(crm_rfc3339_epoch_ms(r->occurred_at, &utc));
    FUZZ_CHECK(utc == given);
    long long tolerance_ms = crm_touchpoint_future_tolerance() * 1000LL;
    FUZZ_CHECK(utc <= NOW_MS + tolerance_ms);
    check_at(body, utc - tolerance_ms, NULL);
    check_at(body, utc - tolerance_ms - 1, "/occurred_at");
}

/* The accepted body with a campaign_id as well as its rule_id. */
static void check_rule_and_campaign(const json_t *body)
{
    json_t *both = json_deep_copy(body);
    FUZZ_CHECK(both != NULL);
    json_object_set_new(both, "campaign_id", json_string("spring-sale"));
    contact_request r;
    crm_error err = CRM_ERROR_INIT;
    FUZZ_CHECK(!contact_request_check(both, NOW_MS, &r, &err));
    check_refusal(both, &err);
    FUZZ_CHECK(names_field(&err, "/campaign_id"));
    crm_error_clear(&err);
    json_decref(both);
}

static void check_accepted(const json_t *body, const contact_request *r)
{
    FUZZ_CHECK(r->channel != NULL && crm_one_of(r->channel, channels));
    FUZZ_CHECK(r->purpose != NULL && crm_one_of(r->purpose, purposes));
    FUZZ_CHECK(strcmp(r->channel, json_string_value(json_object_get(body, "channel"))) == 0);
    FUZZ_CHECK(strcmp(r->purpose, json_string_value(json_object_get(body, "purpose"))) == 0);
    FUZZ_CHECK(r->source != NULL && r->event_id != NULL);
    check_text(body, "source", r->source, 100);
    check_text(body, "event_id", r->event_id, 200);
    if (present(body, "campaign_id"))
        check_text(body, "campaign_id", r->campaign_id, 100);
    else
        FUZZ_CHECK(r->campaign_id == NULL);
    if (present(body, "rule_id")) {
        FUZZ_CHECK(r->rule_id >= 1);
        FUZZ_CHECK(r->rule_id == json_integer_value(json_object_get(body, "rule_id")));
        FUZZ_CHECK(r->campaign_id == NULL);
        check_rule_and_campaign(body);
    } else {
        FUZZ_CHECK(r->rule_id == 0);
    }
    check_occurred_at(body, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = crm_json_parse((const char *)data, size, &err);
    if (body == NULL) {
        FUZZ_CHECK(err.code == CRM_E_MALFORMED);
        crm_error_clear(&err);
        return 0;
    }
    contact_request r;
    if (contact_request_check(body, NOW_MS, &r, &err)) {
        FUZZ_CHECK(err.code == CRM_OK && json_array_size(err.errors) == 0);
        check_accepted(body, &r);
    } else {
        check_refusal(body, &err);
    }
    crm_error_clear(&err);
    json_decref(body);
    return 0;
}

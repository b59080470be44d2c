/*
 * fuzz_treatment_rule.c — a treatment rule as a client sends it
 * (lib/treatments/rule_def.h): the bytes parsed as crmd parses a body
 * (crm_json_parse), then checked as a create checks them (without the
 * database: the segments it names are not looked up).
 *
 * Properties: a refusal is CRM_E_INVALID, and when it names members each
 * is a JSON pointer with a message. An accepted rule's canonical document
 * has every member, each within its limits: channels from the consent
 * list, each once; a purpose from the list; value and priority not below
 * 0; a window whose SQL ends are given exactly when its ends are, and
 * whose end is after its start. Checking the canonical document again
 * accepts it and gives the same document (what is stored reads back).
 */
#include "fuzz.h"

#include "customers.h"
#include "json.h"
#include "treatments/rule_def.h"

static const char *const channels[] = {"email", "sms", "phone",  "mail",
                                       "push",  "web", "in_app", NULL};
static const char *const purposes[] = {"marketing", "service",     "profiling",
                                       "analytics", "third_party", NULL};

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

static void check_window(const rule_def *d)
{
    const json_t *active = json_object_get(d->doc, "active");
    const json_t *from = json_object_get(active, "from"), *until = json_object_get(active, "until");
    FUZZ_CHECK(json_is_null(from) == (d->from[0] == '\0'));
    FUZZ_CHECK(json_is_null(until) == (d->until[0] == '\0'));
    long long f = 0, u = 0;
    if (!json_is_null(from) && !json_is_null(until)) {
        FUZZ_CHECK(crm_rfc3339_epoch_ms(json_string_value(from), &f));
        FUZZ_CHECK(crm_rfc3339_epoch_ms(json_string_value(until), &u));
        FUZZ_CHECK(u > f);
    }
}

static void check_accepted(const rule_def *d)
{
    const json_t *doc = d->doc, *t = json_object_get(doc, "treatment");
    FUZZ_CHECK(json_is_string(json_object_get(doc, "name")));
    FUZZ_CHECK(json_object_get(doc, "condition") != NULL && d->condition != NULL);
    FUZZ_CHECK(json_is_object(t));
    const json_t *ch = json_object_get(t, "channels");
    FUZZ_CHECK(json_is_array(ch) && json_array_size(ch) <= 7);
    for (size_t i = 0; i < json_array_size(ch); i++) {
        const char *c = json_string_value(json_array_get(ch, i));
        FUZZ_CHECK(c != NULL && crm_one_of(c, channels));
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(strcmp(c, json_string_value(json_array_get(ch, k))) != 0);
    }
    const char *purpose = json_string_value(json_object_get(t, "purpose"));
    FUZZ_CHECK(purpose != NULL && crm_one_of(purpose, purposes));
    FUZZ_CHECK(json_is_number(json_object_get(t, "value")) &&
               json_number_value(json_object_get(t, "value")) >= 0);
    FUZZ_CHECK(json_is_integer(json_object_get(t, "priority")) &&
               json_integer_value(json_object_get(t, "priority")) >= 0);
    const json_t *pos = json_object_get(doc, "position");
    FUZZ_CHECK(json_is_null(pos) ||
               (json_integer_value(pos) >= 0 && json_integer_value(pos) <= RULE_DEF_POSITION_MAX));
    FUZZ_CHECK(d->nrefs >= 0 && d->nrefs <= RULE_DEF_MAX_REFS);
    check_window(d);
    /* The canonical document is a fixed point. */
    rule_def again;
    crm_error err = CRM_ERROR_INIT;
    FUZZ_CHECK(rule_def_check(d->doc, &again, &err));
    FUZZ_CHECK(json_equal(again.doc, d->doc));
    rule_def_free(&again);
    crm_error_clear(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *body = crm_json_parse((const char *)data, size, &err);
    if (body == NULL) {
        crm_error_clear(&err);
        return 0;
    }
    rule_def d;
    if (rule_def_check(body, &d, &err)) {
        FUZZ_CHECK(err.code == CRM_OK && json_array_size(err.errors) == 0);
        check_accepted(&d);
    } else if (err.code != CRM_E_INTERNAL) {
        check_refusal(&err);
    }
    rule_def_free(&d);
    crm_error_clear(&err);
    json_decref(body);
    return 0;
}

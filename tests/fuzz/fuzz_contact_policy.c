/*
 * fuzz_contact_policy.c — a contact policy as a client sends it
 * (lib/treatments/policies.c): the bytes parsed as crmd parses a body
 * (crm_json_parse), then checked as POST /v1/contact-policies checks a
 * create body (policy_check), and as PATCH /v1/contact-policies/{id}
 * checks a merge patch (policy_patch_check, then the patch applied to the
 * definition of each of two stored policies and the result checked). None
 * of it needs the database: whether rule_id names a live rule and
 * time_zone a zone PostgreSQL knows is not looked up.
 *
 * Properties: a refusal is CRM_E_INVALID, and for an object it names at
 * least one member, each as a JSON pointer with a message. An accepted
 * definition has a name of 1 to 200 characters without NUL; a cap, quiet
 * hours or both; a cap's max_contacts from 1 to 1000000 and period_hours
 * from 1 to 87840; quiet hours whose from and until are HH:MM times that
 * differ, with a time zone of 1 to 64 bytes; channel and purpose from the
 * consent lists or absent; rule_id absent or at least 1; and the values
 * the statements take are the document's. A merge patch leaves no null
 * member in the objects it reaches, sets what it names, and applied twice
 * gives what it gave once. What an accepted definition stores reads back
 * (as the representation) into a definition accepted with the same values.
 */
#include "fuzz.h"

#include "customers.h"
#include "json.h"
#include "treatments/internal.h"

static const char *const channels[] = {"email", "sms", "phone",  "mail",
                                       "push",  "web", "in_app", NULL};
static const char *const purposes[] = {"marketing", "service",     "profiling",
                                       "analytics", "third_party", NULL};

/* Two stored policies as their representation reads (policy_from_row). */
static const char *const stored[] = {
    "{\"id\": 7, \"name\": \"weekly email cap\", \"channel\": \"email\", \"purpose\": null,"
    " \"rule_id\": null, \"cap\": {\"max_contacts\": 2, \"period_hours\": 168},"
    " \"quiet_hours\": null, \"version\": 3, \"created_at\": \"2026-11-23T10:15:00.000Z\","
    " \"updated_at\": \"2026-11-24T08:00:00.000Z\"}",
    "{\"id\": 9, \"name\": \"no calls at night\", \"channel\": \"phone\","
    " \"purpose\": \"marketing\", \"rule_id\": 12, \"cap\": null, \"quiet_hours\":"
    " {\"from\": \"21:00\", \"until\": \"08:30\", \"time_zone\": \"Europe/Rome\"},"
    " \"version\": 1, \"created_at\": \"2026-11-23T10:15:00.000Z\","
    " \"updated_at\": \"2026-11-23T10:15:00.000Z\"}",
};

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

/* "HH:MM" from 00:00 to 23:59 as minutes after midnight, or -1. */
static int minutes_of(const char *s)
{
    if (s == NULL || strlen(s) != 5 || s[2] != ':')
        return -1;
    for (int i = 0; i < 5; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9'))
            return -1;
    int h = atoi(s), m = atoi(s + 3);
    return h < 24 && m < 60 ? h * 60 + m : -1;
}

static void check_refusal(const json_t *doc, const crm_error *err)
{
    FUZZ_CHECK(err->code == CRM_E_INVALID);
    if (json_is_object(doc))
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

static void check_listed(const json_t *doc, const char *name, const char *value,
                         const char *const *list)
{
    if (!present(doc, name)) {
        FUZZ_CHECK(value == NULL);
        return;
    }
    FUZZ_CHECK(value != NULL && crm_one_of(value, list));
    FUZZ_CHECK(strcmp(value, json_string_value(json_object_get(doc, name))) == 0);
}

static void check_cap(const json_t *cap, const policy_values *v)
{
    FUZZ_CHECK(json_is_object(cap));
    FUZZ_CHECK(v->max_contacts != NULL && v->period_hours != NULL);
    long long max = atoll(v->max_contacts), period = atoll(v->period_hours);
    FUZZ_CHECK(max >= 1 && max <= 1000000);
    FUZZ_CHECK(period >= 1 && period <= 87840);
    FUZZ_CHECK(max == json_integer_value(json_object_get(cap, "max_contacts")));
    FUZZ_CHECK(period == json_integer_value(json_object_get(cap, "period_hours")));
}

static void check_quiet(const json_t *quiet, const policy_values *v)
{
    FUZZ_CHECK(json_is_object(quiet));
    int from = minutes_of(v->quiet_from), until = minutes_of(v->quiet_until);
    FUZZ_CHECK(from >= 0 && until >= 0 && from != until);
    FUZZ_CHECK(v->time_zone != NULL);
    size_t zone = strlen(v->time_zone);
    FUZZ_CHECK(zone >= 1 && zone <= 64);
    FUZZ_CHECK(zone == json_string_length(json_object_get(quiet, "time_zone")));
    FUZZ_CHECK(strcmp(v->quiet_from, json_string_value(json_object_get(quiet, "from"))) == 0);
    FUZZ_CHECK(strcmp(v->quiet_until, json_string_value(json_object_get(quiet, "until"))) == 0);
    FUZZ_CHECK(strcmp(v->time_zone, json_string_value(json_object_get(quiet, "time_zone"))) == 0);
}

/* The representation the values of an accepted definition read back as
 * (policy_from_row: NULL columns are null members). Caller owns it. */
static json_t *stored_as(const policy_values *v)
{
    json_t *cap = json_null(), *quiet = json_null();
    if (v->max_contacts != NULL)
        cap = json_pack("{s:I, s:I}", "max_contacts", (json_int_t)atoll(v->max_contacts),
                        "period_hours", (json_int_t)atoll(v->period_hours));
    if (v->quiet_from != NULL)
        quiet = json_pack("{s:s, s:s, s:s}", "from", v->quiet_from, "until", v->quiet_until,
                          "time_zone", v->time_zone);
    json_t *rule = v->rule_id ? json_integer(atoll(v->rule_id)) : json_null();
    json_t *doc =
        json_pack("{s:I, s:s, s:s?, s:s?, s:o, s:o, s:o, s:I}", "id", (json_int_t)1, "name",
                  v->name, "channel", v->channel, "purpose", v->purpose, "rule_id", rule, "cap",
                  cap, "quiet_hours", quiet, "version", (json_int_t)1);
    FUZZ_CHECK(doc != NULL);
    return doc;
}

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void check_accepted(const json_t *doc, const policy_values *v, bool again);

/* An accepted definition, stored and read back, patched with nothing. */
static void check_reads_back(const policy_values *v)
{
    json_t *row = stored_as(v), *def = policy_definition_of(row);
    policy_values w;
    crm_error err = CRM_ERROR_INIT;
    FUZZ_CHECK(policy_check(def, &w, &err));
    check_accepted(def, &w, false);
    FUZZ_CHECK(same(v->name, w.name) && same(v->channel, w.channel) &&
               same(v->purpose, w.purpose) && same(v->rule_id, w.rule_id));
    FUZZ_CHECK(same(v->max_contacts, w.max_contacts) && same(v->period_hours, w.period_hours));
    FUZZ_CHECK(same(v->quiet_from, w.quiet_from) && same(v->quiet_until, w.quiet_until) &&
               same(v->time_zone, w.time_zone));
    crm_error_clear(&err);
    json_decref(def);
    json_decref(row);
}

static void check_accepted(const json_t *doc, const policy_values *v, bool again)
{
    const json_t *name = json_object_get(doc, "name");
    FUZZ_CHECK(json_is_string(name) && v->name == json_string_value(name));
    size_t bytes = json_string_length(name), chars = chars_of(v->name, bytes);
    FUZZ_CHECK(strlen(v->name) == bytes && chars >= 1 && chars <= 200);
    check_listed(doc, "channel", v->channel, channels);
    check_listed(doc, "purpose", v->purpose, purposes);
    if (present(doc, "rule_id")) {
        FUZZ_CHECK(v->rule_id != NULL && atoll(v->rule_id) >= 1);
        FUZZ_CHECK(atoll(v->rule_id) == json_integer_value(json_object_get(doc, "rule_id")));
    } else {
        FUZZ_CHECK(v->rule_id == NULL);
    }
    bool cap = present(doc, "cap"), quiet = present(doc, "quiet_hours");
    FUZZ_CHECK(cap || quiet);
    if (cap)
        check_cap(json_object_get(doc, "cap"), v);
    else
        FUZZ_CHECK(v->max_contacts == NULL && v->period_hours == NULL);
    if (quiet)
        check_quiet(json_object_get(doc, "quiet_hours"), v);
    else
        FUZZ_CHECK(v->quiet_from == NULL && v->quiet_until == NULL && v->time_zone == NULL);
    if (again)
        check_reads_back(v);
}

/* Checks doc as a whole definition. */
static void check_definition(const json_t *doc)
{
    policy_values v;
    crm_error err = CRM_ERROR_INIT;
    if (policy_check(doc, &v, &err)) {
        FUZZ_CHECK(err.code == CRM_OK && json_array_size(err.errors) == 0);
        check_accepted(doc, &v, true);
    } else {
        check_refusal(doc, &err);
    }
    crm_error_clear(&err);
}

/* No object reached by a merge holds a null member. */
static void check_no_null_member(const json_t *obj)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        FUZZ_CHECK(!json_is_null(value));
        if (json_is_object(value))
            check_no_null_member(value);
    }
}

static void check_patch(const json_t *patch, const char *current_text)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *current = crm_json_parse(current_text, strlen(current_text), &err);
    FUZZ_CHECK(current != NULL);
    json_t *def = policy_definition_of(current);
    FUZZ_CHECK(def != NULL);
    policy_merge_patch(def, patch);
    check_no_null_member(def);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)patch, key, value)
    {
        if (json_is_null(value))
            FUZZ_CHECK(json_object_get(def, key) == NULL);
        else if (!json_is_object(value))
            FUZZ_CHECK(json_equal(json_object_get(def, key), value));
        else
            FUZZ_CHECK(json_is_object(json_object_get(def, key)));
    }
    json_t *twice = json_deep_copy(def);
    FUZZ_CHECK(twice != NULL);
    policy_merge_patch(twice, patch);
    FUZZ_CHECK(json_equal(twice, def));
    check_definition(def);
    json_decref(twice);
    json_decref(def);
    json_decref(current);
    crm_error_clear(&err);
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
    check_definition(body);
    if (policy_patch_check(body, &err)) {
        FUZZ_CHECK(err.code == CRM_OK && json_array_size(err.errors) == 0);
        for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++)
            check_patch(body, stored[i]);
    } else {
        check_refusal(body, &err);
    }
    crm_error_clear(&err);
    json_decref(body);
    return 0;
}

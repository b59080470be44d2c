/*
 * fuzz_customer_body.c — a customer body as a client sends it (create,
 * upsert, the result of a PATCH): the bytes parsed as crmd parses them
 * (crm_json_parse), then the checks of validate_document in
 * lib/customers/customers.c (crm_json_check_no_nul, crm_customer_validate), with and
 * without external_ids.
 *
 * Properties: unparsable bytes are CRM_E_MALFORMED; a document is valid
 * exactly when no error was reported; a refusal is CRM_E_INVALID and names
 * at least one field (for an object), each as a JSON pointer with a
 * message; and the document with one more member, named after the client's
 * first member (so with any length and any characters), is refused with an
 * error naming that member: no field error can go missing.
 */
#include "fuzz.h"

#include "customers.h"
#include "json.h"

static void check_errors(const crm_error *err)
{
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e) {
        const char *field = json_string_value(json_object_get(e, "field"));
        FUZZ_CHECK(field != NULL);
        FUZZ_CHECK(field[0] == '\0' || field[0] == '/');
        FUZZ_CHECK(json_string_value(json_object_get(e, "message")) != NULL);
    }
}

/* What validate_document does; true when the document passes. */
static bool validate(json_t *doc, unsigned flags, crm_error *err)
{
    crm_customer_values vals;
    bool clean = crm_json_check_no_nul(doc, "", err);
    bool valid = crm_customer_validate(doc, flags, &vals, err);
    if (valid) {
        FUZZ_CHECK(vals.v[CRM_CCOL_KIND] != NULL);
        crm_customer_values_free(&vals);
    }
    check_errors(err);
    if (valid && clean) {
        FUZZ_CHECK(err->code == CRM_OK && json_array_size(err->errors) == 0);
        return true;
    }
    FUZZ_CHECK(json_array_size(err->errors) > 0);
    if (!valid)
        FUZZ_CHECK(err->code == CRM_E_INVALID);
    return false;
}

static bool names_field(const crm_error *err, const char *pointer)
{
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "field")), pointer) == 0)
            return true;
    }
    return false;
}

static void check_unknown_member(json_t *doc, unsigned flags)
{
    const char *first = json_object_iter_key(json_object_iter(doc));
    char *name = malloc(strlen(first ? first : "") + 16);
    FUZZ_CHECK(name != NULL);
    sprintf(name, "not a field %s", first ? first : "");
    if (json_object_get(doc, name) == NULL) {
        json_t *more = json_deep_copy(doc);
        FUZZ_CHECK(more != NULL);
        json_object_set_new(more, name, json_true());
        crm_error err = CRM_ERROR_INIT;
        FUZZ_CHECK(!validate(more, flags, &err));
        char pointer[CRM_JSON_POINTER_MAX];
        crm_json_pointer_append(pointer, sizeof pointer, "", name);
        FUZZ_CHECK(names_field(&err, pointer));
        crm_error_clear(&err);
        json_decref(more);
    }
    free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_json_parse((const char *)data, size, &err);
    if (doc == NULL) {
        FUZZ_CHECK(err.code == CRM_E_MALFORMED);
        crm_error_clear(&err);
        return 0;
    }
    static const unsigned flags[] = {0, CRM_CUSTOMER_ALLOW_EXTERNAL_IDS};
    for (size_t f = 0; f < 2; f++) {
        crm_error e = CRM_ERROR_INIT;
        if (json_is_object(doc)) {
            validate(doc, flags[f], &e);
            check_unknown_member(doc, flags[f]);
        } else {
            crm_customer_values vals;
            FUZZ_CHECK(!crm_customer_validate(doc, flags[f], &vals, &e));
            FUZZ_CHECK(e.code == CRM_E_INVALID);
        }
        crm_error_clear(&e);
    }
    json_decref(doc);
    return 0;
}

/*
 * fuzz_touchpoint_item.c — touchpoint bodies and batch items as a client
 * sends them: the bytes parsed as crmd parses them (crm_json_parse), then
 * crm_touchpoint_check, the per-item validation of POST /v1/touchpoints and
 * POST /v1/touchpoints/batch. An array is taken as a batch's items, each
 * checked on its own (one bad item never decides for another).
 *
 * Properties: unparsable bytes are CRM_E_MALFORMED; an item passes exactly
 * when no error was reported; a refusal is CRM_E_INVALID with at least one
 * field error, each a JSON pointer with a message; and an item with one more
 * member, named after the client's first member, is refused with an error
 * naming that member.
 */
#include "fuzz.h"

#include "json.h"
#include "touchpoints.h"

static bool check(json_t *doc, crm_error *err)
{
    bool ok = crm_touchpoint_check(doc, err);
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e) {
        const char *field = json_string_value(json_object_get(e, "field"));
        FUZZ_CHECK(field != NULL && (field[0] == '\0' || field[0] == '/'));
        FUZZ_CHECK(json_string_value(json_object_get(e, "message")) != NULL);
    }
    if (ok)
        FUZZ_CHECK(err->code == CRM_OK && json_array_size(err->errors) == 0);
    else
        FUZZ_CHECK(err->code == CRM_E_INVALID && json_array_size(err->errors) > 0);
    return ok;
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

static void check_item(json_t *item)
{
    crm_error err = CRM_ERROR_INIT;
    check(item, &err);
    crm_error_clear(&err);
    if (!json_is_object(item))
        return;
    const char *first = json_object_iter_key(json_object_iter(item));
    char *name = malloc(strlen(first ? first : "") + 16);
    FUZZ_CHECK(name != NULL);
    sprintf(name, "not a field %s", first ? first : "");
    if (json_object_get(item, name) == NULL) {
        json_t *more = json_deep_copy(item);
        FUZZ_CHECK(more != NULL);
        json_object_set_new(more, name, json_true());
        FUZZ_CHECK(!check(more, &err));
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
    if (json_is_array(doc)) {
        size_t i;
        json_t *item;
        json_array_foreach(doc, i, item) check_item(item);
    } else {
        check_item(doc);
    }
    json_decref(doc);
    return 0;
}

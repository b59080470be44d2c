/*
 * test_stored_json.c — the one depth limit of stored free-form JSON
 * (CRM_JSON_STORED_DEPTH_MAX): crm_json_depth_within counts levels as
 * documented, the customer validator accepts attributes at the limit and
 * names /attributes past it, and whatever is accepted can still be written
 * inside a deep envelope by the JSON writer (jbuf).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "customers.h"
#include "jbuf.h"
#include "json.h"
#include "suites.h"
#include "support.h"

/* {"k": [{"k": [... 1 ...]}]}: depth levels of objects and arrays, the
 * outermost an object (depth 0: the number 1). */
static json_t *nested(int depth)
{
    json_t *v = json_integer(1);
    for (int i = 0; i < depth; i++) {
        json_t *o = (depth - 1 - i) % 2 ? json_array() : json_object();
        if (json_is_array(o))
            json_array_append_new(o, v);
        else
            json_object_set_new(o, "k", v);
        v = o;
    }
    return v;
}

START_TEST(depth_counts_every_object_and_array)
{
    json_t *scalar = json_string("x");
    ck_assert(crm_json_depth_within(scalar, 0));
    json_decref(scalar);
    json_t *empty = json_object();
    ck_assert(!crm_json_depth_within(empty, 0));
    ck_assert(crm_json_depth_within(empty, 1));
    json_decref(empty);
    for (int d = 1; d <= 70; d++) {
        json_t *v = nested(d);
        ck_assert_msg(crm_json_depth_within(v, d), "depth %d within %d", d, d);
        ck_assert_msg(!crm_json_depth_within(v, d - 1), "depth %d within %d", d, d - 1);
        json_decref(v);
    }
}
END_TEST

static bool attributes_valid(int depth, crm_error *err)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "attributes", nested(depth));
    crm_customer_values vals;
    bool ok = crm_customer_validate(doc, 0, &vals, err) && json_array_size(err->errors) == 0;
    crm_customer_values_free(&vals);
    json_decref(doc);
    return ok;
}

START_TEST(attributes_may_nest_up_to_the_limit_and_not_past_it)
{
    crm_error err = CRM_ERROR_INIT;
    ck_assert_msg(attributes_valid(CRM_JSON_STORED_DEPTH_MAX, &err), "%s", err.detail);
    crm_error_clear(&err);
    for (int d = CRM_JSON_STORED_DEPTH_MAX + 1; d <= 64; d++) {
        ck_assert_msg(!attributes_valid(d, &err), "depth %d accepted", d);
        ck_assert(unit_has_field_error(&err, "/attributes"));
        crm_error_clear(&err);
    }
}
END_TEST

START_TEST(the_deepest_stored_json_is_written_inside_a_deep_envelope)
{
    /* The limit's JSON under 64 more levels (more than any representation
     * puts around it) is still written, and reads back equal. */
    json_t *stored = nested(CRM_JSON_STORED_DEPTH_MAX);
    crm_jbuf b;
    crm_jbuf_init(&b);
    for (int i = 0; i < 64; i++) {
        crm_jbuf_begin_object(&b);
        crm_jbuf_key(&b, "e");
    }
    crm_jbuf_json(&b, stored);
    for (int i = 0; i < 64; i++)
        crm_jbuf_end_object(&b);
    char *text = crm_jbuf_take(&b, NULL);
    ck_assert_ptr_nonnull(text);
    json_t *back = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(back);
    json_t *inner = back;
    for (int i = 0; i < 64; i++)
        inner = json_object_get(inner, "e");
    ck_assert(json_equal(inner, stored));
    json_decref(back);
    free(text);
    json_decref(stored);
}
END_TEST

Suite *stored_json_suite(void)
{
    Suite *s = suite_create("stored_json");
    TCase *tc = tcase_create("depth");
    tcase_add_test(tc, depth_counts_every_object_and_array);
    tcase_add_test(tc, attributes_may_nest_up_to_the_limit_and_not_past_it);
    tcase_add_test(tc, the_deepest_stored_json_is_written_inside_a_deep_envelope);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * customers/search.c — POST /v1/customers/search: the body's rule (the
 * rule language of segments.h) made into a condition of the customer list.
 *
 * The page itself is the list's (list.c): the same live customers, sort
 * orders, keyset cursors and documents, with the rule's compiled SQL as
 * one more condition. Here the body is read, the rule parsed with its
 * errors named from the body's root ("/rule/all/2/op"), and the rule's
 * canonical text hashed: every cursor of the search carries the hash, so
 * that a cursor given with another rule is refused rather than continuing
 * a walk through a different set of customers.
 */
#include "customers.h"
#include "json.h"
#include "segments.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* The members a search body may have. */
static const char *const body_members[] = {"rule", NULL};

/* Prefixes "/rule" to the field of every error from the first-th on: the
 * ones the rule's parser named, from the rule's own root. */
static void errors_under_rule(crm_error *err, size_t first)
{
    for (size_t i = first; i < json_array_size(err->errors); i++) {
        json_t *e = json_array_get(err->errors, i);
        const char *field = json_string_value(json_object_get(e, "field"));
        if (field == NULL)
            continue;
        size_t len = strlen(field);
        char *at = malloc(len + sizeof "/rule");
        if (at == NULL)
            continue; /* left as the parser named it */
        memcpy(at, "/rule", 5);
        memcpy(at + 5, field, len + 1);
        json_object_set_new(e, "field", json_string(at));
        free(at);
    }
}

/* The first 8 bytes of the BLAKE2b hash of rule's canonical text (compact,
 * members sorted), as a signed integer; false when memory ran out. Two
 * bodies whose rules differ only in member order or white space hash the
 * same. */
static bool rule_hash(const json_t *rule, long long *out)
{
    char *text = json_dumps(rule, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (text == NULL)
        return false;
    unsigned char h[crypto_generichash_BYTES_MIN];
    crypto_generichash(h, sizeof h, (const unsigned char *)text, strlen(text), NULL, 0);
    free(text);
    unsigned long long v = 0;
    for (size_t i = 0; i < sizeof v; i++)
        v = (v << 8) | h[i];
    memcpy(out, &v, sizeof *out);
    return true;
}

struct crm_rule *crm_customer_search_begin(const json_t *body, long long now_ms,
                                           crm_customer_filter *f, crm_error *err)
{
    if (!json_is_object(body)) {
        crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
        return NULL;
    }
    /* An unknown member and the rule's own problems are reported together. */
    bool members_ok = crm_json_only_fields((json_t *)body, body_members, err);
    const json_t *json = json_object_get(body, "rule");
    if (json == NULL) {
        crm_error_add_field(err, "/rule", "is required: the rule the customers must satisfy");
        crm_error_set(err, CRM_E_INVALID, "the search is not valid");
        return NULL;
    }
    size_t before = json_array_size(err->errors);
    crm_rule *rule = crm_rule_parse(json, err);
    if (rule == NULL && err->code != CRM_E_INVALID)
        return NULL;
    /* the parser's errors are the ones after the members' */
    errors_under_rule(err, before);
    if (rule == NULL || !members_ok) {
        crm_rule_free(rule);
        crm_error_set(err, CRM_E_INVALID, "the search is not valid");
        return NULL;
    }
    long long hash = 0;
    if (!rule_hash(json, &hash)) {
        crm_rule_free(rule);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return NULL;
    }
    f->search = true;
    f->rule = rule;
    f->now_ms = now_ms;
    f->rule_hash = hash;
    return rule;
}

/*
 * fuzz_segment_rule.c — a segment rule as a client sends it (lib/segments.h):
 * the bytes parsed as crmd parses a body (crm_json_parse), then
 * crm_rule_parse, and for a rule that passes, its SQL, its evaluation
 * against an empty customer and what it reads and names.
 *
 * Properties: a refusal is CRM_E_INVALID with 1 to CRM_RULE_MAX_ERRORS
 * field errors, each a JSON pointer with a message; an accepted rule has at
 * most CRM_RULE_MAX_NODES nodes and compiles, and its SQL text is ASCII
 * only: every client string (any byte above 0x7f included) went into a
 * parameter, none into the text. What it reads is made of the
 * CRM_RULE_READS_* bits, segments among them exactly when it names a
 * segment; the segments it names are positive, distinct, no more than its
 * nodes, each with a JSON pointer.
 */
#include "fuzz.h"

#include "json.h"
#include "segments.h"
#include "segments/internal.h"

static void check_refusal(const crm_error *err)
{
    FUZZ_CHECK(err->code == CRM_E_INVALID);
    size_t n = json_array_size(err->errors);
    FUZZ_CHECK(n >= 1 && n <= CRM_RULE_MAX_ERRORS);
    size_t i;
    json_t *e;
    json_array_foreach(err->errors, i, e)
    {
        const char *field = json_string_value(json_object_get(e, "field"));
        FUZZ_CHECK(field != NULL);
        FUZZ_CHECK(field[0] == '\0' || field[0] == '/');
        FUZZ_CHECK(json_string_value(json_object_get(e, "message")) != NULL);
    }
}

static void check_rule(const crm_rule *r)
{
    FUZZ_CHECK(crm_rule_nodes(r) >= 1 && crm_rule_nodes(r) <= CRM_RULE_MAX_NODES);
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    crm_arena arena;
    crm_arena_init(&arena);
    crm_error err = CRM_ERROR_INIT;
    FUZZ_CHECK(crm_rule_sql(r, &s, 1780272000000LL, &arena, &err));
    for (const unsigned char *p = (const unsigned char *)crm_sqlbuf_text(&s); *p; p++)
        FUZZ_CHECK(*p < 0x80);
    crm_sqlbuf_free(&s);
    crm_arena_free(&arena);
    /* A customer with nothing at all: every comparison is on a missing value. */
    crm_rule_state empty;
    memset(&empty, 0, sizeof empty);
    crm_arena_init(&empty.arena);
    (void)crm_rule_eval(r, &empty, 1780272000000LL);
}

static void check_dependencies(const crm_rule *r)
{
    unsigned reads = crm_rule_reads(r);
    FUZZ_CHECK(
        (reads & ~(CRM_RULE_READS_CUSTOMER | CRM_RULE_READS_CONSENT | CRM_RULE_READS_TOUCHPOINTS |
                   CRM_RULE_READS_METRICS | CRM_RULE_READS_SEGMENTS)) == 0);
    long long ids[CRM_RULE_MAX_NODES];
    const char *pointers[CRM_RULE_MAX_NODES];
    int n = crm_rule_segment_refs(r, ids, pointers, CRM_RULE_MAX_NODES);
    FUZZ_CHECK(n >= 0 && n <= crm_rule_nodes(r));
    FUZZ_CHECK((n > 0) == ((reads & CRM_RULE_READS_SEGMENTS) != 0));
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 1);
        FUZZ_CHECK(pointers[i] != NULL && (pointers[i][0] == '\0' || pointers[i][0] == '/'));
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(ids[j] != ids[i]);
    }
    FUZZ_CHECK(crm_rule_segment_refs(r, NULL, NULL, 0) == n);
    (void)crm_rule_has_time(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    crm_error err = CRM_ERROR_INIT;
    json_t *doc = crm_json_parse((const char *)data, size, &err);
    if (doc == NULL) {
        crm_error_clear(&err);
        return 0;
    }
    crm_rule *r = crm_rule_parse(doc, &err);
    if (r != NULL) {
        FUZZ_CHECK(err.code == CRM_OK && json_array_size(err.errors) == 0);
        check_rule(r);
        check_dependencies(r);
        crm_rule_free(r);
    } else if (err.code != CRM_E_INTERNAL) {
        check_refusal(&err);
    }
    crm_error_clear(&err);
    json_decref(doc);
    return 0;
}

/*
 * test_scopes.c — what a key's scopes let it do and learn, over real HTTP:
 * the scope matrix (every route of the route table against no key and a
 * key of each single scope), and a touchpoints:write partner key that can
 * neither make customers nor probe which e-mail addresses and ids are
 * customers (review S4).
 */
#include "auth.h"
#include "harness.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static crmd_server srv;
static PGconn *db;
/* partner: touchpoints:write only; maker: and customers:write; reader: and
 * customers:read, touchpoints:read (sees everything it writes). */
static api_key partner, maker, reader;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    db = harness_db_connect();
    if (partner.id == 0)
        ck_assert(api_key_create("touchpoints:write", &partner));
    if (maker.id == 0)
        ck_assert(api_key_create("touchpoints:write,customers:write", &maker));
    if (reader.id == 0)
        ck_assert(api_key_create("touchpoints:write,customers:read,touchpoints:read", &reader));
}

static void teardown(void)
{
    PQfinish(db);
    crmd_fixture_stop(&srv);
}

static long long new_customer(const char *email)
{
    return harness_sql_number(
        db, "INSERT INTO customers (first_name, email, email_normalized) VALUES ('scope', $1, $1) "
            "RETURNING id",
        email);
}

static long long customers_with_email(const char *email)
{
    return harness_sql_number(
        db, "SELECT count(*) FROM customers WHERE email_normalized = $1 AND status = 'active'",
        email);
}

static long long customers_with_external_id(const char *external_id)
{
    return harness_sql_number(db, "SELECT count(*) FROM customer_external_ids WHERE external_id = $1",
                              external_id);
}

/* A touchpoint naming its customer by reference (a JSON member, e.g.
 * "\"customer_id\": 7"), with a fresh event id. */
static void touchpoint(char *out, size_t size, const char *reference)
{
    char event[64];
    harness_unique(event, sizeof event, "scope-ev");
    snprintf(out, size,
             "{%s, \"channel\": \"web\", \"type\": \"page_view\", \"direction\": \"inbound\", "
             "\"occurred_at\": \"2026-11-20T10:00:00Z\", \"source\": \"scopes\", "
             "\"event_id\": \"%s\"}",
             reference, event);
}

static http_response post(const char *path, const api_key *key, const char *body)
{
    return http_post_json(&srv, path, key->secret, body);
}

/* The one field error of a problem answer with status: field and message
 * (the caller frees *message). */
static void only_error(http_response *r, long status, const char *field, char **message)
{
    json_t *p = assert_problem(r, status);
    json_t *errors = json_object_get(p, "errors");
    ck_assert_msg(json_array_size(errors) == 1, "errors: %.400s", r->body);
    json_t *e = json_array_get(errors, 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "field")), field);
    if (message != NULL)
        *message = strdup(json_string_value(json_object_get(e, "message")));
    json_decref(p);
    http_response_free(r);
}

START_TEST(creating_a_customer_needs_customers_write)
{
    char ext[64], ref[160], body[512];
    harness_unique(ext, sizeof ext, "scope-ext");
    snprintf(ref, sizeof ref,
             "\"customer_external_id\": {\"source\": \"scopes\", \"id\": \"%s\"}, "
             "\"create_customer\": true",
             ext);
    touchpoint(body, sizeof body, ref);
    http_response r = post("/v1/touchpoints", &partner, body);
    only_error(&r, 403, "/create_customer", NULL);
    ck_assert_int_eq(customers_with_external_id(ext), 0);

    char batch[1200];
    snprintf(batch, sizeof batch, "[%s]", body);
    r = post("/v1/touchpoints/batch", &partner, batch);
    ck_assert_msg(r.status == 200, "answered %ld: %.300s", r.status, r.body);
    json_t *report = http_response_json(&r);
    http_response_free(&r);
    json_t *item = json_array_get(json_object_get(report, "items"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(item, "status")), "rejected");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(item, "errors"), 0), "field")),
                     "/create_customer");
    json_decref(report);
    ck_assert_int_eq(customers_with_external_id(ext), 0);

    /* With customers:write it is made (and the answer does not name it). */
    r = post("/v1/touchpoints", &maker, body);
    ck_assert_msg(r.status == 201, "answered %ld: %.300s", r.status, r.body);
    json_t *receipt = http_response_json(&r);
    http_response_free(&r);
    ck_assert_ptr_null(json_object_get(receipt, "customer_id"));
    json_decref(receipt);
    ck_assert_int_eq(customers_with_external_id(ext), 1);
}
END_TEST

START_TEST(a_partner_cannot_probe_email_addresses)
{
    char known[64], unknown[64], ref[160], body[512];
    harness_unique(known, sizeof known, "known");
    strcat(known, "@example.com");
    harness_unique(unknown, sizeof unknown, "unknown");
    strcat(unknown, "@example.com");
    new_customer(known);

    /* Known or not, the same refusal, before anything is looked up. */
    char *said_known = NULL, *said_unknown = NULL;
    snprintf(ref, sizeof ref, "\"customer_email\": \"%s\"", known);
    touchpoint(body, sizeof body, ref);
    http_response r = post("/v1/touchpoints", &partner, body);
    only_error(&r, 403, "/customer_email", &said_known);
    snprintf(ref, sizeof ref, "\"customer_email\": \"%s\"", unknown);
    touchpoint(body, sizeof body, ref);
    r = post("/v1/touchpoints", &partner, body);
    only_error(&r, 403, "/customer_email", &said_unknown);
    ck_assert_str_eq(said_known, said_unknown);
    free(said_known);
    free(said_unknown);

    /* A key that reads customers still names them by e-mail. */
    snprintf(ref, sizeof ref, "\"customer_email\": \"%s\"", known);
    touchpoint(body, sizeof body, ref);
    r = post("/v1/touchpoints", &reader, body);
    ck_assert_msg(r.status == 201, "answered %ld: %.300s", r.status, r.body);
    http_response_free(&r);
}
END_TEST

START_TEST(making_customers_by_email_answers_alike_known_or_not)
{
    char known[64], unknown[64], ref[200], body[512];
    harness_unique(known, sizeof known, "known");
    strcat(known, "@example.com");
    harness_unique(unknown, sizeof unknown, "unknown");
    strcat(unknown, "@example.com");
    new_customer(known);
    const char *emails[] = {known, unknown};
    for (int i = 0; i < 2; i++) {
        snprintf(ref, sizeof ref, "\"customer_email\": \"%s\", \"create_customer\": true",
                 emails[i]);
        touchpoint(body, sizeof body, ref);
        http_response r = post("/v1/touchpoints", &maker, body);
        ck_assert_msg(r.status == 201, "answered %ld: %.300s", r.status, r.body);
        json_t *receipt = http_response_json(&r);
        http_response_free(&r);
        ck_assert_uint_eq(json_object_size(receipt), 2); /* id and status: nothing else */
        ck_assert_str_eq(json_string_value(json_object_get(receipt, "status")), "created");
        ck_assert(json_is_integer(json_object_get(receipt, "id")));
        json_decref(receipt);
        ck_assert_int_eq(customers_with_email(emails[i]), 1);
    }
}
END_TEST

START_TEST(reference_errors_are_one_undifferentiated_rejection)
{
    /* Three reasons a reference names no one customer: an unknown id, an
     * unknown external id, an e-mail two customers share. */
    char shared[64], ext[64], ref[200], body[512];
    harness_unique(shared, sizeof shared, "shared");
    strcat(shared, "@example.com");
    new_customer(shared);
    new_customer(shared);
    harness_unique(ext, sizeof ext, "nobody");

    char *said[3] = {NULL, NULL, NULL};
    touchpoint(body, sizeof body, "\"customer_id\": 9000000000000");
    http_response r = post("/v1/touchpoints", &partner, body);
    only_error(&r, 422, "/customer_id", &said[0]);
    snprintf(ref, sizeof ref, "\"customer_external_id\": {\"source\": \"scopes\", \"id\": \"%s\"}",
             ext);
    touchpoint(body, sizeof body, ref);
    r = post("/v1/touchpoints", &partner, body);
    only_error(&r, 422, "/customer_external_id", &said[1]);
    snprintf(ref, sizeof ref, "\"customer_email\": \"%s\", \"create_customer\": true", shared);
    touchpoint(body, sizeof body, ref);
    r = post("/v1/touchpoints", &maker, body);
    only_error(&r, 422, "/customer_email", &said[2]);
    ck_assert_str_eq(said[0], said[1]);
    ck_assert_str_eq(said[0], said[2]);
    ck_assert_int_eq(customers_with_email(shared), 2); /* and no third was made */

    /* A key that reads customers is told why. */
    snprintf(ref, sizeof ref, "\"customer_email\": \"%s\"", shared);
    touchpoint(body, sizeof body, ref);
    r = post("/v1/touchpoints", &reader, body);
    char *why = NULL;
    only_error(&r, 422, "/customer_email", &why);
    ck_assert_ptr_nonnull(strstr(why, "several customers"));
    free(why);
    for (int i = 0; i < 3; i++)
        free(said[i]);
}
END_TEST

START_TEST(a_partner_gets_a_receipt_that_names_no_customer)
{
    char email[64], body[512], ref[64];
    harness_unique(email, sizeof email, "receipt");
    strcat(email, "@example.com");
    long long customer = new_customer(email);
    snprintf(ref, sizeof ref, "\"customer_id\": %lld", customer);
    touchpoint(body, sizeof body, ref);

    http_response r = post("/v1/touchpoints", &partner, body);
    ck_assert_msg(r.status == 201, "answered %ld: %.300s", r.status, r.body);
    json_t *receipt = http_response_json(&r);
    char location[64];
    snprintf(location, sizeof location, "/v1/touchpoints/%lld",
             (long long)json_integer_value(json_object_get(receipt, "id")));
    ck_assert_str_eq(http_response_header(&r, "Location"), location);
    http_response_free(&r);
    ck_assert_uint_eq(json_object_size(receipt), 2);
    ck_assert_str_eq(json_string_value(json_object_get(receipt, "status")), "created");

    /* The same event again: a duplicate, still only a receipt. */
    r = post("/v1/touchpoints", &partner, body);
    ck_assert_msg(r.status == 200, "answered %ld: %.300s", r.status, r.body);
    json_t *again = http_response_json(&r);
    http_response_free(&r);
    ck_assert_uint_eq(json_object_size(again), 2);
    ck_assert_str_eq(json_string_value(json_object_get(again, "status")), "duplicate");
    ck_assert_int_eq(json_integer_value(json_object_get(again, "id")),
                     json_integer_value(json_object_get(receipt, "id")));
    json_decref(again);
    json_decref(receipt);

    /* A key that may read both sees the touchpoint with its customer. */
    r = post("/v1/touchpoints", &reader, body);
    ck_assert_msg(r.status == 200, "answered %ld: %.300s", r.status, r.body);
    json_t *full = http_response_json(&r);
    http_response_free(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(full, "customer_id")), customer);
    json_decref(full);
}
END_TEST

START_TEST(a_partner_batch_names_no_customer_and_tells_no_reason_apart)
{
    char shared[64], ext[64], ref[200], items[3][512], batch[2000];
    harness_unique(shared, sizeof shared, "bshared");
    strcat(shared, "@example.com");
    new_customer(shared);
    new_customer(shared);
    harness_unique(ext, sizeof ext, "bnobody");
    long long customer = new_customer(ext);
    snprintf(ref, sizeof ref, "\"customer_id\": %lld", customer);
    touchpoint(items[0], sizeof items[0], ref);
    touchpoint(items[1], sizeof items[1], "\"customer_id\": 9000000000000");
    snprintf(ref, sizeof ref, "\"customer_external_id\": {\"source\": \"scopes\", \"id\": \"%s\"}",
             ext);
    touchpoint(items[2], sizeof items[2], ref);
    snprintf(batch, sizeof batch, "[%s, %s, %s]", items[0], items[1], items[2]);
    http_response r = post("/v1/touchpoints/batch", &partner, batch);
    ck_assert_msg(r.status == 200, "answered %ld: %.300s", r.status, r.body);
    ck_assert_ptr_null(strstr(r.body, "\"customer_id\":")); /* a member, not a field name */
    json_t *report = http_response_json(&r);
    http_response_free(&r);
    json_t *list = json_object_get(report, "items");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "status")),
                     "created");
    const char *said[2];
    for (int i = 1; i <= 2; i++) {
        json_t *item = json_array_get(list, (size_t)i);
        ck_assert_str_eq(json_string_value(json_object_get(item, "status")), "rejected");
        said[i - 1] = json_string_value(
            json_object_get(json_array_get(json_object_get(item, "errors"), 0), "message"));
    }
    ck_assert_str_eq(said[0], said[1]);
    json_decref(report);
}
END_TEST


/* ---- the scope matrix ------------------------------------------------------------ */

enum { MAX_ROUTES = 128, MAX_KEYS = 32 };

typedef struct route_row {
    char method[16];
    char pattern[160];
    char scope[48]; /* "-": no key needed */
} route_row;

/* The route table as crmd prints it (`crmd routes`: router_table(), one
 * "METHOD PATTERN SCOPE" line a route), so a new route is in the matrix
 * without anyone adding it here. */
static size_t read_route_table(route_row *rows, size_t max)
{
    char command[600];
    snprintf(command, sizeof command, "'%s' routes", harness_env("CRMD_BIN"));
    FILE *f = popen(command, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = 0;
    char line[256];
    while (fgets(line, sizeof line, f) != NULL) {
        ck_assert_uint_lt(n, max);
        route_row *r = &rows[n];
        ck_assert_msg(sscanf(line, "%15s %159s %47s", r->method, r->pattern, r->scope) == 3,
                      "unexpected line from crmd routes: %s", line);
        n++;
    }
    ck_assert_int_eq(pclose(f), 0);
    return n;
}

/* The pattern with harmless values: ids that name nothing, so no request
 * of the matrix changes anything. */
static void concrete_path(const char *pattern, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = pattern; *p && o + 1 < size;) {
        if (*p != '{') {
            out[o++] = *p++;
            continue;
        }
        const char *end = strchr(p, '}');
        ck_assert_ptr_nonnull(end);
        const char *value = strncmp(p, "{source}", 8) == 0        ? "matrix"
                            : strncmp(p, "{external_id}", 13) == 0 ? "nobody-matrix"
                                                                   : "9000000000000";
        o += (size_t)snprintf(out + o, size - o, "%s", value);
        p = end + 1;
    }
    out[o < size ? o : size - 1] = '\0';
}

typedef struct matrix_key {
    unsigned scopes; /* 0: no key at all */
    char name[48];
    api_key key;
} matrix_key;

/* No key, then one key per scope crmd knows (admin included). */
static size_t make_matrix_keys(matrix_key *keys, size_t max)
{
    size_t n = 0;
    keys[n++] = (matrix_key){.scopes = 0, .name = "(no key)"};
    for (unsigned bit = 1; bit != 0 && n < max; bit <<= 1) {
        const char *name = crm_scope_name(bit);
        if (name == NULL)
            continue;
        matrix_key *k = &keys[n++];
        k->scopes = bit;
        snprintf(k->name, sizeof k->name, "%s", name);
        ck_assert_msg(api_key_create(name, &k->key), "could not make a %s key", name);
    }
    return n;
}

/* 401 without a key, 403 for a key without every scope needed (admin has
 * them all; needs 0: any key), 0 when the key may pass. */
static long expected_refusal(unsigned key_scopes, unsigned needs)
{
    if (key_scopes == 0)
        return 401;
    if ((key_scopes & CRM_SCOPE_ADMIN) != 0 || (key_scopes & needs) == needs)
        return 0;
    return 403;
}

START_TEST(every_route_answers_every_single_scope_key_by_its_scope)
{
    static route_row routes[MAX_ROUTES];
    static matrix_key keys[MAX_KEYS];
    size_t nroutes = read_route_table(routes, MAX_ROUTES);
    ck_assert_uint_gt(nroutes, 20);
    size_t nkeys = make_matrix_keys(keys, MAX_KEYS);
    CURL *curl = curl_easy_init();
    ck_assert_ptr_nonnull(curl);
    int checked = 0;
    for (size_t i = 0; i < nroutes; i++) {
        const route_row *route = &routes[i];
        bool public = strcmp(route->scope, "-") == 0;
        /* "any-key": any valid key passes admission (the handler decides,
         * here with a 404 for the id that names nothing). */
        bool any_key = strcmp(route->scope, "any-key") == 0;
        unsigned needs = public || any_key ? 0 : crm_scope_from_name(route->scope);
        ck_assert_msg(public || any_key || needs != 0, "%s %s: scope '%s' unknown",
                      route->method, route->pattern, route->scope);
        char path[256];
        concrete_path(route->pattern, path, sizeof path);
        bool has_body = strcmp(route->method, "GET") != 0 && strcmp(route->method, "DELETE") != 0;
        for (size_t k = 0; k < nkeys; k++) {
            const matrix_key *key = &keys[k];
            http_call call = {.method = route->method,
                              .path = path,
                              .api_key = key->scopes ? key->key.secret : NULL,
                              /* a member no route knows: refused, nothing written */
                              .body = has_body ? "{\"matrix_probe\": true}" : NULL,
                              .curl = curl};
            http_response r = http_send(&srv, &call);
            long want_refusal = public ? 0 : expected_refusal(key->scopes, needs);
            if (want_refusal != 0) {
                ck_assert_msg(r.status == want_refusal, "%s %s with %s: %ld, not %ld: %.300s",
                              route->method, path, key->name, r.status, want_refusal, r.body);
                json_t *p = assert_problem(&r, want_refusal);
                if (want_refusal == 403) /* names the scope that is missing */
                    ck_assert_msg(strstr(json_string_value(json_object_get(p, "detail")),
                                         route->scope) != NULL,
                                  "%s %s: 403 without the scope: %.300s", route->method, path,
                                  r.body);
                json_decref(p);
            } else {
                bool passed = r.status != 401 && r.status != 403;
                ck_assert_msg(passed && r.status > 0 && r.status < 500,
                              "%s %s with %s: %ld: %.300s", route->method, path, key->name,
                              r.status, r.body);
            }
            http_response_free(&r);
            checked++;
        }
    }
    curl_easy_cleanup(curl);
    ck_assert_int_eq(checked, (int)(nroutes * nkeys));
}
END_TEST

Suite *scopes_suite(void)
{
    Suite *s = suite_create("scopes");
    TCase *tc = tcase_create("partner");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, creating_a_customer_needs_customers_write);
    tcase_add_test(tc, a_partner_cannot_probe_email_addresses);
    tcase_add_test(tc, making_customers_by_email_answers_alike_known_or_not);
    tcase_add_test(tc, reference_errors_are_one_undifferentiated_rejection);
    tcase_add_test(tc, a_partner_gets_a_receipt_that_names_no_customer);
    tcase_add_test(tc, a_partner_batch_names_no_customer_and_tells_no_reason_apart);
    suite_add_tcase(s, tc);

    tc = tcase_create("matrix");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 4);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, every_route_answers_every_single_scope_key_by_its_scope);
    suite_add_tcase(s, tc);
    return s;
}

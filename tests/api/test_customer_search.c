/*
 * test_customer_search.c — POST /v1/customers/search over real HTTP: the
 * customers a rule selects, compared with sets written by hand for
 * customers made with varied fields, tags, attributes and touchpoints;
 * paging with a small limit in each sort order returns every match once;
 * merged, deleted and erased customers never appear; a bad rule is a 422
 * naming its members by JSON pointers under /rule; a cursor continues only
 * the rule that returned it; hostile bodies (deep nesting, huge lists,
 * wrong types, large rules) never get a 500.
 *
 * Every rule is wrapped as {"all": [tags contains <this test's tag>, R]},
 * so that customers of other tests sharing the database never match.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static crmd_server srv;
static api_key writer, reader, tp_writer;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (writer.id == 0)
        ck_assert(api_key_create("customers:read,customers:write", &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("customers:read", &reader));
    if (tp_writer.id == 0)
        ck_assert(api_key_create("touchpoints:write", &tp_writer));
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* ---- helpers ------------------------------------------------------------------- */

static http_response send_json(const char *method, const char *path, const char *key,
                               const char *body)
{
    http_call call = {.method = method, .path = path, .api_key = key, .body = body};
    return http_send(&srv, &call);
}

static long long id_of(json_t *rep)
{
    return json_integer_value(json_object_get(rep, "id"));
}

/* Creates a customer from doc (taken) as the writer; returns its id. */
static long long create(json_t *doc)
{
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    http_response r = send_json("POST", "/v1/customers", writer.secret, body);
    free(body);
    ck_assert_msg(r.status == 201, "create answered %ld: %.400s", r.status, r.body);
    json_t *rep = http_response_json(&r);
    long long id = id_of(rep);
    json_decref(rep);
    http_response_free(&r);
    return id;
}

/* The RFC 3339 time days days (and a minute) before now. */
static void days_ago(int days, char *out, size_t size)
{
    time_t t = time(NULL) - (time_t)days * 86400 - 60;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Records a touchpoint of customer id: type, days ago, amount (0: none). */
static void touchpoint(long long id, const char *type, int days, int amount)
{
    char at[32], event[64];
    days_ago(days, at, sizeof at);
    harness_unique(event, sizeof event, "ev");
    json_t *doc = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "customer_id", (json_int_t)id,
                            "channel", "web", "type", type, "direction", "inbound", "occurred_at",
                            at, "source", "search-test", "event_id", event);
    if (amount > 0) {
        json_object_set_new(doc, "amount", json_integer(amount));
        json_object_set_new(doc, "currency", json_string("EUR"));
    }
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    http_response r = send_json("POST", "/v1/touchpoints", tp_writer.secret, body);
    free(body);
    ck_assert_msg(r.status == 201, "touchpoint answered %ld: %.400s", r.status, r.body);
    http_response_free(&r);
}

/* {"all": [{"field": "tags", "op": "contains", "value": tag}, inner]}
 * (inner taken; NULL: the tag alone). */
static json_t *scoped(const char *tag, json_t *inner)
{
    json_t *all = json_pack("[{s:s, s:s, s:s}]", "field", "tags", "op", "contains", "value", tag);
    if (inner != NULL)
        json_array_append_new(all, inner);
    return json_pack("{s:o}", "all", all);
}

/* POSTs {"rule": rule} (borrowed) to /v1/customers/search<query>. */
static http_response search(const json_t *rule, const char *query, const char *key)
{
    char path[2048];
    snprintf(path, sizeof path, "/v1/customers/search%s", query != NULL ? query : "");
    json_t *body = json_pack("{s:O}", "rule", rule);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    http_response r = send_json("POST", path, key, text);
    free(text);
    return r;
}

static int cmp_ids(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* Walks every page of rule in sort (NULL: the default) with limit, each
 * page 200 and no larger than limit; the ids seen, in order, into ids (at
 * most max). Fails on a repeated id. Returns how many were seen. */
static int walk(const json_t *rule, const char *sort, int limit, long long *ids, int max)
{
    int n = 0, pages = 0;
    char *after = NULL;
    do {
        char query[1024];
        snprintf(query, sizeof query, "?limit=%d%s%s%s%s", limit, sort ? "&sort=" : "",
                 sort ? sort : "", after ? "&after=" : "", after ? after : "");
        free(after);
        after = NULL;
        http_response r = search(rule, query, reader.secret);
        ck_assert_msg(r.status == 200, "%s: %ld %.400s", query, r.status, r.body);
        json_t *page = http_response_json(&r), *c;
        json_t *data = json_object_get(page, "data");
        ck_assert_msg(json_array_size(data) <= (size_t)limit, "a page over the limit: %s", r.body);
        size_t k;
        json_array_foreach(data, k, c)
        {
            ck_assert_int_lt(n, max);
            for (int i = 0; i < n; i++)
                ck_assert_msg(ids[i] != id_of(c), "customer %lld came twice", id_of(c));
            ids[n++] = id_of(c);
        }
        json_t *next = json_object_get(page, "next_cursor");
        ck_assert(json_is_string(next) || json_is_null(next));
        if (json_is_string(next))
            after = strdup(json_string_value(next));
        json_decref(page);
        http_response_free(&r);
        pages++;
    } while (after != NULL && pages < 100);
    ck_assert_ptr_null(after);
    return n;
}

/* Expects the walk of rule (taken) with limit 2 to give exactly the ids
 * want[0..nwant) in some order; name says which rule in failures. */
static void expect_set(json_t *rule, const long long *want, int nwant, const char *name)
{
    long long got[64], sorted_want[64];
    int n = walk(rule, NULL, 2, got, 64);
    json_decref(rule);
    for (int i = 0; i < nwant; i++)
        sorted_want[i] = want[i];
    qsort(got, (size_t)n, sizeof *got, cmp_ids);
    qsort(sorted_want, (size_t)nwant, sizeof *sorted_want, cmp_ids);
    char seen[512] = "";
    for (int i = 0; i < n && strlen(seen) < 480; i++)
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), " %lld", got[i]);
    ck_assert_msg(n == nwant, "%s: %d customers (%s), want %d", name, n, seen, nwant);
    for (int i = 0; i < n; i++)
        ck_assert_msg(got[i] == sorted_want[i], "%s: got%s", name, seen);
}

/* Expects a problem with status; when field is not NULL its errors[] names
 * field. */
static void expect_problem(http_response *r, long status, const char *field)
{
    json_t *p = assert_problem(r, status);
    if (field != NULL)
        ck_assert_msg(problem_names_field(p, field), "no error for %s in %.600s", field, r->body);
    json_decref(p);
    http_response_free(r);
}

/* POSTs raw body text and expects status naming field (may be NULL). */
static void expect_raw(const char *body, long status, const char *field)
{
    http_response r = send_json("POST", "/v1/customers/search", reader.secret, body);
    expect_problem(&r, status, field);
}

/* Six customers of tag with varied fields and touchpoints (see the sets in
 * the test below). */
static void make_six(const char *tag, long long *c)
{
    c[0] = create(json_pack("{s:s, s:{s:s}, s:s, s:[s,s], s:{s:i, s:s}}", "first_name", "Anna",
                            "address", "country", "IT", "lifecycle_stage", "lead", "tags", tag,
                            "vip", "attributes", "score", 10, "plan", "gold"));
    c[1] = create(json_pack("{s:s, s:{s:s}, s:s, s:[s], s:{s:i}}", "first_name", "Bruno", "address",
                            "country", "IT", "lifecycle_stage", "customer", "tags", tag,
                            "attributes", "score", 3));
    c[2] = create(json_pack("{s:s, s:{s:s}, s:s, s:[s,s], s:{s:s}}", "first_name", "Carla",
                            "address", "country", "FR", "lifecycle_stage", "customer", "tags", tag,
                            "vip", "attributes", "plan", "silver"));
    c[3] = create(json_pack("{s:s, s:{s:s}, s:s, s:[s]}", "first_name", "Dario", "address",
                            "country", "DE", "email", "dario@example.com", "tags", tag));
    c[4] = create(json_pack("{s:s, s:{s:s}, s:s, s:[s,s]}", "first_name", "Anita", "address",
                            "country", "IT", "lifecycle_stage", "loyal", "tags", tag, "vip"));
    c[5] = create(json_pack("{s:s, s:[s]}", "last_name", "Nocountry", "tags", tag));
    touchpoint(c[0], "purchase", 2, 50);
    touchpoint(c[0], "purchase", 10, 70);
    touchpoint(c[1], "purchase", 100, 100);
    touchpoint(c[2], "purchase", 5, 20);
    touchpoint(c[4], "page_view", 1, 0);
}

/* ---- what a rule selects --------------------------------------------------------- */

START_TEST(a_search_returns_exactly_the_customers_its_rule_selects)
{
    char tag[48];
    harness_unique(tag, sizeof tag, "srch");
    long long c[6];
    make_six(tag, c);
    const long long r1[] = {c[0], c[1], c[4]};
    expect_set(scoped(tag, json_pack("{s:s, s:s, s:s}", "field", "address.country", "op", "eq",
                                     "value", "IT")),
               r1, 3, "country eq IT");
    const long long r2[] = {c[0], c[2], c[4]};
    expect_set(scoped(tag, json_pack("{s:[{s:s, s:s, s:s}, {s:s, s:s, s:s}]}", "any", "field",
                                     "address.country", "op", "eq", "value", "FR", "field", "tags",
                                     "op", "contains", "value", "vip")),
               r2, 3, "FR or vip");
    /* c[5] has no country: the comparison is false, so its not is true */
    const long long r3[] = {c[2], c[3], c[5]};
    expect_set(scoped(tag, json_pack("{s:{s:s, s:s, s:s}}", "not", "field", "address.country", "op",
                                     "eq", "value", "IT")),
               r3, 3, "not country eq IT");
    const long long r4[] = {c[0], c[2]};
    expect_set(
        scoped(tag, json_pack("{s:{s:s, s:i}, s:s, s:s, s:i}", "touchpoints", "type", "purchase",
                              "within_days", 30, "agg", "count", "op", "gte", "value", 1)),
        r4, 2, "a purchase within 30 days");
    const long long r5[] = {c[0], c[1]};
    expect_set(scoped(tag, json_pack("{s:{s:s}, s:s, s:s, s:i}", "touchpoints", "type", "purchase",
                                     "agg", "sum", "op", "gte", "value", 100)),
               r5, 2, "purchases summing to 100 or more");
    const long long r6[] = {c[0]};
    expect_set(scoped(tag, json_pack("{s:s, s:s, s:i}", "field", "attributes.score", "op", "gt",
                                     "value", 5)),
               r6, 1, "attributes.score gt 5");
    const long long r7[] = {c[0], c[4]};
    expect_set(scoped(tag, json_pack("{s:s, s:s, s:s}", "field", "first_name", "op", "starts_with",
                                     "value", "An")),
               r7, 2, "first_name starts_with An");
    const long long r8[] = {c[0], c[4]};
    expect_set(scoped(tag, json_pack("{s:[{s:s, s:s, s:[s,s]}, {s:s, s:s, s:s}]}", "all", "field",
                                     "address.country", "op", "in", "value", "IT", "FR", "field",
                                     "lifecycle_stage", "op", "ne", "value", "customer")),
               r8, 2, "IT or FR and not a customer");
    const long long r9[] = {c[0], c[2]};
    expect_set(
        scoped(tag, json_pack("{s:{s:s}, s:s, s:s, s:{s:i}}", "touchpoints", "type", "purchase",
                              "agg", "last", "op", "gte", "value", "days_ago", 60)),
        r9, 2, "last purchase within 60 days (days_ago)");
    const long long r10[] = {c[3]};
    expect_set(scoped(tag, json_pack("{s:s, s:s}", "field", "email", "op", "exists")), r10, 1,
               "email exists");
    const long long r11[] = {c[0], c[1], c[2], c[3], c[4], c[5]};
    expect_set(scoped(tag, json_pack("{s:[]}", "all")), r11, 6, "all of []");
    expect_set(scoped(tag, json_pack("{s:[]}", "any")), NULL, 0, "any of []");
}
END_TEST

START_TEST(paging_in_every_sort_order_returns_each_match_once_in_order)
{
    char tag[48];
    harness_unique(tag, sizeof tag, "spage");
    const char *names[] = {"Elena", "Bianca", "Giulia", "Alba", "Franca", "Carla", "Dora"};
    long long made[7];
    for (int i = 0; i < 7; i++)
        made[i] = create(json_pack("{s:s, s:[s], s:{s:s}}", "first_name", names[i], "tags", tag,
                                   "address", "country", i == 3 ? "ES" : "IT"));
    json_t *rule = scoped(tag, json_pack("{s:s, s:s, s:s}", "field", "address.country", "op", "eq",
                                         "value", "IT")); /* all but Alba */
    long long got[16];
    for (int limit = 1; limit <= 3; limit++) {
        ck_assert_int_eq(walk(rule, "created_at", limit, got, 16), 6);
        for (int i = 0, k = 0; i < 7; i++)
            if (i != 3)
                ck_assert_int_eq(got[k++], made[i]);
        ck_assert_int_eq(walk(rule, "-created_at", limit, got, 16), 6);
        for (int i = 6, k = 0; i >= 0; i--)
            if (i != 3)
                ck_assert_int_eq(got[k++], made[i]);
    }
    /* name: Bianca, Carla, Dora, Elena, Franca, Giulia */
    const int by_name[] = {1, 5, 6, 0, 4, 2};
    ck_assert_int_eq(walk(rule, "name", 2, got, 16), 6);
    for (int k = 0; k < 6; k++)
        ck_assert_int_eq(got[k], made[by_name[k]]);
    json_decref(rule);
}
END_TEST

START_TEST(merged_deleted_and_erased_customers_never_appear)
{
    char tag[48], path[96];
    harness_unique(tag, sizeof tag, "sgone");
    long long live = create(json_pack("{s:s, s:[s]}", "first_name", "Live", "tags", tag));
    long long survivor = create(json_pack("{s:s, s:[s]}", "first_name", "Survivor", "tags", tag));
    long long merged = create(json_pack("{s:s, s:[s]}", "first_name", "Merged", "tags", tag));
    long long deleted = create(json_pack("{s:s, s:[s]}", "first_name", "Deleted", "tags", tag));
    long long erased = create(json_pack("{s:s, s:[s]}", "first_name", "Erased", "tags", tag));
    const long long before[] = {live, survivor, merged, deleted, erased};
    expect_set(scoped(tag, NULL), before, 5, "every one while live");
    /* a rule that an erased row (no tags, no name left) still satisfies:
     * created at or after the first of them */
    char get_path[64];
    snprintf(get_path, sizeof get_path, "/v1/customers/%lld", live);
    http_response r = http_get(&srv, get_path, reader.secret);
    json_t *rep = http_response_json(&r);
    char since[64];
    snprintf(since, sizeof since, "%s", json_string_value(json_object_get(rep, "created_at")));
    json_decref(rep);
    http_response_free(&r);

    snprintf(path, sizeof path, "/v1/customers/%lld/merge", survivor);
    char body[96];
    snprintf(body, sizeof body, "{\"merge_ids\": [%lld]}", merged);
    r = send_json("POST", path, writer.secret, body);
    ck_assert_msg(r.status == 200, "merge: %ld %.300s", r.status, r.body);
    http_response_free(&r);
    snprintf(path, sizeof path, "/v1/customers/%lld", deleted);
    r = http_delete(&srv, path, writer.secret);
    ck_assert_int_eq(r.status, 204);
    http_response_free(&r);
    snprintf(path, sizeof path, "/v1/customers/%lld/erase", erased);
    r = send_json("POST", path, writer.secret, "{\"confirm\": true}");
    ck_assert_msg(r.status == 200, "erase: %ld %.300s", r.status, r.body);
    http_response_free(&r);

    const long long after[] = {live, survivor};
    expect_set(scoped(tag, NULL), after, 2, "live ones after merge, delete and erase");
    /* Not scoped by the tag: every customer created since the first one,
     * which the rows of the merged, deleted and erased ones still are. */
    json_t *recent =
        json_pack("{s:s, s:s, s:s}", "field", "created_at", "op", "gte", "value", since);
    long long got[256];
    int n = walk(recent, NULL, 50, got, 256);
    json_decref(recent);
    bool saw_live = false;
    for (int i = 0; i < n; i++) {
        ck_assert_msg(got[i] != merged && got[i] != deleted && got[i] != erased,
                      "customer %lld is not live but was found", got[i]);
        saw_live = saw_live || got[i] == live;
    }
    ck_assert(saw_live);
    PGconn *db = harness_db_connect();
    char ids[96];
    snprintf(ids, sizeof ids, "%lld", erased);
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(*) FROM customers WHERE id = $1::bigint "
                                        "AND status = 'erased'",
                                        ids),
                     1);
    PQfinish(db);
}
END_TEST

/* ---- errors ---------------------------------------------------------------------- */

START_TEST(a_bad_rule_is_a_422_naming_each_member_under_rule)
{
    expect_raw("{\"rule\": {\"all\": [{\"field\": \"address.country\", \"op\": \"eq\", "
               "\"value\": \"IT\"}, {\"field\": \"nope\", \"op\": \"eq\", \"value\": 1}, "
               "{\"field\": \"first_name\", \"op\": \"between\", \"value\": \"a\"}]}}",
               422, "/rule/all/1/field");
    expect_raw("{\"rule\": {\"all\": [{\"field\": \"address.country\", \"op\": \"eq\", "
               "\"value\": \"IT\"}, {\"field\": \"nope\", \"op\": \"eq\", \"value\": 1}, "
               "{\"field\": \"first_name\", \"op\": \"between\", \"value\": \"a\"}]}}",
               422, "/rule/all/2/op");
    expect_raw("{}", 422, "/rule");
    expect_raw("{\"rule\": 7}", 422, "/rule");
    expect_raw("{\"rule\": {\"all\": []}, \"limit\": 5}", 422, "/limit");
    expect_raw("{\"rule\": {\"any\": [{\"touchpoints\": {\"type\": \"purchase\", \"within_days\": "
               "0}, \"agg\": \"count\", \"op\": \"gte\", \"value\": 1}]}}",
               422, "/rule/any/0/touchpoints/within_days");
    expect_raw("{\"rule\": {\"not\": {\"field\": \"created_at\", \"op\": \"gt\", \"value\": "
               "{\"days_ago\": -1}}}}",
               422, NULL);
    /* both an unknown member and the rule's own problem */
    http_response r = send_json("POST", "/v1/customers/search", reader.secret,
                                "{\"rule\": {\"all\": [{\"op\": \"eq\"}]}, \"cursor\": \"x\"}");
    json_t *p = assert_problem(&r, 422);
    ck_assert(problem_names_field(p, "/cursor"));
    ck_assert(problem_names_field(p, "/rule/all/0"));
    json_decref(p);
    http_response_free(&r);
}
END_TEST

START_TEST(bad_json_is_400_and_bad_limit_sort_or_scope_are_refused)
{
    expect_raw("{\"rule\": ", 400, NULL);
    expect_raw("[1, 2]", 422, NULL);
    http_call call = {.method = "POST", .path = "/v1/customers/search", .api_key = reader.secret};
    http_response r = http_send(&srv, &call); /* no body */
    expect_problem(&r, 400, NULL);
    call.body = "rule=1";
    call.content_type = "application/x-www-form-urlencoded";
    r = http_send(&srv, &call);
    expect_problem(&r, 415, NULL);
    json_t *rule = json_pack("{s:[]}", "all");
    r = search(rule, "?limit=0", reader.secret);
    expect_problem(&r, 422, "limit");
    r = search(rule, "?limit=201", reader.secret);
    expect_problem(&r, 422, "limit");
    r = search(rule, "?sort=size", reader.secret);
    expect_problem(&r, 422, "sort");
    r = search(rule, "?q=rossi", reader.secret);
    expect_problem(&r, 422, "q");
    r = search(rule, "?after=bm90LWEtY3Vyc29y", reader.secret);
    expect_problem(&r, 422, "after");
    r = search(rule, NULL, tp_writer.secret);
    expect_problem(&r, 403, NULL);
    r = search(rule, NULL, NULL);
    expect_problem(&r, 401, NULL);
    json_decref(rule);
}
END_TEST

/* The next_cursor of the first page (limit 1) of rule in sort; the caller
 * frees it. */
static char *first_cursor(const json_t *rule, const char *sort)
{
    char query[64];
    snprintf(query, sizeof query, "?limit=1&sort=%s", sort);
    http_response r = search(rule, query, reader.secret);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    json_t *page = http_response_json(&r);
    const char *next = json_string_value(json_object_get(page, "next_cursor"));
    ck_assert_ptr_nonnull(next);
    char *out = strdup(next);
    json_decref(page);
    http_response_free(&r);
    return out;
}

START_TEST(a_cursor_continues_only_the_rule_and_sort_that_returned_it)
{
    char tag[48], query[1024];
    harness_unique(tag, sizeof tag, "scur");
    for (int i = 0; i < 3; i++)
        create(json_pack("{s:s, s:[s], s:{s:s}}", "first_name", "Cur", "tags", tag, "address",
                         "country", "IT"));
    json_t *a = scoped(
        tag, json_pack("{s:s, s:s, s:s}", "field", "address.country", "op", "eq", "value", "IT"));
    json_t *b = scoped(
        tag, json_pack("{s:s, s:s, s:s}", "field", "address.country", "op", "ne", "value", "FR"));
    const char *sorts[] = {"created_at", "name"};
    for (int s = 0; s < 2; s++) {
        char *cursor = first_cursor(a, sorts[s]);
        snprintf(query, sizeof query, "?limit=1&sort=%s&after=%s", sorts[s], cursor);
        http_response r = search(b, query, reader.secret); /* another rule */
        json_t *p = assert_problem(&r, 422);
        ck_assert_msg(problem_names_field(p, "after"), "%s", r.body);
        ck_assert_ptr_nonnull(strstr(r.body, "another rule"));
        json_decref(p);
        http_response_free(&r);
        /* the same rule, its members in another order and spaced: continues */
        char *same = json_dumps(a, JSON_INDENT(2) | JSON_SORT_KEYS);
        char body[1024];
        snprintf(body, sizeof body, "{\"rule\": %s}", same);
        free(same);
        char path[1100];
        snprintf(path, sizeof path, "/v1/customers/search%s", query);
        r = send_json("POST", path, reader.secret, body);
        ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
        http_response_free(&r);
        /* another sort order */
        snprintf(query, sizeof query, "?limit=1&sort=%s&after=%s", s == 0 ? "name" : "created_at",
                 cursor);
        r = search(a, query, reader.secret);
        expect_problem(&r, 422, "after");
        /* the list's own endpoint refuses a search's cursor */
        snprintf(query, sizeof query, "/v1/customers?limit=1&sort=%s&after=%s", sorts[s], cursor);
        r = http_get(&srv, query, reader.secret);
        expect_problem(&r, 422, "after");
        free(cursor);
    }
    /* and a search refuses the list's */
    snprintf(query, sizeof query, "/v1/customers?limit=1&tag=%s", tag);
    http_response r = http_get(&srv, query, reader.secret);
    json_t *page = http_response_json(&r);
    const char *list_cursor = json_string_value(json_object_get(page, "next_cursor"));
    ck_assert_ptr_nonnull(list_cursor);
    snprintf(query, sizeof query, "?limit=1&after=%s", list_cursor);
    json_decref(page);
    http_response_free(&r);
    r = search(a, query, reader.secret);
    expect_problem(&r, 422, "after");
    json_decref(a);
    json_decref(b);
}
END_TEST

/* ---- hostile input --------------------------------------------------------------- */

/* {"not": {"not": ... {"all": []} ...}} levels deep, as text; caller frees. */
static char *nested_not(int levels)
{
    size_t size = (size_t)levels * 10 + 64;
    char *s = malloc(size);
    ck_assert_ptr_nonnull(s);
    strcpy(s, "{\"rule\": ");
    for (int i = 0; i < levels; i++)
        strcat(s, "{\"not\": ");
    strcat(s, "{\"all\": []}");
    for (int i = 0; i < levels; i++)
        strcat(s, "}");
    strcat(s, "}");
    return s;
}

START_TEST(hostile_rules_are_refused_without_a_500)
{
    char *deep = nested_not(8); /* 9 levels */
    expect_raw(deep, 422, "/rule/not/not/not/not/not/not/not/not");
    free(deep);
    deep = nested_not(7); /* 8 levels: allowed */
    http_response r = send_json("POST", "/v1/customers/search?limit=1", reader.secret, deep);
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    free(deep);
    deep = nested_not(5000); /* past the JSON parser's own depth */
    r = send_json("POST", "/v1/customers/search", reader.secret, deep);
    ck_assert_msg(r.status == 400 || r.status == 422, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    free(deep);

    /* an "in" of 1001 values */
    json_t *many = json_array();
    for (int i = 0; i < 1001; i++)
        json_array_append_new(many, json_sprintf("v%d", i));
    json_t *rule = json_pack("{s:s, s:s, s:O}", "field", "first_name", "op", "in", "value", many);
    r = search(rule, NULL, reader.secret);
    expect_problem(&r, 422, "/rule/value");
    json_decref(rule);
    json_array_remove(many, 0);
    rule = json_pack("{s:s, s:s, s:O}", "field", "first_name", "op", "in", "value", many);
    r = search(rule, "?limit=1", reader.secret); /* 1000: allowed */
    ck_assert_msg(r.status == 200, "%ld %.300s", r.status, r.body);
    http_response_free(&r);
    json_decref(rule);
    json_decref(many);

    /* 201 nodes */
    json_t *wide = json_array();
    for (int i = 0; i < 200; i++)
        json_array_append_new(wide, json_pack("{s:[]}", "all"));
    rule = json_pack("{s:o}", "any", wide);
    r = search(rule, NULL, reader.secret);
    expect_problem(&r, 422, NULL);
    json_decref(rule);

    /* wrong types everywhere */
    const char *wrong[] = {
        "{\"rule\": {\"all\": {}}}",
        "{\"rule\": {\"all\": [1, \"x\", null, true]}}",
        "{\"rule\": {\"field\": 1, \"op\": \"eq\", \"value\": 1}}",
        "{\"rule\": {\"field\": \"first_name\", \"op\": [\"eq\"], \"value\": \"a\"}}",
        "{\"rule\": {\"field\": \"first_name\", \"op\": \"eq\", \"value\": {\"a\": 1}}}",
        "{\"rule\": {\"field\": \"created_at\", \"op\": \"gt\", \"value\": \"yesterday\"}}",
        "{\"rule\": {\"field\": \"metrics.churn_risk\", \"op\": \"gte\", \"value\": 1e999}}",
        "{\"rule\": {\"field\": \"attributes.a.b.c.d.e.f.g.h.i\", \"op\": \"exists\"}}",
        "{\"rule\": {\"touchpoints\": 5, \"agg\": \"count\", \"op\": \"gte\", \"value\": 1}}",
        "{\"rule\": {\"touchpoints\": {}, \"agg\": \"median\", \"op\": \"gte\", \"value\": 1}}",
        "{\"rule\": {\"all\": [], \"any\": []}}",
        "{\"rule\": {\"field\": \"first_name\", \"op\": \"eq\", \"value\": \"a\\u0000b\"}}",
        "{\"rule\": {\"field\": \"first_name\\u0000\", \"op\": \"eq\", \"value\": \"a\"}}",
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        r = send_json("POST", "/v1/customers/search", reader.secret, wrong[i]);
        ck_assert_msg(r.status == 422 || r.status == 400, "%s: %ld %.300s", wrong[i], r.status,
                      r.body);
        json_decref(assert_problem(&r, r.status));
        http_response_free(&r);
    }

    /* a body over the route's limit (256 KiB) */
    size_t big = 300 * 1024;
    char *huge = malloc(big + 64);
    ck_assert_ptr_nonnull(huge);
    strcpy(huge, "{\"rule\": {\"field\": \"first_name\", \"op\": \"eq\", \"value\": \"");
    size_t at = strlen(huge);
    memset(huge + at, 'a', big);
    strcpy(huge + at + big, "\"}}");
    r = send_json("POST", "/v1/customers/search", reader.secret, huge);
    expect_problem(&r, 413, NULL);
    free(huge);
}
END_TEST

START_TEST(a_rule_with_more_values_than_the_fast_path_holds_still_answers)
{
    /* 150 comparisons (one value each, plus the tag's): more parameters
     * than the event loop's query holds, so a worker runs it. */
    char tag[48];
    harness_unique(tag, sizeof tag, "sbig");
    long long want[1];
    want[0] = create(json_pack("{s:s, s:[s]}", "first_name", "Name77", "tags", tag));
    create(json_pack("{s:s, s:[s]}", "first_name", "Other", "tags", tag));
    json_t *any = json_array();
    for (int i = 0; i < 150; i++) {
        char name[16];
        snprintf(name, sizeof name, "Name%d", i);
        json_array_append_new(
            any, json_pack("{s:s, s:s, s:s}", "field", "first_name", "op", "eq", "value", name));
    }
    json_t *rule = scoped(tag, json_pack("{s:o}", "any", any));
    long long got[4];
    ck_assert_int_eq(walk(rule, NULL, 1, got, 4), 1);
    ck_assert_int_eq(got[0], want[0]);
    json_decref(rule);
}
END_TEST

Suite *customer_search_suite(void)
{
    Suite *s = suite_create("customer_search");
    TCase *tc = tcase_create("customer_search");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_search_returns_exactly_the_customers_its_rule_selects);
    tcase_add_test(tc, paging_in_every_sort_order_returns_each_match_once_in_order);
    tcase_add_test(tc, merged_deleted_and_erased_customers_never_appear);
    tcase_add_test(tc, a_bad_rule_is_a_422_naming_each_member_under_rule);
    tcase_add_test(tc, bad_json_is_400_and_bad_limit_sort_or_scope_are_refused);
    tcase_add_test(tc, a_cursor_continues_only_the_rule_and_sort_that_returned_it);
    tcase_add_test(tc, hostile_rules_are_refused_without_a_500);
    tcase_add_test(tc, a_rule_with_more_values_than_the_fast_path_holds_still_answers);
    suite_add_tcase(s, tc);
    return s;
}

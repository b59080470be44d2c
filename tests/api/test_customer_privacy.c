/*
 * test_customer_privacy.c — the person's rights over real HTTP:
 * POST /v1/customers/{id}/erase leaves no personal data in any table of the
 * database (every row of every table is searched for the values used), is
 * audited and idempotent, and the id then answers 404 everywhere;
 * GET /v1/customers/{id}/export holds everything; ?expand=consents; and
 * Idempotency-Key on POST /v1/customers/{id}/consents.
 */
#include "harness.h"

#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static crmd_server srv;
static api_key writer, reader, exporter;

static void setup(void)
{
    crmd_fixture_start(&srv, NULL);
    if (writer.id == 0)
        ck_assert(api_key_create("customers:read,customers:write", &writer));
    if (reader.id == 0)
        ck_assert(api_key_create("customers:read", &reader));
    if (exporter.id == 0)
        ck_assert(api_key_create("customers:export", &exporter));
}

static void teardown(void)
{
    crmd_fixture_stop(&srv);
}

/* ---- helpers ------------------------------------------------------------------- */

static http_response send_json(const char *method, const char *path, const char *key,
                               const char *body, const char *const *headers)
{
    http_call call = {
        .method = method, .path = path, .api_key = key, .body = body, .headers = headers};
    return http_send(&srv, &call);
}

static json_t *expect_json(http_response *r, long status)
{
    ck_assert_msg(r->status == status, "answered %ld, not %ld: %.400s", r->status, status, r->body);
    json_t *doc = http_response_json(r);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

static void expect_problem(http_response *r, long status, const char *field)
{
    json_t *p = assert_problem(r, status);
    if (field != NULL)
        ck_assert_msg(problem_names_field(p, field), "no error for %s in %.400s", field, r->body);
    json_decref(p);
    http_response_free(r);
}

static json_t *create(const char *body, const char *const *headers)
{
    http_response r = send_json("POST", "/v1/customers", writer.secret, body, headers);
    json_t *doc = expect_json(&r, 201);
    http_response_free(&r);
    return doc;
}

static long long id_of(json_t *rep)
{
    return json_integer_value(json_object_get(rep, "id"));
}

static void post_ok(const char *path, const char *body, long status)
{
    http_response r = send_json("POST", path, writer.secret, body, NULL);
    ck_assert_msg(r.status == status, "%s answered %ld: %.400s", path, r.status, r.body);
    http_response_free(&r);
}

/* Counts, in every table of the public schema, the rows whose text holds
 * needle; "table:n" of each hit in where. The table names come from the
 * catalog (quoted with %I), the needle is quoted with %L. */
static long scan_database(const char *needle, char *where, size_t size)
{
    static const char *const sql =
        "SELECT t.tablename, h.n FROM pg_tables t, LATERAL (SELECT (xpath('/row/n/text()', "
        "query_to_xml(format('SELECT count(*) AS n FROM %I.%I x WHERE x::text ILIKE %L', "
        "t.schemaname, t.tablename, '%' || $1 || '%'), false, true, '')))[1]::text::bigint AS n) h "
        "WHERE t.schemaname = 'public'";
    PGconn *c = harness_db_connect();
    const char *params[] = {needle};
    PGresult *res = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "scan: %s", PQerrorMessage(c));
    ck_assert_int_gt(PQntuples(res), 3);
    long total = 0;
    size_t used = 0;
    where[0] = '\0';
    for (int r = 0; r < PQntuples(res); r++) {
        long n = atol(PQgetvalue(res, r, 1));
        total += n;
        if (n > 0 && used < size)
            used +=
                (size_t)snprintf(where + used, size - used, "%s:%ld ", PQgetvalue(res, r, 0), n);
    }
    PQclear(res);
    PQfinish(c);
    return total;
}

static long count_for(const char *sql, long long id)
{
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    const char *params[] = {idbuf};
    PGconn *c = harness_db_connect();
    PGresult *res = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return n;
}

/* ---- erasure ----------------------------------------------------------------------- */

START_TEST(erase_leaves_no_personal_data_anywhere_in_the_database)
{
    char last[64], local[64], attr[64], ext[64], source[64], idem[80], digits[16];
    char body[2048], path[96];
    harness_unique(last, sizeof last, "Qwlast");
    harness_unique(local, sizeof local, "qwmail");
    harness_unique(attr, sizeof attr, "qwattr");
    harness_unique(ext, sizeof ext, "qwext");
    harness_unique(source, sizeof source, "qwsrc");
    harness_unique(idem, sizeof idem, "Idempotency-Key: k");
    snprintf(digits, sizeof digits, "%08u", randombytes_uniform(100000000));
    snprintf(body, sizeof body,
             "{\"first_name\": \"Grace\", \"last_name\": \"%s\", \"email\": \"%s@Example.com\", "
             "\"phone\": \"+44 20 %s\", \"address\": {\"country\": \"GB\", \"city\": \"London\", "
             "\"postal_code\": \"SW1A 1AA\", \"street\": \"%s Road 1\"}, \"location\": "
             "{\"latitude\": 51.5, \"longitude\": -0.12}, \"tags\": [\"%s\"], \"attributes\": "
             "{\"loyalty\": {\"card\": \"%s\"}}, \"external_ids\": [{\"source\": \"pos\", "
             "\"id\": \"%s\"}]}",
             last, local, digits, last, attr, attr, ext);
    const char *headers[] = {idem, NULL};
    json_t *c = create(body, headers);
    long long id = id_of(c);
    snprintf(path, sizeof path, "/v1/customers/%lld", id);
    snprintf(body, sizeof body, "{\"last_name\": \"%s-2\", \"display_name\": \"%s\"}", last, last);
    http_response r = send_json("PATCH", path, writer.secret, body, NULL);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", id);
    snprintf(body, sizeof body,
             "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": \"granted\", "
             "\"source\": \"%s\"}",
             source);
    post_ok(path, body, 201);

    const char *needles[] = {last, local, attr, ext, source, digits};
    char where[1024];
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        ck_assert_msg(scan_database(needles[i], where, sizeof where) > 0,
                      "the scan does not see %s before the erasure", needles[i]);

    snprintf(path, sizeof path, "/v1/customers/%lld/erase", id);
    r = send_json("POST", path, writer.secret, "{\"confirm\": true}", NULL);
    json_t *stone = expect_json(&r, 200);
    ck_assert_str_eq(json_string_value(json_object_get(stone, "status")), "erased");
    ck_assert_int_eq(json_integer_value(json_object_get(stone, "version")), 3);
    ck_assert_str_eq(http_response_header(&r, "ETag"), "\"3\"");
    http_response_free(&r);

    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++) {
        long hits = scan_database(needles[i], where, sizeof where);
        ck_assert_msg(hits == 0, "%s is still in the database after erasure: %s", needles[i],
                      where);
    }
    ck_assert_int_eq(count_for("SELECT count(*) FROM customers WHERE id = $1 AND status = "
                               "'erased' AND latitude IS NULL AND postal_code IS NULL",
                               id),
                     1);
    ck_assert_int_eq(count_for("SELECT count(*) FROM customer_consents WHERE customer_id = $1", id),
                     1);
    json_decref(stone);
    json_decref(c);
}
END_TEST

START_TEST(erase_needs_write_scope_and_confirmation_and_a_known_id)
{
    json_t *c = create("{\"first_name\": \"Careful\"}", NULL);
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/erase", id_of(c));
    http_response r = send_json("POST", path, reader.secret, "{\"confirm\": true}", NULL);
    expect_problem(&r, 403, NULL);
    r = send_json("POST", path, NULL, "{\"confirm\": true}", NULL);
    expect_problem(&r, 401, NULL);
    r = send_json("POST", path, writer.secret, "{}", NULL);
    expect_problem(&r, 422, "/confirm");
    r = send_json("POST", path, writer.secret, "{\"confirm\": true, \"reason\": \"x\"}", NULL);
    expect_problem(&r, 422, "/reason");
    r = send_json("POST", path, writer.secret, "{\"confirm\": ", NULL);
    expect_problem(&r, 400, NULL);
    ck_assert_int_eq(count_for("SELECT count(*) FROM customers WHERE id = $1 AND status = "
                               "'active' AND first_name = 'Careful'",
                               id_of(c)),
                     1);
    r = send_json("POST", "/v1/customers/9000000000000/erase", writer.secret, "{\"confirm\": true}",
                  NULL);
    expect_problem(&r, 404, NULL);
    r = send_json("POST", "/v1/customers/abc/erase", writer.secret, "{\"confirm\": true}", NULL);
    expect_problem(&r, 404, NULL);
    json_decref(c);
}
END_TEST

START_TEST(an_erased_id_answers_404_and_erasing_again_answers_the_tombstone)
{
    json_t *c = create("{\"first_name\": \"Tomb\", \"email\": \"tomb@example.com\"}", NULL);
    long long id = id_of(c);
    char path[96], sub[128];
    snprintf(path, sizeof path, "/v1/customers/%lld", id);
    snprintf(sub, sizeof sub, "%s/erase", path);
    http_response r = send_json("POST", sub, writer.secret, "{\"confirm\": true}", NULL);
    json_t *first = expect_json(&r, 200);
    http_response_free(&r);
    r = send_json("POST", sub, writer.secret, "{\"confirm\": true}", NULL);
    json_t *second = expect_json(&r, 200);
    http_response_free(&r);
    ck_assert(json_equal(first, second));

    r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 404, NULL);
    snprintf(sub, sizeof sub, "%s?expand=consents", path);
    r = http_get(&srv, sub, reader.secret);
    expect_problem(&r, 404, NULL);
    r = send_json("PATCH", path, writer.secret, "{\"first_name\": \"Again\"}", NULL);
    expect_problem(&r, 404, NULL);
    r = http_delete(&srv, path, writer.secret);
    expect_problem(&r, 404, NULL);
    snprintf(sub, sizeof sub, "%s/consents", path);
    r = send_json("POST", sub, writer.secret,
                  "{\"channel\": \"sms\", \"purpose\": \"service\", \"status\": \"granted\", "
                  "\"source\": \"app\"}",
                  NULL);
    expect_problem(&r, 404, NULL);
    r = http_get(&srv, sub, reader.secret);
    expect_problem(&r, 404, NULL);
    snprintf(sub, sizeof sub, "%s/export", path);
    r = http_get(&srv, sub, exporter.secret);
    expect_problem(&r, 404, NULL);

    /* The audit trail stays, redacted, ending with the erasure. */
    snprintf(sub, sizeof sub, "%s/audit", path);
    r = http_get(&srv, sub, reader.secret);
    json_t *page = expect_json(&r, 200);
    http_response_free(&r);
    json_t *data = json_object_get(page, "data");
    ck_assert_int_eq(json_array_size(data), 2);
    json_t *newest = json_array_get(data, 0);
    ck_assert_str_eq(json_string_value(json_object_get(newest, "action")), "erase");
    ck_assert_int_eq(json_integer_value(json_object_get(newest, "api_key_id")), writer.id);
    json_t *create_entry = json_array_get(data, 1);
    ck_assert(json_is_true(json_object_get(json_object_get(create_entry, "changes"), "redacted")));
    char *dump = json_dumps(page, 0);
    ck_assert_ptr_nonnull(dump);
    ck_assert_ptr_null(strstr(dump, "tomb@"));
    free(dump);
    json_decref(page);
    json_decref(first);
    json_decref(second);
    json_decref(c);
}
END_TEST

START_TEST(erasing_a_merged_id_is_a_conflict_naming_the_survivor)
{
    json_t *survivor = create("{\"first_name\": \"Survivor\"}", NULL);
    json_t *merged = create("{\"first_name\": \"Merged\"}", NULL);
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", id_of(merged));
    snprintf(b, sizeof b, "%lld", id_of(survivor));
    PGconn *c = harness_db_connect();
    const char *params[] = {a, b};
    PQclear(PQexecParams(c,
                         "UPDATE customers SET status = 'merged', merged_into = $2 WHERE id = $1",
                         2, NULL, params, NULL, NULL, 0));
    PQfinish(c);
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/erase", id_of(merged));
    http_response r = send_json("POST", path, writer.secret, "{\"confirm\": true}", NULL);
    json_t *p = assert_problem(&r, 409);
    json_t *e = json_array_get(json_object_get(p, "errors"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(e, "customer_id")), id_of(survivor));
    json_decref(p);
    http_response_free(&r);
    json_decref(survivor);
    json_decref(merged);
}
END_TEST

/* ---- export ------------------------------------------------------------------------- */

START_TEST(export_is_everything_held_as_one_attachment)
{
    char ext[64], body[1024], path[96];
    harness_unique(ext, sizeof ext, "exp");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Exported\", \"email\": \"exported@example.com\", "
             "\"external_ids\": [{\"source\": \"app\", \"id\": \"%s\"}, {\"source\": \"web\", "
             "\"id\": \"%s\"}]}",
             ext, ext);
    json_t *c = create(body, NULL);
    long long id = id_of(c);
    snprintf(path, sizeof path, "/v1/customers/%lld", id);
    http_response r =
        send_json("PATCH", path, writer.secret, "{\"address\": {\"city\": \"Pisa\"}}", NULL);
    ck_assert_int_eq(r.status, 200);
    http_response_free(&r);
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", id);
    post_ok(path,
            "{\"consents\": [{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": "
            "\"granted\", \"source\": \"web\"}, {\"channel\": \"sms\", \"purpose\": \"service\", "
            "\"status\": \"granted\", \"source\": \"web\"}]}",
            201);
    post_ok(path,
            "{\"channel\": \"email\", \"purpose\": \"marketing\", \"status\": \"revoked\", "
            "\"source\": \"mail\"}",
            201);

    snprintf(path, sizeof path, "/v1/customers/%lld/export", id);
    r = http_get(&srv, path, exporter.secret);
    json_t *doc = expect_json(&r, 200);
    const char *disposition = http_response_header(&r, "Content-Disposition");
    ck_assert_ptr_nonnull(disposition);
    ck_assert_ptr_nonnull(strstr(disposition, "attachment"));
    http_response_free(&r);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "format_version")), 1);
    json_t *cust = json_object_get(doc, "customer");
    ck_assert_int_eq(id_of(cust), id);
    ck_assert_str_eq(json_string_value(json_object_get(cust, "email")), "exported@example.com");
    ck_assert_int_eq(json_array_size(json_object_get(cust, "external_ids")), 2);
    json_t *consents = json_object_get(doc, "consents");
    ck_assert_int_eq(json_array_size(json_object_get(consents, "history")), 3);
    ck_assert_int_eq(json_array_size(json_object_get(consents, "current")), 2);
    json_t *audit = json_object_get(doc, "audit");
    ck_assert_int_eq(json_array_size(audit), 4);
    const char *actions[] = {"create", "update", "consent", "consent"};
    for (size_t i = 0; i < 4; i++)
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(audit, i), "action")),
                         actions[i]);
    json_decref(doc);

    r = http_get(&srv, "/v1/customers/9000000000000/export", exporter.secret);
    expect_problem(&r, 404, NULL);
    r = http_get(&srv, path, NULL);
    expect_problem(&r, 401, NULL);
    json_decref(c);
}
END_TEST

/* The peak resident memory of process pid so far, in KiB (VmHWM). */
static long peak_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = atol(line + 6);
    fclose(f);
    ck_assert_int_gt(kib, 0);
    return kib;
}

/* Review S7: the export of a long history was built in memory three or
 * four times over (one result, its text, a Jansson tree, the text again:
 * about 200 MiB for this one). It is now written a row at a time to a
 * temporary file and sent from there: crmd's peak memory grows by a few
 * MiB, not by the size of the document. ASan's quarantine (which keeps
 * freed memory resident) is turned off in this crmd so that its resident
 * size shows what is live. */
START_TEST(a_long_history_is_exported_without_holding_it_in_memory)
{
    static char asan[512];
    const char *inherited = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%squarantine_size_mb=0",
             inherited ? inherited : "", inherited && *inherited ? ":" : "");
    const char *const env[] = {asan, NULL};
    crmd_server lean;
    crmd_fixture_start(&lean, env);

    json_t *c = create("{\"first_name\": \"Longhistory\"}", NULL);
    long long id = id_of(c);
    json_decref(c);
    enum { TOUCHPOINTS = 40000 };
    PGconn *db = harness_db_connect();
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", id);
    const char *params[] = {idtext};
    PGresult *res = PQexecParams(
        db,
        "INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source, "
        "event_id, properties) SELECT $1::bigint, 'web', 'page_view', 'inbound', "
        "now() - n * interval '1 minute', 'export-test', $1 || '-' || n, "
        "jsonb_build_object('padding', repeat('x', 1000)) FROM generate_series(1, 40000) n",
        1, NULL, params, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(res);
    PQfinish(db);

    http_response warm = http_get(&lean, "/healthz", NULL);
    ck_assert_int_eq(warm.status, 200);
    http_response_free(&warm);
    long before = peak_rss_kib(lean.pid);
    char path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/export", id);
    http_response r = http_get(&lean, path, exporter.secret);
    long after = peak_rss_kib(lean.pid);
    ck_assert_msg(r.status == 200, "answered %ld: %.300s", r.status, r.body);
    ck_assert_msg(r.body_len > (size_t)TOUCHPOINTS * 1000, "only %zu bytes", r.body_len);
    json_t *doc = http_response_json(&r);
    ck_assert_msg(doc != NULL, "not JSON: %.200s ... %s", r.body,
                  r.body_len > 200 ? r.body + r.body_len - 200 : "");
    json_t *tps = json_object_get(doc, "touchpoints");
    ck_assert_int_eq(json_array_size(tps), TOUCHPOINTS);
    /* Oldest first, each whole. */
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(tps, 0), "event_id")) +
                         strlen(idtext),
                     "-40000");
    ck_assert_int_eq(strlen(json_string_value(json_object_get(
                         json_object_get(json_array_get(tps, TOUCHPOINTS - 1), "properties"),
                         "padding"))),
                     1000);
    json_decref(doc);
    ck_assert_msg(after - before < 16 * 1024,
                  "exporting %zu bytes raised crmd's peak memory by %ld KiB", r.body_len,
                  after - before);
    http_response_free(&r);
    crmd_fixture_stop(&lean);
}
END_TEST

/* The export hands over touchpoints too (review S4): customers:read, even
 * with touchpoints:read, is not enough; customers:export is, and every
 * export leaves an entry in the customer's audit trail naming the key. */
START_TEST(export_needs_its_own_scope_and_is_audited)
{
    api_key both;
    ck_assert(api_key_create("customers:read,touchpoints:read", &both));
    json_t *c = create("{\"first_name\": \"Audited\"}", NULL);
    char path[96], audit_path[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/export", id_of(c));
    snprintf(audit_path, sizeof audit_path, "/v1/customers/%lld/audit", id_of(c));

    http_response r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 403, NULL);
    r = http_get(&srv, path, both.secret);
    expect_problem(&r, 403, NULL);
    r = http_get(&srv, path, writer.secret);
    expect_problem(&r, 403, NULL);
    r = http_get(&srv, audit_path, reader.secret); /* the refusals left no entry */
    json_t *page = expect_json(&r, 200);
    http_response_free(&r);
    ck_assert_int_eq(json_array_size(json_object_get(page, "data")), 1);
    json_decref(page);

    r = http_get(&srv, path, exporter.secret);
    json_decref(expect_json(&r, 200));
    http_response_free(&r);
    r = http_get(&srv, audit_path, reader.secret);
    page = expect_json(&r, 200);
    http_response_free(&r);
    json_t *data = json_object_get(page, "data");
    ck_assert_int_eq(json_array_size(data), 2);
    json_t *newest = json_array_get(data, 0);
    ck_assert_str_eq(json_string_value(json_object_get(newest, "action")), "export");
    ck_assert_int_eq(json_integer_value(json_object_get(newest, "api_key_id")), exporter.id);
    json_t *ids = json_object_get(json_object_get(newest, "changes"), "customer_ids");
    ck_assert_int_eq(json_array_size(ids), 1);
    ck_assert_int_eq(json_integer_value(json_array_get(ids, 0)), id_of(c));
    json_decref(page);

    /* An unknown customer is exported by nobody and audited nowhere. */
    r = http_get(&srv, "/v1/customers/9000000000001/export", exporter.secret);
    expect_problem(&r, 404, NULL);
    json_decref(c);
}
END_TEST

/* ---- expand=consents and Idempotency-Key on consents --------------------------------- */

START_TEST(expand_consents_returns_the_current_consents)
{
    char ext[64], body[256], path[128];
    harness_unique(ext, sizeof ext, "expand");
    snprintf(body, sizeof body,
             "{\"first_name\": \"Expanded\", \"external_ids\": [{\"source\": \"exp\", "
             "\"id\": \"%s\"}]}",
             ext);
    json_t *c = create(body, NULL);
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", id_of(c));
    post_ok(path,
            "{\"channel\": \"web\", \"purpose\": \"analytics\", \"status\": \"granted\", "
            "\"source\": \"banner\"}",
            201);
    snprintf(path, sizeof path, "/v1/customers/%lld?expand=consents", id_of(c));
    http_response r = http_get(&srv, path, reader.secret);
    json_t *rep = expect_json(&r, 200);
    ck_assert_ptr_nonnull(http_response_header(&r, "ETag"));
    http_response_free(&r);
    json_t *cur = json_object_get(rep, "consents");
    ck_assert_int_eq(json_array_size(cur), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(cur, 0), "purpose")),
                     "analytics");
    ck_assert_ptr_null(json_object_get(rep, "external_ids"));
    json_decref(rep);

    snprintf(path, sizeof path, "/v1/customers/%lld?expand=external_ids,consents", id_of(c));
    r = http_get(&srv, path, reader.secret);
    rep = expect_json(&r, 200);
    http_response_free(&r);
    ck_assert_int_eq(json_array_size(json_object_get(rep, "consents")), 1);
    ck_assert_int_eq(json_array_size(json_object_get(rep, "external_ids")), 1);
    json_decref(rep);

    snprintf(path, sizeof path, "/v1/customers/%lld?expand=consents,history", id_of(c));
    r = http_get(&srv, path, reader.secret);
    expect_problem(&r, 422, "expand");
    json_decref(c);
}
END_TEST

START_TEST(consents_post_replays_with_the_same_idempotency_key)
{
    json_t *c = create("{\"first_name\": \"Replayed\"}", NULL);
    char path[96], key[96];
    snprintf(path, sizeof path, "/v1/customers/%lld/consents", id_of(c));
    harness_unique(key, sizeof key, "Idempotency-Key: c");
    const char *headers[] = {key, NULL};
    const char *body = "{\"channel\": \"phone\", \"purpose\": \"service\", \"status\": "
                       "\"granted\", \"source\": \"call\"}";
    http_response a = send_json("POST", path, writer.secret, body, headers);
    ck_assert_int_eq(a.status, 201);
    ck_assert_ptr_null(http_response_header(&a, "Idempotent-Replayed"));
    http_response b = send_json("POST", path, writer.secret, body, headers);
    ck_assert_int_eq(b.status, 201);
    ck_assert_str_eq(http_response_header(&b, "Idempotent-Replayed"), "true");
    ck_assert_str_eq(a.body, b.body);
    ck_assert_str_eq(http_response_header(&a, "Location"), http_response_header(&b, "Location"));
    ck_assert_int_eq(
        count_for("SELECT count(*) FROM customer_consents WHERE customer_id = $1", id_of(c)), 1);
    http_response_free(&a);
    http_response_free(&b);
    http_response r = send_json("POST", path, writer.secret,
                                "{\"channel\": \"phone\", \"purpose\": \"service\", \"status\": "
                                "\"revoked\", \"source\": \"call\"}",
                                headers);
    expect_problem(&r, 409, "Idempotency-Key");
    json_decref(c);
}
END_TEST

Suite *customer_privacy_suite(void)
{
    Suite *s = suite_create("customer_privacy");
    TCase *tc = tcase_create("customer_privacy");
    tcase_set_timeout(tc, HARNESS_TCASE_TIMEOUT_S * 2);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, erase_leaves_no_personal_data_anywhere_in_the_database);
    tcase_add_test(tc, erase_needs_write_scope_and_confirmation_and_a_known_id);
    tcase_add_test(tc, an_erased_id_answers_404_and_erasing_again_answers_the_tombstone);
    tcase_add_test(tc, erasing_a_merged_id_is_a_conflict_naming_the_survivor);
    tcase_add_test(tc, export_is_everything_held_as_one_attachment);
    tcase_add_test(tc, export_needs_its_own_scope_and_is_audited);
    tcase_add_test(tc, a_long_history_is_exported_without_holding_it_in_memory);
    tcase_add_test(tc, expand_consents_returns_the_current_consents);
    tcase_add_test(tc, consents_post_replays_with_the_same_idempotency_key);
    suite_add_tcase(s, tc);
    return s;
}

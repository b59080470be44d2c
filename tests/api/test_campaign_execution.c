/*
 * test_campaign_execution.c — POST /v1/campaigns/{id}/execute over real
 * HTTP, its job checked in the database: the audience taken once, each
 * target in the group its salt gives (the documented formula, computed
 * here again in SQL), excluded for want of consent or by a cap, contacted
 * once with a campaign_contact touchpoint, the control group held out;
 * executing again, at once, or after crmd was killed midway contacts
 * nobody twice and skips nobody. And what cannot be executed.
 *
 * The campaign uses the channel mail for the purpose profiling, and the
 * cap policy it meets names those: no other suite's decisions meet it.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static crmd_server srv;
static PGconn *db;
static api_key writer;

static const char *const short_lease[] = {"CRMD_JOB_LEASE_S=5", "CRMD_JOB_POLL_MS=100",
                                          "CRMD_CAMPAIGNS_TICK_MS=200", "CRMD_JOB_WORKERS=2", NULL};

static void setup(void)
{
    crmd_fixture_start(&srv, short_lease);
    if (writer.id == 0)
        ck_assert(api_key_create("campaigns:read,campaigns:write,segments:read,segments:write,"
                                 "rules:read,rules:write,touchpoints:write,customers:write",
                                 &writer));
    db = harness_db_connect();
}

static void teardown(void)
{
    PQfinish(db);
    crmd_fixture_stop(&srv);
}

/* ---- helpers ------------------------------------------------------------------ */

static json_t *expect(const char *method, const char *path, const char *body, const char *if_match,
                      long status)
{
    char header[128];
    const char *headers[] = {header, NULL};
    snprintf(header, sizeof header, "If-Match: %s", if_match ? if_match : "");
    http_call call = {.method = method,
                      .path = path,
                      .api_key = writer.secret,
                      .body = body,
                      .content_type =
                          strcmp(method, "PATCH") == 0 ? "application/merge-patch+json" : NULL,
                      .headers = if_match ? headers : NULL};
    http_response r = http_send(&srv, &call);
    ck_assert_msg(r.status == status, "%s %s %s answered %ld, not %ld: %.700s", method, path,
                  body ? body : "", r.status, status, r.body);
    json_t *doc = r.body_len ? http_response_json(&r) : NULL;
    http_response_free(&r);
    return doc;
}

static long long int_member(const json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(doc, key));
}

/* Runs sql with up to three text parameters; fails the test on error. */
static void sql3(const char *sql, const char *a, const char *b, const char *c)
{
    const char *p[] = {a, b, c};
    int n = c ? 3 : b ? 2 : a ? 1 : 0;
    PGresult *res = PQexecParams(db, sql, n, NULL, p, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQerrorMessage(db));
    PQclear(res);
}

static long long number(const char *sql, long long campaign)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", campaign);
    return harness_sql_number(db, sql, id);
}

/* n customers tagged tag: i % 4 == 0 gave no consent for mail/profiling,
 * the others granted it; i % 4 == 1 had a mail touchpoint for profiling an
 * hour ago (a cap of one a day then refuses them). */
static void make_audience(const char *tag, int n)
{
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    sql3("INSERT INTO customers (first_name, tags) SELECT 'camp ' || i, ARRAY[$1]"
         " FROM generate_series(1, $2::int) i",
         tag, count, NULL);
    sql3(
        "INSERT INTO customer_consents (customer_id, channel, purpose, status, source, captured_at)"
        " SELECT id, 'mail', 'profiling', 'granted', 'test', now() - interval '1 day'"
        " FROM customers WHERE $1 = ANY(tags) AND (id - (SELECT min(id) FROM customers"
        " WHERE $1 = ANY(tags))) % 4 <> 0",
        tag, NULL, NULL);
    sql3("INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
         " event_id, purpose) SELECT id, 'mail', 'other', 'outbound', now() - interval '1 hour',"
         " 'camp-test', $1 || '-' || id, 'profiling' FROM customers WHERE $1 = ANY(tags)"
         " AND (id - (SELECT min(id) FROM customers WHERE $1 = ANY(tags))) % 4 = 1",
         tag, NULL, NULL);
}

/* A live segment of the customers tagged tag. */
static long long live_segment(const char *tag)
{
    char body[256], path[64];
    snprintf(body, sizeof body,
             "{\"name\": \"exec %s\", \"rule\": {\"field\": \"tags\", \"op\": \"contains\","
             " \"value\": \"%s\"}}",
             tag, tag);
    json_t *doc = expect("POST", "/v1/segments", body, NULL, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    snprintf(path, sizeof path, "/v1/segments/%lld", id);
    for (int i = 0; i < 600; i++) {
        doc = expect("GET", path, NULL, NULL, 200);
        bool live = strcmp(json_string_value(json_object_get(doc, "state")), "live") == 0;
        json_decref(doc);
        if (live)
            return id;
        harness_sleep_ms(50);
    }
    ck_abort_msg("segment %lld was not built in 30 s", id);
    return 0;
}

/* A campaign of segment on channels (a JSON array) for profiling, offer
 * OFF-X, ending in 30 days. */
static long long campaign_on(const char *code, long long segment, const char *share,
                             const char *channels)
{
    char body[768], ends[32];
    time_t t = time(NULL) + 30 * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ends, sizeof ends, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(body, sizeof body,
             "{\"code\": \"%s\", \"name\": \"exec %s\", \"audience\": {\"segment_id\": %lld},"
             " \"channels\": %s, \"purpose\": \"profiling\", \"offer_code\": \"OFF-X\","
             " \"control_share\": %s, \"ends_at\": \"%s\", \"response_types\": [\"purchase\"]}",
             code, code, segment, channels, share, ends);
    json_t *doc = expect("POST", "/v1/campaigns", body, NULL, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    return id;
}

static long long new_campaign(const char *code, long long segment, const char *share)
{
    return campaign_on(code, segment, share, "[\"mail\"]");
}

/* The cap: one mail for profiling a day; its id. */
static long long cap_policy(const char *tag)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"name\": \"exec cap %s\", \"channel\": \"mail\", \"purpose\": \"profiling\","
             " \"cap\": {\"max_contacts\": 1, \"period_hours\": 24}}",
             tag);
    json_t *doc = expect("POST", "/v1/contact-policies", body, NULL, 201);
    long long id = int_member(doc, "id");
    json_decref(doc);
    return id;
}

/* A campaign of the live segment of n customers made by make_audience,
 * under the cap policy (its id in *policy), with control share share; its
 * code is a unique tag made from prefix (in tag). Its id. */
static long long capped_campaign(const char *prefix, int n, const char *share, char tag[64],
                                 long long *policy)
{
    harness_unique(tag, 64, prefix);
    make_audience(tag, n);
    *policy = cap_policy(tag);
    return new_campaign(tag, live_segment(tag), share);
}

static void drop_policy(long long id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/contact-policies/%lld", id);
    json_t *doc = expect("GET", path, NULL, NULL, 200);
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", int_member(doc, "version"));
    json_decref(doc);
    json_decref(expect("DELETE", path, NULL, etag, 204));
}

/* POST execute; the job's id. */
static long long execute(long long campaign)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/campaigns/%lld/execute", campaign);
    json_t *job = expect("POST", path, NULL, NULL, 202);
    long long id = int_member(job, "id");
    ck_assert_str_eq(json_string_value(json_object_get(job, "kind")), "campaign_execute");
    json_decref(job);
    return id;
}

/* Waits until job ends; its final state. */
static char *job_end(long long job, int seconds)
{
    char path[48];
    snprintf(path, sizeof path, "/v1/jobs/%lld", job);
    for (int i = 0; i < seconds * 20; i++) {
        json_t *doc = expect("GET", path, NULL, NULL, 200);
        const char *state = json_string_value(json_object_get(doc, "state"));
        char *out = NULL;
        if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0)
            out = strdup(state);
        json_decref(doc);
        if (out != NULL)
            return out;
        harness_sleep_ms(50);
    }
    ck_abort_msg("job %lld did not end in %d s", job, seconds);
    return NULL;
}

/* Every target of campaign decided once and as the rules say: checked in
 * SQL against the formula and the facts. */
static void check_decisions(long long campaign, long long audience)
{
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1", campaign), audience);
    ck_assert_int_eq(number("SELECT audience_size FROM campaigns WHERE id = $1", campaign),
                     audience);
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_audience WHERE campaign_id = $1", campaign),
        0); /* nothing left to decide */
    ck_assert_int_eq(number("SELECT count(DISTINCT customer_id) FROM campaign_targets"
                            " WHERE campaign_id = $1",
                            campaign),
                     audience);
    /* the group: control when the first 60 bits of md5(salt:id) fall below
     * the share of 2^60 */
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_targets g JOIN campaigns k ON k.id = g.campaign_id"
               " WHERE g.campaign_id = $1 AND g.grp <> CASE WHEN ('x' || left(md5(k.salt::text"
               " || ':' || g.customer_id), 15))::bit(60)::bigint::numeric"
               " < k.control_share * 2::numeric ^ 60 THEN 'control' ELSE 'treatment' END",
               campaign),
        0);
    /* no consent: excluded; a mail an hour ago under a cap of one a day:
     * excluded by the cap; everyone else contacted or held out by group */
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_targets g WHERE g.campaign_id = $1 AND"
               " g.state <> CASE"
               "  WHEN NOT EXISTS (SELECT 1 FROM customer_consents k WHERE k.customer_id ="
               "   g.customer_id AND k.channel = 'mail' AND k.purpose = 'profiling'"
               "   AND k.status = 'granted') THEN 'excluded'"
               "  WHEN EXISTS (SELECT 1 FROM touchpoints t WHERE t.customer_id = g.customer_id"
               "   AND t.source = 'camp-test') THEN 'excluded'"
               "  WHEN g.grp = 'control' THEN 'control' ELSE 'contacted' END",
               campaign),
        0);
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_targets g WHERE g.campaign_id = $1 AND"
               " g.state = 'excluded' AND g.reason <> CASE WHEN EXISTS (SELECT 1 FROM"
               " touchpoints t WHERE t.customer_id = g.customer_id AND t.source = 'camp-test')"
               " THEN 'cap_reached' ELSE 'no_consent' END",
               campaign),
        0);
    /* one campaign_contact touchpoint per contacted customer, none else */
    ck_assert_int_eq(
        number("SELECT count(*) FROM touchpoints t JOIN campaigns k ON k.code = t.campaign_id"
               " WHERE k.id = $1 AND t.type = 'campaign_contact' AND t.source = 'crmd:campaign'",
               campaign),
        number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
               " AND state = 'contacted'",
               campaign));
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_targets g JOIN touchpoints t ON t.id ="
               " g.touchpoint_id WHERE g.campaign_id = $1 AND (t.customer_id <> g.customer_id"
               " OR t.channel <> 'mail' OR t.purpose <> 'profiling' OR t.offer_code <> 'OFF-X'"
               " OR t.direction <> 'outbound')",
               campaign),
        0);
}

/* ---- tests -------------------------------------------------------------------- */

START_TEST(a_campaign_contacts_its_audience_once_with_consent_caps_and_a_control_group)
{
    char tag[64];
    long long policy, campaign = capped_campaign("exec", 200, "0.25", tag, &policy);

    char *state = job_end(execute(campaign), 60);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    check_decisions(campaign, 200);
    long long contacted = number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                                 " AND state = 'contacted'",
                                 campaign),
              control = number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                               " AND state = 'control'",
                               campaign);
    /* 100 customers may be contacted; about a quarter of them are held out */
    ck_assert_int_eq(contacted + control, 100);
    ck_assert_msg(control >= 10 && control <= 45, "control %lld of 100", control);

    char path[64];
    snprintf(path, sizeof path, "/v1/campaigns/%lld", campaign);
    json_t *doc = expect("GET", path, NULL, NULL, 200);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "status")), "running");
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", int_member(doc, "version"));
    json_decref(doc);

    /* executed again: nobody is contacted twice */
    state = job_end(execute(campaign), 60);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    check_decisions(campaign, 200);
    ck_assert_int_eq(number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                            " AND state = 'contacted'",
                            campaign),
                     contacted);

    /* cancelled, it cannot be executed */
    json_decref(expect("PATCH", path, "{\"status\": \"cancelled\"}", etag, 200));
    snprintf(path, sizeof path, "/v1/campaigns/%lld/execute", campaign);
    json_decref(expect("POST", path, NULL, NULL, 409));
    drop_policy(policy);
}
END_TEST

START_TEST(what_cannot_be_executed_is_refused_and_changes_nothing)
{
    char tag[64], body[512], path[64];
    harness_unique(tag, sizeof tag, "noexec");
    long long segment = live_segment(tag);
    /* no end */
    snprintf(body, sizeof body,
             "{\"code\": \"%s\", \"name\": \"n %s\", \"audience\": {\"segment_id\": %lld},"
             " \"channels\": [\"mail\"], \"purpose\": \"profiling\", \"control_share\": 0.1,"
             " \"response_types\": [\"purchase\"]}",
             tag, tag, segment);
    json_t *doc = expect("POST", "/v1/campaigns", body, NULL, 201);
    long long campaign = int_member(doc, "id");
    json_decref(doc);
    snprintf(path, sizeof path, "/v1/campaigns/%lld/execute", campaign);
    http_call call = {.method = "POST", .path = path, .api_key = writer.secret};
    http_response r = http_send(&srv, &call);
    json_t *problem = assert_problem_at(&r, 422, __FILE__, __LINE__);
    ck_assert(problem_names_field(problem, "/ends_at"));
    json_decref(problem);
    http_response_free(&r);
    ck_assert_int_eq(number("SELECT count(*) FROM jobs WHERE kind = 'campaign_execute'"
                            " AND params->>'campaign_id' = $1::text",
                            campaign),
                     0);
    snprintf(path, sizeof path, "/v1/campaigns/%lld", campaign);
    doc = expect("GET", path, NULL, NULL, 200);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "status")), "draft");
    json_decref(doc);
    json_decref(expect("POST", "/v1/campaigns/999999999/execute", NULL, NULL, 404));
    /* crmd's own sources are refused to clients */
    r = http_post_json(&srv, "/v1/touchpoints", writer.secret,
                       "{\"customer_id\": 1, \"channel\": \"mail\", \"type\": \"other\","
                       " \"direction\": \"outbound\", \"occurred_at\": \"2026-11-20T10:00:00Z\","
                       " \"source\": \"crmd:campaign\", \"event_id\": \"1-1\"}");
    problem = assert_problem_at(&r, 422, __FILE__, __LINE__);
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

/* GET results until they are current and count `responses` responses
 * (the upkeep attributes and recomputes every 200 ms here). */
static json_t *current_results(long long campaign, long long responses)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/campaigns/%lld/results", campaign);
    for (int i = 0; i < 300; i++) {
        json_t *doc = expect("GET", path, NULL, NULL, 200);
        if (json_is_true(json_object_get(doc, "current")) &&
            int_member(doc, "responses") == responses)
            return doc;
        json_decref(doc);
        harness_sleep_ms(50);
    }
    ck_abort_msg("the results of campaign %lld did not count %lld responses in 15 s", campaign,
                 responses);
    return NULL;
}

static double real_at(const json_t *doc, const char *a, const char *b, const char *c)
{
    const json_t *v = json_object_get(json_object_get(json_object_get(doc, a), b), c);
    ck_assert_msg(json_is_number(v), "%s.%s.%s is not a number", a, b, c);
    return json_number_value(v);
}

/* Two campaigns on one audience, A executed before B: B meets the cap
 * that A's contacts reached (nobody is contacted by both); a purchase
 * afterwards is B's when its customer is one of B's contacted or control
 * targets (the last decision before it), else A's when one of A's, else
 * nobody's; each campaign's results count exactly what was attributed to
 * it, with the uplift worked out here. */
START_TEST(responses_go_to_the_last_campaign_and_results_count_them)
{
    char tag[64], code_a[80], code_b[80];
    harness_unique(tag, sizeof tag, "resp");
    snprintf(code_a, sizeof code_a, "%s-a", tag);
    snprintf(code_b, sizeof code_b, "%s-b", tag);
    make_audience(tag, 300);
    long long policy = cap_policy(tag), segment = live_segment(tag);
    long long a = new_campaign(code_a, segment, "0.3");
    char *state = job_end(execute(a), 60);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    harness_sleep_ms(20); /* B decides strictly later */
    long long b = new_campaign(code_b, segment, "0.3");
    state = job_end(execute(b), 60);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    char ids[64];
    snprintf(ids, sizeof ids, "{%lld,%lld}", a, b);
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(*) FROM campaign_targets x JOIN"
                                        " campaign_targets y ON y.customer_id = x.customer_id"
                                        " WHERE x.campaign_id = ($1::bigint[])[1] AND"
                                        " y.campaign_id = ($1::bigint[])[2] AND x.state ="
                                        " 'contacted' AND y.state = 'contacted'",
                                        ids),
                     0);
    ck_assert_int_gt(harness_sql_number(db,
                                        "SELECT count(*) FROM campaign_targets x JOIN"
                                        " campaign_targets y ON y.customer_id = x.customer_id"
                                        " WHERE x.campaign_id = ($1::bigint[])[1] AND"
                                        " y.campaign_id = ($1::bigint[])[2] AND x.state ="
                                        " 'contacted' AND y.reason = 'cap_reached'",
                                        ids),
                     0);
    drop_policy(policy);
    /* purchases of 12.50 EUR by every third customer, one refund of 2.50,
     * and a visit (not a response type) by everyone */
    sql3("INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
         " event_id, amount, currency) SELECT id, 'store', 'purchase', 'inbound', now(),"
         " 'resp-test', $1 || '-p-' || id, 12.50, 'EUR' FROM customers WHERE $1 = ANY(tags)"
         " AND id % 3 = 0",
         tag, NULL, NULL);
    sql3("INSERT INTO touchpoints (customer_id, channel, type, direction, occurred_at, source,"
         " event_id) SELECT id, 'web', 'visit', 'inbound', now(), 'resp-test', $1 || '-v-' || id"
         " FROM customers WHERE $1 = ANY(tags)",
         tag, NULL, NULL);
    long long purchases = harness_sql_number(
        db, "SELECT count(*) FROM customers WHERE $1 = ANY(tags) AND id % 3 = 0", tag);
    /* expected owner of each purchase, worked out from the targets */
    const char *owner_sql =
        "SELECT count(*) FROM touchpoints t LEFT JOIN campaign_responses r ON r.touchpoint_id ="
        " t.id WHERE t.source = 'resp-test' AND t.type = 'purchase' AND t.event_id LIKE $1 || '%'"
        " AND r.campaign_id IS DISTINCT FROM CASE"
        "  WHEN EXISTS (SELECT 1 FROM campaign_targets g JOIN campaigns k ON k.id = g.campaign_id"
        "   WHERE k.code = $1 || '-b' AND g.customer_id = t.customer_id"
        "   AND g.state IN ('contacted', 'control')) THEN (SELECT id FROM campaigns WHERE code ="
        "   $1 || '-b')"
        "  WHEN EXISTS (SELECT 1 FROM campaign_targets g JOIN campaigns k ON k.id = g.campaign_id"
        "   WHERE k.code = $1 || '-a' AND g.customer_id = t.customer_id"
        "   AND g.state IN ('contacted', 'control')) THEN (SELECT id FROM campaigns WHERE code ="
        "   $1 || '-a')"
        "  END";
    long long b_responses = harness_sql_number(
        db,
        "SELECT count(*) FROM customers c JOIN campaign_targets g ON g.customer_id = c.id"
        " JOIN campaigns k ON k.id = g.campaign_id WHERE $1 = ANY(c.tags) AND c.id % 3 = 0"
        " AND k.code = $1 || '-b' AND g.state IN ('contacted', 'control')",
        tag);
    json_t *rb = current_results(b, b_responses);
    ck_assert_int_eq(harness_sql_number(db, owner_sql, tag), 0);
    ck_assert_int_eq(harness_sql_number(db,
                                        "SELECT count(*) FROM campaign_responses r JOIN"
                                        " touchpoints t ON t.id = r.touchpoint_id WHERE"
                                        " t.source = 'resp-test' AND t.type <> 'purchase'",
                                        NULL),
                     0);
    ck_assert_int_le(b_responses, purchases);

    /* B's figures, worked out here from the targets */
    char bid[24];
    snprintf(bid, sizeof bid, "%lld", b);
    long long nt = harness_sql_number(db,
                                      "SELECT count(*) FROM campaign_targets WHERE campaign_id ="
                                      " $1::bigint AND state = 'contacted'",
                                      bid),
              nc = harness_sql_number(db,
                                      "SELECT count(*) FROM campaign_targets WHERE campaign_id ="
                                      " $1::bigint AND state = 'control'",
                                      bid),
              xt = harness_sql_number(db,
                                      "SELECT count(*) FROM campaign_targets WHERE campaign_id ="
                                      " $1::bigint AND state = 'contacted' AND customer_id % 3 = 0",
                                      bid),
              xc = harness_sql_number(db,
                                      "SELECT count(*) FROM campaign_targets WHERE campaign_id ="
                                      " $1::bigint AND state = 'control' AND customer_id % 3 = 0",
                                      bid);
    ck_assert_int_eq(int_member(rb, "contacted"), nt);
    ck_assert_int_eq(int_member(rb, "control"), nc);
    ck_assert_int_eq(int_member(rb, "audience"), 300);
    json_t *st = json_object_get(rb, "statistics");
    ck_assert_int_eq(int_member(json_object_get(st, "treatment"), "responders"), xt);
    ck_assert_int_eq(int_member(json_object_get(st, "control"), "responders"), xc);
    double pt = (double)xt / (double)nt, pc = (double)xc / (double)nc;
    ck_assert_double_eq_tol(
        json_number_value(json_object_get(json_object_get(st, "treatment"), "response_rate")), pt,
        1e-12);
    ck_assert_double_eq_tol(
        json_number_value(json_object_get(json_object_get(st, "uplift"), "absolute")), pt - pc,
        1e-12);
    ck_assert_double_eq_tol(
        json_number_value(json_object_get(json_object_get(st, "treatment"), "revenue")),
        12.5 * (double)xt, 1e-9);
    ck_assert_double_eq_tol(
        json_number_value(json_object_get(json_object_get(st, "control"), "revenue")),
        12.5 * (double)xc, 1e-9);
    double low = real_at(st, "uplift", "newcombe", "low"),
           high = real_at(st, "uplift", "newcombe", "high");
    ck_assert(low < pt - pc && pt - pc < high);
    /* the excluded of B: the capped, and those without consent */
    json_t *ex = json_object_get(rb, "excluded");
    ck_assert_int_eq(int_member(ex, "total"),
                     harness_sql_number(db,
                                        "SELECT count(*) FROM campaign_targets WHERE campaign_id"
                                        " = $1::bigint AND state = 'excluded'",
                                        bid));
    ck_assert_int_gt(int_member(ex, "cap_reached"), 0);
    ck_assert_int_gt(int_member(ex, "no_consent"), 0);
    /* one day since the execution, with the day's responders */
    json_t *days = json_object_get(rb, "daily");
    ck_assert_int_ge(json_array_size(days), 1);
    json_t *last = json_array_get(days, json_array_size(days) - 1);
    ck_assert_int_eq(int_member(last, "treatment_responders"), xt);
    ck_assert_int_eq(int_member(last, "control_responders"), xc);
    json_decref(rb);
}
END_TEST

/* A campaign scheduled to start two seconds from now is started by the
 * upkeep (every 200 ms here) at its start time: running, with a job; its
 * end brought near, it is completed then. */
START_TEST(a_scheduled_campaign_starts_at_its_start_and_completes_at_its_end)
{
    char tag[64], path[64], body[256], starts[32];
    harness_unique(tag, sizeof tag, "sched");
    make_audience(tag, 20);
    long long campaign = new_campaign(tag, live_segment(tag), "0.2");
    snprintf(path, sizeof path, "/v1/campaigns/%lld", campaign);
    time_t t = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(starts, sizeof starts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(body, sizeof body, "{\"status\": \"scheduled\", \"starts_at\": \"%s\"}", starts);
    json_decref(expect("PATCH", path, body, "\"1\"", 200));
    long long started_at = harness_now_ms();
    bool running = false;
    for (int i = 0; i < 200 && !running; i++) {
        json_t *doc = expect("GET", path, NULL, NULL, 200);
        running = strcmp(json_string_value(json_object_get(doc, "status")), "running") == 0;
        json_decref(doc);
        if (!running)
            harness_sleep_ms(50);
    }
    ck_assert_msg(running, "the campaign did not start in 10 s");
    /* started at its start, not before, and kept it */
    ck_assert_int_eq(number("SELECT count(*) FROM campaigns k JOIN jobs j ON j.id ="
                            " k.execute_job_id WHERE k.id = $1 AND j.created_at >= k.starts_at"
                            " AND k.starts_at = date_trunc('second', k.starts_at)",
                            campaign),
                     1);
    ck_assert_int_le(harness_now_ms() - started_at, 10000);
    long long job = number("SELECT execute_job_id FROM campaigns WHERE id = $1", campaign);
    ck_assert_int_gt(job, 0);
    char *state = job_end(job, 60);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1", campaign), 20);

    /* its end brought to two seconds from now: completed then */
    json_t *doc = expect("GET", path, NULL, NULL, 200);
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", int_member(doc, "version"));
    json_decref(doc);
    t = time(NULL) + 2;
    gmtime_r(&t, &tm);
    char ends[32];
    strftime(ends, sizeof ends, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(body, sizeof body, "{\"ends_at\": \"%s\"}", ends);
    json_decref(expect("PATCH", path, body, etag, 200));
    bool completed = false;
    for (int i = 0; i < 200 && !completed; i++) {
        doc = expect("GET", path, NULL, NULL, 200);
        completed = strcmp(json_string_value(json_object_get(doc, "status")), "completed") == 0;
        json_decref(doc);
        if (!completed)
            harness_sleep_ms(50);
    }
    ck_assert_msg(completed, "the campaign was not completed at its end");
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaigns WHERE id = $1 AND ends_at <= now()", campaign), 1);
    ck_assert_int_eq(number("SELECT count(*) FROM campaign_versions WHERE campaign_id = $1"
                            " AND status = 'completed'",
                            campaign),
                     1);
}
END_TEST

/* A session holding, FOR NO KEY UPDATE as a decision does, the customer
 * tagged tag at offset (in id order): found first, then locked (rows an
 * OFFSET skips would be locked too). Its id in *id. */
static PGconn *hold_customer(const char *tag, int offset, long long *id)
{
    PGconn *holder = harness_db_connect();
    PGresult *res = PQexec(holder, "BEGIN");
    PQclear(res);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT id FROM customers WHERE id = (SELECT id FROM customers WHERE '%s' ="
             " ANY(tags) ORDER BY id OFFSET %d LIMIT 1) FOR NO KEY UPDATE",
             tag, offset);
    res = PQexec(holder, sql);
    ck_assert_int_eq(PQntuples(res), 1);
    *id = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return holder;
}

/* Waits until campaign's audience has been taken. */
static void audience_taken(long long campaign)
{
    for (int i = 0; i < 600; i++) {
        if (number("SELECT count(*) FROM campaigns WHERE id = $1 AND executed_at IS NOT NULL",
                   campaign) == 1)
            return;
        harness_sleep_ms(50);
    }
    ck_abort_msg("campaign %lld: the audience was not taken in 30 s", campaign);
}

/* A job held in its second chunk (a customer of it locked here), crmd
 * killed, started again: the job is taken over when its lease runs out
 * and goes on; a second execute meanwhile is refused. */
START_TEST(a_crmd_killed_midway_contacts_nobody_twice_and_skips_nobody)
{
    char tag[64];
    long long policy, campaign = capped_campaign("kill", 5000, "0.1", tag, &policy);
    /* the 3,000th customer held: the second chunk waits for it (taking
     * the audience does not: it locks no customer) */
    long long held;
    PGconn *holder = hold_customer(tag, 2999, &held);

    long long job = execute(campaign);
    bool midway = false;
    for (int i = 0; i < 600 && !midway; i++) {
        midway = number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1", campaign) >=
                 2000;
        if (!midway)
            harness_sleep_ms(50);
    }
    ck_assert_msg(midway, "the first chunk was not decided in 30 s");
    char path[64];
    snprintf(path, sizeof path, "/v1/campaigns/%lld/execute", campaign);
    json_decref(expect("POST", path, NULL, NULL, 409)); /* being executed */
    crmd_kill(&srv);
    PGresult *res = PQexec(holder, "COMMIT");
    PQclear(res);
    PQfinish(holder);
    /* killed with the second chunk waiting: its ids still to be decided */
    ck_assert_int_lt(
        number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1", campaign), 5000);
    ck_assert_int_gt(
        number("SELECT count(*) FROM campaign_audience WHERE campaign_id = $1", campaign), 0);

    crmd_fixture_start(&srv, short_lease);
    char *state = job_end(job, 90);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    check_decisions(campaign, 5000);
    /* the control group's share of 5,000 is 0.1 within four standard
     * deviations (sqrt(0.1 * 0.9 / 5000) = 0.0042) */
    long long controls = number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                                " AND grp = 'control'",
                                campaign);
    ck_assert_msg(controls >= 415 && controls <= 585, "%lld of 5000 in control", controls);
    drop_policy(policy);
}
END_TEST

/* Two executions of one campaign at once (a second job, as another crmd
 * process could be running; this one runs two job workers): while the
 * first waits in its first chunk, the second decides the other chunks and
 * ends; then the first ends. Nobody is contacted twice or skipped. */
START_TEST(two_executions_at_once_share_the_chunks_and_contact_nobody_twice)
{
    char tag[64];
    long long policy, campaign = capped_campaign("twice", 6000, "0.1", tag, &policy);
    long long held;
    PGconn *holder = hold_customer(tag, 10, &held); /* in the first chunk */
    long long first = execute(campaign);
    audience_taken(campaign);
    /* queued as POST .../execute would, were it not refused while the
     * first runs (the jobs' runner gives it to the second worker) */
    long long second = number("INSERT INTO jobs (kind, params) SELECT kind, params FROM jobs"
                              " WHERE id = $1 RETURNING id",
                              first);
    char *state = job_end(second, 90);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    /* the second decided the two chunks the first does not hold */
    ck_assert_int_eq(
        number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1", campaign), 4000);
    ck_assert_int_eq(number("SELECT (result->>'pending')::bigint FROM jobs WHERE id = $1", second),
                     2000);
    PGresult *res = PQexec(holder, "COMMIT");
    PQclear(res);
    PQfinish(holder);
    state = job_end(first, 90);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    check_decisions(campaign, 6000);
    drop_policy(policy);
}
END_TEST

/* A member taken into the audience but no longer active when its chunk is
 * decided (read then, under its lock) is excluded as not active. */
START_TEST(a_member_no_longer_active_when_decided_is_excluded_as_not_active)
{
    char tag[64];
    harness_unique(tag, sizeof tag, "gone");
    make_audience(tag, 8);
    long long campaign = new_campaign(tag, live_segment(tag), "0");
    long long held;
    PGconn *holder = hold_customer(tag, 1, &held); /* granted mail for profiling */
    long long job = execute(campaign);
    audience_taken(campaign);
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE customers SET status = 'deleted' WHERE id = %lld", held);
    PGresult *res = PQexec(holder, sql);
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    res = PQexec(holder, "COMMIT");
    PQclear(res);
    PQfinish(holder);
    char *state = job_end(job, 60);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    ck_assert_int_eq(number("SELECT audience_size FROM campaigns WHERE id = $1", campaign), 8);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM campaign_targets WHERE campaign_id = $1 AND customer_id = %lld"
             " AND state = 'excluded' AND reason = 'not_active' AND touchpoint_id IS NULL",
             held);
    ck_assert_int_eq(number(sql, campaign), 1);
    /* the others as their consents say: i % 4 == 0 have none */
    ck_assert_int_eq(number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                            " AND state = 'contacted'",
                            campaign),
                     5);
    ck_assert_int_eq(number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                            " AND state = 'excluded' AND reason = 'no_consent'",
                            campaign),
                     2);
}
END_TEST

/* ---- GET /v1/campaigns/{id}/contacts ------------------------------------------------- */

/* An executed campaign on email then mail for an audience of n made by
 * make_audience, where i % 4 == 2 also granted email for profiling (so it
 * is contacted by email, 1 and 3 by mail, 0 nobody), each customer with an
 * email, a phone and a postal address. Its id. */
static long long executed_on_email_and_mail(const char *tag, int n)
{
    make_audience(tag, n);
    sql3("UPDATE customers SET email = 'c' || id || '@example.com', phone = '+39 333 ' || id,"
         " street = 'Via Roma ' || id, postal_code = '20' || (id % 1000), city = 'Milano',"
         " region = 'MI', country = 'IT', last_name = 'L' || id, preferred_language = 'it'"
         " WHERE $1 = ANY(tags)",
         tag, NULL, NULL);
    sql3(
        "INSERT INTO customer_consents (customer_id, channel, purpose, status, source, captured_at)"
        " SELECT id, 'email', 'profiling', 'granted', 'test', now() - interval '1 day'"
        " FROM customers WHERE $1 = ANY(tags) AND (id - (SELECT min(id) FROM customers"
        " WHERE $1 = ANY(tags))) % 4 = 2",
        tag, NULL, NULL);
    long long campaign = campaign_on(tag, live_segment(tag), "0.2", "[\"email\", \"mail\"]");
    char *state = job_end(execute(campaign), 60);
    ck_assert_str_eq(state, "succeeded");
    free(state);
    return campaign;
}

/* What the list must show, read from campaign_targets and customers here:
 * customer_id, channel, email, phone, street, postal_code, city, region,
 * country, first_name, last_name, preferred_language, touchpoint_id,
 * decided_at (to_char'd to RFC 3339 ms), by customer id; channel NULL for
 * all. The caller PQclears. */
static PGresult *expected_contacts(long long campaign, const char *channel)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", campaign);
    const char *p[] = {id, channel};
    PGresult *res = PQexecParams(
        db,
        "SELECT g.customer_id, g.channel, c.email, c.phone, c.street, c.postal_code, c.city,"
        " c.region, c.country, c.first_name, c.last_name, c.preferred_language, g.touchpoint_id,"
        " to_char(g.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        " FROM campaign_targets g JOIN customers c ON c.id = g.customer_id"
        " WHERE g.campaign_id = $1 AND g.state = 'contacted' AND ($2::text IS NULL"
        " OR g.channel = $2) ORDER BY g.customer_id",
        2, NULL, p, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(db));
    return res;
}

static const char *cell(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
}

static void assert_text(const json_t *v, const char *want, const char *what, long long customer)
{
    if (want == NULL)
        ck_assert_msg(json_is_null(v), "%s of %lld is not null", what, customer);
    else
        ck_assert_msg(json_is_string(v) && strcmp(json_string_value(v), want) == 0,
                      "%s of %lld: %s, not %s", what, customer,
                      json_is_string(v) ? json_string_value(v) : "(not a string)", want);
}

/* Every page of the list with ?limit=limit&query (query may be ""): all
 * rows in one array (the caller owns it); *pages counts the pages. Each
 * page but the last is full. */
static json_t *all_pages(long long campaign, int limit, const char *query, int *pages)
{
    json_t *rows = json_array();
    char cursor[512] = "";
    *pages = 0;
    for (;;) {
        char path[768];
        snprintf(path, sizeof path, "/v1/campaigns/%lld/contacts?limit=%d%s%s%s", campaign, limit,
                 query, cursor[0] ? "&after=" : "", cursor);
        json_t *doc = expect("GET", path, NULL, NULL, 200);
        json_t *data = json_object_get(doc, "data"), *next = json_object_get(doc, "next_cursor");
        ck_assert(json_is_array(data));
        ck_assert_int_le(json_array_size(data), limit);
        json_array_extend(rows, data);
        (*pages)++;
        ck_assert_int_lt(*pages, 10000);
        if (json_is_null(next)) {
            json_decref(doc);
            return rows;
        }
        ck_assert_int_eq(json_array_size(data), limit);
        ck_assert(json_is_string(next) && strlen(json_string_value(next)) < sizeof cursor);
        snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        json_decref(doc);
    }
}

/* The rows shown are exactly the expected ones, in order, each with the
 * address of its channel. */
static void assert_rows(const json_t *rows, const PGresult *want)
{
    ck_assert_int_eq(json_array_size(rows), PQntuples(want));
    for (int r = 0; r < PQntuples(want); r++) {
        const json_t *row = json_array_get(rows, (size_t)r);
        long long customer = atoll(cell(want, r, 0));
        ck_assert_int_eq(int_member(row, "customer_id"), customer);
        const char *channel = cell(want, r, 1);
        assert_text(json_object_get(row, "channel"), channel, "channel", customer);
        const json_t *address = json_object_get(row, "address");
        if (strcmp(channel, "email") == 0) {
            assert_text(address, cell(want, r, 2), "address", customer);
        } else {
            ck_assert_str_eq(channel, "mail");
            const char *postal[] = {"street", "postal_code", "city", "region", "country"};
            ck_assert_int_eq(json_object_size(address), 5);
            for (int i = 0; i < 5; i++)
                assert_text(json_object_get(address, postal[i]), cell(want, r, 4 + i), postal[i],
                            customer);
        }
        assert_text(json_object_get(row, "first_name"), cell(want, r, 9), "first_name", customer);
        assert_text(json_object_get(row, "last_name"), cell(want, r, 10), "last_name", customer);
        assert_text(json_object_get(row, "preferred_language"), cell(want, r, 11),
                    "preferred_language", customer);
        assert_text(json_object_get(row, "offer_code"), "OFF-X", "offer_code", customer);
        ck_assert_int_eq(int_member(row, "touchpoint_id"), atoll(cell(want, r, 12)));
        assert_text(json_object_get(row, "decided_at"), cell(want, r, 13), "decided_at", customer);
    }
}

static void contacts_path(char *path, size_t size, long long campaign, const char *query)
{
    snprintf(path, size, "/v1/campaigns/%lld/contacts%s", campaign, query);
}

START_TEST(contacts_are_the_contacted_targets_in_customer_order_and_every_page_shows_each_once)
{
    char tag[64];
    harness_unique(tag, sizeof tag, "contacts");
    long long campaign = executed_on_email_and_mail(tag, 120);
    PGresult *want = expected_contacts(campaign, NULL);
    /* 90 may be contacted (30 by email, 60 by mail); a fifth are held out */
    ck_assert_int_ge(PQntuples(want), 50);
    ck_assert_int_le(PQntuples(want), 90);

    int pages;
    json_t *rows = all_pages(campaign, 1000, "", &pages); /* one page */
    ck_assert_int_eq(pages, 1);
    assert_rows(rows, want);
    json_decref(rows);
    rows = all_pages(campaign, 7, "", &pages);          /* many */
    ck_assert_int_eq(pages, (PQntuples(want) + 6) / 7); /* the last page may be full */
    assert_rows(rows, want);
    json_decref(rows);
    PQclear(want);

    /* the default limit is 100: all of them on one page */
    char path[128];
    contacts_path(path, sizeof path, campaign, "");
    json_t *doc = expect("GET", path, NULL, NULL, 200);
    ck_assert(json_is_null(json_object_get(doc, "next_cursor")));
    ck_assert_int_eq(json_array_size(json_object_get(doc, "data")),
                     number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                            " AND state = 'contacted'",
                            campaign));
    json_decref(doc);
}
END_TEST

START_TEST(the_channel_filter_shows_the_contacts_made_on_that_channel)
{
    char tag[64];
    harness_unique(tag, sizeof tag, "contactsch");
    long long campaign = executed_on_email_and_mail(tag, 80);
    const char *channels[] = {"email", "mail", "sms"};
    int total = 0;
    for (int i = 0; i < 3; i++) {
        char query[32];
        snprintf(query, sizeof query, "&channel=%s", channels[i]);
        PGresult *want = expected_contacts(campaign, channels[i]);
        if (i < 2)
            ck_assert_int_gt(PQntuples(want), 0);
        else
            ck_assert_int_eq(PQntuples(want), 0);
        int pages;
        json_t *rows = all_pages(campaign, 9, query, &pages);
        assert_rows(rows, want);
        total += PQntuples(want);
        json_decref(rows);
        PQclear(want);
    }
    ck_assert_int_eq(total, number("SELECT count(*) FROM campaign_targets WHERE campaign_id = $1"
                                   " AND state = 'contacted'",
                                   campaign));
}
END_TEST

/* A CSV document parsed back (RFC 4180): rows of fields, every string
 * malloc'd. */
#define CSV_MAX_FIELDS 32
typedef struct csv_doc {
    size_t nrows;
    char *(*rows)[CSV_MAX_FIELDS];
    int *nfields;
} csv_doc;

static void csv_doc_free(csv_doc *d)
{
    for (size_t r = 0; r < d->nrows; r++)
        for (int f = 0; f < d->nfields[r]; f++)
            free(d->rows[r][f]);
    free(d->rows);
    free(d->nfields);
}

/* A field being read, grown as it fills. */
typedef struct csv_field {
    char *text;
    size_t len, cap;
} csv_field;

static void field_add(csv_field *f, char c)
{
    if (f->len + 1 >= f->cap) {
        f->cap = f->cap ? f->cap * 2 : 32;
        f->text = realloc(f->text, f->cap);
        ck_assert_ptr_nonnull(f->text);
    }
    f->text[f->len++] = c;
    f->text[f->len] = '\0';
}

/* Parses text: quoted fields (with "" for a quote, and CR, LF, commas
 * inside), records ending with CRLF. Fails the test on anything else. */
static csv_doc csv_parse(const char *text, size_t len)
{
    csv_doc d = {0};
    size_t cap = 0, i = 0;
    while (i < len) {
        if (d.nrows == cap) {
            cap = cap ? cap * 2 : 64;
            d.rows = realloc(d.rows, cap * sizeof *d.rows);
            d.nfields = realloc(d.nfields, cap * sizeof *d.nfields);
            ck_assert(d.rows != NULL && d.nfields != NULL);
        }
        int nf = 0;
        for (;;) { /* one field */
            csv_field field = {.text = calloc(1, 32), .cap = 32};
            ck_assert_ptr_nonnull(field.text);
            if (i < len && text[i] == '"') {
                for (i++;; i++) {
                    ck_assert_msg(i < len, "an unterminated quoted field");
                    if (text[i] == '"' && i + 1 < len && text[i + 1] == '"')
                        field_add(&field, text[i++]);
                    else if (text[i] == '"')
                        break;
                    else
                        field_add(&field, text[i]);
                }
                i++;
            } else {
                while (i < len && text[i] != ',' && text[i] != '\r') {
                    ck_assert_msg(text[i] != '"' && text[i] != '\n', "a bare quote or LF at %zu",
                                  i);
                    field_add(&field, text[i++]);
                }
            }
            ck_assert_int_lt(nf, CSV_MAX_FIELDS);
            d.rows[d.nrows][nf++] = field.text;
            ck_assert_msg(i < len, "a record without CRLF");
            if (text[i] == ',') {
                i++;
                continue;
            }
            ck_assert_msg(text[i] == '\r' && i + 1 < len && text[i + 1] == '\n',
                          "a field ends with %d at %zu", text[i], i);
            i += 2;
            break;
        }
        d.nfields[d.nrows++] = nf;
    }
    return d;
}

/* GET the list with Accept; the response (the caller frees it). */
static http_response get_accept(long long campaign, const char *query, const char *accept)
{
    char path[160], header[128];
    contacts_path(path, sizeof path, campaign, query);
    snprintf(header, sizeof header, "Accept: %s", accept);
    const char *headers[] = {header, NULL};
    http_call call = {.method = "GET", .path = path, .api_key = writer.secret, .headers = headers};
    return http_send(&srv, &call);
}

static const char *const csv_columns[] = {
    "customer_id",   "channel",   "address",    "street",    "postal_code",        "city",
    "region",        "country",   "first_name", "last_name", "preferred_language", "offer_code",
    "touchpoint_id", "decided_at"};
#define N_CSV_COLUMNS 14

/* The CSV of campaign (query: "" or "?channel=..."), parsed; checks the
 * media type and the header row. */
static csv_doc get_csv(long long campaign, const char *query)
{
    http_response r = get_accept(campaign, query, "text/csv");
    ck_assert_msg(r.status == 200, "CSV answered %ld: %.300s", r.status, r.body);
    const char *type = http_response_header(&r, "Content-Type");
    ck_assert(type != NULL);
    ck_assert_str_eq(type, "text/csv; charset=utf-8");
    csv_doc d = csv_parse(r.body, r.body_len);
    http_response_free(&r);
    ck_assert_int_ge(d.nrows, 1);
    ck_assert_int_eq(d.nfields[0], N_CSV_COLUMNS);
    for (int f = 0; f < N_CSV_COLUMNS; f++)
        ck_assert_str_eq(d.rows[0][f], csv_columns[f]);
    return d;
}

static const char *or_empty(const char *s)
{
    return s != NULL ? s : "";
}

START_TEST(the_csv_is_the_whole_list_quoted_and_guarded_against_formulas)
{
    char tag[64];
    harness_unique(tag, sizeof tag, "contactscsv");
    long long campaign = executed_on_email_and_mail(tag, 100);
    /* names that need quoting and the formula guard, on contacted customers
     * of each channel */
    char id[24];
    snprintf(id, sizeof id, "%lld", campaign);
    sql3("UPDATE customers c SET first_name = CASE WHEN g.channel = 'email'"
         " THEN 'Rossi, \"Mario\"' ELSE '=HYPERLINK(\"http://x\")' END,"
         " last_name = E'two\\r\\nlines', street = '-Via Roma 1', phone = '+39 333 1'"
         " FROM campaign_targets g WHERE g.campaign_id = $1::bigint AND g.customer_id = c.id"
         " AND g.state = 'contacted' AND g.customer_id IN (SELECT min(customer_id)"
         " FROM campaign_targets WHERE campaign_id = $1::bigint AND state = 'contacted'"
         " GROUP BY channel)",
         id, NULL, NULL);
    PGresult *want = expected_contacts(campaign, NULL);
    csv_doc d = get_csv(campaign, "");
    ck_assert_int_eq(d.nrows, (size_t)PQntuples(want) + 1);
    int quoted = 0, guarded = 0;
    for (int r = 0; r < PQntuples(want); r++) {
        char **f = d.rows[r + 1];
        ck_assert_int_eq(d.nfields[r + 1], N_CSV_COLUMNS);
        ck_assert_str_eq(f[0], cell(want, r, 0));
        const char *channel = cell(want, r, 1);
        ck_assert_str_eq(f[1], channel);
        bool mail = strcmp(channel, "mail") == 0;
        ck_assert_str_eq(f[2], mail ? "" : or_empty(cell(want, r, 2)));
        for (int i = 0; i < 5; i++) {
            const char *postal = cell(want, r, 4 + i);
            if (!mail)
                ck_assert_str_eq(f[3 + i], "");
            else if (postal != NULL && postal[0] == '-') /* guarded */
                ck_assert(f[3 + i][0] == '\'' && strcmp(f[3 + i] + 1, postal) == 0);
            else
                ck_assert_str_eq(f[3 + i], or_empty(postal));
        }
        const char *first = cell(want, r, 9);
        if (first[0] == '=') {
            ck_assert_str_eq(f[8], "'=HYPERLINK(\"http://x\")");
            guarded++;
        } else {
            ck_assert_str_eq(f[8], first);
            quoted += strcmp(first, "Rossi, \"Mario\"") == 0;
        }
        ck_assert_str_eq(f[9], or_empty(cell(want, r, 10)));
        ck_assert_str_eq(f[10], or_empty(cell(want, r, 11)));
        ck_assert_str_eq(f[11], "OFF-X");
        ck_assert_str_eq(f[12], cell(want, r, 12));
        ck_assert_str_eq(f[13], cell(want, r, 13));
    }
    ck_assert_int_eq(quoted, 1);
    ck_assert_int_eq(guarded, 1);
    csv_doc_free(&d);
    PQclear(want);

    /* the bytes themselves: the quoted name, the guarded formula, the CRLF
     * inside quotes */
    http_response r = get_accept(campaign, "", "text/csv");
    ck_assert_ptr_nonnull(strstr(r.body, ",\"Rossi, \"\"Mario\"\"\","));
    ck_assert_ptr_nonnull(strstr(r.body, ",\"'=HYPERLINK(\"\"http://x\"\")\","));
    ck_assert_ptr_nonnull(strstr(r.body, ",\"two\r\nlines\","));
    ck_assert(strncmp(r.body, "customer_id,channel,address,", 28) == 0);
    ck_assert(r.body_len > 2 && strcmp(r.body + r.body_len - 2, "\r\n") == 0);
    http_response_free(&r);

    /* the filter applies; the CSV has no pages */
    want = expected_contacts(campaign, "email");
    d = get_csv(campaign, "?channel=email");
    ck_assert_int_eq(d.nrows, (size_t)PQntuples(want) + 1);
    for (int i = 0; i < PQntuples(want); i++)
        ck_assert_str_eq(d.rows[i + 1][0], cell(want, i, 0));
    csv_doc_free(&d);
    PQclear(want);
    r = get_accept(campaign, "?limit=10", "text/csv");
    json_t *problem = assert_problem_at(&r, 422, __FILE__, __LINE__);
    ck_assert(problem_names_field(problem, "limit"));
    json_decref(problem);
    http_response_free(&r);
}
END_TEST

START_TEST(accept_chooses_csv_or_json)
{
    char tag[64];
    harness_unique(tag, sizeof tag, "contactsacc");
    long long campaign = executed_on_email_and_mail(tag, 12);
    const struct {
        const char *accept;
        bool csv;
    } cases[] = {{"text/csv", true},
                 {"application/json", false},
                 {"*/*", false},
                 {"text/*", true},
                 {"text/csv;q=0.5, application/json", false},
                 {"application/json;q=0.1, text/csv", true},
                 {"TEXT/CSV; charset=utf-8", true},
                 {"text/csv;q=0, */*", false},
                 {"text/html", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_response r = get_accept(campaign, "", cases[i].accept);
        ck_assert_int_eq(r.status, 200);
        const char *type = http_response_header(&r, "Content-Type");
        ck_assert_msg(type != NULL && strncmp(type, cases[i].csv ? "text/csv" : "application/json",
                                              cases[i].csv ? 8 : 16) == 0,
                      "Accept: %s gave %s", cases[i].accept, type ? type : "nothing");
        http_response_free(&r);
    }
}
END_TEST

START_TEST(contacts_of_an_unknown_or_deleted_campaign_are_404_and_a_bad_channel_422)
{
    char tag[64], path[128], body[512];
    harness_unique(tag, sizeof tag, "contacts404");
    json_decref(expect("GET", "/v1/campaigns/999999999/contacts", NULL, NULL, 404));
    http_response r = get_accept(999999999, "", "text/csv");
    json_decref(assert_problem_at(&r, 404, __FILE__, __LINE__));
    http_response_free(&r);

    /* a draft, never executed: an empty list, and a CSV of the header */
    long long segment = live_segment(tag);
    snprintf(body, sizeof body,
             "{\"code\": \"%s\", \"name\": \"n %s\", \"audience\": {\"segment_id\": %lld},"
             " \"channels\": [\"mail\"], \"purpose\": \"profiling\", \"control_share\": 0.1,"
             " \"response_types\": [\"purchase\"]}",
             tag, tag, segment);
    json_t *doc = expect("POST", "/v1/campaigns", body, NULL, 201);
    long long campaign = int_member(doc, "id");
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", int_member(doc, "version"));
    json_decref(doc);
    contacts_path(path, sizeof path, campaign, "");
    doc = expect("GET", path, NULL, NULL, 200);
    ck_assert_int_eq(json_array_size(json_object_get(doc, "data")), 0);
    ck_assert(json_is_null(json_object_get(doc, "next_cursor")));
    json_decref(doc);
    csv_doc d = get_csv(campaign, "");
    ck_assert_int_eq(d.nrows, 1);
    csv_doc_free(&d);

    contacts_path(path, sizeof path, campaign, "?channel=fax");
    r = http_get(&srv, path, writer.secret);
    json_t *problem = assert_problem_at(&r, 422, __FILE__, __LINE__);
    ck_assert(problem_names_field(problem, "channel"));
    json_decref(problem);
    http_response_free(&r);
    r = get_accept(campaign, "?channel=fax", "text/csv");
    problem = assert_problem_at(&r, 422, __FILE__, __LINE__);
    ck_assert(problem_names_field(problem, "channel"));
    json_decref(problem);
    http_response_free(&r);

    snprintf(path, sizeof path, "/v1/campaigns/%lld", campaign);
    json_decref(expect("DELETE", path, NULL, etag, 204));
    contacts_path(path, sizeof path, campaign, "");
    json_decref(expect("GET", path, NULL, NULL, 404));
}
END_TEST

/* 20,000 contacts written here in SQL (two chunks of the CSV's 10,000 and
 * an empty third read): every one in the CSV once, in order. */
START_TEST(the_csv_crosses_its_chunks_without_losing_or_repeating_a_contact)
{
    char tag[64], body[512];
    harness_unique(tag, sizeof tag, "contactsbig");
    snprintf(body, sizeof body,
             "{\"code\": \"%s\", \"name\": \"n %s\", \"audience\": {\"segment_id\": %lld},"
             " \"channels\": [\"email\"], \"purpose\": \"profiling\", \"control_share\": 0.1,"
             " \"response_types\": [\"purchase\"]}",
             tag, tag, live_segment(tag));
    json_t *doc = expect("POST", "/v1/campaigns", body, NULL, 201);
    long long campaign = int_member(doc, "id");
    json_decref(doc);
    char id[24];
    snprintf(id, sizeof id, "%lld", campaign);
    sql3("INSERT INTO customers (first_name, email, tags) SELECT 'big ' || i,"
         " 'big' || i || '@example.com', ARRAY[$1] FROM generate_series(1, 20000) i",
         tag, NULL, NULL);
    sql3("INSERT INTO campaign_targets (campaign_id, customer_id, grp, state, channel,"
         " touchpoint_id, decided_at) SELECT $2::bigint, id, 'treatment', 'contacted', 'email',"
         " id, now() FROM customers WHERE $1 = ANY(tags)",
         tag, id, NULL);
    PGresult *want = expected_contacts(campaign, NULL);
    ck_assert_int_eq(PQntuples(want), 20000);
    csv_doc d = get_csv(campaign, "");
    ck_assert_int_eq(d.nrows, 20001);
    for (int r = 0; r < 20000; r++) {
        ck_assert_str_eq(d.rows[r + 1][0], cell(want, r, 0));
        ck_assert_str_eq(d.rows[r + 1][2], cell(want, r, 2));
    }
    csv_doc_free(&d);
    PQclear(want);
}
END_TEST

Suite *campaign_execution_suite(void)
{
    Suite *s = suite_create("campaign_execution");
    TCase *tc = tcase_create("execute");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_campaign_contacts_its_audience_once_with_consent_caps_and_a_control_group);
    tcase_add_test(tc, what_cannot_be_executed_is_refused_and_changes_nothing);
    tcase_add_test(tc, responses_go_to_the_last_campaign_and_results_count_them);
    tcase_add_test(tc, a_scheduled_campaign_starts_at_its_start_and_completes_at_its_end);
    tcase_add_test(tc, a_crmd_killed_midway_contacts_nobody_twice_and_skips_nobody);
    tcase_add_test(tc, two_executions_at_once_share_the_chunks_and_contact_nobody_twice);
    tcase_add_test(tc, a_member_no_longer_active_when_decided_is_excluded_as_not_active);
    suite_add_tcase(s, tc);
    tc = tcase_create("contacts");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(
        tc, contacts_are_the_contacted_targets_in_customer_order_and_every_page_shows_each_once);
    tcase_add_test(tc, the_channel_filter_shows_the_contacts_made_on_that_channel);
    tcase_add_test(tc, the_csv_is_the_whole_list_quoted_and_guarded_against_formulas);
    tcase_add_test(tc, the_csv_crosses_its_chunks_without_losing_or_repeating_a_contact);
    tcase_add_test(tc, accept_chooses_csv_or_json);
    tcase_add_test(tc, contacts_of_an_unknown_or_deleted_campaign_are_404_and_a_bad_channel_422);
    suite_add_tcase(s, tc);
    return s;
}

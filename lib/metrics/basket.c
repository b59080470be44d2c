/*
 * metrics/basket.c — the items bought together: the patterns job's phase
 * "basket" (customer_metrics.h) and the page that reads its result
 * (GET /v1/metrics/market-basket).
 *
 * An order is one purchase touchpoint of a live customer up to as_of whose
 * items name at least one SKU; its basket is the set of its items' distinct
 * SKUs (quantities and repeated lines do not matter). With N the orders,
 * n(a) those holding a and n(a, b) those holding both:
 *   support(a, b) = n(a, b) / N
 *   confidence(a -> b) = n(a, b) / n(a)
 *   lift(a -> b) = confidence(a -> b) / (n(b) / N) = n(a, b) N / (n(a) n(b))
 * Only the pairs with n(a, b) at least the job's min_pair_orders are kept,
 * which bounds the table by what the base really buys together.
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the phase ------------------------------------------------------------------ */

/* One pass over the orders: each basket's SKUs as an array s (in the
 * items' order, repeats included), then its cells (i, j) with i <= j, each
 * position the first of its SKU in s (array_position), so that a repeated
 * SKU counts once: (i, i) is the SKU alone, i < j the pair, ordered
 * bytewise (COLLATE "C"). Grouped, the singles give n(sku) (other NULL) and
 * the pairs n(sku, other); N is the number of cells (1, 1), one per order.
 * Live customers are those no non-active customer row names (the partial
 * index customers_not_active_idx holds the few that are not): an anti-join
 * against them instead of a join with every live customer. Written so that
 * the whole plan, aggregation included, runs in parallel workers, which a
 * CREATE TABLE AS allows and an INSERT does not (PostgreSQL 15); the
 * set-returning functions in select lists instead (ProjectSet) kept the
 * plan above the Gather and took 1.6 times as long on the bench's data. */
#define BASKET_SQL                                                                                 \
    "CREATE TEMP TABLE metrics_basket_next ON COMMIT DROP AS "                                     \
    "SELECT least(k.s[i] COLLATE \"C\", k.s[j] COLLATE \"C\") AS sku,"                             \
    " CASE WHEN j > i THEN greatest(k.s[i] COLLATE \"C\", k.s[j] COLLATE \"C\") END AS other,"     \
    " count(*) AS orders, count(*) FILTER (WHERE i = 1 AND j = 1) AS baskets "                     \
    "FROM touchpoints t "                                                                          \
    "CROSS JOIN LATERAL jsonb_to_record(jsonb_build_object('s',"                                   \
    " jsonb_path_query_array(t.items, '$[*].sku'))) AS k (s text[]) "                              \
    "CROSS JOIN LATERAL generate_series(1, cardinality(k.s)) i "                                   \
    "CROSS JOIN LATERAL generate_series(i, cardinality(k.s)) j "                                   \
    "WHERE t.type = 'purchase' AND t.items IS NOT NULL"                                            \
    " AND t.occurred_at <= (SELECT current_setting('crmd.as_of')::timestamptz)"                    \
    " AND NOT EXISTS (SELECT FROM customers c WHERE c.id = t.customer_id"                          \
    "  AND c.status <> 'active')"                                                                  \
    " AND array_position(k.s, k.s[i]) = i AND array_position(k.s, k.s[j]) = j "                    \
    "GROUP BY 1, 2 "                                                                               \
    "HAVING count(*) >= (SELECT current_setting('crmd.min_pair_orders')::int)"                     \
    " OR CASE WHEN j > i THEN greatest(k.s[i] COLLATE \"C\", k.s[j] COLLATE \"C\") END IS NULL"

/* Replacing the pairs: hundreds of thousands of rows and five indexes
 * (5 s for the bench's 250,000 rules), so these two run as long
 * statements, which keep the job's lease (N is the orders counted above). */
#define BASKET_CLEAR_PAIRS_SQL "DELETE FROM metrics_basket_pairs"

/* Each pair in both directions, with its measures. */
#define BASKET_STORE_PAIRS_SQL                                                                     \
    "INSERT INTO metrics_basket_pairs (sku, other, orders, support, confidence, lift)"             \
    " SELECT r.sku, r.other, r.orders, r.orders::float8 / n.n, r.orders::float8 / a.orders,"       \
    "  r.orders::float8 * n.n / (a.orders::float8 * b.orders)"                                     \
    " FROM (SELECT sku, other, orders FROM metrics_basket_next WHERE other IS NOT NULL"            \
    "  UNION ALL SELECT other, sku, orders FROM metrics_basket_next WHERE other IS NOT NULL) r"    \
    " JOIN metrics_basket_items a ON a.sku = r.sku"                                                \
    " JOIN metrics_basket_items b ON b.sku = r.other"                                              \
    " CROSS JOIN (SELECT sum(baskets)::float8 AS n FROM metrics_basket_next) n"

static crm_stmt basket_clear_items =
    CRM_STMT("metrics_basket_clear_items", "DELETE FROM metrics_basket_items");

static crm_stmt basket_store_items =
    CRM_STMT("metrics_basket_store_items",
             "INSERT INTO metrics_basket_items (sku, orders)"
             " SELECT sku, orders FROM metrics_basket_next WHERE other IS NULL");

static crm_stmt basket_totals =
    CRM_STMT_RO("metrics_basket_totals",
                "SELECT coalesce(sum(baskets), 0), count(*) FILTER (WHERE other IS NULL),"
                " count(*) FILTER (WHERE other IS NOT NULL) FROM metrics_basket_next");

/* $1 as_of, $2 job, $3 N, $4 min_pair_orders. */
static crm_stmt basket_record = CRM_STMT(
    "metrics_basket_record",
    "INSERT INTO metrics_patterns (pattern, as_of, computed_at, job_id, orders, min_pair_orders)"
    " VALUES ('basket', $1::timestamptz, now(), $2::bigint, $3::bigint, $4::int) "
    "ON CONFLICT (pattern) DO UPDATE SET as_of = excluded.as_of,"
    " computed_at = excluded.computed_at, job_id = excluded.job_id, orders = excluded.orders,"
    " min_pair_orders = excluded.min_pair_orders");

/* Runs stmt with values for its effect. */
static bool exec_values(crm_conn *c, crm_stmt *stmt, int n, const char *const *values,
                        crm_error *err)
{
    PGresult *res = crm_db_exec(c, stmt, n, values, err);
    PQclear(res);
    return res != NULL;
}

bool metrics_basket_compute(metrics_patterns_run *run, json_t *result, crm_error *err)
{
    if (!metrics_patterns_run_long(run, BASKET_SQL, err))
        return false;
    PGresult *totals = crm_db_exec(run->c, &basket_totals, 0, NULL, err);
    if (totals == NULL)
        return false;
    char orders[24], job[24], min[16];
    snprintf(orders, sizeof orders, "%s", PQgetvalue(totals, 0, 0));
    long long skus = atoll(PQgetvalue(totals, 0, 1)), pairs = atoll(PQgetvalue(totals, 0, 2));
    PQclear(totals);
    snprintf(job, sizeof job, "%lld", crm_job_id(run->job));
    snprintf(min, sizeof min, "%d", run->min_pair_orders);
    const char *record[] = {run->as_of, job, orders, min};
    if (!metrics_patterns_run_long(run, BASKET_CLEAR_PAIRS_SQL, err) ||
        !exec_values(run->c, &basket_clear_items, 0, NULL, err) ||
        !exec_values(run->c, &basket_store_items, 0, NULL, err) ||
        !metrics_patterns_run_long(run, BASKET_STORE_PAIRS_SQL, err) ||
        !exec_values(run->c, &basket_record, 4, record, err))
        return false;
    json_object_set_new(result, "orders", json_integer(atoll(orders)));
    json_object_set_new(result, "skus", json_integer(skus));
    json_object_set_new(result, "pairs", json_integer(pairs));
    return true;
}

/* ---- GET /v1/metrics/market-basket ---------------------------------------------- */

/* The document around rules, the SQL of the rules' JSON array; $5 the
 * SKU asked for (NULL: none). */
#define BASKET_DOC(rules)                                                                          \
    "SELECT json_build_object('as_of', " TS("i.as_of") ","                                        \
    " 'computed_at', " TS("i.computed_at") ","                                                    \
    " 'orders', coalesce(i.orders, 0), 'min_pair_orders', i.min_pair_orders,"                      \
    " 'sku', $5::text, 'sku_orders', CASE WHEN $5::text IS NOT NULL THEN coalesce("                \
    "  (SELECT orders FROM metrics_basket_items WHERE sku = $5::text), 0) END,"                    \
    " 'data', coalesce((" rules "), '[]'))::text "                                                 \
    "FROM (SELECT 1) one LEFT JOIN metrics_patterns i ON i.pattern = 'basket'"

/* The rules that pass $1 support, $2 confidence, $3 lift, the first $4 in
 * the page's order, from the rows where. */
#define BASKET_RULES(where)                                                                        \
    "SELECT json_agg(json_build_object('a', r.sku, 'b', r.other, 'orders', r.orders,"              \
    "  'a_orders', a.orders, 'b_orders', b.orders, 'support', r.support,"                          \
    "  'confidence', r.confidence, 'lift', r.lift)"                                                \
    "  ORDER BY r.lift DESC, r.confidence DESC, r.orders DESC, r.sku, r.other)"                    \
    " FROM (SELECT * FROM metrics_basket_pairs p WHERE " where                                     \
    "  AND p.support >= $1::float8 AND p.confidence >= $2::float8 AND p.lift >= $3::float8"        \
    "  ORDER BY p.lift DESC, p.confidence DESC, p.orders DESC, p.sku, p.other LIMIT $4::int) r"    \
    " JOIN metrics_basket_items a ON a.sku = r.sku"                                                \
    " JOIN metrics_basket_items b ON b.sku = r.other"

/* Every rule: down metrics_basket_pairs_lift_idx, or, when a threshold
 * leaves few rules, from the index of that measure. Which is best depends
 * on the thresholds' values, so this one is planned for them at each run
 * (not prepared: a generic plan walks the lift index whatever they are,
 * 0.4 s over 250,000 rules that a high min_support all refuses, against
 * under a millisecond). */
static crm_stmt basket_page = CRM_STMT_RO(NULL, BASKET_DOC(BASKET_RULES("$5::text IS NULL")));

/* One SKU's rules, read down metrics_basket_pairs_sku_idx. */
static crm_stmt basket_page_sku =
    CRM_STMT_RO("metrics_basket_page_sku", BASKET_DOC(BASKET_RULES("p.sku = $5::text")));

static bool invalid(crm_error *err, const char *field, const char *message)
{
    crm_error_add_field(err, field, message);
    return crm_error_set(err, CRM_E_INVALID, "invalid query parameter '%s'", field);
}

static bool basket_query_valid(const crm_basket_query *q, crm_error *err)
{
    if (!(q->min_support >= 0 && q->min_support <= 1))
        return invalid(err, "min_support", "must be a number from 0 to 1");
    if (!(q->min_confidence >= 0 && q->min_confidence <= 1))
        return invalid(err, "min_confidence", "must be a number from 0 to 1");
    if (!(q->min_lift >= 0 && isfinite(q->min_lift)))
        return invalid(err, "min_lift", "must be a number of 0 or more");
    if (q->limit < 1 || q->limit > CRM_BASKET_LIMIT_MAX)
        return invalid(err, "limit", "must be an integer from 1 to 1000");
    if (q->sku != NULL && q->sku[0] == '\0')
        return invalid(err, "sku", "must not be empty");
    return true;
}

char *crm_metrics_market_basket(const crm_basket_query *q, crm_error *err)
{
    if (!basket_query_valid(q, err))
        return NULL;
    char support[32], confidence[32], lift[32], limit[16];
    snprintf(support, sizeof support, "%.17g", q->min_support);
    snprintf(confidence, sizeof confidence, "%.17g", q->min_confidence);
    snprintf(lift, sizeof lift, "%.17g", q->min_lift);
    snprintf(limit, sizeof limit, "%d", q->limit);
    const char *values[] = {support, confidence, lift, limit, q->sku};
    PGresult *res = crm_db_run(q->sku ? &basket_page_sku : &basket_page, 5, values, err);
    if (res == NULL)
        return NULL;
    char *text = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return text;
}

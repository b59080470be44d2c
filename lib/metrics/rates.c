/*
 * metrics/rates.c — the rate table that converts amounts to the reporting
 * currency (currency_rates, migration 0017): read, list, set and remove a
 * rate (/v1/metrics/currency-rates). A recompute reads the table when it
 * starts and the follower at each sweep (metrics/load.c), so a change
 * applies from the next computation of a customer's metrics.
 *
 * A rate's version, and so its ETag, is its updated_at in microseconds
 * since the epoch. Every write of a row moves updated_at forward by at
 * least a microsecond, even when the clock has not (or went back), so two
 * versions of a row never share a tag.
 */
#include "customer_metrics.h"
#include "metrics/internal.h"
#include "currency.h"
#include "customers.h"
#include "jbuf.h"
#include "json.h"
#include "list/cursor.h"
#include "list/page.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* updated_at is printed as it is (UTC sessions, exact to the microsecond):
 * it gives both the version and the timestamp shown. */
#define RATE_COLUMNS "currency, rate::float8, updated_at"

static crm_stmt rate_get = CRM_STMT_RO(
    "metrics_rate_get", "SELECT " RATE_COLUMNS " FROM currency_rates WHERE currency = $1");

/* The row, locked until the transaction ends: the If-Match check and the
 * write see the same version. */
static crm_stmt rate_lock =
    CRM_STMT("metrics_rate_lock",
             "SELECT " RATE_COLUMNS " FROM currency_rates WHERE currency = $1 FOR UPDATE");

static crm_stmt rate_update = CRM_STMT(
    "metrics_rate_update",
    "UPDATE currency_rates SET rate = $2::numeric,"
    " updated_at = greatest(now(), updated_at + interval '1 microsecond')"
    " WHERE currency = $1 RETURNING " RATE_COLUMNS);

/* No row back: another transaction created it since the lock found none. */
static crm_stmt rate_insert =
    CRM_STMT("metrics_rate_insert", "INSERT INTO currency_rates (currency, rate, updated_at)"
                                    " VALUES ($1, $2::numeric, now())"
                                    " ON CONFLICT (currency) DO NOTHING RETURNING " RATE_COLUMNS);

static crm_stmt rate_delete =
    CRM_STMT("metrics_rate_delete", "DELETE FROM currency_rates WHERE currency = $1");

/* A page in currency order after $1 ('' for the first), $2 rows. */
static crm_stmt rate_page =
    CRM_STMT_PAGE("metrics_rate_page", "SELECT " RATE_COLUMNS " FROM currency_rates"
                                       " WHERE currency > $1 ORDER BY currency LIMIT $2");

/* A write that lost the race to create the row runs again, once more than
 * any sane contention needs. */
#define PUT_ATTEMPTS 3

void crm_rate_doc_free(crm_rate_doc *d)
{
    free(d->text);
    d->text = NULL;
    d->len = 0;
}

/* The version of row r (its updated_at in µs); false when it does not parse. */
static bool row_version(const PGresult *res, int r, long long *us)
{
    return crm_parse_pg_timestamp(PQgetvalue(res, r, 2), us);
}

/* Writes row r of a RATE_COLUMNS result as a CurrencyRate. */
static void write_rate(crm_jbuf *b, const PGresult *res, int r, const char *reporting)
{
    long long us = 0;
    if (!row_version(res, r, &us))
        b->out.failed = true;
    crm_jbuf_begin_object(b);
    crm_jbuf_key(b, "currency");
    crm_jbuf_cstring(b, PQgetvalue(res, r, 0));
    crm_jbuf_key(b, "rate");
    crm_jbuf_real(b, strtod(PQgetvalue(res, r, 1), NULL));
    crm_jbuf_key(b, "reporting_currency");
    crm_jbuf_cstring(b, reporting);
    crm_jbuf_key(b, "updated_at");
    crm_jbuf_timestamp(b, us / 1000);
    crm_jbuf_key(b, "version");
    crm_jbuf_int(b, us);
    crm_jbuf_end_object(b);
}

/* The document of the one row of res into out. */
static bool render_one(const PGresult *res, crm_rate_doc *out, crm_error *err)
{
    crm_metrics_config cfg = metrics_config();
    crm_jbuf b;
    crm_jbuf_init(&b);
    write_rate(&b, res, 0, cfg.currency);
    out->version = 0;
    row_version(res, 0, &out->version);
    out->text = crm_jbuf_take(&b, &out->len);
    if (out->text == NULL)
        return crm_error_set(err, CRM_E_INTERNAL, "could not render the rate");
    return true;
}

/* ---- checks --------------------------------------------------------------------- */

bool crm_metrics_rate_check(const char *currency, json_t *body, double *rate, crm_error *err)
{
    crm_metrics_config cfg = metrics_config();
    *rate = NAN;
    if (!crm_currency_known(currency))
        crm_error_add_field(err, "currency",
                            "not an ISO 4217 currency code in circulation (uppercase, as USD)");
    else if (strcmp(currency, cfg.currency) == 0)
        crm_error_add_field(err, "currency",
                            "the reporting currency (CRMD_REPORTING_CURRENCY) needs no rate");
    if (!json_is_object(body)) {
        crm_error_add_field(err, "", "must be an object {\"rate\": number}");
    } else {
        static const char *const allowed[] = {"rate", NULL};
        crm_json_only_fields(body, allowed, err);
        json_t *v = json_object_get(body, "rate");
        double d = json_is_number(v) ? json_number_value(v) : NAN;
        if (!(isfinite(d) && d > 0 && d < CRM_RATE_MAX))
            crm_error_add_field(err, "/rate",
                                "is required: a number above 0 and below 1e9 (units of the "
                                "reporting currency for one unit of this currency)");
        *rate = d;
    }
    if (json_array_size(err->errors) > 0)
        return crm_error_set(err, CRM_E_INVALID, "invalid currency rate");
    return true;
}

/* ---- one rate ------------------------------------------------------------------- */

bool crm_metrics_rate_get(const char *currency, crm_rate_doc *out, crm_error *err)
{
    const char *params[] = {currency};
    PGresult *res = crm_db_run(&rate_get, 1, params, err);
    if (res == NULL)
        return false;
    bool ok = PQntuples(res) == 1
                  ? render_one(res, out, err)
                  : crm_error_set(err, CRM_E_NOT_FOUND, "no rate for this currency");
    PQclear(res);
    return ok;
}

/* Runs stmt on c with the currency (and the rate's text); the result or
 * NULL with err set. */
static PGresult *exec_rate(crm_conn *c, crm_stmt *stmt, const char *currency, const char *rate,
                           crm_error *err)
{
    const char *params[] = {currency, rate};
    return crm_db_exec(c, stmt, rate ? 2 : 1, params, err);
}

/* Fails with 412 unless if_match accepts the locked row (row 0 of locked)
 * or, with no row, is absent. */
static bool precondition_holds(const PGresult *locked, const char *if_match, crm_error *err)
{
    if (PQntuples(locked) == 0) {
        if (if_match == NULL)
            return true;
        return crm_error_set(err, CRM_E_PRECONDITION,
                             "If-Match was sent but there is no rate for this currency");
    }
    long long version = 0;
    if (!row_version(locked, 0, &version))
        return crm_error_set(err, CRM_E_INTERNAL, "unreadable updated_at");
    if (crm_etag_matches(if_match, version))
        return true;
    return crm_error_set(err, CRM_E_PRECONDITION,
                         "the rate has changed: its ETag is now \"%lld\"", version);
}

/* One attempt of a put on c, inside a transaction: *retry when another
 * transaction created the row meanwhile (then nothing was written). */
static bool put_on(crm_conn *c, const char *currency, const char *rate, const char *if_match,
                   crm_rate_doc *out, bool *created, bool *retry, crm_error *err)
{
    *retry = false;
    PGresult *locked = exec_rate(c, &rate_lock, currency, NULL, err);
    if (locked == NULL)
        return false;
    bool exists = PQntuples(locked) == 1;
    bool ok = precondition_holds(locked, if_match, err);
    PQclear(locked);
    if (!ok)
        return false;
    PGresult *res = exec_rate(c, exists ? &rate_update : &rate_insert, currency, rate, err);
    if (res == NULL)
        return false;
    if (PQntuples(res) == 1) {
        *created = !exists;
        ok = render_one(res, out, err);
    } else {
        *retry = true;
        ok = false;
    }
    PQclear(res);
    return ok;
}

bool crm_metrics_rate_put(const char *currency, json_t *body, const char *if_match,
                          crm_rate_doc *out, bool *created, crm_error *err)
{
    double value;
    if (!crm_metrics_rate_check(currency, body, &value, err) ||
        !crm_if_match_valid(if_match, err))
        return false;
    char rate[CRM_REAL_TEXT_SIZE];
    crm_format_real(value, rate);
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return false;
    bool ok = false;
    for (int attempt = 0; attempt < PUT_ATTEMPTS && !ok; attempt++) {
        bool retry = false;
        if (!crm_db_begin(c, err))
            break;
        ok = put_on(c, currency, rate, if_match, out, created, &retry, err) &&
             crm_db_commit(c, err);
        if (!ok)
            crm_db_rollback(c);
        if (!ok && !retry)
            break;
    }
    if (!ok && err->code == CRM_OK)
        crm_error_set(err, CRM_E_CONFLICT, "the rate kept changing; try again");
    if (!ok)
        crm_rate_doc_free(out);
    crm_db_release(c);
    return ok;
}

bool crm_metrics_rate_delete(const char *currency, const char *if_match, crm_error *err)
{
    if (!crm_if_match_valid(if_match, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return false;
    bool ok = false;
    if (crm_db_begin(c, err)) {
        PGresult *locked = exec_rate(c, &rate_lock, currency, NULL, err);
        if (locked != NULL && PQntuples(locked) == 0)
            crm_error_set(err, CRM_E_NOT_FOUND, "no rate for this currency");
        else if (locked != NULL && precondition_holds(locked, if_match, err)) {
            PGresult *res = exec_rate(c, &rate_delete, currency, NULL, err);
            ok = res != NULL && crm_db_commit(c, err);
            PQclear(res);
        }
        PQclear(locked);
        if (!ok)
            crm_db_rollback(c);
    }
    crm_db_release(c);
    return ok;
}

/* ---- the list ------------------------------------------------------------------- */

/* The currency a cursor of this list continues after; false when after is
 * not one of its cursors or names no code (a currency is 3 bytes). */
static bool read_cursor(const char *after, char currency[4])
{
    crm_cursor c;
    if (!crm_cursor_decode(after, CRM_CURSOR_CURRENCY_RATES, 0, 0, true, &c) || c.text_len != 3)
        return false;
    memcpy(currency, c.text, 4);
    return true;
}

char *crm_metrics_rates_list(const char *after, int limit, size_t *len, crm_error *err)
{
    char start[4] = "";
    if (after != NULL && !read_cursor(after, start)) {
        crm_error_add_field(err, "after", "not a cursor this list returned");
        crm_error_set(err, CRM_E_INVALID, "invalid query parameter 'after'");
        return NULL;
    }
    if (limit < 1)
        limit = 1;
    char fetch[16];
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    const char *params[] = {start, fetch};
    PGresult *res = crm_db_run(&rate_page, 2, params, err);
    if (res == NULL)
        return NULL;
    crm_metrics_config cfg = metrics_config();
    int n = PQntuples(res);
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_page_begin(&b);
    for (int r = 0; r < crm_page_shown(n, limit); r++)
        write_rate(&b, res, r, cfg.currency);
    crm_cursor next; /* after the last currency shown */
    crm_cursor_init(&next, CRM_CURSOR_CURRENCY_RATES, 0);
    bool more = crm_page_has_next(n, limit);
    if (more && !crm_cursor_set_text(&next, PQgetvalue(res, limit - 1, 0),
                                     (size_t)PQgetlength(res, limit - 1, 0)))
        b.out.failed = true;
    crm_page_end(&b, more ? &next : NULL);
    PQclear(res);
    char *text = crm_jbuf_take(&b, len);
    if (text == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "could not render the rates");
    return text;
}

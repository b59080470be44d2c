/*
 * campaigns/contacts.c — whom an executed campaign contacted (campaigns.h):
 * its targets in state contacted (migration 0026), in customer id order,
 * each with the address of the channel it was contacted on, as the
 * customer's row holds it now, for a delivery system. JSON pages through
 * the list module; CSV is the whole list, read in keyset chunks of
 * CSV_CHUNK rows inside one read-only REPEATABLE READ transaction (one
 * snapshot, however many chunks) and written to the caller's file, so
 * that memory holds one chunk at most.
 */
#include "campaigns.h"
#include "consents.h"
#include "csv.h"
#include "db.h"
#include "list/page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CSV_CHUNK 10000

/* Whether campaign $1 is there (not deleted). */
static crm_stmt contacts_campaign_stmt = CRM_STMT_RO(
    "campaign_contacts_campaign", "SELECT 1 FROM campaigns WHERE id = $1 AND deleted_at IS NULL");

#define DECIDED_AT CRM_SQL_TS("g.decided_at")

/* The contacted targets of campaign $1 after customer $2, on channel $3
 * (NULL: any), at most $4 of them, with what their customer's row holds. */
static crm_stmt contacts_page_stmt = CRM_STMT_PAGE(
    "campaign_contacts_page",
    "SELECT g.customer_id, g.channel, c.email, c.phone, c.street, c.postal_code, c.city,"
    " c.region, c.country, c.first_name, c.last_name, c.preferred_language, k.offer_code,"
    " g.touchpoint_id, " DECIDED_AT " FROM campaign_targets g"
    " JOIN customers c ON c.id = g.customer_id JOIN campaigns k ON k.id = g.campaign_id"
    " WHERE g.campaign_id = $1 AND g.state = 'contacted'"
    " AND g.customer_id > $2::bigint AND ($3::text IS NULL OR g.channel = $3)"
    " ORDER BY g.customer_id LIMIT $4");

enum {
    COL_CUSTOMER,
    COL_CHANNEL,
    COL_EMAIL,
    COL_PHONE,
    COL_STREET,
    COL_POSTAL_CODE,
    COL_CITY,
    COL_REGION,
    COL_COUNTRY,
    COL_FIRST_NAME,
    COL_LAST_NAME,
    COL_LANGUAGE,
    COL_OFFER,
    COL_TOUCHPOINT,
    COL_DECIDED
};

/* The postal fields, in the order of the CSV's columns. */
static const struct {
    const char *name;
    int col;
} postal[] = {{"street", COL_STREET},
              {"postal_code", COL_POSTAL_CODE},
              {"city", COL_CITY},
              {"region", COL_REGION},
              {"country", COL_COUNTRY}};
#define N_POSTAL (sizeof postal / sizeof postal[0])

typedef enum { ADDRESS_NONE, ADDRESS_EMAIL, ADDRESS_PHONE, ADDRESS_POSTAL } address_kind;

static address_kind address_of(const char *channel)
{
    if (strcmp(channel, "email") == 0)
        return ADDRESS_EMAIL;
    if (strcmp(channel, "sms") == 0 || strcmp(channel, "phone") == 0)
        return ADDRESS_PHONE;
    if (strcmp(channel, "mail") == 0)
        return ADDRESS_POSTAL;
    return ADDRESS_NONE;
}

/* A text column's value, NULL for SQL NULL. */
static const char *text_at(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
}

static json_t *json_text(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static json_t *contact_from_row(const PGresult *res, int r)
{
    const char *channel = PQgetvalue(res, r, COL_CHANNEL);
    json_t *address = json_null();
    switch (address_of(channel)) {
    case ADDRESS_EMAIL:
        address = json_text(text_at(res, r, COL_EMAIL));
        break;
    case ADDRESS_PHONE:
        address = json_text(text_at(res, r, COL_PHONE));
        break;
    case ADDRESS_POSTAL:
        address = json_object();
        for (size_t i = 0; i < N_POSTAL; i++)
            json_object_set_new(address, postal[i].name, json_text(text_at(res, r, postal[i].col)));
        break;
    case ADDRESS_NONE:
        break;
    }
    return json_pack("{s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:I, s:s}", "customer_id",
                     (json_int_t)atoll(PQgetvalue(res, r, COL_CUSTOMER)), "channel", channel,
                     "address", address, "first_name", json_text(text_at(res, r, COL_FIRST_NAME)),
                     "last_name", json_text(text_at(res, r, COL_LAST_NAME)), "preferred_language",
                     json_text(text_at(res, r, COL_LANGUAGE)), "offer_code",
                     json_text(text_at(res, r, COL_OFFER)), "touchpoint_id",
                     (json_int_t)atoll(PQgetvalue(res, r, COL_TOUCHPOINT)), "decided_at",
                     PQgetvalue(res, r, COL_DECIDED));
}

static bool channel_valid(const char *channel, crm_error *err)
{
    if (channel == NULL || crm_consent_channel_known(channel))
        return true;
    crm_error_add_field(err, "channel",
                        "must be one of email, sms, phone, mail, push, web, in_app");
    return crm_error_set(err, CRM_E_INVALID, "invalid query parameter 'channel'");
}

/* True when the campaign is there on c; else false with CRM_E_NOT_FOUND
 * (or the database's error). */
static bool campaign_exists(crm_conn *c, const char *idbuf, crm_error *err)
{
    const char *params[] = {idbuf};
    PGresult *res = crm_db_exec(c, &contacts_campaign_stmt, 1, params, err);
    if (res == NULL)
        return false;
    bool ok =
        PQntuples(res) == 1 || crm_error_set(err, CRM_E_NOT_FOUND, "no campaign with this id");
    PQclear(res);
    return ok;
}

json_t *crm_campaign_contacts(long long id, const char *channel, long long after, int limit,
                              long long *next_after, crm_error *err)
{
    *next_after = 0;
    if (!channel_valid(channel, err))
        return NULL;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return NULL;
    char idbuf[24], afterbuf[24], fetch[16];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    snprintf(afterbuf, sizeof afterbuf, "%lld", after);
    snprintf(fetch, sizeof fetch, "%d", crm_page_fetch(limit));
    json_t *doc = NULL;
    if (campaign_exists(c, idbuf, err)) {
        const char *params[] = {idbuf, afterbuf, channel, fetch};
        PGresult *res = crm_db_exec(c, &contacts_page_stmt, 4, params, err);
        if (res != NULL) {
            doc = crm_page_of_rows(res, limit, contact_from_row, COL_CUSTOMER, next_after);
            if (doc == NULL)
                crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        }
    }
    crm_db_release(c);
    return doc;
}

/* ---- CSV ------------------------------------------------------------------------ */

static const char *const csv_header[] = {
    "customer_id",   "channel",   "address",    "street",    "postal_code",        "city",
    "region",        "country",   "first_name", "last_name", "preferred_language", "offer_code",
    "touchpoint_id", "decided_at"};

static void csv_row(FILE *out, const PGresult *res, int r)
{
    const char *channel = PQgetvalue(res, r, COL_CHANNEL);
    address_kind kind = address_of(channel);
    const char *address = kind == ADDRESS_EMAIL   ? text_at(res, r, COL_EMAIL)
                          : kind == ADDRESS_PHONE ? text_at(res, r, COL_PHONE)
                                                  : NULL;
    crm_csv_field(out, PQgetvalue(res, r, COL_CUSTOMER), true, false);
    crm_csv_field(out, channel, false, false);
    crm_csv_field(out, address, false, true);
    for (size_t i = 0; i < N_POSTAL; i++)
        crm_csv_field(out, kind == ADDRESS_POSTAL ? text_at(res, r, postal[i].col) : NULL, false,
                      true);
    crm_csv_field(out, text_at(res, r, COL_FIRST_NAME), false, true);
    crm_csv_field(out, text_at(res, r, COL_LAST_NAME), false, true);
    crm_csv_field(out, text_at(res, r, COL_LANGUAGE), false, true);
    crm_csv_field(out, text_at(res, r, COL_OFFER), false, true);
    crm_csv_field(out, PQgetvalue(res, r, COL_TOUCHPOINT), false, false);
    crm_csv_field(out, PQgetvalue(res, r, COL_DECIDED), false, false);
    crm_csv_end_record(out);
}

/* Writes every chunk after the header; the transaction is the caller's. */
static bool csv_chunks(crm_conn *c, const char *idbuf, const char *channel, FILE *out,
                       crm_error *err)
{
    char afterbuf[24] = "0", fetch[16];
    snprintf(fetch, sizeof fetch, "%d", CSV_CHUNK);
    for (;;) {
        const char *params[] = {idbuf, afterbuf, channel, fetch};
        PGresult *res = crm_db_exec(c, &contacts_page_stmt, 4, params, err);
        if (res == NULL)
            return false;
        int n = PQntuples(res);
        for (int r = 0; r < n; r++)
            csv_row(out, res, r);
        if (n > 0)
            snprintf(afterbuf, sizeof afterbuf, "%s", PQgetvalue(res, n - 1, COL_CUSTOMER));
        PQclear(res);
        if (ferror(out))
            return crm_error_set(err, CRM_E_INTERNAL, "the CSV could not be written");
        if (n < CSV_CHUNK)
            return true;
    }
}

bool crm_campaign_contacts_csv(long long id, const char *channel, FILE *out, crm_error *err)
{
    if (!channel_valid(channel, err))
        return false;
    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        return false;
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%lld", id);
    bool ok =
        crm_db_begin(c, err) &&
        crm_db_command(c, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", err) &&
        campaign_exists(c, idbuf, err);
    if (ok) {
        for (size_t i = 0; i < sizeof csv_header / sizeof csv_header[0]; i++)
            crm_csv_field(out, csv_header[i], i == 0, false);
        crm_csv_end_record(out);
        ok = csv_chunks(c, idbuf, channel, out, err);
    }
    ok = ok && crm_db_commit(c, err);
    if (!ok)
        crm_db_rollback(c);
    crm_db_release(c);
    return ok;
}

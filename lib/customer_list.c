/*
 * customer_list.c — GET /v1/customers: filters, sort orders and keyset
 * cursors. The statement's WHERE clause depends on which filters are
 * present, so its text is assembled here, only from the constant fragments
 * below with $n placeholders; every value travels as a parameter.
 *
 * A cursor is base64url of the JSON array [sort, key, id]: the sort order it
 * belongs to, the sort key of the last row shown (microseconds since the
 * epoch for timestamps, the name key for "name") and that row's id. The next
 * page starts strictly after (key, id), so rows inserted meanwhile never
 * shift a page and any depth costs the same.
 */
#include "customers.h"
#include "customers_internal.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILTER_PARAMS 16
#define Q_MIN_CHARS 3
#define Q_MAX_CHARS 200

typedef struct sort_order {
    const char *name;
    const char *key;        /* the ORDER BY expression (an index's) */
    const char *key_out;    /* the key as the cursor stores it */
    const char *key_in;     /* $n (the cursor's key) as a value comparable to key */
    bool descending;
    bool text_key;
} sort_order;

#define EPOCH_US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"
#define FROM_US "('epoch'::timestamptz + $%d::bigint * interval '1 microsecond')"
#define NAME_KEY "lower(coalesce(c.display_name, c.last_name, c.first_name, c.company, ''))"

static const sort_order sorts[] = {
    {"created_at", "c.created_at", EPOCH_US("c.created_at"), FROM_US, false, false},
    {"-created_at", "c.created_at", EPOCH_US("c.created_at"), FROM_US, true, false},
    {"updated_at", "c.updated_at", EPOCH_US("c.updated_at"), FROM_US, false, false},
    {"-updated_at", "c.updated_at", EPOCH_US("c.updated_at"), FROM_US, true, false},
    {"name", NAME_KEY, NAME_KEY, "$%d::text", false, true},
};
#define N_SORTS ((int)(sizeof sorts / sizeof sorts[0]))

/* The statement under construction: text and parameters. */
typedef struct list_sql {
    char text[4096];
    size_t len;
    const char *params[MAX_FILTER_PARAMS];
    int nparams;
} list_sql;

/* Appends a constant fragment; each %d in it becomes the next placeholder
 * number (a fragment holds at most two). */
static void append(list_sql *s, const char *fragment, int placeholders)
{
    int a = s->nparams + 1, b = s->nparams + 2;
    (void)placeholders;
    int n = snprintf(s->text + s->len, sizeof s->text - s->len, fragment, a, b);
    if (n > 0)
        s->len += (size_t)n;
}

/* Appends " AND <condition>" with one value. */
static void where(list_sql *s, const char *condition, const char *value)
{
    append(s, " AND ", 0);
    append(s, condition, 1);
    s->params[s->nparams++] = value;
}

/* Escapes LIKE's special characters (backslash is the default escape). */
static char *like_escape(const char *q)
{
    char *out = malloc(strlen(q) * 2 + 1);
    if (out == NULL)
        return NULL;
    size_t n = 0;
    for (const char *p = q; *p; p++) {
        if (*p == '\\' || *p == '%' || *p == '_')
            out[n++] = '\\';
        out[n++] = *p;
    }
    out[n] = '\0';
    return out;
}

/* Encodes a cursor for the last row shown. Returns a JSON string. */
static json_t *make_cursor(int sort, const PGresult *res, int r)
{
    const sort_order *o = &sorts[sort];
    json_t *key = o->text_key ? json_string(PQgetvalue(res, r, CRM_COL_EXTRA))
                              : json_integer(atoll(PQgetvalue(res, r, CRM_COL_EXTRA)));
    json_t *arr = json_pack("[s, o, I]", o->name, key ? key : json_null(),
                            (json_int_t)atoll(PQgetvalue(res, r, CRM_COL_ID)));
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (text == NULL)
        return json_null();
    size_t len = strlen(text);
    char *out = malloc(len * 4 / 3 + 4);
    json_t *cursor = json_null();
    if (out != NULL) {
        crm_base64url_encode((const unsigned char *)text, len, out, len * 4 / 3 + 4);
        cursor = json_string(out);
    }
    free(out);
    free(text);
    return cursor;
}

/* Decodes after for sort order sort into key (a string the caller frees)
 * and id. False when it is not a cursor of this list and order. */
static bool read_cursor(const char *after, int sort, char **key, char *id, size_t idsize)
{
    size_t len = strlen(after);
    if (len == 0 || len > 4096)
        return false;
    unsigned char *raw = malloc(len);
    long n = raw ? crm_base64url_decode(after, raw, len) : -1;
    json_t *doc = n > 0 ? json_loadb((const char *)raw, (size_t)n, 0, NULL) : NULL;
    free(raw);
    json_t *jsort = json_array_get(doc, 0), *jkey = json_array_get(doc, 1),
           *jid = json_array_get(doc, 2);
    bool ok = json_array_size(doc) == 3 && json_is_string(jsort) &&
              strcmp(json_string_value(jsort), sorts[sort].name) == 0 && json_is_integer(jid) &&
              json_integer_value(jid) > 0 &&
              (sorts[sort].text_key ? json_is_string(jkey) : json_is_integer(jkey));
    if (ok && sorts[sort].text_key) {
        *key = strndup(json_string_value(jkey), json_string_length(jkey));
        ok = *key != NULL && strlen(*key) == json_string_length(jkey);
    } else if (ok) {
        ok = asprintf(key, "%lld", (long long)json_integer_value(jkey)) > 0;
        if (!ok)
            *key = NULL;
    }
    if (ok)
        snprintf(id, idsize, "%lld", (long long)json_integer_value(jid));
    json_decref(doc);
    return ok;
}

/* Normalized filter values that need their own storage. */
typedef struct filter_values {
    char email[1024];
    char phone[20];
    char *q_pattern;
    char *cursor_key;
    char cursor_id[24];
    int sort;
} filter_values;

static void check_text(const char *value, const char *name, size_t max, crm_error *err)
{
    if (value == NULL)
        return;
    size_t chars = crm_utf8_chars(value, strlen(value));
    if (chars == 0 || chars > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be 1 to %zu characters", max);
        crm_error_add_field(err, name, msg);
    }
}

/* Checks every parameter, reporting each bad one; fills fv. */
static bool check_filter(const crm_customer_filter *f, filter_values *fv, crm_error *err)
{
    size_t before = json_array_size(err->errors);
    if (f->email != NULL) {
        crm_email_normalize(f->email, fv->email, sizeof fv->email);
        if (fv->email[0] == '\0' || strlen(f->email) > 1000)
            crm_error_add_field(err, "email", "must be an e-mail address");
    }
    if (f->phone != NULL && (strlen(f->phone) > CRM_CUSTOMER_PHONE_MAX * 4 ||
                             !crm_phone_normalize(f->phone, fv->phone, sizeof fv->phone)))
        crm_error_add_field(err, "phone", "must be a phone number of 6 to 15 digits");
    if (f->country != NULL && !crm_country_valid(f->country))
        crm_error_add_field(err, "country",
                            "must be an ISO 3166-1 alpha-2 code in uppercase, such as IT");
    check_text(f->city, "city", CRM_CUSTOMER_NAME_MAX, err);
    if (f->lifecycle_stage != NULL && !crm_lifecycle_stage_valid(f->lifecycle_stage))
        crm_error_add_field(err, "lifecycle_stage", "not a lifecycle stage");
    check_text(f->tag, "tag", CRM_CUSTOMER_TAG_MAX, err);
    const char *times[] = {f->created_after, f->created_before, f->updated_after,
                           f->updated_before};
    const char *time_names[] = {"created_after", "created_before", "updated_after",
                                "updated_before"};
    for (int i = 0; i < 4; i++)
        if (times[i] != NULL && !crm_rfc3339_valid(times[i]))
            crm_error_add_field(err, time_names[i],
                                "must be an RFC 3339 date-time such as 2026-11-23T10:15:00Z");
    if (f->q != NULL) {
        size_t chars = crm_utf8_chars(f->q, strlen(f->q));
        if (chars < Q_MIN_CHARS || chars > Q_MAX_CHARS)
            crm_error_add_field(err, "q", "must be 3 to 200 characters");
        else
            fv->q_pattern = like_escape(f->q);
    }
    fv->sort = 0;
    if (f->sort != NULL) {
        fv->sort = -1;
        for (int i = 0; i < N_SORTS; i++)
            if (strcmp(f->sort, sorts[i].name) == 0)
                fv->sort = i;
        if (fv->sort < 0)
            crm_error_add_field(err, "sort", "must be one of created_at, -created_at, "
                                             "updated_at, -updated_at, name");
    }
    if (f->after != NULL && fv->sort >= 0 &&
        !read_cursor(f->after, fv->sort, &fv->cursor_key, fv->cursor_id, sizeof fv->cursor_id))
        crm_error_add_field(err, "after", "not a cursor this list returned with this sort order");
    if (json_array_size(err->errors) > before)
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    return true;
}

/* Builds the statement for f (checked) into s. */
static void build_sql(const crm_customer_filter *f, filter_values *fv, list_sql *s)
{
    const sort_order *o = &sorts[fv->sort];
    append(s, "SELECT " CRM_CUSTOMER_COLUMNS ", ", 0);
    append(s, o->key_out, 0);
    append(s, " FROM customers c WHERE c.status = 'active'", 0);
    if (f->email != NULL)
        where(s, "c.email_normalized = $%d", fv->email);
    if (f->phone != NULL)
        where(s, "c.phone_normalized = $%d", fv->phone);
    if (f->country != NULL)
        where(s, "c.country = $%d", f->country);
    if (f->city != NULL)
        where(s, "c.city = $%d", f->city);
    if (f->lifecycle_stage != NULL)
        where(s, "c.lifecycle_stage = $%d", f->lifecycle_stage);
    if (f->tag != NULL)
        where(s, "c.tags @> ARRAY[$%d::text]", f->tag);
    if (f->created_after != NULL)
        where(s, "c.created_at > $%d::timestamptz", f->created_after);
    if (f->created_before != NULL)
        where(s, "c.created_at < $%d::timestamptz", f->created_before);
    if (f->updated_after != NULL)
        where(s, "c.updated_at > $%d::timestamptz", f->updated_after);
    if (f->updated_before != NULL)
        where(s, "c.updated_at < $%d::timestamptz", f->updated_before);
    if (fv->q_pattern != NULL)
        where(s, "c.search_text LIKE '%%' || lower($%d) || '%%'", fv->q_pattern);
    if (fv->cursor_key != NULL) {
        append(s, " AND (", 0);
        append(s, o->key, 0);
        append(s, o->descending ? ", c.id) < (" : ", c.id) > (", 0);
        append(s, o->key_in, 1);
        s->params[s->nparams++] = fv->cursor_key;
        append(s, ", $%d::bigint)", 1);
        s->params[s->nparams++] = fv->cursor_id;
    }
    append(s, " ORDER BY ", 0);
    append(s, o->key, 0);
    append(s, o->descending ? " DESC, c.id DESC" : ", c.id", 0);
    append(s, " LIMIT $%d::int", 1);
}

json_t *crm_customer_list(const crm_customer_filter *f, crm_error *err)
{
    filter_values fv;
    memset(&fv, 0, sizeof fv);
    json_t *page = NULL;
    if (!check_filter(f, &fv, err))
        goto done;
    int limit = f->limit < 1 ? 1 : f->limit;
    char limit_text[16];
    snprintf(limit_text, sizeof limit_text, "%d", limit + 1); /* one more: a next page? */
    list_sql s = {.len = 0, .nparams = 0};
    build_sql(f, &fv, &s);
    s.params[s.nparams++] = limit_text;

    crm_conn *c = crm_db_acquire(err);
    if (c == NULL)
        goto done;
    PGresult *res = crm_db_exec_sql(c, s.text, s.nparams, s.params, err);
    crm_db_release(c);
    if (res == NULL)
        goto done;
    int n = PQntuples(res);
    json_t *data = json_array();
    for (int r = 0; r < n && r < limit; r++)
        json_array_append_new(data, crm_customer_from_row(res, r, false));
    json_t *next = n > limit ? make_cursor(fv.sort, res, limit - 1) : json_null();
    PQclear(res);
    page = json_pack("{s:o, s:o}", "data", data, "next_cursor", next);
done:
    free(fv.q_pattern);
    free(fv.cursor_key);
    return page;
}

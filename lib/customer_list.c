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
#include "jbuf.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILTER_PARAMS 16
#define Q_MIN_CHARS 3
#define Q_MAX_CHARS 200
#define Q_MAX_WORDS 8
#define PREFIX_TERMS_MAX 16 /* words one q word may begin before a page walks instead */
#define PREFIX_TERMS_MAX_TEXT "16"

typedef struct sort_order {
    const char *name;
    const char *key;     /* the ORDER BY expression (an index's) */
    const char *key_out; /* a text key as the cursor stores it, an extra column */
    int key_col;         /* or the timestamp column whose µs the cursor stores */
    const char *key_in;  /* $n (the cursor's key) as a value comparable to key */
    bool descending;
    bool text_key;
} sort_order;

#define FROM_US "('epoch'::timestamptz + $%d::bigint * interval '1 microsecond')"
#define NAME_KEY "lower(coalesce(c.display_name, c.last_name, c.first_name, c.company, ''))"

static const sort_order sorts[] = {
    {"created_at", "c.created_at", NULL, CRM_COL_CREATED_AT, FROM_US, false, false},
    {"-created_at", "c.created_at", NULL, CRM_COL_CREATED_AT, FROM_US, true, false},
    {"updated_at", "c.updated_at", NULL, CRM_COL_UPDATED_AT, FROM_US, false, false},
    {"-updated_at", "c.updated_at", NULL, CRM_COL_UPDATED_AT, FROM_US, true, false},
    {"name", NAME_KEY, NAME_KEY, CRM_COL_EXTRA, "$%d::text", false, true},
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

/* The separators of q's words: ASCII white space and punctuation, the set
 * crm_search_words() of migration 0008 splits stored text at. */
static bool is_separator(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '!' && c <= '/') ||
           (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}

/* Splits q into words allocated in arena; the count, or -1 past max. */
static int split_words(const char *q, crm_arena *arena, char **words, int max)
{
    int n = 0;
    for (const char *p = q; *p != '\0';) {
        while (*p != '\0' && is_separator((unsigned char)*p))
            p++;
        const char *start = p;
        while (*p != '\0' && !is_separator((unsigned char)*p))
            p++;
        if (p > start) {
            if (n == max)
                return -1;
            words[n++] = crm_arena_strndup(arena, start, (size_t)(p - start));
        }
    }
    return n;
}

/* Writes the cursor that continues after row r, as a string. */
static void write_cursor(crm_jbuf *b, int sort, const PGresult *res, int r, int c0)
{
    const sort_order *o = &sorts[sort];
    json_t *key = NULL;
    long long us;
    if (o->text_key)
        key = json_string(PQgetvalue(res, r, c0 + o->key_col));
    else if (crm_parse_pg_timestamp(PQgetvalue(res, r, c0 + o->key_col), &us))
        key = json_integer(us);
    json_t *arr = json_pack("[s, o, I]", o->name, key ? key : json_null(),
                            (json_int_t)atoll(PQgetvalue(res, r, c0 + CRM_COL_ID)));
    size_t len = 0;
    char *text = crm_json_text(arr, &len);
    json_decref(arr);
    char *out = text ? malloc(len * 4 / 3 + 4) : NULL;
    if (out != NULL) {
        crm_base64url_encode((const unsigned char *)text, len, out, len * 4 / 3 + 4);
        crm_jbuf_cstring(b, out);
    } else {
        b->out.failed = true;
    }
    free(out);
    free(text);
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
    char *words[Q_MAX_WORDS]; /* q's words */
    int nwords;
    int driver; /* the longest word: it picks the candidates */
    char *cursor_key;
    char cursor_id[24];
    int sort;
    /* created_after, created_before, updated_after, updated_before in UTC:
     * the only form they take to SQL (PostgreSQL refuses offsets past
     * +-15:59); "" when absent. */
    char times[4][CRM_RFC3339_UTC_SIZE];
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
static bool check_filter(const crm_customer_filter *f, filter_values *fv, crm_arena *arena,
                         crm_error *err)
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
    for (int i = 0; i < 4; i++) {
        if (times[i] == NULL)
            fv->times[i][0] = '\0';
        else if (!crm_rfc3339_valid(times[i]))
            crm_error_add_field(err, time_names[i],
                                "must be an RFC 3339 date-time such as 2026-11-23T10:15:00Z");
        else if (!crm_rfc3339_to_utc(times[i], fv->times[i], sizeof fv->times[i]))
            crm_error_add_field(err, time_names[i],
                                "must lie in the years 0001 to 9999 once moved to UTC");
    }
    if (f->q != NULL) {
        size_t chars = crm_utf8_chars(f->q, strlen(f->q));
        if (chars < Q_MIN_CHARS || chars > Q_MAX_CHARS) {
            crm_error_add_field(err, "q", "must be 3 to 200 characters");
        } else {
            fv->nwords = split_words(f->q, arena, fv->words, Q_MAX_WORDS);
            if (fv->nwords == 0)
                crm_error_add_field(err, "q", "must hold a word (letters or digits)");
            else if (fv->nwords < 0)
                crm_error_add_field(err, "q", "must hold at most 8 words");
        }
        for (int i = 1; i < fv->nwords; i++)
            if (strlen(fv->words[i]) > strlen(fv->words[fv->driver]))
                fv->driver = i;
    }
    fv->sort = 0;
    if (f->sort != NULL) {
        fv->sort = -1;
        for (int i = 0; i < N_SORTS; i++)
            if (strcmp(f->sort, sorts[i].name) == 0)
                fv->sort = i;
        if (fv->sort < 0)
            crm_error_add_field(err, "sort",
                                "must be one of created_at, -created_at, "
                                "updated_at, -updated_at, name");
    }
    if (f->after != NULL && fv->sort >= 0 &&
        !read_cursor(f->after, fv->sort, &fv->cursor_key, fv->cursor_id, sizeof fv->cursor_id))
        crm_error_add_field(err, "after", "not a cursor this list returned with this sort order");
    if (json_array_size(err->errors) > before)
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    return true;
}

/* Appends text with %d placeholders filled from the given numbers. */
static void append_numbered(list_sql *s, const char *fragment, int a, int b, int c)
{
    int n = snprintf(s->text + s->len, sizeof s->text - s->len, fragment, a, b, c);
    if (n > 0)
        s->len += (size_t)n;
}

/* Adds a parameter; returns its number. */
static int add_param(list_sql *s, const char *value)
{
    s->params[s->nparams++] = value;
    return s->nparams;
}

/* Whether a q page starts from the words of the search index (created_at
 * orders, which that index keeps) rather than walking the sort order. */
static bool uses_terms(const filter_values *fv)
{
    return fv->nwords > 0 && !sorts[fv->sort].text_key &&
           strcmp(sorts[fv->sort].key, "c.created_at") == 0;
}

/* How a page finds its rows. */
typedef enum {
    PAGE_WALK,        /* along the sort order's index */
    PAGE_EXACT_TERM,  /* read the range of q's driving word itself, unless
                         a longer word begins with it (then no rows) */
    PAGE_FIRST_TERM,  /* look up the words q's driving word begins, and when
                         there is one, read its range in the same statement */
    PAGE_MERGE_TERMS, /* read and merge the ranges of the words found */
} page_mode;

/* The words of the search index that q's driving word ($1) begins, found
 * with one index probe per word (a loose index scan), PREFIX_TERMS_MAX + 1
 * at most so that "too many" shows, as the JSON array terms.list. */
#define SQL_FIND_TERMS                                                                             \
    "WITH RECURSIVE t (term, n) AS ("                                                              \
    "  (SELECT term, 1 FROM customer_search_terms WHERE term >= lower($1) ORDER BY term LIMIT 1)"  \
    "  UNION ALL"                                                                                  \
    "  SELECT s.term, t.n + 1 FROM t CROSS JOIN LATERAL (SELECT x.term FROM"                       \
    "    customer_search_terms x WHERE x.term > t.term ORDER BY x.term LIMIT 1) s"                 \
    "  WHERE t.n <= $2::int AND starts_with(t.term, lower($1))),"                                  \
    " terms AS (SELECT json_agg(term) AS list FROM t WHERE starts_with(term, lower($1)))"

/* q's driving word ($%d) is the only word of the search index it begins:
 * the first word after it in the index does not begin with it. One index
 * probe, made once per statement. */
#define SQL_NO_LONGER_TERM                                                                         \
    " AND NOT EXISTS (SELECT 1 FROM (SELECT z.term FROM customer_search_terms z"                   \
    " WHERE z.term > lower($%d) ORDER BY z.term LIMIT 1) z WHERE starts_with(z.term, lower($%d)))"

/* FROM for a page that starts from the search index: the customers who hold
 * any of the terms, merged in page order from one index range per term. In
 * PAGE_FIRST_TERM the one term is terms.list's (and none when it has more);
 * in PAGE_EXACT_TERM, the driving word. */
static void from_terms(const filter_values *fv, page_mode mode, json_t *terms, crm_arena *arena,
                       list_sql *s)
{
    const sort_order *o = &sorts[fv->sort];
    size_t nterms = mode == PAGE_FIRST_TERM || mode == PAGE_EXACT_TERM ? 1 : json_array_size(terms);
    if (nterms == 0) {
        append(s, " FROM customers c WHERE false", 0);
        return;
    }
    int key = 0, id = 0;
    if (fv->cursor_key != NULL) {
        key = add_param(s, fv->cursor_key);
        id = add_param(s, fv->cursor_id);
    }
    /* One range per term, merged in page order; a customer who holds two of
     * the terms comes twice, next to each other, and DISTINCT ON drops the
     * second. One term (the usual case) needs neither. */
    const char *order = o->descending ? " ORDER BY x.created_at DESC, x.customer_id DESC"
                                      : " ORDER BY x.created_at, x.customer_id";
    if (nterms > 1)
        append(s,
               " FROM (SELECT DISTINCT ON (x.created_at, x.customer_id) x.created_at, "
               "x.customer_id FROM (",
               0);
    else
        append(s, " FROM (", 0);
    for (size_t i = 0; i < nterms; i++) {
        if (i > 0)
            append(s, " UNION ALL ", 0);
        append(s, "(SELECT x.created_at, x.customer_id FROM customer_search_terms x WHERE ", 0);
        if (mode == PAGE_FIRST_TERM) {
            append(s, "x.term = (terms.list ->> 0) AND json_array_length(terms.list) = 1", 0);
        } else if (mode == PAGE_EXACT_TERM) {
            int p = add_param(s, fv->words[fv->driver]);
            append_numbered(s, "x.term = lower($%d)", p, 0, 0);
            append_numbered(s, SQL_NO_LONGER_TERM, p, p, 0);
        } else {
            const char *term = json_string_value(json_array_get(terms, i));
            int p = add_param(s, crm_arena_strndup(arena, term, strlen(term)));
            append_numbered(s, "x.term = $%d", p, 0, 0);
        }
        if (key != 0)
            append_numbered(s,
                            o->descending
                                ? " AND (x.created_at, x.customer_id) < (" FROM_US ", $%d::bigint)"
                                : " AND (x.created_at, x.customer_id) > (" FROM_US ", $%d::bigint)",
                            key, id, 0);
        if (nterms > 1)
            append(s, order, 0);
        append(s, ")", 0);
    }
    if (nterms > 1) {
        append(s, ") x", 0);
        append(s, order, 0);
    }
    /* Joined on the id alone: with created_at as well, PostgreSQL takes the two
     * conditions for independent, expects almost no rows, and hashes every
     * match rather than stream the first page. */
    append(s, ") h JOIN customers c ON c.id = h.customer_id WHERE c.status = 'active'", 0);
}

/* Builds the statement for f (checked) into s. */
static void build_sql(const crm_customer_filter *f, filter_values *fv, page_mode mode,
                      json_t *terms, crm_arena *arena, list_sql *s)
{
    const sort_order *o = &sorts[fv->sort];
    bool by_terms = mode != PAGE_WALK;
    if (mode == PAGE_FIRST_TERM) {
        append(s,
               SQL_FIND_TERMS " SELECT terms.list::text AS search_terms, p.* FROM terms"
                              " LEFT JOIN LATERAL (",
               0);
        add_param(s, fv->words[fv->driver]);
        add_param(s, PREFIX_TERMS_MAX_TEXT);
    }
    if (mode == PAGE_EXACT_TERM)
        append(s, "SELECT true AS exact_term, ", 0);
    else
        append(s, "SELECT ", 0);
    append(s, CRM_CUSTOMER_COLUMNS, 0);
    if (o->key_out != NULL) {
        append(s, ", ", 0);
        append(s, o->key_out, 0);
        append(s, " AS sort_key", 0);
    }
    if (by_terms)
        from_terms(fv, mode, terms, arena, s);
    else
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
        where(s, "c.created_at > $%d::timestamptz", fv->times[0]);
    if (f->created_before != NULL)
        where(s, "c.created_at < $%d::timestamptz", fv->times[1]);
    if (f->updated_after != NULL)
        where(s, "c.updated_at > $%d::timestamptz", fv->times[2]);
    if (f->updated_before != NULL)
        where(s, "c.updated_at < $%d::timestamptz", fv->times[3]);
    /* The other words (all of them on a walk): each begins a word of the
     * customer's. Through h (the search index) when there, so that they are
     * checked before the customer's row is read. */
    for (int i = 0; i < fv->nwords; i++) {
        if (!by_terms)
            where(s,
                  "EXISTS (SELECT 1 FROM customer_search_terms w WHERE w.customer_id = c.id "
                  "AND starts_with(w.term, lower($%d)))",
                  fv->words[i]);
        else if (i != fv->driver)
            where(s,
                  "EXISTS (SELECT 1 FROM customer_search_terms w "
                  "WHERE w.customer_id = h.customer_id AND starts_with(w.term, lower($%d)))",
                  fv->words[i]);
    }
    if (fv->cursor_key != NULL && !by_terms) {
        append(s, " AND (", 0);
        append(s, o->key, 0);
        append(s, o->descending ? ", c.id) < (" : ", c.id) > (", 0);
        append(s, o->key_in, 1);
        s->params[s->nparams++] = fv->cursor_key;
        append(s, ", $%d::bigint)", 1);
        s->params[s->nparams++] = fv->cursor_id;
    }
    append(s, " ORDER BY ", 0);
    if (by_terms && (mode != PAGE_MERGE_TERMS || json_array_size(terms) > 0)) {
        /* h's order, which is c's */
        append(s,
               o->descending ? "h.created_at DESC, h.customer_id DESC"
                             : "h.created_at, h.customer_id",
               0);
    } else {
        append(s, o->key, 0);
        append(s, o->descending ? " DESC, c.id DESC" : ", c.id", 0);
    }
    append(s, " LIMIT $%d::int", 1);
    if (mode == PAGE_FIRST_TERM)
        append(s,
               o->descending ? ") p ON true ORDER BY p.created_at DESC, p.id DESC"
                             : ") p ON true ORDER BY p.created_at, p.id",
               0);
}

/* The sort order f names (checked before). */
static int sort_of(const crm_customer_filter *f)
{
    for (int i = 0; f->sort != NULL && i < N_SORTS; i++)
        if (strcmp(f->sort, sorts[i].name) == 0)
            return i;
    return 0;
}

/* The words a first search step found (its column search_terms), or NULL
 * when res is not such a step's result. */
static json_t *found_terms(const PGresult *res)
{
    if (res == NULL || PQfnumber(res, "search_terms") != 0 || PQntuples(res) < 1)
        return NULL;
    json_t *list =
        PQgetisnull(res, 0, 0) ? json_array() : json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    if (!json_is_array(list)) {
        json_decref(list);
        return json_array();
    }
    return list;
}

crm_list_step crm_customer_list_query(const crm_customer_filter *f, const PGresult *first,
                                      crm_arena *arena, crm_query *q, crm_error *err)
{
    filter_values *fv = crm_arena_alloc(arena, sizeof *fv);
    if (fv == NULL) {
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return CRM_LIST_ERROR;
    }
    memset(fv, 0, sizeof *fv);
    bool ok = check_filter(f, fv, arena, err);
    char *cursor_key = fv->cursor_key; /* what the query points to lives in arena */
    fv->cursor_key = cursor_key ? crm_arena_strndup(arena, cursor_key, strlen(cursor_key)) : NULL;
    free(cursor_key);
    if (!ok)
        return CRM_LIST_ERROR;
    page_mode mode = uses_terms(fv) ? PAGE_EXACT_TERM : PAGE_WALK;
    json_t *terms = NULL;
    if (first != NULL && PQfnumber(first, "exact_term") == 0) {
        /* Rows: the driving word is a word of the index and begins no
         * other, so its range is the page. None: look the words up. */
        if (PQntuples(first) > 0)
            return CRM_LIST_READY;
        mode = PAGE_FIRST_TERM;
    } else if (first != NULL) {
        terms = found_terms(first);
        if (terms == NULL || json_array_size(terms) <= 1) {
            json_decref(terms);
            return CRM_LIST_READY; /* the first step's rows are the page */
        }
        /* More words than ranges to merge: walk the sort order instead. */
        mode = json_array_size(terms) > PREFIX_TERMS_MAX ? PAGE_WALK : PAGE_MERGE_TERMS;
    }
    int limit = f->limit < 1 ? 1 : f->limit;
    char *limit_text = crm_arena_alloc(arena, 16);
    if (limit_text == NULL) {
        json_decref(terms);
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        return CRM_LIST_ERROR;
    }
    snprintf(limit_text, 16, "%d", limit + 1); /* one more: is there a next page? */
    list_sql s = {.len = 0, .nparams = 0};
    build_sql(f, fv, mode, terms, arena, &s);
    json_decref(terms);
    s.params[s.nparams++] = limit_text;
    /* Prepared, a statement keeps one plan per connection. Where the best
     * plan depends on the values (a rare tag is best found through its GIN
     * index, a common one by walking the order; a short time range through
     * its own index), it goes unprepared and is planned for them each time. */
    bool by_value = f->tag != NULL || f->created_after != NULL || f->created_before != NULL ||
                    f->updated_after != NULL || f->updated_before != NULL ||
                    (fv->nwords > 0 && mode == PAGE_WALK);
    crm_stmt *st = by_value ? NULL : crm_db_stmt_for_sql(s.text, true, true);
    if (st == NULL) {
        st = crm_arena_alloc(arena, sizeof *st);
        char *text = crm_arena_strndup(arena, s.text, s.len);
        if (st == NULL || text == NULL) {
            crm_error_set(err, CRM_E_INTERNAL, "out of memory");
            return CRM_LIST_ERROR;
        }
        memset(st, 0, sizeof *st);
        st->sql = text;
        st->read_only = true;
        st->page = true;
    }
    crm_query_init(q, st);
    for (int i = 0; i < s.nparams; i++)
        crm_query_add(q, s.params[i]);
    return mode == PAGE_EXACT_TERM || mode == PAGE_FIRST_TERM ? CRM_LIST_TERMS : CRM_LIST_PAGE;
}

char *crm_customer_list_render(const PGresult *res, const crm_customer_filter *f, size_t *len,
                               crm_error *err)
{
    /* A search step's rows start after its search_terms or exact_term
     * column, and in the first, one row of NULLs stands for none. */
    int c0 = PQfnumber(res, "search_terms") == 0 || PQfnumber(res, "exact_term") == 0 ? 1 : 0;
    int n = PQntuples(res), limit = f->limit < 1 ? 1 : f->limit;
    if (c0 == 1 && n > 0 && PQgetisnull(res, 0, c0 + CRM_COL_ID))
        n = 0;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_begin_object(&b);
    crm_jbuf_key(&b, "data");
    crm_jbuf_begin_array(&b);
    for (int r = 0; r < n && r < limit; r++)
        crm_customer_write_at(&b, res, r, c0, false);
    crm_jbuf_end_array(&b);
    crm_jbuf_key(&b, "next_cursor");
    if (n > limit)
        write_cursor(&b, sort_of(f), res, limit - 1, c0);
    else
        crm_jbuf_null(&b);
    crm_jbuf_end_object(&b);
    char *page = crm_jbuf_take(&b, len);
    if (page == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return page;
}

char *crm_customer_list(const crm_customer_filter *f, size_t *len, crm_error *err)
{
    crm_arena arena;
    crm_arena_init(&arena);
    crm_query q;
    char *page = NULL;
    PGresult *first = NULL;
    crm_list_step step = crm_customer_list_query(f, NULL, &arena, &q, err);
    while (step == CRM_LIST_TERMS) {
        PQclear(first);
        first = crm_db_run_query(&q, err);
        step = first ? crm_customer_list_query(f, first, &arena, &q, err) : CRM_LIST_ERROR;
        if (step == CRM_LIST_READY)
            page = crm_customer_list_render(first, f, len, err);
    }
    if (step == CRM_LIST_PAGE) {
        PGresult *res = crm_db_run_query(&q, err);
        if (res != NULL)
            page = crm_customer_list_render(res, f, len, err);
        PQclear(res);
    }
    PQclear(first);
    crm_arena_free(&arena);
    return page;
}

/*
 * customers/list.c — GET /v1/customers: filters, sort orders and keyset
 * cursors. The statement's WHERE clause depends on which filters are
 * present, so its text is assembled here, only from the constant fragments
 * below with $n placeholders; every value travels as a parameter.
 *
 * A cursor (lib/list/cursor.h, signed) holds the sort order it belongs to,
 * the sort key of the last row shown (microseconds since the epoch for
 * timestamps, range-checked; the name key's text for "name") and that row's
 * id. The next page starts strictly after (key, id), so rows inserted
 * meanwhile never shift a page and any depth costs the same.
 *
 * POST /v1/customers/search (search.c) is this list with a rule: the
 * rule's compiled SQL is one more condition, and its cursors are of their
 * own kind and carry the rule's hash besides, so that neither list takes
 * the other's cursors and a search refuses a cursor of another rule.
 */
#include "customers.h"
#include "customers/internal.h"
#include "jbuf.h"
#include "json.h"
#include "list/cursor.h"
#include "list/page.h"
#include "list/sqlbuf.h"
#include "segments.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    bool descending;
    bool text_key; /* the cursor's key is text ($n::text), else µs (FROM_US) */
} sort_order;

#define NAME_KEY "lower(coalesce(c.display_name, c.last_name, c.first_name, c.company, ''))"

static const sort_order sorts[] = {
    {"created_at", "c.created_at", NULL, CRM_COL_CREATED_AT, false, false},
    {"-created_at", "c.created_at", NULL, CRM_COL_CREATED_AT, true, false},
    {"updated_at", "c.updated_at", NULL, CRM_COL_UPDATED_AT, false, false},
    {"-updated_at", "c.updated_at", NULL, CRM_COL_UPDATED_AT, true, false},
    {"name", NAME_KEY, NAME_KEY, CRM_COL_EXTRA, false, true},
};
#define N_SORTS ((int)(sizeof sorts / sizeof sorts[0]))

/* The filters, as data: each present one adds " AND <before>$n<after>",
 * in this order (which the statements' texts, and so their plans, keep). */
enum {
    F_EMAIL,
    F_PHONE,
    F_COUNTRY,
    F_CITY,
    F_STAGE,
    F_TAG,
    F_CREATED_AFTER,
    F_CREATED_BEFORE,
    F_UPDATED_AFTER,
    F_UPDATED_BEFORE,
    N_FILTERS
};
static const crm_list_filter filters[N_FILTERS] = {
    [F_EMAIL] = {"email", "c.email_normalized = ", ""},
    [F_PHONE] = {"phone", "c.phone_normalized = ", ""},
    [F_COUNTRY] = {"country", "c.country = ", ""},
    [F_CITY] = {"city", "c.city = ", ""},
    [F_STAGE] = {"lifecycle_stage", "c.lifecycle_stage = ", ""},
    [F_TAG] = {"tag", "c.tags @> ARRAY[", "::text]"},
    [F_CREATED_AFTER] = {"created_after", "c.created_at > ", "::timestamptz"},
    [F_CREATED_BEFORE] = {"created_before", "c.created_at < ", "::timestamptz"},
    [F_UPDATED_AFTER] = {"updated_after", "c.updated_at > ", "::timestamptz"},
    [F_UPDATED_BEFORE] = {"updated_before", "c.updated_at < ", "::timestamptz"},
};

/* Appends before, the placeholder of parameter n, then after. */
static void put(crm_sqlbuf *s, const char *before, int n, const char *after)
{
    crm_sqlbuf_append(s, before);
    crm_sqlbuf_placeholder(s, n);
    crm_sqlbuf_append(s, after);
}

/* Appends the timestamp that parameter n (microseconds since the epoch)
 * stands for. */
static void from_us(crm_sqlbuf *s, int n)
{
    put(s, "('epoch'::timestamptz + ", n, "::bigint * interval '1 microsecond')");
}

/* Appends " AND <before>$n<after>" for a new parameter holding value. */
static void where(crm_sqlbuf *s, const char *before, const char *value, const char *after)
{
    crm_sqlbuf_append(s, " AND ");
    crm_sqlbuf_append(s, before);
    crm_sqlbuf_bind(s, value);
    crm_sqlbuf_append(s, after);
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

/* The cursor that continues after row r: the sort key of row r (µs of its
 * timestamp, or the name key's text) and its id, then for a search the
 * hash of its rule. False when the row's key cannot be one (it always can
 * for rows PostgreSQL returned). */
static bool next_cursor(const crm_customer_filter *f, int sort, const PGresult *res, int r, int c0,
                        crm_cursor *c)
{
    const sort_order *o = &sorts[sort];
    const char *key = PQgetvalue(res, r, c0 + o->key_col);
    crm_cursor_init(c, f->search ? CRM_CURSOR_CUSTOMER_SEARCH : CRM_CURSOR_CUSTOMERS,
                    (unsigned)sort);
    long long us = 0;
    bool ok = o->text_key ? crm_cursor_set_text(c, key, strlen(key))
                          : crm_parse_pg_timestamp(key, &us) && crm_cursor_add_int(c, us);
    ok = ok && crm_cursor_add_int(c, atoll(PQgetvalue(res, r, c0 + CRM_COL_ID)));
    return ok && (!f->search || crm_cursor_add_int(c, f->rule_hash));
}

/* Decodes after for sort order sort into key and id (decimal text in
 * arena), range-checked, and for a search (*hash not NULL) the hash of the
 * rule that made it. False when it is not a cursor of this list and
 * order, or its values could not have come from a row. */
static bool read_cursor(const char *after, int sort, long long *hash, crm_arena *arena, char **key,
                        char *id, size_t idsize)
{
    const sort_order *o = &sorts[sort];
    crm_cursor c;
    int extra = hash != NULL ? 1 : 0;
    if (!crm_cursor_decode(after, hash != NULL ? CRM_CURSOR_CUSTOMER_SEARCH : CRM_CURSOR_CUSTOMERS,
                           (unsigned)sort, (o->text_key ? 1 : 2) + extra, o->text_key, &c))
        return false;
    if (hash != NULL)
        *hash = c.ints[c.nints - 1];
    long long row_id = c.ints[c.nints - 1 - extra];
    if (row_id <= 0 || (!o->text_key && !crm_cursor_us_valid(c.ints[0])))
        return false;
    if (o->text_key) {
        *key = crm_arena_strndup(arena, c.text, c.text_len);
    } else {
        char text[24];
        snprintf(text, sizeof text, "%lld", c.ints[0]);
        *key = crm_arena_strndup(arena, text, strlen(text));
    }
    snprintf(id, idsize, "%lld", row_id);
    return *key != NULL;
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
    long long hash = 0;
    if (f->after != NULL && fv->sort >= 0 &&
        !read_cursor(f->after, fv->sort, f->search ? &hash : NULL, arena, &fv->cursor_key,
                     fv->cursor_id, sizeof fv->cursor_id))
        crm_error_add_field(err, "after", "not a cursor this list returned with this sort order");
    else if (f->after != NULL && fv->sort >= 0 && f->search && hash != f->rule_hash)
        crm_error_add_field(err, "after",
                            "a cursor of a search with another rule: a cursor continues only "
                            "the search that returned it");
    if (json_array_size(err->errors) > before)
        return crm_error_set(err, CRM_E_INVALID, "invalid query parameters");
    return true;
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

/* q's driving word (parameter n) is the only word of the search index it
 * begins: the first word after it in the index does not begin with it. One
 * index probe, made once per statement. */
static void no_longer_term(crm_sqlbuf *s, int n)
{
    put(s, " AND NOT EXISTS (SELECT 1 FROM (SELECT z.term FROM customer_search_terms z"
           " WHERE z.term > lower(", n, ") ORDER BY z.term LIMIT 1) z WHERE starts_with(z.term, lower(");
    crm_sqlbuf_placeholder(s, n);
    crm_sqlbuf_append(s, ")))");
}

/* FROM for a page that starts from the search index: the customers who hold
 * any of the terms, merged in page order from one index range per term. In
 * PAGE_FIRST_TERM the one term is terms.list's (and none when it has more);
 * in PAGE_EXACT_TERM, the driving word. */
static void from_terms(const filter_values *fv, page_mode mode, json_t *terms, crm_arena *arena,
                       crm_sqlbuf *s)
{
    const sort_order *o = &sorts[fv->sort];
    size_t nterms = mode == PAGE_FIRST_TERM || mode == PAGE_EXACT_TERM ? 1 : json_array_size(terms);
    if (nterms == 0) {
        crm_sqlbuf_append(s, " FROM customers c WHERE false");
        return;
    }
    int key = 0, id = 0;
    if (fv->cursor_key != NULL) {
        key = crm_sqlbuf_param(s, fv->cursor_key);
        id = crm_sqlbuf_param(s, fv->cursor_id);
    }
    /* One range per term, merged in page order; a customer who holds two of
     * the terms comes twice, next to each other, and DISTINCT ON drops the
     * second. One term (the usual case) needs neither. */
    const char *order = o->descending ? " ORDER BY x.created_at DESC, x.customer_id DESC"
                                      : " ORDER BY x.created_at, x.customer_id";
    if (nterms > 1)
        crm_sqlbuf_append(s, " FROM (SELECT DISTINCT ON (x.created_at, x.customer_id) "
                             "x.created_at, x.customer_id FROM (");
    else
        crm_sqlbuf_append(s, " FROM (");
    for (size_t i = 0; i < nterms; i++) {
        if (i > 0)
            crm_sqlbuf_append(s, " UNION ALL ");
        crm_sqlbuf_append(s, "(SELECT x.created_at, x.customer_id FROM customer_search_terms x WHERE ");
        if (mode == PAGE_FIRST_TERM) {
            crm_sqlbuf_append(s, "x.term = (terms.list ->> 0) AND json_array_length(terms.list) = 1");
        } else if (mode == PAGE_EXACT_TERM) {
            int p = crm_sqlbuf_param(s, fv->words[fv->driver]);
            put(s, "x.term = lower(", p, ")");
            no_longer_term(s, p);
        } else {
            const char *term = json_string_value(json_array_get(terms, i));
            crm_sqlbuf_append(s, "x.term = ");
            crm_sqlbuf_bind(s, term ? crm_arena_strndup(arena, term, strlen(term)) : NULL);
        }
        if (key != 0) {
            crm_sqlbuf_append(s, o->descending ? " AND (x.created_at, x.customer_id) < ("
                                               : " AND (x.created_at, x.customer_id) > (");
            from_us(s, key);
            put(s, ", ", id, "::bigint)");
        }
        if (nterms > 1)
            crm_sqlbuf_append(s, order);
        crm_sqlbuf_append(s, ")");
    }
    if (nterms > 1) {
        crm_sqlbuf_append(s, ") x");
        crm_sqlbuf_append(s, order);
    }
    /* Joined on the id alone: with created_at as well, PostgreSQL takes the two
     * conditions for independent, expects almost no rows, and hashes every
     * match rather than stream the first page. */
    crm_sqlbuf_append(s, ") h JOIN customers c ON c.id = h.customer_id WHERE c.status = 'active'");
}

/* Builds the statement for f (checked) into s, all but its LIMIT value. */
static void build_sql(const crm_customer_filter *f, filter_values *fv, page_mode mode,
                      json_t *terms, crm_arena *arena, const char *limit, crm_sqlbuf *s)
{
    const sort_order *o = &sorts[fv->sort];
    bool by_terms = mode != PAGE_WALK;
    if (mode == PAGE_FIRST_TERM) {
        int word = crm_sqlbuf_param(s, fv->words[fv->driver]);
        int max = crm_sqlbuf_param(s, PREFIX_TERMS_MAX_TEXT);
        /* SQL_FIND_TERMS names them $1 and $2 */
        if (word == 1 && max == 2)
            crm_sqlbuf_append(s, SQL_FIND_TERMS " SELECT terms.list::text AS search_terms, p.* "
                                 "FROM terms LEFT JOIN LATERAL (");
        else
            s->failed = true;
    }
    if (mode == PAGE_EXACT_TERM)
        crm_sqlbuf_append(s, "SELECT true AS exact_term, ");
    else
        crm_sqlbuf_append(s, "SELECT ");
    crm_sqlbuf_append(s, CRM_CUSTOMER_COLUMNS);
    if (o->key_out != NULL) {
        crm_sqlbuf_append(s, ", ");
        crm_sqlbuf_append(s, o->key_out);
        crm_sqlbuf_append(s, " AS sort_key");
    }
    if (by_terms)
        from_terms(fv, mode, terms, arena, s);
    else
        crm_sqlbuf_append(s, " FROM customers c WHERE c.status = 'active'");
    const char *values[N_FILTERS] = {
        f->email ? fv->email : NULL,
        f->phone ? fv->phone : NULL,
        f->country,
        f->city,
        f->lifecycle_stage,
        f->tag,
        /* the date-times in UTC: PostgreSQL refuses offsets past +-15:59 */
        f->created_after ? fv->times[0] : NULL,
        f->created_before ? fv->times[1] : NULL,
        f->updated_after ? fv->times[2] : NULL,
        f->updated_before ? fv->times[3] : NULL,
    };
    crm_list_add_filters(s, filters, N_FILTERS, values);
    if (f->rule != NULL) {
        crm_error rerr = CRM_ERROR_INIT;
        crm_sqlbuf_append(s, " AND ");
        if (!crm_rule_sql(f->rule, s, f->now_ms, arena, &rerr))
            s->failed = true; /* reported as the statement's failure */
        crm_error_clear(&rerr);
    }
    /* The other words (all of them on a walk): each begins a word of the
     * customer's. Through h (the search index) when there, so that they are
     * checked before the customer's row is read. */
    for (int i = 0; i < fv->nwords; i++) {
        if (!by_terms)
            where(s,
                  "EXISTS (SELECT 1 FROM customer_search_terms w WHERE w.customer_id = c.id "
                  "AND starts_with(w.term, lower(",
                  fv->words[i], ")))");
        else if (i != fv->driver)
            where(s,
                  "EXISTS (SELECT 1 FROM customer_search_terms w "
                  "WHERE w.customer_id = h.customer_id AND starts_with(w.term, lower(",
                  fv->words[i], ")))");
    }
    if (fv->cursor_key != NULL && !by_terms) {
        crm_sqlbuf_append(s, " AND (");
        crm_sqlbuf_append(s, o->key);
        crm_sqlbuf_append(s, o->descending ? ", c.id) < (" : ", c.id) > (");
        int key = crm_sqlbuf_param(s, fv->cursor_key);
        if (o->text_key)
            put(s, "", key, "::text");
        else
            from_us(s, key);
        crm_sqlbuf_append(s, ", ");
        crm_sqlbuf_bind(s, fv->cursor_id);
        crm_sqlbuf_append(s, "::bigint)");
    }
    crm_sqlbuf_append(s, " ORDER BY ");
    if (by_terms && (mode != PAGE_MERGE_TERMS || json_array_size(terms) > 0)) {
        /* h's order, which is c's */
        crm_sqlbuf_append(s, o->descending ? "h.created_at DESC, h.customer_id DESC"
                                           : "h.created_at, h.customer_id");
    } else {
        crm_sqlbuf_append(s, o->key);
        crm_sqlbuf_append(s, o->descending ? " DESC, c.id DESC" : ", c.id");
    }
    crm_sqlbuf_append(s, " LIMIT ");
    crm_sqlbuf_bind(s, limit);
    crm_sqlbuf_append(s, "::int");
    if (mode == PAGE_FIRST_TERM)
        crm_sqlbuf_append(s, o->descending ? ") p ON true ORDER BY p.created_at DESC, p.id DESC"
                                           : ") p ON true ORDER BY p.created_at, p.id");
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

/* Puts the statement built in s into q: prepared and kept when its shape
 * is planned once, unprepared (a copy in arena) when its plan must fit its
 * values. False with err set when the builder failed or q cannot hold it. */
static bool query_from_sql(const crm_customer_filter *f, const filter_values *fv, page_mode mode,
                           const crm_sqlbuf *s, crm_arena *arena, crm_query *q, crm_error *err)
{
    if (!crm_sqlbuf_ok(s) || s->nparams > CRM_QUERY_MAX_PARAMS)
        return crm_error_set(err, CRM_E_INTERNAL, "the list's statement could not be built");
    /* Prepared, a statement keeps one plan per connection. Where the best
     * plan depends on the values (a rare tag is best found through its GIN
     * index, a common one by walking the order; a short time range through
     * its own index), it goes unprepared and is planned for them each time. */
    /* A search's rule, too: its best plan depends on its values, and its
     * texts, one per shape of rule, would crowd the statement cache. */
    bool by_value = f->tag != NULL || f->created_after != NULL || f->created_before != NULL ||
                    f->updated_after != NULL || f->updated_before != NULL ||
                    (fv->nwords > 0 && mode == PAGE_WALK) || f->rule != NULL;
    const char *sql = crm_sqlbuf_text(s);
    crm_stmt *st = by_value ? NULL : crm_db_stmt_for_sql(sql, true, true);
    if (st == NULL) {
        st = crm_arena_alloc(arena, sizeof *st);
        char *text = crm_arena_strndup(arena, sql, s->len);
        if (st == NULL || text == NULL)
            return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
        memset(st, 0, sizeof *st);
        st->sql = text;
        st->read_only = true;
        st->page = true;
    }
    crm_query_init(q, st);
    for (int i = 0; i < s->nparams; i++)
        if (!crm_query_add(q, s->params[i]))
            return crm_error_set(err, CRM_E_INTERNAL, "the list's statement could not be built");
    return true;
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
    if (!check_filter(f, fv, arena, err))
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
    snprintf(limit_text, 16, "%d", crm_page_fetch(limit)); /* one more: is there a next page? */
    crm_sqlbuf s;
    crm_sqlbuf_init(&s);
    build_sql(f, fv, mode, terms, arena, limit_text, &s);
    json_decref(terms);
    if (f->rule != NULL && crm_sqlbuf_ok(&s) && s.nparams > CRM_QUERY_MAX_PARAMS) {
        crm_sqlbuf_free(&s);
        return CRM_LIST_WORKER; /* too many values for the event loop's query */
    }
    bool built = query_from_sql(f, fv, mode, &s, arena, q, err);
    crm_sqlbuf_free(&s);
    if (!built)
        return CRM_LIST_ERROR;
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
    crm_page_begin(&b);
    for (int r = 0; r < crm_page_shown(n, limit); r++)
        crm_customer_write_at(&b, res, r, c0, false);
    crm_cursor next;
    bool more = crm_page_has_next(n, limit);
    if (more && !next_cursor(f, sort_of(f), res, limit - 1, c0, &next))
        b.out.failed = true;
    crm_page_end(&b, more ? &next : NULL);
    char *page = crm_jbuf_take(&b, len);
    if (page == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    return page;
}

/* Runs the statement in s on a pooled connection and renders its page. */
static char *run_search(const crm_customer_filter *f, const crm_sqlbuf *s, size_t *len,
                        crm_error *err)
{
    if (!crm_sqlbuf_ok(s)) {
        crm_error_set(err, CRM_E_INTERNAL, "the search's statement could not be built");
        return NULL;
    }
    crm_conn *conn = crm_db_acquire(err);
    if (conn == NULL)
        return NULL;
    PGresult *res = crm_db_exec_sql(conn, crm_sqlbuf_text(s), s->nparams, s->params, err);
    crm_db_release(conn);
    char *page = res != NULL ? crm_customer_list_render(res, f, len, err) : NULL;
    PQclear(res);
    return page;
}

/* A search, blocking: its statement, built as for the event loop, runs
 * with all its parameters (a large rule has more than a crm_query holds).
 * Always a walk along the sort order. */
static char *search_blocking(const crm_customer_filter *f, size_t *len, crm_error *err)
{
    crm_arena arena;
    crm_arena_init(&arena);
    char *page = NULL;
    filter_values *fv = crm_arena_alloc(&arena, sizeof *fv);
    if (fv == NULL)
        crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    else
        memset(fv, 0, sizeof *fv);
    if (fv != NULL && check_filter(f, fv, &arena, err)) {
        char limit_text[16];
        snprintf(limit_text, sizeof limit_text, "%d", crm_page_fetch(f->limit));
        crm_sqlbuf s;
        crm_sqlbuf_init(&s);
        build_sql(f, fv, PAGE_WALK, NULL, &arena, limit_text, &s);
        page = run_search(f, &s, len, err);
        crm_sqlbuf_free(&s);
    }
    crm_arena_free(&arena);
    return page;
}

char *crm_customer_list(const crm_customer_filter *f, size_t *len, crm_error *err)
{
    if (f->search)
        return search_blocking(f, len, err);
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

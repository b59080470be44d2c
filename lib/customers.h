/*
 * customers.h — the customer record: validation, create, read, merge-patch
 * update, delete, list with filters and keyset cursors, upsert by an
 * external system's id, and the audit trail of every write.
 *
 * Representations are Jansson objects the caller owns. Every write runs in
 * one transaction on the blocking pool and inserts its customer_audit row in
 * that same transaction. A merged customer's id is an alias of its survivor
 * (the chain of merged_into is followed) for reads and writes alike.
 */
#ifndef CRM_CUSTOMERS_H
#define CRM_CUSTOMERS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "db.h"
#include "error.h"

/* ---- validation (customers/validate.c) --------------------------------- */

/* The columns a customer body writes, in the order of the SQL parameters of
 * the insert and update statements. */
enum {
    CRM_CCOL_KIND,
    CRM_CCOL_FIRST_NAME,
    CRM_CCOL_LAST_NAME,
    CRM_CCOL_DISPLAY_NAME,
    CRM_CCOL_COMPANY,
    CRM_CCOL_EMAIL,
    CRM_CCOL_EMAIL_NORMALIZED,
    CRM_CCOL_PHONE,
    CRM_CCOL_PHONE_NORMALIZED,
    CRM_CCOL_COUNTRY,
    CRM_CCOL_REGION,
    CRM_CCOL_CITY,
    CRM_CCOL_POSTAL_CODE,
    CRM_CCOL_STREET,
    CRM_CCOL_LATITUDE,
    CRM_CCOL_LONGITUDE,
    CRM_CCOL_BIRTH_DATE,
    CRM_CCOL_PREFERRED_LANGUAGE,
    CRM_CCOL_LIFECYCLE_STAGE,
    CRM_CCOL_TAGS,       /* a JSON array of strings, as text */
    CRM_CCOL_ATTRIBUTES, /* a JSON object, as text */
    CRM_CUSTOMER_NCOLS
};

/* Column values checked and normalized from a customer document. Strings in
 * v[] either point into the document (which must outlive this value) or
 * into the buffers below; tags_json and attributes_json are owned and freed
 * by crm_customer_values_free(). NULL entries are SQL NULL. */
typedef struct crm_customer_values {
    const char *v[CRM_CUSTOMER_NCOLS];
    char email_normalized[1024];
    char phone_normalized[20];
    char latitude[40], longitude[40];
    char *tags_json, *attributes_json;
    json_t *external_ids; /* borrowed from the document; NULL when absent */
} crm_customer_values;

/* Limits, in characters (Unicode code points) unless said otherwise. */
#define CRM_CUSTOMER_NAME_MAX 200 /* first/last/display name, company, city, region */
#define CRM_CUSTOMER_STREET_MAX 500
#define CRM_CUSTOMER_EMAIL_MAX 254
#define CRM_CUSTOMER_PHONE_MAX 50
#define CRM_CUSTOMER_POSTAL_CODE_MAX 20
#define CRM_CUSTOMER_LANGUAGE_MAX 35
#define CRM_CUSTOMER_TAG_MAX 100
#define CRM_CUSTOMER_TAGS_MAX 100
#define CRM_CUSTOMER_ATTRIBUTES_MAX_BYTES 65536 /* serialized, compact */
#define CRM_CUSTOMER_EXTERNAL_IDS_MAX 20
#define CRM_EXTERNAL_SOURCE_MAX 100
#define CRM_EXTERNAL_ID_MAX 500

/* What a body may carry besides the customer's own fields. */
#define CRM_CUSTOMER_ALLOW_EXTERNAL_IDS 1u /* "external_ids": [{"source","id"}] (create) */

/* Checks a whole customer document (a create body, or the result of a merge
 * patch) and fills out. Every problem is added to err as a field error
 * named by its JSON pointer; returns false with CRM_E_INVALID when there was
 * any. On failure out holds nothing to free. */
bool crm_customer_validate(json_t *doc, unsigned flags, crm_customer_values *out, crm_error *err);

/* Adds a field error for every object member name or string anywhere in
 * json that holds a NUL character (PostgreSQL text cannot store it);
 * base is the JSON pointer of json. Returns false when there was any. */
bool crm_json_check_no_nul(json_t *json, const char *base, crm_error *err);

void crm_customer_values_free(crm_customer_values *v);

/* Normalizes an e-mail address for matching (ASCII whitespace trimmed,
 * ASCII lower-cased) into out. */
void crm_email_normalize(const char *email, char *out, size_t size);

/* True for a syntactically acceptable address (see crm_customer_validate). */
bool crm_email_valid(const char *email);

/* Normalizes a phone number to its digits, keeping a leading '+'. Returns
 * false when it holds characters other than digits, spaces and ".-()/", a
 * '+' anywhere but first, or not 6 to 15 digits. */
bool crm_phone_normalize(const char *phone, char *out, size_t size);

/* True for an officially assigned ISO 3166-1 alpha-2 code (uppercase). */
bool crm_country_valid(const char *code);

/* The number of codes crm_country_valid accepts (249). */
size_t crm_country_count(void);

/* True for a valid "YYYY-MM-DD" calendar date that is not after today (UTC). */
bool crm_birth_date_valid(const char *s);

/* True for a well-formed BCP 47 language tag such as "it" or "pt-BR". */
bool crm_language_tag_valid(const char *s);

/* True for an RFC 3339 date-time with a time zone ("2026-11-23T10:15:00Z",
 * "2026-11-23T11:15:00.5+01:00"). */
bool crm_rfc3339_valid(const char *s);

/* An RFC 3339 date-time as epoch milliseconds (digits past milliseconds are
 * dropped; a leap second, :60, is the first second of the next minute, as
 * PostgreSQL reads it). False when not valid. */
bool crm_rfc3339_epoch_ms(const char *s, long long *ms);

/* The years a client's date-time may fall in once moved to UTC. */
#define CRM_RFC3339_YEAR_MIN 1
#define CRM_RFC3339_YEAR_MAX 9999
/* Room for crm_rfc3339_to_utc's output: "YYYY-MM-DDTHH:MM:SS.fffffffffZ". */
#define CRM_RFC3339_UTC_SIZE 32

/* Writes the instant of the RFC 3339 date-time in as UTC,
 * "YYYY-MM-DDTHH:MM:SS[.f]Z", keeping the fraction's digits as written (so
 * PostgreSQL rounds them to microseconds exactly as it would the original)
 * and reading a leap second as PostgreSQL does (the next minute's first
 * second). This is the only form a client's date-time takes to SQL:
 * PostgreSQL refuses offsets beyond +-15:59 (22009) that RFC 3339 allows.
 * False, with out empty, when in is not valid, its UTC year lies outside
 * CRM_RFC3339_YEAR_MIN..MAX, or outlen is too small. */
bool crm_rfc3339_to_utc(const char *in, char *out, size_t outlen);

/* True when s (not NULL) is one of the NULL-terminated list. */
bool crm_one_of(const char *s, const char *const *list);

/* True for one of the lifecycle stages. */
bool crm_lifecycle_stage_valid(const char *s);

/* The lifecycle stages and the kinds of customer (NULL-terminated). */
extern const char *const *const crm_lifecycle_stages;
extern const char *const *const crm_customer_kinds;

/* The number of Unicode code points in the UTF-8 string s[0..len). */
size_t crm_utf8_chars(const char *s, size_t len);

/* ---- the record (customers/customers.c) -------------------------------- */

/* The version an If-Match header value accepts: true when header is NULL,
 * "*", or a list holding the strong ETag "\"<version>\"". Any resource
 * whose ETag is its version uses it (customers, currency rates). */
bool crm_etag_matches(const char *if_match, long long version);

/* True when an If-Match value (NULL: none) is "*" or a list of entity tags,
 * which are quoted ("3", W/"3"); otherwise false with CRM_E_MALFORMED and a
 * detail that says so without repeating the value. An unquoted 3 would
 * otherwise match nothing and read as "the customer has changed". */
bool crm_if_match_valid(const char *if_match, crm_error *err);

/* What a create returns: the rendered 201 body (so that an idempotent
 * replay sends the same bytes), its Location and version. Owned; free with
 * crm_customer_created_free. */
typedef struct crm_customer_created {
    char *body;
    char *location;
    int version;
    bool replayed; /* an Idempotency-Key replay of an earlier response */
} crm_customer_created;

void crm_customer_created_free(crm_customer_created *c);

/* The caller's context for a write. */
typedef struct crm_write_ctx {
    long long api_key_id;        /* recorded in the audit trail; 0 for none */
    const char *idempotency_key; /* create only; NULL when the request sent none */
    /* The key's scopes (auth.h bits), for what a write may do or show beyond
     * its route's own scope (a touchpoint that creates a customer, answers
     * about customers). Only when has_scopes: internal callers and tests
     * leave it false and may do everything. */
    bool has_scopes;
    unsigned scopes;
} crm_write_ctx;

/* Validates body and creates a customer (with its external_ids when given)
 * and its audit row. With an Idempotency-Key, the request is the body as
 * canonical JSON (member order and whitespace do not matter). Fails with CRM_E_INVALID naming the fields,
 * CRM_E_CONFLICT when an external id is held by another customer (naming
 * it) or the Idempotency-Key was used with another body. */
bool crm_customer_create(json_t *body, const crm_write_ctx *ctx, crm_customer_created *out,
                         crm_error *err);

/* Reads a customer (following merges); CRM_E_NOT_FOUND when there is no
 * live one. With external_ids the representation includes them. */
json_t *crm_customer_get(long long id, bool external_ids, crm_error *err);

/* The same read split for the event loop: the query, then its decoding.
 * decode returns the representation, or NULL with CRM_E_NOT_FOUND, or NULL
 * with no error and *merged_into set when the row is a merged customer whose
 * survivor must be read with crm_customer_get. */
void crm_customer_get_query(crm_query *q, long long id, bool external_ids);
json_t *crm_customer_get_decode(const PGresult *res, bool external_ids, long long *merged_into,
                                crm_error *err);

/* decode's twin for the hot path: the representation as JSON text (the
 * caller frees it) of *len bytes, with its *version. */
char *crm_customer_get_render(const PGresult *res, bool external_ids, long long *merged_into,
                              long long *version, size_t *len, crm_error *err);

/* Reads the customer that (source, external_id) names, for the event loop. */
void crm_customer_get_by_external_id_query(crm_query *q, const char *source,
                                           const char *external_id, bool external_ids);

/* Applies a JSON Merge Patch (RFC 7396) to a customer under If-Match
 * (if_match may be NULL). Returns the new representation, or NULL with
 * CRM_E_NOT_FOUND, CRM_E_PRECONDITION or CRM_E_INVALID. A patch that changes
 * nothing writes nothing and keeps the version. */
json_t *crm_customer_patch(long long id, json_t *patch, const char *if_match,
                           const crm_write_ctx *ctx, crm_error *err);

/* Marks a customer deleted (under If-Match). CRM_E_NOT_FOUND when there is
 * no live one. */
bool crm_customer_delete(long long id, const char *if_match, const crm_write_ctx *ctx,
                         crm_error *err);

/* Creates or merge-patches the customer that (source, external_id) names.
 * *created tells which. CRM_E_CONFLICT when it names a deleted customer. */
json_t *crm_customer_upsert_by_external_id(const char *source, const char *external_id,
                                           json_t *body, const char *if_match,
                                           const crm_write_ctx *ctx, bool *created,
                                           crm_error *err);

/* Checks a (source, external_id) pair from a path; CRM_E_INVALID naming
 * "source" or "external_id". */
bool crm_external_id_valid(const char *source, const char *external_id, crm_error *err);

/* ---- lists ---------------------------------------------------------------- */

typedef enum {
    CRM_SORT_CREATED_AT,
    CRM_SORT_CREATED_AT_DESC,
    CRM_SORT_UPDATED_AT,
    CRM_SORT_UPDATED_AT_DESC,
    CRM_SORT_NAME,
} crm_customer_sort;

/* The filters of GET /v1/customers, each NULL when absent. The strings are
 * borrowed from the caller. */
typedef struct crm_customer_filter {
    const char *email, *phone, *country, *city, *lifecycle_stage, *tag;
    const char *created_after, *created_before, *updated_after, *updated_before;
    const char *q;
    const char *sort;  /* NULL: created_at */
    const char *after; /* a cursor from an earlier page */
    int limit;
    /* POST /v1/customers/search (crm_customer_search_begin): search is set,
     * rule (borrowed, segments.h) is what every customer listed satisfies
     * at now_ms, and the page's cursors carry rule_hash, so that a cursor
     * is refused with any other rule. Rendering a page reads search and
     * rule_hash only: the rule may be freed once the query is built. */
    bool search;
    const struct crm_rule *rule;
    long long now_ms;
    long long rule_hash;
} crm_customer_filter;

/* Lists live customers that match f, one page, as the JSON text (the caller
 * frees it, *len bytes) of {"data": [...], "next_cursor": string|null};
 * NULL with CRM_E_INVALID naming a bad parameter. Blocks (the pool); a
 * search's statement may have any number of parameters here. */
char *crm_customer_list(const crm_customer_filter *f, size_t *len, crm_error *err);

/* POST /v1/customers/search: reads the body {"rule": SegmentRule} (no
 * other member) and makes f (its other members set by the caller: sort,
 * after, limit) a search for the customers that satisfy the rule at now_ms
 * (epoch milliseconds: what days_ago and within_days count from). Returns
 * the parsed rule, which the caller frees with crm_rule_free once the
 * page's query is built (crm_customer_list_query) or run
 * (crm_customer_list); f borrows it until then. NULL with CRM_E_INVALID
 * and field errors named by JSON pointers into the body ("/rule/all/2/op",
 * "/rule" when it is missing, "/<member>" for an unknown member), or
 * CRM_E_INTERNAL. */
struct crm_rule *crm_customer_search_begin(const json_t *body, long long now_ms,
                                           crm_customer_filter *f, crm_error *err);

/* The same split into steps for the event loop. crm_customer_list_query
 * (first NULL) fills q (its values allocated in arena, which must outlive q)
 * and answers:
 *   CRM_LIST_PAGE   q is the page's statement: run it, render its result;
 *   CRM_LIST_TERMS  q is a step of a search (the page when q's longest word
 *                   is a word of the search index that begins no other; the
 *                   words it begins, and the page when there is just one):
 *                   run it, then call again with its result as first, which
 *                   may answer CRM_LIST_TERMS once more;
 *   CRM_LIST_READY  (a later call) first's rows are the page: render them;
 *   CRM_LIST_ERROR  nothing; err says why (a bad parameter names itself);
 *   CRM_LIST_WORKER a search's statement has more parameters than q holds
 *                   (a large rule): run crm_customer_list on a worker. */
typedef enum {
    CRM_LIST_ERROR,
    CRM_LIST_TERMS,
    CRM_LIST_PAGE,
    CRM_LIST_READY,
    CRM_LIST_WORKER
} crm_list_step;

crm_list_step crm_customer_list_query(const crm_customer_filter *f, const PGresult *first,
                                      crm_arena *arena, crm_query *q, crm_error *err);
char *crm_customer_list_render(const PGresult *res, const crm_customer_filter *f, size_t *len,
                               crm_error *err);

/* The audit trail of a customer, newest first: after_id 0 for the first
 * page. For the event loop, then decode; CRM_E_NOT_FOUND for no customer. */
void crm_customer_audit_query(crm_query *q, long long id, long long after_id, int limit);
json_t *crm_customer_audit_decode(const PGresult *res, long long id, int limit,
                                  long long *next_after, crm_error *err);

#endif

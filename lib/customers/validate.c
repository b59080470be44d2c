/*
 * customers/validate.c — every rule a customer document must follow, in one
 * place: which fields exist, their types and lengths (in characters), and
 * the formats of e-mail, phone, country, dates, language tags and
 * coordinates. Each problem becomes one field error named by its JSON
 * pointer, so a client sees all of them at once.
 */
#include "customers.h"
#include "civil.h"
#include "jbuf.h"
#include "json.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small predicates ------------------------------------------------------ */

size_t crm_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* Officially assigned ISO 3166-1 alpha-2 codes, sorted. */
static const char countries[][3] = {
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX",
    "AZ", "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ",
    "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK",
    "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM",
    "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR",
    "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS",
    "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN",
    "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN",
    "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV",
    "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ",
    "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI",
    "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
    "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC",
    "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV",
    "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR",
    "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
};
#define N_COUNTRIES (sizeof countries / sizeof countries[0])

static int compare_code(const void *a, const void *b)
{
    return strcmp(a, b);
}

bool crm_country_valid(const char *code)
{
    if (code == NULL || strlen(code) != 2)
        return false;
    return bsearch(code, countries, N_COUNTRIES, sizeof countries[0], compare_code) != NULL;
}

size_t crm_country_count(void)
{
    return N_COUNTRIES;
}

static const char *const lifecycle_stages[] = {"subscriber", "lead",    "prospect", "customer",
                                               "loyal",      "at_risk", "churned",  NULL};
static const char *const kinds[] = {"person", "company", NULL};

/* For the test that the allow-lists equal the schema's CHECK constraints. */
const char *const *const crm_lifecycle_stages = lifecycle_stages;
const char *const *const crm_customer_kinds = kinds;

bool crm_one_of(const char *s, const char *const *list)
{
    for (; s != NULL && *list != NULL; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

bool crm_lifecycle_stage_valid(const char *s)
{
    return s != NULL && crm_one_of(s, lifecycle_stages);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

void crm_email_normalize(const char *email, char *out, size_t size)
{
    const char *b = email, *e = email + strlen(email);
    while (b < e && is_space(*b))
        b++;
    while (e > b && is_space(e[-1]))
        e--;
    size_t n = 0;
    for (; b < e && n + 1 < size; b++)
        out[n++] = (char)((*b >= 'A' && *b <= 'Z') ? *b + ('a' - 'A') : *b);
    out[n] = '\0';
}

bool crm_email_valid(const char *email)
{
    char norm[1024];
    crm_email_normalize(email, norm, sizeof norm);
    const char *at = strchr(norm, '@');
    if (at == NULL || at == norm || strchr(at + 1, '@') != NULL)
        return false;
    for (const char *p = norm; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    const char *domain = at + 1;
    size_t dlen = strlen(domain);
    const char *dot = strchr(domain, '.');
    /* A dot between non-empty labels: "a.b", not ".b", "a." or "a..b". */
    return dot != NULL && domain[0] != '.' && domain[dlen - 1] != '.' &&
           strstr(domain, "..") == NULL;
}

bool crm_phone_normalize(const char *phone, char *out, size_t size)
{
    size_t n = 0, digits = 0;
    bool seen_any = false;
    for (const char *p = phone; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            if (n + 1 < size)
                out[n++] = *p;
            digits++;
            seen_any = true;
        } else if (*p == '+') {
            if (seen_any)
                return false;
            out[n++] = '+';
            seen_any = true;
        } else if (!strchr(" .-()/", *p)) {
            return false;
        }
    }
    out[n] = '\0';
    return digits >= 6 && digits <= 15;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* Parses "YYYY-MM-DD" at s into y, m, d; false when it is not a real date. */
static bool parse_date(const char *s, int *y, int *m, int *d)
{
    if (!all_digits(s, 4) || s[4] != '-' || !all_digits(s + 5, 2) || s[7] != '-' ||
        !all_digits(s + 8, 2))
        return false;
    *y = num(s, 4);
    *m = num(s + 5, 2);
    *d = num(s + 8, 2);
    return *y >= 1 && *m >= 1 && *m <= 12 && *d >= 1 && *d <= days_in_month(*y, *m);
}

bool crm_birth_date_valid(const char *s)
{
    int y, m, d;
    if (strlen(s) != 10 || !parse_date(s, &y, &m, &d))
        return false;
    time_t now = time(NULL);
    struct tm today;
    gmtime_r(&now, &today);
    long have = (long)y * 10000 + m * 100 + d;
    long limit = (long)(today.tm_year + 1900) * 10000 + (today.tm_mon + 1) * 100 + today.tm_mday;
    return have <= limit;
}

/* The fields of an RFC 3339 date-time; the fraction's digits are kept as
 * written (at most 9). */
typedef struct rfc3339 {
    int year, month, day, hour, minute, second;
    const char *frac; /* the digits after '.', or NULL */
    size_t frac_len;
    int offset_min; /* east of UTC, -1439..1439 */
} rfc3339;

static bool parse_rfc3339(const char *s, rfc3339 *t)
{
    size_t len = strlen(s);
    if (len < 20 || !parse_date(s, &t->year, &t->month, &t->day) ||
        (s[10] != 'T' && s[10] != 't'))
        return false;
    const char *h = s + 11;
    if (!all_digits(h, 2) || h[2] != ':' || !all_digits(h + 3, 2) || h[5] != ':' ||
        !all_digits(h + 6, 2))
        return false;
    t->hour = num(h, 2);
    t->minute = num(h + 3, 2);
    t->second = num(h + 6, 2);
    if (t->hour > 23 || t->minute > 59 || t->second > 60)
        return false;
    const char *p = h + 8;
    t->frac = NULL;
    t->frac_len = 0;
    if (*p == '.') {
        const char *f = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == f || p - f > 9)
            return false;
        t->frac = f;
        t->frac_len = (size_t)(p - f);
    }
    t->offset_min = 0;
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return true;
    if ((*p != '+' && *p != '-') || !all_digits(p + 1, 2) || p[3] != ':' ||
        !all_digits(p + 4, 2) || p[6] != '\0' || num(p + 1, 2) > 23 || num(p + 4, 2) > 59)
        return false;
    t->offset_min = (num(p + 1, 2) * 60 + num(p + 4, 2)) * (*p == '-' ? -1 : 1);
    return true;
}

bool crm_rfc3339_valid(const char *s)
{
    rfc3339 t;
    return parse_rfc3339(s, &t);
}

/* Whole seconds since the epoch, in UTC. A leap second (:60) is read as
 * PostgreSQL reads it: the first second of the next minute. */
static long long utc_seconds(const rfc3339 *t)
{
    return crm_days_from_civil(t->year, t->month, t->day) * 86400 + t->hour * 3600LL +
           t->minute * 60LL + t->second - t->offset_min * 60LL;
}

static long long floor_div(long long a, long long b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

bool crm_rfc3339_to_utc(const char *in, char *out, size_t outlen)
{
    rfc3339 t;
    if (outlen > 0)
        out[0] = '\0';
    if (!parse_rfc3339(in, &t))
        return false;
    long long secs = utc_seconds(&t), days = floor_div(secs, 86400), rest = secs - days * 86400;
    long long y;
    int m, d;
    crm_civil_from_days(days, &y, &m, &d);
    if (y < CRM_RFC3339_YEAR_MIN || y > CRM_RFC3339_YEAR_MAX)
        return false;
    int n = snprintf(out, outlen, "%04lld-%02d-%02dT%02d:%02d:%02d%s%.*sZ", y, m, d,
                     (int)(rest / 3600), (int)(rest / 60 % 60), (int)(rest % 60),
                     t.frac ? "." : "", (int)t.frac_len, t.frac ? t.frac : "");
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen > 0)
            out[0] = '\0';
        return false;
    }
    return true;
}

bool crm_rfc3339_epoch_ms(const char *s, long long *ms)
{
    rfc3339 t;
    if (!parse_rfc3339(s, &t))
        return false;
    long long v = utc_seconds(&t) * 1000;
    int scale = 100;
    for (size_t i = 0; i < t.frac_len && scale > 0; i++, scale /= 10)
        v += (t.frac[i] - '0') * scale;
    *ms = v;
    return true;
}

bool crm_language_tag_valid(const char *s)
{
    /* language (2-3 letters, or 5-8) then subtags of 1-8 letters or digits. */
    size_t len = strlen(s);
    if (len == 0 || len > CRM_CUSTOMER_LANGUAGE_MAX)
        return false;
    const char *p = s;
    size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    if (n < 2 || n > 8 || n == 4)
        return false;
    p += n;
    while (*p == '-') {
        p++;
        n = 0;
        while (isalnum((unsigned char)p[n]) && n < 9)
            n++;
        if (n < 1 || n > 8)
            return false;
        p += n;
    }
    return *p == '\0';
}

/* ---- NUL characters ---------------------------------------------------------- */

bool crm_json_check_no_nul(json_t *json, const char *base, crm_error *err)
{
    bool ok = true;
    char field[CRM_JSON_POINTER_MAX];
    if (json_is_string(json)) {
        if (strlen(json_string_value(json)) != json_string_length(json)) {
            crm_error_add_field(err, base[0] ? base : "/", "must not contain NUL (\\u0000)");
            return false;
        }
    } else if (json_is_array(json)) {
        size_t i;
        json_t *item;
        json_array_foreach(json, i, item) {
            snprintf(field, sizeof field, "%s/%zu", base, i);
            ok = crm_json_check_no_nul(item, field, err) && ok;
        }
    } else if (json_is_object(json)) {
        const char *key;
        size_t key_len;
        json_t *value;
        json_object_keylen_foreach(json, key, key_len, value) {
            crm_json_pointer_append(field, sizeof field, base, key);
            if (strlen(key) != key_len) {
                crm_error_add_field(err, field, "member names must not contain NUL (\\u0000)");
                ok = false;
                continue;
            }
            ok = crm_json_check_no_nul(value, field, err) && ok;
        }
    }
    return ok;
}

/* ---- the document -------------------------------------------------------------- */

static const char *const writable_fields[] = {
    "kind",    "first_name", "last_name",  "display_name",       "company",
    "email",   "phone",      "address",    "location",           "birth_date",
    "preferred_language",    "lifecycle_stage", "tags",          "attributes",
    NULL};
static const char *const read_only_fields[] = {"id", "version", "created_at", "updated_at", NULL};
static const char *const address_fields[] = {"country", "region", "city", "postal_code", "street",
                                             NULL};
static const char *const location_fields[] = {"latitude", "longitude", NULL};

/* Reports members of obj (at pointer base) that are not in allowed. */
static void check_members(json_t *obj, const char *base, const char *const *allowed,
                          unsigned flags, crm_error *err)
{
    const char *key;
    json_t *value;
    char field[CRM_JSON_POINTER_MAX];
    json_object_foreach(obj, key, value) {
        if (crm_one_of(key, allowed))
            continue;
        crm_json_pointer_append(field, sizeof field, base, key);
        if (base[0] == '\0' && strcmp(key, "external_ids") == 0) {
            if (flags & CRM_CUSTOMER_ALLOW_EXTERNAL_IDS)
                continue;
            crm_error_add_field(err, field, "external ids are added when the customer is created "
                                            "or through /v1/customers/by-external-id");
        } else if (base[0] == '\0' && crm_one_of(key, read_only_fields)) {
            crm_error_add_field(err, field, "read-only field");
        } else {
            crm_error_add_field(err, field, "unknown field");
        }
    }
}

/* A nullable string of at most max characters; returns it or NULL. */
static const char *string_field(json_t *obj, const char *name, const char *base, size_t max,
                                crm_error *err)
{
    json_t *v = json_object_get(obj, name);
    char field[CRM_JSON_POINTER_MAX], msg[96];
    if (v == NULL || json_is_null(v))
        return NULL;
    crm_json_pointer_append(field, sizeof field, base, name);
    if (!json_is_string(v)) {
        crm_error_add_field(err, field, "must be a string or null");
        return NULL;
    }
    if (crm_utf8_chars(json_string_value(v), json_string_length(v)) > max) {
        snprintf(msg, sizeof msg, "must be at most %zu characters", max);
        crm_error_add_field(err, field, msg);
        return NULL;
    }
    return json_string_value(v);
}

static void check_enum(const char *value, const char *field, const char *const *allowed,
                       crm_error *err)
{
    if (value == NULL || crm_one_of(value, allowed))
        return;
    char msg[200] = "must be one of:";
    for (const char *const *a = allowed; *a != NULL; a++) {
        strcat(msg, " ");
        strcat(msg, *a);
    }
    crm_error_add_field(err, field, msg);
}

static void validate_address(json_t *doc, crm_customer_values *out, crm_error *err)
{
    json_t *addr = json_object_get(doc, "address");
    if (addr == NULL || json_is_null(addr))
        return;
    if (!json_is_object(addr)) {
        crm_error_add_field(err, "/address", "must be an object or null");
        return;
    }
    check_members(addr, "/address", address_fields, 0, err);
    const char *country = string_field(addr, "country", "/address", 2, err);
    if (country != NULL && !crm_country_valid(country))
        crm_error_add_field(err, "/address/country",
                            "must be an officially assigned ISO 3166-1 alpha-2 code in "
                            "uppercase, such as IT");
    out->v[CRM_CCOL_COUNTRY] = country;
    out->v[CRM_CCOL_REGION] = string_field(addr, "region", "/address", CRM_CUSTOMER_NAME_MAX, err);
    out->v[CRM_CCOL_CITY] = string_field(addr, "city", "/address", CRM_CUSTOMER_NAME_MAX, err);
    out->v[CRM_CCOL_POSTAL_CODE] =
        string_field(addr, "postal_code", "/address", CRM_CUSTOMER_POSTAL_CODE_MAX, err);
    out->v[CRM_CCOL_STREET] =
        string_field(addr, "street", "/address", CRM_CUSTOMER_STREET_MAX, err);
}

/* One coordinate within [-limit, limit]; formatted into buf, or NULL. */
static const char *coordinate(json_t *loc, const char *name, double limit, char *buf, size_t size,
                              crm_error *err)
{
    json_t *v = json_object_get(loc, name);
    char field[64];
    snprintf(field, sizeof field, "/location/%s", name);
    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_number(v)) {
        crm_error_add_field(err, field, "must be a number");
        return NULL;
    }
    double d = json_number_value(v);
    if (!isfinite(d) || d < -limit || d > limit) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be from %g to %g", -limit, limit);
        crm_error_add_field(err, field, msg);
        return NULL;
    }
    snprintf(buf, size, "%.17g", d);
    return buf;
}

static void validate_location(json_t *doc, crm_customer_values *out, crm_error *err)
{
    json_t *loc = json_object_get(doc, "location");
    if (loc == NULL || json_is_null(loc))
        return;
    if (!json_is_object(loc)) {
        crm_error_add_field(err, "/location", "must be an object or null");
        return;
    }
    check_members(loc, "/location", location_fields, 0, err);
    json_t *lat = json_object_get(loc, "latitude"), *lon = json_object_get(loc, "longitude");
    bool has_lat = lat != NULL && !json_is_null(lat), has_lon = lon != NULL && !json_is_null(lon);
    if (has_lat != has_lon) {
        crm_error_add_field(err, has_lat ? "/location/longitude" : "/location/latitude",
                            "latitude and longitude go together: give both or neither");
        return;
    }
    out->v[CRM_CCOL_LATITUDE] =
        coordinate(loc, "latitude", 90, out->latitude, sizeof out->latitude, err);
    out->v[CRM_CCOL_LONGITUDE] =
        coordinate(loc, "longitude", 180, out->longitude, sizeof out->longitude, err);
}

static void validate_tags(json_t *doc, crm_customer_values *out, crm_error *err)
{
    json_t *tags = json_object_get(doc, "tags");
    if (tags == NULL || json_is_null(tags)) {
        out->tags_json = strdup("[]");
        return;
    }
    if (!json_is_array(tags)) {
        crm_error_add_field(err, "/tags", "must be an array of strings");
        return;
    }
    if (json_array_size(tags) > CRM_CUSTOMER_TAGS_MAX) {
        crm_error_add_field(err, "/tags", "must hold at most 100 tags");
        return;
    }
    bool ok = true;
    size_t i;
    json_t *tag;
    char field[32];
    json_array_foreach(tags, i, tag) {
        snprintf(field, sizeof field, "/tags/%zu", i);
        if (!json_is_string(tag)) {
            crm_error_add_field(err, field, "must be a string");
            ok = false;
            continue;
        }
        size_t chars = crm_utf8_chars(json_string_value(tag), json_string_length(tag));
        if (chars == 0 || chars > CRM_CUSTOMER_TAG_MAX) {
            crm_error_add_field(err, field, "must be 1 to 100 characters");
            ok = false;
        }
        for (size_t j = 0; j < i; j++) {
            if (json_equal(json_array_get(tags, j), tag)) {
                crm_error_add_field(err, field, "duplicate tag");
                ok = false;
                break;
            }
        }
    }
    if (ok)
        out->tags_json = crm_json_text(tags, NULL);
}

static void validate_attributes(json_t *doc, crm_customer_values *out, crm_error *err)
{
    json_t *attrs = json_object_get(doc, "attributes");
    if (attrs == NULL || json_is_null(attrs)) {
        out->attributes_json = strdup("{}");
        return;
    }
    if (!json_is_object(attrs)) {
        crm_error_add_field(err, "/attributes", "must be an object");
        return;
    }
    if (!crm_json_depth_within(attrs, CRM_JSON_STORED_DEPTH_MAX)) {
        crm_error_add_field(err, "/attributes",
                            "must nest at most 32 levels of objects and arrays");
        return;
    }
    char *text = crm_json_text(attrs, NULL);
    if (text == NULL || strlen(text) > CRM_CUSTOMER_ATTRIBUTES_MAX_BYTES) {
        crm_error_add_field(err, "/attributes", "must be at most 65536 bytes as compact JSON");
        free(text);
        return;
    }
    out->attributes_json = text;
}

static void validate_external_ids(json_t *doc, crm_customer_values *out, crm_error *err)
{
    json_t *ids = json_object_get(doc, "external_ids");
    if (ids == NULL || json_is_null(ids))
        return;
    if (!json_is_array(ids) || json_array_size(ids) > CRM_CUSTOMER_EXTERNAL_IDS_MAX) {
        crm_error_add_field(err, "/external_ids",
                            "must be an array of at most 20 {\"source\", \"id\"} objects");
        return;
    }
    static const char *const members[] = {"source", "id", NULL};
    size_t i;
    json_t *item;
    char base[40], field[64];
    json_array_foreach(ids, i, item) {
        snprintf(base, sizeof base, "/external_ids/%zu", i);
        if (!json_is_object(item)) {
            crm_error_add_field(err, base, "must be an object {\"source\", \"id\"}");
            continue;
        }
        check_members(item, base, members, 0, err);
        json_t *src = json_object_get(item, "source"), *id = json_object_get(item, "id");
        snprintf(field, sizeof field, "%s/source", base);
        if (!json_is_string(src) || json_string_length(src) == 0 ||
            crm_utf8_chars(json_string_value(src), json_string_length(src)) >
                CRM_EXTERNAL_SOURCE_MAX)
            crm_error_add_field(err, field, "required, a string of 1 to 100 characters");
        snprintf(field, sizeof field, "%s/id", base);
        if (!json_is_string(id) || json_string_length(id) == 0 ||
            crm_utf8_chars(json_string_value(id), json_string_length(id)) > CRM_EXTERNAL_ID_MAX)
            crm_error_add_field(err, field, "required, a string of 1 to 500 characters");
        for (size_t j = 0; j < i; j++) {
            json_t *other = json_array_get(ids, j);
            if (json_equal(json_object_get(other, "source"), src) &&
                json_equal(json_object_get(other, "id"), id)) {
                crm_error_add_field(err, base, "duplicate external id");
                break;
            }
        }
    }
    out->external_ids = ids;
}

void crm_customer_values_free(crm_customer_values *v)
{
    free(v->tags_json);
    free(v->attributes_json);
    v->tags_json = v->attributes_json = NULL;
}

bool crm_customer_validate(json_t *doc, unsigned flags, crm_customer_values *out, crm_error *err)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(doc))
        return crm_error_set(err, CRM_E_INVALID, "the body must be a JSON object");
    size_t before = json_array_size(err->errors);
    check_members(doc, "", writable_fields, flags, err);

    const char *kind = string_field(doc, "kind", "", 20, err);
    check_enum(kind, "/kind", kinds, err);
    out->v[CRM_CCOL_KIND] = kind ? kind : "person";
    out->v[CRM_CCOL_FIRST_NAME] = string_field(doc, "first_name", "", CRM_CUSTOMER_NAME_MAX, err);
    out->v[CRM_CCOL_LAST_NAME] = string_field(doc, "last_name", "", CRM_CUSTOMER_NAME_MAX, err);
    out->v[CRM_CCOL_DISPLAY_NAME] =
        string_field(doc, "display_name", "", CRM_CUSTOMER_NAME_MAX, err);
    out->v[CRM_CCOL_COMPANY] = string_field(doc, "company", "", CRM_CUSTOMER_NAME_MAX, err);

    const char *email = string_field(doc, "email", "", CRM_CUSTOMER_EMAIL_MAX, err);
    if (email != NULL && !crm_email_valid(email))
        crm_error_add_field(err, "/email", "must be an e-mail address such as ada@example.com");
    else if (email != NULL)
        crm_email_normalize(email, out->email_normalized, sizeof out->email_normalized);
    out->v[CRM_CCOL_EMAIL] = email;
    out->v[CRM_CCOL_EMAIL_NORMALIZED] = email ? out->email_normalized : NULL;

    const char *phone = string_field(doc, "phone", "", CRM_CUSTOMER_PHONE_MAX, err);
    if (phone != NULL &&
        !crm_phone_normalize(phone, out->phone_normalized, sizeof out->phone_normalized))
        crm_error_add_field(err, "/phone", "must be a phone number of 6 to 15 digits (an "
                                           "optional leading +, spaces and .-()/ allowed)");
    out->v[CRM_CCOL_PHONE] = phone;
    out->v[CRM_CCOL_PHONE_NORMALIZED] = phone ? out->phone_normalized : NULL;

    validate_address(doc, out, err);
    validate_location(doc, out, err);

    const char *birth = string_field(doc, "birth_date", "", 10, err);
    if (birth != NULL && !crm_birth_date_valid(birth))
        crm_error_add_field(err, "/birth_date",
                            "must be a calendar date YYYY-MM-DD that is not in the future");
    out->v[CRM_CCOL_BIRTH_DATE] = birth;

    const char *lang =
        string_field(doc, "preferred_language", "", CRM_CUSTOMER_LANGUAGE_MAX, err);
    if (lang != NULL && !crm_language_tag_valid(lang))
        crm_error_add_field(err, "/preferred_language",
                            "must be a BCP 47 language tag such as it or pt-BR");
    out->v[CRM_CCOL_PREFERRED_LANGUAGE] = lang;

    const char *stage = string_field(doc, "lifecycle_stage", "", 20, err);
    check_enum(stage, "/lifecycle_stage", lifecycle_stages, err);
    out->v[CRM_CCOL_LIFECYCLE_STAGE] = stage;

    validate_tags(doc, out, err);
    validate_attributes(doc, out, err);
    if (flags & CRM_CUSTOMER_ALLOW_EXTERNAL_IDS)
        validate_external_ids(doc, out, err);

    if (json_array_size(err->errors) > before) {
        crm_customer_values_free(out);
        return crm_error_set(err, CRM_E_INVALID, "the customer is not valid");
    }
    if (out->tags_json == NULL || out->attributes_json == NULL) {
        crm_customer_values_free(out);
        return crm_error_set(err, CRM_E_INTERNAL, "out of memory");
    }
    out->v[CRM_CCOL_TAGS] = out->tags_json;
    out->v[CRM_CCOL_ATTRIBUTES] = out->attributes_json;
    return true;
}

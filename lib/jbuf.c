/*
 * jbuf.c — JSON text written straight into a growing buffer.
 */
#include "jbuf.h"
#include "civil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void crm_jbuf_init(crm_jbuf *b)
{
    memset(b, 0, sizeof *b);
}

void crm_jbuf_free(crm_jbuf *b)
{
    crm_bytebuf_free(&b->out);
    crm_jbuf_init(b);
}

char *crm_jbuf_take(crm_jbuf *b, size_t *len)
{
    if (b->depth != 0) /* an object or array left open */
        b->out.failed = true;
    char *text = crm_bytebuf_take(&b->out, len);
    crm_jbuf_init(b);
    return text;
}

static bool reserve(crm_jbuf *b, size_t n)
{
    return crm_bytebuf_reserve(&b->out, n);
}

static void put(crm_jbuf *b, const char *s, size_t n)
{
    crm_bytebuf_put(&b->out, s, n);
}

static void put_char(crm_jbuf *b, char c)
{
    crm_bytebuf_put_char(&b->out, c);
}

/* What every value does first: a comma when it follows a sibling. */
static void before_value(crm_jbuf *b)
{
    if (b->after_key) {
        b->after_key = false;
        return;
    }
    if (b->depth > 0) {
        if (b->has_member[b->depth - 1])
            put_char(b, ',');
        b->has_member[b->depth - 1] = true;
    }
}

static void open_container(crm_jbuf *b, char c)
{
    before_value(b);
    if (b->depth == CRM_JBUF_MAX_DEPTH) {
        b->out.failed = true;
        return;
    }
    put_char(b, c);
    b->has_member[b->depth++] = false;
}

static void close_container(crm_jbuf *b, char c)
{
    if (b->depth == 0 || b->after_key) {
        b->out.failed = true;
        return;
    }
    b->depth--;
    put_char(b, c);
}

void crm_jbuf_begin_object(crm_jbuf *b)
{
    open_container(b, '{');
}
void crm_jbuf_end_object(crm_jbuf *b)
{
    close_container(b, '}');
}
void crm_jbuf_begin_array(crm_jbuf *b)
{
    open_container(b, '[');
}
void crm_jbuf_end_array(crm_jbuf *b)
{
    close_container(b, ']');
}

/* A JSON string holds every byte as it is but the control characters, the
 * quote and the backslash. */
static inline bool plain_byte(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\';
}

static void put_escaped(crm_jbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* At most six bytes per input byte (\u00XX) and the quotes. */
    if (!reserve(b, n * 6 + 2))
        return;
    char *out = b->out.data + b->out.len;
    *out++ = '"';
    size_t i = 0;
    while (i < n) {
        /* Copy the run of bytes that need no escape in one go: most text is
         * all of one run. */
        size_t run = i;
        while (run < n && plain_byte((unsigned char)s[run]))
            run++;
        memcpy(out, s + i, run - i);
        out += run - i;
        if (run == n)
            break;
        unsigned char c = (unsigned char)s[run];
        i = run + 1;
        *out++ = '\\';
        switch (c) {
        case '"':
            *out++ = '"';
            break;
        case '\\':
            *out++ = '\\';
            break;
        case '\b':
            *out++ = 'b';
            break;
        case '\f':
            *out++ = 'f';
            break;
        case '\n':
            *out++ = 'n';
            break;
        case '\r':
            *out++ = 'r';
            break;
        case '\t':
            *out++ = 't';
            break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out++ = '"';
    b->out.len = (size_t)(out - b->out.data);
}

void crm_jbuf_key(crm_jbuf *b, const char *key)
{
    before_value(b);
    put_escaped(b, key, strlen(key));
    put_char(b, ':');
    b->after_key = true;
}

void crm_jbuf_string(crm_jbuf *b, const char *s, size_t len)
{
    before_value(b);
    put_escaped(b, s, len);
}

void crm_jbuf_cstring(crm_jbuf *b, const char *s)
{
    if (s == NULL)
        crm_jbuf_null(b);
    else
        crm_jbuf_string(b, s, strlen(s));
}

void crm_jbuf_int(crm_jbuf *b, long long v)
{
    char digits[24];
    char *p = digits + sizeof digits;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    before_value(b);
    put(b, p, (size_t)(digits + sizeof digits - p));
}

size_t crm_format_real(double v, char out[CRM_REAL_TEXT_SIZE])
{
    /* The fewest significant digits (15 to 17) that read back the same. */
    int n = 0;
    for (int precision = 15; precision <= 17; precision++) {
        n = snprintf(out, CRM_REAL_TEXT_SIZE, "%.*g", precision, v);
        if (strtod(out, NULL) == v)
            break;
    }
    return n > 0 ? (size_t)n : 0;
}

void crm_jbuf_real(crm_jbuf *b, double v)
{
    before_value(b);
    if (!isfinite(v)) { /* JSON has no such numbers */
        put(b, "null", 4);
        return;
    }
    char digits[CRM_REAL_TEXT_SIZE];
    size_t n = crm_format_real(v, digits);
    put(b, digits, n);
    if (strpbrk(digits, ".eE") == NULL)
        put(b, ".0", 2); /* still a real when read back */
}

void crm_jbuf_bool(crm_jbuf *b, bool v)
{
    before_value(b);
    if (v)
        put(b, "true", 4);
    else
        put(b, "false", 5);
}

void crm_jbuf_null(crm_jbuf *b)
{
    before_value(b);
    put(b, "null", 4);
}

void crm_jbuf_raw(crm_jbuf *b, const char *json, size_t len)
{
    before_value(b);
    put(b, json, len);
}

/* Reads exactly n digits at *p (advancing it) into *v. */
static bool digits(const char **p, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return false;
        x = x * 10 + (**p - '0');
    }
    *v = x;
    return true;
}

bool crm_parse_pg_timestamp(const char *text, long long *epoch_us)
{
    const char *p = text;
    long long year = 0;
    int ndigits = 0;
    for (; *p >= '0' && *p <= '9' && ndigits < 9; p++, ndigits++)
        year = year * 10 + (*p - '0');
    int month, day, hour, minute, second;
    if (ndigits < 4 || *p++ != '-' || !digits(&p, 2, &month) || *p++ != '-' ||
        !digits(&p, 2, &day) || *p++ != ' ' || !digits(&p, 2, &hour) || *p++ != ':' ||
        !digits(&p, 2, &minute) || *p++ != ':' || !digits(&p, 2, &second))
        return false;
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
        return false;
    long long us = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 6)
                us = us * 10 + (*p - '0');
        if (n == 0)
            return false;
        for (; n < 6; n++)
            us *= 10;
    }
    /* The offset: +HH, +HH:MM or +HH:MM:SS (or -). */
    if (*p != '+' && *p != '-')
        return false;
    int sign = *p++ == '-' ? -1 : 1, oh, om = 0, os = 0;
    if (!digits(&p, 2, &oh))
        return false;
    if (*p == ':' && (p++, !digits(&p, 2, &om)))
        return false;
    if (*p == ':' && (p++, !digits(&p, 2, &os)))
        return false;
    if (*p != '\0')
        return false;
    long long secs = crm_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 +
                     second - sign * (oh * 3600 + om * 60 + os);
    /* PostgreSQL prints years up to 294276, but microseconds since 1970 in
     * a long long end in 294247 (and text may hold nine digits of year). */
    long long whole;
    return !__builtin_mul_overflow(secs, 1000000LL, &whole) &&
           !__builtin_add_overflow(whole, us, epoch_us);
}

void crm_jbuf_pg_timestamp(crm_jbuf *b, const char *text)
{
    long long us;
    if (!crm_parse_pg_timestamp(text, &us)) {
        crm_jbuf_null(b);
        return;
    }
    long long ms = us / 1000 - (us % 1000 < 0);
    crm_jbuf_timestamp(b, ms);
}

static char *two_digits(char *out, int v)
{
    out[0] = (char)('0' + v / 10);
    out[1] = (char)('0' + v % 10);
    return out + 2;
}

size_t crm_format_timestamp(long long epoch_ms, char *out)
{
    long long days = epoch_ms / 86400000, rest = epoch_ms % 86400000;
    if (rest < 0) {
        rest += 86400000;
        days--;
    }
    long long year;
    int month, day;
    crm_civil_from_days(days, &year, &month, &day);
    int ms = (int)(rest % 1000), secs = (int)(rest / 1000);
    char *p = out;
    if (year >= 0 && year <= 9999) {
        *p++ = (char)('0' + year / 1000);
        *p++ = (char)('0' + year / 100 % 10);
        *p++ = (char)('0' + year / 10 % 10);
        *p++ = (char)('0' + year % 10);
    } else {
        p += snprintf(p, 24, "%lld", year);
    }
    *p++ = '-';
    p = two_digits(p, month);
    *p++ = '-';
    p = two_digits(p, day);
    *p++ = 'T';
    p = two_digits(p, secs / 3600);
    *p++ = ':';
    p = two_digits(p, secs / 60 % 60);
    *p++ = ':';
    p = two_digits(p, secs % 60);
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    p = two_digits(p, ms % 100);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}

void crm_jbuf_timestamp(crm_jbuf *b, long long epoch_ms)
{
    char text[48];
    size_t n = crm_format_timestamp(epoch_ms, text);
    crm_jbuf_string(b, text, n);
}

void crm_jbuf_json(crm_jbuf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *member;
        crm_jbuf_begin_object(b);
        json_object_foreach((json_t *)v, key, member)
        {
            crm_jbuf_key(b, key);
            crm_jbuf_json(b, member);
        }
        crm_jbuf_end_object(b);
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        crm_jbuf_begin_array(b);
        json_array_foreach(v, i, item) crm_jbuf_json(b, item);
        crm_jbuf_end_array(b);
        break;
    }
    case JSON_STRING:
        crm_jbuf_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        crm_jbuf_int(b, (long long)json_integer_value(v));
        break;
    case JSON_REAL:
        crm_jbuf_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        crm_jbuf_bool(b, true);
        break;
    case JSON_FALSE:
        crm_jbuf_bool(b, false);
        break;
    case JSON_NULL:
        crm_jbuf_null(b);
        break;
    }
}

char *crm_json_text(const json_t *v, size_t *len)
{
    if (v == NULL)
        return NULL;
    crm_jbuf b;
    crm_jbuf_init(&b);
    crm_jbuf_json(&b, v);
    return crm_jbuf_take(&b, len);
}

bool crm_json_fwrite(FILE *out, const json_t *v)
{
    size_t len = 0;
    char *text = crm_json_text(v, &len);
    bool ok = text != NULL && fwrite(text, 1, len, out) == len;
    free(text);
    return ok;
}

/*
 * segments/decimal.c — exact comparison and addition of decimal numbers
 * written as text, and PostgreSQL's order of doubles, so that the in-process
 * evaluator compares numbers exactly as the compiled SQL does: numeric
 * columns and touchpoint sums as numeric, double precision as float8.
 *
 * A number is read as a view of its text (no copy): sign, the digits before
 * and after the point, and a decimal exponent.
 */
#include "segments/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Digits past this many, an exponent included, are not summed (the sum
 * reports running out of memory instead of allocating without end). */
#define SUM_MAX_DIGITS (1L << 20)
#define EXP_LIMIT 100000000L /* an exponent is saturated here */

typedef enum { DEC_FINITE, DEC_POS_INF, DEC_NEG_INF, DEC_NAN } dec_special;

typedef struct dec_view {
    dec_special special;
    bool neg;
    const char *ip, *fp; /* the digits before and after the point */
    size_t ilen, flen;
    long exp;
} dec_view;

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t count_digits(const char *s)
{
    size_t n = 0;
    while (is_digit(s[n]))
        n++;
    return n;
}

/* Reads s into v; false (v a NaN) when s is not a number. */
static bool dec_parse(const char *s, dec_view *v)
{
    memset(v, 0, sizeof *v);
    v->special = DEC_NAN;
    if (s == NULL)
        return false;
    if (strcmp(s, "NaN") == 0)
        return true;
    if (strcmp(s, "Infinity") == 0 || strcmp(s, "+Infinity") == 0) {
        v->special = DEC_POS_INF;
        return true;
    }
    if (strcmp(s, "-Infinity") == 0) {
        v->special = DEC_NEG_INF;
        return true;
    }
    const char *p = s;
    bool neg = false;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    const char *ip = p;
    size_t ilen = count_digits(p);
    p += ilen;
    const char *fp = p;
    size_t flen = 0;
    if (*p == '.') {
        fp = ++p;
        flen = count_digits(p);
        p += flen;
    }
    if (ilen + flen == 0)
        return false;
    long exp = 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        bool eneg = false;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        if (!is_digit(*p))
            return false;
        while (is_digit(*p)) {
            if (exp < EXP_LIMIT)
                exp = exp * 10 + (*p - '0');
            p++;
        }
        exp = eneg ? -exp : exp;
    }
    if (*p != '\0')
        return false;
    *v = (dec_view){DEC_FINITE, neg, ip, fp, ilen, flen, exp};
    return true;
}

/* The i-th digit of the integer and fraction digits written one after the
 * other. */
static int dec_digit(const dec_view *v, size_t i)
{
    return i < v->ilen ? v->ip[i] - '0' : v->fp[i - v->ilen] - '0';
}

/* The index of the first non-zero digit, or ilen + flen when v is zero. */
static size_t dec_first(const dec_view *v)
{
    size_t n = v->ilen + v->flen, i = 0;
    while (i < n && dec_digit(v, i) == 0)
        i++;
    return i;
}

/* Compares |a| and |b|, both finite and non-zero: the value is
 * 0.d1 d2 ... x 10^e with d1 the first non-zero digit. */
static int dec_cmp_magnitude(const dec_view *a, const dec_view *b)
{
    size_t fa = dec_first(a), fb = dec_first(b);
    long ea = (long)a->ilen - (long)fa + a->exp, eb = (long)b->ilen - (long)fb + b->exp;
    if (ea != eb)
        return ea < eb ? -1 : 1;
    size_t na = a->ilen + a->flen, nb = b->ilen + b->flen;
    for (size_t i = fa, j = fb; i < na || j < nb; i++, j++) {
        int da = i < na ? dec_digit(a, i) : 0, db = j < nb ? dec_digit(b, j) : 0;
        if (da != db)
            return da < db ? -1 : 1;
    }
    return 0;
}

/* The order of the special values: -Infinity, finite, Infinity, NaN. */
static int special_rank(dec_special s)
{
    return s == DEC_NEG_INF ? 0 : s == DEC_FINITE ? 1 : s == DEC_POS_INF ? 2 : 3;
}

int rule_dec_cmp(const char *a, const char *b)
{
    dec_view va, vb;
    dec_parse(a, &va);
    dec_parse(b, &vb);
    int ra = special_rank(va.special), rb = special_rank(vb.special);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    if (va.special != DEC_FINITE)
        return 0;
    bool za = dec_first(&va) == va.ilen + va.flen, zb = dec_first(&vb) == vb.ilen + vb.flen;
    int sa = za ? 0 : va.neg ? -1 : 1, sb = zb ? 0 : vb.neg ? -1 : 1;
    if (sa != sb)
        return sa < sb ? -1 : 1;
    if (sa == 0)
        return 0;
    int m = dec_cmp_magnitude(&va, &vb);
    return sa > 0 ? m : -m;
}

int rule_float_cmp(double a, double b)
{
    if (isnan(a))
        return isnan(b) ? 0 : 1;
    if (isnan(b))
        return -1;
    return a < b ? -1 : a > b ? 1 : 0;
}

/* ---- sums ------------------------------------------------------------------ */

/* Digits of a magnitude, least significant first: digit k stands for
 * 10^(k - scale). */
typedef struct dec_acc {
    unsigned char *d;
    long width, scale;
} dec_acc;

/* Adds |v| (finite) into acc, whose width has room for it and the carry. */
static void acc_add(dec_acc *acc, const dec_view *v)
{
    size_t n = v->ilen + v->flen;
    for (size_t j = 0; j < n; j++) {
        int digit = dec_digit(v, j);
        if (digit == 0)
            continue;
        long k = (long)v->ilen - 1 - (long)j + v->exp + acc->scale;
        int carry = digit;
        while (carry > 0 && k < acc->width) {
            int sum = acc->d[k] + carry;
            acc->d[k] = (unsigned char)(sum % 10);
            carry = sum / 10;
            k++;
        }
    }
}

/* -1, 0 or 1 as |a| is below, equal to or above |b| (same width). */
static int acc_cmp(const dec_acc *a, const dec_acc *b)
{
    for (long k = a->width - 1; k >= 0; k--)
        if (a->d[k] != b->d[k])
            return a->d[k] < b->d[k] ? -1 : 1;
    return 0;
}

/* a -= b, with |a| >= |b|. */
static void acc_sub(dec_acc *a, const dec_acc *b)
{
    int borrow = 0;
    for (long k = 0; k < a->width; k++) {
        int d = a->d[k] - b->d[k] - borrow;
        borrow = d < 0;
        a->d[k] = (unsigned char)(d < 0 ? d + 10 : d);
    }
}

/* The text of acc with its sign: digits from the highest non-zero one,
 * then the fraction without trailing zeros. */
static char *acc_text(const dec_acc *acc, bool neg)
{
    char *out = malloc((size_t)acc->width + 4);
    if (out == NULL)
        return NULL;
    long top = acc->width - 1;
    while (top > acc->scale && acc->d[top] == 0)
        top--;
    if (top < acc->scale) /* no integer digit at all: scale 0 and zero width */
        top = acc->scale;
    long low = 0;
    while (low < acc->scale && acc->d[low] == 0)
        low++;
    char *p = out;
    if (neg)
        *p++ = '-';
    for (long k = top; k >= acc->scale; k--)
        *p++ = (char)('0' + (k < acc->width ? acc->d[k] : 0));
    if (low < acc->scale) {
        *p++ = '.';
        for (long k = acc->scale - 1; k >= low; k--)
            *p++ = (char)('0' + acc->d[k]);
    }
    *p = '\0';
    return out;
}

/* The sum when a term is not finite, as numeric adds them. */
static char *special_sum(bool nan, bool pos_inf, bool neg_inf)
{
    const char *s = nan || (pos_inf && neg_inf) ? "NaN" : pos_inf ? "Infinity" : "-Infinity";
    return strdup(s);
}

char *rule_dec_sum(const char *const *terms, int n)
{
    bool nan = false, pos_inf = false, neg_inf = false;
    long scale = 0, int_digits = 1;
    for (int i = 0; i < n; i++) {
        dec_view v;
        if (terms[i] == NULL)
            continue;
        dec_parse(terms[i], &v);
        nan |= v.special == DEC_NAN;
        pos_inf |= v.special == DEC_POS_INF;
        neg_inf |= v.special == DEC_NEG_INF;
        if (v.special != DEC_FINITE)
            continue;
        long s = (long)v.flen - v.exp, d = (long)v.ilen + v.exp;
        if (s > scale)
            scale = s;
        if (d > int_digits)
            int_digits = d;
    }
    if (nan || pos_inf || neg_inf)
        return special_sum(nan, pos_inf, neg_inf);
    if (scale > SUM_MAX_DIGITS || int_digits > SUM_MAX_DIGITS)
        return NULL;
    long width = scale + int_digits + 12; /* room for the carries of 10^11 terms */
    dec_acc pos = {calloc((size_t)width, 1), width, scale};
    dec_acc neg = {calloc((size_t)width, 1), width, scale};
    char *out = NULL;
    if (pos.d != NULL && neg.d != NULL) {
        for (int i = 0; i < n; i++) {
            dec_view v;
            if (terms[i] == NULL || !dec_parse(terms[i], &v) || v.special != DEC_FINITE)
                continue;
            acc_add(v.neg ? &neg : &pos, &v);
        }
        if (acc_cmp(&pos, &neg) >= 0) {
            acc_sub(&pos, &neg);
            out = acc_text(&pos, false);
        } else {
            acc_sub(&neg, &pos);
            out = acc_text(&neg, true);
        }
    }
    free(pos.d);
    free(neg.d);
    return out;
}

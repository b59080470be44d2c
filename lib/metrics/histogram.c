/*
 * metrics/histogram.c — the numerics of the base's distributions, apart
 * from SQL so that each can be tested alone: a histogram's edges (automatic,
 * given as a count, or given by the client), the bin a value falls in, and
 * a percentile rank read off the stored quantiles.
 *
 * Edges follow numpy's histogram exactly where numpy has an answer (the
 * unit tests compare with it): equal bins over [min, max] are
 * edge i = i * ((max - min) / k) + min with the last edge max itself; every
 * bin is [edge i, edge i+1) but the last, which holds max; one value
 * repeated makes the range [v - 0.5, v + 0.5].
 */
#include "metrics/internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void metrics_equal_edges(double lo, double hi, int bins, metrics_edges *out)
{
    if (bins < 1)
        bins = 1;
    if (bins > METRICS_MAX_BINS)
        bins = METRICS_MAX_BINS;
    if (!(hi > lo)) {
        lo -= 0.5;
        hi += 0.5;
    }
    double step = (hi - lo) / bins;
    for (int i = 0; i < bins; i++)
        out->at[i] = (double)i * step + lo;
    out->at[bins] = hi;
    out->count = bins + 1;
    out->bin_width = step;
}

void metrics_auto_edges(long long n, double iqr, double lo, double hi, metrics_edges *out)
{
    out->fd_width = NAN;
    out->bin_width = NAN;
    if (n <= 0) {
        out->count = 0;
        out->method = "none";
        return;
    }
    if (!(hi > lo)) {
        out->method = "single";
        metrics_equal_edges(lo, hi, 1, out);
        return;
    }
    double bins;
    if (iqr > 0) {
        out->method = "freedman_diaconis";
        out->fd_width = 2.0 * iqr * pow((double)n, -1.0 / 3.0);
        bins = ceil((hi - lo) / out->fd_width);
    } else {
        /* Half the values or more are one value: FD's width is 0. */
        out->method = "sturges";
        bins = ceil(log2((double)n)) + 1;
    }
    /* Compared as a double: a tiny width makes a count no int holds. */
    int k = !(bins >= 1) ? 1 : bins > METRICS_MAX_BINS ? METRICS_MAX_BINS : (int)bins;
    metrics_equal_edges(lo, hi, k, out);
}

int metrics_bin_of(const metrics_edges *e, double v)
{
    if (e->count < 2 || !(v >= e->at[0]) || !(v <= e->at[e->count - 1]))
        return -1;
    int lo = 0, hi = e->count - 1; /* e->at[lo] <= v < e->at[hi], or v is the last edge */
    if (v == e->at[hi])
        return hi - 1;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (e->at[mid] <= v)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* One number as the grammar of `edges` has it: an optional sign, digits
 * with an optional fraction, an optional exponent. strtod alone would also
 * take "inf", "nan", hexadecimal and leading blanks. */
static bool decimal_number(const char *s, size_t len)
{
    size_t i = 0, digits = 0;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        i++;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < len && s[i] == '.')
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    if (digits == 0)
        return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t exp = 0;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            exp++;
        if (exp == 0)
            return false;
    }
    return i == len;
}

bool metrics_parse_edges(const char *text, metrics_edges *out, const char **why)
{
    out->count = 0;
    out->method = "edges";
    out->fd_width = out->bin_width = NAN;
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        if (out->count == METRICS_MAX_EDGES) {
            *why = "at most 201 edges (200 bins)";
            return false;
        }
        char number[64];
        if (!decimal_number(p, len) || len >= sizeof number) {
            *why = "must be numbers separated by commas";
            return false;
        }
        memcpy(number, p, len);
        number[len] = '\0';
        errno = 0;
        double v = strtod(number, NULL);
        if (!isfinite(v)) {
            *why = "every edge must be a finite number";
            return false;
        }
        if (out->count > 0 && !(v > out->at[out->count - 1])) {
            *why = "the edges must be strictly ascending";
            return false;
        }
        out->at[out->count++] = v;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    if (out->count < 2) {
        *why = "at least 2 edges (one bin)";
        return false;
    }
    return true;
}

/* The first k in [0, n) with q[k] >= v (n when none): q ascending. */
static int first_at_or_above(const double *q, int n, double v)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (q[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The first k in [0, n) with q[k] > v (n when none). */
static int first_above(const double *q, int n, double v)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (q[mid] <= v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The percentile function P -> value is linear between the stored points
 * q[k] at P = k / (nq - 1); its inverse at v is read off them. */
double metrics_percentile_rank(const double *q, int nq, double v)
{
    if (nq < 2 || isnan(v))
        return NAN;
    if (v < q[0])
        return 0;
    if (v > q[nq - 1])
        return 100;
    double scale = 100.0 / (nq - 1);
    int first = first_at_or_above(q, nq, v); /* < nq, as v <= q[nq - 1] */
    if (q[first] > v) /* strictly between two points (first > 0, as v >= q[0]) */
        return (first - 1 + (v - q[first - 1]) / (q[first] - q[first - 1])) * scale;
    int last = first_above(q, nq, v) - 1;
    /* v is the value of the whole stretch [first, last]: its middle. */
    return (first + last) / 2.0 * scale;
}

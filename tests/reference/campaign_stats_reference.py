#!/usr/bin/env python3
"""campaign_stats_reference.py — reference values of a campaign's result
statistics for tests/unit/test_campaign_stats.c, computed with SciPy and
NumPy from the formulas as published (not from lib/campaigns/stats.c):

  the Wald interval of a difference of proportions;
  Wilson (1927) score limits of a proportion, and Newcombe (1998),
  "Interval estimation for the difference between independent
  proportions", Statistics in Medicine 17, method 10 (hybrid score);
  the pooled two-proportion z-test;
  the delta-method interval of the log of a ratio of proportions;
  the Welch (unpooled) normal interval of a difference of means;
  Pearson's chi-square goodness of fit of the split (scipy.stats.chisquare).

Reads a JSON list of cases from stdin, writes a JSON list of results (same
order) to stdout. A case is
  {"n_t", "x_t", "sum_t", "sumsq_t", "n_c", "x_c", "sum_c", "sumsq_c",
   "share", "confidence"}
and its result has the members
  p_t p_c d wald_low wald_high newcombe_low newcombe_high z p_value
  lift lift_low lift_high m_t m_c v_t v_c rev_d rev_low rev_high
  observed_share chi_square srm_p_value mismatch
each null where the figure is undefined (the rules of
lib/campaigns/stats.h). Needs python3-scipy (Debian).
"""
import json
import math
import sys

import numpy as np
from scipy.stats import chisquare, norm


def wilson_limits(x, n, z):
    """Wilson's score interval for x successes out of n: the P with
    (x/n - P)^2 = z^2 P (1 - P) / n, the roots of the quadratic
    a P^2 + b P + c = 0 with a = n + z^2, b = -(2x + z^2), c = x^2 / n.
    Its discriminant b^2 - 4ac simplifies to z^2 (4 x (n - x) / n + z^2)
    (written so, it does not cancel at x = n), and the roots are taken as
    q / a and c / q with q = (-b + sqrt(disc)) / 2, so that neither is a
    difference of nearly equal numbers."""
    a = n + z * z
    b = -(2 * x + z * z)
    c = x * x / n
    disc = z * z * (4 * x * (n - x) / n + z * z)
    q = (-b + math.sqrt(disc)) / 2
    high = q / a
    low = c / q
    return max(low, 0.0), min(high, 1.0)


def sample_variance(n, total, total_sq):
    """The n-1 variance from a sum and a sum of squares, in extended
    precision (longdouble) and never negative."""
    n = np.longdouble(n)
    total = np.longdouble(total)
    total_sq = np.longdouble(total_sq)
    v = (total_sq - total * total / n) / (n - 1)
    return float(max(v, np.longdouble(0)))


def figures(case):
    n_t, x_t = case["n_t"], case["x_t"]
    n_c, x_c = case["n_c"], case["x_c"]
    share = case["share"]
    confidence = case["confidence"]
    alpha = 1 - confidence
    z = float(norm.ppf(1 - alpha / 2))
    r = dict.fromkeys(
        "p_t p_c d wald_low wald_high newcombe_low newcombe_high z p_value "
        "lift lift_low lift_high m_t m_c v_t v_c rev_d rev_low rev_high "
        "observed_share chi_square srm_p_value mismatch".split())

    if n_t > 0:
        r["p_t"] = x_t / n_t
        r["m_t"] = case["sum_t"] / n_t
    if n_c > 0:
        r["p_c"] = x_c / n_c
        r["m_c"] = case["sum_c"] / n_c
    if n_t > 1:
        r["v_t"] = sample_variance(n_t, case["sum_t"], case["sumsq_t"])
    if n_c > 1:
        r["v_c"] = sample_variance(n_c, case["sum_c"], case["sumsq_c"])

    if n_t > 0 and n_c > 0:
        p_t, p_c = r["p_t"], r["p_c"]
        d = p_t - p_c
        r["d"] = d
        half = z * math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
        r["wald_low"], r["wald_high"] = d - half, d + half
        l_t, u_t = wilson_limits(x_t, n_t, z)
        l_c, u_c = wilson_limits(x_c, n_c, z)
        r["newcombe_low"] = d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2)
        r["newcombe_high"] = d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)

        pooled = (x_t + x_c) / (n_t + n_c)
        if 0 < pooled < 1:
            stat = d / math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
            r["z"] = stat
            r["p_value"] = float(2 * norm.sf(abs(stat)))

        if x_c > 0:
            r["lift"] = p_t / p_c - 1
            if x_t > 0:
                se = math.sqrt(1 / x_t - 1 / n_t + 1 / x_c - 1 / n_c)
                log_ratio = math.log(x_t) - math.log(n_t) - math.log(x_c) + math.log(n_c)
                r["lift_low"] = math.exp(log_ratio - z * se) - 1
                r["lift_high"] = math.exp(log_ratio + z * se) - 1

        r["rev_d"] = r["m_t"] - r["m_c"]
        if n_t > 1 and n_c > 1:
            se = math.sqrt(r["v_t"] / n_t + r["v_c"] / n_c)
            r["rev_low"] = r["rev_d"] - z * se
            r["rev_high"] = r["rev_d"] + z * se

    total = n_t + n_c
    if total > 0:
        r["observed_share"] = n_c / total
        if share > 0:
            result = chisquare([n_c, n_t], f_exp=[share * total, (1 - share) * total])
            r["chi_square"] = float(result.statistic)
            r["srm_p_value"] = float(result.pvalue)
            r["mismatch"] = bool(result.pvalue < 0.001)
    return r


def main():
    cases = json.load(sys.stdin)
    json.dump([figures(c) for c in cases], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

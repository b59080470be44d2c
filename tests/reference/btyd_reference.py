#!/usr/bin/env python3
"""btyd_reference.py — reference values of the BG/NBD and Gamma-Gamma models
for tests/unit/test_btyd.c, computed with SciPy straight from the papers'
equations (not from lib/metrics/btyd.c):

  Fader, Hardie & Lee (2005), "Counting your customers the easy way: an
  alternative to the Pareto/NBD model", Marketing Science 24(2):
  eq. (6) the likelihood, (9) E[X(t)], (10) E[Y(t) | x, t_x, T];
  P(alive) from Fader, Hardie & Lee, "Computing P(alive) using the BG/NBD
  model" (note 021, brucehardie.com).
  Fader & Hardie (2013), "The Gamma-Gamma model of monetary value" (note 025):
  eq. (3) the marginal density of the mean spend, and the conditional
  expectation (weighted average of the population mean and the observed
  mean).

Reads a JSON list of cases from stdin, writes a JSON list of results (same
order) to stdout. A case is one of
  {"model": "bgnbd", "r", "alpha", "a", "b", "x", "t_x", "T", "t"}
      -> {"loglik", "p_alive", "expected", "unconditional"}
  {"model": "gg", "p", "q", "gamma", "x", "m"}
      -> {"loglik" (x > 0 only), "expected_spend"}
  {"model": "clv", "r", "alpha", "a", "b", "p", "q", "gamma", "x", "t_x", "T",
   "m", "horizon", "discount"}
      -> {"clv"}
Needs python3-scipy (Debian).
"""
import json
import sys

import numpy as np
from scipy.special import expit, gammaln, hyp2f1, logsumexp


def scaled_hyp2f1(a, b, c, z, ln_scale):
    """exp(ln_scale) 2F1(a, b; c; z) for 0 <= z < 1, without overflowing on
    the way: 2F1 can exceed a double near z = 1 while the product does not;
    then Euler's transformation (Abramowitz & Stegun 15.3.3)
    2F1(a, b; c; z) = (1 - z)^(c - a - b) 2F1(c - a, c - b; c; z) is used.
    2F1 is negative for some c < 0, so its sign is kept apart."""
    value = hyp2f1(a, b, c, z)
    if not np.isfinite(value):
        ln_scale += (c - a - b) * np.log1p(-z)
        value = hyp2f1(c - a, c - b, c, z)
    if value == 0:
        return 0.0
    return np.sign(value) * np.exp(ln_scale + np.log(abs(value)))


def bgnbd_loglik(r, alpha, a, b, x, t_x, T):
    """FHL 2005 eq. (6): L = A1 A2 (A3 + [x > 0] A4)."""
    ln_a1 = gammaln(r + x) + r * np.log(alpha) - gammaln(r)
    ln_a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    ln_a3 = -(r + x) * np.log(alpha + T)
    if x == 0:
        return ln_a1 + ln_a2 + ln_a3
    ln_a4 = np.log(a) - np.log(b + x - 1) - (r + x) * np.log(alpha + t_x)
    return ln_a1 + ln_a2 + logsumexp([ln_a3, ln_a4])


def bgnbd_p_alive(r, alpha, a, b, x, t_x, T):
    """Note 021: 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)),
    the odds taken in logs so that a large x cannot overflow them."""
    if x == 0:
        return 1.0
    ln_odds = np.log(a) - np.log(b + x - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return expit(-ln_odds)


def bgnbd_expected(r, alpha, a, b, x, t_x, T, t):
    """FHL 2005 eq. (10)."""
    z = t / (alpha + T + t)
    ln_front = (r + x) * np.log((alpha + T) / (alpha + T + t))
    bracket = 1.0 - scaled_hyp2f1(r + x, b + x, a + b + x - 1, z, ln_front)
    numerator = (a + b + x - 1) / (a - 1) * bracket
    return numerator * bgnbd_p_alive(r, alpha, a, b, x, t_x, T)


def bgnbd_unconditional(r, alpha, a, b, t):
    """FHL 2005 eq. (9)."""
    ln_front = r * np.log(alpha / (alpha + t))
    return (a + b - 1) / (a - 1) * (1.0 - scaled_hyp2f1(r, b, a + b - 1, t / (alpha + t), ln_front))


def gg_loglik(p, q, gamma, x, m):
    """Fader & Hardie 2013 eq. (3): the density of the mean spend m of x
    transactions, Gamma(px+q) / (Gamma(px) Gamma(q)) gamma^q x^(px)
    m^(px-1) / (gamma + x m)^(px+q)."""
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma) + px * np.log(x)
            + (px - 1) * np.log(m) - (px + q) * np.log(gamma + x * m))


def gg_expected_spend(p, q, gamma, x, m):
    """The weighted average of the population mean p gamma / (q - 1) and the
    customer's mean m, with weights (q - 1) and px over px + q - 1."""
    population_mean = p * gamma / (q - 1)
    if x == 0:
        return population_mean
    weight_own = p * x / (p * x + q - 1)
    return (1 - weight_own) * population_mean + weight_own * m


def clv(c):
    """The sum over 30-day periods (the last one ending at the horizon) of
    the period's expected purchases (differences of eq. (10)) times the
    expected spend, discounted by (1 + d)^(end / 365)."""
    spend = gg_expected_spend(c["p"], c["q"], c["gamma"], c["x"], c["m"])
    bg = (c["r"], c["alpha"], c["a"], c["b"], c["x"], c["t_x"], c["T"])
    total, before, end = 0.0, 0.0, 0.0
    while end < c["horizon"]:
        end = min(end + 30.0, c["horizon"])
        upto = bgnbd_expected(*bg, end)
        total += (upto - before) * spend / (1 + c["discount"]) ** (end / 365.0)
        before = upto
    return total


def evaluate(c):
    if c["model"] == "bgnbd":
        bg = (c["r"], c["alpha"], c["a"], c["b"])
        history = (c["x"], c["t_x"], c["T"])
        return {
            "loglik": float(bgnbd_loglik(*bg, *history)),
            "p_alive": float(bgnbd_p_alive(*bg, *history)),
            "expected": float(bgnbd_expected(*bg, *history, c["t"])),
            "unconditional": float(bgnbd_unconditional(*bg, c["t"])),
        }
    if c["model"] == "gg":
        gg = (c["p"], c["q"], c["gamma"], c["x"], c["m"])
        result = {"expected_spend": float(gg_expected_spend(*gg))}
        if c["x"] > 0:
            result["loglik"] = float(gg_loglik(*gg))
        return result
    if c["model"] == "clv":
        return {"clv": float(clv(c))}
    raise ValueError("unknown model %r" % c["model"])


def main():
    cases = json.load(sys.stdin)
    json.dump([evaluate(c) for c in cases], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

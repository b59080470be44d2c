#!/usr/bin/env python3
"""distribution_reference.py — reference values of a measure's distribution
for tests/unit/test_metrics_base.c, computed with numpy (not from
lib/metrics/):

  mean, population standard deviation (np.std, ddof=0), min, max, median,
  the percentiles p1 ... p99 (np.percentile, linear interpolation: numpy's
  default and PostgreSQL's percentile_cont), the shares within 0.5 and 1
  standard deviation of the mean (inclusive), the Freedman-Diaconis width
  2 IQR n^(-1/3) and numpy's histogram with bins='fd' (edges and counts),
  and the exact percentile rank of given values: the P (in per cent) at
  which the linear percentile function reaches the value, the middle of
  the stretch where it equals it (sorted positions a..b of the value:
  100 (a + b) / 2 / (n - 1)).

Reads {"values": [...], "ranks_of": [...]} from stdin, writes one JSON
object to stdout. Needs python3-numpy (Debian).
"""
import json
import sys

import numpy as np


def main():
    request = json.load(sys.stdin)
    x = np.asarray(request["values"], dtype=float)
    n = x.size
    mean = float(np.mean(x))
    sd = float(np.std(x))
    levels = [1, 5, 10, 25, 50, 75, 90, 95, 99]
    pct = np.percentile(x, levels)
    q75, q25 = np.percentile(x, [75, 25])
    counts, edges = np.histogram(x, bins="fd")
    ordered = np.sort(x)
    ranks = []
    for v in request.get("ranks_of", []):
        a = int(np.searchsorted(ordered, v, side="left"))
        b = int(np.searchsorted(ordered, v, side="right")) - 1
        ranks.append(100.0 * (a + b) / 2.0 / (n - 1))
    answer = {
        "n": n,
        "mean": mean,
        "sd": sd,
        "min": float(np.min(x)),
        "max": float(np.max(x)),
        "median": float(np.median(x)),
        "percentiles": {f"p{p}": float(v) for p, v in zip(levels, pct)},
        "within_half_sd": float(np.count_nonzero(np.abs(x - mean) <= 0.5 * sd)) / n,
        "within_one_sd": float(np.count_nonzero(np.abs(x - mean) <= sd)) / n,
        "fd_width": float(2.0 * (q75 - q25) * n ** (-1.0 / 3.0)),
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "ranks": ranks,
    }
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()

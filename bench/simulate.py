#!/usr/bin/python3
"""bench/simulate.py — purchase histories drawn from known BG/NBD and
Gamma-Gamma parameters, as COPY text for the touchpoints table.

    bench/simulate.py FIRST_ID COUNT AS_OF_EPOCH_S [SEED]   > purchases.copy
    bench/simulate.py --params                              (the parameters, one line)

Each customer (ids FIRST_ID .. FIRST_ID + COUNT - 1) makes a first purchase
at a uniform time in the two years before AS_OF, then buys at a Poisson rate
lambda ~ Gamma(r, alpha) (per day) until, after any repeat purchase, they
drop out with probability p ~ Beta(a, b) (Fader, Hardie & Lee 2005). Each purchase
spends z ~ Gamma(p_s, nu), nu ~ Gamma(q, gamma) per customer (Gamma-Gamma).
Items: one to three of 500 SKUs, with planted pairs: SKU-1 is bought with
SKU-2 in 60 % of its baskets, SKU-10 with SKU-11 in 40 %, SKU-20 with SKU-21
and SKU-22 in 30 %.

Vectorised over customers: step k draws every still-active customer's k-th
purchase at once. Source 'bench-gen', event ids 'p' + a counter.
"""
import sys

import numpy as np

BG = {"r": 0.25, "alpha": 15.0, "a": 0.8, "b": 2.5}
GG = {"p": 6.0, "q": 4.0, "gamma": 15.0}
DAY = 86400.0
SPAN_DAYS = 730.0
PAIRS = [(1, [2], 0.6), (10, [11], 0.4), (20, [21, 22], 0.3)]


def items_json(rng, n):
    """n baskets as JSON arrays of {sku, quantity, unit_price}."""
    first = rng.integers(0, 500, n)
    extra = rng.integers(0, 3, n)  # 0..2 more items
    out = []
    for i in range(n):
        skus = [int(first[i])]
        for base, partners, share in PAIRS:
            if skus[0] == base and rng.random() < share:
                skus.extend(partners)
        for _ in range(int(extra[i])):
            skus.append(int(rng.integers(0, 500)))
        out.append("[" + ", ".join('{"sku": "SKU-%d", "quantity": 1, "unit_price": 1}' % s
                                   for s in dict.fromkeys(skus)) + "]")
    return out


def main():
    if sys.argv[1:] == ["--params"]:
        print("r=%g alpha=%g a=%g b=%g; p=%g q=%g gamma=%g" % (BG["r"], BG["alpha"], BG["a"],
              BG["b"], GG["p"], GG["q"], GG["gamma"]))
        return
    first_id, count, as_of = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rng = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) > 4 else 20261203)
    lam = rng.gamma(BG["r"], 1.0 / BG["alpha"], count)
    drop = rng.beta(BG["a"], BG["b"], count)
    nu = rng.gamma(GG["q"], 1.0 / GG["gamma"], count)
    t = as_of / DAY - SPAN_DAYS * rng.random(count)  # the first purchase, in days
    active = np.ones(count, dtype=bool)
    first = np.ones(count, dtype=bool)  # the next purchase is the first
    out = sys.stdout
    event = 0
    while active.any():
        idx = np.nonzero(active)[0]
        spend = np.maximum(np.round(rng.gamma(GG["p"], 1.0 / nu[idx]), 2), 0.01)
        baskets = items_json(rng, len(idx))
        stamps = np.datetime_as_string((t[idx] * DAY * 1e6).astype("datetime64[us]"), unit="us")
        lines = []
        for j, i in enumerate(idx):
            event += 1
            lines.append("%d\tstore\tpurchase\tinbound\t%sZ\tbench-gen\tp%d\t\\N\t%.2f\tEUR\t%s\t{}\n"
                         % (first_id + i, stamps[j], event, spend[j], baskets[j]))
        out.write("".join(lines))
        # After each repeat purchase (not the first: BG/NBD's dropout follows
        # a transaction after time 0), drop out, or buy again after an
        # exponential wait.
        stays = (rng.random(len(idx)) >= drop[idx]) | first[idx]
        first[idx] = False
        t[idx] += rng.exponential(1.0, len(idx)) / lam[idx]
        active[idx] = stays & (t[idx] < as_of / DAY)
    sys.stderr.write("simulated %d purchases\n" % event)


if __name__ == "__main__":
    main()

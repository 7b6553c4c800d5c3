"""The report's statistics, apart from reading files and assembling pages: Wilson intervals for one
accuracy, exact McNemar and a paired bootstrap for two models on the same questions; across seeds, a t
interval of a mean and a bootstrap stratified by seed. Used by the report and its across-seed section
(report_seeds)."""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """95% Wilson score interval: unlike p +- 1.96*stderr it stays inside [0, 1] for small n."""
    if n <= 0:
        return None, None
    p, d = k / n, 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial(b + c, 1/2) tail on the discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


def paired_bootstrap(x: list[int], y: list[int], samples: int, seed: int) -> tuple[float, float]:
    """95% percentile CI of mean(x - y), resampling questions (pairs stay together)."""
    import numpy as np

    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    rng, means = np.random.default_rng(seed), []
    for done in range(0, samples, 256):  # chunks bound memory on large test sets
        idx = rng.integers(0, len(d), size=(min(256, samples - done), len(d)))
        means.append(d[idx].mean(axis=1))
    lo, hi = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(lo), float(hi)


def t_interval(values: list[float]) -> list[float | None]:
    """95% t interval of the mean across seeds; none from a single seed."""
    n = len(values)
    if n < 2:
        return [None, None]
    from scipy.stats import t

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def stratified_bootstrap(strata: list[list[int]], samples: int, seed: int) -> list[float]:
    """95% percentile CI of the mean pair difference, resampling pairs within each stratum (seed)."""
    import numpy as np

    rng, total = np.random.default_rng(seed), sum(len(d) for d in strata)
    sums = np.zeros(samples)
    for d in strata:
        arr = np.asarray(d, dtype=float)
        for done in range(0, samples, 256):  # chunks bound memory on large test sets
            k = min(256, samples - done)
            sums[done : done + k] += arr[rng.integers(0, len(arr), size=(k, len(arr)))].sum(axis=1)
    lo, hi = np.percentile(sums / total, [2.5, 97.5])
    return [float(lo), float(hi)]

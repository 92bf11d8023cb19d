"""Statistics on paired per-query scores, shared by light-set validation, ``compare`` and ``gate``.

Pure functions over numpy arrays (numpy and scipy only, no torch), following docs/stats.md:
paired sign-flip permutation tests, paired bootstrap intervals (percentile or BCa, stratified by task across
tasks), Holm's correction, the minimum detectable effect, TOST equivalence and Kendall's tau. Every threshold
is a parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as _stats

Verdict = Literal["equivalent", "different", "inconclusive"]
IntervalMethod = Literal["bca", "percentile", "studentized"]
INTERVAL_METHODS: tuple[str, ...] = ("bca", "percentile", "studentized")
_BLOCK_ELEMENTS = 4_000_000  # resampled indices held at once (32 MB)


def _diff(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need equal 1-d shapes, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError("paired scores need at least 2 queries")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores contain NaN or infinite values")
    return a - b


def permutation_pvalue(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomisation (sign-flip) test of mean(a - b) = 0."""
    d = _diff(a, b)
    if np.allclose(d, 0.0):
        return 1.0
    result = _stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=n_resamples,
                                     alternative="two-sided", random_state=seed)
    return float(result.pvalue)


def bootstrap_ci(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap (percentile) interval of mean(a - b) over queries."""
    d = _diff(a, b)
    if np.allclose(d, d[0]):
        return float(d[0]), float(d[0])
    result = _stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                              method="percentile", random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def stratified_macro_ci(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, confidence: float = 0.95,
                        n_resamples: int = 10_000, seed: int = 0,
                        method: IntervalMethod = "percentile") -> tuple[float, float, float]:
    """Macro mean over tasks of mean(a - b), with a bootstrap interval that resamples queries within each task.

    ``method``:

    - "percentile": the quantiles of the resampled macro means. On few, skewed per-query differences (most
      queries unchanged, a few moved a lot) it is too narrow on the side the skew points away from;
    - "bca": bias-corrected and accelerated (:func:`bca_levels`), second-order accurate: the same replicates,
      other quantile levels;
    - "studentized": bootstrap-t, each replicate's macro difference divided by its own stratified standard
      error (also second-order accurate; the widest on skewed data with many ties).

    scipy's bootstrap offers BCa and percentile but cannot stratify, hence this loop. Returns
    (estimate, low, high); a "studentized" bound may be infinite when resamples without spread dominate a tail.
    """
    if method not in INTERVAL_METHODS:
        raise ValueError(f"method={method!r}: give one of {', '.join(INTERVAL_METHODS)}")
    if not pairs:
        raise ValueError("no tasks to estimate a macro mean over")
    rng = np.random.default_rng(seed)
    diffs = [_diff(a, b) for a, b in pairs.values()]
    k = len(diffs)
    estimate = float(np.mean([d.mean() for d in diffs]))
    macro = np.zeros(n_resamples)
    var = np.zeros(n_resamples)  # the replicates' squared standard error of the macro mean ("studentized")
    for d in diffs:
        # resampled in row blocks: memory stays bounded at thousands of queries, and the draws (hence the
        # interval) are the same as one (n_resamples x queries) draw
        rows = max(1, _BLOCK_ELEMENTS // d.size)
        for start in range(0, n_resamples, rows):
            stop = min(start + rows, n_resamples)
            x = d[rng.integers(0, d.size, size=(stop - start, d.size))]
            macro[start:stop] += x.mean(axis=1)
            if method == "studentized":
                var[start:stop] += x.var(axis=1, ddof=1) / d.size
    macro /= k
    tail = (1 - confidence) / 2
    if np.ptp(macro) == 0:  # every query of every task has one and the same difference: nothing to estimate
        return estimate, estimate, estimate
    if method == "studentized":
        se = float(np.sqrt(sum(d.var(ddof=1) / d.size for d in diffs))) / k
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (macro - estimate) / (np.sqrt(var) / k)
        t[np.isnan(t)] = 0.0  # a resample without spread that hit the estimate exactly
        # no interpolation: an infinite t (a resample without spread off the estimate) stays in its tail
        t_low, t_high = np.quantile(t, [tail, 1 - tail], method="inverted_cdf")
        return estimate, float(estimate - t_high * se), float(estimate - t_low * se)
    levels = bca_levels(macro, estimate, diffs, tail) if method == "bca" else (tail, 1 - tail)
    low, high = np.quantile(macro, levels)
    return estimate, float(low), float(high)


def bca_levels(replicates: np.ndarray, estimate: float, strata: Sequence[np.ndarray],
               tail: float) -> tuple[float, float]:
    """The quantile levels of a BCa interval for the macro mean of ``strata`` (Efron 1987; Davison & Hinkley 1997, ch. 5).

    Written here because scipy's BCa (``scipy.stats.bootstrap(method="BCa")``) resamples one sample as a whole
    and so cannot keep each task's queries in their task. Bias correction z0: the normal quantile of the share
    of bootstrap replicates below the estimate (ties count half). Acceleration: the skewness of the stratified
    jackknife's influence values (leave one query out, within its task), each task's weighted by 1 / n_t as
    its queries enter the macro mean. On one stratum this is exactly scipy's BCa.
    """
    b = replicates.size
    ties = np.isclose(replicates, estimate, rtol=0.0, atol=1e-12 * max(1.0, abs(estimate)))
    below = (np.sum((replicates < estimate) & ~ties) + 0.5 * np.sum(ties)) / b
    z0 = _stats.norm.ppf(np.clip(below, 0.5 / b, 1 - 0.5 / b))  # all replicates on one side: finite, not inf
    num = den = 0.0
    for d in strata:
        loo = (d.sum() - d) / (d.size - 1)  # the task's mean with each query left out
        u = (d.size - 1) * (loo.mean() - loo) / len(strata)  # jackknife influence on the macro mean
        num += float(np.sum(u**3)) / d.size**3
        den += float(np.sum(u**2)) / d.size**2
    accel = num / (6 * den**1.5) if den > 0 else 0.0
    z = _stats.norm.ppf([tail, 1 - tail])
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = _stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    if not np.isfinite(levels).all() or levels[0] >= levels[1]:  # an absurd acceleration: no correction to trust
        return tail, 1 - tail
    return float(levels[0]), float(levels[1])


def finite_or_none(value: Any) -> Any:  # noqa: ANN401 -- JSON-like data
    """NaN and infinities (nothing to estimate, an unbounded interval) as None, so a report is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def mde(d_sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference a paired test detects: (z_{1-a/2} + z_{power}) * sd / sqrt(n)."""
    return float((_stats.norm.ppf(1 - alpha / 2) + _stats.norm.ppf(power)) * d_sd / np.sqrt(n))


def queries_needed(d_sd: float, effect: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Queries a paired test needs to detect ``effect`` (the MDE formula solved for n)."""
    if effect <= 0:
        raise ValueError("effect must be positive")
    z = _stats.norm.ppf(1 - alpha / 2) + _stats.norm.ppf(power)
    return int(np.ceil((z * d_sd / effect) ** 2))


@dataclass(frozen=True)
class Equivalence:
    """TOST result: the verdict, the 90% (1 - 2 alpha) interval it rests on, and what would decide it."""

    verdict: Verdict
    mean_difference: float
    low: float
    high: float
    margin: float
    p_value: float
    queries_to_decide: int | None


def tost(a: Sequence[float], b: Sequence[float], *, margin: float = 0.01, alpha: float = 0.05,
         n_resamples: int = 10_000, seed: int = 0) -> Equivalence:
    """Two one-sided tests: equivalent when the (1 - 2 alpha) CI of mean(a - b) lies inside [-margin, margin].

    Different when the CI lies entirely outside the margin, or the difference is significant (permutation
    test at ``alpha``) and its estimate exceeds the margin; inconclusive otherwise, with the number of
    queries at which the interval would be narrow enough to decide.
    """
    d = _diff(a, b)
    low, high = bootstrap_ci(a, b, confidence=1 - 2 * alpha, n_resamples=n_resamples, seed=seed)
    p = permutation_pvalue(a, b, n_resamples=n_resamples, seed=seed)
    mean = float(d.mean())
    if -margin < low and high < margin:
        verdict: Verdict = "equivalent"
    elif low > margin or high < -margin or (p < alpha and abs(mean) > margin):
        verdict = "different"
    else:
        verdict = "inconclusive"
    needed = None
    if verdict == "inconclusive":
        # the interval's half-width must shrink below the gap between the estimate and the margin: inside it
        # that shows equivalence, outside it a difference (one-sided z at 1 - alpha, as in the 1 - 2 alpha CI)
        gap = abs(margin - abs(mean))
        sd = float(d.std(ddof=1))
        needed = int(np.ceil((_stats.norm.ppf(1 - alpha) * sd / gap) ** 2)) if gap > 0 and sd > 0 else None
    return Equivalence(verdict, mean, low, high, margin, p, needed)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two systems' scores (the same systems in the same order)."""
    tau = _stats.kendalltau(np.asarray(x, dtype=float), np.asarray(y, dtype=float)).statistic
    return float(tau)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation between two systems' scores."""
    return float(_stats.spearmanr(np.asarray(x, dtype=float), np.asarray(y, dtype=float)).statistic)


def pairwise_permutation_pvalues(scores: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """Two-sided paired sign-flip p-values for every pair of systems (rows) over the same queries (columns).

    The same test as :func:`permutation_pvalue`, for all pairs at once: one matrix of random signs, shared by
    every pair, so a panel of systems costs one matrix product instead of a scipy call per pair (the light
    sweep runs thousands). Returns a symmetric (systems x systems) matrix, 1 on the diagonal.
    """
    scores = np.asarray(scores, dtype=float)
    n_sys, n = scores.shape
    if n < 2 or not np.isfinite(scores).all():
        raise ValueError("pairwise p-values need at least 2 queries and finite scores")
    i, j = np.triu_indices(n_sys, k=1)
    d = scores[i] - scores[j]  # (pairs, queries)
    observed = np.abs(d.mean(axis=1))
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(n_resamples, n))
    null = np.abs(signs @ d.T) / n  # (resamples, pairs)
    tolerance = 1e-12 * np.maximum(1.0, observed)  # scipy's relative tolerance for exact ties
    p = (1 + (null >= observed - tolerance).sum(axis=0)) / (n_resamples + 1)
    p[np.all(np.isclose(d, 0.0), axis=1)] = 1.0  # identical systems: no evidence at all
    out = np.ones((n_sys, n_sys))
    out[i, j] = out[j, i] = np.minimum(p, 1.0)
    return out

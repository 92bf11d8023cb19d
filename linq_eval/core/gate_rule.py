"""The gate's decision rule: non-inferiority of a checkpoint against its baseline (docs/stats.md).

Pure: per-query scores in, a decision out (numpy/scipy through ``stats``; no torch, no mteb). A gate that fails
only on a *significant* drop passes every regression when queries are few; this one asks "can we rule out a
drop larger than delta?" and answers CANNOT DECIDE, with what would decide, when the queries cannot tell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats as _stats

from linq_eval.core.errors import EXIT_CANNOT_DECIDE, EXIT_ERROR, EXIT_FAIL, EXIT_OK
from linq_eval.core.stats import (
    INTERVAL_METHODS,
    IntervalMethod,
    holm,
    mde,
    pairwise_permutation_pvalues,
    stratified_macro_ci,
)

GateVerdict = Literal["PASS", "FAIL", "CANNOT DECIDE"]
# "ERROR" is no verdict of the rule: the gate could not run (bad input, an internal error), see gate_report
EXIT_CODES: dict[str, int] = {"PASS": EXIT_OK, "FAIL": EXIT_FAIL, "CANNOT DECIDE": EXIT_CANNOT_DECIDE,
                              "ERROR": EXIT_ERROR}
METHOD_NAMES = {"bca": "BCa", "percentile": "percentile", "studentized": "studentized"}


@dataclass(frozen=True)
class GateRule:
    """The thresholds of the rule; every one is a parameter (the defaults in docs/stats.md)."""

    delta: float = 0.01  # the largest drop that is tolerated, on the score scale (0.01 = one nDCG point)
    alpha: float = 0.05  # family-wise error of the per-task drop tests (Holm), and 1 - confidence of the CI
    power: float = 0.8  # for the detectable drop reported beside the verdict
    n_resamples: int = 10_000
    seed: int = 0
    # the bootstrap interval: BCa by default, as the percentile interval lets a true 2 x delta drop pass more
    # often than the nominal 2.5% on tens of skewed per-query differences (benchmarks/gate_calibration.py)
    method: IntervalMethod = "bca"

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise ValueError(f"delta={self.delta}: give the tolerated drop on the score scale, e.g. 0.01")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha={self.alpha}: give a significance level such as 0.05")
        if self.method not in INTERVAL_METHODS:
            raise ValueError(f"method={self.method!r}: give one of {', '.join(INTERVAL_METHODS)}")

    def describe(self) -> str:
        conf = round(100 * (1 - self.alpha))
        return (f"PASS when the lower end of the {conf}% {METHOD_NAMES[self.method]} paired-bootstrap CI of the "
                f"macro difference (checkpoint - baseline, queries resampled within each task) is above "
                f"-{self.delta:g} and no task has a Holm-significant (alpha {self.alpha:g}) drop larger than "
                f"{2 * self.delta:g}; FAIL when the upper end is below -{self.delta:g} or some task has such a "
                "drop; CANNOT DECIDE otherwise.")


@dataclass(frozen=True)
class TaskCheck:
    """One task's paired comparison."""

    task: str
    queries: int
    baseline_score: float
    candidate_score: float
    difference: float  # mean of candidate - baseline over the task's queries
    ci_low: float
    ci_high: float
    p_value: float  # two-sided sign-flip permutation test of mean difference 0
    p_holm: float
    mde: float  # the smallest true difference this task's queries detect (alpha, power)
    regression: bool  # a Holm-significant drop larger than 2 x delta: fails the gate on its own
    verdict: GateVerdict  # the task on its own under the same rule (informational: the gate decides on the macro)


@dataclass(frozen=True)
class GateDecision:
    verdict: GateVerdict
    rule: GateRule
    difference: float  # macro average over tasks of the mean paired difference
    ci_low: float
    ci_high: float
    mde: float  # the smallest macro drop these queries detect
    tasks: list[TaskCheck]
    reasons: list[str] = field(default_factory=list)
    queries_to_decide: int | None = None  # total queries (same mix of tasks) at which the CI would decide

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def _task_verdict(low: float, high: float, regression: bool, delta: float) -> GateVerdict:
    if regression or high < -delta:
        return "FAIL"
    return "PASS" if low > -delta else "CANNOT DECIDE"


def _macro_se(diffs: Sequence[np.ndarray]) -> float:
    """Standard error of the macro mean (tasks independent, queries within a task i.i.d.)."""
    var = sum(float(d.var(ddof=1)) / d.size for d in diffs)
    return float(np.sqrt(var) / len(diffs))


def _queries_to_decide(diffs: Sequence[np.ndarray], mean: float, low: float, high: float, delta: float) -> int | None:
    """Total queries, in today's proportions, at which the CI would clear -delta on one side or the other.

    The CI's half-width shrinks as 1/sqrt(n): it must fall below the distance between the estimate and -delta.
    """
    gap = abs(mean + delta)
    half = (high - low) / 2
    if gap == 0 or half == 0 or not np.isfinite(half):
        return None
    factor = (half / gap) ** 2
    return int(np.ceil(factor * sum(d.size for d in diffs)))


def decide(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]], rule: GateRule | None = None) -> GateDecision:
    """Decide from paired per-query scores: ``{task: (candidate scores, baseline scores)}``, same queries in order.

    Missing or non-finite scores cannot be decided on: the verdict is CANNOT DECIDE with the reason, never a pass.
    """
    rule = rule or GateRule()
    reasons: list[str] = []
    clean: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task, (cand, base) in pairs.items():
        c, b = np.asarray(cand, dtype=float), np.asarray(base, dtype=float)
        if c.shape != b.shape or c.ndim != 1:
            reasons.append(f"{task}: the checkpoint and the baseline scored different queries")
        elif c.size < 2:
            reasons.append(f"{task}: fewer than 2 queries")
        elif not (np.isfinite(c).all() and np.isfinite(b).all()):
            bad = int((~np.isfinite(c)).sum() + (~np.isfinite(b)).sum())
            reasons.append(f"{task}: {bad} NaN or infinite per-query scores")
        else:
            clean[task] = (c, b)
    if not pairs:
        reasons.append("no tasks to compare")
    if reasons:
        nan = float("nan")
        return GateDecision("CANNOT DECIDE", rule, nan, nan, nan, nan, [], reasons)

    conf = 1 - rule.alpha
    diffs = [c - b for c, b in clean.values()]
    # the sign-flip test of stats.permutation_pvalue, vectorised (one matrix product): scipy's permutation_test is
    # 15x slower at thousands of queries, which the calibration simulates thousands of times
    pvals = [float(pairwise_permutation_pvalues(np.vstack([c, b]), n_resamples=rule.n_resamples, seed=rule.seed)[0, 1])
             for c, b in clean.values()]
    adjusted = holm(pvals)
    checks = []
    for (task, (c, b)), d, p, p_adj in zip(clean.items(), diffs, pvals, adjusted, strict=True):
        _, low, high = stratified_macro_ci({task: (c, b)}, confidence=conf, n_resamples=rule.n_resamples,
                                           seed=rule.seed, method=rule.method)
        regression = bool(p_adj < rule.alpha and d.mean() < -2 * rule.delta)
        checks.append(TaskCheck(task, int(d.size), float(b.mean()), float(c.mean()), float(d.mean()), low, high,
                                float(p), float(p_adj), mde(float(d.std(ddof=1)), d.size, alpha=rule.alpha,
                                                           power=rule.power),
                                regression, _task_verdict(low, high, regression, rule.delta)))
    mean, low, high = stratified_macro_ci(clean, confidence=conf, n_resamples=rule.n_resamples, seed=rule.seed,
                                          method=rule.method)
    z = _stats.norm.ppf(1 - rule.alpha / 2) + _stats.norm.ppf(rule.power)
    macro_mde = float(z * _macro_se(diffs))
    regressions = [t.task for t in checks if t.regression]
    if regressions or high < -rule.delta:
        verdict: GateVerdict = "FAIL"
        if high < -rule.delta:
            reasons.append(f"the macro difference {mean:+.4f} is below -{rule.delta:g} with {round(100 * conf)}% "
                           f"confidence (CI [{low:+.4f}, {high:+.4f}])")
        reasons += [f"{t.task}: drop {t.difference:+.4f} beyond -{2 * rule.delta:g}, Holm p {t.p_holm:.3g}"
                    for t in checks if t.regression]
    elif low > -rule.delta:
        verdict = "PASS"
        reasons.append(f"a drop larger than {rule.delta:g} is ruled out (CI [{low:+.4f}, {high:+.4f}])")
    else:
        verdict = "CANNOT DECIDE"
        reasons.append(f"the CI [{low:+.4f}, {high:+.4f}] contains -{rule.delta:g}: these queries detect drops of "
                       f"{macro_mde:.4f} or more, not {rule.delta:g}")
    needed = _queries_to_decide(diffs, mean, low, high, rule.delta) if verdict == "CANNOT DECIDE" else None
    return GateDecision(verdict, rule, mean, low, high, macro_mde, checks, reasons, needed)

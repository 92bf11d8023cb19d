"""The statistics module: known answers, cross-checks against scipy, and no torch on import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from linq_eval.core import stats

RNG = np.random.default_rng(0)


def _pair(n: int, shift: float, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    base = RNG.uniform(0, 1, n)
    return np.clip(base + shift + RNG.normal(0, noise, n), 0, 1), base


def test_identical_systems() -> None:
    a = RNG.uniform(0, 1, 40)
    assert stats.permutation_pvalue(a, a) == 1.0
    assert stats.bootstrap_ci(a, a) == (0.0, 0.0)
    assert stats.tost(a, a).verdict == "equivalent"


def test_permutation_agrees_with_paired_t_test() -> None:
    for shift in (0.0, 0.02, 0.1):
        a, b = _pair(200, shift)
        p_perm = stats.permutation_pvalue(a, b, n_resamples=5000)
        p_t = scipy_stats.ttest_rel(a, b).pvalue
        assert (p_perm < 0.05) == (p_t < 0.05), (shift, p_perm, p_t)
        assert abs(p_perm - p_t) < 0.05


def test_bootstrap_ci_covers_the_mean_and_narrows_with_more_queries() -> None:
    a, b = _pair(50, 0.03)
    low, high = stats.bootstrap_ci(a, b)
    assert low < float(np.mean(a - b)) < high
    a2, b2 = _pair(800, 0.03)
    low2, high2 = stats.bootstrap_ci(a2, b2)
    assert high2 - low2 < (high - low) / 2


def test_stratified_macro_ci() -> None:
    pairs = {"t1": _pair(30, 0.05), "t2": _pair(300, 0.0), "t3": _pair(60, -0.02)}
    estimate, low, high = stats.stratified_macro_ci(pairs, n_resamples=4000)
    assert estimate == pytest.approx(np.mean([np.mean(a - b) for a, b in pairs.values()]))
    assert low < estimate < high


def test_holm_known_answer() -> None:
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])


def test_mde_and_queries_needed_are_inverse() -> None:
    assert stats.mde(0.2, 50) == pytest.approx((1.959964 + 0.841621) * 0.2 / np.sqrt(50), rel=1e-5)
    n = stats.queries_needed(0.2, 0.01)
    assert stats.mde(0.2, n) <= 0.01 < stats.mde(0.2, n - 1)


def test_tost_verdicts() -> None:
    a, b = _pair(3000, 0.0, noise=0.02)
    assert stats.tost(a, b, margin=0.01, n_resamples=2000).verdict == "equivalent"
    a, b = _pair(300, 0.08, noise=0.05)
    assert stats.tost(a, b, margin=0.01, n_resamples=2000).verdict == "different"
    b = RNG.uniform(0.2, 0.8, 16)
    e = RNG.normal(0, 0.1, 8)
    a = b + np.concatenate([e, -e])  # mean difference exactly 0, but too few queries to show it
    result = stats.tost(a, b, margin=0.01, n_resamples=2000)
    assert result.verdict == "inconclusive" and (result.queries_to_decide or 0) > 15


def test_kendall_tau() -> None:
    assert stats.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert stats.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0


@pytest.mark.parametrize(("a", "b"), [([0.1, np.nan], [0.1, 0.2]), ([0.1, 0.2], [0.1]), ([0.1], [0.2])])
def test_bad_scores_are_refused(a, b) -> None:
    with pytest.raises(ValueError):
        stats.permutation_pvalue(a, b)


def test_importing_stats_and_the_gate_rule_loads_neither_torch_nor_mteb() -> None:
    code = ("import sys, linq_eval.core.stats, linq_eval.core.gate_rule; "
            "print(sorted(m for m in ('torch', 'mteb', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


# -- the BCa and studentized intervals (the gate's) ----------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def _stored_per_query(task: str) -> np.ndarray:
    """Real per-query nDCG@10 of all-MiniLM-L6-v2, from the project's stored CI baseline."""
    baseline = json.loads((REPO / "results" / "baselines" / "minilm-ci.json").read_text())
    return np.array(list(baseline["tasks"][task]["per_query"].values()))


def test_bca_on_one_task_is_scipys_bca() -> None:
    """On one stratum, our stratified BCa is scipy's (up to resampling noise); the percentile one is not."""
    d = np.random.default_rng(0).exponential(1.0, 40) ** 2  # strongly skewed: BCa moves both ends up
    zero = np.zeros_like(d)
    ref = scipy_stats.bootstrap((d,), np.mean, n_resamples=20_000, method="BCa", random_state=1).confidence_interval
    _, low, high = stats.stratified_macro_ci({"t": (d, zero)}, n_resamples=20_000, method="bca")
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.03 * width and abs(high - ref.high) < 0.06 * width  # the tails' resampling noise
    _, p_low, p_high = stats.stratified_macro_ci({"t": (d, zero)}, n_resamples=20_000, method="percentile")
    assert p_low < low - 0.03 * width and p_high < high - 0.15 * width  # percentile misses the long right tail


def test_interval_methods_agree_on_symmetric_data_and_are_checked() -> None:
    pairs = {"t1": _pair(400, 0.02, noise=0.05), "t2": _pair(300, 0.0, noise=0.05)}
    bounds = {m: stats.stratified_macro_ci(pairs, n_resamples=4000, method=m) for m in stats.INTERVAL_METHODS}
    for estimate, low, high in bounds.values():
        assert low < estimate < high
        assert high - low == pytest.approx(bounds["percentile"][2] - bounds["percentile"][1], rel=0.1)
    same = RNG.uniform(0, 1, 30)
    assert stats.stratified_macro_ci({"t": (same + 0.1, same)}, method="bca") == pytest.approx((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="method"):
        stats.stratified_macro_ci(pairs, method="basic")  # type: ignore[arg-type]


def _tail_misses(populations: list[np.ndarray], sizes: list[int], sims: int, seed: int) -> dict[str, np.ndarray]:
    """How often each method's 95% interval lies wholly above (low > truth) or below (high < truth) the truth.

    Each simulated gate draws every task's queries again from its population (the task's real or constructed
    per-query differences), so the truth is the macro mean of the populations' means.
    """
    rng = np.random.default_rng(seed)
    truth = float(np.mean([p.mean() for p in populations]))
    misses = {m: np.zeros(2) for m in ("bca", "percentile")}
    for sim in range(sims):
        pairs = {}
        for i, (population, n) in enumerate(zip(populations, sizes, strict=True)):
            d = population[rng.integers(0, population.size, n)]
            pairs[f"t{i}"] = (d, np.zeros(n))
        for method, count in misses.items():
            _, low, high = stats.stratified_macro_ci(pairs, n_resamples=1000, seed=sim, method=method)
            count += (low > truth, high < truth)
    return {m: v / sims for m, v in misses.items()}


def test_bca_tails_are_closer_to_nominal_than_percentile_on_few_skewed_queries() -> None:
    """Simulated 95% intervals at 30-35 queries (the small shipped light sets), each tail nominally 2.5%.

    A checkpoint that breaks a few queries badly and leaves the rest alone gives left-skewed differences: the
    percentile interval then sits too high (its lower end above the truth ~9% of the time: the side on which a
    real regression passes the gate); BCa roughly halves that. Also on real scores (1 - the stored baseline's
    per-query nDCG@10 on LegalBench, right-skewed) and on a two-task macro.
    """
    rng = np.random.default_rng(5)
    breaks = np.where(rng.random(200) < 0.3, -rng.exponential(0.15, 200), 0.0)  # most queries unchanged
    real = 1 - _stored_per_query("LegalBenchCorporateLobbying")
    scenarios = [([breaks], [30]), ([real], [30]), ([breaks, breaks * 0.5], [30, 35])]
    error = {"bca": 0.0, "percentile": 0.0}
    for i, (populations, sizes) in enumerate(scenarios):
        misses = _tail_misses(populations, sizes, sims=500, seed=i)
        for method, tails in misses.items():
            error[method] += float(np.abs(tails - 0.025).sum())
        if i == 0:  # the regression-passes side
            assert misses["bca"][0] < misses["percentile"][0] - 0.02, misses
    assert error["bca"] < 0.6 * error["percentile"], error


def test_studentized_interval_covers_and_is_wider_on_skewed_data() -> None:
    rng = np.random.default_rng(7)
    d = np.where(rng.random(30) < 0.3, -rng.exponential(0.15, 30), 0.0)
    pairs = {"t": (d, np.zeros(30))}
    _, p_low, p_high = stats.stratified_macro_ci(pairs, n_resamples=4000, method="percentile")
    estimate, low, high = stats.stratified_macro_ci(pairs, n_resamples=4000, method="studentized")
    assert low < estimate < high and high - low > p_high - p_low


def test_finite_or_none_makes_strict_json() -> None:
    record = {"a": float("nan"), "b": [1.0, float("inf")], "c": (2, {"d": -float("inf")}), "e": "x"}
    assert json.dumps(stats.finite_or_none(record), allow_nan=False) == (
        '{"a": null, "b": [1.0, null], "c": [2, {"d": null}], "e": "x"}')

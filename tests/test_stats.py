"""The statistics module: known answers, cross-checks against scipy, and no torch on import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from linq_eval import stats

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


def test_importing_stats_loads_no_torch() -> None:
    code = "import sys, linq_eval.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr

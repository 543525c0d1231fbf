"""Permutation p-values and the AUROC bootstrap interval, against enumeration by hand and brute force."""

import itertools
import math

import numpy as np
import pytest

from poisondiff_lite import InvalidChoiceError
from poisondiff_lite.stats import auroc, auroc_interval, correlation_pvalue, group_summary, pearson, spearman
from poisondiff_lite.victims import asr_interval


def enumerated_pvalue(x, y, statistic) -> float:
    """Two-sided exact p-value: the share of all n! pairings whose |statistic| reaches the observed one."""
    observed = abs(statistic(x, y))
    values = [abs(statistic(x, np.asarray(perm))) for perm in itertools.permutations(y)]
    return float(np.mean([v >= observed - 1e-12 for v in values]))


@pytest.mark.parametrize("method,statistic", [("pearson", pearson), ("spearman", spearman)])
def test_exact_pvalue_equals_full_enumeration(method, statistic):
    rng = np.random.default_rng(3)
    for _ in range(3):
        x, y = rng.normal(size=6), rng.normal(size=6)
        expected = enumerated_pvalue(x, y, statistic)  # 720 pairings: scipy enumerates them all too
        assert correlation_pvalue(x, y, method=method) == pytest.approx(expected, abs=1e-9)


def test_pvalue_by_hand():
    # four points in perfect order: only the identity and the reversal reach |rho| = 1, 2 of 24 pairings
    assert correlation_pvalue([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(2 / 24)
    # Monte Carlo for n = 40: a strong relation is significant, an absent one is not
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    assert correlation_pvalue(x, x + 0.3 * rng.normal(size=40), method="pearson") < 0.001
    assert correlation_pvalue(x, rng.normal(size=40)) > 0.05
    assert math.isnan(correlation_pvalue([1, 2, 3], [1, 1, 1]))  # constant outcome: undefined, like the correlation
    with pytest.raises(InvalidChoiceError):
        correlation_pvalue([1, 2, 3], [1, 2, 3], method="kendall")


def test_auroc_interval_matches_a_brute_force_bootstrap():
    rng = np.random.default_rng(1)
    metric = rng.normal(size=30)
    success = metric + rng.normal(size=30) < 0  # low metric tends to succeed
    low, high = auroc_interval(metric, success, resamples=500, seed=7)
    # the same stratified resampling written plainly: resample each group, compute auroc() on the union
    draw = np.random.default_rng(7)
    pos, neg = metric[success], metric[~success]
    i = draw.integers(0, len(pos), size=(500, len(pos)))
    j = draw.integers(0, len(neg), size=(500, len(neg)))
    values = [auroc(np.r_[pos[a], neg[b]], np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]) for a, b in zip(i, j)]
    assert (low, high) == pytest.approx((np.quantile(values, 0.025), np.quantile(values, 0.975)))
    assert low <= auroc(metric, success) <= high


def test_auroc_interval_edge_cases():
    assert auroc_interval([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0]) == (1.0, 1.0)  # every resample separates perfectly
    assert all(math.isnan(v) for v in auroc_interval([0.1, 0.2], [1, 1]))  # no failures: undefined
    low, high = auroc_interval([0.2, math.inf, 0.1, 0.3], [1, 0, 1, 0])  # δ = inf ranks as the hardest
    assert low == high == 1.0
    wide = auroc_interval(np.arange(8.0), [1, 0, 1, 0, 1, 0, 1, 0])
    narrow = auroc_interval(np.arange(80.0), [1, 0] * 40)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]  # more targets, a tighter interval


def test_wilson_interval_matches_the_formula():
    z = 1.959963984540054
    for k, n in [(8, 8), (3, 8), (0, 5)]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        low, high = asr_interval(k, n)
        assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)
    assert asr_interval(8, 8)[0] == pytest.approx(0.6756, abs=1e-4)
    assert all(math.isnan(v) for v in asr_interval(0, 0))


def test_auroc_counts_ordered_pairs():
    assert auroc([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0]) == 1.0  # low metric = success, perfectly
    assert auroc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 0.0
    assert auroc([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0]) == 0.75  # 3 of the 4 (success, failure) pairs ordered
    assert auroc([0.5, 0.5], [1, 0]) == 0.5  # a tie counts one half
    assert auroc([0.2, math.inf, 0.1], [1, 0, 1]) == 1.0  # δ = inf (never flips) ranks as the hardest
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_correlations_agree_with_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert spearman(x, y) == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert math.isnan(pearson([1, 2, 3], [1, 1, 1]))
    assert group_summary([1.0, 0.5, 0.0, 0.5]) == {"n": 4, "mean": 0.5, "std": pytest.approx(math.sqrt(0.125))}

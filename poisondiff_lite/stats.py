"""How well a difficulty metric predicts attack success: correlations, AUROC and per-group summaries.

Sign convention (as in arXiv 2509.06896): a *higher* EPA, δ or τ means *harder* to poison, so the expected
correlation with attack success is negative, and AUROC is the probability that a successful target has a *lower*
metric value than an unsuccessful one (0.5: no information; 1: the metric separates them perfectly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import mannwhitneyu, pearsonr, permutation_test, rankdata, spearmanr

from .errors import InvalidChoiceError, check_choice


def _finite_pairs(metric: Sequence[float], outcome: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    metric = np.asarray(metric, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    if metric.shape != outcome.shape or metric.ndim != 1:
        raise InvalidChoiceError(
            f"metric and outcome must be 1-D of one length, got {metric.shape} and {outcome.shape}"
        )
    keep = np.isfinite(metric) & np.isfinite(outcome)
    return metric[keep], outcome[keep]


def pearson(metric: Sequence[float], outcome: Sequence[float]) -> float:
    """Pearson r over finite pairs (NaN when fewer than 3 or either side is constant)."""
    x, y = _finite_pairs(metric, outcome)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(pearsonr(x, y).statistic)


def spearman(metric: Sequence[float], outcome: Sequence[float]) -> float:
    """Spearman ρ over finite pairs (NaN when fewer than 3 or either side is constant)."""
    x, y = _finite_pairs(metric, outcome)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def auroc(metric: Sequence[float], success: Sequence[bool]) -> float:
    """P(metric of a successful target < metric of a failed one), ties counting 1/2 (Mann-Whitney U / n₁n₀).

    An infinite metric (δ that never flips) ranks above every finite one. NaN when either group is empty.
    """
    pos, neg = _groups(metric, success)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    return float(mannwhitneyu(neg, pos).statistic / (len(pos) * len(neg)))


def _groups(metric: Sequence[float], success: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The metric of successful and of failed targets (NaN dropped; +inf ranked just above every finite value)."""
    metric = np.asarray(metric, dtype=np.float64)
    success = np.asarray(success, dtype=bool)
    keep = ~np.isnan(metric)
    metric, success = metric[keep], success[keep]
    finite_max = np.max(metric[np.isfinite(metric)], initial=0.0)
    metric = np.where(np.isposinf(metric), finite_max + 1.0, metric)
    return metric[success], metric[~success]


def correlation_pvalue(
    metric: Sequence[float],
    outcome: Sequence[float],
    *,
    method: str = "spearman",
    resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided permutation p-value of Pearson r or Spearman ρ (`scipy.stats.permutation_test`, pairings shuffled).

    Exact (every pairing enumerated) when n! <= `resamples`, else Monte Carlo with `resamples` shufflings. Under the
    null hypothesis (metric and outcome unrelated) every pairing is equally likely; the p-value is the share of
    pairings whose |statistic| reaches the observed one. NaN where the correlation is undefined (see `pearson`).
    """
    check_choice("correlation", method, ("pearson", "spearman"))
    x, y = _finite_pairs(metric, outcome)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    if method == "spearman":
        x, y = rankdata(x), rankdata(y)

    y = y - y.mean()

    def abs_r(a: np.ndarray, axis: int = -1) -> np.ndarray:  # |correlation| of a reordered `x` with the fixed `y`
        a = a - a.mean(axis=axis, keepdims=True)
        return np.abs((a * y).sum(axis=axis)) / np.sqrt((a * a).sum(axis=axis) * (y * y).sum())

    # one sample with "pairings": scipy reorders x against the fixed y (n! pairings, enumerated when few enough)
    # "greater" on |r|: the share of pairings at least as extreme in either direction (scipy's "two-sided" would
    # double the smaller tail instead, which differs for Pearson's asymmetric null distribution)
    result = permutation_test(
        (x,),
        abs_r,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=resamples,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))


def auroc_interval(
    metric: Sequence[float], success: Sequence[bool], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of `auroc`, resampling successes and failures separately (stratified).

    Stratifying keeps both groups in every resample, so every resample has an AUROC. ``(nan, nan)`` when either
    group is empty; a degenerate interval (e.g. ``(1, 1)``) when every resample separates the groups alike.
    """
    pos, neg = _groups(metric, success)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    p = pos[rng.integers(0, len(pos), size=(resamples, len(pos)))]
    n = neg[rng.integers(0, len(neg), size=(resamples, len(neg)))]
    # AUROC of each resample: P(pos < neg) + P(pos == neg) / 2 over all its (pos, neg) pairs
    less = (p[:, :, None] < n[:, None, :]).mean(axis=(1, 2))
    ties = (p[:, :, None] == n[:, None, :]).mean(axis=(1, 2))
    values = less + ties / 2
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def group_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and population std (as the authors report), plus n."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan}
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std())}

"""How well a difficulty metric predicts attack success: correlations, AUROC and per-group summaries.

Sign convention (paper notes, ambiguity 12): a *higher* EPA, δ or τ means *harder* to poison, so the expected
correlation with attack success is negative, and AUROC is the probability that a successful target has a *lower*
metric value than an unsuccessful one (0.5: no information; 1: the metric separates them perfectly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import mannwhitneyu, pearsonr, spearmanr

from .errors import InvalidChoiceError


def _finite_pairs(metric: Sequence[float], outcome: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    metric = np.asarray(metric, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    if metric.shape != outcome.shape or metric.ndim != 1:
        raise InvalidChoiceError(f"metric and outcome must be 1-D of one length, got {metric.shape} and {outcome.shape}")
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
    metric = np.asarray(metric, dtype=np.float64)
    success = np.asarray(success, dtype=bool)
    keep = ~np.isnan(metric)
    metric, success = metric[keep], success[keep]
    pos, neg = metric[success], metric[~success]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    finite_max = np.max(metric[np.isfinite(metric)], initial=0.0)
    ranked = lambda v: np.where(np.isposinf(v), finite_max + 1.0, v)  # noqa: E731
    return float(mannwhitneyu(ranked(neg), ranked(pos)).statistic / (len(pos) * len(neg)))


def group_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and population std (as the authors report), plus n."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan}
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std())}

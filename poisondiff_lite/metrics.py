"""Difficulty metrics from clean training dynamics: EPA, its soft variant, DPS; EPA buckets and target selection.

All functions are vectorised over examples and take plain arrays shaped ``(M, N, E)`` (runs x epochs x examples),
or ``(K, E)`` for K checkpoints in any order. Definitions: arXiv 2509.06896 (EPA; DPS from its revision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InvalidChoiceError, check_positive

BUCKETS = ("lowest", "p20", "p40", "p60", "p80", "highest")
GROUPS = BUCKETS + ("middle",)  # "middle": the authors' VGG / TinyImageNet group, positions n//2 − k//2 onward


def _checkpoints(array: np.ndarray, burn_in: int = 0) -> np.ndarray:
    """Flatten ``(M, N, E)`` to ``(M*(N-burn_in), E)``; pass ``(K, E)`` through."""
    array = np.asarray(array)
    if array.ndim == 3:
        if not 0 <= burn_in < array.shape[1]:
            raise InvalidChoiceError(
                f"burn_in must be in [0, {array.shape[1]}) for {array.shape[1]} epochs, got {burn_in}"
            )
        array = array[:, burn_in:]
        return array.reshape(-1, array.shape[-1])
    if array.ndim == 2:
        if burn_in:
            raise InvalidChoiceError("burn_in needs (runs, epochs, examples) arrays")
        return array
    raise InvalidChoiceError(
        f"expected an array of shape (runs, epochs, examples) or (checkpoints, examples), got {array.shape}"
    )


def _check_predictions(flat: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Predicted classes as int64; NaN, fractions, negatives (unfinished runs hold -1) and classes past
    `num_classes` are errors, not silently wrong answers."""
    if flat.dtype.kind == "f":
        if flat.size and not (np.isfinite(flat).all() and (flat == np.round(flat)).all()):
            raise InvalidChoiceError(
                "predictions must be whole class indices; got NaN, inf or fractions "
                "(pass argmax classes, not probabilities)"
            )
    elif flat.dtype.kind not in "iub":
        raise InvalidChoiceError(f"predictions must be integer class indices, got dtype {flat.dtype}")
    flat = flat.astype(np.int64)
    upper = np.iinfo(np.int64).max if num_classes is None else num_classes
    if flat.size and (flat.min() < 0 or flat.max() >= upper):
        bound = "[0, ...)" if num_classes is None else f"[0, {num_classes})"
        raise InvalidChoiceError(
            f"predictions must lie in {bound}; got [{flat.min()}, {flat.max()}] "
            f"(unfinished runs hold -1: use Trajectory.finished())"
        )
    return flat


def _check_scores(values: np.ndarray, what: str, *, unit: bool = True) -> np.ndarray:
    """Finite per-example scores (within [0, 1] when `unit`), as float64."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and not np.isfinite(values).all():
        where = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise InvalidChoiceError(
            f"{what} contain NaN or inf (at positions {where}...); compute them from finished runs only"
        )
    if unit and values.size and (values.min() < 0 or values.max() > 1):
        raise InvalidChoiceError(f"{what} must lie in [0, 1], got [{values.min():g}, {values.max():g}]")
    return values


def epa(preds: np.ndarray, labels: np.ndarray, *, burn_in: int = 0, num_classes: int | None = None) -> np.ndarray:
    """Ergodic prediction accuracy: the fraction of all M x N checkpoints whose argmax equals the true label.

    ``EPA(x) = 1/(M N) sum_m sum_n 1[argmax f(x; theta_{m,n}) = y]``, every epoch end counted (``burn_in`` drops the
    first epochs of each run, an option the authors do not use). High EPA: hard to poison.

    Parameters
    ----------
    preds : predicted classes, ``(M, N, E)`` or ``(K, E)``.
    labels : true labels ``(E,)``: whole class indices, checked against `num_classes` when it is given (a label
        no model can predict would give EPA 0 without a word).

    Returns
    -------
    ``(E,)`` float64 in [0, 1], quantised in steps of ``1 / (M (N - burn_in))``.
    """
    return _share_correct(_check_predictions(_checkpoints(preds, burn_in), num_classes), labels, num_classes)


def check_labels(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """True labels as whole class indices in ``[0, num_classes)`` (``[0, ...)`` when unknown): a label no model can
    predict (99, -1, NaN, 1.5) would give EPA 0 or make every pair a poison-class pair without a word."""
    labels = np.asarray(labels)
    if labels.size:
        whole = labels.dtype.kind in "iub" or bool(np.isfinite(labels).all() and (labels == np.round(labels)).all())
        upper = num_classes if num_classes is not None else math.inf
        if not whole or labels.min() < 0 or labels.max() >= upper:
            bound = f"[0, {num_classes})" if num_classes is not None else "[0, ...)"
            got = f"from {labels.min()} to {labels.max()}" if whole else "NaN, inf or fractions"
            raise InvalidChoiceError(f"labels must be whole class indices in {bound}; got {got}")
    return labels


def _share_correct(flat: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """EPA of checked ``(checkpoints, E)`` predictions, after checking the labels."""
    labels = np.asarray(labels)
    if labels.shape != (flat.shape[1],):
        raise InvalidChoiceError(f"labels must have shape ({flat.shape[1]},), got {labels.shape}")
    return (flat == check_labels(labels, num_classes)[None, :]).mean(axis=0)


def soft_epa(true_prob: np.ndarray, *, burn_in: int = 0) -> np.ndarray:
    """Soft EPA: the mean true-class softmax probability over all checkpoints (Data Maps' confidence, over runs)."""
    return _check_scores(_checkpoints(true_prob, burn_in), "true-class probabilities").mean(axis=0)


def prediction_counts(preds: np.ndarray, num_classes: int, *, burn_in: int = 0) -> np.ndarray:
    """``(E, C)`` how many checkpoints predicted each class for each example (one `bincount`, no Python loop)."""
    return _vote_counts(_check_predictions(_checkpoints(preds, burn_in), num_classes), num_classes)


def _vote_counts(flat: np.ndarray, num_classes: int) -> np.ndarray:
    """`prediction_counts` of checked ``(checkpoints, E)`` predictions."""
    e = flat.shape[1]
    offsets = flat + num_classes * np.arange(e)[None, :]
    return np.bincount(offsets.ravel(), minlength=e * num_classes).reshape(e, num_classes)


def dps(preds: np.ndarray, num_classes: int, *, burn_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dominant prediction score: the share of checkpoints voting for the most frequent class (needs no label).

    Returns
    -------
    ``(score, dominant_class)``, both ``(E,)``; ties go to the lowest class index. Where the dominant class is the
    true label, DPS equals EPA.
    """
    return _dominant(prediction_counts(preds, num_classes, burn_in=burn_in))


def _dominant(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return counts.max(axis=1) / counts.sum(axis=1), counts.argmax(axis=1)


def epa_buckets(
    values: np.ndarray,
    per_bucket: int = 10,
    percentiles: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    *,
    middle: bool = False,
) -> dict[str, np.ndarray]:
    """The authors' six buckets: positions (into `values`) of the lowest `per_bucket`, the `per_bucket` starting at
    each percentile position ``int(p * n)`` of the stable ascending order, and the highest `per_bucket`.

    ``middle=True`` adds their VGG13 / TinyImageNet middle group: the `per_bucket` starting at position
    ``n // 2 − per_bucket // 2`` (4 of 50 goldfish: positions 23 to 26). Ties keep the data-set order (a stable sort,
    as the authors' Python ``sorted``)."""
    values = _check_scores(values, "the values to bucket", unit=False)
    check_positive("per_bucket", per_bucket)
    n = len(values)
    if per_bucket > n:
        raise InvalidChoiceError(f"per_bucket={per_bucket} is more than the {n} candidates; choose at most {n}")
    order = np.argsort(values, kind="stable")
    buckets = {"lowest": order[:per_bucket]}
    for p in percentiles:
        start = min(int(p * n), n - per_bucket)
        buckets[f"p{round(p * 100)}"] = order[start : start + per_bucket]
    buckets["highest"] = order[n - per_bucket :]
    if middle:
        start = min(max(n // 2 - per_bucket // 2, 0), n - per_bucket)
        buckets["middle"] = order[start : start + per_bucket]
    return buckets


def select_targets(
    epa_values: np.ndarray,
    labels: np.ndarray,
    target_class: int,
    *,
    per_bucket: int = 10,
    indices: np.ndarray | None = None,
    middle: bool = False,
) -> list[dict]:
    """Pick attack targets of `target_class` from each EPA bucket as the authors do (arXiv 2509.06896, target choice).

    Returns
    -------
    One dict per target: ``bucket``, ``index`` (into the evaluated split), ``epa``.
    """
    labels = np.asarray(labels)
    epa_values = np.asarray(epa_values)
    indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
    members = np.flatnonzero(labels == target_class)
    if len(members) == 0:
        present = sorted(set(labels.tolist()))
        raise InvalidChoiceError(f"no example has class {target_class}; classes present: {present}")
    buckets = epa_buckets(epa_values[members], per_bucket, middle=middle)
    return [
        {"bucket": name, "index": int(indices[members[pos]]), "epa": float(epa_values[members[pos]])}
        for name, positions in buckets.items()
        for pos in positions
    ]


def per_class_mean(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C,)`` mean of `values` over the examples of each class (NaN for an absent class)."""
    labels = np.asarray(labels)
    sums = np.bincount(labels, weights=np.asarray(values, dtype=np.float64), minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def trajectory_metrics(traj) -> dict[str, np.ndarray]:
    """EPA, soft EPA, DPS and dominant class of every recorded example of a (finished) `Trajectory`."""
    done = traj.finished()
    if done.completed == 0:
        raise InvalidChoiceError("the trajectory has no finished run yet; record at least one run")
    flat = _check_predictions(_checkpoints(done.preds), done.num_classes)  # checked once for EPA and DPS
    score, dominant = _dominant(_vote_counts(flat, done.num_classes))
    return {
        "epa": _share_correct(flat, done.labels, done.num_classes),
        "soft_epa": soft_epa(done.true_prob),
        "dps": score,
        "dominant": dominant,
        "labels": done.labels,
        "indices": done.indices,
    }

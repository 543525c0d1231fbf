"""A study's targets: which test examples it attacks, and the row of metrics each one carries.

`choose_targets` draws targets of one class from the EPA buckets (and, optionally, the complete groups of lowest
and highest δ or τ); `target_rows` measures EPA, DPS, δ and τ for each (arXiv 2509.06896, experimental setup).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .budget import BudgetResult, TauSettings, budget_lower_bound
from .distance import DistanceResult, distance_matrix
from .metrics import select_targets
from .study_config import StudyConfig
from .utils import progress


def choose_targets(
    config: StudyConfig,
    scores: dict[str, np.ndarray],
    model: torch.nn.Module,
    split_images,
    train_set,
    device: torch.device,
    show_progress: bool,
) -> tuple[list[dict[str, Any]], dict[tuple[int, int], BudgetResult]]:
    """The targets, and the τ already computed while choosing them (by test index), so it is not computed twice.

    The extreme groups are always complete: a target that is also in an EPA bucket is one target in two groups
    (its ``groups``), its victims trained once. Ranking by δ keeps the data-set order among ties (the authors' stable
    sort); by τ, ties (many τ are 0) go to the smaller δ, then to the data-set order.
    """
    chosen = [
        t
        for t in select_targets(
            scores["epa"],
            scores["labels"],
            config.target_class,
            per_bucket=config.per_bucket,
            indices=scores["indices"],
            middle="middle" in config.buckets,
        )
        if t["bucket"] in config.buckets
    ]
    known_tau: dict[tuple[int, int], BudgetResult] = {}
    if config.extremes:
        members = np.flatnonzero(scores["labels"] == config.target_class)
        images = split_images[scores["indices"][members]]
        all_delta = distance_matrix(
            model,
            images,
            scores["labels"][members],
            poison_classes=[config.poison_class],
            device=device,
            show_progress=show_progress,
        )
        steps = all_delta.step[:, config.poison_class]
        order = extreme_order(steps)
        if config.extreme_metric == "tau":  # one clean-gradient estimate per member: costly, hence optional
            taus = [
                budget_lower_bound(
                    model,
                    images[k],
                    config.poison_class,
                    train_set,
                    delta=DistanceResult.from_step(v),
                    **config.tau_settings.as_kwargs(),
                    device=device,
                )
                for k, v in enumerate(progress(steps, enable=show_progress, desc="τ of candidates"))
            ]
            known_tau = {(int(scores["indices"][m]), config.poison_class): b for m, b in zip(members, taus)}
            order = extreme_order(np.array([b.tau for b in taus]), steps)
        by_index = {t["index"]: t for t in chosen}
        symbol = "δ" if config.extreme_metric == "delta" else "τ"
        for group, positions in (
            (f"{symbol}-low", order[: config.extremes]),
            (f"{symbol}-high", order[::-1][: config.extremes]),
        ):
            for pos in positions:
                index = int(scores["indices"][members[pos]])
                if index in by_index:
                    target = by_index[index]
                    target["groups"] = target.get("groups", [target["bucket"]]) + [group]
                else:
                    by_index[index] = {"bucket": group, "index": index, "epa": float(scores["epa"][members[pos]])}
                    chosen.append(by_index[index])
    return chosen, known_tau


def extreme_order(values: np.ndarray, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Positions sorted by `values` ascending (NaN last, as never flipping), ties by `tie_break`, then by position."""
    keys = [np.arange(len(values))]
    if tie_break is not None:
        keys.append(np.where(np.isnan(tie_break), np.inf, tie_break))
    keys.append(np.where(np.isnan(values), np.inf, values))
    return np.lexsort(keys)


def target_rows(
    model: torch.nn.Module,
    scores: dict[str, np.ndarray],
    chosen: Sequence[dict[str, Any]],
    positions: Sequence[int],
    images: torch.Tensor,
    poison_classes: Sequence[int],
    train_set,
    *,
    tau: TauSettings | None = TauSettings(),
    last_layer_only: bool = False,
    known_tau: dict[tuple[int, int], BudgetResult] | None = None,
    device: torch.device | str = "auto",
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per (chosen target, poison class other than its own): EPA, soft EPA, DPS and dominant class, δ
    (step, parameter distance, gradient norm, clean prediction) and τ with its inner product.

    Parameters
    ----------
    model : the clean model of δ and τ (run 0's final model, the attacker's surrogate).
    scores : `trajectory_metrics` of the clean runs; `positions` are the targets' positions in it.
    chosen : the targets (dicts with ``index``, optionally ``bucket`` and ``groups``, which the rows keep).
    images : the targets' images, one per chosen target.
    tau : how τ is estimated (None: no τ, NaN in the rows).
    known_tau : τ already computed (e.g. while choosing targets), by (index, poison class): not computed again.

    `CleanExperiment.target_rows` calls this with its own model, scores and images.
    """
    known_tau = known_tau or {}
    labels = scores["labels"][list(positions)]
    delta = distance_matrix(
        model,
        images,
        labels,
        poison_classes=list(poison_classes),
        last_layer_only=last_layer_only,
        device=device,
        show_progress=False,
    )
    out = []
    pairs = [(j, int(p)) for j in range(len(chosen)) for p in poison_classes if int(p) != int(labels[j])]
    for j, p in progress(pairs, enable=show_progress, desc="δ and τ of targets", unit="pair"):
        target, k = chosen[j], int(positions[j])
        step, grad_norm, distance = (float(m[j, p]) for m in (delta.step, delta.grad_norm, delta.distance))
        result = DistanceResult(step, grad_norm, distance, int(delta.pred_before[j]))
        budget = known_tau.get((int(target["index"]), p))
        if budget is None and tau is not None:
            budget = budget_lower_bound(
                model,
                images[j],
                p,
                train_set,
                delta=result,
                last_layer_only=last_layer_only,
                **tau.as_kwargs(),
                device=device,
            )
        out.append(
            {
                "index": int(target["index"]),
                "bucket": target.get("bucket", "chosen"),
                "label": int(labels[j]),
                "epa": float(scores["epa"][k]),
                "soft_epa": float(scores["soft_epa"][k]),
                "dps": float(scores["dps"][k]),
                "dominant": int(scores["dominant"][k]),
                "poison_class": p,
                "clean_pred": result.pred_before,
                "delta_step": result.step,
                "delta_param": result.distance,
                "grad_norm": result.grad_norm,
                "tau": math.nan if budget is None else budget.tau,
                "tau_inner": math.nan if budget is None else budget.inner,
                **({"groups": target["groups"]} if "groups" in target else {}),
            }
        )
    return out

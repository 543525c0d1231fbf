"""A study's targets: which test examples it attacks, and the row of metrics each one carries.

`choose_targets` draws targets of one class from the EPA buckets (and, optionally, the complete groups of lowest
and highest δ or τ); `target_rows` measures EPA, DPS, δ and τ for each (arXiv 2509.06896, experimental setup).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .budget import budget_lower_bound
from .distance import DistanceResult, distance_matrix
from .metrics import select_targets
from .study_config import StudyConfig, setup_key
from .utils import progress


def choose_targets(
    config: StudyConfig,
    scores: dict[str, np.ndarray],
    model: torch.nn.Module,
    split_images,
    train_set,
    device: torch.device,
    show_progress: bool,
) -> tuple[list[dict[str, Any]], dict[int, float]]:
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
    known_tau: dict[int, float] = {}
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
            taus = np.array(
                [
                    budget_lower_bound(
                        model,
                        images[k],
                        config.poison_class,
                        train_set,
                        delta=DistanceResult.from_step(v),
                        **config.tau_settings.as_kwargs(),
                        device=device,
                    ).tau
                    for k, v in enumerate(progress(steps, enable=show_progress, desc="τ of candidates"))
                ]
            )
            known_tau = {int(scores["indices"][m]): float(v) for m, v in zip(members, taus)}
            order = extreme_order(taus, steps)
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
    config: StudyConfig,
    chosen: list[dict[str, Any]],
    scores: dict[str, np.ndarray],
    model,
    split_images,
    train_set,
    device: torch.device,
    known_tau: dict[int, float],
) -> list[dict[str, Any]]:
    """One row per chosen target: its EPA, soft EPA, DPS and dominant class, δ toward the poison class (step,
    parameter distance, gradient norm, clean prediction) and τ (taken from `known_tau` where already computed)."""
    position = {int(i): k for k, i in enumerate(scores["indices"])}
    rows = [position[t["index"]] for t in chosen]
    images = split_images[[t["index"] for t in chosen]]
    labels = scores["labels"][rows]
    delta = distance_matrix(
        model, images, labels, poison_classes=[config.poison_class], device=device, show_progress=False
    )
    out = []
    for j, (t, k) in enumerate(zip(chosen, rows)):
        p = config.poison_class
        result = DistanceResult(
            float(delta.step[j, p]),
            float(delta.grad_norm[j, p]),
            float(delta.distance[j, p]),
            int(delta.pred_before[j]),
        )
        tau = known_tau.get(t["index"])
        if tau is None:
            tau = budget_lower_bound(
                model, images[j], p, train_set, delta=result, **config.tau_settings.as_kwargs(), device=device
            ).tau
        out.append(
            {
                "key": setup_key(config.target_class, p, t["index"]),
                "index": t["index"],
                "bucket": t["bucket"],
                "label": int(labels[j]),
                "epa": float(scores["epa"][k]),
                "soft_epa": float(scores["soft_epa"][k]),
                "dps": float(scores["dps"][k]),
                "dominant": int(scores["dominant"][k]),
                "clean_pred": result.pred_before,
                "delta_step": result.step,
                "delta_param": result.distance,
                "grad_norm": result.grad_norm,
                "tau": tau,
                **({"groups": t["groups"]} if "groups" in t else {}),
            }
        )
    return out

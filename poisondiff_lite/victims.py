"""Validation harness: insert poisons, retrain victims, measure attack success (their log: `results_log`).

Two victim settings (arXiv 2509.06896, threat model):

- ``scratch``: every victim is a fresh model trained from a new initialisation on the poisoned training set with the
  victim recipe (Witches' Brew's "retrain from scratch" validation);
- ``transfer``: the surrogate's feature extractor is frozen and each victim is a fresh linear head trained on its
  features of the poisoned training set (the poisoning benchmark's linear transfer setting). The training features are
  extracted once; only the poisons' rows change between attacks.

Attack success rate (ASR) = the fraction of victims whose argmax on the target is the adversarial class, reported with
a binomial (Wilson) interval; the victims' clean test accuracy is reported next to it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from scipy.stats import binomtest

from .attacks import Poisons
from .config import ConfigDict, TrainConfig
from .data import DataBundle, ImageDataset, to_unit
from .errors import InvalidChoiceError, check_positive
from .results_log import ResultsLog
from .train import predict_logits, train_fresh_many
from .utils import eval_mode, get_device, progress

# Transfer heads see features scaled to unit mean norm, whose raw logits span too little for cross-entropy to fit
# them; this fixed factor gives them the range of a trained network's logits (it is part of the victim, not tuned).
HEAD_LOGIT_SCALE = 10.0


@dataclass(frozen=True)
class HeadConfig(ConfigDict):
    """Training of one linear head on frozen features (the transfer-learning victim)."""

    epochs: int = 40  # passes over the training features
    batch_size: int = 128  # features per SGD step
    lr: float = 0.05  # SGD learning rate (cosine-decayed to zero)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty on the head

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs)
        check_positive("batch_size", self.batch_size)
        check_positive("lr", self.lr)

    @classmethod
    def full(cls, **overrides: Any) -> HeadConfig:
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> HeadConfig:
        return dataclasses.replace(cls(epochs=15), **overrides)


def insert_poisons(train_set: ImageDataset, poisons: Poisons | None) -> ImageDataset:
    """A copy of `train_set` with the poisoned images in place of the clean ones (labels unchanged: clean-label)."""
    if poisons is None:
        return train_set
    if poisons.images.shape[1:] != train_set.images.shape[1:]:
        raise InvalidChoiceError(
            f"poison images are {tuple(poisons.images.shape[1:])}, the training set holds "
            f"{tuple(train_set.images.shape[1:])}"
        )
    idx = poisons.indices.to(train_set.device)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(train_set)):
        raise InvalidChoiceError(f"poison indices must lie in [0, {len(train_set)})")
    images = train_set.images.clone()
    images[idx] = poisons.images.to(train_set.device)
    return ImageDataset(images, train_set.labels)


def asr_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a success rate (`scipy.stats.binomtest`); ``(nan, nan)`` without trials."""
    if trials == 0:
        return (float("nan"), float("nan"))
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


# -----------------------------------------------------------------------------------------------------------------
#  victims trained from scratch
# -----------------------------------------------------------------------------------------------------------------
def scratch_victims(
    data: DataBundle,
    train_set: ImageDataset,
    cfg: TrainConfig,
    seeds: Iterable[int],
    targets: torch.Tensor,
    *,
    device: torch.device | str = "auto",
    show_progress: bool = False,
    desc: str = "victims",
) -> Iterable[tuple[int, torch.Tensor, torch.Tensor]]:
    """Train one fresh victim per seed on `train_set`; yield ``(seed, target_logits, test_logits)`` as each finishes.

    `targets` is ``(T, 3, H, W)`` uint8: every victim is evaluated on all of them (clean victims serve many targets).
    """
    device = get_device(device)
    for group in train_fresh_many(
        data, cfg, seeds, device=device, train_set=train_set, show_progress=show_progress, desc=desc
    ):
        for seed, model, _ in group:
            target_logits = predict_logits(model, targets, device=device, cfg=cfg).cpu()
            test_logits = predict_logits(
                model, data.test.images, batch_size=cfg.eval_batch_size, device=device, cfg=cfg
            ).cpu()
            yield seed, target_logits, test_logits


# -----------------------------------------------------------------------------------------------------------------
#  victims that train a linear head on frozen features
# -----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 500, device: torch.device | str = "auto"
) -> torch.Tensor:
    """Penultimate features ``(N, D)`` (float32, on the CPU) of uint8 images, in eval mode."""
    device = get_device(device)
    with eval_mode(model):
        out = [
            model.features(to_unit(images[b : b + batch_size], device)).float().cpu()
            for b in range(0, len(images), batch_size)
        ]
    return torch.cat(out)


def surrogate_features(
    model: nn.Module, data: DataBundle, target_images: torch.Tensor, *, device: torch.device | str = "auto"
) -> dict[str, torch.Tensor]:
    """What transfer victims see: the surrogate's features of the training set, the test set and the targets
    (keys ``"train"``, ``"test"``, ``"targets"``)."""
    return {
        "train": extract_features(model, data.train.images, device=device),
        "test": extract_features(model, data.test.images, device=device),
        "targets": extract_features(model, target_images, device=device),
    }


def train_heads(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: HeadConfig, seeds: Iterable[int]
) -> list[nn.Linear]:
    """Fresh linear heads, one per seed, trained on fixed features with SGD and a cosine schedule, all in one loop.

    Each head trains exactly as it would alone (up to float rounding): its initialisation and its data order come
    from its own seed, and SGD with momentum and weight decay acts on each weight by itself, so stacking the heads
    into one ``(V, C, D)`` tensor changes only how many Python steps pay for them (one per batch, not V).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        return []
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    heads = []
    for seed in seeds:
        torch.manual_seed(seed)  # nn.Linear's initialisation draws from the global generator
        heads.append(nn.Linear(features.shape[1], num_classes))
    weight = torch.stack([h.weight.detach() for h in heads])  # (V, C, D)
    bias = torch.stack([h.bias.detach() for h in heads])  # (V, C)
    scale = features.norm(dim=1).mean().clamp_min(1e-6)  # features of any network on a common scale
    x, y = features / scale, labels.long()
    steps = cfg.epochs * -(-len(x) // cfg.batch_size)
    momentum_w, momentum_b = torch.zeros_like(weight), torch.zeros_like(bias)
    step = 0
    for _ in range(cfg.epochs):
        order = torch.stack([torch.randperm(len(x), generator=g) for g in gens])  # (V, N): each head its own
        for b in range(0, len(x), cfg.batch_size):
            idx = order[:, b : b + cfg.batch_size]
            xb = x[idx]  # (V, B, D)
            logits = torch.baddbmm(bias[:, None, :], xb, weight.transpose(1, 2)) * HEAD_LOGIT_SCALE
            # the gradient of each head's mean cross-entropy, by hand: (softmax - one-hot) / B through the scale
            grad = torch.softmax(logits, dim=2)
            grad.scatter_add_(2, y[idx][..., None], torch.full_like(grad[..., :1], -1.0))
            grad *= HEAD_LOGIT_SCALE / idx.shape[1]
            lr = cfg.lr * (1 + math.cos(math.pi * step / steps)) / 2  # the cosine schedule (to zero at the end)
            for param, g, buf in (
                (weight, torch.bmm(grad.transpose(1, 2), xb), momentum_w),
                (bias, grad.sum(dim=1), momentum_b),
            ):
                g.add_(param, alpha=cfg.weight_decay)  # torch.optim.SGD: weight decay, then momentum
                buf.mul_(cfg.momentum if step else 0.0).add_(g)
                param.sub_(buf, alpha=lr)
            step += 1
    for v, head in enumerate(heads):
        with torch.no_grad():
            head.weight.copy_(weight[v])
            head.bias.copy_(bias[v])
        head.feature_scale = float(scale)
    return heads


def head_logits(head: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return head(features / head.feature_scale) * HEAD_LOGIT_SCALE


def poisoned_features(
    surrogate: nn.Module, train_features: torch.Tensor, poisons: Poisons | None, *, device: torch.device | str = "auto"
) -> torch.Tensor:
    """The training set's frozen features with the poisons' rows replaced by the poisoned images' features."""
    if poisons is None:
        return train_features
    rows = train_features.clone()
    rows[poisons.indices] = extract_features(surrogate, poisons.images, device=device)
    return rows


def transfer_victims(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    target_features: torch.Tensor,
    num_classes: int,
    cfg: HeadConfig,
    seeds: Iterable[int],
) -> Iterable[tuple[int, torch.Tensor, torch.Tensor]]:
    """One linear head per seed on fixed features, trained together; yield ``(seed, target_logits, test_logits)``."""
    seeds = list(seeds)
    for seed, head in zip(seeds, train_heads(train_features, train_labels.cpu(), num_classes, cfg, seeds)):
        yield seed, head_logits(head, target_features), head_logits(head, test_features)


# -----------------------------------------------------------------------------------------------------------------
#  the append-only results log
# -----------------------------------------------------------------------------------------------------------------
def log_outcomes(
    log: ResultsLog,
    results: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
    test_labels: torch.Tensor,
    rows: Callable[[int, torch.Tensor, float], list[dict[str, Any]]],
    *,
    show_progress: bool,
    total: int,
    desc: str,
) -> None:
    """Drain a victim generator, appending the rows each victim produces as soon as it is done.

    ``rows(seed, target_logits, clean_accuracy)`` builds them; the clean test accuracy is computed once per victim.
    Each row's ``seconds`` is the wall time since the previous victim was logged (with ``stack > 1`` a group's
    training is counted toward its first victim).
    """
    start = time.perf_counter()
    for seed, target_logits, test_logits in progress(
        results, enable=show_progress, total=total, desc=desc, unit="victim", leave=False
    ):
        seconds = time.perf_counter() - start
        accuracy = test_accuracy(test_logits, test_labels)
        for row in rows(seed, target_logits, accuracy):
            row.setdefault("seconds", round(seconds, 3))
            log.append(row)
        start = time.perf_counter()


def test_accuracy(test_logits: torch.Tensor, test_labels: torch.Tensor) -> float:
    """A victim's clean accuracy from its logits on the whole test split."""
    return float((test_logits.argmax(1).cpu() == test_labels.cpu()).float().mean())


def outcome_row(
    key: str,
    attack: str,
    seed: int,
    target_logits: torch.Tensor,
    clean_accuracy: float,
    adv_class: int,
    true_class: int,
    **extra: Any,
) -> dict[str, Any]:
    """The log row of one victim on one target: its prediction, the two probabilities, its clean accuracy."""
    prob = torch.softmax(target_logits.float(), -1)
    pred = int(prob.argmax())
    return {
        "key": key,
        "attack": attack,
        "victim": int(seed),
        "pred": pred,
        "success": pred == adv_class,
        "p_adv": round(float(prob[adv_class]), 6),
        "p_true": round(float(prob[true_class]), 6),
        "clean_accuracy": round(clean_accuracy, 6),
        **extra,
    }


def victim_seeds(seed0: int, count: int) -> list[int]:
    """Victim initialisation seeds, disjoint from the clean runs' (which start at the trajectory's seed0)."""
    return [seed0 + v for v in range(count)]


def success_table(rows: list[dict[str, Any]]) -> dict[tuple[str, str], np.ndarray]:
    """``{(key, attack): array of 0/1 successes}`` from log rows."""
    table: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        table.setdefault((r["key"], r["attack"]), []).append(int(bool(r["success"])))
    return {k: np.asarray(v) for k, v in table.items()}

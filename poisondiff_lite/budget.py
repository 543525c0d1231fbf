"""Poison-budget lower bound τ (arXiv 2509.06896, the budget bound), after Lu, Kamath & Yu's (2023) reachability.

At the poisoned parameters reached by the δ step, ``w_p = w − η* g``, a poison set of ratio ε can make ``w_p`` a
stationary point of training only if

    ε ≥ τ = max( ⟨w_p, g(D_c; w_p)⟩ / W(κ), 0 )

with ``g(D_c; w_p)`` the mean clean-training gradient at ``w_p`` and W the principal branch of Lambert W. The
derivation gives ``κ = (C − 1)/e`` (default, ``variant="derived"``); the authors' code uses ``κ = C − 1/e``
(``variant="authors"``). The two differ by a constant factor per dataset, so rankings and correlations agree.
The bound is exact for linear softmax models; on deep networks it is a heuristic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import lambertw
from torch.func import functional_call

from .data import ImageDataset, to_unit
from .distance import DistanceResult, as_batch, moved_parameters, poisoning_distance
from .errors import InvalidChoiceError, check_choice, check_positive
from .utils import eval_mode, get_device

VARIANTS = ("derived", "authors")
TensorPair = tuple[torch.Tensor, torch.Tensor]


def lambert_denominator(num_classes: int, variant: str = "derived") -> float:
    """W(κ): κ = (C − 1)/e (``"derived"``, the theory) or C − 1/e (``"authors"``, their code)."""
    check_choice("variant", variant, VARIANTS)
    if num_classes < 2:
        raise InvalidChoiceError(f"num_classes must be >= 2, got {num_classes}")
    kappa = (num_classes - 1) / math.e if variant == "derived" else num_classes - 1 / math.e
    return float(lambertw(kappa).real)


def tau_from_inner(inner: float, num_classes: int, variant: str = "derived") -> float:
    """τ = max(⟨w_p, g(D_c; w_p)⟩ / W(κ), 0)."""
    return max(inner / lambert_denominator(num_classes, variant), 0.0)


@dataclass(frozen=True)
class TauSettings:
    """How τ is estimated: g(D_c; w_p) from seeded random batches, and the Lambert-W argument."""

    num_batches: int | None = 50  # batches estimating g(D_c; w_p) (None: the whole training set; the authors: 50)
    batch_size: int = 256  # their size (the authors: 256)
    seed: int = 0  # seeds the batches
    variant: str = "derived"  # "derived": κ = (C − 1)/e | "authors": κ = C − 1/e (their code)

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        check_positive("batch_size", self.batch_size, integer=True)
        if self.num_batches is not None:
            check_positive("num_batches", self.num_batches, integer=True)

    def as_kwargs(self) -> dict[str, int | str | None]:
        """The keyword arguments of `budget_lower_bound` (and `budget_matrix`) these settings stand for."""
        return asdict(self)


@dataclass(frozen=True)
class BudgetResult:
    """τ for one (target, poison class) pair, with the pieces it was made of."""

    tau: float  # the lower bound on the poison ratio |D_p| / |D_c| (inf when δ is inf)
    inner: float  # ⟨w_p, g(D_c; w_p)⟩
    lambert: float  # W(κ)
    step: float  # η* of the δ step that defined w_p


def clean_gradient(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    train_set: ImageDataset | TensorPair,
    *,
    num_batches: int | None = 50,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "auto",
) -> dict[str, torch.Tensor]:
    """Mean clean-training gradient ``g(D_c; w)`` at parameters `params` (others as in `model`), in eval mode.

    ``num_batches=None`` uses the whole training set; otherwise `num_batches` seeded random batches (the authors:
    50 x 256). `train_set` is an `ImageDataset` (uint8 images) or a pair ``(inputs, labels)`` of tensors already in
    model units (e.g. the 2-D toy points). The model itself is not modified.
    """
    device = get_device(device)
    check_positive("batch_size", batch_size)
    images, labels = (train_set.images, train_set.labels) if isinstance(train_set, ImageDataset) else train_set
    n = len(labels)
    if num_batches is None:
        order = torch.arange(n)
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        check_positive("num_batches", num_batches)
        generator = torch.Generator().manual_seed(seed)
        batches = [torch.randperm(n, generator=generator)[:batch_size] for _ in range(num_batches)]
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    fixed = {k: p.detach() for k, p in model.named_parameters() if k not in leaves}
    fixed.update(dict(model.named_buffers()))
    total = {k: torch.zeros_like(v) for k, v in leaves.items()}
    weight = 0
    with eval_mode(model):
        for idx in batches:
            x = to_unit(images[idx], device)
            y = labels[idx].to(device)
            loss = F.cross_entropy(functional_call(model, {**leaves, **fixed}, (x,)), y, reduction="sum")
            for k, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()))):
                total[k] += g
            weight += len(idx)
    return {k: v / weight for k, v in total.items()}


def budget_lower_bound(
    model: nn.Module,
    image: torch.Tensor,
    poison_class: int,
    train_set: ImageDataset | TensorPair,
    *,
    delta: DistanceResult | None = None,
    last_layer_only: bool = False,
    num_batches: int | None = 50,
    batch_size: int = 256,
    seed: int = 0,
    variant: str = "derived",
    device: torch.device | str = "auto",
    **distance_kwargs,
) -> BudgetResult:
    """τ of one target toward `poison_class`.

    Parameters
    ----------
    model : the clean model w (not modified).
    image : the target (uint8 ``(3, H, W)`` or float in [0, 1]).
    train_set : the clean training set D_c.
    delta : a `DistanceResult` already computed for this pair with the same `last_layer_only` (else computed here).
    num_batches, batch_size, seed : how g(D_c; w_p) is estimated (None: the whole training set).
    variant : ``"derived"`` (W((C−1)/e)) or ``"authors"`` (W(C − 1/e)).
    """
    settings = TauSettings(num_batches, batch_size, seed, variant)  # checked before δ is searched, not after
    device = get_device(device)
    with eval_mode(model.to(device)):
        return _budget(
            model,
            image,
            poison_class,
            train_set,
            delta=delta,
            last_layer_only=last_layer_only,
            settings=settings,
            device=device,
            distance_kwargs=distance_kwargs,
        )


def _budget(
    model: nn.Module,
    image: torch.Tensor,
    poison_class: int,
    train_set: ImageDataset | TensorPair,
    *,
    delta: DistanceResult | None,
    last_layer_only: bool,
    settings: TauSettings,
    device: torch.device,
    distance_kwargs: dict,
) -> BudgetResult:
    if delta is None:
        delta = poisoning_distance(
            model, image, poison_class, last_layer_only=last_layer_only, device=device, **distance_kwargs
        )
    x = as_batch(image, device)
    num_classes = int(model(x).shape[1])
    lam = lambert_denominator(num_classes, settings.variant)
    if not math.isfinite(delta.step):
        return BudgetResult(math.inf, math.nan, lam, delta.step)
    params = {k: p.detach() for k, p in moved_parameters(model, last_layer_only).items()}
    loss = F.cross_entropy(model(x), torch.tensor([poison_class], device=device))
    grads = torch.autograd.grad(loss, [p for k, p in model.named_parameters() if k in params])
    w_p = {k: params[k] - delta.step * g for k, g in zip(params, grads)}
    g_clean = clean_gradient(
        model,
        w_p,
        train_set,
        num_batches=settings.num_batches,
        batch_size=settings.batch_size,
        seed=settings.seed,
        device=device,
    )
    inner = float(sum((w_p[k].double() * g_clean[k].double()).sum() for k in w_p))
    return BudgetResult(tau_from_inner(inner, num_classes, settings.variant), inner, lam, delta.step)


def budget_matrix(
    model: nn.Module,
    images: torch.Tensor,
    poison_classes: np.ndarray,
    train_set: ImageDataset,
    steps: np.ndarray,
    **kwargs,
) -> np.ndarray:
    """τ for targets `images` toward `poison_classes[i]` given their δ steps (one clean-gradient pass per pair)."""
    out = np.full(len(images), np.nan)
    for i, (image, cls, step) in enumerate(zip(images, poison_classes, steps)):
        delta = DistanceResult.from_step(step)
        out[i] = budget_lower_bound(model, image, int(cls), train_set, delta=delta, **kwargs).tau
    return out

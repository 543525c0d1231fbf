"""Poisoning distance δ: the smallest step along the poison-class gradient, in parameter space, that flips a target.

For a clean model ``w``, a target ``x`` and a poison class ``p`` (arXiv 2509.06896, "Poisoning Distance Estimation"):

    g  = ∇_w CE(f(x; w), p)                     over all trainable parameters (or only the head)
    η* = min { η ≥ 0 : argmax f(x; w − η g) = p }

found by doubling from ``η = m_init`` to bracket the flip, then bisecting to tolerance ``alpha``. The model is in
eval mode (BatchNorm statistics are buffers and do not move). We return η* (``step``, what the authors' code ranks
by), ``grad_norm`` = ‖g‖ and ``distance`` = η*·‖g‖, the length of the parameter move.

Two implementations that must agree: `poisoning_distance` steps one target at a time by editing the weights in place
and restoring them exactly; `distance_matrix` runs many (target, class) pairs in lockstep with `torch.func`, never
touching the model's weights (on a GPU; on a CPU it loops over `poisoning_distance`, which is faster there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from .data import check_images, to_unit
from .errors import InvalidChoiceError, check_choice, check_positive
from .metrics import check_labels
from .utils import eval_mode, get_device, progress


@dataclass(frozen=True)
class DistanceResult:
    """δ for one (target, poison class) pair."""

    step: float  # η*: the step size along -g (inf when the prediction never flips)
    grad_norm: float  # ‖g‖ over the moved parameters
    distance: float  # η*·‖g‖: length of the parameter move
    pred_before: int  # the clean model's prediction on the target

    @classmethod
    def from_step(cls, step: float) -> DistanceResult:
        """A result known only by its step η* (e.g. read back from a table): enough for τ, which needs w_p only."""
        return cls(float(step), math.nan, math.nan, -1)


def moved_parameters(model: nn.Module, last_layer_only: bool = False) -> dict[str, torch.Tensor]:
    """The parameters δ moves: every trainable one, or only the linear head's (``head.*``)."""
    named = {k: p for k, p in model.named_parameters() if p.requires_grad}
    if last_layer_only:
        named = {k: p for k, p in named.items() if k.startswith("head.")}
        if not named:
            raise InvalidChoiceError("last_layer_only=True needs a model with a `head` (any poisondiff_lite model)")
    return named


def as_batch(example: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One example (a uint8 ``(3, H, W)`` image, floats in [0, 1], or a plain vector) as a float batch of one."""
    return to_unit(check_images(example, "the target image", batch=False), device).unsqueeze(0)


@dataclass(frozen=True)
class DeltaSearch:
    """How δ's step η* is searched: double from `m_init` until the prediction flips, then bisect to `alpha`."""

    alpha: float = 1e-4  # bisection tolerance on η
    m_init: float = 1.0  # first bracket end
    max_doublings: int = 40  # bracket doublings before giving up (δ = inf)

    def __post_init__(self) -> None:
        check_positive("alpha", self.alpha)
        check_positive("m_init", self.m_init)
        check_positive("max_doublings", self.max_doublings, allow_zero=True, integer=True)


# -----------------------------------------------------------------------------------------------------------------
#  one target at a time (the reference; also the per-target baseline of the benchmark)
# -----------------------------------------------------------------------------------------------------------------
def poisoning_distance(
    model: nn.Module,
    image: torch.Tensor,
    poison_class: int,
    *,
    last_layer_only: bool = False,
    alpha: float = 1e-4,
    m_init: float = 1.0,
    max_doublings: int = 40,
    device: torch.device | str = "auto",
) -> DistanceResult:
    """δ of one target toward `poison_class` (the authors' algorithm, step by step).

    Parameters
    ----------
    model : a trained classifier taking images in [0, 1]; its weights are restored exactly afterwards.
    image : the target, uint8 ``(3, H, W)`` or float in [0, 1].
    poison_class : the class the attacker wants.
    last_layer_only : move only the head's parameters (cheaper; closer to the linear theory behind τ).
    alpha : bisection tolerance on η. m_init : first bracket end. max_doublings : bracket doublings before giving up.
    """
    search = DeltaSearch(alpha, m_init, max_doublings)
    device = get_device(device)
    model.to(device)
    with eval_mode(model):
        params = moved_parameters(model, last_layer_only)
        x = as_batch(image, device)
        logits = model(x)  # one forward pass serves the class check, the gradient and the clean prediction
        num_classes = logits.shape[1]
        if not 0 <= poison_class < num_classes:
            raise InvalidChoiceError(f"poison_class must be in [0, {num_classes}), got {poison_class}")
        pred_before = int(logits.argmax(1))
        saved = {k: p.detach().clone() for k, p in params.items()}
        try:
            loss = F.cross_entropy(logits, torch.tensor([poison_class], device=device))
            grads = torch.autograd.grad(loss, list(params.values()))
            grad_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))

            @torch.no_grad()
            def predicts_poison(eta: float) -> bool:
                for (name, p), g in zip(params.items(), grads):
                    p.copy_(saved[name] - eta * g)
                return int(model(x).argmax(1)) == poison_class

            if pred_before == poison_class:
                step = 0.0
            else:
                lo, hi = 0.0, search.m_init
                doublings = 0
                while not predicts_poison(hi):
                    if doublings == search.max_doublings:
                        return DistanceResult(math.inf, grad_norm, math.inf, pred_before)
                    lo, hi = hi, 2 * hi
                    doublings += 1
                while hi - lo > search.alpha:
                    mid = (lo + hi) / 2
                    if predicts_poison(mid):
                        hi = mid
                    else:
                        lo = mid
                step = hi
            return DistanceResult(step, grad_norm, step * grad_norm, pred_before)
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(saved[name])


# -----------------------------------------------------------------------------------------------------------------
#  many (target, class) pairs in lockstep with torch.func
# -----------------------------------------------------------------------------------------------------------------
def auto_method(device: torch.device | str) -> str:
    """What ``distance_matrix(method="auto")`` runs on `device`: ``"batched"`` on a GPU, ``"loop"`` elsewhere."""
    return "batched" if get_device(device).type == "cuda" else "loop"


@dataclass
class DistanceMatrix:
    """δ for targets x poison classes; entries where the class is the target's own label are NaN."""

    step: np.ndarray  # (T, C) η*
    grad_norm: np.ndarray  # (T, C) ‖g‖
    distance: np.ndarray  # (T, C) η*·‖g‖
    pred_before: np.ndarray  # (T,) clean prediction
    labels: np.ndarray  # (T,) true labels
    last_layer_only: bool = False


class _PairEvaluator:
    """Logits of single images under per-pair parameter sets, batched with `vmap` over `functional_call`."""

    def __init__(self, model: nn.Module, last_layer_only: bool) -> None:
        self.model = model
        self.moved = {k: p.detach() for k, p in moved_parameters(model, last_layer_only).items()}
        self.fixed = {k: p.detach() for k, p in model.named_parameters() if k not in self.moved}
        self.fixed.update({k: b for k, b in model.named_buffers()})

    def logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**params, **self.fixed}, (x.unsqueeze(0),)).squeeze(0)

    def loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(params, x).unsqueeze(0), y.unsqueeze(0))

    def gradients(self, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, torch.Tensor]:
        return vmap(grad(self.loss), in_dims=(None, 0, 0))(self.moved, xs, ys)

    @torch.no_grad()
    def predictions(self, grads: dict[str, torch.Tensor], xs: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        stepped = {
            k: self.moved[k].unsqueeze(0) - eta.view(-1, *[1] * self.moved[k].ndim) * g for k, g in grads.items()
        }
        return vmap(self.logits, in_dims=(0, 0))(stepped, xs).argmax(-1)


def _lockstep_search(
    evaluate, targets: torch.Tensor, n: int, device: torch.device, search: DeltaSearch
) -> torch.Tensor:
    """The doubling-then-bisection search of `poisoning_distance`, for `n` pairs at once.

    ``evaluate(rows, eta)`` returns the predictions of pairs `rows` at steps `eta`. Every pair makes exactly the
    decisions the one-at-a-time search would make.
    """
    step = torch.full((n,), math.inf, dtype=torch.float64, device=device)
    everyone = torch.arange(n, device=device)
    already = evaluate(everyone, torch.zeros(n, device=device)) == targets
    step[already] = 0.0
    lo = torch.zeros(n, dtype=torch.float64, device=device)
    hi = torch.full((n,), search.m_init, dtype=torch.float64, device=device)
    searching = everyone[~already]
    found = torch.zeros(n, dtype=torch.bool, device=device)
    for doubling in range(search.max_doublings + 1):
        if len(searching) == 0:
            break
        hit = evaluate(searching, hi[searching].float()) == targets[searching]
        found[searching[hit]] = True
        searching = searching[~hit]
        if doubling < search.max_doublings:
            lo[searching] = hi[searching]
            hi[searching] = 2 * hi[searching]
    bisecting = torch.nonzero(found).squeeze(1)
    while len(bisecting):
        bisecting = bisecting[(hi[bisecting] - lo[bisecting]) > search.alpha]
        if len(bisecting) == 0:
            break
        mid = (lo[bisecting] + hi[bisecting]) / 2
        hit = evaluate(bisecting, mid.float()) == targets[bisecting]
        hi[bisecting[hit]] = mid[hit]
        lo[bisecting[~hit]] = mid[~hit]
    step[found] = hi[found]
    return step


def _batched_pairs(
    model: nn.Module,
    xs: torch.Tensor,
    pairs: list[tuple[int, int]],
    out: dict[str, np.ndarray],
    *,
    search: DeltaSearch,
    last_layer_only: bool,
    device: torch.device,
    max_chunk_bytes: int,
    show_progress: bool,
) -> None:
    """Fill `out` for `pairs` in lockstep chunks (see `distance_matrix`)."""
    evaluator = _PairEvaluator(model, last_layer_only)
    param_bytes = 4 * sum(p.numel() for p in evaluator.moved.values())
    chunk = max(1, int(max_chunk_bytes // (2 * param_bytes)))  # the gradients and the stepped copy
    starts = range(0, len(pairs), chunk)
    for begin in progress(starts, enable=show_progress and len(starts) > 1, desc="δ pairs", unit="chunk"):
        block = pairs[begin : begin + chunk]
        t_idx = torch.tensor([t for t, _ in block], device=device)
        targets = torch.tensor([c for _, c in block], device=device)
        grads = evaluator.gradients(xs[t_idx], targets)
        norms = torch.sqrt(sum((g.double() ** 2).flatten(1).sum(1) for g in grads.values()))

        def evaluate(rows: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
            return evaluator.predictions({k: g[rows] for k, g in grads.items()}, xs[t_idx[rows]], eta)

        steps = _lockstep_search(evaluate, targets, len(block), device, search).cpu().numpy()
        norms = norms.cpu().numpy()  # one copy per chunk, not one wait for the GPU per pair
        for j, (t, c) in enumerate(block):
            out["step"][t, c] = steps[j]
            out["grad_norm"][t, c] = norms[j]
            out["distance"][t, c] = steps[j] * norms[j]


CPU_CHUNK_BYTES = 1 << 28  # 256 MiB of per-pair parameter copies per chunk on a CPU


def chunk_bytes(device: torch.device) -> int:
    """Default memory for one chunk of pairs: a quarter of the GPU's free memory (the estimate counts the gradients
    and the stepped copy, not the activations and vmap's work space), 256 MiB on a CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(CPU_CHUNK_BYTES, free // 4)
    return CPU_CHUNK_BYTES


def distance_matrix(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    *,
    poison_classes: list[int] | None = None,
    last_layer_only: bool = False,
    alpha: float = 1e-4,
    m_init: float = 1.0,
    max_doublings: int = 40,
    device: torch.device | str = "auto",
    max_chunk_bytes: int | None = None,
    method: str = "auto",
    show_progress: bool = True,
) -> DistanceMatrix:
    """δ for every target x poison class.

    Parameters
    ----------
    images : targets, uint8 ``(T, 3, H, W)`` (or float in [0, 1]).
    labels : their true labels ``(T,)``; the pair (target, own label) is skipped (NaN).
    poison_classes : the classes to test (default: all).
    max_chunk_bytes : memory for the per-pair parameter copies of one chunk (pairs are processed in chunks; the
        more pairs per chunk, the fewer lockstep passes). Default: a quarter of the free GPU memory, 256 MiB on a CPU.
    method : ``"batched"`` (pairs in lockstep with `torch.func`, never copying the model per target), ``"loop"``
        (`poisoning_distance` pair by pair), or ``"auto"``: batched on a GPU, the loop on a CPU, where vmapped
        convolutions with per-pair weights are slower than the plain loop (benchmarks/RESULTS.md). Both give the
        same steps to the tolerance `alpha`.

    Returns
    -------
    `DistanceMatrix` with ``(T, C)`` arrays over all C classes (untested classes are NaN).
    """
    search = DeltaSearch(alpha, m_init, max_doublings)
    check_choice("method", method, ("auto", "batched", "loop"))
    device = get_device(device)
    if method == "auto":
        method = auto_method(device)
    model.to(device)
    with eval_mode(model):
        xs = to_unit(check_images(images, "the target images"), device)
        labels_np = np.asarray(torch.as_tensor(labels).cpu())
        if len(labels_np) != len(xs):
            raise InvalidChoiceError(f"got {len(xs)} images but {len(labels_np)} labels")
        with torch.no_grad():
            logits = model(xs)  # one forward pass gives the clean predictions and the class count
        pred_before = logits.argmax(1).cpu().numpy()
        num_classes = int(logits.shape[1])
        classes = list(range(num_classes)) if poison_classes is None else [int(c) for c in poison_classes]
        for c in classes:
            if not 0 <= c < num_classes:
                raise InvalidChoiceError(f"poison class {c} is not in [0, {num_classes})")
        check_labels(labels_np, num_classes)
        pairs = [(t, c) for t in range(len(xs)) for c in classes if c != labels_np[t]]
        shape = (len(xs), num_classes)
        out = {k: np.full(shape, np.nan) for k in ("step", "grad_norm", "distance")}
        if method == "loop":
            for t, c in progress(pairs, enable=show_progress and len(pairs) > 1, desc="δ pairs", unit="pair"):
                result = poisoning_distance(
                    model,
                    xs[t],
                    c,
                    last_layer_only=last_layer_only,
                    alpha=search.alpha,
                    m_init=search.m_init,
                    max_doublings=search.max_doublings,
                    device=device,
                )
                out["step"][t, c], out["grad_norm"][t, c] = result.step, result.grad_norm
                out["distance"][t, c] = result.distance
        else:
            budget = chunk_bytes(device) if max_chunk_bytes is None else max_chunk_bytes
            _batched_pairs(
                model,
                xs,
                pairs,
                out,
                search=search,
                last_layer_only=last_layer_only,
                device=device,
                max_chunk_bytes=budget,
                show_progress=show_progress,
            )
    return DistanceMatrix(out["step"], out["grad_norm"], out["distance"], pred_before, labels_np, last_layer_only)

"""The optimisers that craft poisons: signed Adam with projection and restarts (Witches' Brew's, shared by all three
attacks), and the poisoning benchmark's per-poison gradient descent for feature collision; and the quantisation of
a perturbation into released uint8 images."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn as nn

from .utils import progress

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]  # loss(x, indices, generator)


class CraftingSettings(Protocol):
    """What the optimisers read of an attack's settings (`attacks.AttackConfig` has all of it); a protocol, so this
    module stays below the attacks that use it."""

    eps: float  # l∞ bound on the perturbation, in [0, 1] pixel units
    steps: int  # optimisation steps per restart
    restarts: int  # signed Adam: restarts, the best kept
    step_size: float  # signed Adam: lr as a multiple of eps; benchmark descent: the first step size
    batch_size: int  # poisons per forward pass
    beta: float  # benchmark descent: weight of ‖x − b‖² (0: none)
    watermark: float  # benchmark descent: share of the target blended into each starting poison


def _project(delta: torch.Tensor, base: torch.Tensor, eps: float) -> None:
    """In place: into the l∞ ball, then so that base + delta stays in [0, 1]."""
    delta.clamp_(-eps, eps)
    delta.copy_((base + delta).clamp_(0, 1) - base)


def signed_adam(
    objective: Objective,
    base: torch.Tensor,
    cfg: CraftingSettings,
    *,
    seed: int = 0,
    show_progress: bool = False,
    desc: str = "crafting",
) -> tuple[torch.Tensor, list[float], list[float]]:
    """Minimise `objective` over perturbations of `base` with signed Adam, projection and restarts.

    Returns
    -------
    ``(delta, losses, restart_losses)``: the best restart's perturbation, its loss after every step, and every
    restart's final loss (measured once more after the last step, without augmentation noise when it is off).
    """
    n = len(base)
    batches = [torch.arange(b, min(b + cfg.batch_size, n), device=base.device) for b in range(0, n, cfg.batch_size)]
    milestones = sorted({int(cfg.steps // 2.667), int(cfg.steps // 1.6), int(cfg.steps // 1.142)} - {0})
    best: tuple[float, torch.Tensor | None, list[float]] = (math.inf, None, [])
    restart_losses: list[float] = []
    bar = progress(range(cfg.restarts * cfg.steps), enable=show_progress, desc=desc, unit="step", leave=False)
    ticks = iter(bar)
    for restart in range(cfg.restarts):
        gen = torch.Generator().manual_seed(seed * 7919 + restart)
        delta = (torch.randn(base.shape, generator=gen) * cfg.eps).to(base.device)
        _project(delta, base, cfg.eps)
        delta.requires_grad_(True)
        optimizer = torch.optim.Adam([delta], lr=cfg.step_size * cfg.eps)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        step_losses = []  # kept on the device: reading each one would make the host wait for the GPU every step
        for step in range(cfg.steps):
            total = torch.zeros((), device=base.device)
            grad = torch.zeros_like(delta)
            for idx in batches:
                loss = objective(base[idx] + delta[idx], idx, gen)
                grad[idx] += torch.autograd.grad(loss, delta)[0][idx]
                total += loss.detach() * (len(idx) / n)
            delta.grad = grad.sign_()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                _project(delta, base, cfg.eps)
            step_losses.append(total)
            next(ticks, None)
            if show_progress and hasattr(bar, "set_postfix") and (step % 10 == 0 or step == cfg.steps - 1):
                bar.set_postfix(restart=restart + 1, loss=f"{float(total):.4f}")
        losses = torch.stack(step_losses).tolist() if step_losses else []
        final = sum(float(objective(base[idx] + delta[idx], idx, gen).detach()) * len(idx) / n for idx in batches)
        restart_losses.append(final)
        if final < best[0]:
            best = (final, delta.detach().clone(), losses)
    if hasattr(bar, "close"):
        bar.close()
    return best[1], best[2], restart_losses


def benchmark_descent(
    model: nn.Module, target: torch.Tensor, base: torch.Tensor, cfg: CraftingSettings, *, show_progress: bool = False
) -> tuple[torch.Tensor, list[float], list[float]]:
    """Feature collision as the poisoning benchmark optimises it, every poison on its own.

    Each poison starts at ``watermark · x_t + (1 − watermark) · b`` and takes up to ``steps`` plain gradient steps
    of size ``step_size`` on ``‖φ(x) − φ(x_t)‖² + beta ‖x − b‖²`` (raw, not relative), each followed by projection
    into the l∞ ball around b and [0, 1]. The first step is always taken (it brings the watermarked start into the
    ball); a later step that would raise the poison's loss is not taken and its step size is multiplied by 0.2; a
    poison stops when a step changes it by less than 1e-5 relative. Deterministic (no restarts).

    Returns ``(delta, losses, restart_losses)`` as `signed_adam` does (mean loss over the poisons per step).
    """
    with torch.no_grad():
        target_feat = model.features(target[None]).detach()

    def per_poison(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        loss = ((model.features(x) - target_feat) ** 2).sum(1)
        return loss + cfg.beta * ((x - b) ** 2).flatten(1).sum(1) if cfg.beta else loss

    chunks = [slice(b, b + cfg.batch_size) for b in range(0, len(base), cfg.batch_size)]
    x = (cfg.watermark * target[None] + (1 - cfg.watermark) * base).detach()
    step = torch.full((len(base),), float(cfg.step_size), device=base.device)
    active = torch.ones(len(base), dtype=torch.bool, device=base.device)
    current = torch.full((len(base),), math.inf, device=base.device)  # the first step is always taken (projecting)
    losses = []
    for _ in progress(range(cfg.steps), enable=show_progress, desc="crafting FC (benchmark)", unit="step", leave=False):
        candidate = x.clone()
        for c in chunks:
            xc = x[c].clone().requires_grad_(True)
            grad = torch.autograd.grad(per_poison(xc, base[c]).sum(), xc)[0]
            moved = xc.detach() - step[c, None, None, None] * grad
            candidate[c] = base[c] + (moved - base[c]).clamp(-cfg.eps, cfg.eps)
        candidate.clamp_(0, 1)
        with torch.no_grad():
            new = torch.cat([per_poison(candidate[c], base[c]) for c in chunks])
        better = active & (new <= current)
        change = (candidate - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
        x = torch.where(better[:, None, None, None], candidate, x)
        current = torch.where(better, new, current)
        step = torch.where(active & ~better, step * 0.2, step)
        active = active & ~(better & (change < 1e-5))
        losses.append(float(current.mean()))
        if not bool(active.any()):
            break
    return (x - base).detach(), losses, [float(current.mean())]


def quantise(base: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """uint8 images closest to base + delta whose change stays within ⌊255 eps⌋ pixel levels (and in [0, 255])."""
    base255 = (base * 255).round()
    levels = math.floor(eps * 255 + 1e-6)
    step = (delta * 255).round().clamp(-levels, levels)
    return (base255 + step).clamp(0, 255).to(torch.uint8)

"""Clean-label poison crafting: gradient matching (Witches' Brew), Bullseye Polytope and feature collision (Poison Frogs).

One tensor-in/tensor-out API for all three. Given a clean surrogate model, one target image, the class the attacker
wants for it and the base images that become poisons (training images of that class, which keep their labels), an
attack returns `Poisons`: the poisoned images (uint8, as a released data set would hold them), their indices in the
training set and the perturbation. Every perturbation lies in the l∞ ball of radius ``eps`` and keeps pixels in [0, 1].

All three share one optimiser, as in Witches' Brew's ``forest`` (the attacks of arXiv 2509.06896's experiments): signed Adam on the
perturbation with step ``step_size * eps``, the step divided by 10 at 3/8, 5/8 and 7/8 of the steps, random-normal
initialisation, projection after every step, differentiable crop + flip augmentation while crafting, and several
restarts keeping the one with the lowest final loss. They differ only in the loss:

- ``gm``: 1 − cos(∇_w CE(f(x_t), y_adv), ∇_w CE(f(aug(x_p + Δ)), y_p)) over the parameters the victim trains: all of
  them from scratch, the linear head in the transfer setting (Geiping et al. 2021);
- ``bp``: ‖mean_j φ(x_j + Δ_j) − φ(x_t)‖² / ‖φ(x_t)‖², φ the penultimate features (Aghakhani et al. 2021);
- ``fc``: mean_j ‖φ(x_j + Δ_j) − φ(x_t)‖² / ‖φ(x_t)‖², each poison collides on its own (Shafahi et al. 2018), here with
  the l∞ bound of the poisoning benchmark instead of the original l2 penalty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import augment_batch
from .data import check_images, to_unit
from .errors import InvalidChoiceError, ResultsFileError, check_choice, check_positive
from .utils import atomic_write, eval_mode, get_device, progress

ATTACKS = ("gm", "bp", "fc")
SETTINGS = ("scratch", "transfer")

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


# -----------------------------------------------------------------------------------------------------------------
#  configuration
# -----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackConfig:
    """One attack and its budget."""

    name: str = "gm"  # "gm" (gradient matching) | "bp" (Bullseye Polytope) | "fc" (feature collision)
    eps: float = 16 / 255  # l∞ radius of the perturbation, in [0, 1] pixel units
    budget: float = 0.01  # poisons as a fraction of the training set (ignored when `num_poisons` is set)
    num_poisons: int | None = None  # an absolute number of poisons instead of `budget`
    steps: int = 250  # signed-Adam steps per restart
    restarts: int = 8  # independent restarts; the lowest final loss wins
    step_size: float = 0.1  # Adam learning rate as a fraction of eps (Witches' Brew's tau)
    batch_size: int = 512  # poisons per crafting batch
    augment: bool = True  # differentiable crop + flip while crafting
    crop_padding: int = 4  # padding of that random crop
    setting: str = "scratch"  # victims: "scratch" (retrained from scratch) | "transfer" (frozen features, linear head)

    def __post_init__(self) -> None:
        check_choice("attack", self.name, ATTACKS)
        check_choice("setting", self.setting, SETTINGS)
        check_positive("eps", self.eps)
        if self.eps > 1:
            raise InvalidChoiceError(f"eps is in [0, 1] pixel units (16/255 = {16 / 255:.4f}), got {self.eps}")
        check_positive("budget", self.budget)
        if self.budget >= 1:
            raise InvalidChoiceError(f"budget is a fraction of the training set in (0, 1), got {self.budget}")
        if self.num_poisons is not None:
            check_positive("num_poisons", self.num_poisons, integer=True)
        check_positive("steps", self.steps, integer=True)
        check_positive("restarts", self.restarts, integer=True)
        check_positive("step_size", self.step_size)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("crop_padding", self.crop_padding, allow_zero=True, integer=True)

    @classmethod
    def full(cls, name: str = "gm", **overrides: Any) -> AttackConfig:
        """The paper's settings: GM and BP as in Witches' Brew (ε 16/255, 1 %, 250 steps x 8 restarts, from scratch);
        FC as in the poisoning benchmark's transfer setting (25 poisons, ε 8/255, frozen features + linear head)."""
        check_choice("attack", name, ATTACKS)
        if name == "fc":
            base = cls(name="fc", eps=8 / 255, num_poisons=25, steps=500, restarts=1, augment=False,
                       setting="transfer")
        else:
            base = cls(name=name)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, name: str = "gm", **overrides: Any) -> AttackConfig:
        """CPU-sized: the same losses and budgets, 40 steps and one restart."""
        return dataclasses.replace(cls.full(name), **{"steps": 40, "restarts": 1, **overrides})

    @property
    def label(self) -> str:
        return self.name.upper()

    def count(self, train_size: int) -> int:
        """How many poisons: `num_poisons`, else ⌈budget · |train|⌉ (Witches' Brew's rule)."""
        return int(self.num_poisons) if self.num_poisons is not None else math.ceil(self.budget * train_size - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Poisons:
    """The result of an attack: what goes into the training set, where, and by how much it was changed."""

    images: torch.Tensor  # (P, 3, H, W) uint8: the poisoned training images
    indices: torch.Tensor  # (P,) long: their positions in the training set
    perturbation: torch.Tensor  # (P, 3, H, W) float: images/255 − clean/255, inside [−eps, eps]
    losses: list[float] = field(default_factory=list)  # the winning restart's loss after every step
    restart_losses: list[float] = field(default_factory=list)  # final loss of every restart
    attack: str = ""

    @property
    def final_loss(self) -> float:
        return min(self.restart_losses) if self.restart_losses else math.nan

    def save(self, path) -> None:
        state = {"images": self.images.cpu(), "indices": self.indices.cpu(), "losses": self.losses,
                 "restart_losses": self.restart_losses, "attack": self.attack}
        atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path, clean_images: torch.Tensor) -> Poisons:
        """Read `save`'s file; `clean_images` (the training set) rebuilds the perturbation."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            images, indices = state["images"], state["indices"]
            perturbation = (images.float() - clean_images[indices].cpu().float()) / 255
            return cls(images, indices, perturbation, list(state["losses"]), list(state["restart_losses"]),
                       state["attack"])
        except Exception as exc:
            raise ResultsFileError(f"{path} is not a readable poison file ({type(exc).__name__}: {str(exc)[:120]}). "
                                   f"Fix: delete it; a study crafts these poisons again (they are seeded).") from None


def poison_indices(train_labels: torch.Tensor | np.ndarray, poison_class: int, count: int) -> torch.Tensor:
    """The first `count` training images of `poison_class`, in data-set order (Witches' Brew's deterministic choice)."""
    labels = torch.as_tensor(np.asarray(train_labels.cpu() if torch.is_tensor(train_labels) else train_labels))
    members = torch.nonzero(labels == poison_class).squeeze(1)
    if count > len(members):
        raise InvalidChoiceError(f"{count} poisons asked for, but class {poison_class} has only {len(members)} training "
                                 f"images; lower the budget (or num_poisons) to at most {len(members)} images")
    if count < 1:
        raise InvalidChoiceError("the budget gives no poison at all; raise the budget or set num_poisons")
    return members[:count]


# -----------------------------------------------------------------------------------------------------------------
#  the losses
# -----------------------------------------------------------------------------------------------------------------
def _augmenter(cfg: AttackConfig) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    if not cfg.augment:
        return lambda x, gen: x
    return lambda x, gen: augment_batch(x, crop_padding=cfg.crop_padding, flip=True, generator=gen)


def gradient_matching_objective(model: nn.Module, target: torch.Tensor, adv_class: int, base_labels: torch.Tensor,
                                cfg: AttackConfig) -> Objective:
    """1 − cosine between the target's adversarial gradient and the poisons' training gradient.

    The gradients are over the parameters the victim trains: all of them for victims retrained from scratch, the
    linear head's alone for transfer victims (which keep the feature extractor frozen).
    """
    trained = model.head if cfg.setting == "transfer" and hasattr(model, "head") else model
    params = [p for p in trained.parameters() if p.requires_grad]
    adv = torch.tensor([adv_class], device=target.device)
    target_grad = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(target[None]), adv), params)]
    target_norm = torch.sqrt(sum((g * g).sum() for g in target_grad))
    augment = _augmenter(cfg)

    def objective(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        loss = F.cross_entropy(model(augment(x, gen)), base_labels[idx])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, target_grad))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        return 1 - dot / (norm * target_norm + 1e-12)

    return objective


def _target_features(model: nn.Module, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.features(target[None]).detach()


def bullseye_objective(model: nn.Module, target: torch.Tensor, cfg: AttackConfig) -> Objective:
    """Relative squared distance between the poisons' mean feature vector and the target's (the bullseye)."""
    target_feat = _target_features(model, target)
    scale = (target_feat ** 2).sum()
    augment = _augmenter(cfg)

    def objective(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return ((model.features(augment(x, gen)).mean(0, keepdim=True) - target_feat) ** 2).sum() / scale

    return objective


def collision_objective(model: nn.Module, target: torch.Tensor, cfg: AttackConfig) -> Objective:
    """Mean relative squared distance of each poison's features to the target's."""
    target_feat = _target_features(model, target)
    scale = (target_feat ** 2).sum()
    augment = _augmenter(cfg)

    def objective(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return ((model.features(augment(x, gen)) - target_feat) ** 2).sum(1).mean() / scale

    return objective


# -----------------------------------------------------------------------------------------------------------------
#  the shared optimiser
# -----------------------------------------------------------------------------------------------------------------
def _project(delta: torch.Tensor, base: torch.Tensor, eps: float) -> None:
    """In place: into the l∞ ball, then so that base + delta stays in [0, 1]."""
    delta.clamp_(-eps, eps)
    delta.copy_((base + delta).clamp_(0, 1) - base)


def signed_adam(objective: Objective, base: torch.Tensor, cfg: AttackConfig, *, seed: int = 0,
                show_progress: bool = False, desc: str = "crafting") -> tuple[torch.Tensor, list[float], list[float]]:
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


def quantise(base: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """uint8 images closest to base + delta whose change stays within ⌊255 eps⌋ pixel levels (and in [0, 255])."""
    base255 = (base * 255).round()
    levels = math.floor(eps * 255 + 1e-6)
    step = (delta * 255).round().clamp(-levels, levels)
    return (base255 + step).clamp(0, 255).to(torch.uint8)


def craft_from_class(attack: AttackConfig, surrogate: nn.Module, target_image: torch.Tensor, poison_class: int,
                     train, *, seed: int, device: torch.device | str = "auto", show_progress: bool = False) -> Poisons:
    """`craft` on the first ``attack.count(len(train))`` training images of `poison_class` (Witches' Brew's rule)."""
    idx = poison_indices(train.labels, poison_class, attack.count(len(train)))
    local = idx.to(train.images.device)
    return craft(attack, surrogate, target_image, poison_class, train.images[local], train.labels[local], idx,
                 seed=seed, device=device, show_progress=show_progress)


def craft(attack: AttackConfig, model: nn.Module, target_image: torch.Tensor, adv_class: int,
          base_images: torch.Tensor, base_labels: torch.Tensor, base_indices: torch.Tensor | None = None, *,
          seed: int = 0, device: torch.device | str = "auto", show_progress: bool = False) -> Poisons:
    """Craft clean-label poisons against one target.

    Parameters
    ----------
    attack : which attack and its budget (`AttackConfig.quick` / `.full`).
    model : the clean surrogate (a `Classifier`: images in [0, 1], with `.features`); its weights are not changed and
        its train/eval mode is restored.
    target_image : ``(3, H, W)`` uint8 or float in [0, 1]: the test image whose prediction should become `adv_class`.
    base_images, base_labels : ``(P, 3, H, W)`` clean training images that become the poisons, and their (kept) labels.
    base_indices : their positions in the training set (default ``0..P-1``), carried into the result.
    seed : seeds initialisation and augmentation of every restart.

    Returns
    -------
    `Poisons` with uint8 images, indices and the perturbation, ``|perturbation| <= eps`` and pixels in [0, 1].
    """
    device = get_device(device)
    check_images(target_image, "the target image", batch=False)
    check_images(base_images, "the base images")
    if target_image.ndim != 3 or base_images.ndim != 4 or target_image.shape != base_images.shape[1:]:
        raise InvalidChoiceError(f"target must be (3, H, W) and bases (P, 3, H, W) of the same size; got "
                                 f"{tuple(target_image.shape)} and {tuple(base_images.shape)}")
    if len(base_labels) != len(base_images):
        raise InvalidChoiceError(f"{len(base_images)} base images but {len(base_labels)} labels")
    model = model.to(device)
    with eval_mode(model):
        num_classes = int(model(to_unit(target_image[None], device)).shape[1])
        check_choice("adversarial class", int(adv_class), range(num_classes))
        target = to_unit(target_image, device)
        base = to_unit(base_images, device)
        labels = torch.as_tensor(base_labels, device=device).long()
        if attack.name == "gm":
            objective = gradient_matching_objective(model, target, int(adv_class), labels, attack)
        elif attack.name == "bp":
            objective = bullseye_objective(model, target, attack)
        else:
            objective = collision_objective(model, target, attack)
        delta, losses, restart_losses = signed_adam(objective, base, attack, seed=seed,
                                                    show_progress=show_progress, desc=f"crafting {attack.label}")
    images = quantise(base, delta, attack.eps).cpu()
    indices = torch.arange(len(base)) if base_indices is None else torch.as_tensor(base_indices).long().cpu()
    perturbation = images.float() / 255 - (base.cpu() * 255).round() / 255
    return Poisons(images, indices, perturbation, losses, restart_losses, attack.name)

"""Clean-label poison crafting: gradient matching (Witches' Brew), Bullseye Polytope, feature collision (Poison Frogs).

One tensor-in/tensor-out API for all three. Given a clean surrogate model, one target image, the class the attacker
wants for it and the base images that become poisons (training images of that class, which keep their labels), an
attack returns `Poisons`: the poisoned images (uint8, as a released data set would hold them), their indices in the
training set and the perturbation. Every perturbation lies in the l∞ ball of radius ``eps`` and keeps pixels in [0, 1].

All three share one optimiser (`optimisers.signed_adam`), as in Witches' Brew's ``forest`` (the attacks of arXiv
2509.06896's experiments): signed Adam on the perturbation with step ``step_size * eps``, the step divided by 10 at
3/8, 5/8 and 7/8 of the steps, random-normal initialisation, projection after every step, differentiable shift + flip
augmentation while crafting when the victims train with it (whole-pixel crops, or Witches' Brew's bilinear shifts),
and several restarts keeping the one with the lowest final loss. They differ only in the loss:

- ``gm``: 1 − cos(∇_w CE(f(x_t), y_adv), ∇_w CE(f(aug(x_p + Δ)), y_p)) over the parameters the victim trains: all of
  them from scratch, the linear head in the transfer setting (Geiping et al. 2021);
- ``bp``: ‖mean_j φ(x_j + Δ_j) − φ(x_t)‖² / ‖φ(x_t)‖², φ the penultimate features (Aghakhani et al. 2021);
- ``fc``: mean_j ‖φ(x_j + Δ_j) − φ(x_t)‖² / ‖φ(x_t)‖², each poison collides on its own (Shafahi et al. 2018), within
  the l∞ bound of the poisoning benchmark, plus Poison Frogs' β‖x − base‖² if ``beta`` > 0; or crafted with the
  benchmark's own per-poison gradient descent (`AttackConfig.benchmark_fc`, `optimisers.benchmark_descent`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import augment_batch, shift_bilinear
from .config import ConfigDict
from .data import check_images, to_unit
from .errors import InvalidChoiceError, ResultsFileError, check_choice, check_number, check_positive
from .optimisers import Objective, benchmark_descent, quantise, signed_adam
from .utils import atomic_write, check_flag, eval_mode, get_device

ATTACKS = ("gm", "bp", "fc")
SETTINGS = ("scratch", "transfer")
SHIFTS = ("crop", "bilinear")
OPTIMIZERS = ("signed_adam", "benchmark")


# -----------------------------------------------------------------------------------------------------------------
#  configuration
# -----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackConfig(ConfigDict):
    """One attack and its budget."""

    HASH_LENGTH: ClassVar[int] = 10

    name: str = "gm"  # "gm" (gradient matching) | "bp" (Bullseye Polytope) | "fc" (feature collision)
    eps: float = 16 / 255  # l∞ radius of the perturbation, in [0, 1] pixel units
    budget: float = 0.01  # poisons as a fraction of the training set (ignored when `num_poisons` is set)
    num_poisons: int | None = None  # an absolute number of poisons instead of `budget`
    steps: int = 250  # signed-Adam steps per restart
    restarts: int = 8  # independent restarts; the lowest final loss wins
    step_size: float = 0.1  # Adam learning rate as a fraction of eps (Witches' Brew's tau)
    batch_size: int = 512  # poisons per crafting batch
    augment: bool | None = None  # shift + flip while crafting (None: as the victims: on from scratch, off for heads)
    crop_padding: int = 4  # largest shift of that augmentation, in pixels
    setting: str = "scratch"  # victims: "scratch" (retrained from scratch) | "transfer" (frozen features, linear head)
    shift: str = "crop"  # crafting shifts: "crop" (integer pad-crop, as victims train) | "bilinear" (Witches' Brew's)
    beta: float = 0.0  # fc: weight of Poison Frogs' β‖x − base‖² term (per poison, pixels in [0, 1])
    optimizer: str = "signed_adam"  # "signed_adam" (shared) | "benchmark" (fc: the poisoning benchmark's descent)
    watermark: float = 0.0  # fc with "benchmark": opacity of the target blended into each starting image (0.3 there)

    ADDED: ClassVar[dict[str, Any]] = {"shift": "crop", "beta": 0.0, "optimizer": "signed_adam", "watermark": 0.0}

    def __post_init__(self) -> None:
        check_choice("attack", self.name, ATTACKS)
        check_choice("setting", self.setting, SETTINGS)
        if self.augment is None:  # follow the victims: they see augmented images only when trained from scratch
            object.__setattr__(self, "augment", self.setting == "scratch")
        object.__setattr__(self, "augment", check_flag("augment", self.augment))
        check_choice("shift", self.shift, SHIFTS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_positive("beta", self.beta, allow_zero=True)
        check_number("watermark", self.watermark)
        if not 0 <= self.watermark < 1:
            raise InvalidChoiceError(f"watermark is an opacity in [0, 1), got {self.watermark}")
        if self.name != "fc" and (self.beta or self.optimizer != "signed_adam" or self.watermark):
            raise InvalidChoiceError(
                f"beta, optimizer='benchmark' and watermark belong to feature collision ('fc'), "
                f"not {self.name!r}; leave them at 0, 'signed_adam' and 0"
            )
        check_positive("eps", self.eps)
        if self.eps > 1:
            raise InvalidChoiceError(f"eps is in [0, 1] pixel units (16/255 = {16 / 255:.4f}), got {self.eps}")
        check_positive("budget", self.budget)
        if self.budget >= 1:
            raise InvalidChoiceError(f"budget is a fraction of the training set in (0, 1), got {self.budget}")
        if self.num_poisons is not None:
            check_positive("num_poisons", self.num_poisons, integer=True)
            default = next(f.default for f in dataclasses.fields(self) if f.name == "budget")
            if self.budget != default:  # one of them would be ignored without a word
                raise InvalidChoiceError(
                    f"give the poisons as a budget or as a number, not both (budget {self.budget}, num_poisons "
                    f"{self.num_poisons}); drop one of them"
                )
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
        base = dict(eps=8 / 255, num_poisons=25, steps=500, restarts=1, setting="transfer") if name == "fc" else {}
        if "budget" in overrides and "num_poisons" not in overrides:
            base.pop("num_poisons", None)  # an explicit budget wins over the preset's poison count
        return cls(name=name, **{**base, **overrides})

    @classmethod
    def quick(cls, name: str = "gm", **overrides: Any) -> AttackConfig:
        """CPU-sized: the same losses and budgets, 40 steps and one restart."""
        return cls.full(name, **{"steps": 40, "restarts": 1, **overrides})

    @classmethod
    def preset(cls, quick: bool, name: str = "gm", **overrides: Any) -> AttackConfig:
        """`quick` or `full` by a flag: ``AttackConfig.preset(QUICK, "gm", budget=BUDGET)``."""
        return (cls.quick if quick else cls.full)(name, **overrides)

    @classmethod
    def benchmark_fc(cls, **overrides: Any) -> AttackConfig:
        """Feature collision as the poisoning benchmark crafts it (Schwarzschild et al. 2021, ``craft_poisons_fc``):
        each of 25 poisons starts from its base blended with 30 % of the target and takes 120 plain gradient steps
        of size 0.001 on ‖φ(x) − φ(x_t)‖², a step that raises the loss being shrunk x0.2, within ε 8/255."""
        return cls.full(
            "fc", **{"optimizer": "benchmark", "steps": 120, "step_size": 0.001, "watermark": 0.3, **overrides}
        )

    def for_setting(self, setting: str) -> AttackConfig:
        """The same attack against victims of another setting, its crafting augmentation following them."""
        return dataclasses.replace(self, setting=setting, augment=None)

    @property
    def label(self) -> str:
        return self.name.upper()

    def count(self, train_size: int) -> int:
        """How many poisons: `num_poisons`, else ``ceil(budget * len(train))`` (Witches' Brew's rule)."""
        return int(self.num_poisons) if self.num_poisons is not None else math.ceil(self.budget * train_size - 1e-9)


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
        state = {
            "images": self.images.cpu(),
            "indices": self.indices.cpu(),
            "losses": self.losses,
            "restart_losses": self.restart_losses,
            "attack": self.attack,
        }
        atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path, clean_images: torch.Tensor) -> Poisons:
        """Read `save`'s file; `clean_images` (the training set) rebuilds the perturbation."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            images, indices = state["images"], state["indices"]
            perturbation = (images.float() - clean_images[indices].cpu().float()) / 255
            return cls(
                images, indices, perturbation, list(state["losses"]), list(state["restart_losses"]), state["attack"]
            )
        except Exception as exc:
            raise ResultsFileError(
                f"{path} is not a readable poison file ({type(exc).__name__}: {str(exc)[:120]}). "
                f"Fix: delete it; a study crafts these poisons again (they are seeded)."
            ) from None


def poison_indices(train_labels: torch.Tensor | np.ndarray, poison_class: int, count: int) -> torch.Tensor:
    """The first `count` training images of `poison_class`, in data-set order (Witches' Brew's deterministic choice)."""
    labels = torch.as_tensor(np.asarray(train_labels.cpu() if torch.is_tensor(train_labels) else train_labels))
    members = torch.nonzero(labels == poison_class).squeeze(1)
    if count > len(members):
        raise InvalidChoiceError(
            f"{count} poisons asked for, but class {poison_class} has only {len(members)} "
            f"training images; lower the budget (or num_poisons) to at most {len(members)} images"
        )
    if count < 1:
        raise InvalidChoiceError("the budget gives no poison at all; raise the budget or set num_poisons")
    return members[:count]


# -----------------------------------------------------------------------------------------------------------------
#  the losses
# -----------------------------------------------------------------------------------------------------------------
def _augmenter(cfg: AttackConfig) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    if not cfg.augment:
        return lambda x, gen: x
    if cfg.shift == "bilinear":
        return lambda x, gen: shift_bilinear(x, cfg.crop_padding, flip=True, generator=gen)
    return lambda x, gen: augment_batch(x, crop_padding=cfg.crop_padding, flip=True, generator=gen)


def gradient_matching_objective(
    model: nn.Module, target: torch.Tensor, adv_class: int, base_labels: torch.Tensor, cfg: AttackConfig
) -> Objective:
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
    scale = (target_feat**2).sum()
    augment = _augmenter(cfg)

    def objective(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return ((model.features(augment(x, gen)).mean(0, keepdim=True) - target_feat) ** 2).sum() / scale

    return objective


def collision_objective(
    model: nn.Module, target: torch.Tensor, cfg: AttackConfig, base: torch.Tensor | None = None
) -> Objective:
    """Mean relative squared distance of each poison's features to the target's, plus ``beta`` times each poison's
    squared distance to its base image (Poison Frogs' β‖x − b‖², needs `base`)."""
    target_feat = _target_features(model, target)
    scale = (target_feat**2).sum()
    augment = _augmenter(cfg)
    if cfg.beta and base is None:
        raise InvalidChoiceError("feature collision with beta > 0 needs the base images")

    def objective(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        loss = ((model.features(augment(x, gen)) - target_feat) ** 2).sum(1).mean() / scale
        if cfg.beta:
            loss = loss + cfg.beta * ((x - base[idx]) ** 2).flatten(1).sum(1).mean()
        return loss

    return objective


def check_attack_inputs(target_image: torch.Tensor, images: torch.Tensor, labels, *, what: str) -> None:
    """One ``(3, H, W)`` target and ``(P, 3, H, W)`` images of its size with P labels (`what`: "base", "poison"),
    checked before an attack crafts or measures anything."""
    check_images(target_image, "the target image", batch=False)
    check_images(images, f"the {what} images")
    if target_image.ndim != 3 or images.ndim != 4 or target_image.shape != images.shape[1:]:
        raise InvalidChoiceError(
            f"target must be (3, H, W) and {what} images (P, 3, H, W) of the same size; got "
            f"{tuple(target_image.shape)} and {tuple(images.shape)}"
        )
    if len(labels) != len(images):
        raise InvalidChoiceError(f"{len(images)} {what} images but {len(labels)} labels")


def craft_from_class(
    attack: AttackConfig,
    surrogate: nn.Module,
    target_image: torch.Tensor,
    poison_class: int,
    train,
    *,
    seed: int,
    device: torch.device | str = "auto",
    show_progress: bool = False,
) -> Poisons:
    """`craft` on the first ``attack.count(len(train))`` training images of `poison_class` (Witches' Brew's rule)."""
    idx = poison_indices(train.labels, poison_class, attack.count(len(train)))
    local = idx.to(train.images.device)
    return craft(
        attack,
        surrogate,
        target_image,
        poison_class,
        train.images[local],
        train.labels[local],
        idx,
        seed=seed,
        device=device,
        show_progress=show_progress,
    )


def craft(
    attack: AttackConfig,
    model: nn.Module,
    target_image: torch.Tensor,
    adv_class: int,
    base_images: torch.Tensor,
    base_labels: torch.Tensor,
    base_indices: torch.Tensor | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "auto",
    show_progress: bool = False,
) -> Poisons:
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
    check_attack_inputs(target_image, base_images, base_labels, what="base")
    model = model.to(device)
    with eval_mode(model):
        num_classes = int(model(to_unit(target_image[None], device)).shape[1])
        check_choice("adversarial class", int(adv_class), range(num_classes))
        target = to_unit(target_image, device)
        base = to_unit(base_images, device)
        labels = torch.as_tensor(base_labels, device=device).long()
        if attack.optimizer == "benchmark":
            delta, losses, restart_losses = benchmark_descent(model, target, base, attack, show_progress=show_progress)
        else:
            objective = attack_objective(attack, model, target, int(adv_class), base, labels)
            delta, losses, restart_losses = signed_adam(
                objective, base, attack, seed=seed, show_progress=show_progress, desc=f"crafting {attack.label}"
            )
    images = quantise(base, delta, attack.eps).cpu()
    indices = torch.arange(len(base)) if base_indices is None else torch.as_tensor(base_indices).long().cpu()
    perturbation = images.float() / 255 - (base.cpu() * 255).round() / 255
    return Poisons(images, indices, perturbation, losses, restart_losses, attack.name)


def attack_objective(
    attack: AttackConfig,
    model: nn.Module,
    target: torch.Tensor,
    adv_class: int,
    base: torch.Tensor,
    labels: torch.Tensor,
) -> Objective:
    """The loss `attack` minimises over poisons of `base` (float images in [0, 1]) against one target."""
    if attack.name == "gm":
        return gradient_matching_objective(model, target, adv_class, labels, attack)
    if attack.name == "bp":
        return bullseye_objective(model, target, attack)
    return collision_objective(model, target, attack, base)

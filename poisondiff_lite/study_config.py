"""A study's configuration (`StudyConfig` with quick / lab / full presets), its stable hash and folder, the ids
of setups, attacks and baselines that key the study's log, and its plan (`StudyPlan`: what is left to do, shared by
the serial runner in `study` and the cluster runner in `cluster`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .attacks import ATTACKS, AttackConfig
from .budget import VARIANTS, TauSettings
from .config import ConfigDict, TrainConfig, TrajectoryConfig
from .errors import InvalidChoiceError, check_choice, check_number, check_positive, check_seed
from .metrics import BUCKETS, GROUPS
from .utils import resolve_results_dir
from .victims import HeadConfig, outcome_row

METRICS = ("epa", "dps", "delta_step", "delta_param", "tau")
METRIC_LABELS = {
    "epa": "EPA",
    "dps": "DPS",
    "delta_step": "δ (η*)",
    "delta_param": "δ (η*·‖g‖)",
    "tau": "τ",
    "tau_derived": "τ, κ = (C−1)/e",
    "tau_authors": "τ, κ = C − 1/e",
}


@dataclass(frozen=True)
class StudyConfig(ConfigDict):
    """One attack-validation study."""

    HASH_IGNORE: ClassVar[tuple[str, ...]] = ("victims",)  # more victims extend a study

    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig.full)  # the EPA experiment (and surrogate)
    attacks: tuple[AttackConfig, ...] = (AttackConfig(),)  # attacks to run on every target
    victim: TrainConfig | None = None  # recipe of victims retrained from scratch (None: the trajectory's recipe)
    head: HeadConfig = field(default_factory=HeadConfig)  # recipe of transfer victims' linear heads
    target_class: int = 0  # y_t (the paper: airplane / goldfish)
    poison_class: int = 1  # y_p (the paper: automobile / European fire salamander)
    per_bucket: int = 10  # targets per EPA bucket
    buckets: tuple[str, ...] = BUCKETS  # which EPA buckets to draw from (and "middle", see metrics.epa_buckets)
    extremes: int = 0  # also this many lowest and highest targets of the class by `extreme_metric` (complete groups)
    extreme_metric: str = "delta"  # "delta" (the authors' δ experiment) | "tau"
    victims: int = 8  # V: victims retrained per (target, attack)
    victim_seed0: int = 1000  # victim v is initialised from seed victim_seed0 + v
    tau_batches: int = 50  # batches estimating g(D_c; w_p) for τ
    tau_batch_size: int = 256  # their size
    crafting_seed: int = 0  # seeds the attacks' initialisation and augmentation
    success_threshold: float = 0.5  # a target counts as "poisoned" for AUROC when its ASR reaches this
    tau_variant: str = "derived"  # τ's Lambert-W argument: "derived" κ = (C − 1)/e | "authors" κ = C − 1/e (their code)

    ADDED: ClassVar[dict[str, Any]] = {"tau_variant": "derived"}

    def __post_init__(self) -> None:
        if isinstance(self.trajectory, dict):  # rebuilt from JSON
            object.__setattr__(self, "trajectory", TrajectoryConfig.from_dict(self.trajectory))
        attacks = tuple(AttackConfig(**a) if isinstance(a, dict) else a for a in self.attacks)
        object.__setattr__(self, "attacks", attacks)
        if isinstance(self.victim, dict):
            object.__setattr__(self, "victim", TrainConfig.from_dict(self.victim))
        if isinstance(self.head, dict):
            object.__setattr__(self, "head", HeadConfig.from_dict(self.head))
        object.__setattr__(self, "buckets", tuple(self.buckets))
        if not self.attacks:
            raise InvalidChoiceError(f"a study needs at least one attack; choose from {', '.join(ATTACKS)}")
        ids = [attack_id(a) for a in self.attacks]
        twice = sorted({a.label for a, ident in zip(self.attacks, ids) if ids.count(ident) > 1})
        if twice:  # the same victims would be trained and logged twice
            raise InvalidChoiceError(f"attack(s) {', '.join(twice)} listed twice, same settings; list each once")
        for bucket in self.buckets:
            check_choice("EPA bucket", bucket, GROUPS)
        check_positive("target_class", self.target_class, allow_zero=True, integer=True)
        check_positive("poison_class", self.poison_class, allow_zero=True, integer=True)
        check_seed("victim_seed0", self.victim_seed0, span=self.victims)
        check_seed("crafting_seed", self.crafting_seed, span=2**31)  # plus the target's index
        check_positive("tau_batch_size", self.tau_batch_size, integer=True)
        check_number("success_threshold", self.success_threshold)
        if not 0 < self.success_threshold <= 1:
            raise InvalidChoiceError(f"success_threshold must lie in (0, 1], got {self.success_threshold}")
        if self.target_class == self.poison_class:
            raise InvalidChoiceError("the poison class must differ from the target class")
        check_positive("per_bucket", self.per_bucket, integer=True)
        check_positive("victims", self.victims, integer=True)
        check_positive("extremes", self.extremes, allow_zero=True, integer=True)
        check_choice("extreme metric", self.extreme_metric, ("delta", "tau"))
        check_choice("tau variant", self.tau_variant, VARIANTS)
        check_positive("tau_batches", self.tau_batches, integer=True)

    @property
    def tau_settings(self) -> TauSettings:
        """How this study estimates τ (`budget_lower_bound`'s settings)."""
        return TauSettings(self.tau_batches, self.tau_batch_size, variant=self.tau_variant)

    @property
    def victim_recipe(self) -> TrainConfig:
        return self.victim if self.victim is not None else self.trajectory.train

    @classmethod
    def full(cls, dataset: str = "cifar10", recipe: str = "victims", **overrides: Any) -> StudyConfig:
        """The paper's main setting: 10 targets per EPA bucket, GM (and any attacks passed), 8 victims, 40 epochs.

        Victims retrain with Witches' Brew's recipe (`TrainConfig.full`; VGG at lr 0.01). ``recipe`` picks the EPA
        runs (`TrajectoryConfig.full`): ``"victims"`` trains them as the victims (ours), ``"authors"`` with the
        authors' EPA-ranking recipes and models (torchvision VGG-16 with its 4096-wide classifier on TinyImageNet);
        run 0 of those runs is the surrogate that crafts and measures δ and τ either way.
        """
        trajectory = TrajectoryConfig.full(dataset, recipe)
        victim = None
        if recipe == "authors":
            victim = (
                TrainConfig.full() if dataset == "cifar10" else TrainConfig.full(model="vgg16_torchvision", lr=0.01)
            )
        base = cls(trajectory=trajectory, attacks=(AttackConfig.full("gm"),), victims=8, victim=victim)
        if dataset == "tinyimagenet":  # 50 poisons of 100,000 (0.05 %); the 4 lowest, middle and highest targets
            base = dataclasses.replace(
                base,
                attacks=(AttackConfig.full("gm", budget=0.0005),),
                per_bucket=4,
                buckets=("lowest", "middle", "highest"),
            )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, dataset: str = "cifar10", **overrides: Any) -> StudyConfig:
        """CPU-sized: the quick trajectories, 1 target in each of 3 buckets, 2 victims, short crafting."""
        base = cls(
            trajectory=TrajectoryConfig.quick(dataset),
            attacks=(AttackConfig.quick("gm"),),
            per_bucket=1,
            buckets=("lowest", "p40", "highest"),
            victims=2,
            tau_batches=5,  # 5 x 128 images for τ, as notebook 04's quick mode (10 x 256 passed TinyImageNet's
            tau_batch_size=128,  # 1,000 quick training images 2.5 times per target)
            head=HeadConfig.quick(),
        )
        if dataset == "tinyimagenet":  # 10 classes x 100 images: 25 poisons (a quarter of the poison class)
            base = dataclasses.replace(base, attacks=(AttackConfig.quick("gm", num_poisons=25),))
        return dataclasses.replace(base, **overrides)

    @classmethod
    def preset(cls, quick: bool, dataset: str = "cifar10", **overrides: Any) -> StudyConfig:
        """`quick` or `full` by a flag: ``StudyConfig.preset(QUICK, DATASET, trajectory=..., attacks=...)``."""
        return (cls.quick if quick else cls.full)(dataset, **overrides)

    @classmethod
    def lab(cls, dataset: str = "cifar10", setting: str = "scratch", **overrides: Any) -> StudyConfig:
        """Laptop scale where the attacks succeed on easy targets (CPU, about an hour or two on 2 cores).

        The surrogate and the EPA runs are `TrajectoryConfig.lab` (8 x 16 epochs of the small network); crafting is
        as strong as the paper's per restart (250 signed-Adam steps, ε 16/255, 1 % budget).

        - ``setting="scratch"``: gradient matching with crop + flip while crafting (the victims train with them),
          one restart (a restart of the full-network gradient matching costs about a minute on one core); victims
          retrained from scratch with the surrogate's recipe; 5 targets per EPA bucket, 4 victims.
        - ``setting="transfer"``: feature collision (25 poisons, ε 8/255), Bullseye Polytope and gradient matching on
          the head's gradient (1 %, ε 16/255), all crafted without augmentation (the victims train a linear head on
          fixed features); 10 targets per EPA bucket, 8 victims.

        TinyImageNet (its first 10 classes, see `TrajectoryConfig.lab`): bullfrog targets (50 validation images; the
        goldfish are nearly all easy at this scale) and salamander poisons; 25 poisons for gradient matching (a
        quarter of the poison class, 2.5 % of the 1,000 training images, as in quick mode), 3 targets per bucket x 4
        victims from scratch; transfer: FC and GM on the head, 5 per bucket x 8 victims.
        """
        check_choice("setting", setting, ("scratch", "transfer"))
        trajectory = TrajectoryConfig.lab(dataset)
        if dataset == "tinyimagenet":  # 10 classes x 100 images; the target class has 50 validation images
            # bullfrog targets, not the paper's goldfish: among 10 classes 80 % of the goldfish have EPA >= 0.86,
            # so the EPA buckets would not spread; the bullfrog's EPA spans 0-0.77. Poison class: salamander.
            classes = {"target_class": 2, "poison_class": 1}
            if setting == "scratch":
                base = cls(
                    trajectory=trajectory,
                    attacks=(AttackConfig.full("gm", restarts=1, num_poisons=25),),
                    per_bucket=3,
                    victims=4,
                    tau_batches=20,
                    **classes,
                )
            else:
                attacks = (
                    AttackConfig.full("fc"),
                    AttackConfig.full("gm", restarts=2, augment=False, setting="transfer", num_poisons=25),
                )
                base = cls(trajectory=trajectory, attacks=attacks, per_bucket=5, victims=8, tau_batches=20, **classes)
            return dataclasses.replace(base, **overrides)
        if setting == "scratch":
            base = cls(
                trajectory=trajectory,
                attacks=(AttackConfig.full("gm", restarts=1),),
                per_bucket=5,
                victims=4,
                tau_batches=20,
            )
        else:
            attacks = (
                AttackConfig.full("fc"),
                AttackConfig.full("bp", restarts=2, augment=False, setting="transfer"),
                AttackConfig.full("gm", restarts=2, augment=False, setting="transfer"),
            )
            base = cls(trajectory=trajectory, attacks=attacks, per_bucket=10, victims=8, tau_batches=20)
        return dataclasses.replace(base, **overrides)


def setup_key(target_class: int, poison_class: int, target_index: int) -> str:
    """Witches' Brew's deterministic poison key ``y_t-y_p-index``: the same key, the same experiment."""
    return f"{target_class}-{poison_class}-{target_index}"


def attack_id(attack: AttackConfig) -> str:
    return f"{attack.name}-{attack.key()}"


def baseline_id(setting: str) -> str:
    return f"none-{setting}"


def study_dir(config: StudyConfig, results_dir: str | os.PathLike | None = None) -> Path:
    return resolve_results_dir(results_dir) / "studies" / f"{config.trajectory.dataset}-{config.key()}"


@dataclass
class StudyPlan:
    """What is left to do in a study, and how each finished victim becomes log rows (shared by every executor)."""

    config: StudyConfig
    targets: list[dict[str, Any]]
    seeds: list[int]
    done: set[tuple[str, str, int]]  # (target key, attack id, victim seed) already in the log

    def baselines(self) -> list[tuple[str, list[int]]]:
        """(setting, victim seeds still missing for some target) of each no-attack baseline."""
        out = []
        for setting in sorted({a.setting for a in self.config.attacks}):
            ident = baseline_id(setting)
            todo = [s for s in self.seeds if any((t["key"], ident, s) not in self.done for t in self.targets)]
            if todo:
                out.append((setting, todo))
        return out

    def attacks(self) -> list[tuple[dict[str, Any], int, AttackConfig, list[int]]]:
        """(target, its position, attack, victim seeds still missing) of every unfinished (target, attack)."""
        out = []
        for j, target in enumerate(self.targets):
            for attack in self.config.attacks:
                todo = [s for s in self.seeds if (target["key"], attack_id(attack), s) not in self.done]
                if todo:
                    out.append((target, j, attack, todo))
        return out

    def baseline_rows(self, setting: str):
        """``rows(seed, target_logits, accuracy)`` of a clean victim: one row per target it has not been logged for."""
        ident, adv, true = baseline_id(setting), self.config.poison_class, self.config.target_class
        return lambda seed, target_logits, accuracy: [
            outcome_row(t["key"], ident, seed, target_logits[j], accuracy, adv, true, name="none", setting=setting)
            for j, t in enumerate(self.targets)
            if (t["key"], ident, seed) not in self.done
        ]

    def attack_rows(self, target: dict[str, Any], attack: AttackConfig, crafting_loss: float):
        """``rows(seed, target_logits, accuracy)`` of a victim of one (target, attack)."""
        ident, adv, true = attack_id(attack), self.config.poison_class, self.config.target_class
        return lambda seed, target_logits, accuracy: [
            outcome_row(
                target["key"],
                ident,
                seed,
                target_logits[0],
                accuracy,
                adv,
                true,
                name=attack.name,
                setting=attack.setting,
                crafting_loss=round(crafting_loss, 6),
            )
        ]

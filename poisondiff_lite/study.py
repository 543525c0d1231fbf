"""Study driver: do EPA, δ and τ predict real attacks?

`run_study` follows the authors' protocol (arXiv 2509.06896, experimental setup):

1. record M clean runs (EPA, DPS) with the trajectory recorder; run 0's final model is the attacker's surrogate;
2. pick targets of one class from the six EPA buckets (and, optionally, the lowest and highest δ);
3. compute δ and τ of every target toward the poison class;
4. for each target and attack, craft poisons from the first ⌈budget·N⌉ training images of the poison class (the
   deterministic setup key ``target class-poison class-target index``), insert them, retrain V victims;
5. summarise: ASR per target with a Wilson interval, mean ± std per bucket, and the Pearson, Spearman and AUROC of
   every metric against success.

Everything is saved under ``<results>/studies/<dataset>-<hash>/``: the config, the targets with their metrics, the
crafted poisons, and an append-only log with one line per finished victim. Run the same study again and it resumes:
nothing finished is recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attacks import ATTACKS, AttackConfig, Poisons, craft_from_class
from .budget import budget_lower_bound
from .config import TrainConfig, TrajectoryConfig, stable_dict
from .data import DataBundle
from .distance import DistanceResult, distance_matrix
from .errors import InvalidChoiceError, ResultsFileError, check_choice, check_number, check_positive
from .metrics import BUCKETS, select_targets, trajectory_metrics
from .record import check_bucket_size, default_path, load_run_model, prepare_data, record_trajectories
from .stats import auroc, auroc_interval, correlation_pvalue, group_summary, pearson, spearman
from .utils import atomic_write_json, check_writable, exclusive, get_device, progress, read_json, resolve_results_dir
from .victims import (HeadConfig, ResultsLog, asr_interval, extract_features, insert_poisons, log_outcomes,
                      outcome_row, poisoned_features, scratch_victims, success_table, transfer_victims, victim_seeds)

METRICS = ("epa", "dps", "delta_step", "delta_param", "tau")
METRIC_LABELS = {"epa": "EPA", "dps": "DPS", "delta_step": "δ (η*)", "delta_param": "δ (η*·‖g‖)", "tau": "τ"}


@dataclass(frozen=True)
class StudyConfig:
    """One attack-validation study."""

    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig.full)  # the EPA experiment (and surrogate)
    attacks: tuple[AttackConfig, ...] = (AttackConfig(),)  # attacks to run on every target
    victim: TrainConfig | None = None  # recipe of victims retrained from scratch (None: the trajectory's recipe)
    head: HeadConfig = field(default_factory=HeadConfig)  # recipe of transfer victims' linear heads
    target_class: int = 0  # y_t (the paper: airplane / goldfish)
    poison_class: int = 1  # y_p (the paper: automobile / European fire salamander)
    per_bucket: int = 10  # targets per EPA bucket
    buckets: tuple[str, ...] = BUCKETS  # which EPA buckets to draw from
    extremes: int = 0  # also this many lowest and highest targets of the class by `extreme_metric`
    extreme_metric: str = "delta"  # "delta" (the authors' δ experiment) | "tau"
    victims: int = 8  # V: victims retrained per (target, attack)
    victim_seed0: int = 1000  # victim v is initialised from seed victim_seed0 + v
    tau_batches: int = 50  # batches estimating g(D_c; w_p) for τ
    tau_batch_size: int = 256  # their size
    crafting_seed: int = 0  # seeds the attacks' initialisation and augmentation
    success_threshold: float = 0.5  # a target counts as "poisoned" for AUROC when its ASR reaches this

    def __post_init__(self) -> None:
        if isinstance(self.trajectory, dict):  # rebuilt from JSON
            object.__setattr__(self, "trajectory", TrajectoryConfig.from_dict(self.trajectory))
        attacks = tuple(AttackConfig(**a) if isinstance(a, dict) else a for a in self.attacks)
        object.__setattr__(self, "attacks", attacks)
        if isinstance(self.victim, dict):
            object.__setattr__(self, "victim", TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                              for k, v in self.victim.items()}))
        if isinstance(self.head, dict):
            object.__setattr__(self, "head", HeadConfig(**self.head))
        object.__setattr__(self, "buckets", tuple(self.buckets))
        if not self.attacks:
            raise InvalidChoiceError(f"a study needs at least one attack; choose from {', '.join(ATTACKS)}")
        for bucket in self.buckets:
            check_choice("EPA bucket", bucket, BUCKETS)
        for name in ("target_class", "poison_class", "per_bucket", "extremes", "victims", "victim_seed0", "tau_batches",
                     "tau_batch_size", "crafting_seed"):
            check_number(name, getattr(self, name), integer=True)
        check_positive("target_class", self.target_class, allow_zero=True)
        check_positive("poison_class", self.poison_class, allow_zero=True)
        check_positive("tau_batch_size", self.tau_batch_size)
        check_number("success_threshold", self.success_threshold)
        if not 0 < self.success_threshold <= 1:
            raise InvalidChoiceError(f"success_threshold must lie in (0, 1], got {self.success_threshold}")
        if self.target_class == self.poison_class:
            raise InvalidChoiceError("the poison class must differ from the target class")
        check_positive("per_bucket", self.per_bucket)
        check_positive("victims", self.victims)
        check_positive("extremes", self.extremes, allow_zero=True)
        check_choice("extreme metric", self.extreme_metric, ("delta", "tau"))
        check_positive("tau_batches", self.tau_batches)

    @property
    def victim_recipe(self) -> TrainConfig:
        return self.victim if self.victim is not None else self.trajectory.train

    @classmethod
    def full(cls, dataset: str = "cifar10", **overrides: Any) -> StudyConfig:
        """The paper's main setting: 10 targets per EPA bucket, GM (and any attacks passed), 8 victims, 40 epochs."""
        base = cls(trajectory=TrajectoryConfig.full(dataset), attacks=(AttackConfig.full("gm"),), victims=8)
        if dataset == "tinyimagenet":  # 50 poisons of 100,000 (0.05 %), 4 targets per group (section 2.3)
            base = dataclasses.replace(base, attacks=(AttackConfig.full("gm", budget=0.0005),), per_bucket=4,
                                       buckets=("lowest", "p40", "highest"))
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, dataset: str = "cifar10", **overrides: Any) -> StudyConfig:
        """CPU-sized: the quick trajectories, 1 target in each of 3 buckets, 2 victims, short crafting."""
        base = cls(trajectory=TrajectoryConfig.quick(dataset), attacks=(AttackConfig.quick("gm"),), per_bucket=1,
                   buckets=("lowest", "p40", "highest"), victims=2, tau_batches=10, head=HeadConfig.quick())
        if dataset == "tinyimagenet":  # 10 classes x 100 images: 25 poisons (a quarter of the poison class)
            base = dataclasses.replace(base, attacks=(AttackConfig.quick("gm", num_poisons=25),))
        return dataclasses.replace(base, **overrides)

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
                base = cls(trajectory=trajectory, attacks=(AttackConfig.full("gm", restarts=1, num_poisons=25),),
                           per_bucket=3, victims=4, tau_batches=20, **classes)
            else:
                attacks = (AttackConfig.full("fc"),
                           AttackConfig.full("gm", restarts=2, augment=False, setting="transfer", num_poisons=25))
                base = cls(trajectory=trajectory, attacks=attacks, per_bucket=5, victims=8, tau_batches=20, **classes)
            return dataclasses.replace(base, **overrides)
        if setting == "scratch":
            base = cls(trajectory=trajectory, attacks=(AttackConfig.full("gm", restarts=1),), per_bucket=5,
                       victims=4, tau_batches=20)
        else:
            attacks = (AttackConfig.full("fc"),
                       AttackConfig.full("bp", restarts=2, augment=False, setting="transfer"),
                       AttackConfig.full("gm", restarts=2, augment=False, setting="transfer"))
            base = cls(trajectory=trajectory, attacks=attacks, per_bucket=10, victims=8, tau_batches=20)
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        data = {k: tuple(v) if isinstance(v, list) and k != "attacks" else v for k, v in data.items()}
        return cls(**data)

    def key(self) -> str:
        """Stable hash of everything but the victim count (more victims extend a study)."""
        data = {k: v for k, v in self.to_dict().items() if k != "victims"}
        return hashlib.sha256(json.dumps(stable_dict(data), sort_keys=True).encode()).hexdigest()[:12]


def setup_key(target_class: int, poison_class: int, target_index: int) -> str:
    """Witches' Brew's deterministic poison key ``y_t-y_p-index``: the same key, the same experiment."""
    return f"{target_class}-{poison_class}-{target_index}"


def attack_id(attack: AttackConfig) -> str:
    return f"{attack.name}-{attack.key()}"


def baseline_id(setting: str) -> str:
    return f"none-{setting}"


def study_dir(config: StudyConfig, results_dir: str | os.PathLike | None = None) -> Path:
    return resolve_results_dir(results_dir) / "studies" / f"{config.trajectory.dataset}-{config.key()}"


# -----------------------------------------------------------------------------------------------------------------
#  results
# -----------------------------------------------------------------------------------------------------------------
@dataclass
class StudyResults:
    """A (possibly partial) study: its targets with their metrics, and one row per finished victim."""

    config: StudyConfig
    targets: list[dict[str, Any]]  # key, index, bucket, epa, soft_epa, dps, delta_step, delta_param, grad_norm, tau
    rows: list[dict[str, Any]]  # one per victim: key, attack (id), name, setting, victim, pred, success, ...
    classes: tuple[str, ...] = ()
    path: Path | None = None

    def attack_ids(self) -> list[str]:
        return [attack_id(a) for a in self.config.attacks]

    def label(self, ident: str) -> str:
        """Human label of an attack id: ``GM``, ``BP (transfer)``, ``none (scratch)``."""
        name, _, rest = ident.partition("-")
        if name == "none":
            return f"no attack ({rest})"
        attack = next(a for a in self.config.attacks if attack_id(a) == ident)
        details = ["transfer"] if attack.setting == "transfer" else []
        if sum(a.name == attack.name and a.setting == attack.setting for a in self.config.attacks) > 1:
            details.append(f"{attack.num_poisons} poisons" if attack.num_poisons else f"{attack.budget:.2%}")
        return attack.label + (f" ({', '.join(details)})" if details else "")

    def is_sweep(self) -> bool:
        """Does the study run one attack at several budgets (a budget sweep)?"""
        names = [(a.name, a.setting) for a in self.config.attacks]
        return len(set(names)) < len(names)

    def per_target(self) -> list[dict[str, Any]]:
        """One row per (target, attack or baseline): the target's metrics, ASR, its Wilson interval, clean accuracy."""
        successes = success_table(self.rows)
        accuracy: dict[tuple[str, str], list[float]] = {}
        for r in self.rows:
            accuracy.setdefault((r["key"], r["attack"]), []).append(r["clean_accuracy"])
        out = []
        for ident in self.attack_ids() + sorted({r["attack"] for r in self.rows if r["attack"].startswith("none")}):
            for t in self.targets:
                wins = successes.get((t["key"], ident))
                if wins is None:
                    continue
                low, high = asr_interval(int(wins.sum()), len(wins))
                out.append({**t, "attack": ident, "label": self.label(ident), "victims": len(wins),
                            "successes": int(wins.sum()), "asr": float(wins.mean()), "asr_low": low, "asr_high": high,
                            "clean_accuracy": float(np.mean(accuracy[(t["key"], ident)]))})
        return out

    def by_bucket(self) -> list[dict[str, Any]]:
        """Mean ± population std of ASR over the targets of each (attack, bucket), as the authors report."""
        rows = self.per_target()
        out = []
        for ident in dict.fromkeys(r["attack"] for r in rows):
            for bucket in dict.fromkeys(t["bucket"] for t in self.targets):
                group = [r for r in rows if r["attack"] == ident and r["bucket"] == bucket]
                if not group:
                    continue
                summary = group_summary([r["asr"] for r in group])
                wins = sum(r["successes"] for r in group)
                trials = sum(r["victims"] for r in group)
                low, high = asr_interval(wins, trials)
                out.append({"attack": ident, "label": self.label(ident), "bucket": bucket, "targets": summary["n"],
                            "mean_asr": summary["mean"], "std_asr": summary["std"], "pooled_low": low,
                            "pooled_high": high, "mean_epa": float(np.mean([r["epa"] for r in group])),
                            "clean_accuracy": float(np.mean([r["clean_accuracy"] for r in group]))})
        return out

    def correlations(self) -> list[dict[str, Any]]:
        """Per attack and metric: Pearson and Spearman with ASR, each with its two-sided permutation p-value, and
        AUROC for "ASR >= success_threshold" with a stratified bootstrap 95 % interval (see `stats`)."""
        rows = self.per_target()
        out = []
        for ident in self.attack_ids():
            mine = [r for r in rows if r["attack"] == ident]
            asr = np.array([r["asr"] for r in mine])
            success = asr >= self.config.success_threshold
            for metric in METRICS:
                values = np.array([r[metric] for r in mine], dtype=np.float64)
                low, high = auroc_interval(values, success)
                out.append({"attack": ident, "label": self.label(ident), "metric": metric,
                            "metric_label": METRIC_LABELS[metric], "n": len(mine), "successes": int(success.sum()),
                            "pearson": pearson(values, asr),
                            "pearson_p": correlation_pvalue(values, asr, method="pearson"),
                            "spearman": spearman(values, asr),
                            "spearman_p": correlation_pvalue(values, asr, method="spearman"),
                            "auroc": auroc(values, success), "auroc_low": low, "auroc_high": high})
        return out

    def targets_done(self) -> int:
        """Targets whose every attack has all its victims logged."""
        successes = success_table(self.rows)
        return sum(all(len(successes.get((t["key"], a), ())) >= self.config.victims for a in self.attack_ids())
                   for t in self.targets)

    def complete(self) -> bool:
        """Every (target, attack) has all its victims."""
        return self.targets_done() == len(self.targets)


def format_table(rows: list[dict[str, Any]], columns: list[str], *, floats: str = "{:.3f}") -> str:
    """A fixed-width text table (no pandas needed) of `columns` of `rows`."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else floats.format(v))
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def load_study(config: StudyConfig, results_dir: str | os.PathLike | None = None) -> StudyResults:
    """Read a study's saved targets and log (however far it got) without running anything."""
    folder = study_dir(config, results_dir)
    if not (folder / "targets.json").exists():
        raise InvalidChoiceError(f"no study at {folder}. Fix: run it with run_study(config) (notebook 05/06).")
    return read_study(folder, config)


def read_study(folder: str | os.PathLike, config: StudyConfig | None = None) -> StudyResults:
    """Read the study saved in `folder` (its config from ``study.json`` unless given), whatever version wrote it."""
    folder = Path(folder)
    if config is None:
        try:
            config = StudyConfig.from_dict(read_json(folder / "study.json", STUDY_JSON_FIX))
        except (TypeError, ValueError) as exc:
            raise ResultsFileError(f"{folder / 'study.json'} does not describe a study ({exc}). "
                                   f"Fix: {STUDY_JSON_FIX}") from None
    targets = _read_targets(folder / "targets.json")
    log = ResultsLog.read(folder / "results.jsonl")
    return StudyResults(config, targets["targets"], log.rows, targets["classes"], folder)


STUDY_JSON_FIX = "rerun the study with its config (run_study / poisondiff study), which writes it again"
TARGETS_FIX = ("delete it; the study chooses its targets again (the same ones: the choice is deterministic) and keeps "
               "the victims already logged")


def _read_targets(path: Path) -> dict[str, Any]:
    """The saved targets and class names of a study; a damaged file is a one-line error naming the fix."""
    saved = read_json(path, TARGETS_FIX)
    try:
        return {"targets": _from_json(saved["targets"]), "classes": tuple(saved.get("classes", ()))}
    except (TypeError, KeyError, AttributeError) as exc:
        raise ResultsFileError(f"{path} does not hold a study's targets ({type(exc).__name__}: {exc}). "
                               f"Fix: {TARGETS_FIX}") from None


def find_studies(results_dir: str | os.PathLike | None = None) -> list[StudyResults]:
    """Every study saved under the results folder (for the summary notebook); unreadable ones are named, not hidden."""
    root = resolve_results_dir(results_dir) / "studies"
    found = []
    for config_path in sorted(root.glob("*/study.json")):
        if not (config_path.parent / "targets.json").exists():
            continue  # started, but interrupted before its targets were chosen: nothing to show yet
        try:
            found.append(read_study(config_path.parent))
        except (OSError, ValueError, TypeError, KeyError, ResultsFileError) as exc:
            print(f"skipped {config_path.parent}: cannot read it ({type(exc).__name__}: {exc})")
    return found


# -----------------------------------------------------------------------------------------------------------------
#  running a study
# -----------------------------------------------------------------------------------------------------------------
def _choose_targets(config: StudyConfig, scores: dict[str, np.ndarray], model: torch.nn.Module, split_images,
                    train_set, device: torch.device, show_progress: bool
                    ) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """The targets, and the τ already computed while choosing them (by test index), so it is not computed twice."""
    chosen = [t for t in select_targets(scores["epa"], scores["labels"], config.target_class,
                                        per_bucket=config.per_bucket, indices=scores["indices"])
              if t["bucket"] in config.buckets]
    known_tau: dict[int, float] = {}
    if config.extremes:
        members = np.flatnonzero(scores["labels"] == config.target_class)
        all_delta = distance_matrix(model, split_images[scores["indices"][members]], scores["labels"][members],
                                    poison_classes=[config.poison_class], device=device, show_progress=show_progress)
        values = all_delta.step[:, config.poison_class]
        if config.extreme_metric == "tau":  # one clean-gradient estimate per member: costly, hence optional
            images = split_images[scores["indices"][members]]
            values = np.array([budget_lower_bound(model, images[k], config.poison_class, train_set,
                                                  delta=DistanceResult(float(v), math.nan, math.nan, -1),
                                                  num_batches=config.tau_batches, batch_size=config.tau_batch_size,
                                                  device=device).tau
                               for k, v in enumerate(progress(values, enable=show_progress, desc="τ of candidates"))])
            known_tau = {int(scores["indices"][m]): float(v) for m, v in zip(members, values)}
        order = np.argsort(np.where(np.isnan(values), np.inf, values), kind="stable")
        taken = {t["index"] for t in chosen}
        symbol = "δ" if config.extreme_metric == "delta" else "τ"
        for bucket, positions in ((f"{symbol}-low", order[:config.extremes]),
                                  (f"{symbol}-high", order[::-1][:config.extremes])):
            for pos in positions:
                index = int(scores["indices"][members[pos]])
                if index not in taken:
                    chosen.append({"bucket": bucket, "index": index, "epa": float(scores["epa"][members[pos]])})
                    taken.add(index)
    return chosen, known_tau


def _target_metrics(config: StudyConfig, chosen: list[dict[str, Any]], scores: dict[str, np.ndarray], model,
                    split_images, train_set, device: torch.device,
                    known_tau: dict[int, float]) -> list[dict[str, Any]]:
    position = {int(i): k for k, i in enumerate(scores["indices"])}
    rows = [position[t["index"]] for t in chosen]
    images = split_images[[t["index"] for t in chosen]]
    labels = scores["labels"][rows]
    delta = distance_matrix(model, images, labels, poison_classes=[config.poison_class], device=device,
                            show_progress=False)
    out = []
    for j, (t, k) in enumerate(zip(chosen, rows)):
        p = config.poison_class
        result = DistanceResult(float(delta.step[j, p]), float(delta.grad_norm[j, p]), float(delta.distance[j, p]),
                                int(delta.pred_before[j]))
        tau = known_tau.get(t["index"])
        if tau is None:
            tau = budget_lower_bound(model, images[j], p, train_set, delta=result, num_batches=config.tau_batches,
                                     batch_size=config.tau_batch_size, device=device).tau
        out.append({"key": setup_key(config.target_class, p, t["index"]), "index": t["index"], "bucket": t["bucket"],
                    "label": int(labels[j]), "epa": float(scores["epa"][k]), "soft_epa": float(scores["soft_epa"][k]),
                    "dps": float(scores["dps"][k]), "dominant": int(scores["dominant"][k]),
                    "clean_pred": result.pred_before, "delta_step": result.step, "delta_param": result.distance,
                    "grad_norm": result.grad_norm, "tau": tau})
    return out


def _json_safe(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        return v

    return [{k: clean(v) for k, v in t.items()} for t in targets]


def _from_json(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: float(v) if v in ("inf", "-inf", "nan") else v for k, v in t.items()} for t in targets]


def run_study(config: StudyConfig, *, data: DataBundle | None = None, data_dir: str | None = None,
              download: bool = False, device: torch.device | str = "auto",
              results_dir: str | os.PathLike | None = None, show_progress: bool = True,
              client: Any = None) -> StudyResults:
    """Run (or resume) an attack-validation study and return its results.

    Parameters
    ----------
    config : targets, attacks, victims (`StudyConfig.quick` / `.full`).
    data : the loaded `DataBundle` (else loaded from `data_dir`); the trajectory config's class selection is applied.
    results_dir : where the trajectories and the study live (default ``$POISONDIFF_RESULTS`` or ``results/``).
    client : a Dask ``distributed.Client`` (see `poisondiff_lite.cluster`): crafting and victims run as tasks on its
        workers, this process stays the only writer of the log and the poisons; None runs everything here.

    Returns
    -------
    `StudyResults`; every finished victim is already on disk when this returns or is interrupted.
    """
    requested_device = device if isinstance(device, str) else str(device)  # what the workers resolve for themselves
    device = get_device(device)
    data = prepare_data(config.trajectory, data, data_dir=data_dir, download=download)
    check_choice("target class", config.target_class, range(data.num_classes))
    check_choice("poison class", config.poison_class, range(data.num_classes))
    check_bucket_size(config.trajectory, data, config.target_class, config.per_bucket)
    folder = check_writable(study_dir(config, results_dir))  # a read-only folder fails now, not after training
    with exclusive(folder, "the study"):  # one writer per study: a second process stops here with one line
        return _run_locked(config, folder, data, device, requested_device, results_dir, show_progress, client)


def _run_locked(config: StudyConfig, folder: Path, data: DataBundle, device: torch.device, requested_device: str,
                results_dir: str | os.PathLike | None, show_progress: bool, client: Any) -> StudyResults:
    atomic_write_json(folder / "study.json", config.to_dict())
    traj = record_trajectories(config.trajectory, data=data, device=device, show_progress=show_progress,
                               keep_models=True, results_dir=results_dir)
    surrogate = load_run_model(default_path(config.trajectory, results_dir), run=0).to(device)
    split = data.test if config.trajectory.eval_split == "test" else data.train

    targets_path = folder / "targets.json"
    if targets_path.exists():
        targets = _read_targets(targets_path)["targets"]
    else:
        scores = trajectory_metrics(traj)
        chosen, known_tau = _choose_targets(config, scores, surrogate, split.images, data.train, device, show_progress)
        targets = _target_metrics(config, chosen, scores, surrogate, split.images, data.train, device, known_tau)
        atomic_write_json(targets_path, {"targets": _json_safe(targets), "classes": list(data.classes)})

    log = ResultsLog(folder / "results.jsonl", {"study": config.key(), "config": config.to_dict()})
    seeds = victim_seeds(config.victim_seed0, config.victims)
    target_images = split.images[[t["index"] for t in targets]].cpu()
    features = None
    if any(a.setting == "transfer" for a in config.attacks):
        features = {"train": extract_features(surrogate, data.train.images, device=device),
                    "test": extract_features(surrogate, data.test.images, device=device),
                    "targets": extract_features(surrogate, target_images, device=device)}
    plan = StudyPlan(config, targets, seeds, log.done())
    if client is not None:
        from .cluster import run_plan_on_client

        run_plan_on_client(client, plan, log, data=data, surrogate=surrogate, target_images=target_images,
                           features=features, poison_dir=folder / "poisons", device=requested_device,
                           show_progress=show_progress)
        return StudyResults(config, targets, log.rows, tuple(data.classes), folder)

    def victims_for(setting: str, train_set, todo: list[int], feature_rows=None, target_rows=None):
        if setting == "scratch":
            return scratch_victims(data, train_set, config.victim_recipe, todo, target_rows, device=device,
                                   show_progress=show_progress)
        return transfer_victims(feature_rows, data.train.labels, features["test"], target_rows, data.num_classes,
                                config.head, todo)

    # clean victims: one set per setting serves every target (the "no attack" baseline)
    for setting, todo in plan.baselines():
        target_rows = target_images if setting == "scratch" else features["targets"]
        results = victims_for(setting, data.train, todo, features and features["train"], target_rows)
        log_outcomes(log, results, data.test.labels, plan.baseline_rows(setting), show_progress=show_progress,
                     total=len(todo), desc=f"clean victims ({setting})")

    poison_dir = folder / "poisons"
    for target, j, attack, todo in progress(plan.attacks(), enable=show_progress, desc="targets x attacks",
                                            unit="job"):
        poisons = _poisons(attack, target, j, data, surrogate, target_images, config, poison_dir, device,
                           show_progress)
        poisoned = insert_poisons(data.train, poisons)
        if attack.setting == "scratch":
            results = victims_for("scratch", poisoned, todo, target_rows=target_images[j:j + 1])
        else:
            rows = poisoned_features(surrogate, features["train"], poisons, device=device)
            results = victims_for("transfer", poisoned, todo, rows, features["targets"][j:j + 1])
        log_outcomes(log, results, data.test.labels, plan.attack_rows(target, attack, poisons.final_loss),
                     show_progress=show_progress, total=len(todo), desc=f"{attack.label} victims #{target['index']}")
    return StudyResults(config, targets, log.rows, tuple(data.classes), folder)


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
            for j, t in enumerate(self.targets) if (t["key"], ident, seed) not in self.done]

    def attack_rows(self, target: dict[str, Any], attack: AttackConfig, crafting_loss: float):
        """``rows(seed, target_logits, accuracy)`` of a victim of one (target, attack)."""
        ident, adv, true = attack_id(attack), self.config.poison_class, self.config.target_class
        return lambda seed, target_logits, accuracy: [
            outcome_row(target["key"], ident, seed, target_logits[0], accuracy, adv, true, name=attack.name,
                        setting=attack.setting, crafting_loss=round(crafting_loss, 6))]


def _poisons(attack: AttackConfig, target: dict[str, Any], j: int, data: DataBundle, surrogate, target_images,
             config: StudyConfig, poison_dir: Path, device: torch.device, show_progress: bool) -> Poisons:
    """Craft the poisons of one (target, attack), or load them if an earlier call crafted them."""
    path = poison_dir / f"{target['key']}-{attack_id(attack)}.pt"
    if path.exists():
        return Poisons.load(path, data.train.images)
    poisons = craft_from_class(attack, surrogate, target_images[j], config.poison_class, data.train,
                               seed=config.crafting_seed + target["index"], device=device, show_progress=show_progress)
    poisons.save(path)
    return poisons

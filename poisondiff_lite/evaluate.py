"""Bring your own poisons: a poison set crafted anywhere (ART, Witches' Brew's ``forest``, your own code) gets the
victims, the results log and the statistics of a study (`run_study`), so attacks compare across libraries.

Nothing here needs the surrogate for victims retrained from scratch; transfer victims train their linear head on the
study's surrogate features (run 0 of the clean experiment, trained if missing).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .attacks import SETTINGS, AttackConfig, Poisons, attack_objective, check_attack_inputs
from .data import DataBundle, check_images, to_unit
from .errors import InvalidChoiceError, check_choice
from .experiment import clean_experiment
from .record import prepare_data
from .results import format_table
from .study_config import StudyConfig, baseline_id, setup_key
from .utils import atomic_write_json, check_writable, eval_mode, exclusive, get_device, resolve_results_dir
from .victims import (
    ResultsLog,
    asr_interval,
    surrogate_features,
    insert_poisons,
    log_outcomes,
    outcome_row,
    poisoned_features,
    scratch_victims,
    transfer_victims,
    victim_seeds,
)

POISONED = "poisons"  # the attack id of the external poisons in the log


def as_uint8_images(images: Any, what: str = "images", *, batch: bool = True) -> torch.Tensor:
    """Images from numpy or torch, channels first ``(N, 3, H, W)`` or last ``(N, H, W, 3)`` (ART's and PIL's
    layout), uint8 or floats in [0, 1], as the uint8 channels-first tensor a released data set would hold (floats
    are rounded to the nearest pixel level)."""
    x = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images.detach().cpu()
    ndim = 4 if batch else 3
    if x.ndim == ndim and x.shape[-1] == 3 and x.shape[-3] != 3:  # channels last
        x = x.movedim(-1, -3)
    x = check_images(x.contiguous(), what, batch=batch)
    return x if x.dtype == torch.uint8 else (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class PoisonEvaluation:
    """Victims trained on a training set holding an external poison set, and no-attack victims beside them."""

    key: str  # the target's setup key (``y_t-y_p-index``) or ``external-<hash>`` for a target given as an image
    setting: str  # "scratch" | "transfer"
    config: StudyConfig  # the victims' protocol (recipe, seeds, classes)
    rows: list[dict[str, Any]]  # one per victim, as in a study's log
    max_change: int  # largest change of any poison pixel, in pixel levels (16 = the usual 16/255)
    num_poisons: int
    path: Path | None = None

    def summary(self) -> list[dict[str, Any]]:
        """ASR with its Wilson 95 % interval and the mean clean accuracy, for the poisons and for no attack."""
        out = []
        for attack, label in ((POISONED, "poisons"), (baseline_id(self.setting), "no attack")):
            mine = [r for r in self.rows if r["attack"] == attack]
            if not mine:
                continue
            wins = sum(bool(r["success"]) for r in mine)
            low, high = asr_interval(wins, len(mine))
            out.append(
                {
                    "victims of": label,
                    "victims": len(mine),
                    "successes": wins,
                    "asr": wins / len(mine),
                    "asr_low": low,
                    "asr_high": high,
                    "clean_accuracy": float(np.mean([r["clean_accuracy"] for r in mine])),
                }
            )
        return out

    def asr(self) -> float:
        """The poisons' attack success rate (NaN before any victim)."""
        rows = [r for r in self.summary() if r["victims of"] == "poisons"]
        return rows[0]["asr"] if rows else float("nan")

    def __str__(self) -> str:
        head = (
            f"{self.num_poisons} poisons (largest change {self.max_change}/255), target {self.key}, "
            f"{self.setting} victims"
        )
        columns = ["victims of", "victims", "successes", "asr", "asr_low", "asr_high", "clean_accuracy"]
        return head + "\n" + format_table(self.summary(), columns)


def evaluate_poisons(
    poison_images: Any,
    poison_indices: Any,
    target: int | Any,
    *,
    config: StudyConfig | None = None,
    setting: str = "scratch",
    baseline: bool = True,
    data: DataBundle | None = None,
    data_dir: str | None = None,
    download: bool = False,
    results_dir: str | os.PathLike | None = None,
    device: torch.device | str = "auto",
    show_progress: bool = True,
) -> PoisonEvaluation:
    """Retrain a study's victims on the training set with your poisons in it; log and summarise the outcome.

    Parameters
    ----------
    poison_images : the poisoned images, ``(P, 3, H, W)`` or ``(P, H, W, 3)``, uint8 or floats in [0, 1], numpy or
        torch (e.g. ART's ``x_poison[indices]``). A whole poisoned training set (``N`` images) works too: pass
        ``poison_indices=None`` and the images that differ from the clean ones are the poisons.
    poison_indices : their positions in the training set (after the config's class selection), or None (see above).
    target : the target's index in the test split (its key is then the study's ``y_t-y_p-index``), or the target
        image itself (``(3, H, W)`` or ``(H, W, 3)``).
    config : the protocol (default `StudyConfig.lab`): the data set and classes, the victim recipe, ``victims``
        seeded from ``victim_seed0``, the linear head of transfer victims, ``target_class`` and ``poison_class``
        (success means a victim predicts the poison class on the target).
    setting : ``"scratch"`` (victims retrained from scratch) or ``"transfer"`` (a linear head on the surrogate's
        frozen features).
    baseline : also train the no-attack victims (the same seeds on the clean training set).

    Returns
    -------
    `PoisonEvaluation`; ``print(result)`` shows ASR with its interval. Finished victims are on disk (under
    ``<results>/evaluations/``): a second call with the same inputs resumes instead of training again.
    """
    config = config if config is not None else StudyConfig.lab()
    check_choice("setting", setting, SETTINGS)
    device = get_device(device)
    data = prepare_data(config.trajectory, data, data_dir=data_dir, download=download)
    train = data.train
    images, indices = _poison_set(poison_images, poison_indices, train.images.cpu())
    if isinstance(target, (str, bytes, bool)) or (np.ndim(target) == 0 and not isinstance(target, (int, np.integer))):
        raise InvalidChoiceError(
            f"target must be a test index (an integer) or the target image, got {target!r}. Fix: pass int(...) "
            f"of a test index, or the image itself"
        )
    if isinstance(target, (int, np.integer)):
        check_choice("target index", int(target), range(len(data.test)))
        label = int(data.test.labels[int(target)])
        if label != config.target_class:
            raise InvalidChoiceError(
                f"test image {int(target)} is a {data.classes[label]!r}, the config's target "
                f"class is {data.classes[config.target_class]!r}. Fix: pass "
                f"config=dataclasses.replace(config, target_class={label}), or another target"
            )
        target_image = data.test.images[int(target)].cpu()
        key = setup_key(config.target_class, config.poison_class, int(target))
    else:
        target_image = as_uint8_images(target, "the target image", batch=False)
        if target_image.shape != images.shape[1:]:
            raise InvalidChoiceError(
                f"the target is {tuple(target_image.shape)}, the poisons "
                f"{tuple(images.shape[1:])}; both must be images of the training set's size"
            )
        key = "external-" + _digest(target_image)
    clean = train.images[indices.to(train.images.device)].cpu()
    max_change = int((images.int() - clean.int()).abs().max()) if len(images) else 0
    poisons = Poisons(images, indices, (images.float() - clean.float()) / 255, attack="external")
    ident = _digest(images, indices, target_image, config.key().encode(), setting.encode())
    folder = check_writable(resolve_results_dir(results_dir) / "evaluations" / f"{config.trajectory.dataset}-{ident}")
    with exclusive(folder, "the evaluation"):
        atomic_write_json(
            folder / "evaluation.json",
            {
                "key": key,
                "setting": setting,
                "config": config.to_dict(),
                "indices": indices.tolist(),
                "max_change": max_change,
            },
        )
        log = ResultsLog(folder / "results.jsonl", {"study": ident, "config": config.to_dict(), "setting": setting})
        _train_victims(
            log, config, setting, baseline, data, poisons, target_image, key, results_dir, device, show_progress
        )
    return PoisonEvaluation(key, setting, config, list(log.rows), max_change, len(images), folder)


def _train_victims(
    log: ResultsLog,
    config: StudyConfig,
    setting: str,
    baseline: bool,
    data: DataBundle,
    poisons: Poisons,
    target_image: torch.Tensor,
    key: str,
    results_dir,
    device: torch.device,
    show_progress: bool,
) -> None:
    seeds = victim_seeds(config.victim_seed0, config.victims)
    done = log.done()
    adv, true = config.poison_class, config.target_class
    jobs = [(POISONED, poisons)] + ([(baseline_id(setting), None)] if baseline else [])
    surrogate = features = None
    if setting == "transfer":
        surrogate = clean_experiment(
            config.trajectory, data=data, device=device, show_progress=show_progress, results_dir=results_dir
        ).surrogate
        features = surrogate_features(surrogate, data, target_image[None], device=device)
    for attack, poison_set in jobs:
        todo = [s for s in seeds if (key, attack, s) not in done]
        if not todo:
            continue
        if setting == "scratch":
            results = scratch_victims(
                data,
                insert_poisons(data.train, poison_set),
                config.victim_recipe,
                todo,
                target_image[None],
                device=device,
                show_progress=show_progress,
            )
        else:
            rows = poisoned_features(surrogate, features["train"], poison_set, device=device)
            results = transfer_victims(
                rows, data.train.labels, features["test"], features["targets"], data.num_classes, config.head, todo
            )
        name = "external" if attack == POISONED else "none"

        def rows_of(seed, target_logits, accuracy, attack=attack, name=name):
            return [outcome_row(key, attack, seed, target_logits[0], accuracy, adv, true, name=name, setting=setting)]

        log_outcomes(
            log,
            results,
            data.test.labels,
            rows_of,
            show_progress=show_progress,
            total=len(todo),
            desc=f"victims ({'poisoned' if attack == POISONED else 'no attack'})",
        )


def _poison_set(images: Any, indices: Any, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The poisons as uint8 ``(P, 3, H, W)`` and their training indices, checked against the clean training set."""
    x = as_uint8_images(images, "the poison images")
    if x.shape[1:] != clean.shape[1:]:
        raise InvalidChoiceError(
            f"poison images are {tuple(x.shape[1:])} (channels first), the training set holds {tuple(clean.shape[1:])}"
        )
    if indices is None:
        if len(x) != len(clean):
            raise InvalidChoiceError(
                f"without poison_indices, pass the whole poisoned training set ({len(clean)} "
                f"images), not {len(x)}; or pass the poisons' training indices"
            )
        changed = torch.nonzero((x != clean).flatten(1).any(1)).squeeze(1)
        if len(changed) == 0:
            raise InvalidChoiceError("no image differs from the clean training set: nothing to evaluate")
        return x[changed], changed
    idx = torch.as_tensor(np.asarray(indices.cpu() if torch.is_tensor(indices) else indices))
    if idx.ndim != 1 or len(idx) != len(x) or (len(idx) and (idx.is_floating_point() or idx.dtype == torch.bool)):
        raise InvalidChoiceError(
            f"poison_indices must be {len(x)} integer positions (one per poison image), got "
            f"shape {tuple(idx.shape)} of {idx.dtype}"
        )
    idx = idx.long()
    if len(idx) == 0:
        raise InvalidChoiceError("no poison given: pass at least one poison image and its index")
    if int(idx.min()) < 0 or int(idx.max()) >= len(clean):
        raise InvalidChoiceError(
            f"poison indices must lie in [0, {len(clean)}), the training set (after the "
            f"config's class selection); got {int(idx.min())}..{int(idx.max())}"
        )
    if len(set(idx.tolist())) != len(idx):
        raise InvalidChoiceError("poison indices must be distinct: each training image is poisoned at most once")
    return x, idx


def _digest(*parts: torch.Tensor | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


# -----------------------------------------------------------------------------------------------------------------
#  measuring a poison set, wherever it was crafted: alignment and feature losses
# -----------------------------------------------------------------------------------------------------------------
def alignment(
    model: nn.Module,
    target_image: torch.Tensor,
    adv_class: int,
    poison_images: torch.Tensor,
    poison_labels: torch.Tensor,
    *,
    setting: str = "scratch",
    device: torch.device | str = "auto",
) -> float:
    """Cosine between the target's adversarial gradient and the poisons' training gradient (Witches' Brew's
    alignment; 1 − the gradient-matching loss, without augmentation), over the parameters the victims train.

    Parameters
    ----------
    model : the surrogate (a `Classifier`); not changed.
    target_image : ``(3, H, W)`` uint8 or float in [0, 1].
    adv_class : the class the attacker wants for the target.
    poison_images, poison_labels : ``(P, 3, H, W)`` poisoned images (uint8 or float in [0, 1]) and their labels.
    setting : ``"scratch"`` (all parameters) or ``"transfer"`` (the linear head only).
    """
    cfg = AttackConfig(name="gm", augment=False, setting=setting)
    return 1.0 - _measure(cfg, model, target_image, adv_class, poison_images, poison_labels, device)


def feature_loss(
    model: nn.Module,
    target_image: torch.Tensor,
    poison_images: torch.Tensor,
    *,
    kind: str = "fc",
    device: torch.device | str = "auto",
) -> float:
    """The feature-space loss of a poison set against a target, relative to ‖φ(x_t)‖² (0: a perfect collision).

    ``kind="fc"``: the mean over poisons of ‖φ(x_j) − φ(x_t)‖² (feature collision); ``"bp"``: ‖mean_j φ(x_j) −
    φ(x_t)‖² (Bullseye Polytope's bullseye). φ is the surrogate's penultimate layer, in eval mode.
    """
    check_choice("kind", kind, ("fc", "bp"))
    cfg = AttackConfig(name=kind, augment=False, setting="transfer")
    labels = torch.zeros(len(poison_images), dtype=torch.long)
    return _measure(cfg, model, target_image, 0, poison_images, labels, device)


def _measure(
    cfg: AttackConfig,
    model: nn.Module,
    target_image: torch.Tensor,
    adv_class: int,
    poison_images: torch.Tensor,
    poison_labels: torch.Tensor,
    device: torch.device | str,
) -> float:
    """One evaluation of an attack's loss at given poisons (no augmentation, no optimisation)."""
    device = get_device(device)
    check_attack_inputs(target_image, poison_images, poison_labels, what="poison")
    model = model.to(device)
    with eval_mode(model):
        target = to_unit(target_image, device)
        x = to_unit(poison_images, device)
        labels = torch.as_tensor(poison_labels, device=device).long()
        objective = attack_objective(cfg, model, target, int(adv_class), x, labels)
        return float(objective(x, torch.arange(len(x), device=device), torch.Generator()).detach())

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

import os
from pathlib import Path
from typing import Any

import torch

from .attacks import AttackConfig, Poisons, craft_from_class
from .cluster import run_plan_on_client
from .data import DataBundle
from .errors import check_choice
from .experiment import clean_experiment
from .record import check_bucket_size, prepare_data
from .results import StudyResults, find_studies, format_table, json_safe, load_study, read_study, read_targets  # noqa: F401
from .study_config import (  # noqa: F401
    METRIC_LABELS,
    METRICS,
    StudyConfig,
    StudyPlan,
    attack_id,
    baseline_id,
    setup_key,
    study_dir,
)
from .targets import choose_targets, extreme_order, target_rows  # noqa: F401
from .utils import atomic_write_json, check_writable, exclusive, get_device, progress
from .victims import (
    ResultsLog,
    surrogate_features,
    insert_poisons,
    log_outcomes,
    poisoned_features,
    scratch_victims,
    transfer_victims,
    victim_seeds,
)

# The configuration lives in `study_config`, the reading of results in `results`; both are re-exported here so
# ``from poisondiff_lite.study import StudyConfig, format_table, load_study`` keeps working.


# -----------------------------------------------------------------------------------------------------------------
#  running a study
# -----------------------------------------------------------------------------------------------------------------
def run_study(
    config: StudyConfig,
    *,
    data: DataBundle | None = None,
    data_dir: str | None = None,
    download: bool = False,
    device: torch.device | str = "auto",
    results_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    client: Any = None,
) -> StudyResults:
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


def _run_locked(
    config: StudyConfig,
    folder: Path,
    data: DataBundle,
    device: torch.device,
    requested_device: str,
    results_dir: str | os.PathLike | None,
    show_progress: bool,
    client: Any,
) -> StudyResults:
    atomic_write_json(folder / "study.json", config.to_dict())
    targets_path = folder / "targets.json"  # a damaged targets file or log stops here, before any training
    saved = read_targets(targets_path)["targets"] if targets_path.exists() else None
    log = ResultsLog(folder / "results.jsonl", {"study": config.key(), "config": config.to_dict()})
    experiment = clean_experiment(
        config.trajectory, data=data, device=device, show_progress=show_progress, results_dir=results_dir
    )
    surrogate, split = experiment.surrogate, experiment.split

    if saved is not None:
        targets = saved
    else:
        chosen, known_tau = choose_targets(
            config, experiment.scores, surrogate, split.images, data.train, device, show_progress
        )
        rows = experiment.target_rows(chosen, [config.poison_class], tau=config.tau_settings, known_tau=known_tau)
        targets = [{"key": setup_key(config.target_class, config.poison_class, r["index"]), **r} for r in rows]
        atomic_write_json(targets_path, {"targets": json_safe(targets), "classes": list(data.classes)})

    seeds = victim_seeds(config.victim_seed0, config.victims)
    target_images = split.images[[t["index"] for t in targets]].cpu()
    features = None
    if any(a.setting == "transfer" for a in config.attacks):
        features = surrogate_features(surrogate, data, target_images, device=device)
    plan = StudyPlan(config, targets, seeds, log.done())
    if client is not None:
        run_plan_on_client(
            client,
            plan,
            log,
            data=data,
            surrogate=surrogate,
            target_images=target_images,
            features=features,
            poison_dir=folder / "poisons",
            device=requested_device,
            show_progress=show_progress,
        )
        return StudyResults(config, targets, log.rows, tuple(data.classes), folder)

    def victims_for(setting: str, train_set, todo: list[int], feature_rows=None, target_inputs=None):
        if setting == "scratch":
            return scratch_victims(
                data, train_set, config.victim_recipe, todo, target_inputs, device=device, show_progress=show_progress
            )
        return transfer_victims(
            feature_rows, data.train.labels, features["test"], target_inputs, data.num_classes, config.head, todo
        )

    # clean victims: one set per setting serves every target (the "no attack" baseline)
    for setting, todo in plan.baselines():
        target_inputs = target_images if setting == "scratch" else features["targets"]
        results = victims_for(setting, data.train, todo, features and features["train"], target_inputs)
        log_outcomes(
            log,
            results,
            data.test.labels,
            plan.baseline_rows(setting),
            show_progress=show_progress,
            total=len(todo),
            desc=f"clean victims ({setting})",
        )

    poison_dir = folder / "poisons"
    for target, j, attack, todo in progress(plan.attacks(), enable=show_progress, desc="targets x attacks", unit="job"):
        poisons = _poisons(
            attack,
            target,
            target_images[j],
            config=config,
            data=data,
            surrogate=surrogate,
            poison_dir=poison_dir,
            device=device,
            show_progress=show_progress,
        )
        poisoned = insert_poisons(data.train, poisons)
        if attack.setting == "scratch":
            results = victims_for("scratch", poisoned, todo, target_inputs=target_images[j : j + 1])
        else:
            rows = poisoned_features(surrogate, features["train"], poisons, device=device)
            results = victims_for("transfer", poisoned, todo, rows, features["targets"][j : j + 1])
        log_outcomes(
            log,
            results,
            data.test.labels,
            plan.attack_rows(target, attack, poisons.final_loss),
            show_progress=show_progress,
            total=len(todo),
            desc=f"{attack.label} victims #{target['index']}",
        )
    return StudyResults(config, targets, log.rows, tuple(data.classes), folder)


def _poisons(
    attack: AttackConfig,
    target: dict[str, Any],
    target_image: torch.Tensor,
    *,
    config: StudyConfig,
    data: DataBundle,
    surrogate: torch.nn.Module,
    poison_dir: Path,
    device: torch.device,
    show_progress: bool,
) -> Poisons:
    """Craft the poisons of one (target, attack), or load them if an earlier call crafted them."""
    path = poison_dir / f"{target['key']}-{attack_id(attack)}.pt"
    if path.exists():
        return Poisons.load(path, data.train.images)
    poisons = craft_from_class(
        attack,
        surrogate,
        target_image,
        config.poison_class,
        data.train,
        seed=config.crafting_seed + target["index"],
        device=device,
        show_progress=show_progress,
    )
    poisons.save(path)
    return poisons

"""The clean experiment every metric starts from: the data, M recorded runs, run 0's model and the scores.

`clean_experiment` loads it, training whatever is missing (resumable, see `record_trajectories`), and is the one
entry used by the study, the metrics CSV, the evaluation of external poisons and the notebooks. Its `target_rows`
measures EPA, DPS, δ and τ of chosen targets (`targets.target_rows`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .budget import BudgetResult, TauSettings
from .config import TrajectoryConfig
from .data import DataBundle, ImageDataset
from .errors import ResultsFileError
from .metrics import select_targets, trajectory_metrics
from .record import default_path, load_run_model, prepare_data, record_trajectories
from .targets import target_rows
from .trajectory import Trajectory
from .utils import get_device


@dataclass(frozen=True)
class CleanExperiment:
    """A recorded clean experiment: what EPA, DPS, δ, τ and the attacks' surrogate are computed from."""

    config: TrajectoryConfig  # the experiment
    data: DataBundle  # the data set, with the config's class selection applied
    traj: Trajectory  # the M recorded runs
    surrogate: nn.Module  # run 0's final model (the attacker's surrogate, the model of δ and τ), on `device`
    scores: dict[str, np.ndarray]  # `trajectory_metrics(traj)`: EPA, soft EPA, DPS, dominant, labels, indices
    path: Path  # the trajectory file
    device: torch.device  # where the surrogate lives and δ, τ are computed

    @property
    def split(self) -> ImageDataset:
        """The split the runs were evaluated on (the test split unless the config says otherwise)."""
        return self.data.test if self.config.eval_split == "test" else self.data.train

    def position(self, index: int) -> int:
        """Position in the trajectory (and in `scores`) of example `index` of the split."""
        hits = np.flatnonzero(self.scores["indices"] == int(index))
        if len(hits) == 0:
            recorded = self.scores["indices"]
            raise ResultsFileError(
                f"index {int(index)} was not recorded in the trajectories ({len(recorded)} examples, "
                f"{recorded.min()}..{recorded.max()}); choose one of experiment.scores['indices']"
            )
        return int(hits[0])

    def targets(self, target_class: int | str, per_bucket: int, *, middle: bool = True) -> list[dict[str, Any]]:
        """Targets of one class drawn from the EPA buckets (`select_targets`), with their test indices."""
        return select_targets(
            self.scores["epa"],
            self.scores["labels"],
            self.data.class_index(target_class),
            per_bucket=per_bucket,
            indices=self.scores["indices"],
            middle=middle,
        )

    def target_rows(
        self,
        chosen: Sequence[dict[str, Any] | int],
        poison_classes: Sequence[int],
        *,
        tau: TauSettings | None = TauSettings(),
        last_layer_only: bool = False,
        known_tau: dict[tuple[int, int], BudgetResult] | None = None,
        show_progress: bool = False,
    ) -> list[dict[str, Any]]:
        """EPA, soft EPA, DPS, δ and τ of each chosen target (a dict with ``index``, or a plain index) toward each
        poison class: one row per pair (`targets.target_rows`); ``tau=None`` skips τ."""
        chosen = [c if isinstance(c, dict) else {"index": int(c)} for c in chosen]
        positions = [self.position(c["index"]) for c in chosen]
        return target_rows(
            self.surrogate,
            self.scores,
            chosen,
            positions,
            self.split.images[[c["index"] for c in chosen]],
            poison_classes,
            self.data.train,
            tau=tau,
            last_layer_only=last_layer_only,
            known_tau=known_tau,
            device=self.device,
            show_progress=show_progress,
        )


def clean_experiment(
    config: TrajectoryConfig,
    *,
    data: DataBundle | None = None,
    data_dir: str | None = None,
    download: bool = False,
    device: torch.device | str = "auto",
    results_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> CleanExperiment:
    """Load the clean experiment of `config`, recording the runs (and run 0's weights) that are not saved yet.

    Parameters
    ----------
    config : the experiment (`TrajectoryConfig.preset(quick, dataset, model=...)`).
    data : an already loaded `DataBundle` (else loaded from `data_dir`); the config's class selection is applied once.
    results_dir : where the trajectory file lives (default ``$POISONDIFF_RESULTS`` or ``results/``).

    Returns
    -------
    `CleanExperiment` with the data, the trajectories, run 0's model on `device` and the trajectory scores.
    """
    device = get_device(device)
    data = prepare_data(config, data, data_dir=data_dir, download=download)
    path = default_path(config, results_dir)
    traj = record_trajectories(
        config, data=data, path=path, device=device, show_progress=show_progress, keep_models=True
    )  # also trains run 0 again for its weights if an earlier call did not keep them
    surrogate = load_run_model(path, run=0).to(device)
    return CleanExperiment(config, data, traj, surrogate, trajectory_metrics(traj), path, device)

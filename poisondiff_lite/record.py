"""Trajectory recorder: M clean runs, every epoch end evaluated on a fixed set of examples.

Per run x epoch x example it stores the predicted class (int16), the true-class probability (fp16) and optionally
every logit (fp16). One self-describing ``.npz`` file per experiment holds the arrays and the config that produced
them; it is rewritten atomically after every finished run, so an interrupted experiment resumes from the last
finished run and nothing already computed is lost.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .config import TrajectoryConfig
from .data import DataBundle, ImageDataset
from .datasets import load_dataset
from .errors import InvalidChoiceError, ResultsFileError
from .train import predict_logits, train_fresh_many
from .trajectory import Trajectory
from .utils import atomic_write, check_writable, exclusive, get_device, progress, resolve_results_dir


def default_path(config: TrajectoryConfig, results_dir: str | os.PathLike | None = None) -> Path:
    """``<results>/trajectories/<dataset>-<model>-<hash>.npz``: one file per experiment, shared by all notebooks."""
    name = f"{config.dataset}-{config.train.model}-{config.key()}.npz"
    return resolve_results_dir(results_dir) / "trajectories" / name


def takes_bundle(config: TrajectoryConfig, data: DataBundle) -> bool:
    """Can `prepare_data` use `data` for `config`: as loaded, or already prepared for the config's own classes?"""
    prepared = data.notes.get("prepared_classes")
    return prepared is None or prepared == (tuple(config.classes) if config.classes is not None else None)


def prepare_data(
    config: TrajectoryConfig, data: DataBundle | None = None, *, data_dir: str | None = None, download: bool = False
) -> DataBundle:
    """Load (or take) the dataset and apply the config's class selection (once: a bundle this function already
    prepared for the same selection is returned as it is)."""
    data = data if data is not None else load_dataset(config.dataset, data_dir, download=download)
    prepared = data.notes.get("prepared_classes")
    if not takes_bundle(config, data):  # its labels are already renumbered: selecting again is wrong
        wanted = "all" if config.classes is None else list(config.classes)
        raise InvalidChoiceError(
            f"this {data.name} bundle holds only classes {list(prepared)}, the experiment needs {wanted}; pass the "
            f"data set as loaded (pdl.load_dataset)"
        )
    if config.classes is not None and prepared is None:
        data = data.select_classes(list(config.classes))
        data = dataclasses.replace(data, notes=dict(data.notes, prepared_classes=tuple(config.classes)))
    return data


def check_bucket_size(config: TrajectoryConfig, data: DataBundle, target_class: int, per_bucket: int) -> None:
    """`per_bucket` targets must fit in the recorded examples of the target class (checked before training)."""
    split = data.test if config.eval_split == "test" else data.train
    labels = split.labels.cpu().numpy()
    if config.eval_indices is not None:
        labels = labels[[i for i in config.eval_indices if i < len(labels)]]
    members = int((labels == target_class).sum())
    if per_bucket > members:
        raise InvalidChoiceError(
            f"per_bucket={per_bucket} is more than the {members} recorded examples of class "
            f"{data.classes[target_class]!r}; choose at most {members}"
        )


def record_trajectories(
    config: TrajectoryConfig,
    *,
    data: DataBundle | None = None,
    path: str | os.PathLike | None = None,
    data_dir: str | None = None,
    download: bool = False,
    device: torch.device | str = "auto",
    show_progress: bool = True,
    keep_models: bool = False,
    results_dir: str | os.PathLike | None = None,
) -> Trajectory:
    """Train `config.runs` clean runs and record every epoch end; resume whatever a previous call finished.

    Parameters
    ----------
    config : the experiment (dataset, recipe, M, seeds, what to store).
    data : an already loaded `DataBundle` (else it is loaded from `data_dir`).
    path : the ``.npz`` file (default `default_path`); an existing file with the same config is resumed, one with a
        different config is refused (a larger `runs` extends it).
    keep_models : also save each run's final weights next to the file (``<stem>.run<m>.pt``), e.g. for δ and τ.

    Returns
    -------
    The `Trajectory` with all runs completed.
    """
    device = get_device(device)
    path = Path(path) if path is not None else default_path(config, results_dir)
    data = prepare_data(config, data, data_dir=data_dir, download=download)
    split: ImageDataset = data.test if config.eval_split == "test" else data.train
    indices = np.arange(len(split)) if config.eval_indices is None else np.asarray(config.eval_indices)
    if len(indices) == 0 or indices.min() < 0 or indices.max() >= len(split):
        raise InvalidChoiceError(
            f"eval_indices must be non-empty and lie in [0, {len(split)}) for the {config.eval_split} split"
        )
    split = split.subset(indices)
    traj = _resume_or_start(path, config, split, data.classes, indices)
    needs_model = keep_models and not run_model_path(path, 0).exists()
    if traj.completed >= config.runs and not needs_model:
        return traj.finished(config.runs)
    check_writable(path.parent)  # before hours of training, not after the first run
    with exclusive(path, "the trajectory file"):  # one recorder per file; re-read under the lock
        traj = _resume_or_start(path, config, split, data.classes, indices)
        if traj.completed < config.runs:
            traj = _record_runs(config, traj, path, data, split, device, show_progress, keep_models)
        if keep_models and not run_model_path(path, 0).exists():
            _retrain_run_model(config, traj, path, data, split, device, show_progress)
        return traj.finished(config.runs)


def run_model_path(path: str | os.PathLike, run: int) -> Path:
    """Where ``record_trajectories(..., keep_models=True)`` saves run `run`'s final weights."""
    return Path(path).with_name(f"{Path(path).stem}.run{run}.pt")


def _save_run_model(config: TrajectoryConfig, path: Path, run: int, model: nn.Module) -> None:
    saved = {
        "config": config.to_dict(),
        "run": run,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_write(run_model_path(path, run), lambda f: torch.save(saved, f))


def _retrain_run_model(
    config: TrajectoryConfig,
    traj: Trajectory,
    path: Path,
    data: DataBundle,
    split: ImageDataset,
    device: torch.device,
    show_progress: bool,
) -> None:
    """Run 0 was recorded without its weights (e.g. by ``poisondiff epa``): train it again from its seed and save it.

    Training is seeded, so the model is run 0 again; its final predictions are compared with the recorded ones and a
    difference (non-deterministic GPU kernels) is reported, not hidden.
    """
    [(_, model, _)] = next(
        train_fresh_many(
            data.to(device),
            config.train,
            [config.seed0],
            device=device,
            show_progress=show_progress,
            desc="run 0 (its weights)",
        )
    )
    logits = predict_logits(
        model, split.images.to(device), batch_size=config.train.eval_batch_size, device=device, cfg=config.train
    )
    agree = float((logits.argmax(1).cpu().numpy() == traj.preds[0, -1]).mean())
    if agree < 1.0:
        warnings.warn(
            f"run 0 trained again for its weights agrees with its recorded final predictions on "
            f"{agree:.1%} of the examples (non-deterministic kernels); δ and τ use the retrained model",
            stacklevel=3,
        )
    _save_run_model(config, path, 0, model)


def _record_runs(
    config: TrajectoryConfig,
    traj: Trajectory,
    path: Path,
    data: DataBundle,
    split: ImageDataset,
    device: torch.device,
    show_progress: bool,
    keep_models: bool,
) -> Trajectory:
    """Train the runs `traj` still lacks, saving it after each (the caller holds the file's lock)."""
    data_on_device = data.to(device)
    eval_images = split.images.to(device)
    eval_labels = torch.as_tensor(traj.labels, device=device)
    runs = progress(
        None, total=config.runs, initial=traj.completed, enable=show_progress, desc="clean runs", unit="run"
    )
    start = time.perf_counter()

    def record_epoch(epoch: int, model: nn.Module, seeds: list[int]) -> None:
        logits = predict_logits(
            model, eval_images, batch_size=config.train.eval_batch_size, device=device, cfg=config.train
        ).view(len(eval_images), len(seeds), -1)
        prob = torch.softmax(logits, -1).gather(2, eval_labels[:, None, None].expand(-1, len(seeds), 1))[..., 0]
        for v, seed in enumerate(seeds):
            run = seed - config.seed0
            traj.preds[run, epoch - 1] = logits[:, v].argmax(1).to(torch.int16).cpu().numpy()
            traj.true_prob[run, epoch - 1] = prob[:, v].to(torch.float16).cpu().numpy()
            if traj.logits is not None:
                traj.logits[run, epoch - 1] = logits[:, v].to(torch.float16).cpu().numpy()

    seeds = [config.seed0 + run for run in range(traj.completed, config.runs)]
    for group in train_fresh_many(
        data_on_device,
        config.train,
        seeds,
        device=device,
        on_epoch_end=record_epoch,
        show_progress=show_progress,
        desc="run",
    ):
        seconds = (time.perf_counter() - start) / len(group)
        for seed, model, history in group:
            run = seed - config.seed0
            traj.train_accuracy[run] = history.accuracy
            traj.seconds[run] = seconds
            if keep_models:
                _save_run_model(config, path, run, model)
        traj.completed = group[-1][0] - config.seed0 + 1
        traj.save(path)
        runs.update(len(group))
        start = time.perf_counter()
    runs.close()
    return traj.finished()


def _resume_or_start(
    path: Path, config: TrajectoryConfig, split: ImageDataset, classes: tuple[str, ...], indices: np.ndarray
) -> Trajectory:
    if path.exists():
        old = Trajectory.load(path)
        if old.config.key() != config.key():
            raise ResultsFileError(
                f"{path} holds a different experiment (config {old.config.key()}, yours {config.key()}). Fix: pass "
                f"another path, or delete the file to start over."
            )
        if len(old.labels) != len(split) or not np.array_equal(old.labels, split.labels.cpu().numpy()):
            raise ResultsFileError(
                f"{path} was recorded on other data than the dataset loaded now. Fix: pass another "
                f"path, or delete the file to start over."
            )
        return old.grown_to(config.runs)
    labels = split.labels.cpu().numpy()
    return Trajectory.empty(config, labels, indices, classes)


def load_run_model(path: str | os.PathLike, run: int = 0) -> nn.Module:
    """Rebuild run `run`'s final model saved by ``record_trajectories(..., keep_models=True)``."""
    from .models import build_model

    model_path = run_model_path(path, run)
    if not model_path.exists():
        raise ResultsFileError(
            f"no saved model at {model_path}. Fix: call record_trajectories(config, "
            f"keep_models=True) (or poisondiff epa --keep-models), which saves it."
        )
    fix = (
        "delete it; record_trajectories(config, keep_models=True) trains run 0 again and saves it"
        if run == 0
        else "delete it and the trajectory file, and record again with keep_models=True"
    )
    try:
        saved = torch.load(model_path, map_location="cpu", weights_only=True)
        config = TrajectoryConfig.from_dict(saved["config"])
        num_classes = saved["state"]["head.weight"].shape[0]
        mean = tuple(saved["state"]["mean"].flatten().tolist())
        std = tuple(saved["state"]["std"].flatten().tolist())
        model = build_model(config.train.model, num_classes, mean=mean, std=std)
        model.load_state_dict(saved["state"])
    except Exception as exc:
        raise ResultsFileError(
            f"{model_path} is not a readable saved model ({type(exc).__name__}: {str(exc)[:120]}). Fix: {fix}."
        ) from None
    return model.eval()

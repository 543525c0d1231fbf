"""Trajectory recorder: M clean runs, every epoch end evaluated on a fixed set of examples.

Per run x epoch x example it stores the predicted class (int16), the true-class probability (fp16) and optionally
every logit (fp16). One self-describing ``.npz`` file per experiment holds the arrays and the config that produced
them; it is rewritten atomically after every finished run, so an interrupted experiment resumes from the last
finished run and nothing already computed is lost.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .config import TrajectoryConfig
from .data import DataBundle, ImageDataset, load_dataset
from .errors import InvalidChoiceError, ResultsFileError
from .train import predict_logits, train_fresh_many
from .utils import atomic_write, check_writable, exclusive, get_device, progress, resolve_results_dir

FORMAT_VERSION = 1


@dataclass
class Trajectory:
    """Recorded predictions of M runs x N epochs on E examples (only the first `completed` runs are filled)."""

    config: TrajectoryConfig
    labels: np.ndarray  # (E,) true labels of the recorded examples
    indices: np.ndarray  # (E,) their indices in the evaluated split
    preds: np.ndarray  # (M, N, E) int16 predicted class
    true_prob: np.ndarray  # (M, N, E) float16 softmax probability of the true class
    logits: np.ndarray | None = None  # (M, N, E, C) float16, when config.store_logits
    completed: int = 0  # runs finished
    train_accuracy: np.ndarray | None = None  # (M, N) training accuracy per epoch
    seconds: np.ndarray | None = None  # (M,) wall time per run
    extra: dict = field(default_factory=dict)

    @property
    def num_runs(self) -> int:
        return self.preds.shape[0]

    @property
    def num_epochs(self) -> int:
        return self.preds.shape[1]

    @property
    def num_examples(self) -> int:
        return self.preds.shape[2]

    def finished(self, limit: int | None = None) -> Trajectory:
        """A view holding only the completed runs, at most `limit` of them (what metrics should see)."""
        k = self.completed if limit is None else min(self.completed, limit)
        return Trajectory(self.config, self.labels, self.indices, self.preds[:k], self.true_prob[:k],
                          None if self.logits is None else self.logits[:k], k,
                          None if self.train_accuracy is None else self.train_accuracy[:k],
                          None if self.seconds is None else self.seconds[:k], dict(self.extra))

    def correct(self) -> np.ndarray:
        """(M, N, E) boolean: was the example classified correctly at that checkpoint."""
        return self.preds == self.labels[None, None, :]

    def eval_accuracy(self) -> np.ndarray:
        """(M, N) accuracy on the recorded examples after each epoch of each run."""
        return self.correct().mean(axis=2)

    # -------------------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to `path` (``.npz``)."""
        arrays = {
            "format_version": np.asarray(FORMAT_VERSION),
            "config_json": np.asarray(json.dumps(self.config.to_dict(), sort_keys=True)),
            "extra_json": np.asarray(json.dumps(self.extra, sort_keys=True)),
            "labels": self.labels, "indices": self.indices, "preds": self.preds, "true_prob": self.true_prob,
            "completed": np.asarray(self.completed),
        }
        for name in ("logits", "train_accuracy", "seconds"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trajectory:
        """Read a file written by `save`; a corrupt or foreign file raises `ResultsFileError` naming the fix."""
        path = Path(path)
        if not path.exists():
            raise ResultsFileError(f"no trajectory file at {path}. Fix: record one with record_trajectories(...) "
                                   f"(notebook 01) or check the path.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ResultsFileError(f"{path} has format version {version}, this package reads {FORMAT_VERSION}. "
                                       f"Fix: record it again with this version.")
            config = TrajectoryConfig.from_dict(json.loads(str(data["config_json"])))
            traj = cls(config=config, labels=data["labels"], indices=data["indices"], preds=data["preds"],
                       true_prob=data["true_prob"], logits=data.get("logits"), completed=int(data["completed"]),
                       train_accuracy=data.get("train_accuracy"), seconds=data.get("seconds"),
                       extra=json.loads(str(data["extra_json"])))
            runs, epochs, examples = traj.preds.shape
            if traj.true_prob.shape != traj.preds.shape or len(traj.labels) != examples or traj.completed > runs:
                raise ValueError(f"inconsistent arrays (preds {traj.preds.shape}, true_prob {traj.true_prob.shape}, "
                                 f"{len(traj.labels)} labels, {traj.completed} runs completed)")
        except ResultsFileError:
            raise
        except Exception as exc:
            missing = f"no array {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {str(exc)[:150]}"
            raise ResultsFileError(f"{path} is not a readable trajectory file ({missing}). Fix: delete it and record "
                                   f"again; finished runs in other files are unaffected.") from None
        return traj

    @classmethod
    def empty(cls, config: TrajectoryConfig, labels: np.ndarray, indices: np.ndarray,
              classes: tuple[str, ...]) -> Trajectory:
        m, n, e, num_classes = config.runs, config.train.epochs, len(labels), len(classes)
        return cls(config=config, labels=np.asarray(labels, dtype=np.int64),
                   indices=np.asarray(indices, dtype=np.int64),
                   preds=np.full((m, n, e), -1, dtype=np.int16), true_prob=np.zeros((m, n, e), dtype=np.float16),
                   logits=np.zeros((m, n, e, num_classes), dtype=np.float16) if config.store_logits else None,
                   train_accuracy=np.zeros((m, n), dtype=np.float32), seconds=np.zeros(m, dtype=np.float32),
                   extra={"classes": list(classes)})

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.extra.get("classes", ()))

    @property
    def num_classes(self) -> int:
        return len(self.classes) or int(max(self.labels.max(), self.preds.max())) + 1

    def grown_to(self, runs: int) -> Trajectory:
        """A copy with room for `runs` runs (finished runs kept), for extending an experiment."""
        if runs <= self.num_runs:
            return self
        pad = runs - self.num_runs

        def grow(a: np.ndarray | None, fill: float) -> np.ndarray | None:
            if a is None:
                return None
            return np.concatenate([a, np.full((pad,) + a.shape[1:], fill, dtype=a.dtype)])

        config = TrajectoryConfig.from_dict(dict(self.config.to_dict(), runs=runs))
        return Trajectory(config, self.labels, self.indices, grow(self.preds, -1), grow(self.true_prob, 0),
                          grow(self.logits, 0), self.completed, grow(self.train_accuracy, 0), grow(self.seconds, 0),
                          dict(self.extra))


def default_path(config: TrajectoryConfig, results_dir: str | os.PathLike | None = None) -> Path:
    """``<results>/trajectories/<dataset>-<model>-<hash>.npz``: one file per experiment, shared by all notebooks."""
    name = f"{config.dataset}-{config.train.model}-{config.key()}.npz"
    return resolve_results_dir(results_dir) / "trajectories" / name


def prepare_data(config: TrajectoryConfig, data: DataBundle | None = None, *, data_dir: str | None = None,
                 download: bool = False) -> DataBundle:
    """Load (or take) the dataset and apply the config's class selection."""
    data = data if data is not None else load_dataset(config.dataset, data_dir, download=download)
    if config.classes is not None:
        data = data.select_classes(list(config.classes))
    return data


def check_bucket_size(config: TrajectoryConfig, data: DataBundle, target_class: int, per_bucket: int) -> None:
    """`per_bucket` targets must fit in the recorded examples of the target class (checked before training)."""
    split = data.test if config.eval_split == "test" else data.train
    labels = split.labels.cpu().numpy()
    if config.eval_indices is not None:
        labels = labels[[i for i in config.eval_indices if i < len(labels)]]
    members = int((labels == target_class).sum())
    if per_bucket > members:
        raise InvalidChoiceError(f"per_bucket={per_bucket} is more than the {members} recorded examples of class "
                                 f"{data.classes[target_class]!r}; choose at most {members}")


def record_trajectories(config: TrajectoryConfig, *, data: DataBundle | None = None,
                        path: str | os.PathLike | None = None, data_dir: str | None = None, download: bool = False,
                        device: torch.device | str = "auto",
                        show_progress: bool = True, keep_models: bool = False,
                        results_dir: str | os.PathLike | None = None) -> Trajectory:
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
        raise InvalidChoiceError(f"eval_indices must be non-empty and lie in [0, {len(split)}) for the "
                                 f"{config.eval_split} split")
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
    saved = {"config": config.to_dict(), "run": run,
             "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    atomic_write(run_model_path(path, run), lambda f: torch.save(saved, f))


def _retrain_run_model(config: TrajectoryConfig, traj: Trajectory, path: Path, data: DataBundle, split: ImageDataset,
                       device: torch.device, show_progress: bool) -> None:
    """Run 0 was recorded without its weights (e.g. by ``poisondiff epa``): train it again from its seed and save it.

    Training is seeded, so the model is run 0 again; its final predictions are compared with the recorded ones and a
    difference (non-deterministic GPU kernels) is reported, not hidden.
    """
    [(_, model, _)] = next(train_fresh_many(data.to(device), config.train, [config.seed0],
                                            device=device, show_progress=show_progress, desc="run 0 (its weights)"))
    logits = predict_logits(model, split.images.to(device), batch_size=config.train.eval_batch_size, device=device,
                            cfg=config.train)
    agree = float((logits.argmax(1).cpu().numpy() == traj.preds[0, -1]).mean())
    if agree < 1.0:
        warnings.warn(f"run 0 trained again for its weights agrees with its recorded final predictions on "
                      f"{agree:.1%} of the examples (non-deterministic kernels); δ and τ use the retrained model",
                      stacklevel=3)
    _save_run_model(config, path, 0, model)


def _record_runs(config: TrajectoryConfig, traj: Trajectory, path: Path, data: DataBundle, split: ImageDataset,
                 device: torch.device, show_progress: bool, keep_models: bool) -> Trajectory:
    """Train the runs `traj` still lacks, saving it after each (the caller holds the file's lock)."""
    data_on_device = data.to(device)
    eval_images = split.images.to(device)
    eval_labels = torch.as_tensor(traj.labels, device=device)
    runs = progress(None, total=config.runs, initial=traj.completed, enable=show_progress, desc="clean runs",
                    unit="run")
    start = time.perf_counter()

    def record_epoch(epoch: int, model: nn.Module, seeds: list[int]) -> None:
        logits = predict_logits(model, eval_images, batch_size=config.train.eval_batch_size, device=device,
                                cfg=config.train).view(len(eval_images), len(seeds), -1)
        prob = torch.softmax(logits, -1).gather(2, eval_labels[:, None, None].expand(-1, len(seeds), 1))[..., 0]
        for v, seed in enumerate(seeds):
            run = seed - config.seed0
            traj.preds[run, epoch - 1] = logits[:, v].argmax(1).to(torch.int16).cpu().numpy()
            traj.true_prob[run, epoch - 1] = prob[:, v].to(torch.float16).cpu().numpy()
            if traj.logits is not None:
                traj.logits[run, epoch - 1] = logits[:, v].to(torch.float16).cpu().numpy()

    seeds = [config.seed0 + run for run in range(traj.completed, config.runs)]
    for group in train_fresh_many(data_on_device, config.train, seeds, device=device, on_epoch_end=record_epoch,
                                  show_progress=show_progress, desc="run"):
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


def _resume_or_start(path: Path, config: TrajectoryConfig, split: ImageDataset, classes: tuple[str, ...],
                     indices: np.ndarray) -> Trajectory:
    if path.exists():
        old = Trajectory.load(path)
        if old.config.key() != config.key():
            raise ResultsFileError(
                f"{path} holds a different experiment (config {old.config.key()}, yours {config.key()}). Fix: pass "
                f"another path, or delete the file to start over."
            )
        if len(old.labels) != len(split) or not np.array_equal(old.labels, split.labels.cpu().numpy()):
            raise ResultsFileError(f"{path} was recorded on other data than the dataset loaded now. Fix: pass another "
                                   f"path, or delete the file to start over.")
        return old.grown_to(config.runs)
    labels = split.labels.cpu().numpy()
    return Trajectory.empty(config, labels, indices, classes)


def load_run_model(path: str | os.PathLike, run: int = 0) -> nn.Module:
    """Rebuild run `run`'s final model saved by ``record_trajectories(..., keep_models=True)``."""
    from .models import build_model

    model_path = run_model_path(path, run)
    if not model_path.exists():
        raise ResultsFileError(f"no saved model at {model_path}. Fix: call record_trajectories(config, "
                               f"keep_models=True) (or poisondiff epa --keep-models), which saves it.")
    fix = ("delete it; record_trajectories(config, keep_models=True) trains run 0 again and saves it" if run == 0
           else "delete it and the trajectory file, and record again with keep_models=True")
    try:
        saved = torch.load(model_path, map_location="cpu", weights_only=True)
        config = TrajectoryConfig.from_dict(saved["config"])
        num_classes = saved["state"]["head.weight"].shape[0]
        mean = tuple(saved["state"]["mean"].flatten().tolist())
        std = tuple(saved["state"]["std"].flatten().tolist())
        model = build_model(config.train.model, num_classes, mean=mean, std=std)
        model.load_state_dict(saved["state"])
    except Exception as exc:
        raise ResultsFileError(f"{model_path} is not a readable saved model ({type(exc).__name__}: "
                               f"{str(exc)[:120]}). Fix: {fix}.") from None
    return model.eval()

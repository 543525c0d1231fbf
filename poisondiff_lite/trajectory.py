"""The trajectory file: M clean runs x N epochs of predictions on E examples, saved as one self-describing ``.npz``.

Per run x epoch x example it holds the predicted class (int16), the true-class probability (fp16) and optionally
every logit (fp16), plus the config that produced them. `record.record_trajectories` writes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TrajectoryConfig
from .errors import InvalidChoiceError, ResultsFileError
from .utils import atomic_write

FORMAT_VERSION = 1


def check_fits(runs: int, epochs: int, examples: int, logit_classes: int = 0) -> None:
    """Refuse, naming the fix, a trajectory whose arrays would not fit in half of this machine's memory (a typo in
    ``--runs`` is otherwise a MemoryError traceback, or swapping for minutes first)."""
    needed = runs * epochs * examples * (4 + 2 * logit_classes)  # int16 predictions, float16 probabilities, logits
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: only the absurd is refused
        memory = 2**40
    if needed > memory // 2:
        raise InvalidChoiceError(
            f"{runs} runs x {epochs} epochs x {examples} examples need {needed / 2**30:,.1f} GiB for the trajectory, "
            f"more than half of this machine's {memory / 2**30:,.0f} GiB. Fix: fewer runs (--runs) or epochs, or "
            f"record fewer examples (eval_indices)"
        )


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
        return Trajectory(
            self.config,
            self.labels,
            self.indices,
            self.preds[:k],
            self.true_prob[:k],
            None if self.logits is None else self.logits[:k],
            k,
            None if self.train_accuracy is None else self.train_accuracy[:k],
            None if self.seconds is None else self.seconds[:k],
            dict(self.extra),
        )

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
            "labels": self.labels,
            "indices": self.indices,
            "preds": self.preds,
            "true_prob": self.true_prob,
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
            raise ResultsFileError(
                f"no trajectory file at {path}. Fix: record one with record_trajectories(...) "
                f"(notebook 01) or check the path."
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ResultsFileError(
                    f"{path} has format version {version}, this package reads {FORMAT_VERSION}. "
                    f"Fix: record it again with this version."
                )
            config = TrajectoryConfig.from_dict(json.loads(str(data["config_json"])))
            traj = cls(
                config=config,
                labels=data["labels"],
                indices=data["indices"],
                preds=data["preds"],
                true_prob=data["true_prob"],
                logits=data.get("logits"),
                completed=int(data["completed"]),
                train_accuracy=data.get("train_accuracy"),
                seconds=data.get("seconds"),
                extra=json.loads(str(data["extra_json"])),
            )
            runs, epochs, examples = traj.preds.shape
            if (
                traj.true_prob.shape != traj.preds.shape
                or len(traj.labels) != examples
                or not 0 <= traj.completed <= runs
            ):
                raise ValueError(
                    f"inconsistent arrays (preds {traj.preds.shape}, true_prob {traj.true_prob.shape}, "
                    f"{len(traj.labels)} labels, {traj.completed} runs completed)"
                )
            done = traj.preds[: traj.completed]
            classes = len(traj.classes) or None
            if done.size and (done.min() < 0 or (classes is not None and done.max() >= classes)):
                raise ValueError(f"finished runs predict classes outside [0, {classes}): {done.min()}..{done.max()}")
        except ResultsFileError:
            raise
        except Exception as exc:
            missing = f"no array {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {str(exc)[:150]}"
            raise ResultsFileError(
                f"{path} is not a readable trajectory file ({missing}). Fix: delete it and record "
                f"again; finished runs in other files are unaffected."
            ) from None
        return traj

    @classmethod
    def empty(
        cls, config: TrajectoryConfig, labels: np.ndarray, indices: np.ndarray, classes: tuple[str, ...]
    ) -> Trajectory:
        m, n, e, num_classes = config.runs, config.train.epochs, len(labels), len(classes)
        check_fits(m, n, e, num_classes if config.store_logits else 0)
        return cls(
            config=config,
            labels=np.asarray(labels, dtype=np.int64),
            indices=np.asarray(indices, dtype=np.int64),
            preds=np.full((m, n, e), -1, dtype=np.int16),
            true_prob=np.zeros((m, n, e), dtype=np.float16),
            logits=np.zeros((m, n, e, num_classes), dtype=np.float16) if config.store_logits else None,
            train_accuracy=np.zeros((m, n), dtype=np.float32),
            seconds=np.zeros(m, dtype=np.float32),
            extra={"classes": list(classes)},
        )

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
        check_fits(runs, self.num_epochs, self.num_examples, 0 if self.logits is None else self.logits.shape[-1])

        def grow(a: np.ndarray | None, fill: float) -> np.ndarray | None:
            if a is None:
                return None
            return np.concatenate([a, np.full((pad,) + a.shape[1:], fill, dtype=a.dtype)])

        config = TrajectoryConfig.from_dict(dict(self.config.to_dict(), runs=runs))
        return Trajectory(
            config,
            self.labels,
            self.indices,
            grow(self.preds, -1),
            grow(self.true_prob, 0),
            grow(self.logits, 0),
            self.completed,
            grow(self.train_accuracy, 0),
            grow(self.seconds, 0),
            dict(self.extra),
        )

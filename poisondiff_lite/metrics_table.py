"""EPA, DPS, δ and τ for chosen targets in one plain CSV: resumable, one row per (target, poison class)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .budget import TauSettings, budget_lower_bound
from .config import TrajectoryConfig
from .data import DataBundle
from .distance import DistanceResult, distance_matrix
from .errors import ResultsFileError, check_classes, check_positive
from .metrics import select_targets, trajectory_metrics
from .record import check_bucket_size, default_path, load_run_model, prepare_data, record_trajectories
from .utils import atomic_write_csv, check_writable, exclusive, format_number, get_device, progress

COLUMNS = (
    "dataset",
    "index",
    "label",
    "bucket",
    "epa",
    "soft_epa",
    "dps",
    "dominant",
    "poison_class",
    "delta_step",
    "grad_norm",
    "delta_param",
    "tau",
    "tau_inner",
    "settings",
)
# `settings` is a hash of everything that changes the numbers (the clean experiment, last layer, τ estimate, variant):
# a file is resumed only with the same settings, never mixed


def settings_key(config: TrajectoryConfig, *, last_layer_only: bool, tau: TauSettings) -> str:
    """The `settings` value of rows computed with these settings."""
    data = {
        "trajectory": config.key(ignore=()),
        "last_layer_only": bool(last_layer_only),
        "tau_batches": tau.num_batches,
        "tau_batch_size": tau.batch_size,
        "variant": tau.variant,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a metrics CSV (empty when the file does not exist); a foreign file is refused."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) == COLUMNS[:-1]:
            raise ResultsFileError(
                f"{path} was written by an older version that did not record its settings, so "
                f"its rows cannot be trusted to match yours. Fix: pass another --out path, or "
                f"delete the file."
            )
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ResultsFileError(
                f"{path} is not a poisondiff metrics CSV (columns {reader.fieldnames}). Fix: pass "
                f"another --out path, or delete the file."
            )
        return list(reader)


def _write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_csv(path, rows, COLUMNS)


def target_metrics_csv(
    config: TrajectoryConfig,
    out: str | os.PathLike,
    *,
    target_class: int | str | None = 0,
    per_bucket: int = 10,
    indices: list[int] | None = None,
    poison_classes: list[int] | None = None,
    last_layer_only: bool = False,
    tau_batches: int | None = 50,
    tau_batch_size: int = 256,
    variant: str = "derived",
    data: DataBundle | None = None,
    data_dir: str | None = None,
    download: bool = False,
    device: torch.device | str = "auto",
    show_progress: bool = True,
    results_dir: str | os.PathLike | None = None,
) -> list[dict[str, str]]:
    """Write EPA, soft EPA, DPS, δ and τ of chosen targets to `out`, skipping pairs already there.

    Targets are the authors' EPA buckets of `target_class` (`per_bucket` each), or the test `indices` given. δ and τ
    use the final model of the trajectory experiment's first run (recorded first if needed). The file is rewritten
    atomically after every target, so an interrupted call resumes where it stopped.
    """
    if tau_batches is not None:  # every setting is checked before any training, under this function's names
        check_positive("tau_batches", tau_batches, integer=True)
    check_positive("tau_batch_size", tau_batch_size, integer=True)
    tau = TauSettings(tau_batches, tau_batch_size, variant=variant)
    check_positive("per_bucket", per_bucket)
    check_writable(Path(out).parent)
    device = get_device(device)
    data = prepare_data(config, data, data_dir=data_dir, download=download)
    if poison_classes is not None:
        poison_classes = list(check_classes("poison classes", poison_classes, data.num_classes))
    if indices is None:
        check_bucket_size(config, data, data.class_index(target_class), per_bucket)
    path = default_path(config, results_dir)
    traj = record_trajectories(
        config, data=data, device=device, show_progress=show_progress, keep_models=True, path=path
    )  # also trains run 0 again for its weights if they were not kept
    model = load_run_model(path, run=0).to(device)
    scores = trajectory_metrics(traj)
    position = {int(i): k for k, i in enumerate(scores["indices"])}
    if indices is not None:
        chosen = [{"bucket": "chosen", "index": int(i)} for i in indices]
        missing = [c["index"] for c in chosen if c["index"] not in position]
        if missing:
            raise ResultsFileError(f"indices {missing} were not recorded in the trajectories (0..{len(position) - 1})")
    else:
        cls = data.class_index(target_class)
        chosen = select_targets(scores["epa"], scores["labels"], cls, per_bucket=per_bucket, indices=scores["indices"])
    out = Path(out)
    settings = settings_key(config, last_layer_only=last_layer_only, tau=tau)
    with exclusive(out, "the metrics table"):
        return _fill_table(
            out,
            settings,
            config,
            chosen,
            scores,
            position,
            data,
            model,
            poison_classes=poison_classes,
            last_layer_only=last_layer_only,
            tau=tau,
            device=device,
            show_progress=show_progress,
        )


def _fill_table(
    out: Path,
    settings: str,
    config: TrajectoryConfig,
    chosen: list[dict],
    scores: dict,
    position: dict,
    data: DataBundle,
    model,
    *,
    poison_classes: list[int] | None,
    last_layer_only: bool,
    tau: TauSettings,
    device: torch.device,
    show_progress: bool,
) -> list[dict[str, str]]:
    """Compute the missing (target, poison class) rows and rewrite `out` after each target (caller holds its lock)."""
    rows = read_rows(out)
    foreign = {r["settings"] for r in rows} - {settings}
    if foreign:
        raise ResultsFileError(
            f"{out} holds rows computed with other settings (a different clean experiment, "
            f"--last-layer, --tau-batches, --tau-batch-size or --variant). Fix: pass another --out "
            f"path, or delete the file to recompute."
        )
    done = {(r["dataset"], int(r["index"]), int(r["poison_class"])) for r in rows}
    split = data.test if config.eval_split == "test" else data.train
    classes = list(range(data.num_classes)) if poison_classes is None else [int(c) for c in poison_classes]
    for target in progress(chosen, enable=show_progress, desc="targets", unit="target"):
        k = position[target["index"]]
        label = int(scores["labels"][k])
        todo = [c for c in classes if c != label and (config.dataset, target["index"], c) not in done]
        if not todo:
            continue
        image = split.images[target["index"]]
        deltas = distance_matrix(
            model,
            image[None],
            np.array([label]),
            poison_classes=todo,
            last_layer_only=last_layer_only,
            device=device,
            show_progress=False,
        )
        for c in todo:
            step = float(deltas.step[0, c])
            delta = DistanceResult(
                step, float(deltas.grad_norm[0, c]), float(deltas.distance[0, c]), int(deltas.pred_before[0])
            )
            budget = budget_lower_bound(
                model,
                image,
                c,
                data.train,
                delta=delta,
                last_layer_only=last_layer_only,
                **tau.as_kwargs(),
                device=device,
            )
            rows.append(
                {
                    "dataset": config.dataset,
                    "index": target["index"],
                    "label": label,
                    "bucket": target["bucket"],
                    "epa": format_number(scores["epa"][k]),
                    "soft_epa": format_number(scores["soft_epa"][k]),
                    "dps": format_number(scores["dps"][k]),
                    "dominant": int(scores["dominant"][k]),
                    "poison_class": c,
                    "delta_step": format_number(step),
                    "grad_norm": format_number(delta.grad_norm),
                    "delta_param": format_number(delta.distance),
                    "tau": format_number(budget.tau),
                    "tau_inner": format_number(budget.inner),
                    "settings": settings,
                }
            )
            done.add((config.dataset, target["index"], c))
        _write_rows(out, rows)
    return rows

"""EPA, DPS, δ and τ for chosen targets in one plain CSV: resumable, one row per (target, poison class)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from .budget import TauSettings
from .config import TrajectoryConfig
from .data import DataBundle
from .errors import InvalidChoiceError, ResultsFileError, check_classes, check_indices, check_positive
from .experiment import CleanExperiment, clean_experiment
from .record import check_bucket_size, prepare_data
from .utils import atomic_write_csv, check_writable, exclusive, format_number, progress

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
        rows, damaged = [], []
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            if _is_metrics_row(row):
                rows.append(row)
            else:
                damaged.append(number)
    if damaged:  # a row cut short or edited by hand: dropped and computed again, like a damaged log line
        shown = ", ".join(map(str, damaged[:10])) + (" ..." if len(damaged) > 10 else "")
        warnings.warn(
            f"{path}: skipped {len(damaged)} damaged row(s) (line {shown}); the other {len(rows)} rows are kept, "
            f"and target_metrics_csv / poisondiff metrics computes the skipped ones again.",
            stacklevel=2,
        )
    return rows


def _is_metrics_row(row: dict[str, str | None]) -> bool:
    """Every column present (a torn last line lacks the last ones), whole-number index and poison class, settings."""
    if any(row.get(c) is None for c in COLUMNS) or None in row or not row["settings"]:
        return False
    try:
        int(row["index"]), int(row["poison_class"])
    except ValueError:
        return False
    return True


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
    check_writable(
        Path(out).parent, what="the folder of out", fix="write the table elsewhere (out=...), or fix its permissions"
    )
    with warnings.catch_warnings():  # a foreign table stops here, before any training (damaged rows warn later)
        warnings.simplefilter("ignore")
        _rows_to_extend(Path(out), settings_key(config, last_layer_only=last_layer_only, tau=tau))
    data = prepare_data(config, data, data_dir=data_dir, download=download)
    if poison_classes is not None:
        poison_classes = list(check_classes("poison classes", poison_classes, data.num_classes))
    if indices is None:
        check_bucket_size(config, data, data.class_index(target_class), per_bucket)
    else:  # checked now, not after the clean runs are trained
        split = data.test if config.eval_split == "test" else data.train
        indices = list(check_indices("indices", indices, len(split), noun="index"))
        unrecorded = sorted(set(indices) - set(config.eval_indices)) if config.eval_indices is not None else []
        if unrecorded:
            raise InvalidChoiceError(
                f"indices {unrecorded[:5]} are not among the experiment's eval_indices. Fix: choose recorded ones"
            )
    experiment = clean_experiment(
        config, data=data, device=device, show_progress=show_progress, results_dir=results_dir
    )  # also trains run 0 again for its weights if they were not kept
    if indices is not None:  # checked against the recorded examples above, before the clean runs
        chosen = [{"bucket": "chosen", "index": int(i)} for i in indices]
    else:
        chosen = experiment.targets(target_class, per_bucket)
    out = Path(out)
    settings = settings_key(config, last_layer_only=last_layer_only, tau=tau)
    with exclusive(out, "the metrics table"):
        return _fill_table(
            out,
            settings,
            experiment,
            chosen,
            poison_classes=poison_classes,
            last_layer_only=last_layer_only,
            tau=tau,
            show_progress=show_progress,
        )


def _rows_to_extend(out: Path, settings: str) -> list[dict[str, str]]:
    """The rows already in `out`, refused (one line) when they were computed with other settings."""
    rows = read_rows(out)
    foreign = {r["settings"] for r in rows} - {settings}
    if foreign:
        raise ResultsFileError(
            f"{out} holds rows computed with other settings (a different clean experiment, "
            f"--last-layer, --tau-batches, --tau-batch-size or --variant). Fix: pass another --out "
            f"path, or delete the file to recompute."
        )
    return rows


def _fill_table(
    out: Path,
    settings: str,
    experiment: CleanExperiment,
    chosen: list[dict],
    *,
    poison_classes: list[int] | None,
    last_layer_only: bool,
    tau: TauSettings,
    show_progress: bool,
) -> list[dict[str, str]]:
    """Compute the missing (target, poison class) rows and rewrite `out` after each target (caller holds its lock)."""
    rows = _rows_to_extend(out, settings)
    dataset = experiment.config.dataset
    done = {(r["dataset"], int(r["index"]), int(r["poison_class"])) for r in rows}
    classes = range(experiment.data.num_classes) if poison_classes is None else poison_classes
    for target in progress(chosen, enable=show_progress, desc="targets", unit="target"):
        todo = [int(c) for c in classes if (dataset, target["index"], int(c)) not in done]
        new = experiment.target_rows([target], todo, tau=tau, last_layer_only=last_layer_only) if todo else []
        if not new:
            continue
        for row in new:
            rows.append(  # as strings, like the rows read back from the file: one type whatever their origin
                {
                    "dataset": dataset,
                    **{c: format_number(row[c]) if isinstance(row[c], float) else str(row[c]) for c in COLUMNS[1:-2]},
                    "tau_inner": format_number(row["tau_inner"]),
                    "settings": settings,
                }
            )
            done.add((dataset, target["index"], row["poison_class"]))
        _write_rows(out, rows)
    return rows

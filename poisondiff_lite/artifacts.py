"""Everything saved under the results folder, gathered for the summary notebook: trajectories, metric tables, studies,
and our results side by side with the authors' (`reference`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import reference
from .errors import ResultsFileError
from .metrics import trajectory_metrics
from .metrics_table import read_rows
from .record import Trajectory
from .stats import pearson
from .study import StudyResults, find_studies
from .utils import resolve_results_dir


def saved_trajectories(results_dir: str | os.PathLike | None = None) -> list[tuple[Path, Trajectory]]:
    """Every readable trajectory file (unreadable ones are skipped with a note in the returned path's place)."""
    root = resolve_results_dir(results_dir) / "trajectories"
    found = []
    for path in sorted(root.glob("*.npz")):
        try:
            found.append((path, Trajectory.load(path)))
        except ResultsFileError as exc:
            print(f"skipped: {exc}")
    return found


def trajectory_rows(found: list[tuple[Path, Trajectory]]) -> list[dict[str, Any]]:
    """One row per trajectory experiment: what it is and what it says."""
    rows = []
    for path, traj in found:
        done = traj.finished()
        if done.completed == 0:
            continue
        scores = trajectory_metrics(done)
        rows.append({"file": path.name, "dataset": traj.config.dataset, "model": traj.config.train.model,
                     "runs": f"{done.completed}/{traj.config.runs}", "epochs": traj.num_epochs,
                     "examples": traj.num_examples, "final_accuracy": float(done.eval_accuracy()[:, -1].mean()),
                     "mean_epa": float(scores["epa"].mean()), "epa_0": int((scores["epa"] == 0).sum()),
                     "epa_1": int((scores["epa"] == 1).sum())})
    return rows


def saved_metric_tables(results_dir: str | os.PathLike | None = None) -> dict[Path, list[dict[str, str]]]:
    """Every metrics CSV written by ``poisondiff metrics`` (other CSVs are ignored)."""
    out = {}
    for path in sorted(resolve_results_dir(results_dir).rglob("*.csv")):
        try:
            out[path] = read_rows(path)
        except ResultsFileError:
            continue
    return out


def study_rows(studies: list[StudyResults]) -> list[dict[str, Any]]:
    """One row per saved study: dataset, attacks, targets, victims logged, complete or not."""
    return [{"study": s.path.name if s.path else "", "dataset": s.config.trajectory.dataset,
             "attacks": ", ".join(s.label(a) for a in s.attack_ids()), "targets": len(s.targets),
             "victims_logged": len(s.rows), "complete": s.complete()} for s in studies]


def headline_rows(studies: list[StudyResults]) -> dict[str, list[dict[str, Any]]]:
    """`by_bucket` rows per dataset for the headline figure (budget sweeps left out; one row per label and bucket)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in studies:
        if s.is_sweep():
            continue
        rows = out.setdefault(s.config.trajectory.dataset, [])
        seen = {(r["label"], r["bucket"]) for r in rows}
        rows += [r for r in s.by_bucket() if (r["label"], r["bucket"]) not in seen]
    return out


def authors_comparison(studies: list[StudyResults]) -> list[dict[str, Any]]:
    """Our mean ASR next to the authors' for every (dataset, attack, group) they report."""
    rows = []
    by_dataset = headline_rows(studies)
    ours_cifar = {(r["label"], r["bucket"]): r for r in by_dataset.get("cifar10", [])}
    for bucket, (mean, _, n) in reference.CIFAR10_GM_BY_BUCKET.items():
        mine = ours_cifar.get(("GM", bucket))
        rows.append({"dataset": "cifar10", "attack": "GM", "group": bucket, "authors_asr": mean, "authors_n": n,
                     "our_asr": mine["mean_asr"] if mine else float("nan"), "our_n": mine["targets"] if mine else 0})
    ours_tiny = {(r["label"], r["bucket"]): r for r in by_dataset.get("tinyimagenet", [])}
    for bucket, group in reference.TINYIMAGENET_GROUP_OF_BUCKET.items():
        for label in ("GM", "BP"):
            mine = ours_tiny.get((label, bucket))
            rows.append({"dataset": "tinyimagenet", "attack": label, "group": f"{group} ({bucket})",
                         "authors_asr": reference.TINYIMAGENET_BY_GROUP[group][label], "authors_n": 4,
                         "our_asr": mine["mean_asr"] if mine else float("nan"), "our_n": mine["targets"] if mine else 0})
    return rows


def pooled_correlations(studies: list[StudyResults], metric: str = "epa") -> list[dict[str, Any]]:
    """Pearson(metric, ASR) per (dataset, attack label) over all targets of all studies, with the authors' value."""
    pooled: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s in studies:
        for r in s.per_target():
            if r["label"].startswith("no attack"):
                continue
            pooled.setdefault((s.config.trajectory.dataset, r["label"]), []).append((r[metric], r["asr"]))
    rows = []
    for (dataset, label), pairs in sorted(pooled.items()):
        x, y = np.array(pairs).T
        authors = reference.CIFAR10_CORRELATIONS.get(label, {}).get(metric) if dataset == "cifar10" else None
        rows.append({"dataset": dataset, "attack": label, "targets": len(pairs), "pearson": pearson(x, y),
                     "authors_pearson": float("nan") if authors is None else authors})
    return rows


__all__ = ["authors_comparison", "find_studies", "headline_rows", "pooled_correlations", "saved_metric_tables",
           "saved_trajectories", "study_rows", "trajectory_rows"]

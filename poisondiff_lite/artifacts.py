"""Everything saved under the results folder, gathered for the summary notebook: trajectories, metric tables, studies,
and our results side by side with the authors' (`reference`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import reference
from .errors import ResultsFileError
from .metrics import BUCKETS, trajectory_metrics
from .metrics_table import read_rows
from .trajectory import Trajectory
from .results import StudyResults, find_studies
from .stats import correlation_pvalue, pearson
from .study_config import attack_id, baseline_id
from .utils import format_number, resolve_results_dir


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
        rows.append(
            {
                "file": path.name,
                "dataset": traj.config.dataset,
                "model": traj.config.train.model,
                "runs": f"{done.completed}/{traj.config.runs}",
                "epochs": traj.num_epochs,
                "examples": traj.num_examples,
                "final_accuracy": float(done.eval_accuracy()[:, -1].mean()),
                "mean_epa": float(scores["epa"].mean()),
                "epa_0": int((scores["epa"] == 0).sum()),
                "epa_1": int((scores["epa"] == 1).sum()),
            }
        )
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
    return [
        {
            "study": s.path.name if s.path else "",
            "dataset": s.config.trajectory.dataset,
            "attacks": ", ".join(s.label(a) for a in s.attack_ids()),
            "targets": len(s.targets),
            "victims_logged": len(s.rows),
            "complete": s.complete(),
        }
        for s in studies
    ]


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


def headline_panels(studies: list[StudyResults]) -> dict[str, list[dict[str, Any]]]:
    """`by_bucket` rows of every study but budget sweeps, one panel each (title -> rows), so that two studies whose
    attacks share a label (e.g. FC at two ε) are never merged and none of their rows is dropped."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in studies:
        if s.is_sweep():
            continue
        settings = sorted({a.setting for a in s.config.attacks})
        short = [c.split(",")[0] for c in s.classes]
        names = f"{short[s.config.target_class]} -> {short[s.config.poison_class]}, " if s.classes else ""
        attacks = ", ".join(f"{a.label} ε {a.eps * 255:.0f}/255" for a in s.config.attacks)
        folder = f" [{s.path.name}]" if s.path else ""
        title = f"{s.config.trajectory.dataset}: {names}{attacks} ({' + '.join(settings)}){folder}"
        unique, n = title, 1
        while unique in out:  # same data set and attacks (e.g. two ε): still its own panel
            n += 1
            unique = f"{title} #{n}"
        out[unique] = s.by_bucket()
    return out


def authors_comparison(studies: list[StudyResults]) -> list[dict[str, Any]]:
    """Our mean ASR next to the authors' for every (dataset, attack, group) they report.

    ``authors_classes`` / ``our_classes`` name the target -> poison classes of both sides (the authors': airplane ->
    automobile on CIFAR-10, goldfish -> salamander on TinyImageNet), so a comparison across classes shows as such.
    """
    rows = []
    by_dataset = headline_rows(studies)
    pairs: dict[str, set[str]] = {}
    for s in studies:
        if not s.is_sweep() and s.classes:
            names = s.classes
            pairs.setdefault(s.config.trajectory.dataset, set()).add(
                f"{names[s.config.target_class]} -> {names[s.config.poison_class]}"
            )
    authors_pair = {"cifar10": "airplane -> automobile", "tinyimagenet": "goldfish -> European fire salamander"}
    ours_cifar = {(r["label"], r["bucket"]): r for r in by_dataset.get("cifar10", [])}
    for bucket, (mean, _, n) in reference.CIFAR10_GM_BY_BUCKET.items():
        mine = ours_cifar.get(("GM", bucket))
        rows.append(
            {
                "dataset": "cifar10",
                "attack": "GM",
                "group": bucket,
                "authors_asr": mean,
                "authors_n": n,
                "our_asr": mine["mean_asr"] if mine else float("nan"),
                "our_n": mine["targets"] if mine else 0,
            }
        )
    ours_tiny = {(r["label"], r["bucket"]): r for r in by_dataset.get("tinyimagenet", [])}
    for bucket, group in reference.TINYIMAGENET_GROUP_OF_BUCKET.items():
        for label in ("GM", "BP"):
            mine = ours_tiny.get((label, bucket))
            rows.append(
                {
                    "dataset": "tinyimagenet",
                    "attack": label,
                    "group": f"{group} ({bucket})",
                    "authors_asr": reference.TINYIMAGENET_BY_GROUP[group][label],
                    "authors_n": 4,
                    "our_asr": mine["mean_asr"] if mine else float("nan"),
                    "our_n": mine["targets"] if mine else 0,
                }
            )
    for row in rows:
        ours = sorted(pairs.get(row["dataset"], ()))
        row["authors_classes"] = authors_pair[row["dataset"]]
        row["our_classes"] = "; ".join(ours) if ours else "-"
    return rows


def pooled_correlations(studies: list[StudyResults], metric: str = "epa") -> list[dict[str, Any]]:
    """Pearson(metric, ASR) per (dataset, attack) over all targets of all studies that ran that same attack, with its
    permutation p-value and the authors' value. Attacks that share a label but differ in a setting (e.g. FC at two ε)
    are pooled apart, their labels extended by what differs. Budget sweeps are left out (a few targets at each
    budget), and a target attacked by the same attack in two studies counts once (the first study's outcome)."""
    pooled: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    labels: dict[tuple[str, str], str] = {}
    configs: dict[str, Any] = {}
    for s in studies:
        if s.is_sweep():
            continue
        configs.update({attack_id(a): a for a in s.config.attacks})
        for r in s.per_target():
            if r["label"].startswith("no attack"):
                continue
            key = (s.config.trajectory.dataset, r["attack"])
            pooled.setdefault(key, {}).setdefault(int(r["index"]), (r[metric], r["asr"]))
            labels[key] = r["label"]
    shown = distinct_labels(labels, configs)
    rows = []
    for key, pairs in sorted(pooled.items(), key=lambda item: (item[0][0], shown[item[0]])):
        dataset, label = key[0], labels[key]
        x, y = np.array(list(pairs.values())).T
        authors = reference.CIFAR10_CORRELATIONS.get(label, {}).get(metric) if dataset == "cifar10" else None
        rows.append(
            {
                "dataset": dataset,
                "attack": shown[key],
                "targets": len(pairs),
                "pearson": pearson(x, y),
                "pearson_p": correlation_pvalue(x, y, method="pearson"),
                "authors_pearson": float("nan") if authors is None else authors,
            }
        )
    return rows


def distinct_labels(labels: dict[tuple[str, str], str], configs: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Labels of (dataset, attack id) keys, each extended by the settings in which it differs from the attacks that
    share its label in the same data set (``FC (transfer) [eps 8/255]``): no two different attacks read alike."""
    out = dict(labels)
    for key, label in labels.items():
        twins = [k for k, v in labels.items() if v == label and k[0] == key[0] and k != key]
        if not twins or key[1] not in configs:
            continue
        mine = dataclasses.asdict(configs[key[1]])
        others = [dataclasses.asdict(configs[k[1]]) for k in twins if k[1] in configs]
        differ = [f for f in mine if any(o.get(f) != mine[f] for o in others)]
        shown = [f"eps {mine[f] * 255:.0f}/255" if f == "eps" else f"{f} {mine[f]}" for f in differ]
        out[key] = f"{label} [{', '.join(shown)}]" if shown else f"{label} [{key[1]}]"
    return out


def _group(name: str) -> str:
    return f"{name}-EPA bucket" if name in BUCKETS else f"{name} group"


def _asr(row: dict[str, Any]) -> str:
    """A `by_bucket` row's mean ASR with its pooled Wilson interval."""
    return f"{row['mean_asr']:.2f} [{row['pooled_low']:.2f}, {row['pooled_high']:.2f}]"


def finding_text(study: StudyResults, metric: str = "epa", alpha: float = 0.05) -> str:
    """What a study says about one metric, in sentences generated from its numbers (never from expectation).

    Per attack: mean ASR of the easiest and the hardest EPA bucket with their pooled Wilson intervals, the no-attack
    baseline of the same setting, Spearman ρ with its permutation p-value, and AUROC with its bootstrap interval;
    then whether the relation has the paper's sign and is significant at `alpha`.
    """
    buckets = study.by_bucket()
    correlations = {(c["attack"], c["metric"]): c for c in study.correlations()}
    lines = []
    for attack in study.config.attacks:
        ident = attack_id(attack)
        mine = {r["bucket"]: r for r in buckets if r["attack"] == ident}
        present = [b for b in BUCKETS if b in mine]  # a study still running may lack some buckets
        present = present or list(mine)  # a study without EPA buckets: its δ or τ groups
        if not present:
            continue
        base = {r["bucket"]: r["mean_asr"] for r in buckets if r["attack"] == baseline_id(attack.setting)}
        easy, hard = mine[present[0]], mine[present[-1]]
        c = correlations[(ident, metric)]
        label = study.label(ident)
        if len(present) == 1:
            compared = (
                f"mean ASR {_asr(easy)} in the only group attacked, the {_group(present[0])} "
                f"(no attack: {format_number(base.get(present[0], np.nan), '.2f')}): nothing to compare it with"
            )
        else:
            compared = (
                f"mean ASR {_asr(easy)} in the {_group(present[0])} against {_asr(hard)} in the {_group(present[-1])} "
                f"(no attack: {format_number(base.get(present[0], np.nan), '.2f')} "
                f"and {format_number(base.get(present[-1], np.nan), '.2f')})"
            )
        text = (
            f"{label}: {compared}; "
            f"Spearman({c['metric_label']}, ASR) = {format_number(c['spearman'], '+.2f')} "
            f"(permutation p = {format_number(c['spearman_p'], '.2g')}), "
            f"AUROC = {format_number(c['auroc'], '.2f')} [{format_number(c['auroc_low'], '.2f')}, "
            f"{format_number(c['auroc_high'], '.2f')}] "
            f"over {c['n']} targets, {c['successes']} with ASR >= {study.config.success_threshold:g}."
        )
        peak = max(present, key=lambda b: mine[b]["mean_asr"])
        if peak in BUCKETS and peak not in (present[0], present[-1]) and mine[peak]["mean_asr"] > easy["mean_asr"]:
            text += (
                f" The highest mean ASR is in the {peak} bucket ({mine[peak]['mean_asr']:.2f}): not monotone in EPA."
            )
        rho, p = c["spearman"], c["spearman_p"]
        if not np.isfinite(rho):
            values = [r for r in study.per_target() if r["attack"] == ident]  # only when no correlation exists
            why = (
                f"{len(values)} target(s): a rank correlation needs at least 3"
                if len(values) < 3
                else f"every target has ASR {values[0]['asr']:.2f}"
                if len({r["asr"] for r in values}) == 1
                else f"every target has the same {c['metric_label']}"
            )
            verdict = f"No correlation can be computed ({why})."
        elif p >= alpha:
            verdict = f"The relation is not significant at the {alpha:.0%} level."
        elif rho < 0:
            verdict = (
                f"Lower {c['metric_label']}, higher ASR, as the paper claims (significant at the {alpha:.0%} level)."
            )
        else:
            verdict = (
                f"Higher {c['metric_label']}, higher ASR: the opposite of the paper's claim (significant at "
                f"{alpha:.0%})."
            )
        pearson_p = c["pearson_p"]
        if np.isfinite(p) and np.isfinite(pearson_p) and (p < alpha) != (pearson_p < alpha):
            verdict += (
                f" Pearson, the statistic the paper reports, {'is' if pearson_p < alpha else 'is not'} significant "
                f"(r = {c['pearson']:+.2f}, p = {pearson_p:.2g})."
            )
        lines.append(f"{text} {verdict}")
    return "\n".join(lines) if lines else "No attack rows in this study yet."


__all__ = [
    "authors_comparison",
    "finding_text",
    "find_studies",
    "headline_panels",
    "headline_rows",
    "pooled_correlations",
    "saved_metric_tables",
    "saved_trajectories",
    "study_rows",
    "trajectory_rows",
]

"""Reading a study back: `StudyResults` (ASR per target and bucket, correlations, AUROC), `load_study`, `read_study`,
`find_studies`, and the fixed-width `format_table`. Reading never writes and never runs anything."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .budget import VARIANTS, lambert_denominator
from .errors import InvalidChoiceError, ResultsFileError, check_choice
from .stats import auroc, auroc_interval, correlation_pvalue, group_summary, pearson, spearman
from .study_config import METRIC_LABELS, METRICS, StudyConfig, attack_id, study_dir
from .utils import format_number, read_json, resolve_results_dir
from .victims import ResultsLog, asr_interval, success_table


# the columns of a study's correlation table, as the CLI and the notebooks print it
CORRELATION_COLUMNS = [
    "label",
    "metric_label",
    "n",
    "successes",
    "pearson",
    "pearson_p",
    "spearman",
    "spearman_p",
    "auroc",
    "auroc_low",
    "auroc_high",
]


@dataclass
class StudyResults:
    """A (possibly partial) study: its targets with their metrics, and one row per finished victim."""

    config: StudyConfig
    targets: list[dict[str, Any]]  # key, index, bucket, epa, soft_epa, dps, delta_step, delta_param, grad_norm, tau
    rows: list[dict[str, Any]]  # one per victim: key, attack (id), name, setting, victim, pred, success, ...
    classes: tuple[str, ...] = ()
    path: Path | None = None

    def attack_ids(self) -> list[str]:
        return [attack_id(a) for a in self.config.attacks]

    def label(self, ident: str) -> str:
        """Human label of an attack id: ``GM``, ``BP (transfer)``, ``none (scratch)``."""
        name, _, rest = ident.partition("-")
        if name == "none":
            return f"no attack ({rest})"
        attack = next(a for a in self.config.attacks if attack_id(a) == ident)
        details = ["transfer"] if attack.setting == "transfer" else []
        if sum(a.name == attack.name and a.setting == attack.setting for a in self.config.attacks) > 1:
            details.append(f"{attack.num_poisons} poisons" if attack.num_poisons else f"{attack.budget:.2%}")
        return attack.label + (f" ({', '.join(details)})" if details else "")

    def is_sweep(self) -> bool:
        """Does the study run one attack at several budgets (a budget sweep)?"""
        names = [(a.name, a.setting) for a in self.config.attacks]
        return len(set(names)) < len(names)

    def per_target(self) -> list[dict[str, Any]]:
        """One row per (target, attack or baseline): the target's metrics, ASR, its Wilson interval, clean accuracy."""
        successes = success_table(self.rows)
        accuracy: dict[tuple[str, str], list[float]] = {}
        for r in self.rows:
            accuracy.setdefault((r["key"], r["attack"]), []).append(r["clean_accuracy"])
        out = []
        for ident in self.attack_ids() + sorted({r["attack"] for r in self.rows if r["attack"].startswith("none")}):
            for t in self.targets:
                wins = successes.get((t["key"], ident))
                if wins is None:
                    continue
                low, high = asr_interval(int(wins.sum()), len(wins))
                out.append(
                    {
                        **t,
                        **self._tau_variants(t),
                        "attack": ident,
                        "label": self.label(ident),
                        "victims": len(wins),
                        "successes": int(wins.sum()),
                        "asr": float(wins.mean()),
                        "asr_low": low,
                        "asr_high": high,
                        "clean_accuracy": float(np.mean(accuracy[(t["key"], ident)])),
                    }
                )
        return out

    def _tau_variants(self, target: dict[str, Any]) -> dict[str, float]:
        """τ under both Lambert-W arguments (``tau_derived``, ``tau_authors``): each is max(inner / W(κ), 0) with
        W(κ) > 0, so one converts into the other by the ratio of the two W(κ); needs the class count."""
        if not self.classes:
            return {}
        own = self.config.tau_variant
        return {
            f"tau_{v}": float(target["tau"])
            * lambert_denominator(len(self.classes), own)
            / lambert_denominator(len(self.classes), v)
            for v in VARIANTS
        }

    def by_bucket(self) -> list[dict[str, Any]]:
        """Mean ± population std of ASR over the targets of each (attack, bucket), as the authors report.

        A target in two groups (an EPA bucket and an extreme δ/τ group) counts in both."""
        rows = self.per_target()
        out = []
        for ident in dict.fromkeys(r["attack"] for r in rows):
            for bucket in dict.fromkeys(g for t in self.targets for g in target_groups(t)):
                group = [r for r in rows if r["attack"] == ident and bucket in target_groups(r)]
                if not group:
                    continue
                summary = group_summary([r["asr"] for r in group])
                wins = sum(r["successes"] for r in group)
                trials = sum(r["victims"] for r in group)
                low, high = asr_interval(wins, trials)
                out.append(
                    {
                        "attack": ident,
                        "label": self.label(ident),
                        "bucket": bucket,
                        "targets": summary["n"],
                        "mean_asr": summary["mean"],
                        "std_asr": summary["std"],
                        "pooled_low": low,
                        "pooled_high": high,
                        "mean_epa": float(np.mean([r["epa"] for r in group])),
                        "clean_accuracy": float(np.mean([r["clean_accuracy"] for r in group])),
                    }
                )
        return out

    def correlations(self, metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
        """Per attack and metric: Pearson and Spearman with ASR, each with its two-sided permutation p-value, and
        AUROC for "ASR >= success_threshold" with a stratified bootstrap 95 % interval (see `stats`).

        `metrics` may also name ``tau_derived`` and ``tau_authors`` (τ under both Lambert-W arguments; a constant
        factor apart, so their correlations and AUROC agree)."""
        for metric in metrics:
            check_choice("metric", metric, tuple(METRIC_LABELS))
        rows = self.per_target()
        out = []
        for ident in self.attack_ids():
            mine = [r for r in rows if r["attack"] == ident]
            asr = np.array([r["asr"] for r in mine])
            success = asr >= self.config.success_threshold
            for metric in metrics:
                values = np.array([r[metric] for r in mine], dtype=np.float64)
                low, high = auroc_interval(values, success)
                out.append(
                    {
                        "attack": ident,
                        "label": self.label(ident),
                        "metric": metric,
                        "metric_label": METRIC_LABELS[metric],
                        "n": len(mine),
                        "successes": int(success.sum()),
                        "pearson": pearson(values, asr),
                        "pearson_p": correlation_pvalue(values, asr, method="pearson"),
                        "spearman": spearman(values, asr),
                        "spearman_p": correlation_pvalue(values, asr, method="spearman"),
                        "auroc": auroc(values, success),
                        "auroc_low": low,
                        "auroc_high": high,
                    }
                )
        return out

    def targets_done(self) -> int:
        """Targets whose every attack has all its victims logged."""
        successes = success_table(self.rows)
        return sum(
            all(len(successes.get((t["key"], a), ())) >= self.config.victims for a in self.attack_ids())
            for t in self.targets
        )

    def complete(self) -> bool:
        """Every (target, attack) has all its victims."""
        return self.targets_done() == len(self.targets)


def target_groups(target: dict[str, Any]) -> list[str]:
    """The groups a target belongs to: its EPA bucket, and an extreme δ/τ group when it is in both."""
    return list(target.get("groups") or [target["bucket"]])


def format_table(rows: list[dict[str, Any]], columns: list[str], *, floats: str = ".3f") -> str:
    """A fixed-width text table (no pandas needed) of `columns` of `rows`; floats formatted with `floats`."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format_number(v, floats)
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def load_study(config: StudyConfig, results_dir: str | os.PathLike | None = None) -> StudyResults:
    """Read a study's saved targets and log (however far it got) without running anything."""
    folder = study_dir(config, results_dir)
    if not (folder / "targets.json").exists():
        raise InvalidChoiceError(f"no study at {folder}. Fix: run it with run_study(config) (notebook 05/06).")
    return read_study(folder, config)


def read_study(folder: str | os.PathLike, config: StudyConfig | None = None) -> StudyResults:
    """Read the study saved in `folder` (its config from ``study.json`` unless given), whatever version wrote it."""
    folder = Path(folder)
    if config is None:
        try:
            config = StudyConfig.from_dict(read_json(folder / "study.json", STUDY_JSON_FIX))
        except (TypeError, ValueError) as exc:
            raise ResultsFileError(
                f"{folder / 'study.json'} does not describe a study ({exc}). Fix: {STUDY_JSON_FIX}"
            ) from None
    targets = read_targets(folder / "targets.json")
    log = ResultsLog.read(folder / "results.jsonl")
    return StudyResults(config, targets["targets"], log.rows, targets["classes"], folder)


STUDY_JSON_FIX = "rerun the study with its config (run_study / poisondiff study), which writes it again"
TARGETS_FIX = (
    "delete it; the study chooses its targets again (the same ones: the choice is deterministic) and keeps "
    "the victims already logged"
)


def read_targets(path: Path) -> dict[str, Any]:
    """The saved targets and class names of a study; a damaged file is a one-line error naming the fix."""
    saved = read_json(path, TARGETS_FIX)
    try:
        targets = _from_json(saved["targets"])
        classes = tuple(saved.get("classes", ()))
    except (TypeError, KeyError, AttributeError) as exc:
        raise ResultsFileError(
            f"{path} does not hold a study's targets ({type(exc).__name__}: {exc}). Fix: {TARGETS_FIX}"
        ) from None
    for number, t in enumerate(targets, start=1):
        missing = [k for k in ("key", "index", "epa") if k not in t]
        index = t.get("index")
        if missing or not isinstance(index, int) or isinstance(index, bool) or not isinstance(t["key"], str):
            what = f"lacks {', '.join(missing)}" if missing else f"has index {index!r}, key {t.get('key')!r}"
            raise ResultsFileError(f"{path}: target {number} {what}. Fix: {TARGETS_FIX}")
    if not targets:
        raise ResultsFileError(f"{path} holds no targets. Fix: {TARGETS_FIX}")
    return {"targets": targets, "classes": classes}


def find_studies(results_dir: str | os.PathLike | None = None) -> list[StudyResults]:
    """Every study saved under the results folder (for the summary notebook); unreadable ones are named, not hidden."""
    root = resolve_results_dir(results_dir) / "studies"
    found = []
    for config_path in sorted(root.glob("*/study.json")):
        if not (config_path.parent / "targets.json").exists():
            continue  # started, but interrupted before its targets were chosen: nothing to show yet
        try:
            found.append(read_study(config_path.parent))
        except (OSError, ValueError, TypeError, KeyError, ResultsFileError) as exc:
            print(f"skipped {config_path.parent}: cannot read it ({type(exc).__name__}: {exc})")
    return found


def json_safe(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return format_number(v)
        return v

    return [{k: clean(v) for k, v in t.items()} for t in targets]


def _from_json(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: float(v) if v in ("inf", "-inf", "nan") else v for k, v in t.items()} for t in targets]

"""τ held against real attacks: targets a study hijacked with fewer poisons than their τ says they need.

τ is derived as a lower bound on the poison ratio ε = poisons / clean training images under assumptions that a deep
network breaks (a model 1-homogeneous in its parameters, training that stops exactly at the δ step's end point, the
worst-case poison gradient). A target hijacked by at least one victim at an ε below its τ is a counterexample to
reading τ as a bound; `tau_against_attacks` finds them in a study and `tau_evidence_text` says it in sentences.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import DataBundle
from .record import prepare_data, takes_bundle
from .results import StudyResults
from .utils import format_number


def study_train_size(study: StudyResults, data: DataBundle | None = None, data_dir: str | None = None) -> int:
    """The number of training images `study`'s victims trained on: its data set after its class selection.

    `data` is the data set as loaded (`pdl.load_dataset`), else it is loaded from `data_dir` (about a second).
    """
    config = study.config.trajectory
    if data is not None and (data.name != config.dataset or not takes_bundle(config, data)):
        data = None  # another data set, or another class selection of it: load the study's own
    return len(prepare_data(config, data, data_dir=data_dir).train)


def tau_against_attacks(study: StudyResults, train_size: int) -> list[dict[str, Any]]:
    """One row per (target, attack) of `study`: τ, the attack's poison ratio and whether a victim was hijacked.

    Parameters
    ----------
    study : a study with τ among its target metrics (shipped, recomputed or live).
    train_size : the number of training images its victims trained on (the data set after the study's class
        selection), which turns a budget or a poison count into the ratio ε = poisons / clean images.

    Returns
    -------
    Rows with ``index``, ``bucket``, ``attack``, ``label``, ``tau``, ``ratio``, ``asr``, ``successes``, ``victims`` and
    ``below_tau`` (hijacked at least once although ``ratio < tau``).
    """
    attacks = {a: attack for a, attack in zip(study.attack_ids(), study.config.attacks)}
    out = []
    for row in study.per_target():
        attack = attacks.get(row["attack"])
        if attack is None or row.get("tau") is None:
            continue  # a no-attack baseline, or a study without τ
        poisons = attack.count(train_size)
        ratio = poisons / max(train_size - poisons, 1)
        tau = float(row["tau"])
        out.append(
            {
                "index": row["index"],
                "bucket": row.get("bucket"),
                "attack": row["attack"],
                "label": row["label"],
                "tau": tau,
                "ratio": ratio,
                "asr": row["asr"],
                "successes": row["successes"],
                "victims": row["victims"],
                "below_tau": bool(row["successes"] > 0 and ratio < tau),
            }
        )
    return out


def tau_evidence_text(study: StudyResults, train_size: int, name: str = "this study") -> str:
    """Sentences generated from `tau_against_attacks`: the range of τ, the ratio the attacks used, and the targets
    hijacked below their τ (the counterexamples to reading τ as a bound), or that there were none."""
    rows = tau_against_attacks(study, train_size)
    if not rows:
        return f"{name}: no attacked target with τ yet."
    taus = np.array([r["tau"] for r in {r["index"]: r for r in rows}.values()])
    ratios = sorted({round(r["ratio"], 4) for r in rows})
    below = [r for r in rows if r["below_tau"]]
    text = (
        f"{name}: τ of its {len(taus)} targets runs from {format_number(taus.min(), '.3g')} to "
        f"{format_number(taus.max(), '.3g')} (median {format_number(float(np.median(taus)), '.3g')}; "
        f"{int((taus == 0).sum())} at 0); its attacks used a poison ratio (poisons / clean images) "
        "of "
        + " and ".join(f"{r:.3g}" for r in ratios)
        + f". {int(sum(r['ratio'] < r['tau'] for r in rows))} of {len(rows)} (target, attack) pairs have that "
        "ratio below τ"
    )
    if below:
        examples = ", ".join(
            f"#{r['index']} ({r['label']}: τ = {r['tau']:.3g}, {r['successes']}/{r['victims']} victims)"
            for r in list({r["index"]: r for r in sorted(below, key=lambda r: r["tau"])}.values())[::-1][:4]
        )  # one example per target, the largest τ first
        return (
            f"{text}, and {len(below)} of those were hijacked anyway: {examples}. A lower bound on the poison ratio "
            "cannot be beaten; τ is not one for these networks, only a score to rank targets by."
        )
    return f"{text}; none of those was hijacked, so this study has no counterexample to τ as a bound."


__all__ = ["study_train_size", "tau_against_attacks", "tau_evidence_text"]

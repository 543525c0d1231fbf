"""τ against the shipped studies' attacks, recomputed from the raw files."""

from __future__ import annotations

import json

import pytest

import poisondiff_lite as pdl
from poisondiff_lite.shipped import shipped_path
from poisondiff_lite.tau_evidence import tau_against_attacks, tau_evidence_text


def _by_hand(name: str, poisons: int, train_size: int) -> set[int]:
    """Targets hijacked by at least one attacked victim although poisons / clean images < τ, from the JSON files."""
    folder = shipped_path(name)
    tau = {t["key"]: (t["index"], t["tau"]) for t in json.loads((folder / "targets.json").read_text())["targets"]}
    ratio = poisons / (train_size - poisons)
    hijacked = set()
    for line in (folder / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "header" in row:
            continue
        if row["success"] and not row["attack"].startswith("none") and ratio < tau[row["key"]][1]:
            hijacked.add(tau[row["key"]][0])
    return hijacked


def test_the_tinyimagenet_lab_study_is_hijacked_below_tau():
    study = pdl.shipped_study("tinyimagenet-lab-scratch")  # GM with 25 poisons
    rows = tau_against_attacks(study, train_size=1000)
    assert {r["index"] for r in rows if r["below_tau"]} == _by_hand("tinyimagenet-lab-scratch", 25, 1000) != set()
    assert all(r["ratio"] == pytest.approx(25 / 975) for r in rows)
    text = tau_evidence_text(study, 1000, "tinyimagenet-lab-scratch")
    assert "hijacked anyway" in text and "not one for these networks" in text


def test_a_budget_becomes_a_ratio_of_the_training_set():
    study = pdl.shipped_study("cifar10-lab-scratch")  # GM at a 1 % budget
    rows = tau_against_attacks(study, train_size=5000)
    assert all(r["ratio"] == pytest.approx(50 / 4950) for r in rows) and len(rows) == len(study.targets)
    assert {r["index"] for r in rows if r["below_tau"]} == _by_hand("cifar10-lab-scratch", 50, 5000)


def test_no_counterexample_is_said_as_none():
    study = pdl.shipped_study("tinyimagenet-lab-scratch")
    text = tau_evidence_text(study, train_size=26, name="x")  # 25 poisons in 26 images: ε = 25, above every τ here
    assert "none of those was hijacked" in text or "0 of" in text


def test_the_figure_marks_the_counterexamples():
    import matplotlib.pyplot as plt

    from poisondiff_lite import plotting

    rows = tau_against_attacks(pdl.shipped_study("tinyimagenet-lab-scratch"), train_size=1000)
    fig = plotting.tau_against_attacks(rows)
    [points] = fig.axes[0].collections
    red = [tuple(edge[:3]) == (1.0, 0.0, 0.0) for edge in points.get_edgecolors()]
    assert sum(red) == sum(r["below_tau"] for r in rows) > 0
    [line] = fig.axes[0].get_lines()
    assert line.get_xdata()[0] == pytest.approx(25 / 975)  # the ratio the attack used
    plt.close(fig)

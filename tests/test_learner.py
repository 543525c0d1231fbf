"""Learner experience: self-checking exercises, the target explorer, the summary's artefacts and plots."""

import dataclasses
import math
import re
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest

import poisondiff_lite as pdl
from poisondiff_lite import artifacts, exercises, widgets
from poisondiff_lite.attacks import AttackConfig
from poisondiff_lite.study import StudyConfig, StudyResults, attack_id

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# -----------------------------------------------------------------------------------------------------------------
#  exercises
# -----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_checks_its_exercises_and_has_a_hidden_solution(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    keys = set(re.findall(r'exercises\.check\("(\d\d\.\d+)"', code))
    assert keys, "no self-checking exercise"
    assert keys <= set(exercises.EXERCISES), f"unknown exercises {keys - set(exercises.EXERCISES)}"
    assert all(k.startswith(path.name[:2]) for k in keys)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert solutions and all(c.metadata["jupyter"]["source_hidden"] for c in solutions)
    assert all(c.metadata["jupyter"]["outputs_hidden"] for c in solutions)  # Run All prints no answer in sight
    assert all("assert pdl.exercises.check(" in c.source for c in solutions)
    position = {id(c): i for i, c in enumerate(nb.cells)}
    summary = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Summary" in c.source)
    assert all(position[id(c)] < summary for c in solutions), "solutions belong before the summary"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_numbered_exercise_is_checked_and_solved(path):
    nb = nbformat.read(path, as_version=4)
    listing = next(c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Exercises"))
    numbers = re.findall(r"^(\d+)\. ", listing, flags=re.M)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    solutions = "\n".join(c.source for c in nb.cells if "solution" in c.metadata.get("tags", []))
    wanted = {f"{path.name[:2]}.{n}" for n in numbers}
    assert set(re.findall(r'exercises\.check\("(\d\d\.\d+)"', code)) == wanted  # every exercise, nothing else
    assert set(re.findall(r'assert pdl\.exercises\.check\("(\d\d\.\d+)"', solutions)) == wanted  # and solved


def test_every_registered_exercise_belongs_to_a_notebook():
    keys = set()
    for path in NOTEBOOKS:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        keys |= set(re.findall(r'exercises\.check\("(\d\d\.\d+)"', code))
    assert keys == set(exercises.EXERCISES) and len(keys) == 37


def test_new_solvers_against_hand_computed_cases():
    correct = np.zeros((2, 4, 3), dtype=bool)  # (runs, epochs, images)
    correct[0, :, 0] = True  # always right: no flip
    correct[1, :2, 1] = True  # right early in run 1, then wrong: flips
    correct[0, 1, 2], correct[1, :, 2] = True, True  # flips in run 0 only
    assert exercises.solution("01.1", correct=correct) == 2

    right = [{2}, {0, 1, 2}, {0, 1}, {0, 1, 2, 3}]  # epochs where each image is right: EPA .25 .75 .5 1
    # without epochs 0-1 EPA is .5 .5 0 1: ranks move by 1.5, 0.5, 1 and 0, so image 0 (test #10) moves most

    class Traj:
        indices = np.array([10, 11, 12, 13])
        labels = np.arange(4)
        preds = np.array([[[c if e in right[c] else (c + 1) % 4 for c in range(4)] for e in range(4)]])

        def finished(self):
            return self

        def correct(self):
            return self.preds == self.labels

    assert exercises.solution("02.1", traj=Traj()) == {"10"}
    scores = {"epa": np.array([0.0, 0.5, 1.0, 0.25, 0.75, 0.3]), "labels": np.array([0, 0, 0, 0, 0, 1])}
    assert exercises.check("02.4", 0.6, quiet=True, scores=scores)  # 0.5, 1.0 and 0.75 of five airplanes
    assert not exercises.check("02.4", 0.4, quiet=True, scores=scores)
    assert exercises.solution("03.4", path=[0, 0, 3, 3, 1, 1, 3]) == 3
    before = [{"dataset": "c", "index": "1", "poison_class": "2"}]
    after = before + [
        {"dataset": "c", "index": "5", "poison_class": "2"},
        {"dataset": "c", "index": "5", "poison_class": "3"},
    ]
    assert exercises.solution("04.5", before=before, after=after) == 2
    z = 1.959963984540054

    def wilson_width(k, n):  # twice the half-width of the Wilson score interval
        return 2 * z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)

    assert exercises.solution("06.3") == pytest.approx(wilson_width(1, 2) - wilson_width(2, 4))
    assert exercises.solution("06.5", train_size=1000) == 50 and exercises.solution("06.5", train_size=1001) == 51
    assert exercises.check("00.4", "(1000, 500)", quiet=True, data=_Selectable()) and not exercises.check(
        "00.4", (500, 1000), quiet=True, data=_Selectable()
    )


class _Selectable:
    def select_classes(self, classes):
        return type("Kept", (), {"train": [0] * 1000, "test": [0] * 500})()


def test_auroc_by_pairs_matches_the_table_and_nan_is_an_answer():
    class Study:
        config = type("C", (), {"success_threshold": 0.5})()

        def __init__(self, rows):
            self._rows = rows

        def per_target(self):
            return self._rows

    pairs = ((0.1, 1.0), (0.2, 0.0), (0.2, 0.5), (0.9, 0.0), (0.95, 0.25))
    rows = [{"attack": "fc-x", "soft_epa": e, "epa": 1 - e, "asr": a} for e, a in pairs]  # soft EPA counts
    # hijacked (ASR > 0) at EPA 0.1, 0.2 and 0.95, never at 0.2 and 0.9: 0.1 wins both pairs (2), 0.2 ties one and
    # wins one (1.5), 0.95 loses both (0): 3.5 of 6 pairs
    assert exercises.solution("05.5", result=Study(rows)) == pytest.approx(3.5 / 6)
    from poisondiff_lite.stats import auroc

    assert auroc([r["soft_epa"] for r in rows], [r["asr"] > 0 for r in rows]) == pytest.approx(3.5 / 6)
    failed = Study([{**r, "asr": 0.0} for r in rows])
    assert exercises.check("05.5", float("nan"), quiet=True, result=failed)
    assert not exercises.check("05.5", 0.5, quiet=True, result=failed)


def test_check_says_right_wrong_and_gives_a_hint(capsys):
    assert exercises.check("05.1", 0.6576) is True
    assert "correct" in capsys.readouterr().out
    assert exercises.check("05.1", 0.3) is False
    out = capsys.readouterr().out
    assert "not quite" in out and "asr_interval" in out  # the hint names the tool to use
    assert exercises.check("05.1", None) is False
    out = capsys.readouterr().out
    assert "no answer yet" in out and "asr_interval" not in out  # no hint (the way to the answer) before a try
    assert exercises.check("05.1", "sixty percent", quiet=True) is False  # nonsense is wrong, not an error


def test_expected_answers_match_independent_values():
    z = 1.959963984540054
    assert exercises.solution("05.1") == pytest.approx(z * z / (2 + z * z))  # Wilson upper end at 0/2

    def lambert_w(x):  # w e^w = x by bisection: independent of scipy
        low, high = 0.0, x
        for _ in range(200):
            mid = (low + high) / 2
            low, high = (mid, high) if mid * math.exp(mid) < x else (low, mid)
        return low

    expected = lambert_w(99 / math.e) / lambert_w(100 - 1 / math.e)  # C = 100
    assert exercises.solution("04.2") == pytest.approx(expected, abs=1e-6) and abs(expected - 0.777) < 1e-3
    scores = {"epa": np.array([0.9, 0.1, 0.2, 0.8]), "labels": np.array([0, 1, 1, 0])}
    assert exercises.solution("02.2", scores=scores, classes=("a", "b")) == {"b"}
    assert exercises.check("02.2", "B", quiet=True, scores=scores, classes=("a", "b"))  # case does not matter


def test_unknown_exercise_lists_the_valid_ones():
    with pytest.raises(pdl.InvalidChoiceError, match="unknown exercise '9.9'; valid choices: .*05.1"):
        exercises.check("9.9", 1)


# -----------------------------------------------------------------------------------------------------------------
#  the explorer
# -----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_view(tmp_path_factory):
    from conftest import make_toy_bundle

    data = make_toy_bundle()
    config = pdl.TrajectoryConfig(dataset="cifar10", train=pdl.TrainConfig.quick(epochs=2, batch_size=16), runs=2)
    folder = tmp_path_factory.mktemp("explorer")
    traj = pdl.record_trajectories(
        config, data=data, device="cpu", show_progress=False, keep_models=True, results_dir=folder
    )
    model = pdl.load_run_model(pdl.default_path(config, folder), run=0)
    return widgets.TargetView(
        traj,
        data.test.images[traj.indices],
        data.classes,
        model=model,
        train_set=data.train,
        poison_class=1,
        tau_batches=2,
    )


def test_target_figure_shows_dynamics_delta_and_tau(toy_view):
    index = int(toy_view.traj.indices[toy_view.ranked(0)[0]])
    fig = widgets.target_figure(toy_view, index)
    assert isinstance(fig, matplotlib.figure.Figure)
    titles = " | ".join(ax.get_title() for ax in fig.axes)
    assert f"test #{index}" in titles and "EPA" in titles and "τ toward each class" in titles
    pos = toy_view.position(index)
    dynamics = next(ax for ax in fig.axes if "training dynamics" in ax.get_title())
    lines = dynamics.get_lines()
    assert len(lines) == 2 and np.allclose(lines[0].get_ydata(), toy_view.traj.true_prob[0, :, pos].astype(float))
    assert np.isnan(toy_view.delta(pos)[0]) and np.all(toy_view.delta(pos)[1:] >= 0)  # own class skipped
    tau = toy_view.tau_per_class(pos)
    assert np.isnan(tau[0]) and np.all(tau[1:] >= 0) and tau[1] == toy_view.tau(pos)
    from poisondiff_lite.budget import budget_lower_bound
    from poisondiff_lite.distance import DistanceResult

    independent = budget_lower_bound(
        toy_view.model,
        toy_view.images[pos],
        2,
        toy_view.train_set,
        num_batches=2,
        delta=DistanceResult(float(toy_view.delta(pos)[2]), 0, 0, -1),
        device="cpu",
    ).tau
    assert tau[2] == pytest.approx(independent, rel=1e-4, abs=1e-9)
    tau_ax = next(ax for ax in fig.axes if ax.get_ylabel().startswith("τ"))
    assert np.allclose([b.get_height() for b in tau_ax.patches], np.nan_to_num(tau, nan=0.0))
    assert tau_ax.get_yscale() == "symlog"  # τ spans decades: a linear axis hides all but the largest
    assert fig.axes[0].get_title().startswith(widgets.target_name(toy_view, pos) + "\n")  # as the explorer's caption
    matplotlib.pyplot.close(fig)


def test_explorer_builds_without_a_frontend_and_navigates(toy_view, monkeypatch):
    drawn = []
    monkeypatch.setattr(widgets, "target_figure", lambda view, index=None, position=None: drawn.append(position))
    widget = widgets.explorer(toy_view, label=0)
    class_box, rank, easiest, hardest = widget.children[0].children
    members = toy_view.ranked(0)
    assert rank.max == len(members) - 1 and drawn[-1] == members[0]
    caption = widget.children[1]
    assert f"<b>{widgets.target_name(toy_view, members[0])}</b>, EPA rank 0 of" in caption.value
    hardest.click()
    assert rank.value == rank.max and drawn[-1] == members[-1]
    assert widgets.target_name(toy_view, members[-1]) in caption.value  # the caption follows the figure
    easiest.click()
    assert drawn[-1] == members[0]
    class_box.value = -1  # all classes
    assert rank.max == toy_view.traj.num_examples - 1


def test_explorer_inputs_are_checked(toy_view):
    with pytest.raises(pdl.InvalidChoiceError, match="pass split.images"):
        widgets.TargetView(toy_view.traj, toy_view.images[:3], toy_view.classes)
    with pytest.raises(pdl.InvalidChoiceError, match="test index 999 was not recorded"):
        toy_view.position(999)


# -----------------------------------------------------------------------------------------------------------------
#  the summary's artefacts
# -----------------------------------------------------------------------------------------------------------------
def _fake_study(attacks, bucket_asr, dataset="cifar10", first_index=0):
    config = StudyConfig(trajectory=pdl.TrajectoryConfig.quick(dataset), attacks=attacks, victims=2)
    targets, rows = [], []
    for i, (bucket, wins) in enumerate(bucket_asr.items(), start=first_index):
        targets.append(
            {
                "key": f"0-1-{i}",
                "index": i,
                "bucket": bucket,
                "epa": i / 10,
                "dps": 0.5,
                "soft_epa": 0.5,
                "delta_step": 0.1,
                "delta_param": 0.1,
                "tau": 0.0,
            }
        )
        for a in attacks:
            rows += [
                {"key": f"0-1-{i}", "attack": attack_id(a), "victim": v, "success": bool(s), "clean_accuracy": 0.5}
                for v, s in enumerate(wins)
            ]
    return StudyResults(config, targets, rows)


def test_headline_leaves_out_sweeps_and_compares_with_the_authors():
    gm = _fake_study((AttackConfig.quick("gm"),), {"lowest": [1, 1], "highest": [0, 1]})
    sweep = _fake_study(tuple(AttackConfig.quick("fc", num_poisons=n) for n in (25, 50)), {"lowest": [1, 0]})
    assert sweep.is_sweep() and not gm.is_sweep()
    assert {r["label"] for r in sweep.by_bucket()} == {"FC (transfer, 25 poisons)", "FC (transfer, 50 poisons)"}
    rows = artifacts.headline_rows([gm, sweep])
    assert {r["label"] for r in rows["cifar10"]} == {"GM"}
    table = {r["group"]: r for r in artifacts.authors_comparison([gm, sweep]) if r["dataset"] == "cifar10"}
    assert table["lowest"]["our_asr"] == 1.0 and table["highest"]["our_asr"] == 0.5
    assert table["lowest"]["authors_asr"] == 1.0 and math.isnan(table["p40"]["our_asr"])
    loose = _fake_study((AttackConfig.quick("fc", num_poisons=25, eps=16 / 255),), {"lowest": [1, 1]})
    tight = _fake_study((AttackConfig.quick("fc", num_poisons=25, eps=8 / 255),), {"lowest": [0, 0]})
    panels = artifacts.headline_panels([gm, sweep, loose, tight])
    assert len(panels) == 3  # one per study, the sweep left out; same-label attacks are not merged
    assert sorted(r["mean_asr"] for rows in panels.values() for r in rows if r["label"].startswith("FC")) == [0.0, 1.0]
    fig = pdl.plotting.headline(panels)
    assert sum(ax.has_data() for ax in fig.axes) == 3
    matplotlib.pyplot.close(fig)


# -----------------------------------------------------------------------------------------------------------------
#  plots and exact answers
# -----------------------------------------------------------------------------------------------------------------
def test_pooled_correlations_keep_attacks_that_share_a_label_apart():
    loose = _fake_study(
        (AttackConfig.quick("fc", num_poisons=25, eps=16 / 255),), {"lowest": [1, 1], "highest": [0, 0]}
    )
    tight = _fake_study((AttackConfig.quick("fc", num_poisons=25, eps=8 / 255),), {"lowest": [0, 0], "p80": [0, 1]})
    fc16 = (AttackConfig.quick("fc", num_poisons=25, eps=16 / 255),)
    again = _fake_study(fc16, {"p40": [1, 0]}, first_index=5)  # the same attack on another target
    repeat = _fake_study(fc16, {"lowest": [1, 1]})  # ... and on loose's first target again: it counts once
    sweep = _fake_study(
        tuple(AttackConfig.quick("fc", num_poisons=n) for n in (25, 50)), {"p20": [1, 0]}, first_index=7
    )
    rows = {r["attack"]: r for r in artifacts.pooled_correlations([loose, tight, again, repeat, sweep])}
    assert set(rows) == {"FC (transfer) [eps 16/255]", "FC (transfer) [eps 8/255]"}  # the sweep left out
    assert rows["FC (transfer) [eps 16/255]"]["targets"] == 3 and rows["FC (transfer) [eps 8/255]"]["targets"] == 2
    assert [r["attack"] for r in artifacts.pooled_correlations([loose])] == ["FC (transfer)"]  # no twin: plain label


def test_bucket_axis_runs_from_easiest_to_hardest():
    rows = [
        {"label": "GM", "bucket": b, "mean_asr": 0.5, "pooled_low": 0.2, "pooled_high": 0.8}
        for b in ("highest", "δ-low", "lowest", "p40")
    ]
    fig = pdl.plotting.asr_by_bucket(rows)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["lowest", "p40", "highest", "δ-low"]
    matplotlib.pyplot.close(fig)


def test_integer_answers_are_checked_exactly_and_missing_data_is_named():
    scores, fish = {"epa": np.r_[np.zeros(50), np.full(50, 0.5)]}, np.arange(0, 100, 2)  # 25 of the fish at EPA 0
    assert exercises.check("06.1", 25, quiet=True, scores=scores, fish=fish)
    assert exercises.check("06.1", "25", quiet=True, scores=scores, fish=fish)  # papermill and input() give strings
    assert not exercises.check("06.1", 25.9, quiet=True, scores=scores, fish=fish)  # was accepted as int(25.9) == 25
    with pytest.raises(pdl.InvalidChoiceError, match=r"pass scores, fish too, e.g. pdl.exercises.check\('06.1', answ"):
        exercises.check("06.1", 25)


def test_the_explorer_keeps_two_studies_with_one_attack_label_apart(toy_view, monkeypatch):
    index = int(toy_view.traj.indices[0])
    gm = (AttackConfig.quick("gm"),)
    lab = dataclasses.replace(_fake_study(gm, {"lowest": [1, 1]}, first_index=index), path=Path("lab-study"))
    live = dataclasses.replace(_fake_study(gm, {"lowest": [0, 0]}, first_index=index), path=Path("live-study"))
    monkeypatch.setattr(toy_view, "studies", [live, lab])
    fig = widgets.target_figure(toy_view, index)
    bars = next(ax for ax in fig.axes if ax.get_title() == "attack outcomes")
    shown = {t.get_text(): p.get_width() for t, p in zip(bars.get_yticklabels(), bars.patches)}
    assert shown["GM [lab-study]"] == 1.0 and shown["GM [live-study]"] == 0.0  # both, not one hiding the other
    [row] = widgets.target_table(toy_view, [0])
    assert row["best_asr"] == max(shown.values()) and row["best_study"] == "lab-study"
    matplotlib.pyplot.close(fig)


def test_exercise_06_2_asks_for_the_gain_over_the_baseline_not_the_raw_asr():
    study = _fake_study((AttackConfig.quick("gm"),), {"lowest": [1, 1], "p40": [1, 0]})
    study.rows += [  # no-attack victims: the lowest target falls without any poison, the highest never
        {"key": key, "attack": "none-scratch", "victim": v, "success": key == "0-1-0", "clean_accuracy": 0.5}
        for key in ("0-1-0", "0-1-1")
        for v in range(2)
    ]
    # p40: GM 1 of 2, no attack 0 of 2: a gain of 0.5 (its raw ASR alone would say 0.5 as well, the lowest 0)
    assert exercises.solution("06.2", result=study) == pytest.approx(0.5)
    study.rows = [r for r in study.rows if r["attack"] != "none-scratch" or r["key"] != "0-1-1"] + [
        {"key": "0-1-1", "attack": "none-scratch", "victim": v, "success": True, "clean_accuracy": 0.5}
        for v in range(2)
    ]
    assert exercises.solution("06.2", result=study) == pytest.approx(-0.5)  # falls as often without poison


def test_exercise_02_3_has_an_answer_when_the_two_classes_tie():
    classes = ("airplane", "automobile", "bird", "cat")
    labels = np.repeat([0, 3], 10)
    tied = {"epa": np.r_[np.zeros(10), np.zeros(10)], "labels": labels}
    apart = {"epa": np.r_[np.full(10, 0.5), np.zeros(10)], "labels": labels}
    assert exercises.solution("02.3", scores=tied, classes=classes) == {"tie"}
    assert exercises.check("02.3", "tie", quiet=True, scores=tied, classes=classes)
    assert not exercises.check("02.3", "cat", quiet=True, scores=tied, classes=classes)
    assert exercises.solution("02.3", scores=apart, classes=classes) == {"cat"}


def test_exercise_07_1_counts_poisoned_victims_only():
    study = _fake_study((AttackConfig.quick("gm"),), {"lowest": [1, 0, 1]})
    study.rows += [{"key": "0-1-0", "attack": "none-scratch", "victim": 9, "success": False, "clean_accuracy": 0.5}]
    assert exercises.solution("07.1", studies=[study, study]) == 6

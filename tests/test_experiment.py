"""The clean-experiment entry and the one target-rows builder: loads what was recorded, rows as the direct functions."""

import math

import numpy as np
import pytest
import torch

import poisondiff_lite as pdl
import poisondiff_lite.record as record
from poisondiff_lite import TauSettings, TrainConfig, TrajectoryConfig
from poisondiff_lite.budget import budget_lower_bound
from poisondiff_lite.distance import poisoning_distance


def toy_config(**kw):
    return TrajectoryConfig(dataset="cifar10", train=TrainConfig.quick(epochs=2, batch_size=16), runs=2, **kw)


def test_second_load_trains_nothing_and_gives_the_same_experiment(tmp_path, toy_bundle, monkeypatch):
    first = pdl.clean_experiment(toy_config(), data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    assert first.traj.completed == 2 and first.path == pdl.default_path(toy_config(), tmp_path)
    assert np.array_equal(first.scores["epa"], pdl.trajectory_metrics(first.traj)["epa"])
    monkeypatch.setattr(record, "train_fresh_many", lambda *a, **k: pytest.fail("trained again"))
    again = pdl.clean_experiment(toy_config(), data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    assert np.array_equal(again.traj.preds, first.traj.preds)
    for a, b in zip(first.surrogate.state_dict().values(), again.surrogate.state_dict().values()):
        assert torch.equal(a, b)
    logits = pdl.predict_logits(again.surrogate, again.split.images, device="cpu", cfg=again.config.train)
    assert np.array_equal(logits.argmax(1).numpy(), again.traj.preds[0, -1])  # run 0's model, as recorded


def test_class_selection_is_applied_once(toy_bundle):
    config = toy_config(classes=(2, 3))
    once = pdl.prepare_data(config, toy_bundle)
    assert once.classes == ("c", "d") and set(once.test.labels.tolist()) == {0, 1}
    assert pdl.prepare_data(config, once) is once  # a second pass would select classes 2 and 3 of two: an error
    with pytest.raises(pdl.InvalidChoiceError, match=r"holds only classes \[2, 3\].*pass the data set as loaded"):
        pdl.prepare_data(toy_config(classes=(1, 0)), once)  # classes 1 and 0 of the two kept would be 'd' and 'c'
    assert pdl.prepare_data(toy_config(classes=(1, 0)), toy_bundle).classes == ("b", "a")  # of the data as loaded


def test_selected_classes_keep_their_wnids(toy_bundle):
    bundle = pdl.DataBundle(
        "x", toy_bundle.train, toy_bundle.test, toy_bundle.classes, (0.5,) * 3, (0.25,) * 3, notes={"wnids": "wxyz"}
    )
    kept = bundle.select_classes([3, 1])
    assert kept.class_index("z") == 0 and kept.class_index("x") == 1  # by wnid, in the new labels


def test_target_rows_match_the_direct_functions(tmp_path, toy_bundle):
    experiment = pdl.clean_experiment(
        toy_config(), data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False
    )
    tau = TauSettings(num_batches=2, batch_size=16, seed=3)
    rows = experiment.target_rows([{"index": 5, "bucket": "b"}, 6], [0, 1, 2, 3], tau=tau)
    labels = toy_bundle.test.labels
    assert [(r["index"], r["poison_class"]) for r in rows] == [
        (i, c) for i in (5, 6) for c in range(4) if c != int(labels[i])
    ]  # never toward the own class
    assert [r["bucket"] for r in rows[:3]] == ["b"] * 3 and rows[-1]["bucket"] == "chosen"
    for r in rows:
        image = toy_bundle.test.images[r["index"]]
        direct = poisoning_distance(experiment.surrogate, image, r["poison_class"], device="cpu")
        assert r["delta_step"] == pytest.approx(direct.step, abs=2e-4, rel=1e-5)
        assert r["clean_pred"] == direct.pred_before and r["label"] == int(labels[r["index"]])
        budget = budget_lower_bound(
            experiment.surrogate, image, r["poison_class"], toy_bundle.train, delta=direct, **tau.as_kwargs()
        )
        assert r["tau"] == pytest.approx(budget.tau, rel=1e-3, abs=1e-6)
        assert r["tau_inner"] == pytest.approx(budget.inner, rel=1e-3, abs=1e-6)
        k = experiment.position(r["index"])
        assert r["epa"] == experiment.scores["epa"][k] and r["dps"] == experiment.scores["dps"][k]
    without = experiment.target_rows([5], [0, 1], tau=None)
    assert all(math.isnan(r["tau"]) for r in without) and [r["delta_step"] for r in without] == [
        r["delta_step"] for r in rows if r["index"] == 5 and r["poison_class"] in (0, 1)
    ]


def test_an_unrecorded_target_names_the_recorded_ones(tmp_path, toy_bundle):
    config = toy_config(eval_indices=tuple(range(10)))
    experiment = pdl.clean_experiment(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    with pytest.raises(pdl.ResultsFileError, match=r"index 20 was not recorded .*0\.\.9"):
        experiment.target_rows([20], [1])


def test_known_tau_is_reused_only_for_its_own_pair(tmp_path, toy_bundle):
    from poisondiff_lite.budget import BudgetResult

    experiment = pdl.clean_experiment(
        toy_config(), data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False
    )
    index = next(i for i in range(len(toy_bundle.test)) if int(toy_bundle.test.labels[i]) == 0)
    known = {(index, 1): BudgetResult(tau=123.0, inner=4.0, lambert=1.0, step=0.5)}
    tau = TauSettings(num_batches=2, batch_size=16)
    rows = {r["poison_class"]: r for r in experiment.target_rows([index], [1, 2], tau=tau, known_tau=known)}
    assert rows[1]["tau"] == 123.0 and rows[1]["tau_inner"] == 4.0  # taken as given, not computed again
    assert rows[2]["tau"] != 123.0  # another poison class is computed

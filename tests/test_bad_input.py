"""Bad input at every boundary gives one clear error (or the right result), before any training, never a silently
wrong number: images, predictions, class lists, counts, papermill strings, damaged files, unwritable folders."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

import poisondiff_lite as pdl
import poisondiff_lite.record as record
from poisondiff_lite import PoisonDiffError, ResultsFileError, TrainConfig, TrajectoryConfig
from poisondiff_lite.attacks import AttackConfig, Poisons, craft
from poisondiff_lite.budget import budget_lower_bound
from poisondiff_lite.distance import distance_matrix, poisoning_distance
from poisondiff_lite.errors import check_positive
from poisondiff_lite.metrics import epa, select_targets, soft_epa
from poisondiff_lite.models import build_model
from poisondiff_lite.utils import atomic_write, check_flag, check_writable, progress

from conftest import raises_one_line

TOY = TrainConfig.quick(epochs=2, batch_size=16, eval_batch_size=32)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("fastnet_small", 4).eval()


# -----------------------------------------------------------------------------------------------------------------
#  numbers that would give silently wrong metrics
# -----------------------------------------------------------------------------------------------------------------
LABELS = np.array([0, 1, 0])


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: epa(np.array([[0.0, np.nan, 0.0]]), LABELS), ("whole class indices",)),
        (lambda: epa(np.array([[0.5, 1.0, 0.0]]), LABELS), ("whole class indices",)),
        (lambda: epa(np.array([[0, 1, 0], [-1, -1, -1]]), LABELS), ("unfinished runs", "-1")),
        (lambda: epa(np.array([[0, 1, 0]]), np.array([0, -1, 0])), ("labels", "whole class indices")),
        (lambda: epa(np.array([[0, 1, 0]]), np.array([0.0, np.nan, 0.0])), ("labels", "NaN")),
        (lambda: epa(np.array([[0, 1, 0]]), np.array([0, 99, 0]), num_classes=10), ("labels", "[0, 10)")),
        (lambda: AttackConfig(budget=0.05, num_poisons=30), ("budget", "num_poisons", "drop one")),
        (
            lambda: pdl.StudyConfig.quick(attacks=(AttackConfig.quick("gm"), AttackConfig.quick("gm"))),
            ("GM", "listed twice"),
        ),
        (lambda: soft_epa(np.array([[7.0, 0.5, 0.1]])), ("[0, 1]",)),
        (lambda: soft_epa(np.array([[np.nan, 0.5, 0.1]])), ("NaN",)),
        (lambda: select_targets(np.array([np.nan, 0.5, 0.1, 0.3]), np.zeros(4, int), 0, per_bucket=1), ("NaN",)),
        (lambda: check_positive("victims", "5"), ("victims", "number", "'5'")),
        (lambda: check_positive("budget", float("nan")), ("budget", "finite")),
        (lambda: TrajectoryConfig(classes=(0, 0, 1)), ("more than once",)),
        (lambda: TrajectoryConfig(classes=(-1, 0)), ("[0",)),
        (lambda: TrajectoryConfig(seed0="abc"), ("seed0", "integer")),
        (lambda: TrajectoryConfig(eval_indices=(3, 3)), ("position(s) [3] more than once",)),
        (lambda: TrajectoryConfig(eval_indices=(3, -1)), ("eval_indices must lie in [0", "-1")),
        (lambda: TrainConfig(epochs=2.5), ("epochs", "integer")),
        (lambda: pdl.StudyConfig(victims="2"), ("victims", "integer")),
        (lambda: AttackConfig(steps="250"), ("steps", "integer")),
    ],
)
def test_numbers_that_would_mislead_are_refused(call, words):
    raises_one_line(call, *words)


def test_valid_predictions_still_give_the_hand_computed_epa():
    preds = np.array([[0, 1, 1], [0.0, 1.0, 0.0]])  # whole floats are fine
    np.testing.assert_allclose(epa(preds, LABELS), [1.0, 1.0, 0.5])


@pytest.mark.parametrize(
    "classes, words",
    [((-1, 0), ("[0, 4)", "-1")), ((0, 0, 1), ("more than once",)), ((7,), ("[0, 4)", "7")), ((), ("at least one",))],
)
def test_class_lists_are_checked(toy_bundle, classes, words):
    raises_one_line(lambda: toy_bundle.select_classes(classes), *words)


# -----------------------------------------------------------------------------------------------------------------
#  images
# -----------------------------------------------------------------------------------------------------------------
IMAGE = torch.randint(0, 256, (3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.mark.parametrize("labels", [[0, 99], [0, -1], [0.0, float("nan")], [0, 1.5]])
def test_distance_matrix_refuses_labels_the_model_has_no_class_for(net, labels):
    batch = IMAGE[None].expand(2, -1, -1, -1)
    raises_one_line(
        lambda: distance_matrix(net, batch, np.array(labels), device="cpu", show_progress=False), "labels", "[0, 4)"
    )


@pytest.mark.parametrize(
    "image, words",
    [
        (IMAGE.float(), ("[0, 1]", "255")),  # pixels in 0-255 passed as floats: δ would be ~15x off
        (IMAGE.long(), ("int64", "uint8")),
        (torch.full((3, 16, 16), float("nan")), ("NaN",)),  # δ = τ = inf ("never flips") before
        (IMAGE.float()[0] / 255, ("(3, H, W)",)),
        (IMAGE.numpy(), ("torch tensor",)),
    ],
)
def test_bad_images_are_refused_by_delta_tau_and_crafting(net, toy_bundle, image, words):
    raises_one_line(lambda: poisoning_distance(net, image, 1, device="cpu"), *words)
    raises_one_line(lambda: budget_lower_bound(net, image, 1, toy_bundle.train, num_batches=1, device="cpu"), *words)
    if torch.is_tensor(image) and image.ndim == 3:
        batch = image[None].expand(2, -1, -1, -1)
        raises_one_line(
            lambda: distance_matrix(net, batch, np.array([0, 0]), device="cpu", show_progress=False), *words
        )
        raises_one_line(
            lambda: craft(
                AttackConfig.quick("gm", steps=1),
                net,
                image,
                1,
                toy_bundle.train.images[:2],
                toy_bundle.train.labels[:2],
                device="cpu",
            ),
            *words,
        )


def test_valid_images_give_the_same_delta_as_uint8_and_as_unit_floats(net):
    a = poisoning_distance(net, IMAGE, 1, device="cpu")
    b = poisoning_distance(net, IMAGE.float() / 255, 1, device="cpu")
    assert a.step == pytest.approx(b.step, rel=1e-6) and np.isfinite(a.step)


def test_tau_checks_its_batches_before_searching_delta(net, toy_bundle, monkeypatch):
    monkeypatch.setattr(
        "poisondiff_lite.budget.poisoning_distance",
        lambda *a, **k: pytest.fail("δ was searched before the settings were checked"),
    )
    raises_one_line(
        lambda: budget_lower_bound(net, IMAGE, 1, toy_bundle.train, num_batches=0, device="cpu"), "num_batches"
    )


def test_datasets_from_tensors_name_the_conversion():
    x = torch.rand(8, 3, 16, 16)
    raises_one_line(lambda: pdl.DataBundle.from_tensors("mine", x, torch.zeros(8), x, torch.zeros(8)), "uint8", "255")
    u = (x * 255).to(torch.uint8)
    raises_one_line(lambda: pdl.ImageDataset(u, torch.full((8,), -1)), "labels", ">= 0")
    raises_one_line(lambda: pdl.ImageDataset(u, torch.zeros(8) + 0.5), "labels", "integers")


# -----------------------------------------------------------------------------------------------------------------
#  papermill parameters arrive as strings
# -----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [
        ("False", False),
        ("false", False),
        ("0", False),
        ("no", False),
        ("True", True),
        ("yes", True),
        (1, True),
        (False, False),
    ],
)
def test_string_booleans_mean_what_they_say(value, expected):
    assert pdl.resolve_quick(value) is expected
    assert check_flag("DOWNLOAD", value) is expected


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: pdl.resolve_quick("maybe"), ("QUICK", "True or False", "'maybe'")),
        (lambda: pdl.resolve_quick(2), ("QUICK",)),
        (lambda: pdl.seed_everything("abc"), ("seed", "integer")),
        (lambda: pdl.seed_everything(1.5), ("seed", "integer")),
        (lambda: list(progress([1], enable="maybe")), ("progress",)),
        (lambda: pdl.load_dataset("cifar10", download="maybe"), ("download",)),
    ],
)
def test_non_booleans_and_non_integers_from_papermill_are_errors(call, words):
    raises_one_line(call, *words)


# -----------------------------------------------------------------------------------------------------------------
#  damaged files: one line naming the fix
# -----------------------------------------------------------------------------------------------------------------
def test_trajectory_without_preds_names_the_missing_array(tmp_path, toy_bundle):
    path = tmp_path / "t.npz"
    traj = record.record_trajectories(
        TrajectoryConfig(train=TOY, runs=1), data=toy_bundle, path=path, show_progress=False, device="cpu"
    )
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "preds"}
    np.savez(path, **arrays)
    raises_one_line(lambda: pdl.Trajectory.load(path), "preds", "Fix", error=ResultsFileError)
    assert traj.completed == 1


def test_truncated_saved_model_names_the_fix(tmp_path, toy_bundle):
    path = tmp_path / "t.npz"
    record.record_trajectories(
        TrajectoryConfig(train=TOY, runs=1),
        data=toy_bundle,
        path=path,
        show_progress=False,
        device="cpu",
        keep_models=True,
    )
    model_file = record.run_model_path(path, 0)
    model_file.write_bytes(model_file.read_bytes()[:100])
    raises_one_line(
        lambda: pdl.load_run_model(path, 0), "not a readable saved model", "keep_models=True", error=ResultsFileError
    )


def test_truncated_poison_file_names_the_fix(tmp_path):
    poisons = Poisons(
        torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.arange(2), torch.zeros(2, 3, 4, 4), [1.0], [1.0], "gm"
    )
    path = tmp_path / "p.pt"
    poisons.save(path)
    path.write_bytes(path.read_bytes()[:50])
    raises_one_line(
        lambda: Poisons.load(path, torch.zeros(2, 3, 4, 4, dtype=torch.uint8)),
        "poison file",
        "delete it",
        error=ResultsFileError,
    )


@pytest.mark.parametrize("content", ['{"targets": [{"index": 1', '{"classes": []}', "[]"])
def test_damaged_targets_file_names_the_fix(tmp_path, content):
    from poisondiff_lite.study import StudyConfig, read_study

    (tmp_path / "targets.json").write_text(content)
    raises_one_line(lambda: read_study(tmp_path, StudyConfig.quick()), "targets.json", "Fix", error=ResultsFileError)


# -----------------------------------------------------------------------------------------------------------------
#  folders that cannot be written, file modes
# -----------------------------------------------------------------------------------------------------------------
def test_unwritable_results_folder_fails_before_training(tmp_path, toy_bundle, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(record, "train_fresh_many", lambda *a, **k: pytest.fail("trained before checking the folder"))
    raises_one_line(
        lambda: record.record_trajectories(
            TrajectoryConfig(train=TOY, runs=1),
            data=toy_bundle,
            path=blocker / "t.npz",
            show_progress=False,
            device="cpu",
        ),
        "results folder",
        "Fix",
        error=ResultsFileError,
    )
    raises_one_line(lambda: check_writable(blocker / "sub"), "not writable", error=ResultsFileError)
    raises_one_line(
        lambda: atomic_write(blocker / "x.bin", lambda f: f.write(b"1")),
        "could not write",
        "Fix",
        error=ResultsFileError,
    )


def test_study_checks_its_folder_and_bucket_size_before_training(tmp_path, toy_bundle, monkeypatch):
    import poisondiff_lite.study as study

    monkeypatch.setattr(study, "clean_experiment", lambda *a, **k: pytest.fail("trained before the checks"))
    config = pdl.StudyConfig(trajectory=TrajectoryConfig(train=TOY, runs=1), per_bucket=5000, victims=1)
    raises_one_line(
        lambda: pdl.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False),
        "per_bucket=5000",
        "at most 8",
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ok = pdl.StudyConfig(trajectory=TrajectoryConfig(train=TOY, runs=1), per_bucket=1, victims=1)
    with pytest.raises(ResultsFileError):
        pdl.run_study(ok, data=toy_bundle, device="cpu", results_dir=blocker, show_progress=False)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"tau_batches": 0}, ("tau_batches",)),
        ({"variant": "foo"}, ("variant", "foo")),
        ({"per_bucket": 5000}, ("per_bucket=5000",)),
        ({"poison_classes": [1, 1]}, ("more than once",)),
    ],
)
def test_metrics_table_checks_settings_before_training(tmp_path, toy_bundle, monkeypatch, kwargs, words):
    import poisondiff_lite.metrics_table as table

    monkeypatch.setattr(table, "clean_experiment", lambda *a, **k: pytest.fail("trained before the checks"))
    raises_one_line(
        lambda: table.target_metrics_csv(
            TrajectoryConfig(train=TOY, runs=1),
            tmp_path / "m.csv",
            data=toy_bundle,
            device="cpu",
            results_dir=tmp_path,
            show_progress=False,
            **kwargs,
        ),
        *words,
    )


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "f.bin", lambda f: f.write(b"1"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# -----------------------------------------------------------------------------------------------------------------
#  the CLI's `epa` then `study` path: the weights δ and τ need are recorded when missing
# -----------------------------------------------------------------------------------------------------------------
def test_experiment_recorded_without_weights_gets_run_0_again(tmp_path, toy_bundle):
    path = tmp_path / "t.npz"
    config = TrajectoryConfig(train=TOY, runs=2)
    traj = record.record_trajectories(config, data=toy_bundle, path=path, show_progress=False, device="cpu")
    assert not record.run_model_path(path, 0).exists()
    again = record.record_trajectories(
        config, data=toy_bundle, path=path, show_progress=False, device="cpu", keep_models=True
    )
    np.testing.assert_array_equal(again.preds, traj.preds)  # nothing recorded twice
    model = pdl.load_run_model(path, 0)
    preds = pdl.predict_logits(model, toy_bundle.test.images, device="cpu").argmax(1).numpy()
    np.testing.assert_array_equal(preds, traj.preds[0, -1])  # it is run 0, trained again from its seed


def test_cli_epa_keeps_models_on_request(tmp_path, monkeypatch):
    from poisondiff_lite.cli import build_parser

    args = build_parser().parse_args(["epa", "--keep-models", "--out", str(tmp_path / "e.csv")])
    assert args.keep_models is True
    assert build_parser().parse_args(["epa"]).keep_models is False


def test_positive_check_still_accepts_numpy_numbers():
    check_positive("victims", np.int64(3))
    check_positive("budget", np.float32(0.01))
    raises_one_line(lambda: check_positive("budget", True), "budget", error=PoisonDiffError)

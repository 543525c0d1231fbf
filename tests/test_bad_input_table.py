"""One table of bad inputs, each through the real entry point (`poisondiff` as `cli.main`, or the public API): the
exit code (2: one-line error naming the fix) and words the message must hold. Every case fails before any training.

A row's arguments may name ``{tmp}`` (a fresh folder), ``{file}`` (a plain file in it) or ``{csv}`` (a CSV that is
not a metrics table); none trains, so the table stays fast."""

from __future__ import annotations

import json
import warnings

import numpy as np

import pytest

import poisondiff_lite as pdl
from poisondiff_lite import ResultsFileError
from poisondiff_lite.cli import main
from poisondiff_lite.metrics_table import COLUMNS, read_rows
from poisondiff_lite.results import read_study

from conftest import raises_one_line

CLI = [
    # (argv, words the one-line error holds); every row exits with 2
    (["epa", "--runs", "0"], ["runs must be > 0"]),
    (["epa", "--runs", "-3"], ["runs must be > 0"]),
    (["epa", "--runs", "1000000000000"], ["fewer runs (--runs)", "GiB"]),
    (["epa", "--dataset", "mnist"], ["unknown dataset 'mnist'", "cifar10"]),
    (["epa", "--stack", "0"], ["stack must be > 0"]),
    (["epa", "--compile", "fastest"], ["fastest"]),
    (["epa", "--device", "tpu"], ["tpu"]),
    (["epa", "--out", "{tmp}"], ["is a folder", "name a file"]),
    (["epa", "--out", "{file}/e.csv"], ["is a file", "--out"]),
    (["epa", "--recipe", "mine"], ["--recipe", "mine"]),
    (["metrics", "--seed", str(2**70)], ["64-bit seeds"]),
    (["metrics", "--seed", str(-(2**70))], ["64-bit seeds"]),
    (["metrics", "--epochs", "0"], ["epochs must be > 0"]),
    (["metrics", "--runs", "0"], ["runs must be > 0"]),
    (["metrics", "--target-class", "zebra"], ["unknown class name 'zebra'", "airplane"]),
    (["metrics", "--poison-class", "zebra"], ["unknown class name 'zebra'"]),
    (["metrics", "--per-bucket", "0"], ["per_bucket must be > 0"]),
    (["metrics", "--per-bucket", "100000"], ["per_bucket", "100000"]),
    (["metrics", "--indices", "-1"], ["-1"]),
    (["metrics", "--indices", "999999"], ["999999"]),
    (["metrics", "--indices"], ["--indices"]),
    (["metrics", "--tau-batches", "0"], ["must be > 0"]),
    (["metrics", "--tau-batch-size", "-1"], ["must be > 0"]),
    (["metrics", "--variant", "mine"], ["unknown variant 'mine'", "derived"]),
    (["metrics", "--out", "{csv}"], ["not a poisondiff metrics CSV", "--out"]),
    (["metrics", "--out", "{tmp}"], ["is a folder"]),
    (["study", "--attacks", "gm", "gm"], ["GM", "listed twice"]),
    (["study", "--attacks", "witches"], ["unknown attack 'witches'"]),
    (["study", "--budget", "0.05", "--poisons", "30"], ["--budget", "--poisons"]),
    (["study", "--budget", "0"], ["budget must be > 0"]),
    (["study", "--budget", "-0.01"], ["budget must be > 0"]),
    (["study", "--poisons", "0"], ["must be > 0"]),
    (["study", "--eps", "-8"], ["must be > 0"]),
    (["study", "--steps", "0"], ["steps must be > 0"]),
    (["study", "--restarts", "0"], ["restarts must be > 0"]),
    (["study", "--victims", "0"], ["victims must be > 0"]),
    (["study", "--extremes", "-1"], ["extremes"]),
    (["study", "--per-bucket", "0"], ["per_bucket must be > 0"]),
    (["study", "--target-class", "airplane", "--poison-class", "airplane"], ["poison class", "target class"]),
    (["study", "--poison-class", "aeroplane"], ["unknown class name 'aeroplane'"]),
    (["study", "--workers", "0"], ["workers must be > 0"]),
    (["study", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], ["choose one of --workers and --scheduler"]),
    (["study", "--lab", "--full"], ["choose one of --full and --lab"]),
    (["study", "--results-dir", "{file}"], ["{file}"]),
    (["study", "--out", "{tmp}"], ["is a folder"]),
    (["tutorial", "--out", "{file}"], ["is a file, not a folder", "--out"]),
    (["tutorial", "--out", "/proc/no-such-folder/nb"], ["is not writable", "--out"]),
    (["epa", "--out", "/proc/no-such-folder/e.csv"], ["is not writable", "--out"]),
    (["tutorial", "--only", "99"], ["--only 99", "no such notebook", "choose among 00"]),
    (["tutorial", "--notebooks", "{tmp}/none"], ["none"]),
]


@pytest.mark.parametrize("argv, words", CLI, ids=[" ".join(a)[:60] for a, _ in CLI])
def test_the_cli_refuses_in_one_line(argv, words, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    fill = {"{tmp}": str(tmp_path), "{file}": str(a_file), "{csv}": str(foreign)}

    def filled(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    argv = [filled(a) for a in argv]
    if "--out" not in argv and argv[0] != "tutorial":
        argv += ["--out", str(tmp_path / "out.csv")]
    try:
        code = main([*argv, "--no-progress"])
    except SystemExit as stop:  # argparse's own refusals (an unknown choice, a missing value)
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    last = err.splitlines()[-1]  # argparse prints its usage above its one-line error
    assert "Traceback" not in err and all(filled(w) in last for w in words), err


# -----------------------------------------------------------------------------------------------------------------
#  damaged files, through the API that reads them
# -----------------------------------------------------------------------------------------------------------------
def _study_folder(tmp_path, *, targets=None, extra_lines=()):
    """A copy of a shipped study's files with its targets or log changed."""
    from poisondiff_lite.shipped import shipped_path

    source = shipped_path("tinyimagenet-lab-scratch")
    folder = tmp_path / "study"
    folder.mkdir(parents=True)
    for name in ("study.json", "targets.json", "results.jsonl"):
        (folder / name).write_bytes((source / name).read_bytes())
    if targets is not None:
        (folder / "targets.json").write_text(json.dumps(targets))
    with open(folder / "results.jsonl", "a") as log:
        log.writelines(line + "\n" for line in extra_lines)
    return folder


TARGET = {"key": "2-1-179", "index": 179, "epa": 0.0, "bucket": "lowest"}
DAMAGED_TARGETS = [
    ([], ["does not hold a study's targets", "Fix"]),
    ({"targets": []}, ["holds no targets", "Fix"]),
    ({"targets": [{"key": "2-1-179", "epa": 0.0}]}, ["lacks index", "Fix"]),
    ({"targets": [dict(TARGET, index="x179")]}, ["index 'x179'", "Fix"]),
    ({"targets": [dict(TARGET, index=True)]}, ["index True", "Fix"]),
    ({"targets": ["179"]}, ["does not hold a study's targets", "Fix"]),
    ({"targets": [{"index": 179, "epa": 0.0}]}, ["lacks key", "Fix"]),
]


@pytest.mark.parametrize("targets, words", DAMAGED_TARGETS)
def test_damaged_targets_are_one_line(targets, words, tmp_path):
    folder = _study_folder(tmp_path, targets=targets)
    raises_one_line(lambda: read_study(folder), *words, error=ResultsFileError)


@pytest.mark.parametrize(
    "line",
    [
        '{"foo": 1}',
        '{"key": "2-1-179", "attack": "none-scratch", "victim": "abc", "success": false, "clean_accuracy": 0.5}',
        '{"key": "2-1-179", "attack": "none-scratch", "victim": true, "success": false, "clean_accuracy": 0.5}',
        '{"key": "2-1-179", "attack": "none-scratch", "victim": 7, "success": "yes", "clean_accuracy": 0.5}',
        '{"key": 179, "attack": "none-scratch", "victim": 7, "success": false, "clean_accuracy": 0.5}',
        '{"key": "2-1-179", "attack": "none-scratch", "victim": 7, "success": false}',
        "[1, 2, 3]",
    ],
)
def test_a_log_line_that_parses_but_is_no_victim_is_skipped_and_named(line, tmp_path):
    clean = read_study(_study_folder(tmp_path / "a"))
    with pytest.warns(UserWarning, match="skipped 1 damaged line"):
        damaged = read_study(_study_folder(tmp_path / "b", extra_lines=[line]))
    assert damaged.rows == clean.rows  # the good rows as they were; the bad one counts as not done
    assert damaged.per_target() == clean.per_target()


def _metrics_csv(path, rows):
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


ROW = dict.fromkeys(COLUMNS, "0") | {"dataset": "cifar10", "index": "3", "poison_class": "1", "settings": "abc"}


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text.replace("\n" + ",".join(ROW[c] for c in COLUMNS) + "\n", "\n" + "cifar10,7,0\n", 1),
        lambda text: text.rstrip("\n")[:-6] + "\n",  # the last row cut short
        lambda text: text.replace(",3,", ",x3,", 1),
        lambda text: text.replace(",abc", ",", 1),
        lambda text: text.rstrip("\n") + ",1\n",  # the last row with one field too many
    ],
)
def test_a_damaged_metrics_row_is_dropped_with_a_warning_and_the_rest_kept(change, tmp_path):
    path = tmp_path / "m.csv"
    _metrics_csv(path, [ROW, dict(ROW, index="5"), dict(ROW, index="8")])
    path.write_text(change(path.read_text()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_rows(path)
    assert len(rows) == 2 and all(r["settings"] == "abc" for r in rows)
    assert (
        len(caught) == 1 and "skipped 1 damaged row" in str(caught[0].message) and "computes" in str(caught[0].message)
    )


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: pdl.TrajectoryConfig(seed0=2**63 - 2, runs=4), ["seed0", "64-bit seeds"]),
        (lambda: pdl.StudyConfig.quick(victim_seed0=2**64), ["victim_seed0", "64-bit seeds"]),
        (lambda: pdl.StudyConfig.quick(crafting_seed=-(2**64)), ["crafting_seed", "64-bit seeds"]),
        (lambda: pdl.seed_everything(2**64), ["seed", "64-bit seeds"]),
        (lambda: pdl.seed_everything("0"), ["seed", "integer"]),
    ],
)
def test_seeds_beyond_64_bits_are_one_line(call, words):
    raises_one_line(call, *words)


def test_the_table_is_large_enough():
    assert len(CLI) + len(DAMAGED_TARGETS) + 7 + 5 + 5 >= 40


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda a: a.update(completed=np.asarray(-1)), ["-1 runs completed"]),
        (lambda a: a.update(completed=np.asarray(99)), ["99 runs completed"]),
        (lambda a: a["preds"].__setitem__((0, 0, 0), 99), ["outside [0, 4)"]),
        (lambda a: a.pop("true_prob"), ["no array", "true_prob"]),
        (lambda a: a.update(config_json=np.asarray("{not json")), ["JSONDecodeError"]),
    ],
)
def test_a_damaged_trajectory_file_is_one_line(damage, words, tmp_path, toy_bundle):
    config = pdl.TrajectoryConfig(dataset="cifar10", train=pdl.TrainConfig.quick(epochs=1, batch_size=16), runs=1)
    path = tmp_path / "t.npz"
    pdl.record_trajectories(config, data=toy_bundle, path=path, device="cpu", show_progress=False)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    damage(arrays)
    np.savez(path, **arrays)
    raises_one_line(
        lambda: pdl.Trajectory.load(path), "Fix: delete it and record again", *words, error=ResultsFileError
    )


@pytest.mark.parametrize("target", ["3", True, 3.0, np.float32(3)])
def test_evaluate_poisons_names_what_a_target_is(target, toy_bundle, tmp_path):
    from poisondiff_lite.evaluate import evaluate_poisons

    trajectory = pdl.TrajectoryConfig(dataset="cifar10", train=pdl.TrainConfig.quick(epochs=1, batch_size=16), runs=1)
    config = pdl.StudyConfig.quick(trajectory=trajectory, victims=1)
    with pytest.raises(pdl.InvalidChoiceError, match="target must be a test index .* or the target image") as info:
        evaluate_poisons(
            toy_bundle.train.images[:4],
            [0, 1, 2, 3],
            target,
            config=config,
            data=toy_bundle,
            device="cpu",
            show_progress=False,
            results_dir=tmp_path,
        )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("targets.json", "[]", ["does not hold a study's targets"]),
        ("targets.json", '{"targets": [{"key": "0-1-3"}]}', ["lacks index, epa"]),
        ("results.jsonl", '{"header": {"study": "another"}}\n', ["belongs to another study"]),
    ],
)
def test_a_study_with_damaged_files_stops_before_any_training(name, text, words, toy_bundle, tmp_path):
    from poisondiff_lite import study

    trajectory = pdl.TrajectoryConfig(dataset="cifar10", train=pdl.TrainConfig.quick(epochs=1, batch_size=16), runs=1)
    config = pdl.StudyConfig.quick(trajectory=trajectory, victims=1, per_bucket=1)
    folder = study.study_dir(config, tmp_path)
    folder.mkdir(parents=True)
    (folder / name).write_text(text)
    raises_one_line(
        lambda: study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False),
        *words,
        error=ResultsFileError,
    )
    assert not list(tmp_path.rglob("*.npz")), "the clean runs were trained before the damaged file was read"

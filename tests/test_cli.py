"""Command-line contracts: one-line errors, a zero count is an error (never "the preset's default"), presets and
speed options reach the run exactly, the tutorial runs headlessly and names each notebook."""

from __future__ import annotations

from pathlib import Path

import pytest

import poisondiff_lite as pdl
from poisondiff_lite.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["epa", "--runs", "0"], "runs must be > 0, got 0"),
        (["epa", "--runs", "-2"], "runs must be > 0, got -2"),
        (["metrics", "--epochs", "0"], "epochs must be > 0, got 0"),
        (["metrics", "--runs", "0"], "runs must be > 0, got 0"),
    ],
)
def test_zero_is_not_the_default(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["study", "--attacks", "witches"], "unknown attack 'witches'; valid choices: 'gm', 'bp', 'fc'"),
        (["study", "--budget", "-0.01"], "budget must be > 0"),
        (["study", "--eps", "-8"], "must be > 0"),
        (["study", "--dataset", "mnist"], "unknown dataset 'mnist'; valid choices: 'cifar10', 'tinyimagenet'"),
        (["study", "--poison-class", "aeroplane"], "unknown class name 'aeroplane'; valid choices: 'airplane'"),
        (["study", "--victims", "0"], "victims must be > 0"),
        (["study", "--stack", "0"], "stack must be > 0"),
        (["study", "--lab", "--full"], "choose one of --full and --lab"),
        (["study", "--lab", "--dataset", "tinyimagenet", "--victims", "0"], "victims must be > 0"),
        (["study", "--attacks", "gm", "gm"], "GM listed twice"),
        (["study", "--lab", "--attacks", "fc", "fc"], "FC listed twice"),
        (["study", "--budget", "0.05", "--poisons", "30"], "choose one of --budget and --poisons"),
    ],
)
def test_cli_study_bad_input_is_one_line(argv, message, capsys, tmp_path):
    code = main(argv + ["--out", str(tmp_path / "s.csv"), "--results-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "studies").exists(), "nothing may be trained before the input is checked"


def test_cli_speed_options_reach_the_recipe_but_not_the_experiment(monkeypatch, tmp_path):
    import poisondiff_lite.record as record

    seen = []

    def stop_after_seeing(config, **kwargs):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(record, "record_trajectories", stop_after_seeing)
    assert main(["epa", "--stack", "3", "--compile", "--out", str(tmp_path / "e.csv"), "--no-progress"]) == 130
    assert seen[0].train.stack == 3 and seen[0].train.compile is True
    assert seen[0].key() == pdl.TrajectoryConfig.quick().key()  # same experiment, same file as without them
    assert main(["epa", "--compile", "reduce-overhead", "--out", str(tmp_path / "e.csv"), "--no-progress"]) == 130
    assert seen[1].train.compile == "reduce-overhead" and seen[1].key() == seen[0].key()


def studies_asked_for(monkeypatch) -> list:
    """The configs `poisondiff study` hands to `run_study`, which stops there (KeyboardInterrupt: exit 130)."""
    import poisondiff_lite.study as study_module

    seen = []

    def stop_after_seeing(config, **kwargs):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "run_study", stop_after_seeing)
    return seen


@pytest.mark.parametrize(
    "argv, preset",
    [
        (["study", "--lab"], lambda: pdl.StudyConfig.lab("cifar10", "scratch")),
        (["study", "--lab", "--transfer"], lambda: pdl.StudyConfig.lab("cifar10", "transfer")),
    ],
)
def test_cli_lab_runs_exactly_the_preset(argv, preset, monkeypatch, tmp_path):
    """`poisondiff study --lab` is the command in the shipped studies' provenance: it must make the preset's study."""
    seen = studies_asked_for(monkeypatch)
    assert main(argv + ["--out", str(tmp_path / "s.csv"), "--no-progress"]) == 130
    assert seen[0].key() == preset().key()
    assert main(argv + ["--attacks", "gm", "--out", str(tmp_path / "s.csv"), "--no-progress"]) == 130
    assert [a.name for a in seen[1].attacks] == ["gm"] and seen[1].attacks[0] in preset().attacks


def test_cli_unknown_compile_mode_lists_the_modes(tmp_path, capsys):
    assert main(["epa", "--compile", "fastest", "--out", str(tmp_path / "e.csv"), "--no-progress"]) == 2
    assert "reduce-overhead" in capsys.readouterr().err


def test_tutorial_runs_notebooks_headlessly(monkeypatch, tmp_path):
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, **kw: calls.append((Path(src).name, kw)))
    assert main(["tutorial", "--only", "05", "07", "--out", str(tmp_path), "--no-progress"]) == 0
    assert [name for name, _ in calls] == ["05_attack_validation_cifar10.ipynb", "07_summary.ipynb"]
    assert all(kw["parameters"] == {"QUICK": True, "INTERACTIVE": False} for _, kw in calls)


def test_tutorial_console_shows_the_notebooks_not_kernel_warnings(tmp_path, capfd):
    import nbformat

    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    )
    nb.cells = [
        nbformat.v4.new_code_cell("QUICK = None\nINTERACTIVE = True", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print('hello')"),
    ]
    nbformat.write(nb, folder / "00_tiny.ipynb")
    assert main(["tutorial", "--notebooks", str(folder), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert "[1/1] 00_tiny.ipynb" in out and "without encryption" not in err + out


@pytest.mark.parametrize(
    "argv, train_size, poisons",
    [
        (["study", "--attacks", "fc", "--budget", "0.05"], 5000, 250),  # FC's preset count (25) gives way
        (["study", "--lab", "--transfer", "--attacks", "fc", "--budget", "0.05"], 5000, 250),
        (["study", "--lab", "--dataset", "tinyimagenet", "--budget", "0.05"], 1000, 50),  # the preset's 25 gives way
        (["study", "--attacks", "fc", "--poisons", "30"], 5000, 30),
    ],
)
def test_cli_budget_asked_for_is_the_budget_crafted(argv, train_size, poisons, monkeypatch, tmp_path):
    seen = studies_asked_for(monkeypatch)
    assert main(argv + ["--out", str(tmp_path / "s.csv"), "--no-progress"]) == 130
    assert [a.count(train_size) for a in seen[0].attacks] == [poisons] * len(seen[0].attacks)


def test_cli_metrics_indices_without_a_value_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["metrics", "--indices"])
    assert stop.value.code == 2 and "--indices" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["epa"], ["metrics"], ["study"]])
def test_cli_out_is_checked_before_any_work_and_names_a_fix_the_command_has(command, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, words in ((tmp_path, ("is a folder", "name a file")), (a_file / "t.csv", ("is a file", "--out"))):
        assert main([*command, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words) and "--results-dir" not in err, err


def test_tutorial_out_that_is_a_file_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["tutorial", "--out", str(a_file), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file, not a folder" in err and "--out" in err, err

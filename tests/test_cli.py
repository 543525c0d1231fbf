"""Command-line contracts: a zero or negative count is an error, never "the preset's default"."""

from __future__ import annotations

import pytest

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

"""One writer per study, trajectory file and metrics table: a second process is refused with one line naming the
first, and the lock is gone when the first process ends, however it ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from poisondiff_lite import study
from poisondiff_lite.errors import ResultsFileError
from poisondiff_lite.record import default_path, record_trajectories
from poisondiff_lite.utils import exclusive
from test_study import tiny_config


def hold(path, seconds=60):
    """Another real process that holds the lock of `path` (as a running study or recorder would)."""
    code = textwrap.dedent(f"""
        import time
        from poisondiff_lite.utils import exclusive
        with exclusive({str(path)!r}, "x"):
            print("locked", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_study_process_is_refused_and_named(tmp_path, toy_bundle):
    config = tiny_config()
    folder = study.study_dir(config, tmp_path)
    folder.mkdir(parents=True)
    other = hold(folder)
    try:
        with pytest.raises(ResultsFileError, match=rf"being written by process {other.pid} on .*Fix: wait"):
            study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
        assert not (folder / "results.jsonl").exists(), "the refused process must not write anything"
    finally:
        other.kill()
        other.wait()
    # the holder was killed (no clean exit): the OS released its lock, so the study runs now
    result = study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    assert result.complete()


def test_a_second_recorder_is_refused_but_a_finished_file_is_readable(tmp_path, toy_bundle):
    config = tiny_config().trajectory
    path = default_path(config, tmp_path)
    other = hold(path)
    try:
        with pytest.raises(ResultsFileError, match="the trajectory file .* is being written by process"):
            record_trajectories(config, data=toy_bundle, device="cpu", path=path, show_progress=False)
    finally:
        other.kill()
        other.wait()
    traj = record_trajectories(config, data=toy_bundle, device="cpu", path=path, show_progress=False)
    other = hold(path)
    try:  # a finished experiment is only read: another process holding the lock does not stop readers
        again = record_trajectories(config, data=toy_bundle, device="cpu", path=path, show_progress=False)
        assert (again.preds == traj.preds).all()
    finally:
        other.kill()
        other.wait()


def test_the_lock_is_reentrant_across_sequential_uses_and_cleans_its_owner_file(tmp_path):
    target = tmp_path / "table.csv"
    for _ in range(2):
        with exclusive(target, "the metrics table"):
            assert (tmp_path / "table.csv.lock.owner").exists()
        assert not (tmp_path / "table.csv.lock.owner").exists()

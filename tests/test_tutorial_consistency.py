"""After the notebooks ran (conftest.py moves these tests behind them): no notebook changes a file another one
reads, and a target's EPA is one number wherever the tutorial shows it.

The kernels logged every file they opened under the results folder and the EPA of every trajectory and study they
held (tests/kernel_audit.py); the checks run on that log. They are skipped when the notebooks did not all run.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

NOTEBOOKS = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.ipynb"))
pytestmark = pytest.mark.after_notebooks


def read_audit(path: Path) -> tuple[list[dict], dict]:
    """The log as (file events, EPA events), each with the cell it happened in; lines outside notebooks dropped."""
    files, epa, cell = [], [], None
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if "cell" in entry:
            cell = entry["cell"]
        elif cell is not None:
            (files if "open" in entry else epa).append(dict(entry, **cell))
    return files, epa


@pytest.fixture(scope="module")
def audit() -> tuple[list[dict], list[dict]]:
    path = Path(os.environ.get("POISONDIFF_AUDIT_LOG", "/nonexistent"))
    if not path.exists():
        pytest.skip("no notebook ran in this session")
    files, epa = read_audit(path)
    ran = {e["notebook"] for e in files + epa}
    if not set(NOTEBOOKS) <= ran | {NOTEBOOKS[0]}:  # 00 opens nothing under the results folder
        pytest.skip(f"the tutorial's notebooks did not all run in this session ({sorted(ran)})")
    return files, epa


def files_changed_under_readers(files: list[dict]) -> list[str]:
    """What breaks 'no notebook changes what another reads': a file that a notebook reads while another notebook
    writes it, or that an exercise or solution cell writes."""
    writers, readers = defaultdict(set), defaultdict(set)
    problems = []
    for e in files:
        (writers if e["write"] else readers)[e["open"]].add(e["notebook"])
    for e in files:
        path = e["open"]
        others = readers[path] - {e["notebook"]}
        if e["write"] and e["exercise"] and others:
            where = f"{e['notebook']} cell {e['index']}"
            problems.append(f"{where} (an exercise) writes {path}, read by {sorted(others)}")
        elif e["write"] and others and len(writers[path]) > 1:
            problems.append(f"{path} is written by {sorted(writers[path])} and read by {sorted(others)}")
    return sorted(set(problems))


def epa_disagreements(files: list[dict], epa: list[dict]) -> list[str]:
    """Targets whose EPA differs between two notebooks (or two objects of one notebook) that only read the
    experiment: the notebook that records it watches it grow and is left out."""
    recorded_by = defaultdict(set)
    for e in files:
        if e["write"] and e["open"].startswith("trajectories/"):
            recorded_by[Path(e["open"]).name].add(e["notebook"])
    seen: dict[tuple[str, int], dict[float, str]] = defaultdict(dict)
    for e in epa:
        if e["notebook"] in recorded_by[e["epa"]]:
            continue
        for index, value in e["values"].items():
            seen[e["epa"], int(index)].setdefault(value, f"{e['notebook']} cell {e['index']}")
    return [
        f"{key} #{index}: " + ", ".join(f"EPA {v} in {where}" for v, where in sorted(values.items()))
        for (key, index), values in sorted(seen.items())
        if len(values) > 1
    ]


def test_no_notebook_changes_a_file_another_reads(audit):
    files, _ = audit
    assert files, "the kernels logged no file under the results folder"
    assert not files_changed_under_readers(files)


def test_a_target_has_one_epa_across_the_tutorial(audit):
    files, epa = audit
    readers = {e["notebook"] for e in epa}
    assert len(readers) >= 5, f"EPA seen in too few notebooks to compare: {sorted(readers)}"
    assert not epa_disagreements(files, epa)


def test_the_checks_catch_what_they_are_for():
    """The two checks on planted logs: 01's solution extending the saved experiment, seen by 07 with other EPA."""
    key, npz = "cifar10-m-abc.npz", "trajectories/cifar10-m-abc.npz"
    cell = lambda nb, i, ex=False: {"notebook": nb, "index": i, "exercise": ex}  # noqa: E731
    files = [
        dict(open=npz, write=True, **cell("01", 3)),
        dict(open=npz, write=True, **cell("01", 18, True)),  # the solution cell extends the experiment
        dict(open=npz, write=False, **cell("02", 6)),
        dict(open=npz, write=False, **cell("07", 6)),
    ]
    epa = [
        dict(epa=key, values={"447": 0.917}, **cell("02", 6)),
        dict(epa=key, values={"447": 0.933}, **cell("07", 6)),
        dict(epa=key, values={"447": 0.25}, **cell("01", 3)),  # the recording notebook is left out
    ]
    assert files_changed_under_readers(files) == [
        "01 cell 18 (an exercise) writes trajectories/cifar10-m-abc.npz, read by ['02', '07']"
    ]
    assert files_changed_under_readers(files[:1] + files[2:]) == []
    assert epa_disagreements(files, epa) == [f"{key} #447: EPA 0.917 in 02 cell 6, EPA 0.933 in 07 cell 6"]
    assert epa_disagreements(files, epa[:1] + epa[2:]) == []
    late_writer = files[:1] + files[2:] + [dict(open=npz, write=True, **cell("05", 9))]
    assert files_changed_under_readers(late_writer) == [
        "trajectories/cifar10-m-abc.npz is written by ['01', '05'] and read by ['02', '07']"
    ]

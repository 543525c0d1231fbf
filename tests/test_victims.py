"""Victims' results log: torn and damaged lines never lose a valid row, one writer per study."""

import json

import pytest

from poisondiff_lite import ResultsFileError
from poisondiff_lite.victims import ResultsLog


def test_log_drops_a_torn_line_and_refuses_another_study(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path, {"study": "abc"})
    log.append({"key": "0-1-5", "attack": "gm", "victim": 0, "success": True})
    with open(path, "ab") as handle:  # a crash in the middle of the next append
        handle.write(b'{"key": "0-1-5", "attack": "gm", "vic')
    again = ResultsLog(path, {"study": "abc"})
    assert again.done() == {("0-1-5", "gm", 0)}
    again.append({"key": "0-1-5", "attack": "gm", "victim": 1, "success": False})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    with pytest.raises(ResultsFileError, match="belongs to another study"):
        ResultsLog(path, {"study": "xyz"})


def test_a_damaged_middle_line_is_skipped_and_reported_never_deleted(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path, {"study": "abc"})
    for victim in range(4):
        log.append({"key": "0-1-5", "attack": "gm", "victim": victim, "success": victim % 2 == 0})
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:20] + b"\xff garbage"  # line 3 (victim 1) damaged on disk, the lines after it intact
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.warns(UserWarning, match=r"skipped 1 damaged line\(s\) \(3\)"):
        reader = ResultsLog.read(path)
    assert [r["victim"] for r in reader.rows] == [0, 2, 3] and reader.damaged == [3]
    assert path.read_bytes() == before, "a reader must never change the file"
    with pytest.warns(UserWarning, match="damaged"):
        writer = ResultsLog(path, {"study": "abc"})
    assert writer.done() == {("0-1-5", "gm", v) for v in (0, 2, 3)}  # victim 1 is rerun, the others are kept
    writer.append({"key": "0-1-5", "attack": "gm", "victim": 1, "success": False})
    with pytest.warns(UserWarning):
        assert sorted(r["victim"] for r in ResultsLog.read(path).rows) == [0, 1, 2, 3]


def test_only_the_writer_cuts_a_torn_tail(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultsLog(path, {"study": "abc"}).append({"key": "k", "attack": "gm", "victim": 0, "success": True})
    with open(path, "ab") as handle:
        handle.write(b'{"key": "k", "attack": "gm", "vic')
    before = path.read_bytes()
    reader = ResultsLog.read(path)
    assert len(reader.rows) == 1 and path.read_bytes() == before
    with pytest.raises(ResultsFileError, match="read-only"):
        reader.append({"key": "k", "attack": "gm", "victim": 1, "success": True})
    ResultsLog(path, {"study": "abc"})
    assert path.read_bytes() == before[: before.rindex(b"\n") + 1]

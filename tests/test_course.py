"""Coursework with nbgrader: the notebooks' nbgrader metadata, `poisondiff course release` (nbgrader's own
generate_assignment) and `poisondiff course grade` (nbgrader's autograde) on fake students."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import nbformat
import pytest

from poisondiff_lite import ExerciseNotSolved, PoisonDiffError, cli, course, exercises

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECK = re.compile(r'pdl\.exercises\.check\("(\d\d\.\d+)"')


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


# -----------------------------------------------------------------------------------------------------------------
#  the repository's notebooks: the student form, with nbgrader metadata
# -----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_exercise_has_an_answer_cell_a_locked_test_cell_and_a_hidden_solution(path):
    cells = nbformat.read(path, as_version=4).cells
    keys = sorted({k for c in cells if c.cell_type == "code" for k in CHECK.findall(c.source)})
    ids = [_meta(c)["grade_id"] for c in cells if _meta(c)]
    assert len(ids) == len(set(ids)) == 2 * len(keys), "one answer and one test cell per exercise, ids unique"
    for key in keys:
        number, k = key.split(".")
        at = next(i for i, c in enumerate(cells) if _meta(c).get("grade_id") == f"ex{number}-{k}-answer")
        answer, test, solution = cells[at : at + 3]
        assert _meta(answer)["solution"] and not _meta(answer)["grade"]
        assert re.match(rf"answer_{k}\b.* = None", answer.source), "the answer cell is the student form"
        assert "BEGIN SOLUTION" not in answer.source and not CHECK.search(answer.source)
        assert _meta(test) == {
            "grade": True,
            "grade_id": f"ex{number}-{k}",
            "locked": True,
            "points": _meta(test)["points"],
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
        assert _meta(test)["points"] > 0 and CHECK.findall(test.source) == [key]
        assert not test.source.lstrip().startswith("assert"), "a learner's Run All goes on past an open exercise"
        assert "solution" in solution.metadata.get("tags", []) and CHECK.findall(solution.source) == [key]


def test_check_raises_only_while_nbgrader_grades(monkeypatch, capsys):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert exercises.check("05.1", None) is False and exercises.check("05.1", 0.5) is False  # a learner's run goes on
    for mode in ("autograde", "validate"):
        monkeypatch.setenv("NBGRADER_EXECUTION", mode)
        with pytest.raises(ExerciseNotSolved, match="05.1"):
            exercises.check("05.1", 0.5)
        with pytest.raises(ExerciseNotSolved, match="no answer yet"):
            exercises.check("05.1", None)
        assert exercises.check("05.1", exercises.solution("05.1")) is True
    assert isinstance(ExerciseNotSolved("x"), AssertionError)  # nbgrader scores a failing test cell 0


def _notebook(*cells) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source: str, **metadata) -> dict:
    return {"cell_type": "code", "id": f"c{abs(hash(source)) % 10**8}", "metadata": metadata, "outputs": [],
            "execution_count": None, "source": source}  # fmt: skip


ANSWER = {"nbgrader": {"grade": False, "grade_id": "ex00-1-answer", "locked": False, "solution": True}}
HIDDEN = {"tags": ["solution"], "jupyter": {"source_hidden": True}}


def test_instructor_notebook_moves_each_hidden_solution_into_its_answer_cell():
    nb = _notebook(
        _code("answer_1 = None  # exercise 1", **ANSWER),
        _code('pdl.exercises.check("00.1", answer_1);'),
        _code(
            '# Solution (hidden)\nwith pdl.exercises.folded("exercise 1"):\n    answer_1 = 3\n'
            '    assert pdl.exercises.check("00.1", answer_1)',
            **HIDDEN,
        ),
    )
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "exercise 00.1: no answer"}]
    source = course.instructor_notebook(copy.deepcopy(nb))
    assert [c["source"] for c in source["cells"]] == [
        "answer_1 = None  # exercise 1\n### BEGIN SOLUTION\nanswer_1 = 3\n"
        'assert pdl.exercises.check("00.1", answer_1)\n### END SOLUTION',
        'pdl.exercises.check("00.1", answer_1);',
    ]
    assert source["cells"][1]["outputs"] == [] and nb["cells"][0]["source"] == "answer_1 = None  # exercise 1"
    with pytest.raises(PoisonDiffError, match="no answer cell"):
        course.instructor_notebook(_notebook(nb["cells"][2]))
    with pytest.raises(PoisonDiffError, match="without a hidden solution: ex00-1-answer"):
        course.instructor_notebook(_notebook(nb["cells"][0]))


# -----------------------------------------------------------------------------------------------------------------
#  release and grade with real nbgrader
# -----------------------------------------------------------------------------------------------------------------
NB00 = "00_setup_and_data"


def _submit(course_dir: Path, student: str, answers: dict[str, str] | None = None, tests: dict | None = None):
    """A student's notebook: the release with every answer cell solved as the instructor's source does, except
    `answers` (grade_id -> new source); `tests` changes locked cells."""
    release = json.loads((course_dir / "release" / NB00 / f"{NB00}.ipynb").read_text())
    source = nbformat.read(course_dir / "source" / NB00 / f"{NB00}.ipynb", as_version=4)
    solved = {_meta(c)["grade_id"]: c.source for c in source.cells if _meta(c).get("solution")}
    for cell in release["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in solved:
            cell["source"] = re.sub(r"### (BEGIN|END) SOLUTION\n?", "", solved[grade_id])
        cell["source"] = (answers or {}).get(grade_id, (tests or {}).get(grade_id, cell["source"]))
    folder = course_dir / "submitted" / student / NB00
    folder.mkdir(parents=True)
    (folder / f"{NB00}.ipynb").write_text(json.dumps(release))


@pytest.mark.slow
def test_release_and_grade_three_students_with_nbgrader(tmp_path, capsys, data_root):
    pytest.importorskip("nbgrader")
    course_dir = tmp_path / "course"
    assert cli.main(["course", "release", str(course_dir), "--only", "00"]) == 0
    assert "released 1 assignment(s)" in capsys.readouterr().out

    released = nbformat.read(course_dir / "release" / NB00 / f"{NB00}.ipynb", as_version=4)
    text = json.dumps(released)
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    assert "answer_1 = cifar.classes[" not in text and 'answer_3 = "cifar-10"' not in text  # no solution code
    assert not any(c.get("outputs") for c in released.cells), "no outputs"
    assert not any("solution" in c.metadata.get("tags", []) for c in released.cells), "no hidden solution cell"
    repository = nbformat.read(ROOT / "notebooks" / f"{NB00}.ipynb", as_version=4)
    student_form = [c.source + "\n# YOUR CODE HERE" for c in repository.cells if _meta(c).get("solution")]
    assert [c.source for c in released.cells if _meta(c).get("solution")] == student_form
    assert all(c.metadata["editable"] is False for c in released.cells if _meta(c).get("grade"))  # read-only tests
    source = (course_dir / "source" / NB00 / f"{NB00}.ipynb").read_text()
    assert source.count("### BEGIN SOLUTION") == 4 and (course_dir / "README.md").exists()

    _submit(course_dir, "alice")  # all right
    _submit(course_dir, "bob", {"ex00-1-answer": 'answer_1 = "giraffe"', "ex00-3-answer": 'answer_3 = "mnist"'})
    _submit(course_dir, "carol", {"ex00-2-answer": "answer_2 = 1 / 0"})  # raises: 0 for exercise 2 only
    _submit(course_dir, "dave", {"ex00-4-answer": "answer_4 = (1, 2)"}, tests={"ex00-4": "True"})  # tampered
    (course_dir / "submitted" / "erin").mkdir()  # handed in nothing
    out = tmp_path / "grades.csv"
    assert cli.main(["course", "grade", str(course_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "erin: 00_setup_and_data.ipynb missing" in printed
    assert "dave: 00_setup_and_data: test cell ex00-4 was changed" in printed

    rows = list(csv.DictReader(out.open()))
    got = {(r["student"], r["exercise"]): (float(r["points"]), float(r["max_points"]), r["status"]) for r in rows}
    expected_points = {
        "alice": (1, 1, 1, 1),
        "bob": (0, 1, 0, 1),
        "carol": (1, 0, 1, 1),
        "dave": (1, 1, 1, 0),
        "erin": (0, 0, 0, 0),
    }
    assert len(rows) == 20
    for student, points in expected_points.items():
        for k, p in enumerate(points, start=1):
            status = {"erin": "missing", "dave": "test cell changed" if k == 4 else "graded"}.get(student, "graded")
            assert got[(student, f"00.{k}")] == (p, 1.0, status), (student, k)

"""Coursework with nbgrader: release the notebooks to a class and autograde what comes back.

The repository's notebooks are the student form: each exercise has an answer cell (an nbgrader solution cell holding
``answer_N = None``), a locked test cell worth points that calls `pdl.exercises.check` (which raises while nbgrader
grades, so a wrong answer scores 0), and a hidden solution cell. `release` writes an nbgrader course folder:
``source/<assignment>/`` holds the instructor's version, each hidden solution moved into its answer cell between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; nbgrader's own ``generate_assignment`` makes ``release/`` from it
(no solution code, no outputs). `grade` runs nbgrader's ``autograde`` on ``submitted/<student>/<assignment>/`` and
writes one row per student and exercise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .errors import PoisonDiffError
from .notebook_files import by_prefix, numbered_notebooks
from .utils import atomic_write_csv, check_writable

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_TAG = "solution"  # the tag of a hidden solution cell in the repository's notebooks
CHECK_CALL = re.compile(r'assert pdl\.exercises\.check\("(\d\d)\.(\d+)"')
TEST_ID = re.compile(r"^ex(\d\d)-(\d+)$")  # a test cell's grade_id, e.g. "ex05-3" for exercise 05.3
GRADE_COLUMNS = ["student", "assignment", "exercise", "points", "max_points", "status"]
INSTALL_FIX = 'Fix: pip install -e ".[course]" (nbgrader)'

CONFIG = """\
# nbgrader's settings for this course folder (written by `poisondiff course release`); nbgrader reads this file
# when it runs from here.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "poisondiff-lite"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE"}  # the answer cell keeps answer_N = None above it
c.Execute.timeout = 3600  # seconds per cell: the notebooks train models (quick mode: minutes on a laptop)
"""

README = """\
# poisondiff-lite coursework (nbgrader)

Made by `poisondiff course release`. nbgrader reads `nbgrader_config.py` here, so run its commands from this folder.

- `source/<assignment>/`: the instructor's notebooks; each answer cell holds the solution between
  `### BEGIN SOLUTION` and `### END SOLUTION`, each test cell (`pdl.exercises.check(...)`) its points.
- `release/<assignment>/`: what students get (made by `nbgrader generate_assignment`): answer cells say
  `answer_N = None` and `# YOUR CODE HERE`, test cells are read-only, no outputs.
- Collect each student's notebook into `submitted/<student>/<assignment>/` (same file name), then grade:
  `poisondiff course grade . --out grades.csv` (nbgrader's `autograde`; one row per student and exercise).
  `nbgrader autograde <assignment>` and `nbgrader export` work here too.
- Grading runs the whole notebook, models included: set `POISONDIFF_QUICK=1` and `POISONDIFF_DATA` as for the
  tutorial, and grade notebooks 01-07 on a machine that can run them (minutes each).

Assignments: {assignments}
"""


@dataclass(frozen=True)
class Assignment:
    """One notebook as an nbgrader assignment: its name (the notebook's stem) and its file name."""

    name: str
    notebook: str


def _require_nbgrader() -> None:
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        raise PoisonDiffError(f"nbgrader is not installed. {INSTALL_FIX}") from None


def _nbgrader(course_dir: Path, *args: str) -> str:
    """Run an nbgrader command in `course_dir` (where its nbgrader_config.py is); its log, or a one-line error.
    `release` and `grade` check first that nbgrader is installed."""
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course_dir, capture_output=True, text=True, env=_quiet_env()
    )
    log = done.stdout + done.stderr
    if done.returncode != 0:
        causes = [line.strip() for line in log.splitlines() if re.match(r"\s*\w+(Error|Exception): ", line)]
        errors = [line.strip() for line in log.splitlines() if "| ERROR]" in line]
        reason = (causes or errors or log.strip().splitlines()[-1:] or ["no output"])[-1]
        raise PoisonDiffError(f"nbgrader {' '.join(args)} failed in {course_dir}: {reason}")
    return log


def _quiet_env() -> dict[str, str]:
    """The environment nbgrader runs in: this Python's scripts first on PATH (nbgrader calls `alembic` by name when
    it creates a gradebook), no progress bars, figures without a display."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("MPLBACKEND", "agg")
    return env


def _nbgrader_meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_hidden_solution(cell: dict) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _solution_code(source: str) -> str:
    """A hidden solution cell's code without its header comment and without the ``with pdl.exercises.folded(...)``
    that folds its printed output away in a learner's notebook (the instructor sees it plainly)."""
    lines = source.strip("\n").split("\n")
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
    if lines and lines[0].startswith("with pdl.exercises.folded("):
        return textwrap.dedent("\n".join(lines[1:]))
    return "\n".join(lines)


def _solution_key(source: str) -> str:
    keys = {f"{a}.{b}" for a, b in CHECK_CALL.findall(source)}
    if len(keys) != 1:
        raise PoisonDiffError(f"a hidden solution cell must check exactly one exercise, found {sorted(keys)}")
    return keys.pop()


def instructor_notebook(notebook: dict) -> dict:
    """nbgrader's source form of a repository notebook: each hidden solution cell (tag ``solution``) moved into the
    answer cell of its exercise (grade_id ``exNN-K-answer``) as its solution region, outputs cleared."""
    cells = [dict(cell) for cell in notebook["cells"]]
    answers = {c["metadata"]["nbgrader"]["grade_id"]: c for c in cells if _nbgrader_meta(c).get("solution")}
    solved = set()
    for cell in cells:
        if _is_hidden_solution(cell):
            source = "".join(cell["source"])
            key = _solution_key(source)
            grade_id = "ex{}-{}-answer".format(*key.split("."))
            if grade_id not in answers:
                raise PoisonDiffError(f"exercise {key} has a hidden solution but no answer cell ({grade_id})")
            body = _solution_code(source)
            answer = answers[grade_id]
            answer["source"] = f"{''.join(answer['source']).rstrip()}\n{BEGIN_SOLUTION}\n{body.strip()}\n{END_SOLUTION}"
            solved.add(grade_id)
    unsolved = sorted(set(answers) - solved)
    if unsolved:
        raise PoisonDiffError(f"answer cells without a hidden solution: {', '.join(unsolved)}")
    cells = [c for c in cells if not _is_hidden_solution(c)]
    for cell in cells:
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
    return {**notebook, "cells": cells}


def _write_json(path: Path, notebook: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def release(
    course_dir: str | Path, only: list[str] | None = None, notebooks: str | Path | None = None
) -> list[Assignment]:
    """Write an nbgrader course folder under `course_dir`: ``source/`` (instructor notebooks), ``release/`` (made by
    ``nbgrader generate_assignment``), ``nbgrader_config.py`` and a README. One assignment per notebook (`only`:
    those whose name starts with these prefixes). Returns the assignments."""
    _require_nbgrader()
    course = check_writable(course_dir, what="the course folder", fix="choose another folder")
    paths = numbered_notebooks(notebooks, only)
    (course / "nbgrader_config.py").write_text(CONFIG)
    assignments = []
    for path in paths:
        notebook = json.loads(path.read_text())
        assignment = Assignment(path.stem, path.name)
        _write_json(course / "source" / assignment.name / assignment.notebook, instructor_notebook(notebook))
        _nbgrader(course, "generate_assignment", assignment.name, "--force")
        assignments.append(assignment)
    names = ", ".join(a.name for a in assignments)
    (course / "README.md").write_text(README.format(assignments=names))
    return assignments


def _released(course: Path, only: list[str] | None) -> list[Assignment]:
    found = sorted(p for p in (course / "source").glob("*/*.ipynb") if p.parent.name == p.stem)
    if not found:
        raise PoisonDiffError(f"no assignments in {course / 'source'}. Fix: poisondiff course release {course} first")
    release_first = f", or release it first (poisondiff course release {course} --only ...)"
    chosen = by_prefix(found, only, f"not released in {course}", release_first)
    return [Assignment(p.stem, p.name) for p in chosen]


def _gradebook(course: Path):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}")


@dataclass(frozen=True)
class Released:
    """What nbgrader recorded of an assignment's notebook: its test cells (grade_id -> exercise key and points) and
    the checksum of every locked cell."""

    tests: dict[str, tuple[str, float]]
    locked: dict[str, str]


def _released_cells(course: Path, assignment: Assignment) -> Released:
    with _gradebook(course) as gradebook:
        notebook = gradebook.find_notebook(assignment.name, assignment.name)
        locked = {c.name: c.checksum for c in notebook.source_cells if c.locked}
        tests = {
            g.name: ("{}.{}".format(*TEST_ID.match(g.name).groups()), float(g.max_score))
            for g in notebook.grade_cells
            if TEST_ID.match(g.name) and g.name in locked
        }
    return Released(tests, locked)


def _changed_tests(released: Released, path: Path) -> dict[str, str]:
    """The locked cells of a submitted notebook that differ from the released ones by nbgrader's checksum
    (``"changed"``) or are missing (``"deleted"``), by grade_id."""
    import nbformat
    from nbgrader.utils import compute_checksum

    seen, changed = set(), {}
    for cell in nbformat.read(path, as_version=4).cells:
        grade_id = _nbgrader_meta(cell).get("grade_id")
        if grade_id in released.locked:
            seen.add(grade_id)
            if compute_checksum(cell) != released.locked[grade_id]:
                changed[grade_id] = "changed"
    return {**changed, **{g: "deleted" for g in released.locked if g not in seen}}


def grade(course_dir: str | Path, out: str | Path, only: list[str] | None = None) -> list[dict]:
    """Autograde every student's submission under ``submitted/`` with ``nbgrader autograde`` and write one row per
    student and exercise to `out` (points, max_points, status). A missing notebook gives its student ``missing``
    rows; a changed or deleted test cell is reported in ``status`` (nbgrader grades with the released test)."""
    _require_nbgrader()
    course = Path(course_dir)
    assignments = _released(course, only)
    students = sorted(p.name for p in (course / "submitted").glob("*") if p.is_dir())
    if not students:
        raise PoisonDiffError(
            f"no submissions in {course / 'submitted'}. Fix: put each student's notebook in "
            f"submitted/<student>/<assignment>/<notebook>.ipynb"
        )
    rows = []
    for assignment in assignments:
        released = _released_cells(course, assignment)
        tests = released.tests
        for student in students:
            path = course / "submitted" / student / assignment.name / assignment.notebook
            if not path.exists():
                print(f"{student}: {assignment.notebook} missing (looked for {path.relative_to(course)})")
                rows += [_row(student, assignment, key, 0.0, points, "missing") for key, points in tests.values()]
                continue
            try:
                changed = _changed_tests(released, path)
            except (ValueError, KeyError, AttributeError) as exc:
                print(f"{student}: {assignment.notebook} is not a readable notebook ({exc})")
                rows += [_row(student, assignment, key, 0.0, points, "unreadable") for key, points in tests.values()]
                continue
            for grade_id, how in changed.items():
                print(f"{student}: {assignment.name}: test cell {grade_id} was {how}; graded with the released one")
            _nbgrader(course, "autograde", assignment.name, "--student", student, "--force")
            with _gradebook(course) as gradebook:
                graded = gradebook.find_submission_notebook(assignment.name, assignment.name, student)
                scores = {g.name: g.score for g in graded.grades}
                for grade_id, (key, points) in tests.items():
                    status = "test cell changed" if grade_id in changed else "graded"
                    rows.append(_row(student, assignment, key, float(scores.get(grade_id) or 0.0), points, status))
    atomic_write_csv(out, rows, GRADE_COLUMNS)
    return rows


def _row(student: str, assignment: Assignment, key: str, points: float, max_points: float, status: str) -> dict:
    return {
        "student": student,
        "assignment": assignment.name,
        "exercise": key,
        "points": points,
        "max_points": max_points,
        "status": status,
    }

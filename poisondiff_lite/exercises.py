"""Exercises that check themselves.

``check("05.1", answer)`` prints whether an answer is right and, if not, a hint toward it (no hint before a first
try); it returns True or False and never raises on a wrong answer, so a notebook with unanswered exercises still runs
headlessly, except while nbgrader grades the notebook: then it raises `ExerciseNotSolved` and the test cell scores 0
(`course` releases and grades the notebooks). ``solution(...)`` computes the expected answer (the notebooks' hidden
solution cells check theirs against it, and the tests run them). The solvers live in `exercises_clean` (notebooks
00-04) and `exercises_attacks` (05-07).

Every expected answer is *computed* from the same data the learner has (passed as keyword arguments, e.g.
``result=transfer_result``), never stored, so the checks stay right when parameters change.
"""

from __future__ import annotations

from .exercise_registry import (
    EXERCISES,
    Exercise,
    check,
    each_within,
    exactly,
    exercise,
    folded,
    numbers_equal,
    one_of,
    solution,
    within,
)

# the solvers, notebook by notebook: importing them registers them
from . import exercises_attacks, exercises_clean  # noqa: E402, F401

__all__ = [
    "EXERCISES",
    "Exercise",
    "check",
    "each_within",
    "exactly",
    "exercise",
    "folded",
    "numbers_equal",
    "one_of",
    "solution",
    "within",
]

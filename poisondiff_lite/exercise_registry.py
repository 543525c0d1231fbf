"""The exercise registry behind `pdl.exercises`: the `exercise` decorator the solver modules register with, the
comparisons an answer is judged by (`within`, `exactly`, `one_of`, ...), and `check` / `solution`.

It imports no solver: `exercises_clean` and `exercises_attacks` import it and register theirs, and `exercises` (the
public face) imports all three, so the layers read from the top down.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


from .errors import ExerciseNotSolved, InvalidChoiceError


@dataclass(frozen=True)
class Exercise:
    """One checkable exercise."""

    key: str  # "<notebook>.<number>", e.g. "05.1"
    question: str  # one line, as in the notebook
    hint: str  # shown after a wrong answer
    solve: Callable[..., Any]  # computes the expected answer from the context keyword arguments
    compare: Callable[[Any, Any], bool]  # is `answer` acceptable given `expected`


EXERCISES: dict[str, Exercise] = {}


def within(tolerance: float) -> Callable[[Any, Any], bool]:
    def compare(answer: Any, expected: Any) -> bool:
        try:
            answer, expected = float(answer), float(expected)
        except (TypeError, ValueError):
            return False
        if math.isnan(expected):  # undefined (e.g. an AUROC without a success): the answer must say so
            return math.isnan(answer)
        return math.isclose(answer, expected, rel_tol=tolerance, abs_tol=tolerance)

    return compare


def one_of(answer: Any, expected: Any) -> bool:
    """`expected` is a set of acceptable answers (ties); compare as lower-case strings."""
    return str(answer).strip().lower() in {str(e).strip().lower() for e in expected}


def exactly(answer: Any, expected: Any) -> bool:
    """Exactly equal: as numbers when both are (so 50.9 is not 50, but "50" is), else as lower-case strings."""
    try:
        return float(answer) == float(expected)
    except (TypeError, ValueError):
        return str(answer).strip().lower() == str(expected).strip().lower()


def exercise(key: str, question: str, hint: str, compare: Callable[[Any, Any], bool] = exactly):
    """Register the decorated function as the solver of exercise `key`."""

    def register(solve: Callable[..., Any]) -> Callable[..., Any]:
        EXERCISES[key] = Exercise(key, question, hint, solve, compare)
        return solve

    return register


def _get(key: str) -> Exercise:
    if key not in EXERCISES:
        raise InvalidChoiceError(f"unknown exercise {key!r}; valid choices: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[key]


def solution(key: str, **context: Any) -> Any:
    """The expected answer of exercise `key`, computed from `context`."""
    item = _get(key)
    wanted = [p.name for p in inspect.signature(item.solve).parameters.values() if p.default is inspect.Parameter.empty]
    missing = [name for name in wanted if name not in context]
    if missing:
        given = ", ".join(f"{name}=..." for name in wanted)
        raise InvalidChoiceError(
            f"exercise {key} is checked against your data: pass {', '.join(missing)} too, e.g. "
            f"pdl.exercises.check({key!r}, answer, {given})"
        )
    return item.solve(**context)


GRADED_RUNS = ("autograde", "validate")  # what nbgrader sets NBGRADER_EXECUTION to while it runs a notebook


def graded() -> bool:
    """Whether nbgrader is running this kernel to grade or validate a submission."""
    return os.environ.get("NBGRADER_EXECUTION") in GRADED_RUNS


def check(key: str, answer: Any, *, quiet: bool = False, **context: Any) -> bool:
    """Check `answer` to exercise `key`; print a verdict (and a hint when wrong). Returns whether it is right.

    It never raises on a wrong answer, so a notebook with open exercises runs top to bottom, except while nbgrader
    grades it (``nbgrader autograde`` or ``validate``): then a missing or wrong answer raises `ExerciseNotSolved`,
    which is how a test cell scores 0.
    """
    item = _get(key)
    if answer is None:
        ok, verdict = False, f"exercise {key}: no answer yet. {item.question}"  # the hint only after a try
    else:
        ok = bool(item.compare(answer, solution(key, **context)))
        verdict = f"exercise {key}: correct!" if ok else f"exercise {key}: not quite ({answer!r}). Hint: {item.hint}"
    if not quiet:
        print(verdict)
    if not ok and graded():
        raise ExerciseNotSolved(verdict)
    return ok


def numbers_equal(answer: Any, expected: Any) -> bool:
    """Two (or more) numbers, each exactly equal: ``(1000, 500)`` or ``"1000, 500"``."""
    try:
        parts = answer.replace("(", "").replace(")", "").split(",") if isinstance(answer, str) else list(answer)
        return len(parts) == len(expected) and all(float(a) == float(e) for a, e in zip(parts, expected))
    except (TypeError, ValueError, AttributeError):
        return False


def each_within(tolerance: float) -> Callable[[Any, Any], bool]:
    """A sequence of numbers, each within `tolerance` of the expected one."""

    def compare(answer: Any, expected: Any) -> bool:
        try:
            values = [float(a) for a in answer]
        except (TypeError, ValueError):
            return False
        return len(values) == len(expected) and all(
            math.isclose(a, float(e), abs_tol=tolerance) for a, e in zip(values, expected)
        )

    return compare


@contextlib.contextmanager
def folded(title: str) -> Iterator[None]:
    """Print what the block prints folded away: in a notebook, an HTML ``<details>`` element closed until clicked
    (JupyterLab shows a collapsed cell's output again when the cell runs, so a solution's printed answer would
    otherwise sit in sight after Run All); elsewhere, as plain text under `title`."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue()
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython comes with the notebooks extra
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            folded_html = f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(text)}</pre></details>"
            display({"text/html": folded_html, "text/plain": f"{title} (folded)\n{text}"}, raw=True)
        else:
            print(f"{title}\n{text}", end="")

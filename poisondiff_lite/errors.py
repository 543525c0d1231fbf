"""Error types with messages that name the fix.

Every error the package raises on bad input derives from `PoisonDiffError`, so a notebook or the CLI can catch one
type and print a one-line message instead of a traceback.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence


class PoisonDiffError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class DatasetNotFoundError(PoisonDiffError, FileNotFoundError):
    """A dataset is not on disk and could not be downloaded."""


class DatasetCorruptError(PoisonDiffError):
    """A dataset file exists but its content is wrong (checksum, format)."""


class ResultsFileError(PoisonDiffError):
    """A results file (trajectories, metrics) is unreadable or belongs to another experiment."""


class InvalidChoiceError(PoisonDiffError, ValueError):
    """A parameter is not one of the valid choices."""


class DeviceUnavailableError(PoisonDiffError, RuntimeError):
    """A device (e.g. CUDA) was requested that this machine does not have."""


class ExerciseNotSolved(PoisonDiffError, AssertionError):
    """An exercise's answer is missing or wrong while nbgrader grades the notebook (its test cell then scores 0)."""


def check_choice(what: str, value: object, choices: Iterable[object]) -> None:
    """Raise `InvalidChoiceError` naming the valid choices when `value` is not one of them."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InvalidChoiceError(f"unknown {what} {value!r}; valid choices: {listed}")


def check_number(what: str, value: object, *, integer: bool = False) -> None:
    """Raise `InvalidChoiceError` unless `value` is a finite number (an integer when `integer`); bools and strings,
    such as a papermill ``-r SEED abc``, are refused rather than compared."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    is_real = is_int or (isinstance(value, numbers.Real) and not isinstance(value, bool))
    if integer and not is_int:
        raise InvalidChoiceError(f"{what} must be an integer, got {value!r}")
    if not is_real or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise InvalidChoiceError(f"{what} must be a finite number, got {value!r}")


def check_seed(what: str, value: object, *, span: int = 1) -> None:
    """An integer seed such that `value` .. `value` + `span` - 1 (one seed per run or victim) all fit the 64-bit
    signed range torch accepts; a larger one is a one-line error, not an overflow traceback."""
    check_number(what, value, integer=True)
    span = span if isinstance(span, int) and span > 0 else 1  # a bad count is refused by its own check
    if not -(2**63) <= value or value + span - 1 >= 2**63:  # type: ignore[operator]
        raise InvalidChoiceError(f"{what} must lie in [-2**63, 2**63 - {span}] (64-bit seeds), got {value!r}")


def check_positive(what: str, value: float, *, allow_zero: bool = False, integer: bool = False) -> None:
    """Raise `InvalidChoiceError` when a count, size or budget is not a finite number (an integer when `integer`), or
    is negative (or zero unless allowed)."""
    check_number(what, value, integer=integer)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidChoiceError(f"{what} must be {bound}, got {value!r}")


def check_classes(what: str, classes: Sequence[object], num_classes: int | None = None) -> tuple[int, ...]:
    """A non-empty list of distinct class indices (in ``[0, num_classes)`` when known), as a tuple of ints.

    ``(-1, 0)`` would silently mean the last class and ``(0, 0, 1)`` a class twice; both are errors here.
    """
    return check_indices(what, classes, num_classes, noun="class")


def check_indices(what: str, values: Sequence[object], size: int | None = None, *, noun: str) -> tuple[int, ...]:
    """A non-empty list of distinct integer indices (``noun``: what each one names) in ``[0, size)`` when `size` is
    known, as a tuple of ints: a negative index would silently count from the end, a repeated one count twice."""
    values = tuple(values)
    if not values:
        raise InvalidChoiceError(f"{what} must name at least one {noun}, got an empty list")
    for v in values:
        check_number(f"each of {what}", v, integer=True)
    ints = tuple(int(v) for v in values)  # type: ignore[call-overload]
    upper = f", {size})" if size is not None else ", ...)"
    bad = [v for v in ints if v < 0 or (size is not None and v >= size)]
    if bad:
        raise InvalidChoiceError(f"{what} must lie in [0{upper}, got {bad}")
    dupes = sorted({v for v in ints if ints.count(v) > 1})
    if dupes:
        raise InvalidChoiceError(f"{what} lists {noun}(s) {dupes} more than once; give each {noun} once")
    return ints

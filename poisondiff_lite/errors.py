"""Error types with messages that name the fix.

Every error the package raises on bad input derives from `PoisonDiffError`, so a notebook or the CLI can catch one
type and print a one-line message instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


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


def check_choice(what: str, value: object, choices: Iterable[object]) -> None:
    """Raise `InvalidChoiceError` naming the valid choices when `value` is not one of them."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InvalidChoiceError(f"unknown {what} {value!r}; valid choices: {listed}")


def check_positive(what: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise `InvalidChoiceError` when a count, size or budget is negative (or zero unless allowed)."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidChoiceError(f"{what} must be {bound}, got {value!r}")

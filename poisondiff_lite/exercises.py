"""Exercises that check themselves.

``check("05.1", answer)`` prints whether an answer is right and, if not, a hint toward it; it returns True or False
and never raises on a wrong answer, so a notebook with unanswered exercises still runs headlessly. ``solution(...)``
computes the expected answer (the notebooks' hidden solution cells use it, and CI runs them).

Every expected answer is *computed* from the same data the learner has (passed as keyword arguments, e.g.
``result=transfer_result``), never stored, so the checks stay right when parameters change.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidChoiceError


@dataclass(frozen=True)
class Exercise:
    """One checkable exercise."""

    key: str  # "<notebook>.<number>", e.g. "05.1"
    question: str  # one line, as in the notebook
    hint: str  # shown after a wrong answer
    solve: Callable[..., Any]  # computes the expected answer from the context keyword arguments
    compare: Callable[[Any, Any], bool]  # is `answer` acceptable given `expected`


EXERCISES: dict[str, Exercise] = {}


def _close(tolerance: float) -> Callable[[Any, Any], bool]:
    def compare(answer: Any, expected: Any) -> bool:
        try:
            return math.isclose(float(answer), float(expected), rel_tol=tolerance, abs_tol=tolerance)
        except (TypeError, ValueError):
            return False

    return compare


def _member(answer: Any, expected: Any) -> bool:
    """`expected` is a set of acceptable answers (ties); compare as lower-case strings."""
    return str(answer).strip().lower() in {str(e).strip().lower() for e in expected}


def _equal(answer: Any, expected: Any) -> bool:
    """Exactly equal: as numbers when both are (so 50.9 is not 50, but "50" is), else as lower-case strings."""
    try:
        return float(answer) == float(expected)
    except (TypeError, ValueError):
        return str(answer).strip().lower() == str(expected).strip().lower()


def exercise(key: str, question: str, hint: str, compare: Callable[[Any, Any], bool] = _equal):
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


def check(key: str, answer: Any, *, quiet: bool = False, **context: Any) -> bool:
    """Check `answer` to exercise `key`; print a verdict (and a hint when wrong). Returns whether it is right."""
    item = _get(key)
    if answer is None:
        ok, verdict = False, f"exercise {key}: no answer yet. {item.question} Hint: {item.hint}"
    else:
        ok = bool(item.compare(answer, solution(key, **context)))
        verdict = f"exercise {key}: correct!" if ok else f"exercise {key}: not quite ({answer!r}). Hint: {item.hint}"
    if not quiet:
        print(verdict)
    return ok


# -----------------------------------------------------------------------------------------------------------------
#  the exercises, notebook by notebook
# -----------------------------------------------------------------------------------------------------------------
@exercise(
    "00.1",
    "Which CIFAR-10 class has the fewest test images in the data you loaded?",
    "`np.bincount(cifar.test.labels)` counts images per class; the argmin indexes `cifar.classes`.",
    compare=_member,
)
def _fewest_test_images(*, data) -> set[str]:
    counts = np.bincount(np.asarray(data.test.labels.cpu()), minlength=len(data.classes))
    return {data.classes[i] for i in np.flatnonzero(counts == counts.min())}


@exercise(
    "01.2",
    "What is the mean test accuracy after the last epoch, over the runs?",
    "`traj.eval_accuracy()` is (runs, epochs); take the last column and its mean.",
    compare=_close(1e-3),
)
def _final_accuracy(*, traj) -> float:
    return float(traj.finished().eval_accuracy()[:, -1].mean())


@exercise(
    "02.2",
    "Which class has the lowest mean EPA?",
    "`pdl.per_class_mean(scores['epa'], scores['labels'], len(classes))`, then the argmin; answer with a name.",
    compare=_member,
)
def _hardest_class(*, scores, classes) -> set[str]:
    from .metrics import per_class_mean

    means = per_class_mean(scores["epa"], scores["labels"], len(classes))
    low = np.nanmin(means)
    return {classes[i] for i in np.flatnonzero(np.isclose(means, low))}


@exercise(
    "03.2",
    "Which poison class is closest on average (smallest median δ step over the targets)?",
    "`np.nanmedian(delta.step, axis=0)` gives one value per class (NaN for the targets' own class); take the "
    "class with the smallest.",
    compare=_member,
)
def _closest_class(*, delta, classes) -> set[str]:
    steps = np.asarray(delta.step, dtype=np.float64)
    tested = ~np.all(np.isnan(steps), axis=0)
    medians = np.full(steps.shape[1], np.inf)
    medians[tested] = np.nanmedian(steps[:, tested], axis=0)
    best = medians.min()
    return {classes[i] for i in np.flatnonzero(np.isclose(medians, best))} | {
        str(i) for i in np.flatnonzero(np.isclose(medians, best))
    }


@exercise(
    "04.2",
    "By what factor does every τ change for C = 10 when switching to the authors' variant?",
    "τ divides by W(κ): the factor is W((C-1)/e) / W(C - 1/e); `pdl.budget.lambert_denominator` gives both.",
    compare=_close(2e-3),
)
def _variant_factor() -> float:
    from .budget import lambert_denominator

    return lambert_denominator(10, "derived") / lambert_denominator(10, "authors")


@exercise(
    "05.1",
    "Upper end of the 95 % Wilson interval for 0 successes out of 2 victims?",
    "`pdl.asr_interval(0, 2)` returns (low, high); it is far above 0 with only 2 victims.",
    compare=_close(0.01),
)
def _wilson_upper() -> float:
    from .victims import asr_interval

    return asr_interval(0, 2)[1]


def _best_bucket(result, name: str) -> set[str]:
    rows = [r for r in result.by_bucket() if r["attack"].split("-")[0] == name]
    if not rows:
        raise InvalidChoiceError(f"the study has no {name.upper()} rows; pass the study that ran it")
    best = max(r["mean_asr"] for r in rows)
    return {r["bucket"] for r in rows if math.isclose(r["mean_asr"], best)}


@exercise(
    "05.2",
    "Which EPA bucket had the highest mean ASR for feature collision?",
    "`transfer_result.by_bucket()` lists mean_asr per (attack, bucket); look at the FC rows.",
    compare=_member,
)
def _fc_best_bucket(*, result) -> set[str]:
    return _best_bucket(result, "fc")


@exercise(
    "06.1",
    "How many goldfish validation images are there in TinyImageNet?",
    "TinyImageNet has 50 validation images per class; count `labels == 0` in the validation split.",
)
def _goldfish(*, labels) -> int:
    return int((np.asarray(labels) == 0).sum())


@exercise(
    "06.2",
    "Which EPA bucket had the highest mean ASR for gradient matching on TinyImageNet?",
    "`tiny_result.by_bucket()`: compare the GM rows' mean_asr.",
    compare=_member,
)
def _gm_best_bucket(*, result) -> set[str]:
    return _best_bucket(result, "gm")


@exercise(
    "07.1",
    "Over all saved studies, how many victims were evaluated in total?",
    "each row of a study's log is one victim on one target: `sum(len(s.rows) for s in studies)`.",
)
def _victims_total(*, studies) -> int:
    return int(sum(len(s.rows) for s in studies))

"""Solvers of the exercises of notebooks 05-07 (attacks, TinyImageNet, the summary); `exercises.check` runs them.

Each computes the expected answer from what the learner passes (the notebook's own objects), never from a stored value.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InvalidChoiceError
from .exercise_registry import exactly, exercise, one_of, within


def _best_bucket(result, name: str) -> set[str]:
    rows = _rows_of(result.by_bucket(), name)
    best = max(r["mean_asr"] for r in rows)
    return {r["bucket"] for r in rows if math.isclose(r["mean_asr"], best)}


def _rows_of(rows: list[dict], name: str) -> list[dict]:
    """The rows (of `per_target` or `by_bucket`) of attack `name` ("gm", "fc", ...); none is an error naming the fix."""
    mine = [r for r in rows if r["attack"].split("-")[0] == name]
    if not mine:
        raise InvalidChoiceError(f"the study has no {name.upper()} rows; pass the study that ran it")
    return mine


# ----------------------------------------------------------------------------------------------------------------- 05
@exercise(
    "05.1",
    "Upper end of the 95 % Wilson interval for 0 successes out of 2 victims?",
    "`pdl.asr_interval(0, 2)` returns (low, high).",
    compare=within(0.01),
)
def _wilson_upper() -> float:
    from .victims import asr_interval

    return asr_interval(0, 2)[1]


@exercise(
    "05.2",
    "Which EPA bucket had the highest mean ASR for feature collision?",
    "`transfer_result.by_bucket()` lists mean_asr per (attack, bucket); look at the FC rows.",
    compare=one_of,
)
def _fc_best_bucket(*, result) -> set[str]:
    return _best_bucket(result, "fc")


@exercise(
    "05.3",
    "Mean FC ASR at ε = 8/255 minus the same at the ε of section 5, over the targets of the ε 8/255 study?",
    "Run the transfer study again on the lowest and highest buckets with FC at `eps=8 / 255`; average `asr` over the "
    "FC rows of `per_target()` of each study, on the targets of the new one, and subtract.",
    compare=within(1e-6),
)
def _eps_effect(*, tight, loose) -> float:
    tight_rows = _rows_of(tight.per_target(), "fc")
    same = {r["index"] for r in tight_rows}
    return float(
        np.mean([r["asr"] for r in tight_rows])
        - np.mean([r["asr"] for r in _rows_of(loose.per_target(), "fc") if r["index"] in same])
    )


@exercise(
    "05.4",
    "For how many lowest-bucket targets is δ toward ship smaller than toward automobile?",
    "`experiment.target_rows(lowest, [automobile, ship], tau=None)` gives both steps per target.",
)
def _ship_closer(*, experiment, targets) -> int:
    ship, car = experiment.data.class_index("ship"), experiment.data.class_index("automobile")
    rows = experiment.target_rows(targets, [car, ship], tau=None)
    step = {(r["index"], r["poison_class"]): r["delta_step"] for r in rows}
    return int(sum(step[(t["index"], ship)] < step[(t["index"], car)] for t in targets))


@exercise(
    "05.5",
    "AUROC of soft EPA for FC by counting (hijacked, never hijacked) pairs (hijacked: ASR > 0; ties count 1/2)?",
    "Over every pair of one FC target hijacked by at least one victim and one never hijacked, count 1 when the "
    "hijacked one has the lower soft EPA and 1/2 for equal soft EPA; divide by the number of pairs.",
    compare=within(1e-6),
)
def _auroc_by_pairs(*, result) -> float:
    rows = _rows_of(result.per_target(), "fc")
    wins = [r["soft_epa"] for r in rows if r["asr"] > 0]
    fails = [r["soft_epa"] for r in rows if r["asr"] == 0]
    if not wins or not fails:
        return math.nan
    score = sum(1.0 if w < f else 0.5 if w == f else 0.0 for w in wins for f in fails)
    return score / (len(wins) * len(fails))


# ----------------------------------------------------------------------------------------------------------------- 06
@exercise(
    "06.1",
    "How many goldfish validation images did no checkpoint of the clean runs classify correctly (EPA = 0)?",
    "`scores['epa'][fish]` holds the goldfish's EPA; count the exact zeros.",
)
def _never_right(*, scores, fish) -> int:
    return int((np.asarray(scores["epa"])[np.asarray(fish)] == 0).sum())


@exercise(
    "06.2",
    "In the lab study, how much did gradient matching gain in the p40 bucket over its no-attack baseline?",
    "`lab.by_bucket()`: the p40 GM row's mean_asr minus the p40 no-attack row's mean_asr.",
    compare=within(1e-3),
)
def _gm_gain_p40(*, result) -> float:
    rows = result.by_bucket()
    base = {r["bucket"]: r["mean_asr"] for r in rows if r["attack"].startswith("none")}
    gm = {r["bucket"]: r["mean_asr"] for r in _rows_of(rows, "gm")}
    if "p40" not in gm:
        raise InvalidChoiceError("the study has no p40 bucket; pass the lab study (lab)")
    return gm["p40"] - base.get("p40", 0.0)


@exercise(
    "06.3",
    "How much narrower is the 95 % interval of an ASR of 1/2 with 4 victims (2 of 4) than with 2 (1 of 2)?",
    "Width = high - low of `pdl.asr_interval(successes, victims)`; subtract the two widths.",
    compare=within(1e-3),
)
def _narrower() -> float:
    from .victims import asr_interval

    two, four = asr_interval(1, 2), asr_interval(2, 4)
    return (two[1] - two[0]) - (four[1] - four[0])


@exercise(
    "06.4",
    "Which class are the five lowest-EPA goldfish most often confused with (their most frequent dominant class)?",
    "Sort the goldfish by EPA (a stable sort), take the first five, `scores['dominant']` at them, and the "
    "most frequent value; answer with a class name.",
    compare=one_of,
)
def _confused_with(*, scores, fish, classes, per_bucket) -> set[str]:
    lowest = np.asarray(fish)[np.argsort(scores["epa"][fish], kind="stable")[:per_bucket]]
    counts = np.bincount(scores["dominant"][lowest], minlength=len(classes))
    return {classes[i] for i in np.flatnonzero(counts == counts.max())} | {
        str(i) for i in np.flatnonzero(counts == counts.max())
    }


@exercise(
    "06.5",
    "How many poisons is BUDGET = 0.05 (5 % of the training set) on the quick TinyImageNet training set?",
    "`AttackConfig.quick('gm', budget=0.05).count(len(tiny.train))`: ⌈budget · N⌉.",
    compare=exactly,
)
def _poison_count(*, train_size) -> int:
    return math.ceil(0.05 * int(train_size) - 1e-9)


# ----------------------------------------------------------------------------------------------------------------- 07
@exercise(
    "07.1",
    "Over all your saved studies (`studies`, not the shipped ones), how many poisoned victims were evaluated (the "
    "no-attack victims left out)?",
    "each row of a study's log is one victim on one target; the no-attack rows have an attack id starting 'none'.",
)
def _victims_total(*, studies) -> int:
    return int(sum(not r["attack"].startswith("none") for s in studies for r in s.rows))


@exercise(
    "07.2",
    "Among the airplanes with the lowest EPA, which class do the clean runs agree on most (the highest DPS)?",
    "`view.ranked(0)` sorts airplanes by EPA; among those with the lowest EPA take the one with the highest DPS "
    "and name its `scores['dominant']` class.",
    compare=one_of,
)
def _confidently_wrong(*, scores, labels, classes) -> set[str]:
    members = np.flatnonzero(np.asarray(labels) == 0)
    low = members[scores["epa"][members] == scores["epa"][members].min()]
    top = low[scores["dps"][low] == scores["dps"][low].max()]
    return {classes[int(scores["dominant"][k])] for k in top}


@exercise(
    "07.3",
    "In the lab studies, which metric has the strongest (largest |Pearson|) pooled correlation with ASR for FC: "
    "'epa', 'delta_step' or 'tau'?",
    "`artifacts.pooled_correlations(lab, metric=m)` for each metric; compare |pearson| on the FC row.",
    compare=one_of,
)
def _strongest_metric(*, studies) -> set[str]:
    from .artifacts import pooled_correlations

    strength = {}
    for metric in ("epa", "delta_step", "tau"):
        rows = [r for r in pooled_correlations(studies, metric=metric) if r["attack"].startswith("FC")]
        if not rows:
            raise InvalidChoiceError("no FC rows in these studies; pass the shipped lab studies (lab)")
        strength[metric] = abs(rows[0]["pearson"])
    best = max(strength.values())
    return {m for m, v in strength.items() if math.isclose(v, best)}


@exercise(
    "07.4",
    "Across the lab studies, what share of the no-attack victims predicted the poison class on their target?",
    "Rows whose `attack` starts with 'none' are no-attack victims; the share of them with `success`.",
    compare=within(1e-4),
)
def _baseline_rate(*, studies) -> float:
    rows = [r for s in studies for r in s.rows if r["attack"].startswith("none")]
    return float(np.mean([bool(r["success"]) for r in rows]))

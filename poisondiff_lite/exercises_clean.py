"""Solvers of the exercises of notebooks 00-04 (data, clean training, EPA, δ, τ); `exercises.check` runs them.

Each computes the expected answer from what the learner passes (the notebook's own objects), never from a stored value.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr

from .errors import InvalidChoiceError, PoisonDiffError
from .exercise_registry import exactly, exercise, numbers_equal, one_of, within


# ----------------------------------------------------------------------------------------------------------------- 00
@exercise(
    "00.1",
    "Which CIFAR-10 class has the fewest test images in the data you loaded?",
    "`np.bincount(cifar.test.labels)` counts images per class; the argmin indexes `cifar.classes`.",
    compare=one_of,
)
def _fewest_test_images(*, data) -> set[str]:
    counts = np.bincount(np.asarray(data.test.labels.cpu()), minlength=len(data.classes))
    return {data.classes[i] for i in np.flatnonzero(counts == counts.min())}


@exercise(
    "00.2",
    "Which augmentation can change an image's mean brightness: 'crop' or 'flip'?",
    "A flip only moves pixels; a crop with zero padding brings black pixels in. Compare `images.float().mean()` "
    "before and after each.",
    compare=one_of,
)
def _brightness_changer(*, images) -> set[str]:
    from .augment import augment_batch

    generator = torch.Generator().manual_seed(0)
    mean = images.float().mean(dim=(1, 2, 3))
    out = set()
    for name, kwargs in (("crop", {"crop_padding": 4, "flip": False}), ("flip", {"crop_padding": 0, "flip": True})):
        changed = [augment_batch(images, **kwargs, generator=generator).float().mean(dim=(1, 2, 3)) for _ in range(4)]
        if any(not torch.allclose(c, mean) for c in changed):
            out |= {name, f"random {name}"}
    return out


@exercise(
    "00.3",
    "Of pdl.load_dataset('cifar-10') and pdl.load_dataset('mnist'), which name works?",
    "Try both: one loads, the other raises an error that lists the valid names.",
    compare=one_of,
)
def _working_name(*, data_dir) -> set[str]:
    from .datasets import load_dataset

    works = set()
    for name in ("cifar-10", "mnist"):
        try:
            load_dataset(name, data_dir, download=False)
            works.add(name)
        except PoisonDiffError:
            pass
    return works


@exercise(
    "00.4",
    "How many training and validation images remain after tiny.select_classes(range(10))? Answer (train, val).",
    "`kept = tiny.select_classes(range(10))`, then `len(kept.train)` and `len(kept.test)`.",
    compare=numbers_equal,
)
def _kept_images(*, data) -> tuple[int, int]:
    kept = data.select_classes(range(10))
    return len(kept.train), len(kept.test)


# ----------------------------------------------------------------------------------------------------------------- 01
@exercise(
    "01.1",
    "How many of the images in the correctness map are right and wrong within one same run at least once?",
    "An image counts when some run has both a correct and a wrong checkpoint: "
    "`(correct.any(axis=1) & ~correct.all(axis=1)).any(axis=0)` on the map's (runs, epochs, images) array.",
)
def _flipping_images(*, correct) -> int:
    correct = np.asarray(correct, dtype=bool)
    count = 0
    for image in range(correct.shape[2]):
        count += any(0 < correct[run, :, image].sum() < correct.shape[1] for run in range(correct.shape[0]))
    return count


@exercise(
    "01.2",
    "What is the mean test accuracy after the last epoch, over the runs?",
    "`traj.eval_accuracy()` is (runs, epochs); take the last column and its mean.",
    compare=within(1e-3),
)
def _final_accuracy(*, traj) -> float:
    return float(traj.finished().eval_accuracy()[:, -1].mean())


@exercise(
    "01.3",
    "Test accuracy without augmentation minus with it (same seed and recipe otherwise)?",
    "`pdl.accuracy(model, data.test)` for both models; a negative number means augmentation helped.",
    compare=within(1e-3),
)
def _augmentation_gain(*, plain, augmented, data) -> float:
    from .train import accuracy

    device = next(plain.parameters()).device
    return accuracy(plain, data.test, device=device) - accuracy(augmented, data.test, device=device)


@exercise(
    "01.4",
    "How many runs did section 3's call train?",
    "Only runs missing from the file are trained: compare `completed` of section 2's one-run trajectory and of "
    "section 3's.",
)
def _new_runs(*, before, after) -> int:
    return int(after.completed - before.completed)


# ----------------------------------------------------------------------------------------------------------------- 02
@exercise(
    "02.1",
    "With burn_in=2, which recorded image moves the most in EPA rank? Answer its test index.",
    "Rank both EPA arrays (`scipy.stats.rankdata`), take the largest absolute difference, and look up "
    "`traj.indices` at that position.",
    compare=one_of,
)
def _largest_rank_move(*, traj) -> set[str]:
    correct = traj.finished().correct()  # (runs, epochs, examples)
    full, late = correct.mean(axis=(0, 1)), correct[:, 2:].mean(axis=(0, 1))
    move = np.abs(rankdata(full) - rankdata(late))
    return {str(int(traj.indices[i])) for i in np.flatnonzero(move == move.max())}


@exercise(
    "02.2",
    "Which class has the lowest mean EPA?",
    "`pdl.per_class_mean(scores['epa'], scores['labels'], len(classes))`, then the argmin; answer with a name.",
    compare=one_of,
)
def _hardest_class(*, scores, classes) -> set[str]:
    from .metrics import per_class_mean

    means = per_class_mean(scores["epa"], scores["labels"], len(classes))
    low = np.nanmin(means)
    return {classes[i] for i in np.flatnonzero(np.isclose(means, low))}


@exercise(
    "02.3",
    "Whose 20th-percentile EPA (the start of the p20 bucket) is lower: 'cat' or 'airplane' (or 'tie')?",
    "`np.quantile(scores['epa'][scores['labels'] == c], 0.2)` for both classes.",
    compare=one_of,
)
def _lower_p20(*, scores, classes) -> set[str]:
    missing = [name for name in ("cat", "airplane") if name not in classes]
    if missing:
        raise InvalidChoiceError(f"exercise 02.3 is about CIFAR-10: these classes have no {missing[0]!r}")
    p20 = {
        name: float(np.quantile(scores["epa"][scores["labels"] == list(classes).index(name)], 0.2))
        for name in ("cat", "airplane")
    }
    if p20["cat"] == p20["airplane"]:
        return {"tie"}
    return {min(p20, key=p20.get)}


@exercise(
    "02.4",
    "What share of our airplanes have EPA >= 0.49 (the paper's 20th percentile, so 80 % of theirs)?",
    "`np.mean(scores['epa'][scores['labels'] == 0] >= 0.49)`.",
    compare=within(1e-3),
)
def _airplane_share_above(*, scores) -> float:
    return float(np.mean(np.asarray(scores["epa"])[np.asarray(scores["labels"]) == 0] >= 0.49))


@exercise(
    "02.5",
    "What share of the recorded TinyImageNet images have EPA = 0 (never classified right)?",
    "`np.mean(tiny_scores['epa'] == 0)`.",
    compare=within(1e-3),
)
def _never_right(*, scores) -> float:
    return float(np.count_nonzero(np.asarray(scores["epa"]) == 0) / len(scores["epa"]))


# ----------------------------------------------------------------------------------------------------------------- 03
@exercise(
    "03.1",
    "Over the toy points, Spearman between the step η* and the distance η*·‖g‖ toward the next class?",
    "`poisoning_distance(linear, points[i], (labels[i] + 1) % 3)` gives both per point; then `spearmanr`.",
    compare=within(5e-3),
)
def _toy_step_vs_distance(*, model, points, labels) -> float:
    from .distance import poisoning_distance

    results = [poisoning_distance(model, points[i], (int(labels[i]) + 1) % 3, device="cpu") for i in range(len(points))]
    steps = np.array([r.step for r in results])
    distances = np.array([r.distance for r in results])
    keep = np.isfinite(steps) & np.isfinite(distances)
    return float(spearmanr(steps[keep], distances[keep]).statistic)


@exercise(
    "03.2",
    "Which poison class is closest on average (smallest median δ step over the targets)?",
    "`np.nanmedian(delta.step, axis=0)` gives one value per class (NaN for the targets' own class); take the "
    "class with the smallest.",
    compare=one_of,
)
def _closest_class(*, delta, classes) -> set[str]:
    return _closest(np.asarray(delta.step, dtype=np.float64), classes)


def _closest(steps: np.ndarray, classes) -> set[str]:
    tested = ~np.all(np.isnan(steps), axis=0)
    medians = np.full(steps.shape[1], np.inf)
    medians[tested] = np.nanmedian(steps[:, tested], axis=0)
    best = np.flatnonzero(np.isclose(medians, medians.min()))
    return {classes[i] for i in best} | {str(i) for i in best}


@exercise(
    "03.3",
    "With alpha=1e-6, how many targets change rank (by δ toward the poison class)?",
    "Compute `distance_matrix(..., poison_classes=[poison_class], alpha=1e-6)`, rank both step columns with a "
    "stable argsort, and count the positions that differ.",
)
def _rank_changes(*, model, images, labels, poison_class, step) -> int:
    from .distance import distance_matrix

    device = next(model.parameters()).device
    fine = distance_matrix(
        model, images, labels, poison_classes=[poison_class], alpha=1e-6, device=device, show_progress=False
    ).step[:, poison_class]
    before = np.argsort(np.argsort(np.asarray(step), kind="stable"), kind="stable")
    after = np.argsort(np.argsort(fine, kind="stable"), kind="stable")
    return int(np.count_nonzero(before != after))


@exercise(
    "03.4",
    "Along section 6's path, how many times does the prediction change class?",
    "`path` holds the predicted class at each η; count where `path[k] != path[k - 1]`. More than one change "
    "toward the poison class and back means the path is non-monotone.",
)
def _path_changes(*, path) -> int:
    path = np.asarray(path)
    return int(np.count_nonzero(path[1:] != path[:-1]))


@exercise(
    "03.5",
    "With last_layer_only=True, which poison class is closest on average (smallest median δ step)?",
    "`distance_matrix(model, images, labels, last_layer_only=True)`, then the median over targets per class.",
    compare=one_of,
)
def _closest_class_head(*, model, images, labels, classes) -> set[str]:
    from .distance import distance_matrix

    device = next(model.parameters()).device
    head = distance_matrix(model, images, labels, last_layer_only=True, device=device, show_progress=False)
    return _closest(np.asarray(head.step, dtype=np.float64), classes)


# ----------------------------------------------------------------------------------------------------------------- 04
@exercise(
    "04.1",
    "At the toy points with τ = 0, which sign has ⟨w_p, g(D_c; w_p)⟩: 'negative' or 'positive'?",
    "`budget_lower_bound(...).inner` of those points; τ = max(inner / W(κ), 0).",
    compare=one_of,
)
def _sign_at_zero(*, model, points, labels) -> set[str]:
    from .budget import budget_lower_bound

    inner = []
    for i in range(len(points)):
        result = budget_lower_bound(model, points[i], (int(labels[i]) + 1) % 3, (points, labels), num_batches=None)
        if result.tau == 0:
            inner.append(result.inner)
    inner = np.array(inner)
    if len(inner) == 0:
        return {"none"}
    if np.all(inner <= 0):
        return {"negative", "non-positive", "-", "<= 0", "<0"}
    return {"positive", "mixed"}


@exercise(
    "04.2",
    "By what factor is every nonzero τ multiplied (new / old) for C = 100 classes under the authors' variant?",
    "τ divides by W(κ): the factor is W((C-1)/e) / W(C - 1/e); `scipy.special.lambertw` gives both.",
    compare=within(2e-3),
)
def _variant_factor() -> float:
    from .budget import lambert_denominator

    return lambert_denominator(100, "derived") / lambert_denominator(100, "authors")


@exercise(
    "04.3",
    "Seed spread of the inner product at tau_batches divided by the spread at 4 x tau_batches (1/√ predicts 2)?",
    "Repeat section 4's three seeds with `num_batches=4 * tau_batches`; divide the two `np.std` values.",
    compare=within(1e-3),
)
def _spread_ratio(*, model, image, poison_class, train_set, step, batches, batch_size) -> float:
    from .budget import budget_lower_bound
    from .distance import DistanceResult

    def spread(num: int) -> float:
        inner = [
            budget_lower_bound(
                model,
                image,
                poison_class,
                train_set,
                delta=DistanceResult.from_step(step),
                num_batches=num,
                batch_size=batch_size,
                seed=s,
                device=next(model.parameters()).device,
            ).inner
            for s in range(3)
        ]
        return float(np.std(inner))

    return spread(batches) / spread(4 * batches)


@exercise(
    "04.4",
    "With last_layer_only=True, is τ = 0 'more' or 'less' often than with all layers (or the 'same')?",
    "`experiment.target_rows(targets, [poison_class], tau=settings, last_layer_only=True)`; compare the shares "
    "of `tau == 0`.",
    compare=one_of,
)
def _clipped_more(*, experiment, targets, poison_class, settings, tau) -> set[str]:
    rows = experiment.target_rows(targets, [poison_class], tau=settings, last_layer_only=True)
    head = np.mean([r["tau"] == 0 for r in rows])
    every = np.mean(np.asarray(tau) == 0)
    return {"more"} if head > every else {"less"} if head < every else {"same"}


@exercise(
    "04.5",
    "After deleting one target's rows from the CSV, how many rows does the next call compute?",
    "Only pairs missing from the file are computed: count the rows that were deleted.",
    compare=exactly,
)
def _recomputed_rows(*, before, after) -> int:
    key = lambda r: (r["dataset"], str(r["index"]), str(r["poison_class"]))  # noqa: E731
    return len({key(r) for r in after} - {key(r) for r in before})

"""EPA, soft EPA, DPS, buckets and target selection against hand-computed cases and naive loops."""

import numpy as np
import pytest

from poisondiff_lite import InvalidChoiceError
from poisondiff_lite.metrics import dps, epa, epa_buckets, per_class_mean, prediction_counts, select_targets, soft_epa

# 2 runs x 3 epochs x 3 examples; labels (0, 1, 2)
PREDS = np.array(
    [
        [[0, 1, 1], [0, 2, 1], [0, 1, 1]],  # run 0
        [[1, 1, 2], [0, 1, 1], [0, 0, 1]],  # run 1
    ]
)
LABELS = np.array([0, 1, 2])


def test_epa_hand_computed():
    # example 0 correct in 5 of 6 checkpoints; example 1 in 4 of 6; example 2 in 1 of 6
    np.testing.assert_allclose(epa(PREDS, LABELS), [5 / 6, 4 / 6, 1 / 6])


def test_epa_burn_in_drops_first_epochs_of_every_run():
    # epochs 2..3 only: ex0 4/4, ex1 2/4 (run0: 2,1 -> 1 correct; run1: 1,0 -> 1 correct), ex2 0/4
    np.testing.assert_allclose(epa(PREDS, LABELS, burn_in=1), [1.0, 0.5, 0.0])


def test_epa_accepts_flat_checkpoints_and_is_quantised():
    flat = PREDS.reshape(-1, 3)
    np.testing.assert_allclose(epa(flat, LABELS), epa(PREDS, LABELS))
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 10, (8, 40, 50))
    values = epa(preds, rng.integers(0, 10, 50))
    np.testing.assert_allclose(values * 320, np.round(values * 320))  # steps of 1/(M N)


def test_soft_epa_is_mean_true_class_probability():
    prob = np.array([[[0.9, 0.2], [0.7, 0.4]], [[0.5, 0.0], [0.3, 0.6]]], dtype=np.float16)
    np.testing.assert_allclose(soft_epa(prob), [0.6, 0.3], atol=1e-3)


def test_dps_hand_computed_and_tie_rule():
    score, dominant = dps(PREDS, 3)
    # ex0: class 0 x5; ex1: class 1 x4; ex2: class 1 x5, class 2 x1
    np.testing.assert_allclose(score, [5 / 6, 4 / 6, 5 / 6])
    np.testing.assert_array_equal(dominant, [0, 1, 1])
    tie = np.array([[2], [1]])  # one example, two checkpoints voting 2 and 1: lowest class wins
    assert dps(tie, 3)[1][0] == 1


def test_dps_equals_epa_where_dominant_is_true_label():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 200)
    preds = np.where(rng.random((4, 10, 200)) < 0.7, labels, rng.integers(0, 5, (4, 10, 200)))
    score, dominant = dps(preds, 5)
    e = epa(preds, labels)
    same = dominant == labels
    assert same.sum() > 150
    np.testing.assert_allclose(score[same], e[same])


def test_prediction_counts_matches_naive_loop():
    rng = np.random.default_rng(2)
    preds = rng.integers(0, 7, (3, 5, 40))
    counts = prediction_counts(preds, 7)
    for e in range(40):
        for c in range(7):
            assert counts[e, c] == np.sum(preds[:, :, e] == c)


def test_prediction_counts_rejects_unfinished_runs():
    preds = PREDS.copy()
    preds[1] = -1
    with pytest.raises(InvalidChoiceError, match="finished"):
        prediction_counts(preds, 3)


def test_epa_buckets_follow_authors_positions_with_stable_ties():
    values = np.array([0.5, 0.1, 0.5, 0.9, 0.3, 0.5, 0.7, 0.2, 0.8, 0.0])  # n = 10
    buckets = epa_buckets(values, per_bucket=2)
    order = np.argsort(values, kind="stable")  # [9, 1, 7, 4, 0, 2, 5, 6, 8, 3]
    assert list(buckets) == ["lowest", "p20", "p40", "p60", "p80", "highest"]
    np.testing.assert_array_equal(buckets["lowest"], [9, 1])
    np.testing.assert_array_equal(buckets["p20"], order[2:4])  # int(0.2 * 10) = 2
    np.testing.assert_array_equal(buckets["p40"], [0, 2])  # ties kept in original order
    np.testing.assert_array_equal(buckets["p60"], [5, 6])
    np.testing.assert_array_equal(buckets["p80"], [8, 3])
    np.testing.assert_array_equal(buckets["highest"], [8, 3])
    with pytest.raises(InvalidChoiceError, match="at most 10"):
        epa_buckets(values, per_bucket=11)


def test_select_targets_only_picks_target_class():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    values = rng.random(300)
    targets = select_targets(values, labels, target_class=2, per_bucket=5)
    assert len(targets) == 30
    assert all(labels[t["index"]] == 2 for t in targets)
    lowest = [t["epa"] for t in targets if t["bucket"] == "lowest"]
    assert max(lowest) <= min(t["epa"] for t in targets if t["bucket"] == "p20")
    assert lowest == sorted(values[labels == 2])[:5]
    with pytest.raises(InvalidChoiceError, match="no example has class 7"):
        select_targets(values, labels, target_class=7)


def test_per_class_mean_matches_loop():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 100)
    values = rng.random(100)
    expected = [values[labels == c].mean() for c in range(4)]
    np.testing.assert_allclose(per_class_mean(values, labels, 5)[:4], expected)
    assert np.isnan(per_class_mean(values, labels, 5)[4])


def test_bad_shapes_get_clear_errors():
    with pytest.raises(InvalidChoiceError, match="shape"):
        epa(np.zeros(5), np.zeros(5))
    with pytest.raises(InvalidChoiceError, match="labels must have shape"):
        epa(PREDS, np.array([0, 1]))
    with pytest.raises(InvalidChoiceError, match="burn_in"):
        epa(PREDS, LABELS, burn_in=3)

"""τ: Lambert-W constants, the linear-model infimum it rests on, and τ against a hand-computed linear case."""

import math

import numpy as np
import pytest
import torch

from poisondiff_lite import InvalidChoiceError
from poisondiff_lite.budget import budget_lower_bound, clean_gradient, lambert_denominator, tau_from_inner
from poisondiff_lite.data import ImageDataset
from poisondiff_lite.distance import DistanceResult, moved_parameters
from test_distance import linear_model


@pytest.mark.parametrize(
    "classes, derived, authors", [(2, 0.2785, 0.7619), (10, 1.1010, 1.7218), (200, 3.1469, 3.9283)]
)
def test_lambert_w_table_from_the_notes(classes, derived, authors):
    assert lambert_denominator(classes) == pytest.approx(derived, abs=1e-4)
    assert lambert_denominator(classes, "authors") == pytest.approx(authors, abs=1e-4)


def test_binary_case_is_w_of_one_over_e():
    w = lambert_denominator(2)
    assert w * math.exp(w) == pytest.approx(1 / math.e, rel=1e-10)  # W(1/e) solves w e^w = 1/e


@pytest.mark.parametrize("classes", [2, 3, 10, 200])
def test_denominator_is_the_linear_softmax_supremum(classes):
    # sup_a a (C-1) / (e^a + C - 1): the bound's step 3, found by brute force
    a = np.linspace(0, 20, 400001)
    best = np.max(a * (classes - 1) / (np.exp(a) + classes - 1))
    assert best == pytest.approx(lambert_denominator(classes), abs=1e-6)


def test_tau_clips_at_zero_and_scales_by_w():
    assert tau_from_inner(-3.0, 10) == 0.0
    assert tau_from_inner(2.0, 10) == pytest.approx(2.0 / 1.1010, rel=1e-3)
    with pytest.raises(InvalidChoiceError, match="'exact'.*'derived', 'authors'"):
        lambert_denominator(10, "exact")


def _linear_problem(seed=0, n=60):
    model = linear_model(num_classes=3, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 2, 2), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    return model, ImageDataset(images, labels)


def test_tau_matches_hand_computed_linear_case():
    model, train = _linear_problem()
    x = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(5))
    p = (int(model(x[None]).argmax()) + 1) % 3
    result = budget_lower_bound(model, x, p, train, num_batches=None, device="cpu")
    # w_p = w - η* g with g = (softmax(z) - e_p) [x, 1]; clean gradient of a linear softmax model in closed form
    W, b = model.head.weight.detach().double(), model.head.bias.detach().double()
    flat = x.flatten().double()
    d = torch.softmax(W @ flat + b, 0)
    d[p] -= 1
    Wp, bp = W - result.step * torch.outer(d, flat), b - result.step * d
    X = train.images.flatten(1).double() / 255
    R = torch.softmax(X @ Wp.T + bp, 1) - torch.nn.functional.one_hot(train.labels, 3).double()
    inner = float((Wp * (R.T @ X / len(X))).sum() + (bp * R.mean(0)).sum())
    assert result.inner == pytest.approx(inner, rel=1e-4, abs=1e-7)
    assert result.tau == pytest.approx(max(inner, 0) / lambert_denominator(3), rel=1e-4, abs=1e-7)
    assert result.lambert == pytest.approx(lambert_denominator(3))


def test_tau_vanishes_at_a_stationary_point():
    model, train = _linear_problem(seed=1, n=200)
    X = train.images.float() / 255
    x = train.images[0]

    def tau_here():  # η* = 0: the target already predicts the poison class, so w_p is the model itself
        own = int(model(X[:1]).argmax())
        return budget_lower_bound(
            model, x, own, train, delta=DistanceResult(0.0, 0.0, 0.0, own), num_batches=None, device="cpu"
        )

    far = tau_here()
    optimizer = torch.optim.LBFGS(
        model.head.parameters(),
        lr=1,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), train.labels)
        loss.backward()
        return loss

    optimizer.step(closure)  # random labels: not separable, so the clean loss has a minimiser
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = clean_gradient(model, params, train, num_batches=None, device="cpu")
    assert max(float(v.abs().max()) for v in g.values()) < 1e-4
    near = tau_here()
    assert abs(far.inner) > 0.1  # away from stationarity the inner product is not small ...
    assert abs(near.inner) < 1e-3 * abs(far.inner)  # ... at the minimiser it vanishes (float32 rounding aside)
    assert near.tau < 1e-3 * max(far.tau, abs(far.inner) / far.lambert)


def test_sampled_clean_gradient_converges_to_the_full_data_gradient():
    model, train = _linear_problem(seed=3, n=200)
    params = {k: p.detach() + 0.05 for k, p in moved_parameters(model).items()}
    full = clean_gradient(model, params, train, num_batches=None, device="cpu")

    def relative_error(batches: int) -> float:
        g = clean_gradient(model, params, train, num_batches=batches, batch_size=16, seed=1, device="cpu")
        diff = sum(float(((g[k] - full[k]) ** 2).sum()) for k in full)
        return math.sqrt(diff / sum(float((full[k] ** 2).sum()) for k in full))

    assert relative_error(400) < 0.1 < relative_error(1)


def test_authors_variant_divides_the_same_inner_product_by_w_of_c_minus_one_over_e():
    model, train = _linear_problem(seed=4)
    x = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(6))
    p = (int(model(x[None]).argmax()) + 1) % 3
    derived = budget_lower_bound(model, x, p, train, num_batches=None, device="cpu")
    authors = budget_lower_bound(model, x, p, train, num_batches=None, variant="authors", device="cpu")
    assert authors.inner == pytest.approx(derived.inner) and derived.inner > 0
    assert authors.lambert == pytest.approx(0.98396, abs=1e-4)  # W(3 - 1/e), C = 3
    assert derived.lambert == pytest.approx(0.46306, abs=1e-4)  # W(2/e)
    assert authors.tau == pytest.approx(derived.inner / 0.98396, rel=1e-4) and authors.tau < derived.tau


def test_budget_leaves_model_untouched_and_sampling_is_seeded():
    model, train = _linear_problem(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 2, 2)
    p = (int(model(x[None]).argmax()) + 1) % 3
    a = budget_lower_bound(model, x, p, train, num_batches=3, batch_size=16, seed=7, device="cpu")
    b = budget_lower_bound(model, x, p, train, num_batches=3, batch_size=16, seed=7, device="cpu")
    assert a == b
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    never = budget_lower_bound(model, x, p, train, delta=DistanceResult(math.inf, 1.0, math.inf, 0), device="cpu")
    assert math.isinf(never.tau)

"""δ against the closed form of a linear softmax model, and the batched search against the one-at-a-time search."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from poisondiff_lite import InvalidChoiceError, build_model
from poisondiff_lite.distance import distance_matrix, poisoning_distance
from poisondiff_lite.models import Classifier


def linear_model(num_classes=4, shape=(3, 2, 2), seed=0):
    torch.manual_seed(seed)
    dim = int(np.prod(shape))
    head = nn.Linear(dim, num_classes)
    nn.init.normal_(head.weight, 0, 1.0)
    nn.init.normal_(head.bias, 0, 1.0)
    return Classifier(nn.Flatten(), head, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()


def closed_form(model, x, p):
    """Moving W, b by -η g shifts the logits by -η (‖x‖² + 1) (softmax(z) - e_p): linear in η, so
    η* = max_{j≠p} (z_j - z_p) / ((‖x‖² + 1)(1 - s_p + s_j)), and ‖g‖ = ‖softmax(z) - e_p‖ sqrt(‖x‖² + 1)."""
    flat = x.flatten().double()
    z = (model.head.weight.double() @ flat + model.head.bias.double()).detach()
    s = torch.softmax(z, 0)
    k = float(flat @ flat) + 1
    eta = max(float((z[j] - z[p]) / (k * (1 - s[p] + s[j]))) for j in range(len(z)) if j != p)
    d = s.clone()
    d[p] -= 1
    return max(eta, 0.0), float(d.norm()) * math.sqrt(k)


@pytest.mark.parametrize("seed", range(5))
def test_linear_model_matches_closed_form(seed):
    model = linear_model(seed=seed)
    x = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(seed))
    pred = int(model(x[None]).argmax())
    for p in range(4):
        if p == pred:
            continue
        eta, norm = closed_form(model, x, p)
        result = poisoning_distance(model, x, p, alpha=1e-5, device="cpu")
        assert eta <= result.step <= eta + 1e-5 + 1e-6
        assert result.grad_norm == pytest.approx(norm, rel=1e-5)
        assert result.distance == pytest.approx(result.step * norm, rel=1e-5)
        assert result.pred_before == pred


@pytest.mark.parametrize("alpha", [1e-1, 1e-2, 1e-3])
def test_bisection_tolerance_is_honoured(alpha):
    model = linear_model(seed=3)
    x = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(9))
    p = (int(model(x[None]).argmax()) + 1) % 4
    eta, _ = closed_form(model, x, p)
    step = poisoning_distance(model, x, p, alpha=alpha, device="cpu").step
    assert eta <= step <= eta + alpha


@pytest.mark.parametrize("method", ["loop", "batched"])
def test_a_flip_at_exactly_the_last_doubling_is_found(method):
    model = linear_model(seed=3)
    x = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(9))
    p = (int(model(x[None]).argmax()) + 1) % 4
    eta, _ = closed_form(model, x, p)
    # from m_init = η*/3 the bracket ends are η*/3, 2η*/3, 4η*/3: the second doubling is the first that flips
    search = dict(poison_classes=[p], m_init=eta / 3, alpha=1e-6, device="cpu", method=method, show_progress=False)
    label = np.array([int(model(x[None]).argmax())])
    found = distance_matrix(model, x[None], label, max_doublings=2, **search).step[0, p]
    assert eta <= found <= eta + 1e-6 + 1e-6
    assert math.isinf(distance_matrix(model, x[None], label, max_doublings=1, **search).step[0, p])


def test_weights_are_restored_exactly():
    torch.manual_seed(0)
    model = build_model("fastnet_small", 10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    for p in range(3):
        poisoning_distance(model, x, p, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_never_flipping_is_infinite_and_own_prediction_is_zero():
    model = linear_model(seed=1)
    x = torch.rand(3, 2, 2)
    pred = int(model(x[None]).argmax())
    other = (pred + 1) % 4
    never = poisoning_distance(model, x, other, m_init=1e-9, max_doublings=0, device="cpu")
    assert math.isinf(never.step) and math.isinf(never.distance)
    assert poisoning_distance(model, x, pred, device="cpu").step == 0.0
    with pytest.raises(InvalidChoiceError, match="poison_class"):
        poisoning_distance(model, x, 7, device="cpu")


@pytest.mark.parametrize("method", ["batched", "loop", "auto"])
def test_matrix_agrees_with_closed_form_on_linear_model(method):
    model = linear_model(num_classes=5, seed=4)
    images = torch.rand(6, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    labels = torch.arange(6) % 5
    result = distance_matrix(model, images, labels, alpha=1e-5, device="cpu", method=method, show_progress=False)
    for t in range(6):
        for p in range(5):
            if p == int(labels[t]):
                assert np.isnan(result.step[t, p])
                continue
            eta, norm = closed_form(model, images[t], p)
            assert eta - 1e-6 <= result.step[t, p] <= eta + 1e-5 + 1e-6
            assert result.grad_norm[t, p] == pytest.approx(norm, rel=1e-4)


@pytest.fixture(scope="module")
def trained_toy_net():
    from conftest import make_toy_bundle  # the learnable 4-class toy problem of the training tests

    from poisondiff_lite import TrainConfig, train_fresh

    bundle = make_toy_bundle()
    model, _ = train_fresh(
        bundle, TrainConfig.quick(epochs=3, batch_size=16), seed=0, device="cpu", show_progress=False
    )
    return model.eval(), bundle


@pytest.mark.parametrize("last_layer_only", [False, True])
def test_matrix_agrees_with_one_at_a_time_on_a_conv_net(last_layer_only, trained_toy_net):
    model, bundle = trained_toy_net
    images, labels = bundle.test.images[:5], bundle.test.labels[:5]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # small chunks force several chunks through the lockstep search
    result = distance_matrix(
        model,
        images,
        labels,
        last_layer_only=last_layer_only,
        device="cpu",
        max_chunk_bytes=1 << 22,
        method="batched",
        show_progress=False,
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    pairs = 0
    for t in range(5):
        np.testing.assert_array_equal(result.pred_before[t], int(model(images[t : t + 1].float() / 255).argmax()))
        for p in range(4):
            if p == int(labels[t]):
                continue
            single = poisoning_distance(model, images[t], p, last_layer_only=last_layer_only, device="cpu")
            assert result.grad_norm[t, p] == pytest.approx(single.grad_norm, rel=1e-3)
            # float32 weights resolve w - η g to ~1e-7 relative, so the flip point is known to α plus that; the
            # batched search must find every one of them (it is deterministic on the CPU)
            assert abs(result.step[t, p] - single.step) <= 2e-4 + 1e-5 * single.step, (t, p)
            pairs += 1
    assert pairs == 15


def test_unknown_method_is_refused():
    model = linear_model(num_classes=3, seed=0)
    with pytest.raises(InvalidChoiceError, match="method"):
        distance_matrix(model, torch.rand(1, 3, 2, 2), [0], device="cpu", method="fast", show_progress=False)


def test_last_layer_gradient_is_part_of_the_full_one():
    torch.manual_seed(0)
    model = build_model("fastnet_small", 10).eval()
    x = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    full = poisoning_distance(model, x, 3, device="cpu")
    head = poisoning_distance(model, x, 3, last_layer_only=True, device="cpu")
    assert 0 < head.grad_norm < full.grad_norm


@pytest.mark.parametrize("call", ["one", "matrix"])
def test_train_mode_survives_a_refused_poison_class(call):
    """A bad poison class is refused, and the caller's model comes back in the mode it had (here: training)."""
    model = build_model("fastnet_small", 4).train()
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    with pytest.raises(InvalidChoiceError):
        if call == "one":
            poisoning_distance(model, image, poison_class=9, device="cpu")
        else:
            distance_matrix(model, image[None], [0], poison_classes=[9], device="cpu", show_progress=False)
    assert model.training


def test_chunk_memory_is_a_quarter_of_free_gpu_memory_and_256_mib_on_a_cpu(monkeypatch):
    from poisondiff_lite import distance

    assert distance.chunk_bytes(torch.device("cpu")) == 1 << 28
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 << 30, 80 << 30))
    assert distance.chunk_bytes(torch.device("cuda")) == 10 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 28, 80 << 30))  # a nearly full GPU
    assert distance.chunk_bytes(torch.device("cuda")) == 1 << 28

"""Stacked training: V models as one grouped network compute, and learn, what the V models do alone."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import make_toy_bundle
from poisondiff_lite import (
    MODELS,
    InvalidChoiceError,
    TrainConfig,
    TrajectoryConfig,
    build_model,
    record_trajectories,
    register_model,
    train_fresh,
)
from poisondiff_lite.models import CUSTOM_MODELS
from poisondiff_lite.stacked import StackedClassifier, unstackable_part
from poisondiff_lite.train import train_fresh_many


def members_of(name: str, count: int = 3) -> list:
    torch.manual_seed(0)
    return [build_model(name, 7) for _ in range(count)]


STACKABLE = [m for m in MODELS if not m.endswith("_torchvision")]  # torchvision's VGG classifier holds Linear layers


def test_torchvision_vgg_classifiers_are_named_unstackable():
    for name in set(MODELS) - set(STACKABLE):
        assert unstackable_part(build_model(name, 7)) == "Linear"


@pytest.mark.parametrize("name", STACKABLE)
def test_stacked_forward_equals_each_member_in_train_mode(name):
    models = members_of(name)
    stacked = StackedClassifier(models)
    x = torch.rand(4, 9, 32, 32)
    out = stacked(x)
    expected = torch.stack([m(x[:, 3 * v : 3 * v + 3]) for v, m in enumerate(models)], dim=1)
    assert out.shape == (4, 3, 7)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    for v, model in enumerate(models):  # BatchNorm running statistics moved member by member
        torch.testing.assert_close(stacked.member_state(v), model.state_dict(), rtol=1e-5, atol=1e-6)


def test_shared_input_goes_to_every_member():
    models = members_of("fastnet_small", 2)
    stacked = StackedClassifier(models).eval()
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        out = stacked(x)
        for v, model in enumerate(models):
            torch.testing.assert_close(out[:, v], model.eval()(x), rtol=1e-5, atol=1e-5)


def test_stacked_gradient_is_each_members_gradient():
    models = members_of("resnet18_cifar", 2)  # residual blocks with downsampling shortcuts
    stacked = StackedClassifier(models)
    x, y = torch.rand(8, 6, 16, 16), torch.randint(0, 7, (8, 2))
    out = stacked(x)
    sum(F.cross_entropy(out[:, v], y[:, v]) for v in range(2)).backward()
    grads = dict(stacked.named_parameters())
    for v, model in enumerate(models):
        F.cross_entropy(model(x[:, 3 * v : 3 * v + 3]), y[:, v]).backward()
        for name, p in model.named_parameters():
            g = grads[name].grad
            mine = g[v] if name.startswith("head.") else g.chunk(2)[v]
            torch.testing.assert_close(mine, p.grad, rtol=1e-4, atol=1e-5 * float(p.grad.abs().max()) + 1e-9)


def test_unstack_round_trip_restores_every_member():
    models = members_of("fastnet_small")
    stacked = StackedClassifier(models)
    fresh = members_of("fastnet_small")
    for m in fresh:
        for p in m.parameters():
            nn.init.zeros_(p)
    stacked.unstack_into(fresh)
    for a, b in zip(models, fresh):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key


@pytest.fixture()
def float64():
    """Run a test in float64: float32 rounding, amplified by a few high-lr steps, would blur an exact comparison."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_stacked_training_matches_one_at_a_time(float64):
    data = make_toy_bundle(96, 32)
    cfg = TrainConfig.quick(epochs=2, batch_size=32)
    alone = [x for group in train_fresh_many(data, cfg, [3, 4, 5], show_progress=False) for x in group]
    stacked = [
        x
        for group in train_fresh_many(data, dataclasses.replace(cfg, stack=3), [3, 4, 5], show_progress=False)
        for x in group
    ]
    reference, history = train_fresh(data, cfg, seed=4, show_progress=False)
    assert history.loss == alone[1][2].loss  # one at a time is train_fresh exactly
    for (seed_a, model_a, hist_a), (seed_b, model_b, hist_b) in zip(alone, stacked):
        assert seed_a == seed_b
        assert model_a.head.weight.dtype == torch.float64
        np.testing.assert_allclose(hist_a.loss, hist_b.loss, rtol=1e-9)
        for key, value in model_a.state_dict().items():
            torch.testing.assert_close(model_b.state_dict()[key], value, rtol=1e-9, atol=1e-9)
    # and the members really differ from each other (each used its own seed)
    assert not torch.allclose(stacked[0][1].head.weight, stacked[1][1].head.weight)


def test_groups_of_stack_cover_every_seed_in_order():
    data = make_toy_bundle(32, 16)
    cfg = TrainConfig.quick(epochs=1, batch_size=16, stack=2)
    groups = list(train_fresh_many(data, cfg, [7, 8, 9], show_progress=False))
    assert [[seed for seed, _, _ in g] for g in groups] == [[7, 8], [9]]


def test_unstackable_model_is_named_and_trained_one_at_a_time():
    def factory(num_classes):
        body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.LayerNorm(8))
        return body, nn.Linear(8, num_classes)

    register_model("toy_mlp_stack", factory)
    try:
        model = build_model("toy_mlp_stack", 4)
        assert unstackable_part(model) == "Linear"
        with pytest.raises(InvalidChoiceError, match="cannot stack"):
            StackedClassifier([model, build_model("toy_mlp_stack", 4)])
        cfg = TrainConfig.quick(model="toy_mlp_stack", epochs=1, batch_size=16, stack=2)
        with pytest.warns(UserWarning, match="one at a time"):
            groups = list(train_fresh_many(make_toy_bundle(32, 16), cfg, [0, 1], show_progress=False))
        assert [len(g) for g in groups] == [1, 1]
    finally:
        CUSTOM_MODELS.pop("toy_mlp_stack", None)


def test_recorder_with_stack_records_the_same_experiment(tmp_path):
    data = make_toy_bundle(96, 32)
    config = TrajectoryConfig(train=TrainConfig.quick(epochs=2, batch_size=32), runs=3)
    stacked_config = dataclasses.replace(config, train=dataclasses.replace(config.train, stack=2))
    assert stacked_config.key() == config.key()  # a speed option: same experiment, same file
    alone = record_trajectories(config, data=data, path=tmp_path / "a.npz", show_progress=False)
    stacked = record_trajectories(stacked_config, data=data, path=tmp_path / "b.npz", show_progress=False)
    assert stacked.completed == 3
    assert (stacked.preds >= 0).all()
    assert (stacked.preds == alone.preds).mean() > 0.95
    np.testing.assert_allclose(stacked.true_prob.astype(float), alone.true_prob.astype(float), atol=0.02)


def test_cuda_precision_and_layout_path_records_what_fp32_records(tmp_path, monkeypatch):
    """The GPU path (bf16 autocast + channels_last, stacked) run on a CPU: same experiment, fp32 results, sane runs."""
    import poisondiff_lite.train as train_module

    data = make_toy_bundle(96, 32)
    config = TrajectoryConfig(train=TrainConfig.quick(epochs=3, batch_size=32), runs=2)
    fp32 = record_trajectories(config, data=data, path=tmp_path / "fp32.npz", show_progress=False)

    monkeypatch.setattr(train_module, "_accelerated", lambda device: True)
    fit_on, before = train_module._fit_on, torch.backends.cudnn.benchmark
    dtypes, autotune = [], []
    monkeypatch.setattr(
        train_module, "_fit_on", lambda *a, **k: autotune.append(torch.backends.cudnn.benchmark) or fit_on(*a, **k)
    )
    hook = nn.modules.module.register_module_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype) if isinstance(module, nn.Conv2d) else None
    )
    try:
        accelerated_config = dataclasses.replace(config, train=dataclasses.replace(config.train, stack=2))
        fast = record_trajectories(accelerated_config, data=data, path=tmp_path / "fast.npz", show_progress=False)
        model, history = train_fresh(data, config.train, seed=0, show_progress=False)
    finally:
        hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # autocast really ran the convolutions in bf16
    assert autotune and all(autotune) and torch.backends.cudnn.benchmark == before  # cuDNN autotuned, then restored
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.dtype == torch.float32  # master weights stay fp32
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(np.isfinite(history.loss)) and history.loss[-1] < history.loss[0]
    assert fast.completed == 2 and fast.true_prob.dtype == fp32.true_prob.dtype
    assert (fast.preds == fp32.preds).mean() > 0.9  # bf16 rounding moves few predictions on a learnable problem
    gap = np.abs(fast.true_prob.astype(float) - fp32.true_prob.astype(float))
    assert gap.mean() < 0.02 and gap.max() < 0.25

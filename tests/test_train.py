"""Training loop, schedules, augmentation, models and device handling."""

import dataclasses
import math

import pytest
import torch

from conftest import make_toy_bundle
from poisondiff_lite import (
    MODELS,
    DeviceUnavailableError,
    InvalidChoiceError,
    TrainConfig,
    accuracy,
    augment,
    build_model,
    get_device,
    train_fresh,
)
from poisondiff_lite.augment import random_crop, random_flip
from poisondiff_lite.train import lr_factor, train_fresh_many


def test_random_crop_matches_per_image_slicing():
    images = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(images, 2, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)  # replay the offsets the function drew
    dy = torch.randint(0, 5, (6,), generator=gen)
    dx = torch.randint(0, 5, (6,), generator=gen)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(6):
        expected = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], expected)
    assert torch.equal(random_crop(images, 0), images)


def test_random_flip_flips_about_half():
    images = torch.randint(0, 255, (400, 3, 4, 4), dtype=torch.uint8)
    out = random_flip(images, generator=torch.Generator().manual_seed(0))
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped)
    assert 150 < int(flipped.sum()) < 250


def test_lr_schedules():
    step = TrainConfig.full()
    assert lr_factor(step, 0, 10) == 1.0
    assert lr_factor(step, 14 * 10 - 1, 10) == 1.0 and math.isclose(lr_factor(step, 14 * 10, 10), 0.1)
    assert math.isclose(lr_factor(step, 35 * 10, 10), 1e-3)
    cycle = TrainConfig.quick(epochs=4, warmup_epochs=1.0)
    assert lr_factor(cycle, 9, 10) == 1.0  # peak at the end of warm-up
    assert lr_factor(cycle, 0, 10) == pytest.approx(0.1)
    assert lr_factor(cycle, 39, 10) == pytest.approx(1 / 30)
    assert lr_factor(TrainConfig.paper_epa(), 12345, 10) == 1.0


@pytest.mark.parametrize("name", MODELS)
def test_every_model_maps_images_to_class_logits(name):
    torch.manual_seed(0)
    model = build_model(name, 7).eval()
    size = 64 if name.startswith("vgg") else 32
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert model.features(torch.rand(2, 3, size, size)).shape[1] == model.head.in_features


def test_seeded_builds_are_identical():
    torch.manual_seed(3)
    a = build_model("fastnet_small", 10)
    torch.manual_seed(3)
    b = build_model("fastnet_small", 10)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_bad_config_values_list_the_choices():
    with pytest.raises(InvalidChoiceError, match="'resnet99'.*'resnet18'"):
        TrainConfig(model="resnet99")
    with pytest.raises(InvalidChoiceError, match="'cosine'.*'onecycle'"):
        TrainConfig(schedule="cosine")
    with pytest.raises(InvalidChoiceError, match="epochs must be > 0"):
        TrainConfig(epochs=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_on_cpu_machine_names_the_fix():
    with pytest.raises(DeviceUnavailableError, match='DEVICE="cpu"'):
        get_device("cuda")
    assert get_device("auto").type == "cpu"
    with pytest.raises(InvalidChoiceError, match="'tpu'"):
        get_device("tpu")


def test_toy_training_learns(toy_bundle):
    # no flips: a horizontal flip turns the toy's classes 0 <-> 1 and 2 <-> 3 into each other
    model, history = train_fresh(
        toy_bundle, TrainConfig.quick(epochs=8, batch_size=16, flip=False), seed=0, device="cpu", show_progress=False
    )
    assert history.loss[-1] < history.loss[0]
    assert accuracy(model, toy_bundle.test, device="cpu") >= 0.9  # chance is 0.25


@pytest.mark.slow
def test_cifar_quick_run_beats_chance(cifar):
    model, history = train_fresh(cifar, TrainConfig.quick(epochs=3), seed=0, device="cpu", show_progress=False)
    assert len(history.loss) == 3 and history.loss[-1] < history.loss[0]
    assert accuracy(model, cifar.test, device="cpu") > 0.3  # chance is 0.1


def test_augmentation_is_drawn_once_per_epoch_and_member_not_per_batch(monkeypatch):
    """A per-batch host-to-GPU copy of random numbers makes the host wait for the GPU at every step."""
    calls = []
    original = augment.AugmentDraw.draw.__func__
    monkeypatch.setattr(
        augment.AugmentDraw, "draw", classmethod(lambda cls, n, **kw: calls.append(n) or original(cls, n, **kw))
    )
    cfg = TrainConfig.quick(epochs=3, batch_size=16)  # 96 images: 6 batches per epoch
    for stack in (1, 2):
        calls.clear()
        list(
            train_fresh_many(
                make_toy_bundle(96, 16),
                dataclasses.replace(cfg, stack=stack),
                [0, 1],
                device="cpu",
                show_progress=False,
            )
        )
        assert calls == [96] * 6  # 3 epochs x 2 runs, each draw covering the whole epoch


def test_compile_mode_reaches_torch_compile(monkeypatch):
    import poisondiff_lite.train as train_module

    modes = []
    monkeypatch.setattr(train_module.torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    for compile_option in (True, "reduce-overhead"):
        train_fresh(
            make_toy_bundle(32, 8),
            TrainConfig.quick(epochs=1, batch_size=16, compile=compile_option),
            device="cpu",
            show_progress=False,
        )
    assert modes == [None, "reduce-overhead"]
    with pytest.raises(InvalidChoiceError, match="max-autotune"):
        TrainConfig(compile="fastest")

"""The benchmark script's helpers (the timings themselves are not tested: they are measured, see benchmarks/)."""

import importlib.util
from pathlib import Path

import torch

from conftest import make_toy_bundle

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiled_repeats_each_split_in_order_to_the_asked_size():
    bench = load_script()
    data = make_toy_bundle(6, 4)
    big = bench.tiled(data, 15, 9)
    assert (len(big.train), len(big.test)) == (15, 9)
    for i in range(15):
        assert torch.equal(big.train.images[i], data.train.images[i % 6])
        assert int(big.train.labels[i]) == int(data.train.labels[i % 6])
    assert torch.equal(big.test.images[8], data.test.images[0])
    assert big.classes == data.classes and big.mean == data.mean


def test_naive_baseline_dataset_yields_float_images_in_unit_range():
    bench = load_script()
    data = make_toy_bundle(4, 4)
    cfg = bench.pdl.TrainConfig.quick()
    image, label = bench.NaiveCifar(data.train.images, data.train.labels, cfg)[1]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 16)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and label == int(data.train.labels[1])


def test_flops_per_image_counts_a_linear_layer_by_hand():
    bench = load_script()
    layer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5, bias=False))
    cpu = torch.device("cpu")
    assert bench.flops_per_image(layer, (3, 4, 4), cpu, backward=False) == 2 * 48 * 5
    # backward: only the weight gradient (the input needs none), as many FLOPs again
    assert bench.flops_per_image(layer, (3, 4, 4), cpu) == 2 * (2 * 48 * 5)


def test_target_demands_arithmetic():
    bench = load_script()

    def flops(model, shape, device, backward=True):
        return 3.0 if backward else 1.0  # per image: a training step costs three forward passes

    rows = {row["job"]: row for row in bench.target_demands(flops, train_images=1000, peak=1e6)}
    epa = rows["EPA: 8 runs x 40 epochs, fast network, recorded"]
    total = 8 * 40 * (1000 * 3.0 + 10_000 * 1.0)  # training steps plus the recorder's test-set pass each epoch
    assert epa["pflop"] == total / 1e15
    assert epa["peak_share"] == total / 60.0 / 1e6
    assert epa["steps"] == 8 * 40 * 2  # batches of 512: two per epoch of 1,000 images
    resnet = rows["clean run, ResNet-18, 40 epochs"]
    assert resnet["steps"] == 40 * 8 and resnet["ms_per_step"] == 60_000 / 320  # batches of 128
    assert resnet["pflop"] == 40 * 1000 * 3.0 / 1e15  # no test-set pass in a clean run


def test_full_mode_cost_scales_epochs_and_crafting_to_the_whole_study(monkeypatch):
    bench = load_script()
    data = make_toy_bundle(64, 16)
    monkeypatch.setattr(bench, "epoch_seconds", lambda data, cfg, device, epochs: (2.0, None))
    monkeypatch.setattr(bench, "timed", lambda fn, device: (10.0, None))  # one restart of the crafting
    label, epoch, extra = bench.full_mode_cost(data, "cifar10", "victims", torch.device("cpu"), quick=False)
    assert epoch == 2.0 and "cifar10 (victims)" in label
    assert extra["epa_experiment_h"] * 3600 == 8 * 40 * 2.0  # 8 runs x 40 epochs
    assert extra["crafting_s"] == 10.0 * 8  # 8 restarts of 250 steps, one timed
    assert extra["targets"] == 60
    victims = (60 + 1) * 8 * 40 * 2.0  # 8 victims per target and 8 no-attack victims, 40 epochs each
    assert abs(extra["study_h"] * 3600 - (8 * 40 * 2.0 + 60 * 80.0 + victims)) < 1e-6
    assert abs(extra["victims_share"] - victims / (extra["study_h"] * 3600)) < 1e-12


def test_synthetic_tinyimagenet_has_its_shapes_and_classes():
    bench = load_script()
    data = bench.synthetic_tinyimagenet(torch.device("cpu"), quick=True)
    assert data.train.images.shape == (400, 3, 64, 64) and data.num_classes == 200
    assert data.name == "tinyimagenet" and len(data.test) == 100

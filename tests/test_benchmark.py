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

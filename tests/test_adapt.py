"""Adapting the tutorial: your own data set as tensor pairs and your own model, usable by name everywhere."""

import numpy as np
import pytest
import torch.nn as nn

import poisondiff_lite as pdl
from poisondiff_lite import datasets as datasets_module
from poisondiff_lite import models as models_module
from poisondiff_lite.attacks import AttackConfig, craft, poison_indices
from poisondiff_lite.distance import distance_matrix


@pytest.fixture()
def registered(monkeypatch, toy_bundle):
    monkeypatch.setattr(datasets_module, "CUSTOM_DATASETS", {})
    monkeypatch.setattr(models_module, "CUSTOM_MODELS", {})
    bundle = pdl.DataBundle.from_tensors(
        "shapes",
        toy_bundle.train.images,
        toy_bundle.train.labels,
        toy_bundle.test.images,
        toy_bundle.test.labels,
        classes=list("abcd"),
    )
    pdl.register_dataset("shapes", bundle)
    pdl.register_model(
        "mlp", lambda c: (nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU()), nn.Linear(32, c))
    )
    return bundle


def test_from_tensors_computes_the_normalisation(toy_bundle):
    bundle = pdl.DataBundle.from_tensors(
        "x", toy_bundle.train.images, toy_bundle.train.labels, toy_bundle.test.images, toy_bundle.test.labels
    )
    pixels = toy_bundle.train.images.float() / 255
    assert np.allclose(bundle.mean, pixels.mean(dim=(0, 2, 3)).numpy(), atol=1e-6)
    assert bundle.classes == ("0", "1", "2", "3")
    with pytest.raises(ValueError, match="uint8"):
        pdl.DataBundle.from_tensors(
            "x",
            toy_bundle.train.images.float(),
            toy_bundle.train.labels,
            toy_bundle.test.images,
            toy_bundle.test.labels,
        )


def test_own_data_and_model_run_through_the_whole_pipeline(registered, tmp_path):
    config = pdl.TrajectoryConfig(
        dataset="shapes", train=pdl.TrainConfig.quick(model="mlp", epochs=3, batch_size=16), runs=2
    )
    traj = pdl.record_trajectories(config, device="cpu", show_progress=False, results_dir=tmp_path, keep_models=True)
    scores = pdl.trajectory_metrics(traj)
    assert scores["epa"].shape == (32,) and scores["epa"].mean() > 0.25  # learns beyond chance on 4 classes
    model = pdl.load_run_model(pdl.default_path(config, tmp_path))
    assert isinstance(model.body[1], nn.Linear)
    delta = distance_matrix(
        model, registered.test.images[:2], registered.test.labels[:2], device="cpu", show_progress=False
    )
    assert delta.step.shape == (2, 4)
    idx = poison_indices(registered.train.labels, 1, 4)
    poisons = craft(
        AttackConfig(name="fc", num_poisons=4, steps=2, restarts=1),
        model,
        registered.test.images[0],
        1,
        registered.train.images[idx],
        registered.train.labels[idx],
        idx,
        device="cpu",
    )
    assert poisons.images.shape == (4, 3, 16, 16)


def test_unknown_names_list_the_registered_ones(registered):
    with pytest.raises(pdl.InvalidChoiceError, match="'tinyimagenet', 'shapes'"):
        pdl.TrajectoryConfig(dataset="shape")
    with pytest.raises(pdl.InvalidChoiceError, match="'vgg16_torchvision', 'mlp'"):
        pdl.TrainConfig(model="mpl")
    with pytest.raises(pdl.InvalidChoiceError, match="built-in"):
        pdl.register_model("resnet18", lambda c: None)
    pdl.register_model("broken", lambda c: (nn.Flatten(), nn.Linear(3, c + 1)))
    with pytest.raises(pdl.InvalidChoiceError, match="must return"):
        pdl.build_model("broken", 4)


PLUGIN = """
import torch
import torch.nn as nn
import poisondiff_lite as pdl


def load(root, download=False):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    images = torch.randint(0, 255, (60, 3, 16, 16), dtype=torch.uint8, generator=gen)
    images[labels == 1] //= 4
    return pdl.DataBundle.from_tensors("plugtoy", images[:40], labels[:40], images[40:], labels[40:])


def tiny(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(768, 16), nn.ReLU()), nn.Linear(16, num_classes)


pdl.register_dataset("plugtoy", load)
pdl.register_model("plugnet", tiny)
"""


def _run(args, tmp_path, plugins):
    import os
    import subprocess
    import sys

    (tmp_path / "myplugin.py").write_text(PLUGIN)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "POISONDIFF_PLUGINS": plugins,
        "POISONDIFF_RESULTS": str(tmp_path),
    }
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_plugins_named_in_the_environment_register_in_every_process(tmp_path):
    code = "import poisondiff_lite as p; print(p.datasets.dataset_names()[-1], p.models.model_names()[-1])"
    out = _run(["-c", code], tmp_path, " myplugin , ")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plugtoy", "plugnet"]
    # the command line sees the plugin's data set: a whole EPA experiment on it
    out = _run(
        [
            "-m",
            "poisondiff_lite.cli",
            "epa",
            "--dataset",
            "plugtoy",
            "--runs",
            "1",
            "--no-progress",
            "--out",
            "epa.csv",
        ],
        tmp_path,
        "myplugin",
    )
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "epa.csv").read_text().splitlines()) == 1 + 20  # a header and the 20 test images


def test_a_plugin_that_fails_to_import_is_a_one_line_error(tmp_path):
    out = _run(["-m", "poisondiff_lite.cli", "epa", "--dataset", "plugtoy"], tmp_path, "myplugin,no_such_module")
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert "$POISONDIFF_PLUGINS names the module 'no_such_module'" in line and "PYTHONPATH" in line

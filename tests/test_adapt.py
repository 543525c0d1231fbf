"""Adapting the tutorial: your own data set as tensor pairs and your own model, usable by name everywhere."""

import numpy as np
import pytest
import torch.nn as nn

import poisondiff_lite as pdl
from poisondiff_lite import data as data_module
from poisondiff_lite import models as models_module
from poisondiff_lite.attacks import AttackConfig, craft, poison_indices
from poisondiff_lite.distance import distance_matrix


@pytest.fixture()
def registered(monkeypatch, toy_bundle):
    monkeypatch.setattr(data_module, "CUSTOM_DATASETS", {})
    monkeypatch.setattr(models_module, "CUSTOM_MODELS", {})
    bundle = pdl.DataBundle.from_tensors("shapes", toy_bundle.train.images, toy_bundle.train.labels,
                                         toy_bundle.test.images, toy_bundle.test.labels, classes=list("abcd"))
    pdl.register_dataset("shapes", bundle)
    pdl.register_model("mlp", lambda c: (nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU()),
                                         nn.Linear(32, c)))
    return bundle


def test_from_tensors_computes_the_normalisation(toy_bundle):
    bundle = pdl.DataBundle.from_tensors("x", toy_bundle.train.images, toy_bundle.train.labels,
                                         toy_bundle.test.images, toy_bundle.test.labels)
    pixels = toy_bundle.train.images.float() / 255
    assert np.allclose(bundle.mean, pixels.mean(dim=(0, 2, 3)).numpy(), atol=1e-6)
    assert bundle.classes == ("0", "1", "2", "3")
    with pytest.raises(ValueError, match="uint8"):
        pdl.DataBundle.from_tensors("x", toy_bundle.train.images.float(), toy_bundle.train.labels,
                                    toy_bundle.test.images, toy_bundle.test.labels)


def test_own_data_and_model_run_through_the_whole_pipeline(registered, tmp_path):
    config = pdl.TrajectoryConfig(dataset="shapes", train=pdl.TrainConfig.quick(model="mlp", epochs=3, batch_size=16),
                                  runs=2)
    traj = pdl.record_trajectories(config, device="cpu", show_progress=False, results_dir=tmp_path, keep_models=True)
    scores = pdl.trajectory_metrics(traj)
    assert scores["epa"].shape == (32,) and scores["epa"].mean() > 0.25  # learns beyond chance on 4 classes
    model = pdl.load_run_model(pdl.default_path(config, tmp_path))
    assert isinstance(model.body[1], nn.Linear)
    delta = distance_matrix(model, registered.test.images[:2], registered.test.labels[:2], device="cpu",
                            show_progress=False)
    assert delta.step.shape == (2, 4)
    idx = poison_indices(registered.train.labels, 1, 4)
    poisons = craft(AttackConfig(name="fc", num_poisons=4, steps=2, restarts=1), model, registered.test.images[0],
                    1, registered.train.images[idx], registered.train.labels[idx], idx, device="cpu")
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

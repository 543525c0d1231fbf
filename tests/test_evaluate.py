"""Bring your own poisons: `evaluate_poisons` reproduces a study's own victims from the poisons alone, in every array
layout; `alignment` and `feature_loss` against gradients and features computed directly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_study import tiny_config

import poisondiff_lite as pdl
import poisondiff_lite.study as study
from poisondiff_lite import InvalidChoiceError
from poisondiff_lite.attacks import Poisons
from poisondiff_lite.evaluate import POISONED, as_uint8_images
from poisondiff_lite.record import default_path, load_run_model


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    from conftest import make_toy_bundle

    bundle = make_toy_bundle()
    folder = tmp_path_factory.mktemp("byop")
    config = tiny_config()
    results = study.run_study(config, data=bundle, device="cpu", results_dir=folder, show_progress=False)
    return config, bundle, folder, results


def _saved_poisons(results, bundle, target, attack):
    path = results.path / "poisons" / f"{target['key']}-{study.attack_id(attack)}.pt"
    return Poisons.load(path, bundle.train.images)


def _outcomes(rows, key, attack):
    return sorted(
        (r["victim"], r["pred"], r["success"], r["p_adv"]) for r in rows if r["key"] == key and r["attack"] == attack
    )


@pytest.mark.parametrize("which", [0, 1])  # gradient matching from scratch; feature collision on transfer heads
def test_external_poisons_get_exactly_the_study_victims(finished_study, which):
    config, bundle, folder, results = finished_study
    attack = config.attacks[which]
    target = results.targets[0]
    poisons = _saved_poisons(results, bundle, target, attack)
    evaluation = pdl.evaluate_poisons(
        poisons.images,
        poisons.indices,
        target["index"],
        config=config,
        setting=attack.setting,
        data=bundle,
        device="cpu",
        results_dir=folder,
        show_progress=False,
    )
    assert evaluation.key == target["key"]
    assert _outcomes(evaluation.rows, target["key"], POISONED) == _outcomes(
        results.rows, target["key"], study.attack_id(attack)
    )
    baseline = study.baseline_id(attack.setting)
    assert _outcomes(evaluation.rows, target["key"], baseline) == _outcomes(results.rows, target["key"], baseline)
    wins = sum(r["success"] for r in evaluation.rows if r["attack"] == POISONED)
    summary = evaluation.summary()[0]
    assert summary["successes"] == wins and summary["victims"] == config.victims
    assert (summary["asr_low"], summary["asr_high"]) == pytest.approx(pdl.asr_interval(wins, config.victims))
    assert evaluation.max_change <= round(attack.eps * 255)
    assert "poisons" in str(evaluation) and "no attack" in str(evaluation)


def test_art_layout_and_a_whole_poisoned_training_set_give_the_same_victims(finished_study, monkeypatch):
    config, bundle, folder, results = finished_study
    attack, target = config.attacks[0], results.targets[0]
    poisons = _saved_poisons(results, bundle, target, attack)
    reference = pdl.evaluate_poisons(
        poisons.images,
        poisons.indices,
        target["index"],
        config=config,
        data=bundle,
        device="cpu",
        results_dir=folder,
        show_progress=False,
    )
    # ART: float32 numpy in [0, 1], channels last; the whole poisoned training set with its indices unknown
    whole = bundle.train.images.clone()
    whole[poisons.indices] = poisons.images
    art_like = whole.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255
    trained = []
    real = pdl.evaluate.scratch_victims
    monkeypatch.setattr(pdl.evaluate, "scratch_victims", lambda *a, **k: (trained.append(1), real(*a, **k))[1])
    again = pdl.evaluate_poisons(
        art_like,
        None,
        target["index"],
        config=config,
        data=bundle,
        device="cpu",
        results_dir=folder,
        show_progress=False,
    )
    assert again.path == reference.path and trained == []  # the same poisons: found on disk, nothing retrained
    assert sorted(map(str, again.rows)) == sorted(map(str, reference.rows))
    target_as_image = bundle.test.images[target["index"]].permute(1, 2, 0).numpy()
    by_image = pdl.evaluate_poisons(
        poisons.images,
        poisons.indices,
        target_as_image,
        config=config,
        data=bundle,
        device="cpu",
        results_dir=folder,
        show_progress=False,
        baseline=False,
    )
    assert by_image.key.startswith("external-")
    assert _outcomes(by_image.rows, by_image.key, POISONED) == _outcomes(reference.rows, target["key"], POISONED)


def test_channel_layout_and_float_pixels_are_read_as_released_images():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(as_uint8_images(images), images)
    assert torch.equal(as_uint8_images(images.permute(0, 2, 3, 1).numpy() / 255.0), images)
    assert torch.equal(as_uint8_images(images[0].permute(1, 2, 0).float() / 255, batch=False), images[0])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, i: (x, i[:-1]), "must be 4 integer positions"),
        (lambda x, i: (x, i + 10_000), r"must lie in \[0, 64\)"),
        (lambda x, i: (x, torch.zeros_like(i)), "must be distinct"),
        (lambda x, i: (x, i.float()), "integer positions"),
        (lambda x, i: (x[:, :, :8], i), "poison images are"),
        (lambda x, i: (x.float(), i), r"must lie in \[0, 1\]"),
        (lambda x, i: (x[:3], None), "pass the whole poisoned training set"),
    ],
)
def test_bad_poison_sets_are_one_line_errors(finished_study, change, message):
    config, bundle, folder, results = finished_study
    poisons = _saved_poisons(results, bundle, results.targets[0], config.attacks[0])
    images, indices = change(poisons.images, poisons.indices)
    with pytest.raises(InvalidChoiceError, match=message):
        pdl.evaluate_poisons(
            images,
            indices,
            results.targets[0]["index"],
            config=config,
            data=bundle,
            device="cpu",
            results_dir=folder,
            show_progress=False,
        )
    with pytest.raises(InvalidChoiceError, match="test image 1 is a 'b', the config's target class is 'a'"):
        pdl.evaluate_poisons(
            poisons.images,
            poisons.indices,
            1,
            config=config,
            data=bundle,
            device="cpu",
            results_dir=folder,
            show_progress=False,
        )
    with pytest.raises(InvalidChoiceError, match="unknown target index"):
        pdl.evaluate_poisons(
            poisons.images,
            poisons.indices,
            10_000,
            config=config,
            data=bundle,
            device="cpu",
            results_dir=folder,
            show_progress=False,
        )


# -----------------------------------------------------------------------------------------------------------------
#  alignment and feature losses, against a direct computation
# -----------------------------------------------------------------------------------------------------------------
def _flat_grad(model, params, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in params])


@pytest.mark.parametrize("setting", ["scratch", "transfer"])
def test_alignment_is_the_cosine_of_the_two_gradients(finished_study, setting):
    config, bundle, folder, results = finished_study
    model = load_run_model(default_path(config.trajectory, folder)).eval()
    target = bundle.test.images[results.targets[0]["index"]]
    poisons = _saved_poisons(results, bundle, results.targets[0], config.attacks[0])
    labels = bundle.train.labels[poisons.indices]
    params = list((model.head if setting == "transfer" else model).parameters())
    g_target = _flat_grad(model, params, target[None].float() / 255, torch.tensor([1]))
    g_poison = _flat_grad(model, params, poisons.images.float() / 255, labels)
    expected = float(F.cosine_similarity(g_target, g_poison, dim=0))
    got = pdl.alignment(model, target, 1, poisons.images, labels, setting=setting, device="cpu")
    assert got == pytest.approx(expected, abs=1e-5)
    assert pdl.alignment(
        model, target, 1, target[None].repeat(3, 1, 1, 1), torch.tensor([1, 1, 1]), setting=setting, device="cpu"
    ) == pytest.approx(1.0, abs=1e-5)  # the target itself


def test_feature_losses_against_the_features(finished_study):
    config, bundle, folder, results = finished_study
    model = load_run_model(default_path(config.trajectory, folder)).eval()
    target = bundle.test.images[results.targets[0]["index"]]
    poisons = bundle.train.images[:6]
    with torch.no_grad():
        phi_t = model.features(target[None].float() / 255)[0]
        phi = model.features(poisons.float() / 255)
    scale = float((phi_t**2).sum())
    fc = float(((phi - phi_t) ** 2).sum(1).mean()) / scale
    bp = float(((phi.mean(0) - phi_t) ** 2).sum()) / scale
    assert pdl.feature_loss(model, target, poisons, kind="fc", device="cpu") == pytest.approx(fc, rel=1e-5)
    assert pdl.feature_loss(model, target, poisons, kind="bp", device="cpu") == pytest.approx(bp, rel=1e-5)
    assert pdl.feature_loss(model, target, target[None], device="cpu") == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InvalidChoiceError, match="unknown kind 'gm'"):
        pdl.feature_loss(model, target, poisons, kind="gm")

"""Attacks: budgets respected, the optimiser really optimises, and a strong attack beats no attack."""

import math

import numpy as np
import pytest
import torch

from conftest import make_toy_bundle
from poisondiff_lite import InvalidChoiceError, TrainConfig, build_model, train_fresh
from poisondiff_lite.attacks import AttackConfig, Poisons, craft, poison_indices, quantise
from poisondiff_lite.victims import HeadConfig, extract_features, insert_poisons, transfer_victims


@pytest.fixture(scope="module")
def toy():
    return make_toy_bundle(train=256)


@pytest.fixture(scope="module")
def surrogate(toy):
    model, _ = train_fresh(toy, TrainConfig.quick(epochs=3, batch_size=32), seed=0, device="cpu", show_progress=False)
    return model.eval()


def _bases(toy, poison_class, count):
    idx = poison_indices(toy.train.labels, poison_class, count)
    return toy.train.images[idx], toy.train.labels[idx], idx


@pytest.mark.parametrize("name", ["gm", "bp", "fc"])
def test_perturbation_respects_eps_and_pixel_range(toy, surrogate, name):
    attack = AttackConfig(name=name, eps=8 / 255, num_poisons=12, steps=6, restarts=2, batch_size=5)
    images, labels, idx = _bases(toy, 1, 12)
    before = {k: v.clone() for k, v in surrogate.state_dict().items()}
    poisons = craft(attack, surrogate, toy.test.images[0], 1, images, labels, idx, device="cpu")
    assert poisons.images.dtype == torch.uint8 and poisons.images.shape == images.shape
    change = poisons.images.int() - images.int()
    assert change.abs().max() <= 8 and change.abs().max() > 0  # at most 8 pixel levels, and something moved
    assert torch.equal(poisons.indices, idx)
    assert poisons.perturbation.abs().max() <= 8 / 255 + 1e-6
    assert torch.allclose(poisons.perturbation, change.float() / 255, atol=1e-6)
    assert len(poisons.losses) == 6 and len(poisons.restart_losses) == 2
    assert all(torch.equal(before[k], v) for k, v in surrogate.state_dict().items()), "surrogate weights changed"


def test_quantise_stays_inside_the_ball_at_the_pixel_edges():
    base = torch.tensor([0.0, 1.0, 0.5, 10 / 255]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    delta = torch.tensor([-0.2, 0.2, 0.0627, -0.0627]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = quantise(base, delta, 16 / 255)
    assert out[0, 0].flatten().tolist() == [0, 255, 128 + 16, 0]


def test_gradient_matching_alignment_improves(toy, surrogate):
    attack = AttackConfig(name="gm", eps=16 / 255, num_poisons=16, steps=30, restarts=1, augment=False)
    images, labels, idx = _bases(toy, 1, 16)
    poisons = craft(attack, surrogate, toy.test.images[0], 1, images, labels, idx, device="cpu")
    first, last = poisons.losses[0], poisons.restart_losses[0]
    assert 0 <= last < first - 0.05, f"1 - cosine went {first:.3f} -> {last:.3f}"


def test_restarts_keep_the_lowest_loss(toy, surrogate):
    attack = AttackConfig(name="bp", eps=4 / 255, num_poisons=8, steps=3, restarts=3, augment=False)
    images, labels, idx = _bases(toy, 2, 8)
    poisons = craft(attack, surrogate, toy.test.images[1], 2, images, labels, idx, seed=3, device="cpu")
    assert poisons.final_loss == min(poisons.restart_losses)
    assert len(set(np.round(poisons.restart_losses, 8))) > 1, "restarts should start from different points"


def test_large_budget_attack_beats_no_attack(toy, surrogate):
    """Feature collision with a generous budget flips a linear-probe victim; without poisons nothing flips."""
    # an outlying target, as feature collision needs: mostly class 0, partly class 1; clean victims call it class 0
    zero, one = (toy.test.images[int(torch.nonzero(toy.test.labels == k)[0])].float() for k in (0, 1))
    target = (0.6 * zero + 0.4 * one).round().to(torch.uint8)
    attack = AttackConfig(
        name="fc", eps=64 / 255, num_poisons=48, steps=60, restarts=1, augment=False, setting="transfer"
    )
    images, labels, idx = _bases(toy, 1, 48)
    poisons = craft(attack, surrogate, target, 1, images, labels, idx, device="cpu")
    train = extract_features(surrogate, toy.train.images, device="cpu")
    test = extract_features(surrogate, toy.test.images, device="cpu")
    target_feat = extract_features(surrogate, target[None], device="cpu")
    poisoned = train.clone()
    poisoned[poisons.indices] = extract_features(surrogate, poisons.images, device="cpu")
    seeds, head = range(4), HeadConfig.quick()
    clean = [
        int(t.argmax()) for _, t, _ in transfer_victims(train, toy.train.labels, test, target_feat, 4, head, seeds)
    ]
    attacked = [
        int(t.argmax()) for _, t, _ in transfer_victims(poisoned, toy.train.labels, test, target_feat, 4, head, seeds)
    ]
    assert clean.count(1) == 0 and attacked.count(1) >= 3, f"clean {clean}, attacked {attacked}"


def test_poison_indices_are_the_first_of_the_class():
    labels = torch.tensor([3, 1, 1, 0, 1, 2, 1])
    assert poison_indices(labels, 1, 3).tolist() == [1, 2, 4]
    with pytest.raises(InvalidChoiceError, match="has only 4 training images"):
        poison_indices(labels, 1, 5)


def test_budget_rounds_up_like_witches_brew():
    assert AttackConfig(budget=0.01).count(50_000) == 500
    assert AttackConfig(budget=0.0005).count(100_000) == 50
    assert AttackConfig(budget=0.01).count(5_001) == 51
    assert AttackConfig(num_poisons=25).count(50_000) == 25


def test_insert_poisons_only_changes_the_poisoned_rows(toy):
    images, labels, idx = _bases(toy, 1, 4)
    poisons = Poisons(255 - images, idx, torch.zeros(images.shape))
    out = insert_poisons(toy.train, poisons)
    changed = torch.nonzero((out.images != toy.train.images).flatten(1).any(1)).squeeze(1)
    assert set(changed.tolist()) <= set(idx.tolist()) and len(changed) > 0
    assert torch.equal(out.labels, toy.train.labels)
    assert torch.equal(toy.train.images[idx], images), "the clean training set must not be modified"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "witches"}, "unknown attack 'witches'; valid choices: 'gm', 'bp', 'fc'"),
        ({"budget": -0.01}, "budget must be > 0"),
        ({"eps": 16}, "eps is in [0, 1] pixel units"),
        ({"setting": "finetune"}, "valid choices: 'scratch', 'transfer'"),
    ],
)
def test_bad_attack_settings_name_the_fix(kwargs, message):
    with pytest.raises(InvalidChoiceError) as info:
        AttackConfig(**kwargs)
    assert message in str(info.value)


def test_shape_mismatch_is_a_clear_error(toy):
    model = build_model("fastnet_small", 4)
    with pytest.raises(InvalidChoiceError, match="same size"):
        craft(
            AttackConfig(steps=1, restarts=1),
            model,
            torch.zeros(3, 8, 8, dtype=torch.uint8),
            1,
            toy.train.images[:2],
            toy.train.labels[:2],
            device="cpu",
        )


def test_presets_follow_the_paper():
    gm = AttackConfig.full("gm")
    assert (gm.eps, gm.budget, gm.steps, gm.restarts, gm.setting) == (16 / 255, 0.01, 250, 8, "scratch")
    fc = AttackConfig.full("fc")
    assert (fc.eps, fc.num_poisons, fc.setting) == (8 / 255, 25, "transfer")
    assert AttackConfig.quick("bp").steps < gm.steps and math.isclose(AttackConfig.quick("bp").eps, 16 / 255)


def test_gradient_matching_against_transfer_victims_uses_the_head_alone(toy, surrogate):
    """A transfer victim trains only the linear head, so GM aligns the head's gradients: checked by hand."""
    import torch.nn.functional as F

    from poisondiff_lite.attacks import gradient_matching_objective
    from poisondiff_lite.data import to_unit

    images, labels, _ = _bases(toy, 1, 8)
    target, x = to_unit(toy.test.images[0], "cpu"), to_unit(images, "cpu")
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(8)

    def cosine(params):
        t = torch.autograd.grad(F.cross_entropy(surrogate(target[None]), torch.tensor([1])), params)
        p = torch.autograd.grad(F.cross_entropy(surrogate(x), labels.long()), params)
        dot = sum((a * b).sum() for a, b in zip(t, p))
        return 1 - dot / (torch.sqrt(sum((a * a).sum() for a in t)) * torch.sqrt(sum((b * b).sum() for b in p)))

    for setting, params in (("transfer", list(surrogate.head.parameters())), ("scratch", list(surrogate.parameters()))):
        attack = AttackConfig(name="gm", augment=False, setting=setting)
        objective = gradient_matching_objective(surrogate, target, 1, labels.long(), attack)
        expected = float(cosine(params).detach())
        assert float(objective(x, idx, gen).detach()) == pytest.approx(expected, abs=1e-5), setting
